//! Issue 13: the store survives faults — damaged blobs and a damaged `index.json` are repaired
//! by the next build, temporary files stay out of `blobs/` and are collected after a kill, and
//! `imgbuild cache check [--repair]` reports and removes what cannot be trusted.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn store(cache: &Path) -> PathBuf {
    cache.join("store")
}

fn blob(cache: &Path, digest: &str) -> PathBuf {
    store(cache)
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn flip_first_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

fn intact(path: &Path) -> bool {
    let out = tool("sha256sum", &[path.to_str().unwrap()]);
    out.split_whitespace().next() == path.file_name().and_then(|n| n.to_str())
}

/// The config digest of the image `manifest` (in the store).
fn config_of(cache: &Path, manifest: &str) -> String {
    let m = json(&std::fs::read_to_string(blob(cache, manifest)).unwrap());
    m["config"]["digest"].as_str().unwrap().to_string()
}

/// Item 1: a damaged config blob of a built image made every later `build --output` and
/// `push` fail ("blob … is corrupt"), and a plain build exit 0 with the tag still on it.
#[test]
fn a_damaged_image_blob_is_repaired_by_the_next_build() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let digest = imgbuild(&project, &cache, &["build"]).digest();
    let config = blob(&cache, &config_of(&cache, &digest));
    flip_first_byte(&config);
    assert!(!intact(&config));

    let out = tmp.path().join("out");
    let run = imgbuild(
        &project,
        &cache,
        &["build", "-o", &format!("oci:{}", out.display())],
    );
    assert_eq!(run.digest(), digest, "the same image, rebuilt");
    assert!(intact(&config), "the build wrote a good copy");
    assert!(
        run.stderr.matches("damaged").count() + run.stderr.matches("corrupt").count() <= 1,
        "reported once at most:\n{}",
        run.stderr
    );
    let inspect = json(&tool(
        "skopeo",
        &["inspect", &format!("oci:{}:latest", out.display())],
    ));
    assert_eq!(inspect["Digest"], digest.as_str());
    let check = imgbuild(&project, &cache, &["cache", "check"]);
    assert!(check.status.success(), "{}{}", check.stdout, check.stderr);
}

/// Item 4: a damaged `index.json` failed every command; it is set aside and rebuilt from the
/// blobs before compiling, and the dependency entry it listed is found again.
#[test]
fn a_damaged_index_is_set_aside_and_rebuilt_from_the_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let project = cached_fixture(tmp.path(), "app");
    let cache = tmp.path().join("cache");
    let first = imgbuild(&project, &cache, &["build", "--message-format", "json"]).events();
    let key = lookup_key(&first);
    std::fs::write(store(&cache).join("index.json"), b"{\"manifests\": [tru").unwrap();
    // Pruning by a guess of what the index said could delete what it names: prune refuses,
    // says how to repair, and deletes nothing.
    let blobs = || {
        std::fs::read_dir(store(&cache).join("blobs/sha256"))
            .unwrap()
            .count()
    };
    let before = blobs();
    imgbuild(&project, &cache, &["cache", "prune", "--all"]).fails_with(&[
        "index",
        "is damaged",
        "imgbuild cache check --repair",
    ]);
    assert_eq!(blobs(), before);
    // New app code: the dependency entry is what must be found again.
    let main = project.join("src/main.rs");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{text}\n// changed\n")).unwrap();
    let run = imgbuild(&project, &cache, &["build", "--message-format", "json"]);
    let events = run.events();
    let warnings: Vec<&str> = events
        .iter()
        .filter(|e| e["reason"] == "warning")
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.contains("index.json"))
        .collect();
    assert_eq!(warnings.len(), 1, "{events:#?}");
    assert!(
        warnings[0].contains("recovered 1 dependency entries"),
        "{}",
        warnings[0]
    );
    let lookup = event(&events, "cache-lookup");
    assert_eq!(lookup["key"], key.as_str());
    assert_eq!(lookup["hit"], true, "{lookup}");
    let kept: Vec<String> = std::fs::read_dir(store(&cache))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("index.json.damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged index is kept for inspection");
    tool(
        "umoci",
        &["ls", "--layout", store(&cache).to_str().unwrap()],
    );
}

