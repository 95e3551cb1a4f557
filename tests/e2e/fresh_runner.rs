//! Issue #15: a fresh runner restores a dependency entry from the cache repository while it
//! downloads, and a download broken midway starts over without leaving anything half-written.

use std::path::Path;

use crate::proxies::DownloadCuttingProxy;
use crate::registry_support::{Auth, Registry};
use crate::support::*;

/// Every path under `dir` whose name starts with `prefix`.
fn leftovers(dir: &Path, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            found.push(path.display().to_string());
        }
        if path.is_dir() && !path.is_symlink() {
            found.extend(leftovers(&path, prefix));
        }
    }
    found
}

#[test]
fn a_fresh_runner_unpacks_the_entry_as_it_downloads_even_when_the_download_breaks() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let build = |dir: &Path, cache: &str, host: &str| {
        let repo = format!("{host}/cache/deps");
        let args = ["build", "--cache-repo", &repo, "--message-format", "json"];
        imgbuild(dir, &tmp.path().join(cache), &args).events()
    };
    let first = build(
        &cached_fixture(tmp.path(), "one"),
        "cache-a",
        &registry.host(),
    );
    assert!(event(&first, "compiled")["dependencies_compiled"].as_u64() > Some(0));

    // A fresh runner on a new commit (so the app is compiled, not pulled), through a proxy
    // that breaks the first long blob download midway.
    let proxy = DownloadCuttingProxy::start(registry.port, 128 * 1024);
    let two = cached_fixture(tmp.path(), "two");
    let main = two.join("src/main.rs");
    let source = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{source}\n// a new commit\n")).unwrap();
    let via = format!("127.0.0.1:{}", proxy.port());
    let second = build(&two, "cache-b", &via);
    assert_eq!(proxy.cuts.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The broken download was the dependency entry's layer, and it was tried again.
    let retried = second
        .iter()
        .filter(|e| e["reason"] == "warning")
        .filter_map(|e| e["message"].as_str()?.split("GET blob ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(retried.len(), 1, "{second:#?}");
    let pulled = second
        .iter()
        .find(|e| e["reason"] == "blob" && e["digest"] == retried[0].as_str())
        .unwrap_or_else(|| panic!("{second:#?}"));
    assert!(
        pulled["reference"].as_str().unwrap().contains(":deps-"),
        "{pulled}"
    );
    let lookup = event(&second, "cache-lookup");
    assert_eq!(
        (lookup["hit"].as_bool(), lookup["from_registry"].as_bool()),
        (Some(true), Some(true))
    );
    let restored = event(&second, "cache-restored");
    assert!(restored["restored"].as_u64() > Some(0), "{restored}");
    assert_eq!(
        restored["while_downloading"], restored["restored"],
        "{restored}"
    );
    // A fresh checkout: the binary's newest entry was fetched while cargo read the workspace,
    // before the key was known, and it was the key's own.
    assert_eq!(restored["early"], true, "{restored}");
    assert_eq!(event(&second, "compiled")["dependencies_compiled"], 0);
    // The broken try's staging directories are gone, and the store is whole.
    for prefix in [".imgbuild-restore-", ".imgbuild-early-"] {
        assert_eq!(leftovers(&two.join("target"), prefix), Vec::<String>::new());
    }
    let check = imgbuild(&two, &tmp.path().join("cache-b"), &["cache", "check"]);
    assert!(check.status.success(), "{}", check.stderr);

    // The same commit on a third runner is an app-cache hit: the early restore, begun before
    // the hit was known, is stopped and leaves nothing behind.
    let three = cached_fixture(tmp.path(), "three");
    std::fs::write(
        three.join("src/main.rs"),
        format!("{source}\n// a new commit\n"),
    )
    .unwrap();
    let third = build(&three, "cache-c", &registry.host());
    assert!(
        third
            .iter()
            .any(|e| e["reason"] == "app-cache" && e["hit"] == true),
        "{third:#?}"
    );
    assert!(third.iter().all(|e| e["reason"] != "cache-restored"));
    assert_eq!(
        leftovers(&three.join("target"), ".imgbuild-early-"),
        Vec::<String>::new()
    );
    assert!(!three.join("target/release/deps").exists());
}

/// The early restore's entry reaches cargo's directory only where the restore would have
/// used it. A runner whose C compiler is named differently (`CC=gcc`: another machine line)
/// finds the binary's newest entry with other toolchain lines: it is not restored, so cargo
/// compiles every dependency (cargo itself would have found the staged files fresh: `CC` is
/// not in its unit hashes), and nothing is left staged.
#[test]
fn an_early_entry_of_another_toolchain_is_not_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let repo = format!("{}/cache/deps", registry.host());
    let args = ["build", "--cache-repo", &repo, "--message-format", "json"];
    let first = imgbuild(
        &cached_fixture(tmp.path(), "one"),
        &tmp.path().join("cache-a"),
        &args,
    )
    .events();
    let all = event(&first, "compiled")["dependencies_compiled"].clone();
    assert!(all.as_u64() > Some(0), "{all}");

    let two = cached_fixture(tmp.path(), "two");
    let second = imgbuild_env(&two, &tmp.path().join("cache-b"), &args, &[("CC", "gcc")]).events();
    // The early restore did fetch the binary's newest entry (its downloads are reported)...
    assert!(
        second.iter().any(|e| e["reason"] == "blob"
            && e["reference"]
                .as_str()
                .is_some_and(|r| r.contains(":deps-latest-"))),
        "{second:#?}"
    );
    // ...and the restore did not take it.
    let lookup = event(&second, "cache-lookup");
    assert_eq!(
        (lookup["hit"].as_bool(), lookup.get("nearest")),
        (Some(false), None),
        "{lookup}"
    );
    assert!(second.iter().all(|e| e["reason"] != "cache-restored"));
    assert_eq!(event(&second, "compiled")["dependencies_compiled"], all);
    assert_eq!(
        leftovers(&two.join("target"), ".imgbuild-early-"),
        Vec::<String>::new()
    );
}

/// The binary's newest entry is kept per cargo profile: a debug build pushed after a release
/// one does not take the release runners' starting point away.
#[test]
fn each_profile_keeps_its_own_newest_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let repo = format!("{}/cache/deps", registry.host());
    let build = |dir: &Path, cache: &str, more: &[&str]| {
        build_through(dir, &tmp.path().join(cache), &repo, more, &[])
    };
    let release = build(&cached_fixture(tmp.path(), "one"), "cache-a", &[]);
    let release_key = lookup_key(&release);
    // Another runner builds the debug profile, after the release build: its own entry.
    let debug = build(
        &cached_fixture(tmp.path(), "two"),
        "cache-b",
        &["--profile", "dev"],
    );
    assert_ne!(lookup_key(&debug), release_key);
    assert!(event(&debug, "compiled")["dependencies_compiled"].as_u64() > Some(0));

    // A release runner on a lockfile nobody built: the release entry is its starting point,
    // fetched early, and only the bumped package and its dependents compile.
    let three = cached_fixture(tmp.path(), "three");
    cargo(&three, &["update", "-p", "itoa", "--precise", "1.0.11"]);
    let bumped = build(&three, "cache-c", &[]);
    let lookup = event(&bumped, "cache-lookup");
    assert_eq!(
        (lookup["hit"].as_bool(), lookup["nearest"].as_str()),
        (Some(false), Some(release_key.as_str())),
        "{lookup}"
    );
    assert_eq!(event(&bumped, "cache-restored")["early"], true);
    let packages = event(&bumped, "compiled")["compiled_packages"].clone();
    let packages: Vec<&str> = (packages.as_array().unwrap().iter())
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        !packages.is_empty()
            && packages
                .iter()
                .all(|p| p.starts_with("itoa@") || p.starts_with("serde_json@")),
        "{packages:?}"
    );
}

