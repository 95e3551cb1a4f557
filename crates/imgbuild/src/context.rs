//! `prepare`: the context every command starts from, computed once — the workspace, the
//! selected binaries and their image configuration, the timestamp, the git revision, a
//! snapshot of the environment and the cache directory. `build`, `plan` and `verify` all begin
//! here, so they cannot disagree about any of it.
//!
//! Runs `cargo metadata` and `git` (through `imgbuild_cargo::run`), installs the rustc wrapper
//! script under the cache directory, creates cargo's target directory, and reads the process
//! environment once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use imgbuild_cargo::config::ImageConfig;
use imgbuild_cargo::run;
use imgbuild_cargo::targetdir::{self, TargetDirInputs};
use imgbuild_cargo::workspace::{BinaryTarget, Workspace};

use crate::Result;
use crate::buildenv::{self, BuildEnv};
use crate::cachedir::CacheDir;
use crate::event::Reporter;
use crate::options::BuildOptions;
use crate::platform::Platform;

pub(crate) use crate::procenv::Env;

/// Which binaries a command works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Exactly one (`build`, `verify`): an ambiguous choice is an error naming the candidates.
    One,
    /// Every binary the options allow (`plan`).
    All,
}

/// A selected binary and the image configuration it gets (metadata tables, then the
/// command line's overrides).
#[derive(Debug, Clone)]
pub(crate) struct Selected {
    pub(crate) target: BinaryTarget,
    pub(crate) config: ImageConfig,
}

/// The build context.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    pub(crate) options: &'a BuildOptions,
    pub(crate) cache: CacheDir,
    pub(crate) env: Env,
    /// The Cargo.toml the command was pointed at.
    pub(crate) manifest_path: PathBuf,
    /// The workspace, with the target directory the options ask for.
    pub(crate) workspace: Workspace,
    /// Cargo's own target and build directories, before the options moved them.
    pub(crate) cargo_dirs: [PathBuf; 2],
    /// Package id → directory, for the path packages (the workspace's own code).
    pub(crate) package_dirs: BTreeMap<String, PathBuf>,
    /// The target directory the compile step must use when the options move it (`verify`,
    /// `--allow-network`); `None`: cargo's own choice.
    pub(crate) forced_target_dir: Option<PathBuf>,
    /// The rustc wrapper every cargo command of this workspace runs with.
    pub(crate) wrapper: run::Wrapper,
    /// The selected binaries (one for [`Scope::One`]).
    pub(crate) selected: Vec<Selected>,
    /// `SOURCE_DATE_EPOCH`: the options' value, else the last commit's time, else 0.
    pub(crate) epoch: u64,
    /// The checkout's git revision, if it is a git checkout.
    pub(crate) revision: Option<String>,
    /// The build environment, when one is configured.
    pub(crate) build_env: Option<BuildEnv>,
    /// Where cargo and rustc run: the host, or inside the build environment.
    pub(crate) toolchain: run::Toolchain,
    /// Every package's source, license and dependency edges (for SBOMs and audit data).
    pub(crate) graph: imgbuild_cargo::graph::PackageGraph,
    /// What `cargo metadata` read (its answer, and `cargo tree`'s, are reused while these are
    /// unchanged).
    pub(crate) workspace_inputs: Vec<crate::probecache::Input>,
    /// Content hashes of input files, remembered between builds.
    pub(crate) file_hashes: crate::filehash::FileHashes,
    /// The signing and trusted keys, read once.
    pub(crate) keys: std::sync::Arc<crate::signing::Keys>,
    /// The platform asked for (`--platform`); `None`: the build machine's.
    pub(crate) platform: Option<Platform>,
    /// Cargo's `--target` when the platform is not the build machine's own (its outputs are
    /// then under `<build dir>/<triple>/`).
    pub(crate) cargo_triple: Option<String>,
}

