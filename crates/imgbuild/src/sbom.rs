//! SBOM documents (pure): SPDX 2.3 JSON from what a build knows exactly — the binary's
//! resolved dependency tree with Cargo.lock's checksums and sources, the packages' declared
//! licenses, the libraries of the closure layer, and the base image and build environment.
//! Same inputs, same bytes: the time is `SOURCE_DATE_EPOCH`'s, the namespace names the
//! image's config digest, and every list is sorted.
//!
//! Work in progress for issue 14: not yet wired into the build.

#![allow(dead_code)] // issue 14 in progress: the build stage that calls it is not written yet

use serde_json::{Value, json};

/// One Rust package of the binary's tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RustPackage {
    pub(crate) name: String,
    pub(crate) version: String,
    /// Cargo.lock's `source` (`registry+…`, `git+…`); `None` for path packages.
    pub(crate) source: Option<String>,
    /// Cargo.lock's sha256 checksum (registry packages).
    pub(crate) checksum: Option<String>,
    /// `package.license` as written.
    pub(crate) license: Option<String>,
}

/// A shared library in the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Library {
    /// Its path in the image.
    pub(crate) path: String,
    /// sha256 of its bytes, hex.
    pub(crate) sha256: String,
}

/// An image this one was built from or with (a base, a build environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef {
    pub(crate) reference: String,
    pub(crate) digest: String,
}

/// Everything an SBOM says.
#[derive(Debug, Clone)]
pub(crate) struct SbomInputs {
    /// `name:tag`.
    pub(crate) image: String,
    /// The image config's digest (the manifest's cannot be known before the SBOM is made).
    pub(crate) config_digest: String,
    /// `package/bin`.
    pub(crate) binary: String,
    pub(crate) binary_version: String,
    pub(crate) packages: Vec<RustPackage>,
    pub(crate) libraries: Vec<Library>,
    pub(crate) base: Option<ImageRef>,
    pub(crate) build_env: Option<ImageRef>,
    /// Seconds since the epoch (`SOURCE_DATE_EPOCH`).
    pub(crate) created: u64,
}

/// `name@version` as a package URL of type `cargo`.
fn cargo_purl(name: &str, version: &str) -> String {
    format!("pkg:cargo/{name}@{version}")
}

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

/// A license as cargo metadata gives it, when it is an SPDX expression; `NOASSERTION`
/// otherwise (the old `MIT/Apache-2.0` form, or none).
fn license(text: Option<&str>) -> String {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return "NOASSERTION".into();
    };
    let valid = text.split_whitespace().all(|token| {
        let token = token.trim_matches(|c| c == '(' || c == ')');
        matches!(token, "AND" | "OR" | "WITH")
            || (!token.is_empty()
                && token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+')))
    });
    if valid {
        text.to_string()
    } else {
        "NOASSERTION".into()
    }
}

fn download_location(p: &RustPackage) -> String {
    match p.source.as_deref() {
        Some(s)
            if s.starts_with("registry+https://github.com/rust-lang/crates.io-index")
                || s.starts_with("sparse+https://index.crates.io/") =>
        {
            format!(
                "https://crates.io/api/v1/crates/{}/{}/download",
                p.name, p.version
            )
        }
        Some(s) if s.starts_with("git+") => s.to_string(),
        _ => "NOASSERTION".into(),
    }
}

fn image_package(id: &str, r: &ImageRef, purpose: &str) -> Value {
    let hex = r.digest.trim_start_matches("sha256:");
    json!({
        "SPDXID": id,
        "name": r.reference,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": purpose,
        "checksums": [{"algorithm": "SHA256", "checksumValue": hex}],
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": format!("pkg:oci/{}@{}", oci_name(&r.reference), r.digest.replace(':', "%3A")),
        }],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    })
}

/// The last path component of a reference, without its tag or digest (a purl's name).
fn oci_name(reference: &str) -> String {
    let path = reference.split('@').next().unwrap_or(reference);
    let last = path.rsplit('/').next().unwrap_or(path);
    last.split(':').next().unwrap_or(last).to_string()
}

/// The binary, as the image's application.
fn binary_package(i: &SbomInputs) -> Value {
    let (package, bin) = i.binary.split_once('/').unwrap_or((&i.binary, &i.binary));
    json!({
        "SPDXID": "SPDXRef-Binary",
        "name": bin,
        "versionInfo": i.binary_version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "APPLICATION",
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": cargo_purl(package, &i.binary_version),
        }],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    })
}

