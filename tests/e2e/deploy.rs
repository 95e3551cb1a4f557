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

/// A workspace of two packages and three binaries, no dependencies (nothing to download).
fn two_packages(dir: &std::path::Path) -> std::path::PathBuf {
    let main = |says: &str| format!("fn main() {{ println!(\"{says}\"); }}\n");
    let project = project(
        dir,
        &[
            (
                "Cargo.toml",
                "[workspace]\nresolver = \"3\"\nmembers = [\"api\", \"tools\"]\n",
            ),
            (
                "api/Cargo.toml",
                "[package]\nname = \"api\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
            ),
            ("api/src/main.rs", &main("api answers")),
            (
                "tools/Cargo.toml",
                "[package]\nname = \"tools\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
            ),
            ("tools/src/bin/migrate.rs", &main("migrating")),
            ("tools/src/bin/seed.rs", &main("seeding")),
        ],
    );
    lock(&project);
    project
}

const DEPLOY: &str = r#"# The API and its migration job.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api  # the public one
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: "imgbuild://tools/migrate"
      containers:
        - name: api
          image: imgbuild://api
          args: ['--port', "8080"]
"#;

const SIDECAR: &str = r#"---
kind: Pod
spec:
  containers:
    - image: 'imgbuild://api'   # the same image once more
    - image: busybox:1.36
      command:
        - sh
        - -c
        - |
          echo imgbuild://api stays text in a block
"#;

#[test]
fn resolve_pushes_each_named_image_once_and_rewrites_only_the_references() {
    require("docker");
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let project = two_packages(&tmp.path().join("ws"));
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("10-deploy.yaml"), DEPLOY).unwrap();
    std::fs::write(config.join("20-sidecar.yml"), SIDECAR).unwrap();
    std::fs::write(config.join("notes.txt"), "image: imgbuild://nope\n").unwrap();
    let repo = format!("{}/deploy", registry.host());
    let refs = tmp.path().join("refs.txt");

    let run = imgbuild_env(
        &project,
        &tmp.path().join("cache"),
        &[
            "resolve",
            "-f",
            config.to_str().unwrap(),
            "--image-refs",
            refs.to_str().unwrap(),
        ],
        &[("IMGBUILD_REPO", &repo)],
    );
    assert!(run.status.success(), "{}", run.stderr);
    let lines = std::fs::read_to_string(&refs).unwrap();
    let pushed: Vec<&str> = lines.lines().collect();
    assert_eq!(pushed.len(), 2, "two images, each pushed once: {lines}");
    let api = pushed.iter().find(|r| r.contains("/deploy/api@")).unwrap();
    let migrate = pushed
        .iter()
        .find(|r| r.contains("/deploy/migrate@"))
        .unwrap();
    // The second file starts with its own `---`, so none is added between them.
    let expected = format!(
        "{}{}",
        DEPLOY
            .replace("imgbuild://tools/migrate", migrate)
            .replace("imgbuild://api", api),
        SIDECAR.replacen("'imgbuild://api'", &format!("'{api}'"), 1)
    );
    assert_eq!(run.stdout, expected, "every other byte is kept");
    // Each pushed once, though `api` is named twice: its tag is put once.
    for repository in ["api", "migrate"] {
        let path = format!("/v2/deploy/{repository}/manifests/latest");
        assert_eq!(registry.requests("PUT", &path), 1, "{repository}");
    }
    // What the YAML now names runs.
    for (reference, says) in [(api, "api answers"), (migrate, "migrating")] {
        assert_eq!(
            remote_digest(reference),
            reference.split_once('@').unwrap().1
        );
        let out = tool("docker", &["run", "--rm", reference]);
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", reference])
            .output();
        assert_eq!(out.trim(), says);
    }
}

#[test]
fn resolve_prints_nothing_when_the_yaml_is_bad_or_a_package_is_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let project = two_packages(&tmp.path().join("ws"));
    let cache = tmp.path().join("cache");
    let repo = format!("{}/deploy", registry.host());
    let good = tmp.path().join("good.yaml");
    std::fs::write(&good, DEPLOY).unwrap();
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "kind: Pod\nspec: [unclosed\n").unwrap();

    let run = imgbuild_env(
        &project,
        &cache,
        &[
            "resolve",
            "-f",
            good.to_str().unwrap(),
            "-f",
            bad.to_str().unwrap(),
        ],
        &[("IMGBUILD_REPO", &repo)],
    );
    run.fails_with(&[bad.to_str().unwrap()]);
    assert_eq!(run.stdout, "");
    assert_eq!(registry.requests("PUT", "/v2/"), 0, "nothing is pushed");

    let unknown = tmp.path().join("unknown.yaml");
    std::fs::write(&unknown, "image: imgbuild://billing\n").unwrap();
    let run = imgbuild_env(
        &project,
        &cache,
        &[
            "resolve",
            "-f",
            good.to_str().unwrap(),
            "-f",
            unknown.to_str().unwrap(),
        ],
        &[("IMGBUILD_REPO", &repo)],
    );
    run.fails_with(&["imgbuild://billing", "unknown.yaml:1", "billing"]);
    assert_eq!(run.stdout, "");
    assert_eq!(
        registry.requests("PUT", "/v2/"),
        0,
        "a wrong name fails before anything is pushed"
    );

    let run = imgbuild(&project, &cache, &["resolve", "-f", good.to_str().unwrap()]);
    run.fails_with(&["--repo", "IMGBUILD_REPO"]);
}

#[test]
fn resolve_prints_nothing_when_a_push_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let project = two_packages(&tmp.path().join("ws"));
    let good = tmp.path().join("good.yaml");
    std::fs::write(&good, DEPLOY).unwrap();
    // Nothing listens on this port: the first push fails after its build.
    let closed = crate::registry_support::free_port();
    let repo = format!("127.0.0.1:{closed}/deploy");
    let run = imgbuild_env(
        &project,
        &tmp.path().join("cache"),
        &[
            "resolve",
            "-f",
            good.to_str().unwrap(),
            "--registry-deadline",
            "5",
        ],
        &[("IMGBUILD_REPO", &repo)],
    );
    run.fails_with(&["imgbuild://", &format!("127.0.0.1:{closed}")]);
    assert_eq!(run.stdout, "", "no YAML after a failed push");
}
