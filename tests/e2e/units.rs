//! Issue #15: the workspace's own crates cached per unit, keyed by content. A fresh checkout
//! compiles only the members whose sources changed and the members that depend on them; what
//! cargo compiled is read from the `compiled` event (cargo's own JSON messages), never timed.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::registry_support::{Auth, Registry};
use crate::support::*;

/// A workspace: `bottom` (a build script, the registry crate itoa) ← `mid` ← `top` ← `app-a`,
/// and `app-b` on `mid`. Each library adds a number; the binaries print the sum, so a stale
/// unit would print a wrong number.
pub(crate) fn chain(dir: &Path) -> PathBuf {
    let lib =
        |dep: &str, n: u32| format!("pub fn value() -> u64 {{ {dep}::value() * 10 + {n} }}\n");
    let dir = project(
        dir,
        &[
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\"bottom\", \"mid\", \"top\", \"app-a\", \"app-b\"]\nresolver = \"2\"\n",
            ),
            (
                "bottom/Cargo.toml",
                "[package]\nname = \"bottom\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nitoa = \"=1.0.10\"\n",
            ),
            (
                "bottom/build.rs",
                "fn main() {\n    println!(\"cargo:rerun-if-changed=build.rs\");\n    println!(\"cargo:rustc-env=BOTTOM_BASE=1\");\n}\n",
            ),
            (
                "bottom/src/lib.rs",
                "pub fn value() -> u64 { let mut b = itoa::Buffer::new(); b.format(1u8).parse::<u64>().unwrap() * env!(\"BOTTOM_BASE\").parse::<u64>().unwrap() }\n",
            ),
            ("mid/Cargo.toml", &member("mid", &["bottom"])),
            ("mid/src/lib.rs", &lib("bottom", 2)),
            ("top/Cargo.toml", &member("top", &["mid"])),
            ("top/src/lib.rs", &lib("mid", 3)),
            ("app-a/Cargo.toml", &member("app-a", &["top"])),
            (
                "app-a/src/main.rs",
                "fn main() { println!(\"a {}\", top::value()); }\n",
            ),
            ("app-b/Cargo.toml", &member("app-b", &["mid"])),
            (
                "app-b/src/main.rs",
                "fn main() { println!(\"b {}\", mid::value()); }\n",
            ),
        ],
    );
    lock(&dir);
    dir
}

fn member(name: &str, deps: &[&str]) -> String {
    let mut text = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n"
    );
    for d in deps {
        text.push_str(&format!("{d} = {{ path = \"../{d}\" }}\n"));
    }
    text
}

/// A fresh checkout of `from` at `to` (new directory, new file times, no target directory),
/// with `edits` applied: (file, text appended).
pub(crate) fn checkout(from: &Path, to: &Path, edits: &[(&str, &str)]) -> PathBuf {
    for entry in [
        "Cargo.toml",
        "Cargo.lock",
        "bottom",
        "mid",
        "top",
        "app-a",
        "app-b",
    ] {
        let src = from.join(entry);
        if src.is_dir() {
            copy_tree(&src, &to.join(entry));
        } else {
            std::fs::create_dir_all(to).unwrap();
            std::fs::copy(&src, to.join(entry)).unwrap();
        }
    }
    for (file, text) in edits {
        let path = to.join(file);
        let mut content = std::fs::read_to_string(&path).unwrap();
        content.push_str(text);
        std::fs::write(&path, content).unwrap();
    }
    to.to_path_buf()
}

/// Builds `bin` (compiling: the app cache is bypassed) and returns the events.
fn build(dir: &Path, cache: &Path, bin: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["build", "--rebuild", "--message-format", "json", "-p", bin];
    args.extend_from_slice(extra);
    imgbuild(dir, cache, &args).events()
}

/// A one-package project `name` with `dependencies` (its `[dependencies]` lines) and `main`,
/// locked.
pub(crate) fn locked_package(dir: &Path, name: &str, dependencies: &str, main: &str) -> PathBuf {
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n{dependencies}"
    );
    project(dir, &[("Cargo.toml", &manifest), ("src/main.rs", main)]);
    lock(dir);
    dir.to_path_buf()
}

