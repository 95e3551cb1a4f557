//! The network sandbox of the compile step: bubblewrap, else unshare, probed once by running
//! `true` in a new network namespace.
//!
//! Starts programs (the probe); `compile` runs cargo behind the sandbox's command prefix.

#![allow(clippy::disallowed_methods)] // part of `run`, the one place that starts processes

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::find_program;

/// How the compile step is kept from the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// `bwrap --unshare-net`: a new, empty network namespace.
    Bubblewrap(PathBuf),
    /// `unshare --net` (with `--map-root-user` when not root).
    Unshare(PathBuf),
    /// No way to isolate here; the reason, for the user.
    Unavailable(String),
}

impl Sandbox {
    /// A short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Sandbox::Bubblewrap(_) => "bubblewrap",
            Sandbox::Unshare(_) => "unshare",
            Sandbox::Unavailable(_) => "none",
        }
    }

    /// The command prefix that runs a program without network.
    pub(super) fn prefix(&self) -> Option<(PathBuf, Vec<&'static str>)> {
        match self {
            Sandbox::Bubblewrap(p) => Some((
                p.clone(),
                vec![
                    "--unshare-net",
                    "--dev-bind",
                    "/",
                    "/",
                    "--die-with-parent",
                    "--",
                ],
            )),
            Sandbox::Unshare(p) => {
                let root = is_root();
                let mut args = vec!["--net"];
                if !root {
                    args.push("--map-root-user");
                }
                args.push("--");
                Some((p.clone(), args))
            }
            Sandbox::Unavailable(_) => None,
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Finds a way to run the compile step without network: bubblewrap, else unshare. Each is
/// tried once (`true` in a new network namespace); user namespaces are often disabled in CI
/// containers and on recent Ubuntu, so failure is an answer, not an error.
pub fn probe_sandbox() -> Sandbox {
    let mut reasons = Vec::new();
    for (name, make) in [
        ("bwrap", Sandbox::Bubblewrap as fn(PathBuf) -> Sandbox),
        ("unshare", Sandbox::Unshare as fn(PathBuf) -> Sandbox),
    ] {
        let Some(program) = find_program(name) else {
            reasons.push(format!("{name} is not installed"));
            continue;
        };
        let candidate = make(program);
        let Some((prefix, args)) = candidate.prefix() else {
            continue;
        };
        let out = Command::new(&prefix)
            .args(&args)
            .arg("true")
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => return candidate,
            Ok(o) => reasons.push(format!(
                "{name} cannot create a network namespace ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => reasons.push(format!("{name} could not start ({e})")),
        }
    }
    Sandbox::Unavailable(reasons.join("; "))
}
