//! The rebuild rows on the service: a no-op, and a one-line change of app code, each against
//! cargo's own in the warm checkout.

use std::time::Duration;

use super::{Baseline, Bench, ImgRun, Row, edit, median};

/// The app-code lines the change row goes through, in order: the copies start with the
/// first and end with the last (what the later scenarios expect).
const APP_LINES: [&str; 6] = [
    "Hello, {name}!",
    "Hey there, {name}!",
    "Yo there, {name}!",
    "Howdy there, {name}!",
    "Greetings there, {name}!",
    "Hi there, {name}!",
];

impl Bench {
    /// Five no-op rebuilds each: no compiler, the same digest.
    pub(super) fn noop(&self, base: &Baseline, warm: &ImgRun) -> Result<Row, String> {
        eprintln!("==> no-op");
        let mut noops: Vec<(Duration, bool)> = Vec::new();
        for _ in 0..5 {
            let r = self.imgbuild(&base.second, &self.cache)?;
            noops.push((r.time, r.digest == warm.digest && !r.ran_cargo));
        }
        noops.sort();
        let (noop, same) = noops[noops.len() / 2];
        let mut cargo_noops: Vec<Duration> = (0..5)
            .map(|_| self.cargo_build(&base.bare))
            .collect::<Result<_, _>>()?;
        cargo_noops.sort();
        Ok(Row {
            ratio: None,
            scenario: "no-op (median of 5)",
            imgbuild: noop,
            cargo: Some(cargo_noops[2]),
            target: "<= 0.06 s, same digest, no compiler".into(),
            met: noop <= Duration::from_millis(60) && noops.iter().all(|(_, s)| *s),
            note: format!("same digest and no compiler run: {same}"),
        })
    }

    /// One line of app code changes in both copies, five times; each time both tools rebuild
    /// one right after the other (which goes first alternates). The overhead is the median of
    /// the five differences: the compile alone varies by more than the target from one run
    /// to the next, and a pair's difference cancels most of that drift where a difference of
    /// medians does not.
    pub(super) fn app_change(&self, base: &Baseline, warm: &ImgRun) -> Result<Row, String> {
        eprintln!("==> app-only change (5 pairs)");
        edit(
            &base.second.join("src/main.rs"),
            "Hello there, {name}!",
            APP_LINES[0],
        )?;
        let (mut cargo_times, mut runs) = (Vec::new(), Vec::new());
        for (i, step) in APP_LINES.windows(2).enumerate() {
            for dir in [&base.bare, &base.second] {
                edit(&dir.join("src/main.rs"), step[0], step[1])?;
            }
            if i % 2 == 0 {
                cargo_times.push(self.cargo_build(&base.bare)?);
                runs.push(self.imgbuild(&base.second, &self.cache)?);
            } else {
                runs.push(self.imgbuild(&base.second, &self.cache)?);
                cargo_times.push(self.cargo_build(&base.bare)?);
            }
        }
        let times: Vec<Duration> = runs.iter().map(|r| r.time).collect();
        let mut differences: Vec<f64> = (times.iter().zip(&cargo_times))
            .map(|(i, c)| i.as_secs_f64() - c.as_secs_f64())
            .collect();
        differences.sort_by(f64::total_cmp);
        let overhead = differences[differences.len() / 2];
        let compiled: u64 = runs.iter().map(|r| r.compiled).sum();
        let changed = runs.iter().all(|r| r.digest != warm.digest && r.ran_cargo);
        let listed: Vec<String> = differences.iter().map(|d| format!("{d:+.2}")).collect();
        let outside: Vec<Duration> = runs.iter().filter_map(|r| r.outside_cargo).collect();
        let (img_median, cargo_median) = (median(times), median(cargo_times));
        let of_medians = img_median.as_secs_f64() - cargo_median.as_secs_f64();
        Ok(Row {
            ratio: None,
            scenario: "app-only change (5 pairs)",
            imgbuild: img_median,
            cargo: Some(cargo_median),
            target: "<= cargo + 0.10 s".into(),
            met: overhead <= 0.1 && compiled == 0 && changed,
            note: format!(
                "{compiled} dependency units compiled; {overhead:+.2} s over cargo (median of the pairs' differences {} s; difference of the medians {of_medians:+.2} s); imgbuild outside cargo's run {}",
                listed.join("/"),
                super::seconds(&outside),
            ),
        })
    }
}
