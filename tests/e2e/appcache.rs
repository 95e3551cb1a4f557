//! Issue #7: zero-work rebuilds — the image is reused when nothing the binary reads changed,
//! locally and through the cache repository.

use std::path::Path;

use serde_json::Value;

use crate::registry_support::{Auth, Registry};
use crate::support::*;

/// A project with a module, an `include_str!` file, a build script with a
/// `rerun-if-changed` input, a metadata table, and an editor backup lying around.
fn project_with_inputs(dir: &Path) {
    project(
        dir,
        &[
            (
                "Cargo.toml",
                "[package]\nname = \"zw\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[package.metadata.imgbuild]\nenv = { MODE = \"a\" }\n\n[workspace]\n",
            ),
            (
                "build.rs",
                "fn main() {\n    let input = std::fs::read_to_string(\"input.txt\").unwrap();\n    let out = std::env::var(\"OUT_DIR\").unwrap();\n    std::fs::write(format!(\"{out}/gen.rs\"), format!(\"const GEN: usize = {};\", input.len())).unwrap();\n    println!(\"cargo:rerun-if-changed=input.txt\");\n    println!(\"cargo:rerun-if-changed=build.rs\");\n}\n",
            ),
            (
                "src/main.rs",
                "mod greet;\nconst DATA: &str = include_str!(\"../data.txt\");\ninclude!(concat!(env!(\"OUT_DIR\"), \"/gen.rs\"));\nfn main() { println!(\"{} {} {}\", greet::hello(), DATA.trim(), GEN); }\n",
            ),
            (
                "src/greet.rs",
                "pub fn hello() -> &'static str { \"hi\" }\n",
            ),
            ("data.txt", "data one\n"),
            ("input.txt", "input one\n"),
            ("src/greet.rs~", "editor backup\n"),
        ],
    );
    lock(dir);
}

fn build(dir: &Path, cache: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["build", "--message-format", "json"];
    args.extend_from_slice(extra);
    let run = imgbuild(dir, cache, &args);
    run.events()
}

fn app_hit(events: &[Value]) -> bool {
    let lookup = events
        .iter()
        .find(|e| e["reason"] == "app-cache" && e.get("stored").is_none())
        .unwrap_or_else(|| panic!("no app-cache lookup in {events:#?}"));
    let hit = lookup["hit"].as_bool().unwrap();
    let compiled = events.iter().any(|e| e["reason"] == "compiled");
    assert_eq!(
        hit, !compiled,
        "a hit runs no compiler, a miss compiles: {events:#?}"
    );
    hit
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn touching_is_a_hit_and_changing_any_input_is_a_miss() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("zw");
    project_with_inputs(&dir);
    let cache = tmp.path().join("cache");

    let first = build(&dir, &cache, &[]);
    assert!(!app_hit(&first));
    let second = build(&dir, &cache, &[]);
    assert!(app_hit(&second), "an unchanged rebuild compiles nothing");
    assert_eq!(image_digest(&second), image_digest(&first));

    // Touching files, and changing an editor backup nobody compiles, is still a hit.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    for f in [
        "src/main.rs",
        "src/greet.rs",
        "data.txt",
        "input.txt",
        "build.rs",
        "Cargo.toml",
    ] {
        std::fs::File::options()
            .write(true)
            .open(dir.join(f))
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
    std::fs::write(dir.join("src/greet.rs~"), "another backup\n").unwrap();
    assert!(app_hit(&build(&dir, &cache, &[])), "touched, not changed");

    // One byte in each kind of input: a miss, explained by plan, then a hit again.
    let cases: [(&str, &str, &str, &str); 4] = [
        ("src/greet.rs", "\"hi\"", "\"ho\"", "src/greet.rs"),
        ("data.txt", "one", "two", "data.txt"),
        ("input.txt", "one", "two", "input.txt"),
        (
            "Cargo.toml",
            "MODE = \"a\"",
            "MODE = \"b\"",
            "manifest Cargo.toml",
        ),
    ];
    for (file, from, to, named) in cases {
        edit(&dir.join(file), from, to);
        let plan = imgbuild(&dir, &cache, &["plan", "--explain"]);
        assert!(plan.status.success(), "{}", plan.stderr);
        assert!(plan.stdout.contains(" miss"), "{}", plan.stdout);
        assert!(
            plan.stdout.contains(named),
            "plan names {named}:\n{}",
            plan.stdout
        );
        let events = build(&dir, &cache, &[]);
        assert!(!app_hit(&events), "changing {file} is a miss");
        assert!(app_hit(&build(&dir, &cache, &[])), "and then a hit again");
    }
    let out = tmp.path().join("out");
    build(&dir, &cache, &["-o", &format!("oci:{}", out.display())]);
    assert_eq!(
        run_with_runc(&out, "latest", tmp.path()).trim(),
        "ho data two 10"
    );

    // The image configuration is an input too.
    let before = build(&dir, &cache, &[]);
    assert!(app_hit(&before));
    let relabeled = build(&dir, &cache, &["--label", "x=y"]);
    assert!(!app_hit(&relabeled));
    assert_ne!(image_digest(&relabeled), image_digest(&before));
}

