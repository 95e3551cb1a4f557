//! `cargo imgbuild …`: the same command line as `imgbuild`, as a cargo subcommand. Cargo runs
//! `cargo-imgbuild imgbuild ARGS`; the subcommand's own name is dropped.

fn main() -> std::process::ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "imgbuild") {
        args.remove(1);
    }
    if let Some(first) = args.first_mut() {
        *first = "cargo imgbuild".into();
    }
    imgbuild_cli::main(args)
}
