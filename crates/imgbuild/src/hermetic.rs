//! The private directories a hermetic compile step gets (`HOME`, `TMPDIR`), and where rustup
//! keeps toolchains. Creates and removes directories under the cache directory.

use std::path::{Path, PathBuf};

use crate::Result;

/// A fresh, empty `HOME` and `TMPDIR` for one build, removed when dropped.
#[derive(Debug)]
pub struct PrivateDirs {
    dir: tempfile::TempDir,
}

impl PrivateDirs {
    /// Creates them under `<cache>/sandbox/`.
    pub fn create(cache_dir: &Path) -> Result<Self> {
        let parent = cache_dir.join("sandbox");
        std::fs::create_dir_all(&parent).map_err(crate::io_err("creating directory", &parent))?;
        let dir = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(&parent)
            .map_err(crate::io_err("creating a temporary directory in", &parent))?;
        for sub in ["home", "tmp"] {
            let p = dir.path().join(sub);
            std::fs::create_dir(&p).map_err(crate::io_err("creating directory", &p))?;
        }
        Ok(Self { dir })
    }

    /// The private `HOME`.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The private `TMPDIR`.
    pub fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }
}

/// Rustup's home: `$RUSTUP_HOME`, else `~/.rustup` when it exists (the toolchain proxies need it
/// once `HOME` is private).
pub fn rustup_home() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("RUSTUP_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(h));
    }
    let home = PathBuf::from(std::env::var_os("HOME")?).join(".rustup");
    home.is_dir().then_some(home)
}
