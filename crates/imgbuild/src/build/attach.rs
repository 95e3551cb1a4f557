//! Stage `attach`: the image's supply-chain artifacts, stored as OCI referrers of its
//! manifest — the SBOM (SPDX or CycloneDX), the provenance statement, and the debug info the
//! `binary` stage split off.
//!
//! Reads the closure layer and the build root's dpkg database, writes referrer blobs and
//! index entries to the local store. What the documents say is decided by [`crate::supply`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use imgbuild_oci::referrers::{self, Artifact, Document};
use imgbuild_oci::spec::Descriptor;

use crate::build::Setup;
use crate::build::binary::{self, DebugInfo};
use crate::context::Context;
use crate::event::{Event, Reporter};
use crate::image::{Layer, LayerRole, StoredImage};
use crate::options::SbomFormat;
use crate::supply::{self, BuildFacts, Facts, ImageRef, Library};
use crate::{Result, io_err};

/// Runs the stage. `fresh`: the image was just assembled (a stored image reuses the SBOM and
/// debug info stored with it). Returns the referrers of this build, in a fixed order.
pub(crate) fn attach(
    cx: &Context<'_>,
    s: &Setup,
    image: &StoredImage,
    debuginfo: Option<&DebugInfo>,
    fresh: bool,
    reporter: &dyn Reporter,
) -> Result<Vec<Descriptor>> {
    let supply_options = cx.options.supply;
    let created = crate::time::rfc3339(cx.epoch);
    let annotations = BTreeMap::from([(
        "org.opencontainers.image.created".to_string(),
        created.clone(),
    )]);
    let mut attached = Vec::new();
    let sbom_type = match supply_options.sbom {
        SbomFormat::Spdx => Some(supply::SPDX_TYPE),
        SbomFormat::CycloneDx => Some(supply::CYCLONEDX_TYPE),
        SbomFormat::None => None,
    };
    let stored = |t: &str| -> Result<Option<Descriptor>> {
        if fresh {
            return Ok(None);
        }
        // The newest: an image built again after, say, a license changed in a manifest has
        // the newer SBOM listed last.
        Ok(referrers::find(&s.store, image.manifest.digest(), Some(t))?.pop())
    };
    let mut facts = None;
    if let Some(t) = sbom_type {
        let desc = match stored(t)? {
            Some(d) => d,
            None => {
                let mut f = gather(cx, s, image)?;
                f.libraries = libraries(cx, s, image)?;
                let doc = match supply_options.sbom {
                    SbomFormat::CycloneDx => supply::cyclonedx::document(&f),
                    _ => supply::spdx::document(&f),
                };
                facts = Some(f);
                put(s, image, t, &json(&doc)?, &annotations)?
            }
        };
        attached.push(desc);
    }
    if supply_options.provenance {
        let f = match facts {
            Some(f) => f,
            None => gather(cx, s, image)?,
        };
        let doc = supply::provenance::statement(&f);
        attached.push(put(
            s,
            image,
            supply::IN_TOTO_TYPE,
            &json(&doc)?,
            &annotations,
        )?);
    }
    let debug = match debuginfo {
        Some(d) => Some(put_debuginfo(s, image, d, &annotations)?),
        None => stored(supply::DEBUGINFO_TYPE)?,
    };
    attached.extend(debug);
    {
        let _lock = s.store.lock()?;
        for desc in &attached {
            referrers::list(&s.store, desc)?;
        }
    }
    report(s, &attached, reporter);
    Ok(attached)
}

/// Reports each attached artifact with the size of its content.
fn report(s: &Setup, attached: &[Descriptor], reporter: &dyn Reporter) {
    for desc in attached {
        let size = s
            .store
            .read_manifest(desc.digest())
            .ok()
            .and_then(|m| m.layers().first().map(|l| l.size()))
            .unwrap_or_default();
        reporter.report(&Event::Attached {
            artifact_type: desc
                .artifact_type()
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            digest: desc.digest().to_string(),
            size,
        });
    }
}

fn json(value: &serde_json::Value) -> Result<Vec<u8>> {
    imgbuild_oci::json::to_vec(value).map_err(|e| crate::Error::AuditData {
        reason: format!("serializing a document: {e}"),
    })
}

fn put(
    s: &Setup,
    image: &StoredImage,
    artifact_type: &str,
    bytes: &[u8],
    annotations: &BTreeMap<String, String>,
) -> Result<Descriptor> {
    let artifact = Artifact {
        artifact_type,
        layer_media_type: artifact_type,
        document: Document::Bytes(bytes),
        annotations: annotations.clone(),
    };
    Ok(referrers::put(&s.store, &image.manifest, &artifact)?)
}

