//! The `imgbuild` command line, shared by the `imgbuild` and `cargo-imgbuild` binaries: parses
//! flags, wires them to the library, renders its events. The library target of this package
//! exists only so both binaries compile this code once.
//!
//! Human output goes to stderr; machine output (the digest, or JSON events with
//! `--message-format json`) goes to stdout.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

mod args;
mod build;
mod cache;
mod human;
mod plan;
mod verify;

use args::{Command, PushArgs};

#[derive(Parser)]
#[command(
    name = "imgbuild",
    version,
    about = "Build reproducible OCI images from Cargo projects, without a daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Runs the command line `args` (the program name first) and returns the exit code.
pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Build(args) => build::run_build(*args),
        Command::Push(args) => {
            let PushArgs {
                reference,
                mut build,
            } = *args;
            build.outputs.push(format!("docker://{reference}"));
            build::run_build(build)
        }
        Command::Plan(args) => plan::run_plan(args),
        Command::Cache(command) => cache::run_cache(command),
        Command::Verify(args) => verify::run_verify(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
