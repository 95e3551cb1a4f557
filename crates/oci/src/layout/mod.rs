//! The OCI image layout on disk: `oci-layout`, `index.json` and content-addressed `blobs/`.
//!
//! Touches the filesystem (and nothing else). Every write goes to a temporary file and is
//! renamed into place, so a reader never sees a partial blob or index. Blobs are written in
//! the process's scratch directory under `.tmp/` ([`crate::scratch`]), never in `blobs/`, so
//! an interrupted write leaves nothing where other OCI tools look, and the next build removes
//! it. Every blob read back is checked against its digest.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest, MediaType};

use crate::digest::HashingWriter;
use crate::{Error, Result, io_err, json};

mod index;

pub use index::{empty_index, index_of, ref_name, with_ref_name};

/// gzip level used for image layers (written by `layerwrite`). Pinned: another level (or
/// another zlib implementation) gives other bytes, hence another digest.
pub const GZIP_LEVEL: u32 = 6;

const OCI_LAYOUT_FILE: &str = "oci-layout";
const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    /// This process's scratch directory in the layout, made on the first write; shared by
    /// clones and removed with the last of them.
    scratch: Arc<OnceLock<crate::scratch::LockedDir>>,
}

/// A layer written to a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// The compressed blob, as a manifest lists it.
    pub descriptor: Descriptor,
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// An exclusive lock on a layout, released on drop.
#[derive(Debug)]
pub struct LayoutLock {
    _file: File,
}

