//! `imgbuild plan`: each binary's dependency-tree key, its inputs, its app key, and why they
//! changed since the last build — computed exactly as a build would, without building.
//!
//! Runs what the `keys` module runs (`cargo tree`, `rustc -vV`) and reads the key records and the
//! local store.

use std::collections::HashMap;
use std::path::PathBuf;

use imgbuild_cargo::plan::{DependencyKey, explain};

use crate::Result;
use crate::appcache;
use crate::context::{self, Scope};
use crate::keys::{self, KeyContext, Record};
use crate::options::BuildOptions;

/// One binary's plan.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct BinaryPlan {
    /// Package name.
    pub package: String,
    /// Binary name.
    pub bin: String,
    /// The dependency-tree key (sha256 hex).
    pub dependency_key: String,
    /// The canonical inputs the key hashes.
    pub inputs: Vec<String>,
    /// Lines removed (`- `) and added (`+ `) since the last build of this binary; `None` when no
    /// build was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<String>>,
    /// The app key (zero-work rebuilds): the static key's inputs plus the files the last build
    /// read; `None` before the first build of this binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_key: Option<String>,
    /// Whether the store has an image built from exactly these inputs.
    pub app_hit: bool,
    /// With `--explain`: the inputs that changed since the stored build (files, or static
    /// input lines `- old` / `+ new`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_changes: Option<Vec<String>>,
    /// With `--explain`: the dependency-cache entry in the local store a build would restore
    /// (the key's own, else the nearest one); `None` when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependency_entry: Option<EntryChoice>,
}

/// The dependency-cache entry a build would start from.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryChoice {
    /// Its key.
    pub key: String,
    /// `package/bin` it was built for.
    pub binary: String,
    /// Whether it is the entry for exactly this key (nothing to compile).
    pub exact: bool,
    /// Packages of this binary's tree the entry holds compiled.
    pub shared_packages: usize,
    /// Packages in this binary's tree.
    pub packages: usize,
    /// The cache repository it is in, when the local store has none to start from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_repo: Option<String>,
}

/// How many `package …` lines of `wanted` an entry built from `inputs` holds, and how many
/// `wanted` has.
fn shared_packages(inputs: &[String], wanted: &[String]) -> (usize, usize) {
    let is_package = |l: &&String| l.starts_with("package ");
    let wanted: std::collections::BTreeSet<&String> = wanted.iter().filter(is_package).collect();
    let shared = inputs
        .iter()
        .filter(is_package)
        .filter(|l| wanted.contains(l))
        .count();
    (shared, wanted.len())
}

/// With `--cache-repo`: the entry a fresh runner would start from there, chosen as a build
/// chooses (the key's own; the binary's newest; the workspace's other binaries' newest that
/// shares the most; the repository index's closest), reading configs only.
fn remote_entry_choice(
    cx: &context::Context<'_>,
    remote: &crate::remotecache::RemoteCache,
    target: &imgbuild_cargo::workspace::BinaryTarget,
    key: &DependencyKey,
) -> Result<Option<EntryChoice>> {
    let repo = Some(remote.repository().to_string());
    let own = format!("{}/{}", target.package.name, target.bin);
    if remote.has_entry(&key.key)? {
        let (shared, packages) = shared_packages(&key.inputs, &key.inputs);
        return Ok(Some(EntryChoice {
            key: key.key.clone(),
            binary: own,
            exact: true,
            shared_packages: shared,
            packages,
            cache_repo: repo,
        }));
    }
    // The binary's own newest when it is of this toolchain, else the newest of the
    // workspace's binaries sharing the most lines: as `deps::find_nearest` chooses.
    let binaries = cx.workspace.binaries();
    let tags: Vec<String> = (binaries.iter()).map(|b| cx.latest_tag(b)).collect();
    let mut configs = remote.peek_configs(&tags)?;
    let fits =
        |c: &crate::depcache::EntryConfig| crate::depcache::compatible(&c.inputs, &key.inputs);
    let own_at = (binaries.iter())
        .position(|b| b.package.name == target.package.name && b.bin == target.bin)
        .filter(|&i| configs[i].as_ref().is_some_and(fits));
    let chosen = own_at.or_else(|| crate::depcache::sharing_most(&configs, &key.inputs));
    if let Some(config) = chosen.and_then(|i| configs[i].take()) {
        let (shared, packages) = shared_packages(&config.inputs, &key.inputs);
        return Ok(Some(EntryChoice {
            key: config.key,
            binary: config.binary,
            exact: false,
            shared_packages: shared,
            packages,
            cache_repo: repo,
        }));
    }
    let index = remote.read_index()?;
    let found = index
        .closest(&key.inputs)
        .first()
        .map(|(entry, shared)| EntryChoice {
            key: entry.key.clone(),
            binary: entry.binary.clone(),
            exact: false,
            shared_packages: *shared,
            packages: shared_packages(&key.inputs, &key.inputs).1,
            cache_repo: repo.clone(),
        });
    Ok(found)
}

