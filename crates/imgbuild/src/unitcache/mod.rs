//! The unit cache: the workspace's own crates (path packages), cached per compiled unit and
//! keyed by content, so that a fresh checkout compiles only the members whose sources changed
//! and the members that depend on them.
//!
//! Cargo decides whether a path package's unit is fresh by comparing the modification times of
//! the sources its dep-info lists with those of its outputs, never by content; a fresh
//! checkout's sources are all newer than anything restored, so the dependency cache leaves path
//! packages out. Here each such unit gets a **key** of what it was compiled from: the
//! toolchain lines of the dependency key, the unit's name (cargo's file-name hash: package,
//! target, features, profile, the dependencies' hashes), the content of every file its dep-info
//! lists and its package's `Cargo.toml`, its build script's `rerun-if-changed` files and
//! `rerun-if-env-changed` values, the keys of the member units it depends on and the names of
//! the other units it depends on. A unit whose key matches the checkout's content is restored
//! with its files dated now, newer than the checkout, and cargo finds it fresh; a unit whose key
//! does not match is not restored, and cargo compiles it and, by modification time, every unit
//! that depends on it.
//!
//! A **record** per binary (an artifact tagged `units-<id>`, [`record_id`]) lists each unit of
//! the binary's last build with its inputs' hashes, its edges and the layer (one tar+zstd
//! snapshot per unit, file times zeroed so equal outputs give equal blobs) holding its files.
//! A build consults its binary's record, then those of the workspace's other binaries (they
//! share members), locally and then in the cache repository.
//!
//! Reads and writes the local store; the planning is pure ([`plan`]).

use std::collections::BTreeMap;

use imgbuild_oci::layout::{Layout, ref_name};
use imgbuild_oci::spec::{Descriptor, ImageManifest};
use serde::{Deserialize, Serialize};

use crate::names::CacheName;
use crate::{Error, Result};

pub(crate) mod collect;
pub(crate) mod plan;
pub(crate) mod restore;

/// The `artifactType` of unit-cache records.
pub(crate) const ARTIFACT_TYPE: &str = "application/vnd.imgbuild.unit-cache.v1";
/// The media type of a record's config blob.
pub(crate) const CONFIG_MEDIA_TYPE: &str = "application/vnd.imgbuild.unit-cache.config.v1+json";
/// The media types of a record.
const KIND: crate::cacheartifact::Kind = crate::cacheartifact::Kind {
    artifact_type: ARTIFACT_TYPE,
    config_type: CONFIG_MEDIA_TYPE,
};
/// Version of the unit key text; bump when its meaning changes.
pub(crate) const FORMAT: &str = "imgbuild-unit-key v1";

/// One unit of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UnitEntry {
    /// `name@version` of its package.
    pub(crate) package: String,
    /// The unit's key.
    pub(crate) key: String,
    /// Input files (relative to the workspace root when inside it) and `env:NAME` entries →
    /// sha256 hex of the content or value (`-` when absent).
    pub(crate) inputs: BTreeMap<String, String>,
    /// The member units it depends on → their keys.
    pub(crate) members: BTreeMap<String, String>,
    /// The other units it depends on (registry and git packages), by name.
    pub(crate) deps: Vec<String>,
    /// Its files, relative to the profile directory.
    pub(crate) files: Vec<String>,
    /// The index of the record's layer holding them.
    pub(crate) layer: usize,
}

/// A record's config blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UnitsRecord {
    /// `package/bin` of the build that wrote it.
    pub(crate) binary: String,
    /// The toolchain lines every key includes ([`toolchain_lines`]).
    pub(crate) toolchain: Vec<String>,
    /// Units by name (cargo's fingerprint directory name, `core-0a1b2c3d4e5f6789`).
    pub(crate) units: BTreeMap<String, UnitEntry>,
}

/// A record with the layers its manifest lists.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// The record.
    pub(crate) record: UnitsRecord,
    /// The manifest's layers, in order.
    pub(crate) layers: Vec<Descriptor>,
    /// Whether it came from the cache repository (its layers may not be in the store yet).
    pub(crate) remote: bool,
}

/// The lines of a dependency key that every unit key includes: the toolchain (rustc, the
/// machine's C compiler, linker and libc, or the build environment), target, profile and its
/// settings, the key environment, network access.
pub(crate) fn toolchain_lines(dependency_inputs: &[String]) -> Vec<String> {
    const PREFIXES: [&str; 8] = [
        "rustc ",
        "machine ",
        "build-env ",
        "target ",
        "profile ",
        "profile-setting ",
        "env ",
        "network ",
    ];
    dependency_inputs
        .iter()
        .filter(|l| PREFIXES.iter().any(|p| l.starts_with(p)))
        .cloned()
        .collect()
}

/// The id a binary's record is tagged by: its `package/bin` and toolchain lines (a record made
/// with another toolchain or profile is another record).
pub(crate) fn record_id(package: &str, bin: &str, toolchain: &[String]) -> String {
    let text = format!("{package}/{bin}\n{}", toolchain.join("\n"));
    imgbuild_oci::digest::sha256(text.as_bytes()).digest()[..32].to_string()
}

