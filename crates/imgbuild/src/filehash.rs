//! Content hashes of the files a build's keys read (sources, `rerun-if-changed` inputs),
//! remembered between builds by each file's identity and state — device, inode, size,
//! modification and change times to the nanosecond — so that a build hashes only the files
//! that changed since the last one.
//!
//! The memo is a file under the cache directory's `probes/`; it can be deleted at any time,
//! and a memo that cannot be read or written only costs hashing. A file whose change time is
//! within [`SETTLE`] of the moment it was hashed is not remembered: a second write in the same
//! clock tick could leave its state unchanged ("racy clean", as git calls it).
//!
//! Reads and writes the filesystem.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How old a file's last change must be for its hash to be remembered.
const SETTLE: Duration = Duration::from_secs(2);

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Stat {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Self {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file last changed at least [`SETTLE`] before `now`.
    fn settled(&self, now: SystemTime) -> bool {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        self.ctime_ns.max(self.mtime_ns) + SETTLE.as_nanos() as i128 <= now
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Known {
    stat: Stat,
    sha256: String,
}

/// The remembered hashes, and the ones this build added.
#[derive(Debug)]
pub(crate) struct FileHashes {
    memo: PathBuf,
    known: Mutex<(BTreeMap<PathBuf, Known>, bool)>,
}

impl FileHashes {
    /// The memo at `memo` (empty when missing or unreadable).
    pub(crate) fn open(memo: PathBuf) -> Self {
        let known = std::fs::read(&memo)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            memo,
            known: Mutex::new((known, false)),
        }
    }

    /// The SHA-256 (hex) of the file at `path`, from the memo when its state is the one
    /// remembered; `None` when it cannot be read.
    pub(crate) fn sha256(&self, path: &Path) -> Option<String> {
        let stat = Stat::of(&std::fs::metadata(path).ok()?);
        if let Some(known) = self.lock().0.get(path).filter(|k| k.stat == stat) {
            return Some(known.sha256.clone());
        }
        let bytes = std::fs::read(path).ok()?;
        let sha256 = imgbuild_oci::digest::sha256(&bytes).digest().to_string();
        // Remembered only when the content read is the state seen, and that state is settled.
        let after = std::fs::metadata(path).ok().map(|m| Stat::of(&m));
        if after == Some(stat) && stat.settled(SystemTime::now()) {
            let mut known = self.lock();
            let previous = known.0.insert(
                path.to_path_buf(),
                Known {
                    stat,
                    sha256: sha256.clone(),
                },
            );
            known.1 |= previous.is_none_or(|p| p.stat != stat);
        }
        Some(sha256)
    }

    /// Writes the memo back when this build learned something (through a temporary file and
    /// a rename; a failure only means hashing again next time).
    pub(crate) fn save(&self) {
        let known = self.lock();
        if !known.1 {
            return;
        }
        let Ok(json) = serde_json::to_vec(&known.0) else {
            return;
        };
        let Some(dir) = self.memo.parent() else {
            return;
        };
        let _ = std::fs::create_dir_all(dir);
        let written = tempfile::NamedTempFile::new_in(dir).and_then(|mut tmp| {
            std::io::Write::write_all(&mut tmp, &json)?;
            tmp.persist(&self.memo).map_err(|e| e.error)
        });
        drop(written);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (BTreeMap<PathBuf, Known>, bool)> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, secs: u64) {
        let then = SystemTime::now() - Duration::from_secs(secs);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(then)
            .unwrap();
    }

    #[test]
    fn a_remembered_hash_is_used_only_while_the_file_is_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("main.rs");
        std::fs::write(&file, "fn main() {}").unwrap();
        let memo = tmp.path().join("probes/file-hashes.json");
        let expected = imgbuild_oci::digest::sha256(b"fn main() {}")
            .digest()
            .to_string();

        // Just written: hashed, not remembered (its change time is too recent).
        let hashes = FileHashes::open(memo.clone());
        assert_eq!(hashes.sha256(&file).as_deref(), Some(expected.as_str()));
        hashes.save();
        assert!(!memo.exists(), "nothing settled to remember");

        // The change time cannot be set back; a settled file is simulated by checking the
        // rule itself, then the memo's round trip with a hand-made settled entry.
        let stat = Stat::of(&std::fs::metadata(&file).unwrap());
        assert!(!stat.settled(SystemTime::now()));
        assert!(stat.settled(SystemTime::now() + SETTLE));
        age(&file, 60);
        let stat = Stat::of(&std::fs::metadata(&file).unwrap());
        let known: BTreeMap<PathBuf, Known> = [(
            file.clone(),
            Known {
                stat,
                sha256: "remembered".into(),
            },
        )]
        .into();
        std::fs::create_dir_all(memo.parent().unwrap()).unwrap();
        std::fs::write(&memo, serde_json::to_vec(&known).unwrap()).unwrap();
        let hashes = FileHashes::open(memo.clone());
        assert_eq!(hashes.sha256(&file).as_deref(), Some("remembered"));

        // Any change of state (here another content) is hashed again.
        std::fs::write(&file, "fn main() {1}").unwrap();
        let changed = imgbuild_oci::digest::sha256(b"fn main() {1}")
            .digest()
            .to_string();
        assert_eq!(hashes.sha256(&file).as_deref(), Some(changed.as_str()));
        assert_eq!(hashes.sha256(&tmp.path().join("gone.rs")), None);

        // A damaged memo is an empty one.
        std::fs::write(&memo, "not json").unwrap();
        assert_eq!(
            FileHashes::open(memo).sha256(&file).as_deref(),
            Some(changed.as_str())
        );
    }
}
