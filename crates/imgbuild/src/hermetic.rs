//! The private directories a hermetic compile step gets (`HOME`, `TMPDIR`). Creates and
//! removes directories under the cache directory.

use std::path::PathBuf;

use crate::Result;
use crate::cachedir::CacheDir;

/// A fresh, empty `HOME` and `TMPDIR` for one build, removed when dropped.
#[derive(Debug)]
pub(crate) struct PrivateDirs {
    dir: tempfile::TempDir,
}

impl PrivateDirs {
    /// Creates them under the cache directory's sandbox directory.
    pub(crate) fn create(cache: &CacheDir) -> Result<Self> {
        let parent = cache.sandbox();
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
    pub(crate) fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The private `TMPDIR`.
    pub(crate) fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }
}
