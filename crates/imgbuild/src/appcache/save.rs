//! The app cache after a build: stage `record` remembers which files the build read under the
//! static key and tags the image by the app key; [`share`] sends both to the cache repository
//! (the pipeline runs it while the outputs are written).
//!
//! Reads the files it hashes, writes to the local store and the key records, pushes to the
//! cache repository (failures there are warnings).

use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::Descriptor;

use imgbuild_cargo::run::BuildOutcome;

use super::{AppCache, AppRecord};
use crate::Result;
use crate::context::Context;
use crate::event::{Event, Reporter};
use crate::image::StoredImage;
use crate::keys::{self, Record};
use crate::names::CacheName;
use crate::remotecache::RemoteCache;

/// An app entry recorded in the local store, for [`share`] to push.
pub(crate) struct Recorded {
    record: AppRecord,
    /// The record's manifest in the store.
    descriptor: Descriptor,
}

/// Runs the stage: the entry in the local store (`None` with the cache off).
pub(crate) fn record(
    cx: &Context<'_>,
    s: &AppCache<'_>,
    outcome: &BuildOutcome,
    image: &StoredImage,
    reporter: &dyn Reporter,
) -> Result<Option<Recorded>> {
    if !cx.options.caching() {
        return Ok(None);
    }
    let workspace = &cx.workspace;
    let ignore = cx.not_inputs();
    let names = super::collect_inputs(
        &workspace.root,
        outcome,
        &cx.package_dirs,
        &ignore,
        &image.host_files,
    );
    let inputs = super::hash_inputs(&cx.file_hashes, &workspace.root, &names, &|name| {
        cx.compile_env_value(name)
    });
    let target = &cx.one().target;
    let record = AppRecord {
        app_key: super::app_key(&s.static_key.key, &inputs),
        static_key: s.static_key.key.clone(),
        binary: format!("{}/{}", target.package.name, target.bin),
        static_inputs: s.static_key.inputs.clone(),
        inputs,
        image: image.manifest.digest().to_string(),
        reference: format!("{}:{}", image.name, image.tag),
        roles: image.layers.iter().map(|l| l.role).collect(),
        network: image.network,
    };
    let record_desc = super::save_record(s.store, &record, &image.manifest)?;
    keys::write_record(&cx.cache, target, Record::AppStatic, &s.static_key.inputs)?;
    for key in [&record.app_key, &record.static_key] {
        crate::usage::touch(&cx.cache, CacheName::App(key), reporter);
    }
    reporter.report(&Event::AppCache {
        key: record.app_key.clone(),
        hit: false,
        from_registry: false,
        stored: true,
    });
    Ok(Some(Recorded {
        record,
        descriptor: record_desc,
    }))
}

/// Pushes a recorded entry, the image `image` and its `referrers` to the cache repository,
/// when there is one; a failure is a warning.
pub(crate) fn share(
    s: &AppCache<'_>,
    recorded: Option<&Recorded>,
    (image, referrers): (&Descriptor, &[Descriptor]),
    reporter: &dyn Reporter,
) {
    let (Some(remote), Some(recorded)) = (&s.remote, recorded) else {
        return;
    };
    if let Err(e) = push(
        remote,
        s.store,
        &recorded.record,
        (image, referrers),
        &recorded.descriptor,
        reporter,
    ) {
        reporter.report(&Event::Warning {
            message: format!(
                "could not push the app cache entry to {}: {e}",
                remote.repository()
            ),
        });
    }
}

/// Pushes the image (tagged by the app key) with the referrers a hit reuses (SBOM, debug
/// info), then the record (by the static key): a record is never visible before its image and
/// its referrers. The blobs of all of them go up at once, then the image's and referrers'
/// manifests at once, then the record's: three steps of a round trip or three, since a cache
/// repository is often far away.
fn push(
    remote: &RemoteCache,
    store: &Layout,
    record: &AppRecord,
    (image, referrers): (&Descriptor, &[Descriptor]),
    record_desc: &Descriptor,
    reporter: &dyn Reporter,
) -> Result<()> {
    let shared: Vec<Descriptor> = referrers
        .iter()
        .filter(|r| imgbuild_oci::referrers::is_one_of(r, &crate::supply::SHARED_TYPES))
        .cloned()
        .collect();
    let mut manifests = vec![image.clone(), record_desc.clone()];
    manifests.extend(shared.iter().cloned());
    remote.push_blobs(store, &manifests, reporter)?;
    let app_tag = CacheName::App(&record.app_key).tag();
    remote.put_image(store, (image, &app_tag), &shared)?;
    remote.put_tag(
        store,
        record_desc,
        &CacheName::App(&record.static_key).tag(),
    )
}

/// Makes sure the cache repository has a local hit's image and record (it was built before the
/// repository was configured, or its push failed). Failures are warnings.
pub(crate) fn share_hit(
    remote: &RemoteCache,
    store: &Layout,
    record: &AppRecord,
    image: &Descriptor,
    reporter: &dyn Reporter,
) {
    let result = (|| -> Result<()> {
        if remote.has_tag(&CacheName::App(&record.app_key).tag())? {
            return Ok(());
        }
        let record_desc = super::save_record(store, record, image)?;
        let referrers = imgbuild_oci::referrers::find(store, image.digest(), None)?;
        push(
            remote,
            store,
            record,
            (image, &referrers),
            &record_desc,
            reporter,
        )
    })();
    if let Err(e) = result {
        reporter.report(&Event::Warning {
            message: format!(
                "could not share the app cache entry with {}: {e}",
                remote.repository()
            ),
        });
    }
}
