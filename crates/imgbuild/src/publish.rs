//! Pushing images from the local store to registries.
//!
//! Talks to the network (through `imgbuild_registry`) and reads/writes a small record of which
//! repository of each registry holds which blob (`<cache>/registries/<host>.json`), so that a
//! push to a new repository mounts blobs the registry already has instead of uploading them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::{Descriptor, Digest, MediaType};
use imgbuild_registry::push::{BlobOutcome, Progress};
use imgbuild_registry::{Client, ClientOptions, Reference};

use crate::Result;
use crate::cachedir::CacheDir;
use crate::event::{Event, Reporter};

/// Where blobs were pushed, per registry: digest → repositories.
pub(crate) type BlobHomes = BTreeMap<String, BTreeSet<String>>;

pub(crate) fn read_homes(cache: &CacheDir, registry: &str) -> BlobHomes {
    let (dir, name) = cache.registry_record(registry);
    std::fs::read(dir.join(name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Records that `repository` of `registry` holds `digests`. The record is read, added to and
/// written under one lock, so that the threads of one build (the cache pushes, the app
/// entry's, an output's) do not drop each other's lines. A hint only: a line lost to another
/// process costs an upload, never correctness.
pub(crate) fn add_homes(
    cache: &CacheDir,
    registry: &str,
    repository: &str,
    digests: impl IntoIterator<Item = String>,
) {
    static RECORD: Mutex<()> = Mutex::new(());
    let _held = RECORD.lock().unwrap_or_else(|e| e.into_inner());
    let mut homes = read_homes(cache, registry);
    for digest in digests {
        homes
            .entry(digest)
            .or_default()
            .insert(repository.to_string());
    }
    let (dir, name) = cache.registry_record(registry);
    if std::fs::create_dir_all(&dir).is_ok()
        && let Ok(bytes) = serde_json::to_vec(&homes)
    {
        let _ = imgbuild_oci::layout::write_atomic(&dir, &name, &bytes);
    }
}

/// Turns registry progress into [`Event::Blob`] events, and the bytes of each transfer into
/// [`crate::event::Progress::Bytes`] for a live display.
pub(crate) struct Reporting<'a> {
    reporter: &'a dyn Reporter,
    reference: String,
    /// `Pushing` or `Pulling`: the display's status word.
    verb: &'static str,
    /// Blob digest → (bytes moved, bytes to move).
    transfers: Mutex<HashMap<String, (u64, u64)>>,
}

impl<'a> Reporting<'a> {
    fn new(reporter: &'a dyn Reporter, reference: &Reference, verb: &'static str) -> Self {
        Self {
            reporter,
            reference: reference.to_string(),
            verb,
            transfers: Mutex::default(),
        }
    }

    /// Updates `digest`'s transfer and reports it.
    fn transfer(&self, digest: &str, update: impl FnOnce(&mut (u64, u64))) {
        let (done, total) = {
            let mut transfers = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
            let entry = transfers.entry(digest.to_string()).or_default();
            update(entry);
            entry.1 = entry.1.max(entry.0);
            *entry
        };
        let short = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.reporter.progress(&crate::event::Progress::Bytes {
            what: format!("{} {}", self.verb, &short[..short.len().min(12)]),
            done,
            total,
        });
    }
}

/// Progress for pulls from `reference`.
pub(crate) fn progress<'a>(reporter: &'a dyn Reporter, reference: &Reference) -> Reporting<'a> {
    Reporting::new(reporter, reference, "Pulling")
}

/// Progress for pushes to `reference`.
pub(crate) fn push_progress<'a>(
    reporter: &'a dyn Reporter,
    reference: &Reference,
) -> Reporting<'a> {
    Reporting::new(reporter, reference, "Pushing")
}

impl Progress for Reporting<'_> {
    fn blob(&self, digest: &str, size: u64, outcome: &BlobOutcome) {
        use crate::event::BlobOutcome as Outcome;
        let (outcome, from) = match outcome {
            BlobOutcome::Present => (Outcome::Present, None),
            BlobOutcome::Mounted { from } => (Outcome::Mounted, Some(from.clone())),
            BlobOutcome::Uploaded => (Outcome::Uploaded, None),
            BlobOutcome::Downloaded => (Outcome::Downloaded, None),
        };
        self.reporter.report(&Event::Blob {
            reference: self.reference.clone(),
            digest: digest.to_string(),
            size,
            outcome,
            from,
        });
    }

    fn transfer_started(&self, digest: &str, total: Option<u64>) {
        self.transfer(digest, |t| *t = (0, total.unwrap_or(0)));
    }

    fn transfer_advanced(&self, digest: &str, bytes: u64) {
        self.transfer(digest, |t| t.0 += bytes);
    }

    fn transfer_finished(&self, digest: &str) {
        self.transfer(digest, |t| t.0 = t.1);
    }
}

