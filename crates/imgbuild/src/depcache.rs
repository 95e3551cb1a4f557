//! The dependency cache: each binary's compiled dependency units, stored in the local store as
//! an OCI artifact tagged by the binary's dependency key, and restored into cargo's build
//! directory before compiling.
//!
//! An entry is an image manifest with its own `artifactType`
//! ([`ARTIFACT_TYPE`]); its config ([`EntryConfig`]) lists the key's inputs and every file with
//! its size, mtime, mode and the layer that holds it; its layers are tar+zstd snapshots
//! ([`imgbuild_oci::snapshot`]). An entry built on top of an earlier one (the nearest entry
//! for the same binary, restored on a miss) reuses that entry's layers and adds one delta
//! layer of the files that are new or changed. A chain that grows long or mostly stale is
//! squashed into one layer.
//!
//! Reads and writes the build directory and the local store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use imgbuild_cargo::units::{UNIT_DIRS, belongs_to, unit_hash};
use imgbuild_oci::layout::{Layout, ref_name};
use imgbuild_oci::snapshot::{self, FileMap, FileState};
use imgbuild_oci::spec::{
    Descriptor, ImageManifest, ImageManifestBuilder, MediaType, SCHEMA_VERSION,
};
use serde::{Deserialize, Serialize};

use crate::names::CacheName;
use crate::{Error, Result};

/// The `artifactType` of dependency-cache entries.
pub(crate) const ARTIFACT_TYPE: &str = "application/vnd.imgbuild.dependency-cache.v1";
/// The media type of an entry's config blob.
pub(crate) const CONFIG_MEDIA_TYPE: &str =
    "application/vnd.imgbuild.dependency-cache.config.v1+json";
/// Annotation on an entry's index descriptor: `package/bin`.
pub(crate) const BINARY_ANNOTATION: &str = "dev.imgbuild.cache.binary";

/// A chain longer than this many layers is squashed into one.
pub(crate) const MAX_LAYERS: usize = 8;
/// A chain whose live bytes fall below this share of its layers' bytes is squashed.
pub(crate) const MIN_LIVE_SHARE: f64 = 0.5;

/// One file of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EntryFile {
    /// Size, mtime and mode.
    #[serde(flatten)]
    pub state: FileState,
    /// Index of the layer holding this version of the file.
    pub layer: usize,
}

/// An entry's config blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EntryConfig {
    /// The dependency key (sha256 hex).
    pub key: String,
    /// `package/bin` the entry was built for.
    pub binary: String,
    /// The key of the entry this one was built on, if any.
    pub parent: Option<String>,
    /// The key's canonical inputs.
    pub inputs: Vec<String>,
    /// Uncompressed size of each layer.
    pub layer_sizes: Vec<u64>,
    /// Every file, relative to the profile directory (`deps/…`, `build/…`, `.fingerprint/…`).
    pub files: BTreeMap<String, EntryFile>,
}

/// An entry read from the store.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The manifest's descriptor.
    pub manifest: Descriptor,
    /// Its layers.
    pub layers: Vec<Descriptor>,
    /// Its config.
    pub config: EntryConfig,
}

/// The ref name of `key`'s entry in the local store.
pub(crate) fn ref_for(key: &str) -> String {
    CacheName::Deps(key).local_ref()
}

fn binary_label(package: &str, bin: &str) -> String {
    format!("{package}/{bin}")
}

/// Reads the entry `manifest` points at, verifying every blob it reads.
fn read_entry(store: &Layout, manifest: &Descriptor) -> Result<Entry> {
    let parsed: ImageManifest = store.read_manifest(manifest.digest())?;
    let bytes = store.read_blob(parsed.config().digest())?;
    let config: EntryConfig =
        serde_json::from_slice(&bytes).map_err(|source| Error::CacheEntry {
            reference: ref_name(manifest).unwrap_or_default().to_string(),
            reason: format!("its config is not a dependency-cache config: {source}"),
        })?;
    if config.layer_sizes.len() != parsed.layers().len()
        || config
            .files
            .values()
            .any(|f| f.layer >= parsed.layers().len())
    {
        return Err(Error::CacheEntry {
            reference: ref_name(manifest).unwrap_or_default().to_string(),
            reason: "its config and manifest disagree on the layers".into(),
        });
    }
    Ok(Entry {
        manifest: manifest.clone(),
        layers: parsed.layers().clone(),
        config,
    })
}

