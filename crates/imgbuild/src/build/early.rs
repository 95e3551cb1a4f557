//! Stage `early restore`, on a fresh checkout only: while `cargo metadata` and `cargo tree`
//! answer (the dependency key is not known yet), the binary's newest dependency entry is
//! pulled from the cache repository and unpacked into a staging directory in cargo's target
//! directory. The `restore` stage takes it ([`Early::take`]) when it is the entry it would
//! restore anyway — the key's own, or the newest earlier one with the same toolchain lines —
//! and moves it into place; otherwise, and on an app-cache hit, the staging directory is
//! removed. Nothing reaches cargo's directories before that check.
//!
//! Why: on a fresh runner the restore (download, decompress, write) took as long as
//! everything before it, and both mostly wait on one core.
//!
//! Talks to the cache repository; writes the local store and a staging directory under the
//! target directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{Scope, ScopedJoinHandle};

use imgbuild_oci::layout::{Layout, LayoutLock};
use imgbuild_oci::spec::Descriptor;
use imgbuild_registry::Reference;

use crate::Result;
use crate::depcache::{self, Entry, EntryConfig, RestoreStats, stream};
use crate::event::{Deferred, Reporter};
use crate::options::{BuildOptions, RemoteCacheMode};
use crate::procenv::Env;
use crate::remotecache::RemoteCache;

/// The early restore, running or done.
pub(crate) struct Early<'scope> {
    handle: Option<ScopedJoinHandle<'scope, (Option<Staged>, Deferred)>>,
    /// What it staged, once joined.
    staged: Option<Staged>,
    /// Whether the restore took it.
    taken: bool,
    stop: &'scope AtomicBool,
}

/// An entry pulled into the store and unpacked into a staging directory.
struct Staged {
    /// `<target>/.imgbuild-early-…`, removed when dropped.
    _dir: tempfile::TempDir,
    /// The profile directory inside it.
    profile: PathBuf,
    /// The target directory it is in.
    target_dir: PathBuf,
    /// The tag it was pulled by.
    tag: String,
    manifest: Descriptor,
    streamed: RestoreStats,
    /// Held until the entry is tagged in the store.
    _writer: LayoutLock,
}

/// What [`Early::take`] hands the restore: the entry, tagged in the store, in place.
pub(crate) struct Taken {
    pub(crate) entry: Entry,
    pub(crate) streamed: RestoreStats,
}

/// Starts the early restore of `options`' binary in `scope` when it can help: the cache and a
/// cache repository are on, the binary is named (`-p`, `--bin`) or the manifest is a
/// package's, nothing moves the target directory, and the checkout has no target directory
/// yet. `stop` lives as long as the scope.
pub(crate) fn start<'scope>(
    scope: &'scope Scope<'scope, '_>,
    options: &'scope BuildOptions,
    stop: &'scope AtomicBool,
) -> Option<Early<'scope>> {
    let repo = options.cache_repo.as_ref()?;
    let simple = options.caching()
        && options.cache_repo_mode != RemoteCacheMode::Off
        && options.platforms.is_empty()
        && options.for_platform.is_none()
        && options.target_dir.is_none()
        && options.build_env.is_none()
        && !options.allow_network;
    if !simple {
        return None;
    }
    let env = Env::capture();
    let manifest_path =
        imgbuild_cargo::run::manifest_path(options.manifest_path.as_deref()).ok()?;
    let (package, bin) = binary_guess(options, &manifest_path)?;
    let target_dir = crate::context::fresh_target_dir(&manifest_path, &env)?;
    // Made here, before the thread starts, so that the build's own opening of the store
    // never races its creation.
    let store = Layout::create(options.cache_dir.store()).ok()?;
    let profile = imgbuild_cargo::units::profile_dir_name(&options.profile).to_string();
    let handle = scope.spawn(move || {
        let tag = crate::names::latest_tag(&package, &bin, &options.profile);
        let events = Deferred::default();
        let at = (tag.as_str(), target_dir.as_path(), profile.as_str());
        // A failure here is met again, and reported, by the restore's own lookup.
        let staged = pull((options, repo), &store, at, (stop, &events));
        (staged.ok().flatten(), events)
    });
    Some(Early {
        handle: Some(handle),
        staged: None,
        taken: false,
        stop,
    })
}

