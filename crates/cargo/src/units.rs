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
fn hash_of_path<'a>(path: &'a Path, profile_dir: &Path) -> Option<&'a str> {
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

/// `name@version` from a package id such as `registry+https://…#serde@1.0.0`.
pub fn package_label(package_id: &str) -> &str {
    package_id.rsplit_once('#').map_or(package_id, |(_, n)| n)
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
    fn profile_directories() {
        assert_eq!(profile_dir_name("dev"), "debug");
        assert_eq!(profile_dir_name("release"), "release");
        assert_eq!(profile_dir_name("dist"), "dist");
    }
}
