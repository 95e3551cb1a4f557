//! Issue #3: the dependency cache (entries in the local store, restore, delta, corruption,
//! concurrency, `cache ls` / `cache prune`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// `imgbuild build --rebuild --message-format json`, returning the events; asserts success.
/// `--rebuild`: these tests are about compiled dependencies, so the app is always compiled
/// (as after a commit that changes it) instead of reused from the app cache.
fn build_json(dir: &Path, cache: &Path) -> Vec<Value> {
    let run = imgbuild(
        dir,
        cache,
        &["build", "--rebuild", "--message-format", "json"],
    );
    run.events()
}

fn has_event(events: &[Value], reason: &str) -> bool {
    events.iter().any(|e| e["reason"] == reason)
}

fn store(cache: &Path) -> PathBuf {
    cache.join("store")
}

/// The raw manifest of a store entry, through skopeo.
fn entry_manifest(cache: &Path, key: &str) -> Value {
    json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:imgbuild-cache:deps-{key}", store(cache).display()),
        ],
    ))
}

fn blob(cache: &Path, digest: &str) -> PathBuf {
    store(cache)
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn compiled(events: &[Value]) -> (u64, u64) {
    let c = event(events, "compiled");
    (
        c["dependencies_compiled"].as_u64().unwrap(),
        c["dependencies_fresh"].as_u64().unwrap(),
    )
}

#[test]
fn a_fresh_copy_restores_the_dependencies_and_compiles_only_the_app() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let first = cached_fixture(tmp.path(), "first");
    let cold = build_json(&first, &cache);
    let lookup = event(&cold, "cache-lookup");
    assert_eq!(lookup["hit"], false);
    let key = lookup["key"].as_str().unwrap().to_string();
    let (built, _) = compiled(&cold);
    assert!(
        built >= 4,
        "a cold build compiles the dependencies: {built}"
    );
    let stored = event(&cold, "cache-stored");
    assert_eq!(stored["layers"], 1);

    // The entry: an artifact of its own type, zstd layers, only dependency units' files.
    let manifest = entry_manifest(&cache, &key);
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.imgbuild.dependency-cache.v1"
    );
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }
    let config = json(
        &std::fs::read_to_string(blob(&cache, manifest["config"]["digest"].as_str().unwrap()))
            .unwrap(),
    );
    assert_eq!(config["key"], key.as_str());
    let files: Vec<&String> = config["files"].as_object().unwrap().keys().collect();
    for top in [
        "deps/libserde_json-",
        "build/serde_json-",
        ".fingerprint/serde-",
    ] {
        assert!(
            files.iter().any(|f| f.starts_with(top)),
            "no {top}* in {files:?}"
        );
    }
    for f in &files {
        let name = f.rsplit('/').next().unwrap();
        assert!(
            !f.contains("/cached-")
                && !name.starts_with("libcached")
                && !name.starts_with("cached"),
            "a workspace member's file is in the cache: {f}"
        );
    }

    // A fresh checkout elsewhere, with no target dir: cargo compiles no dependency.
    let second = cached_fixture(tmp.path(), "second");
    let warm = build_json(&second, &cache);
    assert_eq!(event(&warm, "cache-lookup")["hit"], true);
    assert!(
        event(&warm, "cache-restored")["restored"].as_u64().unwrap() >= files.len() as u64,
        "every file restored"
    );
    let (built, fresh) = compiled(&warm);
    assert_eq!(built, 0, "no dependency compiled after a hit");
    assert!(fresh >= 4);
    assert!(
        !has_event(&warm, "cache-stored"),
        "a hit stores nothing new"
    );
    assert_eq!(image_digest(&warm), image_digest(&cold), "same image");

    // Building again in place restores nothing: the files are already there.
    let again = build_json(&second, &cache);
    let restored = event(&again, "cache-restored");
    assert_eq!(restored["restored"], 0);
    assert_eq!(compiled(&again).0, 0);
    assert_eq!(image_digest(&again), image_digest(&cold));

    // --no-dependency-cache neither looks up nor stores.
    let off = imgbuild(
        &cached_fixture(tmp.path(), "third"),
        &cache,
        &["build", "--no-dependency-cache", "--message-format", "json"],
    );
    assert!(off.status.success(), "{}", off.stderr);
    let off = off.events();
    assert!(!has_event(&off, "cache-lookup") && !has_event(&off, "cache-stored"));
    assert!(compiled(&off).0 >= 4);
}

