//! `imgbuild cache prune` on the local store: the entries to remove chosen by age and total
//! size (pure: `select`), removed with their usage markers, then every blob nothing references
//! deleted.
//!
//! Reads and writes the local store and the usage markers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use imgbuild_oci::layout::{Layout, ref_name};
use imgbuild_oci::spec::Descriptor;
use serde::Serialize;

use super::{EntrySummary, blob_sizes, entry_key, list, referenced, seconds};
use crate::Result;
use crate::cachedir::CacheDir;

/// What to prune.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrunePolicy {
    /// Remove entries not used for longer than this.
    pub older_than: Option<Duration>,
    /// Then remove the least recently used entries until the store is at most this big.
    pub max_size: Option<u64>,
}

impl PrunePolicy {
    /// Removes entries not used for longer than `age`.
    pub fn older_than(mut self, age: Duration) -> Self {
        self.older_than = Some(age);
        self
    }

    /// Then removes the least recently used entries until the store is at most `bytes` big.
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }
}

/// Chooses the entries to remove (pure): those unused for longer than `older_than`, then the
/// least recently used until the blobs still referenced (by the kept entries and by
/// `pinned`, the images' blobs) total at most `max_size`.
pub(crate) fn select(
    entries: &[EntrySummary],
    pinned: &BTreeSet<String>,
    sizes: &BTreeMap<String, u64>,
    policy: PrunePolicy,
    now: u64,
) -> BTreeSet<String> {
    let mut removed = BTreeSet::new();
    if let Some(age) = policy.older_than {
        for e in entries {
            if now.saturating_sub(e.last_used) > age.as_secs() {
                removed.insert(e.key.clone());
            }
        }
    }
    if let Some(max) = policy.max_size {
        let mut by_age: Vec<&EntrySummary> = entries
            .iter()
            .filter(|e| !removed.contains(&e.key))
            .collect();
        by_age.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.key.cmp(&b.key)));
        let total = |removed: &BTreeSet<String>| -> u64 {
            let mut live: BTreeSet<&String> = pinned.iter().collect();
            for e in entries.iter().filter(|e| !removed.contains(&e.key)) {
                live.extend(e.blobs.iter());
            }
            live.iter().filter_map(|b| sizes.get(*b)).sum()
        };
        for e in by_age {
            if total(&removed) <= max {
                break;
            }
            removed.insert(e.key.clone());
        }
    }
    removed
}

/// What `cache prune` did.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct PruneReport {
    /// Keys of the entries removed.
    pub removed: Vec<String>,
    /// Blobs deleted.
    pub blobs_deleted: usize,
    /// Bytes freed (by the blobs actually deleted).
    pub bytes_freed: u64,
    /// Size of the store afterwards.
    pub store_size: u64,
    /// Files that should have been removed but could not be; their space is not counted as
    /// freed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<RemoveFailure>,
    /// Temporary files and directories of killed processes that were removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub leftovers: Vec<PathBuf>,
}

/// A file `cache prune` could not remove.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoveFailure {
    /// The file.
    pub path: PathBuf,
    /// Why (the OS error).
    pub error: String,
}

