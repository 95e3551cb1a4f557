//! `cargo xtask bench`: imgbuild against bare `cargo build --release` on a real service.
//!
//! Every scenario runs both tools on copies of the same project in the same session, so the
//! figures compare like with like on this machine. Downloads are done before timing starts
//! (`cargo fetch`); both tools share the cargo home. Prints one table with the times, the
//! ratio to cargo, each target, and how many dependency units cargo compiled under imgbuild.

use std::path::{Path, PathBuf};

use std::time::Duration;

use serde_json::Value;

mod env;
mod far;
mod fresh;
mod lag;
mod measure;
mod rebuild;
mod supply;
mod workspace;
mod wsrun;

pub(crate) use measure::{Timed, median, paired_ratio, ratios, seconds, secs, timed, timed_events};

/// The project the benchmark builds, and the leaf crate bumped in the lockfile scenario.
struct Project {
    dir: PathBuf,
    /// A leaf crate and the version to bump it to (the committed Cargo.lock has an older one).
    bump: (&'static str, &'static str),
}

pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dst).map_err(|e| format!("creating {}: {e}", dst.display()))?;
    let entries = std::fs::read_dir(src).map_err(|e| format!("reading {}: {e}", src.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            std::fs::copy(&from, &to).map_err(|e| format!("copying {}: {e}", from.display()))?;
        }
    }
    Ok(())
}

/// What one imgbuild run reported.
struct ImgRun {
    time: Duration,
    digest: String,
    compiled: u64,
    fresh: u64,
    packages: Vec<String>,
    hit: bool,
    /// Whether cargo ran at all (a zero-work hit runs no compiler).
    ran_cargo: bool,
    /// The wall time outside cargo's run (before it started and after it finished).
    outside_cargo: Option<Duration>,
    /// imgbuild's own CPU time, without cargo's and the compilers'.
    own_cpu: Option<Duration>,
}

fn imgbuild(imgbuild: &Path, dir: &Path, cache: &Path) -> Result<ImgRun, String> {
    imgbuild_with(imgbuild, dir, cache, &[])
}

