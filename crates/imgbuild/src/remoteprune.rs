//! Retention for a cache repository shared by a fleet (`imgbuild cache prune --cache-repo`):
//! its dependency entries (`deps-<key>`), app entries (a record `app-<static key>` with the
//! image `app-<app key>` it names) and unit records (`units-<id>`) are dated by their
//! manifest's `org.opencontainers.image.created` annotation; the stale ones are deleted
//! through the distribution API, manifest by manifest. A manifest another kept tag points at
//! is never deleted, and blobs are left to the registry's garbage collection, which keeps every
//! blob a remaining manifest uses. An image's referrers (the tag schema's `sha256-<hex>` index
//! and the manifests it lists) go with the image, and every deleted manifest's signature
//! (`sha256-<hex>.sig`).
//!
//! The choice is pure ([`select`]); [`prune_remote`] talks to the registry.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use imgbuild_oci::spec::{ImageIndex, ImageManifest};
use imgbuild_registry::manage;
use imgbuild_registry::pull::fetch_manifest;
use imgbuild_registry::{Client, Reference};
use serde::Serialize;

use crate::Result;
use crate::publish::RegistryOptions;

/// What kind of cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum EntryKind {
    /// A dependency-cache entry.
    Dependencies,
    /// An app record and its image.
    App,
    /// An app image no record names any more.
    OrphanImage,
    /// A binary's unit-cache record.
    Units,
}

/// One entry of a cache repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RemoteEntry {
    /// What it is.
    pub kind: EntryKind,
    /// Its tags.
    pub tags: Vec<String>,
    /// `package/bin`, when known.
    pub binary: Option<String>,
    /// When it was made (Unix seconds), when its manifest says.
    pub created: Option<u64>,
    /// Its manifests' digests (an app entry: the record's and the image's).
    #[serde(skip)]
    pub manifests: Vec<String>,
}

/// What to prune from a cache repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemotePolicy {
    /// Remove entries made longer ago than this (an entry that does not say when it was made
    /// — made by an older imgbuild, or an image no record names — counts as older).
    pub older_than: Option<Duration>,
    /// Keep the newest N dependency entries and app entries of each binary, whatever their age.
    pub keep_latest: Option<usize>,
}

/// Chooses the entries to remove (pure): with `older_than`, those older; with `keep_latest`,
/// all but each binary's newest N of each kind; with both, those older and not among the
/// newest N.
pub(crate) fn select(entries: &[RemoteEntry], policy: RemotePolicy, now: u64) -> BTreeSet<usize> {
    let old = |e: &RemoteEntry| match (policy.older_than, e.created) {
        (None, _) => true,
        (Some(_), None) => true,
        (Some(age), Some(created)) => now.saturating_sub(created) > age.as_secs(),
    };
    let mut protected = BTreeSet::new();
    if let Some(n) = policy.keep_latest {
        let mut groups: BTreeMap<(EntryKind, Option<&String>), Vec<usize>> = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            if e.kind != EntryKind::OrphanImage {
                groups
                    .entry((e.kind, e.binary.as_ref()))
                    .or_default()
                    .push(i);
            }
        }
        for members in groups.values_mut() {
            members.sort_by_key(|&i| std::cmp::Reverse(entries[i].created));
            protected.extend(members.iter().take(n).copied());
        }
    }
    if policy.older_than.is_none() && policy.keep_latest.is_none() {
        return BTreeSet::new();
    }
    entries
        .iter()
        .enumerate()
        .filter(|(i, e)| !protected.contains(i) && old(e))
        .map(|(i, _)| i)
        .collect()
}

/// What `cache prune --cache-repo` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct RemotePruneReport {
    /// The repository.
    pub repository: String,
    /// Entries removed.
    pub removed: Vec<RemoteEntry>,
    /// Entries kept.
    pub kept: usize,
    /// Manifests deleted (referrers included).
    pub manifests_deleted: usize,
    /// Whether nothing was deleted (`--dry-run`).
    pub dry_run: bool,
}

/// A manifest of the repository: its digest and parsed form.
struct Fetched {
    digest: String,
    manifest: Option<ImageManifest>,
}

/// A manifest as the registry returned it.
fn as_fetched((_, bytes, digest): (String, Vec<u8>, imgbuild_oci::spec::Digest)) -> Fetched {
    Fetched {
        digest: digest.to_string(),
        manifest: serde_json::from_slice(&bytes).ok(),
    }
}

fn created_of(manifest: &ImageManifest) -> Option<u64> {
    manifest
        .annotations()
        .as_ref()?
        .get(crate::names::CREATED)
        .and_then(|t| crate::time::parse_rfc3339(t))
}

