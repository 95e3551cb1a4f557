//! Issue #5: hermetic builds — no network and no caller variables for build scripts, the same
//! digest whatever the folder, HOME, umask, mtimes, environment and time, and
//! `imgbuild verify`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// A project whose build script tries to connect to `port` on 127.0.0.1 and reads
/// `PROBE_SECRET`, and whose binary prints what it saw.
fn probe(dir: &Path, port: u16) -> PathBuf {
    let build_rs = format!(
        r#"fn main() {{
    let addr: std::net::SocketAddr = "127.0.0.1:{port}".parse().unwrap();
    let network = match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3)) {{
        Ok(_) => "reached",
        Err(_) => "blocked",
    }};
    let secret = std::env::var("PROBE_SECRET").unwrap_or_else(|_| "absent".to_string());
    let out = std::env::var("OUT_DIR").unwrap();
    std::fs::write(format!("{{out}}/probe.txt"), format!("network={{network}} secret={{secret}}")).unwrap();
    println!("cargo:rerun-if-env-changed=PROBE_SECRET");
}}
"#
    );
    project(
        dir,
        &[
            (
                "Cargo.toml",
                "[package]\nname = \"probe\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
            ),
            ("build.rs", &build_rs),
            (
                "src/main.rs",
                "fn main() { println!(\"{}\", include_str!(concat!(env!(\"OUT_DIR\"), \"/probe.txt\"))); }\n",
            ),
        ],
    );
    lock(dir);
    dir.to_path_buf()
}

/// A listener that accepts (and drops) connections for the life of the test.
fn listener() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    port
}

#[test]
fn build_scripts_get_no_network_and_no_caller_variables() {
    let tmp = tempfile::tempdir().unwrap();
    let port = listener();
    let dir = probe(&tmp.path().join("probe"), port);
    let cache = tmp.path().join("cache");

    let out = tmp.path().join("out");
    let run = imgbuild_env(
        &dir,
        &cache,
        &[
            "build",
            "-o",
            &format!("oci:{}", out.display()),
            "--message-format",
            "json",
        ],
        &[("PROBE_SECRET", "leaked")],
    );
    assert!(run.status.success(), "{}", run.stderr);
    let isolation = run
        .stdout
        .lines()
        .map(json)
        .find(|e| e["reason"] == "isolation")
        .expect("an isolation event");
    assert_eq!(isolation["network"], "isolated", "{isolation}");
    assert_eq!(
        run_with_runc(&out, "latest", tmp.path()).trim(),
        "network=blocked secret=absent"
    );

    // --allow-network: the build script reaches the listener; the image says it is not hermetic.
    let open = tmp.path().join("open");
    let digest = imgbuild_env(
        &dir,
        &cache,
        &[
            "build",
            "--allow-network",
            "-o",
            &format!("oci:{}", open.display()),
        ],
        &[("PROBE_SECRET", "leaked")],
    )
    .digest();
    assert_eq!(
        run_with_runc(&open, "latest", tmp.path()).trim(),
        "network=reached secret=absent"
    );
    let raw = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:latest", open.display()),
        ],
    ));
    assert!(
        raw["annotations"]["dev.imgbuild.hermetic"]
            .as_str()
            .is_some_and(|v| v.starts_with("false")),
        "{raw}"
    );
    // The hermetic build's artifacts were not reused, nor are they now.
    let again = tmp.path().join("again");
    let hermetic = imgbuild(
        &dir,
        &cache,
        &["build", "-o", &format!("oci:{}", again.display())],
    )
    .digest();
    assert_ne!(hermetic, digest);
    assert_eq!(
        run_with_runc(&again, "latest", tmp.path()).trim(),
        "network=blocked secret=absent"
    );

    // --pass-env lets one variable through.
    let passed = tmp.path().join("passed");
    imgbuild_env(
        &dir,
        &cache,
        &[
            "build",
            "--pass-env",
            "PROBE_SECRET",
            "-o",
            &format!("oci:{}", passed.display()),
        ],
        &[("PROBE_SECRET", "shared")],
    )
    .digest();
    assert_eq!(
        run_with_runc(&passed, "latest", tmp.path()).trim(),
        "network=blocked secret=shared"
    );
}

