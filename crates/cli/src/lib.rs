//! The `imgbuild` command line, shared by the `imgbuild` and `cargo-imgbuild` binaries: parses
//! flags, wires them to the library, renders its events. The library target of this package
//! exists only so both binaries compile this code once.
//!
//! Human output goes to stderr, through one renderer (`console`); machine output (the digest,
//! or JSON events with `--message-format json`) goes to stdout.

use std::process::ExitCode;

use clap::Parser;

mod args;
mod artifacts;
mod build;
mod cache;
mod console;
mod human;
mod live;
mod plan;
mod refs;
mod resolve;
mod verify;

use args::{Command, PushArgs};
use console::{ColorWhen, Console};

#[derive(Parser)]
#[command(
    name = "imgbuild",
    version,
    about = "Build reproducible OCI images from Cargo projects, without a daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Coloring of human output: auto (a terminal, unless NO_COLOR is set), always or never
    /// [default: CARGO_TERM_COLOR, else auto].
    #[arg(long, global = true, value_enum, value_name = "WHEN")]
    color: Option<ColorWhen>,
}

/// Runs the command line `args` (the program name first) and returns the exit code.
pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    let console = Console::new(ColorWhen::resolve(cli.color));
    let result = match cli.command {
        Command::Build(args) => build::run_build(*args, &console),
        Command::Push(args) => {
            let PushArgs {
                reference,
                repo,
                build,
            } = *args;
            build::run_push(build, reference, repo, &console)
        }
        Command::Resolve(args) => resolve::run_resolve(*args, &console),
        Command::Plan(args) => plan::run_plan(args),
        Command::Cache(command) => cache::run_cache(command),
        Command::Verify(args) => verify::run_verify(args, &console),
        Command::Sbom(args) => artifacts::run_sbom(args),
        Command::VerifySignature(args) => artifacts::run_verify_signature(args, &console),
        Command::PublicKey(args) => artifacts::run_public_key(args),
        Command::Debuginfo(args) => artifacts::run_debuginfo(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            console.error(&err);
            ExitCode::FAILURE
        }
    }
}
