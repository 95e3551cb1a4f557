//! imgbuild: reproducible OCI images from Cargo projects, without a daemon.
//!
//! The library behind the `imgbuild` command, for a workspace's `cargo xtask` or any Rust
//! program that ships containers. Its entry points:
//!
//! | to | call |
//! | --- | --- |
//! | build an image (into the local store and any outputs) | [`build`] |
//! | build if needed, then push to a registry | [`push`] |
//! | see each binary's cache keys and why they changed | [`plan::plan`] |
//! | check that a build is reproducible | [`verify::verify`] |
//! | list and prune the cache | [`store::list`], [`store::prune`] |
//!
//! Every one takes [`BuildOptions`] (or the [`CacheDir`]) and reports progress to an
//! [`event::Reporter`]: the [`event::Event`]s the command line prints, or
//! [`event::Silent`]. Errors are one [`Error`] enum whose messages name the problem and the fix.
//!
//! ## What a build does
//!
//! Each stage is a function from one named value to the next:
//!
//! ```text
//! BuildOptions ─prepare→ workspace, binary, image config, epoch ─setup→ dependency key,
//!   base image, app-cache key ─app cache→ (hit: the stored image, nothing compiled)
//!   ─restore→ compiled dependencies in target/ ─compile→ executable ─save→ cache entry
//!   ─layers→ rootfs | shared libraries | app ─assemble→ config + manifest ─record→ app entry
//!   ─outputs→ local store, oci: | oci-archive: | docker-archive: | docker://
//! ```
//!
//! The same inputs give the same bytes: every timestamp is `SOURCE_DATE_EPOCH` (default: the
//! last commit's time), the compile runs with an allowlisted environment and no network, and
//! paths are remapped so the checkout's location does not reach the binary.
//!
//! ## Example
//!
//! Build `examples/hello` into an OCI layout:
//!
//! ```
//! use imgbuild::{BuildOptions, event::Silent};
//! # let dir = tempfile::tempdir()?;
//! # let project = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hello");
//! # let cache_dir = dir.path().join("cache");
//! # let layout = format!("oci:{}", dir.path().join("hello").display());
//!
//! let options = BuildOptions::new(cache_dir)
//!     .manifest_path(project)
//!     .output(layout.parse()?);
//! let image = imgbuild::build(&options, &Silent)?;
//! assert_eq!(image.reference, "hello:latest");
//! println!("{}", image.manifest.digest());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod appcache;
pub mod artifacts;
mod base;
mod basefs;
mod build;
mod buildenv;
mod cacheartifact;
mod cachedir;
mod closure;
mod context;
mod daemon;
mod depcache;
mod dpkg;
mod envimage;
mod error;
pub mod event;
mod filehash;
mod hermetic;
mod image;
mod keys;
mod names;
mod options;
pub mod output;
pub mod plan;
pub mod platform;
mod probecache;
mod procenv;
mod publish;
mod remotecache;
mod remoteprune;
mod repair;
pub mod resolve;
mod rootfs;
mod signing;
pub mod store;
mod supply;
mod threads;
mod time;
mod unitcache;
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
pub use options::{
    BuildOptions, BuiltImage, CacheMode, FeatureSelection, RemoteCacheMode, SbomFormat, SupplyChain,
};
pub use publish::RegistryOptions;

/// Builds the image `options` describe (nothing is compiled when an image from the same inputs
/// is stored) and pushes it to `reference`: only blobs the registry lacks are uploaded, blobs
/// of other repositories on the same registry are mounted. A reference without a tag gets the
/// image's own tag. Credentials come from the docker or podman configuration and credential
/// helpers.
///
/// ```no_run
/// use imgbuild::{BuildOptions, Reference, event::Silent};
///
/// let options = BuildOptions::new(imgbuild::default_cache_dir())
///     .package("api")
///     .cache_repo(Reference::parse("ghcr.io/example/cache")?);
/// let image = imgbuild::push(&options, &Reference::parse("ghcr.io/example/api:1.0")?, &Silent)?;
/// println!("pushed {}", image.manifest.digest());
/// # Ok::<(), imgbuild::Error>(())
/// ```
pub fn push(
    options: &BuildOptions,
    reference: &Reference,
    reporter: &dyn event::Reporter,
) -> Result<BuiltImage> {
    let mut options = options.clone();
    options.outputs.push(output::Output::Registry {
        reference: reference.clone(),
    });
    build(&options, reporter)
}

/// Checks, without building, that each `(package, bin)` of `selections` picks exactly one
/// binary in the workspace `options` name, as a build with those selections would; the error
/// is the one that build would give. `resolve` runs it so a wrong name in a manifest fails
/// before any image is pushed.
pub fn check_selections(
    options: &BuildOptions,
    selections: &[(String, Option<String>)],
) -> Result<()> {
    let mut all = options.clone();
    all.package = None;
    all.bin = None;
    let cx = context::prepare(&all, context::Scope::All, &event::Silent)?;
    for (package, bin) in selections {
        cx.workspace.select(Some(package), bin.as_deref())?;
    }
    Ok(())
}

/// Checks that the image `reference` names is signed, cosign's way, by the private key whose
/// public key (PEM) is at `key`; returns the image's digest and the key's id. What `cosign
/// verify --key` checks: the signature manifest `sha256-<hex>.sig` beside the image, its
/// payload naming this repository and digest, the signature over the payload.
pub fn verify_signature(
    reference: &Reference,
    key: &std::path::Path,
    options: &RegistryOptions,
) -> Result<(String, String)> {
    publish::verify_signature(reference, key, options)
}

/// The public key (PEM, `BEGIN PUBLIC KEY`) of the private key at `key`, as `cosign
/// public-key` prints it: what readers pass to `--cache-trust` or `verify-signature --key`.
/// `password` opens cosign's encrypted `cosign.key` (commands take it from
/// `COSIGN_PASSWORD`).
pub fn public_key(key: &std::path::Path, password: Option<&str>) -> Result<String> {
    signing::public_key_pem(key, password)
}

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
