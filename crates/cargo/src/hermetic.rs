//! The environment a hermetic compilation sees (pure: takes the caller's variables as values).
//!
//! The compile step does not inherit the caller's environment. It gets an explicit allowlist:
//! the variables that select the toolchain, those that change how dependencies compile (they
//! are also dependency-key inputs, see [`crate::plan::KEY_ENV_VARS`]), the ones the user names
//! with `--pass-env` (also key inputs), and fixed values: a private `HOME` and `TMPDIR`, the C
//! locale, UTC, `SOURCE_DATE_EPOCH`, and `CARGO_NET_OFFLINE=true`. A variable the caller
//! happens to have reaches no build script.
//!
//! The fetch step (`cargo fetch`) is not scrubbed: proxies, custom CAs and registry settings
//! are what it needs to reach the network. It compiles nothing.

use std::path::Path;

use crate::plan::KEY_ENV_VARS;

/// Variables passed through because they choose the toolchain or cargo's behaviour without
/// changing what a build script sees of the caller.
pub const TOOLCHAIN_VARS: &[&str] = &[
    "PATH",
    "RUSTUP_TOOLCHAIN",
    "RUSTC",
    "RUSTDOC",
    "CARGO",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_BUILD_DIR",
    "CARGO_BUILD_JOBS",
    "CARGO_INCREMENTAL",
    "CARGO_TERM_COLOR",
];

/// Toolchain variables that name the host's tools: inside a build environment the
/// environment's own values (its image config's `ENV`) stand instead.
pub const HOST_TOOLCHAIN_VARS: &[&str] = &["PATH", "RUSTUP_TOOLCHAIN", "RUSTC", "RUSTDOC", "CARGO"];

/// What the compile environment is made of.
#[derive(Debug, Clone)]
pub struct CompileEnv<'a> {
    /// The caller's environment.
    pub caller: &'a [(String, String)],
    /// Variables the user asked to pass (`--pass-env`).
    pub pass: &'a [String],
    /// The private home directory.
    pub home: &'a Path,
    /// The private temporary directory.
    pub tmp: &'a Path,
    /// Cargo's home (registry sources), as the caller resolves it.
    pub cargo_home: &'a Path,
    /// Rustup's home, when the toolchain comes from rustup.
    pub rustup_home: Option<&'a Path>,
    /// The build's `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: u64,
    /// Inside a build environment: the variables its commands start from (the image's `ENV`);
    /// the caller's [`HOST_TOOLCHAIN_VARS`] are then left out.
    pub environment: Option<&'a [(String, String)]>,
}

/// Whether a caller variable passes into the compile step: the toolchain's, the key's,
/// profile overrides, a target's linker (`CARGO_TARGET_<TRIPLE>_LINKER`, a key input through
/// the machine lines) and those passed with `--pass-env`.
pub fn passes(name: &str, pass: &[String]) -> bool {
    TOOLCHAIN_VARS.contains(&name)
        || KEY_ENV_VARS.contains(&name)
        || name.starts_with("CARGO_PROFILE_")
        || (name.starts_with("CARGO_TARGET_") && name.ends_with("_LINKER"))
        || pass.iter().any(|p| p == name)
}

