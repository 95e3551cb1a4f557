//! End-to-end tests: the `imgbuild` binary on real projects, its images checked by the real
//! tools users meet: skopeo, umoci, runc and the Docker Engine. A missing tool fails the test
//! with the command that installs it; `.ci/run` installs them all.
//!
//! Each test works in fresh temporary directories and names the issue it covers.

#![allow(clippy::print_stderr, clippy::print_stdout, clippy::disallowed_methods)] // test diagnostics; tests run the real tools

mod support;

mod appcache;
mod base;
mod build_outputs;
mod buildenv;
mod cache;
mod console;
mod deploy;
mod engines;
mod errors;
mod examples;
mod fresh_runner;
mod hermetic;
mod plan;
mod platforms;
mod proxies;
mod registry;
mod registry_support;
mod remote_prune;
mod repair;
mod reproducible;
mod supply;
mod trust;
mod units;
