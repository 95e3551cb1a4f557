//! Stage `binary`: the binary the image ships, made from the one cargo linked — its debug
//! info split off into a separate file keyed by the GNU build-id (symbols stay, so backtraces
//! still name functions), and the dependency list added as the `.dep-v0` section
//! (`cargo auditable`'s format, which scanners read).
//!
//! Reads the linked binary; runs `objcopy` where the toolchain runs (through
//! `imgbuild_cargo::run::binutils`); writes under `target/imgbuild/`.

use std::path::{Path, PathBuf};

use goblin::elf::Elf;
use imgbuild_cargo::run::binutils::{self, Finish};

use crate::build::Setup;
use crate::build::compile::Compiled;
use crate::context::Context;
use crate::event::{Event, Reporter};
use crate::supply::{self, Crate};
use crate::{Error, Result};

/// The binary's debug info, split off.
#[derive(Debug, Clone)]
pub(crate) struct DebugInfo {
    /// The GNU build-id, lowercase hex.
    pub(crate) build_id: String,
    /// The `.debug` file.
    pub(crate) path: PathBuf,
}

/// The debug info being written in the background (compressing it is the slow part, and
/// nothing but the `attach` stage needs it, so the layers are made meanwhile).
#[derive(Debug)]
pub(crate) struct PendingDebugInfo {
    info: DebugInfo,
    /// `None` when the file was there already.
    job: Option<std::thread::JoinHandle<Result<()>>>,
}

impl PendingDebugInfo {
    /// Waits for the file.
    pub(crate) fn wait(self) -> Result<DebugInfo> {
        if let Some(job) = self.job {
            crate::threads::join_spawned(job)?;
        }
        Ok(self.info)
    }
}

/// The binary as the image ships it.
#[derive(Debug)]
pub(crate) struct Shipped {
    pub(crate) executable: PathBuf,
    pub(crate) debuginfo: Option<PendingDebugInfo>,
}

/// What the linked binary has.
struct ElfFacts {
    debug_sections: bool,
    build_id: Option<String>,
}

fn inspect(path: &Path) -> Result<ElfFacts> {
    let bytes = std::fs::read(path).map_err(crate::io_err("reading", path))?;
    let elf = Elf::parse(&bytes).map_err(|e| Error::Closure {
        binary: path.to_path_buf(),
        message: format!("not an ELF file: {e}"),
    })?;
    let debug_sections = elf.section_headers.iter().any(|h| {
        elf.shdr_strtab
            .get_at(h.sh_name)
            .is_some_and(|n| n.starts_with(".debug_") || n.starts_with(".zdebug_"))
    });
    let build_id = elf.iter_note_sections(&bytes, None).and_then(|notes| {
        notes
            .flatten()
            .find(|n| n.n_type == goblin::elf::note::NT_GNU_BUILD_ID && n.name == "GNU")
            .map(|n| {
                n.desc
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            })
    });
    Ok(ElfFacts {
        debug_sections,
        build_id,
    })
}

/// The tree's crates with Cargo.lock's checksums, sorted as the tree is.
pub(crate) fn crates(cx: &Context<'_>, s: &Setup) -> Vec<Crate> {
    cx.graph
        .packages(&s.tree, &cx.one().target.package.name)
        .into_iter()
        .map(|package| Crate {
            checksum: s
                .keys
                .lock()
                .get(&(package.name.clone(), package.version.clone()))
                .and_then(|l| l.checksum.clone()),
            package,
        })
        .collect()
}

