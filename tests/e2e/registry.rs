//! Issue #4: pushing to a real `docker-registry` on 127.0.0.1 — plain HTTP, TLS with a private
//! CA and basic auth, bearer tokens from a token service — and the failures users meet.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use serde_json::Value;

use crate::proxies::*;
use crate::registry_support::*;
use crate::support::*;

fn pushed(events: &[Value]) -> &Value {
    event(events, "pushed")
}

/// A docker config dir whose config.json holds `user:password` for `registry`.
fn docker_config(dir: &Path, registry: &str, user: &str, password: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    dir.to_str().unwrap().to_string()
}

fn skopeo_digest(args: &[&str]) -> String {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    json(&tool("skopeo", &all))["Digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_plain_http_push_is_pulled_by_skopeo_and_runs_under_runc_and_docker() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let reference = format!("{}/e2e/hello:v1", registry.host());
    let run = imgbuild(
        &project,
        &cache,
        &["push", &reference, "--message-format", "json"],
    );
    let events = run.events();
    let digest = image_digest(&events);
    let p = pushed(&events);
    assert_eq!(p["uploaded"], 4, "config and three layers: {p}");
    assert_eq!(p["digest"], digest.as_str());
    assert_eq!(
        (
            registry.requests("PUT", &format!("/v2/e2e/hello/manifests/{digest}")),
            registry.requests("PUT", "/v2/e2e/hello/manifests/v1")
        ),
        (0, 1),
        "the manifest once, under its tag"
    );
    assert_eq!(
        registry.requests("PUT", "/v2/e2e/hello/manifests/"),
        4,
        "and the SBOM's and provenance's manifests and the tag schema's index (supply.rs)"
    );

    let remote = format!("docker://{reference}");
    assert_eq!(skopeo_digest(&["--tls-verify=false", &remote]), digest);
    // The registry keeps the manifest under its digest too.
    let by_digest = format!("docker://{}/e2e/hello@{digest}", registry.host());
    assert_eq!(skopeo_digest(&["--tls-verify=false", &by_digest]), digest);
    let layout = tmp.path().join("pulled");
    tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &remote,
            &format!("oci:{}:v1", layout.display()),
        ],
    );
    let out = run_with_runc(&layout, "v1", tmp.path());
    assert!(out.contains(", world!"), "{out}");

    require("docker");
    let docker = Command::new("docker")
        .args(["run", "--rm", &reference])
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rmi", &reference]).output();
    assert!(
        docker.status.success(),
        "docker run failed:\n{}",
        String::from_utf8_lossy(&docker.stderr)
    );
    assert!(String::from_utf8_lossy(&docker.stdout).contains(", world!"));
}

/// The image's blobs alone: the referrers' uploads are counted in `supply.rs`.
const SUPPLY_OFF: &[&str] = &["--sbom", "none", "--no-provenance"];

#[test]
fn a_second_push_uploads_only_what_changed_and_other_repositories_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let reference = format!("{}/e2e/app", registry.host());
    imgbuild(
        &project,
        &cache,
        &[
            &["push", &reference, "--message-format", "json"][..],
            SUPPLY_OFF,
        ]
        .concat(),
    )
    .events();
    let uploads = registry.requests("PUT", "/v2/e2e/app/blobs/uploads/");
    assert_eq!(uploads, 4, "first push: every blob");

    // Only the app changes.
    let main = project.join("src/main.rs");
    let source = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, source.replace("world!", "there!")).unwrap();
    let second = imgbuild(
        &project,
        &cache,
        &[
            &["push", &reference, "--message-format", "json"][..],
            SUPPLY_OFF,
        ]
        .concat(),
    )
    .events();
    let p = pushed(&second);
    assert_eq!(
        (p["uploaded"].as_u64(), p["present"].as_u64()),
        (Some(2), Some(2)),
        "{p}"
    );
    assert_eq!(
        registry.requests("PUT", "/v2/e2e/app/blobs/uploads/") - uploads,
        2,
        "the registry received the app layer and the config only"
    );
    let uploaded: Vec<&str> = second
        .iter()
        .filter(|e| e["reason"] == "blob" && e["outcome"] == "uploaded")
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    let app_layer = second
        .iter()
        .find(|e| e["reason"] == "layer" && e["role"] == "app")
        .unwrap()["digest"]
        .as_str()
        .unwrap();
    assert!(uploaded.contains(&app_layer), "{uploaded:?}");

    // Another repository on the same registry: every blob is mounted, none uploaded.
    let other = format!("{}/elsewhere/app:v2", registry.host());
    let third = imgbuild(
        &project,
        &cache,
        &[
            &["push", &other, "--message-format", "json"][..],
            SUPPLY_OFF,
        ]
        .concat(),
    )
    .events();
    let p = pushed(&third);
    assert_eq!(
        (p["mounted"].as_u64(), p["uploaded"].as_u64()),
        (Some(4), Some(0)),
        "{p}"
    );
    assert_eq!(
        registry.requests("PUT", "/v2/elsewhere/app/blobs/uploads/"),
        0
    );
    assert_eq!(
        skopeo_digest(&["--tls-verify=false", &format!("docker://{other}")]),
        image_digest(&third)
    );
}

