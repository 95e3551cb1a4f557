//! Cargo's fingerprint files, read for the edges between units (pure).
//!
//! Every unit has a directory `.fingerprint/<name>-<hash>/` holding, for each of its targets,
//! a file with the unit's fingerprint (a `u64` written as 16 hex digits of its little-endian
//! bytes) and, beside it, the same name with `.json`: the fingerprint's inputs, whose `deps`
//! list holds each dependency unit's fingerprint as its fourth element. Matching those numbers
//! against the other units' fingerprint files gives the unit graph cargo built, which
//! `--unit-graph` only prints on nightly.
//!
//! The format is cargo's own and unversioned: anything unexpected gives `None`, and callers
//! then treat the unit as one they know nothing about (never cached).

/// Whether `file` (a file name in a unit's fingerprint directory) is a fingerprint hash file:
/// `lib-serde`, `bin-app`, `build-script-build-script-build`,
/// `run-build-script-build-script-build`; not `dep-…`, `invoked.timestamp`, `output-…` or a
/// `.json` file.
pub fn is_hash_file(file: &str) -> bool {
    !file.contains('.') && !file.starts_with("dep-") && !file.starts_with("output-")
}

/// The fingerprint a hash file holds.
pub fn parse_hash(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.len() != 16 {
        return None;
    }
    let mut bytes = [0u8; 8];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(u64::from_le_bytes(bytes))
}

/// The fingerprints of a unit's dependencies, from its fingerprint's JSON.
pub fn parse_deps(json: &str) -> Option<Vec<u64>> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value
        .get("deps")?
        .as_array()?
        .iter()
        .map(|dep| dep.as_array()?.get(3)?.as_u64())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_little_endian_hex() {
        assert_eq!(parse_hash("f053cac8fa707117\n"), Some(1689255557653484528));
        assert_eq!(parse_hash("f053"), None);
        assert_eq!(parse_hash("zz53cac8fa707117"), None);
    }

    #[test]
    fn dependency_fingerprints_are_the_fourth_element() {
        let json = r#"{"rustc":1,"features":"[]","deps":[[5037372466785579007,"itoa",false,5559722125187402252],[17725006195620081562,"a",false,1689255557653484528]],"local":[]}"#;
        assert_eq!(
            parse_deps(json),
            Some(vec![5559722125187402252, 1689255557653484528])
        );
        assert_eq!(parse_deps(r#"{"deps":[]}"#), Some(vec![]));
        assert_eq!(parse_deps(r#"{"deps":[[1,"a"]]}"#), None);
        assert_eq!(parse_deps("not json"), None);
    }

    #[test]
    fn hash_files_are_told_from_the_rest() {
        for f in [
            "lib-serde",
            "bin-app",
            "run-build-script-build-script-build",
        ] {
            assert!(is_hash_file(f), "{f}");
        }
        for f in [
            "lib-serde.json",
            "dep-lib-serde",
            "invoked.timestamp",
            "output-lib-a",
        ] {
            assert!(!is_hash_file(f), "{f}");
        }
    }
}
