//! Snapshots: files of a host directory stored as a zstd-compressed tar layer, and restored.
//!
//! Unlike image layers ([`crate::layer`]), a snapshot keeps each file's mode and modification
//! time: they are build-cache contents, and cargo compares timestamps to decide freshness.
//! Entries are still sorted, owned by 0:0 and nameless, so the same files give the same bytes.
//!
//! Touches the filesystem. Restoring stages every file in a temporary directory and verifies the
//! blob's digest before moving anything into place: a corrupt blob changes nothing on disk.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Digest, MediaType};
use serde::{Deserialize, Serialize};

use crate::digest::{HashingReader, HashingWriter};
use crate::layout::{LayerBlob, Layout};
use crate::{Error, Result, io_err};

mod unpack;
use unpack::unpack_into;

/// zstd level for snapshots. Level 3 packs ~170 MB of dependency outputs in about a second.
pub const ZSTD_LEVEL: i32 = 3;

/// One regular file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, whole seconds since the Unix epoch (what tar keeps).
    pub mtime: u64,
    /// Permission bits.
    pub mode: u32,
}

/// Relative path (`/`-separated) → state, for the regular files of a directory tree.
pub type FileMap = BTreeMap<String, FileState>;

/// Reads the state of `paths` (relative to `root`). Paths that are not regular files are
/// skipped.
pub fn scan<'a>(root: &Path, paths: impl IntoIterator<Item = &'a str>) -> Result<FileMap> {
    let mut out = FileMap::new();
    for rel in paths {
        let path = root.join(rel);
        let meta = fs::symlink_metadata(&path).map_err(io_err("reading metadata of", &path))?;
        if meta.is_file() {
            out.insert(rel.to_string(), state_of(&meta));
        }
    }
    Ok(out)
}

/// The state of a file from its metadata.
pub fn state_of(meta: &fs::Metadata) -> FileState {
    use std::os::unix::fs::MetadataExt;
    FileState {
        size: meta.len(),
        mtime: u64::try_from(meta.mtime()).unwrap_or(0),
        mode: meta.mode() & 0o7777,
    }
}

/// Whether the file at `root/rel` is in `state` (same size and modification second).
pub fn is_current(root: &Path, rel: &str, state: &FileState) -> bool {
    fs::symlink_metadata(root.join(rel)).is_ok_and(|m| {
        m.is_file() && {
            let now = state_of(&m);
            now.size == state.size && now.mtime == state.mtime
        }
    })
}

/// What a restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Files written.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
}

impl Layout {
    /// Writes `files` (read from under `root`) as a tar+zstd layer blob. Each file's recorded
    /// size, mode and mtime are written; a file that changed size since it was scanned is an
    /// error rather than a silently different snapshot.
    pub fn write_snapshot(&self, root: &Path, files: &FileMap) -> Result<LayerBlob> {
        let mut writer = self.snapshot_writer()?;
        for (rel, state) in files {
            writer.append(root, rel, state)?;
        }
        writer.finish()
    }

