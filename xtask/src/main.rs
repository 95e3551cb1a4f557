//! imgbuild's project automation, run as `cargo xtask <task>`.
//!
//! - `ci`: what `.ci/run` runs after installing system packages: formatting, lints, docs and
//!   every test, failing on the first problem.
//!
//! - `invariants`: the architecture invariants no compiler checks (see [`mod@invariants`]).
//! - `bench`: imgbuild against bare cargo on `examples/axum-service` (see [`mod@bench`]);
//! - `chaos`: SIGKILLs, a faulty network and concurrency against one store, checking that
//!   nothing is lost (see [`mod@chaos`]);
//! - `fuzz`: every cargo-fuzz target for a number of inputs (see [`mod@fuzz`]);
//! - `image [--output DEST]…`: imgbuild's own container image, built with imgbuild's library
//!   (dogfooding): `/app/imgbuild` in an image from scratch.

#![allow(clippy::print_stderr, clippy::print_stdout, clippy::disallowed_methods)] // a terminal tool that runs cargo

use std::process::{Command, ExitCode};

mod bench;
mod chaos;
mod fuzz;
mod invariants;
mod registry;

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

/// `cargo xtask invariants`: the architecture checks of [`invariants`].
fn check_invariants(root: &std::path::Path) -> Result<(), String> {
    eprintln!("==> architecture invariants");
    invariants::check(root).map_err(|problems| problems.join("\n"))
}

fn ci() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    check_invariants(&root())?;
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
            // Three at a time on two cores: many e2e tests wait on registries, engines and
            // Debian's mirror rather than compute.
            "--test-threads",
            "3",
        ],
        &[],
    )
}

/// Prints the library's warnings and result on stderr.
struct Log;

impl imgbuild::event::Reporter for Log {
    fn report(&self, event: &imgbuild::event::Event) {
        use imgbuild::event::Event;
        match event {
            Event::Warning { message } => eprintln!("warning: {message}"),
            Event::Output { destination } => eprintln!("wrote {destination}"),
            Event::ImageBuilt {
                reference, digest, ..
            } => eprintln!("built {reference} {digest}"),
            _ => {}
        }
    }
}

/// `cargo xtask image [--output DEST]...`: imgbuild's own image, through the library.
fn image(root: &std::path::Path, args: Vec<String>) -> Result<(), String> {
    let mut options = imgbuild::BuildOptions::new(imgbuild::default_cache_dir());
    options.manifest_path = Some(root.join("Cargo.toml"));
    options.package = Some("imgbuild-cli".into());
    options.bin = Some("imgbuild".into());
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--output" | "-o", Some(dest)) => options
                .outputs
                .push(dest.parse().map_err(|e| format!("--output {dest}: {e}"))?),
            _ => {
                return Err(format!(
                    "unexpected argument {arg:?}; usage: cargo xtask image [--output DEST]..."
                ));
            }
        }
    }
    let built =
        imgbuild::build(&options, &Log).map_err(|e| format!("building imgbuild's image: {e}"))?;
    println!("{}", built.manifest.digest());
    Ok(())
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
        Some("bench") => bench::bench(&root(), &std::env::args().skip(2).collect::<Vec<_>>()),
        Some("chaos") => chaos::chaos(&root(), &std::env::args().skip(2).collect::<Vec<_>>()),
        Some("fuzz") => fuzz::fuzz(&root(), &std::env::args().skip(2).collect::<Vec<_>>()),
        Some("invariants") => check_invariants(&root()),
        Some("image") => image(&root(), std::env::args().skip(2).collect()),
        _ => Err(
            "usage: cargo xtask ci | cargo xtask invariants | cargo xtask bench | cargo xtask chaos [--kills N] | cargo xtask fuzz [--runs N] | cargo xtask image [--output DEST]..."
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
