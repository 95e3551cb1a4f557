//! Stage `setup`: everything decided before the cache is consulted — outputs checked, extra
//! files found, the dependency key, the local store opened (and held against garbage
//! collection), the base image resolved, the app cache's static key, the cache repository
//! connected.
//!
//! Runs `cargo tree` and `rustc -vV`, reads the declared extra files, opens the store, pulls
//! the base image when the store lacks it and connects to the cache repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use imgbuild_cargo::config::ExtraFile;
use imgbuild_cargo::plan::{DependencyKey, TreeEntry};
use imgbuild_oci::layout::{Layout, LayoutLock};

use crate::appcache::{self, AppCache, StaticKey};
use crate::base::BaseImage;
use crate::context::Context;
use crate::event::{Event, Reporter};
use crate::keys::{self, KeyContext};
use crate::output::Output;
use crate::remotecache::RemoteCache;
use crate::threads::join;
use crate::{Error, Result};

/// A resolved extra file: image path → (host path, mode).
pub(crate) type FileList = BTreeMap<String, (PathBuf, u32)>;

/// What the later stages share.
pub(crate) struct Setup {
    /// The local store.
    pub(crate) store: Layout,
    /// Held until the image is tagged: garbage collection waits for untagged blobs.
    _writer: LayoutLock,
    /// The workspace-wide key inputs.
    pub(crate) keys: KeyContext,
    /// The binary's dependency key.
    pub(crate) dependency_key: DependencyKey,
    /// The binary's resolved package tree (what the key lists).
    pub(crate) tree: Vec<TreeEntry>,
    /// The base image, when one is configured.
    pub(crate) base: Option<BaseImage>,
    /// The app cache's static key.
    pub(crate) static_key: StaticKey,
    /// The cache repository, when configured, enabled and reachable.
    pub(crate) remote: Option<RemoteCache>,
    /// The declared extra files.
    pub(crate) extra_files: FileList,
    /// Cargo's output directory for the profile (`target/release`).
    pub(crate) profile_dir: PathBuf,
}

impl Setup {
    /// Where the app cache looks and stores.
    pub(crate) fn app_cache(&self) -> AppCache<'_> {
        AppCache {
            store: &self.store,
            static_key: &self.static_key,
            remote: self.remote.as_ref(),
        }
    }
}

/// Runs the stage.
pub(crate) fn setup(cx: &Context<'_>, reporter: &dyn Reporter) -> Result<Setup> {
    let options = cx.options;
    let selected = cx.one();
    for out in &options.outputs {
        preflight(out, cx.env.get("DOCKER_HOST"))?;
    }
    let package_dir = selected
        .target
        .package
        .manifest_path
        .parent()
        .unwrap_or(Path::new("/"));
    let extra_files = collect_extra_files(
        selected.config.files.as_deref().unwrap_or_default(),
        package_dir,
    )?;
    // Connecting (a credential helper, a TLS handshake, a ping) takes as long as a round trip
    // or more: it runs while `cargo tree` and `rustc -vV` answer.
    let (gathered, connected) = std::thread::scope(|s| {
        let connected = s.spawn(|| connect_remote(cx));
        (keys::gather(cx, &selected.target), join(connected))
    });
    let remote = usable_remote(cx, connected, reporter);
    let (keys, dependency_key, tree) = gathered?;
    let store = crate::repair::open_store(&cx.cache, reporter)?;
    let writer = store.writer_lock()?;
    // The base image is resolved before compiling: a wrong reference fails fast.
    let base = match selected.config.base_image() {
        Some(text) => {
            let arch = cx.platform.as_ref().map_or_else(
                || crate::image::host_arch().to_string(),
                |p| p.architecture.clone(),
            );
            let b =
                crate::base::resolve(&store, text, &arch, &options.registry, &cx.cache, reporter)?;
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
        package: selected.target.package.name.clone(),
        bin: selected.target.bin.clone(),
        profile: options.profile.clone(),
        platform: cx.platform.as_ref().map(ToString::to_string),
    });
    let static_key = appcache::static_key_of(
        cx,
        selected,
        &dependency_key.key,
        base.as_ref().map(|b| b.digest.as_str()),
    )?;
    let profile_dir = cx.profile_dir_in(&cx.workspace.build_dir);
    Ok(Setup {
        remote,
        store,
        _writer: writer,
        keys,
        dependency_key,
        tree,
        base,
        static_key,
        extra_files,
        profile_dir,
    })
}

