//! Deterministic layer tarballs.
//!
//! A [`LayerBuilder`] collects entries by their path inside the image and writes them as a tar
//! stream whose bytes depend only on those entries: entries sorted by path, every parent directory
//! present explicitly, owner and group numeric (0 unless set), no user or group names, one fixed
//! modification time, and modes exactly as given. Host files are read at write time, streamed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::{Error, Result, io_err};

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Bytes held in memory (small generated files).
    Bytes(Vec<u8>),
    /// A file on the build host, read (following symlinks) when the layer is written.
    HostFile(PathBuf),
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File {
        /// Its bytes.
        content: Content,
        /// Permission bits, e.g. `0o755`.
        mode: u32,
    },
    /// A directory.
    Dir {
        /// Permission bits, e.g. `0o755` or `0o1777`.
        mode: u32,
    },
    /// A symbolic link.
    Symlink {
        /// The link's target, as stored.
        target: String,
    },
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What the entry is.
    pub kind: EntryKind,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
}

/// Collects entries and writes them as one deterministic tar stream.
#[derive(Debug, Clone, Default)]
pub struct LayerBuilder {
    entries: BTreeMap<String, Entry>,
}

/// Normalizes a path inside the image to its tar form: relative, `/`-separated, no `.` or `..`.
pub fn normalize(path: &str) -> Result<String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(Error::InvalidEntry {
                    path: path.to_string(),
                    reason: "`..` is not allowed in paths inside the image".into(),
                });
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(Error::InvalidEntry {
            path: path.to_string(),
            reason: "the path names the image's root, not a file in it".into(),
        });
    }
    Ok(parts.join("/"))
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The normalized paths of the entries added explicitly, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Adds an entry owned by root. Adding the same path twice is an error unless both are the
    /// same directory.
    pub fn add(&mut self, path: &str, kind: EntryKind) -> Result<()> {
        self.add_owned(path, kind, 0, 0)
    }

    /// Adds an entry with an explicit numeric owner and group.
    pub fn add_owned(&mut self, path: &str, kind: EntryKind, uid: u64, gid: u64) -> Result<()> {
        let key = normalize(path)?;
        let entry = Entry { kind, uid, gid };
        if let Some(existing) = self.entries.get(&key) {
            if *existing == entry && matches!(entry.kind, EntryKind::Dir { .. }) {
                return Ok(());
            }
            return Err(Error::InvalidEntry {
                path: format!("/{key}"),
                reason: "declared twice in the same layer".into(),
            });
        }
        self.entries.insert(key, entry);
        Ok(())
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, content: Content, mode: u32) -> Result<()> {
        self.add(path, EntryKind::File { content, mode })
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        self.add(path, EntryKind::Dir { mode })
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.add(
            path,
            EntryKind::Symlink {
                target: target.to_string(),
            },
        )
    }

    /// All entries to write, with implicit parent directories (root-owned, `0o755`) added.
    fn complete(&self) -> BTreeMap<String, Entry> {
        let mut all = self.entries.clone();
        for key in self.entries.keys() {
            let mut parent = key.as_str();
            while let Some(idx) = parent.rfind('/') {
                parent = &parent[..idx];
                all.entry(parent.to_string()).or_insert(Entry {
                    kind: EntryKind::Dir { mode: 0o755 },
                    uid: 0,
                    gid: 0,
                });
            }
        }
        all
    }

    /// A digest of everything [`LayerBuilder::write_tar`] would read, without reading host
    /// files' contents: each entry, the bytes of in-memory files, and for host files their
    /// identity and change times (device, inode, size, mtime and ctime in nanoseconds). Two
    /// equal fingerprints mean the same tar bytes unless a host file was rewritten in place
    /// with all of those preserved, the assumption make and cargo also rely on.
    pub fn fingerprint(&self, mtime: u64) -> Result<oci_spec::image::Digest> {
        use std::fmt::Write as _;
        use std::os::unix::fs::MetadataExt;
        let mut text = format!("imgbuild-layer-fingerprint v1\nmtime {mtime}\n");
        for (path, entry) in self.complete() {
            let _ = write!(text, "{path}\t{}:{}\t", entry.uid, entry.gid);
            match &entry.kind {
                EntryKind::Dir { mode } => {
                    let _ = writeln!(text, "dir {mode:o}");
                }
                EntryKind::Symlink { target } => {
                    let _ = writeln!(text, "symlink {target}");
                }
                EntryKind::File { content, mode } => match content {
                    Content::Bytes(bytes) => {
                        let _ = writeln!(text, "bytes {mode:o} {}", crate::digest::sha256(bytes));
                    }
                    Content::HostFile(host) => {
                        let m =
                            std::fs::metadata(host).map_err(io_err("reading metadata of", host))?;
                        let _ = writeln!(
                            text,
                            "host {mode:o} {} {}:{} {} {}.{} {}.{}",
                            host.display(),
                            m.dev(),
                            m.ino(),
                            m.len(),
                            m.mtime(),
                            m.mtime_nsec(),
                            m.ctime(),
                            m.ctime_nsec()
                        );
                    }
                },
            }
        }
        Ok(crate::digest::sha256(text.as_bytes()))
    }

    /// Writes the tar stream. Every timestamp is `mtime` (seconds since the Unix epoch).
    pub fn write_tar<W: Write>(&self, out: W, mtime: u64) -> Result<W> {
        let mut tar = tar::Builder::new(out);
        for (path, entry) in self.complete() {
            let mut header = tar::Header::new_gnu();
            header.set_uid(entry.uid);
            header.set_gid(entry.gid);
            header.set_mtime(mtime);
            match &entry.kind {
                EntryKind::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    tar.append_data(&mut header, format!("{path}/"), io::empty())
                        .map_err(io_err("writing layer entry", &path))?;
                }
                EntryKind::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, &path, target)
                        .map_err(io_err("writing layer entry", &path))?;
                }
                EntryKind::File { content, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    match content {
                        Content::Bytes(bytes) => {
                            header.set_size(bytes.len() as u64);
                            tar.append_data(&mut header, &path, bytes.as_slice())
                                .map_err(io_err("writing layer entry", &path))?;
                        }
                        Content::HostFile(host) => {
                            let file = File::open(host).map_err(io_err("opening", host))?;
                            let len = file
                                .metadata()
                                .map_err(io_err("reading metadata of", host))?
                                .len();
                            header.set_size(len);
                            // `take` guards against a file that grows while it is read.
                            tar.append_data(&mut header, &path, io::Read::take(file, len))
                                .map_err(io_err("adding to layer", host))?;
                        }
                    }
                }
            }
        }
        tar.into_inner()
            .map_err(io_err("finishing layer", "<tar stream>"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(tar_bytes: &[u8]) -> Vec<(String, u32, u64, u64, u64)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn entries_are_sorted_with_explicit_parents_and_fixed_metadata() {
        let mut b = LayerBuilder::new();
        b.file("/usr/lib/z.so", Content::Bytes(b"z".to_vec()), 0o644)
            .unwrap();
        b.file("etc/passwd", Content::Bytes(b"root".to_vec()), 0o644)
            .unwrap();
        b.dir("/tmp", 0o1777).unwrap();
        let tar = b.write_tar(Vec::new(), 42).unwrap();
        assert_eq!(
            listing(&tar),
            vec![
                ("etc/".into(), 0o755, 0, 0, 42),
                ("etc/passwd".into(), 0o644, 0, 0, 42),
                ("tmp/".into(), 0o1777, 0, 0, 42),
                ("usr/".into(), 0o755, 0, 0, 42),
                ("usr/lib/".into(), 0o755, 0, 0, 42),
                ("usr/lib/z.so".into(), 0o644, 0, 0, 42),
            ]
        );
    }

    #[test]
    fn insertion_order_does_not_change_the_bytes() {
        let mut a = LayerBuilder::new();
        a.file("b", Content::Bytes(b"1".to_vec()), 0o644).unwrap();
        a.file("a/c", Content::Bytes(b"2".to_vec()), 0o755).unwrap();
        let mut b = LayerBuilder::new();
        b.file("a/c", Content::Bytes(b"2".to_vec()), 0o755).unwrap();
        b.file("b", Content::Bytes(b"1".to_vec()), 0o644).unwrap();
        assert_eq!(
            a.write_tar(Vec::new(), 0).unwrap(),
            b.write_tar(Vec::new(), 0).unwrap()
        );
    }

    #[test]
    fn parent_escapes_and_duplicates_are_refused() {
        let mut b = LayerBuilder::new();
        assert!(b.file("../etc/x", Content::Bytes(vec![]), 0o644).is_err());
        assert!(b.file("/", Content::Bytes(vec![]), 0o644).is_err());
        b.file("/app/x", Content::Bytes(vec![]), 0o644).unwrap();
        let err = b
            .file("app//x", Content::Bytes(vec![1]), 0o644)
            .unwrap_err();
        assert!(err.to_string().contains("declared twice"), "{err}");
    }
}
