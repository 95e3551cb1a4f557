//! Paths of layer entries, as values: a tar entry's name normalized to a path relative to the
//! image root, and whiteout names recognized. Pure: nothing here touches the filesystem (the
//! symbolic-link checks against the staged tree are in [`super::tree`]).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::Error;

/// The prefix of a whiteout file's name (OCI image spec, "Whiteouts").
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The name of an opaque whiteout: the directory holding it hides its lower layers' contents.
const OPAQUE: &[u8] = b".wh..wh..opq";

/// Normalizes a tar entry's name (or a hard link's target): a leading `/` or `./` and empty or
/// `.` components are dropped. `None` if a component is `..`. An empty path is the image root.
pub(super) fn normalize(raw: &[u8]) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    Some(out)
}

/// What an entry's name says, before its type is looked at.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Name {
    /// An ordinary entry at this path.
    Plain,
    /// `DIR/.wh.NAME`: remove `DIR/NAME` (the path given) from the lower layers.
    Whiteout(PathBuf),
    /// `DIR/.wh..wh..opq`: hide everything the lower layers put in `DIR` (the path given).
    Opaque(PathBuf),
    /// Another `.wh..wh.*` name: aufs bookkeeping, not part of the image.
    AufsMeta,
}

/// Classifies a normalized path by its whiteout markers. A whiteout name anywhere but in the
/// last component (a whiteout with children) is an error.
pub(super) fn classify(rel: &Path, shown: &str) -> Result<Name, Error> {
    let mut components = rel.components();
    let Some(last) = components.next_back() else {
        return Ok(Name::Plain);
    };
    if components.any(|c| c.as_os_str().as_bytes().starts_with(WHITEOUT_PREFIX)) {
        return Err(invalid(shown, "a whiteout cannot have entries under it"));
    }
    let last = last.as_os_str().as_bytes();
    let dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
    if last == OPAQUE {
        return Ok(Name::Opaque(dir));
    }
    let Some(name) = last.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(Name::Plain);
    };
    if name.starts_with(WHITEOUT_PREFIX) {
        return Ok(Name::AufsMeta);
    }
    if matches!(name, b"" | b"." | b"..") {
        return Err(invalid(shown, "a whiteout must name one file"));
    }
    Ok(Name::Whiteout(dir.join(OsStr::from_bytes(name))))
}

/// The error for a refused entry.
pub(super) fn invalid(shown: &str, reason: impl Into<String>) -> Error {
    Error::InvalidEntry {
        path: shown.to_string(),
        reason: reason.into(),
    }
}

/// A path inside the image as users see it: `/etc/passwd`.
pub(super) fn in_image(rel: &Path) -> String {
    format!("/{}", rel.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_relative_and_parent_components_refused() {
        for (raw, want) in [
            ("etc/passwd", "etc/passwd"),
            ("/etc/passwd", "etc/passwd"),
            ("./etc//./passwd", "etc/passwd"),
            ("./", ""),
            ("/", ""),
            ("usr/lib/", "usr/lib"),
        ] {
            assert_eq!(
                normalize(raw.as_bytes()),
                Some(PathBuf::from(want)),
                "{raw}"
            );
        }
        for raw in [
            "..",
            "../escape",
            "a/../../escape",
            "a/..",
            "/../x",
            "./a/../b",
        ] {
            assert_eq!(normalize(raw.as_bytes()), None, "{raw}");
        }
    }

    #[test]
    fn whiteout_names_are_recognized() {
        let c = |p: &str| classify(Path::new(p), p);
        assert_eq!(c("etc/passwd").unwrap(), Name::Plain);
        assert_eq!(c("").unwrap(), Name::Plain);
        assert_eq!(
            c("etc/.wh.passwd").unwrap(),
            Name::Whiteout("etc/passwd".into())
        );
        assert_eq!(c(".wh.opt").unwrap(), Name::Whiteout("opt".into()));
        assert_eq!(c("var/.wh..wh..opq").unwrap(), Name::Opaque("var".into()));
        assert_eq!(c(".wh..wh..opq").unwrap(), Name::Opaque("".into()));
        assert_eq!(c(".wh..wh.plnk").unwrap(), Name::AufsMeta);
        for bad in ["etc/.wh.", "etc/.wh..", "etc/.wh...", ".wh.x/y"] {
            assert!(c(bad).is_err(), "{bad}");
        }
    }
}
