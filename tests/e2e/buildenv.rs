//! Issue 12: builds inside a build-environment image pinned by digest. The environment is made
//! the way a user's CI would get one (`tests/fixtures/build-env/make.sh`: mmdebstrap of
//! bookworm with a C toolchain, plus this machine's Rust toolchain laid out like the `rust:*`
//! images), once per test run, and reused by later runs from `CARGO_TARGET_TMPDIR` while the
//! script and the toolchain are unchanged.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::registry_support::*;
use crate::support::*;

/// The environment image: an OCI layout with the tag `latest`.
struct EnvImage {
    layout: PathBuf,
    digest: String,
}

impl EnvImage {
    fn oci(&self) -> String {
        format!("oci:{}:latest", self.layout.display())
    }
}

/// A directory under `CARGO_TARGET_TMPDIR` named by what makes it: made by `make` into a
/// staging directory, then renamed, so an interrupted run never leaves a usable-looking one.
fn fixture_dir(name: &str, inputs: &[&[u8]], make: impl FnOnce(&Path)) -> PathBuf {
    let key = sha256_hex(&inputs.concat());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", &key[..16]));
    if !dir.exists() {
        let staging = dir.with_extension(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        make(&staging);
        std::fs::rename(&staging, &dir).unwrap();
    }
    dir
}

fn make_script() -> PathBuf {
    repo_root().join("tests/fixtures/build-env/make.sh")
}

fn environment() -> &'static EnvImage {
    static ENV: OnceLock<EnvImage> = OnceLock::new();
    ENV.get_or_init(|| {
        require("mmdebstrap");
        let script = std::fs::read(make_script()).unwrap();
        let rustc = tool("rustc", &["-vV"]);
        let dir = fixture_dir("build-env", &[&script, rustc.as_bytes()], |out| {
            let digest = tool(
                "bash",
                &[
                    make_script().to_str().unwrap(),
                    out.to_str().unwrap(),
                    "libsqlite3-dev",
                ],
            );
            std::fs::write(out.join("digest"), digest.trim()).unwrap();
        });
        EnvImage {
            digest: std::fs::read_to_string(dir.join("digest")).unwrap(),
            layout: dir,
        }
    })
}

/// Another machine: a different Debian root filesystem (no C compiler, no Rust toolchain),
/// with bubblewrap to enter the environment and ca-certificates.
fn other_machine() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        require("mmdebstrap");
        let script = std::fs::read(make_script()).unwrap();
        fixture_dir(
            "other-machine",
            &[&script, b"bubblewrap,ca-certificates"],
            |out| {
                tool(
                    "bash",
                    &[
                        make_script().to_str().unwrap(),
                        "--rootfs",
                        out.to_str().unwrap(),
                        "bubblewrap,ca-certificates",
                    ],
                );
            },
        )
    })
}

fn annotation(layout: &Path, tag: &str, name: &str) -> serde_json::Value {
    let raw = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:{tag}", layout.display()),
        ],
    ));
    raw["annotations"][name].clone()
}

