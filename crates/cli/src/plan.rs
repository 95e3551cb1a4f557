//! `imgbuild plan`: each binary's dependency key and its inputs, or what changed since the last
//! build (`--explain`).

use std::io::Write;

use anyhow::{Context, Result};

use imgbuild::plan::{BinaryPlan, EntryChoice};

use crate::args::{MessageFormat, PlanArgs};

pub(crate) fn run_plan(args: PlanArgs) -> Result<()> {
    let format = args.selection.message_format;
    let mut options = args.selection.options();
    options.cache_repo = args
        .cache_repo
        .as_deref()
        .map(imgbuild::Reference::parse)
        .transpose()
        .context("--cache-repo")?;
    options.registry.insecure = args.insecure_registry.clone();
    let plans = imgbuild::plan::plan(&options, args.explain)?;
    let mut out = std::io::stdout().lock();
    for p in &plans {
        match format {
            MessageFormat::Json => writeln!(out, "{}", serde_json::to_string(p)?)?,
            MessageFormat::Human => write_human(&mut out, p, args.explain)?,
        }
    }
    Ok(())
}

/// One binary's plan for people: its dependency key with the key's inputs (or, with
/// `--explain`, what changed and where the build starts from), then its app key.
fn write_human(out: &mut impl Write, p: &BinaryPlan, explain: bool) -> Result<()> {
    writeln!(
        out,
        "{}/{} dependency-key {}",
        p.package, p.bin, p.dependency_key
    )?;
    match (&p.changes, explain) {
        (_, false) => {
            for line in &p.inputs {
                writeln!(out, "    {line}")?;
            }
        }
        (None, true) => writeln!(
            out,
            "    no earlier build of this binary is recorded in this cache"
        )?,
        (Some(changes), true) if changes.is_empty() => {
            writeln!(out, "    unchanged since the last build")?
        }
        (Some(changes), true) => {
            writeln!(out, "    changed since the last build:")?;
            for line in changes {
                writeln!(out, "    {line}")?;
            }
        }
    }
    if explain {
        write_entry(out, p.dependency_entry.as_ref())?;
    }
    let status = if p.app_hit {
        "hit: a build would compile nothing"
    } else {
        "miss"
    };
    match &p.app_key {
        Some(key) => writeln!(out, "{}/{} app-key {key} {status}", p.package, p.bin)?,
        None => writeln!(out, "{}/{} app-key (none yet) {status}", p.package, p.bin)?,
    }
    if let Some(changes) = &p.app_changes
        && !changes.is_empty()
        && !p.app_hit
    {
        writeln!(out, "    app inputs changed since the stored build:")?;
        for line in changes {
            writeln!(out, "    {line}")?;
        }
    }
    Ok(())
}

/// The dependency entry a build would start from (`--explain`).
fn write_entry(out: &mut impl Write, entry: Option<&EntryChoice>) -> Result<()> {
    match entry {
        Some(e) if e.exact && e.cache_repo.is_some() => writeln!(
            out,
            "    the cache repository has this key's entry: no dependency is compiled"
        )?,
        Some(e) if e.exact => writeln!(
            out,
            "    the store has this key's entry: no dependency is compiled"
        )?,
        Some(e) if e.cache_repo.is_some() => writeln!(
            out,
            "    a fresh runner starts from entry {} of {} in {}: it holds {} of the tree's {} packages",
            &e.key[..12],
            e.binary,
            e.cache_repo.as_deref().unwrap_or_default(),
            e.shared_packages,
            e.packages
        )?,
        Some(e) => writeln!(
            out,
            "    a build starts from entry {} of {}: it holds {} of the tree's {} packages",
            &e.key[..12],
            e.binary,
            e.shared_packages,
            e.packages
        )?,
        None => writeln!(
            out,
            "    no entry in the store to start from: every dependency is compiled"
        )?,
    }
    Ok(())
}