/// The entry a build of `key` (for `package/bin`) would restore from the store under `cache`.
fn entry_choice(
    cache: &crate::CacheDir,
    package: &str,
    bin: &str,
    key: &DependencyKey,
) -> Option<EntryChoice> {
    let root = cache.store();
    if !root.join("oci-layout").exists() {
        return None;
    }
    let store = imgbuild_oci::layout::Layout::open(root).ok()?;
    let (entry, exact) = match crate::depcache::find(&store, &key.key).ok().flatten() {
        Some(e) => (e, true),
        None => (
            crate::depcache::nearest(&store, package, bin, &key.inputs)?,
            false,
        ),
    };
    let (shared, packages) = shared_packages(&entry.config.inputs, &key.inputs);
    Some(EntryChoice {
        shared_packages: shared,
        packages,
        key: entry.config.key,
        binary: entry.config.binary,
        exact,
        cache_repo: None,
    })
}

/// Plans every binary in scope: its key, inputs and (with `explain`) the change since its last
/// build. Runs `cargo tree` and `rustc -vV`; compiles nothing.
///
/// ```
/// use imgbuild::BuildOptions;
/// # let dir = tempfile::tempdir()?;
/// # let project = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hello");
///
/// let options = BuildOptions::new(dir.path()).manifest_path(project);
/// for plan in imgbuild::plan::plan(&options, true)? {
///     println!("{}/{} {}", plan.package, plan.bin, plan.dependency_key);
///     assert!(!plan.app_hit, "nothing was built with this cache yet");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn plan(options: &BuildOptions, explain_changes: bool) -> Result<Vec<BinaryPlan>> {
    let cx = context::prepare(options, Scope::All, &crate::event::Silent)?;
    let keys = KeyContext::gather(&cx)?;
    // With --explain and a cache repository, a fresh runner's starting entry is looked up
    // there too (configs only); an unreachable repository is an error here, since the
    // question was about it.
    let remote = match (&options.cache_repo, explain_changes) {
        (Some(repo), true) => Some(crate::remotecache::RemoteCache::connect(
            repo,
            &options.registry,
            &cx.cache,
        )?),
        _ => None,
    };
    // Cargo resolves dependencies per package: binaries of one package share its key.
    let mut by_package: HashMap<PathBuf, DependencyKey> = HashMap::new();
    cx.selected
        .iter()
        .map(|selected| {
            let t = &selected.target;
            let key = match by_package.get(&t.package.manifest_path) {
                Some(key) => key.clone(),
                None => {
                    let key = keys.key_for_tree(&keys::tree(&cx, t)?);
                    by_package.insert(t.package.manifest_path.clone(), key.clone());
                    key
                }
            };
            let changes = if explain_changes {
                keys::read_record(&cx.cache, t, Record::DependencyKey)?
                    .map(|old| explain(&old, &key.inputs))
            } else {
                None
            };
            let app = appcache::status(&cx, selected, &key.key)?;
            let mut dependency_entry = explain_changes
                .then(|| entry_choice(&cx.cache, &t.package.name, &t.bin, &key))
                .flatten();
            if let Some(remote) = remote.as_ref().filter(|_| dependency_entry.is_none()) {
                dependency_entry = remote_entry_choice(&cx, remote, t, &key)?;
            }
            Ok(BinaryPlan {
                package: t.package.name.clone(),
                bin: t.bin.clone(),
                dependency_key: key.key,
                inputs: key.inputs,
                changes,
                app_key: app.key,
                app_hit: app.hit,
                app_changes: explain_changes.then_some(app.changes),
                dependency_entry,
            })
        })
        .collect()
}
