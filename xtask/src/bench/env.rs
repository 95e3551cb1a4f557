//! The build-environment scenarios: the same project built inside an environment image (made
//! with `tests/fixtures/build-env/make.sh`, the way the tests make it) next to the host build of
//! the same run, as ratios to it.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Bench, copy_tree, edit, imgbuild_with, secs, timed};

/// The host build's figures of this run that the environment build is compared with.
pub(super) struct HostFigures {
    pub(super) cold: Duration,
    pub(super) noop: Duration,
    pub(super) app: Duration,
}

struct EnvRow {
    scenario: &'static str,
    env: Duration,
    host: Option<Duration>,
    target: &'static str,
    limit: Option<f64>,
}

/// Makes the environment image (not timed), then times its one-time import and unpack, a cold
/// build, no-op rebuilds and app-only changes; prints the table; whether every target was met.
pub(super) fn environment(bench: &Bench, root: &Path, host: &HostFigures) -> Result<bool, String> {
    eprintln!("==> making the build-environment image (mmdebstrap; not timed)");
    let layout = bench.work.join("env-image");
    let started = Instant::now();
    timed(
        &bench.work,
        Path::new("bash"),
        &[
            root.join("tests/fixtures/build-env/make.sh").to_str().unwrap_or_default(),
            layout.to_str().unwrap_or_default(),
        ],
        &[],
    )
    .map_err(|e| format!("{e}\n(the environment scenarios need mmdebstrap and bubblewrap: apt-get install mmdebstrap bubblewrap)"))?;
    eprintln!("    made in {}", secs(started.elapsed()));
    let reference = format!("oci:{}:latest", layout.display());
    let env_args = ["--build-env", reference.as_str()];
    let cache = bench.work.join("env-cache");
    let dir = bench.work.join("env-first");
    copy_tree(&bench.project.dir, &dir)?;

    eprintln!("==> environment: import and unpack (once per digest)");
    let cache_env = [("IMGBUILD_CACHE_DIR", cache.as_path())];
    let (unpack, _) = timed(
        &dir,
        &bench.img,
        &["plan", "--build-env", &reference],
        &cache_env,
    )?;
    eprintln!("==> environment: cold build");
    let cold = imgbuild_with(&bench.img, &dir, &cache, &env_args)?;
    eprintln!("==> environment: no-op (median of 5)");
    let mut noops = (0..5)
        .map(|_| imgbuild_with(&bench.img, &dir, &cache, &env_args).map(|r| r.time))
        .collect::<Result<Vec<_>, _>>()?;
    noops.sort();
    eprintln!("==> environment: app-only change (median of 3)");
    let lines = [
        "Hello, {name}!",
        "Hey there, {name}!",
        "Yo there, {name}!",
        "Hi there, {name}!",
    ];
    let mut apps = Vec::new();
    for step in lines.windows(2) {
        edit(&dir.join("src/main.rs"), step[0], step[1])?;
        let run = imgbuild_with(&bench.img, &dir, &cache, &env_args)?;
        if run.compiled != 0 {
            return Err(format!(
                "the app-only change in the environment compiled {} dependency units",
                run.compiled
            ));
        }
        apps.push(run.time);
    }
    apps.sort();
    let rows = [
        EnvRow {
            scenario: "import + unpack (once)",
            env: unpack,
            host: None,
            target: "-",
            limit: None,
        },
        EnvRow {
            scenario: "cold build",
            env: cold.time,
            host: Some(host.cold),
            target: "<= 1.05x host",
            limit: Some(1.05),
        },
        EnvRow {
            scenario: "no-op (median of 5)",
            env: noops[2],
            host: Some(host.noop),
            target: "< 0.15 s",
            limit: None,
        },
        EnvRow {
            scenario: "app-only change (median of 3)",
            env: apps[1],
            host: Some(host.app),
            target: "<= 1.05x host",
            limit: Some(1.05),
        },
    ];
    Ok(print(&reference, &rows))
}

fn print(reference: &str, rows: &[EnvRow]) -> bool {
    println!();
    println!("build environment {reference}: the same project, compiled inside it (bubblewrap)");
    println!(
        "{:<30} {:>10} {:>10} {:>7}  target",
        "scenario", "env", "host", "ratio"
    );
    let mut all_met = true;
    for r in rows {
        let ratio = r.host.map(|h| r.env.as_secs_f64() / h.as_secs_f64());
        let met = match (r.limit, ratio) {
            (Some(limit), Some(ratio)) => ratio <= limit,
            _ if r.scenario.starts_with("no-op") => r.env < Duration::from_millis(150),
            _ => true,
        };
        all_met &= met;
        println!(
            "{:<30} {:>10} {:>10} {:>7}  {}{}",
            r.scenario,
            secs(r.env),
            r.host.map(secs).unwrap_or_else(|| "-".into()),
            ratio
                .map(|x| format!("{x:.2}x"))
                .unwrap_or_else(|| "-".into()),
            if met { "" } else { "MISSED: " },
            r.target
        );
    }
    all_met
}