/// Every dependency-cache entry's index descriptor.
pub(crate) fn entry_descriptors(store: &Layout) -> Result<Vec<Descriptor>> {
    Ok(store
        .read_index()?
        .manifests()
        .iter()
        .filter(|d| {
            ref_name(d)
                .and_then(CacheName::parse_local)
                .is_some_and(|n| matches!(n, CacheName::Deps(_)))
        })
        .cloned()
        .collect())
}

/// The entry for `key`, if the store has it. A damaged entry is an error (report it, then
/// treat it as a miss).
pub(crate) fn find(store: &Layout, key: &str) -> Result<Option<Entry>> {
    let reference = ref_for(key);
    let Some(desc) = entry_descriptors(store)?
        .into_iter()
        .find(|d| ref_name(d) == Some(reference.as_str()))
    else {
        return Ok(None);
    };
    read_entry(store, &desc).map(Some)
}

/// The lines that must be equal for an entry to be worth restoring: the toolchain, target and
/// profile. Entries that differ there share no compiled unit.
fn toolchain_lines(inputs: &[String]) -> Vec<&String> {
    inputs
        .iter()
        .filter(|l| {
            ["rustc ", "target ", "profile ", "env "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect()
}

/// Whether an entry built from `entry_inputs` can serve as the starting point for `inputs`:
/// same toolchain, target, profile and environment (otherwise no unit would be reused).
pub(crate) fn compatible(entry_inputs: &[String], inputs: &[String]) -> bool {
    toolchain_lines(entry_inputs) == toolchain_lines(inputs)
}

/// Tags an entry pulled from a registry under its own key (as the nearest earlier entry).
pub(crate) fn adopt_as_is(store: &Layout, manifest: &Descriptor) -> Result<Entry> {
    let entry = read_entry(store, manifest)?;
    tag_entry(
        store,
        &entry.config.key.clone(),
        manifest,
        &entry.config.binary,
    )?;
    Ok(entry)
}

/// The entry of the same binary whose inputs share the most lines with `inputs` (same
/// toolchain, target, profile and environment); entries that cannot be read are skipped.
pub(crate) fn nearest(
    store: &Layout,
    package: &str,
    bin: &str,
    inputs: &[String],
) -> Option<Entry> {
    let label = binary_label(package, bin);
    let wanted: BTreeSet<&String> = inputs.iter().collect();
    let toolchain = toolchain_lines(inputs);
    entry_descriptors(store)
        .ok()?
        .iter()
        .filter(|d| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(BINARY_ANNOTATION))
                == Some(&label)
        })
        .filter_map(|d| read_entry(store, d).ok())
        .filter(|e| toolchain_lines(&e.config.inputs) == toolchain)
        .map(|e| {
            let shared = e
                .config
                .inputs
                .iter()
                .filter(|l| wanted.contains(l))
                .count();
            (shared, e)
        })
        .max_by_key(|(shared, _)| *shared)
        .map(|(_, e)| e)
}

/// What restoring an entry did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RestoreStats {
    /// Files of the entry already in the build directory, unchanged.
    pub present: u64,
    /// Files written.
    pub restored: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Restores `entry`'s files into `profile_dir`, skipping those already there with the same size
/// and mtime. Each layer is verified before any of its files is moved into place; a corrupt
/// layer is deleted from the store (so that it is written again) and reported as an error.
pub(crate) fn restore(store: &Layout, entry: &Entry, profile_dir: &Path) -> Result<RestoreStats> {
    let mut stats = RestoreStats::default();
    let mut needed: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    for (path, file) in &entry.config.files {
        if snapshot::is_current(profile_dir, path, &file.state) {
            stats.present += 1;
        } else {
            needed.entry(file.layer).or_default().insert(path);
        }
    }
    for (layer, paths) in needed {
        let digest = entry.layers[layer].digest();
        match store.restore_snapshot(digest, profile_dir, &|p| paths.contains(p)) {
            Ok(done) => {
                stats.restored += done.files;
                stats.bytes += done.bytes;
            }
            Err(e) => {
                if matches!(e, imgbuild_oci::Error::DigestMismatch { .. }) {
                    let _ = std::fs::remove_file(store.blob_path(digest));
                }
                return Err(e.into());
            }
        }
    }
    Ok(stats)
}

/// Lists the regular files of the dependency units `hashes` under `profile_dir`, with their
/// state.
pub(crate) fn scan_units(profile_dir: &Path, hashes: &BTreeSet<String>) -> Result<FileMap> {
    let mut paths = Vec::new();
    for top in UNIT_DIRS {
        let dir = profile_dir.join(top);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.map_err(io("reading directory", &dir))?;
            let Some(name) = entry.file_name().to_str().map(String::from) else {
                continue;
            };
            if !unit_hash(&name).is_some_and(|h| hashes.contains(h)) {
                continue;
            }
            let rel = format!("{top}/{name}");
            let kind = entry.file_type().map_err(io("reading", &entry.path()))?;
            if kind.is_dir() {
                walk(&entry.path(), &rel, &mut paths)?;
            } else if kind.is_file() {
                paths.push(rel);
            }
        }
    }
    paths.retain(|p| belongs_to(p, hashes));
    Ok(snapshot::scan(
        profile_dir,
        paths.iter().map(String::as_str),
    )?)
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io("reading directory", dir))? {
        let entry = entry.map_err(io("reading directory", dir))?;
        let Some(name) = entry.file_name().to_str().map(String::from) else {
            continue;
        };
        let child = format!("{rel}/{name}");
        let kind = entry.file_type().map_err(io("reading", &entry.path()))?;
        if kind.is_dir() {
            walk(&entry.path(), &child, out)?;
        } else if kind.is_file() {
            out.push(child);
        }
    }
    Ok(())
}

