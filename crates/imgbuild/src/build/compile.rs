//! Stage `compile`: `cargo fetch` when downloads are missing (with the caller's network
//! settings), then `cargo build --locked --offline` with the allowlisted environment, a private
//! HOME and TMPDIR, in a network sandbox where one is available.
//!
//! Runs cargo (through `imgbuild_cargo::run`) and creates the private directories under the
//! cache directory.

use imgbuild_cargo::run::{self, BuildOutcome};
use imgbuild_cargo::units::{self, DependencyUnits};

use crate::Result;
use crate::build::Setup;
use crate::context::Context;
use crate::depcache::packer::Packer;
use crate::event::{CargoMonitor, Event, IsolationMethod, NetworkAccess, Reporter};
use crate::supply::Network;

/// What cargo built.
pub(crate) struct Compiled {
    /// Cargo's outcome: the executable and every unit's files.
    pub(crate) outcome: BuildOutcome,
    /// The dependency units among them (the dependency cache's content).
    pub(crate) dependencies: DependencyUnits,
    /// How the compile reached the network (the provenance says).
    pub(crate) network: Network,
}

/// Runs the stage.
pub(crate) fn compile(
    cx: &Context<'_>,
    s: &Setup,
    packer: Option<&Packer>,
    reporter: &dyn Reporter,
) -> Result<Compiled> {
    let options = cx.options;
    let target = &cx.one().target;
    // Downloads happen here, with the caller's network settings; the compile is offline.
    if run::missing_downloads(s.keys.lock()) {
        let triple = cx.cargo_triple.as_deref().unwrap_or(s.keys.triple());
        run::fetch(&target.package.manifest_path, triple, &cx.toolchain)?;
    }
    let sandbox = match &cx.toolchain {
        run::Toolchain::Environment(_) => environment_isolation(options.allow_network, reporter),
        run::Toolchain::Host => isolation(cx, options.allow_network, reporter),
    };
    let network = match &sandbox {
        None => Network::Allowed,
        Some(run::Sandbox::Unavailable(_)) => Network::NotIsolated,
        Some(_) => Network::Isolated,
    };
    let private = crate::hermetic::PrivateDirs::create(&cx.cache)?;
    let caller = caller_env(cx);
    let rustup_home = cx
        .env
        .rustup_home()
        .filter(|_| !cx.toolchain.is_environment());
    let compile_env =
        imgbuild_cargo::hermetic::compile_env(&imgbuild_cargo::hermetic::CompileEnv {
            caller: &caller,
            pass: &options.pass_env,
            home: &private.home(),
            tmp: &private.tmp(),
            cargo_home: &run::cargo_home(),
            rustup_home: rustup_home.as_deref(),
            source_date_epoch: cx.epoch,
            environment: cx.toolchain.base_env(),
        });
    let outcome = run::build(&run::BuildRequest {
        target,
        profile: &options.profile,
        triple: cx.cargo_triple.as_deref(),
        features: options.cargo_features(),
        wrapper: &cx.wrapper,
        toolchain: &cx.toolchain,
        isolation: Some(run::Isolation {
            env: &compile_env,
            sandbox: sandbox.as_ref(),
        }),
        expected_units: s.dependency_key.packages(),
        monitor: &Monitor {
            display: CargoMonitor(reporter),
            packer,
        },
    })?;
    drop(private);
    let dependencies = units::dependency_units(&outcome, &s.profile_dir);
    reporter.report(&Event::Compiled {
        executable: outcome.executable.display().to_string(),
        dependencies_compiled: dependencies.compiled,
        dependencies_fresh: dependencies.fresh,
        compiled_packages: dependencies.compiled_packages.clone(),
        members_compiled: members_compiled(&outcome),
    });
    Ok(Compiled {
        outcome,
        dependencies,
        network,
    })
}

/// The display's monitor, and the packer told of every finished unit.
struct Monitor<'a> {
    display: CargoMonitor<'a>,
    packer: Option<&'a Packer>,
}

