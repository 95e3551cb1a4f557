//! The process environment, read once (`std::env` is read here and nowhere else in the
//! crate's planning code).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The process environment, read once. Everything downstream asks this snapshot, never
/// `std::env`, so one command sees one environment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The current process's variables (those that are not UTF-8 are left out: cargo refuses
    /// them for the variables imgbuild reads).
    pub(crate) fn capture() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// One variable's value.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Every variable, sorted by name.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Rustup's home: `$RUSTUP_HOME`, else `~/.rustup` when it exists (the toolchain proxies
    /// need it once `HOME` is private).
    pub(crate) fn rustup_home(&self) -> Option<PathBuf> {
        if let Some(h) = self.get("RUSTUP_HOME").filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(h));
        }
        let home = PathBuf::from(self.get("HOME")?).join(".rustup");
        home.is_dir().then_some(home)
    }
}
