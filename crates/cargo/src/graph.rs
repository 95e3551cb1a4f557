//! The package graph of a workspace (pure): every package's source and declared license, and
//! the dependency edges of cargo's resolve, from a [`cargo_metadata::Metadata`] value.
//!
//! A binary's exact package set comes from `cargo tree` ([`crate::plan::parse_tree`]); this
//! graph adds what `cargo tree`'s flat listing does not say: who depends on whom, which
//! packages only run at build time (build scripts, proc macros), and licenses. That is what
//! the SBOMs and the embedded audit data describe.

use std::collections::{BTreeMap, BTreeSet};

use cargo_metadata::{DependencyKind, Metadata, TargetKind};

use crate::plan::TreeEntry;

/// `(name, version)`: how the tree and the lockfile name a package.
pub type PackageKey = (String, String);

/// One package of the workspace's resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    source: Option<String>,
    license: Option<String>,
    proc_macro: bool,
    /// Dependencies and whether the edge is a normal (run-time) one; dev edges are left out.
    deps: Vec<(PackageKey, bool)>,
}

/// The workspace's packages and their dependency edges.
#[derive(Debug, Clone, Default)]
pub struct PackageGraph {
    nodes: BTreeMap<PackageKey, Node>,
}

/// A package of one binary's tree, as the SBOM and the audit data describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TreePackage {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Cargo's source id (`registry+…`, `git+…`); `None` for path packages.
    pub source: Option<String>,
    /// `package.license` as written.
    pub license: Option<String>,
    /// Whether code of this package can end up in the binary: reachable from the root through
    /// normal dependencies, not through a build dependency or a proc macro.
    pub runtime: bool,
    /// Indices (into the same list) of its dependencies within the tree.
    pub dependencies: Vec<usize>,
    /// Whether it is the binary's own package.
    pub root: bool,
}

impl PackageGraph {
    /// The graph of `meta`'s resolve (empty when `cargo metadata` ran with `--no-deps`).
    pub fn new(meta: &Metadata) -> Self {
        let key_of: BTreeMap<_, _> = meta
            .packages
            .iter()
            .map(|p| (p.id.clone(), (p.name.to_string(), p.version.to_string())))
            .collect();
        let mut nodes: BTreeMap<PackageKey, Node> = meta
            .packages
            .iter()
            .map(|p| {
                let node = Node {
                    source: p.source.as_ref().map(|s| s.repr.clone()),
                    license: p.license.clone(),
                    proc_macro: p
                        .targets
                        .iter()
                        .any(|t| t.kind.contains(&TargetKind::ProcMacro)),
                    deps: Vec::new(),
                };
                ((p.name.to_string(), p.version.to_string()), node)
            })
            .collect();
        for n in meta.resolve.iter().flat_map(|r| &r.nodes) {
            let Some(key) = key_of.get(&n.id) else {
                continue;
            };
            let deps: Vec<(PackageKey, bool)> = n
                .deps
                .iter()
                .filter_map(|d| {
                    let dep = key_of.get(&d.pkg)?.clone();
                    let kinds = d.dep_kinds.iter().map(|k| k.kind);
                    let mut normal = false;
                    let mut build = false;
                    for k in kinds {
                        normal |= k == DependencyKind::Normal;
                        build |= k == DependencyKind::Build;
                    }
                    (normal || build).then_some((dep, normal))
                })
                .collect();
            if let Some(node) = nodes.get_mut(key) {
                node.deps = deps;
            }
        }
        Self { nodes }
    }

