//! Dependency-tree cache keys (pure).
//!
//! A binary's dependency key is the sha256 of a canonical text listing everything that changes
//! the compiled output of its dependencies: each package of its tree as cargo resolved it for
//! the target (name, version, source and checksum from Cargo.lock, enabled features), the
//! workspace members' dependency declarations (member versions masked, so bumping the app's
//! version is not a miss), the profile and its settings, the target triple, `rustc -vV`, and
//! the environment variables known to change dependency builds. The text is kept so that a
//! changed key can be explained line by line.

use std::collections::{BTreeMap, BTreeSet};

use crate::lockfile::LockedPackage;

/// Version of the key's text format; bump it whenever the text changes meaning.
pub const KEY_FORMAT: &str = "imgbuild-dependency-key v2";

/// Environment variables that change how dependencies compile.
pub const KEY_ENV_VARS: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_BOOTSTRAP",
    "CC",
    "CXX",
    "AR",
    "CFLAGS",
    "CXXFLAGS",
    "LDFLAGS",
    "PKG_CONFIG_PATH",
];

/// One package of a resolved tree, as `cargo tree` prints it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TreeEntry {
    /// Package name.
    pub name: String,
    /// Version (without the `v`).
    pub version: String,
    /// The parenthesized source note for path and git packages, if any.
    pub location: Option<String>,
    /// Enabled features, sorted.
    pub features: Vec<String>,
}

/// Parses `cargo tree --prefix none -f "{p}\t{f}"` output into a sorted, de-duplicated tree.
pub fn parse_tree(output: &str) -> Vec<TreeEntry> {
    let mut set = BTreeSet::new();
    for line in output.lines() {
        let line = line.trim_end().trim_end_matches("(*)").trim_end();
        let (package, features) = line.split_once('\t').unwrap_or((line, ""));
        let package = package.trim();
        let mut parts = package.splitn(3, ' ');
        let (Some(name), Some(version)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(version) = version.strip_prefix('v') else {
            continue;
        };
        let location = parts
            .next()
            .map(|rest| {
                rest.replace("(proc-macro)", "")
                    .trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .to_string()
            })
            .filter(|s| !s.is_empty());
        let mut features: Vec<String> = features
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(String::from)
            .collect();
        features.sort();
        set.insert(TreeEntry {
            name: name.to_string(),
            version: version.to_string(),
            location,
            features,
        });
    }
    set.into_iter().collect()
}

/// Everything a dependency key is computed from.
#[derive(Debug, Clone)]
pub struct KeyInputs<'a> {
    /// The binary's resolved tree (its package included).
    pub tree: &'a [TreeEntry],
    /// Cargo.lock entries by `(name, version)`.
    pub lock: &'a BTreeMap<(String, String), LockedPackage>,
    /// Workspace member name → canonical dependency declaration lines.
    pub members: &'a BTreeMap<String, Vec<String>>,
    /// Cargo profile.
    pub profile: &'a str,
    /// The workspace's `[profile.*]` tables, as text.
    pub profile_settings: &'a str,
    /// Target triple.
    pub target: &'a str,
    /// `rustc -vV` output.
    pub rustc: &'a str,
    /// What else the code is built with, one line each: the host's C compiler, linker and C
    /// library (`machine …`, see [`crate::run::machine_lines`]), or the build environment's
    /// digest (`build-env …`), which stands for all of them.
    pub machine: &'a [String],
    /// `(name, value)` of the set [`KEY_ENV_VARS`] and `CARGO_PROFILE_*` variables (and those
    /// passed with `--pass-env`).
    pub env: &'a [(String, String)],
    /// Whether build scripts may use the network (`--allow-network`): such builds never share
    /// compiled dependencies with hermetic ones.
    pub network_allowed: bool,
}

/// A dependency key and the text it hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyKey {
    /// Lowercase hex sha256 of `inputs` joined by newlines.
    pub key: String,
    /// The canonical input lines.
    pub inputs: Vec<String>,
}

