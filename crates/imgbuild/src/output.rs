//! Where images go, named like skopeo's transports: `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
//! `docker-archive:FILE[:NAME:TAG]`, `docker-daemon:NAME[:TAG]`, `docker://REF`. Parsing is
//! pure; `write` touches the filesystem, or a container engine's socket through `daemon`
//! (registries are written by `publish`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::Descriptor;

use crate::{Error, Result};

/// One output destination.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// An OCI image layout directory, the image tagged `tag` (default: the image's tag).
    Oci {
        /// The directory.
        dir: PathBuf,
        /// The tag in `index.json`.
        tag: Option<String>,
    },
    /// A tar of an OCI image layout.
    OciArchive {
        /// The archive.
        file: PathBuf,
        /// The tag in its `index.json`.
        tag: Option<String>,
    },
    /// A `docker save`-style archive for `docker load` / `podman load`.
    DockerArchive {
        /// The archive.
        file: PathBuf,
        /// `name:tag` it loads as (default: the image's name and tag).
        reference: Option<String>,
    },
    /// A container engine, through its API socket (`DOCKER_HOST`): Docker, or podman's
    /// Docker-compatible service.
    DockerDaemon {
        /// `name[:tag]` it loads as (default: the image's name; tag: the image's tag).
        reference: Option<String>,
    },
    /// A registry (`docker://REF`); without a tag or digest the image's tag is used.
    Registry {
        /// The reference.
        reference: imgbuild_registry::Reference,
    },
    /// A registry repository named after the image (`--repo`, `IMGBUILD_REPO`): the image
    /// goes to `REPO/<image name>`, tagged as a `docker://` output without a tag is. Made by
    /// [`Output::repo`].
    Repo {
        /// `REGISTRY[/PATH]`, e.g. `ghcr.io/acme`.
        repo: String,
    },
}

impl Output {
    /// The output for `--repo REPO`: `REPO/<image name>`. `REPO` is a registry host with an
    /// optional path, no tag or digest.
    pub fn repo(repo: &str) -> Result<Self> {
        let repo = repo.trim_end_matches('/');
        let bad = |why: String| Error::InvalidOutput {
            output: repo.to_string(),
            reason: format!("as a repository for images (--repo, IMGBUILD_REPO): {why}"),
        };
        let usage = "give REGISTRY[/PATH] without a tag or digest, e.g. ghcr.io/acme";
        if repo.is_empty() || repo.contains('@') {
            return Err(bad(usage.into()));
        }
        imgbuild_registry::Reference::parse(&format!("{repo}/image"))
            .map_err(|e| bad(format!("{e}; {usage}")))?;
        Ok(Self::Repo {
            repo: repo.to_string(),
        })
    }

    /// The registry reference this output pushes an image named `name` to, if it is a
    /// registry output.
    pub(crate) fn registry_reference(
        &self,
        name: &str,
    ) -> Result<Option<imgbuild_registry::Reference>> {
        match self {
            Self::Registry { reference } => Ok(Some(reference.clone())),
            Self::Repo { repo } => imgbuild_registry::Reference::parse(&format!("{repo}/{name}"))
                .map(Some)
                .map_err(|e| Error::InvalidOutput {
                    output: self.to_string(),
                    reason: format!("the image name {name:?} does not make a reference: {e}"),
                }),
            _ => Ok(None),
        }
    }
}

