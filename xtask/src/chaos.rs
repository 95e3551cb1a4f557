//! `cargo xtask chaos [--kills N] [--seed S] [--imgbuild PATH]`: faults injected into real
//! imgbuild runs on one shared store, each followed by the check that nothing was lost.
//!
//! - **Kills**: N times (default 100) an operation — a build that compiles and saves a new
//!   dependency entry, a restore into a fresh checkout, a push, a pull from the cache
//!   repository, a prune — is started and its whole process group SIGKILLed at a random
//!   moment of its uninterrupted duration. Then a build must give the uninterrupted digest and
//!   `imgbuild cache check` must find nothing wrong (no damaged blob, no leftover).
//! - **Network**: pushes and pulls through a proxy that drops 10% of connections, stalls 5%
//!   and cuts 5% of responses midway; every completed push is read back by skopeo from the
//!   registry itself, every pull must give the uninterrupted digest.
//! - **Concurrency**: rounds of four at a time (a build, a restore, a push and a prune) on the
//!   one store, then the same checks.
//!
//! Prints a table (faults injected, operations completed, data lost) and exits non-zero on
//! any loss. Not part of CI's time budget; the e2e tests run a short version of each fault.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::registry::LocalRegistry;

mod proxy;

/// xorshift64*: small, deterministic from its seed (printed, so a run can be repeated).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The operations that are killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Build,
    Restore,
    Push,
    Pull,
    Prune,
}

impl Op {
    const ALL: [Op; 5] = [Op::Build, Op::Restore, Op::Push, Op::Pull, Op::Prune];

    fn name(self) -> &'static str {
        match self {
            Op::Build => "build (compile + save entry)",
            Op::Restore => "restore (fresh checkout)",
            Op::Push => "push",
            Op::Pull => "pull (cache repository)",
            Op::Prune => "prune --all",
        }
    }
}

/// One line of the table.
#[derive(Default)]
struct Tally {
    injected: usize,
    completed: usize,
    failed: usize,
    lost: usize,
}

struct Harness {
    img: PathBuf,
    work: PathBuf,
    project: PathBuf,
    cache: PathBuf,
    registry: LocalRegistry,
    reference: String,
    serial: usize,
    losses: Vec<String>,
}

impl Harness {
    fn command(&self, dir: &Path, cache: &Path, args: &[&str]) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&self.img);
        cmd.args(args)
            .current_dir(dir)
            .env("IMGBUILD_CACHE_DIR", cache)
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::null())
            .process_group(0);
        cmd
    }

    /// Runs to the end; stdout's last line on success, the stderr on failure.
    fn run(&self, dir: &Path, cache: &Path, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(dir, cache, args)
            .output()
            .map_err(|e| format!("starting {}: {e}", self.img.display()))?;
        if !out.status.success() {
            return Err(format!(
                "imgbuild {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(stdout.lines().last().unwrap_or_default().to_string())
    }

    /// A fresh checkout of the project with its own app code (so no stored image serves it:
    /// the dependency entry is restored, or pulled, and the app compiled).
    fn checkout(&mut self, name: &str) -> Result<PathBuf, String> {
        let mark = format!("checkout {}", self.serial + 1);
        self.checkout_with(name, Some(&mark))
    }

    /// A fresh checkout, its app code changed by a comment line `mark` (or not at all).
    fn checkout_with(&mut self, name: &str, mark: Option<&str>) -> Result<PathBuf, String> {
        self.serial += 1;
        let dir = self.work.join(format!("{name}-{}", self.serial));
        crate::bench::copy_tree(&self.project, &dir)?;
        if let Some(mark) = mark {
            let main = dir.join("src/main.rs");
            let text = std::fs::read_to_string(&main).map_err(|e| e.to_string())?;
            std::fs::write(&main, format!("{text}\n// {mark}\n")).map_err(|e| e.to_string())?;
        }
        Ok(dir)
    }

    /// Starts `op` on the shared store (preparing what it needs first).
    fn spawn(&mut self, op: Op) -> Result<Child, String> {
        let host = self.registry.host.clone();
        let (dir, args): (PathBuf, Vec<String>) = match op {
            Op::Build => {
                // A new dependency key every time: compiles the dependencies, saves an entry.
                self.serial += 1;
                let mut cmd = self.command(&self.project, &self.cache, &["build"]);
                cmd.env(
                    "CARGO_PROFILE_RELEASE_CODEGEN_UNITS",
                    (2 + self.serial % 200).to_string(),
                );
                return cmd
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| e.to_string());
            }
            Op::Restore => (self.checkout("restore")?, vec!["build".into()]),
            Op::Push => {
                self.serial += 1;
                (
                    self.project.clone(),
                    vec!["push".into(), format!("{host}/chaos/app:k{}", self.serial)],
                )
            }
            Op::Pull => {
                self.run(&self.project, &self.cache, &["cache", "prune", "--all"])?;
                (
                    self.checkout("pull")?,
                    vec![
                        "build".into(),
                        "--cache-repo".into(),
                        format!("{host}/chaos/cache"),
                    ],
                )
            }
            Op::Prune => (
                self.project.clone(),
                vec!["cache".into(), "prune".into(), "--all".into()],
            ),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.command(&dir, &self.cache, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())
    }

    /// After a fault: a build gives the uninterrupted digest and `cache check` is clean.
    fn verify(&mut self, after: &str) -> bool {
        let built = self.run(&self.project, &self.cache, &["build"]);
        let check = self.run(&self.project, &self.cache, &["cache", "check"]);
        let problem = match (built, check) {
            (Ok(d), Ok(_)) if d == self.reference => return true,
            (Ok(d), Ok(_)) => format!("digest {d}, expected {}", self.reference),
            (Err(e), _) | (_, Err(e)) => e,
        };
        self.losses.push(format!("after {after}: {problem}"));
        false
    }
}

fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
}

fn parse_args(args: &[String]) -> Result<(usize, u64, Option<PathBuf>), String> {
    let (mut kills, mut seed, mut img) = (100, 0, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--kills" => {
                kills = value
                    .parse()
                    .map_err(|_| format!("--kills {value}: not a count"))?
            }
            "--seed" => {
                seed = value
                    .parse()
                    .map_err(|_| format!("--seed {value}: not a number"))?
            }
            "--imgbuild" => img = Some(PathBuf::from(value)),
            _ => {
                return Err(format!(
                    "unknown argument {flag}; usage: cargo xtask chaos [--kills N] [--seed S] [--imgbuild PATH]"
                ));
            }
        }
    }
    if seed == 0 {
        seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
    }
    Ok((kills, seed, img))
}

