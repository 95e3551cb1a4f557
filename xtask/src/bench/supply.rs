//! The supply-chain scenarios: what the SBOM, the provenance, the audit section and the
//! debug-info split cost, as imgbuild with them (the default) against imgbuild without them
//! (`--sbom none --no-provenance --no-audit-data --keep-debuginfo`) on copies of the same
//! project in the same run. Whole builds (cold, app-only) are compared as they are, but their
//! noise here (±3% for a 3 s build) is larger than the cost, so the cost itself is measured
//! on `--rebuild` of an unchanged app whose binary was just touched (everything after cargo's
//! fresh check runs, on a binary as new as a freshly linked one, nothing compiles: about
//! 0.2 s, where ±10 ms is the noise), alternated, median of 9, and given as a share of the
//! app-only and cold builds. Then the same with `debug = 1`, where the split has
//! work to do, with the app layer's size both ways.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{Bench, edit, secs, timed};

const OFF: [&str; 5] = [
    "--sbom",
    "none",
    "--no-provenance",
    "--no-audit-data",
    "--keep-debuginfo",
];

/// One timed build: its time and its app layer's compressed size.
fn build(bench: &Bench, dir: &Path, cache: &Path, off: bool) -> Result<(Duration, u64), String> {
    let mut args = vec!["build", "--message-format", "json"];
    if off {
        args.extend(OFF);
    }
    let (time, stdout) = timed(dir, &bench.img, &args, &[("IMGBUILD_CACHE_DIR", cache)])?;
    let app = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["reason"] == "layer" && e["role"] == "app")
        .filter_map(|e| e["size"].as_u64())
        .next_back()
        .unwrap_or(0);
    Ok((time, app))
}

struct Pair {
    dir: PathBuf,
    cache: PathBuf,
}

/// Median of the app-only builds after editing one line, `runs` times, alternating with and
/// without; returns (with, without, app layer sizes with and without).
fn app_only(
    bench: &Bench,
    on: &Pair,
    off: &Pair,
    runs: usize,
) -> Result<(Duration, Duration, u64, u64), String> {
    let (mut t_on, mut t_off, mut sizes) = (Vec::new(), Vec::new(), (0, 0));
    for _ in 0..runs {
        // A line never seen before, so that no run is an app-cache hit.
        for p in [on, off] {
            let main = p.dir.join("src/main.rs");
            let text = std::fs::read_to_string(&main).map_err(|e| e.to_string())?;
            let from = text
                .lines()
                .find_map(|l| l.split('"').find(|s| s.ends_with(", {name}!")))
                .ok_or("no greeting line in src/main.rs")?
                .to_string();
            let n: u64 = from
                .trim_start_matches("Hello ")
                .split(',')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            edit(&main, &from, &format!("Hello {}, {{name}}!", n + 1))?;
        }
        let (a, size_on) = build(bench, &on.dir, &on.cache, false)?;
        let (b, size_off) = build(bench, &off.dir, &off.cache, true)?;
        t_on.push(a);
        t_off.push(b);
        sizes = (size_on, size_off);
    }
    t_on.sort();
    t_off.sort();
    Ok((t_on[runs / 2], t_off[runs / 2], sizes.0, sizes.1))
}

/// `--rebuild` of an unchanged app, with and without, alternated: the medians.
fn rebuilds(
    bench: &Bench,
    on: &Pair,
    off: &Pair,
    runs: usize,
) -> Result<(Duration, Duration), String> {
    let (mut t_on, mut t_off) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        t_on.push(timed_rebuild(bench, on, false)?);
        t_off.push(timed_rebuild(bench, off, true)?);
    }
    t_on.sort();
    t_off.sort();
    Ok((t_on[runs / 2], t_off[runs / 2]))
}