/// The environment a build needs when HOME is replaced: the real cargo and rustup homes.
fn toolchain_env() -> Vec<(String, String)> {
    let home = std::env::var("HOME").unwrap();
    let var = |k: &str, default: String| (k.to_string(), std::env::var(k).unwrap_or(default));
    vec![
        var("CARGO_HOME", format!("{home}/.cargo")),
        var("RUSTUP_HOME", format!("{home}/.rustup")),
    ]
}

#[test]
fn tls_with_a_private_ca_and_basic_auth_from_a_docker_config() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::new(&tmp.path().join("certs"));
    let (user, password) = ("builder", "correct-horse-battery");
    let registry = Registry::start(
        &tmp.path().join("registry"),
        Some(&certs),
        Auth::Basic {
            user: user.into(),
            password: password.into(),
        },
    );
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let reference = format!("{}/secure/hello:v1", registry.host());
    let config = docker_config(&tmp.path().join("docker"), &registry.host(), user, password);
    let ca = certs.ca();
    let ca = ca.to_str().unwrap();

    let run = imgbuild_env(
        &project,
        &cache,
        &["push", &reference, "--message-format", "json"],
        &[("DOCKER_CONFIG", &config), ("SSL_CERT_FILE", ca)],
    );
    let digest = image_digest(&run.events());
    assert!(!run.stderr.contains(password) && !run.stdout.contains(password));
    let cert_dir = tmp.path().join("skopeo-certs");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::copy(certs.ca(), cert_dir.join("ca.crt")).unwrap();
    assert_eq!(
        skopeo_digest(&[
            "--cert-dir",
            cert_dir.to_str().unwrap(),
            "--creds",
            &format!("{user}:{password}"),
            &format!("docker://{reference}"),
        ]),
        digest
    );

    // The CA from a certs.d directory under HOME, as podman reads it.
    let home = tmp.path().join("home");
    let certs_d = home
        .join(".config/containers/certs.d")
        .join(registry.host());
    std::fs::create_dir_all(&certs_d).unwrap();
    std::fs::copy(certs.ca(), certs_d.join("ca.crt")).unwrap();
    let mut env: Vec<(String, String)> = toolchain_env();
    env.push(("HOME".into(), home.to_str().unwrap().into()));
    env.push(("DOCKER_CONFIG".into(), config.clone()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let run = imgbuild_env(&project, &cache, &["push", &reference], &env_refs);
    assert_eq!(run.digest(), digest);

    // An unknown CA is a TLS error that says how to trust it.
    imgbuild_env(
        &project,
        &cache,
        &["push", &reference],
        &[("DOCKER_CONFIG", &config)],
    )
    .fails_with(&["TLS", "SSL_CERT_FILE", &registry.host()]);

    // A wrong password: refused, the registry and the config file named, no password shown.
    let wrong = docker_config(
        &tmp.path().join("wrong"),
        &registry.host(),
        user,
        "not-the-password",
    );
    let run = imgbuild_env(
        &project,
        &cache,
        &["push", &reference],
        &[("DOCKER_CONFIG", &wrong), ("SSL_CERT_FILE", ca)],
    );
    run.fails_with(&["refused", &registry.host(), "config.json"]);
    assert!(!run.stderr.contains("not-the-password") && !run.stderr.contains(password));

    // No credentials at all: the fix is named.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    imgbuild_env(
        &project,
        &cache,
        &["push", &reference],
        &[
            ("DOCKER_CONFIG", empty.to_str().unwrap()),
            ("SSL_CERT_FILE", ca),
        ],
    )
    .fails_with(&["docker login"]);
}