/// Connection settings for registries.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) where plain HTTP is allowed besides localhost.
    pub insecure: Vec<String>,
    /// How long a connection, a read or a write may wait (default
    /// [`imgbuild_registry::client::DEFAULT_TIMEOUT`]).
    pub timeout: Option<std::time::Duration>,
    /// No retry starts later than this after a request's first try (default
    /// [`imgbuild_registry::client::DEFAULT_DEADLINE`]).
    pub deadline: Option<std::time::Duration>,
    /// Told before each retry, with a line saying what is waited for and when the next try
    /// comes.
    pub on_retry: Option<imgbuild_registry::RetryHook>,
}

impl RegistryOptions {
    /// Client options for `reference`'s registry.
    pub fn client_options(&self, reference: &Reference) -> ClientOptions {
        let defaults = ClientOptions::default();
        ClientOptions {
            insecure: self.insecure.contains(&reference.registry),
            timeout: self.timeout.unwrap_or(defaults.timeout),
            deadline: self.deadline.unwrap_or(defaults.deadline),
            on_retry: self.on_retry.clone(),
            ..defaults
        }
    }
}

/// An image in the local store, as a push takes it.
pub(crate) struct Pushed<'a> {
    /// Its manifest.
    pub(crate) manifest: &'a Descriptor,
    /// The artifacts attached to it (pushed after it, as referrers).
    pub(crate) referrers: &'a [Descriptor],
    /// The tag used when the reference names no tag or digest.
    pub(crate) default_tag: &'a str,
    /// More tags for the same manifest (one push, then one manifest `PUT` per tag).
    pub(crate) more_tags: &'a [String],
    /// Signs the pushed manifest, cosign's way (`push --sign-key`).
    pub(crate) sign_key: Option<&'a crate::signing::SigningKey>,
}

/// Checks that the image `reference` names is signed by `key` (a public key file), cosign's
/// way; returns the image's digest and the key's id.
pub(crate) fn verify_signature(
    reference: &Reference,
    key: &std::path::Path,
    options: &RegistryOptions,
) -> Result<(String, String)> {
    let key = crate::signing::VerifyingKey::from_file(key)?;
    let client = Client::connect(reference, options.client_options(reference))?;
    let name = reference
        .digest
        .clone()
        .or_else(|| reference.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let fail = |reason: String| crate::Error::Signature {
        reference: reference.to_string(),
        reason,
    };
    let Some((_, _, digest)) =
        imgbuild_registry::pull::fetch_manifest(&client, &reference.repository, &name)?
    else {
        return Err(fail("no such image in the registry".into()));
    };
    let digest = digest.to_string();
    let verdict =
        crate::signing::remote::verify(&client, reference, &digest, std::slice::from_ref(&key))?;
    match verdict.distrust() {
        None => Ok((digest, key.id())),
        Some(why) => Err(fail(format!("{digest} is {why}"))),
    }
}

/// The referrers grouped by the manifest they refer to (an index's referrers belong to its
/// images); a referrer that names no subject is the image's own.
fn by_subject(
    store: &Layout,
    manifest: &Descriptor,
    referrers: &[Descriptor],
) -> Result<Vec<(Digest, Vec<Descriptor>)>> {
    let mut groups: Vec<(Digest, Vec<Descriptor>)> = Vec::new();
    for r in referrers {
        let subject = store
            .read_manifest(r.digest())?
            .subject()
            .as_ref()
            .map_or_else(|| manifest.digest().clone(), |s| s.digest().clone());
        match groups.iter_mut().find(|(d, _)| *d == subject) {
            Some((_, list)) => list.push(r.clone()),
            None => groups.push((subject, vec![r.clone()])),
        }
    }
    Ok(groups)
}

/// Where one push sends, and from where.
struct Sent<'a> {
    client: &'a Client,
    store: &'a Layout,
    target: &'a Reference,
    /// Repositories of the registry that may hold some blobs already.
    mount_from: &'a [String],
}