#[test]
fn one_digest_whatever_the_folder_home_umask_mtimes_environment_and_time() {
    let tmp = tempfile::tempdir().unwrap();
    let port = listener();
    let first = probe(&tmp.path().join("a"), port);
    let second_parent = tmp.path().join("somewhere/much/deeper");
    let second = second_parent.join("probe-copy");
    copy_tree(&first, &second);
    std::fs::remove_dir_all(second.join("target")).ok();

    let one = imgbuild(&first, &tmp.path().join("cache-1"), &["build"]).digest();

    // Another HOME (with the real toolchain homes), umask, source mtimes, time and noise.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for file in ["src/main.rs", "build.rs", "Cargo.toml"] {
        let f = std::fs::File::options()
            .write(true)
            .open(second.join(file))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))
            .unwrap();
    }
    let home = tmp.path().join("other-home");
    std::fs::create_dir_all(&home).unwrap();
    let real_home = std::env::var("HOME").unwrap();
    let var = |k: &str, default: String| std::env::var(k).unwrap_or(default);
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 077; exec \"$0\" build")
        .arg(env!("CARGO_BIN_EXE_imgbuild"))
        .current_dir(&second)
        .env("IMGBUILD_CACHE_DIR", tmp.path().join("cache-2"))
        .env_remove("SOURCE_DATE_EPOCH")
        .env("HOME", &home)
        .env(
            "CARGO_HOME",
            var("CARGO_HOME", format!("{real_home}/.cargo")),
        )
        .env(
            "RUSTUP_HOME",
            var("RUSTUP_HOME", format!("{real_home}/.rustup")),
        )
        .env("PROBE_SECRET", "noise")
        .env("TZ", "Asia/Tokyo")
        .env("LANG", "fr_FR.UTF-8")
        .env("SOME_CI_VARIABLE", "12345")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let two = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(one, two, "same digest\n{stderr}");
}

#[test]
fn verify_passes_on_a_reproducible_project_and_names_what_differs_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let run = imgbuild(&hello, &cache, &["verify"]);
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("reproducible sha256:"),
        "{}",
        run.stdout
    );

    // A build script that writes the current time into the binary.
    let timey = tmp.path().join("timey");
    project(
        &timey,
        &[
            (
                "Cargo.toml",
                "[package]\nname = \"timey\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
            ),
            (
                "build.rs",
                "fn main() {\n    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();\n    std::fs::write(format!(\"{}/t.txt\", std::env::var(\"OUT_DIR\").unwrap()), now.to_string()).unwrap();\n}\n",
            ),
            (
                "src/main.rs",
                "fn main() { println!(\"built at {}\", include_str!(concat!(env!(\"OUT_DIR\"), \"/t.txt\"))); }\n",
            ),
        ],
    );
    lock(&timey);
    let run = imgbuild(&timey, &cache, &["verify"]);
    run.fails_with(&[
        "not reproducible",
        "(app)",
        "/app/timey",
        "compiled binary differs",
    ]);
    assert!(!run.stderr.contains("(libraries)") && !run.stderr.contains("(rootfs)"));

    let json_run = imgbuild(&timey, &cache, &["verify", "--message-format", "json"]);
    assert!(!json_run.status.success());
    let verdict = json(json_run.stdout.lines().last().unwrap());
    assert_eq!(verdict["reproducible"], false);
    assert_ne!(verdict["first"], verdict["second"]);
}

#[test]
fn without_a_sandbox_the_build_says_so_once_and_still_scrubs_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let port = listener();
    let dir = probe(&tmp.path().join("probe"), port);
    // A PATH with every program of /usr/bin except bwrap and unshare.
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for entry in std::fs::read_dir("/usr/bin").unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "bwrap" || name == "unshare" {
            continue;
        }
        let _ = std::os::unix::fs::symlink(entry.path(), bin.join(&name));
    }
    let cargo_bin = Path::new(env!("CARGO")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", cargo_bin.display(), bin.display());
    let out = tmp.path().join("out");
    let run = imgbuild_env(
        &dir,
        &tmp.path().join("cache"),
        &[
            "build",
            "-o",
            &format!("oci:{}", out.display()),
            "--message-format",
            "json",
        ],
        &[("PATH", &path), ("PROBE_SECRET", "leaked")],
    );
    assert!(run.status.success(), "{}", run.stderr);
    let events: Vec<serde_json::Value> = run.stdout.lines().map(json).collect();
    let isolation: Vec<_> = events
        .iter()
        .filter(|e| e["reason"] == "isolation")
        .collect();
    assert_eq!(isolation.len(), 1);
    assert_eq!(isolation[0]["network"], "not-isolated");
    let warnings: Vec<_> = events
        .iter()
        .filter(|e| {
            e["reason"] == "warning"
                && e["message"]
                    .as_str()
                    .unwrap()
                    .contains("network isolation is off")
        })
        .collect();
    assert_eq!(warnings.len(), 1, "said once: {events:#?}");
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("bwrap is not installed")
    );
    assert_eq!(
        run_with_runc(&out, "latest", tmp.path()).trim(),
        "network=reached secret=absent",
        "not isolated, but the environment is still scrubbed"
    );
}
