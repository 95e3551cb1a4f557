//! What a build is asked to do ([`BuildOptions`]) and what it gives back ([`BuiltImage`]).
//!
//! Plain values: nothing here does IO.

use std::path::PathBuf;

use imgbuild_cargo::config::ImageConfig;
use imgbuild_cargo::run;
use imgbuild_oci::spec::Descriptor;

use crate::cachedir::CacheDir;
use crate::image::Layer;
use crate::output::Output;
use crate::publish::RegistryOptions;

/// Which cargo features a build enables.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeatureSelection {
    /// The default features and these (`--features`).
    Default(Vec<String>),
    /// Only these (`--no-default-features --features …`).
    NoDefault(Vec<String>),
    /// Every feature (`--all-features`).
    All,
}

impl Default for FeatureSelection {
    fn default() -> Self {
        FeatureSelection::Default(Vec::new())
    }
}

impl FeatureSelection {
    /// The selection cargo's three flags make (`--all-features` wins over the others).
    pub fn from_flags(features: Vec<String>, all: bool, no_default: bool) -> Self {
        match (all, no_default) {
            (true, _) => FeatureSelection::All,
            (false, true) => FeatureSelection::NoDefault(features),
            (false, false) => FeatureSelection::Default(features),
        }
    }

    /// The listed features.
    pub fn listed(&self) -> &[String] {
        match self {
            FeatureSelection::Default(f) | FeatureSelection::NoDefault(f) => f,
            FeatureSelection::All => &[],
        }
    }

    /// Cargo's flags for this selection.
    pub(crate) fn cargo(&self) -> run::Features<'_> {
        run::Features {
            list: self.listed(),
            all: matches!(self, FeatureSelection::All),
            no_default: matches!(self, FeatureSelection::NoDefault(_)),
        }
    }
}

/// How a build uses the caches (the dependency cache and the app cache, local and shared).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheMode {
    /// Restore compiled dependencies, return a stored image built from the same inputs without
    /// compiling, store what was built.
    #[default]
    Use,
    /// Compile even when an image built from the same inputs is stored (dependencies are still
    /// restored); store the result again.
    Rebuild,
    /// Neither restore nor store anything (the image still goes to the local store).
    Off,
}

/// How a build uses the cache repository (`--cache-mode`, `IMGBUILD_CACHE_MODE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteCacheMode {
    /// Pull entries and push what the build stores (the main branch's builds).
    #[default]
    ReadWrite,
    /// Pull and use entries, never push anything to it (pull requests, forks: builds that
    /// must not put compiled code into later builds).
    ReadOnly,
    /// Leave the cache repository alone.
    Off,
}

/// Which SBOM a build attaches to the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SbomFormat {
    /// SPDX 2.3 JSON (`application/spdx+json`).
    #[default]
    Spdx,
    /// CycloneDX 1.6 JSON (`application/vnd.cyclonedx+json`).
    CycloneDx,
    /// No SBOM.
    None,
}

/// What a build records about the image's supply chain, besides the image. The default:
/// an SPDX SBOM and a provenance statement attached as referrers, the dependency list
/// embedded in the binary, debug info split off into its own artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SupplyChain {
    /// The SBOM attached.
    pub sbom: SbomFormat,
    /// Attach an in-toto statement with SLSA v1 provenance.
    pub provenance: bool,
    /// Embed the dependency list in the binary (`cargo auditable`'s `.dep-v0` section).
    pub audit_data: bool,
    /// Ship the binary's debug info inside the image instead of as a separate artifact.
    pub keep_debuginfo: bool,
}

impl Default for SupplyChain {
    fn default() -> Self {
        Self {
            sbom: SbomFormat::Spdx,
            provenance: true,
            audit_data: true,
            keep_debuginfo: false,
        }
    }
}

impl SupplyChain {
    /// The line the app cache's static key gets: each of these changes what is shipped.
    pub(crate) fn key_line(&self) -> String {
        format!(
            "supply sbom={:?} provenance={} audit-data={} keep-debuginfo={}",
            self.sbom, self.provenance, self.audit_data, self.keep_debuginfo
        )
    }
}