/// Connects to the cache repository, when one is configured and the cache is on (`None`
/// otherwise). Its keys were read when the build was prepared (a key that cannot be read is an
/// error there: a trust setting silently ignored would be worse than no cache).
fn connect_remote(cx: &Context<'_>) -> Option<Result<RemoteCache>> {
    let options = cx.options;
    let repo = options.cache_repo.as_ref().filter(|_| options.caching())?;
    let writable = match options.cache_repo_mode {
        crate::options::RemoteCacheMode::Off => return None,
        crate::options::RemoteCacheMode::ReadOnly => false,
        _ => true,
    };
    Some(
        RemoteCache::connect(repo, &options.registry, &cx.cache).map(|r| {
            r.writable(writable)
                .signing(cx.keys.cache.clone(), cx.keys.trust.clone())
        }),
    )
}

/// The connected cache repository; one that cannot be reached is a warning and the build goes
/// on without it.
fn usable_remote(
    cx: &Context<'_>,
    connected: Option<Result<RemoteCache>>,
    reporter: &dyn Reporter,
) -> Option<RemoteCache> {
    match connected? {
        Ok(remote) => Some(remote),
        Err(e) => {
            let repo = cx.options.cache_repo.as_ref()?;
            reporter.report(&Event::Warning {
                message: format!(
                    "the cache repository {repo} is not usable, building without it: {e}"
                ),
            });
            None
        }
    }
}

/// Refuses outputs that cannot be written before anything is compiled (an engine output:
/// no engine answers at `docker_host`).
fn preflight(out: &Output, docker_host: Option<&str>) -> Result<()> {
    let (path, is_dir_output) = match out {
        Output::Oci { dir, .. } => (dir, true),
        Output::OciArchive { file, .. } | Output::DockerArchive { file, .. } => (file, false),
        Output::Registry { .. } | Output::Repo { .. } => return Ok(()),
        Output::DockerDaemon { .. } => return crate::daemon::reachable(docker_host),
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

/// The declared files, each checked to resolve (symbolic links followed) inside the package
/// directory: a link to the build host's files would put them in the image.
fn collect_extra_files(files: &[ExtraFile], package_dir: &Path) -> Result<FileList> {
    let mut out = FileList::new();
    let root = std::fs::canonicalize(package_dir).map_err(crate::io_err(
        "resolving the package directory",
        package_dir,
    ))?;
    for f in files {
        inside(&f.src, &root)?;
        let meta = std::fs::metadata(&f.src).map_err(|e| Error::ExtraFile {
            src: f.src.clone(),
            reason: format!("{e}; `files` paths are relative to the Cargo.toml that declares them"),
        })?;
        if meta.is_dir() {
            walk(&f.src, &f.dst, f.mode, &mut out, &root)?;
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

/// `path` (symbolic links followed) is inside `root` (canonical); a missing file is left to the
/// caller's error.
fn inside(path: &Path, root: &Path) -> Result<()> {
    match std::fs::canonicalize(path) {
        Ok(real) if !real.starts_with(root) => Err(Error::ExtraFile {
            src: path.to_path_buf(),
            reason: format!(
                "it resolves to {}, outside the package directory {}; `files` may only copy the package's own files (copy it into the package instead of linking to it)",
                real.display(),
                root.display()
            ),
        }),
        _ => Ok(()),
    }
}

fn walk(dir: &Path, dst: &str, mode: Option<u32>, out: &mut FileList, root: &Path) -> Result<()> {
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
        inside(&path, root)?;
        let meta = std::fs::metadata(&path).map_err(crate::io_err("reading metadata of", &path))?;
        let target = format!("{}/{name}", dst.trim_end_matches('/'));
        if meta.is_dir() {
            walk(&path, &target, mode, out, root)?;
        } else {
            out.insert(target, (path, mode.unwrap_or_else(|| default_mode(&meta))));
        }
    }
    Ok(())
}
