//! OCI 1.1 referrers on a registry: pushing artifacts (SBOMs, provenance, debug info) that
//! name an image as their `subject`, and listing an image's referrers.
//!
//! Talks to the network. As the distribution spec prescribes, a registry that indexes the
//! subject itself says so with an `OCI-Subject` header on the manifest `PUT`, and answers
//! `GET /v2/<name>/referrers/<digest>`; for any other registry the client keeps the list in an
//! image index tagged `sha256-<hex>` (the referrers tag schema), read, merged and written back.

use imgbuild_oci::layout::Layout;
use imgbuild_oci::referrers::fallback_tag;
use imgbuild_oci::spec::{Descriptor, Digest, ImageIndex, MediaType};

use crate::client::Client;
use crate::http::{Body, Method};
use crate::progress::NoProgress;
use crate::progress::Progress;
use crate::pull::fetch_manifest;
use crate::push::{pull_scope, push_blobs, push_scope, put};
use crate::reference::Reference;
use crate::{Error, Result};

/// What pushing referrers did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReferrersReport {
    /// Referrer manifests pushed.
    pub pushed: usize,
    /// Whether the tag schema's index was written (the registry has no referrers API).
    pub tag_schema: bool,
}

fn not_an_index(client: &Client, request: String, e: &serde_json::Error) -> Error {
    Error::Status {
        registry: client.registry().to_string(),
        request,
        status: 200,
        message: format!("not an image index: {e}"),
    }
}

/// Pushes `referrers` (manifests in `layout` whose subject is `subject`) to `target`'s
/// repository (blobs mounted from `mount_from` where the registry has them), then, unless the
/// registry indexed them itself, adds them to the subject's tag-schema index.
pub fn push_referrers(
    client: &Client,
    layout: &Layout,
    subject: &Digest,
    referrers: &[Descriptor],
    target: &Reference,
    mount_from: &[String],
    progress: &dyn Progress,
) -> Result<ReferrersReport> {
    if referrers.is_empty() {
        return Ok(ReferrersReport::default());
    }
    push_blobs(client, layout, referrers, target, mount_from, progress)?;
    put_referrers(client, layout, subject, referrers, target)
}

/// The manifests half of [`push_referrers`], their blobs being in the repository: the
/// referrers' manifests, several at a time, and, unless the registry indexed them itself,
/// the subject's tag-schema index (read meanwhile: a round trip each, not several).
pub fn put_referrers(
    client: &Client,
    layout: &Layout,
    subject: &Digest,
    referrers: &[Descriptor],
    target: &Reference,
) -> Result<ReferrersReport> {
    if referrers.is_empty() {
        return Ok(ReferrersReport::default());
    }
    let by_digest = target.with_digest(subject.as_ref());
    let repository = &target.repository;
    let (indexed, listed) = std::thread::scope(|s| {
        let listing = s.spawn(|| tag_schema_list(client, repository, subject));
        let indexed = crate::parallel::run(referrers, &NoProgress, &|r, _| {
            put(client, layout, r, &by_digest)
        });
        (indexed, join(listing))
    });
    let indexed = indexed?;
    let mut report = ReferrersReport {
        pushed: indexed.len(),
        ..ReferrersReport::default()
    };
    if indexed.iter().all(|i| *i) {
        return Ok(report);
    }
    let tag = fallback_tag(subject);
    let mut listed = listed?;
    let before = listed.len();
    for r in referrers {
        if !listed.iter().any(|d| d.digest() == r.digest()) {
            listed.push(r.clone());
        }
    }
    if listed.len() == before {
        return Ok(report);
    }
    let index = imgbuild_oci::layout::index_of(listed)?;
    let bytes = imgbuild_oci::json::to_vec(&index).map_err(|e| Error::Status {
        registry: client.registry().to_string(),
        request: format!("PUT manifest {tag}"),
        status: 0,
        message: e.to_string(),
    })?;
    let media_type = MediaType::ImageIndex.to_string();
    let reply = client.request(
        Method::Put,
        &format!("/v2/{repository}/manifests/{tag}"),
        &[push_scope(repository)],
        &[],
        Body::Bytes(&bytes, &media_type),
    )?;
    if reply.status != 201 {
        return Err(client.status_error(&format!("PUT manifest {tag}"), repository, &reply));
    }
    report.tag_schema = true;
    Ok(report)
}

/// Puts `image` under `target` (its tag, else its digest) and, at the same time, the referrer
/// manifests of `groups` (each subject with its referrers, their tag-schema indexes
/// included); every blob must be in the repository already ([`push_blobs`]). Says whether
/// the registry indexed the image's own `subject` (see [`put`]).
pub fn put_with_referrers(
    client: &Client,
    layout: &Layout,
    image: &Descriptor,
    target: &Reference,
    groups: &[(Digest, Vec<Descriptor>)],
) -> Result<bool> {
    let (indexed, referred) = std::thread::scope(|s| {
        let referred = s.spawn(|| -> Result<()> {
            for (subject, referrers) in groups {
                put_referrers(client, layout, subject, referrers, target)?;
            }
            Ok(())
        });
        (put(client, layout, image, target), join(referred))
    });
    let indexed = indexed?;
    referred?;
    Ok(indexed)
}

/// The result of a scoped thread; a panic in it continues in the caller.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The referrers of `subject` in `repository`: from the referrers API when the registry has
/// one, else from the tag schema's index; empty when there are none.
pub fn list(client: &Client, repository: &str, subject: &Digest) -> Result<Vec<Descriptor>> {
    let reply = client.request(
        Method::Get,
        &format!("/v2/{repository}/referrers/{subject}"),
        &[pull_scope(repository)],
        &[("Accept", MediaType::ImageIndex.to_string())],
        Body::None,
    )?;
    let is_index = reply
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/vnd.oci.image.index.v1+json"));
    if reply.status == 200 && is_index {
        let index: ImageIndex = serde_json::from_slice(&reply.body)
            .map_err(|e| not_an_index(client, format!("GET referrers {subject}"), &e))?;
        return Ok(index.manifests().clone());
    }
    tag_schema_list(client, repository, subject)
}

/// The descriptors of `subject`'s tag-schema index (`sha256-<hex>`); empty when there is none.
fn tag_schema_list(client: &Client, repository: &str, subject: &Digest) -> Result<Vec<Descriptor>> {
    let tag = fallback_tag(subject);
    Ok(match fetch_manifest(client, repository, &tag)? {
        Some((_, bytes, _)) => serde_json::from_slice::<ImageIndex>(&bytes)
            .map_err(|e| not_an_index(client, format!("GET manifest {tag}"), &e))?
            .manifests()
            .clone(),
        None => Vec::new(),
    })
}
