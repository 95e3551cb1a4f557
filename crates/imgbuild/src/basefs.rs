//! The filesystem model of a base image: each layer's entries ([`Listing`]) merged in order,
//! OCI whiteouts applied, into a [`BaseFs`] that answers where a path really lives.
//!
//! Pure: no IO. [`crate::base`] reads the layers and builds the listings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a path in the base is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Node {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link and its target.
    Symlink(String),
    /// A hard link to another path of the same layer.
    Hardlink(String),
    /// A device, FIFO or other special file.
    Other,
}

/// One layer's entries in archive order, with whiteouts as they appear.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Listing {
    pub(crate) entries: Vec<(String, Node)>,
}

/// The merged filesystem of a base image's layers.
#[derive(Debug, Clone, Default)]
pub(crate) struct BaseFs {
    /// Normalized absolute path → (what it is, index of the layer that last wrote it).
    pub(crate) nodes: BTreeMap<String, (Node, usize)>,
}

pub(crate) fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

impl BaseFs {
    /// Applies layers in order (OCI whiteouts: `.wh.NAME` removes NAME, `.wh..wh..opq` empties
    /// its directory of what earlier layers put there).
    pub(crate) fn apply(&mut self, index: usize, listing: &Listing) {
        for (path, node) in &listing.entries {
            let path = normalize(path);
            let name = path.rsplit('/').next().unwrap_or_default();
            let dir = parent_of(&path).to_string();
            if name == ".wh..wh..opq" {
                let prefix = format!("{}/", dir.trim_end_matches('/'));
                self.nodes
                    .retain(|p, (_, layer)| !(p.starts_with(&prefix) && *layer < index));
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let gone = format!("{}/{hidden}", dir.trim_end_matches('/'));
                let prefix = format!("{gone}/");
                self.nodes
                    .retain(|p, _| *p != gone && !p.starts_with(&prefix));
                continue;
            }
            self.nodes.insert(path, (node.clone(), index));
        }
    }

    /// Follows symlinks (in every component) to the path that really holds `path`, and what
    /// is there. `None` when it does not exist or loops.
    pub(crate) fn resolve(&self, path: &str) -> Option<(String, Node, usize)> {
        let mut pending: Vec<String> = normalize(path)
            .split('/')
            .filter(|p| !p.is_empty())
            .rev()
            .map(String::from)
            .collect();
        let mut current = String::from("/");
        let mut hops = 0;
        let mut last = (Node::Dir, 0);
        while let Some(part) = pending.pop() {
            if part == ".." {
                current = parent_of(&current).to_string();
                continue;
            }
            let candidate = normalize(&format!("{current}/{part}"));
            let (node, layer) = match self.nodes.get(&candidate) {
                Some(found) => found.clone(),
                // Layers may omit parent directories: a path with entries below it is one.
                None if self.has_children(&candidate) => (Node::Dir, 0),
                None => return None,
            };
            match &node {
                Node::Symlink(target) => {
                    hops += 1;
                    if hops > 40 {
                        return None;
                    }
                    if target.starts_with('/') {
                        current = String::from("/");
                    }
                    for p in target
                        .split('/')
                        .filter(|p| !p.is_empty() && *p != ".")
                        .rev()
                    {
                        pending.push(p.to_string());
                    }
                }
                _ => {
                    current = candidate;
                    last = (node, layer);
                }
            }
        }
        Some((current, last.0, last.1))
    }

    fn has_children(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.nodes
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(p, _)| p.starts_with(&prefix))
    }

    /// Where the base has library `soname` in the loader's default directories, if it does.
    pub(crate) fn find_library(&self, soname: &str) -> Option<String> {
        let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
        [
            format!("/lib/{multiarch}"),
            format!("/usr/lib/{multiarch}"),
            "/lib64".to_string(),
            "/usr/lib64".to_string(),
            "/lib".to_string(),
            "/usr/lib".to_string(),
        ]
        .iter()
        .find_map(|dir| match self.resolve(&format!("{dir}/{soname}")) {
            Some((real, Node::File | Node::Hardlink(_), _)) => Some(real),
            _ => None,
        })
    }

    /// Whether the base has a regular file at `path` (after symlinks).
    pub(crate) fn has_file(&self, path: &str) -> bool {
        matches!(
            self.resolve(path),
            Some((_, Node::File | Node::Hardlink(_), _))
        )
    }

    /// `path` with its directory resolved through the base's symlinks, so that a layer
    /// writing it does not replace a base symlink with a directory.
    pub(crate) fn placement(&self, path: &str) -> String {
        let path = normalize(path);
        let name = path.rsplit('/').next().unwrap_or_default();
        match self.resolve(parent_of(&path)) {
            Some((dir, Node::Dir, _)) => normalize(&format!("{dir}/{name}")),
            _ => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(entries: &[(&str, Node)]) -> BaseFs {
        let mut fs = BaseFs::default();
        fs.apply(
            0,
            &Listing {
                entries: entries
                    .iter()
                    .map(|(p, n)| (p.to_string(), n.clone()))
                    .collect(),
            },
        );
        fs
    }

    #[test]
    fn merged_usr_symlinks_are_followed() {
        let fs = fs(&[
            ("lib", Node::Symlink("usr/lib".into())),
            ("lib64", Node::Symlink("usr/lib64".into())),
            ("usr/lib/x86_64-linux-gnu/libc.so.6", Node::File),
            (
                "usr/lib64/ld-linux-x86-64.so.2",
                Node::Symlink("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into()),
            ),
            ("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", Node::File),
            ("usr/lib/x86_64-linux-gnu", Node::Dir),
            ("usr/lib", Node::Dir),
        ]);
        assert_eq!(
            fs.resolve("/lib/x86_64-linux-gnu/libc.so.6").map(|r| r.0),
            Some("/usr/lib/x86_64-linux-gnu/libc.so.6".to_string())
        );
        assert!(fs.has_file("/lib64/ld-linux-x86-64.so.2"));
        assert_eq!(
            fs.placement("/lib/x86_64-linux-gnu/libssl.so.3"),
            "/usr/lib/x86_64-linux-gnu/libssl.so.3"
        );
        if std::env::consts::ARCH == "x86_64" {
            assert!(fs.find_library("libc.so.6").is_some());
        }
        assert!(fs.find_library("libssl.so.3").is_none());
    }

    #[test]
    fn whiteouts_remove_earlier_entries() {
        let mut base = fs(&[
            ("etc/a", Node::File),
            ("etc/b", Node::File),
            ("opt/x/y", Node::File),
        ]);
        base.apply(
            1,
            &Listing {
                entries: vec![
                    ("etc/.wh.a".into(), Node::File),
                    ("opt/x/.wh..wh..opq".into(), Node::File),
                    ("opt/x/z".into(), Node::File),
                ],
            },
        );
        assert!(!base.has_file("/etc/a"));
        assert!(base.has_file("/etc/b"));
        assert!(!base.has_file("/opt/x/y"));
        assert!(base.has_file("/opt/x/z"));
    }
}
