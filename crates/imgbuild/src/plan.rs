//! `imgbuild plan`: each binary's dependency-tree key, its inputs, and why it changed.
//!
//! Runs `cargo tree` and `rustc -vV` (through `imgbuild_cargo::run`), reads Cargo.lock and the
//! root manifest, and reads/writes the last built key's inputs under `<cache>/keys/`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use imgbuild_cargo::lockfile::LockedPackage;
use imgbuild_cargo::plan::{
    DependencyKey, KEY_ENV_VARS, KeyInputs, dependency_key, explain, parse_tree, profile_sections,
};
use imgbuild_cargo::run;
use imgbuild_cargo::workspace::{BinaryTarget, Workspace};

use crate::Result;
use crate::build::BuildOptions;

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
    /// The app key (zero-work rebuilds): the static key's inputs plus the files the last build
    /// read; `None` before the first build of this binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_key: Option<String>,
    /// Whether the store has an image built from exactly these inputs.
    pub app_hit: bool,
    /// With `--explain`: the inputs that changed since the stored build (files, or static
    /// input lines `- old` / `+ new`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_changes: Option<Vec<String>>,
}

/// Installs (once) the rustc wrapper script under the cache directory's `tools/`.
pub fn wrapper_script(cache_dir: &Path) -> Result<run::WrapperScript> {
    Ok(run::WrapperScript::install(&cache_dir.join("tools"))?)
}

/// The variables from the environment that enter the key, sorted: those known to change
/// dependency builds and those passed to the compile step with `--pass-env`.
pub fn key_environment(pass: &[String]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            KEY_ENV_VARS.contains(&k.as_str())
                || k.starts_with("CARGO_PROFILE_")
                || pass.iter().any(|p| p == k)
        })
        .collect();
    env.sort();
    env
}

/// The key inputs shared by every binary of a workspace: gathered once, then combined with each
/// package's dependency tree.
#[derive(Debug)]
pub struct KeyContext<'a> {
    options: &'a BuildOptions,
    rustc: String,
    triple: String,
    lock: BTreeMap<(String, String), LockedPackage>,
    profile_settings: String,
    members: BTreeMap<String, Vec<String>>,
    env: Vec<(String, String)>,
    wrapper: run::Wrapper,
}

impl<'a> KeyContext<'a> {
    /// Runs `rustc -vV`, reads Cargo.lock, the root manifest's profiles and the environment.
    /// Cargo commands run with `wrapper`.
    pub fn gather(
        workspace: &Workspace,
        options: &'a BuildOptions,
        wrapper: run::Wrapper,
    ) -> Result<Self> {
        let read =
            |path: &Path| std::fs::read_to_string(path).map_err(crate::io_err("reading", path));
        let rustc = run::rustc_version()?;
        Ok(Self {
            wrapper,
            options,
            triple: run::host_triple(&rustc).unwrap_or_else(|| "unknown".into()),
            rustc,
            lock: imgbuild_cargo::lockfile::parse(&read(&workspace.root.join("Cargo.lock"))?),
            profile_settings: profile_sections(&read(&workspace.root_manifest)?),
            members: workspace.member_declarations(),
            env: key_environment(&options.pass_env),
        })
    }

    /// Cargo.lock's packages.
    pub fn lock(&self) -> &BTreeMap<(String, String), LockedPackage> {
        &self.lock
    }

    /// The host triple (`rustc -vV`'s `host:`).
    pub fn triple(&self) -> &str {
        &self.triple
    }

    /// The rustc wrapper cargo commands of this workspace run with.
    pub fn wrapper(&self) -> &run::Wrapper {
        &self.wrapper
    }

    /// `target`'s dependency key (runs `cargo tree` for its package).
    pub fn key(&self, target: &BinaryTarget) -> Result<DependencyKey> {
        Ok(self.key_for_tree(&tree(target, self.options, &self.wrapper)?))
    }

    /// The key for a package's tree as [`tree`] returned it.
    pub fn key_for_tree(&self, tree: &str) -> DependencyKey {
        dependency_key(&KeyInputs {
            tree: &parse_tree(tree),
            lock: &self.lock,
            members: &self.members,
            profile: &self.options.profile,
            profile_settings: &self.profile_settings,
            target: &self.triple,
            rustc: &self.rustc,
            env: &self.env,
            network_allowed: self.options.allow_network,
        })
    }
}

/// The wrapper cargo commands for `workspace` run with (`script` from [`wrapper_script`],
/// installed once per command).
pub fn wrapper(script: run::WrapperScript, workspace: &Workspace) -> run::Wrapper {
    run::Wrapper::new(script, &workspace.root, &workspace.build_dir)
}

/// `cargo tree` output for `target`'s package on the host, with the options' features.
pub fn tree(
    target: &BinaryTarget,
    options: &BuildOptions,
    wrapper: &run::Wrapper,
) -> Result<String> {
    Ok(run::dependency_tree(
        target,
        None,
        options.cargo_features(),
        wrapper,
    )?)
}

/// Where the last built key of `target` is recorded: the directory and the file name.
fn record_location(cache_dir: &Path, target: &BinaryTarget) -> (PathBuf, String) {
    (
        cache_dir.join("keys").join(&target.package.name),
        format!("{}.txt", target.bin),
    )
}

