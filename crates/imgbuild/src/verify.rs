//! `imgbuild verify`: build the project twice, in two different temporary folders with their
//! own target and cache directories, and compare the images; name the layers and files that
//! differ.
//!
//! Copies the workspace (without its target directory and `.git`), runs two builds, and reads
//! both stores. The comparison of two layer listings is pure (`compare_entries`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::Descriptor;
use serde::Serialize;

use crate::build::build;
use crate::cachedir::CacheDir;
use crate::context::{self, Scope};
use crate::event::Reporter;
use crate::image::LayerRole;
use crate::options::CacheMode;
use crate::options::{BuildOptions, BuiltImage};
use crate::{Error, Result};

/// The outcome of `verify`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Verdict {
    /// Whether both builds gave the same image.
    pub reproducible: bool,
    /// The first build's manifest digest.
    pub first: String,
    /// The second build's manifest digest.
    pub second: String,
    /// What differs, one finding per line (empty when reproducible).
    pub differences: Vec<String>,
}

/// What a layer entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A regular file (or anything else with content).
    File,
    /// A directory.
    Dir,
    /// A symbolic link and its target.
    Symlink(String),
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryKind::File => f.write_str("file"),
            EntryKind::Dir => f.write_str("dir"),
            EntryKind::Symlink(target) => write!(f, "symlink -> {target}"),
        }
    }
}

/// One entry of a layer, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryFacts {
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    /// sha256 of the content (files).
    pub digest: Option<String>,
}

/// Differences between two listings of the same layer (pure).
pub(crate) fn compare_entries(
    a: &BTreeMap<String, EntryFacts>,
    b: &BTreeMap<String, EntryFacts>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, fa) in a {
        match b.get(path) {
            None => out.push((path.clone(), "only in the first build".to_string())),
            Some(fb) if fa.kind != fb.kind => {
                out.push((path.clone(), format!("{} vs {}", fa.kind, fb.kind)))
            }
            Some(fb) if fa.digest != fb.digest => {
                out.push((path.clone(), "content differs".into()))
            }
            Some(fb) if fa.mode != fb.mode => {
                out.push((path.clone(), format!("mode {:o} vs {:o}", fa.mode, fb.mode)))
            }
            Some(_) => {}
        }
    }
    for path in b.keys().filter(|p| !a.contains_key(*p)) {
        out.push((path.clone(), "only in the second build".to_string()));
    }
    out
}

fn copy_tree(src: &Path, dst: &Path, skip: &[PathBuf]) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(crate::io_err("creating directory", dst))?;
    for entry in std::fs::read_dir(src).map_err(crate::io_err("reading directory", src))? {
        let entry = entry.map_err(crate::io_err("reading directory", src))?;
        let from = entry.path();
        if entry.file_name() == ".git" || skip.contains(&from) {
            continue;
        }
        let to = dst.join(entry.file_name());
        let kind = entry.file_type().map_err(crate::io_err("reading", &from))?;
        if kind.is_dir() {
            copy_tree(&from, &to, skip)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&from).map_err(crate::io_err("reading link", &from))?;
            std::os::unix::fs::symlink(&target, &to)
                .map_err(crate::io_err("creating link", &to))?;
        } else {
            std::fs::copy(&from, &to).map_err(crate::io_err("copying", &from))?;
        }
    }
    Ok(())
}

fn listing(store: &Layout, layer: &Descriptor) -> Result<BTreeMap<String, EntryFacts>> {
    let path = store.blob_path(layer.digest());
    let io = |source| Error::Io {
        action: "reading layer",
        path: path.clone(),
        source,
    };
    let mut archive = tar::Archive::new(store.open_layer(layer)?);
    let mut out = BTreeMap::new();
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let name = format!(
            "/{}",
            entry
                .path()
                .map_err(io)?
                .to_string_lossy()
                .trim_end_matches('/')
        );
        let header = entry.header();
        let mode = header.mode().map_err(io)?;
        let kind = match header.entry_type() {
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink(
                entry
                    .link_name()
                    .map_err(io)?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ => EntryKind::File,
        };
        let digest = if kind == EntryKind::File {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(io)?;
            Some(imgbuild_oci::digest::sha256(&bytes).to_string())
        } else {
            None
        };
        out.insert(name, EntryFacts { kind, mode, digest });
    }
    Ok(out)
}

fn read_config(store: &Layout, image: &BuiltImage) -> Result<serde_json::Value> {
    let bytes = store.read_blob(image.config.digest())?;
    serde_json::from_slice(&bytes).map_err(|source| {
        Error::Oci(imgbuild_oci::Error::InvalidJson {
            what: "image config",
            path: store.blob_path(image.config.digest()),
            source,
        })
    })
}

/// Builds twice and compares: `options` select the project and binary; the two builds get
/// their own copies of the workspace, target and cache directories, and no cache.
///
/// ```
/// use imgbuild::{BuildOptions, event::Silent};
/// # let dir = tempfile::tempdir()?;
/// # let project = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hello");
///
/// let options = BuildOptions::new(dir.path()).manifest_path(project);
/// let verdict = imgbuild::verify::verify(&options, &Silent)?;
/// assert!(verdict.reproducible, "{:?}", verdict.differences);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify(options: &BuildOptions, reporter: &dyn Reporter) -> Result<Verdict> {
    let tmp = tempfile::Builder::new()
        .prefix("imgbuild-verify-")
        .tempdir()
        .map_err(crate::io_err(
            "creating a temporary directory in",
            &std::env::temp_dir(),
        ))?;
    let [first, second] = build_twice(options, tmp.path(), reporter)?;
    let mut verdict = Verdict {
        reproducible: first.manifest.digest() == second.manifest.digest(),
        first: first.manifest.digest().to_string(),
        second: second.manifest.digest().to_string(),
        differences: Vec::new(),
    };
    if !verdict.reproducible {
        verdict.differences = differences(&first, &second)?;
    }
    Ok(verdict)
}