impl Context<'_> {
    /// Where cargo puts the profile's outputs under `dir` (the target or build directory):
    /// `dir/<triple>/<profile>` with `--target`, else `dir/<profile>`.
    pub(crate) fn profile_dir_in(&self, dir: &Path) -> PathBuf {
        let profile = imgbuild_cargo::units::profile_dir_name(&self.options.profile);
        match &self.cargo_triple {
            Some(triple) => dir.join(triple).join(profile),
            None => dir.join(profile),
        }
    }

    /// The cache repository's tag for `binary`'s newest dependency entry of this build's
    /// profile.
    pub(crate) fn latest_tag(&self, binary: &BinaryTarget) -> String {
        crate::names::latest_tag(&binary.package.name, &binary.bin, &self.options.profile)
    }

    /// The one selected binary (for [`Scope::One`]).
    pub(crate) fn one(&self) -> &Selected {
        &self.selected[0]
    }

    /// Directories whose files are never a build's own inputs: cargo's home, the toolchain,
    /// the target and build directories (dependencies and generated files, covered by other
    /// key inputs).
    pub(crate) fn not_inputs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![
            run::cargo_home(),
            self.workspace.target_dir.clone(),
            self.workspace.build_dir.clone(),
        ];
        dirs.extend(self.env.rustup_home());
        dirs
    }

    /// The value a variable has in the compile step (see `imgbuild_cargo::hermetic`).
    pub(crate) fn compile_env_value(&self, name: &str) -> Option<String> {
        imgbuild_cargo::hermetic::stable_value(
            name,
            &|n| self.env.get(n).map(String::from),
            &self.options.pass_env,
            self.epoch,
        )
    }
}

/// Reads the workspace and selects the binaries `options` name. A build environment is
/// resolved first: `cargo metadata` already runs in it.
pub(crate) fn prepare<'a>(
    options: &'a BuildOptions,
    scope: Scope,
    reporter: &dyn Reporter,
) -> Result<Context<'a>> {
    let cache = options.cache_dir.clone();
    let env = Env::capture();
    let keys = signing_keys(options, &env)?;
    let manifest_path = run::manifest_path(options.manifest_path.as_deref())?;
    let script = run::WrapperScript::install(&cache.tools())?;
    let build_env = build_environment(options, &manifest_path, &cache, reporter)?;
    // Only a build environment binds the project's checkout (found by asking git).
    let project = build_env
        .as_ref()
        .map(|_| buildenv::project_root(&manifest_path));
    let mut toolchain = match (&build_env, &project) {
        (Some(b), Some(project)) => buildenv::toolchain(b, &env, &cache, &[project])?,
        _ => run::Toolchain::Host,
    };
    let read = read_workspace(&cache, &env, &manifest_path, &script, &toolchain)?;
    let mut workspace = read.workspace;
    let (cargo_triple, forced_target_dir) =
        target_dirs(options, &mut workspace, (&cache, &env, &toolchain))?;
    let selected = select(options, scope, &workspace)?;
    // Git's two answers are independent: ask at once.
    let (git_time, revision) = std::thread::scope(|s| {
        let time = s.spawn(|| run::git_commit_time(&workspace.root));
        let revision = run::git_revision(&workspace.root);
        (crate::threads::join(time), revision)
    });
    check_selected_env(build_env.as_ref(), options, &selected)?;
    if let (Some(b), Some(project)) = (&build_env, &project) {
        toolchain = buildenv::toolchain(
            b,
            &env,
            &cache,
            &[project, &workspace.target_dir, &workspace.build_dir],
        )?;
    }
    let target_flags = match (&options.for_platform, &cargo_triple) {
        (Some(p), Some(_)) => p.target_flags(),
        _ => Vec::new(),
    };
    let wrapper = run::Wrapper::new(script, &workspace.root, &workspace.build_dir)
        .with_target_flags(target_flags);
    let file_hashes = crate::filehash::FileHashes::open(cache.probes().join("file-hashes.json"));
    Ok(Context {
        options,
        cache,
        env,
        manifest_path,
        workspace,
        cargo_dirs: read.cargo_dirs,
        package_dirs: read.package_dirs,
        forced_target_dir,
        wrapper,
        selected,
        epoch: options.source_date_epoch.or(git_time).unwrap_or(0),
        revision,
        build_env,
        toolchain,
        graph: read.graph,
        workspace_inputs: read.inputs,
        file_hashes,
        keys,
        platform: options.for_platform.clone(),
        cargo_triple,
    })
}

