//! `cargo build` for one binary: the command line, cargo's JSON messages (which units it built,
//! where the executable is), and live progress for the caller's display ([`Monitor`]).
//!
//! Cargo's stderr is inherited, unless the monitor draws a live display on the same terminal:
//! then each stderr line is handed to it, so that cargo's warnings and `Compiling …` lines are
//! printed around the display instead of through it.

#![allow(clippy::disallowed_methods)] // part of `run`, the one place that starts processes

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use cargo_metadata::{Message, TargetKind};

use super::{
    Features, Isolation, Network, Program, Sandbox, Toolchain, Wrapper, cargo_program, spawn_err,
};
use crate::workspace::BinaryTarget;
use crate::{Error, Result};

/// What to compile.
#[derive(Clone)]
pub struct BuildRequest<'a> {
    /// The binary.
    pub target: &'a BinaryTarget,
    /// Cargo profile, e.g. `release`.
    pub profile: &'a str,
    /// Cargo's `--target` (`None`: the host's, cargo's default, outputs under the profile
    /// directory itself).
    pub triple: Option<&'a str>,
    /// Feature flags.
    pub features: Features<'a>,
    /// The rustc wrapper (remaps the workspace, cargo home and build dir).
    pub wrapper: &'a Wrapper,
    /// Where cargo runs: the host, or a build environment (which is then also the network
    /// sandbox: `isolation.sandbox` is not used).
    pub toolchain: &'a Toolchain,
    /// Hermetic settings: `--offline`, the allowlisted environment, the sandbox. `None`: the
    /// caller's environment, network allowed.
    pub isolation: Option<Isolation<'a>>,
    /// An estimate of the units cargo will report, for progress totals (the dependency tree's
    /// package count is a good one; each build script seen adds its two units); 0: unknown.
    pub expected_units: usize,
    /// Hears of every finished unit, and says how cargo's stderr reaches the user.
    pub monitor: &'a dyn Monitor,
}

impl std::fmt::Debug for BuildRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildRequest")
            .field("target", &self.target)
            .field("profile", &self.profile)
            .field("triple", &self.triple)
            .field("features", &self.features)
            .field("wrapper", &self.wrapper)
            .field("isolation", &self.isolation)
            .field("expected_units", &self.expected_units)
            .finish_non_exhaustive()
    }
}

/// How far the compile has come: units cargo finished (compiled or found fresh) out of an
/// estimated total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitProgress {
    /// Units finished.
    pub done: usize,
    /// The estimated total: never below `done`, and above it until cargo has exited; the last
    /// report of a build has `done == total`.
    pub total: usize,
    /// The unit just finished, named like cargo names units (`serde`, `serde(build.rs)`,
    /// `serde(build)`); empty in the last report.
    pub unit: String,
}

/// Receives the compile's live output. Every method has a default: no display, cargo's stderr
/// inherited, cargo's own colour choice.
pub trait Monitor {
    /// Cargo finished a unit; called once more with `done == total` when cargo has exited.
    fn progress(&self, _progress: &UnitProgress) {}
    /// Whether cargo's stderr goes through [`Monitor::stderr_line`] (a live display is drawn on
    /// the same terminal) instead of straight to the inherited stderr.
    fn relay_stderr(&self) -> bool {
        false
    }
    /// One line of cargo's stderr (without its newline), when relayed.
    fn stderr_line(&self, _line: &str) {}
    /// Cargo's `--color` (`Some(true)`: always, `Some(false)`: never); `None`: cargo decides.
    fn color(&self) -> Option<bool> {
        None
    }
    /// Cargo reported a unit done (compiled, found fresh, or a build script run), with its
    /// files: what depends on its outputs can start while cargo builds the next.
    fn unit_finished(&self, _unit: &Unit) {}
}

/// No live display: cargo's stderr inherited, as cargo renders it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Monitor for Silent {}

/// One unit cargo built or found fresh, from its JSON messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Cargo's package id (`registry+https://…#name@version`, `path+file://…`).
    pub package_id: String,
    /// Whether cargo found the unit up to date (`false`: it ran the compiler or the script).
    pub fresh: bool,
    /// The files the unit produced (compiled artifacts), or its `OUT_DIR` (build-script runs).
    pub paths: Vec<PathBuf>,
}

/// What `cargo build` did.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The executable.
    pub executable: PathBuf,
    /// Every compiled unit (`compiler-artifact` messages), fresh or not.
    pub compiled: Vec<Unit>,
    /// Every build-script run (`build-script-executed` messages); `fresh` is always `true`
    /// because cargo does not say, and a re-run script makes its package's units non-fresh.
    pub build_script_runs: Vec<Unit>,
}