#[test]
fn examples_build_inside_the_environment_and_never_share_entries_with_host_builds() {
    require("bwrap");
    let env = environment();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let project = copy_example("with-deps", tmp.path());

    // A host build first: its dependency entry must not serve the environment build.
    let host = imgbuild(&project, &cache, &["build", "--message-format", "json"]).events();
    let host_key = lookup_key(&host);

    let out = tmp.path().join("oci");
    let args = [
        "build",
        "--build-env",
        &env.oci(),
        "-o",
        &format!("oci:{}", out.display()),
        "--message-format",
        "json",
    ];
    let events = imgbuild(&project, &cache, &args).events();
    let resolved = event(&events, "build-env-resolved");
    assert_eq!(resolved["digest"], env.digest.as_str());
    let lookup = event(&events, "cache-lookup");
    assert_ne!(lookup["key"], host_key.as_str());
    assert_eq!(lookup["hit"], false);
    assert!(
        lookup.get("nearest").is_none(),
        "a host entry is never the nearest entry of an environment build: {lookup}"
    );
    assert_eq!(
        event(&events, "isolation")["method"],
        "bubblewrap",
        "{events:#?}"
    );
    assert_eq!(
        annotation(&out, "v0.2.0", "dev.imgbuild.build-env.digest"),
        env.digest.as_str()
    );
    let report = json(&run_with_runc(&out, "v0.2.0", tmp.path()));
    assert_eq!(report["title"], "built by imgbuild");

    // Issue 14: the SBOM and the provenance name the environment by digest, and the
    // libraries' Debian packages come from the environment's dpkg database.
    let sbom = json(&sbom(
        &project,
        &cache,
        &[&format!("oci:{}:v0.2.0", out.display())],
    ));
    let packages = sbom["packages"].as_array().unwrap();
    let hex = env.digest.trim_start_matches("sha256:");
    assert!(
        packages
            .iter()
            .any(|p| p["SPDXID"] == "SPDXRef-BuildEnvironment"
                && p["checksums"][0]["checksumValue"] == hex),
        "{sbom:#}"
    );
    let libc = packages.iter().find(|p| p["name"] == "libc.so.6").unwrap();
    assert!(
        libc["externalRefs"][0]["referenceLocator"]
            .as_str()
            .unwrap()
            .starts_with("pkg:deb/debian/libc6@"),
        "{libc:#}"
    );
    let index = json(&std::fs::read_to_string(out.join("index.json")).unwrap());
    let provenance = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["artifactType"] == "application/vnd.in-toto+json")
        .expect("a provenance referrer");
    let blob = |digest: &str| {
        json(
            &std::fs::read_to_string(
                out.join("blobs/sha256")
                    .join(digest.trim_start_matches("sha256:")),
            )
            .unwrap(),
        )
    };
    let manifest = blob(provenance["digest"].as_str().unwrap());
    let statement = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    let deps = &statement["predicate"]["buildDefinition"]["resolvedDependencies"];
    assert!(
        deps.as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "build-environment" && d["digest"]["sha256"] == hex),
        "{deps:#}"
    );

    // `plan` names the environment's digest in the key, and the key is the build's.
    let plan = imgbuild(&project, &cache, &["plan", "--build-env", &env.oci()]);
    assert!(plan.status.success(), "{}", plan.stderr);
    let text = format!("{}{}", plan.stdout, plan.stderr);
    assert!(
        text.contains(&format!("build-env {}", env.digest)),
        "{text}"
    );
    assert!(text.contains(lookup["key"].as_str().unwrap()), "{text}");
    assert!(
        !text.contains("machine cc"),
        "the environment's digest stands for the machine lines: {text}"
    );
}

#[test]
fn the_sqlite_example_links_the_environments_library_and_runs_in_docker() {
    require("bwrap");
    let env = environment();
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("sqlite", tmp.path());
    // Configured in the package's metadata table this time.
    let manifest = project.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        "[package.metadata.imgbuild]\n",
        &format!(
            "[package.metadata.imgbuild]\nbuild-env = \"{}\"\n",
            env.oci()
        ),
    );
    assert!(text.contains("build-env = "), "{text}");
    std::fs::write(&manifest, text).unwrap();
    let archive = tmp.path().join("sqlite.tar");
    let name = format!("imgbuild-e2e/{}:env", unique("sqlite"));
    let run = imgbuild(
        &project,
        &tmp.path().join("cache"),
        &[
            "build",
            "-o",
            &format!("docker-archive:{}:{name}", archive.display()),
            "--message-format",
            "json",
        ],
    );
    let events = run.events();
    assert_eq!(
        event(&events, "build-env-resolved")["digest"],
        env.digest.as_str()
    );
    // libsqlite3 comes from the environment's root filesystem.
    let libraries = events
        .iter()
        .find(|e| e["reason"] == "layer" && e["role"] == "libraries")
        .unwrap_or_else(|| panic!("no libraries layer: {events:#?}"));
    assert!(libraries["entries"].as_u64().unwrap() >= 4, "{libraries}");
    let stdout = docker_load_and_run(&archive, &name, &[]);
    assert!(
        stdout.starts_with("sqlite 3.") && stdout.contains("3 rows, 900 downloads"),
        "{stdout}"
    );
}

#[test]
fn a_registry_environment_is_pinned_by_digest_and_a_tag_is_warned_about() {
    require("bwrap");
    let env = environment();
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let tagged = format!("{}/toolchains/rust:1", registry.host());
    tool(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            "--preserve-digests",
            &env.oci(),
            &format!("docker://{tagged}"),
        ],
    );
    let pinned = format!("{}/toolchains/rust@{}", registry.host(), env.digest);
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let by_digest = imgbuild(
        &project,
        &cache,
        &["build", "--build-env", &pinned, "--message-format", "json"],
    );
    let events = by_digest.events();
    assert_eq!(
        event(&events, "build-env-resolved")["digest"],
        env.digest.as_str()
    );
    assert!(
        !events.iter().any(|e| e["reason"] == "warning"),
        "{events:#?}"
    );
    let digest = image_digest(&events);

    // By tag, from the store (no second download), the same environment and image; warned.
    let pulls = registry.requests("GET", "/v2/toolchains/rust/blobs/");
    let by_tag = imgbuild_env(
        &project,
        &cache,
        &["build", "--message-format", "json"],
        &[("IMGBUILD_BUILD_ENV", tagged.as_str())],
    );
    let events = by_tag.events();
    let warning = event(&events, "warning")["message"].as_str().unwrap();
    assert!(
        warning.contains("named by a tag") && warning.contains("@sha256:"),
        "{warning}"
    );
    assert_eq!(image_digest(&events), digest);
    assert_eq!(
        registry.requests("GET", "/v2/toolchains/rust/blobs/"),
        pulls,
        "the layers are in the store already"
    );

    // `verify` builds both copies in the environment: the same image as the build.
    let verify = imgbuild(&project, &cache, &["verify", "--build-env", &pinned]);
    assert!(verify.status.success(), "{}", verify.stderr);
    assert!(verify.stderr.contains("Environment"), "{}", verify.stderr);
    assert_eq!(
        verify.stdout.trim(),
        format!("reproducible {digest}"),
        "{}",
        verify.stderr
    );
}