#[test]
fn bearer_tokens_per_scope_from_a_token_service() {
    let tmp = tempfile::tempdir().unwrap();
    let (user, password) = ("ci", "token-secret-123");
    let registry = Registry::start(
        &tmp.path().join("registry"),
        None,
        Auth::Token {
            user: user.into(),
            password: password.into(),
        },
    );
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let config = docker_config(&tmp.path().join("docker"), &registry.host(), user, password);
    let reference = format!("{}/tokens/hello:v1", registry.host());
    let run = imgbuild_env(
        &project,
        &cache,
        &["push", &reference, "--message-format", "json"],
        &[("DOCKER_CONFIG", &config)],
    );
    let first = run.events();
    assert_eq!(pushed(&first)["uploaded"], 4);
    let issued = registry
        .issuer
        .as_ref()
        .unwrap()
        .issued
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(issued >= 1, "the token service issued the push's tokens");
    assert_eq!(
        skopeo_digest(&[
            "--tls-verify=false",
            "--creds",
            &format!("{user}:{password}"),
            &format!("docker://{reference}"),
        ]),
        image_digest(&first)
    );
    // A mount needs a token with pull access to the source repository as well.
    let other = format!("{}/tokens-elsewhere/hello:v1", registry.host());
    let run = imgbuild_env(
        &project,
        &cache,
        &["push", &other, "--message-format", "json"],
        &[("DOCKER_CONFIG", &config)],
    );
    let p = pushed(&run.events()).clone();
    assert_eq!(
        (p["mounted"].as_u64(), p["uploaded"].as_u64()),
        (Some(4), Some(0)),
        "{p}"
    );

    let wrong = docker_config(
        &tmp.path().join("wrong"),
        &registry.host(),
        user,
        "nope-nope",
    );
    let run = imgbuild_env(
        &project,
        &cache,
        &["push", &reference],
        &[("DOCKER_CONFIG", &wrong)],
    );
    run.fails_with(&["refused", "token service", &registry.host()]);
    assert!(!run.stderr.contains("nope-nope"));
}

/// Issue 11: a token that expires while an upload session is open. The registry answers the
/// upload's `PUT` with 401; the client asks the token service again and completes the push.
#[test]
fn a_token_that_expires_during_an_upload_is_refreshed() {
    let tmp = tempfile::tempdir().unwrap();
    let (user, password) = ("ci", "short-lived-456");
    let registry = Registry::start(
        &tmp.path().join("registry"),
        None,
        Auth::Token {
            user: user.into(),
            password: password.into(),
        },
    );
    let issuer = registry.issuer.as_ref().unwrap();
    issuer.set_lifetime(3);
    // The first blob upload's PUT reaches the registry 6 s after its session began: its token
    // has expired by then.
    let proxy = StallingProxy::start(registry.port, std::time::Duration::from_secs(6));
    let host = format!("127.0.0.1:{}", proxy.port());
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let config = docker_config(&tmp.path().join("docker"), &host, user, password);
    let reference = format!("{host}/expiring/hello:v1");
    let run = imgbuild_env(
        &project,
        &cache,
        &["push", &reference, "--message-format", "json"],
        &[("DOCKER_CONFIG", &config)],
    );
    let events = run.events();
    assert_eq!(pushed(&events)["uploaded"], 4, "{}", run.stderr);
    assert_eq!(proxy.stalled.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        registry.answered("PUT", "/v2/expiring/hello/blobs/uploads/", 401) >= 1,
        "the stalled upload was refused with 401:\n{}",
        registry.log()
    );
    let issued = issuer.issued.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        issued >= 2,
        "a token, then a new one after the 401: {issued}"
    );
    issuer.set_lifetime(600);
    assert_eq!(
        skopeo_digest(&[
            "--tls-verify=false",
            "--creds",
            &format!("{user}:{password}"),
            &format!("docker://{}/expiring/hello:v1", registry.host()),
        ]),
        image_digest(&events)
    );
}

