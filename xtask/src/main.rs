//! imgbuild's project automation, run as `cargo xtask <task>`.
//!
//! - `ci`: what `.ci/run` runs after installing system packages: formatting, lints, docs and
//!   every test, failing on the first problem.
//!
//! - `bench`: imgbuild against bare cargo on `examples/axum-service` (see [`mod@bench`]).

#![allow(clippy::print_stderr, clippy::print_stdout, clippy::disallowed_methods)] // a terminal tool that runs cargo

use std::process::{Command, ExitCode};

mod bench;

fn run(purpose: &str, program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    eprintln!("==> {purpose}: {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .map_err(|e| format!("could not start {program} ({purpose}): {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{purpose} failed ({status})"))
    }
}

fn ci() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    run("formatting", &cargo, &["fmt", "--all", "--check"], &[])?;
    run(
        "lints",
        &cargo,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    run(
        "docs",
        &cargo,
        &["doc", "--workspace", "--no-deps", "--locked"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    run(
        "tests",
        &cargo,
        &[
            "test",
            "--workspace",
            "--locked",
            "--",
            "--test-threads",
            "2",
        ],
        &[],
    )
}

/// The repository root (the xtask crate's parent).
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository")
        .to_path_buf()
}

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("ci") => ci(),
        Some("bench") => bench::bench(&root()),
        _ => Err("usage: cargo xtask ci | cargo xtask bench".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
