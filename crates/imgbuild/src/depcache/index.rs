//! The cache repository's index of dependency entries (tag `deps-index`): each entry's key,
//! binary, toolchain and packages, so that a binary no entry was built for — a new project of
//! the same team — starts from the entry sharing the most packages. Pushes keep it up to date
//! (read, add, write: a concurrent push may drop another's line, which costs a warm start,
//! never a wrong build: whatever is chosen is restored and cargo recompiles what differs).
//! Pure.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The tag of the index in the cache repository.
pub(crate) const TAG: &str = "deps-index";
/// The `artifactType` of the index.
pub(crate) const ARTIFACT_TYPE: &str = "application/vnd.imgbuild.dependency-index.v1";
/// The media type of its config blob (the index itself).
pub(crate) const CONFIG_MEDIA_TYPE: &str = "application/vnd.imgbuild.dependency-index.v1+json";
/// Entries kept, newest first.
pub(crate) const MAX_ENTRIES: usize = 256;

/// One dependency entry of the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexEntry {
    /// Its key (`deps-<key>`).
    pub(crate) key: String,
    /// `package/bin`.
    pub(crate) binary: String,
    /// sha256 of its toolchain lines.
    pub(crate) toolchain: String,
    /// Its `package …` key lines, hashed (16 hex digits each), sorted.
    pub(crate) packages: Vec<String>,
}

/// The index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DepsIndex {
    /// Newest first.
    pub(crate) entries: Vec<IndexEntry>,
}

fn short_hash(line: &str) -> String {
    imgbuild_oci::digest::sha256(line.as_bytes()).digest()[..16].to_string()
}

/// The index line of an entry with `key`, for `binary`, built from `inputs`.
pub(crate) fn entry_for(key: &str, binary: &str, inputs: &[String]) -> IndexEntry {
    let mut packages: Vec<String> = inputs
        .iter()
        .filter(|l| l.starts_with("package "))
        .map(|l| short_hash(l))
        .collect();
    packages.sort();
    IndexEntry {
        key: key.to_string(),
        binary: binary.to_string(),
        toolchain: toolchain_hash(inputs),
        packages,
    }
}

/// sha256 of the toolchain lines of `inputs`.
pub(crate) fn toolchain_hash(inputs: &[String]) -> String {
    let lines: Vec<&String> = super::toolchain_lines(inputs);
    let text: Vec<&str> = lines.iter().map(|l| l.as_str()).collect();
    imgbuild_oci::digest::sha256(text.join("\n").as_bytes())
        .digest()
        .to_string()
}

impl DepsIndex {
    /// Adds `entry` as the newest (replacing an older line of the same key), keeping at most
    /// [`MAX_ENTRIES`].
    pub(crate) fn add(&mut self, entry: IndexEntry) {
        self.entries.retain(|e| e.key != entry.key);
        self.entries.insert(0, entry);
        self.entries.truncate(MAX_ENTRIES);
    }

    /// The entries with the same toolchain that share packages with `inputs`, the most
    /// shared first (newest first among equals), with how many they share.
    pub(crate) fn closest(&self, inputs: &[String]) -> Vec<(&IndexEntry, usize)> {
        let wanted = entry_for("", "", inputs);
        let set: BTreeSet<&String> = wanted.packages.iter().collect();
        let mut found: Vec<(&IndexEntry, usize)> = self
            .entries
            .iter()
            .filter(|e| e.toolchain == wanted.toolchain)
            .map(|e| (e, e.packages.iter().filter(|p| set.contains(p)).count()))
            .filter(|(_, shared)| *shared > 0)
            .collect();
        // Stable: among equals the newer (earlier in the index) stays first.
        found.sort_by_key(|(_, shared)| std::cmp::Reverse(*shared));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(packages: &[&str]) -> Vec<String> {
        let mut lines = vec!["rustc release: 1.95.0".to_string(), "target x".to_string()];
        lines.extend(
            packages
                .iter()
                .map(|p| format!("package {p} 1.0.0 source=registry")),
        );
        lines
    }

    #[test]
    fn the_entry_sharing_the_most_packages_with_the_same_toolchain_is_chosen() {
        let mut index = DepsIndex::default();
        index.add(entry_for("a", "x/a", &inputs(&["serde", "itoa"])));
        index.add(entry_for(
            "b",
            "y/b",
            &inputs(&["serde", "itoa", "ryu", "serde_json"]),
        ));
        let mut other = inputs(&["serde", "itoa", "ryu", "serde_json", "tokio"]);
        other[0] = "rustc release: 1.96.0".into();
        index.add(entry_for("c", "z/c", &other));
        let found = index.closest(&inputs(&["serde", "ryu", "serde_json", "anyhow"]));
        let keys: Vec<(&str, usize)> = found.iter().map(|(e, n)| (e.key.as_str(), *n)).collect();
        assert_eq!(keys, [("b", 3), ("a", 1)], "c has another toolchain");
        assert!(index.closest(&inputs(&["anyhow"])).is_empty());
    }

    #[test]
    fn adding_keeps_one_line_per_key_newest_first_and_a_bound() {
        let mut index = DepsIndex::default();
        for i in 0..MAX_ENTRIES + 5 {
            index.add(entry_for(&i.to_string(), "p/b", &inputs(&["serde"])));
        }
        index.add(entry_for("3", "p/b", &inputs(&["serde"])));
        assert_eq!(index.entries.len(), MAX_ENTRIES);
        assert_eq!(index.entries[0].key, "3");
        assert_eq!(index.entries.iter().filter(|e| e.key == "3").count(), 1);
    }
}
