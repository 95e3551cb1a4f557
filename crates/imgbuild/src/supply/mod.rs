//! The supply-chain documents of an image (pure): what is inside it (SBOMs, SPDX 2.3 and
//! CycloneDX 1.6), how it was built (an in-toto statement with a SLSA v1 provenance
//! predicate), and the dependency list embedded in the binary the way `cargo auditable` does.
//!
//! Every document is made from one [`Facts`] value, which the `attach` stage gathers from
//! what the build knows exactly: the binary's resolved tree (`cargo tree`) with Cargo.lock's
//! checksums and sources, cargo metadata's licenses and dependency edges, the libraries of the
//! closure layer (with their Debian packages when the build root has a dpkg database), the
//! base image and the build environment. Same facts, same bytes: times come from
//! `SOURCE_DATE_EPOCH` and every list has a fixed order.

pub(crate) mod audit;
pub(crate) mod cyclonedx;
pub(crate) mod provenance;
pub(crate) mod spdx;

use imgbuild_cargo::graph::TreePackage;

/// `artifactType` of an SPDX SBOM referrer (and its layer's media type).
pub(crate) const SPDX_TYPE: &str = "application/spdx+json";
/// `artifactType` of a CycloneDX SBOM referrer (and its layer's media type).
pub(crate) const CYCLONEDX_TYPE: &str = "application/vnd.cyclonedx+json";
/// `artifactType` of the provenance referrer (and its layer's media type).
pub(crate) const IN_TOTO_TYPE: &str = "application/vnd.in-toto+json";
/// `artifactType` of the debug-info referrer.
pub(crate) const DEBUGINFO_TYPE: &str = "application/vnd.imgbuild.debuginfo";
/// Media type of the debug-info layer: an ELF file with only debug sections (zlib).
pub(crate) const DEBUGINFO_LAYER_TYPE: &str = "application/vnd.imgbuild.debuginfo.elf";
/// The referrers an app-cache entry carries to the cache repository: what a hit reuses (the
/// provenance is made again by every build, since it names that build's outputs).
pub(crate) const SHARED_TYPES: [&str; 3] = [SPDX_TYPE, CYCLONEDX_TYPE, DEBUGINFO_TYPE];
/// Annotation of the debug-info referrer: the binary's GNU build-id, hex.
pub(crate) const BUILD_ID_ANNOTATION: &str = "dev.imgbuild.build-id";

/// A crate of the binary's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Crate {
    /// Name, version, source, license, edges, run-time or build-time.
    pub(crate) package: TreePackage,
    /// Cargo.lock's sha256 checksum (registry packages).
    pub(crate) checksum: Option<String>,
}

/// A Debian package, as `dpkg` knows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct DebPackage {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) arch: String,
    /// `ID` of the build root's `os-release` (`debian`, `ubuntu`), the purl's namespace.
    pub(crate) distro: String,
}

/// A shared library in the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Library {
    /// Its path in the image.
    pub(crate) path: String,
    /// sha256 of its bytes, hex.
    pub(crate) sha256: String,
    /// The Debian package it came from, when known.
    pub(crate) deb: Option<DebPackage>,
}

/// An image this one was built from or with (a base, a build environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef {
    pub(crate) reference: String,
    pub(crate) digest: String,
}

/// How the compile step reached the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Network {
    /// A sandbox without network.
    Isolated,
    /// No sandbox was available.
    NotIsolated,
    /// `--allow-network`.
    Allowed,
}

/// Everything the documents say.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    /// `name:tag`.
    pub(crate) image: String,
    /// The image manifest's digest: the subject of every document.
    pub(crate) manifest_digest: String,
    /// The binary's package.
    pub(crate) package: String,
    /// The binary's name.
    pub(crate) bin: String,
    /// The tree, sorted by name and version; `dependencies` index into it.
    pub(crate) crates: Vec<Crate>,
    pub(crate) libraries: Vec<Library>,
    pub(crate) base: Option<ImageRef>,
    pub(crate) build_env: Option<ImageRef>,
    /// Seconds since the epoch (`SOURCE_DATE_EPOCH`).
    pub(crate) created: u64,
    /// What the provenance records besides.
    pub(crate) build: BuildFacts,
}

/// How the image was built: the provenance's parameters.
#[derive(Debug, Clone)]
pub(crate) struct BuildFacts {
    pub(crate) profile: String,
    /// The feature selection, as cargo flags.
    pub(crate) features: Vec<String>,
    /// The outputs as given.
    pub(crate) outputs: Vec<String>,
    /// The checkout's git revision.
    pub(crate) revision: Option<String>,
    /// sha256 of Cargo.lock, hex.
    pub(crate) lockfile_sha256: String,
    /// The target triple and `rustc -vV`'s `release:` line.
    pub(crate) target: String,
    pub(crate) rustc: String,
    /// `None` when the build that made the image did not record it.
    pub(crate) network: Option<Network>,
}

