//! `imgbuild resolve -f FILE|DIR|-`: the deploy step ko users know. Reads YAML, builds and
//! pushes each image `imgbuild://PACKAGE[/BIN]` names (once, however often it is named) to
//! `REPO/<image name>`, and prints the YAML with each reference replaced by the pushed digest
//! reference — after every image is pushed, so a failure prints no YAML at all.
//!
//! Reads the named files (or stdin) and writes stdout; the builds go through the library.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use imgbuild::output::Output;
use imgbuild::resolve::{self, ImageRef, Occurrence};

use crate::args::{MessageFormat, ResolveArgs};
use crate::console::Console;

/// One YAML input: its name in messages, its text and the references in it.
struct Input {
    name: String,
    text: String,
    found: Vec<Occurrence>,
}

pub(crate) fn run_resolve(args: ResolveArgs, console: &Console) -> Result<()> {
    let ResolveArgs { files, repo, build } = args;
    if build.selection.package.is_some() || build.selection.bin.is_some() || build.name.is_some() {
        bail!(
            "resolve builds the packages its YAML names (imgbuild://PACKAGE[/BIN]) and names each image after its binary; drop -p, --bin and --name"
        );
    }
    if !build.outputs.is_empty() {
        bail!("resolve pushes to --repo only; drop --output");
    }
    if build.selection.message_format == MessageFormat::Json {
        bail!(
            "resolve prints the YAML on stdout, so it has no JSON events; use --image-refs FILE for the pushed references"
        );
    }
    let Some(repo) = repo else {
        bail!(
            "resolve needs a repository to push to: --repo REPO or IMGBUILD_REPO=REPO (images go to REPO/<image name>)"
        );
    };
    let destination = Output::repo(&repo)?;
    let inputs = read_inputs(&files)?;
    if let Some(file) = &build.image_refs {
        crate::refs::check_writable(file)?;
    }
    let (options, format) = crate::build::options(&build, vec![destination])?;
    let mentions = first_mentions(&inputs);
    for (image, (file, line)) in &mentions {
        let selection = [(image.package.clone(), image.bin.clone())];
        imgbuild::check_selections(&options, &selection)
            .with_context(|| format!("{image} (named at {file}:{line})"))?;
    }

    let mut resolved: BTreeMap<ImageRef, String> = BTreeMap::new();
    let mut pushed = Vec::new();
    for (image, (file, line)) in mentions {
        let mut one = options.clone();
        one.package = Some(image.package.clone());
        one.bin = image.bin.clone();
        let built = crate::build::build_one(&one, format, console)
            .with_context(|| format!("building and pushing {image} (named at {file}:{line})"))?;
        let reference = built
            .pushed
            .first()
            .with_context(|| format!("{image} was built but not pushed"))?;
        resolved.insert(image, reference.to_string());
        pushed.push(reference.clone());
    }
    let text = rewrite_all(&inputs, &resolved);
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the resolved YAML to stdout")?;
    if let Some(file) = &build.image_refs {
        crate::refs::write(file, &pushed)?;
    }
    Ok(())
}

/// Every image named, with the first place it is named.
fn first_mentions(inputs: &[Input]) -> BTreeMap<ImageRef, (&str, usize)> {
    let mut first = BTreeMap::new();
    for input in inputs {
        for o in &input.found {
            first
                .entry(o.image.clone())
                .or_insert((input.name.as_str(), o.line));
        }
    }
    first
}

/// The inputs rewritten and joined as one stream of documents (`---` between files).
fn rewrite_all(inputs: &[Input], resolved: &BTreeMap<ImageRef, String>) -> String {
    let mut text = String::new();
    for input in inputs {
        if !text.is_empty() {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            if !input.text.starts_with("---") {
                text.push_str("---\n");
            }
        }
        text.push_str(&resolve::rewrite(&input.text, &input.found, resolved));
    }
    text
}

/// Reads every `-f`: a file, a directory's `*.yaml`/`*.yml` files by name, or `-` (stdin);
/// and finds the references in each, so bad YAML fails before anything is built.
fn read_inputs(files: &[PathBuf]) -> Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for path in files {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading YAML from stdin")?;
            inputs.push(input("-".into(), text)?);
        } else if path.is_dir() {
            for file in yaml_files(path)? {
                let text = read(&file)?;
                inputs.push(input(file.display().to_string(), text)?);
            }
        } else {
            inputs.push(input(path.display().to_string(), read(path)?)?);
        }
    }
    Ok(inputs)
}

fn input(name: String, text: String) -> Result<Input> {
    let found = resolve::references(&text, &name)?;
    Ok(Input { name, text, found })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .yaml or .yml file", dir.display());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_joined_as_one_stream_of_documents() {
        let a = input("a.yaml".into(), "image: imgbuild://api".into()).unwrap();
        let b = input("b.yaml".into(), "---\nx: 1\n".into()).unwrap();
        let c = input("c.yaml".into(), "y: imgbuild://api\n".into()).unwrap();
        let inputs = [a, b, c];
        let resolved = BTreeMap::from([(
            inputs[0].found[0].image.clone(),
            "r/api@sha256:1".to_string(),
        )]);
        assert_eq!(
            rewrite_all(&inputs, &resolved),
            "image: r/api@sha256:1\n---\nx: 1\n---\ny: r/api@sha256:1\n"
        );
        let firsts = first_mentions(&inputs);
        assert_eq!(firsts.len(), 1);
        assert_eq!(firsts.values().next(), Some(&("a.yaml", 1)));
    }
}
