//! The Cargo side of imgbuild.
//!
//! - [`workspace`]: the workspace model built from a `cargo metadata` value, and the choice of
//!   which binary to package (pure: takes values, runs nothing);
//! - [`config`]: the image configuration read from `[package.metadata.imgbuild]` and
//!   `[workspace.metadata.imgbuild]` (pure);
//! - [`hermetic`]: the allowlisted environment of the compile step (pure);
//! - [`lockfile`]: Cargo.lock's package entries (pure);
//! - [`plan`]: dependency-tree cache keys and their explanation (pure);
//! - [`units`]: which files in the build directory belong to which compiled dependency (pure);
//! - [`run`]: the only module here that starts processes (`cargo`, `rustc`, `git`).

pub mod config;
pub mod fingerprint;
pub mod graph;
pub mod hermetic;
pub mod lockfile;
pub mod plan;
pub mod run;
pub mod targetdir;
pub mod units;
pub mod workspace;

use std::path::PathBuf;

pub use cargo_metadata;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Cargo.toml where one was expected.
    #[error("{} is not a Cargo project: no Cargo.toml found there or in its parents; pass --manifest-path PATH/Cargo.toml or run from the project's directory", path.display())]
    NotACargoProject {
        /// The manifest path or directory looked at.
        path: PathBuf,
    },
    /// The workspace has no Cargo.lock.
    #[error("{} is missing: imgbuild builds with --locked so that images are reproducible; run `cargo generate-lockfile` in {} and commit Cargo.lock", lockfile.display(), workspace.display())]
    LockfileMissing {
        /// Where the lockfile should be.
        lockfile: PathBuf,
        /// The workspace root.
        workspace: PathBuf,
    },
    /// Cargo.lock does not match the manifests.
    #[error("{} is out of date with the manifests (cargo: {cargo_says}); run `cargo update --workspace` (or `cargo build` once) to refresh it, then commit it", lockfile.display())]
    LockfileStale {
        /// The lockfile.
        lockfile: PathBuf,
        /// What cargo said.
        cargo_says: String,
    },
    /// `cargo metadata` failed for another reason.
    #[error("`cargo metadata` failed for {}:\n{stderr}", manifest.display())]
    Metadata {
        /// The manifest given to cargo.
        manifest: PathBuf,
        /// Cargo's error output.
        stderr: String,
    },
    /// `cargo metadata` printed something that is not its JSON format.
    #[error("could not parse the output of `cargo metadata`: {0}")]
    MetadataFormat(#[source] serde_json::Error),
    /// A requested package is not in the workspace.
    #[error("package `{package}` is not a member of the workspace at {}; members: {}", workspace.display(), members.join(", "))]
    UnknownPackage {
        /// The package asked for.
        package: String,
        /// The workspace root.
        workspace: PathBuf,
        /// The members that exist.
        members: Vec<String>,
    },
    /// No binary target among the candidates.
    #[error(
        "{scope} has no binary target (only libraries, tests or examples); imgbuild packages a binary: add src/main.rs or a [[bin]] section, or choose another package with -p"
    )]
    NoBinary {
        /// What was searched ("package `x`" or "the workspace at ...").
        scope: String,
    },
    /// A requested binary does not exist.
    #[error("no binary named `{bin}` in {scope}; binaries: {}", available.join(", "))]
    UnknownBinary {
        /// The binary asked for.
        bin: String,
        /// What was searched.
        scope: String,
        /// The binaries that exist.
        available: Vec<String>,
    },
    /// Several binaries and no choice.
    #[error("{scope} has several binaries: {}; choose one with --bin NAME (and -p PACKAGE if names repeat)", candidates.join(", "))]
    AmbiguousBinary {
        /// What was searched.
        scope: String,
        /// `package/bin` for each candidate.
        candidates: Vec<String>,
    },
    /// The metadata table is malformed.
    #[error("invalid [{table}] in {}: {message}", manifest.display())]
    InvalidConfig {
        /// The table ("package.metadata.imgbuild", ...).
        table: String,
        /// The Cargo.toml holding it.
        manifest: PathBuf,
        /// What is wrong and, where known, how to fix it.
        message: String,
    },
    /// cargo build failed (its diagnostics were shown as cargo printed them).
    #[error("`cargo build` failed ({status}); cargo's messages above say why")]
    BuildFailed {
        /// The exit status.
        status: String,
    },
    /// cargo fetch failed.
    #[error(
        "`cargo fetch` failed ({status}) while downloading dependencies before the offline build; cargo's messages above say why (proxies: HTTPS_PROXY, NO_PROXY; custom CAs: CARGO_HTTP_CAINFO or SSL_CERT_FILE)"
    )]
    FetchFailed {
        /// The exit status.
        status: String,
    },
    /// cargo build succeeded but produced no executable for the binary.
    #[error("`cargo build` finished but reported no executable for binary `{bin}`")]
    NoArtifact {
        /// The binary.
        bin: String,
    },
    /// A helper command exited with an error.
    #[error("`{command}` ({purpose}) failed:\n{stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Why it was run.
        purpose: &'static str,
        /// Its error output.
        stderr: String,
    },
    /// A process could not be started.
    #[error("could not run `{program}` ({purpose}): {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why it was run.
        purpose: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A filesystem operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
