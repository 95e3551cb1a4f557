//! The app cache before compiling: the static key from what is known up front, the lookup of an
//! image built from exactly these inputs (the local store, else the cache repository), and what
//! `plan` says about it.
//!
//! Reads the files a record lists and the local store; pulls records and images from the cache
//! repository.

use std::path::Path;

use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::{Descriptor, ImageConfiguration};

use super::{AppCache, AppRecord, FORMAT, StaticKey};
use crate::context::{Context, Selected};
use crate::event::{Event, Reporter};
use crate::image::{Layer, LayerRole, StoredImage};
use crate::keys::{self, Record};
use crate::names::CacheName;
use crate::options::{CacheMode, FeatureSelection};
use crate::{Error, Result};

/// The static key of `selected`: everything known before compiling that changes the image.
/// `base` is the base image's digest, when one is configured.
pub(crate) fn static_key_of(
    cx: &Context<'_>,
    selected: &Selected,
    dependency_key: &str,
    base: Option<&str>,
) -> Result<StaticKey> {
    let (o, root, target) = (cx.options, &cx.workspace.root, &selected.target);
    let network = if o.allow_network {
        "allowed"
    } else {
        "isolated"
    };
    let mut lines = vec![
        FORMAT.to_string(),
        format!("imgbuild {}", env!("CARGO_PKG_VERSION")),
        format!("binary {}/{}", target.package.name, target.bin),
        format!("dependency-key {dependency_key}"),
        format!("profile {}", o.profile),
        format!(
            "features [{}] all={} no-default={}",
            o.features.listed().join(","),
            o.features == FeatureSelection::All,
            matches!(o.features, FeatureSelection::NoDefault(_))
        ),
        format!("epoch {}", cx.epoch),
        format!("revision {}", cx.revision.as_deref().unwrap_or("-")),
        format!("base {}", base.unwrap_or("scratch")),
        format!("network {network}"),
        format!("pass-env [{}]", o.pass_env.join(",")),
        o.supply.key_line(),
    ];
    let mut manifests = cx.workspace.member_manifests();
    manifests.push(cx.workspace.root_manifest.clone());
    manifests.sort();
    manifests.dedup();
    for m in manifests {
        let bytes = std::fs::read(&m).map_err(crate::io_err("reading", &m))?;
        lines.push(format!(
            "manifest {} {}",
            super::input_name(root, &m),
            imgbuild_oci::digest::sha256(&bytes).digest()
        ));
    }
    let c = &selected.config;
    lines.push(format!(
        "config name={:?} tag={:?} base={:?} entrypoint={:?} cmd={:?} env={:?} workdir={:?} user={:?} expose={:?} labels={:?}",
        c.name, c.tag, c.base, c.entrypoint, c.cmd, c.env, c.workdir, c.user, c.expose, c.labels
    ));
    for f in c.files.iter().flatten() {
        lines.push(format!(
            "config-file {} <- {} mode={:?}",
            f.dst,
            super::input_name(root, &f.src),
            f.mode
        ));
    }
    Ok(StaticKey {
        key: super::static_key(&lines),
        inputs: lines,
    })
}

/// The record for the static key: the local store's, else the cache repository's.
fn find_record(s: &AppCache<'_>, reporter: &dyn Reporter) -> Option<AppRecord> {
    let key = &s.static_key.key;
    if let Some(r) = super::find_record(s.store, key) {
        return Some(r);
    }
    let remote = s.remote?;
    let pulled = remote
        .pull_tag(s.store, &CacheName::App(key).tag(), &crate::event::Silent)
        .and_then(|desc| desc.map(|d| super::adopt_record(s.store, &d)).transpose());
    pulled.unwrap_or_else(|e| {
        remote_warning(reporter, &e);
        None
    })
}

