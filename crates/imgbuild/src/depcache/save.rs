//! Storing an entry: which files of the build directory belong to the dependency units, how
//! the new entry is laid out on top of its parent (pure: [`plan_entry`]), and writing it.
//!
//! Reads the build directory and writes layers and manifests into the local store.

use std::collections::BTreeSet;
use std::path::Path;

use imgbuild_cargo::units::{UNIT_DIRS, belongs_to, unit_hash};
use imgbuild_oci::layout::Layout;
use imgbuild_oci::snapshot::{self, FileMap};
use imgbuild_oci::spec::Descriptor;

use super::*;
use crate::Result;
use crate::io_err as io;

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
/// and tags it. Blobs are written before the tag, each through a temporary file. `prepacked`
/// is a layer of exactly `req.files` made while cargo built (see `packer`); it is the
/// entry's one layer when the entry has no parent.
pub(crate) fn save(
    store: &Layout,
    req: &SaveRequest<'_>,
    prepacked: Option<imgbuild_oci::layout::LayerBlob>,
) -> Result<SaveStats> {
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
        let blob = match prepacked {
            Some(blob) if layers.is_empty() && plan.delta == *req.files => blob,
            _ => store.write_snapshot(req.profile_dir, &plan.delta)?,
        };
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
    let manifest_desc = crate::cacheartifact::put(store, super::KIND, &config, layers.clone())?;
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
