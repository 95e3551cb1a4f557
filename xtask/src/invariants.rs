//! `cargo xtask invariants` (also run by `ci` and as a test): the architecture invariants that a
//! compiler cannot check, checked over the source text.
//!
//! - **The planning modules do no IO**: the files listed in [`PURE`] name no filesystem,
//!   process or network API outside their unit tests.
//! - **No import cycle between modules**: inside each library crate, the graph of which file
//!   uses which (through `crate::…`, `super::…` and the re-exports of `lib.rs`/`mod.rs`) has no
//!   cycle. A facade's `mod` and `pub use` lines are declarations, not uses.
//! - **The network is touched only by `imgbuild-registry`**: no other crate depends on `ureq`.
//!
//! Processes are checked by clippy's `disallowed-methods` (see `clippy.toml`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files that must do no IO (the pure planning code).
pub(crate) const PURE: &[&str] = &[
    "crates/cargo/src/workspace.rs",
    "crates/cargo/src/config.rs",
    "crates/cargo/src/config/validate.rs",
    "crates/cargo/src/lockfile.rs",
    "crates/cargo/src/plan.rs",
    "crates/cargo/src/hermetic.rs",
    "crates/imgbuild/src/names.rs",
    "crates/imgbuild/src/cachedir.rs",
    "crates/imgbuild/src/image.rs",
    "crates/imgbuild/src/time.rs",
    "crates/imgbuild/src/basefs.rs",
    "crates/imgbuild/src/envimage.rs",
    "crates/imgbuild/src/supply/mod.rs",
    "crates/imgbuild/src/supply/spdx.rs",
    "crates/imgbuild/src/supply/cyclonedx.rs",
    "crates/imgbuild/src/supply/provenance.rs",
    "crates/imgbuild/src/supply/audit.rs",
    "crates/cargo/src/graph.rs",
    "crates/cargo/src/fingerprint.rs",
    "crates/imgbuild/src/unitcache/plan.rs",
    "crates/imgbuild/src/depcache/index.rs",
    "crates/imgbuild/src/platform.rs",
    "crates/imgbuild/src/resolve.rs",
    "crates/imgbuild/src/signing/cosign.rs",
    "crates/imgbuild/src/signing/encrypted.rs",
    "crates/imgbuild/src/options.rs",
    "crates/registry/src/reference.rs",
    "crates/oci/src/json.rs",
];

/// What a pure file must not name.
const IO_APIS: &[&str] = &[
    "std::fs",
    "File::",
    "OpenOptions",
    "read_dir",
    "std::process",
    "Command::",
    "std::net",
    "TcpStream",
    "ureq",
    "tempfile",
];

/// The library crates whose module graphs must be acyclic.
const CRATES: &[&str] = &[
    "crates/oci",
    "crates/cargo",
    "crates/registry",
    "crates/imgbuild",
    "crates/cli",
];

/// Runs every check; the violations, one per line.
pub(crate) fn check(root: &Path) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for file in PURE {
        let text = read(&root.join(file));
        for api in IO_APIS {
            if let Some(line) = code_lines(&text).find(|l| names(l, api)) {
                problems.push(format!(
                    "{file} is planning code and must do no IO, but names `{api}`: {}",
                    line.trim()
                ));
            }
        }
    }
    for krate in CRATES {
        let graph = module_graph(&root.join(krate).join("src"));
        if let Some(cycle) = find_cycle(&graph) {
            problems.push(format!(
                "{krate}: an import cycle between modules: {}",
                cycle.join(" -> ")
            ));
        }
    }
    for manifest in glob_manifests(root) {
        let text = read(&manifest);
        let rel = manifest.strip_prefix(root).unwrap_or(&manifest);
        if !rel.starts_with("crates/registry") && text.lines().any(|l| l.starts_with("ureq")) {
            problems.push(format!(
                "{} depends on ureq: only imgbuild-registry talks to the network",
                rel.display()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("invariants: cannot read {}: {e}", path.display()))
}

fn glob_manifests(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for dir in ["crates", "."] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let m = e.path().join("Cargo.toml");
            if m.is_file() {
                out.push(m);
            }
        }
    }
    out
}

/// Whether `line` names `api` as a path of its own (`std::fs`, not `my_std::fs`).
fn names(line: &str, api: &str) -> bool {
    line.match_indices(api).any(|(i, _)| {
        !line[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The lines of `text` before its unit tests, without comments.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    let end = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
}

/// A source file's module path (`build::deps`) from its path under `src/`.
fn module_path(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Expands a use tree after `crate::` or `super::` (`a::{b, c::d}` → `a::b`, `a::c::d`).
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.extend(
                    expand(&inner[start..i])
                        .into_iter()
                        .map(|s| format!("{prefix}{s}")),
                );
                start = i + 1;
            }
            _ => {}
        }
    }
    out.extend(
        expand(&inner[start..])
            .into_iter()
            .map(|s| format!("{prefix}{s}")),
    );
    out.retain(|s| !s.ends_with("::") && !s.trim().is_empty());
    out
}

