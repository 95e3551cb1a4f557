//! Issue #14: supply chain by default — SBOMs (SPDX, CycloneDX) checked by their projects' own
//! validators, provenance, OCI referrers in layouts and on `docker-registry` (tag schema), the
//! dependency list embedded for scanners (read back with cargo-auditable's reader crate), and
//! debug info split off and read back by gdb.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::registry_support::{Auth, Registry};
use crate::support::*;

/// A Python environment with the reference validators (PyPI: `spdx-tools`, the SPDX
/// project's; `cyclonedx-python-lib`, CycloneDX's), made once per test run.
fn validators() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sbom-validators");
        let python = venv.join("bin/python");
        let ready = venv.join(".ready");
        if !ready.exists() {
            require("python3");
            let made = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .output()
                .unwrap();
            assert!(
                made.status.success(),
                "python3 -m venv failed (install Debian's python3-venv; .ci/run does):\n{}",
                String::from_utf8_lossy(&made.stderr)
            );
            let pip = Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "spdx-tools==0.8.5",
                    "cyclonedx-python-lib[json-validation]==11.12.0",
                ])
                .output()
                .unwrap();
            assert!(
                pip.status.success(),
                "installing the SBOM validators from PyPI failed:\n{}",
                String::from_utf8_lossy(&pip.stderr)
            );
            std::fs::write(&ready, "").unwrap();
        }
        venv
    })
}

/// Runs a validator of the virtualenv on `doc`; fails the test with its output when it
/// rejects the document.
fn validate(program: &str, args: &[&str], doc: &Path, what: &str) {
    let out = Command::new(validators().join("bin").join(program))
        .args(args)
        .arg(doc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what} rejects {}:\n{}{}",
        doc.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Validates an SPDX JSON document with `pyspdxtools -i`.
fn validate_spdx(doc: &Path) {
    validate("pyspdxtools", &["-i"], doc, "pyspdxtools");
}

/// Validates a CycloneDX JSON document against the 1.6 schema with the library's strict
/// validator.
fn validate_cyclonedx(doc: &Path) {
    let script = "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\nerr = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\nif err is not None:\n    print(err)\n    sys.exit(1)\n";
    validate("python", &["-c", script], doc, "the CycloneDX validator");
}

/// The `pkg:cargo/NAME@VERSION` purls of `plan`'s key lines (`package …`), and the names of
/// the workspace members it lists (`member NAME features=…`).
fn key_packages(project: &Path, cache: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let plan = imgbuild(project, cache, &["plan", "--message-format", "json"]);
    assert!(plan.status.success(), "{}", plan.stderr);
    let line = plan.stdout.lines().next().unwrap();
    let inputs = json(line)["inputs"].as_array().unwrap().clone();
    let mut packages = BTreeSet::new();
    let mut members = BTreeSet::new();
    for l in inputs.iter().map(|l| l.as_str().unwrap()) {
        let words: Vec<&str> = l.split(' ').collect();
        match words.as_slice() {
            ["package", name, version, ..] => {
                packages.insert(format!("pkg:cargo/{name}@{version}"));
            }
            ["member", name, f, ..] if f.starts_with("features=") => {
                members.insert(name.to_string());
            }
            _ => {}
        }
    }
    (packages, members)
}

/// The `pkg:cargo` purls of an SPDX document's packages, in document order.
fn spdx_cargo_purls(doc: &serde_json::Value) -> Vec<String> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["externalRefs"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["referenceLocator"].as_str().map(String::from))
        .filter(|l| l.starts_with("pkg:cargo/"))
        .collect()
}

