//! Issue #11: one cargo-like console renderer. Colour only when it belongs (a terminal,
//! `--color`, `NO_COLOR`), green status words, red `error:` with `Caused by:` sections, and every
//! error printed once.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::*;

/// A status word as the console renders it in colour: green, bold, 12 columns.
fn green(verb: &str) -> String {
    format!("\x1b[1m\x1b[32m{verb:>12}\x1b[0m ")
}

/// `error` in bold red, as the console renders it in colour.
const RED_ERROR: &str = "\x1b[1m\x1b[31merror\x1b[0m: ";

/// Quotes `s` for `sh`.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `imgbuild ARGS` in `dir` on a pseudo-terminal (util-linux `script`), stdout and stderr
/// both on it, and returns what the terminal received.
pub(crate) fn on_a_terminal(
    dir: &Path,
    cache: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> String {
    require("script");
    let line: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_imgbuild"))
        .chain(args.iter().copied())
        .map(quoted)
        .collect();
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line.join(" "), "/dev/null"])
        .current_dir(dir)
        .env("IMGBUILD_CACHE_DIR", cache)
        .env("TERM", "xterm-256color")
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null());
    for var in COLOR_VARS {
        cmd.env_remove(var);
    }
    let out = cmd.envs(env.iter().copied()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("$ (on a terminal) imgbuild {}\n{text}", args.join(" "));
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn colour_follows_the_color_flag_and_never_reaches_a_pipe_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    for args in [
        &["build"][..],
        &["build", "--color", "auto"],
        &["build", "--color", "never"],
    ] {
        let run = imgbuild(&project, &cache, args);
        run.digest();
        assert!(run.stderr.contains("    Building image for hello/hello"));
        assert!(
            !run.stderr.contains('\x1b'),
            "escape codes: {:?}",
            run.stderr
        );
    }
    let run = imgbuild(&project, &cache, &["build", "--color", "always"]);
    run.digest();
    assert!(
        run.stderr
            .contains(&format!("{}image for hello/hello", green("Building"))),
        "{:?}",
        run.stderr
    );
    assert!(!run.stdout.contains('\x1b'), "stdout is for machines");
    let run = imgbuild(
        &project,
        &cache,
        &["build", "--color", "always", "--cache-repo", "UP/x"],
    );
    assert!(!run.status.success());
    assert!(run.stderr.starts_with(RED_ERROR), "{:?}", run.stderr);
    assert_eq!(run.stderr.matches("error").count(), 1, "{:?}", run.stderr);
}

#[test]
fn no_color_turns_colour_off_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    imgbuild(&project, &cache, &["build"]).digest();
    // On a terminal, auto colours...
    let coloured = on_a_terminal(&project, &cache, &["build", "--color", "auto"], &[]);
    assert!(coloured.contains(&green("Building")), "{coloured:?}");
    // ...unless NO_COLOR is set, or --color never.
    for (args, env) in [
        (&["build", "--color", "auto"][..], &[("NO_COLOR", "1")][..]),
        (&["build"], &[("NO_COLOR", "1")]),
        (&["build", "--color", "never"], &[]),
    ] {
        let plain = on_a_terminal(&project, &cache, args, env);
        assert!(
            plain.contains("    Building image for hello/hello"),
            "{plain:?}"
        );
        assert!(
            !plain.contains('\x1b'),
            "escape codes with {args:?} {env:?}: {plain:?}"
        );
    }
}

#[test]
fn an_error_with_causes_prints_error_once_then_caused_by() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let run = imgbuild(
        &project,
        &tmp.path().join("cache"),
        &["build", "--cache-repo", "UP/x"],
    );
    let error = run.the_error();
    assert!(
        error.starts_with("error: --cache-repo\n\nCaused by:\n  invalid image reference \"UP/x\""),
        "{error}"
    );
    assert_eq!(error.matches("Caused by:").count(), 1, "{error}");
    assert_eq!(
        error.matches("invalid image reference").count(),
        1,
        "{error}"
    );
}

