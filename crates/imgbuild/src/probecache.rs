//! Answers of the commands every build asks the same questions of — `cargo metadata`,
//! `cargo tree`, `rustc -vV`, the machine probes (C compiler, linker, libc) and the sandbox
//! probe — remembered under the cache directory with the state of everything they read: files
//! (by content), directories (by their names, for cargo's target discovery and workspace
//! globs), environment variables, and programs (by path, size, modification time and inode).
//! An answer is reused only while every one of those is unchanged; otherwise the command runs
//! and its answer is recorded again. A record that cannot be read or written costs the command
//! a run, never the build.
//!
//! Reads the files, directories and programs it checks; writes records under
//! `CacheDir::probes()`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use imgbuild_cargo::cargo_metadata::Metadata;
use imgbuild_cargo::run;
use imgbuild_cargo::workspace::BinaryTarget;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::Result;
use crate::cachedir::CacheDir;
use crate::procenv::Env;

/// Something an answer depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Input {
    /// A file's content.
    File(PathBuf),
    /// A directory's entry names.
    Dir(PathBuf),
    /// The names and contents of a directory's files.
    DirFiles(PathBuf),
    /// An environment variable's value.
    Env(String),
    /// Every environment variable whose name starts with this.
    EnvPrefix(String),
    /// A program (found on `PATH` when not a path): its path, size, time and inode.
    Tool(String),
}

#[derive(Serialize, Deserialize)]
struct Record<T> {
    /// What was asked (a record of another question under the same file name is a miss).
    question: String,
    /// Each input with its state when the answer was recorded.
    inputs: Vec<(Input, String)>,
    answer: T,
}

fn sha256_hex(bytes: &[u8]) -> String {
    imgbuild_oci::digest::sha256(bytes).digest().to_string()
}

/// `name` found on the `PATH` of `env` (or as given, when it holds a `/`).
pub(crate) fn which(env: &Env, name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let path = env.get("PATH")?;
    std::env::split_paths(path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The current state of `input`.
fn state(input: &Input, env: &Env) -> String {
    match input {
        Input::File(p) => std::fs::read(p).map_or_else(|_| "-".into(), |b| sha256_hex(&b)),
        Input::Dir(p) => match std::fs::read_dir(p) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                sha256_hex(names.join("\n").as_bytes())
            }
            Err(_) => "-".into(),
        },
        Input::DirFiles(p) => match std::fs::read_dir(p) {
            Ok(entries) => {
                let mut files: Vec<(String, String)> = entries
                    .flatten()
                    .map(|e| {
                        let content =
                            std::fs::read(e.path()).map_or_else(|_| "-".into(), |b| sha256_hex(&b));
                        (e.file_name().to_string_lossy().into_owned(), content)
                    })
                    .collect();
                files.sort();
                sha256_hex(format!("{files:?}").as_bytes())
            }
            Err(_) => "-".into(),
        },
        Input::Env(name) => env
            .get(name)
            .map_or_else(|| "-".into(), |v| format!("={v}")),
        Input::EnvPrefix(prefix) => {
            let mut pairs: Vec<String> = env
                .pairs()
                .filter(|(k, _)| k.starts_with(prefix.as_str()))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            pairs.sort();
            sha256_hex(pairs.join("\n").as_bytes())
        }
        Input::Tool(name) => {
            let Some(path) = which(env, name) else {
                return "-".into();
            };
            let real = std::fs::canonicalize(&path).unwrap_or(path);
            match std::fs::metadata(&real) {
                Ok(m) => format!(
                    "{} {} {}.{} {}",
                    real.display(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ino()
                ),
                Err(_) => "-".into(),
            }
        }
    }
}

fn record_path(cache: &CacheDir, kind: &str, question: &str) -> PathBuf {
    cache.probes().join(format!(
        "{kind}-{}.json",
        &sha256_hex(question.as_bytes())[..24]
    ))
}

/// The recorded answer to `question` (of kind `kind`), when every input it read is unchanged.
pub(crate) fn lookup<T: DeserializeOwned>(
    cache: &CacheDir,
    env: &Env,
    kind: &str,
    question: &str,
) -> Option<T> {
    let bytes = std::fs::read(record_path(cache, kind, question)).ok()?;
    let record: Record<T> = serde_json::from_slice(&bytes).ok()?;
    (record.question == question
        && record
            .inputs
            .iter()
            .all(|(input, was)| state(input, env) == *was))
    .then_some(record.answer)
}

/// Records `answer` to `question` with the current state of `inputs` (written to a temporary
/// file and renamed; a failure only means the next build asks again).
pub(crate) fn remember<T: Serialize>(
    cache: &CacheDir,
    env: &Env,
    kind: &str,
    question: &str,
    inputs: Vec<Input>,
    answer: &T,
) {
    let inputs: Vec<(Input, String)> = inputs
        .into_iter()
        .map(|i| {
            let s = state(&i, env);
            (i, s)
        })
        .collect();
    let record = Record {
        question: question.to_string(),
        inputs,
        answer,
    };
    let Ok(bytes) = serde_json::to_vec(&record) else {
        return;
    };
    let path = record_path(cache, kind, question);
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) else {
        return;
    };
    if std::io::Write::write_all(&mut tmp, &bytes).is_ok() {
        let _ = tmp.persist(&path);
    }
}

