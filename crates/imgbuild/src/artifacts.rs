//! An image's attached artifacts, read back: `imgbuild sbom REF` and `imgbuild debuginfo REF`.
//! The image may be in the local store (`name:tag`), an OCI layout (`oci:DIR[:TAG]`) or a
//! registry (`docker://REF`, or any reference with a registry host).
//!
//! Reads the store and layouts, pulls from registries (through `imgbuild_registry`), and
//! writes the debug file it fetches.

use std::path::{Path, PathBuf};

use imgbuild_oci::layout::{Layout, ref_name};
use imgbuild_oci::referrers;
use imgbuild_oci::spec::{Descriptor, ImageManifest};
use imgbuild_registry::client::Client;
use imgbuild_registry::pull::{fetch_manifest, pull_blob};
use imgbuild_registry::push::NoProgress;
use imgbuild_registry::{Reference, referrers as remote};

use crate::cachedir::CacheDir;
use crate::options::SbomFormat;
use crate::publish::RegistryOptions;
use crate::supply;
use crate::{Error, Result};

/// Where an image is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageLocation {
    /// `name[:tag]` in the local store.
    Store(String),
    /// `oci:DIR[:TAG]`.
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// The tag; `None`: the layout's only tagged image.
        tag: Option<String>,
    },
    /// A registry.
    Registry(Reference),
}

impl std::str::FromStr for ImageLocation {
    type Err = Error;

    /// `oci:DIR[:TAG]`, `docker://REF`, a reference with a registry host (a `/` in it), else
    /// a name in the local store.
    fn from_str(text: &str) -> Result<Self> {
        if let Some(rest) = text.strip_prefix("oci:") {
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((d, t)) if !t.contains('/') && !d.is_empty() => (d, Some(t.to_string())),
                _ => (rest, None),
            };
            return Ok(Self::Layout {
                dir: dir.into(),
                tag,
            });
        }
        if let Some(rest) = text.strip_prefix("docker://") {
            return Ok(Self::Registry(Reference::parse(rest)?));
        }
        if text.contains('/') {
            return Ok(Self::Registry(Reference::parse(text)?));
        }
        let name = if text.contains(':') {
            text.to_string()
        } else {
            format!("{text}:latest")
        };
        Ok(Self::Store(name))
    }
}

/// A document attached to an image.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Attachment {
    /// The referrer manifest's descriptor (artifact type and annotations included).
    pub referrer: Descriptor,
    /// The document's bytes.
    pub bytes: Vec<u8>,
}

/// The SBOM attached to the image at `location`: `format`'s, or with `None` the SPDX one if
/// there is one, else the CycloneDX one.
pub fn sbom(
    cache: &CacheDir,
    location: &ImageLocation,
    format: Option<SbomFormat>,
    registry: &RegistryOptions,
) -> Result<Attachment> {
    let types: &[&str] = match format {
        Some(SbomFormat::CycloneDx) => &[supply::CYCLONEDX_TYPE],
        Some(SbomFormat::Spdx) => &[supply::SPDX_TYPE],
        _ => &[supply::SPDX_TYPE, supply::CYCLONEDX_TYPE],
    };
    fetch(
        cache,
        location,
        types,
        registry,
        "SBOM",
        "; build it without --sbom none",
    )
}