/// The package name in a cargo package id: `…#name@1.0.0`, or `path+file:///…/name#1.0.0`.
fn package_name(id: &str) -> &str {
    let (url, fragment) = id.rsplit_once('#').unwrap_or(("", id));
    match fragment.split_once('@') {
        Some((name, _)) => name,
        None => url.rsplit('/').next().unwrap_or(fragment),
    }
}

/// Counts finished units against the estimate.
struct Counter {
    done: usize,
    estimate: usize,
    scripts: usize,
}

impl Counter {
    /// One more unit; a compiled build script announces two more (its run, and the library
    /// built after it) beyond the one unit the estimate gave its package.
    fn finished(&mut self, unit: String, build_script: bool) -> UnitProgress {
        self.done += 1;
        self.scripts += usize::from(build_script);
        UnitProgress {
            done: self.done,
            total: (self.estimate + 2 * self.scripts).max(self.done + 1),
            unit,
        }
    }

    fn last(&self) -> UnitProgress {
        UnitProgress {
            done: self.done,
            total: self.done,
            unit: String::new(),
        }
    }
}

/// What the reader threads send: cargo's messages, in order, and its stderr lines.
enum Output {
    Message(Box<std::io::Result<Message>>),
    Stderr(String),
}

/// The `cargo build` command for `req` (in its sandbox, with its environment).
fn command(req: &BuildRequest<'_>, program: &std::ffi::OsStr, monitor: &dyn Monitor) -> Command {
    let prefix = req
        .isolation
        .as_ref()
        .and_then(|i| i.sandbox)
        .and_then(Sandbox::prefix);
    let mut cmd = match (req.toolchain, &prefix) {
        (Toolchain::Environment(_), _) => {
            let network = match req.isolation.as_ref().and_then(|i| i.sandbox) {
                Some(_) => Network::Off,
                None => Network::On,
            };
            req.toolchain.command(Program::Cargo, network)
        }
        (Toolchain::Host, Some((sandbox, args))) => {
            let mut c = Command::new(sandbox);
            c.args(args).arg(program);
            c
        }
        (Toolchain::Host, None) => Command::new(program),
    };
    cmd.args([
        "build",
        "--locked",
        "--message-format=json-render-diagnostics",
        "--manifest-path",
    ])
    .arg(&req.target.package.manifest_path)
    .args(["--bin", &req.target.bin, "--profile", req.profile]);
    if let Some(triple) = req.triple {
        cmd.args(["--target", triple]);
    }
    if let Some(color) = monitor.color() {
        cmd.args(["--color", if color { "always" } else { "never" }]);
    }
    req.features.apply(&mut cmd);
    if let Some(isolation) = &req.isolation {
        cmd.arg("--offline");
        cmd.env_clear();
        cmd.envs(isolation.env.iter().map(|(k, v)| (k, v)));
    }
    req.wrapper.apply(&mut cmd, req.toolchain);
    let stderr = if monitor.relay_stderr() {
        Stdio::piped()
    } else {
        Stdio::inherit()
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    cmd
}

/// Sends each line of `stderr` (lossily decoded, without its newline) to `tx`.
fn relay_lines(stderr: impl Read, tx: &mpsc::Sender<Output>) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']).to_string();
        if tx.send(Output::Stderr(text)).is_err() {
            return;
        }
        line.clear();
    }
}

