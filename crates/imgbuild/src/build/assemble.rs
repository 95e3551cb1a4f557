//! Stage `assemble`: the image config and the manifest (with the standard annotations), written
//! to the local store as canonical JSON.
//!
//! Writes two blobs to the local store; what they say is decided by the pure [`crate::image`].

use imgbuild_oci::spec::MediaType;

use crate::Result;
use crate::build::Setup;
use crate::build::layers::Layers;
use crate::context::Context;
use crate::image::{self, Provenance, StoredImage};
use crate::supply::Network;

/// Runs the stage.
pub(crate) fn assemble(
    cx: &Context<'_>,
    s: &Setup,
    layers: Layers,
    network: Network,
) -> Result<StoredImage> {
    let provenance = Provenance {
        created: crate::time::rfc3339(cx.epoch),
        revision: cx.revision.clone(),
    };
    let base_history = s
        .base
        .as_ref()
        .and_then(|b| b.config.history().clone())
        .unwrap_or_default();
    let config_json = image::config(
        &layers.spec,
        &layers.layers,
        &provenance.created,
        &base_history,
        cx.platform.as_ref(),
    )?;
    let config = s.store.put_json(MediaType::ImageConfig, &config_json)?;
    let mut annotations = image::annotations(&cx.one().target, &provenance);
    if cx.options.allow_network {
        annotations.insert(
            "dev.imgbuild.hermetic".into(),
            "false: built with --allow-network".into(),
        );
    }
    if let Some(env) = &cx.build_env {
        annotations.insert("dev.imgbuild.build-env.name".into(), env.reference.clone());
        annotations.insert("dev.imgbuild.build-env.digest".into(), env.digest.clone());
    }
    if let Some(b) = &s.base {
        annotations.insert(
            "org.opencontainers.image.base.name".into(),
            b.reference.clone(),
        );
        annotations.insert(
            "org.opencontainers.image.base.digest".into(),
            b.digest.clone(),
        );
    }
    let manifest_json = image::manifest(config.clone(), &layers.layers, &annotations)?;
    let manifest = s.store.put_json(MediaType::ImageManifest, &manifest_json)?;
    Ok(StoredImage {
        manifest,
        config,
        name: layers.spec.name,
        tag: layers.spec.tag,
        layers: layers.layers,
        executable: layers.executable,
        host_files: layers.host_files,
        network: Some(network),
    })
}
