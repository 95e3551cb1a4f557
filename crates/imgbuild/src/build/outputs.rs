//! Stage `outputs`: tag the image in the local store, write every output (`oci:`,
//! `oci-archive:`, `docker-archive:`, `docker-daemon:`, `docker://`), record the dependency key
//! for `plan --explain`, and report the image.
//!
//! Writes to the local store, the output paths and the key records; pushes to registries and
//! loads into container engines.

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
    let built = write(cx, s, image, referrers, reporter)?;
    report_built(&built, reporter);
    Ok(built)
}

/// The image's last event: it is built, tagged and written everywhere.
pub(crate) fn report_built(built: &BuiltImage, reporter: &dyn Reporter) {
    reporter.report(&Event::ImageBuilt {
        digest: built.manifest.digest().to_string(),
        reference: built.reference.clone(),
        config: built.config.digest().to_string(),
        size: built.layers.iter().map(|l| l.descriptor.size()).sum(),
    });
}

/// The stage without its last event ([`report_built`]).
pub(crate) fn write(
    cx: &Context<'_>,
    s: &Setup,
    image: StoredImage,
    referrers: &[Descriptor],
    reporter: &dyn Reporter,
) -> Result<BuiltImage> {
    let reference = format!("{}:{}", image.name, image.tag);
    // One image of a multi-platform build: the index is tagged and written, not it.
    if !cx.options.in_index {
        let _lock = s.store.lock()?;
        s.store.set_tag(&reference, &image.manifest)?;
    }
    let mut pushed = Vec::new();
    let written = Written {
        manifest: &image.manifest,
        name: &image.name,
        tag: &image.tag,
        referrers,
        native: None,
    };
    for out in &cx.options.outputs {
        let destination = write_one(cx, &s.store, &written, out, &mut pushed, reporter)?;
        reporter.report(&Event::Output { destination });
    }
    let target = &cx.one().target;
    keys::write_record(
        &cx.cache,
        target,
        Record::DependencyKey,
        &s.dependency_key.inputs,
    )?;
    Ok(BuiltImage {
        manifest: image.manifest,
        config: image.config,
        reference,
        layers: image.layers,
        executable: image.executable,
        store: s.store.root().to_path_buf(),
        pushed,
        referrers: referrers.to_vec(),
        platforms: Vec::new(),
    })
}

/// What an output is written from: an image, or a multi-platform index with the one image an
/// engine or a `docker save` archive gets.
pub(crate) struct Written<'a> {
    /// The image's manifest, or the index.
    pub(crate) manifest: &'a Descriptor,
    /// Its name and tag.
    pub(crate) name: &'a str,
    pub(crate) tag: &'a str,
    /// Every referrer (of the image, or of the index's images).
    pub(crate) referrers: &'a [Descriptor],
    /// For an index: the image for the build machine's platform (loaded into an engine).
    pub(crate) native: Option<&'a Descriptor>,
}

/// Writes `out` (a push adds its digest reference to `pushed`); returns the destination as
/// written, a registry's resolved reference included.
pub(crate) fn write_one(
    cx: &Context<'_>,
    store: &imgbuild_oci::layout::Layout,
    image: &Written<'_>,
    out: &Output,
    pushed: &mut Vec<imgbuild_registry::Reference>,
    reporter: &dyn Reporter,
) -> Result<String> {
    if let Some(reference) = out.registry_reference(image.name)? {
        let pushing = crate::publish::Pushed {
            manifest: image.manifest,
            referrers: image.referrers,
            default_tag: image.tag,
            more_tags: &cx.options.push_tags,
            sign_key: cx.keys.push.as_deref(),
        };
        let digest_reference = crate::publish::push(
            store,
            &pushing,
            &reference,
            &cx.options.registry,
            &cx.cache,
            reporter,
        )?;
        pushed.push(digest_reference);
        return Ok(format!("docker://{reference}"));
    }
    if let Output::DockerDaemon { reference } = out {
        let reference = daemon_reference(reference.as_deref(), image.name, image.tag);
        let docker_host = cx.env.get("DOCKER_HOST");
        let manifest = image.native.unwrap_or(image.manifest);
        let loaded = crate::daemon::load(docker_host, store, manifest, &reference, cx.epoch)?;
        reporter.report(&Event::Loaded {
            destination: out.to_string(),
            reference: reference.clone(),
            engine: loaded.engine,
            layers_sent: loaded.sent,
            layers_reused: loaded.reused,
        });
        return Ok(format!("docker-daemon:{reference}"));
    }
    output::write(
        store,
        image.manifest,
        image.referrers,
        image.name,
        image.tag,
        out,
        cx.epoch,
    )?;
    Ok(out.to_string())
}

/// The `name:tag` an engine output loads as: as given, the image's tag added when it names
/// none, the image's own name and tag when it names nothing.
fn daemon_reference(given: Option<&str>, name: &str, tag: &str) -> String {
    match given {
        None => format!("{name}:{tag}"),
        Some(r) if r.rsplit_once(':').is_some_and(|(_, t)| !t.contains('/')) => r.to_string(),
        Some(r) => format!("{r}:{tag}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_engine_output_takes_the_image_tag_when_it_names_none() {
        let r = super::daemon_reference;
        assert_eq!(r(None, "hello", "latest"), "hello:latest");
        assert_eq!(r(Some("app"), "hello", "v2"), "app:v2");
        assert_eq!(
            r(Some("localhost:5000/app"), "hello", "v2"),
            "localhost:5000/app:v2"
        );
        assert_eq!(
            r(Some("localhost:5000/app:v1"), "hello", "v2"),
            "localhost:5000/app:v1"
        );
    }
}
