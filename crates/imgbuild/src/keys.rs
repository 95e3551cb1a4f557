//! Dependency keys: the workspace-wide key inputs gathered once ([`KeyContext`]), each
//! package's `cargo tree`, and the record of the last key built per binary (what
//! `plan --explain` diffs against).
//!
//! Runs `rustc -vV` and `cargo tree` (through `imgbuild_cargo::run`), reads Cargo.lock and the
//! root manifest, and reads/writes the key records under the cache directory. The key itself
//! is computed by the pure `imgbuild_cargo::plan`.

use std::collections::BTreeMap;
use std::path::Path;

use imgbuild_cargo::lockfile::LockedPackage;
use imgbuild_cargo::plan::{
    DependencyKey, KEY_ENV_VARS, KeyInputs, TreeEntry, dependency_key, parse_tree, profile_sections,
};
use imgbuild_cargo::run;
use imgbuild_cargo::workspace::BinaryTarget;

use crate::cachedir::CacheDir;
use crate::context::{Context, Env};
use crate::threads::join;
use crate::{Error, Result};

/// The variables from the environment that enter the key, sorted: those known to change
/// dependency builds and those passed to the compile step with `--pass-env`.
pub(crate) fn key_environment(env: &Env, pass: &[String]) -> Vec<(String, String)> {
    env.pairs()
        .filter(|(k, _)| {
            KEY_ENV_VARS.contains(k)
                || k.starts_with("CARGO_PROFILE_")
                || pass.iter().any(|p| p == k)
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The key inputs shared by every binary of a workspace: gathered once, then combined with each
/// package's dependency tree.
#[derive(Debug)]
pub(crate) struct KeyContext {
    profile: String,
    network_allowed: bool,
    rustc: String,
    machine: Vec<String>,
    triple: String,
    /// The key's `target` line: the triple, and `--target` with the platform's flags.
    target_line: String,
    lock: BTreeMap<(String, String), LockedPackage>,
    /// sha256 hex of Cargo.lock's bytes (the provenance names it).
    lockfile_sha256: String,
    profile_settings: String,
    members: BTreeMap<String, Vec<String>>,
    env: Vec<(String, String)>,
}

impl KeyContext {
    /// Runs `rustc -vV` and the machine probes (C compiler, linker, libc), reads Cargo.lock, the root manifest's profiles and the environment.
    pub(crate) fn gather(cx: &Context<'_>) -> Result<Self> {
        let read =
            |path: &Path| std::fs::read_to_string(path).map_err(crate::io_err("reading", path));
        let rustc = crate::probecache::rustc_version(
            &cx.cache,
            &cx.env,
            &cx.toolchain,
            &cx.workspace.root,
        )?;
        let host = run::host_triple(&rustc).unwrap_or_else(|| "unknown".into());
        let triple = cx.cargo_triple.clone().unwrap_or(host);
        // A `--target` build lays out and compiles build scripts apart from a host build,
        // and the wrapper's flags change every unit of the target: both are in the line.
        let target_line = match &cx.cargo_triple {
            Some(t) => {
                let flags = cx
                    .platform
                    .as_ref()
                    .map(|p| p.target_flags())
                    .unwrap_or_default();
                format!("{t} --target {}", flags.join(" "))
                    .trim_end()
                    .to_string()
            }
            None => triple.clone(),
        };
        // A build environment's digest stands for its C toolchain and libc; on the host they
        // are probed.
        let machine = match &cx.build_env {
            Some(env) => vec![env.key_line()],
            None => crate::probecache::machine_lines(
                &cx.cache,
                &cx.env,
                &run::MachineTools::from_env(&|k| cx.env.get(k).map(String::from), &triple),
                &triple,
            ),
        };
        let workspace = &cx.workspace;
        let lockfile = read(&workspace.root.join("Cargo.lock"))?;
        Ok(Self {
            profile: cx.options.profile.clone(),
            network_allowed: cx.options.allow_network,
            machine,
            triple,
            target_line,
            rustc,
            lock: imgbuild_cargo::lockfile::parse(&lockfile),
            lockfile_sha256: imgbuild_oci::digest::sha256(lockfile.as_bytes())
                .digest()
                .to_string(),
            profile_settings: profile_sections(&read(&workspace.root_manifest)?),
            members: workspace.member_declarations(),
            env: key_environment(&cx.env, &cx.options.pass_env),
        })
    }

    /// Cargo.lock's packages.
    pub(crate) fn lock(&self) -> &BTreeMap<(String, String), LockedPackage> {
        &self.lock
    }

    /// sha256 hex of Cargo.lock as read for the keys.
    pub(crate) fn lockfile_sha256(&self) -> &str {
        &self.lockfile_sha256
    }

    /// The triple cargo compiles for (`rustc -vV`'s `host:` unless `--target` is used).
    pub(crate) fn triple(&self) -> &str {
        &self.triple
    }

    /// `rustc -vV`'s first line (`rustc 1.95.0 (… 2026-…)`).
    pub(crate) fn rustc_release(&self) -> &str {
        self.rustc.lines().next().unwrap_or_default()
    }

    /// The key for a package's tree as [`tree`] returned it.
    pub(crate) fn key_for_tree(&self, tree: &str) -> DependencyKey {
        self.key_for(&parse_tree(tree))
    }

    /// The key for a parsed tree.
    pub(crate) fn key_for(&self, tree: &[TreeEntry]) -> DependencyKey {
        dependency_key(&KeyInputs {
            tree,
            lock: &self.lock,
            members: &self.members,
            profile: &self.profile,
            profile_settings: &self.profile_settings,
            target: &self.target_line,
            rustc: &self.rustc,
            machine: &self.machine,
            env: &self.env,
            network_allowed: self.network_allowed,
        })
    }
}

/// `cargo tree` output for `target`'s package on the host, with the options' features.
pub(crate) fn tree(cx: &Context<'_>, target: &BinaryTarget) -> Result<String> {
    crate::probecache::dependency_tree(
        &cx.cache,
        &cx.env,
        &cx.workspace_inputs,
        crate::probecache::TreeQuestion {
            target,
            triple: cx.cargo_triple.as_deref(),
            features: cx.options.cargo_features(),
        },
        &cx.wrapper,
        &cx.toolchain,
    )
}

/// The key context and `target`'s dependency key, computed at once (`rustc -vV` and
/// `cargo tree` are independent).
pub(crate) fn gather(
    cx: &Context<'_>,
    target: &BinaryTarget,
) -> Result<(KeyContext, DependencyKey, Vec<TreeEntry>)> {
    let (context, tree) = std::thread::scope(|s| {
        let tree = s.spawn(|| tree(cx, target));
        (KeyContext::gather(cx), join(tree))
    });
    let context = context?;
    let tree = parse_tree(&tree?);
    let key = context.key_for(&tree);
    Ok((context, key, tree))
}

/// The kinds of record kept per binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    /// The dependency key's input lines of the last build.
    DependencyKey,
    /// The static app-key input lines of the last app entry stored.
    AppStatic,
}

impl Record {
    fn file_name(self, bin: &str) -> String {
        match self {
            Record::DependencyKey => format!("{bin}.txt"),
            Record::AppStatic => format!("{bin}.app.txt"),
        }
    }
}

/// Writes `lines` as `target`'s record of kind `kind` (atomically).
pub(crate) fn write_record(
    cache: &CacheDir,
    target: &BinaryTarget,
    kind: Record,
    lines: &[String],
) -> Result<()> {
    let dir = cache.key_records(&target.package.name);
    std::fs::create_dir_all(&dir).map_err(crate::io_err("creating directory", &dir))?;
    imgbuild_oci::layout::write_atomic(
        &dir,
        &kind.file_name(&target.bin),
        lines.join("\n").as_bytes(),
    )?;
    Ok(())
}

/// `target`'s record of kind `kind`: `None` when none was written; any other failure to read
/// it is an error (a record that cannot be read is not the same as no record).
pub(crate) fn read_record(
    cache: &CacheDir,
    target: &BinaryTarget,
    kind: Record,
) -> Result<Option<Vec<String>>> {
    let path = cache
        .key_records(&target.package.name)
        .join(kind.file_name(&target.bin));
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.lines().map(String::from).collect())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            action: "reading the key record",
            path,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> BinaryTarget {
        BinaryTarget {
            package: imgbuild_cargo::workspace::PackageInfo {
                name: "p".into(),
                version: "0.1.0".into(),
                manifest_path: "/w/Cargo.toml".into(),
                description: None,
                repository: None,
                homepage: None,
                license: None,
                authors: None,
            },
            bin: "b".into(),
        }
    }

    #[test]
    fn records_round_trip_and_absence_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(tmp.path());
        let t = target();
        assert_eq!(read_record(&cache, &t, Record::AppStatic).unwrap(), None);
        write_record(&cache, &t, Record::DependencyKey, &["a".into(), "b".into()]).unwrap();
        assert_eq!(
            read_record(&cache, &t, Record::DependencyKey).unwrap(),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(read_record(&cache, &t, Record::AppStatic).unwrap(), None);
    }

    #[test]
    fn an_unreadable_record_is_an_error_not_an_absence() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(tmp.path());
        let t = target();
        // A directory where the record file should be: reading it fails with something other
        // than "not found" (root ignores permission bits, so a mode would not do).
        std::fs::create_dir_all(cache.key_records("p").join("b.txt")).unwrap();
        let err = read_record(&cache, &t, Record::DependencyKey).unwrap_err();
        assert!(err.to_string().contains("b.txt"), "{err}");
    }
}