impl run::Monitor for Monitor<'_> {
    fn progress(&self, progress: &run::UnitProgress) {
        self.display.progress(progress);
    }

    fn relay_stderr(&self) -> bool {
        self.display.relay_stderr()
    }

    fn stderr_line(&self, line: &str) {
        self.display.stderr_line(line);
    }

    fn color(&self) -> Option<bool> {
        self.display.color()
    }

    fn unit_finished(&self, unit: &run::Unit) {
        if let Some(packer) = self.packer {
            packer.unit_finished(unit);
        }
    }
}

/// The path packages (`name@version`) of which cargo compiled a unit, sorted.
fn members_compiled(outcome: &BuildOutcome) -> Vec<String> {
    let names: std::collections::BTreeSet<String> = outcome
        .compiled
        .iter()
        .filter(|u| !u.fresh && !units::is_cacheable(&u.package_id))
        .map(|u| units::package_label(&u.package_id).into_owned())
        .collect();
    names.into_iter().collect()
}

/// The caller's environment as the compile step filters it, with the target directory the
/// options force (if any) in place of the caller's.
fn caller_env(cx: &Context<'_>) -> Vec<(String, String)> {
    let mut caller: Vec<(String, String)> = cx
        .env
        .pairs()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(dir) = &cx.forced_target_dir {
        caller.retain(|(k, _)| {
            !matches!(
                k.as_str(),
                "CARGO_TARGET_DIR" | "CARGO_BUILD_TARGET_DIR" | "CARGO_BUILD_BUILD_DIR"
            )
        });
        caller.push((
            "CARGO_TARGET_DIR".into(),
            dir.to_string_lossy().into_owned(),
        ));
    }
    caller
}

/// Inside a build environment bubblewrap is the sandbox already (it is how the environment is
/// entered): no probe, and the network is off unless `--allow-network`.
fn environment_isolation(allow_network: bool, reporter: &dyn Reporter) -> Option<run::Sandbox> {
    reporter.report(&Event::Isolation {
        network: if allow_network {
            NetworkAccess::Allowed
        } else {
            NetworkAccess::Isolated
        },
        method: IsolationMethod::Bubblewrap,
        why: allow_network.then(|| "--allow-network".into()),
    });
    (!allow_network).then(|| run::Sandbox::Bubblewrap("bwrap".into()))
}

/// Probes the network sandbox the compile will use, ahead of it (beside the app-cache
/// lookup): the answer is remembered, so the compile finds it. Nothing to probe inside a build
/// environment or with `--allow-network`.
pub(crate) fn probe_sandbox(cx: &Context<'_>) {
    if !cx.options.allow_network && !cx.toolchain.is_environment() {
        crate::probecache::sandbox(&cx.cache, &cx.env);
    }
}

/// The network sandbox for the compile step (`None` with `--allow-network`), reported once.
fn isolation(
    cx: &Context<'_>,
    allow_network: bool,
    reporter: &dyn Reporter,
) -> Option<run::Sandbox> {
    if allow_network {
        reporter.report(&Event::Isolation {
            network: NetworkAccess::Allowed,
            method: IsolationMethod::None,
            why: Some("--allow-network".into()),
        });
        return None;
    }
    let sandbox = crate::probecache::sandbox(&cx.cache, &cx.env);
    match &sandbox {
        run::Sandbox::Unavailable(reason) => {
            reporter.report(&Event::Isolation {
                network: NetworkAccess::NotIsolated,
                method: IsolationMethod::None,
                why: Some(reason.clone()),
            });
            reporter.report(&Event::Warning {
                message: format!(
                    "network isolation is off for this build: {reason}. Build scripts could reach the network; the environment is still scrubbed and the build offline. Install bubblewrap, or allow unprivileged user namespaces, to isolate it."
                ),
            });
        }
        run::Sandbox::Bubblewrap(_) | run::Sandbox::Unshare(_) => {
            reporter.report(&Event::Isolation {
                network: NetworkAccess::Isolated,
                method: match sandbox {
                    run::Sandbox::Bubblewrap(_) => IsolationMethod::Bubblewrap,
                    _ => IsolationMethod::Unshare,
                },
                why: None,
            })
        }
    }
    Some(sandbox)
}
