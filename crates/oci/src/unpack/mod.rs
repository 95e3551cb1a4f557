//! Unpacks an image's layers into a directory, to serve as a sandbox's root filesystem.
//!
//! Touches the filesystem, and writes only below a staging directory `.tmp-unpack-*` created
//! next to the destination. Once every layer is applied the staging directory is renamed to the
//! destination, so the destination either does not exist or holds the whole image: an error
//! removes the staging directory, and a killed unpack leaves only a staging directory, which
//! [`is_staging_dir`] recognizes and [`remove_unpacked_tree`] removes.
//!
//! The layers may be hostile. Entry names are made relative (a leading `/` or `./` is dropped)
//! and a `..` component is an error; an entry whose parent is a symbolic link is an error, never
//! followed, and so is a hard link whose target is not a regular file reached through real
//! directories. Symbolic links themselves are created as stored, absolute or not: they are
//! resolved inside the sandbox. Whiteouts follow the OCI image spec (`.wh.NAME`, and
//! `.wh..wh..opq` for opaque directories) and are never written themselves.
//!
//! Kept: regular files' contents, modes (set-id bits included) and modification times;
//! directories' modes; symbolic links and hard links. Not kept: owners (nothing is chowned, so
//! the unpack can run unprivileged and every file belongs to the user that ran it), extended
//! attributes (file capabilities among them), and directories' and links' modification times.
//! Device nodes and fifos are skipped and counted (a tar has no entry type for sockets). Nothing
//! is synced to disk.

mod path;
#[cfg(test)]
mod tests;
mod tree;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use tar::EntryType;

use self::path::{Name, invalid};
use self::tree::Tree;
use crate::media::LayerMediaType;
use crate::{Error, Result, io_err};

/// How the names of staging directories start.
pub const STAGING_PREFIX: &str = ".tmp-unpack-";

/// What [`crate::Error::Io`] names when the tar stream itself cannot be read.
const TAR_STREAM: &str = "<tar stream>";

/// Whether a directory entry named `name` is an unpack's staging directory: one that is still
/// running, or one that was killed and left it behind.
pub fn is_staging_dir(name: &str) -> bool {
    name.starts_with(STAGING_PREFIX)
}

/// One layer blob to unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSource {
    /// How the blob is compressed.
    pub media_type: LayerMediaType,
    /// Where the blob is. Its digest is not checked here.
    pub path: PathBuf,
}

impl LayerSource {
    /// The blob at `path`, of type `media_type`.
    pub fn new(media_type: LayerMediaType, path: impl Into<PathBuf>) -> Self {
        Self {
            media_type,
            path: path.into(),
        }
    }
}

/// What an unpack did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnpackReport {
    /// Layers applied.
    pub layers: usize,
    /// Regular files written.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Directory entries applied.
    pub directories: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Hard links created.
    pub hard_links: u64,
    /// Whiteout entries applied (`.wh.NAME` and opaque markers).
    pub whiteouts: u64,
    /// Character and block device entries skipped.
    pub devices_skipped: u64,
    /// Fifo entries skipped.
    pub fifos_skipped: u64,
    /// Other entries skipped: pax global headers, aufs `.wh..wh.*` bookkeeping, unknown types.
    pub other_skipped: u64,
    /// The destination already existed when this unpack finished (a concurrent one won): it was
    /// kept and this unpack's tree discarded.
    pub already_present: bool,
}

impl UnpackReport {
    /// Entries written: files, directories and links.
    pub fn entries_written(&self) -> u64 {
        self.files + self.directories + self.symlinks + self.hard_links
    }
}

/// Unpacks the blobs `layers` (bottom layer first) into `dest`, which must not exist yet; see
/// the [module documentation](self) for what is kept and what is refused.
pub fn unpack_layers(layers: &[LayerSource], dest: &Path) -> Result<UnpackReport> {
    let mut unpacker = Unpacker::new(dest)?;
    for layer in layers {
        let file = File::open(&layer.path).map_err(io_err("opening layer", &layer.path))?;
        let tar = layer
            .media_type
            .decoder(BufReader::with_capacity(1 << 16, file))
            .map_err(io_err("starting to decompress", &layer.path))?;
        unpacker = unpacker.add_layer(&layer.path.display().to_string(), tar)?;
    }
    unpacker.finish()
}

/// An unpack in progress, for callers that read layers themselves (to hash them while they
/// are read, say): [`Unpacker::add_layer`] for each layer's uncompressed tar, bottom first,
/// then [`Unpacker::finish`]. Dropped before `finish`, it removes its staging directory.
#[derive(Debug)]
pub struct Unpacker {
    staging: tempfile::TempDir,
    dest: PathBuf,
    tree: Tree,
    report: UnpackReport,
}

impl Unpacker {
    /// Starts an unpack into `dest`: creates its parent if needed and a staging directory in
    /// it. `dest` existing already is an [`Error::Io`] of kind `AlreadyExists`.
    pub fn new(dest: &Path) -> Result<Self> {
        let refuse = |kind, why: &str| Error::Io {
            action: "unpacking into",
            path: dest.to_path_buf(),
            source: io::Error::new(kind, why),
        };
        let parent = match dest.parent() {
            Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
            Some(parent) => parent,
            None => return Err(refuse(io::ErrorKind::InvalidInput, "it has no parent")),
        };
        if fs::symlink_metadata(dest).is_ok() {
            return Err(refuse(io::ErrorKind::AlreadyExists, "it already exists"));
        }
        fs::create_dir_all(parent).map_err(io_err("creating directory", parent))?;
        let staging = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(parent)
            .map_err(io_err("creating temporary directory in", parent))?;
        let tree = Tree::new(staging.path().to_path_buf());
        Ok(Self {
            staging,
            dest: dest.to_path_buf(),
            tree,
            report: UnpackReport::default(),
        })
    }

