//! The member units of a finished build, read from cargo's messages and build directory: their
//! names, inputs (dep-info, build-script declarations, `Cargo.toml`), edges (fingerprint
//! files), files, and whether cargo compiled them in this build.
//!
//! Reads cargo's build directory and the sources' metadata.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use imgbuild_cargo::fingerprint;
use imgbuild_cargo::run::BuildOutcome;
use imgbuild_cargo::units::{self, hash_of_path, unit_hash};

use super::plan::BuiltUnit;
use crate::Result;
use crate::appcache::input_name;

/// What `collect` reads.
pub(crate) struct CollectRequest<'a> {
    /// Cargo's outcome.
    pub(crate) outcome: &'a BuildOutcome,
    /// The profile directory.
    pub(crate) profile_dir: &'a Path,
    /// The workspace root (input names are relative to it).
    pub(crate) root: &'a Path,
    /// Package id → its directory.
    pub(crate) package_dirs: &'a BTreeMap<String, PathBuf>,
    /// Directories whose files are not inputs (cargo's home, the toolchain, the build
    /// directory: covered by the unit's name and edges).
    pub(crate) ignore: &'a [PathBuf],
    /// The registry and git units' hashes (the dependency cache's units).
    pub(crate) dependency_hashes: &'a BTreeSet<String>,
    /// When the compile started (a build-script run dated later was run by it).
    pub(crate) started: SystemTime,
}

enum Kind<'a> {
    /// A compiled unit and its artifacts.
    Compile {
        fresh: bool,
        artifacts: &'a [PathBuf],
    },
    /// A build-script run and its `out` directory.
    Run { out_dir: Option<&'a PathBuf> },
}

struct Found<'a> {
    package_id: &'a str,
    kind: Kind<'a>,
}

/// The build's member units (path packages), except the binary itself (its files are not
/// under `deps/`; the app cache keeps it).
pub(crate) fn collect(req: &CollectRequest<'_>) -> Result<Vec<BuiltUnit>> {
    let found = member_units(req);
    let wanted: BTreeSet<String> = found
        .keys()
        .cloned()
        .chain(req.dependency_hashes.iter().cloned())
        .collect();
    let graph = read_fingerprints(&req.profile_dir.join(".fingerprint"), &wanted);
    let member_hashes: BTreeSet<String> = found.keys().cloned().collect();
    let files = unit_files(req.profile_dir, &member_hashes)?;
    let mut out = Vec::new();
    for (hash, f) in &found {
        let Some(node) = graph.nodes.get(hash) else {
            continue;
        };
        let timestamp = super::restore::started(req.profile_dir, &node.name);
        let rebuilt = match f.kind {
            Kind::Compile { fresh, .. } => !fresh,
            Kind::Run { .. } => timestamp.is_some_and(|t| t >= req.started),
        };
        let (inputs, declared) = inputs(req, f);
        let mut unit = BuiltUnit {
            name: node.name.clone(),
            package: units::package_label(f.package_id).to_string(),
            rebuilt,
            cacheable: declared && node.deps.is_some(),
            inputs,
            members: Vec::new(),
            deps: Vec::new(),
            files: files.get(hash).cloned().unwrap_or_default(),
        };
        for fp in node.deps.iter().flatten() {
            match graph.by_fingerprint.get(fp) {
                Some(dep) if member_hashes.contains(dep) => {
                    unit.members.push(graph.nodes[dep].name.clone())
                }
                Some(dep) => unit.deps.push(graph.nodes[dep].name.clone()),
                None => unit.cacheable = false,
            }
        }
        // An input written after the unit started may not be what it was compiled from.
        if rebuilt
            && unit
                .inputs
                .iter()
                .any(|i| newer_than(req.root, i, timestamp))
        {
            unit.cacheable = false;
        }
        out.push(unit);
    }
    propagate(&mut out);
    Ok(out)
}

/// The path packages' units cargo reported, by unit hash (units whose files are not named by
/// a hash, the binary itself, are left out).
fn member_units<'a>(req: &CollectRequest<'a>) -> BTreeMap<String, Found<'a>> {
    let mut found = BTreeMap::new();
    let members = |id: &str| !units::is_cacheable(id);
    let hash = |paths: &[PathBuf]| {
        paths
            .iter()
            .find_map(|p| hash_of_path(p, req.profile_dir))
            .map(String::from)
    };
    for unit in req
        .outcome
        .compiled
        .iter()
        .filter(|u| members(&u.package_id))
    {
        if let Some(h) = hash(&unit.paths) {
            let kind = Kind::Compile {
                fresh: unit.fresh,
                artifacts: &unit.paths,
            };
            let package_id = &unit.package_id;
            found.insert(h, Found { package_id, kind });
        }
    }
    for run in req
        .outcome
        .build_script_runs
        .iter()
        .filter(|u| members(&u.package_id))
    {
        if let Some(h) = hash(&run.paths) {
            let kind = Kind::Run {
                out_dir: run.paths.first(),
            };
            let package_id = &run.package_id;
            found.insert(h, Found { package_id, kind });
        }
    }
    found
}

