//! Issue #16: multi-platform images. One image per platform (cargo's `--target`, the
//! platform's own rustc flags), listed in an OCI image index that skopeo, docker and the
//! registry read; the amd64 microarchitecture levels stand in for other architectures here,
//! since these machines have only the x86_64 standard library.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::registry_support::{Auth, Registry};
use crate::support::*;

/// A binary that says whether it was compiled for AVX2 (x86-64-v3 has it, the baseline not).
fn cpu_project(dir: &Path) -> PathBuf {
    let project = project(
        dir,
        &[
            (
                "Cargo.toml",
                "[package]\nname = \"cpu\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
            ),
            (
                "src/main.rs",
                "fn main() { println!(\"avx2: {}\", cfg!(target_feature = \"avx2\")); }\n",
            ),
        ],
    );
    lock(&project);
    project
}

fn skopeo_copy(args: &[&str], from: &str, to: &Path) {
    let mut all = vec!["copy", "-q", "--src-tls-verify=false"];
    all.extend_from_slice(args);
    let dest = format!("oci:{}:x", to.display());
    all.extend([from, dest.as_str()]);
    tool("skopeo", &all);
}

/// The digest of the one image in the layout `dir`.
fn layout_digest(dir: &Path) -> String {
    let index = json(&std::fs::read_to_string(dir.join("index.json")).unwrap());
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn docker_run(reference: &str) -> String {
    let out = Command::new("docker")
        .args(["run", "--rm", reference])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker run {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn an_amd64_and_amd64_v3_index_is_pushed_and_each_tool_picks_and_runs_its_image() {
    require("docker");
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let project = cpu_project(&tmp.path().join("cpu"));
    let cache = tmp.path().join("cache");
    let layout = tmp.path().join("oci");
    let remote = format!("{}/mp/cpu:v1", registry.host());
    let engine_name = format!("imgbuild-e2e/{}:mp", unique("cpu"));
    let run = imgbuild(
        &project,
        &cache,
        &[
            "push",
            &remote,
            "--platform",
            "linux/amd64,linux/amd64/v3",
            "-o",
            &format!("oci:{}", layout.display()),
            "-o",
            &format!("docker-daemon:{engine_name}"),
            "--message-format",
            "json",
        ],
    );
    let events = run.events();
    let index = event(&events, "index-built").clone();
    let platforms = index["platforms"].as_array().unwrap();
    let (plain, v3) = (
        platforms[0]["digest"].as_str().unwrap().to_string(),
        platforms[1]["digest"].as_str().unwrap().to_string(),
    );
    assert_eq!(platforms[1]["platform"], "linux/amd64/v3");
    assert_ne!(plain, v3);

    // The registry holds the index, with each image's platform.
    let raw = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{remote}"),
        ],
    ));
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(raw["manifests"][0]["digest"], plain.as_str());
    assert_eq!(raw["manifests"][1]["platform"]["variant"], "v3");
    assert_eq!(raw["manifests"][1]["platform"]["architecture"], "amd64");
    let config = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--tls-verify=false",
            &format!("docker://{}/mp/cpu@{v3}", registry.host()),
        ],
    ));
    assert_eq!(
        (config["architecture"].as_str(), config["variant"].as_str()),
        (Some("amd64"), Some("v3"))
    );

    // skopeo picks the baseline image by default and the v3 one when asked; both run.
    let scratch = tmp.path().join("scratch");
    for (args, digest, says) in [
        (&[][..], &plain, "avx2: false"),
        (&["--override-variant", "v3"][..], &v3, "avx2: true"),
    ] {
        let dir = tmp.path().join(format!("copy-{}", &digest[7..15]));
        skopeo_copy(args, &format!("docker://{remote}"), &dir);
        assert_eq!(&layout_digest(&dir), digest);
        assert_eq!(run_with_runc(&dir, "x", &scratch).trim(), says);
    }

    // Docker pulls the index and runs the baseline image; the v3 image by its digest.
    assert_eq!(docker_run(&remote), "avx2: false");
    let v3_reference = format!("{}/mp/cpu@{v3}", registry.host());
    assert_eq!(docker_run(&v3_reference), "avx2: true");
    // The engine output got this machine's own image.
    assert_eq!(docker_run(&engine_name), "avx2: false");
    for r in [remote.as_str(), v3_reference.as_str(), engine_name.as_str()] {
        let _ = Command::new("docker").args(["rmi", "-f", r]).output();
    }

    // The oci: output holds the index under the tag, and both images.
    let local = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:latest", layout.display()),
        ],
    ));
    assert_eq!(local, raw);

    // Built again: both images come from the app cache, and the index is the same.
    let again = imgbuild(
        &project,
        &cache,
        &[
            "build",
            "--platform",
            "linux/amd64,linux/amd64/v3",
            "--message-format",
            "json",
        ],
    );
    let events = again.events();
    assert!(
        events.iter().all(|e| e["reason"] != "compiled"),
        "nothing compiles"
    );
    assert_eq!(event(&events, "index-built")["digest"], index["digest"]);
}