/// `imgbuild build --message-format json EXTRA…`, timed, its events read.
fn imgbuild_with(
    imgbuild: &Path,
    dir: &Path,
    cache: &Path,
    extra: &[&str],
) -> Result<ImgRun, String> {
    let args: Vec<&str> = ["build", "--message-format", "json"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let run = timed_events(dir, imgbuild, &args, &[("IMGBUILD_CACHE_DIR", cache)])?;
    let find = |reason: &str| run.at(reason).map(|(_, e)| e);
    let ran_cargo = find("compiled").is_some();
    let none = Value::Null;
    let compiled = find("compiled").unwrap_or(&none);
    let outside_cargo = run.outside_cargo();
    Ok(ImgRun {
        time: run.time,
        digest: find("image-built").ok_or("no image-built event")?["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        compiled: compiled["dependencies_compiled"].as_u64().unwrap_or(0),
        fresh: compiled["dependencies_fresh"].as_u64().unwrap_or(0),
        packages: compiled["compiled_packages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        hit: find("cache-lookup").is_some_and(|e| e["hit"] == true),
        ran_cargo,
        outside_cargo,
        own_cpu: run.own_cpu,
    })
}

struct Row {
    /// The ratio shown when it is not `imgbuild / cargo`: the median of paired runs' ratios.
    ratio: Option<f64>,
    scenario: &'static str,
    imgbuild: Duration,
    cargo: Option<Duration>,
    target: String,
    met: bool,
    note: String,
}

/// How many cold builds of each the cold row takes, alternated.
const COLD_RUNS: usize = 5;

fn edit(file: &Path, from: &str, to: &str) -> Result<(), String> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    if !text.contains(from) {
        return Err(format!("{} does not contain {from:?}", file.display()));
    }
    std::fs::write(file, text.replacen(from, to, 1)).map_err(|e| e.to_string())
}

/// What every scenario shares: the tools, the project and the cache of the warm runs.
struct Bench {
    cargo: PathBuf,
    img: PathBuf,
    project: Project,
    work: PathBuf,
    cache: PathBuf,
}

/// The first scenarios' results that later ones compare against.
struct Baseline {
    /// Bare cargo's cold build.
    cargo_cold: Duration,
    /// Its copy, edited along the way.
    bare: PathBuf,
    /// The dependency units of the cold build.
    units: u64,
    /// imgbuild's warm checkout, edited along the way.
    second: PathBuf,
}

impl Bench {
    /// Removes the work directory, unless `IMGBUILD_BENCH_KEEP` is set (to look into a run).
    fn clean_up(&self) {
        if std::env::var_os("IMGBUILD_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.work);
        } else {
            eprintln!("kept {}", self.work.display());
        }
    }

    fn copy(&self, name: &str) -> Result<PathBuf, String> {
        let dir = self.work.join(name);
        copy_tree(&self.project.dir, &dir)?;
        Ok(dir)
    }

    fn cargo_build(&self, dir: &Path) -> Result<Duration, String> {
        Ok(timed(dir, &self.cargo, &["build", "--release", "--locked"], &[])?.0)
    }

    fn imgbuild(&self, dir: &Path, cache: &Path) -> Result<ImgRun, String> {
        imgbuild(&self.img, dir, cache)
    }

    /// Cold builds, then a fresh checkout with new app code on the warm cache.
    fn cold_and_warm(&self, rows: &mut Vec<Row>) -> Result<(Baseline, ImgRun), String> {
        eprintln!("==> cold builds ({COLD_RUNS} pairs, imgbuild then cargo)");
        let bare = self.copy("cargo")?;
        let mut cold_runs = vec![self.imgbuild(&self.copy("first")?, &self.cache)?];
        let mut cargo_times = vec![self.cargo_build(&bare)?];
        for k in 1..COLD_RUNS {
            let cache = self.work.join(format!("cache-cold-{k}"));
            cold_runs.push(self.imgbuild(&self.copy(&format!("cold-{k}"))?, &cache)?);
            cargo_times.push(self.cargo_build(&self.copy(&format!("cargo-cold-{k}"))?)?);
        }
        let img_times: Vec<Duration> = cold_runs.iter().map(|r| r.time).collect();
        let (cargo_cold, img_cold) = (median(cargo_times.clone()), median(img_times.clone()));
        let ratio = paired_ratio(&img_times, &cargo_times);
        let outside: Vec<Duration> = cold_runs.iter().filter_map(|r| r.outside_cargo).collect();
        let own_cpu: Vec<Duration> = cold_runs.iter().filter_map(|r| r.own_cpu).collect();
        let cold = cold_runs.swap_remove(0);
        rows.push(Row {
            ratio: Some(ratio),
            scenario: "cold build (empty cache, 5 pairs)",
            imgbuild: img_cold,
            cargo: Some(cargo_cold),
            target: "<= 1.03x cargo (median pair ratio)".into(),
            met: ratio <= 1.03,
            note: format!(
                "{} dependency units compiled; pair ratios {}; runs: imgbuild {}, cargo {}; imgbuild outside cargo's run {}, imgbuild's own CPU {}",
                cold.compiled,
                ratios(&img_times, &cargo_times),
                seconds(&img_times),
                seconds(&cargo_times),
                seconds(&outside),
                seconds(&own_cpu),
            ),
        });
        eprintln!("==> fresh checkout, warm cache");
        let second = self.copy("second")?;
        // A new commit on a fresh runner: other app code (so the image cannot be reused as
        // is), the same dependencies.
        edit(
            &second.join("src/main.rs"),
            "Hello, {name}!",
            "Hello there, {name}!",
        )?;
        let warm = self.imgbuild(&second, &self.cache)?;
        let ratio = warm.time.as_secs_f64() / cargo_cold.as_secs_f64();
        rows.push(Row {
            ratio: None,
            scenario: "fresh checkout, warm cache",
            imgbuild: warm.time,
            cargo: Some(cargo_cold),
            target: "<= 0.20x cold cargo".into(),
            met: ratio <= 0.2 && warm.compiled == 0 && warm.hit && warm.ran_cargo,
            note: format!(
                "dependency cache hit={}, {} dependency units compiled, {} restored/fresh",
                warm.hit, warm.compiled, warm.fresh
            ),
        });
        let base = Baseline {
            cargo_cold,
            bare,
            units: cold.compiled,
            second,
        };
        Ok((base, warm))
    }

    /// A leaf crate bumped in the lockfile: in place, then on a fresh checkout whose cache
    /// has only the entry from before the bump (the nearest entry, then a delta).
    fn bumps(&self, base: &Baseline, rows: &mut Vec<Row>) -> Result<(), String> {
        let (krate, version) = self.project.bump;
        eprintln!("==> lockfile bump: {krate} to {version}");
        let cache_before_bump = self.work.join("cache-before-bump");
        copy_tree(&self.cache, &cache_before_bump)?;
        for dir in [&base.bare, &base.second] {
            let args = ["update", "-p", krate, "--precise", version];
            timed(dir, &self.cargo, &args, &[])?;
        }
        let cargo_bump = self.cargo_build(&base.bare)?;
        let bump = self.imgbuild(&base.second, &self.cache)?;
        let bumped = |r: &ImgRun| {
            r.packages
                .iter()
                .any(|p| p.starts_with(&format!("{krate}@")))
        };
        rows.push(Row {
            ratio: None,
            scenario: "leaf bump, same checkout",
            imgbuild: bump.time,
            cargo: Some(cargo_bump),
            target: "recompiles the crate and its dependents".into(),
            met: bumped(&bump) && !bump.hit,
            note: format!("recompiled: {}", bump.packages.join(", ")),
        });
        eprintln!("==> lockfile bump on a fresh checkout (nearest entry, then a delta)");
        let third = self.checkout_like(base, "third")?;
        let fresh_bump = self.imgbuild(&third, &cache_before_bump)?;
        let same = fresh_bump.digest == bump.digest;
        rows.push(Row {
            ratio: None,
            scenario: "leaf bump, fresh checkout",
            imgbuild: fresh_bump.time,
            cargo: Some(base.cargo_cold),
            target: "recompiles the crate and its dependents".into(),
            met: bumped(&fresh_bump) && !fresh_bump.hit && same,
            note: format!(
                "recompiled: {}; same digest as in place: {same}",
                fresh_bump.packages.join(", "),
            ),
        });
        Ok(())
    }

    /// A fresh copy with the warm checkout's lockfile and app code.
    fn checkout_like(&self, base: &Baseline, name: &str) -> Result<PathBuf, String> {
        let dir = self.copy(name)?;
        std::fs::copy(base.second.join("Cargo.lock"), dir.join("Cargo.lock"))
            .map_err(|e| e.to_string())?;
        edit(
            &dir.join("src/main.rs"),
            "Hello, {name}!",
            "Hi there, {name}!",
        )?;
        Ok(dir)
    }
}

/// Prints the table; whether every target was met.
fn print_table(project: &Path, units: u64, rows: &[Row]) -> bool {
    println!();
    println!(
        "imgbuild benchmark: {} ({units} dependency units)",
        project.display(),
    );
    print_rows(rows)
}

/// Prints the rows under a header; whether every target was met.
fn print_rows(rows: &[Row]) -> bool {
    println!(
        "{:<36} {:>10} {:>10} {:>7}  {:<40} details",
        "scenario", "imgbuild", "cargo", "ratio", "target"
    );
    for r in rows {
        let ratio = r
            .ratio
            .or_else(|| r.cargo.map(|c| r.imgbuild.as_secs_f64() / c.as_secs_f64()))
            .map(|x| format!("{x:.2}x"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<36} {:>10} {:>10} {:>7}  {:<40} {}{}",
            r.scenario,
            secs(r.imgbuild),
            r.cargo.map(secs).unwrap_or_else(|| "-".into()),
            ratio,
            r.target,
            if r.met { "" } else { "MISSED: " },
            r.note
        );
    }
    rows.iter().all(|r| r.met)
}

/// `cargo xtask bench [--imgbuild PATH]`: with `--imgbuild`, that binary is measured instead of
/// this checkout's (an A/B of two versions with the same scenarios).
pub(crate) fn bench(root: &Path, args: &[String]) -> Result<(), String> {
    let cargo = PathBuf::from(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    let project = Project {
        dir: root.join("examples/axum-service"),
        bump: ("ryu", "1.0.23"),
    };
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut flag = |name: &str| match args.iter().position(|a| *a == name) {
        Some(i) => {
            args.remove(i);
            true
        }
        None => false,
    };
    let with_env = !flag("--no-build-env");
    let supply_only = flag("--supply-only");
    let workspace_only = flag("--workspace-only");
    let img = match args.as_slice() {
        [flag, path] if *flag == "--imgbuild" => PathBuf::from(path),
        [] => {
            eprintln!("==> building imgbuild (release)");
            let build = ["build", "--release", "--locked", "-p", "imgbuild-cli"];
            timed(root, &cargo, &build, &[])?;
            root.join("target/release/imgbuild")
        }
        _ => {
            return Err(
                "usage: cargo xtask bench [--imgbuild PATH] [--no-build-env] [--supply-only] [--workspace-only]"
                    .into(),
            );
        }
    };
    eprintln!("==> fetching {} (not timed)", project.dir.display());
    timed(&project.dir, &cargo, &["fetch", "--locked"], &[])?;
    let work = std::env::temp_dir().join(format!("imgbuild-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let bench = Bench {
        cargo,
        img,
        cache: work.join("cache"),
        work,
        project,
    };
    if workspace_only {
        let met =
            workspace::workspace(&bench)? & bench.hello(root).map(|rows| print_rows(&rows))?;
        bench.clean_up();
        return if met {
            Ok(())
        } else {
            Err("some targets were missed (see MISSED above)".into())
        };
    }
    if supply_only {
        let met = supply::supply(&bench)?;
        bench.clean_up();
        return if met {
            Ok(())
        } else {
            Err("some targets were missed (see MISSED above)".into())
        };
    }
    let mut rows = Vec::new();
    let (base, warm) = bench.cold_and_warm(&mut rows)?;
    let noop = bench.noop(&base, &warm)?;
    let app = bench.app_change(&base, &warm)?;
    let host = env::HostFigures {
        cold: rows[0].imgbuild,
        noop: noop.imgbuild,
        app: app.imgbuild,
    };
    rows.extend([noop, app]);
    bench.bumps(&base, &mut rows)?;
    rows.extend(bench.fresh_runner_push(&base)?);
    rows.extend(bench.hello(root)?);
    let env = [("IMGBUILD_CACHE_DIR", bench.cache.as_path())];
    let list = timed(&bench.work, &bench.img, &["cache", "ls"], &env)?.1;
    let mut all_met = print_table(&bench.project.dir, base.units, &rows);
    println!();
    print!("{list}");
    all_met &= workspace::workspace(&bench)?;
    if with_env {
        all_met &= env::environment(&bench, root, &host)?;
    }
    all_met &= supply::supply(&bench)?;
    bench.clean_up();
    if all_met {
        Ok(())
    } else {
        Err("some targets were missed (see MISSED above)".into())
    }
}