/// What to build and where to put it. Start from [`BuildOptions::new`] and set what differs,
/// with the chaining setters or the fields.
///
/// ```
/// use imgbuild::{BuildOptions, CacheMode, FeatureSelection};
///
/// let options = BuildOptions::new(imgbuild::default_cache_dir())
///     .manifest_path("examples/hello/Cargo.toml")
///     .features(FeatureSelection::Default(vec!["tls".into()]))
///     .cache(CacheMode::Rebuild)
///     .output("oci:target/images/hello".parse()?);
/// assert_eq!(options.profile, "release");
/// # Ok::<(), imgbuild::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildOptions {
    /// A Cargo.toml or a directory; `None`: the current directory.
    pub manifest_path: Option<PathBuf>,
    /// `-p`: the package holding the binary.
    pub package: Option<String>,
    /// `--bin`: the binary.
    pub bin: Option<String>,
    /// Cargo profile (default `release`).
    pub profile: String,
    /// The cargo features.
    pub features: FeatureSelection,
    /// Settings that override the metadata tables (from the command line).
    pub overrides: ImageConfig,
    /// Timestamp for every file in the layers and for the image's `created`; `None`: the last
    /// commit's time, else 0.
    pub source_date_epoch: Option<u64>,
    /// The cache directory (see [`crate::default_cache_dir`]).
    pub cache_dir: CacheDir,
    /// Extra destinations; the image always goes to the local store.
    pub outputs: Vec<Output>,
    /// The platforms to build for (`--platform`): empty, the build machine's; several, one
    /// image each and an image index over them.
    pub platforms: Vec<crate::platform::Platform>,
    /// The one platform this build is for, when it is one image of a multi-platform build
    /// (or a single `--platform` other than the host's).
    pub(crate) for_platform: Option<crate::platform::Platform>,
    /// This build makes one image of an index: it is not tagged in the store by itself.
    pub(crate) in_index: bool,
    /// More tags for every registry output: each gets its own tag (or the image's), then
    /// these, with one push of the blobs.
    pub push_tags: Vec<String>,
    /// How the caches are used.
    pub cache: CacheMode,
    /// Registry connection settings (for `docker://` outputs and the cache repository).
    pub registry: RegistryOptions,
    /// A registry repository that shares cache entries between machines.
    pub cache_repo: Option<imgbuild_registry::Reference>,
    /// How the cache repository is used.
    pub cache_repo_mode: RemoteCacheMode,
    /// A private key (PEM) that signs every manifest pushed to the cache repository.
    pub cache_sign_key: Option<PathBuf>,
    /// Public keys (PEM): when given, only cache entries signed by one of them are used.
    pub cache_trust: Vec<PathBuf>,
    /// A private key (PEM) that signs pushed images, the way cosign does.
    pub sign_key: Option<PathBuf>,
    /// Use this target directory instead of cargo's (`imgbuild verify` gives each of its two
    /// builds its own).
    pub target_dir: Option<PathBuf>,
    /// Let build scripts and proc macros use the network (`--allow-network`): no sandbox, a
    /// separate target directory and dependency key, and an annotation saying so.
    pub allow_network: bool,
    /// Caller variables passed to the compile step besides the built-in allowlist (they are
    /// dependency-key inputs too).
    pub pass_env: Vec<String>,
    /// The build environment (`--build-env`): an image whose toolchain compiles the binary,
    /// entered with bubblewrap. `None`: the `build-env` of the metadata tables, else the host.
    pub build_env: Option<String>,
    /// A build environment already resolved (by `verify`, for its two builds, so that the
    /// copies neither pull nor unpack it again).
    pub(crate) resolved_env: Option<crate::envimage::BuildEnv>,
    /// The signing keys already read (by a multi-platform build, for its platforms' builds:
    /// a cosign key is decrypted once).
    pub(crate) resolved_keys: Option<std::sync::Arc<crate::signing::Keys>>,
    /// SBOM, provenance, audit data and debug info.
    pub supply: SupplyChain,
}

