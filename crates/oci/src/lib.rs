//! OCI image building blocks for imgbuild.
//!
//! Everything here is about bytes and files, never processes or the network:
//! - [`digest`]: sha256 digests computed while streaming;
//! - [`json`]: canonical JSON (sorted keys, no whitespace), so the same value always has one digest;
//! - [`layer`]: deterministic layer tarballs (sorted entries, explicit parents, fixed owners and times);
//! - [`media`]: layer media types as a closed set, and the one decoder from a layer blob to its tar;
//! - [`layout`]: the OCI image layout on disk (content-addressed blobs, `index.json`, tags);
//! - [`referrers`]: OCI 1.1 referrers (SBOMs, provenance, debug info) listed in a layout;
//! - [`archive`]: single-file exports (`oci-archive`, `docker-archive`);
//! - [`snapshot`]: host files (modes and mtimes kept) as tar+zstd layers, restored verified;
//! - [`unpack`]: an image's layers unpacked into a directory (a sandbox's root filesystem),
//!   whiteouts applied, staged and renamed, nothing written outside it or through a symlink.
//!
//! The spec types themselves come from [`oci_spec`], re-exported as [`spec`].

pub mod archive;
pub mod digest;
pub mod json;
pub mod layer;
mod layerwrite;
pub mod layout;
pub mod media;
pub mod referrers;
pub mod scratch;
pub mod snapshot;
pub mod unpack;

pub use oci_spec::OciSpecError;
pub use oci_spec::image as spec;

use std::path::PathBuf;

/// Annotation key for an image's tag inside an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed; `path` says on what.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("reading", "creating", ...).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A blob's bytes do not hash to the digest it is stored under.
    #[error("blob {} is corrupt: expected {expected}, its bytes hash to {actual}", path.display())]
    DigestMismatch {
        /// Where the blob lives.
        path: PathBuf,
        /// The digest the blob should have.
        expected: String,
        /// The digest its bytes actually have.
        actual: String,
    },
    /// A blob that a manifest or index refers to is not in the layout.
    #[error("blob {digest} is missing from {}", layout.display())]
    MissingBlob {
        /// The OCI layout searched.
        layout: PathBuf,
        /// The digest looked for.
        digest: String,
    },
    /// A directory exists but is not an OCI image layout.
    #[error("{} exists but is not an OCI image layout (no oci-layout file); choose an empty or new directory", path.display())]
    NotALayout {
        /// The directory.
        path: PathBuf,
    },
    /// A tag does not exist in a layout.
    #[error("no image tagged {tag:?} in {}", layout.display())]
    UnknownTag {
        /// The OCI layout searched.
        layout: PathBuf,
        /// The tag looked for.
        tag: String,
    },
    /// JSON that should describe an OCI object does not.
    #[error("invalid {what} in {}: {source}", path.display())]
    InvalidJson {
        /// What the JSON should have been ("index", "manifest", ...).
        what: &'static str,
        /// Where it was read from.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be expressed with the OCI spec types.
    #[error("invalid OCI value: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    /// A layer's media type is not one this crate can decode.
    #[error(
        "layer media type {media_type:?} is not supported; imgbuild reads tar, tar+gzip and tar+zstd layers (OCI) and Docker's tar.gzip layers"
    )]
    UnknownLayerMediaType {
        /// The media type found.
        media_type: String,
    },
    /// A layer could not be unpacked ([`unpack`]); `source` says which entry or read failed.
    #[error("unpacking layer {index} ({name}): {source}")]
    UnpackFailed {
        /// The layer's position, 0 for the bottom layer.
        index: usize,
        /// What the caller calls the layer (its blob's path or digest).
        name: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
    /// A layer entry is not acceptable (absolute escape, bad path, ...).
    #[error("invalid layer entry {path:?}: {reason}")]
    InvalidEntry {
        /// The path inside the image.
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// A referrer artifact is not what imgbuild writes ([`referrers`]).
    #[error("artifact {digest} is not usable: {reason}")]
    InvalidArtifact {
        /// The artifact manifest's digest.
        digest: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an [`std::io::Error`] with what was being done and on which path.
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}
