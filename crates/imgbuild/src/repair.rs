//! The store repairs itself: opening it removes what killed processes left (scratch files,
//! private build directories), and a damaged `index.json` is set aside (kept for inspection)
//! and rebuilt from what the blobs prove — dependency entries and app records whose manifests
//! and configs verify, and the images those records name — before anything is compiled.
//!
//! Reads and writes the store and the cache directory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use imgbuild_oci::layout::{Layout, index_of, with_ref_name};
use imgbuild_oci::spec::{Descriptor, Digest, ImageManifest, MediaType};

use crate::Result;
use crate::appcache::{AppRecord, RECORD_ARTIFACT_TYPE};
use crate::cachedir::CacheDir;
use crate::depcache::{ARTIFACT_TYPE, BINARY_ANNOTATION, EntryConfig};
use crate::event::{Event, Reporter};
use crate::names::CacheName;

/// Manifests and configs are small; bigger blobs are layers and are not parsed.
const SMALL: u64 = 4 << 20;

/// Opens the local store for a command that will use it: leftovers of killed processes are
/// removed, and an `index.json` that cannot be read is rebuilt, with a warning.
pub(crate) fn open_store(cache: &CacheDir, reporter: &dyn Reporter) -> Result<Layout> {
    let store = Layout::create(cache.store())?;
    imgbuild_oci::scratch::collect_leftovers(store.root())?;
    crate::hermetic::collect_leftovers(cache)?;
    if let Err(imgbuild_oci::Error::InvalidJson { source, .. }) = store.read_index() {
        let _lock = store.lock()?;
        // Another process may have rebuilt it while this one waited for the lock.
        if store.read_index().is_err() {
            let summary = rebuild_index(&store)?;
            reporter.report(&Event::Warning {
                message: format!(
                    "the store's index.json was damaged ({source}); it is kept as {} and the index was rebuilt from the blobs: recovered {} dependency entries, {} app records, {} unit-cache records and {} image tags; {} other manifests were left untagged (a build writes them again)",
                    summary.set_aside.display(),
                    summary.entries,
                    summary.records,
                    summary.unit_records,
                    summary.images,
                    summary.untagged
                ),
            });
        }
    }
    Ok(store)
}

/// What [`rebuild_index`] recovered.
#[derive(Debug, Default)]
pub(crate) struct Rebuilt {
    pub(crate) set_aside: PathBuf,
    pub(crate) entries: usize,
    pub(crate) records: usize,
    pub(crate) images: usize,
    pub(crate) unit_records: usize,
    pub(crate) untagged: usize,
}

/// Moves `index.json` aside and writes a new one from the blobs. The caller holds the lock.
pub(crate) fn rebuild_index(store: &Layout) -> Result<Rebuilt> {
    let index = store.root().join("index.json");
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let set_aside = store.root().join(format!("index.json.damaged-{seconds}"));
    if index.exists() {
        std::fs::rename(&index, &set_aside).map_err(crate::io_err("renaming", &index))?;
    }
    let mut gathered = Gathered::default();
    for (digest, size) in small_blobs(store)? {
        let Some(manifest) = manifest_of(store, &digest) else {
            continue;
        };
        if complete(store, &manifest) {
            let desc = Descriptor::new(MediaType::ImageManifest, size, digest);
            gathered.add(store, &manifest, desc);
        }
    }
    let (manifests, summary) = gathered.finish();
    store.write_index(&index_of(manifests)?)?;
    Ok(Rebuilt {
        set_aside,
        ..summary
    })
}

/// What the store's complete manifests say, gathered one manifest at a time.
#[derive(Default)]
struct Gathered {
    /// Local tag → the manifest it names.
    tags: BTreeMap<String, Descriptor>,
    /// Referrers (SBOMs, provenance, debug info), with their subject.
    attached: Vec<(Option<Descriptor>, Descriptor)>,
    /// A binary's unit-cache record: the newest manifest of its id.
    unit_records: BTreeMap<String, (Option<std::time::SystemTime>, Descriptor)>,
    summary: Rebuilt,
}

