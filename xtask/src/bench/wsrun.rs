//! One build of the generated workspace, by imgbuild (with what it compiled, from its events)
//! or by cargo: what the workspace rows and the far-registry row share.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::{Bench, timed, timed_events};

/// What an imgbuild run on the workspace compiled.
pub(super) struct Compiled {
    pub(super) time: Duration,
    pub(super) members: BTreeSet<String>,
    pub(super) dependencies: u64,
    pub(super) restored_units: u64,
    /// The wall time outside cargo's run: imgbuild's own.
    pub(super) outside_cargo: Option<Duration>,
}

pub(super) fn run_imgbuild(
    bench: &Bench,
    dir: &Path,
    cache: &Path,
    bin: &str,
    repo: &str,
) -> Result<Compiled, String> {
    let args = [
        "build",
        "--message-format",
        "json",
        "-p",
        bin,
        "--cache-repo",
        repo,
    ];
    let run = timed_events(dir, &bench.img, &args, &[("IMGBUILD_CACHE_DIR", cache)])?;
    let find = |reason: &str| run.at(reason).map_or(Value::Null, |(_, e)| e.clone());
    let compiled = find("compiled");
    Ok(Compiled {
        time: run.time,
        outside_cargo: run.outside_cargo(),
        members: compiled["members_compiled"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str())
                    .map(|m| m.trim_end_matches("@0.1.0").to_string())
                    .collect()
            })
            .unwrap_or_default(),
        dependencies: compiled["dependencies_compiled"].as_u64().unwrap_or(0),
        restored_units: find("units-restored")["restored"].as_u64().unwrap_or(0),
    })
}

pub(super) fn cargo_build(bench: &Bench, dir: &Path, bin: &str) -> Result<Duration, String> {
    Ok(timed(
        dir,
        &bench.cargo,
        &["build", "--release", "--locked", "-p", bin],
        &[],
    )?
    .0)
}
