//! Issue #17: trusting the shared cache. A read-only build (a pull request, a fork) uses the
//! cache repository's entries and never writes to it.

use crate::registry_support::{Auth, Registry};
use crate::support::*;

/// Requests that write to a registry: uploads and manifest or tag puts, and deletes.
fn writes(registry: &Registry) -> usize {
    ["PUT", "POST", "PATCH", "DELETE"]
        .iter()
        .map(|m| registry.requests(m, "/v2/"))
        .sum()
}

#[test]
fn a_read_only_build_uses_the_cache_repository_and_writes_nothing_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let project = copy_example("with-deps", tmp.path());
    let repo = format!("{}/team/cache", registry.host());
    let json = ["--message-format", "json"];

    // A pull request's build on an empty cache repository: it misses, compiles, pushes nothing.
    let read_only = [("IMGBUILD_CACHE_MODE", "read-only")];
    let mut args = vec!["build", "--cache-repo", repo.as_str()];
    args.extend(json);
    let run = imgbuild_env(&project, &tmp.path().join("cache-pr"), &args, &read_only);
    run.events();
    assert!(registry.requests("GET", "/v2/team/cache/") > 0, "it looked");
    assert_eq!(
        writes(&registry),
        0,
        "read-only writes nothing:\n{}",
        registry.log()
    );

    // The main branch's build (read-write) shares its entries.
    let first = imgbuild(&project, &tmp.path().join("cache-main"), &args);
    let digest = image_digest(&first.events());
    assert!(writes(&registry) > 0, "read-write pushes");
    let after_main = writes(&registry);

    // A fresh read-only runner uses them: the image comes from the cache repository.
    let mut flag_args = args.clone();
    flag_args.extend(["--cache-mode", "read-only"]);
    let run = imgbuild(&project, &tmp.path().join("cache-pr2"), &flag_args);
    let events = run.events();
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "app-cache" && e["from_registry"] == true),
        "{events:#?}"
    );
    assert_eq!(image_digest(&events), digest);
    // With a source change it compiles, restores the dependencies, and still writes nothing.
    let main = project.join("src/main.rs");
    let source = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{source}\n// a pull request's change\n")).unwrap();
    let run = imgbuild(&project, &tmp.path().join("cache-pr3"), &flag_args);
    let events = run.events();
    let compiled = event(&events, "compiled");
    assert_eq!(compiled["dependencies_compiled"], 0, "{compiled}");
    assert_eq!(writes(&registry), after_main, "read-only writes nothing");

    // Off: the repository is not asked at all.
    let gets = registry.requests("GET", "/v2/") + registry.requests("HEAD", "/v2/");
    let mut off_args = args.clone();
    off_args.extend(["--cache-mode", "off"]);
    imgbuild(&project, &tmp.path().join("cache-off"), &off_args).events();
    let after = registry.requests("GET", "/v2/") + registry.requests("HEAD", "/v2/");
    assert_eq!(after, gets, "off leaves the repository alone");
}

