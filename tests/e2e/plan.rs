//! Issue #3 (first part): per-binary dependency-tree keys and `plan --explain`.

use crate::support::*;

fn key_of(stdout: &str, binary: &str) -> String {
    let prefix = format!("{binary} dependency-key ");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no key for {binary} in:\n{stdout}"))
        .to_string()
}

#[test]
fn keys_are_per_binary_and_a_bump_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = |name: &str, version: &str| {
        format!("[package]\nname = \"{name}\"\nversion = \"{version}\"\nedition = \"2021\"\n")
    };
    let member = |name: &str, dep: &str, version: &str| {
        format!(
            "[package]\nname = \"{name}\"\nversion = \"{version}\"\nedition = \"2021\"\n\n[dependencies]\n{dep} = {{ path = \"../../libs/{dep}\" }}\n"
        )
    };
    project(
        tmp.path(),
        &[
            ("libs/a/Cargo.toml", &lib("a", "0.1.0")),
            ("libs/a/src/lib.rs", "pub fn a() -> u32 { 1 }\n"),
            ("libs/b/Cargo.toml", &lib("b", "0.1.0")),
            ("libs/b/src/lib.rs", "pub fn b() -> u32 { 2 }\n"),
            (
                "ws/Cargo.toml",
                "[workspace]\nresolver = \"2\"\nmembers = [\"alpha\", \"beta\"]\n",
            ),
            ("ws/alpha/Cargo.toml", &member("alpha", "a", "0.1.0")),
            (
                "ws/alpha/src/main.rs",
                "fn main() { println!(\"{}\", a::a()); }\n",
            ),
            ("ws/beta/Cargo.toml", &member("beta", "b", "0.1.0")),
            (
                "ws/beta/src/main.rs",
                "fn main() { println!(\"{}\", b::b()); }\n",
            ),
        ],
    );
    let ws = tmp.path().join("ws");
    lock(&ws);
    let cache = tmp.path().join("cache");

    let plan = imgbuild(&ws, &cache, &["plan"]);
    assert!(plan.status.success(), "{}", plan.stderr);
    let (alpha, beta) = (
        key_of(&plan.stdout, "alpha/alpha"),
        key_of(&plan.stdout, "beta/beta"),
    );
    assert_ne!(alpha, beta, "different trees, different keys");
    assert!(
        plan.stdout.contains("package a 0.1.0 source=path"),
        "{}",
        plan.stdout
    );

    imgbuild(&ws, &cache, &["build", "--bin", "alpha"]).digest();
    imgbuild(&ws, &cache, &["build", "--bin", "beta"]).digest();

    // Bump the library only alpha uses; also bump alpha's own version, which must not matter.
    std::fs::write(tmp.path().join("libs/a/Cargo.toml"), lib("a", "0.1.1")).unwrap();
    std::fs::write(ws.join("alpha/Cargo.toml"), member("alpha", "a", "0.9.0")).unwrap();
    cargo(&ws, &["update", "--offline", "-p", "a"]);

    let after = imgbuild(&ws, &cache, &["plan"]);
    assert_ne!(
        key_of(&after.stdout, "alpha/alpha"),
        alpha,
        "alpha's tree changed"
    );
    assert_eq!(
        key_of(&after.stdout, "beta/beta"),
        beta,
        "beta does not use `a`"
    );

    let explain = imgbuild(&ws, &cache, &["plan", "--explain"]);
    assert!(explain.status.success(), "{}", explain.stderr);
    let (alpha_part, beta_part) = explain.stdout.split_once("beta/beta").unwrap();
    assert!(
        alpha_part.contains("- package a 0.1.0 source=path"),
        "{}",
        explain.stdout
    );
    assert!(
        alpha_part.contains("+ package a 0.1.1 source=path"),
        "{}",
        explain.stdout
    );
    assert!(
        !alpha_part.contains("alpha 0.9.0"),
        "member versions are masked: {}",
        explain.stdout
    );
    assert!(
        beta_part.contains("unchanged since the last build"),
        "{}",
        explain.stdout
    );
}

/// Issue #12: the host's C compiler is a key input. A `cc` that reports another version (a
/// wrapper script first on `PATH`) gives another dependency key, `plan --explain` names the
/// line, and the build records it.
#[test]
fn another_c_compiler_is_another_key_and_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    imgbuild(&project, &cache, &["build"]).digest();
    let before = imgbuild(&project, &cache, &["plan", "--explain"]);
    assert!(before.status.success(), "{}", before.stderr);
    let real_cc = tool("sh", &["-c", "command -v cc"]);
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let wrapper = bin.join("cc");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'cc (Imgbuild Test) 99.1.0'; exit 0; fi\nexec {} \"$@\"\n",
            real_cc.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let after = imgbuild_env(&project, &cache, &["plan", "--explain"], &[("PATH", &path)]);
    assert!(after.status.success(), "{}", after.stderr);
    assert_ne!(
        key_of(&after.stdout, "hello/hello"),
        key_of(&before.stdout, "hello/hello"),
        "another C compiler, another key"
    );
    assert!(
        after
            .stdout
            .contains("+ machine cc cc: cc (Imgbuild Test) 99.1.0"),
        "{}",
        after.stdout
    );
    assert!(
        after.stdout.contains("- machine cc cc: "),
        "the old compiler line is named too: {}",
        after.stdout
    );
    let inputs = imgbuild(&project, &cache, &["plan"]);
    for line in [
        "machine cc-target ",
        "machine linker cc: ",
        "machine libc glibc ",
    ] {
        assert!(inputs.stdout.contains(line), "{line}: {}", inputs.stdout);
    }
}

/// Issue #15: cargo's target directory is made before `cargo metadata` runs (so that cargo
/// keeps its rustc answers) only where it is sure to be there: reading the workspace from a
/// member's directory, or with `CARGO_TARGET_DIR` set, leaves no `target/` anywhere else.
#[test]
fn the_target_directory_is_made_early_only_where_cargo_puts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let package = |name: &str| {
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n")
    };
    project(
        tmp.path(),
        &[
            ("ws/Cargo.toml", "[workspace]\nmembers = [\"alpha\"]\n"),
            ("ws/alpha/Cargo.toml", &package("alpha")),
            ("ws/alpha/src/main.rs", "fn main() {}\n"),
            ("lone/Cargo.toml", &package("lone")),
            ("lone/src/main.rs", "fn main() {}\n"),
        ],
    );
    let (ws, lone) = (tmp.path().join("ws"), tmp.path().join("lone"));
    lock(&ws);
    lock(&lone);
    let cache = tmp.path().join("cache");

    let from_member = imgbuild(&ws.join("alpha"), &cache, &["plan"]);
    assert!(from_member.status.success(), "{}", from_member.stderr);
    assert!(
        !ws.join("alpha/target").exists(),
        "no target/ in the member"
    );
    assert!(ws.join("target/.rustc_info.json").is_file());

    let elsewhere = tmp.path().join("elsewhere");
    let moved = imgbuild_env(
        &lone,
        &cache,
        &["plan"],
        &[("CARGO_TARGET_DIR", elsewhere.to_str().unwrap())],
    );
    assert!(moved.status.success(), "{}", moved.stderr);
    assert!(!lone.join("target").exists(), "CARGO_TARGET_DIR is used");
    assert!(elsewhere.join(".rustc_info.json").is_file());

    let plain = imgbuild(&lone, &cache, &["plan"]);
    assert!(plain.status.success(), "{}", plain.stderr);
    assert!(lone.join("target/.rustc_info.json").is_file());
}
