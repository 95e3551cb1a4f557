//! The layout's `index.json`: its tags (`org.opencontainers.image.ref.name` annotations),
//! read and replaced atomically.
//!
//! Touches the filesystem (the index file).

use std::collections::HashMap;
use std::fs;

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType, SCHEMA_VERSION};

use super::{Layout, write_atomic};
use crate::{Error, REF_NAME_ANNOTATION, Result, io_err, json};

impl Layout {
    /// Reads `index.json`.
    pub fn read_index(&self) -> Result<ImageIndex> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(io_err("reading", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| Error::InvalidJson {
            what: "index",
            path,
            source,
        })
    }

    /// Replaces `index.json` atomically, in canonical JSON.
    pub fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let bytes = json::to_vec(index).map_err(|source| Error::InvalidJson {
            what: "index",
            path: self.root.join("index.json"),
            source,
        })?;
        write_atomic(&self.root, "index.json", &bytes)
    }

    /// Points `tag` at `manifest` in `index.json`, replacing what the tag pointed at before.
    /// Callers sharing a layout between processes hold [`Layout::lock`] around this.
    pub fn set_tag(&self, tag: &str, manifest: &Descriptor) -> Result<()> {
        let mut index = self.read_index()?;
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| ref_name(d) != Some(tag))
            .cloned()
            .collect();
        manifests.push(with_ref_name(manifest, tag));
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// The manifest descriptor `tag` points at.
    pub fn resolve(&self, tag: &str) -> Result<Descriptor> {
        self.read_index()?
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(tag))
            .cloned()
            .ok_or_else(|| Error::UnknownTag {
                layout: self.root.clone(),
                tag: tag.to_string(),
            })
    }
}

/// The `org.opencontainers.image.ref.name` annotation of a descriptor, if any.
pub fn ref_name(desc: &Descriptor) -> Option<&str> {
    desc.annotations()
        .as_ref()?
        .get(REF_NAME_ANNOTATION)
        .map(String::as_str)
}

/// A copy of `desc` annotated with `tag` as its ref name.
pub fn with_ref_name(desc: &Descriptor, tag: &str) -> Descriptor {
    let mut desc = desc.clone();
    let mut annotations = desc.annotations().clone().unwrap_or_default();
    annotations.insert(REF_NAME_ANNOTATION.to_string(), tag.to_string());
    desc.set_annotations(Some(annotations));
    desc
}

/// An index with no manifests.
pub fn empty_index() -> Result<ImageIndex> {
    index_of(Vec::new())
}

/// An index listing `manifests`.
pub fn index_of(manifests: Vec<Descriptor>) -> Result<ImageIndex> {
    Ok(ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .annotations(HashMap::new())
        .build()?)
}
