//! The cache repository (`--cache-repo`): the dependency, app and unit caches shared through
//! a registry repository. Pulls verify every blob; with trusted keys, a manifest is used only
//! when one of them signed it; in read-only mode nothing is pushed; with a signing key every
//! pushed manifest is signed.
//!
//! Talks to the registry; writes pulled blobs into the local store.

use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::Descriptor;
use imgbuild_registry::{Client, Reference};

use crate::Result;
use crate::cachedir::CacheDir;
use crate::event::{Event, Reporter};
use crate::names::{self, CacheName};
use crate::publish::{
    RegistryOptions, progress, push_progress, read_homes, report_pushed, write_homes,
};

/// The dependency cache shared through a registry repository (`--cache-repo`): entries are
/// the same artifacts as in the local store, tagged `deps-<key>`.
pub(crate) struct RemoteCache {
    client: Client,
    repository: Reference,
    cache: CacheDir,
    /// `false` (`--cache-mode read-only`): every push is skipped, here, in one place.
    writable: bool,
    /// Signs every manifest pushed (`--cache-sign-key`).
    sign_key: Option<std::sync::Arc<crate::signing::SigningKey>>,
    /// When not empty (`--cache-trust`), only manifests signed by one of these are used.
    trust: Vec<crate::signing::VerifyingKey>,
}

impl std::fmt::Debug for RemoteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteCache({})", self.repository)
    }
}

impl RemoteCache {
    /// Connects to the cache repository; `cache` keeps the record of which blobs it holds
    /// (so that a push to another repository of the same registry mounts them).
    pub(crate) fn connect(
        repository: &Reference,
        options: &RegistryOptions,
        cache: &CacheDir,
    ) -> Result<Self> {
        let repository = Reference {
            tag: None,
            digest: None,
            ..repository.clone()
        };
        Ok(Self {
            client: Client::connect(&repository, options.client_options(&repository))?,
            repository,
            cache: cache.clone(),
            writable: true,
            sign_key: None,
            trust: Vec::new(),
        })
    }

    /// Signs what it pushes with `sign_key`, and uses only what one of `trust` signed (when
    /// `trust` is not empty).
    pub(crate) fn signing(
        mut self,
        sign_key: Option<std::sync::Arc<crate::signing::SigningKey>>,
        trust: Vec<crate::signing::VerifyingKey>,
    ) -> Self {
        self.sign_key = sign_key;
        self.trust = trust;
        self
    }

    /// Signs `manifest` (pushed to the cache repository) when a signing key is configured.
    fn sign(&self, store: &Layout, manifest: &Descriptor) -> Result<()> {
        match &self.sign_key {
            Some(key) => {
                crate::signing::remote::sign(&self.client, store, &self.repository, manifest, key)
            }
            None => Ok(()),
        }
    }

    /// With trusted keys configured: the manifest `tag` names, checked, as a digest reference
    /// to pull (so the tag cannot move between the check and the pull); `None` when the
    /// repository has no such tag. Without trusted keys: the tag itself.
    fn trusted(&self, tag: &str) -> Result<Option<Reference>> {
        let reference = self.repository.with_tag(tag);
        if self.trust.is_empty() {
            return Ok(Some(reference));
        }
        let Some((_, _, digest)) = imgbuild_registry::push::fetch_manifest(
            &self.client,
            &self.repository.repository,
            tag,
        )?
        else {
            return Ok(None);
        };
        self.check(&reference.to_string(), digest.as_ref())?;
        Ok(Some(self.repository.with_digest(digest.as_ref())))
    }

    /// Fails with [`crate::Error::UntrustedEntry`] unless a trusted key signed `digest`.
    fn check(&self, what: &str, digest: &str) -> Result<()> {
        if self.trust.is_empty() {
            return Ok(());
        }
        let verdict =
            crate::signing::remote::verify(&self.client, &self.repository, digest, &self.trust)?;
        match verdict.distrust() {
            None => Ok(()),
            Some(reason) => Err(crate::Error::UntrustedEntry {
                reference: format!("{what}@{digest}"),
                reason,
            }),
        }
    }

