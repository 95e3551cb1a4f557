//! Platforms an image is built for (`--platform linux/amd64,linux/amd64/v3,linux/arm64`), as
//! the OCI image index names them, and how cargo builds each: its target triple and the rustc
//! flags its own units get (`-C target-cpu=x86-64-v3` for the amd64 microarchitecture
//! levels). Pure.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// One platform: `os/architecture[/variant]`, as in an image index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct Platform {
    /// `linux` (the only operating system imgbuild builds for).
    pub os: String,
    /// The OCI architecture: `amd64`, `arm64`, `arm`, `386`, `riscv64`, `ppc64le`, `s390x`.
    pub architecture: String,
    /// The variant: `v2`/`v3`/`v4` for amd64, `v8` for arm64, `v6`/`v7` for arm.
    pub variant: Option<String>,
}

/// Architectures imgbuild knows a Rust target for: (OCI architecture, Rust triple).
const TRIPLES: [(&str, &str); 7] = [
    ("amd64", "x86_64-unknown-linux-gnu"),
    ("arm64", "aarch64-unknown-linux-gnu"),
    ("arm", "armv7-unknown-linux-gnueabihf"),
    ("386", "i686-unknown-linux-gnu"),
    ("riscv64", "riscv64gc-unknown-linux-gnu"),
    ("ppc64le", "powerpc64le-unknown-linux-gnu"),
    ("s390x", "s390x-unknown-linux-gnu"),
];

impl Platform {
    /// Cargo's `--target` for it.
    pub fn triple(&self) -> &'static str {
        let arch = self.architecture.as_str();
        let base = TRIPLES
            .iter()
            .find(|(a, _)| *a == arch)
            .map(|(_, t)| *t)
            .expect("parse accepts only known architectures");
        match (arch, self.variant.as_deref()) {
            ("arm", Some("v6")) => "arm-unknown-linux-gnueabihf",
            _ => base,
        }
    }

    /// The GNU name of its cross toolchain (`aarch64-linux-gnu`), as Debian's cross
    /// compiler packages (`gcc-aarch64-linux-gnu`) name their programs.
    pub(crate) fn gnu_prefix(&self) -> &'static str {
        match self.architecture.as_str() {
            "amd64" => "x86_64-linux-gnu",
            "arm64" => "aarch64-linux-gnu",
            "arm" => "arm-linux-gnueabihf",
            "386" => "i686-linux-gnu",
            "riscv64" => "riscv64-linux-gnu",
            "ppc64le" => "powerpc64le-linux-gnu",
            _ => "s390x-linux-gnu",
        }
    }

    /// The variable that names its linker for cargo: `CARGO_TARGET_<TRIPLE>_LINKER`.
    pub(crate) fn linker_var(&self) -> String {
        imgbuild_cargo::run::linker_var(self.triple())
    }

    /// The rustc flags for the target's own units (never for build scripts, which run on
    /// the build machine).
    pub fn target_flags(&self) -> Vec<String> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("amd64", Some(level @ ("v2" | "v3" | "v4"))) => {
                vec![format!("-Ctarget-cpu=x86-64-{level}")]
            }
            _ => Vec::new(),
        }
    }

    /// A name for directories and messages: `linux-amd64-v3`.
    pub(crate) fn slug(&self) -> String {
        self.to_string().replace('/', "-")
    }

    /// Whether the build machine (triple `host`) builds it without `--target`: the same
    /// triple and no flags of its own. Such a build shares its caches with plain builds.
    pub(crate) fn is_native(&self, host: &str) -> bool {
        self.triple() == host && self.target_flags().is_empty()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: String| Error::Platform {
            platform: text.to_string(),
            reason: why,
        };
        let parts: Vec<&str> = text.split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => {
                return Err(bad(
                    "write OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64".into(),
                ));
            }
        };
        if os != "linux" {
            return Err(bad("imgbuild builds Linux images only".into()));
        }
        let arch = match arch {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        if !TRIPLES.iter().any(|(a, _)| *a == arch) {
            let known: Vec<&str> = TRIPLES.iter().map(|(a, _)| *a).collect();
            return Err(bad(format!(
                "unknown architecture {arch:?}; known: {}",
                known.join(", ")
            )));
        }
        let variants: &[&str] = match arch {
            "amd64" => &["v1", "v2", "v3", "v4"],
            "arm64" => &["v8"],
            "arm" => &["v6", "v7"],
            _ => &[],
        };
        if let Some(v) = variant.filter(|v| !variants.contains(v)) {
            return Err(bad(format!(
                "unknown variant {v:?} for {arch}{}",
                if variants.is_empty() {
                    String::from(" (it has none)")
                } else {
                    format!("; known: {}", variants.join(", "))
                }
            )));
        }
        // The baseline level is the platform without a variant, as registries list it.
        let variant = variant.filter(|v| !matches!((arch, *v), ("amd64", "v1") | ("arm64", "v8")));
        let variant = match (arch, variant) {
            ("arm", None) => Some("v7"),
            (_, v) => v,
        };
        Ok(Self {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        })
    }
}

/// Parses a comma-separated list (`linux/amd64,linux/amd64/v3`); each platform once.
pub fn parse_list(text: &str) -> Result<Vec<Platform>> {
    let mut platforms = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let p: Platform = part.parse()?;
        if !platforms.contains(&p) {
            platforms.push(p);
        }
    }
    Ok(platforms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_map_to_triples_and_flags() {
        let p: Platform = "linux/amd64/v3".parse().unwrap();
        assert_eq!(p.triple(), "x86_64-unknown-linux-gnu");
        assert_eq!(p.target_flags(), ["-Ctarget-cpu=x86-64-v3"]);
        assert_eq!(p.slug(), "linux-amd64-v3");
        assert!(!p.is_native("x86_64-unknown-linux-gnu"));
        let plain: Platform = "linux/amd64".parse().unwrap();
        assert!(plain.is_native("x86_64-unknown-linux-gnu"));
        assert_eq!(plain, "linux/x86_64/v1".parse().unwrap());
        let arm: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(
            (arm.to_string().as_str(), arm.triple()),
            ("linux/arm64", "aarch64-unknown-linux-gnu")
        );
        assert_eq!(
            "linux/arm".parse::<Platform>().unwrap().to_string(),
            "linux/arm/v7"
        );
    }

    #[test]
    fn bad_platforms_say_what_is_known() {
        for (text, needle) in [
            ("amd64", "OS/ARCH"),
            ("windows/amd64", "Linux images only"),
            ("linux/mips", "known: amd64"),
            ("linux/amd64/v9", "known: v1, v2, v3, v4"),
            ("linux/s390x/v2", "it has none"),
        ] {
            let e = text.parse::<Platform>().unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
        assert_eq!(
            parse_list("linux/amd64, linux/amd64/v3,linux/amd64")
                .unwrap()
                .len(),
            2
        );
    }
}