/// Item 2 and `cache check`: temporary files live outside `blobs/sha256/`; a build killed
/// with SIGKILL leaves its scratch files, which `cache check` lists, other OCI tools ignore,
/// and the next build removes. A damaged blob is listed, and removed with `--repair`.
#[test]
fn leftovers_of_a_killed_build_are_collected_and_check_repairs_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let project = cached_fixture(tmp.path(), "app");
    let cache = tmp.path().join("cache");
    // Kill a build while it holds a private build directory (the compile step).
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .arg("build")
        .current_dir(&project)
        .env("IMGBUILD_CACHE_DIR", &cache)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sandbox = cache.join("sandbox");
    let started = std::time::Instant::now();
    while std::fs::read_dir(&sandbox).map_or(0, |d| d.count()) == 0 {
        assert!(
            started.elapsed().as_secs() < 120,
            "the build never started compiling"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A scratch directory with a half-written blob, as a kill during a write leaves it.
    let scratch = store(&cache).join(".tmp/99999999-killed");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(scratch.join(".lock"), b"").unwrap();
    std::fs::write(scratch.join(".tmp-layer-x"), b"half").unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    let blobs: Vec<String> = std::fs::read_dir(store(&cache).join("blobs/sha256"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        blobs.iter().all(|n| n.len() == 64),
        "only digests in blobs/sha256: {blobs:?}"
    );
    let check = imgbuild(&project, &cache, &["cache", "check"]);
    assert_eq!(check.status.code(), Some(1), "{}", check.stdout);
    assert!(check.stdout.contains("leftover: "), "{}", check.stdout);
    assert!(check.stdout.contains("99999999-killed"), "{}", check.stdout);
    assert!(check.stdout.contains("sandbox/build-"), "{}", check.stdout);
    // Other OCI tools read the store as it is.
    let layout = store(&cache);
    tool("umoci", &["ls", "--layout", layout.to_str().unwrap()]);

    // The next build removes the leftovers.
    let digest = imgbuild(&project, &cache, &["build"]).digest();
    assert!(!scratch.exists());
    let check = imgbuild(&project, &cache, &["cache", "check"]);
    assert!(check.status.success(), "{}{}", check.stdout, check.stderr);
    tool("umoci", &["gc", "--layout", layout.to_str().unwrap()]);

    // A damaged layer: listed with the tags that use it; --repair removes both.
    let manifest = json(&std::fs::read_to_string(blob(&cache, &digest)).unwrap());
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    flip_first_byte(&blob(&cache, &layer));
    let check = imgbuild(&project, &cache, &["cache", "check"]);
    assert_eq!(check.status.code(), Some(1), "{}", check.stdout);
    assert!(
        check
            .stdout
            .contains(&format!("problem: blob {layer} is damaged")),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains(&format!("{digest}): blob {layer} is damaged")),
        "the tag that uses it is named:\n{}",
        check.stdout
    );
    let repair = imgbuild(&project, &cache, &["cache", "check", "--repair"]);
    assert!(
        repair.status.success(),
        "{}{}",
        repair.stdout,
        repair.stderr
    );
    assert!(
        repair.stdout.contains("repaired: blob"),
        "{}",
        repair.stdout
    );
    assert!(!blob(&cache, &layer).exists());
    let again = imgbuild(&project, &cache, &["build"]).digest();
    assert_eq!(again, digest, "rebuilt bit for bit");
    let check = imgbuild(&project, &cache, &["cache", "check"]);
    assert!(check.status.success(), "{}{}", check.stdout, check.stderr);
}
