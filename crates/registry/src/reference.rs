//! Image references: `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`, as docker and skopeo read them
//! (pure).

use std::fmt;

use crate::{Error, Result};

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's API host.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host, with its port if any (`docker.io` for Docker Hub).
    pub registry: String,
    /// Repository path (`library/alpine` for Docker Hub's official images).
    pub repository: String,
    /// Tag, if given.
    pub tag: Option<String>,
    /// Digest (`sha256:…`), if given.
    pub digest: Option<String>,
}

fn is_component(s: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let bytes = s.as_bytes();
    if bytes.is_empty()
        || !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
    {
        return false;
    }
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
        && !s.contains("..")
        && !s.contains("___")
}

fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && (s.as_bytes()[0].is_ascii_alphanumeric() || s.as_bytes()[0] == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// A registry host is a DNS name, an IPv4 address or a bracketed IPv6 address, with an
/// optional port from 1 to 65535.
fn check_registry(registry: &str) -> std::result::Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(|| {
            format!("the registry {registry:?} opens [ for an IPv6 address but does not close it")
        })?;
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(format!(
                "{v6:?} in the registry {registry:?} is not an IPv6 address"
            ));
        }
        match after {
            "" => (registry, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (registry, Some(port)),
                None => {
                    return Err(format!(
                        "the registry {registry:?} has {after:?} after its address; write [ADDRESS]:PORT"
                    ));
                }
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !valid {
            return Err(format!(
                "the port {port:?} of the registry {registry:?} is not a number from 1 to 65535"
            ));
        }
    }
    if !host.starts_with('[')
        && (host.is_empty()
            || !host.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
    {
        return Err(format!(
            "the registry host {host:?} is not a host name or address (letters, digits, - and . only)"
        ));
    }
    Ok(())
}

impl Reference {
    /// Parses a reference such as `localhost:5000/app:1.0`, `ghcr.io/org/app@sha256:…` or
    /// `alpine` (Docker Hub, `library/alpine`, no tag).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidReference {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                if !is_digest(digest) {
                    return Err(bad(
                        "the digest must be sha256: and 64 lowercase hex digits",
                    ));
                }
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path)
            }
            _ => (DOCKER_HUB.to_string(), rest),
        };
        check_registry(&registry).map_err(|reason| bad(&reason))?;
        // A tag is after the last ':' that follows the last '/'.
        let (path, tag) = match path.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Some(t.to_string())),
            _ => (path, None),
        };
        if path.is_empty() {
            return Err(bad("the repository name is empty"));
        }
        if !path.split('/').all(is_component) {
            return Err(bad(
                "repository names are lowercase letters, digits and . _ - separated by /",
            ));
        }
        if let Some(t) = &tag
            && !is_tag(t)
        {
            return Err(bad(
                "a tag is up to 128 letters, digits, . _ - and does not start with . or -",
            ));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host API requests go to (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The digest if given, else the tag, else `latest`: what a manifest request names.
    pub fn target(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// Whether the registry is this machine (plain HTTP is allowed there).
    pub fn is_local(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(self.registry.as_str(), |(h, _)| h);
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }

    /// The same repository, naming `digest` and no tag.
    pub fn with_digest(&self, digest: &str) -> Self {
        Self {
            tag: None,
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod host_tests {
    use super::*;

    #[test]
    fn ports_out_of_range_and_bad_hosts_are_refused_with_the_value() {
        for (text, needle) in [
            ("127.0.0.1:99999/x", "\"99999\""),
            ("127.0.0.1:0/x", "\"0\""),
            ("localhost:/x", "\"\""),
            ("localhost:5o00/x", "\"5o00\""),
            ("my_host.example:5000/x", "my_host.example"),
            ("[::1/x", "does not close"),
        ] {
            let err = Reference::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains(text), "{text}: {err}");
        }
        for ok in [
            "127.0.0.1:5000/x",
            "localhost:65535/x",
            "[::1]:5000/x",
            "ghcr.io/o/x",
        ] {
            Reference::parse(ok).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn registries_repositories_tags_and_digests() {
        let r = parse("localhost:5000/team/app:1.0");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5000", "team/app", Some("1.0"))
        );
        assert!(r.is_local());
        let r = parse("alpine");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.target()),
            ("docker.io", "library/alpine", "latest")
        );
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("ghcr.io/o/r:v1@{d}"));
        assert_eq!(r.target(), d);
        assert_eq!(r.to_string(), format!("ghcr.io/o/r:v1@{d}"));
        assert!(!r.is_local());
        assert!(parse("127.0.0.1:5000/x").is_local());
    }

    #[test]
    fn bad_references_are_refused_with_the_rule() {
        for bad in [
            "",
            "Upper/case",
            "x:bad tag",
            "x@sha256:abc",
            "localhost:5000/",
            "a//b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
        let err = Reference::parse("App").unwrap_err().to_string();
        assert!(err.contains("lowercase"), "{err}");
    }
}