    /// Applies the next layer, read from `tar` (its uncompressed tar stream; see
    /// [`LayerMediaType::decoder`]). `name` (a digest or path) is what errors call the layer,
    /// as [`Error::UnpackFailed`]. On error the unpack is over: the staging directory is removed.
    pub fn add_layer(mut self, name: &str, tar: impl Read) -> Result<Self> {
        let index = self.report.layers;
        self.read_layer(tar).map_err(|source| Error::UnpackFailed {
            index,
            name: name.to_string(),
            source: Box::new(source),
        })?;
        self.report.layers += 1;
        Ok(self)
    }

    /// Sets the directories' final modes and renames the staging directory to the destination.
    /// If the destination appeared meanwhile, it is kept, this tree is removed, and the report
    /// says [`UnpackReport::already_present`]. (An empty directory there is replaced: `rename`
    /// does that, and it holds no image.)
    pub fn finish(self) -> Result<UnpackReport> {
        let Self {
            staging,
            dest,
            tree,
            mut report,
        } = self;
        // From here directories may be read-only, which `TempDir`'s drop cannot remove.
        let staged = staging.keep();
        let published = tree
            .apply_dir_modes()
            .and_then(|()| publish(&staged, &dest));
        if !matches!(published, Ok(true)) {
            // Best effort: what is left is a staging directory, for a later sweep.
            let _ = remove_unpacked_tree(&staged);
        }
        report.already_present = !published?;
        Ok(report)
    }

    fn read_layer(&mut self, tar: impl Read) -> Result<()> {
        self.tree.begin_layer();
        let mut archive = tar::Archive::new(tar);
        for entry in archive.entries().map_err(io_err("reading", TAR_STREAM))? {
            let mut entry = entry.map_err(io_err("reading", TAR_STREAM))?;
            self.entry(&mut entry)?;
        }
        // Reach the end of the compressed stream, so that a corrupt tail is an error too.
        io::copy(&mut archive.into_inner(), &mut io::sink())
            .map_err(io_err("reading the end of", TAR_STREAM))?;
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let rel = path::normalize(&raw)
            .ok_or_else(|| invalid(&shown, "its `..` component escapes the image root"))?;
        let report = &mut self.report;
        match path::classify(&rel, &shown)? {
            Name::Plain => {}
            Name::Whiteout(target) => {
                report.whiteouts += 1;
                return self.tree.whiteout(&target, &shown);
            }
            Name::Opaque(dir) => {
                report.whiteouts += 1;
                return self.tree.opaque(&rel, &dir, &shown);
            }
            Name::AufsMeta => {
                report.other_skipped += 1;
                return Ok(());
            }
        }
        let header = entry.header();
        let mode = || match header.mode() {
            Ok(mode) => Ok(mode & 0o7777),
            Err(e) => Err(invalid(&shown, format!("its mode is unreadable: {e}"))),
        };
        match header.entry_type() {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mode = mode()?;
                let mtime = header.mtime().ok();
                let mtime = mtime.and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)));
                report.bytes += self.tree.file(&rel, &shown, entry, mode, mtime)?;
                report.files += 1;
            }
            EntryType::Directory => {
                self.tree.dir(&rel, &shown, mode()?)?;
                report.directories += 1;
            }
            EntryType::Symlink => {
                let target = link_name(entry, &shown)?;
                self.tree
                    .symlink(&rel, &shown, OsStr::from_bytes(&target))?;
                report.symlinks += 1;
            }
            EntryType::Link => {
                let target = link_name(entry, &shown)?;
                self.tree.hard_link(&rel, &shown, &target)?;
                report.hard_links += 1;
            }
            EntryType::Char | EntryType::Block => report.devices_skipped += 1,
            EntryType::Fifo => report.fifos_skipped += 1,
            _ => report.other_skipped += 1,
        }
        Ok(())
    }
}

/// The target of a link entry, which must have one.
fn link_name<R: Read>(entry: &tar::Entry<'_, R>, shown: &str) -> Result<Vec<u8>> {
    match entry.link_name_bytes() {
        Some(target) if !target.is_empty() => Ok(target.into_owned()),
        _ => Err(invalid(shown, "the link has no target")),
    }
}

/// Renames `staged` to `dest`. `false` if `dest` exists (before or instead): theirs is kept.
fn publish(staged: &Path, dest: &Path) -> Result<bool> {
    if fs::symlink_metadata(dest).is_ok() {
        return Ok(false);
    }
    match fs::rename(staged, dest) {
        Ok(()) => Ok(true),
        Err(_) if fs::symlink_metadata(dest).is_ok() => Ok(false),
        Err(e) => Err(io_err("renaming into", dest)(e)),
    }
}

/// Removes an unpacked tree or a staging directory left behind, making its directories
/// writable first (`remove_dir_all` alone fails below a read-only directory, unless root).
/// Symbolic links are removed, never followed.
pub fn remove_unpacked_tree(path: &Path) -> Result<()> {
    make_dirs_writable(path)?;
    fs::remove_dir_all(path).map_err(io_err("removing directory", path))
}

fn make_dirs_writable(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(io_err("reading metadata of", dir))?;
    if !meta.is_dir() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700))
            .map_err(io_err("setting permissions of", dir))?;
    }
    for entry in fs::read_dir(dir).map_err(io_err("reading directory", dir))? {
        let entry = entry.map_err(io_err("reading directory", dir))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            make_dirs_writable(&entry.path())?;
        }
    }
    Ok(())
}
