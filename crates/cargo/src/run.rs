//! Runs processes: `cargo metadata`, `cargo build`, `git`. The only module of imgbuild that
//! starts a program; it also writes the small rustc wrapper script that cargo runs.
//!
//! Each child is named with its purpose in errors. Cargo's human output (progress, warnings,
//! errors) goes straight to the user's stderr, or, while a live display is drawn, through the
//! caller's [`Monitor`]; its JSON messages on stdout are parsed here ([`build`], in `compile`).

#![allow(clippy::disallowed_methods)] // the one place that starts processes

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cargo_metadata::Metadata;

use crate::workspace::BinaryTarget;
use crate::{Error, Result};

pub mod binutils;
mod compile;
mod machine;
mod sandbox;
mod toolchain;
mod wrapper;

pub use compile::{BuildOutcome, BuildRequest, Monitor, Silent, Unit, UnitProgress, build};
pub use machine::{MachineTools, linker_var, machine_lines};
pub use sandbox::{Sandbox, probe_sandbox};
pub use toolchain::{EnvironmentRoot, Network, Program, Toolchain};
pub use wrapper::{Wrapper, WrapperScript};

/// Where paths are remapped to inside compiled output (panic messages, debug info), so that
/// the same project built in two folders gives the same bytes.
pub mod remap {
    /// The workspace root.
    pub const WORKSPACE: &str = "/build/workspace";
    /// Cargo's home (registry and git sources).
    pub const CARGO_HOME: &str = "/build/cargo";
    /// The target directory (build-script `OUT_DIR`s).
    pub const TARGET_DIR: &str = "/build/target";
}

fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn spawn_err(program: &str, purpose: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    let program = program.to_string();
    move |source| Error::Spawn {
        program,
        purpose,
        source,
    }
}

/// Runs `cmd` to completion with no stdin, capturing its output.
fn capture(cmd: &mut Command, purpose: &'static str) -> Result<std::process::Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .output()
        .map_err(spawn_err(&program, purpose))
}

/// Runs `cmd` to completion and returns its stdout; a non-zero exit is [`Error::Failed`].
fn checked_stdout(cmd: &mut Command, purpose: &'static str) -> Result<String> {
    let out = capture(cmd, purpose)?;
    if !out.status.success() {
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return Err(Error::Failed {
            command: format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" ")),
            purpose,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Cargo's feature flags, passed the same way to every cargo command.
#[derive(Debug, Clone, Copy, Default)]
pub struct Features<'a> {
    /// `--features`.
    pub list: &'a [String],
    /// `--all-features`.
    pub all: bool,
    /// `--no-default-features`.
    pub no_default: bool,
}

impl Features<'_> {
    fn apply(&self, cmd: &mut Command) {
        if !self.list.is_empty() {
            cmd.arg("--features").arg(self.list.join(","));
        }
        if self.all {
            cmd.arg("--all-features");
        }
        if self.no_default {
            cmd.arg("--no-default-features");
        }
    }
}

/// Cargo's home directory: `$CARGO_HOME`, else `~/.cargo`.
pub fn cargo_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
        .join(".cargo")
}

/// Resolves what the user pointed at (a Cargo.toml, a directory, or nothing: the current
/// directory) to a manifest path to give cargo.
pub fn manifest_path(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_dir().map_err(|source| Error::Io {
            action: "reading the current directory",
            path: ".".into(),
            source,
        })?,
    };
    // Absolute: a build environment runs cargo from another directory.
    let path = std::path::absolute(&path).map_err(|source| Error::Io {
        action: "resolving the path",
        path: path.clone(),
        source,
    })?;
    if path.is_dir() {
        // cargo searches parents for a manifest when started in a directory.
        let mut dir = Some(path.as_path());
        while let Some(d) = dir {
            if d.join("Cargo.toml").is_file() {
                return Ok(d.join("Cargo.toml"));
            }
            dir = d.parent();
        }
        return Err(Error::NotACargoProject { path });
    }
    if path.is_file() && path.file_name().is_some_and(|n| n == "Cargo.toml") {
        return Ok(path);
    }
    Err(Error::NotACargoProject { path })
}

/// Runs `cargo metadata --locked` on `manifest` and parses it. A missing or stale Cargo.lock
/// gives [`Error::LockfileMissing`] or [`Error::LockfileStale`].
pub fn metadata(
    manifest: &Path,
    wrapper: &WrapperScript,
    toolchain: &Toolchain,
) -> Result<Metadata> {
    // Like on the host, `cargo metadata` downloads the packages it has not seen yet.
    let mut cmd = toolchain.command(Program::Cargo, Network::On);
    cmd.args([
        "metadata",
        "--format-version",
        "1",
        "--locked",
        "--manifest-path",
    ])
    .arg(manifest);
    wrapper.apply(&mut cmd, toolchain);
    let output = capture(&mut cmd, "reading the workspace")?;
    if output.status.success() {
        return serde_json::from_slice(&output.stdout).map_err(Error::MetadataFormat);
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if stderr.contains("--locked") || stderr.contains("lock file") {
        let root = workspace_root(manifest, toolchain)
            .unwrap_or_else(|| manifest.parent().unwrap_or(Path::new(".")).to_path_buf());
        let lockfile = root.join("Cargo.lock");
        if !lockfile.exists() {
            return Err(Error::LockfileMissing {
                lockfile,
                workspace: root,
            });
        }
        let cargo_says = stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or(&stderr)
            .trim_start_matches("error: ")
            .to_string();
        return Err(Error::LockfileStale {
            lockfile,
            cargo_says,
        });
    }
    Err(Error::Metadata {
        manifest: manifest.to_path_buf(),
        stderr,
    })
}

fn workspace_root(manifest: &Path, toolchain: &Toolchain) -> Option<PathBuf> {
    let output = toolchain
        .command(Program::Cargo, Network::Off)
        .args([
            "locate-project",
            "--workspace",
            "--message-format",
            "plain",
            "--manifest-path",
        ])
        .arg(manifest)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    path.parent().map(Path::to_path_buf)
}

/// The first `name` on `PATH`.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// How the compile step runs.
#[derive(Debug, Clone)]
pub struct Isolation<'a> {
    /// Its whole environment (see [`crate::hermetic::compile_env`]).
    pub env: &'a [(String, String)],
    /// The network sandbox to run it in; `None`: network allowed.
    pub sandbox: Option<&'a Sandbox>,
}

