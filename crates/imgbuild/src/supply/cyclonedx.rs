//! The CycloneDX 1.6 JSON document of an image (pure): the same facts as the SPDX document,
//! in CycloneDX's terms — the image as the BOM's subject, the binary as an application, the
//! crates as libraries (build-time crates with scope `excluded`), the closure's libraries
//! with their Debian purls, the base and build environment as containers, and the
//! dependency graph.

use serde_json::{Value, json};

use super::{Crate, Facts, ImageRef, Library};

/// A `urn:uuid:` made from the manifest digest, so the serial number is the same for the same
/// image (CycloneDX asks for a UUID; this one has RFC 4122's variant and version 5's nibble).
fn serial_number(digest: &str) -> String {
    let hex: Vec<char> = digest.trim_start_matches("sha256:").chars().collect();
    let mut h: Vec<char> = hex.iter().copied().chain("0".repeat(32).chars()).collect();
    h.truncate(32);
    h[12] = '5';
    h[16] = match h[16] {
        '0' | '4' | '8' | 'c' => '8',
        '1' | '5' | '9' | 'd' => '9',
        '2' | '6' | 'a' | 'e' => 'a',
        _ => 'b',
    };
    let s: String = h.into_iter().collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

fn crate_ref(c: &Crate) -> String {
    super::cargo_purl(&c.package.name, &c.package.version)
}

fn crate_component(c: &Crate, bin: &str) -> Value {
    let p = &c.package;
    let mut comp = json!({
        "type": if p.root { "application" } else { "library" },
        "bom-ref": crate_ref(c),
        "name": if p.root { bin } else { &p.name },
        "version": p.version,
        "purl": super::cargo_purl(&p.name, &p.version),
        "scope": if p.runtime { "required" } else { "excluded" },
    });
    if let Some(sum) = &c.checksum {
        comp["hashes"] = json!([{"alg": "SHA-256", "content": sum}]);
    }
    match (super::license_expression(p.license.as_deref()), &p.license) {
        (Some(expression), _) => comp["licenses"] = json!([{ "expression": expression }]),
        (None, Some(text)) if !text.trim().is_empty() => {
            comp["licenses"] = json!([{ "license": { "name": text } }]);
        }
        _ => {}
    }
    if let Some(url) = super::download_url(p) {
        comp["externalReferences"] = json!([{"type": "distribution", "url": url}]);
    }
    comp
}

fn library_component(l: &Library) -> Value {
    let file = l.path.rsplit('/').next().unwrap_or(&l.path);
    let mut comp = json!({
        "type": "library",
        "bom-ref": format!("file:{}", l.path),
        "name": file,
        "hashes": [{"alg": "SHA-256", "content": l.sha256}],
        "properties": [{"name": "imgbuild:path", "value": l.path}],
    });
    if let Some(deb) = &l.deb {
        comp["version"] = json!(deb.version);
        comp["purl"] = json!(super::deb_purl(deb));
    }
    comp
}

fn image_component(r: &ImageRef, role: &str) -> Value {
    json!({
        "type": "container",
        "bom-ref": super::oci_purl(r),
        "name": r.reference,
        "version": r.digest,
        "purl": super::oci_purl(r),
        "hashes": [{"alg": "SHA-256", "content": r.digest.trim_start_matches("sha256:")}],
        "properties": [{"name": "imgbuild:role", "value": role}],
    })
}

/// The CycloneDX 1.6 document.
pub(crate) fn document(f: &Facts) -> Value {
    let image = ImageRef {
        reference: f.image.clone(),
        digest: f.manifest_digest.clone(),
    };
    let mut components: Vec<Value> = f
        .crates
        .iter()
        .map(|c| crate_component(c, &f.bin))
        .collect();
    components.extend(f.libraries.iter().map(library_component));
    if let Some(base) = &f.base {
        components.push(image_component(base, "base"));
    }
    if let Some(env) = &f.build_env {
        components.push(image_component(env, "build-environment"));
    }
    let mut dependencies: Vec<Value> = f
        .crates
        .iter()
        .map(|c| {
            let on: Vec<String> = c
                .package
                .dependencies
                .iter()
                .map(|&d| crate_ref(&f.crates[d]))
                .collect();
            json!({"ref": crate_ref(c), "dependsOn": on})
        })
        .collect();
    let mut contained: Vec<String> = f
        .crates
        .iter()
        .filter(|c| c.package.root)
        .map(crate_ref)
        .collect();
    contained.extend(f.libraries.iter().map(|l| format!("file:{}", l.path)));
    dependencies.push(json!({"ref": super::oci_purl(&image), "dependsOn": contained}));
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial_number(&f.manifest_digest),
        "version": 1,
        "metadata": {
            "timestamp": crate::time::rfc3339(f.created),
            "tools": {"components": [{
                "type": "application",
                "name": "imgbuild",
                "version": env!("CARGO_PKG_VERSION"),
            }]},
            "component": {
                "type": "container",
                "bom-ref": super::oci_purl(&image),
                "name": f.image,
                "version": f.manifest_digest,
                "purl": super::oci_purl(&image),
            },
        },
        "components": components,
        "dependencies": dependencies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supply::testing::facts;

    #[test]
    fn components_carry_purls_scopes_and_the_graph() {
        let doc = document(&facts());
        assert_eq!(doc["specVersion"], "1.6");
        let serial = doc["serialNumber"].as_str().unwrap();
        assert_eq!(serial.len(), "urn:uuid:".len() + 36);
        let comps = doc["components"].as_array().unwrap();
        let old = comps.iter().find(|c| c["name"] == "old").unwrap();
        assert_eq!(old["scope"], "excluded");
        assert_eq!(old["licenses"][0]["license"]["name"], "MIT/Apache-2.0");
        let app = comps.iter().find(|c| c["type"] == "application").unwrap();
        assert_eq!(app["purl"], "pkg:cargo/report@0.2.0");
        let deps = doc["dependencies"].as_array().unwrap();
        let root = deps
            .iter()
            .find(|d| d["ref"] == "pkg:cargo/report@0.2.0")
            .unwrap();
        assert_eq!(
            root["dependsOn"],
            json!(["pkg:cargo/old@0.1.0", "pkg:cargo/serde_json@1.0.1"])
        );
        assert_eq!(document(&facts()), doc, "deterministic");
    }
}