impl DependencyKey {
    /// How many packages the binary's tree has, itself included: what cargo compiles at
    /// least one unit for (an estimate of the build's units, for progress displays).
    pub fn packages(&self) -> usize {
        self.inputs
            .iter()
            .filter(|l| {
                let mut words = l.split(' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("package"), ..) => true,
                    (Some("member"), Some(_), Some(w)) => w.starts_with("features=["),
                    _ => false,
                }
            })
            .count()
    }
}

/// Computes the dependency key.
pub fn dependency_key(i: &KeyInputs<'_>) -> DependencyKey {
    let mut lines = vec![KEY_FORMAT.to_string()];
    lines.push(format!("target {}", i.target));
    lines.push(format!("profile {}", i.profile));
    for l in i
        .profile_settings
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        lines.push(format!("profile-setting {l}"));
    }
    for l in i.rustc.lines().map(str::trim).filter(|l| !l.is_empty()) {
        lines.push(format!("rustc {l}"));
    }
    lines.extend(i.machine.iter().cloned());
    for (k, v) in i.env {
        lines.push(format!("env {k}={v}"));
    }
    if i.network_allowed {
        lines.push("network allowed".to_string());
    }
    for entry in i.tree {
        let features = entry.features.join(",");
        if let Some(decls) = i
            .members
            .get(&entry.name)
            .filter(|_| entry.location.is_some())
        {
            lines.push(format!("member {} features=[{features}]", entry.name));
            for d in decls {
                lines.push(format!("member {} {d}", entry.name));
            }
            continue;
        }
        match i.lock.get(&(entry.name.clone(), entry.version.clone())) {
            Some(locked) => lines.push(format!(
                "package {} {} source={} checksum={} features=[{features}]",
                entry.name,
                entry.version,
                locked.source.as_deref().unwrap_or("path"),
                locked.checksum.as_deref().unwrap_or("-"),
            )),
            None => lines.push(format!(
                "package {} {} source=unlocked features=[{features}]",
                entry.name, entry.version
            )),
        }
    }
    let key = imgbuild_oci::digest::sha256(lines.join("\n").as_bytes())
        .digest()
        .to_string();
    DependencyKey { key, inputs: lines }
}

/// The lines removed (`-`) and added (`+`) between two key texts, in order.
pub fn explain(previous: &[String], current: &[String]) -> Vec<String> {
    let old: BTreeSet<&String> = previous.iter().collect();
    let new: BTreeSet<&String> = current.iter().collect();
    let mut out: Vec<String> = previous
        .iter()
        .filter(|l| !new.contains(l))
        .map(|l| format!("- {l}"))
        .collect();
    out.extend(
        current
            .iter()
            .filter(|l| !old.contains(l))
            .map(|l| format!("+ {l}")),
    );
    out
}