/// Runs a Python snippet against the registry API (plain HTTP) with `args`; returns stdout.
fn python(script: &str, args: &[&str]) -> String {
    require("python3");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Flips one character of every signature in the repository's `*.sig` manifests.
const TAMPER: &str = r#"
import json, sys, urllib.request
base, repo = sys.argv[1], sys.argv[2]
accept = "application/vnd.oci.image.manifest.v1+json"
tags = json.load(urllib.request.urlopen(f"{base}/v2/{repo}/tags/list"))["tags"]
for tag in [t for t in tags if t.endswith(".sig")]:
    req = urllib.request.Request(f"{base}/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
    m = json.load(urllib.request.urlopen(req))
    for layer in m["layers"]:
        s = layer["annotations"]["dev.cosignproject.cosign/signature"]
        i = len(s) // 2
        layer["annotations"]["dev.cosignproject.cosign/signature"] = s[:i] + ("A" if s[i] != "A" else "B") + s[i+1:]
    body = json.dumps(m).encode()
    put = urllib.request.Request(f"{base}/v2/{repo}/manifests/{tag}", data=body, method="PUT",
                                 headers={"Content-Type": accept})
    urllib.request.urlopen(put)
    print(tag)
"#;

/// Fetches the signature of `digest` in `repo`: prints the payload and the signature (base64).
const FETCH_SIGNATURE: &str = r#"
import json, sys, urllib.request
base, repo, digest = sys.argv[1], sys.argv[2], sys.argv[3]
accept = "application/vnd.oci.image.manifest.v1+json"
tag = digest.replace(":", "-") + ".sig"
req = urllib.request.Request(f"{base}/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
m = json.load(urllib.request.urlopen(req))
layer = m["layers"][0]
payload = urllib.request.urlopen(f"{base}/v2/{repo}/blobs/{layer['digest']}").read()
print(json.dumps({"media_type": layer["mediaType"], "payload": payload.decode(),
                  "signature": layer["annotations"]["dev.cosignproject.cosign/signature"],
                  "subject": m.get("subject", {}).get("digest"),
                  "artifact_type": m.get("artifactType")}))
"#;

#[test]
fn a_trusting_reader_uses_only_entries_its_keys_signed_and_says_why_not() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let project = copy_example("hello", tmp.path());
    let keys = tmp.path().join("keys");
    let (main_key, main_pub) = key_pair(&keys, "main");
    let (other_key, _) = key_pair(&keys, "other");
    let base = format!("http://{}", registry.host());
    let mut n = 0;
    let mut build = |repo: &str, extra: &[&str]| {
        n += 1;
        let cache = tmp.path().join(format!("cache-{n}"));
        let repo = format!("{}/{repo}", registry.host());
        let mut args = vec!["build", "--cache-repo", &repo, "--message-format", "json"];
        args.extend_from_slice(extra);
        let run = imgbuild(&project, &cache, &args);
        let events = run.events();
        let from_registry = events
            .iter()
            .any(|e| e["reason"] == "app-cache" && e["from_registry"] == true);
        let compiled = events.iter().any(|e| e["reason"] == "compiled");
        let warnings: Vec<String> = events
            .iter()
            .filter(|e| e["reason"] == "warning")
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect();
        (from_registry, compiled, warnings)
    };
    let trust = ["--cache-trust", main_pub.as_str()];

    // Signed by the trusted key: used.
    build("signed", &["--cache-sign-key", &main_key]);
    let (hit, compiled, warnings) = build("signed", &trust);
    assert!(hit && !compiled, "{warnings:?}");
    assert!(warnings.is_empty(), "{warnings:?}");

    // Signed by another key, unsigned, tampered with: each a miss that says why.
    build("other", &["--cache-sign-key", &other_key]);
    build("unsigned", &[]);
    build("tampered", &["--cache-sign-key", &main_key]);
    let tampered = python(TAMPER, &[&base, "tampered"]);
    assert!(!tampered.is_empty(), "signatures were found to tamper with");
    for (repo, why) in [
        ("other", "signed by a key that is not trusted"),
        ("unsigned", "unsigned"),
        ("tampered", "bad signature"),
    ] {
        let (hit, compiled, warnings) = build(repo, &trust);
        assert!(!hit && compiled, "{repo}: an untrusted entry is a miss");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("is not trusted") && w.contains(why) && w.contains(repo)),
            "{repo}: {warnings:?}"
        );
    }
    // Without trusted keys configured, today's behaviour: the unsigned entry is used.
    let (hit, _, _) = build("unsigned", &[]);
    assert!(hit);
}

#[test]
fn a_pushed_image_is_signed_the_way_cosign_does_and_openssl_verifies_it() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let project = copy_example("hello", tmp.path());
    let keys = tmp.path().join("keys");
    let (key, public) = key_pair(&keys, "release");
    let (_, other_pub) = key_pair(&keys, "other");
    let image = format!("{}/signed/hello:v1", registry.host());
    let run = imgbuild(
        &project,
        &tmp.path().join("cache"),
        &[
            "push",
            &image,
            "--sign-key",
            &key,
            "--message-format",
            "json",
        ],
    );
    let events = run.events();
    let digest = image_digest(&events);
    assert!(events.iter().any(|e| e["reason"] == "signed"));

    // cosign's layout and payload, and a signature openssl checks over the payload.
    let sig = openssl_verifies_signature(&registry, "signed/hello", &digest, &public, tmp.path());
    assert_eq!(
        sig["media_type"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    let payload = json(sig["payload"].as_str().unwrap());
    let critical = &payload["critical"];
    assert_eq!(critical["type"], "cosign container image signature");
    assert_eq!(critical["image"]["docker-manifest-digest"], digest.as_str());
    assert_eq!(
        critical["identity"]["docker-reference"],
        format!("{}/signed/hello", registry.host())
    );

    // imgbuild verify-signature: the right key passes, another fails.
    let cache = tmp.path().join("cache");
    let ok = imgbuild(
        &project,
        &cache,
        &["verify-signature", &image, "--key", &public],
    );
    assert!(ok.status.success(), "{}", ok.stderr);
    assert_eq!(ok.stdout.trim(), digest);
    imgbuild(
        &project,
        &cache,
        &["verify-signature", &image, "--key", &other_pub],
    )
    .fails_with(&["not trusted", &digest]);
    // Signatures belong to digests: another image (another config) in the same repository
    // is unsigned.
    let unsigned = format!("{}/signed/hello:unsigned", registry.host());
    imgbuild(&project, &cache, &["push", &unsigned, "-e", "X=1"]).digest();
    imgbuild(
        &project,
        &cache,
        &["verify-signature", &unsigned, "--key", &public],
    )
    .fails_with(&["unsigned"]);
}

/// Fetches the signature of `digest` in `repo` and checks it with `openssl dgst -verify` and
/// the `public` key over the payload; returns what `FETCH_SIGNATURE` printed.
fn openssl_verifies_signature(
    registry: &Registry,
    repo: &str,
    digest: &str,
    public: &str,
    scratch: &std::path::Path,
) -> serde_json::Value {
    let base = format!("http://{}", registry.host());
    let sig = json(&python(FETCH_SIGNATURE, &[&base, repo, digest]));
    let payload_file = scratch.join("payload.json");
    std::fs::write(&payload_file, sig["payload"].as_str().unwrap()).unwrap();
    let der = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        sig["signature"].as_str().unwrap(),
    )
    .unwrap();
    let sig_file = scratch.join("payload.sig");
    std::fs::write(&sig_file, der).unwrap();
    let verified = tool(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            public,
            "-signature",
            sig_file.to_str().unwrap(),
            payload_file.to_str().unwrap(),
        ],
    );
    assert_eq!(verified.trim(), "Verified OK");
    sig
}

