//! Progress events: what the library reports while it works. The CLI renders them as human lines
//! on stderr or as JSON on stdout (`--message-format json`).

use serde::Serialize;

/// One thing that happened. Serialized with a kebab-case `reason` field, empty fields skipped.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Event {
    /// Compilation is about to start.
    BuildStarted {
        /// Package name.
        package: String,
        /// Binary name.
        bin: String,
        /// Cargo profile.
        profile: String,
    },
    /// Cargo produced the executable.
    Compiled {
        /// Path of the executable.
        executable: String,
    },
    /// A layer was written to the local store.
    Layer {
        /// `rootfs`, `libraries` or `app`.
        role: String,
        /// Compressed blob digest.
        digest: String,
        /// Uncompressed tar digest.
        diff_id: String,
        /// Compressed size in bytes.
        size: u64,
        /// Number of entries added explicitly.
        entries: usize,
    },
    /// An output was written.
    Output {
        /// The output, as given (e.g. `oci:out:latest`).
        destination: String,
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
    /// Something the user should know that is not an error.
    Warning {
        /// The message.
        message: String,
    },
}

/// Receives events. Implementations must not block for long.
pub trait Reporter {
    /// Called for every event, in order.
    fn report(&self, event: &Event);
}

/// Discards events.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _event: &Event) {}
}
