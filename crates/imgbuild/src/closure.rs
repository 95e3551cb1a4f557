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
pub(crate) fn resolve(binary: &Path) -> Result<Closure> {
    let tree = lddtree::DependencyAnalyzer::new(PathBuf::from("/"))
        .analyze(binary)
        .map_err(|e| Error::Closure {
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
        let Some(real) = &lib.realpath else {
            missing.push(lib.name.clone());
            continue;
        };
        let image_path = lib.path.to_string_lossy().into_owned();
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
        let real = std::fs::canonicalize(interp).map_err(|e| Error::Closure {
            binary: binary.to_path_buf(),
            message: format!("its ELF interpreter {interp} is not on this machine: {e}"),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = resolve(&me).unwrap();
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