#[test]
fn a_registry_that_is_down_or_drops_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");

    // Nothing listens: bounded retries, then a clear error.
    let down = format!("127.0.0.1:{}/x/hello", free_port());
    let start = std::time::Instant::now();
    imgbuild(&project, &cache, &["push", &down])
        .fails_with(&["could not be reached after 4 attempt"]);
    assert!(start.elapsed() < std::time::Duration::from_secs(60));

    // A proxy that cuts the first blob upload midway: the push still completes.
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let proxy = FlakyProxy::start(registry.port, 200 * 1024);
    let through_proxy = format!("127.0.0.1:{}/flaky/hello:v1", proxy.port());
    let run = imgbuild(
        &project,
        &cache,
        &["push", &through_proxy, "--message-format", "json"],
    );
    let events = run.events();
    assert_eq!(
        proxy.cuts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one upload was cut"
    );
    assert_eq!(
        skopeo_digest(&[
            "--tls-verify=false",
            &format!("docker://{}/flaky/hello:v1", registry.host())
        ]),
        image_digest(&events)
    );

    // 503 and 429 answers are retried with backoff.
    for status in ["503 Service Unavailable", "429 Too Many Requests"] {
        let proxy = RefusingProxy::start(registry.port, 2, status);
        let reference = format!("127.0.0.1:{}/busy/hello:v1", proxy.port());
        imgbuild(&project, &cache, &["push", &reference]).digest();
        assert_eq!(
            proxy.refused.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "{status}"
        );
    }
    // Plain HTTP to a registry that is not local needs --insecure-registry (127.0.0.2 is
    // loopback, but not one of the names imgbuild treats as local).
    let remote_like = RefusingProxy::start_on("127.0.0.2", registry.port, 0, "-");
    let host = format!("127.0.0.2:{}", remote_like.port());
    let reference = format!("{host}/insecure/hello:v1");
    imgbuild(&project, &cache, &["push", &reference])
        .fails_with(&["only plain HTTP", &format!("--insecure-registry {host}")]);
    imgbuild(
        &project,
        &cache,
        &["push", &reference, "--insecure-registry", &host],
    )
    .digest();

    // A registry that keeps answering 503 is an error after the retries.
    let proxy = RefusingProxy::start(registry.port, 1000, "503 Service Unavailable");
    let reference = format!("127.0.0.1:{}/busy/hello:v1", proxy.port());
    imgbuild(&project, &cache, &["push", &reference]).fails_with(&["503"]);
}

