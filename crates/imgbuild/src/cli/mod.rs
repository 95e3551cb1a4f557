//! The `imgbuild` command line, shared by the `imgbuild` and `cargo-imgbuild` binaries: parses
//! flags, wires them to the library, renders its events.
//!
//! Human output goes to stderr; machine output (the digest, or JSON events with
//! `--message-format json`) goes to stdout.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use imgbuild::event::{BlobOutcome, Event, NetworkAccess, Reporter};
use imgbuild::output::Output;
use imgbuild::{BuildOptions, ImageConfig};

#[derive(Parser)]
#[command(
    name = "imgbuild",
    version,
    about = "Build reproducible OCI images from Cargo projects, without a daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile a binary and build its image (into the local store and any --output).
    Build(Box<BuildArgs>),
    /// Build, then push the image to a registry: `imgbuild push REGISTRY/REPOSITORY[:TAG]`.
    Push(Box<PushArgs>),
    /// Print each binary's dependency-tree cache key and the inputs it hashes.
    Plan(PlanArgs),
    /// Build twice in two temporary folders and check that both images are identical.
    Verify(VerifyArgs),
    /// Inspect and prune the dependency cache in the local store.
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Subcommand)]
enum CacheCommand {
    /// List dependency-cache entries: key, binary, layers, size, last use.
    Ls(StoreArgs),
    /// Remove entries unused for a while or beyond a total size, then unreferenced blobs.
    Prune(PruneArgs),
}

#[derive(Args)]
struct StoreArgs {
    /// Cache directory holding the local store.
    #[arg(long, env = "IMGBUILD_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Output format for stdout.
    #[arg(long, value_enum, default_value = "human")]
    message_format: MessageFormat,
}

#[derive(Args)]
struct PruneArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Remove entries not used for longer than this (e.g. 30d, 12h, 90m; default 30d unless
    /// --max-size or --all is given).
    #[arg(long, value_name = "AGE")]
    older_than: Option<String>,
    /// Then remove the least recently used entries until the store is at most this big
    /// (e.g. 10G, 500M).
    #[arg(long, value_name = "SIZE")]
    max_size: Option<String>,
    /// Remove every dependency-cache entry (images in the store are kept).
    #[arg(long, conflicts_with_all = ["older_than", "max_size"])]
    all: bool,
}

fn ago(seconds: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match now.saturating_sub(seconds) {
        s if s < 120 => format!("{s}s ago"),
        s if s < 2 * 3600 => format!("{}m ago", s / 60),
        s if s < 2 * 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

fn run_cache(command: CacheCommand) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        CacheCommand::Ls(args) => {
            let dir = args.cache_dir.unwrap_or_else(imgbuild::default_cache_dir);
            let listing = imgbuild::store::list(&dir.into())?;
            match args.message_format {
                MessageFormat::Json => writeln!(out, "{}", serde_json::to_string(&listing)?)?,
                MessageFormat::Human => {
                    writeln!(
                        out,
                        "{:<12}  {:<28} {:>6} {:>6} {:>10}  LAST USED",
                        "KEY", "BINARY", "LAYERS", "FILES", "SIZE"
                    )?;
                    for e in &listing.entries {
                        writeln!(
                            out,
                            "{:<12}  {:<28} {:>6} {:>6} {:>10}  {}",
                            &e.key[..e.key.len().min(12)],
                            e.binary,
                            e.layers,
                            e.files,
                            human_size(e.size),
                            ago(e.last_used)
                        )?;
                    }
                    writeln!(
                        out,
                        "{} entries; the store (entries and images, shared blobs once) holds {}",
                        listing.entries.len(),
                        human_size(listing.store_size)
                    )?;
                }
            }
        }
        CacheCommand::Prune(args) => {
            let older_than = match &args.older_than {
                Some(text) => Some(imgbuild::store::parse_duration(text).with_context(|| {
                    format!("--older-than {text:?}: expected a number and a unit (s, m, h, d, w), e.g. 30d")
                })?),
                None if args.max_size.is_none() && !args.all => {
                    Some(std::time::Duration::from_secs(30 * 86_400))
                }
                None => None,
            };
            let max_size = match &args.max_size {
                Some(text) => Some(imgbuild::store::parse_size(text).with_context(|| {
                    format!("--max-size {text:?}: expected a whole number with an optional unit (K, M, G, T), e.g. 10G")
                })?),
                None if args.all => Some(0),
                None => None,
            };
            let dir = args
                .store
                .cache_dir
                .unwrap_or_else(imgbuild::default_cache_dir);
            let mut policy = imgbuild::store::PrunePolicy::default();
            policy.older_than = older_than;
            policy.max_size = max_size;
            let report = imgbuild::store::prune(&dir.into(), policy)?;
            match args.store.message_format {
                MessageFormat::Json => writeln!(out, "{}", serde_json::to_string(&report)?)?,
                MessageFormat::Human => {
                    for key in &report.removed {
                        writeln!(out, "removed {key}")?;
                    }
                    writeln!(
                        out,
                        "{} entries removed, {} blobs deleted, {} freed; the store holds {}",
                        report.removed.len(),
                        report.blobs_deleted,
                        human_size(report.bytes_freed),
                        human_size(report.store_size)
                    )?;
                    for failure in &report.failures {
                        writeln!(
                            out,
                            "could not remove {}: {}",
                            failure.path.display(),
                            failure.error
                        )?;
                    }
                }
            }
            if !report.failures.is_empty() {
                anyhow::bail!(
                    "{} files could not be removed; the space they use is not counted as freed",
                    report.failures.len()
                );
            }
        }
    }
    Ok(())
}