/// The keys the options name: those already read (by a multi-platform build or `verify`, so
/// that a cosign key is decrypted once), else read now (`COSIGN_PASSWORD` for a protected one).
fn signing_keys(options: &BuildOptions, env: &Env) -> Result<std::sync::Arc<crate::signing::Keys>> {
    Ok(match &options.resolved_keys {
        Some(keys) => keys.clone(),
        None => std::sync::Arc::new(crate::signing::Keys::load(
            options.key_files(),
            env.get("COSIGN_PASSWORD"),
        )?),
    })
}

/// The build environment: the one `verify` resolved already, else the one the options or the
/// metadata tables declare, resolved now; `None` for a host build.
fn build_environment(
    options: &BuildOptions,
    manifest_path: &Path,
    cache: &CacheDir,
    reporter: &dyn Reporter,
) -> Result<Option<BuildEnv>> {
    Ok(
        match (
            &options.resolved_env,
            buildenv::declared(options, manifest_path)?,
        ) {
            (Some(resolved), _) => Some(resolved.clone()),
            (None, Some(reference)) => {
                Some(buildenv::resolve(&reference, options, cache, reporter)?)
            }
            (None, None) => None,
        },
    )
}

/// What `cargo metadata` says of the workspace.
struct WorkspaceRead {
    workspace: Workspace,
    graph: imgbuild_cargo::graph::PackageGraph,
    cargo_dirs: [PathBuf; 2],
    package_dirs: BTreeMap<String, PathBuf>,
    inputs: Vec<crate::probecache::Input>,
}

/// Runs (or recalls) `cargo metadata` and reads the workspace from its answer.
fn read_workspace(
    cache: &CacheDir,
    env: &Env,
    manifest_path: &Path,
    script: &run::WrapperScript,
    toolchain: &run::Toolchain,
) -> Result<WorkspaceRead> {
    // Cargo keeps what it asked rustc (`-vV`, the target's file names and cfg) in the target
    // directory, but only when that directory exists when it exits: on a fresh checkout
    // `cargo metadata` could not keep its answers, and `cargo tree` and the build would each
    // ask again (about 50 ms a time). Where it is sure, the directory is made before
    // `cargo metadata` runs; a guess that turns out wrong is taken back.
    let made = matches!(toolchain, run::Toolchain::Host)
        .then(|| make_predicted_target_dir(manifest_path, env))
        .flatten();
    let read = crate::probecache::metadata(cache, env, manifest_path, script, toolchain);
    if let Some(made) = &made
        && read
            .as_ref()
            .map_or(true, |(m, _)| m.target_directory.as_std_path() != made)
    {
        let _ = std::fs::remove_dir(made);
    }
    let (metadata, inputs) = read?;
    let workspace = Workspace::new(&metadata);
    let cargo_dirs = [workspace.target_dir.clone(), workspace.build_dir.clone()];
    // Otherwise they are made now, and the later calls share the answers. Best effort: a
    // directory that cannot be made is cargo's error to give, later.
    for dir in &cargo_dirs {
        let _ = std::fs::create_dir_all(dir);
    }
    let package_dirs = metadata
        .packages
        .iter()
        .filter(|p| p.source.is_none())
        .filter_map(|p| {
            let dir = p.manifest_path.parent()?.as_std_path().to_path_buf();
            Some((p.id.repr.clone(), dir))
        })
        .collect();
    Ok(WorkspaceRead {
        graph: imgbuild_cargo::graph::PackageGraph::new(&metadata),
        workspace,
        cargo_dirs,
        package_dirs,
        inputs,
    })
}

