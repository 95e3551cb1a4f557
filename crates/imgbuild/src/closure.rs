//! The binary's shared-library closure: its ELF interpreter and every `DT_NEEDED` library,
//! resolved as the dynamic loader would (RUNPATH/RPATH, `LD_LIBRARY_PATH`, `/etc/ld.so.conf`,
//! the trusted directories), so that an image with no base runs a dynamically linked binary.
//!
//! Reads the binary and the host's libraries (through `lddtree`); runs nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use imgbuild_oci::layer::{Content, LayerBuilder};

use crate::{Error, Result};

/// The files the binary needs at run time, by their path inside the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Closure {
    /// Image path → host file holding the bytes (symlinks already followed).
    pub files: BTreeMap<String, PathBuf>,
    /// Image path → link target, for an interpreter reached under two names.
    pub symlinks: BTreeMap<String, String>,
    /// Directories outside the loader's default search path that hold needed libraries; the
    /// image sets `LD_LIBRARY_PATH` to them.
    pub extra_dirs: Vec<String>,
    /// The ELF interpreter, if the binary is dynamically linked.
    pub interpreter: Option<String>,
}

impl Closure {
    /// Whether the binary needs nothing (statically linked).
    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty() && self.symlinks.is_empty()
    }

    /// The closure as a layer.
    pub(crate) fn layer(&self) -> Result<LayerBuilder> {
        let mut b = LayerBuilder::new();
        for (path, host) in &self.files {
            b.file(path, Content::HostFile(host.clone()), 0o755)?;
        }
        for (path, target) in &self.symlinks {
            b.symlink(path, target)?;
        }
        Ok(b)
    }
}

impl Closure {
    /// The part of the closure a base image does not already provide, placed where the base's
    /// directories really are (a merged-usr `/lib` symlink stays a symlink).
    pub(crate) fn on_base(&self, base: &crate::basefs::BaseFs) -> Closure {
        let provided = |path: &str| {
            let name = path.rsplit('/').next().unwrap_or_default();
            base.has_file(path) || base.find_library(name).is_some()
        };
        let mut out = Closure {
            extra_dirs: self.extra_dirs.clone(),
            interpreter: self.interpreter.clone(),
            ..Closure::default()
        };
        for (path, host) in &self.files {
            if !provided(path) {
                out.files.insert(base.placement(path), host.clone());
            }
        }
        for (path, target) in &self.symlinks {
            if !base.has_file(path) {
                out.symlinks.insert(base.placement(path), target.clone());
            }
        }
        out
    }
}

/// Whether the loader finds libraries in `dir` without help.
fn is_default_dir(dir: &str) -> bool {
    matches!(dir, "/lib" | "/lib64" | "/usr/lib" | "/usr/lib64")
        || ["/lib/", "/usr/lib/"].iter().any(|prefix| {
            dir.strip_prefix(prefix)
                .is_some_and(|rest| !rest.contains('/') && rest.contains("-linux-"))
        })
}

