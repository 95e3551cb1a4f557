//! What the host machine builds with besides rustc: the C compiler, the linker behind it and
//! the C library. Runs `cc --version`, `cc -dumpmachine`, `cc -print-prog-name=ld`,
//! `ld --version` and `getconf GNU_LIBC_VERSION`.
//!
//! These become dependency-key lines (see [`crate::plan::KeyInputs::machine`]): a build
//! script's C code compiled by another compiler, or linked against another glibc, must not be
//! restored from a shared cache as if it were the same.

#![allow(clippy::disallowed_methods)] // part of `run`, the one place that starts processes

use std::ffi::OsString;
use std::process::{Command, Stdio};

/// How the caller's environment names the tools (read by the caller from its environment
/// snapshot, so that this module does not read the process environment itself).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct MachineTools {
    /// The C compiler cc-rs would use for the host: `CC_<triple>`, `HOST_CC` or `CC`; `None`:
    /// `cc`.
    pub cc: Option<OsString>,
    /// The linker rustc is told to use (`CARGO_TARGET_<TRIPLE>_LINKER`); `None`: rustc's
    /// default, `cc`.
    pub linker: Option<OsString>,
}

/// The variable that names cargo's linker for `triple`: `CARGO_TARGET_<TRIPLE>_LINKER`.
pub fn linker_var(triple: &str) -> String {
    format!(
        "CARGO_TARGET_{}_LINKER",
        triple.to_uppercase().replace(['-', '.'], "_")
    )
}

impl MachineTools {
    /// The tools named by `get` (a lookup into the caller's environment) for `triple`, in the
    /// order cc-rs and cargo read them.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>, triple: &str) -> Self {
        let cc = [
            format!("CC_{triple}"),
            format!("CC_{}", triple.replace('-', "_")),
            "HOST_CC".to_string(),
            "CC".to_string(),
        ]
        .iter()
        .find_map(|name| get(name).filter(|v| !v.is_empty()))
        .map(OsString::from);
        let linker = get(&linker_var(triple))
            .filter(|v| !v.is_empty())
            .map(OsString::from);
        Self { cc, linker }
    }
}

/// The first non-empty line a program prints on stdout for `args`, or `None` when it cannot
/// run or fails.
fn first_line(program: &OsString, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// The version line of the linker a compiler driver (`cc`, `clang`) runs, or of `program`
/// itself when it is not a driver (`ld.lld`, `mold`).
fn linker_version(program: &OsString) -> Option<String> {
    first_line(program, &["-print-prog-name=ld"])
        .and_then(|ld| first_line(&ld.into(), &["--version"]))
        .or_else(|| first_line(program, &["--version"]))
}

/// The machine's toolchain as key lines (`machine cc …`, `machine cc-target …`,
/// `machine linker …`, `machine libc …`); a tool that is missing is named as `none`, which is
/// itself a fact about the machine. The probes run in parallel.
pub fn machine_lines(tools: &MachineTools) -> Vec<String> {
    let cc = tools.cc.clone().unwrap_or_else(|| "cc".into());
    let linker = tools.linker.clone().unwrap_or_else(|| "cc".into());
    let name = |p: &OsString| p.to_string_lossy().into_owned();
    let none = || "none".to_string();
    let (version, target, ld, libc) = std::thread::scope(|s| {
        let version = s.spawn(|| first_line(&cc, &["--version"]));
        let target = s.spawn(|| first_line(&cc, &["-dumpmachine"]));
        let ld = s.spawn(|| linker_version(&linker));
        let libc = first_line(&"getconf".into(), &["GNU_LIBC_VERSION"]);
        let join = |h: std::thread::ScopedJoinHandle<'_, Option<String>>| h.join().ok().flatten();
        (join(version), join(target), join(ld), libc)
    });
    vec![
        format!("machine cc {}: {}", name(&cc), version.unwrap_or_else(none)),
        format!("machine cc-target {}", target.unwrap_or_else(none)),
        format!(
            "machine linker {}: {}",
            name(&linker),
            ld.unwrap_or_else(none)
        ),
        format!("machine libc {}", libc.unwrap_or_else(none)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_read_in_cc_rs_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let t = "x86_64-unknown-linux-gnu";
        let tools = MachineTools::from_env(&env(&[("CC", "gcc"), ("HOST_CC", "clang")]), t);
        assert_eq!(tools.cc.as_deref(), Some("clang".as_ref()));
        let tools = MachineTools::from_env(
            &env(&[
                ("CC", "gcc"),
                ("CC_x86_64_unknown_linux_gnu", "cc-14"),
                ("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER", "clang"),
            ]),
            t,
        );
        assert_eq!(tools.cc.as_deref(), Some("cc-14".as_ref()));
        assert_eq!(tools.linker.as_deref(), Some("clang".as_ref()));
        let tools = MachineTools::from_env(&env(&[("CC", "")]), t);
        assert_eq!(tools.cc, None, "an empty CC is no CC");
    }

    #[test]
    fn a_missing_compiler_is_a_line_not_an_error() {
        let tools = MachineTools {
            cc: Some("/nonexistent/cc".into()),
            linker: Some("/nonexistent/ld".into()),
        };
        let lines = machine_lines(&tools);
        assert_eq!(lines[0], "machine cc /nonexistent/cc: none");
        assert_eq!(lines[1], "machine cc-target none");
        assert_eq!(lines[2], "machine linker /nonexistent/ld: none");
        assert!(lines[3].starts_with("machine libc "), "{lines:?}");
    }
}