use crate::io_err as io;

/// How an entry is laid out on top of its parent (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryPlan {
    /// Parent layers kept, by index in the parent.
    pub kept_layers: usize,
    /// Files to write into the new (last) layer.
    pub delta: FileMap,
    /// Every file with its layer index in the new entry.
    pub files: BTreeMap<String, EntryFile>,
    /// Whether the parent's chain was dropped for one full layer.
    pub squashed: bool,
}

/// Decides the new entry's layers: the parent's layers plus one layer of the files that are
/// new or changed, unless the chain would be too long or mostly stale, in which case one layer
/// holds everything.
pub(crate) fn plan_entry(files: &FileMap, parent: Option<&EntryConfig>) -> EntryPlan {
    let full = |squashed| EntryPlan {
        kept_layers: 0,
        delta: files.clone(),
        files: files
            .iter()
            .map(|(p, s)| {
                let f = EntryFile {
                    state: s.clone(),
                    layer: 0,
                };
                (p.clone(), f)
            })
            .collect(),
        squashed,
    };
    let Some(parent) = parent else {
        return full(false);
    };
    let kept = parent.layer_sizes.len();
    let mut delta = FileMap::new();
    let mut out = BTreeMap::new();
    let mut live_in_parent = 0;
    for (path, state) in files {
        match parent.files.get(path) {
            Some(old) if old.state == *state => {
                live_in_parent += state.size;
                out.insert(path.clone(), old.clone());
            }
            _ => {
                delta.insert(path.clone(), state.clone());
                let f = EntryFile {
                    state: state.clone(),
                    layer: kept,
                };
                out.insert(path.clone(), f);
            }
        }
    }
    let parent_bytes: u64 = parent.layer_sizes.iter().sum();
    let too_long = kept + usize::from(!delta.is_empty()) > MAX_LAYERS;
    let stale = parent_bytes > 0 && (live_in_parent as f64) < MIN_LIVE_SHARE * parent_bytes as f64;
    if too_long || stale {
        return full(true);
    }
    EntryPlan {
        kept_layers: kept,
        delta,
        files: out,
        squashed: false,
    }
}