/// What the host's Rust toolchain answers depend on: the `rustc` and `cargo` found on `PATH`
/// (rustup's proxies, or the programs), rustup's settings, its toolchains and their update
/// hashes, the toolchain files rustup reads from `dirs` and their parents, and the variables
/// that choose a toolchain.
pub(crate) fn host_toolchain(env: &Env, dirs: &[&Path]) -> Vec<Input> {
    let mut inputs = vec![
        Input::Tool("rustc".into()),
        Input::Tool("cargo".into()),
        Input::Env("PATH".into()),
        Input::Env("RUSTC".into()),
        Input::Env("RUSTUP_TOOLCHAIN".into()),
        Input::Env("RUSTUP_HOME".into()),
        Input::Env("CARGO_HOME".into()),
    ];
    if let Some(rustc) = env.get("RUSTC").filter(|v| !v.is_empty()) {
        inputs.push(Input::Tool(rustc.to_string()));
    }
    if let Some(home) = env.rustup_home() {
        inputs.push(Input::File(home.join("settings.toml")));
        inputs.push(Input::Dir(home.join("toolchains")));
        inputs.push(Input::DirFiles(home.join("update-hashes")));
    }
    for dir in dirs {
        for ancestor in dir.ancestors() {
            inputs.push(Input::File(ancestor.join("rust-toolchain")));
            inputs.push(Input::File(ancestor.join("rust-toolchain.toml")));
        }
    }
    inputs
}

/// Which toolchain answers: the host's, or a build environment's (by its root, named by its
/// digest, so nothing in it needs checking).
fn toolchain_name(toolchain: &run::Toolchain) -> String {
    match toolchain {
        run::Toolchain::Environment(e) => format!("environment {}", e.root().display()),
        _ => "host".into(),
    }
}

fn toolchain_inputs(toolchain: &run::Toolchain, env: &Env, dirs: &[&Path]) -> Vec<Input> {
    if toolchain.is_environment() {
        Vec::new()
    } else {
        host_toolchain(env, dirs)
    }
}