#[test]
fn a_lockfile_bump_restores_the_nearest_entry_and_stores_a_delta() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let project = cached_fixture(tmp.path(), "app");
    let first = build_json(&project, &cache);
    let old_key = lookup_key(&first);
    let old_files = event(&first, "cache-stored")["files"].as_u64().unwrap();

    cargo(&project, &["update", "-p", "itoa", "--precise", "1.0.11"]);
    let plan = imgbuild(&project, &cache, &["plan", "--explain"]);
    assert!(plan.status.success(), "{}", plan.stderr);
    assert!(
        plan.stdout.contains("- package itoa 1.0.10")
            && plan.stdout.contains("+ package itoa 1.0.11"),
        "the miss is explained:\n{}",
        plan.stdout
    );

    // A fresh runner: no target dir.
    std::fs::remove_dir_all(project.join("target")).unwrap();
    let bumped = build_json(&project, &cache);
    let lookup = event(&bumped, "cache-lookup");
    assert_eq!(lookup["hit"], false);
    assert_eq!(lookup["nearest"], old_key.as_str());
    let new_key = lookup["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, old_key);
    let packages: Vec<&str> = event(&bumped, "compiled")["compiled_packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        packages.contains(&"itoa@1.0.11"),
        "the bumped crate is compiled: {packages:?}"
    );
    for p in &packages {
        assert!(
            p.starts_with("itoa@") || p.starts_with("serde_json@"),
            "only itoa and its dependents recompile, not {p}"
        );
    }
    let stored = event(&bumped, "cache-stored");
    assert_eq!(stored["layers"], 2, "the earlier layer plus one delta");
    assert_eq!(stored["squashed"], false);
    let new_files = stored["new_files"].as_u64().unwrap();
    assert!(
        new_files > 0 && new_files * 2 < old_files,
        "the delta holds only what changed: {new_files} of {old_files}"
    );
    let old = entry_manifest(&cache, &old_key);
    let new = entry_manifest(&cache, &new_key);
    assert_eq!(
        new["layers"][0], old["layers"][0],
        "the earlier layer is shared"
    );

    // The delta entry restores completely on another fresh runner.
    let copy = cached_fixture(tmp.path(), "copy");
    std::fs::copy(project.join("Cargo.lock"), copy.join("Cargo.lock")).unwrap();
    let warm = build_json(&copy, &cache);
    assert_eq!(event(&warm, "cache-lookup")["hit"], true);
    assert_eq!(compiled(&warm).0, 0);
    assert_eq!(image_digest(&warm), image_digest(&bumped));
}

#[test]
fn a_corrupted_blob_is_reported_as_a_miss_and_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let first = build_json(&cached_fixture(tmp.path(), "first"), &cache);
    let key = lookup_key(&first);
    let layer = entry_manifest(&cache, &key)["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = blob(&cache, &layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();

    let second = cached_fixture(tmp.path(), "second");
    let run = imgbuild(
        &second,
        &cache,
        &["build", "--rebuild", "--message-format", "json"],
    );
    assert!(run.status.success(), "{}", run.stderr);
    let events: Vec<Value> = run.stdout.lines().map(json).collect();
    let unusable = event(&events, "cache-unusable");
    assert!(
        unusable["message"].as_str().unwrap().contains("corrupt"),
        "{unusable}"
    );
    assert!(
        compiled(&events).0 >= 4,
        "the dependencies are compiled again"
    );
    assert!(
        std::fs::read_dir(second.join("target/release"))
            .unwrap()
            .all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".imgbuild-restore")),
        "no staging directory left behind"
    );
    event(&events, "cache-stored");
    assert_eq!(image_digest(&events), image_digest(&first));

    // The replaced entry is whole again.
    let third = build_json(&cached_fixture(tmp.path(), "third"), &cache);
    assert_eq!(event(&third, "cache-lookup")["hit"], true);
    assert_eq!(compiled(&third).0, 0);
}

#[test]
fn two_concurrent_builds_share_one_store() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let dirs = [
        cached_fixture(tmp.path(), "one"),
        cached_fixture(tmp.path(), "two"),
    ];
    let children: Vec<_> = dirs
        .iter()
        .map(|dir| {
            Command::new(env!("CARGO_BIN_EXE_imgbuild"))
                .args(["build", "--rebuild", "--message-format", "json"])
                .current_dir(dir)
                .env("IMGBUILD_CACHE_DIR", &cache)
                .env_remove("SOURCE_DATE_EPOCH")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut digests = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(json)
            .collect();
        digests.push(image_digest(&events));
    }
    assert_eq!(digests[0], digests[1]);

    // One entry for the key, one image tag, and every blob intact (skopeo verifies digests).
    let index = json(&std::fs::read_to_string(store(&cache).join("index.json")).unwrap());
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        // Untagged entries are the image's referrers (SBOM, provenance).
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .filter(|n| !n.starts_with("imgbuild-cache:app-"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"cached:latest"));
    let copy = tmp.path().join("copied");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:cached:latest", store(&cache).display()),
            &format!("oci:{}:x", copy.display()),
        ],
    );
    let leftovers: Vec<_> = std::fs::read_dir(store(&cache).join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let third = build_json(&cached_fixture(tmp.path(), "three"), &cache);
    assert_eq!(event(&third, "cache-lookup")["hit"], true);
    assert_eq!(compiled(&third).0, 0);
}