/// Tags an entry's manifest (already in the store) as the entry for `key`, with the
/// annotations `nearest` and `cache ls` read. Returns the index descriptor.
pub(crate) fn tag_entry(
    store: &Layout,
    key: &str,
    manifest: &Descriptor,
    binary: &str,
) -> Result<Descriptor> {
    let mut desc = manifest.clone();
    desc.set_artifact_type(Some(MediaType::Other(ARTIFACT_TYPE.into())));
    desc.set_annotations(Some(
        [(BINARY_ANNOTATION.to_string(), binary.to_string())].into(),
    ));
    let _lock = store.lock()?;
    store.set_tag(&ref_for(key), &desc)?;
    Ok(desc)
}

/// Tags an entry pulled from a registry (its blobs already in the store) as the entry for
/// `key`, after checking that its config is a dependency-cache config for that key.
pub(crate) fn adopt(store: &Layout, key: &str, manifest: &Descriptor) -> Result<Entry> {
    let entry = read_entry(store, manifest)?;
    if entry.config.key != key {
        return Err(Error::CacheEntry {
            reference: ref_for(key),
            reason: format!("the pulled entry says it is for key {}", entry.config.key),
        });
    }
    tag_entry(store, key, manifest, &entry.config.binary)?;
    Ok(entry)
}

/// What storing an entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SaveStats {
    /// The entry's manifest.
    pub manifest: Descriptor,
    /// Layers of the new entry.
    pub layers: usize,
    /// Files in the new entry.
    pub files: usize,
    /// Files written into the new layer.
    pub new_files: usize,
    /// Compressed size of the new layer (0 when nothing changed).
    pub new_layer_size: u64,
    /// Whether the parent's chain was squashed.
    pub squashed: bool,
}

/// What to store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SaveRequest<'a> {
    /// The dependency key.
    pub key: &'a str,
    /// Its inputs.
    pub inputs: &'a [String],
    /// Package name.
    pub package: &'a str,
    /// Binary name.
    pub bin: &'a str,
    /// The dependency units' files, scanned after the build.
    pub files: &'a FileMap,
    /// The profile directory they are under.
    pub profile_dir: &'a Path,
    /// The entry restored before the build, if any.
    pub parent: Option<&'a Entry>,
}

/// Stores the dependency units' files as the entry for `key`, on top of `parent` when given,
/// and tags it. Blobs are written before the tag, each through a temporary file.
pub(crate) fn save(store: &Layout, req: &SaveRequest<'_>) -> Result<SaveStats> {
    let plan = plan_entry(req.files, req.parent.map(|e| &e.config));
    let mut layers: Vec<Descriptor> = match req.parent {
        Some(p) if !plan.squashed => p.layers[..plan.kept_layers].to_vec(),
        _ => Vec::new(),
    };
    let mut layer_sizes: Vec<u64> = match req.parent {
        Some(p) if !plan.squashed => p.config.layer_sizes[..plan.kept_layers].to_vec(),
        _ => Vec::new(),
    };
    let mut new_layer_size = 0;
    if !plan.delta.is_empty() || layers.is_empty() {
        let blob = store.write_snapshot(req.profile_dir, &plan.delta)?;
        new_layer_size = blob.descriptor.size();
        layers.push(blob.descriptor);
        layer_sizes.push(blob.uncompressed_size);
    }
    let config = EntryConfig {
        key: req.key.to_string(),
        binary: binary_label(req.package, req.bin),
        parent: req
            .parent
            .filter(|_| !plan.squashed)
            .map(|p| p.config.key.clone()),
        inputs: req.inputs.to_vec(),
        layer_sizes,
        files: plan.files,
    };
    let config_desc = store.put_json(MediaType::Other(CONFIG_MEDIA_TYPE.into()), &config)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(ARTIFACT_TYPE.into()))
        .config(config_desc)
        .layers(layers.clone())
        .build()?;
    let manifest_desc = store.put_json(MediaType::ImageManifest, &manifest)?;
    let manifest_desc = tag_entry(store, req.key, &manifest_desc, &config.binary)?;
    Ok(SaveStats {
        manifest: manifest_desc,
        layers: layers.len(),
        files: config.files.len(),
        new_files: plan.delta.len(),
        new_layer_size,
        squashed: plan.squashed,
    })
}

