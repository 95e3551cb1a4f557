//! Issue #15: retention for a cache repository shared by a fleet. `cache prune --cache-repo`
//! deletes stale entries' tags and manifests through the distribution API (checked against
//! `docker-registry` with deletes enabled, then its `garbage-collect`): kept entries still
//! restore, removed ones and their blobs are gone.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::registry_support::{Auth, Registry};
use crate::support::*;
use crate::units::{chain, checkout};

/// Every build signs what it pushes and trusts only that key (the signatures must survive a
/// prune for what is kept, and go for what is removed).
fn build(dir: &Path, cache: &Path, repo: &str, opt: &str, signing: &[(&str, &str)]) -> Vec<Value> {
    imgbuild_env(
        dir,
        cache,
        &[
            "build",
            "--message-format",
            "json",
            "-p",
            "app-a",
            "--cache-repo",
            repo,
        ],
        &[&[("CARGO_PROFILE_RELEASE_OPT_LEVEL", opt)], signing].concat(),
    )
    .events()
}

fn tags(registry: &Registry, repo: &str) -> Vec<String> {
    let out = tool(
        "skopeo",
        &[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}/{repo}", registry.host()),
        ],
    );
    json(&out)["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn prune(cache: &Path, args: &[&str]) -> Value {
    let mut all = vec!["cache", "prune", "--message-format", "json"];
    all.extend_from_slice(args);
    let run = imgbuild(Path::new("."), cache, &all);
    assert!(run.status.success(), "{}", run.stderr);
    json(run.stdout.trim())
}

fn removed_tags(report: &Value) -> Vec<String> {
    let mut out: Vec<String> = report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["tags"].as_array().unwrap().iter())
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn stale_entries_are_deleted_from_the_cache_repository_and_kept_ones_still_restore() {
    require("skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let mut registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let repo = "cache/fleet";
    let cache_repo = format!("{}/{repo}", registry.host());

    // An old build (opt-level 3), then, later, a new one (opt-level 2: another dependency key,
    // another app entry, another unit record) on another runner.
    let (key, public) = key_pair(&tmp.path().join("keys"), "cache");
    let signing = [
        ("IMGBUILD_CACHE_SIGN_KEY", key.as_str()),
        ("IMGBUILD_CACHE_TRUST", public.as_str()),
    ];
    let first = chain(&tmp.path().join("one"));
    let old = build(
        &first,
        &tmp.path().join("cache-1"),
        &cache_repo,
        "3",
        &signing,
    );
    let old_done = Instant::now();
    let old_deps = event(&old, "cache-lookup")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let old_layer = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!(
                "oci:{}:imgbuild-cache:deps-{old_deps}",
                tmp.path().join("cache-1/store").display()
            ),
        ],
    ))["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(registry.blob_file(&old_layer).exists());
    std::thread::sleep(Duration::from_secs(4));
    let new_started = Instant::now();
    let second = checkout(&first, &tmp.path().join("two"), &[]);
    let new = build(
        &second,
        &tmp.path().join("cache-2"),
        &cache_repo,
        "2",
        &signing,
    );
    let new_deps = event(&new, "cache-lookup")["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(old_deps, new_deps);
    let before = tags(&registry, repo);
    assert!(
        before.contains(&format!("deps-{old_deps}"))
            && before.contains(&format!("deps-{new_deps}"))
    );

    // --keep-latest 1, dry run: the old entries of app-a would go, nothing is deleted.
    let cache = tmp.path().join("cache-admin");
    let dry = prune(
        &cache,
        &[
            "--cache-repo",
            &cache_repo,
            "--keep-latest",
            "1",
            "--dry-run",
        ],
    );
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["manifests_deleted"], 0);
    let would = removed_tags(&dry);
    assert!(would.contains(&format!("deps-{old_deps}")), "{would:?}");
    assert!(!would.contains(&format!("deps-{new_deps}")), "{would:?}");
    assert_eq!(
        would.iter().filter(|t| t.starts_with("units-")).count(),
        1,
        "{would:?}"
    );
    assert_eq!(tags(&registry, repo), before, "a dry run deletes nothing");

    // --older-than an age between the two builds: the old build's entries go.
    let age = new_started.elapsed().as_secs() + 2;
    assert!(
        age + 1 < old_done.elapsed().as_secs(),
        "the builds are far enough apart"
    );
    let report = prune(
        &cache,
        &[
            "--cache-repo",
            &cache_repo,
            "--older-than",
            &format!("{age}s"),
        ],
    );
    assert_eq!(
        removed_tags(&report),
        would,
        "the same entries as the dry run"
    );
    assert!(
        report["manifests_deleted"].as_u64().unwrap() >= 4,
        "{report}"
    );
    let after = tags(&registry, repo);
    for tag in &would {
        assert!(!after.contains(tag), "{tag} is gone: {after:?}");
    }
    assert!(after.contains(&format!("deps-{new_deps}")));
    // The removed manifests' signatures went with them; the kept ones' stay (the trusting
    // build below uses them).
    let signatures = |tags: &[String]| tags.iter().filter(|t| t.ends_with(".sig")).count();
    assert!(
        signatures(&after) > 0 && signatures(&after) < signatures(&before),
        "{} of {} signatures left",
        signatures(&after),
        signatures(&before)
    );
    assert!(
        after.contains(&"deps-index".to_string()),
        "the index of entries is not an entry"
    );

    // The registry's garbage collection frees the removed entries' blobs, and only theirs.
    registry.garbage_collect();
    assert!(
        !registry.blob_file(&old_layer).exists(),
        "the old entry's layer is collected"
    );

    // A fresh runner still gets the kept entries: the app cache hit, nothing compiled.
    let third = checkout(&first, &tmp.path().join("three"), &[]);
    let events = build(
        &third,
        &tmp.path().join("cache-3"),
        &cache_repo,
        "2",
        &signing,
    );
    assert!(
        events.iter().all(|e| e["reason"] != "compiled"),
        "nothing compiled"
    );
    assert_eq!(image_digest(&events), image_digest(&new));
    // And a dependency entry that is kept restores on its own.
    let fourth = checkout(
        &first,
        &tmp.path().join("four"),
        &[("app-a/src/main.rs", "// 4\n")],
    );
    let events = imgbuild_env(
        &fourth,
        &tmp.path().join("cache-4"),
        &[
            "build",
            "--rebuild",
            "--message-format",
            "json",
            "-p",
            "app-a",
            "--cache-repo",
            &cache_repo,
        ],
        &[("CARGO_PROFILE_RELEASE_OPT_LEVEL", "2")],
    )
    .events();
    assert_eq!(event(&events, "cache-lookup")["hit"], true);
    assert_eq!(event(&events, "compiled")["dependencies_compiled"], 0);
}