/// The package and binary the options name; for a package's manifest with no `-p`, its
/// name (a guess: a wrong one only costs a lookup).
fn binary_guess(options: &BuildOptions, manifest_path: &Path) -> Option<(String, String)> {
    match (&options.package, &options.bin) {
        (Some(p), Some(b)) => Some((p.clone(), b.clone())),
        (Some(p), None) => Some((p.clone(), p.clone())),
        (None, _) => {
            let text = std::fs::read_to_string(manifest_path).ok()?;
            let name = package_name(&text)?;
            let bin = options.bin.clone().unwrap_or_else(|| name.clone());
            Some((name, bin))
        }
    }
}

/// The `name` of a manifest's `[package]` table, read line by line.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        let Some(rest) = line.strip_prefix("name").map(str::trim_start) else {
            continue;
        };
        if in_package && let Some(value) = rest.strip_prefix('=') {
            let value = value.trim().trim_matches('"');
            return (!value.is_empty()).then(|| value.to_string());
        }
    }
    None
}

/// Connects, pulls the entry tagged `tag` and unpacks it into a new staging directory in
/// `target_dir`; `None` when the repository has no such tag.
fn pull(
    (options, repo): (&BuildOptions, &Reference),
    store: &Layout,
    (tag, target_dir, profile): (&str, &Path, &str),
    (stop, events): (&AtomicBool, &Deferred),
) -> Result<Option<Staged>> {
    // Only the public keys it checks entries with: the private ones (decrypted with a
    // password) are `prepare`'s, read once.
    let trust = crate::signing::Keys::load(options.key_files().trust_only(), None)?.trust;
    let remote = RemoteCache::connect(repo, &options.registry, &options.cache_dir)?
        .writable(false)
        .signing(None, trust);
    let writer = store.writer_lock()?;
    std::fs::create_dir_all(target_dir).map_err(crate::io_err("creating", target_dir))?;
    let dir = tempfile::Builder::new()
        .prefix(".imgbuild-early-")
        .tempdir_in(target_dir)
        .map_err(crate::io_err("creating a directory in", target_dir))?;
    let staged_profile = dir.path().join(profile);
    let everything = |_: &EntryConfig| stream::Verdict::Restore;
    let pulled = stream::pull_until(
        &remote,
        store,
        tag,
        (&everything, &staged_profile),
        (events, Some(stop)),
    )?;
    Ok(pulled.map(|p| Staged {
        _dir: dir,
        profile: staged_profile,
        target_dir: target_dir.to_path_buf(),
        tag: tag.to_string(),
        manifest: p.manifest,
        streamed: p.streamed,
        _writer: writer,
    }))
}