impl BuildOptions {
    /// The key files this build uses: the cache signing key only when it writes to a cache
    /// repository.
    pub(crate) fn key_files(&self) -> crate::signing::KeyFiles<'_> {
        let writes_cache = self.cache_repo.is_some()
            && self.caching()
            && self.cache_repo_mode == RemoteCacheMode::ReadWrite;
        crate::signing::KeyFiles {
            push: self.sign_key.as_deref(),
            cache: self.cache_sign_key.as_deref().filter(|_| writes_cache),
            trust: &self.cache_trust,
        }
    }

    /// Defaults: current directory, release profile, default features, caches in use, no
    /// outputs beyond the local store.
    pub fn new(cache_dir: impl Into<CacheDir>) -> Self {
        Self {
            manifest_path: None,
            package: None,
            bin: None,
            profile: "release".to_string(),
            features: FeatureSelection::default(),
            overrides: ImageConfig::default(),
            source_date_epoch: None,
            cache_dir: cache_dir.into(),
            outputs: Vec::new(),
            push_tags: Vec::new(),
            platforms: Vec::new(),
            for_platform: None,
            in_index: false,
            cache: CacheMode::default(),
            registry: RegistryOptions::default(),
            cache_repo: None,
            cache_repo_mode: RemoteCacheMode::ReadWrite,
            cache_sign_key: None,
            cache_trust: Vec::new(),
            sign_key: None,
            allow_network: false,
            pass_env: Vec::new(),
            target_dir: None,
            build_env: None,
            resolved_env: None,
            resolved_keys: None,
            supply: SupplyChain::default(),
        }
    }

    /// The project: a Cargo.toml or its directory.
    pub fn manifest_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.manifest_path = Some(path.into());
        self
    }

    /// The package holding the binary (`-p`).
    pub fn package(mut self, name: impl Into<String>) -> Self {
        self.package = Some(name.into());
        self
    }

    /// The binary (`--bin`).
    pub fn bin(mut self, name: impl Into<String>) -> Self {
        self.bin = Some(name.into());
        self
    }

    /// The cargo profile.
    pub fn profile(mut self, name: impl Into<String>) -> Self {
        self.profile = name.into();
        self
    }

    /// The cargo features.
    pub fn features(mut self, features: FeatureSelection) -> Self {
        self.features = features;
        self
    }

    /// One more destination.
    pub fn output(mut self, output: Output) -> Self {
        self.outputs.push(output);
        self
    }

    /// Tags every registry output with `tag` as well (see [`BuildOptions::push_tags`]).
    pub fn push_tag(mut self, tag: impl Into<String>) -> Self {
        self.push_tags.push(tag.into());
        self
    }

    /// How the caches are used.
    pub fn cache(mut self, mode: CacheMode) -> Self {
        self.cache = mode;
        self
    }

    /// The registry repository that shares cache entries between machines.
    pub fn cache_repo(mut self, repository: imgbuild_registry::Reference) -> Self {
        self.cache_repo = Some(repository);
        self
    }

    /// Compiles inside this build environment (a registry reference, `oci:DIR[:TAG]`, or a
    /// name in the local store).
    pub fn build_env(mut self, reference: impl Into<String>) -> Self {
        self.build_env = Some(reference.into());
        self
    }

    /// What the build records about the image's supply chain.
    pub fn supply(mut self, supply: SupplyChain) -> Self {
        self.supply = supply;
        self
    }

    /// The timestamp of every file and of the image.
    pub fn source_date_epoch(mut self, seconds: u64) -> Self {
        self.source_date_epoch = Some(seconds);
        self
    }

    /// The feature flags, as cargo commands take them.
    pub(crate) fn cargo_features(&self) -> run::Features<'_> {
        self.features.cargo()
    }

    /// Whether the caches are read and written at all.
    pub(crate) fn caching(&self) -> bool {
        self.cache != CacheMode::Off
    }
}

/// A built image, in the local store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuiltImage {
    /// The manifest's descriptor; its digest is the image's identity.
    pub manifest: Descriptor,
    /// The config's descriptor.
    pub config: Descriptor,
    /// `name:tag` in the local store.
    pub reference: String,
    /// The layers, most stable first.
    pub layers: Vec<Layer>,
    /// The compiled executable.
    pub executable: PathBuf,
    /// The local store.
    pub store: PathBuf,
    /// Where it was pushed, one digest reference (`REGISTRY/REPOSITORY@sha256:…`) per
    /// registry output.
    pub pushed: Vec<imgbuild_registry::Reference>,
    /// For a multi-platform build (`manifest` is then the image index): each platform's
    /// image; empty for a single image.
    pub platforms: Vec<(crate::platform::Platform, BuiltImage)>,
    /// The image's referrers in the store (SBOM, provenance, debug info).
    pub(crate) referrers: Vec<Descriptor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargos_flags_map_to_one_selection() {
        let f = || vec!["a".to_string()];
        assert_eq!(
            FeatureSelection::from_flags(f(), true, true),
            FeatureSelection::All
        );
        assert_eq!(
            FeatureSelection::from_flags(f(), false, true),
            FeatureSelection::NoDefault(f())
        );
        let d = FeatureSelection::from_flags(f(), false, false);
        let cargo = d.cargo();
        assert_eq!(
            (cargo.list, cargo.all, cargo.no_default),
            (&f()[..], false, false)
        );
    }
}
