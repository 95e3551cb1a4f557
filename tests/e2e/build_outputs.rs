//! Issue #2: every output format is read by the real tool that users would use, and the image
//! runs.

use std::process::Command;

use crate::support::*;

#[test]
fn oci_layout_output_is_read_by_skopeo_and_runs_under_runc_as_non_root() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let layout = tmp.path().join("oci");
    let run = imgbuild(
        &project,
        &tmp.path().join("cache"),
        &["build", "--output", &format!("oci:{}", layout.display())],
    );
    let digest = run.digest();

    let inspect = json(&tool(
        "skopeo",
        &["inspect", &format!("oci:{}:latest", layout.display())],
    ));
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(
        inspect["Layers"].as_array().unwrap().len(),
        3,
        "rootfs, libraries, app: {inspect}"
    );
    let config = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci:{}:latest", layout.display()),
        ],
    ));
    assert_eq!(config["config"]["User"], "65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/app/hello"])
    );
    assert!(
        config["config"]["Env"]
            .as_array()
            .unwrap()
            .contains(&"GREETING=Hello from imgbuild".into()),
        "{config}"
    );
    assert_eq!(config["config"]["Labels"]["org.example.kind"], "demo");

    let stdout = run_with_runc(&layout, "latest", tmp.path());
    assert_eq!(
        stdout.trim(),
        "Hello from imgbuild, world! (uid 65532, args [])"
    );
}

#[test]
fn the_rootfs_has_users_tmp_and_the_library_closure_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let layout = tmp.path().join("oci");
    imgbuild(
        &project,
        &tmp.path().join("cache"),
        &["build", "-o", &format!("oci:{}", layout.display())],
    )
    .digest();
    let bundle = tmp.path().join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:latest", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    let rootfs = bundle.join("rootfs");
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    assert!(
        std::fs::read_to_string(rootfs.join("etc/group"))
            .unwrap()
            .contains("nonroot:x:65532:")
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp_mode = std::fs::metadata(rootfs.join("tmp"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(tmp_mode, 0o1777);
    assert_eq!(
        std::fs::metadata(rootfs.join("home/nonroot"))
            .unwrap()
            .uid(),
        65532
    );
    let app = std::fs::metadata(rootfs.join("app/hello")).unwrap();
    assert_eq!(app.permissions().mode() & 0o777, 0o755);
    assert!(
        rootfs.join("lib/x86_64-linux-gnu/libc.so.6").is_file()
            || rootfs.join("usr/lib/x86_64-linux-gnu/libc.so.6").is_file()
    );
    // The ELF interpreter is at the exact path the binary names.
    assert!(rootfs.join("lib64/ld-linux-x86-64.so.2").exists());
    if std::path::Path::new("/etc/ssl/certs/ca-certificates.crt").is_file() {
        assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file());
    }
    // No shell, no package manager: only what the program needs.
    assert!(!rootfs.join("bin/sh").exists() && !rootfs.join("usr/bin").exists());
}

#[test]
fn oci_archive_output_is_read_by_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let archive = tmp.path().join("hello.tar");
    let digest = imgbuild(
        &project,
        &tmp.path().join("cache"),
        &[
            "build",
            "-o",
            &format!("oci-archive:{}:v1", archive.display()),
        ],
    )
    .digest();
    let inspect = json(&tool(
        "skopeo",
        &["inspect", &format!("oci-archive:{}:v1", archive.display())],
    ));
    assert_eq!(inspect["Digest"], digest.as_str());
    // skopeo can also copy it out to a layout that runs.
    let copy = tmp.path().join("copied");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci-archive:{}:v1", archive.display()),
            &format!("oci:{}:v1", copy.display()),
        ],
    );
    assert!(run_with_runc(&copy, "v1", tmp.path()).contains("Hello from imgbuild"));
}

