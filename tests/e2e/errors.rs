//! Issue #2: bad input gives a clear error, exit status 1, no panic, and no output written.

use std::path::Path;

use crate::support::*;

const BIN_TOML: &str =
    "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n";
const MAIN: &str = "fn main() { println!(\"hi\"); }\n";

fn assert_absent(path: &Path) {
    assert!(!path.exists(), "{} was written", path.display());
}

#[test]
fn not_a_cargo_project() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.tar");
    imgbuild(
        tmp.path(),
        &tmp.path().join("cache"),
        &["build", "-o", &format!("oci-archive:{}", out.display())],
    )
    .fails_with(&["is not a Cargo project", "--manifest-path"]);
    assert_absent(&out);
}

#[test]
fn a_package_without_a_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(
        tmp.path(),
        &[
            ("Cargo.toml", &BIN_TOML.replace("app", "just-a-lib")),
            ("src/lib.rs", "pub fn f() {}\n"),
        ],
    );
    lock(&dir);
    imgbuild(&dir, &tmp.path().join("cache"), &["build"])
        .fails_with(&["package `just-a-lib` has no binary target"]);
}

#[test]
fn several_binaries_and_no_choice() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(
        tmp.path(),
        &[
            ("Cargo.toml", BIN_TOML),
            ("src/main.rs", MAIN),
            ("src/bin/tool.rs", MAIN),
        ],
    );
    lock(&dir);
    imgbuild(&dir, &tmp.path().join("cache"), &["build"]).fails_with(&[
        "several binaries",
        "app/app",
        "app/tool",
        "--bin",
    ]);
    imgbuild(&dir, &tmp.path().join("cache"), &["build", "--bin", "tool"]).digest();
}

#[test]
fn a_missing_lockfile_is_not_created_behind_the_users_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(
        tmp.path(),
        &[("Cargo.toml", BIN_TOML), ("src/main.rs", MAIN)],
    );
    imgbuild(&dir, &tmp.path().join("cache"), &["build"])
        .fails_with(&["Cargo.lock is missing", "cargo generate-lockfile"]);
    assert_absent(&dir.join("Cargo.lock"));
}

#[test]
fn a_stale_lockfile() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(
        tmp.path(),
        &[
            ("Cargo.toml", BIN_TOML),
            ("src/main.rs", MAIN),
            (
                "helper/Cargo.toml",
                "[package]\nname = \"helper\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
            ),
            ("helper/src/lib.rs", ""),
        ],
    );
    lock(&dir);
    let before = std::fs::read_to_string(dir.join("Cargo.lock")).unwrap();
    let toml = BIN_TOML.replace(
        "[workspace]",
        "[dependencies]\nhelper = { path = \"helper\" }\n\n[workspace]",
    );
    std::fs::write(dir.join("Cargo.toml"), toml).unwrap();
    imgbuild(&dir, &tmp.path().join("cache"), &["build"])
        .fails_with(&["Cargo.lock is out of date", "cargo update"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("Cargo.lock")).unwrap(),
        before,
        "Cargo.lock was modified"
    );
}

#[test]
fn a_compile_error_shows_rustcs_diagnostic() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(
        tmp.path(),
        &[
            ("Cargo.toml", BIN_TOML),
            ("src/main.rs", "fn main() { let x: u32 = \"text\"; }\n"),
        ],
    );
    lock(&dir);
    let out = tmp.path().join("oci");
    let run = imgbuild(
        &dir,
        &tmp.path().join("cache"),
        &["build", "-o", &format!("oci:{}", out.display())],
    );
    run.fails_with(&["mismatched types", "`cargo build` failed"]);
    assert_absent(&out);
}

#[test]
fn an_unwritable_output_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(
        tmp.path(),
        &[("Cargo.toml", BIN_TOML), ("src/main.rs", MAIN)],
    );
    lock(&dir);
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let cache = tmp.path().join("cache");
    for out in [
        format!("oci-archive:{}/x.tar", file.display()),
        format!("oci:{}/layout", file.display()),
    ] {
        imgbuild(&dir, &cache, &["build", "-o", &out])
            .fails_with(&["invalid output", "is not a directory"]);
    }
    // A directory holding other things is not silently turned into an image layout.
    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    imgbuild(
        &dir,
        &cache,
        &["build", "-o", &format!("oci:{}", busy.display())],
    )
    .fails_with(&["is not an OCI image layout"]);
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);
    // An unsupported transport is refused before anything is compiled, naming what to use.
    imgbuild(&dir, &cache, &["build", "-o", "containers-storage:x"])
        .fails_with(&["containers-storage: is not supported", "docker-daemon:"]);
}