impl Layout {
    /// Opens `root` as a layout, creating it (and its parents) if it does not exist. An existing
    /// non-empty directory must already be an OCI layout.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_err("creating directory", &root))?;
        let marker = root.join(OCI_LAYOUT_FILE);
        if !marker.exists() {
            let mut entries = fs::read_dir(&root).map_err(io_err("reading directory", &root))?;
            if entries.next().is_some() {
                return Err(Error::NotALayout { path: root });
            }
            write_atomic(&root, OCI_LAYOUT_FILE, OCI_LAYOUT_CONTENT)?;
        }
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(io_err("creating directory", &blobs))?;
        let layout = Self::at(root);
        if !layout.root.join("index.json").exists() {
            layout.write_index(&empty_index()?)?;
        }
        Ok(layout)
    }

    /// Opens an existing layout.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.join(OCI_LAYOUT_FILE).is_file() {
            return Err(Error::NotALayout { path: root });
        }
        Ok(Self::at(root))
    }

    fn at(root: PathBuf) -> Self {
        Self {
            root,
            scratch: Arc::default(),
        }
    }

    /// A new temporary file in this process's scratch directory of the layout (on the same
    /// filesystem as the blobs, so it can be renamed into place).
    pub fn temp_file(&self, prefix: &str) -> Result<tempfile::NamedTempFile> {
        let dir = match self.scratch.get() {
            Some(s) => s.path(),
            None => {
                let made = crate::scratch::LockedDir::scratch(&self.root)?;
                // Another thread may have been first: its directory is used, ours removed.
                let _ = self.scratch.set(made);
                self.scratch.get().map_or(self.root.as_path(), |s| s.path())
            }
        };
        tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(dir)
            .map_err(io_err("creating temporary file in", dir))
    }

    /// The layout's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes an exclusive lock (a `.lock` file in the layout), waiting for other holders.
    /// Held around read-modify-write updates of `index.json`.
    pub fn lock(&self) -> Result<LayoutLock> {
        self.lock_file(".lock", true)
    }

    /// Takes a shared lock on the layout's blobs, held by writers from their first blob until
    /// the tag that references it: garbage collection ([`Layout::gc_lock`]) waits for them.
    pub fn writer_lock(&self) -> Result<LayoutLock> {
        self.lock_file(".gc-lock", false)
    }

    /// Takes the exclusive lock garbage collection holds while it deletes unreferenced blobs.
    pub fn gc_lock(&self) -> Result<LayoutLock> {
        self.lock_file(".gc-lock", true)
    }

    fn lock_file(&self, name: &str, exclusive: bool) -> Result<LayoutLock> {
        let path = self.root.join(name);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening lock file", &path))?;
        if exclusive {
            file.lock().map_err(io_err("locking", &path))?;
        } else {
            file.lock_shared().map_err(io_err("locking", &path))?;
        }
        Ok(LayoutLock { _file: file })
    }

    /// Where the blob with `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_ref())
            .join(digest.digest())
    }

    /// Whether the blob is present (its content is not checked).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The directory holding the sha256 blobs (nothing else: temporary files are elsewhere).
    pub fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// Whether the blob is present and its bytes match its digest (reads it whole).
    pub fn blob_is_intact(&self, digest: &Digest) -> bool {
        self.copy_blob_to_writer(digest, io::sink()).is_ok()
    }

    /// Stores `bytes` as a blob and returns its descriptor. A copy already in the layout is
    /// kept only when it is intact: a damaged one is replaced.
    pub fn put_bytes(&self, media_type: MediaType, bytes: &[u8]) -> Result<Descriptor> {
        let digest = crate::digest::sha256(bytes);
        if !self.blob_is_intact(&digest) {
            let mut tmp = self.temp_file(".tmp-blob-")?;
            tmp.write_all(bytes)
                .map_err(io_err("writing", tmp.path()))?;
            persist(tmp, &self.blob_path(&digest))?;
        }
        Ok(Descriptor::new(media_type, bytes.len() as u64, digest))
    }

    /// Stores the file at `path` as a blob, streamed (never whole in memory) and hashed as it
    /// is copied, and returns its descriptor.
    pub fn put_file(&self, media_type: MediaType, path: &Path) -> Result<Descriptor> {
        let mut src = File::open(path).map_err(io_err("opening", path))?;
        let (tmp, mut writer) = self.start_blob(".tmp-blob-")?;
        io::copy(&mut src, &mut writer).map_err(io_err("copying", path))?;
        let (digest, size) = self.seal_blob(tmp, writer)?;
        Ok(Descriptor::new(media_type, size, digest))
    }

    /// Stores `value` as canonical JSON and returns its descriptor.
    pub fn put_json<T: serde::Serialize>(
        &self,
        media_type: MediaType,
        value: &T,
    ) -> Result<Descriptor> {
        let bytes = json::to_vec(value).map_err(|source| Error::InvalidJson {
            what: "object to store",
            path: self.root.clone(),
            source,
        })?;
        self.put_bytes(media_type, &bytes)
    }

    /// A temporary file in the blob directory, and a writer into it that hashes what it
    /// writes: the start of every streamed blob. Finish with [`Layout::commit_blob`].
    pub(crate) fn start_blob(
        &self,
        prefix: &str,
    ) -> Result<(tempfile::NamedTempFile, HashingWriter<BufWriter<File>>)> {
        let tmp = self.temp_file(prefix)?;
        let file = tmp
            .as_file()
            .try_clone()
            .map_err(io_err("opening", tmp.path()))?;
        Ok((tmp, HashingWriter::new(BufWriter::new(file))))
    }

    /// Flushes a blob started with [`Layout::start_blob`] and renames it into place under its
    /// digest (over a copy already there, which may be damaged); its digest and size.
    fn seal_blob(
        &self,
        tmp: tempfile::NamedTempFile,
        written: HashingWriter<BufWriter<File>>,
    ) -> Result<(Digest, u64)> {
        let (mut buf, digest, size) = written.finish();
        buf.flush().map_err(io_err("writing", tmp.path()))?;
        drop(buf);
        persist(tmp, &self.blob_path(&digest))?;
        Ok((digest, size))
    }

    /// [`Layout::seal_blob`] for a layer, with what the config needs of it.
    pub(crate) fn commit_blob(
        &self,
        tmp: tempfile::NamedTempFile,
        written: HashingWriter<BufWriter<File>>,
        media_type: MediaType,
        diff_id: Digest,
        uncompressed_size: u64,
    ) -> Result<LayerBlob> {
        let (digest, size) = self.seal_blob(tmp, written)?;
        Ok(LayerBlob {
            descriptor: Descriptor::new(media_type, size, digest),
            diff_id,
            uncompressed_size,
        })
    }

    /// Moves a finished temporary file created in this layout's blob directory into place as
    /// the blob `digest`. The caller has verified the bytes against the digest.
    pub fn adopt_blob(&self, tmp: tempfile::NamedTempFile, digest: &Digest) -> Result<()> {
        persist(tmp, &self.blob_path(digest))
    }

    /// Opens a blob for streaming. The caller verifies (see [`Layout::read_blob`] for the
    /// checked whole-blob read).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::MissingBlob {
                    layout: self.root.clone(),
                    digest: digest.to_string(),
                }
            } else {
                io_err("opening", &path)(e)
            }
        })
    }

    /// Reads a whole blob, verifying its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let mut bytes = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .map_err(io_err("reading", &path))?;
        let actual = crate::digest::sha256(&bytes);
        crate::digest::verify(&path, digest, &actual)?;
        Ok(bytes)
    }

    /// Streams the blob `digest` into `out`, verifying it; returns the byte count. On a mismatch
    /// the bytes were written but an error is returned: write to a temporary file.
    pub fn copy_blob_to_writer(&self, digest: &Digest, out: impl Write) -> Result<u64> {
        let path = self.blob_path(digest);
        let mut src = self.open_blob(digest)?;
        let mut writer = HashingWriter::new(out);
        io::copy(&mut src, &mut writer).map_err(io_err("copying", &path))?;
        let (_, actual, n) = writer.finish();
        crate::digest::verify(&path, digest, &actual)?;
        Ok(n)
    }

    /// Copies a blob into `other`, verified, unless `other` has it already.
    pub fn copy_blob(&self, digest: &Digest, other: &Layout) -> Result<()> {
        if other.has_blob(digest) {
            return Ok(());
        }
        let mut tmp = other.temp_file(".tmp-blob-")?;
        let path = tmp.path().to_path_buf();
        {
            let mut out = BufWriter::new(tmp.as_file_mut());
            self.copy_blob_to_writer(digest, &mut out)?;
            out.flush().map_err(io_err("writing", &path))?;
        }
        let dest = other.blob_path(digest);
        persist(tmp, &dest)?;
        Ok(())
    }

    /// Reads and parses the image manifest with `digest`.
    pub fn read_manifest(&self, digest: &Digest) -> Result<ImageManifest> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|source| Error::InvalidJson {
            what: "image manifest",
            path: self.blob_path(digest),
            source,
        })
    }

    /// The manifest's blob, its config's and its layers' descriptors, in that order. For an
    /// image index: the index's blob, then each image's blobs in the index's order.
    pub fn image_blobs(&self, manifest: &Descriptor) -> Result<Vec<Descriptor>> {
        if *manifest.media_type() == MediaType::ImageIndex {
            let bytes = self.read_blob(manifest.digest())?;
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|source| Error::InvalidJson {
                    what: "image index",
                    path: self.blob_path(manifest.digest()),
                    source,
                })?;
            let mut all = vec![manifest.clone()];
            for child in index.manifests() {
                all.extend(self.image_blobs(child)?);
            }
            return Ok(all);
        }
        let parsed = self.read_manifest(manifest.digest())?;
        let mut all = vec![manifest.clone(), parsed.config().clone()];
        all.extend(parsed.layers().iter().cloned());
        Ok(all)
    }
}

