//! A resolved build environment, as the stages after `prepare` see it (a value; resolving
//! and unpacking it is `buildenv`'s work).

use std::path::PathBuf;

/// A build environment resolved and unpacked.
#[derive(Debug, Clone)]
pub(crate) struct BuildEnv {
    /// The reference as given.
    pub(crate) reference: String,
    /// The image manifest's digest (`sha256:…`): the key input that stands for the whole
    /// toolchain.
    pub(crate) digest: String,
    /// The unpacked root filesystem.
    pub(crate) root: PathBuf,
    /// The image config's `Env`.
    pub(crate) env: Vec<(String, String)>,
}

impl BuildEnv {
    /// The dependency-key line naming this environment (it replaces the host's `machine`
    /// lines: the digest fixes the C compiler, the linker and the libc).
    pub(crate) fn key_line(&self) -> String {
        format!("build-env {}", self.digest)
    }
}