/// Remembers `key` as the last one built for `target`.
pub fn record(cache_dir: &Path, target: &BinaryTarget, key: &DependencyKey) -> Result<()> {
    write_lines(cache_dir, target, "txt", &key.inputs)
}

/// Writes `lines` as the record with extension `ext` of `target` (atomically).
fn write_lines(cache_dir: &Path, target: &BinaryTarget, ext: &str, lines: &[String]) -> Result<()> {
    let (dir, name) = record_location(cache_dir, target);
    std::fs::create_dir_all(&dir).map_err(crate::io_err("creating directory", &dir))?;
    let name = name.replace(".txt", &format!(".{ext}"));
    imgbuild_oci::layout::write_atomic(&dir, &name, lines.join("\n").as_bytes())?;
    Ok(())
}

/// Remembers the static inputs of the last app entry stored for `target`.
pub fn record_app(cache_dir: &Path, target: &BinaryTarget, static_inputs: &[String]) -> Result<()> {
    write_lines(cache_dir, target, "app.txt", static_inputs)
}

/// The static inputs of the last app entry stored for `target`, if one was recorded.
pub fn previous_app(cache_dir: &Path, target: &BinaryTarget) -> Result<Option<Vec<String>>> {
    let (dir, name) = record_location(cache_dir, target);
    read_lines(&dir.join(name.replace(".txt", ".app.txt")))
}

/// The inputs of the last key built for `target`, if one was recorded.
pub fn previous(cache_dir: &Path, target: &BinaryTarget) -> Result<Option<Vec<String>>> {
    let (dir, name) = record_location(cache_dir, target);
    read_lines(&dir.join(name))
}

/// The lines of the record at `path`. Only a missing file means "no record"; any other
/// failure (a directory in its place, no permission, bad UTF-8) is an error naming the path.
fn read_lines(path: &Path) -> Result<Option<Vec<String>>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.lines().map(String::from).collect())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::io_err("reading the key record", path)(e)),
    }
}

/// Plans every binary in scope: its key, inputs and (with `explain`) the change since its last
/// build.
pub fn plan(options: &BuildOptions, explain_changes: bool) -> Result<Vec<BinaryPlan>> {
    let manifest = run::manifest_path(options.manifest_path.as_deref())?;
    let script = wrapper_script(&options.cache_dir)?;
    let workspace = Workspace::new(&run::metadata(&manifest, &script)?);
    let targets = workspace.candidates(options.package.as_deref(), options.bin.as_deref())?;
    let context = KeyContext::gather(&workspace, options, wrapper(script, &workspace))?;
    // Cargo resolves dependencies per package: binaries of one package share its key.
    let mut by_package: HashMap<PathBuf, DependencyKey> = HashMap::new();
    targets
        .iter()
        .map(|t| {
            let key = match by_package.get(&t.package.manifest_path) {
                Some(key) => key.clone(),
                None => {
                    let key = context.key(t)?;
                    by_package.insert(t.package.manifest_path.clone(), key.clone());
                    key
                }
            };
            let changes = if explain_changes {
                previous(&options.cache_dir, t)?.map(|old| explain(&old, &key.inputs))
            } else {
                None
            };
            let app = crate::build::app_status(options, &workspace, t, &key.key)?;
            Ok(BinaryPlan {
                package: t.package.name.clone(),
                bin: t.bin.clone(),
                dependency_key: key.key,
                inputs: key.inputs,
                changes,
                app_key: app.key,
                app_hit: app.hit,
                app_changes: explain_changes.then_some(app.changes),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use imgbuild_cargo::workspace::PackageInfo;

    use super::*;

    fn target() -> BinaryTarget {
        BinaryTarget {
            package: PackageInfo {
                name: "api".into(),
                version: "0.1.0".into(),
                manifest_path: PathBuf::from("/src/api/Cargo.toml"),
                description: None,
                repository: None,
                homepage: None,
                license: None,
                authors: None,
            },
            bin: "api".into(),
        }
    }

    #[test]
    fn records_read_back_and_only_a_missing_one_is_no_record() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path();
        let t = target();
        assert_eq!(previous(cache, &t).unwrap(), None);
        assert_eq!(previous_app(cache, &t).unwrap(), None);
        let key = DependencyKey {
            key: "k".into(),
            inputs: vec!["a".into(), "b".into()],
        };
        record(cache, &t, &key).unwrap();
        record_app(cache, &t, &["s".to_string()]).unwrap();
        assert_eq!(previous(cache, &t).unwrap(), Some(key.inputs));
        assert_eq!(
            previous_app(cache, &t).unwrap(),
            Some(vec!["s".to_string()])
        );
    }

    #[test]
    fn an_unreadable_record_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path();
        let t = target();
        // A directory where the record should be: not NotFound, so not "no record" (tests run
        // as root, which permission bits would not stop).
        let (dir, name) = record_location(cache, &t);
        std::fs::create_dir_all(dir.join(&name)).unwrap();
        std::fs::create_dir_all(dir.join(name.replace(".txt", ".app.txt"))).unwrap();
        for err in [
            previous(cache, &t).unwrap_err(),
            previous_app(cache, &t).unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(text.contains(&*dir.to_string_lossy()), "{text}");
            assert!(matches!(err, crate::Error::Io { .. }), "{text}");
        }
    }
}