/// Resolves the closure of the executable at `binary`.
pub(crate) fn resolve(binary: &Path, root: &Path) -> Result<Closure> {
    let mut analyzer = lddtree::DependencyAnalyzer::new(root.to_path_buf());
    if root != Path::new("/") {
        // lddtree reads the host's ld.so.conf even under another root; give it the root's.
        analyzer = analyzer.library_paths(
            ld_so_conf_dirs(root)
                .iter()
                .filter_map(|d| resolve_in_root(root, Path::new(d)))
                .collect(),
        );
    }
    let tree = analyzer.analyze(binary).map_err(|e| Error::Closure {
        binary: binary.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut closure = Closure {
        interpreter: tree.interpreter.clone(),
        ..Closure::default()
    };
    let mut missing = Vec::new();
    let mut by_realpath: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut extra_dirs = std::collections::BTreeSet::new();
    let mut names: Vec<&String> = tree.libraries.keys().collect();
    names.sort();
    for name in names {
        let lib = &tree.libraries[name];
        // lddtree names libraries under `root`; the image path is the same path without it,
        // and the file to copy is found as the dynamic loader would find it in that root.
        let in_root = Path::new("/").join(lib.path.strip_prefix(root).unwrap_or(&lib.path));
        let Some(real) = lib
            .realpath
            .as_ref()
            .and_then(|_| resolve_in_root(root, &in_root))
        else {
            missing.push(lib.name.clone());
            continue;
        };
        let real = &real;
        let image_path = in_root.to_string_lossy().into_owned();
        if tree.interpreter.as_deref() == Some(image_path.as_str()) {
            continue; // added below under its exact PT_INTERP path
        }
        if let Some(dir) = Path::new(&image_path)
            .parent()
            .map(|d| d.to_string_lossy().into_owned())
            && !is_default_dir(&dir)
        {
            extra_dirs.insert(dir);
        }
        by_realpath.insert(real.clone(), image_path.clone());
        closure.files.insert(image_path, real.clone());
    }
    if !missing.is_empty() {
        return Err(Error::MissingLibraries {
            binary: binary.to_path_buf(),
            libraries: missing,
        });
    }
    if let Some(interp) = &tree.interpreter {
        let real = resolve_in_root(root, Path::new(interp))
            .filter(|p| p.is_file())
            .ok_or_else(|| Error::Closure {
                binary: binary.to_path_buf(),
                message: format!(
                    "its ELF interpreter {interp} is not in {} (the build's root filesystem)",
                    root.display()
                ),
            })?;
        match by_realpath.get(&real) {
            Some(existing) if existing != interp => {
                closure.symlinks.insert(interp.clone(), existing.clone());
            }
            _ => {
                closure.files.insert(interp.clone(), real);
            }
        }
    }
    closure.extra_dirs = extra_dirs.into_iter().collect();
    Ok(closure)
}

/// The directories the dynamic loader of the system rooted at `root` searches: its
/// `/etc/ld.so.conf` (with `include` lines, whose patterns may end in `*…`), then the trusted
/// directories. Paths as seen inside the root.
fn ld_so_conf_dirs(root: &Path) -> Vec<String> {
    let mut dirs = Vec::new();
    read_ld_so_conf(root, Path::new("/etc/ld.so.conf"), 0, &mut dirs);
    for trusted in ["/lib", "/lib64", "/usr/lib", "/usr/lib64"] {
        dirs.push(trusted.to_string());
    }
    let mut seen = std::collections::BTreeSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

fn read_ld_so_conf(root: &Path, file: &Path, depth: usize, dirs: &mut Vec<String>) {
    let Some(text) = resolve_in_root(root, file).and_then(|p| std::fs::read_to_string(p).ok())
    else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if let Some(pattern) = line.strip_prefix("include").map(str::trim) {
            if depth > 8 || pattern.is_empty() {
                continue;
            }
            let pattern = Path::new("/etc").join(pattern);
            let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
                continue;
            };
            let name = name.to_string_lossy();
            let (prefix, suffix) = name.split_once('*').unwrap_or((&name, ""));
            let exact = !name.contains('*');
            let Some(entries) = resolve_in_root(root, dir).and_then(|d| std::fs::read_dir(d).ok())
            else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    if exact {
                        *n == name
                    } else {
                        n.starts_with(prefix)
                            && n.ends_with(suffix)
                            && n.len() >= prefix.len() + suffix.len()
                    }
                })
                .collect();
            names.sort();
            for n in names {
                read_ld_so_conf(root, &dir.join(n), depth + 1, dirs);
            }
        } else if line.starts_with('/') {
            dirs.push(line.to_string());
        }
    }
}

/// The host path of `path` inside `root`, following symbolic links the way the sandbox will
/// (absolute targets start again at `root`, `..` never climbs above it); `None` when a
/// component is missing or the links loop.
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut inside = PathBuf::from("/");
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            inside.pop();
            continue;
        }
        let candidate = inside.join(&name);
        let host = root.join(candidate.strip_prefix("/").ok()?);
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            if target.is_absolute() {
                inside = PathBuf::from("/");
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => pending.push(n.to_os_string()),
                    Component::ParentDir => pending.push("..".into()),
                    _ => {}
                }
            }
        } else {
            inside = candidate;
        }
    }
    Some(root.join(inside.strip_prefix("/").ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_inside_the_root_never_on_the_host() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::write(root.join("usr/lib/x86_64-linux-gnu/ld.so"), "ld").unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::fs::create_dir(root.join("lib64")).unwrap();
        // Absolute, as Debian's /lib64/ld-linux-x86-64.so.2 is.
        std::os::unix::fs::symlink("/lib/x86_64-linux-gnu/ld.so", root.join("lib64/ld.so"))
            .unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("usr/lib/up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/lib64/ld.so")),
            Some(root.join("usr/lib/x86_64-linux-gnu/ld.so"))
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/usr/lib/up/lib/x86_64-linux-gnu/ld.so")),
            Some(root.join("usr/lib/x86_64-linux-gnu/ld.so")),
            "`..` stops at the root"
        );
        assert_eq!(resolve_in_root(root, Path::new("/loop")), None);
        assert_eq!(resolve_in_root(root, Path::new("/missing/x")), None);
    }

    #[test]
    fn default_directories_are_recognized() {
        for dir in [
            "/lib",
            "/usr/lib64",
            "/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
        ] {
            assert!(is_default_dir(dir), "{dir}");
        }
        for dir in [
            "/opt/lib",
            "/usr/local/lib",
            "/usr/lib/x86_64-linux-gnu/blas",
        ] {
            assert!(!is_default_dir(dir), "{dir}");
        }
    }

    #[test]
    fn a_dynamically_linked_host_program_has_its_loader_and_libc() {
        // The test binary itself is linked like the binaries imgbuild packages.
        let me = std::env::current_exe().unwrap();
        let c = resolve(&me, Path::new("/")).unwrap();
        let interp = c
            .interpreter
            .clone()
            .expect("test binaries are dynamically linked");
        assert!(
            c.files.contains_key(&interp) || c.symlinks.contains_key(&interp),
            "{c:?}"
        );
        assert!(c.files.keys().any(|p| p.ends_with("/libc.so.6")), "{c:?}");
        for (path, host) in &c.files {
            assert!(
                path.starts_with('/') && host.is_file(),
                "{path} -> {}",
                host.display()
            );
        }
    }
}