#[derive(Args)]
struct PushArgs {
    /// Where to push, e.g. localhost:5000/team/app:1.0 (the tag defaults to the image's).
    #[arg(value_name = "REF")]
    reference: String,
    #[command(flatten)]
    build: BuildArgs,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    selection: Selection,
    /// Pass this environment variable to the compile step (repeatable).
    #[arg(long, value_name = "NAME")]
    pass_env: Vec<String>,
}

fn run_verify(args: VerifyArgs) -> Result<()> {
    let format = args.selection.message_format;
    let mut options = args.selection.options();
    options.pass_env = args.pass_env;
    options.source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(imgbuild::parse_source_date_epoch(&v)?),
        _ => None,
    };
    let human = Human {
        color: std::io::stderr().is_terminal(),
    };
    let verdict = match format {
        MessageFormat::Json => imgbuild::verify::verify(&options, &imgbuild::event::Silent)?,
        MessageFormat::Human => imgbuild::verify::verify(&options, &human)?,
    };
    let mut out = std::io::stdout().lock();
    match format {
        MessageFormat::Json => writeln!(out, "{}", serde_json::to_string(&verdict)?)?,
        MessageFormat::Human if verdict.reproducible => {
            human.status(
                "Verified",
                "reproducible: two builds in different folders gave the same image",
            );
            writeln!(out, "reproducible {}", verdict.first)?;
        }
        MessageFormat::Human => {}
    }
    if !verdict.reproducible {
        bail!(
            "not reproducible: the two builds gave {} and {}:\n  {}",
            verdict.first,
            verdict.second,
            verdict.differences.join("\n  ")
        );
    }
    Ok(())
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    selection: Selection,
    /// Say what changed in each key's inputs since that binary's last build.
    #[arg(long)]
    explain: bool,
}