/// A binary whose newest entry is of another toolchain starts from the newest entry of
/// another binary of its own toolchain, and downloads nothing of the one it refuses but its
/// config.
#[test]
fn a_refused_newest_entry_is_not_downloaded_and_another_binarys_is_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let repo = format!("{}/cache/deps", registry.host());
    let build = |dir: &Path, cache: &str, bin: &str, env: &[(&str, &str)]| {
        build_through(dir, &tmp.path().join(cache), &repo, &["-p", bin], env)
    };
    let first = crate::units::chain(&tmp.path().join("one"));
    // app-a built where CC is gcc (another machine line), app-b where it is not.
    let gcc = build(&first, "cache-a", "app-a", &[("CC", "gcc")]);
    let gcc_layers = entry_layers(&repo, &lookup_key(&gcc));
    let two = crate::units::checkout(&first, &tmp.path().join("two"), &[]);
    let b = build(&two, "cache-b", "app-b", &[]);
    let b_key = lookup_key(&b);

    // app-a where CC is not set, in a checkout with a target directory (no early restore):
    // its own newest entry is refused from its config, app-b's is taken.
    let three = crate::units::checkout(&first, &tmp.path().join("three"), &[]);
    std::fs::create_dir_all(three.join("target")).unwrap();
    // `plan --explain` says so beforehand: the build and the plan choose alike.
    let plan_args = [
        "plan",
        "-p",
        "app-a",
        "--explain",
        "--cache-repo",
        &repo,
        "--message-format",
        "json",
    ];
    let plan = imgbuild(&three, &tmp.path().join("cache-c"), &plan_args);
    let choice = json(plan.stdout.lines().next().unwrap())["dependency_entry"].clone();
    assert_eq!(
        (choice["binary"].as_str(), choice["key"].as_str()),
        (Some("app-b/app-b"), Some(b_key.as_str())),
        "{choice}"
    );
    let events = build(&three, "cache-c", "app-a", &[]);
    let lookup = event(&events, "cache-lookup");
    assert_eq!(
        (lookup["hit"].as_bool(), lookup["nearest"].as_str()),
        (Some(false), Some(b_key.as_str())),
        "{lookup}"
    );
    assert_eq!(event(&events, "compiled")["dependencies_compiled"], 0);
    for layer in &gcc_layers {
        assert_eq!(
            registry.requests("GET", &format!("/blobs/{layer}")),
            0,
            "{layer}, a layer of the refused entry, was downloaded"
        );
    }
}