fn put_debuginfo(
    s: &Setup,
    image: &StoredImage,
    d: &DebugInfo,
    annotations: &BTreeMap<String, String>,
) -> Result<Descriptor> {
    let mut annotations = annotations.clone();
    annotations.insert(supply::BUILD_ID_ANNOTATION.into(), d.build_id.clone());
    let artifact = Artifact {
        artifact_type: supply::DEBUGINFO_TYPE,
        layer_media_type: supply::DEBUGINFO_LAYER_TYPE,
        document: Document::File(&d.path),
        annotations,
    };
    Ok(referrers::put(&s.store, &image.manifest, &artifact)?)
}

/// The facts every document starts from (libraries are added for SBOMs only).
fn gather(cx: &Context<'_>, s: &Setup, image: &StoredImage) -> Result<Facts> {
    let o = cx.options;
    let target = &cx.one().target;
    let features = o.cargo_features();
    let mut feature_flags = Vec::new();
    if !features.list.is_empty() {
        feature_flags.extend(["--features".to_string(), features.list.join(",")]);
    }
    if features.all {
        feature_flags.push("--all-features".into());
    }
    if features.no_default {
        feature_flags.push("--no-default-features".into());
    }
    Ok(Facts {
        image: format!("{}:{}", image.name, image.tag),
        manifest_digest: image.manifest.digest().to_string(),
        package: target.package.name.clone(),
        bin: target.bin.clone(),
        crates: binary::crates(cx, s),
        libraries: Vec::new(),
        base: s.base.as_ref().map(|b| ImageRef {
            reference: b.reference.clone(),
            digest: b.digest.clone(),
        }),
        build_env: cx.build_env.as_ref().map(|b| ImageRef {
            reference: b.reference.clone(),
            digest: b.digest.clone(),
        }),
        created: cx.epoch,
        build: BuildFacts {
            profile: o.profile.clone(),
            features: feature_flags,
            outputs: o.outputs.iter().map(ToString::to_string).collect(),
            revision: cx.revision.clone(),
            lockfile_sha256: s.keys.lockfile_sha256().to_string(),
            target: s.keys.triple().to_string(),
            rustc: s.keys.rustc_release().to_string(),
            network: image.network,
        },
    })
}

/// The regular files of the image's libraries layer, hashed, with their Debian packages. The
/// listing is remembered by the layer's diff_id (the layer is the same from build to build,
/// and reading it again would be most of this stage's time).
fn libraries(cx: &Context<'_>, s: &Setup, image: &StoredImage) -> Result<Vec<Library>> {
    let Some(layer) = image.layers.iter().find(|l| l.role == LayerRole::Libraries) else {
        return Ok(Vec::new());
    };
    let memo = cx.cache.library_listing(layer.diff_id.digest());
    let listed: Option<Vec<(String, String)>> = std::fs::read(&memo)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let files = match listed {
        Some(files) => files,
        None => {
            let files = list_files(s, layer)?;
            remember(&memo, &files);
            files
        }
    };
    let root: PathBuf = cx
        .build_env
        .as_ref()
        .map_or_else(|| Path::new("/").to_path_buf(), |b| b.root.clone());
    let paths: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    let mut owners = crate::dpkg::owners(&root, &paths);
    Ok(files
        .into_iter()
        .map(|(path, sha256)| Library {
            deb: owners.remove(&path),
            path,
            sha256,
        })
        .collect())
}

/// Writes the listing memo; one that cannot be written only costs the next build a re-read.
fn remember(memo: &Path, files: &[(String, String)]) {
    let (Some(dir), Some(name)) = (memo.parent(), memo.file_name()) else {
        return;
    };
    if let Ok(bytes) = serde_json::to_vec(files)
        && std::fs::create_dir_all(dir).is_ok()
    {
        let _ = imgbuild_oci::layout::write_atomic(dir, &name.to_string_lossy(), &bytes);
    }
}

/// (path, sha256 hex) of the layer's regular files, sorted.
fn list_files(s: &Setup, layer: &Layer) -> Result<Vec<(String, String)>> {
    let blob = s.store.blob_path(layer.descriptor.digest());
    let mut archive = tar::Archive::new(s.store.open_layer(&layer.descriptor)?);
    let mut out = Vec::new();
    for entry in archive.entries().map_err(io_err("reading", &blob))? {
        let mut entry = entry.map_err(io_err("reading", &blob))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(io_err("reading", &blob))?;
        let path = format!("/{}", path.to_string_lossy().trim_start_matches("./"));
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(io_err("reading", &blob))?;
        out.push((
            path,
            imgbuild_oci::digest::sha256(&bytes).digest().to_string(),
        ));
    }
    out.sort();
    Ok(out)
}
