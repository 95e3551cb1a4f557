//! `imgbuild verify`: two builds in two folders, compared.

use std::io::Write;

use anyhow::{Result, bail};

use crate::args::{MessageFormat, VerifyArgs};
use crate::console::Console;
use crate::human::Human;

pub(crate) fn run_verify(args: VerifyArgs, console: &Console) -> Result<()> {
    let format = args.selection.message_format;
    let mut options = args.selection.options();
    options.pass_env = args.pass_env;
    options.source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(imgbuild::parse_source_date_epoch(&v)?),
        _ => None,
    };
    let human = Human { console };
    let verdict = match format {
        MessageFormat::Json => imgbuild::verify::verify(&options, &imgbuild::event::Silent)?,
        MessageFormat::Human => imgbuild::verify::verify(&options, &human)?,
    };
    let mut out = std::io::stdout().lock();
    match format {
        MessageFormat::Json => writeln!(out, "{}", serde_json::to_string(&verdict)?)?,
        MessageFormat::Human if verdict.reproducible => {
            console.status(
                "Verified",
                "reproducible: two builds in different folders gave the same image",
            );
            writeln!(out, "reproducible {}", verdict.first)?;
        }
        MessageFormat::Human => {}
    }
    if !verdict.reproducible {
        bail!(
            "not reproducible: the two builds gave {} and {}:\n  {}",
            verdict.first,
            verdict.second,
            verdict.differences.join("\n  ")
        );
    }
    Ok(())
}
