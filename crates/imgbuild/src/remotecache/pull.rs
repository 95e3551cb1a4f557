//! Pulls from the cache repository: entries, unit records and referrers, every blob verified
//! and every manifest checked against the trusted keys first.
//!
//! Talks to the registry; writes pulled blobs into the local store.

use std::sync::atomic::{AtomicBool, Ordering};

use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::Descriptor;
use imgbuild_registry::Reference;

use super::RemoteCache;
use crate::Result;
use crate::event::{Event, Reporter};
use crate::names::CacheName;
use crate::publish::{add_homes, progress};

impl RemoteCache {
    /// The config of the artifact tagged `tag`, parsed, without its layers; `None` when the
    /// registry has no such tag or it does not parse as `T`.
    pub(super) fn fetch_config<T: serde::de::DeserializeOwned>(
        &self,
        tag: &str,
    ) -> Result<Option<T>> {
        self.config_of(tag, false)
    }

    /// [`RemoteCache::fetch_config`]; when `signed`, an artifact no trusted key signed (with
    /// trusted keys configured) is passed over as if absent.
    fn config_of<T: serde::de::DeserializeOwned>(
        &self,
        tag: &str,
        signed: bool,
    ) -> Result<Option<T>> {
        let repository = &self.repository.repository;
        let Some((_, bytes, digest)) =
            imgbuild_registry::pull::fetch_manifest(&self.client, repository, tag)?
        else {
            return Ok(None);
        };
        if signed {
            match self.check(tag, digest.as_ref()) {
                Err(crate::Error::UntrustedEntry { .. }) => return Ok(None),
                checked => checked?,
            }
        }
        let Ok(manifest) = serde_json::from_slice::<imgbuild_oci::spec::ImageManifest>(&bytes)
        else {
            return Ok(None);
        };
        let config =
            imgbuild_registry::pull::fetch_blob(&self.client, repository, manifest.config())?;
        Ok(serde_json::from_slice(&config).ok())
    }

    /// The configs of the entries `tags` name (binaries' `deps-latest-…` tags), several at
    /// a time, without their layers; `None` where the registry has none, or (with trusted
    /// keys) where no trusted key signed the entry: a candidate that could not be pulled is
    /// never chosen.
    pub(crate) fn peek_configs(
        &self,
        tags: &[String],
    ) -> Result<Vec<Option<crate::depcache::EntryConfig>>> {
        let progress = imgbuild_registry::progress::NoProgress;
        let fetch = |tag: &String, _: &dyn imgbuild_registry::progress::Progress| {
            Ok(self.config_of(tag, true))
        };
        imgbuild_registry::parallel::run(tags, &progress, &fetch)?
            .into_iter()
            .collect()
    }

    /// Pulls the manifest tagged `tag` in the cache repository (and its blobs) into `store`.
    pub(crate) fn pull_tag(
        &self,
        store: &Layout,
        tag: &str,
        reporter: &dyn Reporter,
    ) -> Result<Option<Descriptor>> {
        let Some(reference) = self.trusted(tag)? else {
            return Ok(None);
        };
        let progress = progress(reporter, &reference);
        let pulled = imgbuild_registry::pull::pull(
            &self.client,
            store,
            &reference,
            "linux",
            &crate::image::host_arch().to_string(),
            &progress,
        )?;
        if let Some(p) = &pulled {
            self.remember(store, &p.manifest);
        }
        Ok(pulled.map(|p| p.manifest))
    }

    /// The manifest `tag` names (checked against the trusted keys), without its blobs: the
    /// reference it was read by (a digest when keys are trusted), its media type and bytes;
    /// `None` when the repository has no such tag.
    pub(crate) fn manifest(&self, tag: &str) -> Result<Option<(Reference, String, Vec<u8>)>> {
        let Some(reference) = self.trusted(tag)? else {
            return Ok(None);
        };
        let found = imgbuild_registry::pull::fetch_manifest(
            &self.client,
            &self.repository.repository,
            reference.target(),
        )?;
        Ok(found.map(|(media_type, bytes, _)| (reference, media_type, bytes)))
    }

    /// Pulls one blob into `store`, giving `tap` its bytes as they arrive; `false` when it
    /// was already there (and `tap` got nothing).
    pub(crate) fn pull_layer_tapped(
        &self,
        store: &Layout,
        blob: &Descriptor,
        progress: &dyn imgbuild_registry::progress::Progress,
        tap: &mut dyn imgbuild_registry::Tap,
    ) -> Result<bool> {
        Ok(imgbuild_registry::pull::pull_blob_tapped(
            &self.client,
            store,
            &self.repository.repository,
            blob,
            progress,
            tap,
        )?)
    }