fn timed_rebuild(bench: &Bench, p: &Pair, off: bool) -> Result<Duration, String> {
    // As if cargo had just linked it: both configurations then do all their work on the
    // binary (the app layer's gzip; with the supply chain, objcopy and the split too)
    // instead of reusing what they made for the same file.
    let linked = p.dir.join("target/release/axum-service");
    std::fs::File::options()
        .write(true)
        .open(&linked)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()))
        .map_err(|e| format!("touching {}: {e}", linked.display()))?;
    let mut args = vec!["build", "--rebuild"];
    if off {
        args.extend(OFF);
    }
    Ok(timed(
        &p.dir,
        &bench.img,
        &args,
        &[("IMGBUILD_CACHE_DIR", p.cache.as_path())],
    )?
    .0)
}

/// One configuration's figures.
struct Figures {
    label: &'static str,
    cold: (Duration, Duration),
    app: (Duration, Duration),
    rebuild: (Duration, Duration),
    sizes: (u64, u64),
}

impl Figures {
    /// The cost: the rebuilds' difference.
    fn cost(&self) -> f64 {
        self.rebuild.0.as_secs_f64() - self.rebuild.1.as_secs_f64()
    }
}

fn measure(bench: &Bench, on: &Pair, off: &Pair, label: &'static str) -> Result<Figures, String> {
    eprintln!("==> supply chain ({label}): cold builds with and without");
    let (cold_on, _) = build(bench, &on.dir, &on.cache, false)?;
    let (cold_off, _) = build(bench, &off.dir, &off.cache, true)?;
    eprintln!("==> supply chain ({label}): app-only changes (median of 5)");
    let (a_on, a_off, size_on, size_off) = app_only(bench, on, off, 5)?;
    eprintln!("==> supply chain ({label}): rebuilds with nothing to compile (median of 9)");
    let rebuild = rebuilds(bench, on, off, 9)?;
    Ok(Figures {
        label,
        cold: (cold_on, cold_off),
        app: (a_on, a_off),
        rebuild,
        sizes: (size_on, size_off),
    })
}

/// Runs the scenarios and prints the table; whether the cost is under 2% of the app-only
/// build (and so of the cold one) in both configurations.
pub(super) fn supply(bench: &Bench) -> Result<bool, String> {
    let pair = |name: &str| -> Result<Pair, String> {
        Ok(Pair {
            dir: bench.copy(name)?,
            cache: bench.work.join(format!("{name}-cache")),
        })
    };
    let (on, off) = (pair("supply-on")?, pair("supply-off")?);
    let plain = measure(bench, &on, &off, "release profile")?;
    for p in [&on, &off] {
        let manifest = p.dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).map_err(|e| e.to_string())?;
        std::fs::write(&manifest, format!("{text}\n[profile.release]\ndebug = 1\n"))
            .map_err(|e| e.to_string())?;
    }
    let debug = measure(bench, &on, &off, "debug = 1")?;
    println!();
    println!(
        "supply chain: with SBOM, provenance, audit section and debug split (the default) and without"
    );
    println!(
        "{:<16} {:>17} {:>17} {:>17} {:>9} {:>7} {:>7}  app layer with / without",
        "profile",
        "cold with/without",
        "app with/without",
        "rebuild w/wo",
        "cost",
        "of app",
        "of cold"
    );
    let mut met = true;
    for f in [&plain, &debug] {
        let pair = |(a, b): (Duration, Duration)| format!("{}/{}", secs(a), secs(b));
        let share = |d: Duration| f.cost() / d.as_secs_f64() * 100.0;
        let ok = share(f.app.1) < 2.0;
        met &= ok;
        println!(
            "{:<16} {:>17} {:>17} {:>17} {:>7.0}ms {:>6.1}% {:>6.1}%  {:.2} / {:.2} MiB{}",
            f.label,
            pair(f.cold),
            pair(f.app),
            pair(f.rebuild),
            f.cost() * 1000.0,
            share(f.app.1),
            share(f.cold.1),
            f.sizes.0 as f64 / 1048576.0,
            f.sizes.1 as f64 / 1048576.0,
            if ok {
                ""
            } else {
                "  MISSED: target < 2% of the app-only build"
            },
        );
    }
    Ok(met)
}