/// `name@version` as a package URL of type `cargo`.
pub(crate) fn cargo_purl(name: &str, version: &str) -> String {
    format!("pkg:cargo/{name}@{version}")
}

/// An image as a package URL of type `oci` (`pkg:oci/NAME@sha256%3A…`).
pub(crate) fn oci_purl(r: &ImageRef) -> String {
    format!(
        "pkg:oci/{}@{}",
        oci_name(&r.reference),
        r.digest.replace(':', "%3A")
    )
}

/// A Debian package as a package URL of type `deb`.
pub(crate) fn deb_purl(d: &DebPackage) -> String {
    format!(
        "pkg:deb/{}/{}@{}?arch={}",
        d.distro,
        d.name,
        d.version.replace('+', "%2B").replace(':', "%3A"),
        d.arch
    )
}

/// The last path component of a reference, without its tag or digest (a purl's name).
pub(crate) fn oci_name(reference: &str) -> String {
    let path = reference.split('@').next().unwrap_or(reference);
    let last = path.rsplit('/').next().unwrap_or(path);
    last.split(':').next().unwrap_or(last).to_string()
}

/// A license as cargo metadata gives it, when it is an SPDX expression; `None` otherwise (the
/// old `MIT/Apache-2.0` form, or none).
pub(crate) fn license_expression(text: Option<&str>) -> Option<String> {
    let text = text.map(str::trim).filter(|t| !t.is_empty())?;
    let valid = text.split_whitespace().all(|token| {
        let token = token.trim_matches(|c| c == '(' || c == ')');
        matches!(token, "AND" | "OR" | "WITH")
            || (!token.is_empty()
                && token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+')))
    });
    valid.then(|| text.to_string())
}

/// Where a crate's source can be downloaded, when it is known.
pub(crate) fn download_url(p: &TreePackage) -> Option<String> {
    match p.source.as_deref() {
        Some(s)
            if s.starts_with("registry+https://github.com/rust-lang/crates.io-index")
                || s.starts_with("sparse+https://index.crates.io/") =>
        {
            Some(format!(
                "https://crates.io/api/v1/crates/{}/{}/download",
                p.name, p.version
            ))
        }
        Some(s) if s.starts_with("git+") => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Facts shared by the documents' tests.
    use super::*;

    fn package(name: &str, version: &str, source: Option<&str>, license: &str) -> TreePackage {
        let mut p = imgbuild_cargo::graph::PackageGraph::default()
            .packages(
                &[imgbuild_cargo::plan::TreeEntry {
                    name: name.into(),
                    version: version.into(),
                    location: None,
                    features: Vec::new(),
                }],
                "",
            )
            .remove(0);
        p.source = source.map(String::from);
        p.license = Some(license.into());
        p
    }

    pub(crate) fn facts() -> Facts {
        let crates_io = Some("registry+https://github.com/rust-lang/crates.io-index");
        let mut old = package("old", "0.1.0", crates_io, "MIT/Apache-2.0");
        old.runtime = false;
        let mut serde = package("serde_json", "1.0.1", crates_io, "MIT OR Apache-2.0");
        serde.runtime = true;
        serde.dependencies = vec![0];
        let mut report = package("report", "0.2.0", None, "MIT");
        report.root = true;
        report.runtime = true;
        report.dependencies = vec![0, 2];
        Facts {
            image: "report:v1".into(),
            manifest_digest: format!("sha256:{}", "a".repeat(64)),
            package: "report".into(),
            bin: "report".into(),
            crates: vec![
                Crate {
                    package: old,
                    checksum: Some("e".repeat(64)),
                },
                Crate {
                    package: report,
                    checksum: None,
                },
                Crate {
                    package: serde,
                    checksum: Some("b".repeat(64)),
                },
            ],
            libraries: vec![Library {
                path: "/lib/x86_64-linux-gnu/libc.so.6".into(),
                sha256: "c".repeat(64),
                deb: Some(DebPackage {
                    name: "libc6".into(),
                    version: "2.36-9+deb12u7".into(),
                    arch: "amd64".into(),
                    distro: "debian".into(),
                }),
            }],
            base: None,
            build_env: Some(ImageRef {
                reference: format!("registry.example/rust@sha256:{}", "d".repeat(64)),
                digest: format!("sha256:{}", "d".repeat(64)),
            }),
            created: 0,
            build: BuildFacts {
                profile: "release".into(),
                features: vec!["--features".into(), "json".into()],
                outputs: vec!["oci:out".into()],
                revision: Some("f".repeat(40)),
                lockfile_sha256: "9".repeat(64),
                target: "x86_64-unknown-linux-gnu".into(),
                rustc: "1.95.0".into(),
                network: Some(Network::Isolated),
            },
        }
    }
}