/// Splits an SBOM's cargo purls into those of `members` (by name) and the rest.
fn split_purls(
    purls: &[String],
    members: &BTreeSet<String>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let (member, other): (Vec<&String>, Vec<&String>) = purls.iter().partition(|p| {
        let name = p
            .trim_start_matches("pkg:cargo/")
            .split('@')
            .next()
            .unwrap();
        members.contains(name)
    });
    let names = member
        .iter()
        .map(|p| {
            p.trim_start_matches("pkg:cargo/")
                .split('@')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    (names, other.into_iter().cloned().collect())
}

#[test]
fn the_axum_services_sboms_validate_and_list_exactly_the_packages_of_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("axum-service", tmp.path());
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    let oci = format!("oci:{}", out.display());
    imgbuild(&project, &cache, &["build", "-o", &format!("{oci}:spdx")]).digest();
    let spdx = tmp.path().join("sbom.spdx.json");
    std::fs::write(&spdx, sbom(&project, &cache, &[&format!("{oci}:spdx")])).unwrap();
    validate_spdx(&spdx);

    // The same image with a CycloneDX SBOM: only the SBOM changes (the app is not compiled
    // again: cargo finds it fresh).
    let cdx_run = imgbuild(
        &project,
        &cache,
        &["build", "--sbom", "cyclonedx", "-o", &format!("{oci}:cdx")],
    );
    cdx_run.digest();
    let cdx = tmp.path().join("sbom.cdx.json");
    let text = sbom(
        &project,
        &cache,
        &["--format", "cyclonedx", &format!("{oci}:cdx")],
    );
    std::fs::write(&cdx, text).unwrap();
    validate_cyclonedx(&cdx);

    let (key, members) = key_packages(&project, &cache);
    assert!(key.len() > 40, "axum's tree has dozens of crates: {key:?}");
    let spdx_doc = json(&std::fs::read_to_string(&spdx).unwrap());
    let spdx_purls: Vec<String> = spdx_cargo_purls(&spdx_doc);
    let cdx_doc = json(&std::fs::read_to_string(&cdx).unwrap());
    let cdx_purls: Vec<String> = cdx_doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["purl"].as_str().map(String::from))
        .filter(|p| p.starts_with("pkg:cargo/"))
        .collect();
    for (format, purls) in [("SPDX", &spdx_purls), ("CycloneDX", &cdx_purls)] {
        let (member_names, packages) = split_purls(purls, &members);
        assert_eq!(packages, key, "{format}: the crates of the dependency key");
        assert_eq!(member_names, members, "{format}: the workspace members");
        assert_eq!(
            purls.len(),
            key.len() + members.len(),
            "{format}: each once"
        );
    }
    // The closure's libraries are there with their Debian packages.
    let libc = spdx_doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "libc.so.6")
        .expect("libc in the SPDX SBOM");
    let locator = libc["externalRefs"][0]["referenceLocator"]
        .as_str()
        .unwrap();
    assert!(locator.starts_with("pkg:deb/debian/libc6@"), "{locator}");
}

/// `git init` and one commit in `dir`; returns the revision.
fn git_commit(dir: &Path) -> String {
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=ci",
            "-c",
            "user.email=ci@example.com",
            "commit",
            "-qm",
            "initial",
        ],
    ] {
        tool("git", &[&["-C", dir.to_str().unwrap()][..], args].concat());
    }
    tool("git", &["-C", dir.to_str().unwrap(), "rev-parse", "HEAD"])
        .trim()
        .to_string()
}

/// The untagged index entries of a layout whose manifest names `subject`, by artifact type.
fn layout_referrers(layout: &Path, subject: &str) -> Vec<(String, String)> {
    let index = json(&std::fs::read_to_string(layout.join("index.json")).unwrap());
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["annotations"]["org.opencontainers.image.ref.name"].is_null())
        .filter_map(|d| {
            let digest = d["digest"].as_str().unwrap();
            let manifest = json(&blob(layout, digest));
            (manifest["subject"]["digest"] == subject).then(|| {
                (
                    d["artifactType"].as_str().unwrap().to_string(),
                    digest.to_string(),
                )
            })
        })
        .collect()
}