/// One crate of the binary's tree.
fn crate_package(id: &str, p: &RustPackage) -> Value {
    let mut pkg = json!({
        "SPDXID": id,
        "name": p.name,
        "versionInfo": p.version,
        "downloadLocation": download_location(p),
        "filesAnalyzed": false,
        "primaryPackagePurpose": "LIBRARY",
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": cargo_purl(&p.name, &p.version),
        }],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": license(p.license.as_deref()),
        "copyrightText": "NOASSERTION",
    });
    if let Some(sum) = &p.checksum {
        pkg["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": sum}]);
    }
    pkg
}

/// A shared library of the closure layer.
fn library_package(id: &str, file: &str, l: &Library) -> Value {
    json!({
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
    })
}

/// The SPDX 2.3 document.
pub(crate) fn spdx(i: &SbomInputs) -> Value {
    let mut packages = Vec::new();
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    let image = ImageRef {
        reference: i.image.clone(),
        digest: i.config_digest.clone(),
    };
    packages.push(image_package("SPDXRef-Image", &image, "CONTAINER"));
    packages.push(binary_package(i));
    relationships.push(json!({"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS", "relatedSpdxElement": "SPDXRef-Binary"}));
    let mut rust = i.packages.clone();
    rust.sort();
    for (n, p) in rust.iter().enumerate() {
        let id = spdx_id("Crate", n, &p.name);
        packages.push(crate_package(&id, p));
        relationships.push(json!({"spdxElementId": "SPDXRef-Binary", "relationshipType": "DEPENDS_ON", "relatedSpdxElement": id}));
    }
    let mut libraries = i.libraries.clone();
    libraries.sort();
    for (n, l) in libraries.iter().enumerate() {
        let file = l.path.rsplit('/').next().unwrap_or(&l.path);
        let id = spdx_id("Library", n, file);
        packages.push(library_package(&id, file, l));
        relationships.push(json!({"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
    }
    for (id, r, how) in [
        ("SPDXRef-Base", &i.base, "DESCENDANT_OF"),
        ("SPDXRef-BuildEnvironment", &i.build_env, "BUILD_TOOL_OF"),
    ] {
        let Some(r) = r else { continue };
        packages.push(image_package(id, r, "CONTAINER"));
        let rel = if how == "DESCENDANT_OF" {
            json!({"spdxElementId": "SPDXRef-Image", "relationshipType": how, "relatedSpdxElement": id})
        } else {
            json!({"spdxElementId": id, "relationshipType": how, "relatedSpdxElement": "SPDXRef-Binary"})
        };
        relationships.push(rel);
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": i.image,
        "documentNamespace": format!(
            "https://imgbuild.invalid/spdx/{}/{}",
            oci_name(&i.image),
            i.config_digest.trim_start_matches("sha256:")
        ),
        "creationInfo": {
            "created": crate::time::rfc3339(i.created),
            "creators": [concat!("Tool: imgbuild-", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> SbomInputs {
        SbomInputs {
            image: "report:v1".into(),
            config_digest: format!("sha256:{}", "a".repeat(64)),
            binary: "report/report".into(),
            binary_version: "0.2.0".into(),
            packages: vec![
                RustPackage {
                    name: "serde_json".into(),
                    version: "1.0.1".into(),
                    source: Some("registry+https://github.com/rust-lang/crates.io-index".into()),
                    checksum: Some("b".repeat(64)),
                    license: Some("MIT OR Apache-2.0".into()),
                },
                RustPackage {
                    name: "old".into(),
                    version: "0.1.0".into(),
                    source: None,
                    checksum: None,
                    license: Some("MIT/Apache-2.0".into()),
                },
            ],
            libraries: vec![Library {
                path: "/lib/x86_64-linux-gnu/libc.so.6".into(),
                sha256: "c".repeat(64),
            }],
            base: None,
            build_env: Some(ImageRef {
                reference: format!("registry.example/rust@sha256:{}", "d".repeat(64)),
                digest: format!("sha256:{}", "d".repeat(64)),
            }),
            created: 0,
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_document_whatever_their_order() {
        let a = spdx(&inputs());
        let mut reordered = inputs();
        reordered.packages.reverse();
        assert_eq!(a, spdx(&reordered));
    }

    #[test]
    fn crates_have_purls_checksums_and_only_valid_license_expressions() {
        let doc = spdx(&inputs());
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
        assert!(
            old["SPDXID"]
                .as_str()
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        );
        assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:00Z");
    }
}
