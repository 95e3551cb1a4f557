//! The workspace model: members, their binaries and metadata, from a `cargo metadata` value.
//!
//! Pure: [`Workspace::new`] takes the parsed metadata; nothing here runs a process or reads a
//! file.

use std::path::PathBuf;

use cargo_metadata::{Metadata, Package, TargetKind};
use serde_json::Value;

use crate::config::{ImageConfig, Origin, parse_table};
use crate::{Error, Result};

/// A Cargo workspace, reduced to what image building needs.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The workspace root directory.
    pub root: PathBuf,
    /// The workspace's root Cargo.toml.
    pub root_manifest: PathBuf,
    /// Cargo's target directory for this workspace.
    pub target_dir: PathBuf,
    /// Cargo's build directory (intermediate artifacts: `deps/`, `build/`, `.fingerprint/`);
    /// the target directory unless `build.build-dir` is set.
    pub build_dir: PathBuf,
    members: Vec<Member>,
    /// Index into `members` of the package the manifest path pointed at, if any.
    focus: Option<usize>,
    default_members: Vec<usize>,
    workspace_metadata: Value,
}

#[derive(Debug, Clone)]
struct Member {
    info: PackageInfo,
    bins: Vec<String>,
    metadata: Value,
    /// Canonical lines for the dependency declarations and feature table (see
    /// [`Workspace::member_declarations`]).
    declarations: Vec<String>,
}

/// The lines of a package's manifest that shape its dependency tree: non-dev dependency
/// declarations and the feature table. Paths are reduced to `path`, so the checkout's location
/// does not show.
fn declarations(p: &Package) -> Vec<String> {
    let mut lines: Vec<String> = p
        .dependencies
        .iter()
        .filter(|d| d.kind != cargo_metadata::DependencyKind::Development)
        .map(|d| {
            let mut features = d.features.clone();
            features.sort();
            format!(
                "dep {} req={} kind={} target={} features=[{}] default-features={} optional={} rename={} source={}",
                d.name,
                d.req,
                match d.kind {
                    cargo_metadata::DependencyKind::Build => "build",
                    _ => "normal",
                },
                d.target.as_ref().map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
                features.join(","),
                d.uses_default_features,
                d.optional,
                d.rename.as_deref().unwrap_or("-"),
                if d.path.is_some() { "path".to_string() } else { d.source.as_ref().map(|s| s.to_string()).unwrap_or_else(|| "-".into()) },
            )
        })
        .collect();
    for (name, enables) in &p.features {
        let mut enables = enables.clone();
        enables.sort();
        lines.push(format!("feature {name}=[{}]", enables.join(",")));
    }
    lines.sort();
    lines
}

/// Descriptive facts about a package, used for image annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    /// Package name.
    pub name: String,
    /// Package version.
    pub version: String,
    /// The package's Cargo.toml.
    pub manifest_path: PathBuf,
    /// `package.description`.
    pub description: Option<String>,
    /// `package.repository`.
    pub repository: Option<String>,
    /// `package.homepage`.
    pub homepage: Option<String>,
    /// `package.license`.
    pub license: Option<String>,
    /// `package.authors`, joined.
    pub authors: Option<String>,
}

/// The binary chosen for the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryTarget {
    /// The package holding it.
    pub package: PackageInfo,
    /// The binary target's name (the executable's file name).
    pub bin: String,
}

fn info(p: &Package) -> PackageInfo {
    PackageInfo {
        name: p.name.to_string(),
        version: p.version.to_string(),
        manifest_path: p.manifest_path.clone().into_std_path_buf(),
        description: p.description.clone(),
        repository: p.repository.clone(),
        homepage: p.homepage.clone(),
        license: p.license.clone(),
        authors: (!p.authors.is_empty()).then(|| p.authors.join(", ")),
    }
}

impl Workspace {
    /// Builds the model from `cargo metadata` output.
    pub fn new(meta: &Metadata) -> Self {
        let members: Vec<&Package> = meta.workspace_packages();
        let ids: Vec<_> = members.iter().map(|p| p.id.clone()).collect();
        let focus = meta
            .root_package()
            .and_then(|root| ids.iter().position(|id| *id == root.id));
        let default_members = meta
            .workspace_default_packages()
            .iter()
            .filter_map(|p| ids.iter().position(|id| *id == p.id))
            .collect();
        let members = members
            .into_iter()
            .map(|p| Member {
                info: info(p),
                bins: p
                    .targets
                    .iter()
                    .filter(|t| t.kind.contains(&TargetKind::Bin))
                    .map(|t| t.name.clone())
                    .collect(),
                metadata: p.metadata.get("imgbuild").cloned().unwrap_or(Value::Null),
                declarations: declarations(p),
            })
            .collect();
        let root = meta.workspace_root.clone().into_std_path_buf();
        Self {
            root_manifest: root.join("Cargo.toml"),
            root,
            target_dir: meta.target_directory.clone().into_std_path_buf(),
            build_dir: meta
                .build_directory
                .as_ref()
                .unwrap_or(&meta.target_directory)
                .clone()
                .into_std_path_buf(),
            members,
            focus,
            default_members,
            workspace_metadata: meta
                .workspace_metadata
                .get("imgbuild")
                .cloned()
                .unwrap_or(Value::Null),
        }
    }