/// The sigstore crate (sigstore-rs, crates.io) ships keys for its own tests: one that
/// `cosign generate-key-pair` made with an empty password, and keys its own code sealed in
/// cosign's format with the password `123`. Fetched from crates.io and checked against the
/// crate's SHA-256, so the fixture cannot drift.
fn sigstore_test_keys(dir: &std::path::Path) -> std::path::PathBuf {
    const CRATE: &str = "https://static.crates.io/crates/sigstore/sigstore-0.14.0.crate";
    const SHA256: &str = "a4df549c175469befae9f95dcfa52cda15b11a4a72ade1f43a36e90cd90ba88a";
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("sigstore.crate");
    tool(
        "curl",
        &["-sSfL", "--retry", "3", "-o", file.to_str().unwrap(), CRATE],
    );
    assert_eq!(sha256_hex(&std::fs::read(&file).unwrap()), SHA256);
    tool(
        "tar",
        &["xzf", file.to_str().unwrap(), "-C", dir.to_str().unwrap()],
    );
    dir.join("sigstore-0.14.0/tests/data/keys")
}

#[test]
fn a_key_cosign_made_signs_images_and_cache_entries_with_its_password() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let project = copy_example("hello", tmp.path());
    let keys = sigstore_test_keys(&tmp.path().join("keys"));
    let cosign_key = keys.join("cosign_generated_encrypted_empty_private.key");
    let cosign_key = cosign_key.to_str().unwrap();
    let image = format!("{}/cosign/hello:v1", registry.host());
    let cache_repo = format!("{}/cosign/cache", registry.host());
    let push = [
        "push",
        &image,
        "--sign-key",
        cosign_key,
        "--cache-repo",
        &cache_repo,
        "--cache-sign-key",
        cosign_key,
        "--message-format",
        "json",
    ];
    let cache = tmp.path().join("cache");

    // No password, or a wrong one: a clear error before anything compiles or is pushed.
    let run = imgbuild(&project, &cache, &push);
    run.fails_with(&[
        "cosign_generated_encrypted_empty_private.key",
        "COSIGN_PASSWORD",
    ]);
    assert!(!run.stdout.contains("\"compiled\""), "{}", run.stdout);
    let run = imgbuild_env(&project, &cache, &push, &[("COSIGN_PASSWORD", "wrong")]);
    run.fails_with(&["does not open it"]);
    assert_eq!(writes(&registry), 0, "{}", registry.log());

    // The public key, as `cosign public-key` prints it; openssl reads it.
    let empty = [("COSIGN_PASSWORD", "")];
    let printed = imgbuild_env(
        &project,
        &cache,
        &["public-key", "--key", cosign_key],
        &empty,
    );
    assert!(printed.status.success(), "{}", printed.stderr);
    assert!(printed.stdout.starts_with("-----BEGIN PUBLIC KEY-----"));
    let public = tmp.path().join("cosign.pub");
    std::fs::write(&public, &printed.stdout).unwrap();
    let public = public.to_str().unwrap();
    let text = tool(
        "openssl",
        &["pkey", "-pubin", "-in", public, "-text", "-noout"],
    );
    assert!(text.contains("prime256v1"), "{text}");

    // With its password it signs the image (openssl and verify-signature check it) and the
    // cache entries (a trusting fresh runner uses them).
    let run = imgbuild_env(&project, &cache, &push, &empty);
    let digest = image_digest(&run.events());
    let sig = openssl_verifies_signature(&registry, "cosign/hello", &digest, public, tmp.path());
    assert_eq!(sig["subject"], digest.as_str());
    let ok = imgbuild(
        &project,
        &cache,
        &["verify-signature", &image, "--key", public],
    );
    assert!(ok.status.success(), "{}", ok.stderr);
    assert_eq!(ok.stdout.trim(), digest);
    let fresh = [
        "build",
        "--cache-repo",
        &cache_repo,
        "--cache-trust",
        public,
        "--message-format",
        "json",
    ];
    let events = imgbuild(&project, &tmp.path().join("fresh"), &fresh).events();
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "app-cache" && e["from_registry"] == true),
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|e| e["reason"] == "warning"),
        "{events:#?}"
    );

    // An Ed25519 key sealed in cosign's format (password `123`) reads too.
    let ed = keys.join("ed25519_encrypted_private.key");
    let args = ["public-key", "--key", ed.to_str().unwrap()];
    let printed = imgbuild_env(&project, &cache, &args, &[("COSIGN_PASSWORD", "123")]);
    assert!(printed.status.success(), "{}", printed.stderr);
    let public = tmp.path().join("ed25519.pub");
    std::fs::write(&public, &printed.stdout).unwrap();
    let args = [
        "pkey",
        "-pubin",
        "-in",
        public.to_str().unwrap(),
        "-text",
        "-noout",
    ];
    assert!(tool("openssl", &args).contains("ED25519"));
}

