//! Zero-work rebuilds: the built image remembered under a key of everything that went into it.
//!
//! Two levels, because which source files a binary reads is only known after compiling it:
//! - the **static key** hashes what is known before compiling: the dependency key, the
//!   manifests, features, profile, the image configuration, the base image's digest, the
//!   `SOURCE_DATE_EPOCH`, the git revision, imgbuild's version;
//! - the **app key** adds the content of every file the last build read: the sources rustc's
//!   dep-info lists for the workspace's path packages (modules, `include_str!` files), build
//!   scripts' `rerun-if-changed` inputs (or their whole package when they declare none), the
//!   declared extra files, and the host files copied into the image (shared libraries, CA
//!   bundle); and the values of `rerun-if-env-changed` variables.
//!
//! A **record** (an artifact tagged `app-<static key>`) lists those files; the **image** is
//! tagged `app-<app key>`. A build hashes the record's files, computes the app key, and when the
//! store (or the cache repository) has that image and its blobs are intact, it runs no compiler.
//!
//! Reads the files it hashes and the local store; the key computations are pure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use imgbuild_cargo::run::BuildOutcome;
use imgbuild_cargo::units;
use imgbuild_oci::layout::{Layout, ref_name};
use imgbuild_oci::spec::Descriptor;
use serde::{Deserialize, Serialize};

use crate::filehash::FileHashes;
use crate::image::LayerRole;
use crate::names::CacheName;
use crate::remotecache::RemoteCache;
use crate::{Error, Result};

mod lookup;
mod save;

pub(crate) use lookup::{lookup, static_key_of, status};
pub(crate) use save::{record, share};

/// The `artifactType` of app records.
pub(crate) const RECORD_ARTIFACT_TYPE: &str = "application/vnd.imgbuild.app-record.v1";
/// The media type of a record's config blob.
pub(crate) const RECORD_MEDIA_TYPE: &str = "application/vnd.imgbuild.app-record.v1+json";
/// Version of the key texts; bump when their meaning changes.
pub(crate) const FORMAT: &str = "imgbuild-app-key v1";

/// The static key and the lines it hashes.
#[derive(Debug, Clone)]
pub(crate) struct StaticKey {
    pub(crate) key: String,
    pub(crate) inputs: Vec<String>,
}

/// Where a build looks for app-cache entries and stores them.
pub(crate) struct AppCache<'a> {
    /// The local store.
    pub(crate) store: &'a Layout,
    /// This build's static key.
    pub(crate) static_key: &'a StaticKey,
    /// The cache repository, when configured.
    pub(crate) remote: Option<&'a RemoteCache>,
}

/// What is remembered about a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AppRecord {
    /// The static key.
    pub(crate) static_key: String,
    /// The app key of the build that wrote the record.
    pub(crate) app_key: String,
    /// `package/bin`.
    pub(crate) binary: String,
    /// The static key's input lines.
    pub(crate) static_inputs: Vec<String>,
    /// Input files (relative to the workspace root when inside it, else absolute) and
    /// `env:NAME` entries → sha256 hex of the content or value (`-` when absent).
    pub(crate) inputs: BTreeMap<String, String>,
    /// The image's manifest digest.
    pub(crate) image: String,
    /// `name:tag` of the image.
    pub(crate) reference: String,
    /// The roles of the image's layers, in order.
    pub(crate) roles: Vec<LayerRole>,
    /// How the compile reached the network (absent in records of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) network: Option<crate::supply::Network>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    imgbuild_oci::digest::sha256(bytes).digest().to_string()
}

/// The static key of `lines`.
pub(crate) fn static_key(lines: &[String]) -> String {
    sha256_hex(lines.join("\n").as_bytes())
}

/// The app key: the static key and every input's hash.
pub(crate) fn app_key(static_key: &str, inputs: &BTreeMap<String, String>) -> String {
    let mut text = format!("{FORMAT}\nstatic {static_key}\n");
    for (path, hash) in inputs {
        text.push_str(&format!("input {path} {hash}\n"));
    }
    sha256_hex(text.as_bytes())
}

/// The name an input has in a record: relative to `root` when inside it.
pub(crate) fn input_name(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => path.to_string_lossy().into_owned(),
    }
}