/// Every path a file names after `crate::` or `super::`, made absolute (`build::deps::x`), and
/// whether it is a facade's declaration (`pub use`, `pub(crate) use` in `lib.rs`/`mod.rs`).
fn references(module: &str, is_facade: bool, text: &str) -> Vec<(String, bool)> {
    // `super` in a facade (`a/mod.rs`, module `a`) and in a file (`a/b.rs`, module `a::b`)
    // both name the parent of the module.
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p).to_string();
    let code: String = code_lines(text)
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    for (anchor, base) in [("crate::", String::new()), ("super::", parent)] {
        let mut from = 0;
        while let Some(i) = code[from..].find(anchor).map(|i| i + from) {
            let statement_start = code[..i].rfind([';', '}']).map_or(0, |b| b + 1);
            let statement = code[statement_start..i].trim_start();
            let declaration = is_facade
                && (statement.starts_with("pub use ") || statement.starts_with("pub(crate) use "));
            let after = &code[i + anchor.len()..];
            let end = if after.starts_with('{') {
                matching_brace(after)
            } else {
                after
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '{'))
                    .unwrap_or(after.len())
            };
            let end = if after[..end].contains('{') && !after.starts_with('{') {
                let open = after.find('{').unwrap_or(0);
                open + matching_brace(&after[open..])
            } else {
                end
            };
            for path in expand(&after[..end]) {
                let path = path.trim().trim_end_matches(':').to_string();
                let abs = if base.is_empty() {
                    path
                } else {
                    format!("{base}::{path}")
                };
                out.push((abs, declaration));
            }
            from = i + anchor.len() + end;
        }
    }
    out
}

fn matching_brace(text: &str) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    text.len()
}

/// The file-level use graph of a crate: module → modules it uses.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| !f.starts_with(src.join("bin")) && !f.ends_with("main.rs"))
        .collect();
    let modules: BTreeMap<String, (String, bool)> = files
        .iter()
        .map(|f| {
            let facade = f.ends_with("mod.rs") || f.ends_with("lib.rs");
            (module_path(src, f), (read(f), facade))
        })
        .collect();
    // Re-exports: `module::Name` → the module that defines it.
    let mut reexports: BTreeMap<String, String> = BTreeMap::new();
    for (module, (text, facade)) in &modules {
        if !facade {
            continue;
        }
        for line in code_lines(text) {
            let t = line.trim();
            let Some(tree) = t
                .strip_prefix("pub use ")
                .or_else(|| t.strip_prefix("pub(crate) use "))
            else {
                continue;
            };
            for path in expand(tree.trim_end_matches(';')) {
                let name = path.rsplit("::").next().unwrap_or(&path).trim().to_string();
                let target = path.rsplit_once("::").map_or("", |(p, _)| p).to_string();
                let target = if module.is_empty() {
                    target
                } else {
                    format!("{module}::{target}")
                };
                let key = if module.is_empty() {
                    name
                } else {
                    format!("{module}::{name}")
                };
                reexports.insert(key, target);
            }
        }
    }
    let resolve = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        for n in (0..=parts.len()).rev() {
            let candidate = parts[..n].join("::");
            if !modules.contains_key(&candidate) {
                continue;
            }
            if let Some(next) = parts.get(n) {
                let key = if candidate.is_empty() {
                    next.to_string()
                } else {
                    format!("{candidate}::{next}")
                };
                if let Some(target) = reexports.get(&key)
                    && modules.contains_key(target)
                {
                    return Some(target.clone());
                }
            }
            return Some(candidate);
        }
        None
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, (text, facade)) in &modules {
        let edges = graph.entry(module.clone()).or_default();
        for (path, is_declaration) in references(module, *facade, text) {
            if is_declaration {
                continue;
            }
            if let Some(target) = resolve(&path)
                && target != *module
            {
                edges.insert(target);
            }
        }
    }
    graph
}

/// A cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::Active);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next.as_str()) {
                Some(Mark::Active) => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle.into_iter().map(|m| display(&m)).collect());
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(c) = visit(next, graph, marks, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    fn display(m: &str) -> String {
        if m.is_empty() { "lib".into() } else { m.into() }
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node.as_str())
            && let Some(c) = visit(node, graph, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives in the repository")
            .to_path_buf()
    }

    #[test]
    fn the_repository_holds_its_invariants() {
        if let Err(problems) = check(&root()) {
            panic!("{}", problems.join("\n"));
        }
    }

    #[test]
    fn use_trees_expand() {
        assert_eq!(
            expand("{Error, Result, build::{Setup, deps}}"),
            vec!["Error", "Result", "build::Setup", "build::deps"]
        );
    }

    #[test]
    fn a_cycle_between_two_files_is_found() {
        let tmp = std::env::temp_dir().join(format!("imgbuild-invariants-{}", std::process::id()));
        let src = tmp.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
        std::fs::write(src.join("a.rs"), "use crate::b::thing;\n").unwrap();
        std::fs::write(src.join("b.rs"), "fn f() { crate::a::other(); }\n").unwrap();
        let cycle = find_cycle(&module_graph(&src));
        std::fs::remove_dir_all(&tmp).unwrap();
        assert_eq!(cycle, Some(vec!["a".into(), "b".into(), "a".into()]));
    }

    #[test]
    fn io_in_a_pure_file_is_named() {
        let text = "use std::fs;\nfn f() {}\n#[cfg(test)]\nmod tests { use std::process; }";
        let found: Vec<&str> = code_lines(text).filter(|l| l.contains("std::")).collect();
        assert_eq!(found, vec!["use std::fs;"]);
    }
}