/// The `[profile.*]` tables of a Cargo.toml, as text (pure line scan).
pub fn profile_sections(manifest: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in manifest.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = t.starts_with("[profile");
        }
        if inside {
            out.push_str(t);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREE: &str = "app v0.1.0 (/ws/app)\t\nserde v1.0.228\tderive,std,serde_derive\nserde_derive v1.0.228 (proc-macro)\t\nitoa v1.0.15\t\nserde v1.0.228\tderive,std,serde_derive (*)\nitoa v1.0.15\t (*)\n";

    fn lock() -> BTreeMap<(String, String), LockedPackage> {
        let mut m = BTreeMap::new();
        for (n, v) in [
            ("serde", "1.0.228"),
            ("serde_derive", "1.0.228"),
            ("itoa", "1.0.15"),
        ] {
            m.insert(
                (n.to_string(), v.to_string()),
                LockedPackage {
                    name: n.into(),
                    version: v.into(),
                    source: Some("registry+x".into()),
                    checksum: Some(format!("sum-{n}")),
                },
            );
        }
        m
    }

    const MACHINE: &[&str] = &[
        "machine cc cc: cc (Debian 12.2.0-14+deb12u1) 12.2.0",
        "machine libc glibc 2.36",
    ];

    fn key(
        tree: &[TreeEntry],
        lock: &BTreeMap<(String, String), LockedPackage>,
        env: &[(String, String)],
    ) -> DependencyKey {
        key_on(tree, lock, env, MACHINE)
    }

    fn key_on(
        tree: &[TreeEntry],
        lock: &BTreeMap<(String, String), LockedPackage>,
        env: &[(String, String)],
        machine: &[&str],
    ) -> DependencyKey {
        let machine: Vec<String> = machine.iter().map(|l| l.to_string()).collect();
        let members =
            BTreeMap::from([("app".to_string(), vec!["dep serde ^1 normal".to_string()])]);
        dependency_key(&KeyInputs {
            tree,
            lock,
            members: &members,
            profile: "release",
            profile_settings: "[profile.release]\nlto = true\n",
            target: "x86_64-unknown-linux-gnu",
            rustc: "rustc 1.95.0\nhost: x86_64-unknown-linux-gnu\n",
            machine: &machine,
            env,
            network_allowed: false,
        })
    }

    #[test]
    fn cargo_tree_output_is_parsed_sorted_and_deduplicated() {
        let tree = parse_tree(TREE);
        let names: Vec<&str> = tree.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["app", "itoa", "serde", "serde_derive"]);
        assert_eq!(tree[0].location.as_deref(), Some("/ws/app"));
        assert_eq!(tree[2].features, ["derive", "serde_derive", "std"]);
        assert_eq!(
            tree[3].location, None,
            "the proc-macro note is not a location"
        );
    }

    #[test]
    fn the_key_ignores_member_paths_and_versions_but_not_dependencies() {
        let base = key(&parse_tree(TREE), &lock(), &[]);
        let moved = key(
            &parse_tree(&TREE.replace("app v0.1.0 (/ws/app)", "app v0.2.0 (/elsewhere/app)")),
            &lock(),
            &[],
        );
        assert_eq!(
            base.key, moved.key,
            "a moved checkout or a bumped app version is not a miss"
        );

        let mut bumped = lock();
        bumped
            .get_mut(&("itoa".to_string(), "1.0.15".to_string()))
            .unwrap()
            .checksum = Some("other".into());
        let changed = key(&parse_tree(TREE), &bumped, &[]);
        assert_ne!(base.key, changed.key);
        assert_eq!(
            explain(&base.inputs, &changed.inputs),
            [
                "- package itoa 1.0.15 source=registry+x checksum=sum-itoa features=[]",
                "+ package itoa 1.0.15 source=registry+x checksum=other features=[]",
            ]
        );
        let flags = key(
            &parse_tree(TREE),
            &lock(),
            &[("RUSTFLAGS".into(), "-Ctarget-cpu=native".into())],
        );
        assert_ne!(base.key, flags.key);
        assert!(
            base.inputs
                .contains(&"profile-setting lto = true".to_string())
        );
    }

    #[test]
    fn another_c_compiler_or_libc_is_another_key_and_explain_names_it() {
        let base = key(&parse_tree(TREE), &lock(), &[]);
        let newer = key_on(
            &parse_tree(TREE),
            &lock(),
            &[],
            &[
                "machine cc cc: cc (Debian 14.2.0-19) 14.2.0",
                "machine libc glibc 2.36",
            ],
        );
        assert_ne!(base.key, newer.key);
        assert_eq!(
            explain(&base.inputs, &newer.inputs),
            [
                "- machine cc cc: cc (Debian 12.2.0-14+deb12u1) 12.2.0",
                "+ machine cc cc: cc (Debian 14.2.0-19) 14.2.0",
            ]
        );
    }

    #[test]
    fn the_package_count_includes_the_member_once_and_every_dependency() {
        // app (a member, with a declaration line), itoa, serde, serde_derive.
        assert_eq!(key(&parse_tree(TREE), &lock(), &[]).packages(), 4);
    }

    #[test]
    fn profile_sections_are_extracted() {
        let text = "[package]\nname = \"x\"\n[profile.release]\nlto = true\n[dependencies]\nserde = \"1\"\n";
        assert_eq!(profile_sections(text), "[profile.release]\nlto = true\n");
    }
}
