//! Build environments: an OCI image holding the toolchain (a Debian root filesystem,
//! `/usr/local/rustup`, `/usr/local/cargo`, like the official `rust:*` images) that cargo and
//! rustc run inside, so that what a binary is built *with* is pinned by one digest.
//!
//! Resolves the reference (the local store, an `oci:` layout, or a registry — pulled once,
//! every blob verified), unpacks the image once into the cache directory under its digest
//! (staged and renamed by `imgbuild_oci::unpack`), and describes how to enter it
//! ([`imgbuild_cargo::run::Toolchain::Environment`]). Reads manifests before cargo can run,
//! talks to registries, and writes under the cache directory.

use std::path::{Path, PathBuf};

use imgbuild_oci::layout::Layout;
use imgbuild_oci::media::LayerMediaType;
use imgbuild_oci::spec::{Descriptor, ImageConfiguration, ImageManifest};
use imgbuild_oci::unpack::{LayerSource, unpack_layers};

use crate::cachedir::CacheDir;
use crate::event::{Event, Reporter};
use crate::options::BuildOptions;
use crate::{Error, Result};

pub(crate) use crate::envimage::BuildEnv;

/// The build environment a command uses, decided before cargo runs (cargo itself may come
/// from it): `--build-env` / `IMGBUILD_BUILD_ENV`, else `build-env` in the
/// `[package.metadata.imgbuild]` table of the Cargo.toml the command is pointed at, else the
/// `[workspace.metadata.imgbuild]` table of its workspace root.
pub(crate) fn declared(options: &BuildOptions, manifest: &Path) -> Result<Option<String>> {
    if let Some(r) = &options.build_env {
        return Ok(Some(r.clone()));
    }
    let read = |p: &Path| std::fs::read_to_string(p).map_err(crate::io_err("reading", p));
    let (package, workspace) = imgbuild_cargo::config::scan_build_env(&read(manifest)?);
    if package.is_some() || workspace.is_some() {
        return Ok(package.or(workspace));
    }
    // A member's manifest: the workspace root is the nearest parent with a `[workspace]`.
    for dir in manifest
        .parent()
        .into_iter()
        .flat_map(Path::ancestors)
        .skip(1)
    {
        let candidate = dir.join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&candidate) else {
            continue;
        };
        if text.lines().any(|l| l.trim() == "[workspace]") {
            return Ok(imgbuild_cargo::config::scan_build_env(&text).1);
        }
    }
    Ok(None)
}

/// The directory bound into the environment for the project: the git checkout holding the
/// manifest (so path dependencies elsewhere in the repository are seen), else the workspace
/// root (the nearest parent with a `[workspace]`), else the manifest's directory.
pub(crate) fn project_root(manifest: &Path) -> PathBuf {
    let dir = manifest.parent().unwrap_or(Path::new("/"));
    if let Some(top) = imgbuild_cargo::run::git_toplevel(dir) {
        return top;
    }
    dir.ancestors()
        .find(|d| {
            std::fs::read_to_string(d.join("Cargo.toml"))
                .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
        })
        .unwrap_or(dir)
        .to_path_buf()
}

/// Caller variables that carry into the environment's commands: cargo's own behaviour and
/// the dependency-key variables (not the host's tool paths).
fn carried(name: &str) -> bool {
    use imgbuild_cargo::hermetic::{HOST_TOOLCHAIN_VARS, TOOLCHAIN_VARS};
    (TOOLCHAIN_VARS.contains(&name) && !HOST_TOOLCHAIN_VARS.contains(&name))
        || imgbuild_cargo::plan::KEY_ENV_VARS.contains(&name)
        || name.starts_with("CARGO_PROFILE_")
}

