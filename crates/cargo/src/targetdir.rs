//! Where cargo's target directory will be, told before `cargo metadata` answers, in the cases
//! where that can be known for sure.
//!
//! Why: cargo keeps what it asked rustc (`-vV`, the target's file names and cfg, about 50 ms
//! of probes) in `.rustc_info.json` in the target directory, but only when that directory
//! already exists when it exits. On a fresh checkout `cargo metadata` runs before any
//! `target/`; with the directory made first, `cargo tree` and the build reuse its answers.
//!
//! Pure: the caller reads the manifest, the config files and the environment.

use std::path::{Path, PathBuf};

/// What decides cargo's target directory, as read before running cargo.
#[derive(Clone, Copy)]
pub struct TargetDirInputs<'a> {
    /// The directory of the manifest cargo is given.
    pub manifest_dir: &'a Path,
    /// That manifest's text.
    pub manifest: &'a str,
    /// Whether a directory above `manifest_dir` holds a `Cargo.toml` (a workspace that may
    /// claim the package).
    pub manifest_above: bool,
    /// The texts of the cargo config files that apply (the current directory's and its
    /// parents' `.cargo/config.toml` and `.cargo/config`, cargo's home's).
    pub configs: &'a [String],
    /// The environment.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// The environment variables that move cargo's target or build directory.
const MOVED_BY: [&str; 3] = [
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_BUILD_DIR",
];

/// Cargo's target directory for these inputs when it is sure to be `<workspace root>/target`
/// and the workspace root is sure to be the manifest's directory; `None` when anything could
/// move it (an environment variable, a `target-dir` or `build-dir` in a config file) or the
/// root could be elsewhere (a `package.workspace` key, a `Cargo.toml` above).
pub fn predict(inputs: &TargetDirInputs<'_>) -> Option<PathBuf> {
    if MOVED_BY.iter().any(|var| (inputs.env)(var).is_some()) {
        return None;
    }
    if inputs
        .configs
        .iter()
        .any(|text| text.contains("target-dir") || text.contains("build-dir"))
    {
        return None;
    }
    let lines = || inputs.manifest.lines().map(str::trim_start);
    let is_root = lines().any(|l| l.starts_with("[workspace]") || l.starts_with("[workspace."));
    let points_elsewhere = lines().any(|l| {
        l.strip_prefix("workspace")
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    });
    if points_elsewhere || (!is_root && inputs.manifest_above) {
        return None;
    }
    Some(inputs.manifest_dir.join("target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn predict_with(
        manifest: &str,
        manifest_above: bool,
        configs: &[&str],
        env: &[(&str, &str)],
    ) -> Option<PathBuf> {
        let configs: Vec<String> = configs.iter().map(|c| c.to_string()).collect();
        let lookup = |k: &str| {
            env.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        };
        predict(&TargetDirInputs {
            manifest_dir: Path::new("/src/app"),
            manifest,
            manifest_above,
            configs: &configs,
            env: &lookup,
        })
    }

    const PACKAGE: &str = "[package]\nname = \"app\"\nversion = \"0.1.0\"\n";

    #[test]
    fn a_workspace_root_or_a_lone_package_has_its_target_beside_the_manifest() {
        let root = "[workspace]\nmembers = [\"crates/*\"]\n";
        let expected = Some(PathBuf::from("/src/app/target"));
        assert_eq!(predict_with(root, true, &[], &[]), expected);
        assert_eq!(predict_with(PACKAGE, false, &[], &[]), expected);
        let with_table = format!("{PACKAGE}\n[workspace.dependencies]\nserde = \"1\"\n");
        assert_eq!(predict_with(&with_table, true, &[], &[]), expected);
    }

    #[test]
    fn a_package_that_a_workspace_above_may_claim_is_not_guessed() {
        assert_eq!(predict_with(PACKAGE, true, &[], &[]), None);
        let pointing = format!("{PACKAGE}workspace = \"../..\"\n");
        assert_eq!(predict_with(&pointing, false, &[], &[]), None);
    }

    #[test]
    fn an_environment_variable_or_a_config_file_that_moves_the_directory_stops_the_guess() {
        for var in MOVED_BY {
            assert_eq!(
                predict_with(PACKAGE, false, &[], &[(var, "/elsewhere")]),
                None
            );
        }
        for config in [
            "[build]\ntarget-dir = \"/elsewhere\"\n",
            "build.build-dir = \"/x\"\n",
        ] {
            assert_eq!(predict_with(PACKAGE, false, &["", config], &[]), None);
        }
        let unrelated = "[net]\ngit-fetch-with-cli = true\n";
        assert!(predict_with(PACKAGE, false, &[unrelated], &[]).is_some());
    }
}