#[test]
fn the_dependency_cache_is_shared_through_a_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let repo = format!("{}/cache/deps", registry.host());
    let build = |dir: &Path, cache: &str| {
        imgbuild(
            dir,
            &tmp.path().join(cache),
            &[
                "build",
                "--rebuild",
                "--cache-repo",
                &repo,
                "--message-format",
                "json",
            ],
        )
        .events()
    };

    // The first runner compiles everything and pushes the entry: its config and one layer.
    let first = build(&cached_fixture(tmp.path(), "one"), "cache-a");
    let key = lookup_key(&first);
    let p = pushed(&first);
    assert!(
        p["reference"]
            .as_str()
            .unwrap()
            .ends_with(&format!("cache/deps:deps-{key}")),
        "{p}"
    );
    assert_eq!(p["uploaded"], 2, "{p}");

    // A fresh runner: new checkout, empty cache directory. The entry comes from the registry.
    let two = cached_fixture(tmp.path(), "two");
    let second = build(&two, "cache-b");
    let lookup = event(&second, "cache-lookup");
    assert_eq!(
        (lookup["hit"].as_bool(), lookup["from_registry"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(
        event(&second, "compiled")["dependencies_compiled"],
        0,
        "no dependency compiled"
    );
    assert_eq!(event(&second, "cache-restored")["early"], true);
    assert_eq!(image_digest(&second), image_digest(&first));

    // A lockfile bump: the nearest entry plus a delta; only the new layer and config go up.
    let uploaded_before = registry.uploaded_digests();
    cargo(&two, &["update", "-p", "itoa", "--precise", "1.0.11"]);
    let third = build(&two, "cache-b");
    assert_eq!(event(&third, "cache-lookup")["nearest"], key.as_str());
    assert_eq!(
        event(&third, "cache-restored")["early"],
        false,
        "a checkout with a target directory restores once the key is known"
    );
    assert_eq!(event(&third, "cache-stored")["layers"], 2);
    let p = pushed(&third);
    assert_eq!(
        (p["uploaded"].as_u64(), p["present"].as_u64()),
        (Some(2), Some(1)),
        "{p}"
    );
    // The registry's own log: the earlier layer, which the delta entry shares, was not sent again.
    let shared_layer = entry_layers(&repo, &key)[0].clone();
    let uploaded_after = registry.uploaded_digests();
    assert_eq!(
        uploaded_after
            .iter()
            .filter(|d| **d == shared_layer)
            .count(),
        uploaded_before
            .iter()
            .filter(|d| **d == shared_layer)
            .count(),
        "{shared_layer} was uploaded again"
    );

    // Another fresh runner on the bumped lockfile: a hit from the registry again.
    let three = cached_fixture(tmp.path(), "three");
    std::fs::copy(two.join("Cargo.lock"), three.join("Cargo.lock")).unwrap();
    let fourth = build(&three, "cache-c");
    assert_eq!(event(&fourth, "cache-lookup")["from_registry"], true);
    assert_eq!(event(&fourth, "compiled")["dependencies_compiled"], 0);
    assert_eq!(image_digest(&fourth), image_digest(&third));

    // A fresh runner on yet another bump: the exact entry is missing, so the newest entry of
    // this binary comes from the registry as the starting point, and only the bump recompiles.
    let bumped_key = lookup_key(&third);
    let five = cached_fixture(tmp.path(), "five");
    std::fs::copy(two.join("Cargo.lock"), five.join("Cargo.lock")).unwrap();
    cargo(&five, &["update", "-p", "itoa", "--precise", "1.0.19"]);
    let fifth = build(&five, "cache-d");
    let lookup = event(&fifth, "cache-lookup");
    assert_eq!(lookup["hit"], false);
    assert_eq!(lookup["nearest"], bumped_key.as_str(), "{lookup}");
    assert_eq!(lookup["from_registry"], true);
    // Fetched before the key was known, and taken as the nearest entry (same toolchain).
    assert_eq!(event(&fifth, "cache-restored")["early"], true);
    let packages: Vec<&str> = event(&fifth, "compiled")["compiled_packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(packages.contains(&"itoa@1.0.19"), "{packages:?}");
    assert!(
        packages
            .iter()
            .all(|p| p.starts_with("itoa@") || p.starts_with("serde_json@")),
        "{packages:?}"
    );
    assert_eq!(event(&fifth, "cache-stored")["layers"], 3);
}

/// Issue 13 (6): a registry whose token service cannot be reached is not reported as the
/// registry being unreachable.
#[test]
fn an_unreachable_token_service_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let mut registry = Registry::start(
        &tmp.path().join("registry"),
        None,
        Auth::Token {
            user: "ci".into(),
            password: "secret".into(),
        },
    );
    let realm_port = registry.issuer.as_ref().unwrap().port();
    drop(registry.issuer.take());
    std::thread::sleep(std::time::Duration::from_millis(100));
    let project = copy_example("hello", tmp.path());
    let config = docker_config(&tmp.path().join("docker"), &registry.host(), "ci", "secret");
    let reference = format!("{}/tokens/hello:v1", registry.host());
    let run = imgbuild_env(
        &project,
        &tmp.path().join("cache"),
        &["push", &reference],
        &[("DOCKER_CONFIG", &config)],
    );
    run.fails_with(&[
        "its token service",
        &format!("127.0.0.1:{realm_port}"),
        "auth.token.realm",
    ]);
    assert!(
        !run.stderr.contains(&format!(
            "registry {} could not be reached",
            registry.host()
        )),
        "{}",
        run.stderr
    );
}

/// Issue 13 (5): a registry whose certificate is self-signed the way Docker's documentation
/// makes one (CA:TRUE) is trusted when that exact certificate is configured, as docker,
/// podman and skopeo trust it; another self-signed certificate is still refused.
#[test]
fn a_self_signed_certificate_made_as_dockers_docs_show_is_trusted_when_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::self_signed_like_dockers_docs(&tmp.path().join("certs"));
    let text = tool(
        "openssl",
        &[
            "x509",
            "-in",
            certs.ca().to_str().unwrap(),
            "-noout",
            "-text",
        ],
    );
    assert!(
        text.contains("CA:TRUE"),
        "the documented recipe makes a CA: {text}"
    );
    let registry = Registry::start(&tmp.path().join("registry"), Some(&certs), Auth::None);
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let reference = format!("{}/selfsigned/hello:v1", registry.host());
    let ca = certs.ca();
    let run = imgbuild_env(
        &project,
        &cache,
        &["push", &reference],
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    let digest = run.digest();
    let cert_dir = tmp.path().join("skopeo-certs");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::copy(certs.ca(), cert_dir.join("ca.crt")).unwrap();
    let inspect = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--cert-dir",
            cert_dir.to_str().unwrap(),
            &format!("docker://{reference}"),
        ],
    ));
    assert_eq!(inspect["Digest"], digest.as_str());

    // From certs.d, as docker and podman read it.
    let home = tmp.path().join("home");
    let certs_d = home
        .join(".config/containers/certs.d")
        .join(registry.host());
    std::fs::create_dir_all(&certs_d).unwrap();
    std::fs::copy(certs.ca(), certs_d.join("domain.crt")).unwrap();
    let mut env: Vec<(String, String)> = toolchain_env();
    env.push(("HOME".into(), home.to_str().unwrap().into()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let pull = imgbuild_env(
        &project,
        &tmp.path().join("cache-2"),
        &["build", "--base", &reference],
        &env_refs,
    );
    pull.digest();

    // Another self-signed certificate configured: still refused, naming TLS and the fix.
    let other = Certs::self_signed_like_dockers_docs(&tmp.path().join("other"));
    let other_ca = other.ca();
    imgbuild_env(
        &project,
        &tmp.path().join("cache-3"),
        &["push", &reference],
        &[("SSL_CERT_FILE", other_ca.to_str().unwrap())],
    )
    .fails_with(&["TLS", &registry.host()]);
}

/// Issue 13 (3): a registry that accepts connections and never answers is given up on in
/// bounded time, with a line at each retry saying what is waited for and when the next try
/// comes.
#[test]
fn a_registry_that_never_answers_is_given_up_on_in_bounded_time_with_a_line_per_retry() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream); // accepted, never answered
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let reference = format!("127.0.0.1:{port}/silent/hello:v1");
    let started = std::time::Instant::now();
    let run = imgbuild(
        &project,
        &tmp.path().join("cache"),
        &[
            "push",
            &reference,
            "--registry-timeout",
            "1",
            "--registry-deadline",
            "3",
        ],
    );
    let elapsed = started.elapsed();
    run.fails_with(&[&format!("127.0.0.1:{port}"), "gave up after"]);
    let retries: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: registry ") && l.contains("GET /v2/"))
        .collect();
    assert!(!retries.is_empty(), "no retry line:\n{}", run.stderr);
    assert!(
        retries[0].contains("next try (2 of 4) in"),
        "{}",
        run.stderr
    );
    // Timeouts of 1 s and a 3 s deadline, for HTTPS then plain HTTP: well under a minute
    // (it was 486 s).
    assert!(elapsed.as_secs() < 30, "took {elapsed:?}:\n{}", run.stderr);
}