/// The same environment gives the same image on two machines: this one, and imgbuild copied
/// into a different root filesystem without any Rust toolchain or C compiler.
#[test]
fn the_same_environment_gives_the_same_digest_on_another_machine() {
    require("bwrap");
    let env = environment();
    let other = other_machine();
    let tmp = tempfile::tempdir().unwrap();
    let here = copy_example("with-deps", &tmp.path().join("here"));
    let first = imgbuild(
        &here,
        &tmp.path().join("cache-here"),
        &["build", "--build-env", &env.oci()],
    )
    .digest();

    let there = copy_example("with-deps", &tmp.path().join("there"));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let cache = tmp.path().join("cache-there");
    std::fs::create_dir_all(&cache).unwrap();
    let work = tmp.path().to_str().unwrap();
    let out = Command::new("bwrap")
        .args(["--bind", other.to_str().unwrap(), "/"])
        .args(["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"])
        .args(["--bind", work, work])
        .args(["--bind", env.layout.to_str().unwrap()])
        .arg(&env.layout)
        .arg("--bind")
        .args([&cargo_home, &cargo_home])
        .arg("--ro-bind")
        .arg(env!("CARGO_BIN_EXE_imgbuild"))
        .args(["/usr/local/bin/imgbuild", "--chdir"])
        .arg(&there)
        .args([
            "--",
            "/usr/local/bin/imgbuild",
            "build",
            "--build-env",
            &env.oci(),
        ])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/tmp")
        .env("CARGO_HOME", &cargo_home)
        .env("IMGBUILD_CACHE_DIR", &cache)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "{stderr}");
    assert!(
        !other.join("usr/bin/cc").exists() && !other.join("usr/local/cargo").exists(),
        "the other machine has no toolchain of its own"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), first);
}

/// Rootless: an unprivileged user builds in the environment (downloading the dependencies
/// with the environment's cargo: the user has none) and pushes.
#[test]
fn an_unprivileged_user_builds_in_the_environment_and_pushes() {
    require("bwrap");
    let env = environment();
    if !nix_is_root() {
        panic!("this test creates a user and must run as root (CI does); run it with sudo");
    }
    let user = "imgbuild-rootless";
    let _ = Command::new("useradd")
        .args(["--create-home", "--shell", "/bin/sh", user])
        .output();
    let uid: u32 = tool("id", &["-u", user]).trim().parse().unwrap();
    let gid: u32 = tool("id", &["-g", user]).trim().parse().unwrap();
    let home = tool(
        "sh",
        &["-c", &format!("getent passwd {user} | cut -d: -f6")],
    );
    let home = home.trim();

    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let project = copy_example("with-deps", &tmp.path().join("src"));
    tool(
        "chown",
        &[
            "-R",
            &format!("{uid}:{gid}"),
            tmp.path().join("src").to_str().unwrap(),
        ],
    );
    tool("chmod", &["755", tmp.path().to_str().unwrap()]);
    let target = format!("{}/rootless/with-deps:v1", registry.host());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgbuild"));
    cmd.args(["push", &target, "--build-env", &env.oci()])
        .current_dir(&project)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("CARGO_HOME", format!("{home}/cargo-{}", unique("home")))
        .env("IMGBUILD_CACHE_DIR", format!("{home}/cache"))
        .uid(uid)
        .gid(gid);
    for var in [
        "SSL_CERT_FILE",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "{stderr}");
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let inspect = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{target}"),
        ],
    ));
    assert_eq!(inspect["Digest"], digest.as_str());
}

fn nix_is_root() -> bool {
    tool("id", &["-u"]).trim() == "0"
}

