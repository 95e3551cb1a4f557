//! Stages `restore` and `save`: the dependency cache around the compile. `restore` puts the
//! entry for the dependency key (or, on a miss, the nearest earlier entry of the binary) into
//! cargo's build directory; `save` stores what cargo compiled as a new entry (parent layers plus
//! a delta) and shares it with the cache repository.
//!
//! Writes into cargo's build directory (under its lock) and the local store; pulls from and
//! pushes to the cache repository. A damaged entry or an unreachable repository is reported and
//! the build goes on: a cache never fails a build.

use std::fs::File;

use imgbuild_cargo::units;
use imgbuild_oci::spec::Descriptor;

use crate::build::Setup;
use crate::build::compile::Compiled;
use crate::build::early::Early;
use crate::context::Context;
use crate::depcache::packer::Packer;
use crate::depcache::{self, Entry, stream};
use crate::event::{Event, Reporter};
use crate::names::CacheName;
use crate::remotecache::RemoteCache;
use crate::{Error, Result};

/// What `restore` did; holds cargo's build directory locked until `save` is done.
pub(crate) struct Restored {
    /// The entry restored, if any.
    entry: Option<RestoredEntry>,
    /// The lock on cargo's build directory (restore, compile and snapshot take turns).
    _lock: File,
}

struct RestoredEntry {
    entry: Entry,
    /// Whether it is the entry for exactly this key (a hit), not the nearest earlier one.
    exact: bool,
    /// Whether it came from the cache repository in this build.
    pulled: bool,
}

/// Runs the `restore` stage (nothing to do with the dependency cache off).
pub(crate) fn restore(
    cx: &Context<'_>,
    s: &Setup,
    early: &mut Option<Early<'_>>,
    reporter: &dyn Reporter,
) -> Result<Restored> {
    let lock = depcache::lock_build_dir(&cx.workspace.build_dir)?;
    let entry = if cx.options.caching() {
        lookup(cx, s, early, reporter)?
    } else {
        None
    };
    Ok(Restored { entry, _lock: lock })
}

/// An entry found, and when it came from the cache repository, what was restored while it
/// downloaded.
type Found = (Option<Entry>, Option<depcache::RestoreStats>);

/// What the early restore staged, when `accept` takes it: the entry, in place.
fn from_early(
    s: &Setup,
    early: &mut Option<Early<'_>>,
    accept: &dyn Fn(&str, &depcache::EntryConfig) -> bool,
    reporter: &dyn Reporter,
) -> Option<Found> {
    match early
        .as_mut()?
        .take(&s.store, &s.profile_dir, accept, reporter)?
    {
        Ok(taken) => Some((Some(taken.entry), Some(taken.streamed))),
        Err(e) => {
            unusable(reporter, &s.dependency_key.key, &e);
            None
        }
    }
}

/// Looks up the entry for the key: the local store, else the cache repository (what the
/// early restore staged, when it is that entry).
fn find_exact(s: &Setup, early: &mut Option<Early<'_>>, reporter: &dyn Reporter) -> Found {
    let key = &s.dependency_key.key;
    let local = match depcache::find(&s.store, key) {
        Ok(found) => found,
        Err(e) => {
            unusable(reporter, key, &e);
            None
        }
    };
    let Some(remote) = s.remote.as_ref().filter(|_| local.is_none()) else {
        return (local, None);
    };
    if let Some(found) = from_early(s, early, &|_, c| c.key == *key, reporter) {
        return found;
    }
    match stream::pull_entry(remote, &s.store, key, &s.profile_dir, reporter) {
        Ok(Some((entry, streamed))) => (Some(entry), Some(streamed)),
        Ok(None) => (None, None),
        Err(e) => {
            remote_warning(reporter, remote, "pull the dependency cache entry from", &e);
            (None, None)
        }
    }
}

