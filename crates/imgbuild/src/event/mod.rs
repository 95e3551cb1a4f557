//! Progress events: what the library reports while it works. The CLI renders them as human lines
//! on stderr or as JSON on stdout (`--message-format json`). Live progress ([`Progress`]) and
//! cargo's own output go to the same [`Reporter`] through separate methods, so the event
//! stream stays the same whether or not a display draws them.

mod reporter;

use serde::Serialize;

pub use crate::image::LayerRole;
pub(crate) use reporter::{CargoMonitor, Deferred};
pub use reporter::{ChildOutput, Progress, Reporter, Silent};

/// One image of an index, in [`Event::IndexBuilt`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct PlatformImage {
    /// `linux/amd64/v3`.
    pub platform: String,
    /// Its manifest digest.
    pub digest: String,
}

/// How the compile step could reach the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum NetworkAccess {
    /// In a sandbox without network.
    Isolated,
    /// No sandbox is available here (the reason is in the event): build scripts could reach
    /// the network.
    NotIsolated,
    /// Allowed on purpose (`--allow-network`); the image says it is not hermetic.
    Allowed,
}

/// The sandbox that takes the network away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum IsolationMethod {
    /// `bwrap --unshare-net`.
    Bubblewrap,
    /// `unshare --net`.
    Unshare,
    /// None.
    None,
}

/// What happened to one blob of a push or a pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BlobOutcome {
    /// The registry (push) or the store (pull) already had it.
    Present,
    /// Mounted from another repository of the same registry (the event's `from`).
    Mounted,
    /// Uploaded.
    Uploaded,
    /// Downloaded.
    Downloaded,
}

macro_rules! display_as_serialized {
    ($($t:ty => { $($v:path => $s:literal),* $(,)? }),* $(,)?) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(match self { $($v => $s),* })
            }
        }
    )*};
}

display_as_serialized! {
    NetworkAccess => {
        NetworkAccess::Isolated => "isolated",
        NetworkAccess::NotIsolated => "not-isolated",
        NetworkAccess::Allowed => "allowed",
    },
    IsolationMethod => {
        IsolationMethod::Bubblewrap => "bubblewrap",
        IsolationMethod::Unshare => "unshare",
        IsolationMethod::None => "none",
    },
    BlobOutcome => {
        BlobOutcome::Present => "present",
        BlobOutcome::Mounted => "mounted",
        BlobOutcome::Uploaded => "uploaded",
        BlobOutcome::Downloaded => "downloaded",
    },
}

