//! The SPDX 2.3 JSON document of an image (pure): the image, its binary, every crate of the
//! binary's tree (purls, Cargo.lock checksums, download locations, declared licenses; crates
//! that only run at build time are build dependencies), the libraries of the closure layer
//! (with their Debian packages when known), the base image and the build environment.

use serde_json::{Value, json};

use super::{Crate, Facts, ImageRef, Library};

/// An SPDX identifier: letters, digits, `.` and `-` only.
fn spdx_id(kind: &str, n: usize, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{kind}-{n}-{clean}")
}

fn purl_ref(locator: String) -> Value {
    json!({
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": locator,
    })
}

fn image_package(id: &str, r: &ImageRef) -> Value {
    json!({
        "SPDXID": id,
        "name": r.reference,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": r.digest.trim_start_matches("sha256:")}],
        "externalRefs": [purl_ref(super::oci_purl(r))],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    })
}

/// One crate of the binary's tree; the root crate is the binary, the image's application.
fn crate_package(id: &str, c: &Crate, bin: &str) -> Value {
    let p = &c.package;
    let mut pkg = json!({
        "SPDXID": id,
        "name": if p.root { bin } else { &p.name },
        "versionInfo": p.version,
        "downloadLocation": super::download_url(p).unwrap_or_else(|| "NOASSERTION".into()),
        "filesAnalyzed": false,
        "primaryPackagePurpose": if p.root { "APPLICATION" } else { "LIBRARY" },
        "externalRefs": [purl_ref(super::cargo_purl(&p.name, &p.version))],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": super::license_expression(p.license.as_deref())
            .unwrap_or_else(|| "NOASSERTION".into()),
        "copyrightText": "NOASSERTION",
    });
    if let Some(sum) = &c.checksum {
        pkg["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": sum}]);
    }
    pkg
}

/// A shared library of the closure layer.
fn library_package(id: &str, file: &str, l: &Library) -> Value {
    let mut pkg = json!({
        "SPDXID": id,
        "name": file,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "LIBRARY",
        "checksums": [{"algorithm": "SHA256", "checksumValue": l.sha256}],
        "comment": format!("{} in the image's libraries layer", l.path),
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    });
    if let Some(deb) = &l.deb {
        pkg["versionInfo"] = json!(deb.version);
        pkg["sourceInfo"] = json!(format!("from the Debian package {}", deb.name));
        pkg["externalRefs"] = json!([purl_ref(super::deb_purl(deb))]);
    }
    pkg
}

fn relationship(from: &str, kind: &str, to: &str) -> Value {
    json!({"spdxElementId": from, "relationshipType": kind, "relatedSpdxElement": to})
}

/// The crates' packages and the edges between them (`A DEPENDS_ON B` for run-time crates,
/// `B BUILD_DEPENDENCY_OF A` for build-time ones).
fn crates(f: &Facts, packages: &mut Vec<Value>, relationships: &mut Vec<Value>) {
    let ids: Vec<String> = f
        .crates
        .iter()
        .enumerate()
        .map(|(n, c)| {
            if c.package.root {
                "SPDXRef-Binary".to_string()
            } else {
                spdx_id("Crate", n, &c.package.name)
            }
        })
        .collect();
    let mut has_parent = vec![false; f.crates.len()];
    for (c, id) in f.crates.iter().zip(&ids) {
        packages.push(crate_package(id, c, &f.bin));
        for &d in &c.package.dependencies {
            has_parent[d] = true;
            if f.crates[d].package.runtime {
                relationships.push(relationship(id, "DEPENDS_ON", &ids[d]));
            } else {
                relationships.push(relationship(&ids[d], "BUILD_DEPENDENCY_OF", id));
            }
        }
    }
    for (i, c) in f.crates.iter().enumerate() {
        if c.package.root {
            relationships.push(relationship("SPDXRef-Image", "CONTAINS", &ids[i]));
        } else if !has_parent[i] {
            // Not reached by any edge cargo metadata gave: still part of the binary's tree.
            relationships.push(relationship("SPDXRef-Binary", "DEPENDS_ON", &ids[i]));
        }
    }
}

