//! The dependency list embedded in the binary (pure), in `cargo auditable`'s format: the
//! `.dep-v0` section holds zlib-compressed JSON of `auditable_serde::VersionInfo` (every
//! package of the tree, its source kind, whether it is a build-time dependency, the edges,
//! the root). trivy, grype and syft read it to report a binary's Rust crates.

use auditable_serde::{DependencyKind, Package, Source, VersionInfo};

use super::Crate;
use crate::{Error, Result};

/// The section's name.
pub(crate) const SECTION: &str = ".dep-v0";

/// Format revision 1: like cargo metadata's, with proc macros and their dependencies recorded
/// as build-time (see `auditable_serde::VersionInfo::format`).
const FORMAT: u32 = 1;

fn source(p: &imgbuild_cargo::graph::TreePackage) -> Source {
    match p.source.as_deref() {
        None => Source::Local,
        Some(s)
            if s.starts_with("registry+https://github.com/rust-lang/crates.io-index")
                || s.starts_with("sparse+https://index.crates.io/") =>
        {
            Source::CratesIo
        }
        Some(s) if s.starts_with("git+") => Source::Git,
        Some(_) => Source::Registry,
    }
}

/// The section's bytes for `crates`.
pub(crate) fn section(crates: &[Crate]) -> Result<Vec<u8>> {
    let invalid = |reason: String| Error::AuditData { reason };
    let packages = crates
        .iter()
        .map(|c| {
            let p = &c.package;
            Ok(Package {
                name: p.name.clone(),
                version: p
                    .version
                    .parse()
                    .map_err(|e| invalid(format!("{} has version {:?}: {e}", p.name, p.version)))?,
                source: source(p),
                kind: if p.runtime {
                    DependencyKind::Runtime
                } else {
                    DependencyKind::Build
                },
                dependencies: p.dependencies.clone(),
                root: p.root,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let info = VersionInfo {
        packages,
        format: FORMAT,
    };
    let json = serde_json::to_vec(&info).map_err(|e| invalid(e.to_string()))?;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(7));
    std::io::Write::write_all(&mut z, &json).map_err(|e| invalid(e.to_string()))?;
    z.finish().map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supply::testing::facts;

    #[test]
    fn the_section_reads_back_as_a_valid_dependency_tree() {
        let bytes = section(&facts().crates).unwrap();
        let mut json = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&bytes[..]), &mut json)
            .unwrap();
        let info: VersionInfo = serde_json::from_slice(&json).unwrap();
        assert_eq!(info.packages.len(), 3);
        let root = info.packages.iter().find(|p| p.root).unwrap();
        assert_eq!(root.name, "report");
        assert_eq!(root.source, Source::Local);
        assert_eq!(info.packages[0].kind, DependencyKind::Build);
        assert_eq!(info.format, 1);
        assert_eq!(section(&facts().crates).unwrap(), bytes, "deterministic");
    }
}
