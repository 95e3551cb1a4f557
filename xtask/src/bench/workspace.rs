//! The workspace scenarios (issue 15): a generated workspace of twelve library crates in a
//! dependency chain (`c00` at the bottom … `c11` at the top, each with serde derives and
//! crates.io dependencies) and three binaries: `app-a` on `c11`, `app-b` on `c06`, and
//! `app-c` on `c09`, built only in the "new binary" scenario. Fresh runners share a local
//! `docker-registry` as their cache repository; cargo's figures come from a warm checkout
//! (incremental rebuilds) or an empty target directory (cold), in the same session.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::wsrun::{cargo_build, run_imgbuild};
use super::{Bench, Row, copy_tree, edit, median, paired_ratio, ratios, seconds, timed};
use crate::registry::LocalRegistry;

const MEMBERS: usize = 12;

/// How many fresh runners (and cargo rebuilds), in pairs, the leaf-change row takes.
const LEAF_RUNS: usize = 5;

/// How many cold builds of each, in pairs, the cold row takes.
const COLD_PAIRS: usize = 3;

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn member_manifest(name: &str, deps: &[String]) -> String {
    let mut text = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nserde = {{ version = \"1\", features = [\"derive\"] }}\nserde_json = \"1\"\n"
    );
    for d in deps {
        let dir = if d.starts_with('c') { "crates" } else { "apps" };
        text.push_str(&format!("{d} = {{ path = \"../../{dir}/{d}\" }}\n"));
    }
    text
}

/// A library with some weight (serde derives) whose `value()` adds its number to the one
/// below it.
fn member_source(n: usize) -> String {
    let below = if n == 0 {
        "0".to_string()
    } else {
        format!("c{:02}::value()", n - 1)
    };
    let mut text = String::from("use serde::{Deserialize, Serialize};\n\n");
    for k in 0..8 {
        text.push_str(&format!(
            "#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]\npub struct Record{k} {{ pub id: u64, pub name: String, pub tags: Vec<String>, pub score: Option<f64>, pub parts: Vec<(u32, String)> }}\n\n"
        ));
    }
    text.push_str(&format!(
        "pub fn roundtrip() -> usize {{\n    let r = Record0 {{ id: {n}, name: \"c{n}\".into(), tags: vec![], score: None, parts: vec![] }};\n    serde_json::to_string(&r).unwrap().len()\n}}\n\n// edit here\npub fn value() -> u64 {{\n    {below} + {n}\n}}\n"
    ));
    text
}

/// A binary with the weight of a small service's main crate (request and response types
/// with serde derives, handlers), printing its library's value.
fn app_source(app: &str, on: &str) -> String {
    let mut text = String::from("use serde::{Deserialize, Serialize};\n\n");
    for k in 0..24 {
        text.push_str(&format!(
            "#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]\nstruct Request{k} {{ id: u64, user: String, items: Vec<(u32, String)>, note: Option<String>, weights: Vec<f64> }}\n\n#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]\nenum Response{k} {{ Ok {{ id: u64, total: f64 }}, Rejected(String), Later {{ after: u32 }} }}\n\nfn handle{k}(body: &str) -> String {{\n    let req: Request{k} = serde_json::from_str(body).unwrap();\n    let total: f64 = req.weights.iter().sum();\n    let resp = if req.items.is_empty() {{ Response{k}::Rejected(req.user) }} else {{ Response{k}::Ok {{ id: req.id, total }} }};\n    serde_json::to_string(&resp).unwrap()\n}}\n\n"
        ));
    }
    text.push_str(
        "fn main() {\n    let body = r#\"{\"id\":1,\"user\":\"u\",\"items\":[],\"note\":null,\"weights\":[]}\"#;\n",
    );
    for k in 0..24 {
        text.push_str(&format!("    let _ = handle{k}(body);\n"));
    }
    text.push_str(&format!(
        "    println!(\"{app} {{}} {{}}\", {on}::value(), {on}::roundtrip());\n}}\n"
    ));
    text
}

/// Writes the workspace at `dir` and its lockfile.
fn generate(bench: &Bench, dir: &Path) -> Result<(), String> {
    write(
        &dir.join("Cargo.toml"),
        "[workspace]\nmembers = [\"crates/*\", \"apps/*\"]\nresolver = \"2\"\n",
    )?;
    for n in 0..MEMBERS {
        let name = format!("c{n:02}");
        let deps: Vec<String> = (n > 0)
            .then(|| format!("c{:02}", n - 1))
            .into_iter()
            .collect();
        write(
            &dir.join(format!("crates/{name}/Cargo.toml")),
            &member_manifest(&name, &deps),
        )?;
        write(
            &dir.join(format!("crates/{name}/src/lib.rs")),
            &member_source(n),
        )?;
    }
    for (app, on) in [("app-a", "c11"), ("app-b", "c06"), ("app-c", "c09")] {
        write(
            &dir.join(format!("apps/{app}/Cargo.toml")),
            &member_manifest(app, &[on.to_string()]),
        )?;
        write(
            &dir.join(format!("apps/{app}/src/main.rs")),
            &app_source(app, on),
        )?;
    }
    let offline = timed(dir, &bench.cargo, &["generate-lockfile", "--offline"], &[]);
    if offline.is_err() {
        timed(dir, &bench.cargo, &["generate-lockfile"], &[])?;
    }
    timed(dir, &bench.cargo, &["fetch", "--locked"], &[])?;
    Ok(())
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A one-line change in the leaf binary, a mid-chain member and the bottom member, each on a
/// fresh runner, against cargo's incremental rebuild in the warm checkout `bare`.
fn changes(bench: &Bench, src: &Path, bare: &Path, repo: &str) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let copy = |name: &str| -> Result<PathBuf, String> {
        let dir = bench.work.join(name);
        copy_tree(src, &dir)?;
        Ok(dir)
    };
    let chain_from = |n: usize| -> BTreeSet<String> {
        let mut s: BTreeSet<String> = (n..MEMBERS).map(|k| format!("c{k:02}")).collect();
        s.insert("app-a".into());
        s
    };
    let changes: [(&'static str, String, BTreeSet<String>); 3] = [
        (
            "ws fresh runner, leaf change",
            "apps/app-a/src/main.rs".into(),
            names(&["app-a"]),
        ),
        (
            "ws fresh runner, mid-chain change",
            "crates/c06/src/lib.rs".into(),
            chain_from(6),
        ),
        (
            "ws fresh runner, bottom change",
            "crates/c00/src/lib.rs".into(),
            chain_from(0),
        ),
    ];
    for (i, (scenario, file, expected)) in changes.into_iter().enumerate() {
        eprintln!("==> {scenario}");
        // The leaf change is timed LEAF_RUNS times (a new line each time, cargo then imgbuild);
        // the others once, for the units they compile.
        let rounds = if i == 0 { LEAF_RUNS } else { 1 };
        let (mut cargo_times, mut img_times, mut runs) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..rounds {
            let (from, to) = if file.ends_with("main.rs") {
                (
                    "println!(\"app-a",
                    format!("println!(\"app-a{}", "!".repeat(k + 1)),
                )
            } else {
                ("// edit here", "pub const EDITED: u32 = 1;".to_string())
            };
            for dir in [src, bare] {
                edit(&dir.join(&file), from, &to)?;
            }
            cargo_times.push(cargo_build(bench, bare, "app-a")?);
            let runner = copy(&format!("ws-runner-{i}-{k}"))?;
            let run = run_imgbuild(
                bench,
                &runner,
                &bench.work.join(format!("ws-cache-runner-{i}-{k}")),
                "app-a",
                repo,
            )?;
            img_times.push(run.time);
            runs.push(run);
        }
        let (cargo_inc, img_time) = (median(cargo_times.clone()), median(img_times.clone()));
        let ratio = paired_ratio(&img_times, &cargo_times);
        let outside: Vec<Duration> = runs.iter().filter_map(|r| r.outside_cargo).collect();
        let run = runs.pop().expect("one run at least");
        let exact = run.members == expected && run.dependencies == 0;
        let (target, met) = if i == 0 {
            (
                format!("<= 1.10x cargo incremental (median of {LEAF_RUNS} pairs)"),
                exact && ratio <= 1.1,
            )
        } else {
            ("exactly the member and its dependents".to_string(), exact)
        };
        let times = if rounds > 1 {
            format!(
                "; pair ratios {}; runs: imgbuild {}, cargo {}",
                ratios(&img_times, &cargo_times),
                seconds(&img_times),
                seconds(&cargo_times)
            )
        } else {
            String::new()
        };
        rows.push(Row {
            ratio: (rounds > 1).then_some(ratio),
            scenario,
            imgbuild: img_time,
            cargo: Some(cargo_inc),
            target,
            met,
            note: format!(
                "{} units restored; compiled {} members ({}), {} dependency units{times}; imgbuild outside cargo's run {}",
                run.restored_units,
                run.members.len(),
                run.members.iter().cloned().collect::<Vec<_>>().join(" "),
                run.dependencies,
                seconds(&outside)
            ),
        });
    }

    Ok(rows)
}

/// Runs the workspace scenarios and prints their table; whether every target was met.
pub(crate) fn workspace(bench: &Bench) -> Result<bool, String> {
    eprintln!("==> workspace: {MEMBERS} members in a chain, three binaries (generating, fetching)");
    let src = bench.work.join("ws-src");
    generate(bench, &src)?;
    let registry = LocalRegistry::start(&bench.work.join("ws-registry"))?;
    let repo = format!("{}/bench/ws-cache", registry.host);
    let copy = |name: &str| -> Result<PathBuf, String> {
        let dir = bench.work.join(name);
        copy_tree(&src, &dir)?;
        Ok(dir)
    };
    let mut rows = Vec::new();

    eprintln!("==> workspace: cold builds of app-a ({COLD_PAIRS} pairs, cargo then imgbuild)");
    let bare = copy("ws-cargo")?;
    let (mut cargo_times, mut img_times, mut first) = (Vec::new(), Vec::new(), None);
    for k in 0..COLD_PAIRS {
        // The first pair's checkout is the one later rows build on; the others cold-build
        // copies, and push to repositories of their own (nothing to restore).
        let checkout = if k == 0 {
            bare.clone()
        } else {
            copy(&format!("ws-cargo-cold-{k}"))?
        };
        cargo_times.push(cargo_build(bench, &checkout, "app-a")?);
        let own_repo = if k == 0 {
            repo.clone()
        } else {
            format!("{repo}-cold-{k}")
        };
        let run = run_imgbuild(
            bench,
            &copy(&format!("ws-first-{k}"))?,
            &bench.work.join(format!("ws-cache-first-{k}")),
            "app-a",
            &own_repo,
        )?;
        img_times.push(run.time);
        first.get_or_insert(run);
    }
    let cold = first.expect("one cold pair at least");
    rows.push(Row {
        ratio: Some(paired_ratio(&img_times, &cargo_times)),
        scenario: "ws cold build",
        imgbuild: median(img_times.clone()),
        cargo: Some(median(cargo_times.clone())),
        target: format!("- (imgbuild also pushes the cache; median of {COLD_PAIRS} pairs)"),
        met: true,
        note: format!(
            "{} dependency units, {} members compiled; pair ratios {}; runs: imgbuild {}, cargo {}",
            cold.dependencies,
            cold.members.len(),
            ratios(&img_times, &cargo_times),
            seconds(&img_times),
            seconds(&cargo_times)
        ),
    });

    rows.extend(changes(bench, &src, &bare, &repo)?);
    rows.push(super::far::leaf_change(
        bench,
        (&src, &bare),
        &registry.host,
        "bench/ws-cache",
    )?);
    eprintln!("==> workspace: a new binary (app-c) on a fresh runner");
    let bare_c = copy("ws-cargo-c")?;
    let cargo_c = cargo_build(bench, &bare_c, "app-c")?;
    let run = run_imgbuild(
        bench,
        &copy("ws-runner-c")?,
        &bench.work.join("ws-cache-runner-c"),
        "app-c",
        &repo,
    )?;
    // The floor: cargo compiling app-c alone, everything below it built (one line changed in
    // the cold checkout). No tool that compiles app-c can take less.
    edit(
        &bare_c.join("apps/app-c/src/main.rs"),
        "println!(\"app-c",
        "println!(\"app-c!",
    )?;
    let floor = cargo_build(bench, &bare_c, "app-c")?;
    rows.push(Row {
        ratio: None,
        scenario: "ws new binary, fresh runner",
        imgbuild: run.time,
        cargo: Some(cargo_c),
        target: "<= 0.30x cargo cold".into(),
        met: run.time.as_secs_f64() <= 0.3 * cargo_c.as_secs_f64(),
        note: format!(
            "{} units restored; {} dependency units and {} members compiled; cargo compiling app-c alone (the floor): {:.2} s, {:.2}x of cold; imgbuild outside cargo's run {}",
            run.restored_units,
            run.dependencies,
            run.members.len(),
            floor.as_secs_f64(),
            floor.as_secs_f64() / cargo_c.as_secs_f64(),
            seconds(&run.outside_cargo.into_iter().collect::<Vec<_>>())
        ),
    });
    println!();
    println!("workspace benchmark ({MEMBERS} members in a chain, fresh runners through {repo})");
    Ok(super::print_rows(&rows))
}
