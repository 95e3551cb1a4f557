//! The leaf-change row again, with the cache repository made to answer like one across a
//! network ([`super::lag`]: 10 ms each way). On this machine's own registry a round trip is
//! free, so this row is where the requests a fresh runner makes show.

use std::path::Path;
use std::time::Duration;

use super::lag::Lag;
use super::wsrun::{cargo_build, run_imgbuild};
use super::{Bench, Row, copy_tree, edit, median, paired_ratio, ratios, seconds, secs};

/// How many pairs the row takes.
const RUNS: usize = 3;

/// The one-way delay: a 20 ms round trip, as from a CI runner to a registry in its region.
const ONE_WAY: Duration = Duration::from_millis(10);

/// Fresh runners with a one-line change in `app-a`, through a delayed `registry` (`host:port`)
/// to `repository`, against cargo's incremental rebuild in the warm checkout `bare`.
pub(super) fn leaf_change(
    bench: &Bench,
    (src, bare): (&Path, &Path),
    registry: &str,
    repository: &str,
) -> Result<Row, String> {
    eprintln!("==> ws fresh runner, leaf change, registry 20 ms away");
    let lag = Lag::start(registry, ONE_WAY)?;
    let repo = format!("{}/{repository}", lag.host);
    let (mut cargo_times, mut img_times, mut last) = (Vec::new(), Vec::new(), None);
    let mut outside = Vec::new();
    for k in 0..RUNS {
        let to = format!("println!(\"app-a{}", "~".repeat(k + 1));
        for dir in [src, bare] {
            edit(&dir.join("apps/app-a/src/main.rs"), "println!(\"app-a", &to)?;
        }
        cargo_times.push(cargo_build(bench, bare, "app-a")?);
        let runner = bench.work.join(format!("ws-far-runner-{k}"));
        copy_tree(src, &runner)?;
        let cache = bench.work.join(format!("ws-far-cache-{k}"));
        let run = run_imgbuild(bench, &runner, &cache, "app-a", &repo)?;
        img_times.push(run.time);
        outside.extend(run.outside_cargo);
        last = Some(run);
    }
    let run = last.expect("one run at least");
    let overheads: Vec<Duration> = img_times
        .iter()
        .zip(&cargo_times)
        .map(|(i, c)| i.saturating_sub(*c))
        .collect();
    Ok(Row {
        ratio: Some(paired_ratio(&img_times, &cargo_times)),
        scenario: "ws fresh runner, leaf, registry 20 ms away",
        imgbuild: median(img_times.clone()),
        cargo: Some(median(cargo_times.clone())),
        target: format!("- (reported; median of {RUNS} pairs)"),
        met: true,
        note: format!(
            "{} units restored, compiled {:?}; imgbuild over cargo: {} (median); pair ratios {}; runs: imgbuild {}, cargo {}; imgbuild outside cargo's run {}",
            run.restored_units,
            run.members,
            secs(median(overheads)),
            ratios(&img_times, &cargo_times),
            seconds(&img_times),
            seconds(&cargo_times),
            seconds(&outside)
        ),
    })
}