/// How cargo and rustc enter `env`: its root read-only, the project directories, cargo's
/// home and imgbuild's private directories bound read-write at their own paths, the wrapper
/// script read-only. Needs bubblewrap; without it the build stops (never a silent fallback to
/// the host's toolchain).
pub(crate) fn toolchain(
    env: &BuildEnv,
    caller: &crate::procenv::Env,
    cache: &CacheDir,
    project: &[&Path],
) -> Result<imgbuild_cargo::run::Toolchain> {
    let bwrap = which(caller, "bwrap").ok_or_else(|| Error::BuildEnv {
        reference: env.reference.clone(),
        reason: "bubblewrap (bwrap) is not installed; a build environment is entered with it (apt-get install bubblewrap, dnf install bubblewrap)".into(),
    })?;
    let cargo_home = imgbuild_cargo::run::cargo_home();
    let mut binds: Vec<PathBuf> = Vec::new();
    for dir in project
        .iter()
        .map(|p| p.to_path_buf())
        .chain([cargo_home.clone(), cache.sandbox()])
    {
        std::fs::create_dir_all(&dir).map_err(crate::io_err("creating directory", &dir))?;
        if !binds.iter().any(|b| dir.starts_with(b)) {
            binds.retain(|b| !b.starts_with(&dir));
            binds.push(dir);
        }
    }
    let mut vars = env.env.clone();
    vars.retain(|(k, _)| k != "CARGO_HOME" && k != "HOME");
    vars.extend(
        caller
            .pairs()
            .filter(|(k, _)| carried(k))
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    vars.push((
        "CARGO_HOME".into(),
        cargo_home.to_string_lossy().into_owned(),
    ));
    vars.push(("HOME".into(), "/tmp".into()));
    let root = imgbuild_cargo::run::EnvironmentRoot::new(
        &bwrap,
        &env.root,
        vars,
        &binds,
        &[cache.tools()],
    )?;
    Ok(imgbuild_cargo::run::Toolchain::Environment(Box::new(root)))
}

fn which(caller: &crate::procenv::Env, program: &str) -> Option<PathBuf> {
    caller
        .get("PATH")?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// Resolves `text` into the local store and unpacks it (once per digest).
pub(crate) fn resolve(
    text: &str,
    options: &BuildOptions,
    cache: &CacheDir,
    reporter: &dyn Reporter,
) -> Result<BuildEnv> {
    let store = Layout::create(cache.store())?;
    let bad = |reason: String| Error::BuildEnv {
        reference: text.to_string(),
        reason,
    };
    let desc = locate(&store, text, options, cache, reporter)?;
    let manifest: ImageManifest = store.read_manifest(desc.digest())?;
    let config: ImageConfiguration =
        serde_json::from_slice(&store.read_blob(manifest.config().digest())?)
            .map_err(|e| bad(format!("its config is not an OCI image config: {e}")))?;
    let arch = crate::image::host_arch().to_string();
    if config.os().to_string() != "linux" || config.architecture().to_string() != arch {
        return Err(bad(format!(
            "it is a {}/{} image; this machine runs linux/{arch} programs",
            config.os(),
            config.architecture()
        )));
    }
    let env: Vec<(String, String)> = config
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let digest = desc.digest().to_string();
    let root = cache.build_envs().join(desc.digest().digest());
    if !root.is_dir() {
        unpack(&store, &manifest, &root).map_err(|e| bad(e.to_string()))?;
    }
    let env = BuildEnv {
        reference: text.to_string(),
        digest,
        root,
        env,
    };
    if find_in_root(&env.root, &env.env, "cargo").is_none() {
        return Err(bad(format!(
            "it has no `cargo` on its PATH ({}); a build environment needs a Rust toolchain, laid out like the rust:* images (/usr/local/cargo/bin on PATH, RUSTUP_HOME, CARGO_HOME)",
            path_of(&env.env)
        )));
    }
    reporter.report(&Event::BuildEnvResolved {
        reference: env.reference.clone(),
        digest: env.digest.clone(),
    });
    Ok(env)
}

/// The image's manifest in the store: a name in the store, an `oci:` layout (copied in,
/// verified) or a registry reference (pulled once; by digest, the store answers).
fn locate(
    store: &Layout,
    text: &str,
    options: &BuildOptions,
    cache: &CacheDir,
    reporter: &dyn Reporter,
) -> Result<Descriptor> {
    if let Some(rest) = text.strip_prefix("oci:") {
        return import_layout(store, text, rest);
    }
    if let Ok(desc) = store.resolve(text) {
        return Ok(desc);
    }
    let reference = imgbuild_registry::Reference::parse(text).map_err(|e| Error::BuildEnv {
        reference: text.to_string(),
        reason: format!(
            "it is neither an image in the local store nor a valid reference ({e}); give registry/repository@sha256:…, oci:DIR[:TAG], or the name of an image in the store"
        ),
    })?;
    if reference.digest.is_none() {
        reporter.report(&Event::Warning {
            message: format!(
                "build environment {text} is named by a tag; a tag that moves is a new environment (and new cache keys). Pin it: {text}@sha256:…"
            ),
        });
    }
    if let Some(desc) = reference
        .digest
        .as_deref()
        .and_then(|d| crate::base::in_store(store, d))
    {
        return Ok(desc);
    }
    let arch = crate::image::host_arch().to_string();
    crate::base::pull(
        store,
        text,
        &reference,
        &arch,
        &options.registry,
        cache,
        reporter,
    )
    .map_err(|e| {
        match e {
            // `pull` speaks of base images; this is the build environment.
            Error::Base { reference, reason } => Error::BuildEnv { reference, reason },
            other => Error::BuildEnv {
                reference: text.to_string(),
                reason: other.to_string(),
            },
        }
    })
}

/// Copies the image `oci:DIR[:TAG]` names into the store (every blob verified on the way).
fn import_layout(store: &Layout, text: &str, rest: &str) -> Result<Descriptor> {
    let (dir, tag) = match rest.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') => (dir, Some(tag)),
        _ => (rest, None),
    };
    let bad = |reason: String| Error::BuildEnv {
        reference: text.to_string(),
        reason,
    };
    let layout = Layout::open(dir).map_err(|e| bad(e.to_string()))?;
    let desc = match tag {
        Some(tag) => layout.resolve(tag).map_err(|e| bad(e.to_string()))?,
        None => {
            let index = layout.read_index().map_err(|e| bad(e.to_string()))?;
            match index.manifests().as_slice() {
                [one] => one.clone(),
                _ => {
                    return Err(bad(format!(
                        "{dir} holds {} images; name one: oci:{dir}:TAG",
                        index.manifests().len()
                    )));
                }
            }
        }
    };
    let manifest = layout
        .read_manifest(desc.digest())
        .map_err(|e| bad(e.to_string()))?;
    for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
        layout
            .copy_blob(blob.digest(), store)
            .map_err(|e| bad(e.to_string()))?;
    }
    layout
        .copy_blob(desc.digest(), store)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Descriptor::new(
        imgbuild_oci::spec::MediaType::ImageManifest,
        desc.size(),
        desc.digest().clone(),
    ))
}

/// Unpacks the image's layers to `root` (staged, then renamed), after checking that every
/// layer blob in the store still hashes to its digest.
fn unpack(store: &Layout, manifest: &ImageManifest, root: &Path) -> Result<()> {
    let mut layers = Vec::new();
    for layer in manifest.layers() {
        if !store.blob_is_intact(layer.digest()) {
            return Err(imgbuild_oci::Error::DigestMismatch {
                path: store.blob_path(layer.digest()),
                expected: layer.digest().to_string(),
                actual: "something else".into(),
            }
            .into());
        }
        let media = LayerMediaType::try_from(layer.media_type())?;
        layers.push(LayerSource::new(media, store.blob_path(layer.digest())));
    }
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent).map_err(crate::io_err("creating directory", parent))?;
    }
    unpack_layers(&layers, root)?;
    Ok(())
}

fn path_of(env: &[(String, String)]) -> &str {
    env.iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("no PATH in its config")
}

/// Where `program` is on the environment's `PATH`, as a path inside the environment.
fn find_in_root(root: &Path, env: &[(String, String)], program: &str) -> Option<PathBuf> {
    path_of(env)
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(program))
        .find(|p| crate::closure::resolve_in_root(root, p).is_some_and(|host| host.is_file()))
}