    /// The members' Cargo.toml files.
    pub fn member_manifests(&self) -> Vec<PathBuf> {
        self.members
            .iter()
            .map(|m| m.info.manifest_path.clone())
            .collect()
    }

    /// Names of the workspace members.
    pub fn member_names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.info.name.clone()).collect()
    }

    /// Every binary of the workspace, as `(package, bin)`.
    pub fn binaries(&self) -> Vec<BinaryTarget> {
        self.binaries_of(0..self.members.len())
    }

    /// The binaries of the members at `indices`, in order.
    fn binaries_of(&self, indices: impl IntoIterator<Item = usize>) -> Vec<BinaryTarget> {
        indices
            .into_iter()
            .flat_map(|i| {
                let m = &self.members[i];
                m.bins.iter().map(move |b| BinaryTarget {
                    package: m.info.clone(),
                    bin: b.clone(),
                })
            })
            .collect()
    }

    /// The binaries in scope, and the scope's description for messages: `package`'s, else the
    /// manifest path's package's, else the default members'. None at all is an error.
    fn in_scope(&self, package: Option<&str>) -> Result<(String, Vec<BinaryTarget>)> {
        let (scope, indices): (String, Vec<usize>) = match package {
            Some(name) => {
                let idx = self
                    .members
                    .iter()
                    .position(|m| m.info.name == name)
                    .ok_or_else(|| Error::UnknownPackage {
                        package: name.to_string(),
                        workspace: self.root.clone(),
                        members: self.member_names(),
                    })?;
                (format!("package `{name}`"), vec![idx])
            }
            None => match self.focus {
                Some(idx) => (
                    format!("package `{}`", self.members[idx].info.name),
                    vec![idx],
                ),
                None => (
                    format!("the workspace at {}", self.root.display()),
                    self.default_members.clone(),
                ),
            },
        };
        let found = self.binaries_of(indices);
        if found.is_empty() {
            return Err(Error::NoBinary { scope });
        }
        Ok((scope, found))
    }

    /// Member name → the manifest lines that shape its dependency tree (for cache keys).
    pub fn member_declarations(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        self.members
            .iter()
            .map(|m| (m.info.name.clone(), m.declarations.clone()))
            .collect()
    }

    /// The binaries in scope: all of `package`'s, else the manifest path's package's, else the
    /// default members'; narrowed to `bin` when given (which must exist).
    pub fn candidates(
        &self,
        package: Option<&str>,
        bin: Option<&str>,
    ) -> Result<Vec<BinaryTarget>> {
        match bin {
            Some(_) => Ok(vec![self.select(package, bin)?]),
            None => Ok(self.in_scope(package)?.1),
        }
    }

    /// Chooses the binary to package. With `package`, among that member's binaries; otherwise
    /// among the binaries of the package the manifest path names, or of the default members of a
    /// virtual workspace. With `bin`, the binary of that name; otherwise the only one.
    pub fn select(&self, package: Option<&str>, bin: Option<&str>) -> Result<BinaryTarget> {
        let (scope, found) = self.in_scope(package)?;
        match bin {
            Some(name) => {
                let mut matching: Vec<BinaryTarget> =
                    found.iter().filter(|t| t.bin == name).cloned().collect();
                match matching.len() {
                    0 => Err(Error::UnknownBinary {
                        bin: name.to_string(),
                        scope,
                        available: found.iter().map(|t| t.bin.clone()).collect(),
                    }),
                    1 => Ok(matching.remove(0)),
                    _ => Err(Error::AmbiguousBinary {
                        scope,
                        candidates: matching
                            .iter()
                            .map(|t| format!("{}/{}", t.package.name, t.bin))
                            .collect(),
                    }),
                }
            }
            None if found.len() == 1 => Ok(found.into_iter().next().expect("one element")),
            None => Err(Error::AmbiguousBinary {
                scope,
                candidates: found
                    .iter()
                    .map(|t| format!("{}/{}", t.package.name, t.bin))
                    .collect(),
            }),
        }
    }

    /// The image configuration for `target` from the metadata tables: the workspace's defaults,
    /// then the package's table, then its `bin.<name>` overrides.
    pub fn image_config(&self, target: &BinaryTarget) -> Result<ImageConfig> {
        let ws = parse_table(
            &self.workspace_metadata,
            &Origin {
                table: "workspace.metadata.imgbuild",
                manifest: &self.root_manifest,
            },
            Some(&target.bin),
        )?;
        let member = self
            .members
            .iter()
            .find(|m| m.info.manifest_path == target.package.manifest_path)
            .ok_or_else(|| Error::UnknownPackage {
                package: target.package.name.clone(),
                workspace: self.root.clone(),
                members: self.member_names(),
            })?;
        let pkg = parse_table(
            &member.metadata,
            &Origin {
                table: "package.metadata.imgbuild",
                manifest: &member.info.manifest_path,
            },
            Some(&target.bin),
        )?;
        Ok(ws.merge(pkg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn package(name: &str, bins: &[&str], extra_kinds: &[&str], metadata: Value) -> Value {
        let mut targets: Vec<Value> = bins
            .iter()
            .map(|b| {
                json!({"name": b, "kind": ["bin"], "crate_types": ["bin"], "src_path": format!("/ws/{name}/src/main.rs"),
                       "edition": "2021", "doctest": false, "test": true, "doc": true, "required-features": []})
            })
            .collect();
        for k in extra_kinds {
            targets.push(json!({"name": name, "kind": [k], "crate_types": [k], "src_path": format!("/ws/{name}/src/lib.rs"),
                                "edition": "2021", "doctest": true, "test": true, "doc": true}));
        }
        json!({
            "name": name, "version": "1.2.3", "id": format!("path+file:///ws/{name}#1.2.3"),
            "license": null, "license_file": null, "description": null, "source": null,
            "dependencies": [], "targets": targets, "features": {},
            "manifest_path": format!("/ws/{name}/Cargo.toml"), "metadata": metadata,
            "publish": null, "authors": [], "categories": [], "keywords": [], "readme": null,
            "repository": "https://example.com/r", "homepage": null, "documentation": null,
            "edition": "2021", "links": null, "default_run": null, "rust_version": null
        })
    }

    fn workspace(packages: Vec<Value>, root: Option<&str>, ws_meta: Value) -> Workspace {
        let ids: Vec<Value> = packages.iter().map(|p| p["id"].clone()).collect();
        let meta = json!({
            "packages": packages, "workspace_members": ids, "workspace_default_members": ids,
            "resolve": {"nodes": [], "root": root.map(|r| format!("path+file:///ws/{r}#1.2.3"))},
            "target_directory": "/ws/target", "version": 1, "workspace_root": "/ws",
            "metadata": ws_meta
        });
        Workspace::new(&serde_json::from_value(meta).unwrap())
    }

    #[test]
    fn one_binary_is_picked_without_asking() {
        let ws = workspace(
            vec![package("app", &["app"], &["lib"], Value::Null)],
            Some("app"),
            Value::Null,
        );
        let t = ws.select(None, None).unwrap();
        assert_eq!((t.package.name.as_str(), t.bin.as_str()), ("app", "app"));
        assert_eq!(
            t.package.repository.as_deref(),
            Some("https://example.com/r")
        );
    }

    #[test]
    fn several_binaries_need_a_choice_and_list_the_candidates() {
        let ws = workspace(
            vec![
                package("a", &["one"], &[], Value::Null),
                package("b", &["two", "three"], &[], Value::Null),
            ],
            None,
            Value::Null,
        );
        let err = ws.select(None, None).unwrap_err().to_string();
        assert!(
            err.contains("a/one, b/two, b/three") && err.contains("--bin"),
            "{err}"
        );
        assert_eq!(ws.select(None, Some("three")).unwrap().package.name, "b");
        assert_eq!(ws.select(Some("a"), None).unwrap().bin, "one");
        let err = ws.select(Some("b"), Some("one")).unwrap_err().to_string();
        assert!(
            err.contains("no binary named `one`") && err.contains("two, three"),
            "{err}"
        );
        let err = ws.select(Some("zzz"), None).unwrap_err().to_string();
        assert!(
            err.contains("not a member") && err.contains("a, b"),
            "{err}"
        );
    }

    #[test]
    fn a_library_only_package_is_refused() {
        let ws = workspace(
            vec![package("lib", &[], &["lib"], Value::Null)],
            Some("lib"),
            Value::Null,
        );
        let err = ws.select(None, None).unwrap_err().to_string();
        assert!(err.contains("package `lib` has no binary target"), "{err}");
    }

    #[test]
    fn workspace_defaults_are_overridden_by_the_package_and_the_binary() {
        let ws = workspace(
            vec![package(
                "app",
                &["app", "tool"],
                &[],
                json!({"imgbuild": {"user": "1000", "env": {"B": "pkg"}, "bin": {"tool": {"user": "0"}}}}),
            )],
            Some("app"),
            json!({"imgbuild": {"user": "5", "env": {"A": "ws", "B": "ws"}, "workdir": "/w"}}),
        );
        let app = ws
            .image_config(&ws.select(None, Some("app")).unwrap())
            .unwrap();
        let tool = ws
            .image_config(&ws.select(None, Some("tool")).unwrap())
            .unwrap();
        assert_eq!(app.user.as_deref(), Some("1000"));
        assert_eq!(tool.user.as_deref(), Some("0"));
        assert_eq!(app.workdir.as_deref(), Some("/w"));
        assert_eq!(app.env["A"], "ws");
        assert_eq!(app.env["B"], "pkg");
    }
}