/// The two builds, in two folders of different depth and name under `tmp`, so that paths
/// leaking into the output show.
fn build_twice(
    options: &BuildOptions,
    tmp: &Path,
    reporter: &dyn Reporter,
) -> Result<[BuiltImage; 2]> {
    let cx = context::prepare(options, Scope::One, reporter)?;
    let workspace = &cx.workspace;
    let relative = cx
        .manifest_path
        .strip_prefix(&workspace.root)
        .unwrap_or(Path::new("Cargo.toml"))
        .to_path_buf();
    let skip = cx.cargo_dirs.to_vec();
    let roots = [
        tmp.join("a").join("src"),
        tmp.join("second-build").join("checkout").join("workspace"),
    ];
    let build_in = |i: usize, root: &Path| -> Result<BuiltImage> {
        copy_tree(&workspace.root, root, &skip)?;
        let mut o = options.clone();
        o.manifest_path = Some(root.join(&relative));
        o.cache_dir = CacheDir::new(tmp.join(format!("cache-{i}")));
        o.target_dir = Some(tmp.join(format!("target-{i}")));
        o.source_date_epoch = Some(cx.epoch);
        o.outputs.clear();
        o.cache = CacheMode::Off;
        o.cache_repo = None;
        o.resolved_env = cx.build_env.clone();
        o.resolved_keys = Some(cx.keys.clone());
        build(&o, reporter)
    };
    Ok([build_in(0, &roots[0])?, build_in(1, &roots[1])?])
}

/// What differs between two images: config fields, then layer by layer, file by file.
fn differences(first: &BuiltImage, second: &BuiltImage) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let (store_a, store_b) = (Layout::open(&first.store)?, Layout::open(&second.store)?);
    let (config_a, config_b) = (
        read_config(&store_a, first)?,
        read_config(&store_b, second)?,
    );
    for key in ["created", "architecture", "os"] {
        if config_a[key] != config_b[key] {
            out.push(format!(
                "image config: `{key}` is {} vs {}",
                config_a[key], config_b[key]
            ));
        }
    }
    if config_a["config"] != config_b["config"] {
        out.push(format!(
            "image config: runtime settings differ: {} vs {}",
            config_a["config"], config_b["config"]
        ));
    }
    let binary = format!("{}/", crate::image::APP_DIR);
    let executable = first
        .executable
        .file_name()
        .map(|f| f.to_string_lossy().into_owned());
    for (i, (la, lb)) in first.layers.iter().zip(&second.layers).enumerate() {
        if la.diff_id == lb.diff_id {
            continue;
        }
        let (n, role) = (i + 1, la.role);
        let files = compare_entries(
            &listing(&store_a, &la.descriptor)?,
            &listing(&store_b, &lb.descriptor)?,
        );
        if files.is_empty() {
            out.push(format!(
                "layer {n} ({role}): same files, different tar bytes"
            ));
        }
        for (path, what) in files {
            let is_binary = role == LayerRole::App
                && path.starts_with(&binary)
                && executable.as_deref().is_some_and(|f| path.ends_with(f));
            let note = if is_binary {
                " — the compiled binary differs: rustc produced different bytes from the same source (a build script or macro embeds the time, randomness or a path)"
            } else {
                ""
            };
            out.push(format!("layer {n} ({role}): {path}: {what}{note}"));
        }
    }
    if first.layers.len() != second.layers.len() {
        out.push(format!(
            "the images have {} and {} layers",
            first.layers.len(),
            second.layers.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(d: &str) -> EntryFacts {
        EntryFacts {
            kind: EntryKind::File,
            mode: 0o755,
            digest: Some(d.into()),
        }
    }

    #[test]
    fn zstd_layers_are_listed_like_gzip_ones() {
        // A base pulled with tar+zstd layers (as the dependency cache's snapshots are).
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("app")).unwrap();
        std::fs::write(src.join("app/x"), b"x").unwrap();
        let store = Layout::create(tmp.path().join("store")).unwrap();
        let files = imgbuild_oci::snapshot::scan(&src, ["app/x"]).unwrap();
        let blob = store.write_snapshot(&src, &files).unwrap();
        let listed = listing(&store, &blob.descriptor).unwrap();
        assert_eq!(
            listed.get("/app/x").map(|f| f.digest.clone()),
            Some(Some(imgbuild_oci::digest::sha256(b"x").to_string()))
        );
    }

    #[test]
    fn differences_name_each_path() {
        let a: BTreeMap<String, EntryFacts> = [
            ("/app/x".to_string(), file("1")),
            ("/app/same".to_string(), file("s")),
            ("/app/gone".to_string(), file("g")),
        ]
        .into();
        let b: BTreeMap<String, EntryFacts> = [
            ("/app/x".to_string(), file("2")),
            ("/app/same".to_string(), file("s")),
            ("/app/new".to_string(), file("n")),
        ]
        .into();
        assert_eq!(
            compare_entries(&a, &b),
            vec![
                (
                    "/app/gone".to_string(),
                    "only in the first build".to_string()
                ),
                ("/app/x".to_string(), "content differs".to_string()),
                (
                    "/app/new".to_string(),
                    "only in the second build".to_string()
                ),
            ]
        );
    }
}