#[test]
fn cache_ls_lists_entries_and_prune_removes_them_by_age_and_size() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let project = cached_fixture(tmp.path(), "app");
    let first = build_json(&project, &cache);
    let old_key = lookup_key(&first);
    cargo(&project, &["update", "-p", "itoa", "--precise", "1.0.11"]);
    let second = build_json(&project, &cache);
    let new_key = lookup_key(&second);

    let ls = imgbuild(
        tmp.path(),
        &cache,
        &["cache", "ls", "--message-format", "json"],
    );
    assert!(ls.status.success(), "{}", ls.stderr);
    let listing = json(&ls.stdout);
    let all = listing["entries"].as_array().unwrap();
    // Dependency-cache entries; the app cache's records and images are listed as `app-…`.
    let entries: Vec<&Value> = all
        .iter()
        .filter(|e| !e["key"].as_str().unwrap().starts_with("app-"))
        .collect();
    assert_eq!(entries.len(), 2, "{listing:#}");
    assert!(
        all.iter().any(|e| e["binary"] == "(app image)"),
        "app images are listed too: {listing:#}"
    );
    let find = |key: &str| (*entries.iter().find(|e| e["key"] == key).unwrap()).clone();
    assert_eq!(find(&old_key)["layers"], 1);
    assert_eq!(find(&new_key)["layers"], 2);
    assert_eq!(find(&new_key)["binary"], "cached/cached");
    assert!(find(&new_key)["size"].as_u64().unwrap() > find(&old_key)["size"].as_u64().unwrap());
    let human = imgbuild(tmp.path(), &cache, &["cache", "ls"]);
    assert!(human.stdout.contains(&old_key[..12]) && human.stdout.contains(" entries; the store"));

    // The older entry was last used 40 days ago.
    let marker = cache.join("usage").join(&old_key);
    std::fs::File::options()
        .write(true)
        .open(&marker)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(40 * 86_400))
        .unwrap();
    let old_manifest = entry_manifest(&cache, &old_key);
    let new_manifest = entry_manifest(&cache, &new_key);
    let prune = imgbuild(
        tmp.path(),
        &cache,
        &[
            "cache",
            "prune",
            "--older-than",
            "30d",
            "--message-format",
            "json",
        ],
    );
    assert!(prune.status.success(), "{}", prune.stderr);
    let report = json(&prune.stdout);
    assert_eq!(report["removed"], serde_json::json!([old_key]));
    assert!(report["blobs_deleted"].as_u64().unwrap() >= 2, "{report}");
    assert!(
        !blob(&cache, old_manifest["config"]["digest"].as_str().unwrap()).exists(),
        "the removed entry's config blob is deleted"
    );
    for layer in new_manifest["layers"].as_array().unwrap() {
        assert!(
            blob(&cache, layer["digest"].as_str().unwrap()).exists(),
            "a layer the remaining entry shares is kept"
        );
    }
    assert!(!marker.exists());
    let copy = cached_fixture(tmp.path(), "copy");
    std::fs::copy(project.join("Cargo.lock"), copy.join("Cargo.lock")).unwrap();
    let warm = build_json(&copy, &cache);
    assert_eq!(event(&warm, "cache-lookup")["hit"], true);
    assert_eq!(compiled(&warm).0, 0);

    // A size limit of 0 removes every entry; images stay whole.
    let prune = imgbuild(
        tmp.path(),
        &cache,
        &[
            "cache",
            "prune",
            "--max-size",
            "0",
            "--message-format",
            "json",
        ],
    );
    assert!(prune.status.success(), "{}", prune.stderr);
    let removed = json(&prune.stdout)["removed"].clone();
    assert!(
        removed
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(new_key)),
        "{removed}"
    );
    for layer in new_manifest["layers"].as_array().unwrap() {
        assert!(!blob(&cache, layer["digest"].as_str().unwrap()).exists());
    }
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:cached:latest", store(&cache).display()),
            &format!("oci:{}:x", tmp.path().join("copied").display()),
        ],
    );
    let listing = json(
        &imgbuild(
            tmp.path(),
            &cache,
            &["cache", "ls", "--message-format", "json"],
        )
        .stdout,
    );
    assert_eq!(listing["entries"], serde_json::json!([]));

    // Bad input is named, with the expected form.
    imgbuild(
        tmp.path(),
        &cache,
        &["cache", "prune", "--older-than", "3 days"],
    )
    .fails_with(&["--older-than", "30d"]);
    imgbuild(
        tmp.path(),
        &cache,
        &["cache", "prune", "--max-size", "1.5G"],
    )
    .fails_with(&["--max-size", "10G"]);
}