/// The SPDX 2.3 document.
pub(crate) fn document(f: &Facts) -> Value {
    let image = ImageRef {
        reference: f.image.clone(),
        digest: f.manifest_digest.clone(),
    };
    let mut packages = vec![image_package("SPDXRef-Image", &image)];
    let mut relationships = vec![relationship(
        "SPDXRef-DOCUMENT",
        "DESCRIBES",
        "SPDXRef-Image",
    )];
    crates(f, &mut packages, &mut relationships);
    for (n, l) in f.libraries.iter().enumerate() {
        let file = l.path.rsplit('/').next().unwrap_or(&l.path);
        let id = spdx_id("Library", n, file);
        packages.push(library_package(&id, file, l));
        relationships.push(relationship("SPDXRef-Image", "CONTAINS", &id));
    }
    if let Some(base) = &f.base {
        packages.push(image_package("SPDXRef-Base", base));
        relationships.push(relationship(
            "SPDXRef-Image",
            "DESCENDANT_OF",
            "SPDXRef-Base",
        ));
    }
    if let Some(env) = &f.build_env {
        packages.push(image_package("SPDXRef-BuildEnvironment", env));
        relationships.push(relationship(
            "SPDXRef-BuildEnvironment",
            "BUILD_TOOL_OF",
            "SPDXRef-Binary",
        ));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f.image,
        "documentNamespace": format!(
            "https://imgbuild.invalid/spdx/{}/{}",
            super::oci_name(&f.image),
            f.manifest_digest.trim_start_matches("sha256:")
        ),
        "creationInfo": {
            "created": crate::time::rfc3339(f.created),
            "creators": [concat!("Tool: imgbuild-", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supply::testing::facts;

    #[test]
    fn crates_have_purls_checksums_and_only_valid_license_expressions() {
        let doc = document(&facts());
        let packages = doc["packages"].as_array().unwrap();
        let serde = packages.iter().find(|p| p["name"] == "serde_json").unwrap();
        assert_eq!(
            serde["externalRefs"][0]["referenceLocator"],
            "pkg:cargo/serde_json@1.0.1"
        );
        assert_eq!(serde["checksums"][0]["checksumValue"], "b".repeat(64));
        assert_eq!(serde["licenseDeclared"], "MIT OR Apache-2.0");
        assert_eq!(
            serde["downloadLocation"],
            "https://crates.io/api/v1/crates/serde_json/1.0.1/download"
        );
        let old = packages.iter().find(|p| p["name"] == "old").unwrap();
        assert_eq!(old["licenseDeclared"], "NOASSERTION");
        let libc = packages.iter().find(|p| p["name"] == "libc.so.6").unwrap();
        assert_eq!(
            libc["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u7?arch=amd64"
        );
        assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn edges_say_what_runs_and_what_only_builds() {
        let doc = document(&facts());
        let rels = doc["relationships"].as_array().unwrap();
        let has = |a: &str, kind: &str, b: &str| {
            rels.iter().any(|r| {
                r["spdxElementId"] == a
                    && r["relationshipType"] == kind
                    && r["relatedSpdxElement"] == b
            })
        };
        assert!(has("SPDXRef-Image", "CONTAINS", "SPDXRef-Binary"));
        assert!(has(
            "SPDXRef-Binary",
            "DEPENDS_ON",
            "SPDXRef-Crate-2-serde-json"
        ));
        assert!(has(
            "SPDXRef-Crate-0-old",
            "BUILD_DEPENDENCY_OF",
            "SPDXRef-Binary"
        ));
        assert!(has(
            "SPDXRef-BuildEnvironment",
            "BUILD_TOOL_OF",
            "SPDXRef-Binary"
        ));
        assert_eq!(document(&facts()), doc, "deterministic");
    }
}