    /// The packages of `tree` (sorted as given), with edges within it; `root` is the binary's
    /// package. Packages the graph does not know keep no edges and no license.
    pub fn packages(&self, tree: &[TreeEntry], root: &str) -> Vec<TreePackage> {
        let keys: Vec<PackageKey> = tree
            .iter()
            .map(|e| (e.name.clone(), e.version.clone()))
            .collect();
        let index: BTreeMap<&PackageKey, usize> =
            keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
        let root_index = keys.iter().position(|(name, _)| name == root);
        let runtime = self.runtime_set(&keys, &index, root_index);
        keys.iter()
            .enumerate()
            .map(|(i, key)| {
                let node = self.nodes.get(key);
                let mut dependencies: Vec<usize> = node
                    .map(|n| n.deps.iter().filter_map(|(d, _)| index.get(d).copied()))
                    .into_iter()
                    .flatten()
                    .filter(|&d| d != i)
                    .collect();
                dependencies.sort_unstable();
                dependencies.dedup();
                TreePackage {
                    name: key.0.clone(),
                    version: key.1.clone(),
                    source: node.and_then(|n| n.source.clone()),
                    license: node.and_then(|n| n.license.clone()),
                    runtime: runtime.contains(&i),
                    dependencies,
                    root: Some(i) == root_index,
                }
            })
            .collect()
    }

    /// The tree's packages reachable from the root through normal edges, never entering a
    /// proc macro.
    fn runtime_set(
        &self,
        keys: &[PackageKey],
        index: &BTreeMap<&PackageKey, usize>,
        root: Option<usize>,
    ) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<usize> = root.into_iter().collect();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            let Some(node) = self.nodes.get(&keys[i]) else {
                continue;
            };
            for (dep, normal) in &node.deps {
                let Some(&d) = index.get(dep) else {
                    continue;
                };
                let proc_macro = self.nodes.get(dep).is_some_and(|n| n.proc_macro);
                if *normal && !proc_macro {
                    stack.push(d);
                }
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, version: &str) -> TreeEntry {
        TreeEntry {
            name: name.into(),
            version: version.into(),
            location: None,
            features: Vec::new(),
        }
    }

    fn graph(edges: &[(&str, &str, bool)], proc_macros: &[&str]) -> PackageGraph {
        let mut nodes = BTreeMap::new();
        for name in ["app", "serde", "serde_derive", "cc", "itoa", "syn"] {
            nodes.insert(
                (name.to_string(), "1.0.0".to_string()),
                Node {
                    source: (name != "app").then(|| "registry+crates.io".into()),
                    license: Some("MIT".into()),
                    proc_macro: proc_macros.contains(&name),
                    deps: edges
                        .iter()
                        .filter(|(from, _, _)| *from == name)
                        .map(|(_, to, normal)| ((to.to_string(), "1.0.0".to_string()), *normal))
                        .collect(),
                },
            );
        }
        PackageGraph { nodes }
    }

    #[test]
    fn build_dependencies_and_proc_macros_are_build_time_and_edges_stay_in_the_tree() {
        let g = graph(
            &[
                ("app", "serde", true),
                ("app", "cc", false),
                ("serde", "serde_derive", true),
                ("serde_derive", "syn", true),
                ("app", "itoa", true),
                ("itoa", "outside", true),
            ],
            &["serde_derive"],
        );
        let tree: Vec<TreeEntry> = ["app", "cc", "itoa", "serde", "serde_derive", "syn"]
            .iter()
            .map(|n| entry(n, "1.0.0"))
            .collect();
        let packages = g.packages(&tree, "app");
        let by_name = |n: &str| packages.iter().find(|p| p.name == n).unwrap();
        assert!(by_name("app").root && by_name("app").runtime);
        assert_eq!(by_name("app").dependencies, vec![1, 2, 3]);
        assert!(by_name("serde").runtime && by_name("itoa").runtime);
        assert!(!by_name("cc").runtime, "build dependency");
        assert!(!by_name("serde_derive").runtime, "proc macro");
        assert!(!by_name("syn").runtime, "only a proc macro's dependency");
        assert!(
            by_name("itoa").dependencies.is_empty(),
            "edge out of the tree"
        );
        assert_eq!(packages.iter().filter(|p| p.root).count(), 1);
    }
}