/// One thing that happened. Serialized with a kebab-case `reason` field, empty fields skipped.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "reason", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Event {
    /// Compilation is about to start.
    BuildStarted {
        /// Package name.
        package: String,
        /// Binary name.
        bin: String,
        /// Cargo profile.
        profile: String,
        /// The platform, when one was asked for (`--platform`).
        #[serde(skip_serializing_if = "Option::is_none")]
        platform: Option<String>,
    },
    /// How the compile step is isolated from the network.
    Isolation {
        /// Whether build scripts could reach the network.
        network: NetworkAccess,
        /// The sandbox that removed the network.
        method: IsolationMethod,
        /// Why it is not isolated, when it is not.
        #[serde(skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// The base image is in the local store.
    BaseResolved {
        /// The reference as configured.
        reference: String,
        /// Its manifest digest.
        digest: String,
        /// Its number of layers.
        layers: usize,
    },
    /// The build environment is in the local store and unpacked: cargo and rustc run in it.
    BuildEnvResolved {
        /// The reference as configured.
        reference: String,
        /// Its manifest digest.
        digest: String,
    },
    /// The app cache (zero-work rebuilds) was looked up, or a new entry stored.
    AppCache {
        /// The app key (or, when no record exists yet, the static key).
        key: String,
        /// Whether an image built from exactly these inputs was found: nothing is compiled.
        hit: bool,
        /// Whether it came from the cache repository.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        from_registry: bool,
        /// Whether this event reports a new entry stored after a build.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        stored: bool,
    },
    /// The dependency cache was looked up for the binary's dependency key.
    CacheLookup {
        /// The dependency key.
        key: String,
        /// Whether the store has an entry for exactly this key.
        hit: bool,
        /// Whether that entry (or, on a miss, the nearest one) was just pulled from the cache
        /// repository.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        from_registry: bool,
        /// On a miss, the key of the nearest earlier entry for the same binary, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        nearest: Option<String>,
    },
    /// An entry's files were put into cargo's build directory.
    CacheRestored {
        /// The entry's key.
        key: String,
        /// Files already there, unchanged.
        present: u64,
        /// Files written.
        restored: u64,
        /// Of those, the files unpacked while the entry downloaded from the cache repository.
        while_downloading: u64,
        /// Bytes written.
        bytes: u64,
        /// Whether the download started before the key was known: a fresh checkout's early
        /// restore of the binary's newest entry, which turned out to be the one to restore.
        early: bool,
    },
    /// A cache entry could not be used (a corrupt or missing blob, an unreadable config); the
    /// build goes on as a miss.
    CacheUnusable {
        /// The entry's key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Cargo produced the executable.
    Compiled {
        /// Path of the executable.
        executable: String,
        /// Dependency units (registry and git packages) cargo compiled.
        dependencies_compiled: usize,
        /// Dependency units cargo found up to date.
        dependencies_fresh: usize,
        /// The dependency packages cargo compiled (`name@version`).
        compiled_packages: Vec<String>,
        /// The workspace's own packages (path packages) of which cargo compiled or ran a unit
        /// (`name@version`), the binary's own included.
        members_compiled: Vec<String>,
    },
    /// The unit cache (the workspace members' compiled units, by content) was consulted.
    UnitsRestored {
        /// Records consulted (this binary's and the workspace's other binaries').
        records: usize,
        /// Units restored into cargo's build directory.
        restored: usize,
        /// Units left in place: cargo finds them fresh already.
        in_place: usize,
        /// Units no record matched (cargo compiles them), by name.
        missed: Vec<String>,
        /// Layers pulled from the cache repository.
        pulled: usize,
        /// Bytes written.
        bytes: u64,
    },
    /// The binary's unit-cache record was stored.
    UnitsStored {
        /// Units in the record.
        units: usize,
        /// Units whose files were stored now (new layers).
        new_units: usize,
        /// Compressed size of the new layers.
        new_bytes: u64,
    },
    /// The dependency units were stored as the cache entry for the key.
    CacheStored {
        /// The key.
        key: String,
        /// Layers of the entry.
        layers: usize,
        /// Files in the entry.
        files: usize,
        /// Files in its new layer.
        new_files: usize,
        /// Compressed size of its new layer.
        new_layer_size: u64,
        /// Whether an earlier entry's layers were squashed into one.
        squashed: bool,
    },
    /// A layer was written to the local store.
    Layer {
        /// What the layer holds.
        role: LayerRole,
        /// Compressed blob digest.
        digest: String,
        /// Uncompressed tar digest.
        diff_id: String,
        /// Compressed size in bytes.
        size: u64,
        /// Number of entries added explicitly.
        entries: usize,
    },
    /// An artifact was attached to the image as a referrer (SBOM, provenance, debug info).
    Attached {
        /// Its `artifactType` (`application/spdx+json`, …).
        artifact_type: String,
        /// The referrer manifest's digest.
        digest: String,
        /// The document's size in bytes.
        size: u64,
    },
    /// An output was written.
    Output {
        /// The output, as given (e.g. `oci:out:latest`).
        destination: String,
    },
    /// The image was loaded into a container engine (`docker-daemon:`).
    Loaded {
        /// The output, as given.
        destination: String,
        /// The name it was loaded as (`name:tag`).
        reference: String,
        /// The engine, e.g. `Docker Engine 20.10.24`.
        engine: String,
        /// Layers sent.
        layers_sent: usize,
        /// Layers the engine already had (not sent).
        layers_reused: usize,
    },
    /// A blob was handled during a push or a pull.
    Blob {
        /// The registry reference pushed to or pulled from.
        reference: String,
        /// The blob's digest.
        digest: String,
        /// Its size.
        size: u64,
        /// What happened to it.
        outcome: BlobOutcome,
        /// For `mounted`: the repository it was mounted from.
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    /// The manifest was pushed and tagged.
    Pushed {
        /// The destination.
        reference: String,
        /// The manifest digest.
        digest: String,
        /// Blobs uploaded.
        uploaded: usize,
        /// Bytes uploaded.
        uploaded_bytes: u64,
        /// Blobs mounted from another repository.
        mounted: usize,
        /// Blobs the registry already had.
        present: usize,
    },
    /// A pushed manifest was tagged once more (`--tag` given several times).
    Tagged {
        /// The new reference.
        reference: String,
        /// The manifest digest.
        digest: String,
    },
    /// The image is complete.
    ImageBuilt {
        /// Manifest digest.
        digest: String,
        /// `name:tag` in the local store.
        reference: String,
        /// Config digest.
        config: String,
        /// Total compressed size of the layers.
        size: u64,
    },
    /// A pushed image was signed (`push --sign-key`).
    Signed {
        /// The image, by digest.
        reference: String,
        /// The signing key's id (its public key's SHA-256, 12 hex).
        key: String,
    },
    /// A multi-platform image index is complete (after each platform's `image-built`).
    IndexBuilt {
        /// The index's digest.
        digest: String,
        /// `name:tag` in the local store.
        reference: String,
        /// Each platform and its image's manifest digest, in the index's order.
        platforms: Vec<PlatformImage>,
    },
    /// Something the user should know that is not an error.
    Warning {
        /// The message.
        message: String,
    },
}
