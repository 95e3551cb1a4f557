//! The supply-chain scenarios: what the SBOM, the provenance, the audit section and the
//! debug-info split cost, as imgbuild with them (the default) against imgbuild without them
//! (`--sbom none --no-provenance --no-audit-data --keep-debuginfo`) on copies of the same
//! project in the same run: cold builds, app-only changes, and app-only changes with
//! `debug = 1` (where the split has work to do), with the app layer's size both ways.

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

struct Row {
    scenario: &'static str,
    on: Duration,
    off: Duration,
    note: String,
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

/// Runs the scenarios and prints the table; whether the targets were met (the cost under 2%
/// of the build in the app-only scenarios, medians of 5).
pub(super) fn supply(bench: &Bench) -> Result<bool, String> {
    let pair = |name: &str| -> Result<Pair, String> {
        Ok(Pair {
            dir: bench.copy(name)?,
            cache: bench.work.join(format!("{name}-cache")),
        })
    };
    let (on, off) = (pair("supply-on")?, pair("supply-off")?);
    let mut rows = Vec::new();
    eprintln!("==> supply chain: cold builds with and without");
    let (cold_on, _) = build(bench, &on.dir, &on.cache, false)?;
    let (cold_off, _) = build(bench, &off.dir, &off.cache, true)?;
    rows.push(Row {
        scenario: "cold build",
        on: cold_on,
        off: cold_off,
        note: "one run each (cargo's own noise here is about ±10%)".into(),
    });
    eprintln!("==> supply chain: app-only changes (median of 5)");
    let (a_on, a_off, _, _) = app_only(bench, &on, &off, 5)?;
    rows.push(Row {
        scenario: "app-only change",
        on: a_on,
        off: a_off,
        note: "SBOM + provenance + audit section; no debug info to split".into(),
    });
    eprintln!("==> supply chain: debug = 1 (dependencies rebuilt first, not timed)");
    for p in [&on, &off] {
        let manifest = p.dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).map_err(|e| e.to_string())?;
        std::fs::write(&manifest, format!("{text}\n[profile.release]\ndebug = 1\n"))
            .map_err(|e| e.to_string())?;
        build(bench, &p.dir, &p.cache, p.dir == off.dir)?;
    }
    let (d_on, d_off, size_on, size_off) = app_only(bench, &on, &off, 5)?;
    rows.push(Row {
        scenario: "app-only change, debug = 1",
        on: d_on,
        off: d_off,
        note: format!(
            "app layer {:.1} MiB with the debug info split off, {:.1} MiB kept in",
            size_on as f64 / 1048576.0,
            size_off as f64 / 1048576.0
        ),
    });
    println!();
    println!(
        "supply chain: imgbuild with SBOM, provenance, audit section and debug split (the default) against without"
    );
    println!(
        "{:<28} {:>10} {:>10} {:>8}  {:<22} details",
        "scenario", "with", "without", "cost", "target"
    );
    let mut met = true;
    for r in &rows {
        let cost = (r.on.as_secs_f64() - r.off.as_secs_f64()) / r.off.as_secs_f64() * 100.0;
        let checked = r.scenario.starts_with("app-only");
        let ok = !checked || cost < 2.0;
        met &= ok;
        println!(
            "{:<28} {:>10} {:>10} {:>7.1}%  {:<22} {}{}",
            r.scenario,
            secs(r.on),
            secs(r.off),
            cost,
            if checked {
                "< 2% (median of 5)"
            } else {
                "reported"
            },
            if ok { "" } else { "MISSED: " },
            r.note
        );
    }
    Ok(met)
}