fn input_path(root: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

/// The current hash of one input: a file's content (relative to `root` when not absolute),
/// or an `env:` entry's value from `env`; `-` when absent. The app cache and the unit cache
/// key inputs the same way; file contents are hashed again only when `files` does not
/// remember them.
pub(crate) fn hash_input(
    files: &FileHashes,
    root: &Path,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> String {
    match name.strip_prefix("env:") {
        Some(var) => env(var).map_or_else(|| "-".to_string(), |v| sha256_hex(v.as_bytes())),
        None => files
            .sha256(&input_path(root, name))
            .unwrap_or_else(|| "-".to_string()),
    }
}

/// Hashes the current state of a record's inputs (`env` gives the values of `env:` entries).
pub(crate) fn hash_inputs<'a>(
    files: &FileHashes,
    root: &Path,
    names: impl IntoIterator<Item = &'a String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    names
        .into_iter()
        .map(|name| (name.clone(), hash_input(files, root, name, env)))
        .collect()
}

/// Everything a build read, from cargo's dep-info and build-script outputs for the path
/// packages (the workspace's own code), plus `extra` files. Paths under `ignore` (cargo's home,
/// the toolchain, the build directory: dependencies and generated files, covered by other key
/// inputs) are left out.
pub(crate) fn collect_inputs(
    root: &Path,
    outcome: &BuildOutcome,
    package_dirs: &BTreeMap<String, PathBuf>,
    ignore: &[PathBuf],
    extra: &[PathBuf],
) -> BTreeSet<String> {
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    let local = |id: &str| !units::is_cacheable(id);
    for unit in outcome.compiled.iter().filter(|u| local(&u.package_id)) {
        for artifact in &unit.paths {
            let Some(text) = units::dep_info_candidates(artifact)
                .into_iter()
                .find_map(|c| std::fs::read_to_string(c).ok())
            else {
                continue;
            };
            for dep in units::parse_dep_info(&text) {
                let p = Path::new(&dep);
                files.insert(if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    root.join(p)
                });
            }
        }
    }
    let mut env = BTreeSet::new();
    for run in outcome
        .build_script_runs
        .iter()
        .filter(|u| local(&u.package_id))
    {
        let Some(output) = run.paths.first().and_then(|out_dir| out_dir.parent()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(output.join("output")) else {
            continue;
        };
        let declared = units::parse_build_output(&text);
        env.extend(declared.env.iter().cloned());
        let Some(pkg_dir) = package_dirs.get(&run.package_id) else {
            continue;
        };
        if declared.declares_files() {
            for f in &declared.files {
                let p = Path::new(f);
                let p = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    pkg_dir.join(p)
                };
                if p.is_dir() {
                    walk(&p, ignore, &mut files);
                } else {
                    files.insert(p);
                }
            }
        } else {
            // Without rerun-if-changed, cargo reruns the script when anything in its package
            // changes: so does this key.
            walk(pkg_dir, ignore, &mut files);
        }
    }
    files.extend(extra.iter().cloned());
    let mut out: BTreeSet<String> = files
        .iter()
        .filter(|f| !ignore.iter().any(|i| f.starts_with(i)))
        .map(|f| input_name(root, f))
        .collect();
    out.extend(env.into_iter().map(|v| format!("env:{v}")));
    out
}

pub(crate) fn walk(dir: &Path, ignore: &[PathBuf], out: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == ".git" || name == "target" || ignore.iter().any(|i| path.starts_with(i)) {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, ignore, out),
            Ok(t) if t.is_file() => {
                out.insert(path);
            }
            _ => {}
        }
    }
}

fn local_ref(key: &str) -> String {
    CacheName::App(key).local_ref()
}

fn find_tag(store: &Layout, tag: &str) -> Option<Descriptor> {
    store
        .read_index()
        .ok()?
        .manifests()
        .iter()
        .find(|d| ref_name(d) == Some(tag))
        .cloned()
}

/// The record for `static_key` in the local store, if any (unreadable records are ignored).
pub(crate) fn find_record(store: &Layout, static_key: &str) -> Option<AppRecord> {
    let desc = find_tag(store, &local_ref(static_key))?;
    read_record(store, &desc).ok()
}

/// Reads a record artifact.
pub(crate) fn read_record(store: &Layout, desc: &Descriptor) -> Result<AppRecord> {
    let manifest = store.read_manifest(desc.digest())?;
    let bytes = store.read_blob(manifest.config().digest())?;
    serde_json::from_slice(&bytes).map_err(|e| Error::CacheEntry {
        reference: ref_name(desc).unwrap_or_default().to_string(),
        reason: format!("not an app record: {e}"),
    })
}

