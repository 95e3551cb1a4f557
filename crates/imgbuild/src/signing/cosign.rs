//! cosign's signature layout for a manifest digest, so `cosign verify --key` checks what
//! imgbuild signs and imgbuild checks what cosign signs: the "simple signing" payload naming
//! the repository and the digest, signed; the payload stored as the one layer of a manifest
//! tagged `sha256-<hex>.sig` in the same repository, the signature (base64) in that layer's
//! `dev.cosignproject.cosign/signature` annotation. Pure.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The payload's media type.
pub(crate) const PAYLOAD_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The signature manifest's `artifactType` (cosign's, for its OCI 1.1 referrers mode).
pub(crate) const ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// The annotation holding the base64 signature.
pub(crate) const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The payload's `critical.type`.
const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The tag cosign stores the signatures of `digest` (`sha256:<hex>`) under.
pub(crate) fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// The repository as cosign names it in payloads (`index.docker.io/…` for Docker Hub).
pub(crate) fn docker_reference(registry: &str, repository: &str) -> String {
    let registry = if registry == "docker.io" {
        "index.docker.io"
    } else {
        registry
    };
    format!("{registry}/{repository}")
}

/// The payload for `digest` in the repository `docker_reference`, in canonical JSON.
pub(crate) fn payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    let value = json!({
        "critical": {
            "identity": { "docker-reference": docker_reference },
            "image": { "docker-manifest-digest": digest },
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    });
    imgbuild_oci::json::to_vec(&value).unwrap_or_default()
}

/// Why a payload does not stand for `digest` in `docker_reference`, if it does not.
pub(crate) fn payload_mismatch(
    payload: &[u8],
    docker_reference: &str,
    digest: &str,
) -> Option<String> {
    let Ok(value) = serde_json::from_slice::<Value>(payload) else {
        return Some("its payload is not JSON".into());
    };
    let critical = &value["critical"];
    if critical["type"] != SIGNATURE_TYPE {
        return Some("its payload is not a cosign image signature".into());
    }
    let signed = critical["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or_default();
    if signed != digest {
        return Some(format!("it signs {signed}, not {digest}"));
    }
    let identity = critical["identity"]["docker-reference"]
        .as_str()
        .unwrap_or_default();
    if identity != docker_reference {
        return Some(format!(
            "it signs the digest in {identity}, not in {docker_reference}"
        ));
    }
    None
}

/// The config cosign gives a signature manifest: a rootfs of the payloads.
pub(crate) fn config(payload_digests: &[String]) -> Value {
    json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{ "created": "0001-01-01T00:00:00Z" }],
        "os": "",
        "rootfs": { "type": "layers", "diff_ids": payload_digests },
    })
}

/// A payload layer's annotations.
pub(crate) fn layer_annotations(signature_b64: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), signature_b64.to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_has_cosigns_fields_and_is_checked_field_by_field() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let p = payload("127.0.0.1:5000/team/app", &digest);
        let text = String::from_utf8(p.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"127.0.0.1:5000/team/app"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
            )
        );
        assert_eq!(
            payload_mismatch(&p, "127.0.0.1:5000/team/app", &digest),
            None
        );
        let other = format!("sha256:{}", "b".repeat(64));
        assert!(
            payload_mismatch(&p, "127.0.0.1:5000/team/app", &other)
                .unwrap()
                .contains("signs")
        );
        assert!(
            payload_mismatch(&p, "127.0.0.1:5000/evil", &digest)
                .unwrap()
                .contains("not in")
        );
        assert_eq!(
            signature_tag(&digest),
            format!("sha256-{}.sig", "a".repeat(64))
        );
        assert_eq!(
            docker_reference("docker.io", "library/x"),
            "index.docker.io/library/x"
        );
    }
}