/// The nearest earlier entry of the binary: local, else the newest one in the cache repository
/// (a fresh runner) when its toolchain lines match.
fn find_nearest(
    cx: &Context<'_>,
    s: &Setup,
    early: &mut Option<Early<'_>>,
    reporter: &dyn Reporter,
) -> Found {
    let target = &cx.one().target;
    let inputs = &s.dependency_key.inputs;
    let nearest = depcache::nearest(&s.store, &target.package.name, &target.bin, inputs);
    let Some(remote) = s.remote.as_ref().filter(|_| nearest.is_none()) else {
        return (nearest, None);
    };
    let latest = cx.latest_tag(target);
    let same = |tag: &str, c: &depcache::EntryConfig| {
        tag == latest && depcache::compatible(&c.inputs, inputs)
    };
    if let Some(found) = from_early(s, early, &same, reporter) {
        return found;
    }
    // The binary's own newest, when it is of this toolchain (else nothing of it is
    // downloaded) and trusted (else it is reported), then the other binaries'.
    let own = match pull_other(s, remote, &latest, reporter) {
        Err(e @ crate::Error::UntrustedEntry { .. }) => {
            let what = "use the newest dependency cache entry of";
            remote_warning(reporter, remote, what, &e);
            Ok(None)
        }
        own => own,
    };
    match own {
        Ok(Some((e, streamed))) => (Some(e), Some(streamed)),
        Ok(None) => match other_binaries_latest(cx, s, remote, reporter) {
            Ok(Some((e, streamed))) => (Some(e), Some(streamed)),
            Ok(None) => (None, None),
            Err(e) => {
                let what = "pull another binary's newest dependency cache entry from";
                remote_warning(reporter, remote, what, &e);
                (None, None)
            }
        },
        Err(e) => {
            let what = "pull the newest dependency cache entry from";
            remote_warning(reporter, remote, what, &e);
            (None, None)
        }
    }
}

/// Pulls the entry tagged `tag`, restoring it while it downloads when it fits this build.
fn pull_other(
    s: &Setup,
    remote: &RemoteCache,
    tag: &str,
    reporter: &dyn Reporter,
) -> Result<Option<(Entry, depcache::RestoreStats)>> {
    let fits = (s.dependency_key.inputs.as_slice(), s.profile_dir.as_path());
    stream::pull_other(remote, &s.store, tag, fits, reporter)
}

/// A binary with no usable entry of its own in the cache repository starts from the newest
/// entry of the workspace's other binaries that shares the most lines (same toolchain):
/// their configs are read first, several at a time, and only the chosen entry is pulled.
fn other_binaries_latest(
    cx: &Context<'_>,
    s: &Setup,
    remote: &RemoteCache,
    reporter: &dyn Reporter,
) -> Result<Option<(Entry, depcache::RestoreStats)>> {
    let target = &cx.one().target;
    let others: Vec<String> = (cx.workspace.binaries().iter())
        .filter(|o| !(o.package.name == target.package.name && o.bin == target.bin))
        .map(|o| cx.latest_tag(o))
        .collect();
    let configs = remote.peek_configs(&others)?;
    match depcache::sharing_most(&configs, &s.dependency_key.inputs) {
        Some(i) => pull_other(s, remote, &others[i], reporter),
        None => from_index(s, remote, reporter),
    }
}