    /// Makes every push a no-op when `writable` is false (read-only mode).
    pub(crate) fn writable(mut self, writable: bool) -> Self {
        self.writable = writable;
        self
    }

    /// The repository, as given.
    pub(crate) fn repository(&self) -> &Reference {
        &self.repository
    }

    /// Pulls `key`'s entry into `store` (blobs verified) and tags it there; `None` when the
    /// registry does not have it.
    pub(crate) fn pull_entry(
        &self,
        store: &Layout,
        key: &str,
        reporter: &dyn Reporter,
    ) -> Result<Option<crate::depcache::Entry>> {
        match self.pull_tag(store, &CacheName::Deps(key).tag(), reporter)? {
            Some(manifest) => crate::depcache::adopt(store, key, &manifest).map(Some),
            None => Ok(None),
        }
    }

    /// Pulls the newest entry of `package/bin` (see `names::latest_tag`) into `store`; `None` when
    /// the registry has none.
    pub(crate) fn pull_latest(
        &self,
        store: &Layout,
        package: &str,
        bin: &str,
        reporter: &dyn Reporter,
    ) -> Result<Option<crate::depcache::Entry>> {
        match self.pull_tag(store, &names::latest_tag(package, bin), reporter)? {
            Some(desc) => crate::depcache::adopt_as_is(store, &desc).map(Some),
            None => Ok(None),
        }
    }

    /// The config of the artifact tagged `tag`, parsed, without its layers; `None` when the
    /// registry has no such tag or it does not parse as `T`.
    fn fetch_config<T: serde::de::DeserializeOwned>(&self, tag: &str) -> Result<Option<T>> {
        let repository = &self.repository.repository;
        let Some((_, bytes, _)) =
            imgbuild_registry::push::fetch_manifest(&self.client, repository, tag)?
        else {
            return Ok(None);
        };
        let Ok(manifest) = serde_json::from_slice::<imgbuild_oci::spec::ImageManifest>(&bytes)
        else {
            return Ok(None);
        };
        let config =
            imgbuild_registry::push::fetch_blob(&self.client, repository, manifest.config())?;
        Ok(serde_json::from_slice(&config).ok())
    }

    /// The config of the newest entry of `package/bin` (its `deps-latest-…` tag), without
    /// pulling its layers; `None` when the registry has none.
    pub(crate) fn peek_latest(
        &self,
        package: &str,
        bin: &str,
    ) -> Result<Option<crate::depcache::EntryConfig>> {
        self.fetch_config(&names::latest_tag(package, bin))
    }

    /// The cache repository's index of dependency entries (`deps-index`); empty when it has
    /// none or it cannot be parsed (it is rewritten by the next push).
    pub(crate) fn read_index(&self) -> Result<crate::depcache::index::DepsIndex> {
        Ok(self
            .fetch_config(crate::depcache::index::TAG)?
            .unwrap_or_default())
    }

    /// Adds `entry` to the cache repository's index (read, add, write).
    pub(crate) fn add_to_index(
        &self,
        store: &Layout,
        entry: crate::depcache::index::IndexEntry,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        use crate::depcache::index;
        use imgbuild_oci::spec::{ImageManifestBuilder, MediaType, SCHEMA_VERSION};
        let mut current = self.read_index()?;
        current.add(entry);
        let config = store.put_json(MediaType::Other(index::CONFIG_MEDIA_TYPE.into()), &current)?;
        let empty = store.put_bytes(MediaType::EmptyJSON, b"{}")?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageManifest)
            .artifact_type(MediaType::Other(index::ARTIFACT_TYPE.into()))
            .config(config)
            .layers(vec![empty])
            .annotations(names::created(crate::time::now()))
            .build()?;
        let desc = store.put_json(MediaType::ImageManifest, &manifest)?;
        let target = self.repository.with_tag(index::TAG);
        let progress = push_progress(reporter, &target);
        imgbuild_registry::push::push(&self.client, store, &desc, &target, &[], &progress)?;
        Ok(())
    }

    /// Whether the registry has `key`'s entry.
    pub(crate) fn has_entry(&self, key: &str) -> Result<bool> {
        Ok(imgbuild_registry::push::fetch_manifest(
            &self.client,
            &self.repository.repository,
            &CacheName::Deps(key).tag(),
        )?
        .is_some())
    }

    /// Pushes `key`'s entry (manifest `manifest` in `store`); only blobs the registry lacks
    /// are uploaded, so a delta entry sends its new layer.
    pub(crate) fn push_entry(
        &self,
        store: &Layout,
        key: &str,
        manifest: &Descriptor,
        reporter: &dyn Reporter,
    ) -> Result<imgbuild_registry::push::PushReport> {
        if !self.writable {
            return Ok(imgbuild_registry::push::PushReport::default());
        }
        let target = self.repository.with_tag(&CacheName::Deps(key).tag());
        let progress = push_progress(reporter, &target);
        let report =
            imgbuild_registry::push::push(&self.client, store, manifest, &target, &[], &progress)?;
        self.remember(store, manifest);
        self.sign(store, manifest)?;
        report_pushed(reporter, &target, &report);
        Ok(report)
    }
}

