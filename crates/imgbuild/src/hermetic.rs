//! The private directories a hermetic compile step gets (`HOME`, `TMPDIR`). Creates and
//! removes directories under the cache directory. Each holds a `.lock` file its build keeps
//! locked, so the directories of builds that were killed are told apart from those of builds
//! still running, and removed ([`collect_leftovers`]).

use std::path::PathBuf;

use crate::Result;
use crate::cachedir::CacheDir;

/// A fresh, empty `HOME` and `TMPDIR` for one build, removed when dropped.
#[derive(Debug)]
pub(crate) struct PrivateDirs {
    dir: imgbuild_oci::scratch::LockedDir,
}

impl PrivateDirs {
    /// Creates them under the cache directory's sandbox directory.
    pub(crate) fn create(cache: &CacheDir) -> Result<Self> {
        let dir = imgbuild_oci::scratch::LockedDir::create(&cache.sandbox(), "build-")?;
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

/// Removes the private directories of builds that are gone ([`leftovers`]). Returns what was
/// removed.
pub(crate) fn collect_leftovers(cache: &CacheDir) -> Result<Vec<PathBuf>> {
    let found = leftovers(cache)?;
    imgbuild_oci::scratch::remove_all(&found)?;
    Ok(found)
}

/// The private directories of builds that are gone ([`imgbuild_oci::scratch::abandoned`]).
pub(crate) fn leftovers(cache: &CacheDir) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(cache.sandbox()) else {
        return Ok(found);
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if entry.file_name().to_string_lossy().starts_with("build-")
            && imgbuild_oci::scratch::abandoned(&dir)?
        {
            found.push(dir);
        }
    }
    found.sort();
    Ok(found)
}
