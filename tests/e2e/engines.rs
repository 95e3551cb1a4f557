//! Issue #16: images go straight into the container engines users run — the Docker Engine and
//! podman — through their API sockets, and podman's own paths (load, pull, auth file) work.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::registry_support::{Auth, Registry};
use crate::support::*;

/// The run flags podman needs on these machines (their limits are capped).
const PODMAN_RUN: [&str; 6] = [
    "run",
    "--rm",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

fn loaded(run: &Run) -> serde_json::Value {
    event(&run.events(), "loaded").clone()
}

fn docker(args: &[&str]) -> String {
    tool("docker", args)
}

/// Removes the engine's images named in `names` when the test ends, passed or not.
struct Cleanup<'a> {
    program: &'static str,
    names: Vec<String>,
    env: &'a [(&'a str, &'a str)],
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new(self.program)
                .args(["rmi", "-f", name])
                .envs(self.env.iter().copied())
                .output();
        }
    }
}

#[test]
fn docker_daemon_output_loads_into_docker_and_a_rebuild_sends_only_the_app_layer() {
    require("docker");
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let name = format!("imgbuild-e2e/{}", unique("daemon"));
    let _cleanup = Cleanup {
        program: "docker",
        names: vec![format!("{name}:t1"), format!("{name}:t2")],
        env: &[],
    };

    let first = imgbuild(
        &project,
        &cache,
        &[
            "build",
            "-o",
            &format!("docker-daemon:{name}:t1"),
            "--message-format",
            "json",
        ],
    );
    let event = loaded(&first);
    assert_eq!(
        (
            event["layers_sent"].as_u64(),
            event["layers_reused"].as_u64()
        ),
        (Some(3), Some(0))
    );
    assert!(
        event["engine"]
            .as_str()
            .unwrap()
            .starts_with("Docker Engine"),
        "{event}"
    );
    let out = docker(&["run", "--rm", &format!("{name}:t1"), "a"]);
    assert_eq!(
        out.trim(),
        r#"Hello from imgbuild, world! (uid 65532, args ["a"])"#
    );
    // The engine holds exactly the image built: its ID is the config digest.
    let id = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &format!("{name}:t1"),
    ]);
    let config = event_field(&first, "image-built", "config");
    assert_eq!(id.trim(), config);

    let main = project.join("src/main.rs");
    let source = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, source.replace("world!", "again!")).unwrap();
    let second = imgbuild(
        &project,
        &cache,
        &[
            "build",
            "-o",
            &format!("docker-daemon:{name}:t2"),
            "--message-format",
            "json",
        ],
    );
    let event = loaded(&second);
    assert_eq!(
        (
            event["layers_sent"].as_u64(),
            event["layers_reused"].as_u64()
        ),
        (Some(1), Some(2)),
        "only the app layer goes to an engine that has the rest: {event}"
    );
    let out = docker(&["run", "--rm", &format!("{name}:t2")]);
    assert_eq!(
        out.trim(),
        "Hello from imgbuild, again! (uid 65532, args [])"
    );
    let layers = |tag: &str| {
        docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            &format!("{name}:{tag}"),
        ])
    };
    let (old, new) = (json(&layers("t1")), json(&layers("t2")));
    assert_eq!(old.as_array().unwrap()[0..2], new.as_array().unwrap()[0..2]);
    assert_ne!(old[2], new[2]);
}

fn event_field(run: &Run, reason: &str, field: &str) -> String {
    event(&run.events(), reason)[field]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn docker_daemon_output_without_an_engine_fails_before_compiling() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let socket = tmp.path().join("no-engine.sock");
    let host = format!("unix://{}", socket.display());
    let run = imgbuild_env(
        &project,
        &tmp.path().join("cache"),
        &["build", "-o", "docker-daemon:hello:t1"],
        &[("DOCKER_HOST", &host)],
    );
    run.fails_with(&["no container engine answers", &host, "DOCKER_HOST"]);
    assert!(!run.stderr.contains("Compiling"), "{}", run.stderr);
    assert!(!project.join("target/release/hello").exists());

    let run = imgbuild_env(
        &project,
        &tmp.path().join("cache"),
        &["build", "-o", "docker-daemon:hello:t1"],
        &[("DOCKER_HOST", "ssh://me@example.com")],
    );
    run.fails_with(&["DOCKER_HOST is not usable", "unix://"]);
}