    /// Starts a snapshot written file by file ([`SnapshotWriter`]), for files that become
    /// ready one after another (a dependency unit's outputs, while cargo builds the next).
    pub fn snapshot_writer(&self) -> Result<SnapshotWriter<'_>> {
        let (tmp, compressed) = self.start_blob(".tmp-snapshot-")?;
        let encoder = zstd::Encoder::new(compressed, ZSTD_LEVEL)
            .map_err(io_err("starting zstd for", tmp.path()))?;
        Ok(SnapshotWriter {
            layout: self,
            tar: tar::Builder::new(HashingWriter::new(encoder)),
            tmp,
        })
    }

    /// Restores the files of snapshot `digest` for which `wanted` is true into `root`, replacing
    /// files already there. Everything is first unpacked into a temporary directory under
    /// `root` while the blob is hashed; only when the digest matches are the files moved into
    /// place. A corrupt blob gives [`Error::DigestMismatch`] and leaves `root` as it was.
    pub fn restore_snapshot(
        &self,
        digest: &Digest,
        root: &Path,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<Restored> {
        self.restore_snapshot_reporting(digest, root, wanted, &|_| {})
    }

    /// [`Layout::restore_snapshot`], calling `read` with the number of compressed bytes each
    /// time some are read from the blob (for a progress display).
    pub fn restore_snapshot_reporting(
        &self,
        digest: &Digest,
        root: &Path,
        wanted: &dyn Fn(&str) -> bool,
        read: &dyn Fn(u64),
    ) -> Result<Restored> {
        self.restore_snapshot_as(digest, root, wanted, read, None)
    }

    /// [`Layout::restore_snapshot`], with every restored file dated `when` instead of its
    /// recorded modification time (the unit cache dates restored units after the checkout's
    /// sources, so that cargo finds them fresh).
    pub fn restore_snapshot_dated(
        &self,
        digest: &Digest,
        root: &Path,
        wanted: &dyn Fn(&str) -> bool,
        when: std::time::SystemTime,
    ) -> Result<Restored> {
        self.restore_snapshot_as(digest, root, wanted, &|_| {}, Some(when))
    }

    fn restore_snapshot_as(
        &self,
        digest: &Digest,
        root: &Path,
        wanted: &dyn Fn(&str) -> bool,
        read: &dyn Fn(u64),
        when: Option<std::time::SystemTime>,
    ) -> Result<Restored> {
        let blob = Counting {
            inner: self.open_blob(digest)?,
            read,
        };
        restore_from(
            BufReader::new(blob),
            (digest, &self.blob_path(digest)),
            root,
            wanted,
            when,
        )
    }
}

/// [`Layout::restore_snapshot`] from `blob` as it arrives (a download in progress) rather
/// than from the layout: nothing is moved into `root` unless what was read has `digest`.
/// `source` names the blob in errors.
pub fn restore_snapshot_from(
    blob: impl io::Read,
    digest: &Digest,
    source: &Path,
    root: &Path,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Restored> {
    restore_from(blob, (digest, source), root, wanted, None)
}

/// Unpacks the wanted files of `blob` into a staging directory under `root` while hashing it,
/// then, when the digest is `digest`, moves them into place.
fn restore_from(
    blob: impl io::Read,
    (digest, blob_path): (&Digest, &Path),
    root: &Path,
    wanted: &dyn Fn(&str) -> bool,
    when: Option<std::time::SystemTime>,
) -> Result<Restored> {
    let blob_path = blob_path.to_path_buf();
    fs::create_dir_all(root).map_err(io_err("creating directory", root))?;
    let staging = tempfile::Builder::new()
        .prefix(".imgbuild-restore-")
        .tempdir_in(root)
        .map_err(io_err("creating temporary directory in", root))?;
    let mut hashing = HashingReader::new(blob);
    let mut staged: Vec<(String, u64)> = Vec::new();
    let unpacked = unpack_into(&mut hashing, staging.path(), wanted, when, &mut staged);
    // Hash whatever the decoder did not need (or everything, after a decoding error).
    io::copy(&mut hashing, &mut io::sink()).map_err(io_err("reading", &blob_path))?;
    let (actual, _) = hashing.finish();
    crate::digest::verify(&blob_path, digest, &actual)?;
    unpacked.map_err(|source| Error::Io {
        action: "unpacking snapshot",
        path: blob_path.clone(),
        source,
    })?;
    let mut restored = Restored::default();
    for (rel, size) in staged {
        let dest = root.join(&rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating directory", parent))?;
        }
        let from = staging.path().join(&rel);
        fs::rename(&from, &dest).map_err(io_err("moving restored file to", &dest))?;
        restored.files += 1;
        restored.bytes += size;
    }
    Ok(restored)
}

type Compressed = zstd::Encoder<'static, HashingWriter<std::io::BufWriter<File>>>;

/// A snapshot being written file by file; nothing is visible in the layout until
/// [`SnapshotWriter::finish`] (dropped unfinished, its temporary file is removed).
pub struct SnapshotWriter<'a> {
    layout: &'a Layout,
    tar: tar::Builder<HashingWriter<Compressed>>,
    tmp: tempfile::NamedTempFile,
}

