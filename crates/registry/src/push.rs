//! Pushing an image (or a cache artifact) from a local OCI layout; [`crate::pull`] is the other
//! way.
//!
//! Talks to the network and reads the layout. A push sends only what the registry lacks:
//! `HEAD` skips blobs it has, a cross-repository mount reuses a blob it has under another
//! repository, and the rest is streamed from disk; then the manifest, once, under its tag.

use std::io::Read;

use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::{Descriptor, ImageIndex};

use crate::Result;
use crate::client::Client;
use crate::http::{Body, Method, encode};
use crate::reference::Reference;
use crate::transfer::Upload;

pub use crate::progress::{BlobOutcome, NoProgress, Progress};

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Blobs the registry had.
    pub present: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Blobs uploaded, and their bytes.
    pub uploaded: usize,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// The manifest digest pushed.
    pub digest: String,
    /// Whether the registry said (with an `OCI-Subject` header) that it indexed the manifest's
    /// `subject` for its referrers API; when not, a referrer needs the tag schema.
    pub subject_indexed: bool,
}

pub(crate) fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

pub(crate) fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// Whether the repository has the blob.
pub fn has_blob(client: &Client, repository: &str, digest: &str) -> Result<bool> {
    let reply = client.request(
        Method::Head,
        &format!("/v2/{repository}/blobs/{digest}"),
        &[push_scope(repository)],
        &[],
        Body::None,
    )?;
    match reply.status {
        200 => Ok(true),
        404 => Ok(false),
        _ => Err(client.status_error("HEAD blob", repository, &reply)),
    }
}

/// Tries a cross-repository mount; `true` when the registry mounted the blob.
fn mount(client: &Client, repository: &str, digest: &str, from: &str) -> Result<bool> {
    let reply = client.request(
        Method::Post,
        &format!(
            "/v2/{repository}/blobs/uploads/?mount={}&from={}",
            encode(digest),
            encode(from)
        ),
        &[push_scope(repository), pull_scope(from)],
        &[],
        Body::None,
    )?;
    Ok(reply.status == 201)
}

/// Pushes the manifest `manifest` (an image or an artifact) and its blobs from `layout` to
/// `target`; `mount_from` lists repositories of the same registry that may hold some blobs
/// already. The manifest is sent under `target`'s tag, if it has one, else its digest.
pub fn push(
    client: &Client,
    layout: &Layout,
    manifest: &Descriptor,
    target: &Reference,
    mount_from: &[String],
    progress: &dyn Progress,
) -> Result<PushReport> {
    let manifests = std::slice::from_ref(manifest);
    let mut reports = push_blobs(client, layout, manifests, target, mount_from, progress)?;
    let mut report = reports.pop().unwrap_or_default();
    report.subject_indexed = put(client, layout, manifest, target)?;
    Ok(report)
}

/// The blobs half of [`push`], for several manifests at once: makes sure `target`'s
/// repository has every blob they list (present, mounted or uploaded, several at a time),
/// each blob once — two uploads of one blob at the same time can leave a registry answering
/// that it does not know it. The manifests themselves are not sent. Returns a report per
/// manifest, in their order, counting the blobs that manifest lists (a blob two of them list
/// counts in both).
pub fn push_blobs(
    client: &Client,
    layout: &Layout,
    manifests: &[Descriptor],
    target: &Reference,
    mount_from: &[String],
    progress: &dyn Progress,
) -> Result<Vec<PushReport>> {
    let repository = &target.repository;
    let mut blobs: Vec<Descriptor> = Vec::new();
    // For each manifest, the positions in `blobs` of the blobs it lists.
    let mut listed: Vec<Vec<usize>> = Vec::with_capacity(manifests.len());
    for manifest in manifests {
        let parsed = layout.read_manifest(manifest.digest())?;
        let own = std::iter::once(parsed.config()).chain(parsed.layers());
        let positions = own.map(|blob| {
            blobs
                .iter()
                .position(|b| b.digest() == blob.digest())
                .unwrap_or_else(|| {
                    blobs.push(blob.clone());
                    blobs.len() - 1
                })
        });
        listed.push(positions.collect());
    }
    let scopes = [push_scope(repository)];
    let outcomes = crate::parallel::run(&blobs, progress, &|blob, progress| {
        send_blob(
            client, layout, repository, blob, mount_from, &scopes, progress,
        )
    })?;
    let report = |(manifest, positions): (&Descriptor, &Vec<usize>)| {
        let mut report = PushReport {
            digest: manifest.digest().to_string(),
            ..PushReport::default()
        };
        for &i in positions {
            match outcomes[i] {
                BlobOutcome::Present => report.present += 1,
                BlobOutcome::Mounted { .. } => report.mounted += 1,
                _ => {
                    report.uploaded += 1;
                    report.uploaded_bytes += blobs[i].size();
                }
            }
        }
        report
    };
    Ok(manifests.iter().zip(&listed).map(report).collect())
}