impl Early<'_> {
    /// Waits for the early restore and reports what it did (its downloads, its retries).
    fn join(&mut self, reporter: &dyn Reporter) {
        if let Some(handle) = self.handle.take() {
            let (staged, events) = crate::threads::join(handle);
            events.replay(reporter);
            self.staged = staged;
        }
    }

    /// Waits for the early restore; when it staged an entry for `profile_dir` (pulled by
    /// `tag`) and `accept` takes its tag and config, tags it in `store` and moves what it
    /// unpacked into `profile_dir`. `None`: the restore goes on as if there had been no early
    /// restore (what was staged stays for a later call, and is removed with `self`).
    pub(crate) fn take(
        &mut self,
        store: &Layout,
        profile_dir: &Path,
        accept: &dyn Fn(&str, &EntryConfig) -> bool,
        reporter: &dyn Reporter,
    ) -> Option<Result<Taken>> {
        self.join(reporter);
        let staged = self.staged.as_ref()?;
        let here = profile_dir.parent() == Some(staged.target_dir.as_path())
            && profile_dir.file_name() == staged.profile.file_name();
        if !here {
            return None;
        }
        let entry = match depcache::read_entry(store, &staged.manifest) {
            Ok(entry) if accept(&staged.tag, &entry.config) => entry,
            Ok(_) => return None,
            Err(e) => {
                // Damaged: reported once, and never offered again.
                self.staged = None;
                return Some(Err(e));
            }
        };
        let staged = self.staged.take()?;
        self.taken = true;
        let taken = depcache::adopt_as_is(store, &staged.manifest)
            .and_then(|_| move_into(&staged.profile, profile_dir))
            .map(|()| Taken {
                entry,
                streamed: staged.streamed,
            });
        Some(taken)
    }

    /// Whether the restore took what the early restore staged.
    pub(crate) fn taken(&self) -> bool {
        self.taken
    }

    /// Not needed (an app-cache hit): stops the early restore, waits for it to let go and
    /// reports what it had done.
    pub(crate) fn discard(mut self, reporter: &dyn Reporter) {
        self.stop.store(true, Ordering::Relaxed);
        self.join(reporter);
    }
}

impl Drop for Early<'_> {
    /// Not taken: the unpacking stops; the scope waits for the thread, whose staging
    /// directory is then removed.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Moves the tree `from` into `to`: whole directories where `to` has none of that name, file
/// by file (replacing) where it has.
fn move_into(from: &Path, to: &Path) -> Result<()> {
    if !from.exists() {
        return Ok(());
    }
    if !to.exists() {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(crate::io_err("creating", parent))?;
        }
        return std::fs::rename(from, to).map_err(crate::io_err("moving restored files to", to));
    }
    let entries = std::fs::read_dir(from).map_err(crate::io_err("reading", from))?;
    for entry in entries {
        let entry = entry.map_err(crate::io_err("reading", from))?;
        let dest = to.join(entry.file_name());
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && dest.is_dir() {
            move_into(&entry.path(), &dest)?;
        } else {
            std::fs::rename(entry.path(), &dest)
                .map_err(crate::io_err("moving restored file to", &dest))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_name_is_read_from_the_package_table_only() {
        let manifest = "[workspace]\nname = \"no\"\n\n[package]\nversion = \"1.0.0\"\nname = \"svc\"\n\n[dependencies]\nname = \"x\"\n";
        assert_eq!(package_name(manifest).as_deref(), Some("svc"));
        assert_eq!(package_name("[workspace]\nmembers = []\n"), None);
    }

    #[test]
    fn a_tree_is_moved_whole_where_the_destination_lacks_it_and_merged_where_it_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        for f in ["deps/a.rlib", "build/x/out/gen.rs", ".fingerprint/a/hash"] {
            let p = from.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f).unwrap();
        }
        std::fs::create_dir_all(to.join("deps")).unwrap();
        std::fs::write(to.join("deps/old.rlib"), "old").unwrap();
        std::fs::write(to.join("deps/a.rlib"), "stale").unwrap();
        move_into(&from, &to).unwrap();
        for f in ["deps/a.rlib", "build/x/out/gen.rs", ".fingerprint/a/hash"] {
            assert_eq!(std::fs::read_to_string(to.join(f)).unwrap(), f);
        }
        assert_eq!(
            std::fs::read_to_string(to.join("deps/old.rlib")).unwrap(),
            "old"
        );

        let fresh = dir.path().join("fresh/release");
        let from = dir.path().join("again");
        std::fs::create_dir_all(from.join("deps")).unwrap();
        std::fs::write(from.join("deps/b.rlib"), "b").unwrap();
        move_into(&from, &fresh).unwrap();
        assert_eq!(
            std::fs::read_to_string(fresh.join("deps/b.rlib")).unwrap(),
            "b"
        );
        assert!(!from.exists());
    }
}
