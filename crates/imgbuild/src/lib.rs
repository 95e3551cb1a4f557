//! imgbuild: reproducible OCI images from Cargo projects, without a daemon.
//!
//! The library the `imgbuild` command is built on. The pipeline, each step a function from one
//! value to the next:
//!
//! ```text
//! Cargo project ─metadata→ Workspace ─select→ BinaryTarget ─cargo build→ executable
//!   ─closure→ shared libraries ─layers→ rootfs | libraries | app ─assemble→ config + manifest
//!   ─store→ local OCI layout ─outputs→ oci: | oci-archive: | docker-archive: | docker://
//! ```
//!
//! The compiled dependencies are cached per binary ([`depcache`], shared through a registry
//! with [`publish::RemoteCache`]); the compile step is hermetic ([`hermetic`]); base images
//! come from registries ([`base`]).
//!
//! Build an image into an OCI layout from a workspace's `xtask`:
//!
//! ```no_run
//! use imgbuild::{BuildOptions, event::Silent, output::Output};
//!
//! let mut options = BuildOptions::new(imgbuild::default_cache_dir());
//! options.manifest_path = Some("examples/hello/Cargo.toml".into());
//! options.outputs.push("oci:target/images/hello".parse::<Output>()?);
//! let image = imgbuild::build(&options, &Silent)?;
//! println!("{}", image.manifest.digest());
//! # Ok::<(), imgbuild::Error>(())
//! ```
//!
//! Push it to a registry (credentials from the docker config or a credential helper), sharing
//! compiled dependencies through the same registry:
//!
//! ```no_run
//! use imgbuild::{BuildOptions, event::Silent};
//!
//! let mut options = BuildOptions::new(imgbuild::default_cache_dir());
//! options.package = Some("api".into());
//! options.outputs.push("docker://ghcr.io/example/api:1.0".parse()?);
//! options.cache_repo = Some(imgbuild::Reference::parse("ghcr.io/example/cache")?);
//! imgbuild::build(&options, &Silent)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Print each binary's dependency key, or check that a build is reproducible:
//!
//! ```no_run
//! use imgbuild::{BuildOptions, event::Silent};
//!
//! let options = BuildOptions::new(imgbuild::default_cache_dir());
//! for plan in imgbuild::plan::plan(&options, false)? {
//!     println!("{}/{} {}", plan.package, plan.bin, plan.dependency_key);
//! }
//! let verdict = imgbuild::verify::verify(&options, &Silent)?;
//! assert!(verdict.reproducible, "{:?}", verdict.differences);
//! # Ok::<(), imgbuild::Error>(())
//! ```

mod appcache;
mod base;
mod basefs;
mod build;
mod cachedir;
mod closure;
mod context;
mod depcache;
mod error;
pub mod event;
mod hermetic;
mod image;
mod keys;
mod names;
mod options;
pub mod output;
pub mod plan;
mod publish;
mod rootfs;
pub mod store;
mod time;
mod usage;
pub mod verify;

use std::path::PathBuf;

pub use build::build;
pub use cachedir::CacheDir;
pub use error::Error;
pub(crate) use error::io_err;
pub use image::{Layer, LayerRole};
pub use imgbuild_cargo::config::ImageConfig;
pub use imgbuild_registry::Reference;
pub use options::{BuildOptions, BuiltImage};
pub use publish::{RegistryOptions, push};

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cache directory: `$IMGBUILD_CACHE_DIR`, else `$XDG_CACHE_HOME/imgbuild`, else
/// `~/.cache/imgbuild`. It holds the local image store and the records beside it (see
/// [`CacheDir`]).
pub fn default_cache_dir() -> PathBuf {
    CacheDir::from_env().root().to_path_buf()
}

/// Parses a `SOURCE_DATE_EPOCH` value.
pub fn parse_source_date_epoch(value: &str) -> Result<u64> {
    value
        .trim()
        .parse()
        .map_err(|_| Error::InvalidSourceDateEpoch {
            value: value.to_string(),
        })
}