impl Gathered {
    /// Takes one complete manifest (`desc`).
    fn add(&mut self, store: &Layout, manifest: &ImageManifest, desc: Descriptor) {
        let tagged_as = |t: &str| {
            let mut tagged = desc.clone();
            tagged.set_artifact_type(Some(MediaType::Other(t.into())));
            tagged
        };
        match manifest.artifact_type().as_ref().map(ToString::to_string) {
            Some(t) if t == ARTIFACT_TYPE => {
                let Some(config) = config_of::<EntryConfig>(store, manifest) else {
                    return;
                };
                let mut tagged = tagged_as(ARTIFACT_TYPE);
                tagged.set_annotations(Some(
                    [(BINARY_ANNOTATION.to_string(), config.binary.clone())].into(),
                ));
                self.tags
                    .insert(CacheName::Deps(&config.key).local_ref(), tagged);
                self.summary.entries += 1;
            }
            Some(t) if t == RECORD_ARTIFACT_TYPE => {
                let Some(record) = config_of::<AppRecord>(store, manifest) else {
                    return;
                };
                let Some(image) = image_desc(store, &record.image) else {
                    return;
                };
                let tagged = tagged_as(RECORD_ARTIFACT_TYPE);
                self.tags
                    .insert(CacheName::App(&record.static_key).local_ref(), tagged);
                self.tags
                    .insert(CacheName::App(&record.app_key).local_ref(), image.clone());
                self.tags.insert(record.reference.clone(), image);
                self.summary.records += 1;
                self.summary.images += 1;
            }
            Some(t) if t == crate::unitcache::ARTIFACT_TYPE => {
                let Some((id, written)) = unit_record_id(store, manifest, &desc) else {
                    return;
                };
                // Older records of the binary are left behind as its record moves on: the
                // newest blob is its record.
                match self.unit_records.get(&id) {
                    Some((when, _)) if *when >= written => {}
                    _ => {
                        let tagged = tagged_as(crate::unitcache::ARTIFACT_TYPE);
                        self.unit_records.insert(id, (written, tagged));
                    }
                }
            }
            _ if manifest.subject().is_some() => {
                let mut listed = desc.clone();
                listed.set_artifact_type(manifest.artifact_type().clone());
                self.attached.push((manifest.subject().clone(), listed));
            }
            _ => self.summary.untagged += 1,
        }
    }

    /// The new index's manifests (every tag, then the referrers whose image came back) and
    /// the counts.
    fn finish(mut self) -> (Vec<Descriptor>, Rebuilt) {
        for (id, (_, desc)) in std::mem::take(&mut self.unit_records) {
            self.tags.insert(CacheName::Units(&id).local_ref(), desc);
            self.summary.unit_records += 1;
        }
        let mut manifests: Vec<Descriptor> = self
            .tags
            .iter()
            .map(|(tag, desc)| with_ref_name(desc, tag))
            .collect();
        for (subject, desc) in self.attached {
            if subject.is_some_and(|s| self.tags.values().any(|t| t.digest() == s.digest())) {
                manifests.push(desc);
            }
        }
        let mut summary = self.summary;
        summary.untagged = summary.untagged.saturating_sub(summary.images);
        (manifests, summary)
    }
}

/// The tag id of a unit-cache record and when its manifest was written.
fn unit_record_id(
    store: &Layout,
    manifest: &ImageManifest,
    desc: &Descriptor,
) -> Option<(String, Option<std::time::SystemTime>)> {
    let record = config_of::<crate::unitcache::UnitsRecord>(store, manifest)?;
    let (package, bin) = record.binary.split_once('/')?;
    let id = crate::unitcache::record_id(package, bin, &record.toolchain);
    let written = std::fs::metadata(store.blob_path(desc.digest()))
        .and_then(|m| m.modified())
        .ok();
    Some((id, written))
}

/// Every blob of at most [`SMALL`] bytes, by digest, sorted.
fn small_blobs(store: &Layout) -> Result<Vec<(Digest, u64)>> {
    let dir = store.blob_dir();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)
        .map_err(crate::io_err("reading directory", &dir))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let size = entry.metadata().map_or(u64::MAX, |m| m.len());
        if size <= SMALL
            && let Ok(digest) = format!("sha256:{name}").parse::<Digest>()
        {
            out.push((digest, size));
        }
    }
    out.sort_by_key(|a| a.0.to_string());
    Ok(out)
}

