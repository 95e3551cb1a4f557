//! Stages `restore units` and `save units`: the unit cache (the workspace's own crates, by
//! content) around the compile. Before it, the units whose recorded key matches the checkout
//! are restored, dated now, so that cargo finds them fresh; after it, the binary's record is
//! written with the units cargo compiled as new layers, and shared with the cache repository.
//!
//! Reads the sources, writes into cargo's build directory (under the lock `restore` took) and
//! the local store; pulls from and pushes to the cache repository. Nothing here fails a build:
//! a damaged record or layer, an unreachable repository are reported and the units compiled.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use imgbuild_oci::snapshot;
use imgbuild_oci::spec::Descriptor;

use crate::Result;
use crate::build::Setup;
use crate::build::compile::Compiled;
use crate::context::Context;
use crate::event::{Event, Reporter};
use crate::names::CacheName;
use crate::unitcache::collect::{self, CollectRequest};
use crate::unitcache::plan::{self, Checkout, RestorePlan, Source};
use crate::unitcache::restore::{self, Disk, Sources};
use crate::unitcache::{self, Loaded, UnitEntry, UnitsRecord};

/// What `restore_units` did, for `save_units`.
pub(crate) struct UnitsRestored<'a> {
    disk: Disk<'a>,
    /// The records consulted, this binary's first.
    records: Vec<Loaded>,
    /// Whether `records[0]` is this binary's own record, from the store.
    own_local: bool,
    plan: RestorePlan,
    toolchain: Vec<String>,
    id: String,
    /// `package/bin`.
    binary: String,
    /// When the compile started.
    started: SystemTime,
}

/// The records a build consults, loaded (and the layers of the units they would restore
/// pulled from the cache repository) before the units are restored: nothing here needs the
/// dependency units yet.
pub(crate) struct Prefetched {
    loading: restore::Loading,
    toolchain: Vec<String>,
    id: String,
    /// Layers pulled from the cache repository.
    pulled: usize,
}

/// Loads the records a build consults: this binary's, then the workspace's other binaries'
/// (the store's, else the cache repository's). Runs beside the app-cache lookup (a round trip
/// or two per record, several at a time), so it reports nothing itself.
pub(crate) fn records(cx: &Context<'_>, s: &Setup) -> Option<Prefetched> {
    if !cx.options.caching() {
        return None;
    }
    let target = &cx.one().target;
    let toolchain = unitcache::toolchain_lines(&s.dependency_key.inputs);
    let id = unitcache::record_id(&target.package.name, &target.bin, &toolchain);
    let mut ids = vec![id.clone()];
    for other in cx.workspace.binaries() {
        let other_id = unitcache::record_id(&other.package.name, &other.bin, &toolchain);
        if !ids.contains(&other_id) {
            ids.push(other_id);
        }
    }
    let loading = restore::load(&Sources {
        store: &s.store,
        remote: s.remote.as_ref(),
        ids: &ids,
        toolchain: &toolchain,
    });
    Some(Prefetched {
        loading,
        toolchain,
        id,
        pulled: 0,
    })
}

/// Pulls the layers `restore_units` will likely restore (the units whose inputs match the
/// checkout; whether the registry units they need are there is checked later). Runs beside
/// the app-cache lookup and the dependency restore, so it reports nothing itself; once `stop`
/// is set (an app-cache hit) it starts no new download.
pub(crate) fn prefetch(
    cx: &Context<'_>,
    s: &Setup,
    records: Option<Prefetched>,
    stop: &AtomicBool,
) -> Option<Prefetched> {
    let mut prefetched = records?;
    let loading = &mut prefetched.loading;
    if let Some(remote) = &s.remote
        && loading.records.iter().any(|r| r.remote)
        && !stop.load(Ordering::Relaxed)
    {
        let disk = Disk::new(
            &cx.workspace.root,
            &s.profile_dir,
            Box::new(|name: &str| cx.compile_env_value(name)),
            &cx.file_hashes,
        );
        let refs: Vec<&Loaded> = loading.records.iter().collect();
        let plan = plan::plan_restore(&refs, &restore::AssumeDependencies(&disk));
        let layers = restore::remote_layers(&s.store, &refs, &plan);
        match remote.pull_blobs(&s.store, &layers, Some(stop), &crate::event::Silent) {
            Ok(n) => prefetched.pulled = n,
            Err(e) => loading.problems.push(("(cache repository)".into(), e)),
        }
    }
    Some(prefetched)
}