/// A one-layer layout holding `tar` (uncompressed) with `env` in its config; returns the
/// layout directory.
fn small_layout(dir: &Path, tar: &[u8], env: &[&str]) -> PathBuf {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |bytes: &[u8]| {
        let hex = sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (layer, layer_size) = put(tar);
    let config = serde_json::json!({
        "architecture": oci_arch(), "os": "linux",
        "config": {"Env": env},
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    });
    let (config, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
    });
    let (manifest, manifest_size) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest, "size": manifest_size,
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    dir.to_path_buf()
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// One ustar entry: a regular file (`b'0'`) or a directory (`b'5'`).
fn tar_entry(name: &str, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], value: u64| {
        let text = format!("{value:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    };
    octal(
        &mut header[100..108],
        if kind == b'5' { 0o755 } else { 0o644 },
    );
    octal(&mut header[108..116], 0);
    octal(&mut header[116..124], 0);
    octal(&mut header[124..136], body.len() as u64);
    octal(&mut header[136..148], 0);
    header[156] = kind;
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].fill(b' ');
    let sum: u64 = header.iter().map(|b| u64::from(*b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut entry = header.to_vec();
    entry.extend_from_slice(body);
    entry.resize(entry.len().div_ceil(512) * 512, 0);
    entry
}

fn tar(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = entries.concat();
    bytes.extend_from_slice(&[0u8; 1024]);
    bytes
}

/// The build environments unpacked in `cache` (hidden staging directories included).
fn unpacked(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache.join("build-envs"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn bad_environments_are_clear_errors_and_nothing_half_unpacked_is_kept() {
    require("bwrap");
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let path_env = "PATH=/usr/local/cargo/bin:/usr/bin:/bin";

    // No cargo on its PATH.
    let no_cargo = small_layout(
        &tmp.path().join("no-cargo"),
        &tar(&[
            tar_entry("etc/", b'5', b""),
            tar_entry("etc/hostname", b'0', b"env\n"),
        ]),
        &[path_env],
    );
    let reference = format!("oci:{}:latest", no_cargo.display());
    imgbuild(&project, &cache, &["build", "--build-env", &reference]).fails_with(&[
        &reference,
        "has no `cargo` on its PATH",
        "/usr/local/cargo/bin",
    ]);

    // A layer that climbs out of its directory.
    let escape = small_layout(
        &tmp.path().join("escape"),
        &tar(&[
            tar_entry("usr/", b'5', b""),
            tar_entry("usr/../../escaped", b'0', b"out\n"),
        ]),
        &[path_env],
    );
    let reference = format!("oci:{}:latest", escape.display());
    imgbuild(&project, &cache, &["build", "--build-env", &reference])
        .fails_with(&[&reference, "escaped"]);
    assert!(!cache.join("escaped").exists() && !cache.join("build-envs/escaped").exists());
    assert!(!tmp.path().join("escaped").exists());

    // A corrupt layer blob.
    let corrupt = small_layout(
        &tmp.path().join("corrupt"),
        &tar(&[tar_entry("etc/", b'5', b"")]),
        &[path_env],
    );
    let manifest = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:latest", corrupt.display()),
        ],
    ));
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let blob = corrupt.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let reference = format!("oci:{}:latest", corrupt.display());
    imgbuild(&project, &cache, &["build", "--build-env", &reference])
        .fails_with(&[&reference, &layer[7..19]]);

    // Only the environment without cargo was unpacked whole; nothing is staged.
    let kept = unpacked(&cache);
    assert!(kept.len() <= 1, "{kept:?}");
    assert!(kept.iter().all(|n| !n.starts_with('.')), "{kept:?}");

    // Neither in the store nor a valid reference.
    imgbuild(&project, &cache, &["build", "--build-env", "no such image"]).fails_with(&[
        "no such image",
        "neither an image in the local store nor a valid reference",
    ]);
    // An oci: layout that does not exist.
    let missing = format!("oci:{}:latest", tmp.path().join("nowhere").display());
    imgbuild(&project, &cache, &["build", "--build-env", &missing]).fails_with(&[&missing]);

    // No bubblewrap: never a fallback to the host's toolchain.
    let env = environment();
    let bin = tmp.path().join("bin-without-bwrap");
    std::fs::create_dir_all(&bin).unwrap();
    for t in ["git"] {
        if let Ok(p) = which(t) {
            std::os::unix::fs::symlink(p, bin.join(t)).unwrap();
        }
    }
    imgbuild_env(
        &project,
        &cache,
        &["build", "--build-env", &env.oci()],
        &[("PATH", bin.to_str().unwrap())],
    )
    .fails_with(&[
        "bubblewrap (bwrap) is not installed",
        "apt-get install bubblewrap",
    ]);
}

fn which(program: &str) -> Result<PathBuf, ()> {
    let out = tool("sh", &["-c", &format!("command -v {program} || true")]);
    let p = out.trim();
    if p.is_empty() {
        Err(())
    } else {
        Ok(PathBuf::from(p))
    }
}
