//! The cache directory's layout. Every path under it is spelled here and nowhere else, so that
//! what lives where (and what `cache prune` may delete) is decided in one place.
//!
//! Pure: building paths touches no file. The modules that own each kind of file read and write
//! them.

use std::path::{Path, PathBuf};

/// The cache directory: the local image store and the small records beside it.
///
/// ```text
/// <cache>/store/            the local OCI layout (images, dependency entries, app records)
/// <cache>/tools/            the rustc wrapper script
/// <cache>/keys/<package>/   the last built key's inputs per binary (`plan --explain`)
/// <cache>/usage/<key>       last-use markers (`cache ls`, `cache prune`)
/// <cache>/layer-memo/       layer fingerprints → blobs (an unchanged layer is not recompressed)
/// <cache>/base-files/       each base layer's file listing
/// <cache>/bases.json        each base reference's last resolved digest (offline fallback)
/// <cache>/registries/       which repository of each registry holds which blob (mounts)
/// <cache>/sandbox/          the private HOME and TMPDIR of running builds
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDir {
    root: PathBuf,
}

impl CacheDir {
    /// A cache directory at `root` (nothing is created yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$IMGBUILD_CACHE_DIR`, else `$XDG_CACHE_HOME/imgbuild`, else `~/.cache/imgbuild`.
    pub fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let root = if let Some(dir) = var("IMGBUILD_CACHE_DIR") {
            dir
        } else if let Some(dir) = var("XDG_CACHE_HOME") {
            dir.join("imgbuild")
        } else {
            var("HOME")
                .unwrap_or_else(std::env::temp_dir)
                .join(".cache")
                .join("imgbuild")
        };
        Self { root }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local image store (an OCI layout).
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    /// Where the rustc wrapper script is installed.
    pub(crate) fn tools(&self) -> PathBuf {
        self.root.join("tools")
    }

    /// Remembered answers of `cargo metadata`, `cargo tree`, `rustc -vV` and the machine and
    /// sandbox probes, with the state of what they read (`probecache`).
    pub(crate) fn probes(&self) -> PathBuf {
        self.root.join("probes")
    }

    /// The key records of one package's binaries.
    pub(crate) fn key_records(&self, package: &str) -> PathBuf {
        self.root.join("keys").join(package)
    }

    /// The directory of last-use markers.
    pub(crate) fn usage(&self) -> PathBuf {
        self.root.join("usage")
    }

    /// The last-use marker of one cache entry (`key`, or `app-<key>`).
    pub(crate) fn usage_marker(&self, key: &str) -> PathBuf {
        self.usage().join(key)
    }

    /// Layer fingerprints (see `Layout::write_layer_memoized`).
    pub(crate) fn layer_memo(&self) -> PathBuf {
        self.root.join("layer-memo")
    }

    /// The files of a libraries layer with their sha256 (for SBOMs), by the layer's diff_id
    /// hex.
    pub(crate) fn library_listing(&self, diff_id_hex: &str) -> PathBuf {
        self.root
            .join("library-listings")
            .join(format!("{diff_id_hex}.json"))
    }

    /// Base layers' file listings.
    pub(crate) fn base_files(&self) -> PathBuf {
        self.root.join("base-files")
    }

    /// The record of base resolutions: its directory and file name (written atomically).
    pub(crate) fn bases_record(&self) -> (&Path, &'static str) {
        (&self.root, "bases.json")
    }

    /// The record of where blobs live on `registry`: its directory and file name.
    pub(crate) fn registry_record(&self, registry: &str) -> (PathBuf, String) {
        let name: String = registry
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        (self.root.join("registries"), format!("{name}.json"))
    }

    /// Unpacked build environments, one directory per image digest (hex).
    pub(crate) fn build_envs(&self) -> PathBuf {
        self.root.join("build-envs")
    }

    /// The parent of builds' private HOME and TMPDIR directories.
    pub(crate) fn sandbox(&self) -> PathBuf {
        self.root.join("sandbox")
    }
}

impl From<PathBuf> for CacheDir {
    fn from(root: PathBuf) -> Self {
        Self::new(root)
    }
}

impl From<&Path> for CacheDir {
    fn from(root: &Path) -> Self {
        Self::new(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_records_are_named_safely() {
        let c = CacheDir::new("/c");
        assert_eq!(
            c.registry_record("127.0.0.1:5000"),
            (PathBuf::from("/c/registries"), "127.0.0.1_5000.json".into())
        );
    }

    #[test]
    fn every_path_is_under_the_root() {
        let c = CacheDir::new("/c");
        for p in [
            c.store(),
            c.tools(),
            c.key_records("p"),
            c.usage_marker("k"),
            c.layer_memo(),
            c.base_files(),
            c.registry_record("r").0,
            c.sandbox(),
        ] {
            assert!(p.starts_with("/c/"), "{}", p.display());
        }
    }
}