/// A unit's key (pure).
pub(crate) fn unit_key(
    toolchain: &[String],
    name: &str,
    inputs: &BTreeMap<String, String>,
    members: &BTreeMap<String, String>,
    deps: &[String],
) -> String {
    let mut text = format!("{FORMAT}\n");
    for l in toolchain {
        text.push_str(&format!("{l}\n"));
    }
    text.push_str(&format!("unit {name}\n"));
    for (input, hash) in inputs {
        text.push_str(&format!("input {input} {hash}\n"));
    }
    for (member, key) in members {
        text.push_str(&format!("member {member} {key}\n"));
    }
    for dep in deps {
        text.push_str(&format!("dep {dep}\n"));
    }
    imgbuild_oci::digest::sha256(text.as_bytes())
        .digest()
        .to_string()
}

fn local_ref(id: &str) -> String {
    CacheName::Units(id).local_ref()
}

/// Reads a record artifact (manifest in the store), checking that its units name its layers.
pub(crate) fn read(store: &Layout, manifest: &Descriptor) -> Result<Loaded> {
    let parsed: ImageManifest = store.read_manifest(manifest.digest())?;
    let bytes = store.read_blob(parsed.config().digest())?;
    parse(&bytes, parsed.layers().clone(), false).map_err(|reason| Error::CacheEntry {
        reference: ref_name(manifest).unwrap_or_default().to_string(),
        reason,
    })
}

/// A record from its config's bytes and its manifest's layers.
pub(crate) fn parse(
    config: &[u8],
    layers: Vec<Descriptor>,
    remote: bool,
) -> std::result::Result<Loaded, String> {
    let record: UnitsRecord = serde_json::from_slice(config)
        .map_err(|e| format!("its config is not a unit-cache record: {e}"))?;
    if record.units.values().any(|u| u.layer >= layers.len()) {
        return Err("its config and manifest disagree on the layers".into());
    }
    Ok(Loaded {
        record,
        layers,
        remote,
    })
}

/// The record tagged `id` in the store, if any; a damaged one is an error (report it, then
/// go on without it).
pub(crate) fn find(store: &Layout, id: &str) -> Result<Option<Loaded>> {
    let reference = local_ref(id);
    let Some(desc) = store
        .read_index()?
        .manifests()
        .iter()
        .find(|d| ref_name(d) == Some(reference.as_str()))
        .cloned()
    else {
        return Ok(None);
    };
    read(store, &desc).map(Some)
}

/// Stores `record` with `layers` (already in the store) and tags it `id`. Returns the
/// manifest's index descriptor.
pub(crate) fn save(
    store: &Layout,
    id: &str,
    record: &UnitsRecord,
    layers: Vec<Descriptor>,
) -> Result<Descriptor> {
    let desc = crate::cacheartifact::put(store, KIND, record, layers)?;
    let _lock = store.lock()?;
    store.set_tag(&local_ref(id), &desc)?;
    Ok(desc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_change_with_every_input() {
        let tc = vec!["rustc release: 1.95.0".to_string()];
        let inputs: BTreeMap<String, String> = [("src/lib.rs".into(), "1".into())].into();
        let members: BTreeMap<String, String> = [("core-1".into(), "k".into())].into();
        let deps = vec!["itoa-2".to_string()];
        let key = unit_key(&tc, "mid-3", &inputs, &members, &deps);
        assert_eq!(key, unit_key(&tc, "mid-3", &inputs, &members, &deps));
        let other_input: BTreeMap<String, String> = [("src/lib.rs".into(), "2".into())].into();
        let other_member: BTreeMap<String, String> = [("core-1".into(), "j".into())].into();
        for changed in [
            unit_key(&[], "mid-3", &inputs, &members, &deps),
            unit_key(&tc, "mid-4", &inputs, &members, &deps),
            unit_key(&tc, "mid-3", &other_input, &members, &deps),
            unit_key(&tc, "mid-3", &inputs, &other_member, &deps),
            unit_key(&tc, "mid-3", &inputs, &members, &[]),
        ] {
            assert_ne!(changed, key);
        }
    }

    #[test]
    fn toolchain_lines_leave_the_tree_out() {
        let inputs: Vec<String> = [
            "imgbuild-dependency-key v3",
            "target x86_64-unknown-linux-gnu",
            "profile release",
            "profile-setting opt-level = 3",
            "rustc release: 1.95.0",
            "machine libc glibc 2.36",
            "env RUSTFLAGS=",
            "package itoa 1.0.10 source=registry checksum=x features=[]",
            "member app features=[]",
        ]
        .map(String::from)
        .into();
        let lines = toolchain_lines(&inputs);
        assert_eq!(lines.len(), 6);
        assert!(
            lines
                .iter()
                .all(|l| !l.starts_with("package") && !l.starts_with("member"))
        );
        assert_ne!(
            record_id("p", "a", &lines),
            record_id("p", "b", &lines),
            "one record per binary"
        );
    }
}
