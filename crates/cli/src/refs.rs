//! `--image-refs FILE`: the pushed images' digest references, one per line, for the next step
//! of a pipeline (a deploy, a signature, a scan).
//!
//! Writes that one file: beside it first, then renamed over it, so a reader never sees half.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use imgbuild_registry::Reference;

fn parent(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Fails before anything is built when `file` cannot be written: it is a directory, or its
/// directory does not exist.
pub(crate) fn check_writable(file: &Path) -> Result<()> {
    if file.is_dir() {
        bail!(
            "--image-refs {}: is a directory; name a file",
            file.display()
        );
    }
    let dir = parent(file);
    if !dir.is_dir() {
        bail!(
            "--image-refs {}: the directory {} does not exist; create it first",
            file.display(),
            dir.display()
        );
    }
    Ok(())
}

/// The file's text: one `REGISTRY/REPOSITORY@sha256:…` line per pushed image.
pub(crate) fn text(pushed: &[Reference]) -> String {
    pushed.iter().map(|r| format!("{r}\n")).collect()
}

/// Writes the references to `file` (temporary file, then rename).
pub(crate) fn write(file: &Path, pushed: &[Reference]) -> Result<()> {
    let name = file
        .file_name()
        .with_context(|| format!("--image-refs {}: not a file name", file.display()))?;
    let tmp = parent(file).join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, text(pushed)).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("renaming {} to {}", tmp.display(), file.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_digest_reference_per_line() {
        let mut r = Reference::parse("127.0.0.1:5000/team/app").unwrap();
        r.digest = Some(format!("sha256:{}", "a".repeat(64)));
        assert_eq!(
            text(&[r]),
            format!("127.0.0.1:5000/team/app@sha256:{}\n", "a".repeat(64))
        );
        assert_eq!(text(&[]), "");
    }
}