/// Removes the entries `policy` selects, then every blob nothing in the index references.
/// Waits for running builds (they hold the store's writer lock) before deleting blobs.
///
/// ```
/// use std::time::Duration;
/// use imgbuild::{CacheDir, store::PrunePolicy};
/// # let dir = tempfile::tempdir()?;
///
/// let policy = PrunePolicy::default()
///     .older_than(Duration::from_secs(30 * 24 * 3600))
///     .max_size(10 << 30);
/// let report = imgbuild::store::prune(&CacheDir::new(dir.path()), policy)?;
/// assert!(report.failures.is_empty());
/// println!("freed {} bytes", report.bytes_freed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn prune(cache: &CacheDir, policy: PrunePolicy) -> Result<PruneReport> {
    let root = cache.store();
    if !root.join("oci-layout").exists() {
        return Ok(PruneReport::default());
    }
    let store = Layout::open(root)?;
    let _gc = store.gc_lock()?;
    let listing = list(cache)?;
    let sizes = blob_sizes(&store)?;
    let index = store.read_index()?;
    // Images tagged by users are kept; referrers (untagged) live as long as their subject.
    let pinned: BTreeSet<String> = index
        .manifests()
        .iter()
        .filter(|d| ref_name(d).is_some() && entry_key(d).is_none())
        .flat_map(|d| referenced(&store, d))
        .collect();
    let now = seconds(SystemTime::now());
    let removed = select(&listing.entries, &pinned, &sizes, policy, now);
    {
        let _lock = store.lock()?;
        let mut index = store.read_index()?;
        let kept: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| ref_name(d).is_some())
            .filter(|d| !entry_key(d).is_some_and(|k| removed.contains(&k)))
            .cloned()
            .collect();
        let subjects: BTreeSet<String> = kept.iter().map(|d| d.digest().to_string()).collect();
        let referrers: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| ref_name(d).is_none())
            .filter(|d| {
                imgbuild_oci::referrers::subject_of(&store, d)
                    .is_some_and(|s| subjects.contains(&s.to_string()))
            })
            .cloned()
            .collect();
        index.set_manifests(kept.into_iter().chain(referrers).collect());
        store.write_index(&index)?;
    }
    let mut report = PruneReport {
        removed: removed.into_iter().collect(),
        ..PruneReport::default()
    };
    for key in &report.removed.clone() {
        remove(&cache.usage_marker(key), &mut report);
    }
    let live: BTreeSet<String> = store
        .read_index()?
        .manifests()
        .iter()
        .flat_map(|d| referenced(&store, d))
        .collect();
    let dir = store.blob_dir();
    delete_unreferenced(&dir, &sizes, &live, &mut report);
    report.leftovers = imgbuild_oci::scratch::collect_leftovers(store.root())?;
    report
        .leftovers
        .extend(crate::hermetic::collect_leftovers(cache)?);
    report.store_size = blob_sizes(&store)?.values().sum();
    Ok(report)
}

/// Deletes the blobs of `sizes` that are not `live`, counting what was freed. A blob already
/// gone is neither freed nor a failure; any other error is a failure in the report.
fn delete_unreferenced(
    dir: &Path,
    sizes: &BTreeMap<String, u64>,
    live: &BTreeSet<String>,
    report: &mut PruneReport,
) {
    for (digest, size) in sizes {
        if live.contains(digest) {
            continue;
        }
        if remove(&dir.join(digest.trim_start_matches("sha256:")), report) {
            report.blobs_deleted += 1;
            report.bytes_freed += size;
        }
    }
}