/// Issue 13 changed this from one error to a repair: the damaged index is one warning, with
/// its cause once, and the build goes on.
#[test]
fn an_invalid_store_index_is_one_warning_with_its_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example("hello", tmp.path());
    let cache = tmp.path().join("cache");
    let digest = imgbuild(&project, &cache, &["build"]).digest();
    std::fs::write(cache.join("store/index.json"), "{not json").unwrap();
    let run = imgbuild(&project, &cache, &["build", "--rebuild"]);
    assert_eq!(run.digest(), digest);
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(
        warnings[0].starts_with("warning: the store's index.json was damaged"),
        "{}",
        warnings[0]
    );
    assert_eq!(
        run.stderr.matches("key must be a string").count(),
        1,
        "{}",
        run.stderr
    );
}

/// `text` without its ANSI escape sequences (CSI sequences: ESC [ … final byte).
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// Every frame of the compile's progress bar on the terminal (`    Building [==>  ] 3/9: x`),
/// as (done, total).
fn bar_frames(screen: &str) -> Vec<(usize, usize)> {
    strip_ansi(screen)
        .split(['\r', '\n'])
        .filter_map(|segment| {
            let rest = segment.strip_prefix("    Building [")?;
            let (_, counts) = rest.split_once("] ")?;
            let counts = counts.split([':', ' ']).next()?;
            let (done, total) = counts.split_once('/')?;
            Some((done.parse().ok()?, total.parse().ok()?))
        })
        .collect()
}

#[test]
fn the_compile_shows_live_progress_on_a_terminal_and_nothing_more_in_a_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    // Into a pipe: cargo's own lines as cargo prints them, no bar, no escape codes.
    let project = cached_fixture(tmp.path(), "piped");
    let run = imgbuild(&project, &tmp.path().join("cache-piped"), &["build"]);
    run.digest();
    assert!(
        run.stderr.contains("\n   Compiling serde "),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("Building ["),
        "a bar in a pipe: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains('\x1b'),
        "escape codes: {:?}",
        run.stderr
    );
    assert!(!run.stderr.contains('\r'), "{:?}", run.stderr);

    // The same build on a terminal: a bar counting cargo's units up to its total.
    let project = cached_fixture(tmp.path(), "terminal");
    let screen = on_a_terminal(
        &project,
        &tmp.path().join("cache-terminal"),
        &["build"],
        &[],
    );
    let frames = bar_frames(&screen);
    assert!(!frames.is_empty(), "no progress bar: {screen:?}");
    assert!(
        frames.iter().all(|(done, total)| done <= total),
        "{frames:?}"
    );
    // The fixture has more than five units (serde, serde_json and their build scripts...).
    assert!(frames.iter().any(|(done, _)| *done > 5), "{frames:?}");
    // Cargo's lines reach the terminal whole, printed above the bar, not through it.
    let plain = strip_ansi(&screen);
    assert!(
        plain
            .split(['\r', '\n'])
            .any(|l| l.starts_with("   Compiling serde ")),
        "{plain:?}"
    );
}

/// Frames of the byte bars with status `verb` (`   Restoring [==>  ] 1.05 MiB/4.99 MiB …`).
fn byte_frames<'a>(plain: &'a str, verb: &str) -> Vec<&'a str> {
    plain
        .split(['\r', '\n'])
        .filter(|segment| segment.trim_start().starts_with(&format!("{verb} [")))
        .collect()
}

#[test]
fn a_restore_shows_bytes_and_rate_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    // Fill the dependency cache, then build a fresh copy: its dependencies are restored.
    let first = cached_fixture(tmp.path(), "first");
    imgbuild(&first, &cache, &["build"]).digest();
    let fresh = cached_fixture(tmp.path(), "fresh");
    let screen = on_a_terminal(&fresh, &cache, &["build", "--rebuild"], &[]);
    let plain = strip_ansi(&screen);
    let frames = byte_frames(&plain, "Restoring");
    assert!(!frames.is_empty(), "no restore bar: {plain:?}");
    // Bytes done of the total, and a rate.
    assert!(
        frames.iter().all(|f| f.contains("B/") && f.contains("B/s")),
        "{frames:?}"
    );
    assert!(plain.contains("Restored"), "{plain:?}");
    // In a pipe the same restore prints its one line and no bar.
    let piped = cached_fixture(tmp.path(), "piped");
    let run = imgbuild(&piped, &cache, &["build", "--rebuild"]);
    assert!(run.stderr.contains("Restored"), "{}", run.stderr);
    assert!(
        byte_frames(&run.stderr, "Restoring").is_empty(),
        "{}",
        run.stderr
    );
}
