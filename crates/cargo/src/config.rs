//! The image configuration a project declares in Cargo metadata.
//!
//! ```toml
//! [package.metadata.imgbuild]        # or [workspace.metadata.imgbuild] for defaults
//! name = "hello"                     # image name (default: the binary's name)
//! tag = "latest"
//! base = "gcr.io/distroless/cc-debian12@sha256:…"   # default: "scratch" (no base)
//! build-env = "registry.example/rust-env@sha256:…"  # compile inside this image (default: the host)
//! entrypoint = ["/app/hello"]        # default: ["/app/<binary>"]
//! cmd = ["--port", "8080"]
//! env = { RUST_LOG = "info" }
//! workdir = "/app"
//! user = "65532"                     # default: 65532, the distroless non-root user
//! expose = [8080, "9090/udp"]
//! labels = { "com.example.team" = "web" }
//! files = [{ src = "static", dst = "/app/static" }]   # src relative to this Cargo.toml
//!
//! [package.metadata.imgbuild.bin.other]   # per-binary overrides
//! cmd = ["--other"]
//! ```
//!
//! Layering, weakest first: workspace table, package table, the package's `bin.<name>` table,
//! command-line flags. Scalars and lists replace; `env` and `labels` merge key by key. Pure: the
//! values come from `cargo metadata`'s JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::{Error, Result};

mod validate;

use validate::validate_src;
pub use validate::{validate_name, validate_tag, validate_user};

/// An image configuration, every field optional so that layers can be merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// Image name used for tags in archives and the local store.
    pub name: Option<String>,
    /// Image tag.
    pub tag: Option<String>,
    /// Base image reference; `"scratch"` (or none) for no base.
    pub base: Option<String>,
    /// The build environment: an image whose toolchain compiles the binary (a registry
    /// reference, `oci:DIR[:TAG]`, or a name in the local store); `None`: the host's.
    pub build_env: Option<String>,
    /// Entrypoint (argv).
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    pub cmd: Option<Vec<String>>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Working directory (absolute).
    pub workdir: Option<String>,
    /// `uid`, `uid:gid`, or a user name present in the image's /etc/passwd.
    pub user: Option<String>,
    /// Exposed ports, normalized to `PORT/PROTO`.
    pub expose: Option<Vec<String>>,
    /// Image config labels.
    pub labels: BTreeMap<String, String>,
    /// Extra files for the app layer.
    pub files: Option<Vec<ExtraFile>>,
    /// Platforms to build an image index for (`linux/amd64`, `linux/amd64/v3`, …), as
    /// written; `imgbuild` checks them.
    pub platforms: Option<Vec<String>>,
}

/// A file or directory from the project copied into the app layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    /// Absolute host path (resolved against the declaring Cargo.toml's directory).
    pub src: PathBuf,
    /// Absolute path inside the image.
    pub dst: String,
    /// Permission bits for files (directories are 0755); default: the host file's executable bit
    /// decides between 0755 and 0644.
    pub mode: Option<u32>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Table {
    name: Option<String>,
    tag: Option<String>,
    base: Option<String>,
    #[serde(rename = "build-env")]
    build_env: Option<String>,
    platforms: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    workdir: Option<String>,
    user: Option<String>,
    expose: Option<Vec<PortSpec>>,
    labels: Option<BTreeMap<String, String>>,
    files: Option<Vec<FileSpec>>,
    bin: Option<BTreeMap<String, Value>>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum PortSpec {
    Number(i64),
    Text(String),
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    src: String,
    dst: String,
    mode: Option<Value>,
}

/// Where a table was read from, for error messages and relative paths.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// The table's name, e.g. `package.metadata.imgbuild`.
    pub table: &'a str,
    /// The Cargo.toml holding it.
    pub manifest: &'a Path,
}

