//! Pulling an image (or a cache artifact) into a local OCI layout, and reading single
//! manifests and blobs.
//!
//! Talks to the network and writes the layout. Every byte is verified against its digest
//! before a blob becomes visible in the layout.

use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::{Descriptor, Digest, ImageIndex, ImageManifest, MediaType};

use crate::client::Client;
use crate::http::{Body, Method};
use crate::push::pull_scope;
use crate::reference::Reference;
use crate::{Error, Result};

pub use crate::progress::{BlobOutcome, Progress};

/// Media types a pull accepts for a manifest.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Fetches the manifest `reference` names (a tag or digest) and verifies it when a digest is
/// known. Returns its media type, bytes and digest; `None` when the registry does not have it.
pub fn fetch_manifest(
    client: &Client,
    repository: &str,
    reference: &str,
) -> Result<Option<(String, Vec<u8>, Digest)>> {
    let reply = client.request(
        Method::Get,
        &format!("/v2/{repository}/manifests/{reference}"),
        &[pull_scope(repository)],
        &[("Accept", ACCEPT.to_string())],
        Body::None,
    )?;
    if reply.status == 404 {
        return Ok(None);
    }
    if reply.status != 200 {
        return Err(client.status_error("GET manifest", repository, &reply));
    }
    let actual = imgbuild_oci::digest::sha256(&reply.body);
    let expected = if reference.starts_with("sha256:") {
        Some(reference.to_string())
    } else {
        reply.headers.get("docker-content-digest").cloned()
    };
    if let Some(expected) = expected
        && expected != actual.to_string()
    {
        return Err(Error::RemoteDigestMismatch {
            registry: client.registry().to_string(),
            what: format!("manifest {repository}:{reference}"),
            expected,
            actual: actual.to_string(),
        });
    }
    let media_type = reply
        .headers
        .get("content-type")
        .cloned()
        .unwrap_or_else(|| MediaType::ImageManifest.to_string());
    Ok(Some((media_type, reply.body, actual)))
}

/// Reads a small blob (a config) of `repository` into memory, verified against its digest.
pub fn fetch_blob(client: &Client, repository: &str, desc: &Descriptor) -> Result<Vec<u8>> {
    let digest = desc.digest().to_string();
    let reply = client.request(
        Method::Get,
        &format!("/v2/{repository}/blobs/{digest}"),
        &[pull_scope(repository)],
        &[],
        Body::None,
    )?;
    if reply.status != 200 {
        return Err(client.status_error(&format!("GET blob {digest}"), repository, &reply));
    }
    let actual = imgbuild_oci::digest::sha256(&reply.body);
    if actual != *desc.digest() {
        return Err(Error::RemoteDigestMismatch {
            registry: client.registry().to_string(),
            what: format!("blob {digest} of {repository}"),
            expected: digest,
            actual: actual.to_string(),
        });
    }
    Ok(reply.body)
}

/// Downloads the blob `desc` from `repository` into `layout` (unless it is there), verifying
/// its digest and size before it becomes visible. Returns whether it was downloaded.
pub fn pull_blob(
    client: &Client,
    layout: &Layout,
    repository: &str,
    desc: &Descriptor,
    progress: &dyn Progress,
) -> Result<bool> {
    pull_blob_tapped(
        client,
        layout,
        repository,
        desc,
        progress,
        &mut crate::transfer::NoTap,
    )
}

/// [`pull_blob`], giving `tap` the bytes as they arrive (nothing when the blob is already in
/// `layout`).
pub fn pull_blob_tapped(
    client: &Client,
    layout: &Layout,
    repository: &str,
    desc: &Descriptor,
    progress: &dyn Progress,
    tap: &mut dyn crate::transfer::Tap,
) -> Result<bool> {
    if layout.has_blob(desc.digest()) {
        progress.blob(desc.digest().as_ref(), desc.size(), &BlobOutcome::Present);
        return Ok(false);
    }
    let digest = desc.digest().to_string();
    let mut tmp = layout.temp_file(".tmp-pull-")?;
    let path = tmp.path().to_path_buf();
    let (actual, size) = client.download(
        repository,
        &digest,
        &[pull_scope(repository)],
        (tmp.as_file_mut(), &path),
        progress,
        tap,
    )?;
    if actual != *desc.digest() || size != desc.size() {
        return Err(Error::RemoteDigestMismatch {
            registry: client.registry().to_string(),
            what: format!(
                "blob {digest} of {repository} ({size} bytes, expected {})",
                desc.size()
            ),
            expected: digest,
            actual: actual.to_string(),
        });
    }
    layout.adopt_blob(tmp, desc.digest())?;
    progress.blob(
        desc.digest().as_ref(),
        desc.size(),
        &BlobOutcome::Downloaded,
    );
    Ok(true)
}

/// An image pulled into a layout.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The manifest's descriptor in the layout.
    pub manifest: Descriptor,
    /// The parsed manifest.
    pub parsed: ImageManifest,
}

/// Pulls `reference` (a manifest, or an index from which the entry for `os`/`arch` is
/// chosen) and its blobs into `layout`. `None` when the registry does not have it.
pub fn pull(
    client: &Client,
    layout: &Layout,
    reference: &Reference,
    os: &str,
    arch: &str,
    progress: &dyn Progress,
) -> Result<Option<Pulled>> {
    let repository = &reference.repository;
    let Some((media_type, bytes, digest)) = fetch_manifest(client, repository, reference.target())?
    else {
        return Ok(None);
    };
    let (media_type, bytes, digest) = if media_type.contains("index") || media_type.contains("list")
    {
        let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| Error::Status {
            registry: client.registry().to_string(),
            request: format!("GET manifest {reference}"),
            status: 200,
            message: format!("not an image index: {e}"),
        })?;
        let chosen = index
            .manifests()
            .iter()
            .find(|d| {
                d.platform().as_ref().is_some_and(|p| {
                    p.os().to_string() == os && p.architecture().to_string() == arch
                })
            })
            .ok_or_else(|| Error::NoPlatform {
                reference: reference.to_string(),
                platform: format!("{os}/{arch}"),
                available: index
                    .manifests()
                    .iter()
                    .filter_map(|d| d.platform().as_ref())
                    .map(|p| format!("{}/{}", p.os(), p.architecture()))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let chosen_digest = chosen.digest().to_string();
        fetch_manifest(client, repository, &chosen_digest)?.ok_or_else(|| Error::NotFound {
            registry: client.registry().to_string(),
            repository: repository.clone(),
            what: format!("manifest {chosen_digest} listed by the index"),
            message: String::new(),
        })?
    } else {
        (media_type, bytes, digest)
    };
    let parsed: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| Error::Status {
        registry: client.registry().to_string(),
        request: format!("GET manifest {reference}"),
        status: 200,
        message: format!("not an image manifest: {e}"),
    })?;
    let mut blobs = vec![parsed.config().clone()];
    blobs.extend(parsed.layers().iter().cloned());
    crate::parallel::run(&blobs, progress, &|blob, progress| {
        pull_blob(client, layout, repository, blob, progress)
    })?;
    let media = MediaType::from(media_type.as_str());
    let desc = layout.put_bytes(media, &bytes)?;
    debug_assert_eq!(desc.digest(), &digest);
    Ok(Some(Pulled {
        manifest: desc,
        parsed,
    }))
}
