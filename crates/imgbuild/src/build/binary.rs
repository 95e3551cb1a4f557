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
use imgbuild_cargo::units;

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

/// The binary as the image ships it.
#[derive(Debug, Clone)]
pub(crate) struct Shipped {
    pub(crate) executable: PathBuf,
    pub(crate) debuginfo: Option<DebugInfo>,
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
        .workspace
        .target_dir
        .join("imgbuild")
        .join(units::profile_dir_name(&cx.options.profile))
        .join(bin);
    std::fs::create_dir_all(&dir).map_err(crate::io_err("creating directory", &dir))?;
    let section_file = dir.join("dep-v0");
    if supply_options.audit_data {
        let bytes = supply::audit::section(&crates(cx, s))?;
        std::fs::write(&section_file, bytes).map_err(crate::io_err("writing", &section_file))?;
    }
    let debuginfo = match (split, facts.build_id) {
        (true, Some(build_id)) => {
            let path = dir.join(format!("{bin}.debug"));
            binutils::keep_only_debug(&cx.toolchain, linked, &path)?;
            Some(DebugInfo { build_id, path })
        }
        _ => None,
    };
    let staged = dir.join(format!(".{bin}.tmp"));
    let finish = Finish {
        strip_debug: debuginfo.is_some(),
        section: supply_options
            .audit_data
            .then_some((supply::audit::SECTION, section_file.as_path())),
    };
    binutils::finish(&cx.toolchain, linked, &staged, &finish)?;
    let executable = dir.join(bin);
    std::fs::rename(&staged, &executable).map_err(crate::io_err("renaming into", &executable))?;
    Ok(Shipped {
        executable,
        debuginfo,
    })
}
