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

use imgbuild_oci::layout::{Layout, ref_name};
use imgbuild_oci::snapshot::{self, FileState};
use imgbuild_oci::spec::{Descriptor, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};

use crate::event::{Progress, Reporter};
use crate::io_err as io;
use crate::names::CacheName;
use crate::{Error, Result};

pub(crate) mod index;
pub(crate) mod packer;
mod save;
pub(crate) mod stream;

pub(crate) use save::{SaveRequest, save, scan_units};

/// The `artifactType` of dependency-cache entries.
pub(crate) const ARTIFACT_TYPE: &str = "application/vnd.imgbuild.dependency-cache.v1";
/// The media type of an entry's config blob.
pub(crate) const CONFIG_MEDIA_TYPE: &str =
    "application/vnd.imgbuild.dependency-cache.config.v1+json";
/// The media types of an entry.
pub(crate) const KIND: crate::cacheartifact::Kind = crate::cacheartifact::Kind {
    artifact_type: ARTIFACT_TYPE,
    config_type: CONFIG_MEDIA_TYPE,
};
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
pub(crate) fn read_entry(store: &Layout, manifest: &Descriptor) -> Result<Entry> {
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

/// The lines that must be equal for an entry to be worth restoring: the toolchain (rustc, and
/// the machine's C compiler, linker and libc or the build environment), target and profile.
/// Entries that differ there share no compiled unit, or would mix code from two toolchains.
fn toolchain_lines(inputs: &[String]) -> Vec<&String> {
    inputs
        .iter()
        .filter(|l| {
            [
                "rustc ",
                "machine ",
                "build-env ",
                "target ",
                "profile ",
                "env ",
            ]
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

/// How many of an entry's input lines `wanted` has: how much of a build it can serve.
fn shared_lines(entry_inputs: &[String], wanted: &BTreeSet<&String>) -> usize {
    entry_inputs.iter().filter(|l| wanted.contains(l)).count()
}

/// Of `configs` (other binaries' newest entries; `None` where there is none), the one a
/// build of `inputs` starts from: compatible, and sharing the most lines with `inputs` (the
/// first of equals). Pure.
pub(crate) fn sharing_most(configs: &[Option<EntryConfig>], inputs: &[String]) -> Option<usize> {
    let wanted: BTreeSet<&String> = inputs.iter().collect();
    let mut best: Option<(usize, usize)> = None;
    for (i, config) in configs.iter().enumerate() {
        let Some(config) = config.as_ref().filter(|c| compatible(&c.inputs, inputs)) else {
            continue;
        };
        let shared = shared_lines(&config.inputs, &wanted);
        if best.is_none_or(|(n, _)| shared > n) {
            best = Some((shared, i));
        }
    }
    best.map(|(_, i)| i)
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

/// The entry to start from on a miss: the one of the same binary whose inputs share the most
/// lines with `inputs`, else (a binary with no entry yet) the one of any binary sharing the
/// most; only entries with the same toolchain, target, profile and environment count, and
/// entries that cannot be read are skipped.
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
        .filter_map(|d| read_entry(store, d).ok())
        .filter(|e| toolchain_lines(&e.config.inputs) == toolchain)
        .map(|e| {
            let shared = shared_lines(&e.config.inputs, &wanted);
            ((e.config.binary == label, shared), e)
        })
        .max_by_key(|(rank, _)| *rank)
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
pub(crate) fn restore(
    store: &Layout,
    entry: &Entry,
    profile_dir: &Path,
    reporter: &dyn Reporter,
) -> Result<RestoreStats> {
    let mut stats = RestoreStats::default();
    let mut needed: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    for (path, file) in &entry.config.files {
        if snapshot::is_current(profile_dir, path, &file.state) {
            stats.present += 1;
        } else {
            needed.entry(file.layer).or_default().insert(path);
        }
    }
    // Progress in compressed bytes read, over the layers that hold a needed file.
    let total: u64 = needed.keys().map(|&l| entry.layers[l].size()).sum();
    let done = std::cell::Cell::new(0u64);
    let key = &entry.config.key;
    let report = |bytes: u64| {
        done.set((done.get() + bytes).min(total));
        reporter.progress(&Progress::Bytes {
            what: format!("Restoring {}", &key[..key.len().min(12)]),
            done: done.get(),
            total,
        });
    };
    for (layer, paths) in needed {
        let digest = entry.layers[layer].digest();
        let restored =
            store.restore_snapshot_reporting(digest, profile_dir, &|p| paths.contains(p), &report);
        match restored {
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
    if done.get() < total {
        report(total - done.get());
    }
    Ok(stats)
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

    fn config(lines: &[&str]) -> Option<EntryConfig> {
        Some(EntryConfig {
            key: lines.join(";"),
            binary: "p/b".into(),
            parent: None,
            inputs: lines.iter().map(|l| l.to_string()).collect(),
            layer_sizes: Vec::new(),
            files: BTreeMap::new(),
        })
    }

    #[test]
    fn the_compatible_entry_sharing_the_most_lines_is_chosen() {
        let inputs: Vec<String> = ["rustc 1.95", "package a 1", "package b 1", "package c 1"]
            .map(String::from)
            .to_vec();
        let configs = [
            None,
            // Shares every package, but another toolchain: never chosen.
            config(&["rustc 1.94", "package a 1", "package b 1", "package c 1"]),
            config(&["rustc 1.95", "package a 1"]),
            config(&["rustc 1.95", "package a 1", "package b 1", "package z 1"]),
            // As many as the one before: the first of equals stays.
            config(&["rustc 1.95", "package b 1", "package c 1"]),
        ];
        assert_eq!(sharing_most(&configs, &inputs), Some(3));
        assert_eq!(sharing_most(&configs[..2], &inputs), None);
        assert_eq!(sharing_most(&[], &inputs), None);
    }
}
