//! `imgbuild plan`: each binary's dependency-tree key, its inputs, and why it changed.
//!
//! Runs `cargo tree` and `rustc -vV` (through `imgbuild_cargo::run`), reads Cargo.lock and the
//! root manifest, and reads/writes the last built key's inputs under `<cache>/keys/`.

use std::path::{Path, PathBuf};

use imgbuild_cargo::plan::{
    DependencyKey, KEY_ENV_VARS, KeyInputs, dependency_key, explain, parse_tree, profile_sections,
};
use imgbuild_cargo::run;
use imgbuild_cargo::workspace::{BinaryTarget, Workspace};

use crate::build::BuildOptions;
use crate::{Error, Result};

/// One binary's plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BinaryPlan {
    /// Package name.
    pub package: String,
    /// Binary name.
    pub bin: String,
    /// The dependency-tree key (sha256 hex).
    pub dependency_key: String,
    /// The canonical inputs the key hashes.
    pub inputs: Vec<String>,
    /// Lines removed (`- `) and added (`+ `) since the last build of this binary; `None` when no
    /// build was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<String>>,
}

/// The variables from the environment that enter the key, sorted.
pub fn key_environment() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| KEY_ENV_VARS.contains(&k.as_str()) || k.starts_with("CARGO_PROFILE_"))
        .collect();
    env.sort();
    env
}

/// Computes `target`'s dependency key.
pub fn compute_key(
    workspace: &Workspace,
    target: &BinaryTarget,
    options: &BuildOptions,
    rustc: &str,
) -> Result<DependencyKey> {
    let triple = run::host_triple(rustc).unwrap_or_else(|| "unknown".into());
    let tree = run::dependency_tree(
        target,
        &triple,
        &options.features,
        options.all_features,
        options.no_default_features,
    )?;
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| Error::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })
    };
    let lock = imgbuild_cargo::lockfile::parse(&read(&workspace.root.join("Cargo.lock"))?);
    let profile_text = profile_sections(&read(&workspace.root_manifest)?);
    let members = workspace.member_declarations();
    let env = key_environment();
    Ok(dependency_key(&KeyInputs {
        tree: &parse_tree(&tree),
        lock: &lock,
        members: &members,
        profile: &options.profile,
        profile_settings: &profile_text,
        target: &triple,
        rustc,
        env: &env,
    }))
}

fn record_path(cache_dir: &Path, target: &BinaryTarget) -> PathBuf {
    cache_dir
        .join("keys")
        .join(&target.package.name)
        .join(format!("{}.txt", target.bin))
}

/// Remembers `key` as the last one built for `target`.
pub fn record(cache_dir: &Path, target: &BinaryTarget, key: &DependencyKey) -> Result<()> {
    let path = record_path(cache_dir, target);
    let dir = path.parent().expect("a record path has a parent");
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "creating directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a record name is UTF-8");
    imgbuild_oci::layout::write_atomic(dir, name, key.inputs.join("\n").as_bytes())?;
    Ok(())
}

/// The inputs of the last key built for `target`, if any.
pub fn previous(cache_dir: &Path, target: &BinaryTarget) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(record_path(cache_dir, target)).ok()?;
    Some(text.lines().map(String::from).collect())
}

/// Plans every binary in scope: its key, inputs and (with `explain`) the change since its last
/// build.
pub fn plan(options: &BuildOptions, explain_changes: bool) -> Result<Vec<BinaryPlan>> {
    let manifest = run::manifest_path(options.manifest_path.as_deref())?;
    let workspace = Workspace::new(&run::metadata(&manifest)?);
    let targets = workspace.candidates(options.package.as_deref(), options.bin.as_deref())?;
    let rustc = run::rustc_version()?;
    targets
        .iter()
        .map(|t| {
            let key = compute_key(&workspace, t, options, &rustc)?;
            let changes = if explain_changes {
                previous(&options.cache_dir, t).map(|old| explain(&old, &key.inputs))
            } else {
                None
            };
            Ok(BinaryPlan {
                package: t.package.name.clone(),
                bin: t.bin.clone(),
                dependency_key: key.key,
                inputs: key.inputs,
                changes,
            })
        })
        .collect()
}
