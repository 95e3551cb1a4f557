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
use crate::{Error, Result, appcache, closure, depcache, rootfs, time};

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

/// The local store's directory under a cache directory.
pub fn store_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("store")
}

/// Builds the image described by `options`, reporting progress to `reporter`.
pub fn build(options: &BuildOptions, reporter: &dyn Reporter) -> Result<BuiltImage> {
    let manifest_path = run::manifest_path(options.manifest_path.as_deref())?;
    let script = crate::plan::wrapper_script(&options.cache_dir)?;
    let metadata = run::metadata(&manifest_path, &script)?;
    let mut workspace = Workspace::new(&metadata);
    // The path packages (the workspace's own code): their sources are app-key inputs.
    let package_dirs: BTreeMap<String, PathBuf> = metadata
        .packages
        .iter()
        .filter(|p| p.source.is_none())
        .filter_map(|p| {
            let dir = p.manifest_path.parent()?.as_std_path().to_path_buf();
            Some((p.id.repr.clone(), dir))
        })
        .collect();
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
    let wrapper = crate::plan::wrapper(script, &workspace);
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
    let static_inputs = app_static_inputs(&AppStatic {
        workspace: &workspace,
        target: &target,
        config: &config,
        options,
        dependency_key: &dependency_key.key,
        epoch,
        revision: provenance.revision.as_deref(),
        base: base.as_ref().map(|b| b.digest.as_str()),
    })?;
    let static_key = appcache::static_key(&static_inputs);
    let env_value = |name: &str| compile_env_value(name, options, epoch);
    let remote = match (&options.cache_repo, options.dependency_cache) {
        (Some(repo), true) => {
            match crate::publish::RemoteCache::connect(repo, &options.registry, &options.cache_dir)
            {
                Ok(remote) => Some(remote),
                Err(e) => {
                    reporter.report(&Event::Warning {
                        message: format!(
                            "the cache repository {repo} is not usable, building without it: {e}"
                        ),
                    });
                    None
                }
            }
        }
        _ => None,
    };
    if options.dependency_cache
        && !options.rebuild
        && let Some(hit) = app_lookup(
            &store,
            &static_key,
            &workspace.root,
            remote.as_ref(),
            &env_value,
            reporter,
        )?
    {
        let manifest = store.read_manifest(hit.image.digest())?;
        let config_json: imgbuild_oci::spec::ImageConfiguration =
            serde_json::from_slice(&store.read_blob(manifest.config().digest())?).map_err(|e| {
                Error::CacheEntry {
                    reference: hit.record.reference.clone(),
                    reason: format!("its image config is unreadable: {e}"),
                }
            })?;
        let layers = manifest
            .layers()
            .iter()
            .zip(config_json.rootfs().diff_ids())
            .enumerate()
            .map(|(i, (d, diff_id))| {
                Ok(Layer {
                    blob: imgbuild_oci::layout::LayerBlob {
                        descriptor: d.clone(),
                        diff_id: diff_id.parse().map_err(|_| Error::CacheEntry {
                            reference: hit.record.reference.clone(),
                            reason: format!("invalid diff_id {diff_id}"),
                        })?,
                        uncompressed_size: 0,
                    },
                    created_by: None,
                    role: hit.record.roles.get(i).cloned().unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (name, tag) = hit
            .record
            .reference
            .rsplit_once(':')
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .unwrap_or_else(|| (hit.record.reference.clone(), "latest".into()));
        let executable = workspace
            .target_dir
            .join(units::profile_dir_name(&options.profile))
            .join(&target.bin);
        if let Some(remote) = &remote
            && !hit.from_registry
        {
            share_app(remote, &store, &hit.record, &hit.image, reporter);
        }
        depcache::touch(&options.cache_dir, &format!("app-{}", hit.record.app_key));
        depcache::touch(
            &options.cache_dir,
            &format!("app-{}", hit.record.static_key),
        );
        return finish(&Finish {
            store: &store,
            manifest: hit.image.clone(),
            config: manifest.config().clone(),
            name,
            tag,
            layers,
            executable,
            options,
            target: &target,
            dependency_key: &dependency_key,
            epoch,
            reporter,
        });
    }
    let profile_dir = workspace
        .build_dir
        .join(units::profile_dir_name(&options.profile));
    let build_dir_lock = depcache::lock_build_dir(&workspace.build_dir)?;
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
        expected_units: dependency_key.packages(),
        monitor: &crate::event::CargoMonitor(reporter),
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
                let latest = crate::publish::latest_tag(&target.package.name, &target.bin);
                if let Err(e) = remote.push_tag(&store, &saved.manifest, &latest, reporter) {
                    reporter.report(&Event::Warning {
                        message: format!(
                            "could not update {latest} in {}: {e}",
                            remote.repository()
                        ),
                    });
                }
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
    let executable = outcome.executable.clone();
    let outcome_units = outcome;

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
    if options.dependency_cache {
        let mut extra: Vec<PathBuf> = closure.files.values().cloned().collect();
        extra.extend(ca_bundle.iter().cloned());
        extra.extend(extra_files.values().map(|(src, _)| src.clone()));
        let mut ignore = vec![
            run::cargo_home(),
            workspace.target_dir.clone(),
            workspace.build_dir.clone(),
        ];
        ignore.extend(crate::hermetic::rustup_home());
        let names = appcache::collect_inputs(
            &workspace.root,
            &outcome_units,
            &package_dirs,
            &ignore,
            &extra,
        );
        let inputs = appcache::hash_inputs(&workspace.root, &names, &env_value);
        let record = appcache::AppRecord {
            app_key: appcache::app_key(&static_key, &inputs),
            static_key: static_key.clone(),
            binary: format!("{}/{}", target.package.name, target.bin),
            static_inputs: static_inputs.clone(),
            inputs,
            image: manifest_desc.digest().to_string(),
            reference: spec.reference(),
            roles: layers.iter().map(|l| l.role.clone()).collect(),
        };
        let record_desc = appcache::save(&store, &record, &manifest_desc)?;
        crate::plan::record_app(&options.cache_dir, &target, &static_inputs)?;
        depcache::touch(&options.cache_dir, &format!("app-{}", record.app_key));
        depcache::touch(&options.cache_dir, &format!("app-{}", record.static_key));
        reporter.report(&Event::AppCache {
            key: record.app_key.clone(),
            hit: false,
            from_registry: false,
            stored: true,
        });
        if let Some(remote) = &remote {
            for (desc, tag) in [
                (&manifest_desc, format!("app-{}", record.app_key)),
                (&record_desc, format!("app-{}", record.static_key)),
            ] {
                if let Err(e) = remote.push_tag(&store, desc, &tag, reporter) {
                    reporter.report(&Event::Warning {
                        message: format!(
                            "could not push the app cache entry to {}: {e}",
                            remote.repository()
                        ),
                    });
                    break;
                }
            }
        }
    }
    finish(&Finish {
        store: &store,
        manifest: manifest_desc,
        config: config_desc,
        name: spec.name.clone(),
        tag: spec.tag.clone(),
        layers,
        executable,
        options,
        target: &target,
        dependency_key: &dependency_key,
        epoch,
        reporter,
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

/// The app key of `target` as a build would compute it now, without building or pulling.
pub(crate) fn app_status(
    options: &BuildOptions,
    workspace: &Workspace,
    target: &BinaryTarget,
    dependency_key: &str,
) -> Result<AppStatus> {
    let config = workspace
        .image_config(target)?
        .merge(options.overrides.clone());
    let epoch = options
        .source_date_epoch
        .or_else(|| run::git_commit_time(&workspace.root))
        .unwrap_or(0);
    let revision = run::git_revision(&workspace.root);
    let base = config.base_image().map(|b| {
        crate::base::recorded_digest(&options.cache_dir, b)
            .unwrap_or_else(|| "(not resolved yet)".into())
    });
    let lines = app_static_inputs(&AppStatic {
        workspace,
        target,
        config: &config,
        options,
        dependency_key,
        epoch,
        revision: revision.as_deref(),
        base: base.as_deref(),
    })?;
    let static_key = appcache::static_key(&lines);
    let store_root = store_dir(&options.cache_dir);
    let record = Layout::open(&store_root)
        .ok()
        .and_then(|store| appcache::find_record(&store, &static_key).map(|r| (store, r)));
    let Some((store, record)) = record else {
        let changes = match crate::plan::previous_app(&options.cache_dir, target) {
            Some(old) => imgbuild_cargo::plan::explain(&old, &lines),
            None => vec!["no image of this binary was built with this cache yet".into()],
        };
        return Ok(AppStatus {
            key: None,
            hit: false,
            changes,
        });
    };
    let env_value = |name: &str| compile_env_value(name, options, epoch);
    let inputs = appcache::hash_inputs(&workspace.root, record.inputs.keys(), &env_value);
    let key = appcache::app_key(&static_key, &inputs);
    let hit = appcache::find_image(&store, &key).ok().flatten().is_some();
    Ok(AppStatus {
        changes: appcache::changed_inputs(&record, &inputs),
        key: Some(key),
        hit,
    })
}

/// What [`finish`] needs.
struct Finish<'a> {
    store: &'a Layout,
    manifest: Descriptor,
    config: Descriptor,
    name: String,
    tag: String,
    layers: Vec<Layer>,
    executable: PathBuf,
    options: &'a BuildOptions,
    target: &'a BinaryTarget,
    dependency_key: &'a imgbuild_cargo::plan::DependencyKey,
    epoch: u64,
    reporter: &'a dyn Reporter,
}

/// Tags the image in the store, writes the outputs, records the dependency key, reports.
fn finish(f: &Finish<'_>) -> Result<BuiltImage> {
    let reference = format!("{}:{}", f.name, f.tag);
    {
        let _lock = f.store.lock()?;
        f.store.set_tag(&reference, &f.manifest)?;
    }
    for out in &f.options.outputs {
        match out {
            Output::Registry { reference } => {
                crate::publish::push(
                    f.store,
                    &f.manifest,
                    reference,
                    &f.tag,
                    &f.options.registry,
                    &f.options.cache_dir,
                    f.reporter,
                )?;
            }
            _ => output::write(f.store, &f.manifest, &f.name, &f.tag, out, f.epoch)?,
        }
        f.reporter.report(&Event::Output {
            destination: out.to_string(),
        });
    }
    crate::plan::record(&f.options.cache_dir, f.target, f.dependency_key)?;
    f.reporter.report(&Event::ImageBuilt {
        digest: f.manifest.digest().to_string(),
        reference: reference.clone(),
        config: f.config.digest().to_string(),
        size: f.layers.iter().map(|l| l.blob.descriptor.size()).sum(),
    });
    Ok(BuiltImage {
        manifest: f.manifest.clone(),
        config: f.config.clone(),
        reference,
        layers: f.layers.clone(),
        executable: f.executable.clone(),
        store: f.store.root().to_path_buf(),
    })
}

/// The inputs of the static key.
struct AppStatic<'a> {
    workspace: &'a Workspace,
    target: &'a BinaryTarget,
    config: &'a ImageConfig,
    options: &'a BuildOptions,
    dependency_key: &'a str,
    epoch: u64,
    revision: Option<&'a str>,
    base: Option<&'a str>,
}

/// The static key's lines: everything known before compiling that changes the image.
fn app_static_inputs(a: &AppStatic<'_>) -> Result<Vec<String>> {
    let root = &a.workspace.root;
    let mut lines = vec![
        appcache::FORMAT.to_string(),
        format!("imgbuild {}", env!("CARGO_PKG_VERSION")),
        format!("binary {}/{}", a.target.package.name, a.target.bin),
        format!("dependency-key {}", a.dependency_key),
        format!("profile {}", a.options.profile),
        format!(
            "features [{}] all={} no-default={}",
            a.options.features.join(","),
            a.options.all_features,
            a.options.no_default_features
        ),
        format!("epoch {}", a.epoch),
        format!("revision {}", a.revision.unwrap_or("-")),
        format!("base {}", a.base.unwrap_or("scratch")),
        format!(
            "network {}",
            if a.options.allow_network {
                "allowed"
            } else {
                "isolated"
            }
        ),
        format!("pass-env [{}]", a.options.pass_env.join(",")),
    ];
    let mut manifests = a.workspace.member_manifests();
    manifests.push(a.workspace.root_manifest.clone());
    manifests.sort();
    manifests.dedup();
    for m in manifests {
        let bytes = std::fs::read(&m).map_err(crate::io_err("reading", &m))?;
        lines.push(format!(
            "manifest {} {}",
            appcache::input_name(root, &m),
            imgbuild_oci::digest::sha256(&bytes).digest()
        ));
    }
    let c = a.config;
    lines.push(format!(
        "config name={:?} tag={:?} base={:?} entrypoint={:?} cmd={:?} env={:?} workdir={:?} user={:?} expose={:?} labels={:?}",
        c.name, c.tag, c.base, c.entrypoint, c.cmd, c.env, c.workdir, c.user, c.expose, c.labels
    ));
    for f in c.files.iter().flatten() {
        lines.push(format!(
            "config-file {} <- {} mode={:?}",
            f.dst,
            appcache::input_name(root, &f.src),
            f.mode
        ));
    }
    Ok(lines)
}

/// The value a variable has in the compile step (see `imgbuild_cargo::hermetic`).
fn compile_env_value(name: &str, options: &BuildOptions, epoch: u64) -> Option<String> {
    imgbuild_cargo::hermetic::stable_value(
        name,
        &|n| std::env::var(n).ok(),
        &options.pass_env,
        epoch,
    )
}

/// A zero-work hit.
struct AppHit {
    record: appcache::AppRecord,
    image: Descriptor,
    from_registry: bool,
}

/// Makes sure the cache repository has a local hit's image and record (it was built before the
/// repository was configured, or its push failed). Failures are warnings.
fn share_app(
    remote: &crate::publish::RemoteCache,
    store: &Layout,
    record: &appcache::AppRecord,
    image: &Descriptor,
    reporter: &dyn Reporter,
) {
    let result = (|| -> Result<()> {
        if remote.has_tag(&format!("app-{}", record.app_key))? {
            return Ok(());
        }
        let record_desc = appcache::save(store, record, image)?;
        remote.push_tag(store, image, &format!("app-{}", record.app_key), reporter)?;
        remote.push_tag(
            store,
            &record_desc,
            &format!("app-{}", record.static_key),
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

/// Looks for an image built from exactly these inputs: the record for the static key (local,
/// else from the cache repository) names the files; their hashes give the app key; the image
/// for that key must be in the store (or pulled) with every blob intact.
fn app_lookup(
    store: &Layout,
    static_key: &str,
    root: &Path,
    remote: Option<&crate::publish::RemoteCache>,
    env_value: &dyn Fn(&str) -> Option<String>,
    reporter: &dyn Reporter,
) -> Result<Option<AppHit>> {
    let remote_warning = |e: &dyn std::fmt::Display| {
        reporter.report(&Event::Warning {
            message: format!("the cache repository could not be read: {e}"),
        });
    };
    let mut from_registry = false;
    let record = match appcache::find_record(store, static_key) {
        Some(r) => Some(r),
        None => match remote
            .map(|r| r.pull_tag(store, &format!("app-{static_key}"), &crate::event::Silent))
        {
            Some(Ok(Some(desc))) => match appcache::adopt_record(store, &desc) {
                Ok(r) => Some(r),
                Err(e) => {
                    remote_warning(&e);
                    None
                }
            },
            Some(Err(e)) => {
                remote_warning(&e);
                None
            }
            _ => None,
        },
    };
    let Some(record) = record else {
        reporter.report(&Event::AppCache {
            key: static_key.to_string(),
            hit: false,
            from_registry: false,
            stored: false,
        });
        return Ok(None);
    };
    let inputs = appcache::hash_inputs(root, record.inputs.keys(), env_value);
    let key = appcache::app_key(static_key, &inputs);
    let mut image = match appcache::find_image(store, &key) {
        Ok(found) => found,
        Err(e) => {
            reporter.report(&Event::CacheUnusable {
                key: key.clone(),
                message: e.to_string(),
            });
            None
        }
    };
    if image.is_none()
        && let Some(remote) = remote
    {
        match remote.pull_tag(store, &format!("app-{key}"), reporter) {
            Ok(Some(desc)) => {
                appcache::adopt_image(store, &key, &desc)?;
                from_registry = true;
                image = Some(desc);
            }
            Ok(None) => {}
            Err(e) => remote_warning(&e),
        }
    }
    reporter.report(&Event::AppCache {
        key: key.clone(),
        hit: image.is_some(),
        from_registry,
        stored: false,
    });
    Ok(image.map(|image| AppHit {
        record: appcache::AppRecord {
            app_key: key,
            inputs,
            ..record
        },
        image,
        from_registry,
    }))
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
    let read = |p: &Path| std::fs::read(p).map_err(crate::io_err("reading", p));
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
        None => {
            let mut nearest =
                depcache::nearest(store, &target.package.name, &target.bin, &key.inputs);
            // A fresh runner: the newest entry of this binary in the cache repository.
            if nearest.is_none()
                && let Some(remote) = remote
            {
                match remote.pull_latest(store, &target.package.name, &target.bin, reporter) {
                    Ok(Some(e)) if depcache::compatible(&e.config.inputs, &key.inputs) => {
                        pulled = true;
                        nearest = Some(e);
                    }
                    Ok(_) => {}
                    Err(e) => reporter.report(&Event::Warning {
                        message: format!(
                            "could not pull the newest dependency cache entry from {}: {e}",
                            remote.repository()
                        ),
                    }),
                }
            }
            (nearest, false)
        }
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
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(crate::io_err("reading directory", dir))?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(crate::io_err("reading directory", dir))?;
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
        let meta = std::fs::metadata(&path).map_err(crate::io_err("reading metadata of", &path))?;
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
