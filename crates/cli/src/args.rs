//! The flags of every subcommand (clap's derive types) and how they become [`BuildOptions`].

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use imgbuild::BuildOptions;

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Compile a binary and build its image (into the local store and any --output).
    Build(Box<BuildArgs>),
    /// Build, then push the image to a registry: `imgbuild push REGISTRY/REPOSITORY[:TAG]`.
    Push(Box<PushArgs>),
    /// Build and push every image `imgbuild://PACKAGE[/BIN]` names in YAML files, and print
    /// the YAML with each replaced by the pushed digest reference.
    Resolve(Box<ResolveArgs>),
    /// Print each binary's dependency-tree cache key and the inputs it hashes.
    Plan(PlanArgs),
    /// Build twice in two temporary folders and check that both images are identical.
    Verify(VerifyArgs),
    /// Print the SBOM attached to an image (local store, oci:DIR[:TAG] or a registry).
    Sbom(crate::artifacts::SbomArgs),
    /// Fetch an image's split-off debug info into DIR/.build-id/ for gdb.
    Debuginfo(crate::artifacts::DebuginfoArgs),
    /// Check an image's signature (cosign's layout) against a public key.
    VerifySignature(crate::artifacts::VerifySignatureArgs),
    /// Print the public key (PEM) of a signing key, for `--cache-trust` and `verify-signature`.
    PublicKey(crate::artifacts::PublicKeyArgs),
    /// Inspect and prune the dependency cache in the local store.
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Subcommand)]
pub(crate) enum CacheCommand {
    /// List dependency-cache entries: key, binary, layers, size, last use.
    Ls(StoreArgs),
    /// Remove entries unused for a while or beyond a total size, then unreferenced blobs.
    Prune(PruneArgs),
    /// Verify the store: every blob against its digest, every tag, entry and record, and
    /// leftovers of killed processes; exits 1 when something is wrong.
    Check(CheckArgs),
}

#[derive(Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Remove what cannot be trusted (damaged blobs and the tags that use them, unreadable
    /// records) and the leftovers; the next build writes good copies.
    #[arg(long)]
    pub(crate) repair: bool,
}

#[derive(Args)]
pub(crate) struct StoreArgs {
    /// Cache directory holding the local store.
    #[arg(long, env = "IMGBUILD_CACHE_DIR", value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Output format for stdout.
    #[arg(long, value_enum, default_value = "human")]
    pub(crate) message_format: MessageFormat,
}

#[derive(Args)]
pub(crate) struct PruneArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Remove entries not used for longer than this (e.g. 30d, 12h, 90m; default 30d unless
    /// --max-size or --all is given).
    #[arg(long, value_name = "AGE")]
    pub(crate) older_than: Option<String>,
    /// Then remove the least recently used entries until the store is at most this big
    /// (e.g. 10G, 500M).
    #[arg(long, value_name = "SIZE")]
    pub(crate) max_size: Option<String>,
    /// Remove every dependency-cache entry (images in the store are kept).
    #[arg(long, conflicts_with_all = ["older_than", "max_size", "cache_repo"])]
    pub(crate) all: bool,
    /// Prune this cache repository (a registry shared through --cache-repo) instead of the
    /// local store: stale `deps-…`, `app-…` and `units-…` tags and their manifests are deleted
    /// through the registry API; the registry's garbage collection then frees their blobs.
    #[arg(long, value_name = "REF", conflicts_with = "max_size")]
    pub(crate) cache_repo: Option<String>,
    /// With --cache-repo: keep each binary's newest N dependency entries and app entries,
    /// whatever their age.
    #[arg(long, value_name = "N", requires = "cache_repo")]
    pub(crate) keep_latest: Option<usize>,
    /// With --cache-repo: print what would be deleted, delete nothing.
    #[arg(long, requires = "cache_repo")]
    pub(crate) dry_run: bool,
    /// Allow plain HTTP to this registry (HOST[:PORT]; repeatable). Localhost always may.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub(crate) insecure_registry: Vec<String>,
}

#[derive(Args)]
pub(crate) struct PushArgs {
    /// Where to push, e.g. localhost:5000/team/app:1.0 (the tag defaults to the image's);
    /// without it, REPO/<image name> of --repo.
    #[arg(value_name = "REF")]
    pub(crate) reference: Option<String>,
    /// The repository images go to when no REF is given: REPO/<image name>, e.g.
    /// ghcr.io/acme gives ghcr.io/acme/<image name>.
    #[arg(long, env = "IMGBUILD_REPO", value_name = "REPO")]
    pub(crate) repo: Option<String>,
    #[command(flatten)]
    pub(crate) build: BuildArgs,
}

