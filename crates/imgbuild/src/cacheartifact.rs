//! The one shape of imgbuild's own cache artifacts (dependency entries, unit records, app
//! records, the entry index): an OCI artifact manifest with a JSON config of the artifact's
//! own media type, its layers (the empty JSON blob when it has none) and its creation time.
//!
//! Writes to the local store.

use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::{Descriptor, ImageManifestBuilder, MediaType, SCHEMA_VERSION};

use crate::Result;

/// The media types of one kind of cache artifact.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kind {
    /// The manifest's `artifactType`.
    pub(crate) artifact_type: &'static str,
    /// The config's media type.
    pub(crate) config_type: &'static str,
}

/// Stores `config` and a manifest of kind `kind` listing `layers` (already in the store);
/// returns the manifest's descriptor, its artifact type set.
pub(crate) fn put<T: serde::Serialize>(
    store: &Layout,
    kind: Kind,
    config: &T,
    layers: Vec<Descriptor>,
) -> Result<Descriptor> {
    let config = store.put_json(MediaType::Other(kind.config_type.into()), config)?;
    let layers = if layers.is_empty() {
        vec![store.put_bytes(MediaType::EmptyJSON, b"{}")?]
    } else {
        layers
    };
    let artifact_type = MediaType::Other(kind.artifact_type.into());
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .artifact_type(artifact_type.clone())
        .config(config)
        .layers(layers)
        .annotations(crate::names::created(crate::time::now()))
        .build()
        .map_err(imgbuild_oci::Error::from)?;
    let mut desc = store.put_json(MediaType::ImageManifest, &manifest)?;
    desc.set_artifact_type(Some(artifact_type));
    Ok(desc)
}