/// The image for `app_key`: the local store's (every blob intact), else the cache
/// repository's. Returns it and whether it was pulled.
fn find_image(
    s: &AppCache<'_>,
    app_key: &str,
    reporter: &dyn Reporter,
) -> Option<(Descriptor, bool)> {
    match super::find_image(s.store, app_key) {
        Ok(Some(found)) => return Some((found, false)),
        Ok(None) => {}
        Err(e) => reporter.report(&Event::CacheUnusable {
            key: app_key.to_string(),
            message: e.to_string(),
        }),
    }
    let remote = s.remote?;
    match remote.pull_tag(s.store, &CacheName::App(app_key).tag(), reporter) {
        Ok(Some(desc)) => match super::adopt_image(s.store, app_key, &desc) {
            Ok(()) => {
                // The SBOM and debug info stored with it, when the repository has them.
                let types = crate::supply::SHARED_TYPES;
                if let Err(e) = remote.pull_referrers(s.store, &desc, &types, reporter) {
                    remote_warning(reporter, &e);
                }
                Some((desc, true))
            }
            Err(e) => {
                remote_warning(reporter, &e);
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            remote_warning(reporter, &e);
            None
        }
    }
}

fn remote_warning(reporter: &dyn Reporter, e: &Error) {
    reporter.report(&Event::Warning {
        message: format!("the cache repository could not be read: {e}"),
    });
}

/// Stage `app cache`: an image built from exactly these inputs, so that nothing needs to be
/// compiled. `None` (a miss) when the cache is off, `--rebuild` is given, no record or image
/// matches, or the stored image is damaged (reported).
pub(crate) fn lookup(
    cx: &Context<'_>,
    s: &AppCache<'_>,
    reporter: &dyn Reporter,
) -> Result<Option<StoredImage>> {
    if cx.options.cache != CacheMode::Use {
        return Ok(None);
    }
    let miss = |key: &str| {
        reporter.report(&Event::AppCache {
            key: key.to_string(),
            hit: false,
            from_registry: false,
            stored: false,
        })
    };
    let Some(record) = find_record(s, reporter) else {
        miss(&s.static_key.key);
        return Ok(None);
    };
    let inputs = super::hash_inputs(
        &cx.file_hashes,
        &cx.workspace.root,
        record.inputs.keys(),
        &|name| cx.compile_env_value(name),
    );
    let key = super::app_key(&s.static_key.key, &inputs);
    let Some((image, from_registry)) = find_image(s, &key, reporter) else {
        miss(&key);
        return Ok(None);
    };
    let record = AppRecord {
        app_key: key.clone(),
        inputs,
        ..record
    };
    let assembled = match stored_image(cx, s.store, &record, &image) {
        Ok(a) => a,
        Err(e) => {
            reporter.report(&Event::CacheUnusable {
                key: key.clone(),
                message: e.to_string(),
            });
            miss(&key);
            return Ok(None);
        }
    };
    reporter.report(&Event::AppCache {
        key,
        hit: true,
        from_registry,
        stored: false,
    });
    if let Some(remote) = s.remote.filter(|_| !from_registry) {
        super::save::share_hit(remote, s.store, &record, &image, reporter);
    }
    for key in [&record.app_key, &record.static_key] {
        crate::usage::touch(&cx.cache, CacheName::App(key), reporter);
    }
    Ok(Some(assembled))
}

/// The image a record names, as the outputs stage takes it: its layers (with their roles from
/// the record and their history lines from the config) and where the last build left the
/// executable.
fn stored_image(
    cx: &Context<'_>,
    store: &Layout,
    record: &AppRecord,
    image: &Descriptor,
) -> Result<StoredImage> {
    let damaged = |reason: String| Error::CacheEntry {
        reference: record.reference.clone(),
        reason,
    };
    let manifest = store.read_manifest(image.digest())?;
    let config: ImageConfiguration =
        serde_json::from_slice(&store.read_blob(manifest.config().digest())?)
            .map_err(|e| damaged(format!("its image config is unreadable: {e}")))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() || record.roles.len() != diff_ids.len() {
        return Err(damaged(format!(
            "its manifest lists {} layers, its config {} and its record {} roles",
            manifest.layers().len(),
            diff_ids.len(),
            record.roles.len()
        )));
    }
    let mut history = config
        .history()
        .iter()
        .flatten()
        .filter(|h| !h.empty_layer().unwrap_or(false))
        .map(|h| h.created_by().clone());
    let layers = manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .zip(&record.roles)
        .map(|((descriptor, diff_id), &role)| {
            let created_by = history.next().flatten().filter(|_| role != LayerRole::Base);
            Ok(Layer {
                descriptor: descriptor.clone(),
                diff_id: diff_id
                    .parse()
                    .map_err(|_| damaged(format!("invalid diff_id {diff_id}")))?,
                created_by,
                role,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let (name, tag) = record
        .reference
        .rsplit_once(':')
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .unwrap_or_else(|| (record.reference.clone(), "latest".into()));
    let target = &cx.one().target;
    Ok(StoredImage {
        manifest: image.clone(),
        config: manifest.config().clone(),
        name,
        tag,
        layers,
        executable: cx
            .profile_dir_in(&cx.workspace.target_dir)
            .join(&target.bin),
        host_files: Vec::new(),
        network: record.network,
    })
}

/// What `imgbuild plan` says about a binary's app key.
#[derive(Debug, Clone, Default)]
pub(crate) struct AppStatus {
    /// The app key, when a record names the inputs.
    pub(crate) key: Option<String>,
    /// Whether the store has the image for it.
    pub(crate) hit: bool,
    /// What changed since the stored build.
    pub(crate) changes: Vec<String>,
}

/// The app key of `selected` as a build would compute it now, without building or pulling.
pub(crate) fn status(
    cx: &Context<'_>,
    selected: &Selected,
    dependency_key: &str,
) -> Result<AppStatus> {
    let base = selected.config.base_image().map(|b| {
        crate::base::recorded_digest(&cx.cache, b).unwrap_or_else(|| "(not resolved yet)".into())
    });
    let static_key = static_key_of(cx, selected, dependency_key, base.as_deref())?;
    let store_root = cx.cache.store();
    let record = Layout::open(&store_root)
        .ok()
        .and_then(|store| super::find_record(&store, &static_key.key).map(|r| (store, r)));
    let Some((store, record)) = record else {
        let changes = match keys::read_record(&cx.cache, &selected.target, Record::AppStatic)? {
            Some(old) => imgbuild_cargo::plan::explain(&old, &static_key.inputs),
            None => vec!["no image of this binary was built with this cache yet".into()],
        };
        return Ok(AppStatus {
            key: None,
            hit: false,
            changes,
        });
    };
    let inputs = super::hash_inputs(&cx.file_hashes, root(cx), record.inputs.keys(), &|name| {
        cx.compile_env_value(name)
    });
    let key = super::app_key(&static_key.key, &inputs);
    let hit = super::find_image(&store, &key).ok().flatten().is_some();
    Ok(AppStatus {
        changes: super::changed_inputs(&record, &inputs),
        key: Some(key),
        hit,
    })
}

fn root<'a>(cx: &'a Context<'_>) -> &'a Path {
    &cx.workspace.root
}