/// Whether `e` says an entry is damaged (a corrupt or missing blob, an unreadable config): the
/// entry is then reported and treated as a miss, never a failed build.
pub(crate) fn is_damage(e: &Error) -> bool {
    matches!(
        e,
        Error::CacheEntry { .. }
            | Error::Oci(
                imgbuild_oci::Error::DigestMismatch { .. }
                    | imgbuild_oci::Error::MissingBlob { .. }
                    | imgbuild_oci::Error::InvalidJson { .. },
            )
    )
}

/// Takes an exclusive lock on cargo's build directory for imgbuild's restore, build and
/// snapshot (released on drop), so that two imgbuild runs on one checkout take turns.
pub(crate) fn lock_build_dir(build_dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(build_dir).map_err(io("creating directory", build_dir))?;
    let path = build_dir.join(".imgbuild-lock");
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("opening lock file", &path))?;
    file.lock().map_err(io("locking", &path))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(size: u64, mtime: u64) -> FileState {
        FileState {
            size,
            mtime,
            mode: 0o644,
        }
    }

    fn parent(files: &[(&str, u64, u64, usize)], layer_sizes: &[u64]) -> EntryConfig {
        EntryConfig {
            key: "p".into(),
            binary: "a/a".into(),
            parent: None,
            inputs: vec![],
            layer_sizes: layer_sizes.to_vec(),
            files: files
                .iter()
                .map(|(p, size, mtime, layer)| {
                    let f = EntryFile {
                        state: state(*size, *mtime),
                        layer: *layer,
                    };
                    (p.to_string(), f)
                })
                .collect(),
        }
    }

    #[test]
    fn without_a_parent_everything_goes_in_one_layer() {
        let files: FileMap = [("deps/a".to_string(), state(10, 1))].into();
        let plan = plan_entry(&files, None);
        assert_eq!(plan.kept_layers, 0);
        assert_eq!(plan.delta, files);
        assert!(!plan.squashed);
    }

    #[test]
    fn a_delta_holds_only_new_and_changed_files() {
        let p = parent(&[("deps/a", 100, 1, 0), ("deps/b", 100, 1, 0)], &[200]);
        let files: FileMap = [
            ("deps/a".to_string(), state(100, 1)),
            ("deps/b".to_string(), state(100, 2)),
            ("deps/c".to_string(), state(5, 2)),
        ]
        .into();
        let plan = plan_entry(&files, Some(&p));
        assert_eq!(plan.kept_layers, 1);
        assert_eq!(
            plan.delta.keys().collect::<Vec<_>>(),
            vec!["deps/b", "deps/c"]
        );
        assert_eq!(plan.files["deps/a"].layer, 0);
        assert_eq!(plan.files["deps/b"].layer, 1);
        assert!(!plan.squashed);
    }

    #[test]
    fn a_mostly_stale_or_long_chain_is_squashed() {
        let p = parent(&[("deps/a", 10, 1, 0)], &[1000]);
        let files: FileMap = [("deps/a".to_string(), state(10, 1))].into();
        let plan = plan_entry(&files, Some(&p));
        assert!(plan.squashed);
        assert_eq!(plan.kept_layers, 0);
        assert_eq!(plan.delta, files);

        let long = parent(&[("deps/a", 10, 1, 0)], &[10; MAX_LAYERS]);
        let changed: FileMap = [
            ("deps/a".to_string(), state(10, 1)),
            ("deps/b".to_string(), state(1, 1)),
        ]
        .into();
        assert!(plan_entry(&changed, Some(&long)).squashed);
    }
}