fn blob(layout: &Path, digest: &str) -> String {
    std::fs::read_to_string(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

/// The document (the one layer) of the referrer manifest `digest` in `layout`.
fn document(layout: &Path, digest: &str) -> serde_json::Value {
    let manifest = json(&blob(layout, digest));
    json(&blob(
        layout,
        manifest["layers"][0]["digest"].as_str().unwrap(),
    ))
}

#[test]
fn sbom_and_provenance_are_referrers_in_the_layout_and_on_the_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("with-deps", tmp.path());
    let revision = git_commit(&project);
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let remote = format!("{}/supply/report:v1", registry.host());
    let run = imgbuild(
        &project,
        &cache,
        &[
            "push",
            &remote,
            "-o",
            &format!("oci:{}:v1", out.display()),
            "--message-format",
            "json",
        ],
    );
    let image = image_digest(&run.events());

    // The image's blobs and its referrers' went up in one go, each blob once (SBOM and
    // provenance share their empty config); the `pushed` event counts the image's own.
    let image_manifest = json(&blob(&out, &image));
    let own = 1 + image_manifest["layers"].as_array().unwrap().len();
    let p = event(&run.events(), "pushed").clone();
    assert_eq!(p["uploaded"], own, "the image's config and layers: {p}");
    let uploads = registry.uploaded_digests();
    let distinct: BTreeSet<&String> = uploads.iter().collect();
    assert_eq!(
        distinct.len(),
        uploads.len(),
        "a blob uploaded twice: {uploads:?}"
    );
    assert!(uploads.len() > own, "the referrers' blobs too: {uploads:?}");

    // The layout: the image tagged, SBOM and provenance listed untagged with it as subject.
    let referrers = layout_referrers(&out, &image);
    let types: BTreeSet<&str> = referrers.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        BTreeSet::from(["application/spdx+json", "application/vnd.in-toto+json"])
    );
    let of = |t: &str| referrers.iter().find(|(a, _)| a == t).unwrap().1.clone();
    let provenance = document(&out, &of("application/vnd.in-toto+json"));
    assert_eq!(
        provenance["subject"][0]["digest"]["sha256"],
        image.trim_start_matches("sha256:")
    );
    let deps = provenance["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    assert!(
        deps.iter().any(|d| d["digest"]["gitCommit"] == revision),
        "the git revision: {deps:?}"
    );
    let lock = std::fs::read(project.join("Cargo.lock")).unwrap();
    assert!(
        deps.iter()
            .any(|d| d["name"] == "Cargo.lock" && d["digest"]["sha256"] == sha256_hex(&lock)),
        "Cargo.lock's digest: {deps:?}"
    );
    assert_eq!(
        provenance["predicate"]["buildDefinition"]["internalParameters"]["network"],
        "isolated"
    );

    // skopeo copies the image and leaves the referrers alone.
    let copy = tmp.path().join("copy");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:v1", out.display()),
            &format!("oci:{}:v1", copy.display()),
        ],
    );
    let copied = json(&std::fs::read_to_string(copy.join("index.json")).unwrap());
    assert_eq!(copied["manifests"].as_array().unwrap().len(), 1);

    // The registry (distribution 2.8, no referrers API): the tag schema's index.
    let tag = format!("sha256-{}", image.trim_start_matches("sha256:"));
    let listed = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/supply/report:{tag}", registry.host()),
        ],
    ));
    let listed: BTreeSet<&str> = listed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["artifactType"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from(["application/spdx+json", "application/vnd.in-toto+json"])
    );
    let spdx = document(&out, &of("application/spdx+json"));
    assert_eq!(json(&sbom(&project, &cache, &[&remote])), spdx);
    // And from the local store, by the image's name.
    assert_eq!(json(&sbom(&project, &cache, &["report:v0.2.0"])), spdx);

    // The binary carries its dependency list: cargo-auditable's reader finds the same crates.
    let bundle = bundle(&out, "v1", tmp.path(), |_| {});
    let audit = auditable_info::audit_info_from_file(
        &bundle.join("rootfs/app/with-deps"),
        Default::default(),
    )
    .expect("a .dep-v0 section");
    let audited: BTreeSet<String> = audit
        .packages
        .iter()
        .map(|p| format!("pkg:cargo/{}@{}", p.name, p.version))
        .collect();
    let listed: BTreeSet<String> = spdx_cargo_purls(&spdx).into_iter().collect();
    assert_eq!(audited, listed);
    let root = audit.packages.iter().find(|p| p.root).unwrap();
    assert_eq!(root.name, "with-deps");
    let derive = audit
        .packages
        .iter()
        .find(|p| p.name == "serde_derive")
        .unwrap();
    assert_eq!(
        derive.kind,
        auditable_serde::DependencyKind::Build,
        "a proc macro only runs at build time"
    );
    assert!(runc_output(&bundle).contains("built by imgbuild"));

    // Deterministic: the same command with a fresh cache gives the same image and the same
    // documents (the provenance names the outputs, so they are the same paths).
    let first_out = tmp.path().join("first");
    std::fs::rename(&out, &first_out).unwrap();
    imgbuild(
        &project,
        &tmp.path().join("cache2"),
        &["push", &remote, "-o", &format!("oci:{}:v1", out.display())],
    )
    .digest();
    let mut first = layout_referrers(&first_out, &image);
    let mut second = layout_referrers(&out, &image);
    first.sort();
    second.sort();
    assert_eq!(first, second);

    // Another destination, another provenance: the tag schema's index is merged, not
    // replaced (the SBOM and the first provenance stay listed).
    let elsewhere = tmp.path().join("elsewhere");
    imgbuild(
        &project,
        &cache,
        &[
            "push",
            &remote,
            "-o",
            &format!("oci:{}:v1", elsewhere.display()),
        ],
    )
    .digest();
    let merged = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/supply/report:{tag}", registry.host()),
        ],
    ));
    let merged: BTreeSet<String> = merged["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(merged.len(), 3, "{merged:?}");
    assert!(merged.contains(&of("application/spdx+json")));
    assert!(merged.contains(&of("application/vnd.in-toto+json")));
}

