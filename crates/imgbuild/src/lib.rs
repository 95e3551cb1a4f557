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

pub mod appcache;
pub mod base;
pub mod basefs;
pub mod build;
pub mod closure;
pub mod depcache;
pub mod event;
pub mod hermetic;
pub mod image;
pub mod output;
pub mod plan;
pub mod publish;
pub mod rootfs;
pub mod store;
pub mod time;
pub mod usage;
pub mod verify;

use std::path::PathBuf;

pub use build::{BuildOptions, BuiltImage, build};
pub use imgbuild_cargo::config::ImageConfig;
pub use imgbuild_registry::Reference;

/// Everything that can go wrong while building an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the workspace or compiling failed.
    #[error(transparent)]
    Cargo(#[from] imgbuild_cargo::Error),
    /// Writing or reading image data failed.
    #[error(transparent)]
    Oci(#[from] imgbuild_oci::Error),
    /// Talking to a registry failed.
    #[error(transparent)]
    Registry(#[from] imgbuild_registry::Error),
    /// The binary could not be analysed.
    #[error("could not read the shared libraries {} needs: {message}", binary.display())]
    Closure {
        /// The executable.
        binary: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Libraries the binary needs are not on the build host.
    #[error("{} needs {}, not found on this machine (searched its RUNPATH, LD_LIBRARY_PATH, /etc/ld.so.conf and the default directories); install the package that provides them, or link them statically", binary.display(), libraries.join(", "))]
    MissingLibraries {
        /// The executable.
        binary: PathBuf,
        /// The sonames not found.
        libraries: Vec<String>,
    },
    /// An `--output` value is not usable.
    #[error("invalid output {output:?}: {reason}")]
    InvalidOutput {
        /// The output as given.
        output: String,
        /// Why, and what to write instead.
        reason: String,
    },
    /// An extra file declared in the configuration is not usable.
    #[error("extra file {}: {reason}", src.display())]
    ExtraFile {
        /// The host path.
        src: PathBuf,
        /// Why.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A base image cannot be used.
    #[error("base image {reference}: {reason}")]
    Base {
        /// The base reference.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The base image's glibc is older than the binary needs.
    #[error("base image {reference} has glibc up to {newest}, but {binary} needs {}; use a newer base image, build on a system with an older glibc, or link statically (--target x86_64-unknown-linux-musl)", missing.join(", "))]
    GlibcTooOld {
        /// The base reference.
        reference: String,
        /// The newest `GLIBC_x.y` the base's libc defines.
        newest: String,
        /// The executable.
        binary: String,
        /// The versions it needs that the base lacks (`GLIBC_2.34 (libc.so.6)`).
        missing: Vec<String>,
    },
    /// A dependency-cache entry cannot be used.
    #[error("dependency-cache entry {reference}: {reason}")]
    CacheEntry {
        /// The entry's ref name in the store.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `SOURCE_DATE_EPOCH` is not a number of seconds.
    #[error(
        "SOURCE_DATE_EPOCH={value:?} is not a whole number of seconds since 1970-01-01; unset it or set it to e.g. $(git log -1 --format=%ct)"
    )]
    InvalidSourceDateEpoch {
        /// The value found.
        value: String,
    },
}

impl From<imgbuild_oci::OciSpecError> for Error {
    fn from(e: imgbuild_oci::OciSpecError) -> Self {
        Error::Oci(imgbuild_oci::Error::Spec(e))
    }
}

/// Wraps an [`std::io::Error`] with what was being done and on which path.
pub(crate) fn io_err(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cache directory: `$IMGBUILD_CACHE_DIR`, else `$XDG_CACHE_HOME/imgbuild`, else
/// `~/.cache/imgbuild`. It holds the local image store (`store/`, an OCI layout) and tools.
pub fn default_cache_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("IMGBUILD_CACHE_DIR") {
        return dir;
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return dir.join("imgbuild");
    }
    var("HOME")
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache")
        .join("imgbuild")
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
