//! A layout's temporary files, kept out of `blobs/` (where other OCI tools, `umoci gc` for
//! one, expect nothing but digests): each process writes in its own directory
//! `.tmp/<pid>-<random>/` and holds the `.lock` file in it locked for as long as it lives. The
//! kernel releases that lock when the process dies, however it dies, so a directory whose lock
//! can be taken is a leftover, and [`collect_leftovers`] removes it — never the directory of a
//! process still writing.
//!
//! Touches the filesystem.

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Result, io_err};

/// The directory, under the layout's root, that holds the scratch directories.
pub const DIR: &str = ".tmp";

/// How old a temporary file written by an older version (directly in `blobs/sha256/` or the
/// layout's root) must be before it counts as a leftover: no write takes this long between
/// two touches of the file.
const LEGACY_GRACE: Duration = Duration::from_secs(10 * 60);

/// A scratch directory without its lock file yet is only that young while its creator is
/// between two system calls.
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);

/// A new directory whose `.lock` file this process holds locked for as long as it lives,
/// removed on drop: a layout's scratch directory, or a build's private directories. Whether
/// such a directory's owner is gone is [`abandoned`].
#[derive(Debug)]
pub struct LockedDir {
    dir: tempfile::TempDir,
    _lock: File,
}

impl LockedDir {
    /// Creates `parent/<prefix><random>/` (and `parent`) and locks it.
    pub fn create(parent: &Path, prefix: &str) -> Result<Self> {
        fs::create_dir_all(parent).map_err(io_err("creating directory", parent))?;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(parent)
            .map_err(io_err("creating a temporary directory in", parent))?;
        let path = dir.path().join(".lock");
        let lock = File::create(&path).map_err(io_err("creating lock file", &path))?;
        lock.lock().map_err(io_err("locking", &path))?;
        Ok(Self { dir, _lock: lock })
    }

    /// This process's scratch directory under `root/.tmp`.
    pub(crate) fn scratch(root: &Path) -> Result<Self> {
        Self::create(&root.join(DIR), &format!("{}-", std::process::id()))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn older_than(path: &Path, age: Duration) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|a| a > age))
}

/// Removes the temporary files of processes that are gone from the layout at `root` (see
/// [`leftovers`]). Returns what was removed.
pub fn collect_leftovers(root: &Path) -> Result<Vec<PathBuf>> {
    let found = leftovers(root)?;
    remove_all(&found)?;
    Ok(found)
}

/// Removes each path (a directory with what it holds, or a file); one already gone is fine.
pub fn remove_all(paths: &[PathBuf]) -> Result<()> {
    for path in paths {
        let removed = if path.is_dir() {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err("removing", path)(e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The temporary files of processes that are gone from the layout at `root`: scratch
/// directories whose lock is free, and `.tmp-*` files that older versions left in
/// `blobs/sha256/` or the root.
pub fn leftovers(root: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let parent = root.join(DIR);
    if let Ok(entries) = fs::read_dir(&parent) {
        for entry in entries.flatten() {
            let dir = entry.path();
            if abandoned(&dir)? {
                found.push(dir);
            }
        }
    }
    for dir in [root.join("blobs").join("sha256"), root.to_path_buf()] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let temporary = name.to_string_lossy().starts_with(".tmp-");
            if temporary && path.is_file() && older_than(&path, LEGACY_GRACE) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Whether the [`LockedDir`] `dir` belongs to no living process: its lock is free, or it has
/// no lock file and is older than its creator could take between two system calls.
pub fn abandoned(dir: &Path) -> Result<bool> {
    let path = dir.join(".lock");
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(older_than(dir, UNLOCKED_GRACE));
        }
        Err(e) => return Err(io_err("opening", &path)(e)),
    };
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(io_err("locking", &path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_scratch_directory_is_kept_and_a_dead_ones_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let live = LockedDir::scratch(tmp.path()).unwrap();
        std::fs::write(live.path().join("half-written"), b"x").unwrap();
        // A dead process's directory: its lock file exists, nobody holds it.
        let dead = tmp.path().join(DIR).join("12345-dead");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join(".lock"), b"").unwrap();
        std::fs::write(dead.join("half-written"), b"x").unwrap();
        let removed = collect_leftovers(tmp.path()).unwrap();
        assert_eq!(removed, vec![dead.clone()]);
        assert!(!dead.exists());
        assert!(live.path().join("half-written").exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists(), "a scratch directory is removed on drop");
    }
}
