//! The staged root filesystem: applies layer entries one at a time to a private directory,
//! never following a symbolic link and never writing outside it.
//!
//! Touches the filesystem, only under its root. Before an entry is created, every parent of its
//! path is checked with `symlink_metadata`: a symbolic link there is an error, not something to
//! follow. Whatever was at the entry's own path is removed first (a file is never opened for
//! writing in place, so neither a symbolic link nor another hard link to it is written through).
//! Directories stay `0755` while layers are applied, so a read-only directory blocks neither its
//! children nor a later whiteout; [`Tree::apply_dir_modes`] sets their modes at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Read};
use std::ops::Bound;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::path::{in_image, invalid, normalize};
use crate::{Result, io_err};

/// Mode of directories while layers are applied, and of directories no entry describes.
const WORKING_DIR_MODE: u32 = 0o755;

/// A root filesystem being built in a directory.
#[derive(Debug)]
pub(super) struct Tree {
    root: PathBuf,
    /// Final mode of every directory below the root, by path relative to it.
    dir_modes: BTreeMap<PathBuf, u32>,
    /// Final mode of the root itself (a `./` entry sets it).
    root_mode: u32,
    /// Paths the current layer wrote: its whiteouts only hide what lower layers wrote.
    written: BTreeSet<PathBuf>,
}

/// What the parents of a path are.
enum Parents {
    /// All real directories (missing ones were created, if asked).
    Ready,
    /// One does not exist (and was not created).
    Missing,
    /// This one is a symbolic link.
    Symlink(PathBuf),
    /// This one is neither a directory nor a symbolic link.
    NotDir(PathBuf),
}

impl Tree {
    /// A tree rooted at `root`, an existing empty directory.
    pub(super) fn new(root: PathBuf) -> Self {
        Self {
            root,
            dir_modes: BTreeMap::new(),
            root_mode: WORKING_DIR_MODE,
            written: BTreeSet::new(),
        }
    }

    /// Starts the next layer: its whiteouts apply to everything written so far.
    pub(super) fn begin_layer(&mut self) {
        self.written.clear();
    }

