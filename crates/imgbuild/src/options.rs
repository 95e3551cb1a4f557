//! What a build is asked to do ([`BuildOptions`]) and what it gives back ([`BuiltImage`]).
//!
//! Plain values: nothing here does IO.

use std::path::PathBuf;

use imgbuild_cargo::config::ImageConfig;
use imgbuild_cargo::run;
use imgbuild_oci::spec::Descriptor;

use crate::image::Layer;
use crate::output::Output;

/// What to build and where to put it.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// A Cargo.toml or a directory; `None`: the current directory.
    pub manifest_path: Option<PathBuf>,
    /// `-p`: the package holding the binary.
    pub package: Option<String>,
    /// `--bin`: the binary.
    pub bin: Option<String>,
    /// Cargo profile (default `release`).
    pub profile: String,
    /// `--features`.
    pub features: Vec<String>,
    /// `--all-features`.
    pub all_features: bool,
    /// `--no-default-features`.
    pub no_default_features: bool,
    /// Settings that override the metadata tables (from the command line).
    pub overrides: ImageConfig,
    /// Timestamp for every file in the layers and for the image's `created`; `None`: the last
    /// commit's time, else 0.
    pub source_date_epoch: Option<u64>,
    /// The cache directory (see [`crate::default_cache_dir`]).
    pub cache_dir: PathBuf,
    /// Extra destinations; the image always goes to the local store.
    pub outputs: Vec<Output>,
    /// Restore and store compiled dependencies in the local store (default `true`).
    pub dependency_cache: bool,
    /// Registry connection settings (for `docker://` outputs and the cache repository).
    pub registry: crate::publish::RegistryOptions,
    /// A registry repository that shares dependency-cache entries between machines.
    pub cache_repo: Option<imgbuild_registry::Reference>,
    /// Compile even when an image built from the same inputs is cached (it is stored again).
    pub rebuild: bool,
    /// Use this target directory instead of cargo's (`imgbuild verify` gives each of its two
    /// builds its own).
    pub target_dir: Option<PathBuf>,
    /// Let build scripts and proc macros use the network (`--allow-network`): no sandbox, a
    /// separate target directory and dependency key, and an annotation saying so.
    pub allow_network: bool,
    /// Caller variables passed to the compile step besides the built-in allowlist (they are
    /// dependency-key inputs too).
    pub pass_env: Vec<String>,
}

impl BuildOptions {
    /// The feature flags, as cargo commands take them.
    pub fn cargo_features(&self) -> run::Features<'_> {
        run::Features {
            list: &self.features,
            all: self.all_features,
            no_default: self.no_default_features,
        }
    }

    /// Defaults: current directory, release profile, no outputs beyond the local store.
    pub fn new(cache_dir: PathBuf) -> Self {
        Self {
            manifest_path: None,
            package: None,
            bin: None,
            profile: "release".to_string(),
            features: Vec::new(),
            all_features: false,
            no_default_features: false,
            overrides: ImageConfig::default(),
            source_date_epoch: None,
            cache_dir,
            outputs: Vec::new(),
            dependency_cache: true,
            registry: crate::publish::RegistryOptions::default(),
            cache_repo: None,
            allow_network: false,
            pass_env: Vec::new(),
            target_dir: None,
            rebuild: false,
        }
    }
}

/// A built image, in the local store.
#[derive(Debug, Clone)]
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
}
