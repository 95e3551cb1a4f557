//! `imgbuild cache ls` and `imgbuild cache prune`: the dependency cache in the local store.

use std::io::Write;

use anyhow::{Context, Result};

use crate::args::{CacheCommand, CheckArgs, MessageFormat, PruneArgs, StoreArgs};
use crate::human::human_size;

fn ago(seconds: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match now.saturating_sub(seconds) {
        s if s < 120 => format!("{s}s ago"),
        s if s < 2 * 3600 => format!("{}m ago", s / 60),
        s if s < 2 * 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

pub(crate) fn run_cache(command: CacheCommand) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        CacheCommand::Ls(args) => ls(args, &mut out),
        CacheCommand::Prune(args) => prune(args, &mut out),
        CacheCommand::Check(args) => check(args, &mut out),
    }
}

/// `cache ls`.
fn ls(args: StoreArgs, out: &mut impl Write) -> Result<()> {
    let dir = args.cache_dir.unwrap_or_else(imgbuild::default_cache_dir);
    let listing = imgbuild::store::list(&dir.into())?;
    match args.message_format {
        MessageFormat::Json => writeln!(out, "{}", serde_json::to_string(&listing)?)?,
        MessageFormat::Human => {
            writeln!(
                out,
                "{:<12}  {:<28} {:>6} {:>6} {:>10}  LAST USED",
                "KEY", "BINARY", "LAYERS", "FILES", "SIZE"
            )?;
            for e in &listing.entries {
                writeln!(
                    out,
                    "{:<12}  {:<28} {:>6} {:>6} {:>10}  {}",
                    &e.key[..e.key.len().min(12)],
                    e.binary,
                    e.layers,
                    e.files,
                    human_size(e.size),
                    ago(e.last_used)
                )?;
            }
            writeln!(
                out,
                "{} entries; the store (entries and images, shared blobs once) holds {}",
                listing.entries.len(),
                human_size(listing.store_size)
            )?;
        }
    }
    Ok(())
}

/// `cache prune --cache-repo REF`.
fn prune_remote(
    args: &PruneArgs,
    repository: &str,
    older_than: Option<std::time::Duration>,
    out: &mut impl Write,
) -> Result<()> {
    let reference = imgbuild_registry::Reference::parse(repository).context("--cache-repo")?;
    let mut registry = imgbuild::RegistryOptions::default();
    registry.insecure = args.insecure_registry.clone();
    let mut policy = imgbuild::store::RemotePolicy::default();
    policy.older_than = older_than;
    policy.keep_latest = args.keep_latest;
    let report = imgbuild::store::prune_remote(&reference, &registry, policy, args.dry_run)?;
    match args.store.message_format {
        MessageFormat::Json => writeln!(out, "{}", serde_json::to_string(&report)?)?,
        MessageFormat::Human => {
            let verb = if report.dry_run {
                "would remove"
            } else {
                "removed"
            };
            for e in &report.removed {
                let made = e.created.map_or_else(|| "date unknown".to_string(), ago);
                let binary = e.binary.as_deref().unwrap_or("-");
                writeln!(out, "{verb} {} ({binary}, made {made})", e.tags.join(" + "))?;
            }
            writeln!(
                out,
                "{} entries {verb}, {} kept, {} manifests deleted from {}{}",
                report.removed.len(),
                report.kept,
                report.manifests_deleted,
                report.repository,
                if report.dry_run {
                    " (dry run)"
                } else {
                    "; the registry's garbage collection frees their blobs"
                }
            )?;
        }
    }
    Ok(())
}

/// `cache prune`.
fn prune(args: PruneArgs, out: &mut impl Write) -> Result<()> {
    if let Some(repository) = args.cache_repo.clone() {
        let older_than = match &args.older_than {
            Some(text) => Some(imgbuild::store::parse_duration(text).with_context(|| {
                format!(
                    "--older-than {text:?}: expected a number and a unit (s, m, h, d, w), e.g. 30d"
                )
            })?),
            None if args.keep_latest.is_none() => Some(std::time::Duration::from_secs(30 * 86_400)),
            None => None,
        };
        return prune_remote(&args, &repository, older_than, out);
    }
    let older_than = match &args.older_than {
        Some(text) => Some(imgbuild::store::parse_duration(text).with_context(|| {
            format!("--older-than {text:?}: expected a number and a unit (s, m, h, d, w), e.g. 30d")
        })?),
        None if args.max_size.is_none() && !args.all => {
            Some(std::time::Duration::from_secs(30 * 86_400))
        }
        None => None,
    };
    let max_size = match &args.max_size {
        Some(text) => Some(imgbuild::store::parse_size(text).with_context(|| {
            format!("--max-size {text:?}: expected a whole number with an optional unit (K, M, G, T), e.g. 10G")
        })?),
        None if args.all => Some(0),
        None => None,
    };
    let dir = args
        .store
        .cache_dir
        .unwrap_or_else(imgbuild::default_cache_dir);
    let mut policy = imgbuild::store::PrunePolicy::default();
    policy.older_than = older_than;
    policy.max_size = max_size;
    let report = imgbuild::store::prune(&dir.into(), policy)?;
    match args.store.message_format {
        MessageFormat::Json => writeln!(out, "{}", serde_json::to_string(&report)?)?,
        MessageFormat::Human => {
            for key in &report.removed {
                writeln!(out, "removed {key}")?;
            }
            writeln!(
                out,
                "{} entries removed, {} blobs deleted, {} freed; the store holds {}",
                report.removed.len(),
                report.blobs_deleted,
                human_size(report.bytes_freed),
                human_size(report.store_size)
            )?;
        }
    }
    Ok(())
}

/// `cache check [--repair]`.
fn check(args: CheckArgs, out: &mut impl Write) -> Result<()> {
    let dir = args
        .store
        .cache_dir
        .unwrap_or_else(imgbuild::default_cache_dir);
    let report = imgbuild::store::check(&dir.into(), args.repair)?;
    match args.store.message_format {
        MessageFormat::Json => writeln!(out, "{}", serde_json::to_string(&report)?)?,
        MessageFormat::Human => {
            for p in &report.problems {
                let verb = if p.repaired { "repaired" } else { "problem" };
                writeln!(out, "{verb}: {}", p.what)?;
            }
            for path in &report.leftovers {
                writeln!(out, "leftover: {}", path.display())?;
            }
            writeln!(
                out,
                "checked {} blobs and {} tags: {} problem(s), {} repaired; {} leftover(s)",
                report.blobs,
                report.tags,
                report.problems.len(),
                report.problems.iter().filter(|p| p.repaired).count(),
                report.leftovers.len()
            )?;
        }
    }
    if !report.is_sound() {
        anyhow::bail!(
            "the store has problems (listed above); `imgbuild cache check --repair` removes what cannot be trusted"
        );
    }
    Ok(())
}
