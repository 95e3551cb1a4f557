//! binutils' `objcopy`, run where the toolchain runs (the host, or inside the build
//! environment, whose digest pins its version): the binary the image ships is the linked one
//! with its debug info moved to a separate file and the audit data added as a section.
//!
//! Starts processes; reads and writes the files it is given.

use std::path::Path;

use super::{Network, Program, Toolchain, checked_stdout};
use crate::Result;

/// What [`finish`] does to the binary.
#[derive(Debug, Clone, Copy, Default)]
pub struct Finish<'a> {
    /// Remove the DWARF sections (symbols stay, so backtraces still name functions).
    pub strip_debug: bool,
    /// Add a section: its name and the file holding its bytes (not loaded at run time).
    pub section: Option<(&'a str, &'a Path)>,
}

/// Writes the debug info of `exe` to `out`: an ELF file with only the debug sections and the
/// notes, the GNU build-id among them. The sections are zstd-compressed (binutils 2.40 and
/// later; about six times faster than zlib, and smaller; gdb 13 reads them), else
/// zlib-compressed by an older objcopy that does not know zstd.
pub fn keep_only_debug(toolchain: &Toolchain, exe: &Path, out: &Path) -> Result<()> {
    let purpose = "splitting the debug info off the binary (objcopy, from binutils: install it, or pass --keep-debuginfo)";
    let run = |compression: &str| {
        let mut cmd = toolchain.command(Program::Objcopy, Network::Off);
        cmd.arg("--only-keep-debug")
            .arg(format!("--compress-debug-sections={compression}"))
            .arg(exe)
            .arg(out);
        checked_stdout(&mut cmd, purpose)
    };
    match run("zstd") {
        Ok(_) => Ok(()),
        Err(crate::Error::Failed { stderr, .. }) if stderr.contains("zstd") => {
            run("zlib").map(drop)
        }
        Err(e) => Err(e),
    }
}

/// Writes `exe`, changed as `what` says, to `out`.
pub fn finish(toolchain: &Toolchain, exe: &Path, out: &Path, what: &Finish<'_>) -> Result<()> {
    let mut cmd = toolchain.command(Program::Objcopy, Network::Off);
    if what.strip_debug {
        cmd.arg("--strip-debug");
    }
    if let Some((name, file)) = what.section {
        let mut add = std::ffi::OsString::from(format!("{name}="));
        add.push(file);
        cmd.arg("--add-section")
            .arg(add)
            .arg("--set-section-flags")
            .arg(format!("{name}=noload,readonly"));
    }
    cmd.arg(exe).arg(out);
    checked_stdout(
        &mut cmd,
        "preparing the binary for the image (objcopy, from binutils: install it, or pass --keep-debuginfo and --no-audit-data)",
    )?;
    Ok(())
}
