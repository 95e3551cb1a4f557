//! Issue #6: the library driven from an xtask, `cargo imgbuild`, imgbuild's own image, and the
//! real examples (an axum service answering on loopback, SQLite from the system).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::registry_support::free_port;
use crate::support::*;

#[test]
fn cargo_imgbuild_is_a_cargo_subcommand() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let direct = imgbuild(&project, &cache, &["build"]).digest();

    let exe = PathBuf::from(env!("CARGO_BIN_EXE_cargo-imgbuild"));
    let path = format!(
        "{}:{}",
        exe.parent().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    let out = Command::new(env!("CARGO"))
        .args(["imgbuild", "build"])
        .current_dir(&project)
        .env("PATH", path)
        .env("IMGBUILD_CACHE_DIR", &cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), direct);
    assert!(stderr.contains("Image hello:latest"), "{stderr}");
}

#[test]
fn imgbuilds_own_image_is_built_by_cargo_xtask_image() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("imgbuild-image");
    let run = Command::new(env!("CARGO"))
        .args(["xtask", "image", "--output"])
        .arg(format!("oci:{}:dogfood", out.display()))
        .current_dir(repo_root())
        .env("IMGBUILD_CACHE_DIR", tmp.path().join("cache"))
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "cargo xtask image failed:\n{stderr}");
    let digest = String::from_utf8_lossy(&run.stdout).trim().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let bundle = bundle(&out, "dogfood", tmp.path(), |c| {
        c["process"]["args"] = serde_json::json!(["/app/imgbuild", "--version"]);
    });
    let version = runc_output(&bundle);
    assert_eq!(
        version.trim(),
        format!("imgbuild {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_workspace_examples_xtask_writes_one_layout_per_binary_with_one_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = copy_example("workspace", tmp.path());
    // The copy depends on this repository's library by absolute path.
    let xtask_toml = ws.join("xtask/Cargo.toml");
    let text = std::fs::read_to_string(&xtask_toml).unwrap();
    let library = repo_root().join("crates/imgbuild");
    std::fs::write(
        &xtask_toml,
        text.replace("../../../crates/imgbuild", library.to_str().unwrap()),
    )
    .unwrap();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("images");
    let run = Command::new(env!("CARGO"))
        .args(["xtask", "images", "--output-dir"])
        .arg(&out)
        .current_dir(&ws)
        // Compiled once per machine, not per test run.
        .env(
            "CARGO_TARGET_DIR",
            repo_root().join("target/e2e-example-workspace"),
        )
        .env("IMGBUILD_CACHE_DIR", &cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "cargo xtask images failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("api sha256:")),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("worker sha256:")),
        "{stdout}"
    );

    let api = json(&run_with_runc(&out.join("api"), "latest", tmp.path()));
    assert_eq!(api["service"], "api");
    let worker = run_with_runc(&out.join("worker"), "latest", tmp.path());
    assert_eq!(worker.trim(), "worker counted 3 lines");

    // Two trees, two dependency-cache entries, in the one cache.
    let listing = json(&imgbuild(&ws, &cache, &["cache", "ls", "--message-format", "json"]).stdout);
    let mut binaries: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["key"].as_str().unwrap().starts_with("app-"))
        .map(|e| e["binary"].as_str().unwrap())
        .collect();
    binaries.sort();
    assert_eq!(binaries, ["api/api", "worker/worker"]);
}

/// Builds `examples/<name>` (copied under `tmp`) into the OCI layout `tmp/out`, tag `latest`.
fn build_example_layout(name: &str, tmp: &Path) -> PathBuf {
    let project = copy_example(name, tmp);
    let out = tmp.join("out");
    imgbuild(
        &project,
        &tmp.join("cache"),
        &["build", "-o", &format!("oci:{}", out.display())],
    )
    .digest();
    out
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn the_axum_service_answers_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let out = build_example_layout("axum-service", tmp.path());
    let port = free_port();
    // The host's network namespace, so that the service is reachable on 127.0.0.1.
    let bundle = bundle(&out, "latest", tmp.path(), |c| {
        let namespaces = c["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|n| n["type"] != "network");
        let env = c["process"]["env"].as_array_mut().unwrap();
        env.retain(|e| !e.as_str().unwrap().starts_with("PORT="));
        env.push(format!("PORT={port}").into());
    });
    require("runc");
    let id = unique("imgbuild-axum");
    let mut child = Command::new("runc")
        .args(["run", "--bundle", bundle.to_str().unwrap(), &id])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut health = None;
    while start.elapsed() < Duration::from_secs(20) && health.is_none() {
        health = http_get(port, "/health").filter(|r| r.starts_with("HTTP/1.1 200"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let greeting = http_get(port, "/greet/ci");
    let _ = Command::new("runc").args(["kill", &id, "KILL"]).output();
    let _ = child.wait();
    let _ = Command::new("runc")
        .args(["delete", "--force", &id])
        .output();
    let health = health.unwrap_or_else(|| {
        let mut stderr = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
        panic!("the service never answered /health:\n{stderr}")
    });
    assert!(health.ends_with("ok"), "{health}");
    let greeting = greeting.expect("an answer to /greet/ci");
    assert!(greeting.contains(r#""message":"Hello, ci!""#), "{greeting}");
}

#[test]
fn the_sqlite_example_runs_from_scratch_with_the_systems_library() {
    require("pkg-config");
    assert!(
        Path::new("/usr/include/sqlite3.h").exists(),
        "libsqlite3-dev is not installed: run .ci/run, or `apt-get install libsqlite3-dev`"
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = build_example_layout("sqlite", tmp.path());
    let bundle = bundle(&out, "latest", tmp.path(), |_| {});
    let libraries: Vec<PathBuf> = walk(&bundle.join("rootfs"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libsqlite3.so"))
        })
        .collect();
    assert!(
        !libraries.is_empty(),
        "the library layer carries libsqlite3"
    );
    let output = runc_output(&bundle);
    assert!(output.starts_with("sqlite 3."), "{output}");
    assert!(output.trim().ends_with("3 rows, 900 downloads"), "{output}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_readmes_first_command_builds_the_hello_example() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hello");
    // The README's command, with the output and cache in a temporary directory.
    let run = Command::new(env!("CARGO"))
        .args([
            "run",
            "-q",
            "-p",
            "imgbuild-cli",
            "--",
            "build",
            "--manifest-path",
        ])
        .arg(repo_root().join("examples/hello/Cargo.toml"))
        .arg("--output")
        .arg(format!("oci:{}", out.display()))
        .current_dir(repo_root())
        .env("IMGBUILD_CACHE_DIR", tmp.path().join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let digest = String::from_utf8_lossy(&run.stdout).trim().to_string();
    let inspect = json(&tool(
        "skopeo",
        &["inspect", &format!("oci:{}:latest", out.display())],
    ));
    assert_eq!(inspect["Digest"], digest.as_str());
}