/// Makes cargo's target directory where [`targetdir::predict`] is sure of it and it does not
/// exist yet; the directory made, to be taken back if `cargo metadata` names another.
fn make_predicted_target_dir(manifest_path: &Path, env: &Env) -> Option<PathBuf> {
    let dir = fresh_target_dir(manifest_path, env)?;
    std::fs::create_dir(&dir).ok().map(|()| dir)
}

/// Cargo's target directory where [`targetdir::predict`] is sure of it and it does not exist
/// yet (a fresh checkout); `None` otherwise.
pub(crate) fn fresh_target_dir(manifest_path: &Path, env: &Env) -> Option<PathBuf> {
    let manifest_dir = manifest_path.parent()?;
    // The only directory a prediction can name; once it exists (every build but a fresh
    // checkout's first) there is nothing to make, and nothing to read.
    if manifest_dir.join("target").exists() {
        return None;
    }
    let manifest = std::fs::read_to_string(manifest_path).ok()?;
    let cwd = std::env::current_dir().ok()?;
    let home = run::cargo_home();
    let configs: Vec<String> = cwd
        .ancestors()
        .chain(manifest_dir.ancestors())
        .flat_map(|dir| [dir.join(".cargo/config.toml"), dir.join(".cargo/config")])
        .chain([home.join("config.toml"), home.join("config")])
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .collect();
    let manifest_above = manifest_dir
        .ancestors()
        .skip(1)
        .any(|dir| dir.join("Cargo.toml").is_file());
    targetdir::predict(&TargetDirInputs {
        manifest_dir,
        manifest: &manifest,
        manifest_above,
        configs: &configs,
        env: &|k| env.get(k).map(String::from),
    })
}

/// The binaries `options` select, each with its image configuration (metadata tables, then
/// the command line's overrides).
fn select(options: &BuildOptions, scope: Scope, workspace: &Workspace) -> Result<Vec<Selected>> {
    let (package, bin) = (options.package.as_deref(), options.bin.as_deref());
    let targets = match scope {
        Scope::One => vec![workspace.select(package, bin)?],
        Scope::All => workspace.candidates(package, bin)?,
    };
    targets
        .into_iter()
        .map(|target| {
            let config = workspace
                .image_config(&target)?
                .merge(options.overrides.clone());
            Ok(Selected { target, config })
        })
        .collect()
}

/// Moves the target directory where the options ask (`verify`'s own, `--allow-network`'s, a
/// platform's); returns cargo's `--target` and the target directory the compile step must
/// use when it moved (`None`: cargo's own choice).
fn target_dirs(
    options: &BuildOptions,
    workspace: &mut Workspace,
    tools: (&CacheDir, &Env, &run::Toolchain),
) -> Result<(Option<String>, Option<PathBuf>)> {
    if let Some(dir) = &options.target_dir {
        workspace.target_dir = dir.clone();
        workspace.build_dir = dir.clone();
    }
    if options.allow_network {
        // Artifacts built with network access never mix with hermetic ones.
        workspace.target_dir = workspace.target_dir.join("allow-network");
        workspace.build_dir = workspace.target_dir.clone();
    }
    let cargo_triple = match &options.for_platform {
        Some(p) => platform_dirs(p, workspace, tools)?,
        None => None,
    };
    let forced_target_dir =
        (options.allow_network || options.target_dir.is_some() || cargo_triple.is_some())
            .then(|| workspace.target_dir.clone());
    Ok((cargo_triple, forced_target_dir))
}

/// Cargo's `--target` for `platform` (see [`cross_target`]); a `--target` build gets a target
/// directory of its own in `workspace`: cargo does not see the flags the wrapper adds, so its
/// fingerprints cannot tell the builds apart.
fn platform_dirs(
    platform: &Platform,
    workspace: &mut Workspace,
    (cache, env, toolchain): (&CacheDir, &Env, &run::Toolchain),
) -> Result<Option<String>> {
    let triple = cross_target(platform, cache, env, toolchain, &workspace.root)?;
    if triple.is_some() {
        workspace.target_dir = workspace
            .target_dir
            .join("imgbuild-platform")
            .join(platform.slug());
        workspace.build_dir = workspace.target_dir.clone();
    }
    Ok(triple)
}

