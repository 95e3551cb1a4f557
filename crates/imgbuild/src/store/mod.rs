//! Looking after the local store: listing dependency-cache entries (`imgbuild cache ls`) and
//! pruning them by age and total size, then deleting the blobs nothing references
//! (`imgbuild cache prune`). Images tagged in the store are kept; only their orphaned blobs
//! (left behind when a tag moved to a newer image) are collected.
//!
//! Reads and writes the local store and the usage markers. The choice of what to remove is
//! pure (`select`).

pub use crate::remoteprune::{
    EntryKind, RemoteEntry, RemotePolicy, RemotePruneReport, prune_remote,
};
pub use crate::repair::{CheckReport, Problem, check};
pub use prune::{PrunePolicy, PruneReport, RemoveFailure, prune};

mod prune;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imgbuild_oci::layout::{Layout, ref_name};
use imgbuild_oci::spec::{Descriptor, MediaType};
use serde::Serialize;

use crate::cachedir::CacheDir;
use crate::depcache;
use crate::names::CacheName;

/// The key `cache ls` shows for a cache tag: a dependency key (hex), or `app-<key>` for the
/// app cache's records and images. `None` for images tagged by users.
fn entry_key(desc: &Descriptor) -> Option<String> {
    CacheName::parse_local(ref_name(desc)?).map(CacheName::usage_key)
}
use crate::Result;

/// One dependency-cache entry, as `cache ls` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntrySummary {
    /// The dependency key.
    pub key: String,
    /// `package/bin`.
    pub binary: String,
    /// Number of layers.
    pub layers: usize,
    /// Number of files.
    pub files: usize,
    /// Compressed size of the entry's blobs (layers shared with other entries counted here too).
    pub size: u64,
    /// Last use (build that restored or stored it), seconds since the Unix epoch.
    pub last_used: u64,
    /// Digests of the entry's blobs (manifest, config, layers).
    #[serde(skip)]
    pub blobs: Vec<String>,
}

/// What `cache ls` reports.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Listing {
    /// The entries, most recently used first.
    pub entries: Vec<EntrySummary>,
    /// Total size of every blob in the store (entries and images), each counted once.
    pub store_size: u64,
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn last_used(cache: &CacheDir, key: &str, store: &Layout, manifest: &Descriptor) -> u64 {
    let marker = cache.usage_marker(key);
    std::fs::metadata(&marker)
        .or_else(|_| std::fs::metadata(store.blob_path(manifest.digest())))
        .and_then(|m| m.modified())
        .map_or(0, seconds)
}

/// The blob digests (as strings) a manifest descriptor references, itself included. Blobs that
/// cannot be read are skipped: the caller keeps what it cannot account for.
fn referenced(store: &Layout, desc: &Descriptor) -> Vec<String> {
    let mut out = vec![desc.digest().to_string()];
    if *desc.media_type() == MediaType::ImageIndex
        && let Ok(blobs) = store.image_blobs(desc)
    {
        out.extend(blobs.iter().map(|b| b.digest().to_string()));
    }
    if *desc.media_type() == MediaType::ImageManifest
        && let Ok(manifest) = store.read_manifest(desc.digest())
    {
        out.push(manifest.config().digest().to_string());
        out.extend(manifest.layers().iter().map(|l| l.digest().to_string()));
    }
    out
}

/// The store's index; a damaged one is an error that says how to rebuild it (pruning by a
/// guess of what the index said could delete what it still names).
fn read_index(store: &Layout) -> Result<imgbuild_oci::spec::ImageIndex> {
    store.read_index().map_err(|e| match e {
        imgbuild_oci::Error::InvalidJson { path, source, .. } => crate::Error::DamagedIndex {
            path,
            reason: source.to_string(),
        },
        other => other.into(),
    })
}

/// Size on disk of every blob in the store, by digest string.
fn blob_sizes(store: &Layout) -> Result<BTreeMap<String, u64>> {
    let dir = store.blob_dir();
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(&dir).map_err(crate::io_err("reading directory", &dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if let Ok(meta) = entry.metadata() {
            out.insert(format!("sha256:{name}"), meta.len());
        }
    }
    Ok(out)
}

/// Lists the cache entries of the store under `cache`.
///
/// ```
/// use imgbuild::CacheDir;
/// # let dir = tempfile::tempdir()?;
///
/// let listing = imgbuild::store::list(&CacheDir::new(dir.path()))?;
/// for entry in &listing.entries {
///     println!("{} {} {} bytes", entry.key, entry.binary, entry.size);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn list(cache: &CacheDir) -> Result<Listing> {
    let root = cache.store();
    if !root.join("oci-layout").exists() {
        return Ok(Listing {
            entries: Vec::new(),
            store_size: 0,
        });
    }
    let store = Layout::open(root)?;
    let sizes = blob_sizes(&store)?;
    let mut entries = Vec::new();
    let index = read_index(&store)?;
    for desc in index.manifests() {
        let Some(key) = entry_key(desc) else {
            continue;
        };
        let desc = desc.clone();
        let blobs = referenced(&store, &desc);
        let (binary, layers, files) = if key.starts_with("units-") {
            match crate::unitcache::read(&store, &desc) {
                Ok(l) => (
                    format!("{} (workspace units)", l.record.binary),
                    l.layers.len(),
                    l.record.units.values().map(|u| u.files.len()).sum(),
                ),
                Err(_) => ("(unreadable)".to_string(), 0, 0),
            }
        } else if key.starts_with("app-") {
            match crate::appcache::read_record(&store, &desc) {
                Ok(r) if desc.artifact_type().is_some() => {
                    (format!("{} (app record)", r.binary), 0, r.inputs.len())
                }
                _ => ("(app image)".to_string(), blobs.len().saturating_sub(2), 0),
            }
        } else {
            match depcache::find(&store, &key).ok().flatten() {
                Some(e) => (
                    e.config.binary.clone(),
                    e.layers.len(),
                    e.config.files.len(),
                ),
                None => ("(unreadable)".to_string(), 0, 0),
            }
        };
        entries.push(EntrySummary {
            last_used: last_used(cache, &key, &store, &desc),
            size: blobs.iter().filter_map(|b| sizes.get(b)).sum(),
            key,
            binary,
            layers,
            files,
            blobs,
        });
    }
    entries.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.key.cmp(&b.key)));
    Ok(Listing {
        entries,
        store_size: sizes.values().sum(),
    })
}

/// Splits `30d` into 30 and `d`: the leading whole number, and what follows it.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit))
}

/// Parses a duration such as `30d`, `12h`, `90m`, `45s` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (n, unit) = number_and_unit(text)?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        "w" => n.checked_mul(7 * 86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// Parses a size such as `10G`, `500M`, `64K`, `1024` (binary units; a trailing `B` or `iB`
/// is accepted).
pub fn parse_size(text: &str) -> Option<u64> {
    let (n, unit) = number_and_unit(text)?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches("IB").trim_end_matches('B');
    let factor: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(
            parse_duration("30d"),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_duration("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("12"), Some(Duration::from_secs(12)));
        assert_eq!(parse_duration("3 days"), None);
        assert_eq!(parse_duration("d"), None);
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("500MiB"), Some(500 << 20));
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("1.5G"), None);
    }
}
