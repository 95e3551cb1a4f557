//! Base images: pulled once into the local store, listed, and checked against the binary.
//!
//! Talks to registries (through [`crate::publish`]), reads the store's blobs, and keeps two
//! small records under the cache directory: which digest a base reference resolved to last
//! (`bases.json`, used when the registry is unreachable) and each base layer's file listing
//! (`base-files/<digest>.json`), so that a second build neither downloads nor unpacks anything.
//!
//! The base's filesystem model ([`BaseFs`]) answers the questions image assembly asks: does
//! the base already have this library (so the image does not ship the host's copy over it),
//! where does a path really live (so a layer never replaces a base symlink such as a
//! merged-usr `/lib` with a directory), and which `GLIBC_x.y` versions does its libc define.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::{Descriptor, ImageConfiguration, ImageManifest, MediaType};
use imgbuild_registry::{Client, Reference};
use serde::{Deserialize, Serialize};

use crate::cachedir::CacheDir;
use crate::event::{Event, Reporter};
use crate::publish::RegistryOptions;
use crate::{Error, Result};

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
struct Listing {
    entries: Vec<(String, Node)>,
}

/// The merged filesystem of a base image's layers.
#[derive(Debug, Clone, Default)]
pub(crate) struct BaseFs {
    /// Normalized absolute path → (what it is, index of the layer that last wrote it).
    nodes: BTreeMap<String, (Node, usize)>,
}

