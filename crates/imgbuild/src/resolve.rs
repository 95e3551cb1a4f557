//! `imgbuild resolve`, the pure part: finds the image references written as
//! `imgbuild://PACKAGE[/BIN]` in YAML documents (Kubernetes manifests, Compose files, Helm
//! values) and writes the documents back with each replaced by the pushed image's digest
//! reference, every other byte kept: comments, order, quoting, indentation.
//!
//! The YAML is parsed (so bad YAML is an error that names the line, and a reference inside a
//! comment or a block scalar is not one), and only the scalar's own bytes are replaced.

use std::collections::BTreeMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::{Error, Result};

/// The scheme that marks an image reference to resolve.
pub const SCHEME: &str = "imgbuild://";

/// A binary to build: `imgbuild://PACKAGE` or `imgbuild://PACKAGE/BIN`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct ImageRef {
    /// The package.
    pub package: String,
    /// The binary, when the package has several.
    pub bin: Option<String>,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.package)?;
        if let Some(bin) = &self.bin {
            write!(f, "/{bin}")?;
        }
        Ok(())
    }
}

/// Where a reference is written: the byte range of the reference text in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Occurrence {
    /// The binary it names.
    pub image: ImageRef,
    /// Its bytes in the text (inside the quotes of a quoted scalar).
    pub range: std::ops::Range<usize>,
    /// Its line (1-based).
    pub line: usize,
}

/// Finds every `imgbuild://` reference in `text` (one or more YAML documents; `source` names
/// it in errors). A scalar is a reference when its whole value is one.
pub fn references(text: &str, source: &str) -> Result<Vec<Occurrence>> {
    let mut found = Vec::new();
    let chars = CharIndex::new(text);
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| Error::Yaml {
            source_name: source.to_string(),
            line: e.marker().line(),
            column: e.marker().col() + 1,
            reason: e.info().to_string(),
        })?;
        let Event::Scalar(value, style, ..) = event else {
            continue;
        };
        // A block scalar is text (a script, a config file), never an image reference.
        if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
            continue;
        }
        let Some(rest) = value.trim().strip_prefix(SCHEME) else {
            continue;
        };
        let line = span.start.line();
        let bad = |why: &str| Error::Yaml {
            source_name: source.to_string(),
            line,
            column: span.start.col() + 1,
            reason: format!("{value:?}: {why}"),
        };
        if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
            return Err(bad(
                "write an image reference as a plain or quoted scalar, not a block",
            ));
        }
        let image = parse(rest).map_err(|why| bad(&why))?;
        let start = chars.byte(span.start.index());
        let end = chars.byte(span.end.index());
        let scalar = &text[start..end];
        let written = format!("{SCHEME}{rest}");
        let Some(at) = scalar.find(&written) else {
            return Err(bad(
                "written with escapes or line breaks; write it on one line as it is",
            ));
        };
        found.push(Occurrence {
            image,
            range: start + at..start + at + written.len(),
            line,
        });
    }
    Ok(found)
}

fn parse(rest: &str) -> std::result::Result<ImageRef, String> {
    let (package, bin) = match rest.split_once('/') {
        Some((p, b)) => (p, Some(b)),
        None => (rest, None),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !valid(package) || bin.is_some_and(|b| !valid(b)) {
        return Err(format!(
            "expected {SCHEME}PACKAGE or {SCHEME}PACKAGE/BIN (names of letters, digits, '-' and '_')"
        ));
    }
    Ok(ImageRef {
        package: package.to_string(),
        bin: bin.map(str::to_string),
    })
}

/// `text` with every occurrence replaced by its image's entry in `resolved` (all must be
/// there).
pub fn rewrite(text: &str, found: &[Occurrence], resolved: &BTreeMap<ImageRef, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut sorted: Vec<&Occurrence> = found.iter().collect();
    sorted.sort_by_key(|o| o.range.start);
    for o in sorted {
        out.push_str(&text[at..o.range.start]);
        match resolved.get(&o.image) {
            Some(r) => out.push_str(r),
            None => out.push_str(&text[o.range.clone()]),
        }
        at = o.range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Turns the parser's character positions into byte offsets.
struct CharIndex {
    /// The byte offset of every character, and the text's length at the end.
    offsets: Vec<usize>,
}

impl CharIndex {
    fn new(text: &str) -> Self {
        let mut offsets: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        offsets.push(text.len());
        Self { offsets }
    }

    fn byte(&self, char_index: usize) -> usize {
        self.offsets
            .get(char_index)
            .copied()
            .unwrap_or_else(|| *self.offsets.last().unwrap_or(&0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = r#"# The API, with its worker beside it.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api   # keep this name
spec:
  template:
    spec:
      containers:
        - name: api
          image: imgbuild://api
          args: ["--port", '8080']
        - name: worker
          image: "imgbuild://jobs/worker"
---
# A second document, the same image again, single-quoted.
kind: Job
spec:
  image: 'imgbuild://api'
  note: |
    imgbuild://api in a block is text, not a reference
  # image: imgbuild://commented-out
"#;

    fn r(package: &str, bin: Option<&str>) -> ImageRef {
        ImageRef {
            package: package.into(),
            bin: bin.map(str::to_string),
        }
    }

    #[test]
    fn references_are_found_in_scalars_only() {
        let found = references(DEPLOYMENT, "deploy.yaml").unwrap();
        let images: Vec<(ImageRef, usize)> =
            found.iter().map(|o| (o.image.clone(), o.line)).collect();
        assert_eq!(
            images,
            [
                (r("api", None), 11),
                (r("jobs", Some("worker")), 14),
                (r("api", None), 19)
            ]
        );
        for o in &found {
            assert_eq!(&DEPLOYMENT[o.range.clone()], o.image.to_string());
        }
    }

    #[test]
    fn rewriting_changes_the_references_and_nothing_else() {
        let found = references(DEPLOYMENT, "deploy.yaml").unwrap();
        let resolved = BTreeMap::from([
            (r("api", None), "reg:5000/t/api@sha256:aa".to_string()),
            (
                r("jobs", Some("worker")),
                "reg:5000/t/worker@sha256:bb".to_string(),
            ),
        ]);
        let out = rewrite(DEPLOYMENT, &found, &resolved);
        let expected = DEPLOYMENT
            .replace("image: imgbuild://api", "image: reg:5000/t/api@sha256:aa")
            .replace(
                "\"imgbuild://jobs/worker\"",
                "\"reg:5000/t/worker@sha256:bb\"",
            )
            .replace("'imgbuild://api'", "'reg:5000/t/api@sha256:aa'");
        assert_eq!(out, expected);
        assert!(out.contains("imgbuild://api in a block"));
        assert!(out.contains("# image: imgbuild://commented-out"));
        // What was written still parses, and the values are the references.
        assert!(references(&out, "out").unwrap().is_empty());
    }

    #[test]
    fn non_ascii_text_before_a_reference_keeps_offsets_right() {
        let text = "title: \"Zürich — 東京\"\nimage: imgbuild://api\n";
        let found = references(text, "x").unwrap();
        assert_eq!(&text[found[0].range.clone()], "imgbuild://api");
    }

    #[test]
    fn bad_yaml_and_bad_references_name_the_place() {
        let e = references("a: [1, 2\nb: c\n", "broken.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("broken.yaml:"), "{e}");
        let e = references("x:\n  image: imgbuild://a/b/c\n", "k.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("k.yaml:2:") && e.contains("PACKAGE/BIN"), "{e}");
        let e = references("image: imgbuild://\n", "k.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("PACKAGE"), "{e}");
    }
}