#[derive(Args)]
pub(crate) struct ResolveArgs {
    /// A YAML file, a directory (its *.yaml and *.yml files, by name) or - for stdin
    /// (repeatable).
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR",
        required = true
    )]
    pub(crate) files: Vec<PathBuf>,
    /// The repository images go to: REPO/<image name>, e.g. ghcr.io/acme.
    #[arg(long, env = "IMGBUILD_REPO", value_name = "REPO")]
    pub(crate) repo: Option<String>,
    #[command(flatten)]
    pub(crate) build: BuildArgs,
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pub(crate) selection: Selection,
    /// Pass this environment variable to the compile step (repeatable).
    #[arg(long, value_name = "NAME")]
    pub(crate) pass_env: Vec<String>,
}

#[derive(Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    pub(crate) selection: Selection,
    /// Say what changed in each key's inputs since that binary's last build, and which
    /// dependency entry a build would start from.
    #[arg(long)]
    pub(crate) explain: bool,
    /// With --explain: when the local store has no entry to start from, look in this cache
    /// repository, as a fresh runner would.
    #[arg(long, env = "IMGBUILD_CACHE_REPO", value_name = "REF")]
    pub(crate) cache_repo: Option<String>,
    /// Allow plain HTTP to this registry (HOST[:PORT]; repeatable). Localhost always may.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub(crate) insecure_registry: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum MessageFormat {
    Human,
    Json,
}

/// The flags `build` and `plan` share: which binary, how cargo compiles it, where the cache
/// is, and what stdout carries.
#[derive(Args, Clone)]
pub(crate) struct Selection {
    /// Path to Cargo.toml (or its directory); default: the current directory.
    #[arg(long, value_name = "PATH")]
    pub(crate) manifest_path: Option<PathBuf>,
    /// Package holding the binary.
    #[arg(short, long, value_name = "SPEC")]
    pub(crate) package: Option<String>,
    /// Binary to package (required by `build` when there are several).
    #[arg(long, value_name = "NAME")]
    pub(crate) bin: Option<String>,
    /// Cargo profile.
    #[arg(long, default_value = "release", value_name = "PROFILE")]
    pub(crate) profile: String,
    /// Features to activate (comma-separated or repeated).
    #[arg(short = 'F', long, value_delimiter = ',', value_name = "FEATURES")]
    pub(crate) features: Vec<String>,
    /// Activate all features.
    #[arg(long)]
    pub(crate) all_features: bool,
    /// Do not activate the default feature.
    #[arg(long)]
    pub(crate) no_default_features: bool,
    /// Cache directory holding the local store.
    #[arg(long, env = "IMGBUILD_CACHE_DIR", value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Compile inside this build-environment image (registry reference, oci:DIR[:TAG] or a
    /// name in the local store; pin it with @sha256:…); default: the host's toolchain.
    #[arg(long, env = "IMGBUILD_BUILD_ENV", value_name = "REF")]
    pub(crate) build_env: Option<String>,
    /// Output format for stdout.
    #[arg(long, value_enum, default_value = "human")]
    pub(crate) message_format: MessageFormat,
}

impl Selection {
    /// Build options carrying these flags (and nothing else set).
    pub(crate) fn options(self) -> BuildOptions {
        let mut options =
            BuildOptions::new(self.cache_dir.unwrap_or_else(imgbuild::default_cache_dir));
        options.manifest_path = self.manifest_path;
        options.package = self.package;
        options.bin = self.bin;
        options.profile = self.profile;
        options.build_env = self.build_env;
        options.features = imgbuild::FeatureSelection::from_flags(
            self.features,
            self.all_features,
            self.no_default_features,
        );
        options
    }
}