/// A trusting reader passes over a binary's newest entry that no trusted key signed (saying
/// so) and starts from the workspace's other binary's signed one, not cold.
#[test]
fn a_trusting_reader_starts_from_a_signed_entry_when_its_own_newest_is_unsigned() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let repo = format!("{}/cache/trusted", registry.host());
    let (main_key, main_pub) = key_pair(&tmp.path().join("keys"), "main");
    let build = |dir: &std::path::Path, cache: &str, bin: &str, extra: &[&str]| {
        let args = [&["-p", bin][..], extra].concat();
        build_through(dir, &tmp.path().join(cache), &repo, &args, &[])
    };
    let first = crate::units::chain(&tmp.path().join("one"));
    // app-b's entry signed by main's key; app-a's pushed by a writer without one.
    let b = build(&first, "cache-b", "app-b", &["--cache-sign-key", &main_key]);
    let b_key = lookup_key(&b);
    let two = crate::units::checkout(&first, &tmp.path().join("two"), &[]);
    build(&two, "cache-a", "app-a", &[]);

    // A reader trusting main's key builds app-a on a lockfile nobody built for it.
    let three = crate::units::checkout(&first, &tmp.path().join("three"), &[]);
    std::fs::create_dir_all(three.join("target")).unwrap();
    let signatures_before = registry.request_lines("GET", ".sig").len();
    let events = build(&three, "cache-c", "app-a", &["--cache-trust", &main_pub]);
    // Each signature is read once; the chosen entry's when its config is read to choose it,
    // not again when the entry is pulled. (An unsigned newest entry is looked at by the early
    // restore and again by the restore, which reports it.)
    let signatures = registry
        .request_lines("GET", ".sig")
        .split_off(signatures_before);
    let signed: Vec<&String> = (signatures.iter())
        .filter(|(_, status)| *status == 200)
        .map(|(request, _)| request)
        .collect();
    let distinct: std::collections::BTreeSet<&&String> = signed.iter().collect();
    assert!(!signed.is_empty(), "{signatures:#?}");
    assert_eq!(distinct.len(), signed.len(), "{signatures:#?}");
    let lookup = event(&events, "cache-lookup");
    assert_eq!(
        (lookup["hit"].as_bool(), lookup["nearest"].as_str()),
        (Some(false), Some(b_key.as_str())),
        "{lookup}"
    );
    assert_eq!(event(&events, "compiled")["dependencies_compiled"], 0);
    let warnings: Vec<&str> = (events.iter())
        .filter(|e| e["reason"] == "warning")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("is not trusted") && w.contains("unsigned")),
        "{warnings:?}"
    );

    // Another project of the team: the repository's index lists app-a's unsigned entry first
    // (the newest); it is passed over for app-b's signed one.
    let other = crate::units::locked_package(
        &tmp.path().join("other"),
        "other",
        "itoa = \"=1.0.10\"\n",
        "fn main() { println!(\"{}\", itoa::Buffer::new().format(7u8)); }\n",
    );
    let events = build(&other, "cache-d", "other", &["--cache-trust", &main_pub]);
    let lookup = event(&events, "cache-lookup");
    assert_eq!(lookup["nearest"].as_str(), Some(b_key.as_str()), "{lookup}");
    assert_eq!(event(&events, "compiled")["dependencies_compiled"], 0);
}