/// The app layer's compressed size in `oci:DIR:TAG`.
fn app_layer_size(layout: &Path, tag: &str) -> u64 {
    let index = json(&std::fs::read_to_string(layout.join("index.json")).unwrap());
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()
        .clone();
    let manifest = json(&blob(layout, desc["digest"].as_str().unwrap()));
    manifest["layers"].as_array().unwrap().last().unwrap()["size"]
        .as_u64()
        .unwrap()
}

fn gdb_info_line(binary: &Path, debug_dir: Option<&Path>) -> String {
    require("gdb");
    let mut cmd = Command::new("gdb");
    cmd.arg("-batch").arg("-nx");
    if let Some(dir) = debug_dir {
        cmd.arg("-iex")
            .arg(format!("set debug-file-directory {}", dir.display()));
    }
    let out = cmd
        .args(["-ex", "info line with_deps::main"])
        .arg(binary)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn debug_info_is_split_off_and_gdb_reads_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("with-deps", tmp.path());
    let manifest = project.join("Cargo.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("\n[profile.release]\ndebug = 1\n");
    std::fs::write(&manifest, text).unwrap();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    let oci = |tag: &str| format!("oci:{}:{tag}", out.display());
    imgbuild(&project, &cache, &["build", "-o", &oci("split")]).digest();
    imgbuild(
        &project,
        &cache,
        &[
            "build",
            "--keep-debuginfo",
            "--no-audit-data",
            "--sbom",
            "none",
            "--no-provenance",
            "-o",
            &oci("kept"),
        ],
    )
    .digest();
    let (split, kept) = (app_layer_size(&out, "split"), app_layer_size(&out, "kept"));
    eprintln!("app layer with debug = 1: {kept} bytes with its debug info, {split} bytes without");
    assert!(split * 2 < kept, "split {split} vs kept {kept}");

    let debug_dir = tmp.path().join("debug");
    let fetched = imgbuild(
        &project,
        &cache,
        &[
            "debuginfo",
            &oci("split"),
            "-o",
            debug_dir.to_str().unwrap(),
        ],
    );
    assert!(fetched.status.success(), "{}", fetched.stderr);
    let path = PathBuf::from(fetched.stdout.trim());
    assert!(path.starts_with(debug_dir.join(".build-id")), "{path:?}");
    assert!(path.to_string_lossy().ends_with(".debug"));

    let split_bundle = bundle(&out, "split", tmp.path(), |_| {});
    let binary = split_bundle.join("rootfs/app/with-deps");
    let with = gdb_info_line(&binary, Some(&debug_dir));
    assert!(
        with.contains("Line ") && with.contains("src/main.rs"),
        "gdb resolves a source line with the fetched debug file:\n{with}"
    );
    let without = gdb_info_line(&binary, None);
    assert!(
        !without.contains("src/main.rs"),
        "no line info without it:\n{without}"
    );
    // The stripped binary still runs.
    assert!(runc_output(&split_bundle).contains("built by imgbuild"));

    // Kept: no referrers at all, no audit section; debug info in the binary itself.
    let index = json(&std::fs::read_to_string(out.join("index.json")).unwrap());
    let kept_digest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == "kept")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(layout_referrers(&out, &kept_digest).is_empty());
    let kept_bundle = bundle(&out, "kept", tmp.path(), |_| {});
    let kept_binary = kept_bundle.join("rootfs/app/with-deps");
    assert!(auditable_info::audit_info_from_file(&kept_binary, Default::default()).is_err());
    assert!(gdb_info_line(&kept_binary, None).contains("src/main.rs"));
    let missing = imgbuild(&project, &cache, &["debuginfo", &oci("kept"), "-o", "x"]);
    missing.fails_with(&["has no debug info attached"]);
}