impl Origin<'_> {
    fn err(&self, message: impl Into<String>) -> Error {
        Error::InvalidConfig {
            table: self.table.to_string(),
            manifest: self.manifest.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Parses one `imgbuild` metadata table. `bin` selects the per-binary overrides to apply on top
/// (they are validated for every binary either way). `Value::Null` means no table.
pub fn parse_table(value: &Value, origin: &Origin<'_>, bin: Option<&str>) -> Result<ImageConfig> {
    if value.is_null() {
        return Ok(ImageConfig::default());
    }
    if !value.is_object() {
        return Err(origin.err(format!(
            "expected a table of keys such as `env` and `expose`, found {value}"
        )));
    }
    let table = deserialize_table(value, origin)?;
    let mut config = convert(
        Table {
            bin: None,
            ..table.clone()
        },
        origin,
    )?;
    if let Some(bins) = &table.bin {
        for (name, sub) in bins {
            let sub_table = format!("{}.bin.{name}", origin.table);
            let sub_origin = Origin {
                table: &sub_table,
                manifest: origin.manifest,
            };
            let parsed = deserialize_table(sub, &sub_origin)?;
            if parsed.bin.is_some() {
                return Err(sub_origin.err("`bin` tables cannot be nested"));
            }
            let parsed = convert(parsed, &sub_origin)?;
            if Some(name.as_str()) == bin {
                config = config.merge(parsed);
            }
        }
    }
    Ok(config)
}

/// The table as [`Table`]; a value of the wrong type is an error naming its key (serde's own
/// message does not), found by deserializing the keys one at a time.
fn deserialize_table(value: &Value, origin: &Origin<'_>) -> Result<Table> {
    serde_json::from_value(value.clone()).map_err(|e| {
        let key = value.as_object().and_then(|map| {
            map.iter().find_map(|(k, v)| {
                let one = Value::Object([(k.clone(), v.clone())].into_iter().collect());
                serde_json::from_value::<Table>(one)
                    .err()
                    .map(|e| (k.clone(), e))
            })
        });
        match key {
            Some((key, e)) if !e.to_string().starts_with("unknown field") => origin.err(format!(
                "`{key}` = {}: {e}; see the README's Configuration section for its type",
                value[&key]
            )),
            _ => origin.err(format!(
                "{e}; see the README's Configuration section for the accepted keys"
            )),
        }
    })
}

/// Checks the values a table gives, each error naming the key and an accepted value.
fn validate(table: &Table, origin: &Origin<'_>) -> Result<()> {
    if let Some(base) = &table.base
        && (base.trim().is_empty() || base.contains(char::is_whitespace))
    {
        return Err(origin.err(format!(
            "base = {base:?}: give an image reference such as \"debian:12-slim\" or \"scratch\""
        )));
    }
    if let Some(env) = &table.build_env
        && (env.trim().is_empty() || env.contains(char::is_whitespace))
    {
        return Err(origin.err(format!(
            "build-env = {env:?}: give an image reference such as \"registry.example/rust@sha256:…\" or \"oci:DIR:TAG\""
        )));
    }
    if let Some(name) = &table.name {
        validate_name(name).map_err(|m| origin.err(format!("name = {name:?}: {m}")))?;
    }
    if let Some(tag) = &table.tag {
        validate_tag(tag).map_err(|m| origin.err(format!("tag = {tag:?}: {m}")))?;
    }
    if table.entrypoint.as_ref().is_some_and(Vec::is_empty) {
        return Err(
            origin.err("entrypoint is empty; give the program to run, e.g. [\"/app/NAME\"]")
        );
    }
    for key in table.env.iter().flat_map(|env| env.keys()) {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(origin.err(format!("env key {key:?} is not a valid variable name")));
        }
    }
    if let Some(workdir) = &table.workdir
        && !workdir.starts_with('/')
    {
        return Err(origin.err(format!(
            "workdir = {workdir:?} must be an absolute path, e.g. \"/app\""
        )));
    }
    if let Some(user) = &table.user {
        validate_user(user).map_err(|m| origin.err(m))?;
    }
    Ok(())
}

fn convert(table: Table, origin: &Origin<'_>) -> Result<ImageConfig> {
    validate(&table, origin)?;
    let expose = match table.expose {
        None => None,
        Some(ports) => Some(
            ports
                .iter()
                .map(|p| normalize_port(p).map_err(|m| origin.err(m)))
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    let base_dir = origin.manifest.parent().unwrap_or(Path::new("."));
    let files = match table.files {
        None => None,
        Some(files) => Some(
            files
                .into_iter()
                .map(|f| convert_file(f, base_dir, origin))
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    Ok(ImageConfig {
        name: table.name,
        tag: table.tag,
        base: table.base,
        build_env: table.build_env,
        platforms: table.platforms,
        entrypoint: table.entrypoint,
        cmd: table.cmd,
        env: table.env.unwrap_or_default(),
        workdir: table.workdir,
        user: table.user,
        expose,
        labels: table.labels.unwrap_or_default(),
        files,
    })
}

fn convert_file(f: FileSpec, base_dir: &Path, origin: &Origin<'_>) -> Result<ExtraFile> {
    if !f.dst.starts_with('/') || f.dst.split('/').any(|c| c == "..") {
        return Err(origin.err(format!(
            "files: dst = {:?} must be an absolute path inside the image without `..`, e.g. \"/app/static\"",
            f.dst
        )));
    }
    if f.src.is_empty() {
        return Err(origin.err("files: src is empty"));
    }
    validate_src(&f.src).map_err(|m| origin.err(m))?;
    let mode = match f.mode {
        None => None,
        Some(Value::String(s)) => Some(
            u32::from_str_radix(s.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    origin.err(format!(
                        "files: mode = {s:?} is not an octal permission such as \"0644\""
                    ))
                })?,
        ),
        Some(other) => {
            return Err(origin.err(format!(
                "files: mode = {other} must be an octal string such as \"0644\" (a bare number is ambiguous)"
            )));
        }
    };
    Ok(ExtraFile {
        src: base_dir.join(&f.src),
        dst: f.dst,
        mode,
    })
}

fn normalize_port(p: &PortSpec) -> std::result::Result<String, String> {
    let (port, proto) = match p {
        PortSpec::Number(n) => (n.to_string(), "tcp".to_string()),
        PortSpec::Text(s) => match s.split_once('/') {
            Some((port, proto)) => (port.to_string(), proto.to_ascii_lowercase()),
            None => (s.clone(), "tcp".to_string()),
        },
    };
    let ok = port
        .parse::<u32>()
        .map(|n| (1..=65535).contains(&n))
        .unwrap_or(false);
    if !ok || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "expose: {port}/{proto} is not a port; use a number 1-65535 or \"PORT/tcp\", \"PORT/udp\""
        ));
    }
    Ok(format!("{port}/{proto}"))
}

/// The `build-env` values a Cargo.toml's text declares, read before cargo can run (cargo
/// itself may come from the build environment): `(package, workspace)` from
/// `[package.metadata.imgbuild]` and `[workspace.metadata.imgbuild]`. A pure line scan that
/// understands `build-env = "…"` under those headers; the value cargo later reports is
/// compared with it, so another spelling is an error, never a silent difference.
pub fn scan_build_env(manifest: &str) -> (Option<String>, Option<String>) {
    let (mut package, mut workspace) = (None, None);
    let mut section = "";
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = match line {
                "[package.metadata.imgbuild]" => "package",
                "[workspace.metadata.imgbuild]" => "workspace",
                _ => "",
            };
            continue;
        }
        let Some(rest) = line.strip_prefix("build-env") else {
            continue;
        };
        let Some(value) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        let value = value.split('#').next().unwrap_or_default().trim();
        let Some(value) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
            continue;
        };
        match section {
            "package" => package = Some(value.to_string()),
            "workspace" => workspace = Some(value.to_string()),
            _ => {}
        }
    }
    (package, workspace)
}

impl ImageConfig {
    /// The base image reference, unless it is `scratch` or unset.
    pub fn base_image(&self) -> Option<&str> {
        self.base.as_deref().filter(|b| *b != "scratch")
    }

    /// `self` overridden by `over`: scalars and lists replace, `env` and `labels` merge by key.
    pub fn merge(mut self, over: ImageConfig) -> ImageConfig {
        fn pick<T>(a: Option<T>, b: Option<T>) -> Option<T> {
            b.or(a)
        }
        self.name = pick(self.name, over.name);
        self.tag = pick(self.tag, over.tag);
        self.base = pick(self.base, over.base);
        self.build_env = pick(self.build_env, over.build_env);
        self.entrypoint = pick(self.entrypoint, over.entrypoint);
        self.cmd = pick(self.cmd, over.cmd);
        self.env.extend(over.env);
        self.workdir = pick(self.workdir, over.workdir);
        self.user = pick(self.user, over.user);
        self.expose = pick(self.expose, over.expose);
        self.labels.extend(over.labels);
        self.files = pick(self.files, over.files);
        self.platforms = pick(self.platforms, over.platforms);
        self
    }
}

#[cfg(test)]
mod tests;