/// Runs the stage.
pub(crate) fn binary(
    cx: &Context<'_>,
    s: &Setup,
    compiled: &Compiled,
    reporter: &dyn Reporter,
) -> Result<Shipped> {
    let linked = &compiled.outcome.executable;
    let supply_options = cx.options.supply;
    let facts = inspect(linked)?;
    let mut split = facts.debug_sections && !supply_options.keep_debuginfo;
    if split && facts.build_id.is_none() {
        reporter.report(&Event::Warning {
            message: format!(
                "{} has debug info but no GNU build-id, so the debug info stays in the image; link with `-C link-arg=-Wl,--build-id` to have it split off",
                linked.display()
            ),
        });
        split = false;
    }
    if !split && !supply_options.audit_data {
        return Ok(Shipped {
            executable: linked.clone(),
            debuginfo: None,
        });
    }
    let bin = &cx.one().target.bin;
    let dir = cx
        .profile_dir_in(&cx.workspace.target_dir.join("imgbuild"))
        .join(bin);
    std::fs::create_dir_all(&dir).map_err(crate::io_err("creating directory", &dir))?;
    let section = match supply_options.audit_data {
        true => Some(supply::audit::section(&crates(cx, s))?),
        false => None,
    };
    let debuginfo = match (split, facts.build_id) {
        (true, Some(build_id)) => Some(split_debuginfo(cx, linked, &dir, build_id)?),
        _ => None,
    };
    let executable = dir.join(bin);
    let stamp = stamp(linked, section.as_deref(), split)?;
    let stamp_file = dir.join(format!("{bin}.stamp"));
    let unchanged =
        executable.exists() && std::fs::read_to_string(&stamp_file).is_ok_and(|text| text == stamp);
    if !unchanged {
        ship(cx, linked, &dir, &executable, section.as_deref(), split)?;
        imgbuild_oci::layout::write_atomic(&dir, &format!("{bin}.stamp"), stamp.as_bytes())?;
    }
    Ok(Shipped {
        executable,
        debuginfo,
    })
}

/// What the shipped binary is made from: the linked binary (its size and time, which cargo
/// changes whenever it links), the section and whether debug info is stripped. The same stamp
/// means the shipped binary in place is the one this build would write.
fn stamp(linked: &Path, section: Option<&[u8]>, split: bool) -> Result<String> {
    let meta = std::fs::metadata(linked).map_err(crate::io_err("reading", linked))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let section = section.map_or_else(
        || "-".to_string(),
        |b| imgbuild_oci::digest::sha256(b).digest().to_string(),
    );
    Ok(format!(
        "linked={} size={} mtime={mtime} section={section} strip-debug={split}\n",
        linked.display(),
        meta.len()
    ))
}

/// Writes the shipped binary: `linked`, debug sections stripped when `split`, the section
/// added. Each build works in its own directory and renames its result into place, so two
/// builds of the same checkout never see each other's half-written files.
fn ship(
    cx: &Context<'_>,
    linked: &Path,
    dir: &Path,
    executable: &Path,
    section: Option<&[u8]>,
    split: bool,
) -> Result<()> {
    let work = tempfile::Builder::new()
        .prefix(".ship-")
        .tempdir_in(dir)
        .map_err(crate::io_err("creating a directory in", dir))?;
    let section_file = work.path().join("dep-v0");
    if let Some(bytes) = section {
        std::fs::write(&section_file, bytes).map_err(crate::io_err("writing", &section_file))?;
    }
    let staged = work.path().join("binary");
    let finish = Finish {
        strip_debug: split,
        section: section.map(|_| (supply::audit::SECTION, section_file.as_path())),
    };
    binutils::finish(&cx.toolchain, linked, &staged, &finish)?;
    rename(&staged, executable)
}

/// The debug file, named by the build-id (a hash of the linked binary, so a file of that name
/// is this binary's): reused when present, else written in the background.
fn split_debuginfo(
    cx: &Context<'_>,
    linked: &Path,
    dir: &Path,
    build_id: String,
) -> Result<PendingDebugInfo> {
    let path = dir.join(format!("{build_id}.debug"));
    let info = DebugInfo { build_id, path };
    if info.path.exists() {
        return Ok(PendingDebugInfo { info, job: None });
    }
    let staged = tempfile::Builder::new()
        .prefix(".debug-")
        .tempfile_in(dir)
        .map_err(crate::io_err("creating a file in", dir))?
        .into_temp_path();
    let (toolchain, linked, to) = (
        cx.toolchain.clone(),
        linked.to_path_buf(),
        info.path.clone(),
    );
    let job = std::thread::spawn(move || -> Result<()> {
        binutils::keep_only_debug(&toolchain, &linked, &staged)?;
        staged
            .persist(&to)
            .map_err(|e| crate::io_err("renaming into", &to)(e.error))?;
        forget_other_debug_files(&to);
        Ok(())
    });
    Ok(PendingDebugInfo {
        info,
        job: Some(job),
    })
}

/// Removes the debug files of earlier builds beside `kept` (one per build-id: without this
/// an edit-build loop would keep every one). A file that cannot be removed stays.
fn forget_other_debug_files(kept: &Path) {
    let Some(dir) = kept.parent() else { return };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path != kept && path.extension().is_some_and(|e| e == "debug") {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(crate::io_err("renaming into", to))
}
