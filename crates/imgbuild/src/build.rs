//! The build pipeline: workspace → binary → layers → image → outputs.
//!
//! Runs cargo and git (through `imgbuild_cargo::run`) and writes to the local store and the
//! outputs; the decisions in between are made by the pure modules ([`crate::image`], the
//! workspace model).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use imgbuild_cargo::config::{ExtraFile, ImageConfig};
use imgbuild_cargo::workspace::{BinaryTarget, Workspace};
use imgbuild_cargo::{run, units};
use imgbuild_oci::layer::{Content, LayerBuilder};
use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::{Descriptor, MediaType};

use crate::event::{Event, Reporter};
use crate::image::{self, APP_DIR, Layer, Provenance};
use crate::output::{self, Output};
use crate::{Error, Result, closure, depcache, rootfs, time};

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

/// The local store's directory under a cache directory.
pub fn store_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("store")
}

/// Builds the image described by `options`, reporting progress to `reporter`.
pub fn build(options: &BuildOptions, reporter: &dyn Reporter) -> Result<BuiltImage> {
    let manifest_path = run::manifest_path(options.manifest_path.as_deref())?;
    let metadata = run::metadata(
        &manifest_path,
        &crate::plan::wrapper_script(&options.cache_dir)?,
    )?;
    let mut workspace = Workspace::new(&metadata);
    if let Some(dir) = &options.target_dir {
        workspace.target_dir = dir.clone();
        workspace.build_dir = dir.clone();
    }
    if options.allow_network {
        // Artifacts built with network access never mix with hermetic ones.
        workspace.target_dir = workspace.target_dir.join("allow-network");
        workspace.build_dir = workspace.target_dir.clone();
    }
    let forced_target_dir = (options.allow_network || options.target_dir.is_some())
        .then(|| workspace.target_dir.clone());
    let target = workspace.select(options.package.as_deref(), options.bin.as_deref())?;
    let config = workspace
        .image_config(&target)?
        .merge(options.overrides.clone());
    for out in &options.outputs {
        preflight(out)?;
    }
    let extra_files = collect_extra_files(config.files.as_deref().unwrap_or_default())?;
    // The dependency tree, the compiler version and git's view are independent: ask at once.
    let wrapper = crate::plan::wrapper(&workspace, options)?;
    let (git_time, revision, tree, key_context) = std::thread::scope(|s| {
        let git_time = s.spawn(|| run::git_commit_time(&workspace.root));
        let revision = s.spawn(|| run::git_revision(&workspace.root));
        let tree = s.spawn(|| crate::plan::tree(&target, options, &wrapper));
        let context = crate::plan::KeyContext::gather(&workspace, options, wrapper.clone());
        (join(git_time), join(revision), join(tree), context)
    });
    let key_context = key_context?;
    let dependency_key = key_context.key_for_tree(&tree?);
    let epoch = options.source_date_epoch.or(git_time).unwrap_or(0);
    let provenance = Provenance {
        created: time::rfc3339(epoch),
        revision,
    };
    let store = Layout::create(store_dir(&options.cache_dir))?;
    // Garbage collection waits while this build writes blobs not yet tagged.
    let _writer = store.writer_lock()?;
    // The base image is resolved before compiling: a wrong reference fails fast.
    let base = match config.base_image() {
        Some(text) => {
            let b = crate::base::resolve(
                &store,
                text,
                &options.registry,
                &options.cache_dir,
                reporter,
            )?;
            reporter.report(&Event::BaseResolved {
                reference: b.reference.clone(),
                digest: b.digest.clone(),
                layers: b.manifest.layers().len(),
            });
            Some(b)
        }
        None => None,
    };
    reporter.report(&Event::BuildStarted {
        package: target.package.name.clone(),
        bin: target.bin.clone(),
        profile: options.profile.clone(),
    });
    let profile_dir = workspace
        .build_dir
        .join(units::profile_dir_name(&options.profile));
    let build_dir_lock = depcache::lock_build_dir(&workspace.build_dir)?;
    let remote = match (&options.cache_repo, options.dependency_cache) {
        (Some(repo), true) => match crate::publish::RemoteCache::connect(repo, &options.registry) {
            Ok(remote) => Some(remote),
            Err(e) => {
                reporter.report(&Event::Warning {
                    message: format!(
                        "the cache repository {repo} is not usable, building without it: {e}"
                    ),
                });
                None
            }
        },
        _ => None,
    };
    let restored = if options.dependency_cache {
        restore_dependencies(
            &store,
            &dependency_key,
            &target,
            &profile_dir,
            remote.as_ref(),
            reporter,
        )?
    } else {
        None
    };
    // Downloads happen here, with the caller's network settings; the compile is offline.
    if run::missing_downloads(key_context.lock()) {
        run::fetch(&target.package.manifest_path, key_context.triple())?;
    }
    let sandbox = isolation(options, reporter);
    let private = crate::hermetic::PrivateDirs::create(&options.cache_dir)?;
    let mut caller: Vec<(String, String)> = std::env::vars().collect();
    if let Some(dir) = &forced_target_dir {
        caller.retain(|(k, _)| {
            !matches!(
                k.as_str(),
                "CARGO_TARGET_DIR" | "CARGO_BUILD_TARGET_DIR" | "CARGO_BUILD_BUILD_DIR"
            )
        });
        caller.push((
            "CARGO_TARGET_DIR".into(),
            dir.to_string_lossy().into_owned(),
        ));
    }
    let compile_env =
        imgbuild_cargo::hermetic::compile_env(&imgbuild_cargo::hermetic::CompileEnv {
            caller: &caller,
            pass: &options.pass_env,
            home: &private.home(),
            tmp: &private.tmp(),
            cargo_home: &run::cargo_home(),
            rustup_home: crate::hermetic::rustup_home().as_deref(),
            source_date_epoch: epoch,
        });
    let outcome = run::build(&run::BuildRequest {
        target: &target,
        profile: &options.profile,
        features: options.cargo_features(),
        wrapper: key_context.wrapper(),
        isolation: Some(run::Isolation {
            env: &compile_env,
            sandbox: sandbox.as_ref(),
        }),
    })?;
    drop(private);
    let deps = units::dependency_units(&outcome, &profile_dir);
    reporter.report(&Event::Compiled {
        executable: outcome.executable.display().to_string(),
        dependencies_compiled: deps.compiled,
        dependencies_fresh: deps.fresh,
        compiled_packages: deps.compiled_packages.clone(),
    });
    if options.dependency_cache {
        let hit = restored.as_ref().filter(|r| r.exact).map(|r| &r.entry);
        // A project without registry or git dependencies has nothing to cache.
        if (hit.is_none() || deps.compiled > 0) && !deps.hashes.is_empty() {
            if hit.is_some() {
                reporter.report(&Event::Warning {
                    message: format!(
                        "cargo recompiled {} dependency units ({}) although the cache had an entry for this key: some input that changes dependency builds is not in the key; the entry is replaced",
                        deps.compiled,
                        deps.compiled_packages.join(", ")
                    ),
                });
            }
            let files = depcache::scan_units(&profile_dir, &deps.hashes)?;
            let saved = depcache::save(
                &store,
                &depcache::SaveRequest {
                    key: &dependency_key.key,
                    inputs: &dependency_key.inputs,
                    package: &target.package.name,
                    bin: &target.bin,
                    files: &files,
                    profile_dir: &profile_dir,
                    parent: restored.as_ref().map(|r| &r.entry),
                },
            )?;
            reporter.report(&Event::CacheStored {
                key: dependency_key.key.clone(),
                layers: saved.layers,
                files: saved.files,
                new_files: saved.new_files,
                new_layer_size: saved.new_layer_size,
                squashed: saved.squashed,
            });
            if let Some(remote) = &remote {
                share(
                    remote,
                    &store,
                    &dependency_key.key,
                    &saved.manifest,
                    reporter,
                );
            }
        }
        if let (Some(remote), Some(r)) = (&remote, &restored)
            && r.exact
            && !r.pulled
            && deps.compiled == 0
        {
            // A local hit the registry may not have yet (the entry was built before the cache
            // repository was configured, or its push failed).
            match remote.has_entry(&dependency_key.key) {
                Ok(true) => {}
                Ok(false) => share(
                    remote,
                    &store,
                    &dependency_key.key,
                    &r.entry.manifest,
                    reporter,
                ),
                Err(e) => reporter.report(&Event::Warning {
                    message: format!(
                        "could not check the cache repository {}: {e}",
                        remote.repository()
                    ),
                }),
            }
        }
        depcache::touch(&options.cache_dir, &dependency_key.key);
    }
    drop(build_dir_lock);
    let executable = outcome.executable;

    let closure = closure::resolve(&executable)?;
    let closure = match &base {
        Some(b) => {
            let on_base = closure.on_base(&b.fs);
            check_glibc(&store, b, &executable, &on_base)?;
            on_base
        }
        None => closure,
    };
    // A base image brings its own users, /tmp and CA certificates.
    let ca_bundle = if base.is_none() {
        rootfs::host_ca_bundle()
    } else {
        None
    };
    let spec = image::runtime_spec(
        &config,
        &target,
        ca_bundle.is_some(),
        &closure.extra_dirs,
        base.as_ref().and_then(|b| b.config.config().as_ref()),
    );

    let mut layers = Vec::new();
    let mut base_layers = Vec::new();
    let memo_dir = options.cache_dir.join("layer-memo");
    let mut add_layer = |role: &str, created_by: String, builder: &LayerBuilder| -> Result<()> {
        let blob = store.write_layer_memoized(builder, epoch, &memo_dir)?;
        reporter.report(&Event::Layer {
            role: role.to_string(),
            digest: blob.descriptor.digest().to_string(),
            diff_id: blob.diff_id.to_string(),
            size: blob.descriptor.size(),
            entries: builder.paths().count(),
        });
        layers.push(Layer {
            blob,
            created_by: Some(created_by),
            role: role.to_string(),
        });
        Ok(())
    };
    match &base {
        Some(b) => {
            for (descriptor, diff_id) in
                b.manifest.layers().iter().zip(b.config.rootfs().diff_ids())
            {
                base_layers.push(Layer {
                    blob: imgbuild_oci::layout::LayerBlob {
                        descriptor: oci_layer_descriptor(descriptor),
                        diff_id: diff_id.parse().map_err(|_| Error::Base {
                            reference: b.reference.clone(),
                            reason: format!("its config lists an invalid diff_id {diff_id:?}"),
                        })?,
                        uncompressed_size: 0,
                    },
                    created_by: None,
                    role: "base".into(),
                });
            }
        }
        None => add_layer(
            "rootfs",
            "imgbuild: minimal rootfs (users, /tmp, CA certificates)".into(),
            &rootfs::layer(ca_bundle.as_deref())?,
        )?,
    }
    if !closure.is_empty() {
        add_layer(
            "libraries",
            "imgbuild: shared-library closure of the binary".into(),
            &closure.layer()?,
        )?;
    }
    add_layer(
        "app",
        format!("imgbuild: {APP_DIR}/{} and declared files", target.bin),
        &app_layer(&target, &executable, &extra_files)?,
    )?;

    base_layers.append(&mut layers);
    let layers = base_layers;
    let base_history = base
        .as_ref()
        .and_then(|b| b.config.history().clone())
        .unwrap_or_default();
    let config_json = image::config(&spec, &layers, &provenance.created, &base_history)?;
    let config_desc = store.put_json(MediaType::ImageConfig, &config_json)?;
    let mut annotations = image::annotations(&target, &provenance);
    if options.allow_network {
        annotations.insert(
            "dev.imgbuild.hermetic".into(),
            "false: built with --allow-network".into(),
        );
    }
    if let Some(b) = &base {
        annotations.insert(
            "org.opencontainers.image.base.name".into(),
            b.reference.clone(),
        );
        annotations.insert(
            "org.opencontainers.image.base.digest".into(),
            b.digest.clone(),
        );
    }
    let manifest = image::manifest(config_desc.clone(), &layers, &annotations)?;
    let manifest_desc = store.put_json(MediaType::ImageManifest, &manifest)?;
    let reference = spec.reference();
    {
        let _lock = store.lock()?;
        store.set_tag(&reference, &manifest_desc)?;
    }
    for out in &options.outputs {
        match out {
            Output::Registry { reference } => {
                crate::publish::push(
                    &store,
                    &manifest_desc,
                    reference,
                    &spec.tag,
                    &options.registry,
                    &options.cache_dir,
                    reporter,
                )?;
            }
            _ => output::write(&store, &manifest_desc, &spec.name, &spec.tag, out, epoch)?,
        }
        reporter.report(&Event::Output {
            destination: out.to_string(),
        });
    }
    crate::plan::record(&options.cache_dir, &target, &dependency_key)?;
    reporter.report(&Event::ImageBuilt {
        digest: manifest_desc.digest().to_string(),
        reference: reference.clone(),
        config: config_desc.digest().to_string(),
        size: layers.iter().map(|l| l.blob.descriptor.size()).sum(),
    });
    Ok(BuiltImage {
        manifest: manifest_desc,
        config: config_desc,
        reference,
        layers,
        executable,
        store: store.root().to_path_buf(),
    })
}

