//! The scenarios on fresh runners (through a local `docker-registry`) and on the hello
//! example, where imgbuild's fixed cost is clearest.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{Baseline, Bench, Row, copy_tree, edit, imgbuild, median, secs, timed, timed_events};
use crate::registry::LocalRegistry;

impl Bench {
    /// The commit built and pushed by one runner, then pushed by a fresh runner with an empty
    /// cache through the cache repository: nothing compiled, nothing uploaded.
    pub(super) fn fresh_runner_push(&self, base: &Baseline) -> Result<Vec<Row>, String> {
        eprintln!("==> same commit on a fresh runner: push through the cache repository");
        let registry = LocalRegistry::start(&self.work.join("registry"))?;
        let cache_repo = format!("{}/bench/cache", registry.host);
        let target = format!("{}/bench/app:v1", registry.host);
        // The runner that built the commit shares its image and record.
        let args = ["push", &target, "--cache-repo", &cache_repo];
        timed(
            &base.second,
            &self.img,
            &args,
            &[("IMGBUILD_CACHE_DIR", &self.cache)],
        )?;
        let fresh = self.checkout_like(base, "fresh-runner")?;
        let fresh_cache = self.work.join("cache-fresh-runner");
        let args = [&args[..], &["--message-format", "json"]].concat();
        let env = [("IMGBUILD_CACHE_DIR", fresh_cache.as_path())];
        let (push_time, push_out) = timed(&fresh, &self.img, &args, &env)?;
        let events: Vec<Value> = push_out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let hit = events
            .iter()
            .any(|e| e["reason"] == "app-cache" && e["hit"] == true && e["from_registry"] == true);
        let compiled = events.iter().any(|e| e["reason"] == "compiled");
        let uploaded = events
            .iter()
            .find(|e| e["reason"] == "pushed")
            .and_then(|e| e["uploaded"].as_u64())
            .unwrap_or(u64::MAX);
        let ratio = push_time.as_secs_f64() / base.cargo_cold.as_secs_f64();
        let push = Row {
            ratio: None,
            scenario: "same commit, fresh runner, push",
            imgbuild: push_time,
            cargo: Some(base.cargo_cold),
            target: "<= 0.05x cold cargo".into(),
            met: ratio <= 0.05 && hit && !compiled && uploaded == 0,
            note: format!(
                "hit from registry: {hit}, compiler ran: {compiled}, blobs uploaded: {uploaded}"
            ),
        };
        // A new commit on another fresh runner: the dependency entry (the largest entry of
        // the benchmark) is pulled, several layers at a time, and restored.
        eprintln!("==> new commit on a fresh runner: the dependency entry from the registry");
        // The runner that built the commit shares its dependency entry too (a build that
        // compiles, with --cache-repo, pushes the entry the cache repository lacks).
        let share = ["build", "--rebuild", "--cache-repo", &cache_repo];
        timed(
            &base.second,
            &self.img,
            &share,
            &[("IMGBUILD_CACHE_DIR", &self.cache)],
        )?;
        let restore = self.restore_row(base, &cache_repo)?;
        let new_project = self.new_project(base, &cache_repo)?;
        Ok(vec![push, restore, new_project])
    }

