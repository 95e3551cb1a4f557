//! The cache repository (`--cache-repo`): the dependency, app and unit caches shared through
//! a registry repository. Pulls verify every blob; with trusted keys, a manifest is used only
//! when one of them signed it; in read-only mode nothing is pushed; with a signing key every
//! pushed manifest is signed.
//!
//! Talks to the registry; writes pulled blobs into the local store.

mod pull;

use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::Descriptor;
use imgbuild_registry::{Client, Reference};

use crate::Result;
use crate::cachedir::CacheDir;
use crate::event::Reporter;
use crate::names::CacheName;
use crate::publish::{RegistryOptions, push_progress, report_pushed};

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
    /// The manifest digests a trusted key was found to have signed: a candidate read to be
    /// chosen is not verified again when it is pulled.
    verified: std::sync::Mutex<std::collections::BTreeSet<String>>,
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
            verified: Default::default(),
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
        let Some((_, _, digest)) = imgbuild_registry::pull::fetch_manifest(
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
        let verified = || self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if self.trust.is_empty() || verified().contains(digest) {
            return Ok(());
        }
        let verdict =
            crate::signing::remote::verify(&self.client, &self.repository, digest, &self.trust)?;
        match verdict.distrust() {
            None => {
                verified().insert(digest.to_string());
                Ok(())
            }
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
        let mut current = self.read_index()?;
        current.add(entry);
        let kind = crate::cacheartifact::Kind {
            artifact_type: index::ARTIFACT_TYPE,
            config_type: index::CONFIG_MEDIA_TYPE,
        };
        let desc = crate::cacheartifact::put(store, kind, &current, Vec::new())?;
        let target = self.repository.with_tag(index::TAG);
        let progress = push_progress(reporter, &target);
        imgbuild_registry::push::push(&self.client, store, &desc, &target, &[], &progress)?;
        Ok(())
    }

    /// Whether the registry has `key`'s entry.
    pub(crate) fn has_entry(&self, key: &str) -> Result<bool> {
        Ok(imgbuild_registry::pull::fetch_manifest(
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
    /// Sends the blobs of `manifests` (in `store`) the cache repository lacks, each once, not
    /// the manifests: [`RemoteCache::put_image`] and [`RemoteCache::put_tag`] then make them
    /// visible, a request each.
    pub(crate) fn push_blobs(
        &self,
        store: &Layout,
        manifests: &[Descriptor],
        reporter: &dyn Reporter,
    ) -> Result<()> {
        self.send_blobs(store, manifests, &self.repository, reporter)
    }

    /// [`RemoteCache::push_blobs`], its progress reported under `target`.
    fn send_blobs(
        &self,
        store: &Layout,
        manifests: &[Descriptor],
        target: &Reference,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        let progress = push_progress(reporter, target);
        imgbuild_registry::push::push_blobs(
            &self.client,
            store,
            manifests,
            target,
            &[],
            &progress,
        )?;
        Ok(())
    }

    /// Tags `image`, whose blobs and `referrers`' the cache repository has
    /// ([`RemoteCache::push_blobs`]), as `tag`, and puts the referrers (and their tag-schema
    /// index) at the same time; then signs them, when a key is configured.
    pub(crate) fn put_image(
        &self,
        store: &Layout,
        (image, tag): (&Descriptor, &str),
        referrers: &[Descriptor],
    ) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        let target = self.repository.with_tag(tag);
        let groups = [(image.digest().clone(), referrers.to_vec())];
        imgbuild_registry::referrers::put_with_referrers(
            &self.client,
            store,
            image,
            &target,
            &groups,
        )?;
        // One after another: signatures share blobs, and one blob is never uploaded twice at
        // once.
        for manifest in std::iter::once(image).chain(referrers) {
            self.remember(store, manifest);
            self.sign(store, manifest)?;
        }
        Ok(())
    }

    /// Tags `manifest`, whose blobs the cache repository has ([`RemoteCache::push_blobs`]),
    /// as `tag`, and signs it when a key is configured.
    pub(crate) fn put_tag(&self, store: &Layout, manifest: &Descriptor, tag: &str) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        let target = self.repository.with_tag(tag);
        imgbuild_registry::push::put(&self.client, store, manifest, &target)?;
        self.remember(store, manifest);
        self.sign(store, manifest)
    }

    /// Whether the cache repository has `tag`.
    pub(crate) fn has_tag(&self, tag: &str) -> Result<bool> {
        Ok(
            imgbuild_registry::pull::fetch_manifest(
                &self.client,
                &self.repository.repository,
                tag,
            )?
            .is_some(),
        )
    }

    /// Pushes `manifest` (in `store`) to the cache repository as `tag`: its blobs, then
    /// [`RemoteCache::put_tag`].
    pub(crate) fn push_tag(
        &self,
        store: &Layout,
        manifest: &Descriptor,
        tag: &str,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        let target = self.repository.with_tag(tag);
        self.send_blobs(store, std::slice::from_ref(manifest), &target, reporter)?;
        self.put_tag(store, manifest, tag)
    }
}