/// A base layer's descriptor as an OCI manifest lists it (Docker's gzip media type becomes
/// the OCI one: same bytes).
fn oci_layer_descriptor(d: &imgbuild_oci::spec::Descriptor) -> imgbuild_oci::spec::Descriptor {
    let media = match d.media_type().to_string().as_str() {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => MediaType::ImageLayerGzip,
        _ => d.media_type().clone(),
    };
    imgbuild_oci::spec::Descriptor::new(media, d.size(), d.digest().clone())
}

/// Fails when the base's libc lacks a `GLIBC_x.y` version the binary or the libraries it
/// brings need. Nothing to check when the base has no libc (the image ships the host's).
fn check_glibc(
    store: &Layout,
    base: &crate::base::BaseImage,
    executable: &Path,
    closure: &closure::Closure,
) -> Result<()> {
    let Some(libc_path) = base.fs.find_library("libc.so.6") else {
        return Ok(());
    };
    let Some(libc) = crate::base::read_file(store, base, &libc_path)? else {
        return Ok(());
    };
    let Some(provided) = crate::base::glibc_versions(&libc) else {
        return Ok(());
    };
    let mut needed = BTreeMap::new();
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| Error::Io {
            action: "reading",
            path: p.to_path_buf(),
            source,
        })
    };
    let mut objects = vec![executable.to_path_buf()];
    objects.extend(closure.files.values().cloned());
    for object in &objects {
        if let Some(v) = crate::base::glibc_versions(&read(object)?) {
            for (version, file) in v.needed {
                needed.entry(version).or_insert(file);
            }
        }
    }
    let missing = crate::base::missing_versions(&needed, &provided.defined);
    if missing.is_empty() {
        return Ok(());
    }
    let newest = provided
        .defined
        .iter()
        .max_by_key(|v| crate::base::version_key(v))
        .cloned()
        .unwrap_or_else(|| "(none)".into());
    Err(Error::GlibcTooOld {
        reference: base.reference.clone(),
        newest,
        binary: executable.display().to_string(),
        missing: missing
            .into_iter()
            .map(|(v, f)| format!("{v} ({f})"))
            .collect(),
    })
}