    /// Pulls one blob into `store` within a [`imgbuild_registry::parallel::run`] job;
    /// `false` when it was already there.
    pub(crate) fn pull_layer(
        &self,
        store: &Layout,
        blob: &Descriptor,
        progress: &dyn imgbuild_registry::progress::Progress,
    ) -> imgbuild_registry::Result<bool> {
        imgbuild_registry::pull::pull_blob(
            &self.client,
            store,
            &self.repository.repository,
            blob,
            progress,
        )
    }

    /// Pulls the referrers of `subject` whose artifact type is one of `types` from the cache
    /// repository into `store` (blobs verified) and lists them there.
    pub(crate) fn pull_referrers(
        &self,
        store: &Layout,
        subject: &Descriptor,
        types: &[&str],
        reporter: &dyn Reporter,
    ) -> Result<Vec<Descriptor>> {
        let listed = imgbuild_registry::referrers::list(
            &self.client,
            &self.repository.repository,
            subject.digest(),
        )?;
        let mut pulled = Vec::new();
        for d in listed
            .iter()
            .filter(|d| imgbuild_oci::referrers::is_one_of(d, types))
        {
            let reference = self.repository.with_digest(d.digest().as_ref());
            if let Err(e) = self.check(&self.repository.to_string(), d.digest().as_ref()) {
                reporter.report(&Event::Warning {
                    message: e.to_string(),
                });
                continue;
            }
            let progress = progress(reporter, &reference);
            let arch = crate::image::host_arch().to_string();
            let got = imgbuild_registry::pull::pull(
                &self.client,
                store,
                &reference,
                "linux",
                &arch,
                &progress,
            )?;
            if let Some(p) = got {
                self.remember(store, &p.manifest);
                pulled.push(d.clone());
            }
        }
        let _lock = store.lock()?;
        for d in &pulled {
            imgbuild_oci::referrers::list(store, d)?;
        }
        Ok(pulled)
    }

    /// Records that the cache repository holds `manifest`'s blobs.
    pub(crate) fn remember(&self, store: &Layout, manifest: &Descriptor) {
        let Ok(blobs) = store.image_blobs(manifest) else {
            return;
        };
        let digests = blobs.iter().map(|b| b.digest().to_string());
        let (registry, repository) = (&self.repository.registry, &self.repository.repository);
        add_homes(&self.cache, registry, repository, digests);
    }

    /// Fetches the unit-cache record tagged `units-<id>`: its manifest, and its config into
    /// `store` (verified). Its layers are pulled one by one ([`RemoteCache::pull_blob`]) when
    /// a unit is restored.
    pub(crate) fn fetch_units(
        &self,
        store: &Layout,
        id: &str,
    ) -> Result<Option<crate::unitcache::Loaded>> {
        let tag = CacheName::Units(id).tag();
        let repository = &self.repository.repository;
        let Some((_, bytes, digest)) =
            imgbuild_registry::pull::fetch_manifest(&self.client, repository, &tag)?
        else {
            return Ok(None);
        };
        let reference = self.repository.with_tag(&tag);
        self.check(&reference.to_string(), digest.as_ref())?;
        let invalid = |reason: String| crate::Error::CacheEntry {
            reference: reference.to_string(),
            reason,
        };
        let manifest: imgbuild_oci::spec::ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("not an image manifest: {e}")))?;
        self.pull_blob(store, manifest.config(), &crate::event::Silent)?;
        let config = store.read_blob(manifest.config().digest())?;
        crate::unitcache::parse(&config, manifest.layers().clone(), true)
            .map(Some)
            .map_err(invalid)
    }

    /// Pulls one blob of the cache repository into `store` (verified; nothing to do when it
    /// is there).
    pub(crate) fn pull_blob(
        &self,
        store: &Layout,
        blob: &Descriptor,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        self.pull_blobs(store, std::slice::from_ref(blob), None, reporter)
            .map(|_| ())
    }

    /// Pulls blobs of the cache repository into `store`, several at a time (each verified;
    /// those already there are skipped). Returns how many were downloaded.
    pub(crate) fn pull_blobs(
        &self,
        store: &Layout,
        blobs: &[Descriptor],
        stop: Option<&AtomicBool>,
        reporter: &dyn Reporter,
    ) -> Result<usize> {
        let progress = progress(reporter, &self.repository);
        let stopped = || stop.is_some_and(|s| s.load(Ordering::Relaxed));
        let pulled = imgbuild_registry::parallel::run(blobs, &progress, &|blob, progress| {
            if stopped() {
                return Ok(false);
            }
            self.pull_layer(store, blob, progress)
        })?;
        Ok(pulled.into_iter().filter(|p| *p).count())
    }
}