/// The entry of any binary (another project's too) that the cache repository's index says
/// shares the most packages, with the same toolchain. A line whose entry is gone (pruned), or
/// not trusted, is passed over for the next.
fn from_index(
    s: &Setup,
    remote: &RemoteCache,
    reporter: &dyn Reporter,
) -> Result<Option<(Entry, depcache::RestoreStats)>> {
    let index = remote.read_index()?;
    for (closest, _) in index.closest(&s.dependency_key.inputs).into_iter().take(4) {
        let tag = CacheName::Deps(&closest.key).tag();
        match pull_other(s, remote, &tag, reporter) {
            Ok(Some(found)) => return Ok(Some(found)),
            // Pruned, or (the index is not signed) no trusted key signed it: the next one.
            Ok(None) | Err(crate::Error::UntrustedEntry { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn lookup(
    cx: &Context<'_>,
    s: &Setup,
    early: &mut Option<Early<'_>>,
    reporter: &dyn Reporter,
) -> Result<Option<RestoredEntry>> {
    let (entry, streamed, exact) = match find_exact(s, early, reporter) {
        (Some(entry), streamed) => (Some(entry), streamed, true),
        (None, _) => {
            let (nearest, streamed) = find_nearest(cx, s, early, reporter);
            (nearest, streamed, false)
        }
    };
    let pulled = streamed.is_some();
    reporter.report(&Event::CacheLookup {
        key: s.dependency_key.key.clone(),
        hit: exact,
        from_registry: pulled,
        nearest: entry
            .as_ref()
            .filter(|_| !exact)
            .map(|e| e.config.key.clone()),
    });
    let Some(entry) = entry else {
        return Ok(None);
    };
    // What the download restored is in place already; the rest (if any) comes from the store.
    match depcache::restore(&s.store, &entry, &s.profile_dir, reporter) {
        Ok(stats) => {
            let streamed = streamed.unwrap_or_default();
            reporter.report(&Event::CacheRestored {
                early: early.as_ref().is_some_and(|e| e.taken()),
                key: entry.config.key.clone(),
                present: stats.present.saturating_sub(streamed.restored),
                restored: stats.restored + streamed.restored,
                while_downloading: streamed.restored,
                bytes: stats.bytes + streamed.bytes,
            });
            Ok(Some(RestoredEntry {
                entry,
                exact,
                pulled,
            }))
        }
        Err(e) if depcache::is_damage(&e) => {
            unusable(reporter, &entry.config.key, &e);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// What the `save` stage leaves for the cache repository, done while the image is made
/// ([`share`]).
pub(crate) enum ToShare {
    /// A new entry: pushed, added to the index, and tagged as the binary's newest.
    Stored(Descriptor),
    /// A local hit the registry may not have yet (the entry was built before the cache
    /// repository was configured, or its push failed): pushed when it lacks it.
    Missing(Descriptor),
}

/// Runs the `save` stage: stores the compiled dependency units as the key's entry when cargo
/// compiled any (or there was no entry), and marks the entry used. Releases cargo's build
/// directory. Returns what a cache repository should get ([`share`] does nothing without one).
pub(crate) fn save(
    cx: &Context<'_>,
    s: &Setup,
    restored: Restored,
    compiled: &Compiled,
    packer: Option<Packer>,
    reporter: &dyn Reporter,
) -> Result<Option<ToShare>> {
    if !cx.options.caching() {
        return Ok(None);
    }
    let deps = &compiled.dependencies;
    let restored = restored.entry.as_ref();
    let hit = restored.filter(|r| r.exact).map(|r| &r.entry);
    // A project without registry or git dependencies has nothing to cache.
    let to_share = if (hit.is_none() || deps.compiled > 0) && !deps.hashes.is_empty() {
        if hit.is_some() {
            reporter.report(&Event::Warning {
                message: format!(
                    "cargo recompiled {} dependency units ({}) although the cache had an entry for this key: some input that changes dependency builds is not in the key; the entry is replaced",
                    deps.compiled,
                    deps.compiled_packages.join(", ")
                ),
            });
        }
        let stored = store_entry(cx, s, restored.map(|r| &r.entry), deps, packer, reporter)?;
        Some(ToShare::Stored(stored))
    } else {
        (restored.filter(|r| r.exact && !r.pulled))
            .map(|r| ToShare::Missing(r.entry.manifest.clone()))
    };
    crate::usage::touch(&cx.cache, CacheName::Deps(&s.dependency_key.key), reporter);
    Ok(to_share)
}

/// Stores the dependency units as a new entry on top of `parent`; returns its manifest.
fn store_entry(
    cx: &Context<'_>,
    s: &Setup,
    parent: Option<&Entry>,
    deps: &units::DependencyUnits,
    packer: Option<Packer>,
    reporter: &dyn Reporter,
) -> Result<Descriptor> {
    let target = &cx.one().target;
    let files = depcache::scan_units(&s.profile_dir, &deps.hashes)?;
    let prepacked = packer
        .filter(|_| parent.is_none())
        .and_then(|p| p.finish(&files));
    let saved = depcache::save(
        &s.store,
        &depcache::SaveRequest {
            key: &s.dependency_key.key,
            inputs: &s.dependency_key.inputs,
            package: &target.package.name,
            bin: &target.bin,
            files: &files,
            profile_dir: &s.profile_dir,
            parent,
        },
        prepacked,
    )?;
    reporter.report(&Event::CacheStored {
        key: s.dependency_key.key.clone(),
        layers: saved.layers,
        files: saved.files,
        new_files: saved.new_files,
        new_layer_size: saved.new_layer_size,
        squashed: saved.squashed,
    });
    Ok(saved.manifest)
}

/// Gives the cache repository what `save` left for it; a failure is a warning.
pub(crate) fn share(
    cx: &Context<'_>,
    s: &Setup,
    to_share: Option<ToShare>,
    reporter: &dyn Reporter,
) {
    let (Some(remote), Some(to_share)) = (&s.remote, to_share) else {
        return;
    };
    match to_share {
        ToShare::Stored(manifest) => {
            push_entry(cx, remote, s, &manifest, reporter);
            // The entry's blobs went up with it: the binary's newest tag is one request.
            let latest = cx.latest_tag(&cx.one().target);
            if let Err(e) = remote.put_tag(&s.store, &manifest, &latest) {
                remote_warning(reporter, remote, &format!("update {latest} in"), &e);
            }
        }
        ToShare::Missing(manifest) => match remote.has_entry(&s.dependency_key.key) {
            Ok(true) => {}
            Ok(false) => push_entry(cx, remote, s, &manifest, reporter),
            Err(e) => remote_warning(reporter, remote, "check the cache repository", &e),
        },
    }
}

/// A packer for the compile (see `depcache::packer`) when the build starts from no
/// dependency entry at all (a cold build): everything cargo compiles goes into one layer.
pub(crate) fn packer(cx: &Context<'_>, s: &Setup, restored: &Restored) -> Option<Packer> {
    (cx.options.caching() && restored.entry.is_none())
        .then(|| Packer::start(&s.store, &s.profile_dir))
}

/// Pushes the key's entry to the cache repository and adds it to the repository's index; a
/// failure is a warning.
fn push_entry(
    cx: &Context<'_>,
    remote: &RemoteCache,
    s: &Setup,
    manifest: &imgbuild_oci::spec::Descriptor,
    reporter: &dyn Reporter,
) {
    if let Err(e) = remote.push_entry(&s.store, &s.dependency_key.key, manifest, reporter) {
        remote_warning(reporter, remote, "push the dependency cache entry to", &e);
        return;
    }
    let target = &cx.one().target;
    let line = depcache::index::entry_for(
        &s.dependency_key.key,
        &format!("{}/{}", target.package.name, target.bin),
        &s.dependency_key.inputs,
    );
    if let Err(e) = remote.add_to_index(&s.store, line, reporter) {
        let what = format!("update {} in", depcache::index::TAG);
        remote_warning(reporter, remote, &what, &e);
    }
}

fn unusable(reporter: &dyn Reporter, key: &str, e: &Error) {
    reporter.report(&Event::CacheUnusable {
        key: key.to_string(),
        message: e.to_string(),
    });
}

/// "could not {what} {repository}: {e}", as a warning.
fn remote_warning(reporter: &dyn Reporter, remote: &RemoteCache, what: &str, e: &Error) {
    reporter.report(&Event::Warning {
        message: format!("could not {what} {}: {e}", remote.repository()),
    });
}