/// The network sandbox for the compile step (`None` with `--allow-network`), reported once.
fn isolation(options: &BuildOptions, reporter: &dyn Reporter) -> Option<run::Sandbox> {
    if options.allow_network {
        reporter.report(&Event::Isolation {
            network: "allowed".into(),
            method: "none".into(),
            why: Some("--allow-network".into()),
        });
        return None;
    }
    let sandbox = run::probe_sandbox();
    match &sandbox {
        run::Sandbox::Unavailable(reason) => {
            reporter.report(&Event::Isolation {
                network: "not-isolated".into(),
                method: "none".into(),
                why: Some(reason.clone()),
            });
            reporter.report(&Event::Warning {
                message: format!(
                    "network isolation is off for this build: {reason}. Build scripts could reach the network; the environment is still scrubbed and the build offline. Install bubblewrap, or allow unprivileged user namespaces, to isolate it."
                ),
            });
        }
        s => reporter.report(&Event::Isolation {
            network: "isolated".into(),
            method: s.name().into(),
            why: None,
        }),
    }
    Some(sandbox)
}

/// The result of a scoped thread; a panic in it continues in the caller.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The entry restored before compiling.
struct Restored {
    entry: depcache::Entry,
    /// Whether it is the entry for exactly this key (a hit), not the nearest earlier one.
    exact: bool,
    /// Whether it came from the cache repository in this build.
    pulled: bool,
}