/// The blob as an image manifest, when it verifies and is one.
fn manifest_of(store: &Layout, digest: &Digest) -> Option<ImageManifest> {
    let bytes = store.read_blob(digest).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if value["mediaType"] != MediaType::ImageManifest.to_string() {
        return None;
    }
    serde_json::from_value(value).ok()
}

/// Whether the manifest's config verifies and every layer is present at its size (layers are
/// verified when they are used).
fn complete(store: &Layout, manifest: &ImageManifest) -> bool {
    store.blob_is_intact(manifest.config().digest())
        && manifest.layers().iter().all(|l| {
            std::fs::metadata(store.blob_path(l.digest())).is_ok_and(|m| m.len() == l.size())
        })
}

fn config_of<T: serde::de::DeserializeOwned>(
    store: &Layout,
    manifest: &ImageManifest,
) -> Option<T> {
    serde_json::from_slice(&store.read_blob(manifest.config().digest()).ok()?).ok()
}

/// The descriptor of the image manifest `digest`, when it is complete in the store.
fn image_desc(store: &Layout, digest: &str) -> Option<Descriptor> {
    let digest: Digest = digest.parse().ok()?;
    let manifest = manifest_of(store, &digest)?;
    if !complete(store, &manifest) {
        return None;
    }
    let size = std::fs::metadata(store.blob_path(&digest)).ok()?.len();
    Some(Descriptor::new(MediaType::ImageManifest, size, digest))
}

/// One thing `cache check` found wrong.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// What is wrong, naming the file, blob or tag.
    pub what: String,
    /// Whether `--repair` fixed it (removed what could not be trusted).
    pub repaired: bool,
}

/// What `cache check` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[non_exhaustive]
pub struct CheckReport {
    /// Blobs verified.
    pub blobs: usize,
    /// Tags (images, cache entries, app records) checked.
    pub tags: usize,
    /// What is wrong.
    pub problems: Vec<Problem>,
    /// Temporary files of killed processes (removed with `--repair`).
    pub leftovers: Vec<PathBuf>,
}

impl CheckReport {
    /// Whether everything found wrong was repaired (or nothing was).
    pub fn is_sound(&self) -> bool {
        self.problems.iter().all(|p| p.repaired) && self.leftovers.is_empty()
    }
}

/// Verifies the local store: its structure, every blob against its digest, every tag's
/// manifest, config and layers, the records app-cache and dependency entries hold, and the
/// remote-repository records. With `repair`, removes what cannot be trusted (damaged blobs,
/// tags that point at them, unreadable records), rebuilds a damaged index from the blobs, and
/// removes the leftovers of killed processes; a later build writes good copies again.
pub fn check(cache: &CacheDir, repair: bool) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let root = cache.store();
    if !root.exists() {
        return Ok(report);
    }
    let store = Layout::open(&root)?;
    let _gc = store.gc_lock()?;
    let mut problem =
        |what: String, repaired: bool| report.problems.push(Problem { what, repaired });
    let marker = root.join("oci-layout");
    let marker_ok = std::fs::read(&marker)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["imageLayoutVersion"].is_string());
    if !marker_ok {
        if repair {
            imgbuild_oci::layout::write_atomic(
                &root,
                "oci-layout",
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )?;
        }
        problem(
            format!("{} is not a valid OCI layout marker", marker.display()),
            repair,
        );
    }
    // Every blob.
    let dir = store.blob_dir();
    let mut bad_blobs = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir)
        .map_err(crate::io_err("reading directory", &dir))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else {
            if repair {
                remove_path(&path)?;
            }
            problem(
                format!("{} is not named by a digest", path.display()),
                repair,
            );
            continue;
        };
        report.blobs += 1;
        if !store.blob_is_intact(&digest) {
            if repair {
                remove_path(&path)?;
            }
            problem(
                format!("blob {digest} is damaged: its bytes do not hash to its name"),
                repair,
            );
            bad_blobs.insert(digest.to_string());
        }
    }
    check_tags(&store, repair, &bad_blobs, &mut report)?;
    check_registry_records(cache, repair, &mut report)?;
    report.leftovers = imgbuild_oci::scratch::leftovers(store.root())?;
    report.leftovers.extend(crate::hermetic::leftovers(cache)?);
    if repair {
        imgbuild_oci::scratch::collect_leftovers(store.root())?;
        crate::hermetic::collect_leftovers(cache)?;
        report.leftovers.clear();
    }
    Ok(report)
}