/// The variables whose value is the same in every build (given the epoch).
fn fixed(source_date_epoch: u64) -> [(&'static str, String); 5] {
    [
        ("LANG", "C".to_string()),
        ("LC_ALL", "C".to_string()),
        ("TZ", "UTC".to_string()),
        ("SOURCE_DATE_EPOCH", source_date_epoch.to_string()),
        ("CARGO_NET_OFFLINE", "true".to_string()),
    ]
}

/// The value `name` has in the compile step, as far as it is the same from build to build:
/// a fixed value, or the caller's (`caller`) when it passes the allowlist. The per-build and
/// per-machine paths (`HOME`, `TMPDIR`, `CARGO_HOME`, `RUSTUP_HOME`) give `None`.
pub fn stable_value(
    name: &str,
    caller: &dyn Fn(&str) -> Option<String>,
    pass: &[String],
    source_date_epoch: u64,
) -> Option<String> {
    if let Some((_, v)) = fixed(source_date_epoch)
        .into_iter()
        .find(|(k, _)| *k == name)
    {
        return Some(v);
    }
    if matches!(name, "HOME" | "TMPDIR" | "CARGO_HOME" | "RUSTUP_HOME") {
        return None;
    }
    passes(name, pass).then(|| caller(name)).flatten()
}

/// The compile step's whole environment, sorted by name.
pub fn compile_env(c: &CompileEnv<'_>) -> Vec<(String, String)> {
    let mut env: std::collections::BTreeMap<String, String> =
        c.environment.unwrap_or_default().iter().cloned().collect();
    env.extend(
        c.caller
            .iter()
            .filter(|(k, _)| passes(k, c.pass))
            .filter(|(k, _)| c.environment.is_none() || !HOST_TOOLCHAIN_VARS.contains(&k.as_str()))
            .cloned(),
    );
    let path = |p: &Path| p.to_string_lossy().into_owned();
    env.insert("HOME".into(), path(c.home));
    env.insert("TMPDIR".into(), path(c.tmp));
    env.insert("CARGO_HOME".into(), path(c.cargo_home));
    for (k, v) in fixed(c.source_date_epoch) {
        env.insert(k.to_string(), v);
    }
    if let Some(r) = c.rustup_home {
        env.insert("RUSTUP_HOME".to_string(), path(r));
    }
    env.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_variables_pass_and_the_fixed_ones_win() {
        let caller: Vec<(String, String)> = [
            ("PATH", "/usr/bin"),
            ("RUSTFLAGS", "-Copt-level=2"),
            ("CARGO_PROFILE_RELEASE_LTO", "true"),
            ("AWS_SECRET_ACCESS_KEY", "hunter2"),
            ("HOME", "/home/me"),
            ("TZ", "Europe/Paris"),
            ("DATABASE_URL", "postgres://x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let env = compile_env(&CompileEnv {
            caller: &caller,
            pass: &["DATABASE_URL".to_string()],
            home: Path::new("/cache/sandbox/home"),
            tmp: Path::new("/cache/sandbox/tmp"),
            cargo_home: Path::new("/home/me/.cargo"),
            rustup_home: None,
            source_date_epoch: 7,
            environment: None,
        });
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/usr/bin"));
        assert_eq!(get("RUSTFLAGS"), Some("-Copt-level=2"));
        assert_eq!(get("CARGO_PROFILE_RELEASE_LTO"), Some("true"));
        assert_eq!(get("DATABASE_URL"), Some("postgres://x"));
        assert_eq!(get("AWS_SECRET_ACCESS_KEY"), None);
        assert_eq!(get("HOME"), Some("/cache/sandbox/home"));
        assert_eq!(get("TZ"), Some("UTC"));
        assert_eq!(get("SOURCE_DATE_EPOCH"), Some("7"));
        assert_eq!(get("CARGO_NET_OFFLINE"), Some("true"));

        let lookup = |k: &str| caller.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let pass = ["DATABASE_URL".to_string()];
        for name in [
            "TZ",
            "SOURCE_DATE_EPOCH",
            "RUSTFLAGS",
            "DATABASE_URL",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert_eq!(
                stable_value(name, &lookup, &pass, 7).as_deref(),
                get(name),
                "{name}: the same value as the compile step sees"
            );
        }
        assert_eq!(stable_value("HOME", &lookup, &pass, 7), None);

        // Inside a build environment its PATH stands; the caller's other choices pass.
        let image = [
            (
                "PATH".to_string(),
                "/usr/local/cargo/bin:/usr/bin".to_string(),
            ),
            ("RUSTUP_HOME".to_string(), "/usr/local/rustup".to_string()),
        ];
        let inside = compile_env(&CompileEnv {
            caller: &caller,
            pass: &[],
            home: Path::new("/h"),
            tmp: Path::new("/t"),
            cargo_home: Path::new("/home/me/.cargo"),
            rustup_home: None,
            source_date_epoch: 7,
            environment: Some(&image),
        });
        let get = |k: &str| inside.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/usr/local/cargo/bin:/usr/bin"));
        assert_eq!(get("RUSTUP_HOME"), Some("/usr/local/rustup"));
        assert_eq!(get("RUSTFLAGS"), Some("-Copt-level=2"));
        assert_eq!(get("CARGO_HOME"), Some("/home/me/.cargo"));
        assert_eq!(get("AWS_SECRET_ACCESS_KEY"), None);
    }
}