/// Whether `cargo fetch` must run before an offline build: a git dependency, or a registry
/// package whose `.crate` is not in cargo's download cache.
pub fn missing_downloads(
    lock: &std::collections::BTreeMap<(String, String), crate::lockfile::LockedPackage>,
) -> bool {
    let cache = cargo_home().join("registry").join("cache");
    let dirs: Vec<PathBuf> = std::fs::read_dir(&cache)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    lock.values().any(|p| match p.source.as_deref() {
        Some(s) if s.starts_with("git+") => true,
        Some(_) => {
            let file = format!("{}-{}.crate", p.name, p.version);
            !dirs.iter().any(|d| d.join(&file).is_file())
        }
        None => false,
    })
}

/// `cargo fetch --locked` for the host target, with the caller's environment (proxies, CAs and
/// registry settings are what it needs). Cargo's progress goes to stderr. With a build
/// environment the host's cargo fetches when the host has one (it only downloads); otherwise
/// the environment's, with network.
pub fn fetch(manifest: &Path, triple: &str, toolchain: &Toolchain) -> Result<()> {
    let program = cargo_program();
    let host_has_cargo = std::env::var_os("CARGO").is_some() || find_program("cargo").is_some();
    let mut cmd = if host_has_cargo {
        Command::new(&program)
    } else {
        toolchain.command(Program::Cargo, Network::On)
    };
    let status = cmd
        .args(["fetch", "--locked", "--target", triple, "--manifest-path"])
        .arg(manifest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .map_err(spawn_err(
            &program.to_string_lossy(),
            "downloading dependencies",
        ))?;
    if !status.success() {
        return Err(Error::FetchFailed {
            status: status.to_string(),
        });
    }
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// The commit time (seconds since the epoch) of `HEAD` in the git repository holding `dir`.
pub fn git_commit_time(dir: &Path) -> Option<u64> {
    git(dir, &["log", "-1", "--format=%ct"])?.parse().ok()
}

/// The top directory of the git checkout holding `dir`.
pub fn git_toplevel(dir: &Path) -> Option<PathBuf> {
    git(dir, &["rev-parse", "--show-toplevel"]).map(PathBuf::from)
}

/// The commit id of `HEAD` in the git repository holding `dir`.
pub fn git_revision(dir: &Path) -> Option<String> {
    git(dir, &["rev-parse", "HEAD"])
}

/// `rustc -vV` (of `$RUSTC`, else `rustc`, or the build environment's), a dependency-key
/// input.
pub fn rustc_version(toolchain: &Toolchain) -> Result<String> {
    checked_stdout(
        toolchain.command(Program::Rustc, Network::Off).arg("-vV"),
        "reading the compiler version",
    )
}

/// Where the toolchain keeps the standard library for `triple` (`rustc --print
/// target-libdir`); the directory need not exist.
pub fn target_libdir(toolchain: &Toolchain, triple: &str) -> Result<PathBuf> {
    let out = checked_stdout(
        toolchain.command(Program::Rustc, Network::Off).args([
            "--print",
            "target-libdir",
            "--target",
            triple,
        ]),
        "asking the compiler where a target's standard library is",
    )?;
    Ok(PathBuf::from(out.trim()))
}

/// The host triple from `rustc -vV` output.
pub fn host_triple(rustc_vv: &str) -> Option<String> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|s| s.trim().to_string())
}

/// The package's resolved dependency tree for `target`, as `cargo tree` prints it with
/// `--prefix none -f "{p}\t{f}"` (normal and build dependencies, features resolved by cargo)
/// for the target `triple` (`None`: the host, cargo's default).
pub fn dependency_tree(
    target: &BinaryTarget,
    triple: Option<&str>,
    features: Features<'_>,
    wrapper: &Wrapper,
    toolchain: &Toolchain,
) -> Result<String> {
    let mut cmd = toolchain.command(Program::Cargo, Network::Off);
    cmd.args([
        "tree",
        "--locked",
        "-e",
        "normal,build",
        "--prefix",
        "none",
        "-f",
        "{p}\t{f}",
        "--manifest-path",
    ])
    .arg(&target.package.manifest_path);
    if let Some(triple) = triple {
        cmd.args(["--target", triple]);
    }
    features.apply(&mut cmd);
    wrapper.apply(&mut cmd, toolchain);
    checked_stdout(&mut cmd, "resolving the dependency tree")
}