/// The manifest half of [`push`]: `PUT`s `manifest` under `target`'s tag, or its digest when
/// `target` has no tag (a registry keeps a manifest pushed by tag under its digest too: one
/// request, not two). Says whether the registry answered that it indexed the `subject`.
pub fn put(
    client: &Client,
    layout: &Layout,
    manifest: &Descriptor,
    target: &Reference,
) -> Result<bool> {
    put_manifest(
        client,
        layout,
        manifest,
        &target.repository,
        target.tag.as_deref(),
    )
}

/// Pushes the image index `index` from `layout` to `target`: every image it lists (blobs,
/// then the image by digest), then the index, under `target`'s tag if it has one, else its
/// digest. The report sums the images' blobs; its digest is the index's.
pub fn push_index(
    client: &Client,
    layout: &Layout,
    index: &Descriptor,
    target: &Reference,
    mount_from: &[String],
    progress: &dyn Progress,
) -> Result<PushReport> {
    let bytes = layout.read_blob(index.digest())?;
    let parsed: ImageIndex =
        serde_json::from_slice(&bytes).map_err(|source| imgbuild_oci::Error::InvalidJson {
            what: "image index",
            path: layout.blob_path(index.digest()),
            source,
        })?;
    let untagged = Reference {
        tag: None,
        digest: None,
        ..target.clone()
    };
    let mut report = PushReport {
        digest: index.digest().to_string(),
        ..PushReport::default()
    };
    for child in parsed.manifests() {
        let pushed = push(client, layout, child, &untagged, mount_from, progress)?;
        report.present += pushed.present;
        report.mounted += pushed.mounted;
        report.uploaded += pushed.uploaded;
        report.uploaded_bytes += pushed.uploaded_bytes;
    }
    put(client, layout, index, target)?;
    Ok(report)
}

/// Tags `manifest`, already pushed to `repository` with its blobs, as `tag` as well.
pub fn tag(
    client: &Client,
    layout: &Layout,
    manifest: &Descriptor,
    repository: &str,
    tag: &str,
) -> Result<()> {
    put_manifest(client, layout, manifest, repository, Some(tag)).map(drop)
}

/// `PUT`s the manifest under its digest (`tag` `None`) or `tag`; says whether the registry
/// answered that it indexed the manifest's `subject`.
fn put_manifest(
    client: &Client,
    layout: &Layout,
    manifest: &Descriptor,
    repository: &str,
    tag: Option<&str>,
) -> Result<bool> {
    let bytes = layout.read_blob(manifest.digest())?;
    let media_type = manifest.media_type().to_string();
    let digest = manifest.digest().to_string();
    let reference = tag.unwrap_or(&digest);
    let scopes = [push_scope(repository)];
    let reply = client.request(
        Method::Put,
        &format!("/v2/{repository}/manifests/{reference}"),
        &scopes,
        &[],
        Body::Bytes(&bytes, &media_type),
    )?;
    if reply.status != 201 {
        return Err(client.status_error(&format!("PUT manifest {reference}"), repository, &reply));
    }
    Ok(reply.header("oci-subject").is_some())
}

/// Makes sure `repository` has `blob`: it is there, or mounted from one of `mount_from`, or
/// uploaded from `layout`.
fn send_blob(
    client: &Client,
    layout: &Layout,
    repository: &str,
    blob: &Descriptor,
    mount_from: &[String],
    scopes: &[String],
    progress: &dyn Progress,
) -> Result<BlobOutcome> {
    let digest = blob.digest().to_string();
    if has_blob(client, repository, &digest)? {
        progress.blob(&digest, blob.size(), &BlobOutcome::Present);
        return Ok(BlobOutcome::Present);
    }
    for from in mount_from.iter().filter(|f| *f != repository) {
        if mount(client, repository, &digest, from)? {
            let outcome = BlobOutcome::Mounted { from: from.clone() };
            progress.blob(&digest, blob.size(), &outcome);
            return Ok(outcome);
        }
    }
    let open = || -> Result<Box<dyn Read>> {
        Ok(Box::new(std::io::BufReader::new(
            layout.open_blob(blob.digest())?,
        )))
    };
    let upload = Upload {
        repository,
        digest: &digest,
        size: blob.size(),
        scopes,
        open: &open,
    };
    client.upload(&upload, progress)?;
    progress.blob(&digest, blob.size(), &BlobOutcome::Uploaded);
    Ok(BlobOutcome::Uploaded)
}
