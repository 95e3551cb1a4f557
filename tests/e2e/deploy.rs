//! Issue #16: the deploy workflow ko users know — a default repository, several tags in one
//! push, the pushed references written for the next step.

use crate::registry_support::{Auth, Registry};
use crate::support::*;

/// The manifest digest `skopeo inspect` reports for `reference` (plain HTTP).
fn remote_digest(reference: &str) -> String {
    let out = tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    json(&out)["Digest"].as_str().unwrap().to_string()
}

#[test]
fn push_to_a_default_repository_with_several_tags_writes_the_image_refs() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let repo = format!("{}/team", registry.host());
    let refs = tmp.path().join("image-refs.txt");

    let run = imgbuild_env(
        &project,
        &cache,
        &[
            "push",
            "--tag",
            "v1",
            "--tag",
            "latest",
            "--tag",
            "sha-abc123",
            "--image-refs",
            refs.to_str().unwrap(),
            "--message-format",
            "json",
        ],
        &[("IMGBUILD_REPO", &repo)],
    );
    let events = run.events();
    let digest = image_digest(&events);
    let image = format!("{repo}/hello");
    assert_eq!(
        std::fs::read_to_string(&refs).unwrap(),
        format!("{image}@{digest}\n")
    );
    for tag in ["v1", "latest", "sha-abc123"] {
        assert_eq!(remote_digest(&format!("{image}:{tag}")), digest, "{tag}");
    }
    // One push: every blob uploaded once, then the manifest tagged twice more.
    let uploads = registry.uploaded_digests();
    let mut unique = uploads.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(uploads.len(), unique.len(), "{uploads:?}");
    let tagged: Vec<&str> = events
        .iter()
        .filter(|e| e["reason"] == "tagged")
        .map(|e| e["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        tagged,
        [format!("{image}:latest"), format!("{image}:sha-abc123")]
    );
    // The image itself takes the first tag.
    assert_eq!(event(&events, "image-built")["reference"], "hello:v1");

    // --repo wins over the variable, and an explicit REF over both.
    let other = format!("{}/other", registry.host());
    let run = imgbuild_env(
        &project,
        &cache,
        &["push", "--repo", &other, "--message-format", "json"],
        &[("IMGBUILD_REPO", &repo)],
    );
    assert_eq!(image_digest(&run.events()), digest);
    assert_eq!(remote_digest(&format!("{other}/hello:latest")), digest);
    let explicit = format!("{}/named/app:rc1", registry.host());
    let run = imgbuild_env(
        &project,
        &cache,
        &["push", &explicit, "--message-format", "json"],
        &[("IMGBUILD_REPO", &repo)],
    );
    run.events();
    assert_eq!(remote_digest(&explicit), digest);
}

#[test]
fn a_push_without_a_destination_or_with_bad_flags_fails_before_compiling() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let run = imgbuild(&project, &cache, &["push"]);
    run.fails_with(&["push needs a destination", "--repo", "IMGBUILD_REPO"]);

    let run = imgbuild(
        &project,
        &cache,
        &["push", "--repo", "127.0.0.1:5000/team@sha256:00"],
    );
    run.fails_with(&["--repo", "without a tag or digest"]);

    let missing = tmp.path().join("no-such-dir/refs.txt");
    let run = imgbuild(
        &project,
        &cache,
        &[
            "push",
            "--repo",
            "127.0.0.1:5000/team",
            "--image-refs",
            missing.to_str().unwrap(),
        ],
    );
    run.fails_with(&["--image-refs", "does not exist"]);

    let run = imgbuild(
        &project,
        &cache,
        &[
            "push",
            "--repo",
            "127.0.0.1:5000/t",
            "--tag",
            "v1",
            "--tag",
            "bad tag",
        ],
    );
    run.fails_with(&["--tag \"bad tag\""]);
    assert!(!project.join("target/release/hello").exists());
}