impl SnapshotWriter<'_> {
    /// Appends `rel` (under `root`) with its recorded `state`; a file whose size is not the
    /// recorded one is an error.
    pub fn append(&mut self, root: &Path, rel: &str, state: &FileState) -> Result<()> {
        let path = root.join(rel);
        let src = File::open(&path).map_err(io_err("opening", &path))?;
        let len = src
            .metadata()
            .map_err(io_err("reading metadata of", &path))?
            .len();
        if len != state.size {
            return Err(Error::Io {
                action: "snapshotting (it changed while being read)",
                path,
                source: io::Error::other(format!("size {len}, expected {}", state.size)),
            });
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(state.mode);
        header.set_mtime(state.mtime);
        header.set_size(len);
        self.tar
            .append_data(&mut header, rel, io::Read::take(src, len))
            .map_err(io_err("adding to snapshot", &path))
    }

    /// Ends the archive and puts the blob in the layout under its digest.
    pub fn finish(self) -> Result<LayerBlob> {
        let uncompressed = self
            .tar
            .into_inner()
            .map_err(io_err("finishing snapshot", self.tmp.path()))?;
        let (encoder, diff_id, uncompressed_size) = uncompressed.finish();
        let compressed = encoder
            .finish()
            .map_err(io_err("compressing snapshot into", self.tmp.path()))?;
        self.layout.commit_blob(
            self.tmp,
            compressed,
            MediaType::ImageLayerZstd,
            diff_id,
            uncompressed_size,
        )
    }
}

fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

/// A path under `root` for `rel`, refusing anything that would leave `root`.
pub fn join_relative(root: &Path, rel: &str) -> Option<PathBuf> {
    is_plain_relative(rel).then(|| root.join(rel))
}

/// A reader that tells `read` how many bytes went through it.
struct Counting<'a, R> {
    inner: R,
    read: &'a dyn Fn(u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            (self.read)(n as u64);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tree(dir: &Path, files: &[(&str, &str, u32, i64)]) {
        for (rel, content, mode, mtime) in files {
            let p = dir.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, content).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
            let f = File::options().write(true).open(&p).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(*mtime as u64))
                .unwrap();
        }
    }

    #[test]
    fn a_snapshot_restores_content_modes_and_mtimes_elsewhere() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        tree(
            &src,
            &[
                ("deps/liba-1.rlib", "rlib", 0o644, 1_700_000_000),
                ("build/a-2/build-script-build", "#!", 0o755, 1_700_000_001),
                ("deps/skip-me", "x", 0o644, 1_700_000_002),
            ],
        );
        let files = scan(
            &src,
            [
                "deps/liba-1.rlib",
                "build/a-2/build-script-build",
                "deps/skip-me",
            ],
        )
        .unwrap();
        let layout = Layout::create(tmp.path().join("store")).unwrap();
        let blob = layout.write_snapshot(&src, &files).unwrap();
        assert_eq!(blob.descriptor.media_type(), &MediaType::ImageLayerZstd);
        assert_eq!(
            layout.write_snapshot(&src, &files).unwrap(),
            blob,
            "stable bytes"
        );

        let dst = tmp.path().join("dst");
        let restored = layout
            .restore_snapshot(blob.descriptor.digest(), &dst, &|p| p != "deps/skip-me")
            .unwrap();
        assert_eq!(restored.files, 2);
        let again = scan(&dst, ["deps/liba-1.rlib", "build/a-2/build-script-build"]).unwrap();
        assert_eq!(again.get("deps/liba-1.rlib"), files.get("deps/liba-1.rlib"));
        assert_eq!(
            again.get("build/a-2/build-script-build"),
            files.get("build/a-2/build-script-build")
        );
        assert!(!dst.join("deps/skip-me").exists());
        let leftovers: Vec<_> = fs::read_dir(&dst)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".imgbuild"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_corrupt_snapshot_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        tree(&src, &[("deps/a", "aaaa", 0o644, 1_700_000_000)]);
        let layout = Layout::create(tmp.path().join("store")).unwrap();
        let blob = layout
            .write_snapshot(&src, &scan(&src, ["deps/a"]).unwrap())
            .unwrap();
        let path = layout.blob_path(blob.descriptor.digest());
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let dst = tmp.path().join("dst");
        let err = layout
            .restore_snapshot(blob.descriptor.digest(), &dst, &|_| true)
            .unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert_eq!(fs::read_dir(&dst).unwrap().count(), 0);
    }

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        assert!(is_plain_relative("deps/a"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a"] {
            assert!(!is_plain_relative(bad), "{bad}");
        }
    }
}