impl FromStr for Output {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidOutput {
            output: s.to_string(),
            reason: why.to_string(),
        };
        if let Some(reference) = s.strip_prefix("docker://") {
            let reference =
                imgbuild_registry::Reference::parse(reference).map_err(|e| bad(&e.to_string()))?;
            return Ok(Output::Registry { reference });
        }
        if let Some(reference) = s.strip_prefix("docker-daemon:") {
            return parse_daemon_reference(reference)
                .map(|reference| Output::DockerDaemon { reference })
                .map_err(|why| bad(&why));
        }
        let (transport, rest) = s.split_once(':').ok_or_else(|| {
            bad("expected TRANSPORT:PATH, e.g. oci:out/hello, oci-archive:hello.tar or docker-archive:hello.tar")
        })?;
        let (path, reference) = match rest.split_once(':') {
            Some((p, r)) => (p, Some(r.to_string())),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(bad("the path is empty"));
        }
        if let Some(r) = &reference {
            let tag_ok = |t: &str| imgbuild_cargo::config::validate_tag(t);
            let check = match transport {
                "docker-archive" => match r.rsplit_once(':') {
                    Some((name, tag)) => {
                        imgbuild_cargo::config::validate_name(name).and_then(|_| tag_ok(tag))
                    }
                    None => {
                        Err("give NAME:TAG, e.g. docker-archive:hello.tar:hello:latest".to_string())
                    }
                },
                _ => tag_ok(r),
            };
            check.map_err(|why| bad(&format!("reference {r:?}: {why}")))?;
        }
        let path = PathBuf::from(path);
        match transport {
            "oci" => Ok(Output::Oci {
                dir: path,
                tag: reference,
            }),
            "oci-archive" => Ok(Output::OciArchive {
                file: path,
                tag: reference,
            }),
            "docker-archive" => Ok(Output::DockerArchive {
                file: path,
                reference,
            }),
            "docker" => Err(bad(
                "a registry output is docker://REGISTRY/REPOSITORY[:TAG]",
            )),
            "containers-storage" => Err(bad(
                "containers-storage: is not supported; load into podman with docker-daemon:NAME[:TAG] and DOCKER_HOST set to podman's API socket (e.g. unix://$XDG_RUNTIME_DIR/podman/podman.sock, started by `systemctl --user start podman.socket`), or write docker-archive:FILE and `podman load -i FILE`",
            )),
            "dir" => Err(bad(
                "the dir: transport is not supported; write oci:, oci-archive:, docker-archive:, docker-daemon: or docker://REF",
            )),
            other => Err(bad(&format!(
                "unknown transport {other:?}; use oci:, oci-archive:, docker-archive:, docker-daemon: or docker://"
            ))),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (transport, path, reference) = match self {
            Output::Oci { dir, tag } => ("oci", dir, tag),
            Output::OciArchive { file, tag } => ("oci-archive", file, tag),
            Output::DockerArchive { file, reference } => ("docker-archive", file, reference),
            Output::Registry { reference } => return write!(f, "docker://{reference}"),
            Output::Repo { repo } => return write!(f, "docker://{repo}/<image name>"),
            Output::DockerDaemon { reference } => {
                return write!(
                    f,
                    "docker-daemon:{}",
                    reference.as_deref().unwrap_or_default()
                );
            }
        };
        write!(f, "{transport}:{}", path.display())?;
        if let Some(r) = reference {
            write!(f, ":{r}")?;
        }
        Ok(())
    }
}

/// Writes the image `manifest` from `store` to `output`. `name` and `tag` are the image's own,
/// used where the output names none. Nothing half-written is left on failure.
pub(crate) fn write(
    store: &Layout,
    manifest: &Descriptor,
    referrers: &[Descriptor],
    name: &str,
    tag: &str,
    output: &Output,
    mtime: u64,
) -> Result<()> {
    match output {
        Output::Oci { dir, tag: out_tag } => write_oci_dir(
            store,
            manifest,
            referrers,
            dir,
            out_tag.as_deref().unwrap_or(tag),
        ),
        Output::OciArchive { file, tag: out_tag } => {
            check_parent(file)?;
            Ok(imgbuild_oci::archive::write_oci_archive(
                store,
                manifest,
                Some(out_tag.as_deref().unwrap_or(tag)),
                file,
                mtime,
            )?)
        }
        Output::DockerArchive { file, reference } => {
            check_parent(file)?;
            let reference = reference.clone().unwrap_or_else(|| format!("{name}:{tag}"));
            Ok(imgbuild_oci::archive::write_docker_archive(
                store,
                manifest,
                &[reference],
                file,
                mtime,
            )?)
        }
        Output::DockerDaemon { .. } => Err(Error::InvalidOutput {
            output: output.to_string(),
            reason: "engine outputs are written by imgbuild::daemon".into(),
        }),
        Output::Registry { .. } | Output::Repo { .. } => Err(Error::InvalidOutput {
            output: output.to_string(),
            reason: "registry outputs are written by imgbuild::publish".into(),
        }),
    }
}

/// Parses the `NAME[:TAG]` of `docker-daemon:` (empty: the image's own name and tag). The
/// name may start with a registry host and port, as image names in an engine do.
fn parse_daemon_reference(text: &str) -> std::result::Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.contains('@') {
        return Err("an engine stores images by name: give NAME[:TAG], not a digest".into());
    }
    let (name, tag) = match text.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (text, None),
    };
    let path = match name.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
        _ => name,
    };
    imgbuild_cargo::config::validate_name(path).map_err(|why| format!("name {name:?}: {why}"))?;
    if let Some(tag) = tag {
        imgbuild_cargo::config::validate_tag(tag).map_err(|why| format!("tag {tag:?}: {why}"))?;
    }
    Ok(Some(text.to_string()))
}

fn check_parent(file: &Path) -> Result<()> {
    if file.is_dir() {
        return Err(Error::InvalidOutput {
            output: file.display().to_string(),
            reason: "is a directory; an archive output names a file".into(),
        });
    }
    Ok(())
}