/// `imgbuild build` of `dir`'s only binary with the cache repository `repo`; its events.
fn build_with_repo(dir: &Path, cache: &Path, repo: &str) -> Vec<Value> {
    build_through(dir, cache, repo, &[], &[])
}

/// The path packages cargo compiled a unit of, without versions.
fn members_compiled(events: &[Value]) -> Vec<String> {
    event(events, "compiled")["members_compiled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().trim_end_matches("@0.1.0").to_string())
        .collect()
}

/// What the binary cargo linked prints.
fn output_of(dir: &Path, bin: &str) -> String {
    tool(dir.join("target/release").join(bin).to_str().unwrap(), &[])
        .trim()
        .to_string()
}

#[test]
fn a_fresh_checkout_compiles_only_changed_members_and_their_dependents() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let first = chain(&tmp.path().join("first"));
    let cold = build(&first, &cache, "app-a", &[]);
    assert_eq!(members_compiled(&cold), ["app-a", "bottom", "mid", "top"]);
    let stored = event(&cold, "units-stored");
    // bottom: build script, its run, the library; mid; top.
    assert_eq!(stored["units"], 5, "{stored}");
    assert_eq!(output_of(&first, "app-a"), "a 123");

    // A one-line change in the binary: every member unit is restored, none compiled.
    let leaf = checkout(
        &first,
        &tmp.path().join("leaf"),
        &[("app-a/src/main.rs", "// leaf\n")],
    );
    let events = build(&leaf, &cache, "app-a", &[]);
    assert_eq!(members_compiled(&events), ["app-a"]);
    let restored = event(&events, "units-restored");
    assert_eq!(restored["restored"], 5, "{restored}");
    assert_eq!(restored["missed"].as_array().unwrap().len(), 0);
    assert_eq!(event(&events, "compiled")["dependencies_compiled"], 0);
    assert_eq!(output_of(&leaf, "app-a"), "a 123");

    // A one-byte change in mid: mid and what depends on it, nothing else.
    let changed = checkout(&first, &tmp.path().join("mid"), &[]);
    let lib = changed.join("mid/src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap().replace("+ 2", "+ 4");
    std::fs::write(&lib, text).unwrap();
    let events = build(&changed, &cache, "app-a", &[]);
    assert_eq!(members_compiled(&events), ["app-a", "mid", "top"]);
    assert_eq!(
        output_of(&changed, "app-a"),
        "a 143",
        "the change is in the binary"
    );

    // A change in the bottom member recompiles its library and everything above it; its
    // build script's units, whose inputs did not change, are restored.
    let bottom = checkout(
        &changed,
        &tmp.path().join("bottom"),
        &[("bottom/src/lib.rs", "// b\n")],
    );
    let events = build(&bottom, &cache, "app-a", &[]);
    assert_eq!(members_compiled(&events), ["app-a", "bottom", "mid", "top"]);
    assert_eq!(event(&events, "units-restored")["restored"], 2);
    assert_eq!(output_of(&bottom, "app-a"), "a 143");

    // Another binary with no record of its own starts from app-a's units, and from app-a's
    // dependency entry, which `plan --explain` names.
    let other = checkout(&bottom, &tmp.path().join("other"), &[]);
    let plan = imgbuild(
        &other,
        &cache,
        &[
            "plan",
            "--explain",
            "-p",
            "app-b",
            "--message-format",
            "json",
        ],
    );
    assert!(plan.status.success(), "{}", plan.stderr);
    let entry = &json(plan.stdout.lines().next().unwrap())["dependency_entry"];
    assert_eq!(entry["binary"], "app-a/app-a", "{entry}");
    assert_eq!(entry["exact"], false);
    assert_eq!(
        (
            entry["shared_packages"].as_u64(),
            entry["packages"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let events = build(&other, &cache, "app-b", &[]);
    assert_eq!(members_compiled(&events), ["app-b"]);
    assert_eq!(output_of(&other, "app-b"), "b 14");

    // Back at the first commit: the record holds the latest build's units, whose bottom
    // library, mid and top differ from this checkout's; they are compiled again.
    let back = checkout(&first, &tmp.path().join("back"), &[]);
    let events = build(&back, &cache, "app-a", &[]);
    assert_eq!(members_compiled(&events), ["app-a", "bottom", "mid", "top"]);
    assert_eq!(output_of(&back, "app-a"), "a 123");
}

#[test]
fn a_warm_checkout_is_left_to_cargo_and_an_edit_is_never_hidden() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let dir = chain(&tmp.path().join("w"));
    build(&dir, &cache, "app-a", &[]);
    let events = build(&dir, &cache, "app-a", &[]);
    let restored = event(&events, "units-restored");
    assert_eq!(restored["restored"], 0, "{restored}");
    assert_eq!(restored["in_place"], 5);
    assert!(members_compiled(&events) == ["app-a"] || members_compiled(&events).is_empty());
    assert!(
        events.iter().all(|e| e["reason"] != "units-stored"),
        "nothing changed: the record is not written again"
    );

    // Edit top in place: the record's top no longer matches, cargo recompiles it.
    let lib = dir.join("top/src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap().replace("+ 3", "+ 5");
    std::fs::write(&lib, text).unwrap();
    let events = build(&dir, &cache, "app-a", &[]);
    assert_eq!(members_compiled(&events), ["app-a", "top"]);
    assert_eq!(output_of(&dir, "app-a"), "a 125");
}

#[test]
fn a_fresh_runner_restores_member_units_from_the_cache_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let repo = format!("{}/cache/units", registry.host());
    let first = chain(&tmp.path().join("one"));
    let cold = build(
        &first,
        &tmp.path().join("cache-1"),
        "app-a",
        &["--cache-repo", &repo],
    );
    assert_eq!(event(&cold, "units-stored")["units"], 5);

    // Another runner: empty cache directory, a checkout elsewhere with a change in top.
    let two = checkout(
        &first,
        &tmp.path().join("elsewhere/two"),
        &[("top/src/lib.rs", "// t\n")],
    );
    let events = build(
        &two,
        &tmp.path().join("cache-2"),
        "app-a",
        &["--cache-repo", &repo],
    );
    let restored = event(&events, "units-restored");
    assert_eq!(restored["restored"], 4, "{restored}");
    assert_eq!(restored["pulled"], 4, "{restored}");
    assert_eq!(members_compiled(&events), ["app-a", "top"]);
    assert_eq!(output_of(&two, "app-a"), "a 123");

    // A runner whose change is in app-a alone restores every library unit, compiles app-a
    // alone, and pushes no unit record: the repository's is the one it would write.
    let two_b = checkout(
        &two,
        &tmp.path().join("two-b"),
        &[("app-a/src/main.rs", "// a\n")],
    );
    let events = build(
        &two_b,
        &tmp.path().join("cache-2b"),
        "app-a",
        &["--cache-repo", &repo],
    );
    assert_eq!(members_compiled(&events), ["app-a"]);
    assert_eq!(event(&events, "units-stored")["new_units"], 0);
    let record_pushes: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["reason"] == "blob" && e["reference"].as_str().unwrap_or("").contains(":units-")
        })
        .collect();
    assert!(record_pushes.is_empty(), "{record_pushes:?}");

    // A third runner builds app-b, which nobody has built: it starts from app-a's dependency
    // entry and units in the cache repository, and compiles app-b alone.
    let three = checkout(&two, &tmp.path().join("three"), &[]);
    // `plan --explain` says so beforehand, reading the cache repository (configs only).
    let plan = imgbuild(
        &three,
        &tmp.path().join("cache-3"),
        &[
            "plan",
            "-p",
            "app-b",
            "--explain",
            "--cache-repo",
            &repo,
            "--message-format",
            "json",
        ],
    );
    assert!(plan.status.success(), "{}", plan.stderr);
    let choice = json(plan.stdout.lines().next().unwrap())["dependency_entry"].clone();
    assert_eq!(choice["binary"], "app-a/app-a", "{choice}");
    assert_eq!(choice["cache_repo"], repo.as_str(), "{choice}");
    assert_eq!(choice["exact"], false, "{choice}");
    assert!(choice["shared_packages"].as_u64().unwrap() >= 1, "{choice}");
    let events = build(
        &three,
        &tmp.path().join("cache-3"),
        "app-b",
        &["--cache-repo", &repo],
    );
    let lookup = event(&events, "cache-lookup");
    assert_eq!(
        (lookup["hit"].as_bool(), lookup["from_registry"].as_bool()),
        (Some(false), Some(true)),
        "{lookup}"
    );
    assert!(lookup["nearest"].is_string(), "{lookup}");
    assert_eq!(event(&events, "compiled")["dependencies_compiled"], 0);
    assert_eq!(members_compiled(&events), ["app-b"]);
    assert_eq!(output_of(&three, "app-b"), "b 12");

    // Another project of the team, on a fresh runner: the repository's index of dependency
    // entries points it at the entry sharing the most packages (itoa), which it restores.
    let other = locked_package(
        &tmp.path().join("other"),
        "other",
        "itoa = \"=1.0.10\"\n",
        "fn main() { println!(\"{}\", itoa::Buffer::new().format(7u8)); }\n",
    );
    let events = build_with_repo(&other, &tmp.path().join("cache-4"), &repo);
    let lookup = event(&events, "cache-lookup");
    assert_eq!(lookup["from_registry"], true, "{lookup}");
    assert!(lookup["nearest"].is_string(), "{lookup}");
    assert_eq!(event(&events, "compiled")["dependencies_compiled"], 0);

    // A project that needs one package more (ryu) warm-starts the same way, compiles ryu
    // alone, and stores only the delta: the entry it started from stays its first layer,
    // shared by digest, and the push uploads just the new layer and the config.
    let more = locked_package(
        &tmp.path().join("more"),
        "more",
        "itoa = \"=1.0.10\"\nryu = \"1\"\n",
        "fn main() { println!(\"{} {}\", itoa::Buffer::new().format(7u8), ryu::Buffer::new().format(0.5f64)); }\n",
    );
    let events = build_with_repo(&more, &tmp.path().join("cache-5"), &repo);
    let lookup = event(&events, "cache-lookup");
    assert_eq!(lookup["from_registry"], true, "{lookup}");
    let started_from = lookup["nearest"].as_str().unwrap().to_string();
    let compiled = event(&events, "compiled");
    let packages = compiled["compiled_packages"].as_array().unwrap();
    assert!(
        !packages.is_empty()
            && packages
                .iter()
                .all(|p| p.as_str().unwrap().starts_with("ryu@")),
        "{compiled}"
    );
    let stored = event(&events, "cache-stored");
    assert_eq!(stored["squashed"], false, "{stored}");
    assert_eq!(stored["layers"], 2, "{stored}");
    let parent_layers = entry_layers(&repo, &started_from);
    let key = stored["key"].as_str().unwrap();
    let layers = entry_layers(&repo, key);
    assert_eq!(layers.len(), 2, "{layers:?}");
    assert_eq!(
        layers[..parent_layers.len()],
        parent_layers[..],
        "the parent's layers, shared"
    );
    let pushed = events
        .iter()
        .find(|e| e["reason"] == "pushed" && e["reference"].as_str().unwrap().contains(":deps-"))
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(
        (pushed["uploaded"].as_u64(), pushed["present"].as_u64()),
        (Some(2), Some(parent_layers.len() as u64)),
        "{pushed}"
    );
    assert_eq!(output_of(&more, "more"), "7 0.5");
}
