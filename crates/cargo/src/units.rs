//! Which files of cargo's build directory belong to the compiled dependencies (pure).
//!
//! Cargo names every unit's outputs with the unit's metadata hash, 16 hex digits after a dash:
//! `deps/libserde-0a1b…rlib`, `deps/serde-0a1b….d`, `build/serde-0a1b…/` (a build script's
//! compilation or run) and `.fingerprint/serde-0a1b…/`. Cargo's JSON messages say which package
//! each unit belongs to, so the hashes of the dependency units select exactly their files, and
//! never a workspace member's.
//!
//! Only packages from a registry or git are cacheable: cargo fingerprints them by version, so
//! their outputs stay fresh in another checkout. Path packages (members, or local crates
//! outside the workspace) are fingerprinted by source mtimes and are always rebuilt.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use crate::run::{BuildOutcome, Unit};

/// The directories of a profile's build output that hold unit files.
pub const UNIT_DIRS: [&str; 3] = ["deps", "build", ".fingerprint"];

/// The profile's directory name under the build directory: `debug` for `dev` and `test`,
/// `release` for `release` and `bench`, else the profile's own name.
pub fn profile_dir_name(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        "bench" => "release",
        other => other,
    }
}

/// Whether cargo fingerprints the package by version (registry and git sources), so that its
/// compiled outputs can be reused in another checkout.
pub fn is_cacheable(package_id: &str) -> bool {
    ["registry+", "sparse+", "git+"]
        .iter()
        .any(|p| package_id.starts_with(p))
}

/// The unit hash in a file or directory name: the 16 hex digits after the last `-`, followed
/// by the end or a `.`.
pub fn unit_hash(name: &str) -> Option<&str> {
    let (_, rest) = name.rsplit_once('-')?;
    let hash = rest.split('.').next()?;
    (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hash)
}

/// The unit hash a produced path carries, if the path lies under `profile_dir`: from the file
/// name in `deps/`, from the unit directory in `build/` and `.fingerprint/`.
pub fn hash_of_path<'a>(path: &'a Path, profile_dir: &Path) -> Option<&'a str> {
    let rel = path.strip_prefix(profile_dir).ok()?;
    let mut parts = rel.components().filter_map(|c| match c {
        Component::Normal(s) => s.to_str(),
        _ => None,
    });
    match (parts.next()?, parts.next()?) {
        ("deps", file) => unit_hash(file),
        ("build" | ".fingerprint", dir) => unit_hash(dir),
        _ => None,
    }
}

/// What cargo did for the dependencies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DependencyUnits {
    /// Hashes of every cacheable unit (compiled or build-script run).
    pub hashes: BTreeSet<String>,
    /// Cacheable units cargo compiled (not fresh).
    pub compiled: usize,
    /// Cacheable units cargo found fresh.
    pub fresh: usize,
    /// Names (`name@version`) of the dependency packages cargo compiled, sorted.
    pub compiled_packages: Vec<String>,
}

/// `name@version` from a package id such as `registry+https://…#serde@1.0.0`, or
/// `path+file:///w/core#0.1.0` (cargo leaves the name out when it is the directory's).
pub fn package_label(package_id: &str) -> std::borrow::Cow<'_, str> {
    match package_id.rsplit_once('#') {
        Some((_, n)) if n.contains('@') => n.into(),
        Some((url, version)) => {
            let dir = url.trim_end_matches('/').rsplit('/').next().unwrap_or(url);
            format!("{dir}@{version}").into()
        }
        None => package_id.into(),
    }
}

/// Sorts the cacheable units of a build by hash and counts what cargo compiled.
pub fn dependency_units(outcome: &BuildOutcome, profile_dir: &Path) -> DependencyUnits {
    let mut out = DependencyUnits::default();
    let mut compiled = BTreeSet::new();
    let cacheable = |u: &&Unit| is_cacheable(&u.package_id);
    for unit in outcome.compiled.iter().filter(cacheable) {
        if unit.fresh {
            out.fresh += 1;
        } else {
            out.compiled += 1;
            compiled.insert(package_label(&unit.package_id).to_string());
        }
    }
    for unit in outcome
        .compiled
        .iter()
        .chain(&outcome.build_script_runs)
        .filter(cacheable)
    {
        for path in &unit.paths {
            if let Some(hash) = hash_of_path(path, profile_dir) {
                out.hashes.insert(hash.to_string());
            }
        }
    }
    out.compiled_packages = compiled.into_iter().collect();
    out
}

