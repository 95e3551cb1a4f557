//! Where cargo and rustc run: the host's own, or a build environment's root filesystem entered
//! with bubblewrap. Reads the environment root's top-level entries to lay out the sandbox.
//!
//! Inside an environment the root filesystem is the environment's, read-only; the host
//! directories a build needs (the workspace, the target directory, cargo's home, imgbuild's
//! private directories) are bound at the **same paths**, so no path is ever translated:
//! cargo's JSON messages, dep-info files and the rustc wrapper's remapping all name the paths
//! the host sees. `/proc`, `/dev` and a fresh `/tmp` are the sandbox's own.

#![allow(clippy::disallowed_methods)] // part of `run`, the one place that starts processes

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// A program of the Rust toolchain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `cargo` (`$CARGO` on the host).
    Cargo,
    /// `rustc` (`$RUSTC` on the host).
    Rustc,
    /// binutils' `objcopy` (`$OBJCOPY` on the host): what ships the binary (debug info split
    /// off, audit data added) after the link.
    Objcopy,
}

impl Program {
    /// The program's name inside an environment (and on the host's `PATH`).
    pub fn name(self) -> &'static str {
        match self {
            Program::Cargo => "cargo",
            Program::Rustc => "rustc",
            Program::Objcopy => "objcopy",
        }
    }
}

/// Whether a command may reach the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// A new, empty network namespace (inside an environment); on the host, the caller's
    /// [`super::Sandbox`] decides.
    Off,
    /// The host's network (downloads, `--allow-network`).
    On,
}

/// Where the toolchain runs.
#[derive(Debug, Clone, Default)]
pub enum Toolchain {
    /// The host's `cargo` and `rustc`, found on `PATH` (or named by `$CARGO`, `$RUSTC`), with
    /// the caller's environment.
    #[default]
    Host,
    /// A build environment's root filesystem, entered with bubblewrap.
    Environment(Box<EnvironmentRoot>),
}

impl Toolchain {
    /// A command running `program` with this toolchain. Inside an environment the command's
    /// environment is cleared and set to the environment's (see [`EnvironmentRoot::new`]);
    /// callers that set their own (the compile step) must start from
    /// [`Toolchain::base_env`].
    pub fn command(&self, program: Program, network: Network) -> Command {
        match self {
            Toolchain::Host => Command::new(host_program(program)),
            Toolchain::Environment(env) => env.command(program, network),
        }
    }

    /// The variables every command inside the environment starts from (`None` on the host,
    /// where commands inherit the caller's).
    pub fn base_env(&self) -> Option<&[(String, String)]> {
        match self {
            Toolchain::Host => None,
            Toolchain::Environment(env) => Some(&env.env),
        }
    }

    /// Whether this is a build environment.
    pub fn is_environment(&self) -> bool {
        matches!(self, Toolchain::Environment(_))
    }
}

fn host_program(program: Program) -> OsString {
    match program {
        Program::Cargo => std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
        Program::Rustc => std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()),
        Program::Objcopy => std::env::var_os("OBJCOPY").unwrap_or_else(|| "objcopy".into()),
    }
}

/// A build environment's root filesystem and how commands enter it.
#[derive(Debug, Clone)]
pub struct EnvironmentRoot {
    bwrap: PathBuf,
    root: PathBuf,
    env: Vec<(String, String)>,
    /// bubblewrap's mount arguments, computed once.
    mounts: Vec<OsString>,
    resolv_conf: bool,
}

/// The caller's proxy settings, carried into commands that may use the network.
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// Where the caller's CA bundle is bound for commands with network.
const CA_INSIDE: &str = "/tmp/.imgbuild-ca-bundle.pem";

/// The CA bundle the caller's downloads trust: `CARGO_HTTP_CAINFO`, else `SSL_CERT_FILE`,
/// else Debian's bundle when the host has one.
fn host_ca_bundle() -> Option<PathBuf> {
    ["CARGO_HTTP_CAINFO", "SSL_CERT_FILE"]
        .iter()
        .filter_map(|v| std::env::var_os(v).map(PathBuf::from))
        .chain([PathBuf::from("/etc/ssl/certs/ca-certificates.crt")])
        .find(|p| p.is_file())
}

/// Top-level directories the sandbox provides itself.
const OWN: &[&str] = &["proc", "dev", "tmp", "sys"];

