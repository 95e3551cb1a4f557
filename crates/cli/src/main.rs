//! The `imgbuild` binary.

fn main() -> std::process::ExitCode {
    imgbuild_cli::main(std::env::args_os().collect())
}