impl RemoteCache {
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
        let pulled = imgbuild_registry::push::pull(
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

    /// Pushes `referrers` of `subject` (artifacts in `store`) to the cache repository, where
    /// a fresh runner's app-cache hit finds them (the tag schema where the registry has no
    /// referrers API).
    pub(crate) fn push_referrers(
        &self,
        store: &Layout,
        subject: &Descriptor,
        referrers: &[Descriptor],
        reporter: &dyn Reporter,
    ) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        if referrers.is_empty() {
            return Ok(());
        }
        let progress = push_progress(reporter, &self.repository);
        imgbuild_registry::referrers::push_referrers(
            &self.client,
            store,
            subject.digest(),
            referrers,
            &self.repository,
            &[],
            &progress,
        )?;
        for r in referrers {
            self.remember(store, r);
            self.sign(store, r)?;
        }
        Ok(())
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
            let got = imgbuild_registry::push::pull(
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
    fn remember(&self, store: &Layout, manifest: &Descriptor) {
        let Ok(blobs) = store.image_blobs(manifest) else {
            return;
        };
        let mut homes = read_homes(&self.cache, &self.repository.registry);
        for blob in blobs {
            homes
                .entry(blob.digest().to_string())
                .or_default()
                .insert(self.repository.repository.clone());
        }
        write_homes(&self.cache, &self.repository.registry, &homes);
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
            imgbuild_registry::push::fetch_manifest(&self.client, repository, &tag)?
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
        self.pull_blobs(store, std::slice::from_ref(blob), reporter)
            .map(|_| ())
    }

    /// Pulls blobs of the cache repository into `store`, several at a time (each verified;
    /// those already there are skipped). Returns how many were downloaded.
    pub(crate) fn pull_blobs(
        &self,
        store: &Layout,
        blobs: &[Descriptor],
        reporter: &dyn Reporter,
    ) -> Result<usize> {
        let progress = progress(reporter, &self.repository);
        let pulled = imgbuild_registry::parallel::run(blobs, &progress, &|blob, progress| {
            imgbuild_registry::push::pull_blob(
                &self.client,
                store,
                &self.repository.repository,
                blob,
                progress,
            )
        })?;
        Ok(pulled.into_iter().filter(|p| *p).count())
    }

    /// Whether the cache repository has `tag`.
    pub(crate) fn has_tag(&self, tag: &str) -> Result<bool> {
        Ok(
            imgbuild_registry::push::fetch_manifest(
                &self.client,
                &self.repository.repository,
                tag,
            )?
            .is_some(),
        )
    }

    /// Pushes `manifest` (in `store`) to the cache repository as `tag`.
    pub(crate) fn push_tag(
        &self,
        store: &Layout,
        manifest: &Descriptor,
        tag: &str,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        let target = self.repository.with_tag(tag);
        let progress = push_progress(reporter, &target);
        imgbuild_registry::push::push(&self.client, store, manifest, &target, &[], &progress)?;
        self.remember(store, manifest);
        self.sign(store, manifest)
    }
}