/// `cargo xtask chaos`.
pub(crate) fn chaos(root: &Path, args: &[String]) -> Result<(), String> {
    let (kills, seed, img) = parse_args(args)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let img = match img {
        Some(p) => p,
        None => {
            eprintln!("==> building imgbuild (release)");
            let build = ["build", "--release", "--locked", "-p", "imgbuild-cli"];
            crate::bench::timed(root, Path::new(&cargo), &build, &[])?;
            root.join("target/release/imgbuild")
        }
    };
    let work = std::env::temp_dir().join(format!("imgbuild-chaos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let project = work.join("project");
    crate::bench::copy_tree(&root.join("tests/fixtures/cached"), &project)?;
    let registry = LocalRegistry::start(&work.join("registry"))?;
    let mut h = Harness {
        img,
        cache: work.join("cache"),
        project,
        registry,
        work: work.clone(),
        reference: String::new(),
        serial: 0,
        losses: Vec::new(),
    };
    eprintln!("==> seed {seed}; reference build");
    let cache_repo = format!("{}/chaos/cache", h.registry.host);
    h.reference = h.run(
        &h.project,
        &h.cache,
        &[
            "push",
            &format!("{}/chaos/app:ref", h.registry.host),
            "--cache-repo",
            &cache_repo,
        ],
    )?;
    let mut rng = Rng::new(seed);
    let mut rows: Vec<(String, Tally)> = Vec::new();
    kill_faults(&mut h, &mut rng, kills, &mut rows)?;
    network_faults(&mut h, seed, &mut rows)?;
    concurrency(&mut h, &mut rows)?;
    print_table(seed, &rows);
    for loss in &h.losses {
        println!("LOST: {loss}");
    }
    let lost: usize = rows.iter().map(|(_, t)| t.lost).sum();
    let _ = std::fs::remove_dir_all(&work);
    if lost == 0 {
        Ok(())
    } else {
        Err(format!("{lost} operation(s) lost data (see LOST above)"))
    }
}

fn kill_faults(
    h: &mut Harness,
    rng: &mut Rng,
    kills: usize,
    rows: &mut Vec<(String, Tally)>,
) -> Result<(), String> {
    // Each operation's uninterrupted duration: the window its kill falls in.
    let mut windows = Vec::new();
    for op in Op::ALL {
        let start = Instant::now();
        let status = h.spawn(op)?.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("{} fails without any fault", op.name()));
        }
        windows.push(start.elapsed());
        eprintln!(
            "    {} takes {:.2} s",
            op.name(),
            start.elapsed().as_secs_f64()
        );
        if !h.verify(op.name()) {
            return Err(format!(
                "{} fails its check without any fault: {:?}",
                op.name(),
                h.losses
            ));
        }
    }
    let mut tallies: Vec<Tally> = Op::ALL.iter().map(|_| Tally::default()).collect();
    eprintln!("==> {kills} SIGKILLs");
    for n in 0..kills {
        let i = rng.below(Op::ALL.len() as u64) as usize;
        let op = Op::ALL[i];
        let at = Duration::from_micros(rng.below(windows[i].as_micros() as u64 + 1));
        let mut child = h.spawn(op)?;
        std::thread::sleep(at);
        let finished = child.try_wait().map_err(|e| e.to_string())?.is_some();
        kill_group(&mut child);
        let t = &mut tallies[i];
        t.injected += usize::from(!finished);
        t.completed += usize::from(finished);
        if !h.verify(&format!(
            "kill {n} of {} at {:.2} s",
            op.name(),
            at.as_secs_f64()
        )) {
            t.lost += 1;
        }
    }
    for (op, t) in Op::ALL.iter().zip(tallies) {
        rows.push((format!("SIGKILL: {}", op.name()), t));
    }
    Ok(())
}