/// Runs the `restore units` stage (nothing with the cache off).
pub(crate) fn restore_units<'a>(
    cx: &'a Context<'a>,
    s: &'a Setup,
    prefetched: Option<Prefetched>,
    reporter: &dyn Reporter,
) -> Option<UnitsRestored<'a>> {
    let Prefetched {
        loading,
        toolchain,
        id,
        pulled,
    } = prefetched?;
    for (record, e) in &loading.problems {
        unusable(reporter, record, e);
    }
    let disk = Disk::new(
        &cx.workspace.root,
        &s.profile_dir,
        Box::new(|name: &str| cx.compile_env_value(name)),
        &cx.file_hashes,
    );
    let records = loading.records;
    let binary = binary(cx);
    let own_local = records
        .first()
        .is_some_and(|r| !r.remote && r.record.binary == binary);
    let refs: Vec<&Loaded> = records.iter().collect();
    let mut plan = plan::plan_restore(&refs, &disk);
    let (stats, failed) = restore::restore(
        &s.store,
        s.remote.as_ref(),
        &refs,
        &plan,
        &s.profile_dir,
        reporter,
    );
    for (name, e) in failed {
        unusable(reporter, &name, &e);
        if plan.restore.remove(&name).is_some() {
            plan.missed.insert(name.clone(), plan::Miss::Member(name));
        }
    }
    reporter.report(&Event::UnitsRestored {
        records: records.len(),
        restored: stats.units,
        in_place: plan.in_place.len(),
        missed: plan.missed.keys().cloned().collect(),
        pulled: pulled + stats.pulled,
        bytes: stats.bytes,
    });
    Some(UnitsRestored {
        disk,
        records,
        own_local,
        plan,
        toolchain,
        id,
        binary,
        started: SystemTime::now(),
    })
}

fn binary(cx: &Context<'_>) -> String {
    let target = &cx.one().target;
    format!("{}/{}", target.package.name, target.bin)
}

/// A record written by `save units` that the cache repository does not have yet.
pub(crate) struct ToPush {
    manifest: Descriptor,
    tag: String,
}

