//! The rustc wrapper script cargo runs for imgbuild: it remaps the build's paths in compiled
//! output and adds a platform's target flags.
//!
//! Writes the script (once, atomically) into imgbuild's tools directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Toolchain, cargo_home};
use crate::{Error, Result};

/// Version of the wrapper script; bump when its text changes.
const WRAPPER_NAME: &str = "rustc-remap-v1.sh";

/// The wrapper appends `--remap-path-prefix` flags to real compilations only (not to cargo's
/// `rustc -vV` and `--print` probes), reading the paths from the environment so that the script
/// itself is the same for every project. Cargo does not fingerprint what a wrapper adds, unlike
/// RUSTFLAGS, so a target dir restored into another folder stays fresh.
const WRAPPER_SCRIPT: &str = r#"#!/bin/sh
# Written by imgbuild. Runs rustc with --remap-path-prefix for the build's paths, and with
# IMGBUILD_TARGET_FLAGS for the units cargo compiles for its --target (not build scripts).
if [ -n "$IMGBUILD_INNER_WRAPPER" ]; then
  set -- "$IMGBUILD_INNER_WRAPPER" "$@"
fi
case " $* " in
  *" --target "*)
    if [ -n "$IMGBUILD_TARGET_FLAGS" ]; then
      # The flags have no spaces of their own (-Ctarget-cpu=x86-64-v3): split on spaces.
      set -- "$@" $IMGBUILD_TARGET_FLAGS
    fi ;;
esac
case " $* " in
  *" --crate-name "*)
    exec "$@" \
      "--remap-path-prefix=$IMGBUILD_REMAP_WORKSPACE=/build/workspace" \
      "--remap-path-prefix=$IMGBUILD_REMAP_CARGO_HOME=/build/cargo" \
      "--remap-path-prefix=$IMGBUILD_REMAP_TARGET=/build/target" ;;
esac
exec "$@"
"#;

/// The rustc wrapper script every cargo command of imgbuild runs with. It remaps the build's
/// paths in compiled output ([`Wrapper`]); using it for `cargo metadata` and `cargo tree` as
/// well keeps cargo's cached compiler probes (`target/.rustc_info.json`, keyed by the wrapper)
/// valid from one command to the next, instead of re-probing rustc three times per command.
#[derive(Debug, Clone)]
pub struct WrapperScript(PathBuf);

impl WrapperScript {
    /// Writes the script into `tools_dir` (once, atomically).
    pub fn install(tools_dir: &Path) -> Result<Self> {
        install_wrapper(tools_dir).map(Self)
    }

    /// The script's path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Sets the wrapper on `cmd`. The caller's own `RUSTC_WRAPPER` (sccache, say) runs inside
    /// it on the host; a build environment has only its own tools, so there it is left out.
    pub(super) fn apply(&self, cmd: &mut Command, toolchain: &Toolchain) {
        let inner = std::env::var_os("RUSTC_WRAPPER").filter(|w| !w.is_empty());
        if let Some(inner) = inner.filter(|_| !toolchain.is_environment()) {
            cmd.env("IMGBUILD_INNER_WRAPPER", inner);
        } else {
            cmd.env_remove("IMGBUILD_INNER_WRAPPER");
        }
        cmd.env("RUSTC_WRAPPER", &self.0);
    }
}

/// The wrapper script with the paths it remaps for one workspace.
#[derive(Debug, Clone)]
pub struct Wrapper {
    script: WrapperScript,
    workspace_root: PathBuf,
    build_dir: PathBuf,
    target_flags: Vec<String>,
}

impl Wrapper {
    /// The wrapper for a workspace and its build directory.
    pub fn new(script: WrapperScript, workspace_root: &Path, build_dir: &Path) -> Self {
        Self {
            script,
            workspace_root: workspace_root.to_path_buf(),
            build_dir: build_dir.to_path_buf(),
            target_flags: Vec::new(),
        }
    }

    /// Adds rustc flags for the units of a `--target` build (not its build scripts or proc
    /// macros), e.g. `-Ctarget-cpu=x86-64-v3`. Cargo does not see them, so a build with
    /// flags needs a target directory of its own.
    pub fn with_target_flags(mut self, flags: Vec<String>) -> Self {
        self.target_flags = flags;
        self
    }

    pub(super) fn apply(&self, cmd: &mut Command, toolchain: &Toolchain) {
        self.script.apply(cmd, toolchain);
        cmd.env("IMGBUILD_REMAP_WORKSPACE", &self.workspace_root)
            .env("IMGBUILD_REMAP_CARGO_HOME", cargo_home())
            .env("IMGBUILD_REMAP_TARGET", &self.build_dir)
            .env("IMGBUILD_TARGET_FLAGS", self.target_flags.join(" "));
    }
}

/// Writes the rustc wrapper into `dir` (atomically, once) and returns its path.
fn install_wrapper(dir: &Path) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(WRAPPER_NAME);
    if std::fs::read(&path).is_ok_and(|b| b == WRAPPER_SCRIPT.as_bytes()) {
        return Ok(path);
    }
    let io = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io {
            action,
            path: p,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io("creating directory", dir))?;
    let mut tmp = tempfile_in(dir)?;
    tmp.0
        .write_all(WRAPPER_SCRIPT.as_bytes())
        .map_err(io("writing", &tmp.1))?;
    tmp.0
        .set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(io("setting permissions of", &tmp.1))?;
    drop(tmp.0);
    std::fs::rename(&tmp.1, &path).map_err(io("renaming into", &path))?;
    Ok(path)
}

fn tempfile_in(dir: &Path) -> Result<(std::fs::File, PathBuf)> {
    let path = dir.join(format!(".tmp-{}-{}", std::process::id(), WRAPPER_NAME));
    let file = std::fs::File::create(&path).map_err(|source| Error::Io {
        action: "creating",
        path: path.clone(),
        source,
    })?;
    Ok((file, path))
}