/// What `cargo metadata` and `cargo tree` read besides the toolchain: every path package's
/// manifest and the directories cargo discovers targets in (and, inside the workspace, the
/// directories holding members, for `members` globs), Cargo.lock, cargo's configuration files
/// and variables.
fn workspace_inputs(meta: &Metadata, manifest: &Path, env: &Env) -> Vec<Input> {
    let root = meta.workspace_root.as_std_path();
    let mut inputs = vec![
        Input::EnvPrefix("CARGO".into()),
        Input::EnvPrefix("RUSTFLAGS".into()),
        Input::Env("HOME".into()),
        Input::File(root.join("Cargo.lock")),
    ];
    for pkg in meta.packages.iter().filter(|p| p.source.is_none()) {
        let manifest_path = pkg.manifest_path.as_std_path();
        inputs.push(Input::File(manifest_path.to_path_buf()));
        let Some(dir) = manifest_path.parent() else {
            continue;
        };
        for sub in ["", "src", "src/bin", "examples", "tests", "benches"] {
            inputs.push(Input::Dir(dir.join(sub)));
        }
        if let Some(parent) = dir.parent().filter(|p| p.starts_with(root) && dir != root) {
            inputs.push(Input::Dir(parent.to_path_buf()));
        }
    }
    let cwd = std::env::current_dir().ok();
    let dirs = [manifest.parent(), cwd.as_deref()];
    for ancestor in dirs.iter().flatten().flat_map(|d| d.ancestors()) {
        inputs.push(Input::File(ancestor.join(".cargo/config.toml")));
        inputs.push(Input::File(ancestor.join(".cargo/config")));
    }
    let home = run::cargo_home();
    inputs.push(Input::File(home.join("config.toml")));
    inputs.push(Input::File(home.join("config")));
    inputs.dedup();
    let _ = env;
    inputs
}

/// `cargo metadata` for `manifest`, remembered; also returns what it read, for
/// [`dependency_tree`].
pub(crate) fn metadata(
    cache: &CacheDir,
    env: &Env,
    manifest: &Path,
    script: &run::WrapperScript,
    toolchain: &run::Toolchain,
) -> Result<(Metadata, Vec<Input>)> {
    let question = format!(
        "cargo metadata {} {}",
        manifest.display(),
        toolchain_name(toolchain)
    );
    let cwd = std::env::current_dir().ok();
    let dirs: Vec<&Path> = [manifest.parent(), cwd.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if let Some((meta, inputs)) =
        lookup::<(Metadata, Vec<Input>)>(cache, env, "metadata", &question)
    {
        return Ok((meta, inputs));
    }
    let meta = run::metadata(manifest, script, toolchain)?;
    let mut inputs = toolchain_inputs(toolchain, env, &dirs);
    inputs.extend(workspace_inputs(&meta, manifest, env));
    let answer = (meta, inputs);
    remember(cache, env, "metadata", &question, answer.1.clone(), &answer);
    Ok(answer)
}

/// Which tree `cargo tree` is asked for.
pub(crate) struct TreeQuestion<'a> {
    /// The binary's package.
    pub(crate) target: &'a BinaryTarget,
    /// Cargo's `--target` (`None`: the host's).
    pub(crate) triple: Option<&'a str>,
    /// The features asked for.
    pub(crate) features: run::Features<'a>,
}

/// `cargo tree` for `target`, remembered under the inputs [`metadata`] found.
pub(crate) fn dependency_tree(
    cache: &CacheDir,
    env: &Env,
    inputs: &[Input],
    tree: TreeQuestion<'_>,
    wrapper: &run::Wrapper,
    toolchain: &run::Toolchain,
) -> Result<String> {
    let TreeQuestion {
        target,
        triple,
        features,
    } = tree;
    let question = format!(
        "cargo tree {} {features:?} {} {}",
        target.package.manifest_path.display(),
        toolchain_name(toolchain),
        triple.unwrap_or("host")
    );
    if let Some(tree) = lookup::<String>(cache, env, "tree", &question) {
        return Ok(tree);
    }
    let tree = run::dependency_tree(target, triple, features, wrapper, toolchain)?;
    remember(cache, env, "tree", &question, inputs.to_vec(), &tree);
    Ok(tree)
}