    /// Writes a regular file with `data`, `mode` and `mtime`; returns its size.
    pub(super) fn file(
        &mut self,
        rel: &Path,
        shown: &str,
        data: &mut impl Read,
        mode: u32,
        mtime: Option<SystemTime>,
    ) -> Result<u64> {
        let abs = self.prepare(rel, shown)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&abs)
            .map_err(io_err("creating", &abs))?;
        let size = io::copy(data, &mut file).map_err(io_err("unpacking into", &abs))?;
        if let Some(mtime) = mtime {
            file.set_modified(mtime)
                .map_err(io_err("setting the modification time of", &abs))?;
        }
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(io_err("setting permissions of", &abs))?;
        Ok(size)
    }

    /// Makes `rel` a directory with final mode `mode`, keeping its contents if it already is
    /// one. The empty path is the root: only its mode is recorded.
    pub(super) fn dir(&mut self, rel: &Path, shown: &str, mode: u32) -> Result<()> {
        if rel.as_os_str().is_empty() {
            self.root_mode = mode;
            return Ok(());
        }
        self.ready(rel, shown)?;
        let abs = self.root.join(rel);
        if !fs::symlink_metadata(&abs).is_ok_and(|m| m.is_dir()) {
            self.clear(rel)?;
            mkdir(&abs)?;
        }
        self.dir_modes.insert(rel.to_path_buf(), mode);
        self.written.insert(rel.to_path_buf());
        Ok(())
    }

    /// Creates a symbolic link to `target`, stored as is (it is resolved inside the sandbox).
    pub(super) fn symlink(&mut self, rel: &Path, shown: &str, target: &OsStr) -> Result<()> {
        let abs = self.prepare(rel, shown)?;
        std::os::unix::fs::symlink(target, &abs).map_err(io_err("creating symbolic link", &abs))
    }

    /// Creates a hard link to `target_raw` (an entry name), which must be a regular file already
    /// in the tree, reached through real directories only.
    pub(super) fn hard_link(&mut self, rel: &Path, shown: &str, target_raw: &[u8]) -> Result<()> {
        let named = String::from_utf8_lossy(target_raw);
        let target = normalize(target_raw).ok_or_else(|| {
            invalid(
                shown,
                format!("its hard link target {named:?} escapes the image root"),
            )
        })?;
        let shown_target = in_image(&target);
        let missing = || {
            invalid(
                shown,
                format!("its hard link target {shown_target} does not exist"),
            )
        };
        match self.parents(&target, false)? {
            Parents::Ready => {}
            Parents::Missing | Parents::NotDir(_) => return Err(missing()),
            Parents::Symlink(link) => {
                return Err(invalid(
                    shown,
                    format!(
                        "its hard link target {shown_target} goes through the symbolic link {}",
                        in_image(&link)
                    ),
                ));
            }
        }
        let from = self.root.join(&target);
        match fs::symlink_metadata(&from) {
            Ok(meta) if meta.is_file() => {}
            Ok(meta) => {
                let kind = if meta.file_type().is_symlink() {
                    "a symbolic link"
                } else {
                    "not a regular file"
                };
                let reason = format!("its hard link target {shown_target} is {kind}");
                return Err(invalid(shown, reason));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(io_err("reading metadata of", &from)(e)),
        }
        if target == rel {
            self.written.insert(target);
            return Ok(());
        }
        let abs = self.prepare(rel, shown)?;
        fs::hard_link(&from, &abs).map_err(io_err("creating hard link", &abs))
    }

    /// Applies the whiteout of `rel`: removes what lower layers put there. Nothing there is
    /// not an error.
    pub(super) fn whiteout(&mut self, rel: &Path, shown: &str) -> Result<()> {
        match self.parents(rel, false)? {
            Parents::Ready => self.remove_lower(rel),
            Parents::Missing | Parents::NotDir(_) => Ok(()),
            Parents::Symlink(link) => Err(through_symlink(shown, &link)),
        }
    }

    /// Applies the opaque marker `marker` (`DIR/.wh..wh..opq`): removes what lower layers put
    /// in `dir`, keeping what this layer wrote there, before or after the marker.
    pub(super) fn opaque(&mut self, marker: &Path, dir: &Path, shown: &str) -> Result<()> {
        match self.parents(marker, false)? {
            Parents::Ready => self.remove_lower_children(dir),
            Parents::Missing | Parents::NotDir(_) => Ok(()),
            Parents::Symlink(link) => Err(through_symlink(shown, &link)),
        }
    }

    /// Sets every directory's final mode, the deepest first (a directory without search
    /// permission would hide its children), then the root's.
    pub(super) fn apply_dir_modes(&self) -> Result<()> {
        for (rel, mode) in self.dir_modes.iter().rev() {
            let abs = self.root.join(rel);
            let meta = fs::symlink_metadata(&abs).map_err(io_err("reading metadata of", &abs))?;
            if meta.is_dir() {
                fs::set_permissions(&abs, Permissions::from_mode(*mode))
                    .map_err(io_err("setting permissions of", &abs))?;
            }
        }
        fs::set_permissions(&self.root, Permissions::from_mode(self.root_mode))
            .map_err(io_err("setting permissions of", &self.root))
    }

    /// Readies `rel` for a new entry: parents checked (missing ones created), whatever was at
    /// `rel` removed. Returns its path on disk.
    fn prepare(&mut self, rel: &Path, shown: &str) -> Result<PathBuf> {
        if rel.as_os_str().is_empty() {
            return Err(invalid(shown, "only a directory can be the image root"));
        }
        self.ready(rel, shown)?;
        self.clear(rel)?;
        self.written.insert(rel.to_path_buf());
        Ok(self.root.join(rel))
    }

    /// Checks that the parents of `rel` are real directories, creating missing ones.
    fn ready(&mut self, rel: &Path, shown: &str) -> Result<()> {
        match self.parents(rel, true)? {
            Parents::Ready | Parents::Missing => Ok(()),
            Parents::Symlink(link) => Err(through_symlink(shown, &link)),
            Parents::NotDir(file) => Err(invalid(
                shown,
                format!("{} is not a directory", in_image(&file)),
            )),
        }
    }

    /// Looks at each parent of `rel` without following links; creates missing ones (recording
    /// them as written by this layer) if `create`.
    fn parents(&mut self, rel: &Path, create: bool) -> Result<Parents> {
        let Some(parent) = rel.parent() else {
            return Ok(Parents::Ready);
        };
        let mut sub = PathBuf::new();
        for component in parent.components() {
            sub.push(component);
            let abs = self.root.join(&sub);
            match fs::symlink_metadata(&abs) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => return Ok(Parents::Symlink(sub)),
                Ok(_) => return Ok(Parents::NotDir(sub)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    mkdir(&abs)?;
                    self.dir_modes.insert(sub.clone(), WORKING_DIR_MODE);
                    self.written.insert(sub.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Parents::Missing),
                Err(e) => return Err(io_err("reading metadata of", &abs)(e)),
            }
        }
        Ok(Parents::Ready)
    }

    /// Removes whatever is at `rel` (a whole tree for a directory; a link, not its target).
    fn clear(&mut self, rel: &Path) -> Result<()> {
        let abs = self.root.join(rel);
        let meta = match fs::symlink_metadata(&abs) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("reading metadata of", &abs)(e)),
        };
        if meta.is_dir() {
            fs::remove_dir_all(&abs).map_err(io_err("removing directory", &abs))?;
            self.dir_modes.retain(|p, _| !p.starts_with(rel));
            self.written.retain(|p| !p.starts_with(rel));
        } else {
            fs::remove_file(&abs).map_err(io_err("removing", &abs))?;
        }
        Ok(())
    }

    /// Removes what lower layers put at `rel`, keeping what the current layer wrote.
    fn remove_lower(&mut self, rel: &Path) -> Result<()> {
        let abs = self.root.join(rel);
        let meta = match fs::symlink_metadata(&abs) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("reading metadata of", &abs)(e)),
        };
        if !meta.is_dir() {
            if self.written.contains(rel) {
                return Ok(());
            }
            return self.clear(rel);
        }
        let wrote_under = self
            .written
            .range::<Path, _>((Bound::Included(rel), Bound::Unbounded))
            .next()
            .is_some_and(|p| p.starts_with(rel));
        if wrote_under {
            self.remove_lower_children(rel)
        } else {
            self.clear(rel)
        }
    }

    /// [`Tree::remove_lower`] for each entry of directory `dir`.
    fn remove_lower_children(&mut self, dir: &Path) -> Result<()> {
        let abs = self.root.join(dir);
        let names = fs::read_dir(&abs)
            .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect())
            .map_err(io_err("reading directory", &abs));
        let names: Vec<_> = names?;
        for name in names {
            self.remove_lower(&dir.join(name))?;
        }
        Ok(())
    }
}

fn through_symlink(shown: &str, link: &Path) -> crate::Error {
    invalid(
        shown,
        format!("writes through the symbolic link {}", in_image(link)),
    )
}

fn mkdir(abs: &Path) -> Result<()> {
    DirBuilder::new()
        .mode(WORKING_DIR_MODE)
        .create(abs)
        .map_err(io_err("creating directory", abs))
}