/// A unit can be cached only when every member it depends on can.
fn propagate(units: &mut [BuiltUnit]) {
    loop {
        let blocked: BTreeSet<String> = units
            .iter()
            .filter(|u| !u.cacheable)
            .map(|u| u.name.clone())
            .collect();
        let known: BTreeSet<String> = units.iter().map(|u| u.name.clone()).collect();
        let mut changed = false;
        for u in units.iter_mut().filter(|u| u.cacheable) {
            if u.members
                .iter()
                .any(|m| blocked.contains(m) || !known.contains(m))
            {
                u.cacheable = false;
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

/// A unit's input names, and whether they are known (a build-script run that declares no
/// `rerun-if-changed` file is rerun by cargo whenever its package's files are newer: it is
/// never fresh in a new checkout, so it is not cached).
fn inputs(req: &CollectRequest<'_>, f: &Found<'_>) -> (BTreeSet<String>, bool) {
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut env = BTreeSet::new();
    let pkg_dir = req.package_dirs.get(f.package_id);
    if let Some(dir) = pkg_dir {
        files.insert(dir.join("Cargo.toml"));
    }
    let declared = match f.kind {
        Kind::Compile { artifacts, .. } => {
            let text = artifacts.iter().find_map(|a| {
                units::dep_info_candidates(a)
                    .into_iter()
                    .find_map(|c| std::fs::read_to_string(c).ok())
            });
            for dep in text
                .as_deref()
                .map(units::parse_dep_info)
                .unwrap_or_default()
            {
                files.insert(req.root.join(dep));
            }
            text.is_some()
        }
        Kind::Run { out_dir } => {
            let Some(dir) = pkg_dir else {
                return (BTreeSet::new(), false);
            };
            let output = out_dir.and_then(|o| o.parent()).map(|d| d.join("output"));
            let declared = output
                .and_then(|o| std::fs::read_to_string(o).ok())
                .map(|text| units::parse_build_output(&text))
                .filter(units::ScriptInputs::declares_files);
            let Some(declared) = declared else {
                return (BTreeSet::new(), false);
            };
            for file in &declared.files {
                let p = dir.join(file);
                if p.is_dir() {
                    crate::appcache::walk(&p, req.ignore, &mut files);
                } else {
                    files.insert(p);
                }
            }
            env.extend(declared.env.into_iter().map(|v| format!("env:{v}")));
            true
        }
    };
    let mut names: BTreeSet<String> = files
        .iter()
        .filter(|f| !req.ignore.iter().any(|i| f.starts_with(i)))
        .map(|f| input_name(req.root, f))
        .collect();
    names.extend(env);
    (names, declared)
}

fn newer_than(root: &Path, input: &str, started: Option<SystemTime>) -> bool {
    if input.starts_with("env:") {
        return false;
    }
    let Some(started) = started else {
        return true;
    };
    super::restore::mtime(&root.join(input)).is_some_and(|m| m > started)
}

/// One unit's fingerprint directory.
struct Node {
    /// The directory's name (the unit's name).
    name: String,
    /// Its dependencies' fingerprints (`None`: unreadable).
    deps: Option<Vec<u64>>,
}

#[derive(Default)]
struct Graph {
    /// Unit hash → node.
    nodes: BTreeMap<String, Node>,
    /// Fingerprint → unit hash.
    by_fingerprint: BTreeMap<u64, String>,
}

/// Reads the fingerprint directories of the units `wanted` (by hash).
fn read_fingerprints(dir: &Path, wanted: &BTreeSet<String>) -> Graph {
    let mut graph = Graph::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return graph;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(hash) = unit_hash(&name).filter(|h| wanted.contains(*h)) else {
            continue;
        };
        let mut deps = None;
        for file in std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let file_name = file.file_name().to_string_lossy().into_owned();
            if !fingerprint::is_hash_file(&file_name) {
                continue;
            }
            let path = file.path();
            if let Some(fp) = std::fs::read_to_string(&path)
                .ok()
                .as_deref()
                .and_then(fingerprint::parse_hash)
            {
                graph.by_fingerprint.insert(fp, hash.to_string());
            }
            deps = std::fs::read_to_string(path.with_file_name(format!("{file_name}.json")))
                .ok()
                .as_deref()
                .and_then(fingerprint::parse_deps);
        }
        graph.nodes.insert(hash.to_string(), Node { name, deps });
    }
    graph
}

/// The files of the units `hashes`, by hash, relative to the profile directory.
fn unit_files(
    profile_dir: &Path,
    hashes: &BTreeSet<String>,
) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rel in crate::depcache::scan_units(profile_dir, hashes)?.into_keys() {
        let name = rel.split('/').nth(1).unwrap_or_default();
        if let Some(hash) = unit_hash(name) {
            out.entry(hash.to_string()).or_default().push(rel.clone());
        }
    }
    Ok(out)
}