#[test]
fn a_corrupted_app_entry_is_detected_and_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("zw");
    project_with_inputs(&dir);
    let cache = tmp.path().join("cache");
    let first = build(&dir, &cache, &[]);
    let app_layer = first
        .iter()
        .find(|e| e["reason"] == "layer" && e["role"] == "app")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let blob = cache.join("store/blobs/sha256").join(app_layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&blob, bytes).unwrap();

    let rebuilt = build(&dir, &cache, &[]);
    assert!(
        rebuilt.iter().any(|e| e["reason"] == "cache-unusable"
            && e["message"].as_str().unwrap().contains("corrupt")),
        "{rebuilt:#?}"
    );
    assert!(!app_hit(&rebuilt));
    assert_eq!(image_digest(&rebuilt), image_digest(&first));
    assert!(app_hit(&build(&dir, &cache, &[])));
}

#[test]
fn a_fresh_runner_restores_the_image_from_the_registry_and_compiles_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let repo = format!("{}/cache/zw", registry.host());
    let target = format!("{}/apps/zw:v1", registry.host());
    let one = tmp.path().join("one/zw");
    project_with_inputs(&one);
    let first = build(
        &one,
        &tmp.path().join("cache-1"),
        &["--cache-repo", &repo, "-o", &format!("docker://{target}")],
    );
    assert!(!app_hit(&first));

    // Same commit elsewhere: a fresh checkout, an empty cache directory.
    let two = tmp.path().join("elsewhere/deeper/zw");
    project_with_inputs(&two);
    let uploads = registry.requests("PUT", "/blobs/uploads/");
    let second = build(
        &two,
        &tmp.path().join("cache-2"),
        &["--cache-repo", &repo, "-o", &format!("docker://{target}")],
    );
    assert!(
        app_hit(&second),
        "restored from the registry, nothing compiled"
    );
    assert!(
        second
            .iter()
            .any(|e| e["reason"] == "app-cache" && e["from_registry"] == true)
    );
    assert_eq!(image_digest(&second), image_digest(&first));
    let pushed = second.iter().find(|e| e["reason"] == "pushed").unwrap();
    assert_eq!(
        pushed["uploaded"], 0,
        "the target repository had the image: only tagged"
    );
    assert_eq!(
        registry.requests("PUT", "/blobs/uploads/"),
        uploads,
        "nothing uploaded"
    );

    // A fresh runner pushing to a repository that lacks the image: its blobs are mounted from
    // the cache repository, not uploaded.
    let three = tmp.path().join("third/zw");
    project_with_inputs(&three);
    let other = format!("{}/apps/zw-other:v1", registry.host());
    let third = build(
        &three,
        &tmp.path().join("cache-3"),
        &["--cache-repo", &repo, "-o", &format!("docker://{other}")],
    );
    assert!(app_hit(&third));
    let pushed = third.iter().find(|e| e["reason"] == "pushed").unwrap();
    assert_eq!(
        (pushed["uploaded"].as_u64(), pushed["mounted"].as_u64()),
        (Some(0), Some(4)),
        "{pushed}"
    );
    // The SBOM came with the image from the cache repository and is mounted too; only this
    // push's provenance (it names this push's destination) is new.
    assert_eq!(registry.requests("PUT", "/blobs/uploads/"), uploads + 1);
}
