//! Which Debian package a library came from: the dpkg database of the root filesystem the
//! binary was built in (the host's `/`, or the build environment's root), for the SBOM's
//! `pkg:deb` purls.
//!
//! Reads files under the root (`var/lib/dpkg/status`, `var/lib/dpkg/info/*.list`,
//! `etc/os-release`); a root with no dpkg database gives no answers, never an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::supply::DebPackage;

/// Installed packages of a dpkg `status` file: (name, architecture, version). Pure.
pub(crate) fn installed(status: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for paragraph in status.split("\n\n") {
        let field = |name: &str| {
            paragraph.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            })
        };
        let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
        if let (true, Some(name), Some(arch), Some(version)) = (
            installed,
            field("Package"),
            field("Architecture"),
            field("Version"),
        ) {
            out.push((name, arch, version));
        }
    }
    out
}

/// The names a file may be listed under: as given, and across the `/usr` merge (`/lib/x` is
/// `/usr/lib/x` on merged systems, and older packages list the unmerged path). Pure.
pub(crate) fn spellings(path: &str) -> Vec<String> {
    let mut out = vec![path.to_string()];
    if let Some(rest) = path.strip_prefix("/usr") {
        out.push(rest.to_string());
    } else if ["/lib", "/lib64", "/bin", "/sbin"]
        .iter()
        .any(|p| path.starts_with(&format!("{p}/")))
    {
        out.push(format!("/usr{path}"));
    }
    out
}

/// The distribution's `ID` from `os-release`, `debian` when absent.
fn distro(root: &Path) -> String {
    ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(root.join(p)).ok())
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("ID="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "debian".into())
}

/// The package owning each of `paths` (paths in the image, which are the paths in `root`),
/// for those dpkg knows.
pub(crate) fn owners(root: &Path, paths: &[String]) -> BTreeMap<String, DebPackage> {
    let mut found = BTreeMap::new();
    let Ok(status) = std::fs::read_to_string(root.join("var/lib/dpkg/status")) else {
        return found;
    };
    let wanted: BTreeMap<String, &String> = paths
        .iter()
        .flat_map(|p| spellings(p).into_iter().map(move |s| (s, p)))
        .collect();
    let mut packages = installed(&status);
    // Libraries come from lib* packages: look there first, stop when everything is found.
    packages.sort_by_key(|(name, ..)| !name.starts_with("lib"));
    let distro = distro(root);
    let mut missing: BTreeSet<&String> = paths.iter().collect();
    let info = root.join("var/lib/dpkg/info");
    for (name, arch, version) in packages {
        if missing.is_empty() {
            break;
        }
        let list = std::fs::read_to_string(info.join(format!("{name}:{arch}.list")))
            .or_else(|_| std::fs::read_to_string(info.join(format!("{name}.list"))));
        let Ok(list) = list else { continue };
        for line in list.lines() {
            let Some(&path) = wanted.get(line) else {
                continue;
            };
            if missing.remove(path) {
                found.insert(
                    path.clone(),
                    DebPackage {
                        name: name.clone(),
                        version: version.clone(),
                        arch: arch.clone(),
                        distro: distro.clone(),
                    },
                );
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_paragraphs_give_installed_packages_only() {
        let status = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u7\n\nPackage: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n";
        assert_eq!(
            installed(status),
            vec![(
                "libc6".to_string(),
                "amd64".to_string(),
                "2.36-9+deb12u7".to_string()
            )]
        );
    }

    #[test]
    fn paths_are_matched_across_the_usr_merge() {
        assert_eq!(
            spellings("/lib/x86_64-linux-gnu/libc.so.6"),
            vec![
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/lib/x86_64-linux-gnu/libc.so.6"
            ]
        );
        assert_eq!(spellings("/usr/lib/x"), vec!["/usr/lib/x", "/lib/x"]);
    }
}