fn network_faults(
    h: &mut Harness,
    seed: u64,
    rows: &mut Vec<(String, Tally)>,
) -> Result<(), String> {
    eprintln!("==> pushes and pulls through a faulty proxy");
    let upstream: u16 = h
        .registry
        .host
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("registry port")?;
    let proxy = proxy::Proxy::start(upstream, seed, (10, 5, 5), Duration::from_secs(30))?;
    let via = format!("127.0.0.1:{}", proxy.port);
    let timeout = ["--registry-timeout", "2"];
    let mut tally = Tally::default();
    // Pulls alternate between the reference checkout (the app image comes from the cache
    // repository) and one with other app code (the dependency entry comes from it, the app is
    // compiled); the second's digest, from a build without any cache:
    let changed = h.checkout_with("net-expected", Some("network"))?;
    let expected_changed = h.run(&changed, &h.work.join("net-expected-cache"), &["build"])?;
    for round in 0..10 {
        let target = format!("{via}/chaos/net:r{round}");
        match h.run(
            &h.project,
            &h.cache,
            &[&["push", &target][..], &timeout].concat(),
        ) {
            Ok(digest) => {
                tally.completed += 1;
                let direct = format!("docker://{}/chaos/net:r{round}", h.registry.host);
                let read = Command::new("skopeo")
                    .args([
                        "inspect",
                        "--tls-verify=false",
                        "--format",
                        "{{.Digest}}",
                        &direct,
                    ])
                    .output()
                    .map_err(|e| format!("skopeo is needed: {e}"))?;
                let remote = String::from_utf8_lossy(&read.stdout).trim().to_string();
                if digest != h.reference || remote != h.reference {
                    tally.lost += 1;
                    h.losses
                        .push(format!("push r{round}: {digest} / registry has {remote:?}"));
                }
            }
            Err(_) => tally.failed += 1,
        }
        let (mark, expected) = if round % 2 == 0 {
            (None, h.reference.clone())
        } else {
            (Some("network"), expected_changed.clone())
        };
        let fresh = h.checkout_with("net-pull", mark)?;
        let cache = h.work.join(format!("net-cache-{round}"));
        let repo = format!("{via}/chaos/cache");
        match h.run(
            &fresh,
            &cache,
            &[&["build", "--cache-repo", &repo][..], &timeout].concat(),
        ) {
            Ok(digest) if digest == expected => tally.completed += 1,
            Ok(digest) => {
                tally.lost += 1;
                h.losses
                    .push(format!("pull r{round}: {digest}, expected {expected}"));
            }
            Err(_) => tally.failed += 1,
        }
    }
    let s = &proxy.stats;
    use std::sync::atomic::Ordering::SeqCst;
    tally.injected = s.dropped.load(SeqCst) + s.stalled.load(SeqCst) + s.cut.load(SeqCst);
    rows.push((
        format!(
            "proxy: {} connections, {} dropped, {} stalled, {} cut",
            s.connections.load(SeqCst),
            s.dropped.load(SeqCst),
            s.stalled.load(SeqCst),
            s.cut.load(SeqCst)
        ),
        tally,
    ));
    Ok(())
}

fn concurrency(h: &mut Harness, rows: &mut Vec<(String, Tally)>) -> Result<(), String> {
    eprintln!("==> four at a time on one store");
    let mut tally = Tally::default();
    for round in 0..5 {
        let mut children = Vec::new();
        for op in [Op::Build, Op::Restore, Op::Push, Op::Prune] {
            children.push(h.spawn(op)?);
        }
        for mut child in children {
            let ok = child.wait().map_err(|e| e.to_string())?.success();
            tally.completed += usize::from(ok);
            tally.failed += usize::from(!ok);
        }
        tally.injected += 1;
        if !h.verify(&format!("concurrent round {round}")) {
            tally.lost += 1;
        }
    }
    rows.push(("concurrent: build, restore, push, prune".into(), tally));
    Ok(())
}

fn print_table(seed: u64, rows: &[(String, Tally)]) {
    println!();
    println!("imgbuild fault harness (seed {seed})");
    println!(
        "{:<62} {:>8} {:>9} {:>6} {:>5}",
        "fault", "injected", "completed", "failed", "lost"
    );
    for (name, t) in rows {
        println!(
            "{:<62} {:>8} {:>9} {:>6} {:>5}",
            name, t.injected, t.completed, t.failed, t.lost
        );
    }
}