impl EnvironmentRoot {
    /// An environment rooted at `root` (an unpacked image), entered with the bubblewrap at
    /// `bwrap`. `env` is what every command starts from (the image config's `Env`, then the
    /// caller's fixed values such as `CARGO_HOME`); `binds` are host directories bound
    /// read-write at the same path, `ro_binds` read-only.
    pub fn new(
        bwrap: &Path,
        root: &Path,
        env: Vec<(String, String)>,
        binds: &[PathBuf],
        ro_binds: &[PathBuf],
    ) -> Result<Self> {
        let all: Vec<&Path> = binds.iter().chain(ro_binds).map(PathBuf::as_path).collect();
        let mut mounts: Vec<OsString> = Vec::new();
        lay_out(root, Path::new("/"), &all, &mut mounts)?;
        for (flag, dest) in [("--proc", "/proc"), ("--dev", "/dev"), ("--tmpfs", "/tmp")] {
            mounts.extend([flag.into(), dest.into()]);
        }
        for (flag, list) in [("--bind", binds), ("--ro-bind", ro_binds)] {
            for path in list {
                mounts.extend([flag.into(), path.into(), path.into()]);
            }
        }
        Ok(Self {
            bwrap: bwrap.to_path_buf(),
            root: root.to_path_buf(),
            env,
            mounts,
            resolv_conf: root.join("etc/resolv.conf").is_file(),
        })
    }

    /// The root filesystem on the host.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn command(&self, program: Program, network: Network) -> Command {
        let mut cmd = Command::new(&self.bwrap);
        cmd.arg("--die-with-parent");
        if network == Network::Off {
            cmd.arg("--unshare-net");
        }
        cmd.args(&self.mounts);
        let ca = (network == Network::On).then(host_ca_bundle).flatten();
        if network == Network::On && self.resolv_conf {
            // The host's name servers, so that downloads resolve names.
            cmd.args(["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]);
        }
        if let Some(ca) = &ca {
            // Downloads trust what the caller trusts (a proxy's own CA, say), not only the
            // environment's bundle; the compile never sees it.
            cmd.arg("--ro-bind").arg(ca).arg(CA_INSIDE);
        }
        cmd.args(["--chdir", "/", "--"]);
        cmd.arg(program.name());
        cmd.env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        if ca.is_some() {
            cmd.env("CARGO_HTTP_CAINFO", CA_INSIDE)
                .env("SSL_CERT_FILE", CA_INSIDE);
        }
        if network == Network::On {
            for var in PROXY_VARS {
                if let Some(v) = std::env::var_os(var) {
                    cmd.env(var, v);
                }
            }
        }
        cmd
    }
}

/// bubblewrap arguments that show `root`'s entries at `at`, read-only. A directory that a
/// bind path goes through is recreated empty (`--dir`) and its entries laid out one by one,
/// so that the bind's mount point is made on the sandbox's own tmpfs and never in the
/// environment's files.
fn lay_out(root: &Path, at: &Path, binds: &[&Path], out: &mut Vec<OsString>) -> Result<()> {
    let dir = root.join(at.strip_prefix("/").unwrap_or(at));
    let io = |source| Error::Io {
        action: "reading the build environment's directory",
        path: dir.clone(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(io)?
        .collect::<std::io::Result<_>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if at == Path::new("/") && OWN.iter().any(|o| name == **o) {
            continue;
        }
        let dest = at.join(&name);
        if binds.iter().any(|b| *b == dest) {
            continue; // the bind takes this place
        }
        let host = entry.path();
        let meta = std::fs::symlink_metadata(&host).map_err(|source| Error::Io {
            action: "reading metadata of",
            path: host.clone(),
            source,
        })?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&host).map_err(|source| Error::Io {
                action: "reading the symbolic link",
                path: host.clone(),
                source,
            })?;
            out.extend(["--symlink".into(), target.into(), dest.into()]);
        } else if meta.is_dir() && binds.iter().any(|b| b.starts_with(&dest)) {
            out.extend(["--dir".into(), dest.clone().into()]);
            lay_out(root, &dest, binds, out)?;
        } else if meta.is_dir() || meta.is_file() {
            out.extend(["--ro-bind".into(), host.into(), dest.into()]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_go_through_recreated_directories_never_into_the_environment() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        for d in ["usr/bin", "home/user", "etc", "proc", "tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::fs::write(root.join("etc/hostname"), "env\n").unwrap();
        let env = EnvironmentRoot::new(
            Path::new("/usr/bin/bwrap"),
            &root,
            vec![],
            &[PathBuf::from("/home/user/project")],
            &[PathBuf::from("/var/cache/imgbuild/tools")],
        )
        .unwrap();
        let args: Vec<String> = env
            .mounts
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let r = |p: &str| root.join(p).to_string_lossy().into_owned();
        let expected: Vec<String> = [
            "--symlink",
            "usr/bin",
            "/bin",
            "--ro-bind",
            &r("etc"),
            "/etc",
            "--dir",
            "/home",
            "--dir",
            "/home/user",
            "--ro-bind",
            &r("usr"),
            "/usr",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--bind",
            "/home/user/project",
            "/home/user/project",
            "--ro-bind",
            "/var/cache/imgbuild/tools",
            "/var/cache/imgbuild/tools",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(args, expected);
    }
}
