//! Base images: pulled once into the local store, listed, and checked against the binary.
//!
//! Talks to registries (through [`crate::publish`]), reads the store's blobs, and keeps two
//! small records under the cache directory: which digest a base reference resolved to last
//! (`bases.json`, used when the registry is unreachable) and each base layer's file listing
//! (`base-files/<digest>.json`), so that a second build neither downloads nor unpacks anything.
//!
//! The base's filesystem model ([`BaseFs`], in [`crate::basefs`]) answers the questions image
//! assembly asks: does the base already have this library (so the image does not ship the
//! host's copy over it), where does a path really live (so a layer never replaces a base
//! symlink such as a merged-usr `/lib` with a directory); this module reads which `GLIBC_x.y`
//! versions its libc defines.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;

use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::{Descriptor, ImageConfiguration, ImageManifest, MediaType};
use imgbuild_registry::{Client, Reference};

use crate::basefs::{BaseFs, Listing, Node, normalize};
use crate::cachedir::CacheDir;
use crate::event::{Event, Reporter};
use crate::publish::RegistryOptions;
use crate::{Error, Result};

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

fn bases_record(cache: &CacheDir) -> PathBuf {
    let (dir, name) = cache.bases_record();
    dir.join(name)
}

/// The recorded resolutions. A missing file is an empty record; any other read error is an
/// error naming the file. Decision: a file that is not valid JSON also reads as empty (it is
/// only written atomically by [`write_record`], so it is not ours; the next write replaces it).
fn read_record(cache: &CacheDir) -> Result<BTreeMap<String, String>> {
    let path = bases_record(cache);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(crate::io_err("reading", &path)(e)),
    }
}

/// The digest `reference` resolved to at the last build, if any (no network). Used only to
/// show the app key's inputs: a record that cannot be read shows as "not resolved yet" (the
/// build itself reads it through [`resolve`], where that is an error).
pub(crate) fn recorded_digest(cache: &CacheDir, reference: &str) -> Option<String> {
    read_record(cache).ok()?.get(reference).cloned()
}

/// Records that `reference` resolved to `digest`. A failure is an error: without the record,
/// a later build with the registry unreachable would fail although the base is in the store.
fn write_record(cache: &CacheDir, reference: &str, digest: &str) -> Result<()> {
    let mut record = read_record(cache)?;
    if record.get(reference).is_some_and(|d| d == digest) {
        return Ok(());
    }
    record.insert(reference.to_string(), digest.to_string());
    let (dir, name) = cache.bases_record();
    std::fs::create_dir_all(dir).map_err(crate::io_err("creating directory", dir))?;
    let bytes = serde_json::to_vec(&record).map_err(|source| imgbuild_oci::Error::InvalidJson {
        what: "base record",
        path: bases_record(cache),
        source,
    })?;
    imgbuild_oci::layout::write_atomic(dir, name, &bytes)?;
    Ok(())
}

/// The manifest of the base image `digest` when the store has it and every blob it names.
pub(crate) fn in_store(store: &Layout, digest: &str) -> Option<Descriptor> {
    let d: imgbuild_oci::spec::Digest = digest.parse().ok()?;
    let bytes = store.read_blob(&d).ok()?;
    let m: ImageManifest = serde_json::from_slice(&bytes).ok()?;
    let all_there = std::iter::once(m.config())
        .chain(m.layers())
        .all(|b| store.has_blob(b.digest()));
    all_there.then(|| Descriptor::new(MediaType::ImageManifest, bytes.len() as u64, d))
}

/// Pulls `text` (the host platform's image of an index) into the store; when the registry
/// cannot be reached, falls back to the digest it last resolved to, with a warning.
pub(crate) fn pull(
    store: &Layout,
    text: &str,
    reference: &Reference,
    arch: &str,
    options: &RegistryOptions,
    cache: &CacheDir,
    reporter: &dyn Reporter,
) -> Result<Descriptor> {
    let progress = crate::publish::progress(reporter, reference);
    let fetched =
        Client::connect(reference, options.client_options(reference)).and_then(|client| {
            imgbuild_registry::pull::pull(&client, store, reference, "linux", arch, &progress)
        });
    match fetched {
        Ok(Some(pulled)) => Ok(pulled.manifest),
        Ok(None) => Err(Error::Registry(imgbuild_registry::Error::NotFound {
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            what: format!("base image {text}"),
            message: "no such manifest".into(),
        })),
        Err(e @ imgbuild_registry::Error::Unreachable { .. }) => {
            let Some(desc) = read_record(cache)?
                .get(text)
                .and_then(|d| in_store(store, d))
            else {
                return Err(e.into());
            };
            reporter.report(&Event::Warning {
                message: format!("{e}; using {text} as last resolved ({})", desc.digest()),
            });
            Ok(desc)
        }
        Err(e) => Err(e.into()),
    }
}

/// Resolves `text` to a base image in `store` for architecture `arch` (OCI name): by digest
/// from the store when it is there, else from its registry (an index gives the
/// `linux/<arch>` image). Blobs the store has
/// are not downloaded again. When the registry cannot be reached, the digest this reference
/// last resolved to is used, with a warning.
pub(crate) fn resolve(
    store: &Layout,
    text: &str,
    arch: &str,
    options: &RegistryOptions,
    cache: &CacheDir,
    reporter: &dyn Reporter,
) -> Result<BaseImage> {
    let reference = Reference::parse(text)?;
    let manifest_desc = match reference.digest.as_deref().and_then(|d| in_store(store, d)) {
        Some(desc) => desc,
        None => pull(store, text, &reference, arch, options, cache, reporter)?,
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
        let layer = listing(store, layer, cache).map_err(|e| match e {
            Error::Oci(e @ imgbuild_oci::Error::UnknownLayerMediaType { .. }) => Error::Base {
                reference: text.to_string(),
                reason: e.to_string(),
            },
            e => e,
        })?;
        fs.apply(i, &layer);
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
    let mut archive = tar::Archive::new(store.open_layer(layer)?);
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
    // Decision: the listing is only a speed-up (a missing one means the layer is read again),
    // so failing to save it is not an error; bases.json, which offline builds need, is.
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
    let mut archive = tar::Archive::new(store.open_layer(desc)?);
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

    #[test]
    fn resolutions_are_recorded_and_failures_to_record_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(tmp.path().join("cache"));
        assert_eq!(recorded_digest(&cache, "b:1"), None);
        write_record(&cache, "a:1", "sha256:aa").unwrap();
        write_record(&cache, "b:1", "sha256:bb").unwrap();
        assert_eq!(recorded_digest(&cache, "a:1").as_deref(), Some("sha256:aa"));
        assert_eq!(recorded_digest(&cache, "b:1").as_deref(), Some("sha256:bb"));

        // A record that cannot be read (a directory in its place) is not "no record".
        let blocked = tmp.path().join("blocked");
        let blocked = CacheDir::new(blocked);
        std::fs::create_dir_all(bases_record(&blocked).join("x")).unwrap();
        let err = write_record(&blocked, "a:1", "sha256:aa").unwrap_err();
        assert!(err.to_string().contains("bases.json"), "{err}");

        // A directory where no file can be created, even by root.
        let err = write_record(&CacheDir::new("/proc/self"), "a:1", "sha256:aa").unwrap_err();
        assert!(
            matches!(err, Error::Oci(imgbuild_oci::Error::Io { .. })),
            "{err}"
        );
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