/// Whether the file at `rel` (relative to the profile directory) belongs to one of `hashes`.
/// `deps/` is matched by file name; `build/` and `.fingerprint/` by unit directory.
pub fn belongs_to(rel: &str, hashes: &BTreeSet<String>) -> bool {
    let mut parts = rel.split('/');
    let (Some(top), Some(name)) = (parts.next(), parts.next()) else {
        return false;
    };
    let nested = parts.next().is_some();
    match top {
        "deps" if !nested => unit_hash(name).is_some_and(|h| hashes.contains(h)),
        "build" | ".fingerprint" if nested => unit_hash(name).is_some_and(|h| hashes.contains(h)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const H1: &str = "0a1b2c3d4e5f6789";
    const H2: &str = "1111222233334444";
    const APP: &str = "aaaabbbbccccdddd";

    fn unit(id: &str, fresh: bool, paths: &[String]) -> Unit {
        Unit {
            package_id: id.to_string(),
            fresh,
            paths: paths.iter().map(PathBuf::from).collect(),
        }
    }

    #[test]
    fn unit_hashes_are_read_from_names() {
        assert_eq!(unit_hash(&format!("libserde-{H1}.rlib")), Some(H1));
        assert_eq!(unit_hash(&format!("serde-{H1}.d")), Some(H1));
        assert_eq!(unit_hash(&format!("serde_json-{H1}")), Some(H1));
        assert_eq!(unit_hash("build-script-build"), None);
        assert_eq!(unit_hash("serde-0a1b"), None);
    }

    #[test]
    fn only_registry_and_git_units_are_selected_and_counted() {
        let p = "/t/release";
        let outcome = BuildOutcome {
            executable: "/t/release/app".into(),
            compiled: vec![
                unit(
                    "registry+https://github.com/rust-lang/crates.io-index#serde@1.0.0",
                    true,
                    &[format!("{p}/deps/libserde-{H1}.rlib")],
                ),
                unit(
                    "git+https://example.com/x#x@0.1.0",
                    false,
                    &[format!("{p}/build/x-{H2}/build-script-build")],
                ),
                unit(
                    "path+file:///w#app@0.1.0",
                    false,
                    &[format!("{p}/deps/app-{APP}")],
                ),
            ],
            build_script_runs: vec![unit(
                "git+https://example.com/x#x@0.1.0",
                true,
                &["/t/release/build/x-2222333344445555/out".to_string()],
            )],
        };
        let units = dependency_units(&outcome, Path::new(p));
        assert_eq!(
            units.hashes.iter().map(String::as_str).collect::<Vec<_>>(),
            vec![H1, H2, "2222333344445555"]
        );
        assert_eq!((units.compiled, units.fresh), (1, 1));
        assert_eq!(units.compiled_packages, vec!["x@0.1.0"]);
    }

    #[test]
    fn files_belong_to_their_unit_only() {
        let hashes: BTreeSet<String> = [H1.to_string()].into();
        assert!(belongs_to(&format!("deps/libserde-{H1}.rmeta"), &hashes));
        assert!(belongs_to(&format!("build/serde-{H1}/out/x.rs"), &hashes));
        assert!(belongs_to(
            &format!(".fingerprint/serde-{H1}/lib-serde.json"),
            &hashes
        ));
        assert!(!belongs_to(&format!("deps/app-{APP}"), &hashes));
        assert!(!belongs_to(&format!("build/serde-{H1}"), &hashes));
        assert!(!belongs_to(&format!("incremental/serde-{H1}/x"), &hashes));
        assert!(!belongs_to("app", &hashes));
    }

    #[test]
    fn package_labels() {
        assert_eq!(
            package_label("registry+https://github.com/rust-lang/crates.io-index#serde@1.0.0"),
            "serde@1.0.0"
        );
        assert_eq!(package_label("path+file:///w/core#0.1.0"), "core@0.1.0");
        assert_eq!(
            package_label("path+file:///w/crates/x#core@0.1.0"),
            "core@0.1.0"
        );
    }

    #[test]
    fn profile_directories() {
        assert_eq!(profile_dir_name("dev"), "debug");
        assert_eq!(profile_dir_name("release"), "release");
        assert_eq!(profile_dir_name("dist"), "dist");
    }
}

/// The prerequisites of the first rule of a Makefile-style dep-info file (what rustc read to
/// compile a unit), unescaped, in order. Relative paths are relative to the directory rustc ran
/// in (the workspace root).
pub fn parse_dep_info(text: &str) -> Vec<String> {
    let Some(first) = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
    else {
        return Vec::new();
    };
    // The target ends at the first unescaped ": ".
    let mut chars = first.chars().peekable();
    let mut in_target = true;
    let mut current = String::new();
    let mut out = Vec::new();
    while let Some(c) = chars.next() {
        if in_target {
            if c == '\\' {
                chars.next();
            } else if c == ':' && chars.peek().is_none_or(|n| *n == ' ') {
                in_target = false;
            }
            continue;
        }
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            ' ' => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Where cargo keeps the dep-info of the unit that produced `artifact`: beside a final
/// artifact (`target/release/app.d`), or in `deps/` (`libfoo-<h>.rlib` → `foo-<h>.d`), or a
/// build script's (`build/foo-<h>/build_script_build-<h>.d`). Candidates, most likely first.
pub fn dep_info_candidates(artifact: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Some(dir) = artifact.parent() else {
        return out;
    };
    let name = artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.push(dir.join(format!("{name}.d")));
    let stem = name.split('.').next().unwrap_or(&name);
    out.push(dir.join(format!("{}.d", stem.strip_prefix("lib").unwrap_or(stem))));
    if let Some(hash) = dir
        .file_name()
        .and_then(|d| unit_hash(&d.to_string_lossy()).map(String::from))
    {
        out.push(dir.join(format!("build_script_build-{hash}.d")));
    }
    out
}

/// What a build script declared about its inputs in its `output` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptInputs {
    /// `rerun-if-changed` paths (relative to the package's directory).
    pub files: Vec<String>,
    /// `rerun-if-env-changed` variables.
    pub env: Vec<String>,
}

impl ScriptInputs {
    /// Whether the script declared any file input; without one, cargo reruns it when any file
    /// of its package changes.
    pub fn declares_files(&self) -> bool {
        !self.files.is_empty()
    }
}

/// Parses a build script's `output` (`cargo:` and `cargo::` directives).
pub fn parse_build_output(text: &str) -> ScriptInputs {
    let mut out = ScriptInputs::default();
    for line in text.lines() {
        let Some(rest) = line
            .strip_prefix("cargo::")
            .or_else(|| line.strip_prefix("cargo:"))
        else {
            continue;
        };
        if let Some(path) = rest.strip_prefix("rerun-if-changed=") {
            out.files.push(path.to_string());
        } else if let Some(var) = rest.strip_prefix("rerun-if-env-changed=") {
            out.env.push(var.to_string());
        }
    }
    out
}

#[cfg(test)]
mod dep_info_tests {
    use super::*;

    #[test]
    fn dep_info_prerequisites_with_escapes() {
        let text = "/t/release/deps/app-0123456789abcdef: src/main.rs src/my\\ mod.rs data/x.txt\n\n/t/release/deps/app-0123456789abcdef.d: src/main.rs\n\nsrc/main.rs:\n\n# env-dep:CARGO_PKG_NAME=app\n";
        assert_eq!(
            parse_dep_info(text),
            vec!["src/main.rs", "src/my mod.rs", "data/x.txt"]
        );
        assert_eq!(
            parse_dep_info("/abs/app: /abs/src/main.rs\n"),
            vec!["/abs/src/main.rs"]
        );
    }

    #[test]
    fn build_script_directives() {
        let out = parse_build_output(
            "cargo:rerun-if-changed=build.rs\ncargo::rerun-if-changed=proto/a.proto\ncargo:rerun-if-env-changed=PROTOC\ncargo:rustc-cfg=x\n",
        );
        assert_eq!(out.files, vec!["build.rs", "proto/a.proto"]);
        assert_eq!(out.env, vec!["PROTOC"]);
        assert!(out.declares_files());
        assert!(!parse_build_output("cargo:rustc-cfg=x\n").declares_files());
    }

    #[test]
    fn dep_info_locations() {
        let c = dep_info_candidates(Path::new("/t/release/deps/libfoo-0123456789abcdef.rlib"));
        assert!(c.contains(&std::path::PathBuf::from(
            "/t/release/deps/foo-0123456789abcdef.d"
        )));
        let c = dep_info_candidates(Path::new("/t/release/app"));
        assert_eq!(c[0], std::path::PathBuf::from("/t/release/app.d"));
        let c = dep_info_candidates(Path::new(
            "/t/release/build/foo-0123456789abcdef/build-script-build",
        ));
        assert!(c.contains(&std::path::PathBuf::from(
            "/t/release/build/foo-0123456789abcdef/build_script_build-0123456789abcdef.d"
        )));
    }
}