/// Moves a finished temporary file to `dest`, readable by everyone (`0644`, as files written
/// without a temporary file would be under the usual umask), so a store can be shared.
pub(crate) fn persist(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(io_err("setting permissions of", tmp.path()))?;
    tmp.persist(dest)
        .map_err(|e| io_err("renaming into", dest)(e.error))?;
    Ok(())
}

/// Writes `bytes` to `dir/name` through a temporary file in `dir` and a rename.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io_err("creating temporary file in", dir))?;
    tmp.write_all(bytes)
        .map_err(io_err("writing", tmp.path()))?;
    persist(tmp, &dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Content;
    use crate::layer::LayerBuilder;

    #[test]
    fn a_layer_written_twice_has_one_digest_and_a_matching_diff_id() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path().join("l")).unwrap();
        let mut b = LayerBuilder::new();
        b.file("/app/hello", Content::Bytes(b"hi".to_vec()), 0o755)
            .unwrap();
        let one = layout.write_layer(&b, 7).unwrap();
        let two = layout.write_layer(&b, 7).unwrap();
        assert_eq!(one, two);
        let tar = b.write_tar(Vec::new(), 7).unwrap();
        assert_eq!(one.diff_id, crate::digest::sha256(&tar));
        let mut un = Vec::new();
        layout
            .open_layer(&one.descriptor)
            .unwrap()
            .read_to_end(&mut un)
            .unwrap();
        assert_eq!(un, tar);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(layout.blob_path(one.descriptor.digest()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o644,
            "blobs are readable by other users of the store"
        );
        let leftovers: Vec<_> = fs::read_dir(layout.blob_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_corrupt_blob_is_reported_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let desc = layout.put_bytes(MediaType::ImageConfig, b"{}").unwrap();
        fs::write(layout.blob_path(desc.digest()), b"{ }").unwrap();
        let err = layout.read_blob(desc.digest()).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    }

    #[test]
    fn tags_replace_their_previous_target() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let a = layout.put_bytes(MediaType::ImageManifest, b"a").unwrap();
        let b = layout.put_bytes(MediaType::ImageManifest, b"b").unwrap();
        layout.set_tag("x", &a).unwrap();
        layout.set_tag("y", &a).unwrap();
        layout.set_tag("x", &b).unwrap();
        assert_eq!(layout.resolve("x").unwrap().digest(), b.digest());
        assert_eq!(layout.resolve("y").unwrap().digest(), a.digest());
        assert_eq!(layout.read_index().unwrap().manifests().len(), 2);
    }

    #[test]
    fn a_non_empty_directory_that_is_not_a_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("precious.txt"), b"data").unwrap();
        let err = Layout::create(dir.path()).unwrap_err();
        assert!(matches!(err, Error::NotALayout { .. }), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