#[test]
fn a_malformed_metadata_table() {
    let tmp = tempfile::tempdir().unwrap();
    let toml = BIN_TOML.replace(
        "[workspace]",
        "[package.metadata.imgbuild]\nexpose = [\"http\"]\n\n[workspace]",
    );
    let dir = project(tmp.path(), &[("Cargo.toml", &toml), ("src/main.rs", MAIN)]);
    lock(&dir);
    let manifest = dir.join("Cargo.toml").canonicalize().unwrap();
    imgbuild(&dir, &tmp.path().join("cache"), &["build"]).fails_with(&[
        "invalid [package.metadata.imgbuild]",
        manifest.to_str().unwrap(),
        "http/tcp is not a port",
    ]);
    let toml = BIN_TOML.replace(
        "[workspace]",
        "[package.metadata.imgbuild]\nentrypont = [\"/app/app\"]\n\n[workspace]",
    );
    std::fs::write(dir.join("Cargo.toml"), toml).unwrap();
    imgbuild(&dir, &tmp.path().join("cache"), &["build"])
        .fails_with(&["unknown field `entrypont`"]);
}

/// Issue 13 (6): input that used to be accepted is refused with the value, the key and the
/// fix, before anything is compiled or written.
#[test]
fn values_that_used_to_be_accepted_are_refused_naming_the_value_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let with_table = |table: &str| {
        BIN_TOML.replace(
            "[workspace]",
            &format!("[package.metadata.imgbuild]\n{table}\n\n[workspace]"),
        )
    };
    let dir = project(
        tmp.path(),
        &[
            ("Cargo.toml", BIN_TOML),
            ("src/main.rs", MAIN),
            ("data.txt", "x"),
        ],
    );
    lock(&dir);
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    let dest = format!("oci:{}", out.display());

    // A port out of range: once silently 443, then 80.
    imgbuild(&dir, &cache, &["push", "127.0.0.1:99999/x"]).fails_with(&[
        "127.0.0.1:99999/x",
        "\"99999\"",
        "from 1 to 65535",
    ]);
    // --user with two colons.
    imgbuild(&dir, &cache, &["build", "--user", "a:b:c", "-o", &dest])
        .fails_with(&["\"a:b:c\"", "uid:gid"]);
    // A wrong type names the key.
    std::fs::write(dir.join("Cargo.toml"), with_table("expose = \"8080\"")).unwrap();
    imgbuild(&dir, &cache, &["build", "-o", &dest])
        .fails_with(&["`expose` = \"8080\"", "expected a sequence"]);
    // `files` from outside the package: an absolute path, `..`, and a link inside the package
    // that points out of it.
    for (src, needle) in [
        ("/etc/hostname", "is outside the package"),
        ("../x", "climbs out of the package"),
    ] {
        let table = format!("files = [{{ src = \"{src}\", dst = \"/x\" }}]");
        std::fs::write(dir.join("Cargo.toml"), with_table(&table)).unwrap();
        imgbuild(&dir, &cache, &["build", "-o", &dest]).fails_with(&[src, needle]);
    }
    std::os::unix::fs::symlink("/etc", dir.join("host-etc")).unwrap();
    let table = "files = [{ src = \"host-etc\", dst = \"/etc-copy\" }]";
    std::fs::write(dir.join("Cargo.toml"), with_table(table)).unwrap();
    imgbuild(&dir, &cache, &["build", "-o", &dest])
        .fails_with(&["host-etc", "outside the package directory"]);
    // Inside the package is fine, also through `..` that stays inside.
    let table = "files = [{ src = \"src/../data.txt\", dst = \"/data.txt\" }]";
    std::fs::write(dir.join("Cargo.toml"), with_table(table)).unwrap();
    imgbuild(&dir, &cache, &["build", "-o", &dest]).digest();
}
