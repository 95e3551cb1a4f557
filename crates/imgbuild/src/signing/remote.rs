//! Signing a manifest that is in a registry repository, and checking its signature: the
//! payload and signature manifest of [`super::cosign`], pushed as `sha256-<hex>.sig`.
//!
//! Talks to the registry; writes the signature's blobs to the local store before pushing.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::{
    Descriptor, ImageManifest, ImageManifestBuilder, MediaType, SCHEMA_VERSION,
};
use imgbuild_registry::{Client, Reference};

use super::cosign;
use super::keys::{SigningKey, VerifyingKey};
use crate::Result;

/// Names the key that made a signature (cosign ignores it): tells "signed by a key you do
/// not trust" from "signed by your key, but altered".
const KEY_ANNOTATION: &str = "dev.imgbuild.signature/key";

/// What a manifest's signatures say to a reader with some trusted keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Signed by this trusted key (its id).
    Trusted(String),
    /// No signature at all.
    Unsigned,
    /// Signed, but by no trusted key (the ids that signed, when they say).
    UnknownKey(Vec<String>),
    /// A signature by a trusted key that does not verify, or that signs something else.
    BadSignature(String),
}

impl Verdict {
    /// Why the manifest is not used, for a warning; `None` when it is trusted.
    pub(crate) fn distrust(&self) -> Option<String> {
        match self {
            Self::Trusted(_) => None,
            Self::Unsigned => Some("unsigned".into()),
            Self::UnknownKey(ids) if ids.is_empty() => {
                Some("signed by a key that is not trusted".into())
            }
            Self::UnknownKey(ids) => Some(format!(
                "signed by a key that is not trusted ({})",
                ids.join(", ")
            )),
            Self::BadSignature(why) => Some(format!("bad signature: {why}")),
        }
    }
}

/// Signs `subject`, a manifest in `repository`, with `key`: pushes the signature manifest
/// under `sha256-<hex>.sig` (replacing what was there), where cosign looks, and with
/// `subject` set, so a registry with the OCI referrers API also lists it as a referrer.
pub(crate) fn sign(
    client: &Client,
    store: &Layout,
    repository: &Reference,
    subject: &Descriptor,
    key: &SigningKey,
) -> Result<()> {
    let digest: &str = subject.digest().as_ref();
    let docker_reference = cosign::docker_reference(&repository.registry, &repository.repository);
    let payload = cosign::payload(&docker_reference, digest);
    let signature = BASE64.encode(key.sign(&payload));
    let payload_desc = store.put_bytes(MediaType::Other(cosign::PAYLOAD_TYPE.into()), &payload)?;
    let mut annotations: HashMap<String, String> =
        cosign::layer_annotations(&signature).into_iter().collect();
    annotations.insert(KEY_ANNOTATION.into(), key.public().id());
    let mut layer = payload_desc.clone();
    layer.set_annotations(Some(annotations));
    let config = cosign::config(&[payload_desc.digest().to_string()]);
    let config = store.put_json(MediaType::ImageConfig, &config)?;
    let subject = Descriptor::new(
        subject.media_type().clone(),
        subject.size(),
        subject.digest().clone(),
    );
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(cosign::ARTIFACT_TYPE.into()))
        .config(config)
        .layers(vec![layer])
        .subject(subject)
        .build()
        .map_err(imgbuild_oci::Error::from)?;
    let manifest = store.put_json(MediaType::ImageManifest, &manifest)?;
    let target = repository.with_tag(&cosign::signature_tag(digest));
    let progress = imgbuild_registry::progress::NoProgress;
    imgbuild_registry::push::push(client, store, &manifest, &target, &[], &progress)?;
    Ok(())
}

/// Checks the signatures of `digest`, a manifest in `repository`, against `keys`.
pub(crate) fn verify(
    client: &Client,
    repository: &Reference,
    digest: &str,
    keys: &[VerifyingKey],
) -> Result<Verdict> {
    let tag = cosign::signature_tag(digest);
    let Some((_, bytes, _)) =
        imgbuild_registry::pull::fetch_manifest(client, &repository.repository, &tag)?
    else {
        return Ok(Verdict::Unsigned);
    };
    let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&bytes) else {
        return Ok(Verdict::BadSignature(format!(
            "{tag} is not a signature manifest"
        )));
    };
    let docker_reference = cosign::docker_reference(&repository.registry, &repository.repository);
    let trusted_ids: Vec<String> = keys.iter().map(VerifyingKey::id).collect();
    let mut signers = Vec::new();
    let mut bad = None;
    for layer in manifest.layers() {
        let annotations = layer.annotations().clone().unwrap_or_default();
        let Some(encoded) = annotations.get(cosign::SIGNATURE_ANNOTATION) else {
            continue;
        };
        let claimed = annotations.get(KEY_ANNOTATION).cloned();
        let payload = imgbuild_registry::pull::fetch_blob(client, &repository.repository, layer)?;
        let signature = BASE64.decode(encoded).unwrap_or_default();
        match keys.iter().find(|k| k.verifies(&payload, &signature)) {
            Some(key) => match cosign::payload_mismatch(&payload, &docker_reference, digest) {
                None => return Ok(Verdict::Trusted(key.id())),
                Some(why) => bad = Some(why),
            },
            None => match claimed {
                Some(id) if trusted_ids.contains(&id) => {
                    bad = Some(format!("it does not verify with the trusted key {id}"));
                }
                Some(id) => signers.push(id),
                None => {}
            },
        }
    }
    Ok(match bad {
        Some(why) => Verdict::BadSignature(why),
        None if manifest.layers().is_empty() => Verdict::Unsigned,
        None => Verdict::UnknownKey(signers),
    })
}