/// `rustc -vV`, remembered.
pub(crate) fn rustc_version(
    cache: &CacheDir,
    env: &Env,
    toolchain: &run::Toolchain,
    project: &Path,
) -> Result<String> {
    let question = format!("rustc -vV {}", toolchain_name(toolchain));
    if let Some(answer) = lookup::<String>(cache, env, "rustc", &question) {
        return Ok(answer);
    }
    let answer = run::rustc_version(toolchain)?;
    let cwd = std::env::current_dir().ok();
    let dirs: Vec<&Path> = [Some(project), cwd.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    remember(
        cache,
        env,
        "rustc",
        &question,
        toolchain_inputs(toolchain, env, &dirs),
        &answer,
    );
    Ok(answer)
}

/// The host's machine lines (C compiler, linker, libc), remembered.
pub(crate) fn machine_lines(
    cache: &CacheDir,
    env: &Env,
    tools: &run::MachineTools,
    triple: &str,
) -> Vec<String> {
    let question = format!("machine {triple} {tools:?}");
    if let Some(answer) = lookup::<Vec<String>>(cache, env, "machine", &question) {
        return answer;
    }
    let answer = run::machine_lines(tools);
    let mut inputs = vec![
        Input::Env("PATH".into()),
        Input::Tool("cc".into()),
        Input::Tool("ld".into()),
        Input::Tool("getconf".into()),
    ];
    for tool in [&tools.cc, &tools.linker].into_iter().flatten() {
        inputs.push(Input::Tool(tool.to_string_lossy().into_owned()));
    }
    remember(cache, env, "machine", &question, inputs, &answer);
    answer
}

/// The network sandbox, remembered when one works (an unavailable one is probed again, so
/// that installing bubblewrap takes effect at once).
pub(crate) fn sandbox(cache: &CacheDir, env: &Env) -> run::Sandbox {
    #[derive(Serialize, Deserialize)]
    enum Works {
        Bubblewrap(PathBuf),
        Unshare(PathBuf),
    }
    let question = "sandbox";
    match lookup::<Works>(cache, env, "sandbox", question) {
        Some(Works::Bubblewrap(p)) => return run::Sandbox::Bubblewrap(p),
        Some(Works::Unshare(p)) => return run::Sandbox::Unshare(p),
        None => {}
    }
    let sandbox = run::probe_sandbox();
    let works = match &sandbox {
        run::Sandbox::Bubblewrap(p) => Some(Works::Bubblewrap(p.clone())),
        run::Sandbox::Unshare(p) => Some(Works::Unshare(p.clone())),
        _ => None,
    };
    if let Some(works) = works {
        let inputs = vec![
            Input::Env("PATH".into()),
            Input::Env("HOME".into()),
            Input::Tool("bwrap".into()),
            Input::Tool("unshare".into()),
            Input::File("/proc/sys/kernel/osrelease".into()),
            Input::File("/proc/sys/kernel/unprivileged_userns_clone".into()),
            Input::File("/proc/sys/kernel/apparmor_restrict_unprivileged_userns".into()),
            Input::File("/proc/sys/user/max_user_namespaces".into()),
        ];
        remember(cache, env, "sandbox", question, inputs, &works);
    }
    sandbox
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_lasts_while_its_inputs_do() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(tmp.path().join("cache"));
        let env = Env::capture();
        let file = tmp.path().join("Cargo.toml");
        let dir = tmp.path().join("src");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&file, "a").unwrap();
        let inputs = vec![Input::File(file.clone()), Input::Dir(dir.clone())];
        remember(&cache, &env, "metadata", "q", inputs, &42u32);
        assert_eq!(lookup::<u32>(&cache, &env, "metadata", "q"), Some(42));
        assert_eq!(lookup::<u32>(&cache, &env, "metadata", "other"), None);
        std::fs::write(dir.join("new.rs"), "").unwrap();
        assert_eq!(
            lookup::<u32>(&cache, &env, "metadata", "q"),
            None,
            "a new file in a listed directory"
        );
        let inputs = vec![Input::File(file.clone()), Input::Dir(dir)];
        remember(&cache, &env, "metadata", "q", inputs, &43u32);
        std::fs::write(&file, "b").unwrap();
        assert_eq!(
            lookup::<u32>(&cache, &env, "metadata", "q"),
            None,
            "a changed file"
        );
    }
}