fn remove_path(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(crate::io_err("removing", path)(e))
        }
        _ => Ok(()),
    }
}

/// The tags of `index.json`: each manifest present and whole, and the records entries and
/// app records keep readable. A damaged index is rebuilt (with `repair`).
fn check_tags(
    store: &Layout,
    repair: bool,
    bad: &std::collections::BTreeSet<String>,
    report: &mut CheckReport,
) -> Result<()> {
    let _lock = store.lock()?;
    let index = match store.read_index() {
        Ok(index) => index,
        Err(e) => {
            report.problems.push(Problem {
                what: format!("the store's index.json cannot be read: {e}"),
                repaired: repair,
            });
            if repair {
                rebuild_index(store)?;
            }
            return Ok(());
        }
    };
    let mut kept = Vec::new();
    for desc in index.manifests() {
        report.tags += 1;
        let tag = imgbuild_oci::layout::ref_name(desc)
            .unwrap_or("(untagged)")
            .to_string();
        match why_unusable(store, desc, bad) {
            None => kept.push(desc.clone()),
            Some(why) => report.problems.push(Problem {
                what: format!("tag {tag} ({}): {why}", desc.digest()),
                repaired: repair,
            }),
        }
    }
    if repair && kept.len() != index.manifests().len() {
        let mut index = index.clone();
        index.set_manifests(kept);
        store.write_index(&index)?;
    }
    Ok(())
}

/// Why the manifest `desc` names cannot be used, if it cannot.
fn why_unusable(
    store: &Layout,
    desc: &Descriptor,
    bad: &std::collections::BTreeSet<String>,
) -> Option<String> {
    let missing = |d: &Digest| -> Option<String> {
        if bad.contains(&d.to_string()) {
            Some(format!("blob {d} is damaged"))
        } else if !store.has_blob(d) {
            Some(format!("blob {d} is missing"))
        } else {
            None
        }
    };
    if let Some(why) = missing(desc.digest()) {
        return Some(why);
    }
    if *desc.media_type() == imgbuild_oci::spec::MediaType::ImageIndex {
        // A multi-platform image: usable when every image it lists is.
        return match store.image_blobs(desc) {
            Err(e) => Some(format!("its image index cannot be read: {e}")),
            Ok(blobs) => blobs.iter().find_map(|b| missing(b.digest())),
        };
    }
    let Some(manifest) = manifest_of(store, desc.digest()) else {
        return Some("it is not an image manifest".into());
    };
    for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
        if let Some(why) = missing(blob.digest()) {
            return Some(why);
        }
    }
    let artifact = manifest.artifact_type().as_ref().map(ToString::to_string);
    match artifact.as_deref() {
        Some(ARTIFACT_TYPE) if config_of::<EntryConfig>(store, &manifest).is_none() => {
            Some("its dependency-entry config cannot be read".into())
        }
        Some(crate::unitcache::ARTIFACT_TYPE)
            if config_of::<crate::unitcache::UnitsRecord>(store, &manifest).is_none() =>
        {
            Some("its unit-cache record cannot be read".into())
        }
        Some(RECORD_ARTIFACT_TYPE) => match config_of::<AppRecord>(store, &manifest) {
            None => Some("its app record cannot be read".into()),
            Some(record) if image_desc(store, &record.image).is_none() => Some(format!(
                "its app record names image {}, which is not whole in the store",
                record.image
            )),
            Some(_) => None,
        },
        _ => None,
    }
}

/// The remote-repository records (which repository of a registry holds which blob).
fn check_registry_records(cache: &CacheDir, repair: bool, report: &mut CheckReport) -> Result<()> {
    let (dir, _) = cache.registry_record("x");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let readable = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v.is_object());
        if !readable {
            if repair {
                remove_path(&path)?;
            }
            report.problems.push(Problem {
                what: format!("registry record {} cannot be read", path.display()),
                repaired: repair,
            });
        }
    }
    Ok(())
}
