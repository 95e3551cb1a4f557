//! Multi-platform builds (`--platform a,b`, or `platforms = [...]` in the metadata table):
//! the pipeline runs once per platform — each with cargo's `--target`, its own target
//! directory, dependency key and cache entries — and the images are listed in one OCI image
//! index, which is what is tagged, written and pushed. An engine (`docker-daemon:`) gets the
//! build machine's own image; a `docker save` archive cannot hold an index.
//!
//! Writes the index to the local store; the outputs go through the `outputs` stage's writer.

use std::collections::HashMap;

use imgbuild_oci::spec::{
    Arch, Descriptor, ImageIndexBuilder, MediaType, Os, PlatformBuilder, SCHEMA_VERSION,
};

use crate::build::outputs::{self, Written};
use crate::context::{self, Context, Scope};
use crate::event::{Event, PlatformImage, Reporter};
use crate::options::BuiltImage;
use crate::output::Output;
use crate::platform::{self, Platform};
use crate::{Error, Result};

/// The platforms to build for: the options' (`--platform`), else the metadata table's; empty:
/// the build machine's, one plain image.
pub(crate) fn platforms(cx: &Context<'_>) -> Result<Vec<Platform>> {
    if !cx.options.platforms.is_empty() || cx.options.for_platform.is_some() {
        return Ok(cx.options.platforms.clone());
    }
    let written = cx.one().config.platforms.clone().unwrap_or_default();
    platform::parse_list(&written.join(","))
}

/// Builds one image per platform and the index over them, then writes the outputs.
pub(crate) fn build_index(
    cx: &Context<'_>,
    platforms: &[Platform],
    reporter: &dyn Reporter,
) -> Result<BuiltImage> {
    for out in &cx.options.outputs {
        if let Output::DockerArchive { .. } = out {
            return Err(Error::InvalidOutput {
                output: out.to_string(),
                reason: "a docker-archive holds one image, not a multi-platform index; write oci:, oci-archive: or docker://, or build one --platform".into(),
            });
        }
    }
    let per_platform: Vec<_> = platforms
        .iter()
        .map(|p| {
            let mut options = cx.options.clone();
            options.platforms = Vec::new();
            options.for_platform = Some(p.clone());
            options.in_index = true;
            options.resolved_keys = Some(cx.keys.clone());
            options.outputs = Vec::new();
            options
        })
        .collect();
    // Every platform's toolchain is checked before anything compiles.
    let contexts = per_platform
        .iter()
        .map(|options| context::prepare(options, Scope::One, reporter))
        .collect::<Result<Vec<_>>>()?;
    let mut images = Vec::new();
    for (p, pcx) in platforms.iter().zip(&contexts) {
        images.push((p.clone(), super::single(pcx, None, reporter)?));
    }
    let WrittenIndex {
        index,
        reference,
        referrers,
        pushed,
    } = write_index(cx, &images, reporter)?;
    let first = images[0].1.clone();
    Ok(BuiltImage {
        manifest: index,
        reference,
        pushed,
        referrers,
        platforms: images,
        ..first
    })
}

/// The index as stored and written.
struct WrittenIndex {
    /// Its descriptor in the store.
    index: Descriptor,
    /// Its `name:tag` there.
    reference: String,
    /// Every image's referrers.
    referrers: Vec<Descriptor>,
    /// The digest references of the registry outputs.
    pushed: Vec<imgbuild_registry::Reference>,
}

/// Stores the index over `images`, tags it, and writes every output from it.
fn write_index(
    cx: &Context<'_>,
    images: &[(Platform, BuiltImage)],
    reporter: &dyn Reporter,
) -> Result<WrittenIndex> {
    let store = crate::repair::open_store(&cx.cache, reporter)?;
    let _writer = store.writer_lock()?;
    let index = index_of(images)?;
    let index = store.put_json(MediaType::ImageIndex, &index)?;
    let reference = images[0].1.reference.clone();
    {
        let _lock = store.lock()?;
        store.set_tag(&reference, &index)?;
    }
    let (name, tag) = reference.rsplit_once(':').unwrap_or((&reference, "latest"));
    let referrers: Vec<Descriptor> = images
        .iter()
        .flat_map(|(_, b)| b.referrers.iter().cloned())
        .collect();
    let host = host_triple(cx)?;
    let native = images
        .iter()
        .find(|(p, _)| p.is_native(&host))
        .or_else(|| images.iter().find(|(p, _)| p.triple() == host))
        .map(|(_, b)| &b.manifest);
    let written = Written {
        manifest: &index,
        name,
        tag,
        referrers: &referrers,
        native,
    };
    let mut pushed = Vec::new();
    for out in &cx.options.outputs {
        if matches!(out, Output::DockerDaemon { .. }) && native.is_none() {
            return Err(Error::InvalidOutput {
                output: out.to_string(),
                reason: format!(
                    "none of the platforms runs on this machine ({host}); add its own platform to --platform"
                ),
            });
        }
        let destination = outputs::write_one(cx, &store, &written, out, &mut pushed, reporter)?;
        reporter.report(&Event::Output { destination });
    }
    reporter.report(&Event::IndexBuilt {
        digest: index.digest().to_string(),
        reference: reference.clone(),
        platforms: images
            .iter()
            .map(|(p, b)| PlatformImage {
                platform: p.to_string(),
                digest: b.manifest.digest().to_string(),
            })
            .collect(),
    });
    Ok(WrittenIndex {
        index,
        reference,
        referrers,
        pushed,
    })
}

/// The OCI image index listing each platform's image.
fn index_of(images: &[(Platform, BuiltImage)]) -> Result<imgbuild_oci::spec::ImageIndex> {
    let mut manifests = Vec::new();
    for (p, built) in images {
        let mut platform = PlatformBuilder::default()
            .architecture(Arch::from(p.architecture.as_str()))
            .os(Os::Linux);
        if let Some(v) = &p.variant {
            platform = platform.variant(v.clone());
        }
        let mut desc = built.manifest.clone();
        desc.set_platform(Some(platform.build().map_err(imgbuild_oci::Error::from)?));
        desc.set_annotations(None::<HashMap<String, String>>);
        manifests.push(desc);
    }
    Ok(ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(imgbuild_oci::Error::from)?)
}

fn host_triple(cx: &Context<'_>) -> Result<String> {
    let rustc =
        crate::probecache::rustc_version(&cx.cache, &cx.env, &cx.toolchain, &cx.workspace.root)?;
    Ok(imgbuild_cargo::run::host_triple(&rustc).unwrap_or_default())
}