#[derive(Args)]
pub(crate) struct BuildArgs {
    #[command(flatten)]
    pub(crate) selection: Selection,
    /// Also write the image to DEST: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG],
    /// docker-daemon:NAME[:TAG] (the engine at DOCKER_HOST), docker://REF.
    #[arg(short, long = "output", value_name = "DEST")]
    pub(crate) outputs: Vec<String>,
    /// Neither restore compiled dependencies from the cache nor store them (nor reuse a
    /// stored image).
    #[arg(long)]
    pub(crate) no_dependency_cache: bool,
    /// Compile even when an image built from exactly these inputs is cached.
    #[arg(long)]
    pub(crate) rebuild: bool,
    /// Share the dependency cache through this registry repository (pull missing entries,
    /// push new ones), e.g. ghcr.io/org/app-cache.
    #[arg(long, env = "IMGBUILD_CACHE_REPO", value_name = "REF")]
    pub(crate) cache_repo: Option<String>,
    /// How the cache repository is used: read-write (pull and push), read-only (pull and use,
    /// never push: pull requests, forks) or off.
    #[arg(
        long,
        env = "IMGBUILD_CACHE_MODE",
        value_enum,
        default_value = "read-write"
    )]
    pub(crate) cache_mode: CacheModeArg,
    /// Sign every manifest pushed to the cache repository with this private key (PEM:
    /// ECDSA P-256 or Ed25519).
    #[arg(long, env = "IMGBUILD_CACHE_SIGN_KEY", value_name = "FILE")]
    pub(crate) cache_sign_key: Option<PathBuf>,
    /// Use only cache entries signed by this public key (PEM; repeatable, or
    /// comma-separated in IMGBUILD_CACHE_TRUST). Others are a miss, with a warning.
    #[arg(
        long,
        env = "IMGBUILD_CACHE_TRUST",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub(crate) cache_trust: Vec<PathBuf>,
    /// Sign pushed images with this private key (PEM), the way `cosign sign --key` does.
    #[arg(long, value_name = "FILE")]
    pub(crate) sign_key: Option<PathBuf>,
    /// Let build scripts and proc macros reach the network (no sandbox; the image is
    /// annotated as not hermetic and shares no compiled dependencies with hermetic builds).
    #[arg(long)]
    pub(crate) allow_network: bool,
    /// Pass this environment variable to the compile step (repeatable); it becomes a
    /// dependency-key input. Otherwise only a fixed allowlist passes.
    #[arg(long, value_name = "NAME")]
    pub(crate) pass_env: Vec<String>,
    /// Allow plain HTTP to this registry (HOST[:PORT]; repeatable). Localhost always may.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub(crate) insecure_registry: Vec<String>,
    /// Seconds a registry connection, read or write may wait before the try fails and is
    /// retried (default 30).
    #[arg(long, env = "IMGBUILD_REGISTRY_TIMEOUT", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) registry_timeout: Option<u64>,
    /// Seconds after a registry request's first try past which no retry starts (default 120).
    #[arg(long, env = "IMGBUILD_REGISTRY_DEADLINE", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) registry_deadline: Option<u64>,
    /// Image name (default: the binary's name).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Image tag (default: latest). Repeat it to push several tags in one push: the image
    /// takes the first, every registry output gets them all.
    #[arg(long, value_name = "TAG")]
    pub(crate) tag: Vec<String>,
    /// Build for these platforms (comma-separated: linux/amd64,linux/amd64/v3,linux/arm64):
    /// one image each, listed in an OCI image index (default: this machine's platform, or
    /// `platforms` in the metadata table).
    #[arg(long, value_name = "PLATFORMS")]
    pub(crate) platform: Option<String>,
    /// Write each pushed image's digest reference (REGISTRY/REPOSITORY@sha256:…), one per
    /// line, to FILE for the next CI step.
    #[arg(long, value_name = "FILE")]
    pub(crate) image_refs: Option<std::path::PathBuf>,
    /// Entrypoint: a program path, or a JSON array of arguments.
    #[arg(long, value_name = "ARGV")]
    pub(crate) entrypoint: Option<String>,
    /// Default arguments: one argument, or a JSON array.
    #[arg(long, value_name = "ARGV")]
    pub(crate) cmd: Option<String>,
    /// Environment variable for the image (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Image label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// Port to expose, e.g. 8080 or 53/udp (repeatable).
    #[arg(long, value_name = "PORT[/PROTO]")]
    pub(crate) expose: Vec<String>,
    /// User to run as (default 65532).
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Working directory inside the image.
    #[arg(long, value_name = "DIR")]
    pub(crate) workdir: Option<String>,
    /// Base image (e.g. debian:12-slim, or scratch for none; default: scratch).
    #[arg(long, value_name = "REF")]
    pub(crate) base: Option<String>,
    /// The SBOM attached to the image: spdx (SPDX 2.3), cyclonedx (CycloneDX 1.6) or none.
    #[arg(
        long,
        visible_alias = "sbom-format",
        value_enum,
        env = "IMGBUILD_SBOM",
        default_value = "spdx",
        value_name = "FORMAT"
    )]
    pub(crate) sbom: SbomArg,
    /// Attach no provenance statement (in-toto, SLSA v1).
    #[arg(long)]
    pub(crate) no_provenance: bool,
    /// Do not embed the dependency list in the binary (cargo auditable's .dep-v0 section).
    #[arg(long)]
    pub(crate) no_audit_data: bool,
    /// Keep the debug info in the image's binary instead of a separate artifact.
    #[arg(long)]
    pub(crate) keep_debuginfo: bool,
}

/// `--sbom`'s values.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum SbomArg {
    Spdx,
    #[value(name = "cyclonedx")]
    CycloneDx,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum CacheModeArg {
    ReadWrite,
    ReadOnly,
    Off,
}

impl From<CacheModeArg> for imgbuild::RemoteCacheMode {
    fn from(a: CacheModeArg) -> Self {
        match a {
            CacheModeArg::ReadWrite => imgbuild::RemoteCacheMode::ReadWrite,
            CacheModeArg::ReadOnly => imgbuild::RemoteCacheMode::ReadOnly,
            CacheModeArg::Off => imgbuild::RemoteCacheMode::Off,
        }
    }
}

impl From<SbomArg> for imgbuild::SbomFormat {
    fn from(a: SbomArg) -> Self {
        match a {
            SbomArg::Spdx => imgbuild::SbomFormat::Spdx,
            SbomArg::CycloneDx => imgbuild::SbomFormat::CycloneDx,
            SbomArg::None => imgbuild::SbomFormat::None,
        }
    }
}
