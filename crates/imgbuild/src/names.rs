//! How cache entries are named: their ref names in the local store, their tags in the cache
//! repository and their last-use markers. Spelled here once, so the local store, the registry
//! and `cache ls`/`prune` cannot disagree. Pure.

/// The prefix of every cache entry's ref name in the local store.
const LOCAL_PREFIX: &str = "imgbuild-cache:";

/// A cache entry's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheName<'a> {
    /// A dependency-cache entry, by dependency key.
    Deps(&'a str),
    /// An app record (by static key) or an app image (by app key).
    App(&'a str),
    /// A binary's unit-cache record (by `unitcache::record_id`).
    Units(&'a str),
}

impl<'a> CacheName<'a> {
    /// The tag in the cache repository (`deps-<key>`, `app-<key>`).
    pub(crate) fn tag(self) -> String {
        match self {
            CacheName::Deps(key) => format!("deps-{key}"),
            CacheName::App(key) => format!("app-{key}"),
            CacheName::Units(id) => format!("units-{id}"),
        }
    }

    /// The ref name in the local store (`imgbuild-cache:` then the tag).
    pub(crate) fn local_ref(self) -> String {
        format!("{LOCAL_PREFIX}{}", self.tag())
    }

    /// The name `cache ls` shows and the usage marker's file name: the dependency key, or
    /// `app-<key>`, `units-<id>`.
    pub(crate) fn usage_key(self) -> String {
        match self {
            CacheName::Deps(key) => key.to_string(),
            CacheName::App(_) | CacheName::Units(_) => self.tag(),
        }
    }

    /// The cache entry a local ref name names, if it is one.
    pub(crate) fn parse_local(name: &'a str) -> Option<Self> {
        let tag = name.strip_prefix(LOCAL_PREFIX)?;
        if let Some(key) = tag.strip_prefix("deps-") {
            Some(CacheName::Deps(key))
        } else if let Some(id) = tag.strip_prefix("units-") {
            Some(CacheName::Units(id))
        } else {
            tag.strip_prefix("app-").map(CacheName::App)
        }
    }
}

/// The annotation that dates a cache artifact's manifest (dependency entries, app records,
/// unit records): when it was made, which `cache prune --cache-repo --older-than` reads.
pub(crate) const CREATED: &str = "org.opencontainers.image.created";

/// The annotations of a cache artifact made at `secs` (Unix seconds).
pub(crate) fn created(secs: u64) -> std::collections::HashMap<String, String> {
    [(CREATED.to_string(), crate::time::rfc3339(secs))].into()
}

/// The registry tag that points at the newest dependency-cache entry of `package/bin` built
/// with cargo profile `profile`: where a fresh runner whose exact key is missing finds its
/// nearest earlier entry. One per profile: another profile's entry never fits (other
/// toolchain lines, another directory), so a repository shared by debug and release builds
/// keeps the newest of each.
pub(crate) fn latest_tag(package: &str, bin: &str, profile: &str) -> String {
    let id = imgbuild_oci::digest::sha256(format!("{package}/{bin}/{profile}").as_bytes());
    format!("deps-latest-{}", &id.digest()[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_the_local_ref() {
        for name in [
            CacheName::Deps("abc"),
            CacheName::App("def"),
            CacheName::Units("u"),
        ] {
            assert_eq!(CacheName::parse_local(&name.local_ref()), Some(name));
        }
        assert_eq!(CacheName::parse_local("hello:latest"), None);
        assert_eq!(CacheName::Deps("k").local_ref(), "imgbuild-cache:deps-k");
        assert_eq!(CacheName::App("k").tag(), "app-k");
        assert_eq!(CacheName::App("k").usage_key(), "app-k");
        assert_eq!(CacheName::Deps("k").usage_key(), "k");
        assert_eq!(CacheName::Units("k").usage_key(), "units-k");
    }

    #[test]
    fn the_latest_tag_does_not_collide_with_entries() {
        let t = latest_tag("p", "b", "release");
        assert!(t.starts_with("deps-latest-") && t.len() == "deps-latest-".len() + 32);
        assert_ne!(t, latest_tag("p", "b", "dev"), "one per profile");
    }
}
