//! The two renderers of the library's events: status lines on stderr, or JSON lines on stdout
//! (`--message-format json`).

use std::io::Write;

use imgbuild::event::{BlobOutcome, ChildOutput, Event, NetworkAccess, Progress, Reporter};

use crate::console::Console;

/// Renders events as status lines and warnings on the [`Console`].
pub(crate) struct Human<'a> {
    pub(crate) console: &'a Console,
}

impl Human<'_> {
    fn status(&self, verb: &str, rest: &str) {
        self.console.status(verb, rest);
    }
}

pub(crate) fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

impl Human<'_> {
    /// The dependency and app cache events.
    fn cache(&self, event: &Event) {
        match event {
            Event::AppCache {
                key,
                hit,
                from_registry,
                stored,
            } => {
                let what = match (hit, from_registry, stored) {
                    (_, _, true) => "stored",
                    (true, true, _) => "hit (pulled from the cache repository): nothing to compile",
                    (true, false, _) => "hit: nothing to compile",
                    _ => "miss",
                };
                self.status("App", &format!("{} {what}", &key[..12]))
            }
            Event::CacheLookup {
                key,
                hit,
                nearest,
                from_registry,
            } => {
                let what = match (hit, nearest) {
                    (true, _) if *from_registry => "hit (pulled from the cache repository)".to_string(),
                    (true, _) => "hit".to_string(),
                    (false, Some(n)) => format!("miss; restoring the nearest entry {}", &n[..12]),
                    (false, None) => "miss; no earlier entry for this binary".to_string(),
                };
                self.status("Cache", &format!("dependencies {} {what}", &key[..12]))
            }
            Event::CacheRestored {
                present,
                restored,
                while_downloading,
                bytes,
                early,
                ..
            } => {
                let streamed = match *while_downloading {
                    0 => String::new(),
                    n if n == *restored => ", unpacked as it downloaded".to_string(),
                    n => format!(", {n} unpacked as they downloaded"),
                };
                let streamed = match early {
                    true => format!("{streamed} (fetched while the workspace was read)"),
                    false => streamed,
                };
                self.status(
                    "Restored",
                    &format!(
                        "{restored} files ({}){streamed}, {present} already in place",
                        human_size(*bytes)
                    ),
                )
            }
            Event::CacheStored {
                key,
                layers,
                files,
                new_files,
                new_layer_size,
                squashed,
            } => self.status(
                "Cached",
                &format!(
                    "dependencies {}: {files} files in {layers} layer(s); new layer {new_files} files, {}{}",
                    &key[..12],
                    human_size(*new_layer_size),
                    if *squashed { " (squashed)" } else { "" }
                ),
            ),
            _ => {}
        }
    }

    /// The unit cache's events.
    fn units(&self, event: &Event) {
        match event {
            Event::UnitsRestored {
                records,
                restored,
                in_place,
                missed,
                bytes,
                ..
            } if *records > 0 => self.status(
                "Units",
                &format!(
                    "workspace crates: {restored} restored ({}), {in_place} already fresh, {} to compile",
                    human_size(*bytes),
                    missed.len()
                ),
            ),
            Event::UnitsStored {
                units,
                new_units,
                new_bytes,
            } => self.status(
                "Cached",
                &format!(
                    "workspace crates: {units} units, {new_units} new ({})",
                    human_size(*new_bytes)
                ),
            ),
            _ => {}
        }
    }

    /// The registry events.
    /// Where the image goes: blobs, pushes, tags, signatures, engines, files.
    fn delivery(&self, event: &Event) {
        match event {
            Event::Output { destination } => self.status("Wrote", destination),
            Event::Loaded {
                reference,
                engine,
                layers_sent,
                layers_reused,
                ..
            } => self.status(
                "Loaded",
                &format!(
                    "{reference} into {engine} ({layers_sent} {} sent, {layers_reused} already there)",
                    if *layers_sent == 1 { "layer" } else { "layers" }
                ),
            ),
            Event::Tagged { reference, .. } => self.status("Tagged", reference),
            Event::Signed { reference, key } => {
                self.status("Signed", &format!("{reference} with key {key}"))
            }

            Event::Blob {
                digest,
                size,
                outcome,
                from,
                ..
            } => {
                let how = match (outcome, from) {
                    (BlobOutcome::Mounted, Some(from)) => format!("mounted from {from}"),
                    (BlobOutcome::Present, _) => "already there".to_string(),
                    (other, _) => other.to_string(),
                };
                self.status(
                    "Blob",
                    &format!("{} {:>10} {how}", short(digest), human_size(*size)),
                )
            }
            Event::Pushed {
                reference,
                uploaded,
                uploaded_bytes,
                mounted,
                present,
                ..
            } => self.status(
                "Pushed",
                &format!(
                    "{reference} ({uploaded} uploaded, {}; {mounted} mounted; {present} already there)",
                    human_size(*uploaded_bytes)
                ),
            ),
            _ => {}
        }
    }

    /// What a build starts from: the binary, its sandbox, base image and environment.
    fn started(&self, event: &Event) {
        match event {
            Event::BuildStarted {
                package,
                bin,
                profile,
                platform,
            } => self.status(
                "Building",
                &match platform {
                    Some(p) => format!("image for {package}/{bin} ({profile} profile, {p})"),
                    None => format!("image for {package}/{bin} ({profile} profile)"),
                },
            ),
            Event::IndexBuilt {
                digest,
                reference,
                platforms,
            } => self.status(
                "Index",
                &format!(
                    "{reference} {digest} ({})",
                    platforms
                        .iter()
                        .map(|p| p.platform.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Event::Isolation {
                network, method, ..
            } => match network {
                NetworkAccess::Isolated => {
                    self.status("Sandbox", &format!("no network for the build ({method})"))
                }
                NetworkAccess::Allowed => self.status(
                    "Sandbox",
                    "network allowed (--allow-network); the image is marked not hermetic",
                ),
                _ => {} // the warning that follows says it
            },
            Event::BaseResolved {
                reference,
                digest,
                layers,
            } => self.status(
                "Base",
                &format!("{reference} {} ({layers} layers)", short(digest)),
            ),
            Event::BuildEnvResolved { reference, digest } => {
                self.status("Environment", &format!("{reference} {}", short(digest)))
            }
            _ => {}
        }
    }
}

impl Reporter for Human<'_> {
    fn report(&self, event: &Event) {
        match event {
            Event::CacheUnusable { key, message } => self.console.warning(&format!(
                "cache entry {} not usable, treated as a miss: {message}",
                &key[..12]
            )),
            Event::Compiled {
                executable,
                dependencies_compiled,
                dependencies_fresh,
                ..
            } => self.status(
                "Compiled",
                &format!(
                    "{executable} (dependencies: {dependencies_compiled} compiled, {dependencies_fresh} from cache or up to date)"
                ),
            ),
            Event::Layer {
                role,
                digest,
                size,
                entries,
                ..
            } => self.status(
                "Layer",
                &format!(
                    "{role:<9} {} {:>10} ({entries} entries)",
                    short(digest),
                    human_size(*size)
                ),
            ),
            Event::Attached {
                artifact_type,
                digest,
                size,
            } => self.status(
                "Attached",
                &format!(
                    "{:<9} {} {:>10}",
                    artifact_name(artifact_type),
                    short(digest),
                    human_size(*size)
                ),
            ),
            Event::ImageBuilt {
                digest,
                reference,
                size,
                ..
            } => self.status(
                "Image",
                &format!("{reference} {digest} ({} compressed)", human_size(*size)),
            ),
            Event::Warning { message } => self.console.warning(message),
            Event::AppCache { .. }
            | Event::CacheLookup { .. }
            | Event::CacheRestored { .. }
            | Event::CacheStored { .. } => self.cache(event),
            Event::UnitsRestored { .. } | Event::UnitsStored { .. } => self.units(event),
            Event::Blob { .. }
            | Event::Pushed { .. }
            | Event::Tagged { .. }
            | Event::Signed { .. }
            | Event::Loaded { .. }
            | Event::Output { .. } => self.delivery(event),
            Event::BuildStarted { .. }
            | Event::IndexBuilt { .. }
            | Event::Isolation { .. }
            | Event::BaseResolved { .. }
            | Event::BuildEnvResolved { .. } => self.started(event),
            // Events a newer library adds are shown in JSON output only.
            _ => {}
        }
    }

    fn progress(&self, progress: &Progress) {
        self.console.progress(progress);
    }

    /// On a terminal cargo's stderr comes through the console, so that its lines are printed
    /// above the live display; cargo colours as this console does.
    fn child_output(&self) -> ChildOutput {
        ChildOutput {
            relay: self.console.is_live(),
            color: Some(self.console.color()),
        }
    }

    fn child_line(&self, line: &str) {
        self.console.line(line);
    }
}

/// Prints each event as one JSON line on stdout.
pub(crate) struct Json;

impl Reporter for Json {
    fn report(&self, event: &Event) {
        let mut out = std::io::stdout().lock();
        if let Ok(line) = serde_json::to_string(event) {
            let _ = writeln!(out, "{line}");
        }
    }
}

/// Retry notices, printed as they happen (the registry client waits on this thread, so they
/// cannot wait for the reporter): a `warning:` line on stderr, or a `warning` event on stdout
/// with `--message-format json`.
pub(crate) fn retry_hook(format: crate::args::MessageFormat) -> imgbuild_registry::RetryHook {
    imgbuild_registry::RetryHook(std::sync::Arc::new(move |line: &str| {
        let event = Event::Warning {
            message: line.to_string(),
        };
        match format {
            crate::args::MessageFormat::Json => Json.report(&event),
            crate::args::MessageFormat::Human => crate::console::warning_line(line),
        }
    }))
}

/// What an attached artifact is, in a word or two.
fn artifact_name(artifact_type: &str) -> &str {
    match artifact_type {
        "application/spdx+json" => "SBOM SPDX",
        "application/vnd.cyclonedx+json" => "SBOM CDX",
        "application/vnd.in-toto+json" => "provenance",
        "application/vnd.imgbuild.debuginfo" => "debuginfo",
        other => other,
    }
}
