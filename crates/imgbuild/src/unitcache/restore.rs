//! Before the compile: the records a build consults (the local store, then the cache
//! repository for the binaries the store has no record of), the checkout as the planner sees it
//! ([`Disk`]), and the restore of the chosen units, dated now.
//!
//! Reads the sources and cargo's build directory, writes into the build directory, pulls
//! records and layers from the cache repository.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use imgbuild_oci::layout::Layout;
use imgbuild_registry::progress::NoProgress;

use super::plan::{Checkout, RestorePlan};
use super::{Loaded, UnitEntry};
use crate::remotecache::RemoteCache;

/// The checkout and cargo's build directory, as the planner asks about them. File hashes are
/// memoized, so the record written after the build hashes nothing twice.
pub(crate) struct Disk<'a> {
    /// The workspace root (input names are relative to it).
    pub(crate) root: &'a Path,
    /// The profile directory.
    pub(crate) profile_dir: &'a Path,
    /// The value of an `env:` input as the compile sees it.
    env: EnvLookup<'a>,
    /// Contents hashed in earlier builds.
    files: &'a crate::filehash::FileHashes,
    hashes: RefCell<BTreeMap<String, String>>,
}

/// The value of an environment variable as the compile sees it.
pub(crate) type EnvLookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

impl<'a> Disk<'a> {
    pub(crate) fn new(
        root: &'a Path,
        profile_dir: &'a Path,
        env: EnvLookup<'a>,
        files: &'a crate::filehash::FileHashes,
    ) -> Self {
        Self {
            root,
            profile_dir,
            env,
            files,
            hashes: RefCell::new(BTreeMap::new()),
        }
    }

    fn input_path(&self, input: &str) -> PathBuf {
        self.root.join(input)
    }

    /// Forgets the hashes of files (kept: `env:` values), for after the compile: a build
    /// script may write into the source tree.
    pub(crate) fn forget_files(&self) {
        self.hashes
            .borrow_mut()
            .retain(|k, _| k.starts_with("env:"));
    }
}

/// A file's modification time, when it can be read.
pub(crate) fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// When cargo last started unit `name`: its `invoked.timestamp` (in its fingerprint
/// directory; a build-script run's is in its `build/` directory).
pub(crate) fn started(profile_dir: &Path, name: &str) -> Option<SystemTime> {
    [".fingerprint", "build"]
        .iter()
        .find_map(|dir| mtime(&profile_dir.join(dir).join(name).join("invoked.timestamp")))
}

impl Checkout for Disk<'_> {
    fn hash(&self, input: &str) -> String {
        if let Some(h) = self.hashes.borrow().get(input) {
            return h.clone();
        }
        let hash = crate::appcache::hash_input(self.files, self.root, input, &self.env);
        self.hashes
            .borrow_mut()
            .insert(input.to_string(), hash.clone());
        hash
    }

    fn fresh_on_disk(&self, name: &str, entry: &UnitEntry) -> bool {
        let Some(started) = started(self.profile_dir, name) else {
            return false;
        };
        entry
            .files
            .iter()
            .all(|f| self.profile_dir.join(f).exists())
            && entry
                .inputs
                .keys()
                .filter(|i| !i.starts_with("env:"))
                .all(|i| mtime(&self.input_path(i)).is_some_and(|m| m <= started))
    }

    fn has_unit(&self, name: &str) -> bool {
        self.profile_dir.join(".fingerprint").join(name).is_dir()
    }
}

/// The checkout as the planner sees it before the dependency units are restored: every
/// registry unit counts as present (whether it is, is checked when restoring).
pub(crate) struct AssumeDependencies<'a, 'b>(pub(crate) &'a Disk<'b>);

impl Checkout for AssumeDependencies<'_, '_> {
    fn hash(&self, input: &str) -> String {
        self.0.hash(input)
    }

    fn fresh_on_disk(&self, name: &str, entry: &UnitEntry) -> bool {
        self.0.fresh_on_disk(name, entry)
    }

    fn has_unit(&self, _: &str) -> bool {
        true
    }
}

/// The layers of the units `plan` restores that only the cache repository has.
pub(crate) fn remote_layers(
    store: &Layout,
    records: &[&Loaded],
    plan: &RestorePlan,
) -> Vec<imgbuild_oci::spec::Descriptor> {
    let mut wanted: Vec<imgbuild_oci::spec::Descriptor> = Vec::new();
    for (name, &index) in &plan.restore {
        let loaded = records[index];
        let layer = &loaded.layers[loaded.record.units[name].layer];
        if loaded.remote && !store.has_blob(layer.digest()) && !wanted.contains(layer) {
            wanted.push(layer.clone());
        }
    }
    wanted
}

/// Where the records come from.
pub(crate) struct Sources<'a> {
    /// The local store.
    pub(crate) store: &'a Layout,
    /// The cache repository, when configured.
    pub(crate) remote: Option<&'a RemoteCache>,
    /// Record ids: this binary's first, then the workspace's other binaries'.
    pub(crate) ids: &'a [String],
    /// This build's toolchain lines (a record with others is not consulted).
    pub(crate) toolchain: &'a [String],
}

