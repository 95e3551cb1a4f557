//! The library's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while building an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// A container engine (`docker-daemon:` output) could not be reached or refused the image.
    #[error("container engine at {endpoint}: {reason}")]
    Daemon {
        /// The socket, e.g. `unix:///var/run/docker.sock`.
        endpoint: String,
        /// What went wrong, and what to do.
        reason: String,
    },
    /// A YAML document given to `resolve` is not valid, or holds a malformed reference.
    #[error("{source_name}:{line}:{column}: {reason}")]
    Yaml {
        /// The file (or `-` for stdin).
        source_name: String,
        /// The line (1-based).
        line: usize,
        /// The column (1-based).
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// A `--platform` value is not one imgbuild can build, or its toolchain is missing.
    #[error("platform {platform}: {reason}")]
    Platform {
        /// The platform as given.
        platform: String,
        /// Why, and what to do.
        reason: String,
    },
    /// A signing or verifying key cannot be used.
    #[error("key {}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why, and how to make a usable one.
        reason: String,
    },
    /// A cache entry whose signature a reader with trusted keys does not accept.
    #[error("cache entry {reference} is not trusted: {reason}; it is not used")]
    UntrustedEntry {
        /// The entry (`REPO:TAG@sha256:…`).
        reference: String,
        /// Unsigned, an unknown key, or a bad signature.
        reason: String,
    },
    /// An image's signature does not check out (`verify-signature`).
    #[error("{reference}: {reason}")]
    Signature {
        /// The image.
        reference: String,
        /// Why.
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
    /// A build environment cannot be used.
    #[error("build environment {reference}: {reason}")]
    BuildEnv {
        /// The reference as configured.
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
    /// A cache entry (dependency entry, app record or app image) cannot be used.
    #[error("cache entry {reference}: {reason}")]
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
    /// The dependency list could not be embedded in the binary (`--no-audit-data` skips it).
    #[error(
        "cannot embed the dependency list in the binary: {reason}; pass --no-audit-data to build without it"
    )]
    AuditData {
        /// What went wrong.
        reason: String,
    },
    /// The store's `index.json` cannot be read.
    #[error(
        "the store's index {} is damaged ({reason}); run `imgbuild cache check --repair` to rebuild it from the blobs (any build does too), then try again", path.display()
    )]
    DamagedIndex {
        /// The index file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No artifact of the kind asked for is attached to the image.
    #[error("{image} has no {what} attached{hint}")]
    NoArtifact {
        /// The image as the user named it.
        image: String,
        /// What was looked for ("SPDX SBOM", "debug info").
        what: String,
        /// How to get one, starting with "; ".
        hint: String,
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