/// Pushes a cache entry to the cache repository; a failure is a warning, never a failed build.
fn share(
    remote: &crate::publish::RemoteCache,
    store: &Layout,
    key: &str,
    manifest: &imgbuild_oci::spec::Descriptor,
    reporter: &dyn Reporter,
) {
    if let Err(e) = remote.push_entry(store, key, manifest, reporter) {
        reporter.report(&Event::Warning {
            message: format!(
                "could not push the dependency cache entry to {}: {e}",
                remote.repository()
            ),
        });
    }
}

/// Looks up the dependency cache and restores the entry for `key`, or on a miss the nearest
/// earlier entry for the same binary. A damaged entry is reported and treated as a miss.
fn restore_dependencies(
    store: &Layout,
    key: &imgbuild_cargo::plan::DependencyKey,
    target: &BinaryTarget,
    profile_dir: &Path,
    remote: Option<&crate::publish::RemoteCache>,
    reporter: &dyn Reporter,
) -> Result<Option<Restored>> {
    let unusable = |key: &str, e: Error| {
        reporter.report(&Event::CacheUnusable {
            key: key.to_string(),
            message: e.to_string(),
        });
    };
    let local = match depcache::find(store, &key.key) {
        Ok(found) => found,
        Err(e) => {
            unusable(&key.key, e);
            None
        }
    };
    let mut pulled = false;
    let remote_entry = match (&local, remote) {
        (None, Some(remote)) => match remote.pull_entry(store, &key.key, reporter) {
            Ok(Some(entry)) => {
                pulled = true;
                Some(entry)
            }
            Ok(None) => None,
            Err(e) => {
                reporter.report(&Event::Warning {
                    message: format!(
                        "could not pull the dependency cache entry from {}: {e}",
                        remote.repository()
                    ),
                });
                None
            }
        },
        _ => None,
    };
    let (entry, exact) = match local.or(remote_entry) {
        Some(entry) => (Some(entry), true),
        None => (
            depcache::nearest(store, &target.package.name, &target.bin, &key.inputs),
            false,
        ),
    };
    reporter.report(&Event::CacheLookup {
        key: key.key.clone(),
        hit: exact,
        from_registry: pulled,
        nearest: entry
            .as_ref()
            .filter(|_| !exact)
            .map(|e| e.config.key.clone()),
    });
    let Some(entry) = entry else {
        return Ok(None);
    };
    match depcache::restore(store, &entry, profile_dir) {
        Ok(stats) => {
            reporter.report(&Event::CacheRestored {
                key: entry.config.key.clone(),
                present: stats.present,
                restored: stats.restored,
                bytes: stats.bytes,
            });
            Ok(Some(Restored {
                entry,
                exact,
                pulled,
            }))
        }
        Err(
            e @ (Error::CacheEntry { .. }
            | Error::Oci(
                imgbuild_oci::Error::DigestMismatch { .. }
                | imgbuild_oci::Error::MissingBlob { .. }
                | imgbuild_oci::Error::InvalidJson { .. },
            )),
        ) => {
            unusable(&entry.config.key, e);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Refuses outputs that cannot be written before anything is compiled.
fn preflight(out: &Output) -> Result<()> {
    let (path, is_dir_output) = match out {
        Output::Oci { dir, .. } => (dir, true),
        Output::OciArchive { file, .. } | Output::DockerArchive { file, .. } => (file, false),
        Output::Registry { .. } => return Ok(()),
    };
    let bad = |reason: String| Error::InvalidOutput {
        output: out.to_string(),
        reason,
    };
    if !is_dir_output && path.is_dir() {
        return Err(bad(format!(
            "{} is a directory; an archive output names a file",
            path.display()
        )));
    }
    if is_dir_output && path.exists() && !path.is_dir() {
        return Err(bad(format!(
            "{} exists and is not a directory",
            path.display()
        )));
    }
    // The nearest existing ancestor must be a directory we can create entries in.
    let mut ancestor = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    while !ancestor.exists() {
        match ancestor.parent() {
            Some(p) if !p.as_os_str().is_empty() => ancestor = p,
            _ => {
                ancestor = Path::new(".");
                break;
            }
        }
    }
    if !ancestor.is_dir() {
        return Err(bad(format!(
            "{} is not a directory, so nothing can be written under it",
            ancestor.display()
        )));
    }
    if !is_dir_output
        && path
            .parent()
            .is_some_and(|p| !p.as_os_str().is_empty() && !p.is_dir())
    {
        return Err(bad(format!(
            "the directory {} does not exist; create it first",
            path.parent().unwrap_or(path).display()
        )));
    }
    Ok(())
}

/// A resolved extra file: image path → (host path, mode).
type FileList = BTreeMap<String, (PathBuf, u32)>;

fn collect_extra_files(files: &[ExtraFile]) -> Result<FileList> {
    let mut out = FileList::new();
    for f in files {
        let meta = std::fs::metadata(&f.src).map_err(|e| Error::ExtraFile {
            src: f.src.clone(),
            reason: format!("{e}; `files` paths are relative to the Cargo.toml that declares them"),
        })?;
        if meta.is_dir() {
            walk(&f.src, &f.dst, f.mode, &mut out)?;
        } else {
            out.insert(
                f.dst.clone(),
                (f.src.clone(), f.mode.unwrap_or_else(|| default_mode(&meta))),
            );
        }
    }
    Ok(out)
}

fn default_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

fn walk(dir: &Path, dst: &str, mode: Option<u32>, out: &mut FileList) -> Result<()> {
    let io = |action: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io("reading directory", dir))?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io("reading directory", dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| Error::ExtraFile {
                src: path.clone(),
                reason: "the file name is not UTF-8".into(),
            })?;
        let meta = std::fs::metadata(&path).map_err(io("reading metadata of", &path))?;
        let target = format!("{}/{name}", dst.trim_end_matches('/'));
        if meta.is_dir() {
            walk(&path, &target, mode, out)?;
        } else {
            out.insert(target, (path, mode.unwrap_or_else(|| default_mode(&meta))));
        }
    }
    Ok(())
}

fn app_layer(target: &BinaryTarget, executable: &Path, extra: &FileList) -> Result<LayerBuilder> {
    let mut b = LayerBuilder::new();
    b.file(
        &format!("{APP_DIR}/{}", target.bin),
        Content::HostFile(executable.to_path_buf()),
        0o755,
    )?;
    for (dst, (src, mode)) in extra {
        b.file(dst, Content::HostFile(src.clone()), *mode)
            .map_err(|e| Error::ExtraFile {
                src: src.clone(),
                reason: e.to_string(),
            })?;
    }
    Ok(b)
}