/// What consulting the records met on the way: damaged local records and unreachable
/// repositories, to be reported.
pub(crate) struct Loading {
    /// The records of this toolchain, this binary's first.
    pub(crate) records: Vec<Loaded>,
    /// Records that could not be read (`units-<id>`, why).
    pub(crate) problems: Vec<(String, crate::Error)>,
}

/// Loads the records of `sources.ids`: from the store, else from the cache repository (those
/// fetched several at a time: a round trip or two each).
pub(crate) fn load(sources: &Sources<'_>) -> Loading {
    let mut out = Loading {
        records: Vec::new(),
        problems: Vec::new(),
    };
    let local: Vec<Option<Loaded>> = sources
        .ids
        .iter()
        .map(|id| {
            super::find(sources.store, id).unwrap_or_else(|e| {
                out.problems.push((id.clone(), e));
                None
            })
        })
        .collect();
    let missing: Vec<&String> = (sources.ids.iter().zip(&local))
        .filter(|(_, l)| l.is_none())
        .map(|(id, _)| id)
        .collect();
    // Fetched in `missing`'s order, so consumed in that order below.
    let mut fetched = match sources.remote {
        Some(remote) => {
            let progress = imgbuild_registry::progress::NoProgress;
            let fetch = |id: &&String, _: &dyn imgbuild_registry::progress::Progress| {
                Ok(remote.fetch_units(sources.store, id))
            };
            imgbuild_registry::parallel::run(&missing, &progress, &fetch).unwrap_or_default()
        }
        None => Vec::new(),
    }
    .into_iter();
    for (id, local) in sources.ids.iter().zip(local) {
        let found = match local {
            Some(l) => Some(l),
            None => fetched.next().and_then(|r| {
                r.unwrap_or_else(|e| {
                    out.problems.push((id.clone(), e));
                    None
                })
            }),
        };
        if let Some(loaded) = found.filter(|l| l.record.toolchain == sources.toolchain) {
            out.records.push(loaded);
        }
    }
    out
}

/// What restoring did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RestoreStats {
    /// Units restored.
    pub(crate) units: usize,
    /// Files written.
    pub(crate) files: u64,
    /// Bytes written.
    pub(crate) bytes: u64,
    /// Layers pulled from the cache repository.
    pub(crate) pulled: usize,
}

/// Restores the units `plan` chose into `profile_dir`, every file dated now. A unit whose
/// layer cannot be pulled or is damaged is left out and returned with the error (the caller
/// reports it; cargo compiles that unit and, by date, its dependents).
pub(crate) fn restore(
    store: &Layout,
    remote: Option<&RemoteCache>,
    records: &[&Loaded],
    plan: &RestorePlan,
    profile_dir: &Path,
    reporter: &dyn crate::event::Reporter,
) -> (RestoreStats, Vec<(String, crate::Error)>) {
    let mut stats = RestoreStats::default();
    let mut failed = Vec::new();
    // The layers the cache repository holds (and the prefetch did not pull), several at a
    // time first.
    let wanted = remote_layers(store, records, plan);
    if let (Some(remote), false) = (remote, wanted.is_empty()) {
        match remote.pull_blobs(store, &wanted, None, reporter) {
            Ok(n) => stats.pulled = n,
            // Each unit whose layer is still missing fails below, and is compiled.
            Err(e) => failed.push(("(cache repository)".to_string(), e)),
        }
    }
    let now = SystemTime::now();
    let jobs: Vec<(&String, usize)> = plan.restore.iter().map(|(n, &i)| (n, i)).collect();
    let restore_one = |&(name, index): &(&String, usize)| {
        let loaded = records[index];
        let entry = &loaded.record.units[name];
        let layer = &loaded.layers[entry.layer];
        let wanted = |p: &str| entry.files.iter().any(|f| f == p);
        store
            .restore_snapshot_dated(layer.digest(), profile_dir, &wanted, now)
            .inspect_err(|e| {
                if matches!(e, imgbuild_oci::Error::DigestMismatch { .. }) {
                    let _ = std::fs::remove_file(store.blob_path(layer.digest()));
                }
            })
    };
    // Units are unpacked a few at a time: each is small, and a fresh runner restores many.
    // The jobs never fail as such: each one's own result is kept, and a failed unit is compiled.
    let results = match imgbuild_registry::parallel::run(&jobs, &NoProgress, &|job, _| {
        Ok(restore_one(job))
    }) {
        Ok(results) => results,
        Err(e) => {
            failed.push(("(restore)".to_string(), e.into()));
            return (stats, failed);
        }
    };
    for ((name, _), result) in jobs.iter().zip(results) {
        match result {
            Ok(done) => {
                stats.units += 1;
                stats.files += done.files;
                stats.bytes += done.bytes;
            }
            Err(e) => failed.push(((*name).clone(), e.into())),
        }
    }
    (stats, failed)
}