/// Removes the file at `path`: true when this call removed it. One already gone is not a
/// failure; any other error is recorded in `report`.
fn remove(path: &Path, report: &mut PruneReport) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            report.failures.push(RemoveFailure {
                path: path.to_path_buf(),
                error: e.to_string(),
            });
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgbuild_oci::spec::MediaType;

    fn entry(key: &str, last_used: u64, blobs: &[&str]) -> EntrySummary {
        EntrySummary {
            key: key.into(),
            binary: "a/a".into(),
            layers: 1,
            files: 1,
            size: 0,
            last_used,
            blobs: blobs.iter().map(|b| b.to_string()).collect(),
        }
    }

    #[test]
    fn blobs_that_cannot_be_deleted_are_failures_not_freed_space() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("aa"), b"12345").unwrap();
        std::fs::write(dir.join("live"), b"1").unwrap();
        // A directory in place of a blob: remove_file fails (root or not).
        std::fs::create_dir_all(dir.join("bb").join("x")).unwrap();
        let sizes: BTreeMap<String, u64> = [
            ("sha256:aa".to_string(), 5),
            ("sha256:bb".to_string(), 7),
            ("sha256:gone".to_string(), 11),
            ("sha256:live".to_string(), 1),
        ]
        .into();
        let live: BTreeSet<String> = ["sha256:live".to_string()].into();
        let mut report = PruneReport::default();
        delete_unreferenced(dir, &sizes, &live, &mut report);
        assert_eq!((report.blobs_deleted, report.bytes_freed), (1, 5));
        assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
        assert_eq!(report.failures[0].path, dir.join("bb"));
        assert!(!dir.join("aa").exists() && dir.join("live").exists());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["failures"][0]["path"],
            dir.join("bb").to_str().unwrap()
        );
        assert!(
            serde_json::to_value(PruneReport::default()).unwrap()["failures"].is_null(),
            "no failures: no field"
        );
    }

    #[test]
    fn old_entries_go_first_then_least_recently_used_until_small_enough() {
        let sizes: BTreeMap<String, u64> = [
            ("shared".to_string(), 100),
            ("a".to_string(), 10),
            ("b".to_string(), 10),
            ("c".to_string(), 10),
            ("img".to_string(), 5),
        ]
        .into();
        let entries = [
            entry("old", 100, &["shared", "a"]),
            entry("mid", 5000, &["shared", "b"]),
            entry("new", 9000, &["shared", "c"]),
        ];
        let pinned: BTreeSet<String> = ["img".to_string()].into();
        let by_age = PrunePolicy {
            older_than: Some(Duration::from_secs(1000)),
            max_size: None,
        };
        assert_eq!(
            select(&entries, &pinned, &sizes, by_age, 10_000),
            ["old".to_string(), "mid".to_string()].into()
        );
        // 100 shared + 10 + 10 + 5 pinned = 125 after removing "old": at most 125 keeps the rest.
        let by_size = PrunePolicy {
            older_than: None,
            max_size: Some(125),
        };
        assert_eq!(
            select(&entries, &pinned, &sizes, by_size, 10_000),
            ["old".to_string()].into()
        );
        let everything = PrunePolicy {
            older_than: None,
            max_size: Some(0),
        };
        assert_eq!(
            select(&entries, &pinned, &sizes, everything, 10_000).len(),
            3
        );
    }

    /// A manifest with the empty config and no layers, stored in `store`.
    fn manifest(store: &Layout, note: &str) -> Descriptor {
        let config = store.put_bytes(MediaType::EmptyJSON, b"{}").unwrap();
        let m = imgbuild_oci::spec::ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(vec![])
            .annotations(
                [("note".to_string(), note.to_string())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            )
            .build()
            .unwrap();
        store.put_json(MediaType::ImageManifest, &m).unwrap()
    }

    #[test]
    fn referrers_are_kept_with_their_tagged_image_and_removed_with_an_orphaned_one() {
        use imgbuild_oci::referrers::{self, Artifact};
        let tmp = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(tmp.path());
        let store = Layout::create(cache.store()).unwrap();
        let kept = manifest(&store, "tagged");
        let orphan = manifest(&store, "replaced");
        store.set_tag("app:latest", &kept).unwrap();
        let sbom = |subject: &Descriptor, text: &[u8]| {
            let artifact = Artifact {
                artifact_type: "application/spdx+json",
                layer_media_type: "application/spdx+json",
                document: referrers::Document::Bytes(text),
                annotations: BTreeMap::new(),
            };
            let desc = referrers::put(&store, subject, &artifact).unwrap();
            referrers::list(&store, &desc).unwrap();
            desc
        };
        let of_kept = sbom(&kept, b"{\"kept\":true}");
        let of_orphan = sbom(&orphan, b"{\"kept\":false}");
        let report = prune(&cache, PrunePolicy::default()).unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        let index = store.read_index().unwrap();
        let digests: Vec<String> = index
            .manifests()
            .iter()
            .map(|d| d.digest().to_string())
            .collect();
        assert!(digests.contains(&kept.digest().to_string()));
        assert!(digests.contains(&of_kept.digest().to_string()));
        assert!(!digests.contains(&of_orphan.digest().to_string()));
        assert!(store.has_blob(of_kept.digest()));
        assert!(
            !store.has_blob(of_orphan.digest()),
            "its manifest is collected"
        );
        assert!(!store.has_blob(orphan.digest()));
    }
}
