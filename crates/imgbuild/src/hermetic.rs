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
    dir: tempfile::TempDir,
    _lock: std::fs::File,
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
        let path = dir.path().join(".lock");
        let lock = std::fs::File::create(&path).map_err(crate::io_err("creating", &path))?;
        lock.lock().map_err(crate::io_err("locking", &path))?;
        for sub in ["home", "tmp"] {
            let p = dir.path().join(sub);
            std::fs::create_dir(&p).map_err(crate::io_err("creating directory", &p))?;
        }
        Ok(Self { dir, _lock: lock })
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
    for dir in &found {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(crate::io_err("removing", dir)(e));
            }
            _ => {}
        }
    }
    Ok(found)
}

/// The private directories of builds that are gone: their lock is free (one without a lock
/// file yet only when older than a minute).
pub(crate) fn leftovers(cache: &CacheDir) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(cache.sandbox()) else {
        return Ok(removed);
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry.file_name().to_string_lossy().starts_with("build-") {
            continue;
        }
        let lock = dir.join(".lock");
        let dead = match std::fs::File::open(&lock) {
            Ok(file) => match file.try_lock() {
                Ok(()) => true,
                Err(std::fs::TryLockError::WouldBlock) => false,
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(crate::io_err("locking", &lock)(e));
                }
            },
            Err(_) => std::fs::metadata(&dir)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|a| a.as_secs() > 60)),
        };
        if dead {
            removed.push(dir);
        }
    }
    Ok(removed)
}