#[test]
fn platforms_that_cannot_be_built_or_written_fail_before_compiling_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let project = cpu_project(&tmp.path().join("cpu"));
    let cache = tmp.path().join("cache");
    let libdir = tool(
        "rustc",
        &[
            "--print",
            "target-libdir",
            "--target",
            "aarch64-unknown-linux-gnu",
        ],
    );
    assert!(
        !Path::new(libdir.trim()).exists(),
        "this test expects a toolchain without the aarch64 standard library"
    );
    // No cross linker: the error names the package and the setting.
    let arm = ["build", "--platform", "linux/amd64,linux/arm64"];
    let run = imgbuild(&project, &cache, &arm);
    run.fails_with(&[
        "linux/arm64",
        "gcc-aarch64-linux-gnu",
        "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc",
    ]);
    assert!(!run.stderr.contains("Compiling"), "{}", run.stderr);
    // A linker, but no standard library for the target: the rustup command.
    let linker = [("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", "cc")];
    let run = imgbuild_env(&project, &cache, &arm, &linker);
    run.fails_with(&["linux/arm64", "rustup target add aarch64-unknown-linux-gnu"]);
    assert!(!run.stderr.contains("Compiling"), "{}", run.stderr);
    // The linker written in the project's cargo config counts too.
    std::fs::create_dir_all(project.join(".cargo")).unwrap();
    std::fs::write(
        project.join(".cargo/config.toml"),
        "[target.aarch64-unknown-linux-gnu]\nlinker = \"aarch64-linux-gnu-gcc\"\n",
    )
    .unwrap();
    let run = imgbuild(&project, &cache, &arm);
    run.fails_with(&["rustup target add aarch64-unknown-linux-gnu"]);
    std::fs::remove_dir_all(project.join(".cargo")).unwrap();

    let archive = tmp.path().join("x.tar");
    let run = imgbuild(
        &project,
        &cache,
        &[
            "build",
            "--platform",
            "linux/amd64,linux/amd64/v3",
            "-o",
            &format!("docker-archive:{}", archive.display()),
        ],
    );
    run.fails_with(&["docker-archive holds one image", "oci-archive:"]);
    assert!(!run.stderr.contains("Compiling"), "{}", run.stderr);

    let run = imgbuild(&project, &cache, &["build", "--platform", "linux/mips"]);
    run.fails_with(&["linux/mips", "known: amd64"]);
}

#[test]
fn platforms_listed_in_the_metadata_table_make_an_index() {
    let tmp = tempfile::tempdir().unwrap();
    let project = cpu_project(&tmp.path().join("cpu"));
    let manifest = project.join("Cargo.toml");
    let toml = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        format!(
            "{toml}\n[package.metadata.imgbuild]\nplatforms = [\"linux/amd64\", \"linux/amd64/v3\"]\n"
        ),
    )
    .unwrap();
    let layout = tmp.path().join("oci");
    let run = imgbuild(
        &project,
        &tmp.path().join("cache"),
        &[
            "build",
            "-o",
            &format!("oci:{}", layout.display()),
            "--message-format",
            "json",
        ],
    );
    let events = run.events();
    let index = event(&events, "index-built");
    let platforms: Vec<&str> = index["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/amd64/v3"]);
    // --platform on the command line wins over the table: one plain image.
    let run = imgbuild(
        &project,
        &tmp.path().join("cache"),
        &[
            "build",
            "--platform",
            "linux/amd64/v3",
            "--message-format",
            "json",
        ],
    );
    let events = run.events();
    assert!(events.iter().all(|e| e["reason"] != "index-built"));
    assert_eq!(
        event(&events, "build-started")["platform"],
        "linux/amd64/v3"
    );
}
