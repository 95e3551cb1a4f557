//! The build's provenance (pure): an in-toto v1 statement whose subject is the image manifest
//! and whose predicate is SLSA v1 provenance — the builder (imgbuild and its version), the
//! build type, the external parameters (package, binary, profile, features, outputs), the
//! resolved dependencies (git revision, Cargo.lock, base image, build environment), whether
//! the compile was cut off the network, and the time from `SOURCE_DATE_EPOCH`.

use serde_json::{Value, json};

use super::{Facts, ImageRef, Network};

/// The build type this statement's parameters follow.
pub(crate) const BUILD_TYPE: &str = "https://imgbuild.dev/provenance/cargo-image/v1";

fn image_dependency(name: &str, r: &ImageRef) -> Value {
    json!({
        "name": name,
        "uri": super::oci_purl(r),
        "digest": {"sha256": r.digest.trim_start_matches("sha256:")},
        "annotations": {"reference": r.reference},
    })
}

/// The in-toto statement.
pub(crate) fn statement(f: &Facts) -> Value {
    let b = &f.build;
    let mut resolved = Vec::new();
    if let Some(rev) = &b.revision {
        resolved.push(json!({"name": "source", "digest": {"gitCommit": rev}}));
    }
    resolved.push(json!({"name": "Cargo.lock", "digest": {"sha256": b.lockfile_sha256}}));
    if let Some(base) = &f.base {
        resolved.push(image_dependency("base-image", base));
    }
    if let Some(env) = &f.build_env {
        resolved.push(image_dependency("build-environment", env));
    }
    let network = match b.network {
        Some(Network::Isolated) => "isolated",
        Some(Network::NotIsolated) => "not-isolated",
        Some(Network::Allowed) => "allowed",
        None => "not-recorded",
    };
    let time = crate::time::rfc3339(f.created);
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{
            "name": f.image,
            "digest": {"sha256": f.manifest_digest.trim_start_matches("sha256:")},
        }],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "package": f.package,
                    "binary": f.bin,
                    "profile": b.profile,
                    "features": b.features,
                    "outputs": b.outputs,
                },
                "internalParameters": {
                    "target": b.target,
                    "rustc": b.rustc,
                    "network": network,
                    "hermetic": b.network == Some(Network::Isolated),
                    "sourceDateEpoch": f.created,
                },
                "resolvedDependencies": resolved,
            },
            "runDetails": {
                "builder": {
                    "id": "https://imgbuild.dev/imgbuild",
                    "version": {"imgbuild": env!("CARGO_PKG_VERSION")},
                },
                "metadata": {"startedOn": time, "finishedOn": time},
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supply::testing::facts;

    #[test]
    fn the_statement_names_the_revision_the_digests_and_the_isolation() {
        let doc = statement(&facts());
        assert_eq!(doc["subject"][0]["digest"]["sha256"], "a".repeat(64));
        let p = &doc["predicate"]["buildDefinition"];
        let deps = p["resolvedDependencies"].as_array().unwrap();
        assert_eq!(deps[0]["digest"]["gitCommit"], "f".repeat(40));
        assert_eq!(deps[1]["digest"]["sha256"], "9".repeat(64));
        assert_eq!(deps[2]["name"], "build-environment");
        assert_eq!(deps[2]["digest"]["sha256"], "d".repeat(64));
        assert_eq!(p["internalParameters"]["hermetic"], true);
        assert_eq!(p["externalParameters"]["outputs"], json!(["oci:out"]));
        assert_eq!(
            doc["predicate"]["runDetails"]["metadata"]["startedOn"],
            "1970-01-01T00:00:00Z"
        );
    }
}