/// The image's debug info, written to `dir/.build-id/xx/rest.debug` (where gdb looks with
/// `set debug-file-directory dir`). Returns the file's path.
pub fn debuginfo(
    cache: &CacheDir,
    location: &ImageLocation,
    registry: &RegistryOptions,
    dir: &Path,
) -> Result<PathBuf> {
    let found = fetch(
        cache,
        location,
        &[supply::DEBUGINFO_TYPE],
        registry,
        "debug info",
        "; only a profile with debug info (e.g. `debug = 1`) built without --keep-debuginfo has one",
    )?;
    let build_id = found
        .referrer
        .annotations()
        .as_ref()
        .and_then(|a| a.get(supply::BUILD_ID_ANNOTATION))
        .filter(|id| id.len() > 2 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .cloned()
        .ok_or_else(|| Error::CacheEntry {
            reference: found.referrer.digest().to_string(),
            reason: "the debug-info artifact names no valid build-id".into(),
        })?;
    let sub = dir.join(".build-id").join(&build_id[..2]);
    std::fs::create_dir_all(&sub).map_err(crate::io_err("creating directory", &sub))?;
    let name = format!("{}.debug", &build_id[2..]);
    imgbuild_oci::layout::write_atomic(&sub, &name, &found.bytes)?;
    Ok(sub.join(name))
}

fn fetch(
    cache: &CacheDir,
    location: &ImageLocation,
    types: &[&str],
    registry: &RegistryOptions,
    what: &str,
    hint: &str,
) -> Result<Attachment> {
    let found = match location {
        ImageLocation::Store(name) => {
            let store = Layout::open(cache.store())?;
            local(&store, &store.resolve(name)?, types)?
        }
        ImageLocation::Layout { dir, tag } => {
            let layout = Layout::open(dir)?;
            let image = match tag {
                Some(t) => layout.resolve(t)?,
                None => only_tagged(&layout, dir)?,
            };
            local(&layout, &image, types)?
        }
        ImageLocation::Registry(reference) => pulled(reference, types, registry)?,
    };
    found.ok_or_else(|| Error::NoArtifact {
        image: describe(location),
        what: what.to_string(),
        hint: hint.to_string(),
    })
}

fn describe(location: &ImageLocation) -> String {
    match location {
        ImageLocation::Store(name) => name.clone(),
        ImageLocation::Layout { dir, tag } => match tag {
            Some(t) => format!("oci:{}:{t}", dir.display()),
            None => format!("oci:{}", dir.display()),
        },
        ImageLocation::Registry(r) => r.to_string(),
    }
}

fn only_tagged(layout: &Layout, dir: &Path) -> Result<Descriptor> {
    let index = layout.read_index()?;
    let tagged: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| ref_name(d).is_some())
        .collect();
    match tagged.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(Error::InvalidOutput {
            output: format!("oci:{}", dir.display()),
            reason: format!(
                "holds {} tagged images; name one with oci:DIR:TAG",
                tagged.len()
            ),
        }),
    }
}

fn local(layout: &Layout, image: &Descriptor, types: &[&str]) -> Result<Option<Attachment>> {
    for t in types {
        // The newest (listed last).
        if let Some(referrer) = referrers::find(layout, image.digest(), Some(t))?.pop() {
            let bytes = referrers::document(layout, &referrer)?;
            return Ok(Some(Attachment { referrer, bytes }));
        }
    }
    Ok(None)
}

fn pulled(
    reference: &Reference,
    types: &[&str],
    registry: &RegistryOptions,
) -> Result<Option<Attachment>> {
    let client = Client::connect(reference, registry.client_options(reference))?;
    let repository = &reference.repository;
    let Some((_, _, subject)) = fetch_manifest(&client, repository, reference.target())? else {
        return Err(Error::NoArtifact {
            image: reference.to_string(),
            what: "image".into(),
            hint: " (the registry does not have it)".into(),
        });
    };
    let listed = remote::list(&client, repository, &subject)?;
    let Some(referrer) = types
        .iter()
        .find_map(|t| listed.iter().rev().find(|d| referrers::is_one_of(d, &[t])))
    else {
        return Ok(None);
    };
    let scratch = tempfile::tempdir().map_err(crate::io_err("creating", &std::env::temp_dir()))?;
    let layout = Layout::create(scratch.path())?;
    let damaged = |reason: &str| Error::CacheEntry {
        reference: format!("{repository}@{}", referrer.digest()),
        reason: reason.to_string(),
    };
    let (_, bytes, _) = fetch_manifest(&client, repository, referrer.digest().as_ref())?
        .ok_or_else(|| damaged("listed as a referrer, but the registry does not have it"))?;
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|_| damaged("not an OCI manifest"))?;
    let layer = manifest
        .layers()
        .first()
        .ok_or_else(|| damaged("it has no layer"))?;
    pull_blob(&client, &layout, repository, layer, &NoProgress)?;
    Ok(Some(Attachment {
        referrer: referrer.clone(),
        bytes: layout.read_blob(layer.digest())?,
    }))
}