/// Runs the `save units` stage: writes the binary's record when cargo compiled a member unit,
/// units were restored, or the record lacks one of the build's units. Returns it when a cache
/// repository should get it ([`push`], while the image is made; nothing without one).
pub(crate) fn save_units(
    cx: &Context<'_>,
    s: &Setup,
    restored: Option<UnitsRestored<'_>>,
    compiled: &Compiled,
    reporter: &dyn Reporter,
) -> Result<Option<ToPush>> {
    let Some(r) = restored else {
        return Ok(None);
    };
    let workspace = &cx.workspace;
    let ignore = cx.not_inputs();
    let built = collect::collect(&CollectRequest {
        outcome: &compiled.outcome,
        profile_dir: &s.profile_dir,
        root: &workspace.root,
        package_dirs: &cx.package_dirs,
        ignore: &ignore,
        dependency_hashes: &compiled.dependencies.hashes,
        started: r.started,
    })?;
    let unchanged = r.own_local
        && r.plan.restore.is_empty()
        && built.iter().all(|u| !u.rebuilt)
        && built
            .iter()
            .filter(|u| u.cacheable)
            .all(|u| r.records[0].record.units.contains_key(&u.name));
    if unchanged {
        crate::usage::touch(&cx.cache, CacheName::Units(&r.id), reporter);
        return Ok(None);
    }
    r.disk.forget_files();
    let refs: Vec<&Loaded> = r.records.iter().collect();
    let hash = |input: &str| r.disk.hash(input);
    let keep = |record: usize, layer: usize| s.store.has_blob(refs[record].layers[layer].digest());
    let sources = plan::plan_record(&built, &refs, &r.plan.restore, &r.toolchain, &hash, &keep);
    if sources.is_empty() && !r.own_local {
        // No member unit to cache (a single-package project): no record.
        return Ok(None);
    }
    let (record, layers, new_units, new_bytes) = write_layers(s, &r, &refs, sources)?;
    // A fresh runner that compiled no member unit writes the record it pulled: the cache
    // repository has it already, so it is kept in the store and not pushed again.
    let pulled_as_is = r
        .records
        .first()
        .is_some_and(|own| own.remote && own.record == record && own.layers == layers);
    let manifest = unitcache::save(&s.store, &r.id, &record, layers)?;
    crate::usage::touch(&cx.cache, CacheName::Units(&r.id), reporter);
    reporter.report(&Event::UnitsStored {
        units: record.units.len(),
        new_units,
        new_bytes,
    });
    Ok((!pulled_as_is).then(|| ToPush {
        manifest,
        tag: CacheName::Units(&r.id).tag(),
    }))
}

/// Pushes the record `save_units` wrote (its new layers, then the tag) to the cache
/// repository; a failure is a warning.
pub(crate) fn push(s: &Setup, record: Option<ToPush>, reporter: &dyn Reporter) {
    let (Some(remote), Some(record)) = (s.remote.as_ref(), record) else {
        return;
    };
    if let Err(e) = remote.push_tag(&s.store, &record.manifest, &record.tag, reporter) {
        reporter.report(&Event::Warning {
            message: format!(
                "could not push the unit cache record to {}: {e}",
                remote.repository()
            ),
        });
    }
}

/// The new record: kept entries point at their layers, new ones get a snapshot each (file
/// times zeroed, so that equal outputs give equal blobs). Returns the record, its layers, how
/// many units were snapshotted and their compressed size.
fn write_layers(
    s: &Setup,
    r: &UnitsRestored<'_>,
    records: &[&Loaded],
    sources: BTreeMap<String, Source>,
) -> Result<(UnitsRecord, Vec<Descriptor>, usize, u64)> {
    let mut layers: Vec<Descriptor> = Vec::new();
    let mut index_of = |desc: Descriptor| -> usize {
        match layers.iter().position(|l| l.digest() == desc.digest()) {
            Some(i) => i,
            None => {
                layers.push(desc);
                layers.len() - 1
            }
        }
    };
    let mut units = BTreeMap::new();
    let (mut new_units, mut new_bytes) = (0, 0);
    for (name, source) in sources {
        let entry: UnitEntry = match source {
            Source::Kept { record, mut entry } => {
                entry.layer = index_of(records[record].layers[entry.layer].clone());
                entry
            }
            Source::Snapshot(mut entry) => {
                let mut files =
                    snapshot::scan(&s.profile_dir, entry.files.iter().map(String::as_str))?;
                for state in files.values_mut() {
                    state.mtime = 0;
                }
                let blob = s.store.write_snapshot(&s.profile_dir, &files)?;
                new_units += 1;
                new_bytes += blob.descriptor.size();
                entry.layer = index_of(blob.descriptor);
                entry
            }
        };
        units.insert(name, entry);
    }
    let record = UnitsRecord {
        binary: r.binary.clone(),
        toolchain: r.toolchain.clone(),
        units,
    };
    Ok((record, layers, new_units, new_bytes))
}

fn unusable(reporter: &dyn Reporter, what: &str, e: &crate::Error) {
    reporter.report(&Event::CacheUnusable {
        key: format!("units-{what}"),
        message: e.to_string(),
    });
}