/// A small JSON config blob of the repository.
fn config<T: serde::de::DeserializeOwned>(
    client: &Client,
    repository: &str,
    manifest: &ImageManifest,
) -> Option<T> {
    let bytes = imgbuild_registry::pull::fetch_blob(client, repository, manifest.config()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Reads every cache entry of `repository`, and the digest every tag points at.
fn inventory(
    client: &Client,
    repository: &str,
) -> Result<(Vec<RemoteEntry>, BTreeMap<String, String>)> {
    let mut digests = BTreeMap::new();
    let mut fetched = Vec::new();
    let tags = manage::list_tags(client, repository)?;
    // Several manifests at a time: a fleet's repository has thousands of tags.
    let manifests = imgbuild_registry::parallel::run(
        &tags,
        &imgbuild_registry::progress::NoProgress,
        &|tag, _| Ok(fetch_manifest(client, repository, tag)?.map(as_fetched)),
    )?;
    for (tag, f) in tags.into_iter().zip(manifests) {
        if let Some(f) = f {
            digests.insert(tag.clone(), f.digest.clone());
            fetched.push((tag, f));
        }
    }
    fetched.sort_by(|a, b| a.0.cmp(&b.0));
    // Their configs several at a time too.
    let mut entries: Vec<RemoteEntry> = imgbuild_registry::parallel::run(
        &fetched,
        &imgbuild_registry::progress::NoProgress,
        &|(tag, f), _| Ok(classify(client, (repository, &digests), tag, f)),
    )?
    .into_iter()
    .flatten()
    .collect();
    // An app image no record of the repository points at.
    let with_records: BTreeSet<&String> = (entries.iter())
        .filter(|e| e.kind == EntryKind::App)
        .flat_map(|e| e.tags.get(1))
        .collect();
    let orphans = fetched.iter().filter(|(tag, f)| {
        let is_image = f
            .manifest
            .as_ref()
            .is_some_and(|m| m.artifact_type().is_none());
        tag.starts_with("app-") && is_image && !with_records.contains(tag)
    });
    let orphans: Vec<RemoteEntry> = orphans
        .map(|(tag, f)| RemoteEntry {
            kind: EntryKind::OrphanImage,
            tags: vec![tag.clone()],
            binary: None,
            created: None,
            manifests: vec![f.digest.clone()],
        })
        .collect();
    entries.extend(orphans);
    Ok((entries, digests))
}

/// The cache entry tagged `tag`, if it is one: a dependency entry, a unit record, or an app
/// record (with its image, when `digests` says the image's tag points at the one it names).
fn classify(
    client: &Client,
    (repository, digests): (&str, &BTreeMap<String, String>),
    tag: &str,
    f: &Fetched,
) -> Option<RemoteEntry> {
    let manifest = f.manifest.as_ref()?;
    let mut entry = RemoteEntry {
        kind: EntryKind::Dependencies,
        tags: vec![tag.to_string()],
        binary: None,
        created: created_of(manifest),
        manifests: vec![f.digest.clone()],
    };
    let is_key = |k: &str| k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit());
    let artifact = manifest.artifact_type().as_ref().map(ToString::to_string);
    if tag.strip_prefix("deps-").is_some_and(is_key) {
        let cfg: Option<crate::depcache::EntryConfig> = config(client, repository, manifest);
        entry.binary = cfg.map(|c| c.binary);
    } else if tag.starts_with("units-") {
        let cfg: Option<crate::unitcache::UnitsRecord> = config(client, repository, manifest);
        entry.kind = EntryKind::Units;
        entry.binary = cfg.map(|c| c.binary);
    } else if tag.starts_with("app-")
        && artifact.as_deref() == Some(crate::appcache::RECORD_ARTIFACT_TYPE)
    {
        entry.kind = EntryKind::App;
        let record: Option<crate::appcache::AppRecord> = config(client, repository, manifest);
        if let Some(r) = record {
            let image_tag = crate::names::CacheName::App(&r.app_key).tag();
            if digests.get(&image_tag) == Some(&r.image) {
                entry.tags.push(image_tag);
                entry.manifests.push(r.image.clone());
            }
            entry.binary = Some(r.binary);
        }
    } else {
        return None;
    }
    Some(entry)
}

/// Prunes the cache repository `repository` (or, with `dry_run`, says what would go).
pub fn prune_remote(
    repository: &Reference,
    options: &RegistryOptions,
    policy: RemotePolicy,
    dry_run: bool,
) -> Result<RemotePruneReport> {
    let client = Client::connect(repository, options.client_options(repository))?;
    let repo = &repository.repository;
    let (entries, digests) = inventory(&client, repo)?;
    let removed = select(&entries, policy, crate::time::now());
    let removed_tags: BTreeSet<&String> = removed
        .iter()
        .flat_map(|&i| entries[i].tags.iter())
        .collect();
    // A manifest a kept tag points at stays. The tags that attach something to a manifest
    // (`sha256-<hex>`: referrers; `sha256-<hex>.sig`: signatures) do not keep it: they go with
    // what they are attached to.
    let kept_digests: BTreeSet<&String> = digests
        .iter()
        .filter(|(tag, _)| !removed_tags.contains(tag) && !tag.starts_with("sha256-"))
        .map(|(_, d)| d)
        .collect();
    let mut doomed: Vec<String> = Vec::new();
    for &i in &removed {
        for d in &entries[i].manifests {
            if !kept_digests.contains(d) && !doomed.contains(d) {
                doomed.push(d.clone());
            }
        }
    }
    // Referrers of deleted images (tag schema), with their index.
    let mut referrers = Vec::new();
    for d in &doomed {
        let Ok(digest) = d.parse::<imgbuild_oci::spec::Digest>() else {
            continue;
        };
        let tag = imgbuild_oci::referrers::fallback_tag(&digest);
        if let Some(index_digest) = digests.get(&tag) {
            if let Some((_, bytes, _)) = fetch_manifest(&client, repo, &tag)?
                && let Ok(index) = serde_json::from_slice::<ImageIndex>(&bytes)
            {
                referrers.extend(index.manifests().iter().map(|m| m.digest().to_string()));
            }
            referrers.push(index_digest.clone());
        }
    }
    doomed.extend(referrers.into_iter().filter(|d| !kept_digests.contains(d)));
    // Their signatures (`sha256-<hex>.sig`, cosign's layout) go with them.
    let signatures: Vec<String> = doomed
        .iter()
        .filter_map(|d| digests.get(&crate::signing::cosign::signature_tag(d)))
        .filter(|d| !kept_digests.contains(*d))
        .cloned()
        .collect();
    doomed.extend(signatures);
    let mut report = RemotePruneReport {
        repository: repository.to_string(),
        kept: entries.len() - removed.len(),
        dry_run,
        ..RemotePruneReport::default()
    };
    if !dry_run {
        for d in &doomed {
            if manage::delete_manifest(&client, repo, d)? {
                report.manifests_deleted += 1;
            }
        }
    }
    report.removed = removed.iter().map(|&i| entries[i].clone()).collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: EntryKind, binary: &str, created: Option<u64>) -> RemoteEntry {
        RemoteEntry {
            kind,
            tags: vec![format!("t{created:?}")],
            binary: Some(binary.into()),
            created,
            manifests: vec![],
        }
    }

    const DAY: u64 = 86_400;

    #[test]
    fn age_and_count_choose_together() {
        let now = 100 * DAY;
        let entries = vec![
            entry(EntryKind::Dependencies, "a/a", Some(now - 40 * DAY)),
            entry(EntryKind::Dependencies, "a/a", Some(now - 20 * DAY)),
            entry(EntryKind::Dependencies, "a/a", Some(now - DAY)),
            entry(EntryKind::Dependencies, "b/b", Some(now - 50 * DAY)),
            entry(EntryKind::App, "a/a", None),
        ];
        let month = Duration::from_secs(30 * DAY);
        let by_age = RemotePolicy {
            older_than: Some(month),
            keep_latest: None,
        };
        assert_eq!(select(&entries, by_age, now), [0, 3, 4].into());
        let by_count = RemotePolicy {
            older_than: None,
            keep_latest: Some(1),
        };
        assert_eq!(select(&entries, by_count, now), [0, 1].into());
        let both = RemotePolicy {
            older_than: Some(month),
            keep_latest: Some(1),
        };
        assert_eq!(
            select(&entries, both, now),
            [0].into(),
            "b's only entry and a's only app entry are each binary's newest"
        );
        assert!(select(&entries, RemotePolicy::default(), now).is_empty());
    }

    #[test]
    fn orphan_images_are_never_the_newest_of_anything() {
        let entries = vec![RemoteEntry {
            kind: EntryKind::OrphanImage,
            tags: vec!["app-x".into()],
            binary: None,
            created: None,
            manifests: vec![],
        }];
        let policy = RemotePolicy {
            older_than: None,
            keep_latest: Some(5),
        };
        assert_eq!(select(&entries, policy, 0), [0].into());
    }
}