/// Whether cargo has a linker for `platform`: its `CARGO_TARGET_<TRIPLE>_LINKER`, or a
/// `[target.<triple>]` table with a `linker` in a cargo config file of the workspace, its
/// parents or cargo's home.
fn linker_configured(platform: &Platform, env: &Env, root: &Path) -> bool {
    if env
        .get(&platform.linker_var())
        .is_some_and(|v| !v.is_empty())
    {
        return true;
    }
    let header = format!("[target.{}]", platform.triple());
    let dotted = format!("target.{}.linker", platform.triple());
    let mentions = |text: &str| {
        let after_header = text.split(&header).skip(1).any(|rest| {
            rest.split("\n[")
                .next()
                .is_some_and(|t| t.contains("linker"))
        });
        after_header || text.contains(&dotted)
    };
    let mut files: Vec<PathBuf> = root
        .ancestors()
        .flat_map(|dir| [dir.join(".cargo/config.toml"), dir.join(".cargo/config")])
        .collect();
    files.push(run::cargo_home().join("config.toml"));
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .any(|text| mentions(&text))
}

/// Cargo's `--target` for `platform`: `None` when the build machine builds it natively;
/// otherwise its triple, once the toolchain is known to have its standard library.
fn cross_target(
    platform: &Platform,
    cache: &CacheDir,
    env: &Env,
    toolchain: &run::Toolchain,
    root: &Path,
) -> Result<Option<String>> {
    let rustc = crate::probecache::rustc_version(cache, env, toolchain, root)?;
    let host = run::host_triple(&rustc).unwrap_or_default();
    if platform.is_native(&host) {
        return Ok(None);
    }
    let triple = platform.triple();
    let same_arch = host.split('-').next() == triple.split('-').next();
    if !same_arch && !linker_configured(platform, env, root) {
        let (var, prefix) = (platform.linker_var(), platform.gnu_prefix());
        return Err(crate::Error::Platform {
            platform: platform.to_string(),
            reason: format!(
                "no linker for {triple} is configured (the host's `cc` links for {host} only); install a cross linker (Debian: `apt-get install gcc-{prefix}`) and set {var}={prefix}-gcc, or write `[target.{triple}]` with `linker = \"{prefix}-gcc\"` in .cargo/config.toml"
            ),
        });
    }
    let libdir = run::target_libdir(toolchain, triple)?;
    let has_std = std::fs::read_dir(&libdir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
    });
    if !has_std {
        return Err(crate::Error::Platform {
            platform: platform.to_string(),
            reason: format!(
                "the Rust standard library for {triple} is not installed; run `rustup target add {triple}` (or use a build environment that has it)"
            ),
        });
    }
    Ok(Some(triple.to_string()))
}

/// The environment cargo reported for the selected binaries must be the one used: a
/// `build-env` written in a way the early scan does not read (another binary's table, an
/// inline table) is an error naming the fix, never a build with the wrong toolchain.
fn check_selected_env(
    used: Option<&BuildEnv>,
    options: &BuildOptions,
    selected: &[Selected],
) -> Result<()> {
    if options.build_env.is_some() {
        return Ok(()); // the command line wins over every table
    }
    for s in selected {
        let declared = s.config.build_env.as_deref();
        let used_ref = used.map(|b| b.reference.as_str());
        if declared != used_ref {
            return Err(crate::Error::BuildEnv {
                reference: declared.or(used_ref).unwrap_or_default().to_string(),
                reason: format!(
                    "{}/{} declares build-env {:?} but imgbuild read {:?} from the manifests before running cargo; write `build-env = \"…\"` directly under [package.metadata.imgbuild] of the Cargo.toml you build (or [workspace.metadata.imgbuild]), or pass --build-env",
                    s.target.package.name, s.target.bin, declared, used_ref
                ),
            });
        }
    }
    Ok(())
}
