//! The bodies of imgbuild's fuzz targets: everything that reads bytes from outside — image
//! references, `WWW-Authenticate` headers, manifests, indexes and configs, base-image layer
//! tars, docker config files and the metadata table. Each takes arbitrary bytes and must
//! never panic; where a value round-trips (a reference printed and parsed again, JSON written
//! canonically and read back), that is checked too.
//!
//! `fuzz/` (cargo-fuzz, nightly) runs them under libFuzzer; `tests/corpus.rs` replays the
//! saved corpus and every regression input on stable, in CI. `layer_tar` writes into a
//! temporary directory; the others are pure.

use std::path::Path;

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name its cargo-fuzz binary and corpus directory have.
pub const TARGETS: &[(&str, Target)] = &[
    ("reference", reference),
    ("www_authenticate", www_authenticate),
    ("oci_json", oci_json),
    ("layer_tar", layer_tar),
    ("docker_config", docker_config),
    ("metadata_table", metadata_table),
];

/// An image reference: parsed; when valid, printed and parsed again to the same value.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = imgbuild_registry::Reference::parse(text) {
        let again = imgbuild_registry::Reference::parse(&parsed.to_string())
            .unwrap_or_else(|e| panic!("{parsed} does not parse again: {e}"));
        assert_eq!(again, parsed, "{text:?} round-trips");
        let _ = (parsed.api_host(), parsed.target(), parsed.is_local());
    }
}

/// A `WWW-Authenticate` header value.
pub fn www_authenticate(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = imgbuild_registry::auth::parse_challenge(text);
    }
}

/// Bytes read as an image manifest, an index and an image config; each that parses is
/// written as canonical JSON and read back to the same value.
pub fn oci_json(data: &[u8]) {
    use imgbuild_oci::spec::{ImageConfiguration, ImageIndex, ImageManifest};
    fn round_trip<T>(data: &[u8])
    where
        T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
    {
        if let Ok(value) = serde_json::from_slice::<T>(data)
            && let Ok(bytes) = imgbuild_oci::json::to_vec(&value)
        {
            let again: T = serde_json::from_slice(&bytes).expect("canonical JSON reads back");
            assert_eq!(again, value);
        }
    }
    round_trip::<ImageManifest>(data);
    round_trip::<ImageIndex>(data);
    round_trip::<ImageConfiguration>(data);
}

/// A base-image layer (tar, or gzip/zstd tar by its magic bytes) unpacked into a fresh
/// directory: an error or a tree, never a panic and never a file outside that directory.
pub fn layer_tar(data: &[u8]) {
    use imgbuild_oci::media::LayerMediaType;
    use imgbuild_oci::unpack::{LayerSource, unpack_layers};
    let Ok(tmp) = tempfile::tempdir() else {
        return;
    };
    let media = match data {
        [0x1f, 0x8b, ..] => LayerMediaType::TarGzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => LayerMediaType::TarZstd,
        _ => LayerMediaType::Tar,
    };
    let blob = tmp.path().join("layer");
    if std::fs::write(&blob, data).is_err() {
        return;
    }
    let root = tmp.path().join("box").join("root");
    let _ = unpack_layers(&[LayerSource::new(media, blob)], &root);
    let outside: Vec<_> = std::fs::read_dir(tmp.path())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        outside.iter().all(|n| n == "layer" || n == "box"),
        "written outside the root: {outside:?}"
    );
    let beside: Vec<_> = std::fs::read_dir(tmp.path().join("box"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        beside.iter().all(|n| n == "root"),
        "written beside the root: {beside:?}"
    );
}

/// A docker config / podman auth file, looked up for a few registries (helpers are not run).
pub fn docker_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for registry in ["docker.io", "localhost:5000", "ghcr.io"] {
        let _ = imgbuild_registry::auth::lookup(text, Path::new("config.json"), registry);
    }
}

/// The `[package.metadata.imgbuild]` table, as cargo metadata gives it (JSON).
pub fn metadata_table(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let origin = imgbuild_cargo::config::Origin {
        table: "package.metadata.imgbuild",
        manifest: Path::new("/fuzz/Cargo.toml"),
    };
    for bin in [None, Some("app")] {
        let _ = imgbuild_cargo::config::parse_table(&value, &origin, bin);
    }
}