fn run_plan(args: PlanArgs) -> Result<()> {
    let format = args.selection.message_format;
    let options = args.selection.options();
    let plans = imgbuild::plan::plan(&options, args.explain)?;
    let mut out = std::io::stdout().lock();
    for p in &plans {
        match format {
            MessageFormat::Json => writeln!(out, "{}", serde_json::to_string(p)?)?,
            MessageFormat::Human => {
                writeln!(
                    out,
                    "{}/{} dependency-key {}",
                    p.package, p.bin, p.dependency_key
                )?;
                match (&p.changes, args.explain) {
                    (_, false) => {
                        for line in &p.inputs {
                            writeln!(out, "    {line}")?;
                        }
                    }
                    (None, true) => writeln!(
                        out,
                        "    no earlier build of this binary is recorded in this cache"
                    )?,
                    (Some(changes), true) if changes.is_empty() => {
                        writeln!(out, "    unchanged since the last build")?
                    }
                    (Some(changes), true) => {
                        writeln!(out, "    changed since the last build:")?;
                        for line in changes {
                            writeln!(out, "    {line}")?;
                        }
                    }
                }
                let status = if p.app_hit {
                    "hit: a build would compile nothing"
                } else {
                    "miss"
                };
                match &p.app_key {
                    Some(key) => writeln!(out, "{}/{} app-key {key} {status}", p.package, p.bin)?,
                    None => writeln!(out, "{}/{} app-key (none yet) {status}", p.package, p.bin)?,
                }
                if let Some(changes) = &p.app_changes
                    && !changes.is_empty()
                    && !p.app_hit
                {
                    writeln!(out, "    app inputs changed since the stored build:")?;
                    for line in changes {
                        writeln!(out, "    {line}")?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum MessageFormat {
    Human,
    Json,
}

/// The flags `build` and `plan` share: which binary, how cargo compiles it, where the cache
/// is, and what stdout carries.
#[derive(Args)]
struct Selection {
    /// Path to Cargo.toml (or its directory); default: the current directory.
    #[arg(long, value_name = "PATH")]
    manifest_path: Option<PathBuf>,
    /// Package holding the binary.
    #[arg(short, long, value_name = "SPEC")]
    package: Option<String>,
    /// Binary to package (required by `build` when there are several).
    #[arg(long, value_name = "NAME")]
    bin: Option<String>,
    /// Cargo profile.
    #[arg(long, default_value = "release", value_name = "PROFILE")]
    profile: String,
    /// Features to activate (comma-separated or repeated).
    #[arg(short = 'F', long, value_delimiter = ',', value_name = "FEATURES")]
    features: Vec<String>,
    /// Activate all features.
    #[arg(long)]
    all_features: bool,
    /// Do not activate the default feature.
    #[arg(long)]
    no_default_features: bool,
    /// Cache directory holding the local store.
    #[arg(long, env = "IMGBUILD_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Output format for stdout.
    #[arg(long, value_enum, default_value = "human")]
    message_format: MessageFormat,
}

impl Selection {
    /// Build options carrying these flags (and nothing else set).
    fn options(self) -> BuildOptions {
        let mut options =
            BuildOptions::new(self.cache_dir.unwrap_or_else(imgbuild::default_cache_dir));
        options.manifest_path = self.manifest_path;
        options.package = self.package;
        options.bin = self.bin;
        options.profile = self.profile;
        options.features = imgbuild::FeatureSelection::from_flags(
            self.features,
            self.all_features,
            self.no_default_features,
        );
        options
    }
}

#[derive(Args)]
struct BuildArgs {
    #[command(flatten)]
    selection: Selection,
    /// Also write the image to DEST: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG].
    #[arg(short, long = "output", value_name = "DEST")]
    outputs: Vec<String>,
    /// Neither restore compiled dependencies from the cache nor store them (nor reuse a
    /// stored image).
    #[arg(long)]
    no_dependency_cache: bool,
    /// Compile even when an image built from exactly these inputs is cached.
    #[arg(long)]
    rebuild: bool,
    /// Share the dependency cache through this registry repository (pull missing entries,
    /// push new ones), e.g. ghcr.io/org/app-cache.
    #[arg(long, env = "IMGBUILD_CACHE_REPO", value_name = "REF")]
    cache_repo: Option<String>,
    /// Let build scripts and proc macros reach the network (no sandbox; the image is
    /// annotated as not hermetic and shares no compiled dependencies with hermetic builds).
    #[arg(long)]
    allow_network: bool,
    /// Pass this environment variable to the compile step (repeatable); it becomes a
    /// dependency-key input. Otherwise only a fixed allowlist passes.
    #[arg(long, value_name = "NAME")]
    pass_env: Vec<String>,
    /// Allow plain HTTP to this registry (HOST[:PORT]; repeatable). Localhost always may.
    #[arg(long, value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
    /// Image name (default: the binary's name).
    #[arg(long)]
    name: Option<String>,
    /// Image tag (default: latest).
    #[arg(long)]
    tag: Option<String>,
    /// Entrypoint: a program path, or a JSON array of arguments.
    #[arg(long, value_name = "ARGV")]
    entrypoint: Option<String>,
    /// Default arguments: one argument, or a JSON array.
    #[arg(long, value_name = "ARGV")]
    cmd: Option<String>,
    /// Environment variable for the image (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Image label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Port to expose, e.g. 8080 or 53/udp (repeatable).
    #[arg(long, value_name = "PORT[/PROTO]")]
    expose: Vec<String>,
    /// User to run as (default 65532).
    #[arg(long)]
    user: Option<String>,
    /// Working directory inside the image.
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    /// Base image (e.g. debian:12-slim, or scratch for none; default: scratch).
    #[arg(long, value_name = "REF")]
    base: Option<String>,
}

fn key_value(flag: &str, s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("{flag} {s:?}: expected KEY=VALUE"))?;
    if k.is_empty() {
        bail!("{flag} {s:?}: the key is empty");
    }
    Ok((k.to_string(), v.to_string()))
}

fn argv(flag: &str, s: &str) -> Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        return serde_json::from_str(s)
            .with_context(|| format!("{flag} {s:?}: not a JSON array of strings"));
    }
    Ok(vec![s.to_string()])
}

/// Turns the override flags into a configuration layer, validated like a metadata table.
fn overrides(args: &BuildArgs) -> Result<ImageConfig> {
    let mut table = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        table.insert(k.to_string(), v);
    };
    if let Some(v) = &args.name {
        put("name", v.clone().into());
    }
    if let Some(v) = &args.tag {
        put("tag", v.clone().into());
    }
    if let Some(v) = &args.entrypoint {
        put("entrypoint", argv("--entrypoint", v)?.into());
    }
    if let Some(v) = &args.cmd {
        put("cmd", argv("--cmd", v)?.into());
    }
    if let Some(v) = &args.user {
        put("user", v.clone().into());
    }
    if let Some(v) = &args.workdir {
        put("workdir", v.clone().into());
    }
    if let Some(v) = &args.base {
        put("base", v.clone().into());
    }
    if !args.env.is_empty() {
        let map: serde_json::Map<_, _> = args
            .env
            .iter()
            .map(|s| key_value("--env", s).map(|(k, v)| (k, v.into())))
            .collect::<Result<_>>()?;
        put("env", map.into());
    }
    if !args.labels.is_empty() {
        let map: serde_json::Map<_, _> = args
            .labels
            .iter()
            .map(|s| key_value("--label", s).map(|(k, v)| (k, v.into())))
            .collect::<Result<_>>()?;
        put("labels", map.into());
    }
    if !args.expose.is_empty() {
        put("expose", args.expose.clone().into());
    }
    let origin = imgbuild_cargo::config::Origin {
        table: "command-line flags",
        manifest: std::path::Path::new("(command line)"),
    };
    Ok(imgbuild_cargo::config::parse_table(
        &serde_json::Value::Object(table),
        &origin,
        None,
    )?)
}

/// Renders events as status lines on stderr (colored on a terminal).
struct Human {
    color: bool,
}

impl Human {
    fn status(&self, verb: &str, rest: &str) {
        let mut err = std::io::stderr().lock();
        let _ = if self.color {
            writeln!(err, "\x1b[1;32m{verb:>12}\x1b[0m {rest}")
        } else {
            writeln!(err, "{verb:>12} {rest}")
        };
    }
}

fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

impl Reporter for Human {
    fn report(&self, event: &Event) {
        match event {
            Event::BuildStarted {
                package,
                bin,
                profile,
            } => self.status(
                "Building",
                &format!("image for {package}/{bin} ({profile} profile)"),
            ),
            Event::Isolation {
                network, method, ..
            } => match network {
                NetworkAccess::Isolated => self.status("Sandbox", &format!("no network for the build ({method})")),
                NetworkAccess::Allowed => self.status("Sandbox", "network allowed (--allow-network); the image is marked not hermetic"),
                _ => {} // the warning that follows says it
            },
            Event::AppCache {
                key,
                hit,
                from_registry,
                stored,
            } => {
                let what = match (hit, from_registry, stored) {
                    (_, _, true) => "stored",
                    (true, true, _) => "hit (pulled from the cache repository): nothing to compile",
                    (true, false, _) => "hit: nothing to compile",
                    _ => "miss",
                };
                self.status("App", &format!("{} {what}", &key[..12]))
            }
            Event::BaseResolved {
                reference,
                digest,
                layers,
            } => self.status(
                "Base",
                &format!("{reference} {} ({layers} layers)", short(digest)),
            ),
            Event::CacheLookup {
                key,
                hit,
                nearest,
                from_registry,
            } => {
                let what = match (hit, nearest) {
                    (true, _) if *from_registry => "hit (pulled from the cache repository)".to_string(),
                    (true, _) => "hit".to_string(),
                    (false, Some(n)) => format!("miss; restoring the nearest entry {}", &n[..12]),
                    (false, None) => "miss; no earlier entry for this binary".to_string(),
                };
                self.status("Cache", &format!("dependencies {} {what}", &key[..12]))
            }
            Event::CacheRestored {
                present,
                restored,
                bytes,
                ..
            } => self.status(
                "Restored",
                &format!(
                    "{restored} files ({}), {present} already in place",
                    human_size(*bytes)
                ),
            ),
            Event::CacheUnusable { key, message } => self.status(
                "Warning",
                &format!("cache entry {} not usable, treated as a miss: {message}", &key[..12]),
            ),
            Event::Compiled {
                executable,
                dependencies_compiled,
                dependencies_fresh,
                ..
            } => self.status(
                "Compiled",
                &format!(
                    "{executable} (dependencies: {dependencies_compiled} compiled, {dependencies_fresh} from cache or up to date)"
                ),
            ),
            Event::CacheStored {
                key,
                layers,
                files,
                new_files,
                new_layer_size,
                squashed,
            } => self.status(
                "Cached",
                &format!(
                    "dependencies {}: {files} files in {layers} layer(s); new layer {new_files} files, {}{}",
                    &key[..12],
                    human_size(*new_layer_size),
                    if *squashed { " (squashed)" } else { "" }
                ),
            ),
            Event::Layer {
                role,
                digest,
                size,
                entries,
                ..
            } => self.status(
                "Layer",
                &format!(
                    "{role:<9} {} {:>10} ({entries} entries)",
                    short(digest),
                    human_size(*size)
                ),
            ),
            Event::Output { destination } => self.status("Wrote", destination),
            Event::ImageBuilt {
                digest,
                reference,
                size,
                ..
            } => self.status(
                "Image",
                &format!("{reference} {digest} ({} compressed)", human_size(*size)),
            ),
            Event::Blob {
                digest,
                size,
                outcome,
                from,
                ..
            } => {
                let how = match (outcome, from) {
                    (BlobOutcome::Mounted, Some(from)) => format!("mounted from {from}"),
                    (BlobOutcome::Present, _) => "already there".to_string(),
                    (other, _) => other.to_string(),
                };
                self.status(
                    "Blob",
                    &format!("{} {:>10} {how}", short(digest), human_size(*size)),
                )
            }
            Event::Pushed {
                reference,
                uploaded,
                uploaded_bytes,
                mounted,
                present,
                ..
            } => self.status(
                "Pushed",
                &format!(
                    "{reference} ({uploaded} uploaded, {}; {mounted} mounted; {present} already there)",
                    human_size(*uploaded_bytes)
                ),
            ),
            Event::Warning { message } => self.status("Warning", message),
            // Events added to the library later are shown in JSON output only.
            _ => {}
        }
    }
}

/// Prints each event as one JSON line on stdout.
struct Json;

impl Reporter for Json {
    fn report(&self, event: &Event) {
        let mut out = std::io::stdout().lock();
        if let Ok(line) = serde_json::to_string(event) {
            let _ = writeln!(out, "{line}");
        }
    }
}

fn run_build(args: BuildArgs) -> Result<()> {
    let outputs = args
        .outputs
        .iter()
        .map(|o| o.parse::<Output>())
        .collect::<Result<Vec<_>, _>>()?;
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(imgbuild::parse_source_date_epoch(&v)?),
        _ => None,
    };
    let overrides = overrides(&args)?;
    let format = args.selection.message_format;
    let mut options = args.selection.options();
    options.overrides = overrides;
    options.source_date_epoch = source_date_epoch;
    options.outputs = outputs;
    options.cache = match (args.no_dependency_cache, args.rebuild) {
        (true, _) => imgbuild::CacheMode::Off,
        (false, true) => imgbuild::CacheMode::Rebuild,
        (false, false) => imgbuild::CacheMode::Use,
    };
    options.registry.insecure = args.insecure_registry.clone();
    options.allow_network = args.allow_network;
    options.pass_env = args.pass_env.clone();
    options.cache_repo = args
        .cache_repo
        .as_deref()
        .map(imgbuild_registry::Reference::parse)
        .transpose()
        .context("--cache-repo")?;
    match format {
        MessageFormat::Json => {
            imgbuild::build(&options, &Json)?;
        }
        MessageFormat::Human => {
            let image = imgbuild::build(
                &options,
                &Human {
                    color: std::io::stderr().is_terminal(),
                },
            )?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", image.manifest.digest()).context("writing the digest to stdout")?;
        }
    }
    Ok(())
}

/// Runs the command line `args` (the program name first) and returns the exit code.
pub(crate) fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Build(args) => run_build(*args),
        Command::Push(args) => {
            let PushArgs {
                reference,
                mut build,
            } = *args;
            build.outputs.push(format!("docker://{reference}"));
            run_build(build)
        }
        Command::Plan(args) => run_plan(args),
        Command::Cache(command) => run_cache(command),
        Command::Verify(args) => run_verify(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