impl Sent<'_> {
    /// Sends the image `manifest` (or index) and its `referrers`; the report is the image's.
    fn image(
        &self,
        manifest: &Descriptor,
        referrers: &[Descriptor],
        reporter: &dyn Reporter,
    ) -> Result<imgbuild_registry::push::PushReport> {
        let (client, store, target) = (self.client, self.store, self.target);
        let progress = push_progress(reporter, target);
        let groups = by_subject(store, manifest, referrers)?;
        if *manifest.media_type() == MediaType::ImageIndex {
            return self.index(manifest, &groups, &progress);
        }
        // The image's blobs and its referrers' at once, each once (two uploads of one blob at
        // the same time can leave a registry without it), then every manifest at once: a
        // few round trips in all, often far away.
        let mut manifests = vec![manifest.clone()];
        manifests.extend_from_slice(referrers);
        let reports = imgbuild_registry::push::push_blobs(
            client,
            store,
            &manifests,
            target,
            self.mount_from,
            &progress,
        )?;
        let mut report = reports.into_iter().next().unwrap_or_default();
        report.subject_indexed = imgbuild_registry::referrers::put_with_referrers(
            client, store, manifest, target, &groups,
        )?;
        Ok(report)
    }

    /// [`Sent::image`] for an index: its images, the index, then the referrers of each.
    fn index(
        &self,
        index: &Descriptor,
        groups: &[(Digest, Vec<Descriptor>)],
        progress: &dyn Progress,
    ) -> Result<imgbuild_registry::push::PushReport> {
        let (client, store, target) = (self.client, self.store, self.target);
        let report = imgbuild_registry::push::push_index(
            client,
            store,
            index,
            target,
            self.mount_from,
            progress,
        )?;
        for (subject, referrers) in groups {
            imgbuild_registry::referrers::push_referrers(
                client,
                store,
                subject,
                referrers,
                target,
                self.mount_from,
                progress,
            )?;
        }
        Ok(report)
    }
}

/// Pushes `image` (in `store`) and its referrers to `reference`, then tags it with
/// `image.more_tags` too. Returns the pushed image's digest reference.
pub(crate) fn push(
    store: &Layout,
    image: &Pushed<'_>,
    reference: &Reference,
    options: &RegistryOptions,
    cache: &CacheDir,
    reporter: &dyn Reporter,
) -> Result<Reference> {
    let (manifest, referrers) = (image.manifest, image.referrers);
    let target = if reference.tag.is_none() && reference.digest.is_none() {
        reference.with_tag(image.default_tag)
    } else {
        reference.clone()
    };
    let client = Client::connect(&target, options.client_options(&target))?;
    let homes = read_homes(cache, &target.registry);
    let mut blobs = store.image_blobs(manifest)?;
    for r in referrers {
        blobs.extend(store.image_blobs(r)?);
    }
    let mut candidates: Vec<String> = blobs
        .iter()
        .filter_map(|b| homes.get(&b.digest().to_string()))
        .flatten()
        .filter(|r| **r != target.repository)
        .cloned()
        .collect();
    candidates.sort();
    candidates.dedup();
    let sent = Sent {
        client: &client,
        store,
        target: &target,
        mount_from: &candidates,
    };
    let report = sent.image(manifest, referrers, reporter)?;
    let digests = blobs.iter().map(|b| b.digest().to_string());
    add_homes(cache, &target.registry, &target.repository, digests);
    report_pushed(reporter, &target, &report);
    for tag in image.more_tags {
        if target.tag.as_deref() == Some(tag.as_str()) {
            continue;
        }
        imgbuild_registry::push::tag(&client, store, manifest, &target.repository, tag)?;
        reporter.report(&Event::Tagged {
            reference: target.with_tag(tag).to_string(),
            digest: report.digest.clone(),
        });
    }
    if let Some(key) = image.sign_key {
        crate::signing::remote::sign(&client, store, &target, manifest, key)?;
        reporter.report(&Event::Signed {
            reference: target.with_digest(&report.digest).to_string(),
            key: key.public().id(),
        });
    }
    Ok(Reference {
        tag: None,
        digest: Some(report.digest),
        ..target
    })
}

pub(crate) fn report_pushed(
    reporter: &dyn Reporter,
    target: &Reference,
    report: &imgbuild_registry::push::PushReport,
) {
    reporter.report(&Event::Pushed {
        reference: target.to_string(),
        digest: report.digest.clone(),
        uploaded: report.uploaded,
        uploaded_bytes: report.uploaded_bytes,
        mounted: report.mounted,
        present: report.present,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_recording_blob_homes_at_once_keep_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(dir.path());
        std::thread::scope(|scope| {
            for t in 0..6 {
                let cache = &cache;
                scope.spawn(move || {
                    for i in 0..40 {
                        let digest = format!("sha256:{t}-{i}");
                        add_homes(cache, "r.example", &format!("repo{t}"), [digest]);
                    }
                });
            }
        });
        let homes = read_homes(&cache, "r.example");
        assert_eq!(homes.len(), 6 * 40);
        assert!(homes["sha256:5-39"].contains("repo5"));
    }
}