#[test]
fn docker_archive_output_loads_and_runs_in_docker() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let archive = tmp.path().join("hello-docker.tar");
    let name = format!("imgbuild-e2e/{}:t1", unique("hello"));
    imgbuild(
        &project,
        &tmp.path().join("cache"),
        &[
            "build",
            "-o",
            &format!("docker-archive:{}:{name}", archive.display()),
        ],
    )
    .digest();
    let inspect = json(&tool(
        "skopeo",
        &["inspect", &format!("docker-archive:{}", archive.display())],
    ));
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3);

    let stdout = docker_load_and_run(&archive, &name, &["one", "two"]);
    assert_eq!(
        stdout.trim(),
        r#"Hello from imgbuild, world! (uid 65532, args ["one", "two"])"#
    );
}

#[test]
fn metadata_table_and_flags_configure_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("with-deps", tmp.path());
    let cache = tmp.path().join("cache");
    let layout = tmp.path().join("oci");
    let out = format!("oci:{}", layout.display());
    imgbuild(&project, &cache, &["build", "-o", &out]).digest();

    // From [package.metadata.imgbuild]: name/tag, cmd, env, expose, files.
    let image = format!("oci:{}:v0.2.0", layout.display());
    let config = json(&tool("skopeo", &["inspect", "--config", &image]));
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["--pretty"]));
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}})
    );
    let raw = json(&tool("skopeo", &["inspect", "--raw", &image]));
    let annotations = &raw["annotations"];
    assert_eq!(annotations["org.opencontainers.image.title"], "with-deps");
    assert_eq!(annotations["org.opencontainers.image.version"], "0.2.0");
    assert_eq!(
        annotations["org.opencontainers.image.source"],
        "https://example.com/with-deps"
    );
    assert_eq!(annotations["org.opencontainers.image.licenses"], "MIT");
    let report = json(&run_with_runc(&layout, "v0.2.0", tmp.path()));
    assert_eq!(report["title"], "built by imgbuild");
    assert_eq!(report["data"], "shipped with the image");
    assert_eq!(report["args"], serde_json::json!(["--pretty"]));

    // Flags override the table.
    imgbuild(
        &project,
        &cache,
        &[
            "build",
            "-o",
            &out,
            "--tag",
            "cli",
            "--env",
            "REPORT_TITLE=from flags",
            "--cmd",
            r#"["x"]"#,
        ],
    )
    .digest();
    let report = json(&run_with_runc(&layout, "cli", tmp.path()));
    assert_eq!(report["title"], "from flags");
    assert_eq!(report["args"], serde_json::json!(["x"]));
}

#[test]
fn json_message_format_prints_events_ending_with_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let run = imgbuild(
        &project,
        &tmp.path().join("cache"),
        &["build", "--message-format", "json"],
    );
    assert!(run.status.success(), "{}", run.stderr);
    let events: Vec<serde_json::Value> = run.stdout.lines().map(json).collect();
    let reasons: Vec<&str> = events
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "build-started",
            "app-cache",
            "cache-lookup",
            "units-restored",
            "isolation",
            "compiled",
            "layer",
            "layer",
            "layer",
            "attached",
            "attached",
            "app-cache",
            "image-built"
        ]
    );
    let last = events.last().unwrap();
    assert_eq!(last["reference"], "hello:latest");
    // The local store holds the image under that reference.
    let store = tmp.path().join("cache/store");
    let inspect = json(&tool(
        "skopeo",
        &["inspect", &format!("oci:{}:hello:latest", store.display())],
    ));
    assert_eq!(inspect["Digest"], last["digest"]);
}