/// `podman system service` on a private socket, stopped when dropped.
struct PodmanService {
    child: Child,
    socket: PathBuf,
}

impl PodmanService {
    fn start(dir: &Path) -> Self {
        require("podman");
        let socket = dir.join("podman.sock");
        let child = Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "podman system service did not create {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, socket }
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn podman_run(image: &str) -> String {
    let mut args = PODMAN_RUN.to_vec();
    args.push(image);
    tool("podman", &args)
}

#[test]
fn podman_takes_images_through_its_socket_its_load_and_a_registry_with_its_auth_file() {
    let tmp = tempfile::tempdir().unwrap();
    let service = PodmanService::start(tmp.path());
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let name = unique("podman");
    let (user, password) = ("podder", "pod-secret-42");
    let registry = Registry::start(
        &tmp.path().join("registry"),
        None,
        Auth::Basic {
            user: user.into(),
            password: password.into(),
        },
    );
    let pushed = format!("{}/pod/{name}:v1", registry.host());
    let _cleanup = Cleanup {
        program: "podman",
        names: vec![
            format!("localhost/{name}:socket"),
            format!("localhost/{name}:archive"),
            pushed.clone(),
        ],
        env: &[],
    };

    // Through podman's Docker-compatible API socket.
    let host = service.docker_host();
    let run = imgbuild_env(
        &project,
        &cache,
        &[
            "build",
            "-o",
            &format!("docker-daemon:{name}:socket"),
            "--message-format",
            "json",
        ],
        &[("DOCKER_HOST", &host)],
    );
    let event = loaded(&run);
    assert!(
        event["engine"]
            .as_str()
            .unwrap()
            .starts_with("Podman Engine"),
        "{event}"
    );
    assert_eq!(event["layers_sent"].as_u64(), Some(3));
    let out = podman_run(&format!("localhost/{name}:socket"));
    assert_eq!(
        out.trim(),
        "Hello from imgbuild, world! (uid 65532, args [])"
    );

    // `podman load` of a docker-archive.
    let archive = tmp.path().join("hello.tar");
    imgbuild(
        &project,
        &cache,
        &[
            "build",
            "-o",
            &format!("docker-archive:{}:{name}:archive", archive.display()),
        ],
    )
    .digest();
    let loaded = tool("podman", &["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains(&format!("{name}:archive")), "{loaded}");
    let out = podman_run(&format!("localhost/{name}:archive"));
    assert!(out.contains("Hello from imgbuild"), "{out}");

    // A push with credentials from podman's auth file, then podman pulls and runs it.
    let auth_file = tmp.path().join("auth.json");
    tool(
        "podman",
        &[
            "login",
            "--tls-verify=false",
            "--authfile",
            auth_file.to_str().unwrap(),
            "-u",
            user,
            "-p",
            password,
            &registry.host(),
        ],
    );
    let empty_docker_config = tmp.path().join("docker-config");
    std::fs::create_dir_all(&empty_docker_config).unwrap();
    let run = imgbuild_env(
        &project,
        &cache,
        &["push", &pushed, "--message-format", "json"],
        &[
            ("REGISTRY_AUTH_FILE", auth_file.to_str().unwrap()),
            ("DOCKER_CONFIG", empty_docker_config.to_str().unwrap()),
        ],
    );
    let digest = image_digest(&run.events());
    assert!(!run.stderr.contains(password));
    tool(
        "podman",
        &[
            "pull",
            "--tls-verify=false",
            "--authfile",
            auth_file.to_str().unwrap(),
            &pushed,
        ],
    );
    let out = podman_run(&pushed);
    assert!(out.contains("Hello from imgbuild"), "{out}");
    // The same image (one ID) was loaded before, so podman lists the pushed manifest among
    // its repository digests.
    let repo_digests = tool(
        "podman",
        &[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &pushed,
        ],
    );
    let repository = pushed.rsplit_once(':').unwrap().0;
    assert!(
        repo_digests.contains(&format!("{repository}@{digest}")),
        "{repo_digests}"
    );
}