    /// A new commit on a fresh runner: the service's dependency entry (the largest entry of
    /// the benchmark) pulled, several layers at a time, and restored.
    fn restore_row(&self, base: &Baseline, cache_repo: &str) -> Result<Row, String> {
        let restore = self.copy("fresh-runner-restore")?;
        std::fs::copy(base.second.join("Cargo.lock"), restore.join("Cargo.lock"))
            .map_err(|e| e.to_string())?;
        edit(
            &restore.join("src/main.rs"),
            "Hello, {name}!",
            "Howdy, {name}!",
        )?;
        let run = self.fresh_runner(&restore, "cache-fresh-runner-restore", cache_repo)?;
        let (time, at) = (run.time, |reason: &str| run.at(reason));
        let hit = at("cache-lookup").is_some_and(|(_, e)| e["hit"] == true);
        let compiled = at("compiled").map_or(u64::MAX, |(_, e)| {
            e["dependencies_compiled"].as_u64().unwrap_or(u64::MAX)
        });
        // The restore: from the app cache's miss (the dependency lookup starts) to the entry
        // in place.
        let (restore_time, restored) = match (at("app-cache"), at("cache-restored")) {
            (Some((from, _)), Some((to, e))) => (to.saturating_sub(*from), e.clone()),
            _ => return Err("no app-cache or cache-restored event".into()),
        };
        let ratio = time.as_secs_f64() / base.cargo_cold.as_secs_f64();
        Ok(Row {
            ratio: None,
            scenario: "new commit, fresh runner (registry)",
            imgbuild: time,
            cargo: Some(base.cargo_cold),
            target: "<= 0.20x cold cargo".into(),
            met: ratio <= 0.2 && hit && compiled == 0,
            note: format!(
                "hit={hit}, {compiled} dependency units compiled; entry pulled and restored in {} ({} files, {:.1} MiB written, {} unpacked as they downloaded)",
                secs(restore_time),
                restored["restored"],
                restored["bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
                restored["while_downloading"],
            ),
        })
    }

    /// A fresh runner's `imgbuild build` of `dir` through `cache_repo`, with the new, empty
    /// cache directory `cache` under the work directory: its time and events.
    fn fresh_runner(
        &self,
        dir: &Path,
        cache: &str,
        cache_repo: &str,
    ) -> Result<super::Timed, String> {
        let cache = self.work.join(cache);
        let args = [
            "build",
            "--message-format",
            "json",
            "--cache-repo",
            cache_repo,
        ];
        timed_events(
            dir,
            &self.img,
            &args,
            &[("IMGBUILD_CACHE_DIR", cache.as_path())],
        )
    }

    /// A new project of the same team on a fresh runner: the service's code and lockfile under
    /// another name, with one more dependency. No entry has its key, and it has no newest entry: the
    /// cache repository's index leads to the service's entry (every package but one shared),
    /// and cargo compiles the new package and the app. Against cargo's cold build of it.
    fn new_project(&self, base: &Baseline, cache_repo: &str) -> Result<Row, String> {
        eprintln!("==> a new project of the same team on a fresh runner");
        let named = |name: &str| -> Result<PathBuf, String> {
            let dir = self.copy(name)?;
            // The lockfile of the entry the repository has (the service's, bumped earlier).
            std::fs::copy(base.second.join("Cargo.lock"), dir.join("Cargo.lock"))
                .map_err(|e| e.to_string())?;
            edit(
                &dir.join("Cargo.toml"),
                "name = \"axum-service\"",
                "name = \"billing-service\"",
            )?;
            edit(
                &dir.join("Cargo.toml"),
                "serde_json = ",
                "hex = \"0.4\"\nserde_json = ",
            )?;
            edit(&dir.join("src/main.rs"), "Hello, {name}!", "Bill {name}!")?;
            // The lockfile keeps every version it has and gains `hex`.
            timed(&dir, &self.cargo, &["fetch"], &[])?;
            Ok(dir)
        };
        let bare = named("new-project-cargo")?;
        let cargo_cold = self.cargo_build(&bare)?;
        let dir = named("new-project")?;
        let run = self.fresh_runner(&dir, "cache-new-project", cache_repo)?;
        let (time, at) = (run.time, |reason: &str| run.at(reason));
        let nearest = at("cache-lookup").and_then(|(_, e)| e["nearest"].as_str().map(String::from));
        let compiled: Vec<String> = at("compiled")
            .and_then(|(_, e)| e["compiled_packages"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.as_str().map(String::from))
            .collect();
        let only_new = compiled.iter().all(|p| p.starts_with("hex@"));
        let ratio = time.as_secs_f64() / cargo_cold.as_secs_f64();
        Ok(Row {
            ratio: None,
            scenario: "new project (>80% shared), fresh runner",
            imgbuild: time,
            cargo: Some(cargo_cold),
            target: "<= 0.30x cargo cold".into(),
            met: ratio <= 0.3 && nearest.is_some() && only_new,
            note: format!(
                "started from entry {}; dependency packages compiled: {}",
                nearest.as_deref().map_or("none", |k| &k[..12.min(k.len())]),
                compiled.join(", ")
            ),
        })
    }

    /// No-op and app-only change on examples/hello, where imgbuild's fixed cost is clearest.
    pub(super) fn hello(&self, root: &Path) -> Result<Vec<Row>, String> {
        eprintln!("==> hello: no-op (median of 5) and app-only change (median of 3)");
        let project = root.join("examples/hello");
        let (img_dir, bare) = (self.work.join("hello-img"), self.work.join("hello-cargo"));
        copy_tree(&project, &img_dir)?;
        copy_tree(&project, &bare)?;
        let cache = self.work.join("cache-hello");
        let first = imgbuild(&self.img, &img_dir, &cache)?;
        self.cargo_build(&bare)?;
        let mut noops = Vec::new();
        let mut all_noop = true;
        for _ in 0..5 {
            let r = imgbuild(&self.img, &img_dir, &cache)?;
            all_noop &= !r.ran_cargo && r.digest == first.digest;
            noops.push(r.time);
        }
        let cargo_noop = median(
            (0..5)
                .map(|_| self.cargo_build(&bare))
                .collect::<Result<_, _>>()?,
        );
        let noop = median(noops);
        let (mut img_times, mut cargo_times) = (Vec::new(), Vec::new());
        let greetings = ["\"Hello\"", "\"Hi\"", "\"Hey\"", "\"Yo\""];
        for step in greetings.windows(2) {
            for dir in [&img_dir, &bare] {
                edit(&dir.join("src/main.rs"), step[0], step[1])?;
            }
            cargo_times.push(self.cargo_build(&bare)?);
            img_times.push(imgbuild(&self.img, &img_dir, &cache)?.time);
        }
        let (app, cargo_app) = (median(img_times), median(cargo_times));
        let overhead = app.saturating_sub(cargo_app);
        Ok(vec![
            Row {
                ratio: None,
                scenario: "hello: no-op (median of 5)",
                imgbuild: noop,
                cargo: Some(cargo_noop),
                target: "<= 0.06 s, no compiler".into(),
                met: noop <= Duration::from_millis(60) && all_noop,
                note: format!("same digest and no compiler run: {all_noop}"),
            },
            Row {
                ratio: None,
                scenario: "hello: app-only change (median of 3)",
                imgbuild: app,
                cargo: Some(cargo_app),
                target: "<= cargo + 0.10 s".into(),
                met: overhead <= Duration::from_millis(100),
                note: format!("{} over cargo", secs(overhead)),
            },
        ])
    }
}