/// Runs `cargo build --locked` for the binary and returns the executable's path and the units
/// cargo reported. Cargo's diagnostics reach the user's stderr as cargo renders them (through
/// the request's monitor when it relays them); the monitor also hears of every finished unit.
pub fn build(req: &BuildRequest<'_>) -> Result<BuildOutcome> {
    let monitor = req.monitor;
    let program = cargo_program();
    let purpose = "compiling the binary";
    let mut child = command(req, &program, monitor)
        .spawn()
        .map_err(spawn_err(&program.to_string_lossy(), purpose))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take();
    let mut outcome = Collected::default();
    let mut counter = Counter {
        done: 0,
        estimate: req.expected_units,
        scripts: 0,
    };
    let mut failure = None;
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let messages = tx.clone();
        s.spawn(move || {
            for message in Message::parse_stream(BufReader::new(stdout)) {
                if messages.send(Output::Message(Box::new(message))).is_err() {
                    return;
                }
            }
        });
        if let Some(stderr) = stderr {
            let lines = tx.clone();
            s.spawn(move || relay_lines(stderr, &lines));
        }
        drop(tx);
        for output in rx {
            match output {
                Output::Stderr(line) => monitor.stderr_line(&line),
                Output::Message(message) => match *message {
                    Ok(message) => {
                        if let Some((unit, script)) = outcome.add(message, req) {
                            monitor.progress(&counter.finished(unit, script));
                            if let Some(last) = outcome.last() {
                                monitor.unit_finished(last);
                            }
                        }
                    }
                    Err(source) => {
                        failure.get_or_insert(Error::Io {
                            action: "reading cargo's messages from",
                            path: "cargo build".into(),
                            source,
                        });
                    }
                },
            }
        }
    });
    monitor.progress(&counter.last());
    let status = child
        .wait()
        .map_err(spawn_err(&program.to_string_lossy(), purpose))?;
    if let Some(e) = failure {
        return Err(e);
    }
    if !status.success() {
        return Err(Error::BuildFailed {
            status: status.to_string(),
        });
    }
    let executable = outcome.executable.ok_or_else(|| Error::NoArtifact {
        bin: req.target.bin.clone(),
    })?;
    Ok(BuildOutcome {
        executable,
        compiled: outcome.compiled,
        build_script_runs: outcome.build_script_runs,
    })
}

/// The units and the executable gathered from cargo's messages so far.
#[derive(Default)]
struct Collected {
    executable: Option<PathBuf>,
    compiled: Vec<Unit>,
    build_script_runs: Vec<Unit>,
    /// Whether the last unit recorded was a build-script run.
    last_was_run: bool,
}

impl Collected {
    /// The unit the last message reported.
    fn last(&self) -> Option<&Unit> {
        match self.last_was_run {
            true => self.build_script_runs.last(),
            false => self.compiled.last(),
        }
    }

    /// Records one message; returns the finished unit's name, and whether it is a compiled
    /// build script, when the message reports a unit.
    fn add(&mut self, message: Message, req: &BuildRequest<'_>) -> Option<(String, bool)> {
        match message {
            Message::CompilerArtifact(artifact) => {
                let kinds = &artifact.target.kind;
                if artifact.target.name == req.target.bin
                    && kinds.contains(&TargetKind::Bin)
                    && let Some(exe) = &artifact.executable
                {
                    self.executable = Some(exe.clone().into_std_path_buf());
                }
                let script = kinds.contains(&TargetKind::CustomBuild);
                let name = match script {
                    true => format!("{}(build.rs)", package_name(&artifact.package_id.repr)),
                    false => artifact.target.name.clone(),
                };
                self.last_was_run = false;
                self.compiled.push(Unit {
                    package_id: artifact.package_id.repr,
                    fresh: artifact.fresh,
                    paths: artifact
                        .filenames
                        .into_iter()
                        .map(|f| f.into_std_path_buf())
                        .collect(),
                });
                Some((name, script))
            }
            Message::BuildScriptExecuted(script) => {
                let name = format!("{}(build)", package_name(&script.package_id.repr));
                self.last_was_run = true;
                self.build_script_runs.push(Unit {
                    package_id: script.package_id.repr,
                    fresh: true,
                    paths: vec![script.out_dir.into_std_path_buf()],
                });
                Some((name, false))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_come_from_both_id_forms() {
        assert_eq!(
            package_name("registry+https://github.com/rust-lang/crates.io-index#serde@1.0.228"),
            "serde"
        );
        assert_eq!(package_name("path+file:///work/app#0.1.0"), "app");
        assert_eq!(package_name("path+file:///work/x#app@0.1.0"), "app");
    }

    #[test]
    fn the_total_grows_with_build_scripts_and_never_falls_below_done() {
        let mut c = Counter {
            done: 0,
            estimate: 3,
            scripts: 0,
        };
        assert_eq!(c.finished("a(build.rs)".into(), true).total, 5);
        assert_eq!(c.finished("a(build)".into(), false).total, 5);
        for _ in 0..4 {
            let p = c.finished("x".into(), false);
            assert!(p.done < p.total, "{p:?}");
        }
        assert_eq!(
            c.last(),
            UnitProgress {
                done: 6,
                total: 6,
                unit: String::new()
            }
        );
        let mut unknown = Counter {
            done: 0,
            estimate: 0,
            scripts: 0,
        };
        assert_eq!(unknown.finished("a".into(), false).total, 2);
    }
}
