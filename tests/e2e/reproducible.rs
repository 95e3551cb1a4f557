//! Issue #2: same inputs, same digest; an app change touches only the app layer.

use crate::support::*;

#[test]
fn the_same_project_in_two_folders_gives_the_same_digest() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    // Different depths, so no path can line up by accident.
    let deeper = b.path().join("some/much/deeper/checkout");
    std::fs::create_dir_all(&deeper).unwrap();
    let one = copy_example("with-deps", a.path());
    let two = copy_example("with-deps", &deeper);
    let (la, lb) = (a.path().join("oci"), b.path().join("oci"));
    let da = imgbuild(
        &one,
        &a.path().join("cache"),
        &["build", "-o", &format!("oci:{}", la.display())],
    )
    .digest();
    let db = imgbuild(
        &two,
        &b.path().join("cache"),
        &["build", "-o", &format!("oci:{}", lb.display())],
    )
    .digest();
    assert_eq!(layers(&la, "v0.2.0"), layers(&lb, "v0.2.0"));
    assert_eq!(da, db);
}

#[test]
fn an_app_only_change_changes_only_the_app_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let layout = tmp.path().join("oci");
    let first = imgbuild(
        &project,
        &cache,
        &["build", "-o", &format!("oci:{}:one", layout.display())],
    )
    .digest();
    let again = imgbuild(
        &project,
        &cache,
        &["build", "-o", &format!("oci:{}:again", layout.display())],
    )
    .digest();
    assert_eq!(
        first, again,
        "an unchanged rebuild must give the same digest"
    );

    let main = project.join("src/main.rs");
    let source = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, source.replace("world!", "changed world!")).unwrap();
    let second = imgbuild(
        &project,
        &cache,
        &["build", "-o", &format!("oci:{}:two", layout.display())],
    )
    .digest();
    assert_ne!(first, second);
    let (before, after) = (layers(&layout, "one"), layers(&layout, "two"));
    assert_eq!(before.len(), 3);
    assert_eq!(
        before[..2],
        after[..2],
        "rootfs and library layers must not change"
    );
    assert_ne!(before[2], after[2], "the app layer must change");
    assert!(run_with_runc(&layout, "two", tmp.path()).contains("changed world!"));
}

/// A build script's generated code embeds its own absolute path (`file!()` of a file in
/// `OUT_DIR`, as code generators like prost produce): plain `cargo build` in two folders gives
/// two binaries; imgbuild's path remapping gives one.
#[test]
fn paths_from_build_scripts_are_remapped_so_folders_do_not_matter() {
    const TOML: &str =
        "[package]\nname = \"paths\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n";
    const BUILD: &str = r#"fn main() {
    let out = std::env::var("OUT_DIR").unwrap();
    std::fs::write(format!("{out}/generated.rs"), "pub fn origin() -> &'static str { file!() }\n").unwrap();
}
"#;
    const MAIN: &str = "include!(concat!(env!(\"OUT_DIR\"), \"/generated.rs\"));\nfn main() { println!(\"{}\", origin()); }\n";
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    let mut printed = Vec::new();
    for (i, root) in [a.path().join("x"), b.path().join("elsewhere/y")]
        .iter()
        .enumerate()
    {
        let dir = project(
            root,
            &[
                ("Cargo.toml", TOML),
                ("build.rs", BUILD),
                ("src/main.rs", MAIN),
            ],
        );
        lock(&dir);
        let layout = root.join("oci");
        digests.push(
            imgbuild(
                &dir,
                &root.join("cache"),
                &["build", "-o", &format!("oci:{}", layout.display())],
            )
            .digest(),
        );
        printed.push(run_with_runc(&layout, "latest", root).trim().to_string());
        if i == 0 {
            // The control: without imgbuild, the folder leaks into the binary.
            let out = std::process::Command::new(env!("CARGO"))
                .args(["run", "-q", "--release"])
                .current_dir(&dir)
                .env_remove("RUSTC_WRAPPER")
                .output()
                .unwrap();
            let plain = String::from_utf8_lossy(&out.stdout);
            assert!(
                plain.contains(dir.to_str().unwrap()),
                "plain cargo output: {plain}"
            );
        }
    }
    assert!(
        printed[0].starts_with("/build/target/release/build/paths-"),
        "{printed:?}"
    );
    assert_eq!(printed[0], printed[1]);
    assert_eq!(digests[0], digests[1]);
}
