//! The one console renderer: every human line on stderr goes through [`Console`], in cargo's
//! style — green bold status words right-aligned in 12 columns, `warning:` in bold yellow,
//! `error:` in bold red followed by its causes (`Caused by:`). Colour only where it belongs:
//! `--color always|never`, else `CARGO_TERM_COLOR`, else automatic (a terminal, and neither
//! `NO_COLOR` nor `CLICOLOR=0`; anstream decides as cargo does). On a terminal it also draws the
//! live progress display ([`crate::live`]) and prints cargo's relayed stderr around it.

use std::io::{IsTerminal, Write};

use anstream::{AutoStream, ColorChoice};
use anstyle::{AnsiColor, Style};
use imgbuild::event::Progress;

use crate::live::Live;

/// Status words (`   Compiling`).
const STATUS: Style = AnsiColor::Green.on_default().bold();
/// `warning`.
const WARNING: Style = AnsiColor::Yellow.on_default().bold();
/// `error`.
const ERROR: Style = AnsiColor::Red.on_default().bold();

/// When to colour human output (`--color`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ColorWhen {
    /// On a terminal, unless `NO_COLOR` is set (non-empty) or `TERM=dumb`.
    Auto,
    /// Always, even into a pipe or a file.
    Always,
    /// Never.
    Never,
}

impl ColorWhen {
    /// The flag if given, else `CARGO_TERM_COLOR` (as cargo reads it), else auto.
    pub(crate) fn resolve(flag: Option<ColorWhen>) -> ColorWhen {
        flag.unwrap_or_else(
            || match std::env::var("CARGO_TERM_COLOR").as_deref().map(str::trim) {
                Ok("always") => ColorWhen::Always,
                Ok("never") => ColorWhen::Never,
                _ => ColorWhen::Auto,
            },
        )
    }
}

/// Human output on stderr.
pub(crate) struct Console {
    color: bool,
    /// The live display, when stderr is a terminal.
    live: Option<Live>,
}

impl Console {
    /// A console colouring as `when` says, for this process's stderr.
    pub(crate) fn new(when: ColorWhen) -> Self {
        let choice = match when {
            ColorWhen::Auto => ColorChoice::Auto,
            ColorWhen::Always => ColorChoice::Always,
            ColorWhen::Never => ColorChoice::Never,
        };
        let color =
            AutoStream::new(std::io::stderr(), choice).current_choice() != ColorChoice::Never;
        let live = std::io::stderr().is_terminal().then(Live::new);
        Self { color, live }
    }

    /// Whether this console colours its output.
    pub(crate) fn color(&self) -> bool {
        self.color
    }

    /// Whether a live display can be drawn (stderr is a terminal).
    pub(crate) fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Shows `progress` on the live display; nothing without a terminal.
    pub(crate) fn progress(&self, progress: &Progress) {
        if let Some(live) = &self.live {
            live.update(progress, |verb| {
                self.styled(&format!("{STATUS}{verb:>12}{STATUS:#}"))
            });
        }
    }

    /// `text` with its styles, or without them when this console does not colour.
    fn styled(&self, text: &str) -> String {
        match self.color {
            true => text.to_string(),
            false => anstream::adapter::strip_str(text).to_string(),
        }
    }

    /// A line as it is (e.g. one of cargo's, already coloured as `--color` told cargo).
    pub(crate) fn line(&self, text: &str) {
        self.write_line(text);
    }

    /// Writes `text` (styled with anstyle; the styles are stripped without colour) and a
    /// newline to stderr. A closed stderr is not an error worth failing over.
    fn write_line(&self, text: &str) {
        let choice = if self.color {
            ColorChoice::AlwaysAnsi
        } else {
            ColorChoice::Never
        };
        let write = || {
            let mut err = AutoStream::new(std::io::stderr().lock(), choice);
            let _ = writeln!(err, "{text}");
        };
        match &self.live {
            Some(live) => live.suspend(write),
            None => write(),
        }
    }

    /// `    Building rest`: a status word, right-aligned in 12 columns.
    pub(crate) fn status(&self, verb: &str, rest: &str) {
        self.write_line(&status_line(verb, rest));
    }

    /// `warning: message`.
    pub(crate) fn warning(&self, message: &str) {
        self.write_line(&format!("{WARNING}warning{WARNING:#}: {message}"));
    }

    /// `error: message`, then each cause not already part of the text above it as
    /// `Caused by:` and the cause indented, as cargo prints them.
    pub(crate) fn error(&self, err: &anyhow::Error) {
        if let Some(live) = &self.live {
            live.clear();
        }
        let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
        self.write_line(&error_text(&chain));
    }
}

/// A status line: the verb green and bold, right-aligned in 12 columns.
pub(crate) fn status_line(verb: &str, rest: &str) -> String {
    format!("{STATUS}{verb:>12}{STATUS:#} {rest}")
}

/// The text of an error whose chain (the error first, then each source) is `chain`. Errors
/// often include their source's text in their own message (`reading X: No such file`) and
/// return it as their source too; a cause already shown is not shown again.
fn error_text(chain: &[String]) -> String {
    let Some((first, causes)) = chain.split_first() else {
        return String::new();
    };
    let mut text = format!("{ERROR}error{ERROR:#}: {first}");
    let mut shown = vec![first.as_str()];
    for cause in causes {
        if cause.trim().is_empty() || shown.iter().any(|s| s.contains(cause.as_str())) {
            continue;
        }
        text.push_str("\n\nCaused by:");
        for line in cause.lines() {
            text.push_str("\n  ");
            text.push_str(line);
        }
        shown.push(cause);
    }
    text
}

/// A `warning:` line on stderr, for callbacks that cannot hold the console (colour as
/// anstream decides for stderr).
pub(crate) fn warning_line(message: &str) {
    let mut err = anstream::stderr().lock();
    let _ = writeln!(err, "{WARNING}warning{WARNING:#}: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(chain: &[&str]) -> String {
        let chain: Vec<String> = chain.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let mut stream = AutoStream::new(&mut out, ColorChoice::Never);
        write!(stream, "{}", error_text(&chain)).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        assert_eq!(
            plain(&[
                "invalid index in /c/index.json: key must be a string at line 1 column 2",
                "key must be a string at line 1 column 2",
            ]),
            "error: invalid index in /c/index.json: key must be a string at line 1 column 2"
        );
    }

    #[test]
    fn other_causes_follow_as_caused_by_like_cargo() {
        assert_eq!(
            plain(&[
                "--cache-repo",
                "invalid image reference \"A\": uppercase",
                "uppercase",
                "line one\nline two",
            ]),
            "error: --cache-repo\n\nCaused by:\n  invalid image reference \"A\": uppercase\n\nCaused by:\n  line one\n  line two"
        );
    }

    #[test]
    fn status_words_are_right_aligned_in_twelve_columns() {
        let mut out = Vec::new();
        let mut stream = AutoStream::new(&mut out, ColorChoice::Never);
        write!(stream, "{}", status_line("Building", "x")).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "    Building x");
        assert_eq!(
            status_line("Image", "y"),
            "\u{1b}[1m\u{1b}[32m       Image\u{1b}[0m y"
        );
    }
}
