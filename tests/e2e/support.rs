//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Copies `examples/<name>` (without its target dir) into a new folder under `parent`.
pub(crate) fn copy_example(name: &str, parent: &Path) -> PathBuf {
    let src = repo_root().join("examples").join(name);
    let dst = parent.join(name);
    copy_tree(&src, &dst);
    dst
}

pub(crate) fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        let from = entry.path();
        let to = dst.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&from, &to);
        } else {
            std::fs::copy(&from, &to).unwrap();
        }
    }
}

/// Writes a small project: `files` are (relative path, content).
pub(crate) fn project(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    dir.to_path_buf()
}

/// Runs `cargo ARGS` in `dir`, failing the test with cargo's stderr on error.
pub(crate) fn cargo(dir: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cargo generate-lockfile` (projects without dependencies need no network).
pub(crate) fn lock(dir: &Path) {
    cargo(dir, &["generate-lockfile"]);
}

/// The result of one `imgbuild` run.
pub(crate) struct Run {
    pub(crate) status: std::process::ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// Asserts success and returns the digest printed as stdout's last line.
    pub(crate) fn digest(&self) -> String {
        assert!(self.status.success(), "imgbuild failed:\n{}", self.stderr);
        let last = self.stdout.lines().last().unwrap_or_default().to_string();
        assert!(
            last.starts_with("sha256:") && last.len() == 71,
            "last stdout line is not a digest: {last:?}"
        );
        last
    }

    /// Asserts success and returns the JSON events (`--message-format json`) printed on stdout.
    pub(crate) fn events(&self) -> Vec<serde_json::Value> {
        assert!(self.status.success(), "imgbuild failed:\n{}", self.stderr);
        self.stdout.lines().map(json).collect()
    }

    /// Asserts a clean failure with exactly one `error:` line, and returns the error as printed:
    /// that line and everything after it (its `Caused by:` sections).
    pub(crate) fn the_error(&self) -> &str {
        assert!(!self.status.success(), "expected failure:\n{}", self.stderr);
        let errors = self.stderr.lines().filter(|l| l.starts_with("error:"));
        assert_eq!(errors.count(), 1, "not one `error:` line:\n{}", self.stderr);
        let start = self.stderr.find("error:").unwrap();
        &self.stderr[start..]
    }

    /// Asserts a clean failure: non-zero exit, an `error:` line containing every needle, no panic.
    pub(crate) fn fails_with(&self, needles: &[&str]) {
        assert!(
            !self.status.success(),
            "expected failure, got success:\n{}",
            self.stderr
        );
        assert_eq!(
            self.status.code(),
            Some(1),
            "exit status {:?}\n{}",
            self.status,
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "panic:\n{}", self.stderr);
        let error = self
            .stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_default();
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "missing {needle:?} in stderr:\n{}",
                self.stderr
            );
        }
        assert!(!error.is_empty(), "no `error:` line:\n{}", self.stderr);
        assert!(
            !self.stdout.contains("sha256:"),
            "a digest was printed on failure: {}",
            self.stdout
        );
    }
}

/// Variables that change colouring: removed for every run unless a test sets them.
pub(crate) const COLOR_VARS: [&str; 4] =
    ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "CARGO_TERM_COLOR"];

/// Runs `imgbuild ARGS` in `dir` with its own cache dir `cache`.
pub(crate) fn imgbuild(dir: &Path, cache: &Path, args: &[&str]) -> Run {
    imgbuild_env(dir, cache, args, &[])
}

/// `imgbuild build --message-format json --cache-repo REPO` with `extra` arguments and `env`
/// in `dir`, with the cache directory `cache`; its events.
pub(crate) fn build_through(
    dir: &Path,
    cache: &Path,
    repo: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Vec<serde_json::Value> {
    let mut args = vec!["build", "--message-format", "json", "--cache-repo", repo];
    args.extend_from_slice(extra);
    imgbuild_env(dir, cache, &args, env).events()
}

pub(crate) fn imgbuild_env(dir: &Path, cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgbuild"));
    cmd.args(args)
        .current_dir(dir)
        .env("IMGBUILD_CACHE_DIR", cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("COSIGN_PASSWORD");
    for var in COLOR_VARS {
        cmd.env_remove(var);
    }
    let out = cmd
        .envs(env.iter().copied())
        .output()
        .expect("imgbuild runs");
    let run = Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("$ imgbuild {}\n{}", args.join(" "), run.stderr);
    run
}

/// Fails loudly when a tool the test needs is missing.
pub(crate) fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .unwrap()
        .status
        .success();
    assert!(
        found,
        "{tool} is not installed: run .ci/run, or `apt-get install {tool}` (Debian package)"
    );
}

/// Runs a tool and returns its stdout, failing the test with its stderr on error.
pub(crate) fn tool(program: &str, args: &[&str]) -> String {
    require(program);
    let out: Output = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `imgbuild sbom ARGS` (issue 14): the document it prints, failing the test when it fails.
pub(crate) fn sbom(dir: &Path, cache: &Path, args: &[&str]) -> String {
    let run = imgbuild(dir, cache, &[&["sbom"][..], args].concat());
    assert!(run.status.success(), "{}", run.stderr);
    run.stdout
}

pub(crate) fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The first event with `reason`; fails the test when there is none.
pub(crate) fn event<'a>(events: &'a [serde_json::Value], reason: &str) -> &'a serde_json::Value {
    events
        .iter()
        .find(|e| e["reason"] == reason)
        .unwrap_or_else(|| panic!("no {reason} event in {events:#?}"))
}

/// The manifest digest of the `image-built` event.
pub(crate) fn image_digest(events: &[serde_json::Value]) -> String {
    event(events, "image-built")["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The dependency key of the `cache-lookup` event.
pub(crate) fn lookup_key(events: &[serde_json::Value]) -> String {
    event(events, "cache-lookup")["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Copies the `cached` fixture (serde + serde_json from crates.io) into `parent/name`.
pub(crate) fn cached_fixture(parent: &Path, name: &str) -> PathBuf {
    let dst = parent.join(name);
    copy_tree(&repo_root().join("tests/fixtures/cached"), &dst);
    dst
}

/// A name unique within this test run, for containers and tags.
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Unpacks `oci:DIR:TAG` with umoci into a runc bundle (no terminal), with `edit` applied to
/// its config.json.
pub(crate) fn bundle(
    layout: &Path,
    tag: &str,
    scratch: &Path,
    edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let bundle = scratch.join(unique("bundle"));
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{tag}", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    let path = bundle.join("config.json");
    let mut config = json(&std::fs::read_to_string(&path).unwrap());
    config["process"]["terminal"] = serde_json::Value::Bool(false);
    edit(&mut config);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    bundle
}

/// Runs a bundle with runc to completion; returns the container's stdout.
pub(crate) fn runc_output(bundle: &Path) -> String {
    require("runc");
    let id = unique("imgbuild-e2e");
    let out = Command::new("runc")
        .args(["run", "--bundle", bundle.to_str().unwrap(), &id])
        .output()
        .unwrap();
    let _ = Command::new("runc")
        .args(["delete", "--force", &id])
        .output();
    assert!(
        out.status.success(),
        "runc run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Unpacks `oci:DIR:TAG` with umoci and runs it with runc; returns the container's stdout.
pub(crate) fn run_with_runc(layout: &Path, tag: &str, scratch: &Path) -> String {
    runc_output(&bundle(layout, tag, scratch, |_| {}))
}

/// The layer digests of `oci:DIR:TAG`, read by skopeo.
pub(crate) fn layers(layout: &Path, tag: &str) -> Vec<String> {
    let inspect = json(&tool(
        "skopeo",
        &["inspect", &format!("oci:{}:{tag}", layout.display())],
    ));
    inspect["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

/// `sha256` of bytes, in hex, through the `sha256sum` tool (no hashing crate in the tests).
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Loads the `docker-archive` at `archive` into the Docker Engine, checks that it holds the
/// image `name`, runs it with `args`, removes it, and returns the container's stdout (failing
/// the test when the run fails).
pub(crate) fn docker_load_and_run(archive: &Path, name: &str, args: &[&str]) -> String {
    let loaded = tool("docker", &["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains(name), "{loaded}");
    let out = Command::new("docker")
        .args(["run", "--rm", name])
        .args(args)
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rmi", "-f", name]).output();
    assert!(
        out.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A P-256 key pair made by `openssl`: (private, public) PEM files under `dir`.
pub(crate) fn key_pair(dir: &std::path::Path, name: &str) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let p = private.to_str().unwrap();
    tool(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            p,
        ],
    );
    tool(
        "openssl",
        &[
            "pkey",
            "-in",
            p,
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    );
    (p.to_string(), public.to_str().unwrap().to_string())
}

/// The layer digests of the dependency-cache entry for `key` in `repo`, through skopeo.
pub(crate) fn entry_layers(repo: &str, key: &str) -> Vec<String> {
    let raw = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{repo}:deps-{key}"),
        ],
    ));
    raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}
