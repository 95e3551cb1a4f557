//! OCI 1.1 referrers in an image layout: artifacts (an SBOM, a provenance statement, debug
//! info) whose manifest names an image manifest as its `subject`.
//!
//! Touches the filesystem through [`Layout`]. A referrer is an image manifest with an
//! `artifactType`, the empty config (`{}`), one layer holding the document, and a `subject`.
//! In a layout it is listed in `index.json` without a ref name (as ORAS and the image-layout
//! spec do), so tools that open a layout by tag never see it.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{
    Descriptor, Digest, ImageManifest, ImageManifestBuilder, MediaType, SCHEMA_VERSION,
};

use crate::Result;
use crate::layout::{Layout, ref_name};

/// An artifact's document: bytes, or a file streamed into the layout (a debug file can be
/// hundreds of megabytes).
#[derive(Debug, Clone, Copy)]
pub enum Document<'a> {
    /// The bytes themselves.
    Bytes(&'a [u8]),
    /// A file to copy.
    File(&'a std::path::Path),
}

/// An artifact to attach to an image.
#[derive(Debug, Clone)]
pub struct Artifact<'a> {
    /// The manifest's `artifactType` (`application/spdx+json`, …).
    pub artifact_type: &'a str,
    /// The media type of the one layer (the document's own type).
    pub layer_media_type: &'a str,
    /// The document.
    pub document: Document<'a>,
    /// Manifest annotations (sorted in the manifest's canonical JSON).
    pub annotations: BTreeMap<String, String>,
}

/// The tag the OCI 1.1 referrers tag schema uses for the referrers of `digest`:
/// `sha256-<hex>`.
pub fn fallback_tag(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm(), digest.digest())
}

/// Writes `artifact` as a referrer of `subject` (its blobs and manifest; `index.json` is left
/// alone) and returns the manifest's descriptor, with the artifact type and annotations a
/// referrers list carries.
pub fn put(layout: &Layout, subject: &Descriptor, artifact: &Artifact<'_>) -> Result<Descriptor> {
    let artifact_type = MediaType::Other(artifact.artifact_type.to_string());
    let config = layout.put_bytes(MediaType::EmptyJSON, b"{}")?;
    let layer_type = MediaType::Other(artifact.layer_media_type.to_string());
    let layer = match artifact.document {
        Document::Bytes(bytes) => layout.put_bytes(layer_type, bytes)?,
        Document::File(path) => layout.put_file(layer_type, path)?,
    };
    let annotations: HashMap<String, String> = artifact.annotations.clone().into_iter().collect();
    let mut subject = Descriptor::new(
        subject.media_type().clone(),
        subject.size(),
        subject.digest().clone(),
    );
    subject.set_annotations(None);
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .artifact_type(artifact_type.clone())
        .config(config)
        .layers(vec![layer])
        .subject(subject)
        .annotations(annotations.clone())
        .build()?;
    let mut desc = layout.put_json(MediaType::ImageManifest, &manifest)?;
    desc.set_artifact_type(Some(artifact_type));
    if !annotations.is_empty() {
        desc.set_annotations(Some(annotations));
    }
    Ok(desc)
}

/// Lists `desc` in `index.json` without a ref name, unless an entry with its digest is there.
/// Callers sharing a layout between processes hold [`Layout::lock`] around this.
pub fn list(layout: &Layout, desc: &Descriptor) -> Result<()> {
    let mut index = layout.read_index()?;
    if index
        .manifests()
        .iter()
        .any(|d| d.digest() == desc.digest() && ref_name(d).is_none())
    {
        return Ok(());
    }
    let mut manifests = index.manifests().clone();
    manifests.push(desc.clone());
    index.set_manifests(manifests);
    layout.write_index(&index)
}

/// Whether `desc` (a referrer's descriptor, as an index or a referrers list has it) has one
/// of `types` as its `artifactType`.
pub fn is_one_of(desc: &Descriptor, types: &[&str]) -> bool {
    desc.artifact_type()
        .as_ref()
        .is_some_and(|a| types.contains(&a.to_string().as_str()))
}

/// The `subject` of the manifest `desc` names, when it is a readable manifest with one.
pub fn subject_of(layout: &Layout, desc: &Descriptor) -> Option<Digest> {
    if *desc.media_type() != MediaType::ImageManifest {
        return None;
    }
    let manifest: ImageManifest = layout.read_manifest(desc.digest()).ok()?;
    manifest.subject().as_ref().map(|s| s.digest().clone())
}

/// The referrers of `subject` listed in `index.json` (untagged entries whose manifest names
/// it), in index order (oldest first: [`list`] appends); `artifact_type` filters them.
pub fn find(
    layout: &Layout,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Vec<Descriptor>> {
    Ok(layout
        .read_index()?
        .manifests()
        .iter()
        .filter(|d| ref_name(d).is_none())
        .filter(|d| artifact_type.is_none_or(|t| is_one_of(d, &[t])))
        .filter(|d| subject_of(layout, d).as_ref() == Some(subject))
        .cloned()
        .collect())
}

/// The one layer of the referrer `desc`: the document's bytes, verified.
pub fn document(layout: &Layout, desc: &Descriptor) -> Result<Vec<u8>> {
    let manifest = layout.read_manifest(desc.digest())?;
    let layer = manifest
        .layers()
        .first()
        .ok_or_else(|| crate::Error::InvalidArtifact {
            digest: desc.digest().to_string(),
            reason: "it has no layer".into(),
        })?;
    layout.read_blob(layer.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_referrer_is_found_by_its_subject_and_type_and_kept_out_of_tags() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let image = layout.put_bytes(MediaType::ImageManifest, b"{}").unwrap();
        let sbom = Artifact {
            artifact_type: "application/spdx+json",
            layer_media_type: "application/spdx+json",
            document: Document::Bytes(br#"{"spdxVersion":"SPDX-2.3"}"#),
            annotations: BTreeMap::from([(
                "org.opencontainers.image.created".into(),
                "1970-01-01T00:00:00Z".into(),
            )]),
        };
        let desc = put(&layout, &image, &sbom).unwrap();
        assert_eq!(put(&layout, &image, &sbom).unwrap(), desc, "deterministic");
        list(&layout, &desc).unwrap();
        list(&layout, &desc).unwrap();
        assert_eq!(layout.read_index().unwrap().manifests().len(), 1);
        let found = find(&layout, image.digest(), Some("application/spdx+json")).unwrap();
        assert_eq!(found, vec![desc.clone()]);
        assert!(
            find(&layout, image.digest(), Some("other"))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            document(&layout, &desc).unwrap(),
            br#"{"spdxVersion":"SPDX-2.3"}"#
        );
        // The same document from a file: the same blob and the same manifest.
        let file = dir.path().join("sbom.json");
        std::fs::write(&file, br#"{"spdxVersion":"SPDX-2.3"}"#).unwrap();
        let from_file = Artifact {
            document: Document::File(&file),
            ..sbom.clone()
        };
        assert_eq!(put(&layout, &image, &from_file).unwrap(), desc);
        assert_eq!(
            fallback_tag(image.digest()),
            format!("sha256-{}", image.digest().digest())
        );
    }
}