/// Copies the image and its `referrers` into `layout`: every blob first, the index last (the
/// image tagged, the referrers listed without a name, as the image-layout spec has them).
fn copy_into(
    store: &Layout,
    manifest: &Descriptor,
    referrers: &[Descriptor],
    layout: &Layout,
    tag: &str,
) -> Result<()> {
    for m in std::iter::once(manifest).chain(referrers) {
        for blob in &store.image_blobs(m)? {
            store.copy_blob(blob.digest(), layout)?;
        }
    }
    layout.set_tag(tag, manifest)?;
    for r in referrers {
        imgbuild_oci::referrers::list(layout, r)?;
    }
    Ok(())
}

/// Copies the image into the OCI layout at `dir`. A new directory is assembled beside its final
/// name and renamed into place; an existing layout gets its blobs first and its index last.
fn write_oci_dir(
    store: &Layout,
    manifest: &Descriptor,
    referrers: &[Descriptor],
    dir: &Path,
    tag: &str,
) -> Result<()> {
    if dir.exists() {
        let layout = Layout::create(dir)?;
        return copy_into(store, manifest, referrers, &layout, tag);
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|source| Error::Io {
        action: "creating directory",
        path: parent.clone(),
        source,
    })?;
    let staging = tempfile::Builder::new()
        .prefix(".tmp-oci-")
        .tempdir_in(&parent)
        .map_err(|source| Error::Io {
            action: "creating a temporary directory in",
            path: parent.clone(),
            source,
        })?;
    let layout = Layout::create(staging.path())?;
    copy_into(store, manifest, referrers, &layout, tag)?;
    let staged = staging.keep();
    std::fs::rename(&staged, dir).map_err(|source| {
        let _ = std::fs::remove_dir_all(&staged);
        Error::Io {
            action: "renaming the new layout into",
            path: dir.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse_like_skopeo() {
        let cases = [
            (
                "oci:out",
                Output::Oci {
                    dir: "out".into(),
                    tag: None,
                },
            ),
            (
                "oci:/tmp/x:v1",
                Output::Oci {
                    dir: "/tmp/x".into(),
                    tag: Some("v1".into()),
                },
            ),
            (
                "oci-archive:a.tar:latest",
                Output::OciArchive {
                    file: "a.tar".into(),
                    tag: Some("latest".into()),
                },
            ),
            (
                "docker-archive:d.tar",
                Output::DockerArchive {
                    file: "d.tar".into(),
                    reference: None,
                },
            ),
            (
                "docker-archive:d.tar:reg/hello:1.0",
                Output::DockerArchive {
                    file: "d.tar".into(),
                    reference: Some("reg/hello:1.0".into()),
                },
            ),
        ];
        for (text, expected) in cases {
            let parsed: Output = text.parse().unwrap();
            assert_eq!(parsed, expected);
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn registry_outputs_parse_as_references() {
        let out: Output = "docker://localhost:5000/team/app:v1".parse().unwrap();
        let Output::Registry { reference } = &out else {
            panic!("{out:?}");
        };
        assert_eq!(reference.registry, "localhost:5000");
        assert_eq!(reference.repository, "team/app");
        assert_eq!(out.to_string(), "docker://localhost:5000/team/app:v1");
    }

    #[test]
    fn engine_outputs_take_a_name_with_an_optional_host_and_tag() {
        for (text, reference) in [
            ("docker-daemon:", None),
            ("docker-daemon:hello", Some("hello")),
            ("docker-daemon:team/hello:v1", Some("team/hello:v1")),
            (
                "docker-daemon:localhost:5000/hello:v1",
                Some("localhost:5000/hello:v1"),
            ),
            (
                "docker-daemon:localhost:5000/hello",
                Some("localhost:5000/hello"),
            ),
        ] {
            let out: Output = text.parse().unwrap();
            assert_eq!(
                out,
                Output::DockerDaemon {
                    reference: reference.map(str::to_string)
                },
                "{text}"
            );
            assert_eq!(out.to_string(), text);
        }
    }

    #[test]
    fn bad_outputs_say_what_to_write_instead() {
        for (text, expected) in [
            ("out", "expected TRANSPORT:PATH"),
            ("oci:", "path is empty"),
            ("tarball:x", "unknown transport"),
            ("containers-storage:x", "podman's API socket"),
            ("docker-daemon:Upper:v1", "lowercase"),
            ("docker-daemon:app@sha256:00", "not a digest"),
            ("docker-daemon:app:bad tag", "tag"),
            ("docker://Reg/UPPER", "lowercase"),
            ("docker:reg/x", "docker://REGISTRY"),
            ("oci:x:Bad Tag", "reference"),
            ("docker-archive:x.tar:notag", "NAME:TAG"),
        ] {
            let err = text.parse::<Output>().unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
