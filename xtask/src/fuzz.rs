//! `cargo xtask fuzz [--runs N] [--target NAME]`: runs every cargo-fuzz target in `fuzz/`
//! (nightly toolchain, libFuzzer) for N inputs (default 1,000,000) starting from the saved
//! corpus, then minimizes the corpus (`cargo fuzz cmin`) so what is committed stays small.
//! Installs cargo-fuzz when it is missing. Prints a table (runs, time, corpus size, crashes)
//! and fails when a target crashed; the crashing input is in `fuzz/artifacts/TARGET/` — fix
//! it, then keep it in `fuzz/regressions/TARGET/`, which CI replays.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

struct Row {
    target: &'static str,
    runs: u64,
    seconds: f64,
    corpus: usize,
    crashed: bool,
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

fn ensure_cargo_fuzz() -> Result<(), String> {
    let found = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Ok(());
    }
    eprintln!("==> installing cargo-fuzz (cargo install cargo-fuzz --locked)");
    let ok = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .map_err(|e| e.to_string())?
        .success();
    if ok {
        Ok(())
    } else {
        Err("cargo install cargo-fuzz failed; fuzzing also needs a nightly toolchain (rustup toolchain install nightly)".into())
    }
}

/// `cargo xtask fuzz`.
pub(crate) fn fuzz(root: &Path, args: &[String]) -> Result<(), String> {
    let (mut runs, mut only) = (1_000_000u64, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runs" => {
                runs = value
                    .parse()
                    .map_err(|_| format!("--runs {value}: not a count"))?
            }
            "--target" => only = Some(value.clone()),
            _ => {
                return Err(format!(
                    "unknown argument {flag}; usage: cargo xtask fuzz [--runs N] [--target NAME]"
                ));
            }
        }
    }
    ensure_cargo_fuzz()?;
    let dir = root.join("fuzz");
    let mut rows = Vec::new();
    for (target, _) in imgbuild_fuzzing_targets() {
        if only.as_deref().is_some_and(|o| o != *target) {
            continue;
        }
        let corpus = dir.join("corpus").join(target);
        eprintln!("==> fuzzing {target} for {runs} inputs");
        let start = Instant::now();
        let status = Command::new("cargo")
            .current_dir(&dir)
            .args(["+nightly", "fuzz", "run", target])
            .arg(&corpus)
            .args([
                "--",
                &format!("-runs={runs}"),
                "-max_len=65536",
                "-timeout=20",
            ])
            .status()
            .map_err(|e| e.to_string())?;
        let seconds = start.elapsed().as_secs_f64();
        let crashed = !status.success();
        if !crashed {
            // Keep only the inputs that add coverage.
            let _ = Command::new("cargo")
                .current_dir(&dir)
                .args(["+nightly", "fuzz", "cmin", target])
                .arg(&corpus)
                .status();
        }
        rows.push(Row {
            target,
            runs,
            seconds,
            corpus: count(&corpus),
            crashed,
        });
    }
    println!();
    println!(
        "{:<18} {:>10} {:>10} {:>8}  result",
        "target", "runs", "seconds", "corpus"
    );
    for r in &rows {
        println!(
            "{:<18} {:>10} {:>10.1} {:>8}  {}",
            r.target,
            r.runs,
            r.seconds,
            r.corpus,
            if r.crashed {
                "CRASHED (see fuzz/artifacts)"
            } else {
                "ok"
            }
        );
    }
    if rows.iter().any(|r| r.crashed) {
        return Err("a target crashed".into());
    }
    Ok(())
}

/// The target names, as `crates/fuzzing` lists them.
fn imgbuild_fuzzing_targets() -> &'static [(&'static str, imgbuild_fuzzing::Target)] {
    imgbuild_fuzzing::TARGETS
}