fn normalize(path: &str) -> String {
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
    fn apply(&mut self, index: usize, listing: &Listing) {
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

/// A base image resolved into the local store.
#[derive(Debug, Clone)]
pub(crate) struct BaseImage {
    /// The reference as configured.
    pub reference: String,
    /// The manifest's digest.
    pub digest: String,
    /// Its manifest.
    pub manifest: ImageManifest,
    /// Its config.
    pub config: ImageConfiguration,
    /// Its merged filesystem.
    pub fs: BaseFs,
}

fn read_record(cache: &CacheDir) -> BTreeMap<String, String> {
    let (dir, name) = cache.bases_record();
    std::fs::read(dir.join(name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The digest `reference` resolved to at the last build, if any (no network).
pub(crate) fn recorded_digest(cache: &CacheDir, reference: &str) -> Option<String> {
    read_record(cache).get(reference).cloned()
}

/// Remembers what `reference` resolved to. An error, not a hint: this record is what an
/// offline build resolves the base with, so losing it silently would make the next build
/// without the registry fail for no visible reason.
fn write_record(cache: &CacheDir, reference: &str, digest: &str) -> Result<()> {
    let mut record = read_record(cache);
    if record.get(reference).is_some_and(|d| d == digest) {
        return Ok(());
    }
    record.insert(reference.to_string(), digest.to_string());
    let (dir, name) = cache.bases_record();
    std::fs::create_dir_all(dir).map_err(crate::io_err("creating directory", dir))?;
    let bytes = serde_json::to_vec(&record).expect("a map of strings serializes");
    imgbuild_oci::layout::write_atomic(dir, name, &bytes)?;
    Ok(())
}

/// Resolves `text` to a base image in `store`: by digest from the store when it is there,
/// else from its registry (an index gives the `linux/<host arch>` image). Blobs the store has
/// are not downloaded again. When the registry cannot be reached, the digest this reference
/// last resolved to is used, with a warning.
pub(crate) fn resolve(
    store: &Layout,
    text: &str,
    options: &RegistryOptions,
    cache: &CacheDir,
    reporter: &dyn Reporter,
) -> Result<BaseImage> {
    let reference = Reference::parse(text)?;
    let arch = crate::image::host_arch().to_string();
    let local = |digest: &str| -> Option<Descriptor> {
        let d: imgbuild_oci::spec::Digest = digest.parse().ok()?;
        let bytes = store.read_blob(&d).ok()?;
        let m: ImageManifest = serde_json::from_slice(&bytes).ok()?;
        let all_there = std::iter::once(m.config())
            .chain(m.layers())
            .all(|b| store.has_blob(b.digest()));
        all_there.then(|| Descriptor::new(MediaType::ImageManifest, bytes.len() as u64, d))
    };
    let pinned = reference.digest.as_deref().and_then(local);
    let manifest_desc = match pinned {
        Some(desc) => desc,
        None => {
            let progress = crate::publish::progress(reporter, &reference);
            let fetched = Client::connect(&reference, options.client_options(&reference)).and_then(
                |client| {
                    imgbuild_registry::push::pull(
                        &client, store, &reference, "linux", &arch, &progress,
                    )
                },
            );
            match fetched {
                Ok(Some(pulled)) => pulled.manifest,
                Ok(None) => {
                    return Err(Error::Registry(imgbuild_registry::Error::NotFound {
                        registry: reference.registry.clone(),
                        repository: reference.repository.clone(),
                        what: format!("base image {text}"),
                        message: "no such manifest".into(),
                    }));
                }
                Err(e @ imgbuild_registry::Error::Unreachable { .. }) => {
                    match read_record(cache).get(text).and_then(|d| local(d)) {
                        Some(desc) => {
                            reporter.report(&Event::Warning {
                                message: format!(
                                    "{e}; using {text} as last resolved ({})",
                                    desc.digest()
                                ),
                            });
                            desc
                        }
                        None => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let manifest = store.read_manifest(manifest_desc.digest())?;
    let config_bytes = store.read_blob(manifest.config().digest())?;
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|e| Error::Base {
            reference: text.to_string(),
            reason: format!("its config is not an OCI image config: {e}"),
        })?;
    if config.os().to_string() != "linux" || config.architecture().to_string() != arch {
        return Err(Error::Base {
            reference: text.to_string(),
            reason: format!(
                "it is a {}/{} image; this build makes linux/{arch} images",
                config.os(),
                config.architecture()
            ),
        });
    }
    if config.rootfs().diff_ids().len() != manifest.layers().len() {
        return Err(Error::Base {
            reference: text.to_string(),
            reason: "its config and manifest disagree on the number of layers".into(),
        });
    }
    let mut fs = BaseFs::default();
    for (i, layer) in manifest.layers().iter().enumerate() {
        fs.apply(i, &listing(store, layer, cache)?);
    }
    write_record(cache, text, manifest_desc.digest().as_ref())?;
    Ok(BaseImage {
        reference: text.to_string(),
        digest: manifest_desc.digest().to_string(),
        manifest,
        config,
        fs,
    })
}

/// A layer's tar stream, decompressed according to its media type.
fn open_layer(store: &Layout, layer: &Descriptor) -> Result<Box<dyn Read>> {
    let file = std::io::BufReader::new(store.open_blob(layer.digest())?);
    let media = layer.media_type().to_string();
    let io = |source| Error::Io {
        action: "decompressing base layer",
        path: store.blob_path(layer.digest()),
        source,
    };
    Ok(if media.ends_with("gzip") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else if media.ends_with("zstd") {
        Box::new(zstd::Decoder::with_buffer(file).map_err(io)?)
    } else {
        Box::new(file)
    })
}

/// The entries of a base layer, from the cache or by reading it once.
fn listing(store: &Layout, layer: &Descriptor, cache: &CacheDir) -> Result<Listing> {
    let dir = cache.base_files();
    let name = format!("{}.json", layer.digest().digest());
    if let Some(l) = std::fs::read(dir.join(&name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        return Ok(l);
    }
    let path = store.blob_path(layer.digest());
    let io = |source| Error::Io {
        action: "reading base layer",
        path: path.clone(),
        source,
    };
    let mut archive = tar::Archive::new(open_layer(store, layer)?);
    let mut out = Listing::default();
    for entry in archive.entries().map_err(io)? {
        let entry = entry.map_err(io)?;
        let p = entry.path().map_err(io)?.to_string_lossy().into_owned();
        let link = || {
            entry
                .link_name()
                .ok()
                .flatten()
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let node = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Node::File,
            tar::EntryType::Directory => Node::Dir,
            tar::EntryType::Symlink => Node::Symlink(link()),
            tar::EntryType::Link => Node::Hardlink(normalize(&link())),
            _ => Node::Other,
        };
        out.entries.push((normalize(&p), node));
    }
    if std::fs::create_dir_all(&dir).is_ok()
        && let Ok(bytes) = serde_json::to_vec(&out)
    {
        let _ = imgbuild_oci::layout::write_atomic(&dir, &name, &bytes);
    }
    Ok(out)
}

/// Reads the file at `path` (after symlinks) from the base's layers.
pub(crate) fn read_file(store: &Layout, base: &BaseImage, path: &str) -> Result<Option<Vec<u8>>> {
    let Some((mut real, mut node, mut layer)) = base.fs.resolve(path) else {
        return Ok(None);
    };
    for _ in 0..8 {
        match node {
            Node::File => break,
            Node::Hardlink(target) => {
                real = target;
                match base.fs.nodes.get(&real) {
                    Some((n, l)) => {
                        node = n.clone();
                        layer = *l;
                    }
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        }
    }
    let desc = &base.manifest.layers()[layer];
    let blob = store.blob_path(desc.digest());
    let io = |source| Error::Io {
        action: "reading base layer",
        path: blob.clone(),
        source,
    };
    let mut archive = tar::Archive::new(open_layer(store, desc)?);
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let p = normalize(&entry.path().map_err(io)?.to_string_lossy());
        if p == real && entry.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(io)?;
            return Ok(Some(bytes));
        }
    }
    Ok(None)
}

/// The `GLIBC_x.y` versions an ELF file defines (a libc) or needs (a program or library).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GlibcVersions {
    /// Versions defined (`verdef`).
    pub defined: BTreeSet<String>,
    /// Versions needed, with the library that must provide each (`verneed`).
    pub needed: BTreeMap<String, String>,
}

/// Reads the GLIBC symbol versions of an ELF file.
pub(crate) fn glibc_versions(bytes: &[u8]) -> Option<GlibcVersions> {
    let elf = goblin::elf::Elf::parse(bytes).ok()?;
    let mut out = GlibcVersions::default();
    if let Some(verdef) = &elf.verdef {
        for def in verdef.iter() {
            for aux in def.iter() {
                if let Some(name) = elf.dynstrtab.get_at(aux.vda_name)
                    && name.starts_with("GLIBC_")
                {
                    out.defined.insert(name.to_string());
                }
            }
        }
    }
    if let Some(verneed) = &elf.verneed {
        for need in verneed.iter() {
            let file = elf
                .dynstrtab
                .get_at(need.vn_file)
                .unwrap_or("?")
                .to_string();
            for aux in need.iter() {
                if let Some(name) = elf.dynstrtab.get_at(aux.vna_name)
                    && name.starts_with("GLIBC_")
                {
                    out.needed.entry(name.to_string()).or_insert(file.clone());
                }
            }
        }
    }
    Some(out)
}

/// Orders `GLIBC_2.9` before `GLIBC_2.34`.
pub(crate) fn version_key(v: &str) -> Vec<u32> {
    v.trim_start_matches("GLIBC_")
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// The needed versions a base's libc does not define, sorted oldest first (pure).
pub(crate) fn missing_versions(
    needed: &BTreeMap<String, String>,
    defined: &BTreeSet<String>,
) -> Vec<(String, String)> {
    let mut missing: Vec<(String, String)> = needed
        .iter()
        .filter(|(v, _)| !defined.contains(*v))
        .map(|(v, f)| (v.clone(), f.clone()))
        .collect();
    missing.sort_by_key(|(v, _)| version_key(v));
    missing
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

    #[test]
    fn missing_versions_are_sorted_numerically() {
        let needed: BTreeMap<String, String> = [
            ("GLIBC_2.34".to_string(), "libc.so.6".to_string()),
            ("GLIBC_2.9".to_string(), "libc.so.6".to_string()),
            ("GLIBC_2.2.5".to_string(), "libc.so.6".to_string()),
        ]
        .into();
        let defined: BTreeSet<String> = ["GLIBC_2.2.5".to_string()].into();
        let missing: Vec<String> = missing_versions(&needed, &defined)
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        assert_eq!(missing, vec!["GLIBC_2.9", "GLIBC_2.34"]);
    }

    #[test]
    fn this_test_binary_needs_glibc_versions() {
        let bytes = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let v = glibc_versions(&bytes).unwrap();
        assert!(v.needed.keys().any(|k| k.starts_with("GLIBC_2.")), "{v:?}");
    }
}
