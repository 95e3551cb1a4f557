//! Stage `outputs`: tag the image in the local store, write every output (`oci:`,
//! `oci-archive:`, `docker-archive:`, `docker://`), record the dependency key for
//! `plan --explain`, and report the image.
//!
//! Writes to the local store, the output paths and the key records; pushes to registries.

use imgbuild_oci::spec::Descriptor;

use crate::Result;
use crate::build::Setup;
use crate::context::Context;
use crate::event::{Event, Reporter};
use crate::image::StoredImage;
use crate::keys::{self, Record};
use crate::options::BuiltImage;
use crate::output::{self, Output};

/// Runs the stage.
pub(crate) fn outputs(
    cx: &Context<'_>,
    s: &Setup,
    image: StoredImage,
    referrers: &[Descriptor],
    reporter: &dyn Reporter,
) -> Result<BuiltImage> {
    let reference = format!("{}:{}", image.name, image.tag);
    {
        let _lock = s.store.lock()?;
        s.store.set_tag(&reference, &image.manifest)?;
    }
    for out in &cx.options.outputs {
        match out {
            Output::Registry { reference } => {
                let pushed = crate::publish::Pushed {
                    manifest: &image.manifest,
                    referrers,
                    default_tag: &image.tag,
                };
                crate::publish::push(
                    &s.store,
                    &pushed,
                    reference,
                    &cx.options.registry,
                    &cx.cache,
                    reporter,
                )?;
            }
            _ => output::write(
                &s.store,
                &image.manifest,
                referrers,
                &image.name,
                &image.tag,
                out,
                cx.epoch,
            )?,
        }
        reporter.report(&Event::Output {
            destination: out.to_string(),
        });
    }
    let target = &cx.one().target;
    keys::write_record(
        &cx.cache,
        target,
        Record::DependencyKey,
        &s.dependency_key.inputs,
    )?;
    reporter.report(&Event::ImageBuilt {
        digest: image.manifest.digest().to_string(),
        reference: reference.clone(),
        config: image.config.digest().to_string(),
        size: image.layers.iter().map(|l| l.descriptor.size()).sum(),
    });
    Ok(BuiltImage {
        manifest: image.manifest,
        config: image.config,
        reference,
        layers: image.layers,
        executable: image.executable,
        store: s.store.root().to_path_buf(),
    })
}