#[test]
fn created_and_revision_come_from_git_and_source_date_epoch_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(&project)
            .env("GIT_AUTHOR_DATE", "2024-05-06T07:08:09Z")
            .env("GIT_COMMITTER_DATE", "2024-05-06T07:08:09Z")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-qm",
        "init",
    ]);
    let head = git(&["rev-parse", "HEAD"]);
    let layout = tmp.path().join("oci");
    let cache = tmp.path().join("cache");
    imgbuild(
        &project,
        &cache,
        &["build", "-o", &format!("oci:{}", layout.display())],
    )
    .digest();
    let image = format!("oci:{}:latest", layout.display());
    let raw = json(&tool("skopeo", &["inspect", "--raw", &image]));
    assert_eq!(
        raw["annotations"]["org.opencontainers.image.revision"],
        head.as_str()
    );
    assert_eq!(
        raw["annotations"]["org.opencontainers.image.created"],
        "2024-05-06T07:08:09Z"
    );
    let config = json(&tool("skopeo", &["inspect", "--config", &image]));
    assert_eq!(config["created"], "2024-05-06T07:08:09Z");

    imgbuild_env(
        &project,
        &cache,
        &["build", "-o", &format!("oci:{}:epoch", layout.display())],
        &[("SOURCE_DATE_EPOCH", "86400")],
    )
    .digest();
    let config = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci:{}:epoch", layout.display()),
        ],
    ));
    assert_eq!(config["created"], "1970-01-02T00:00:00Z");
}

#[test]
fn manifest_path_from_elsewhere_with_several_outputs_and_epoch_zero_without_git() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let cache = tmp.path().join("cache");
    let (layout, archive) = (tmp.path().join("oci"), tmp.path().join("hello.tar"));
    let manifest = project.join("Cargo.toml");
    let by_file = imgbuild(
        &elsewhere,
        &cache,
        &[
            "build",
            "--manifest-path",
            manifest.to_str().unwrap(),
            "-o",
            &format!("oci:{}", layout.display()),
            "-o",
            &format!("oci-archive:{}", archive.display()),
        ],
    );
    let digest = by_file.digest();
    for image in [
        format!("oci:{}:latest", layout.display()),
        format!("oci-archive:{}:latest", archive.display()),
    ] {
        assert_eq!(
            json(&tool("skopeo", &["inspect", &image]))["Digest"],
            digest.as_str(),
            "{image}"
        );
    }
    // No git repository and no SOURCE_DATE_EPOCH: every timestamp is the epoch.
    let config = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci:{}:latest", layout.display()),
        ],
    ));
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    // A directory works as well as the Cargo.toml itself.
    let by_dir = imgbuild(
        &elsewhere,
        &cache,
        &["build", "--manifest-path", project.to_str().unwrap()],
    );
    assert_eq!(by_dir.digest(), digest);
}

/// A library found through the binary's RUNPATH (not in the loader's default directories) is
/// carried at the same path, and the image sets LD_LIBRARY_PATH to its directory.
#[test]
fn a_library_found_through_runpath_is_carried_and_the_image_runs() {
    const TOML: &str =
        "[package]\nname = \"runpath\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n";
    const C: &str = "int greet(void) { return 42; }\n";
    const BUILD: &str = r#"fn main() {
    let out = std::env::var("OUT_DIR").unwrap();
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o", &format!("{out}/libgreet.so"), "greet.c"])
        .status()
        .unwrap();
    assert!(status.success());
    println!("cargo:rerun-if-changed=greet.c");
    println!("cargo:rustc-link-search=native={out}");
    println!("cargo:rustc-link-lib=dylib=greet");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{out}");
}
"#;
    const MAIN: &str = "unsafe extern \"C\" { fn greet() -> i32; }\nfn main() { println!(\"greet {}\", unsafe { greet() }); }\n";
    require("cc");
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(
        tmp.path(),
        &[
            ("Cargo.toml", TOML),
            ("greet.c", C),
            ("build.rs", BUILD),
            ("src/main.rs", MAIN),
        ],
    );
    lock(&dir);
    let layout = tmp.path().join("oci");
    imgbuild(
        &dir,
        &tmp.path().join("cache"),
        &["build", "-o", &format!("oci:{}", layout.display())],
    )
    .digest();
    let config = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci:{}:latest", layout.display()),
        ],
    ));
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ld_path = env
        .iter()
        .find_map(|e| e.strip_prefix("LD_LIBRARY_PATH="))
        .unwrap_or_else(|| panic!("{env:?}"));
    assert!(
        ld_path.ends_with("/out") && ld_path.contains("/release/build/runpath-"),
        "{ld_path}"
    );
    assert_eq!(
        run_with_runc(&layout, "latest", tmp.path()).trim(),
        "greet 42"
    );
}