/// The image stored for `app_key`, if the store has it with every blob intact. A damaged one
/// is an error (report it; the build goes on as a miss).
pub(crate) fn find_image(store: &Layout, app_key: &str) -> Result<Option<Descriptor>> {
    let Some(desc) = find_tag(store, &local_ref(app_key)) else {
        return Ok(None);
    };
    for blob in store.image_blobs(&desc)? {
        if !store.blob_is_intact(blob.digest()) {
            return Err(Error::CacheEntry {
                reference: local_ref(app_key),
                reason: format!("blob {} is missing or corrupt", blob.digest()),
            });
        }
    }
    Ok(Some(desc))
}

/// Stores `record` (tagged by its static key) and tags its image by its app key.
pub(crate) fn save_record(
    store: &Layout,
    record: &AppRecord,
    image: &Descriptor,
) -> Result<Descriptor> {
    let kind = crate::cacheartifact::Kind {
        artifact_type: RECORD_ARTIFACT_TYPE,
        config_type: RECORD_MEDIA_TYPE,
    };
    let desc = crate::cacheartifact::put(store, kind, record, Vec::new())?;
    let _lock = store.lock()?;
    store.set_tag(&local_ref(&record.static_key), &desc)?;
    store.set_tag(&local_ref(&record.app_key), image)?;
    Ok(desc)
}

/// Tags a record pulled from a registry (its blobs already in the store) locally.
pub(crate) fn adopt_record(store: &Layout, desc: &Descriptor) -> Result<AppRecord> {
    let record = read_record(store, desc)?;
    let _lock = store.lock()?;
    store.set_tag(&local_ref(&record.static_key), desc)?;
    Ok(record)
}

/// Tags an image pulled from a registry locally under its app key.
pub(crate) fn adopt_image(store: &Layout, app_key: &str, desc: &Descriptor) -> Result<()> {
    let _lock = store.lock()?;
    Ok(store.set_tag(&local_ref(app_key), desc)?)
}

/// Which inputs differ between a record and their current hashes (for `plan --explain`).
pub(crate) fn changed_inputs(
    record: &AppRecord,
    current: &BTreeMap<String, String>,
) -> Vec<String> {
    record
        .inputs
        .iter()
        .filter(|(name, hash)| current.get(*name) != Some(*hash))
        .map(|(name, _)| {
            if current.get(name).is_some_and(|h| h == "-") {
                format!("{name} (removed)")
            } else {
                name.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_key_changes_with_any_input() {
        let a: BTreeMap<String, String> = [("src/main.rs".to_string(), "1".to_string())].into();
        let b: BTreeMap<String, String> = [("src/main.rs".to_string(), "2".to_string())].into();
        assert_ne!(app_key("s", &a), app_key("s", &b));
        assert_ne!(app_key("s", &a), app_key("t", &a));
        assert_eq!(app_key("s", &a), app_key("s", &a.clone()));
    }

    #[test]
    fn inputs_are_named_relative_to_the_root() {
        assert_eq!(
            input_name(Path::new("/w"), Path::new("/w/src/a.rs")),
            "src/a.rs"
        );
        assert_eq!(
            input_name(Path::new("/w"), Path::new("/lib/libc.so.6")),
            "/lib/libc.so.6"
        );
    }

    #[test]
    fn hashing_names_what_changed() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.rs"), "fn a() {}").unwrap();
        std::fs::write(tmp.path().join("b.rs"), "fn b() {}").unwrap();
        let names: Vec<String> = vec!["a.rs".into(), "b.rs".into(), "env:X".into()];
        let env = |_: &str| Some("1".to_string());
        let files = FileHashes::open(tmp.path().join("memo.json"));
        let before = hash_inputs(&files, tmp.path(), &names, &env);
        let record = AppRecord {
            static_key: "s".into(),
            app_key: app_key("s", &before),
            binary: "p/b".into(),
            static_inputs: vec![],
            inputs: before.clone(),
            image: "sha256:x".into(),
            reference: "b:latest".into(),
            roles: vec![],
            network: None,
        };
        std::fs::write(tmp.path().join("b.rs"), "fn b() { }").unwrap();
        std::fs::remove_file(tmp.path().join("a.rs")).unwrap();
        let after = hash_inputs(&files, tmp.path(), &names, &env);
        assert_eq!(
            changed_inputs(&record, &after),
            vec!["a.rs (removed)", "b.rs"]
        );
    }
}
