//! `imgbuild build` (and `push`, a build with one more output): the override flags as a
//! configuration layer, the build, the digest on stdout.

use std::io::Write;

use anyhow::{Context, Result, bail};
use imgbuild::ImageConfig;
use imgbuild::output::Output;

use crate::args::{BuildArgs, MessageFormat};
use crate::console::Console;
use crate::human::{Human, Json};

fn key_value(flag: &str, s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("{flag} {s:?}: expected KEY=VALUE"))?;
    if k.is_empty() {
        bail!("{flag} {s:?}: the key is empty");
    }
    Ok((k.to_string(), v.to_string()))
}

fn argv(flag: &str, s: &str) -> Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        return serde_json::from_str(s)
            .with_context(|| format!("{flag} {s:?}: not a JSON array of strings"));
    }
    Ok(vec![s.to_string()])
}

/// Turns the override flags into a configuration layer, validated like a metadata table.
fn overrides(args: &BuildArgs) -> Result<ImageConfig> {
    let mut table = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        table.insert(k.to_string(), v);
    };
    if let Some(v) = &args.name {
        put("name", v.clone().into());
    }
    if let Some(v) = args.tag.first() {
        put("tag", v.clone().into());
    }
    if let Some(v) = &args.entrypoint {
        put("entrypoint", argv("--entrypoint", v)?.into());
    }
    if let Some(v) = &args.cmd {
        put("cmd", argv("--cmd", v)?.into());
    }
    if let Some(v) = &args.user {
        put("user", v.clone().into());
    }
    if let Some(v) = &args.workdir {
        put("workdir", v.clone().into());
    }
    if let Some(v) = &args.base {
        put("base", v.clone().into());
    }
    if !args.env.is_empty() {
        let map: serde_json::Map<_, _> = args
            .env
            .iter()
            .map(|s| key_value("--env", s).map(|(k, v)| (k, v.into())))
            .collect::<Result<_>>()?;
        put("env", map.into());
    }
    if !args.labels.is_empty() {
        let map: serde_json::Map<_, _> = args
            .labels
            .iter()
            .map(|s| key_value("--label", s).map(|(k, v)| (k, v.into())))
            .collect::<Result<_>>()?;
        put("labels", map.into());
    }
    if !args.expose.is_empty() {
        put("expose", args.expose.clone().into());
    }
    let origin = imgbuild_cargo::config::Origin {
        table: "command-line flags",
        manifest: std::path::Path::new("(command line)"),
    };
    Ok(imgbuild_cargo::config::parse_table(
        &serde_json::Value::Object(table),
        &origin,
        None,
    )?)
}

/// `imgbuild push [REF]`: a build with one more output, `REF` or `REPO/<image name>`.
pub(crate) fn run_push(
    args: BuildArgs,
    reference: Option<String>,
    repo: Option<String>,
    console: &Console,
) -> Result<()> {
    let output = match (reference, repo) {
        (Some(reference), _) => format!("docker://{reference}").parse::<Output>()?,
        (None, Some(repo)) => Output::repo(&repo)?,
        (None, None) => bail!(
            "push needs a destination: give REF (e.g. ghcr.io/acme/app:1.0), or --repo REPO / IMGBUILD_REPO=REPO to push to REPO/<image name>"
        ),
    };
    build_with(args, vec![output], console)
}

pub(crate) fn run_build(args: BuildArgs, console: &Console) -> Result<()> {
    build_with(args, Vec::new(), console)
}

fn build_with(args: BuildArgs, more_outputs: Vec<Output>, console: &Console) -> Result<()> {
    let (options, format) = options(&args, more_outputs)?;
    if let Some(file) = &args.image_refs {
        crate::refs::check_writable(file)?;
    }
    let image = build_one(&options, format, console)?;
    if format == MessageFormat::Human {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", image.manifest.digest()).context("writing the digest to stdout")?;
    }
    if let Some(file) = &args.image_refs {
        crate::refs::write(file, &image.pushed)?;
    }
    Ok(())
}

/// Builds with events reported as `format` asks (human: on stderr; JSON: on stdout).
pub(crate) fn build_one(
    options: &imgbuild::BuildOptions,
    format: MessageFormat,
    console: &Console,
) -> Result<imgbuild::BuiltImage> {
    Ok(match format {
        MessageFormat::Json => imgbuild::build(options, &Json)?,
        MessageFormat::Human => imgbuild::build(options, &Human { console })?,
    })
}

/// The build options the flags ask for, `more_outputs` added to `--output`'s.
pub(crate) fn options(
    args: &BuildArgs,
    more_outputs: Vec<Output>,
) -> Result<(imgbuild::BuildOptions, MessageFormat)> {
    let mut outputs = args
        .outputs
        .iter()
        .map(|o| o.parse::<Output>())
        .collect::<Result<Vec<_>, _>>()?;
    outputs.extend(more_outputs);
    for tag in &args.tag {
        imgbuild_cargo::config::validate_tag(tag)
            .map_err(|why| anyhow::anyhow!("--tag {tag:?}: {why}"))?;
    }
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(imgbuild::parse_source_date_epoch(&v)?),
        _ => None,
    };
    let overrides = overrides(args)?;
    let format = args.selection.message_format;
    let mut options = args.selection.clone().options();
    options.overrides = overrides;
    options.source_date_epoch = source_date_epoch;
    options.outputs = outputs;
    options.push_tags = args.tag.clone();
    if let Some(list) = &args.platform {
        options.platforms = imgbuild::platform::parse_list(list)?;
    }
    options.cache = match (args.no_dependency_cache, args.rebuild) {
        (true, _) => imgbuild::CacheMode::Off,
        (false, true) => imgbuild::CacheMode::Rebuild,
        (false, false) => imgbuild::CacheMode::Use,
    };
    options.registry.insecure = args.insecure_registry.clone();
    options.registry.timeout = args.registry_timeout.map(std::time::Duration::from_secs);
    options.registry.deadline = args.registry_deadline.map(std::time::Duration::from_secs);
    options.registry.on_retry = Some(crate::human::retry_hook(format));
    options.allow_network = args.allow_network;
    options.pass_env = args.pass_env.clone();
    let mut supply = imgbuild::SupplyChain::default();
    supply.sbom = args.sbom.into();
    supply.provenance = !args.no_provenance;
    supply.audit_data = !args.no_audit_data;
    supply.keep_debuginfo = args.keep_debuginfo;
    options.supply = supply;
    options.cache_repo = args
        .cache_repo
        .as_deref()
        .map(imgbuild_registry::Reference::parse)
        .transpose()
        .context("--cache-repo")?;
    options.cache_repo_mode = args.cache_mode.into();
    options.cache_sign_key = args.cache_sign_key.clone();
    options.cache_trust = args.cache_trust.clone();
    options.sign_key = args.sign_key.clone();
    Ok((options, format))
}
