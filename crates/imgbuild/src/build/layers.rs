//! Stage `layers`: the binary's shared-library closure (checked against a base image's glibc),
//! then the image's layers, most stable first — the base image's (as they are), the minimal
//! rootfs (images from scratch), the library closure, the app layer.
//!
//! Reads the executable and the host libraries (through `lddtree`) and writes layers into the
//! local store (memoized by their inputs' fingerprint).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use imgbuild_cargo::workspace::BinaryTarget;
use imgbuild_oci::layer::{Content, LayerBuilder};
use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::{Descriptor, MediaType};

use crate::base::BaseImage;
use crate::build::Setup;
use crate::build::binary::Shipped;
use crate::build::setup::FileList;
use crate::context::Context;
use crate::event::{Event, Reporter};
use crate::image::{self, APP_DIR, Layer, LayerRole, RuntimeSpec};
use crate::{Error, Result, closure, rootfs};

/// The image's layers and what went into them.
pub(crate) struct Layers {
    /// Every layer, most stable first.
    pub(crate) layers: Vec<Layer>,
    /// The image's runtime settings.
    pub(crate) spec: RuntimeSpec,
    /// The executable.
    pub(crate) executable: PathBuf,
    /// The host files copied into the image besides the executable (libraries, CA bundle,
    /// extra files): app-key inputs.
    pub(crate) host_files: Vec<PathBuf>,
}

/// Runs the stage.
pub(crate) fn layers(
    cx: &Context<'_>,
    s: &Setup,
    shipped: &Shipped,
    reporter: &dyn Reporter,
) -> Result<Layers> {
    let selected = cx.one();
    let executable = shipped.executable.clone();
    let root = runtime_root(cx);
    let closure = closure::resolve(&executable, &root)?;
    let closure = match &s.base {
        Some(b) => {
            let on_base = closure.on_base(&b.fs);
            check_glibc(&s.store, b, &executable, &on_base)?;
            on_base
        }
        None => closure,
    };
    // A base image brings its own users, /tmp and CA certificates.
    let ca_bundle = s.base.is_none().then(|| rootfs::ca_bundle(&root)).flatten();
    let spec = image::runtime_spec(
        &selected.config,
        &selected.target,
        ca_bundle.is_some(),
        &closure.extra_dirs,
        s.base.as_ref().and_then(|b| b.config.config().as_ref()),
    );
    let mut layers = match &s.base {
        Some(b) => base_layers(b)?,
        None => Vec::new(),
    };
    let mut wanted: Vec<(LayerRole, String, LayerBuilder)> = Vec::new();
    if s.base.is_none() {
        let text = "imgbuild: minimal rootfs (users, /tmp, CA certificates)";
        wanted.push((
            LayerRole::Rootfs,
            text.into(),
            rootfs::layer(ca_bundle.as_deref())?,
        ));
    }
    if !closure.is_empty() {
        let text = "imgbuild: shared-library closure of the binary";
        wanted.push((LayerRole::Libraries, text.into(), closure.layer()?));
    }
    wanted.push((
        LayerRole::App,
        format!(
            "imgbuild: {APP_DIR}/{} and declared files",
            selected.target.bin
        ),
        app_layer(&selected.target, &executable, &s.extra_files)?,
    ));
    layers.extend(write_layers(cx, s, wanted, reporter)?);
    let mut host_files: Vec<PathBuf> = closure.files.values().cloned().collect();
    host_files.extend(ca_bundle);
    host_files.extend(s.extra_files.values().map(|(src, _)| src.clone()));
    Ok(Layers {
        layers,
        spec,
        executable,
        host_files,
    })
}

/// Where the runtime comes from: where the binary was built, the build environment's root
/// filesystem, else the host's.
fn runtime_root(cx: &Context<'_>) -> PathBuf {
    cx.build_env
        .as_ref()
        .map_or_else(|| PathBuf::from("/"), |b| b.root.clone())
}

/// Writes, while cargo compiles, the layers an image from scratch most likely has besides the
/// app's: the minimal rootfs, and the library closure of a build script the restore brought
/// (linked by the same toolchain for the same target, it usually needs exactly the app's
/// libraries). When the app's closure is the same, the stage finds both in the layer memo
/// instead of compressing them after the compile (on a fresh runner, the C library alone takes
/// about 30 ms); otherwise only the work is lost. Never fails the build.
pub(crate) fn warm(cx: &Context<'_>, s: &Setup) {
    // A base image brings its own libraries; a cross target's are not the build scripts'.
    if s.base.is_some() || cx.cargo_triple.is_some() || !cx.options.caching() {
        return;
    }
    let root = runtime_root(cx);
    let mut builders: Vec<LayerBuilder> = rootfs::layer(rootfs::ca_bundle(&root).as_deref())
        .into_iter()
        .collect();
    let closure = a_build_script(&s.profile_dir)
        .and_then(|script| closure::resolve(&script, &root).ok())
        .filter(|c| !c.is_empty());
    builders.extend(closure.and_then(|c| c.layer().ok()));
    let memo = cx.cache.layer_memo();
    std::thread::scope(|scope| {
        for builder in &builders {
            let memo = &memo;
            scope.spawn(move || s.store.write_layer_memoized(builder, cx.epoch, memo));
        }
    });
}

/// The first (by name) build-script executable under `profile_dir`.
fn a_build_script(profile_dir: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(profile_dir.join("build"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|d| d.join("build-script-build"))
        .find(|p| p.is_file())
}

/// Writes the new layers into the store at once (each is compressed on its own thread: on a
/// fresh runner none is memoized yet), then reports them in order.
fn write_layers(
    cx: &Context<'_>,
    s: &Setup,
    wanted: Vec<(LayerRole, String, LayerBuilder)>,
    reporter: &dyn Reporter,
) -> Result<Vec<Layer>> {
    let memo = cx.cache.layer_memo();
    let blobs = std::thread::scope(|scope| {
        let handles: Vec<_> = wanted
            .iter()
            .map(|(_, _, builder)| {
                let memo = &memo;
                scope.spawn(move || s.store.write_layer_memoized(builder, cx.epoch, memo))
            })
            .collect();
        handles
            .into_iter()
            .map(crate::threads::join)
            .collect::<Vec<_>>()
    });
    wanted
        .into_iter()
        .zip(blobs)
        .map(|((role, created_by, builder), blob)| {
            let blob = blob?;
            reporter.report(&Event::Layer {
                role,
                digest: blob.descriptor.digest().to_string(),
                diff_id: blob.diff_id.to_string(),
                size: blob.descriptor.size(),
                entries: builder.paths().count(),
            });
            Ok(Layer::written(&blob, role, created_by))
        })
        .collect()
}

/// The base image's layers as the image lists them.
fn base_layers(b: &BaseImage) -> Result<Vec<Layer>> {
    b.manifest
        .layers()
        .iter()
        .zip(b.config.rootfs().diff_ids())
        .map(|(descriptor, diff_id)| {
            Ok(Layer {
                descriptor: oci_layer_descriptor(descriptor),
                diff_id: diff_id.parse().map_err(|_| Error::Base {
                    reference: b.reference.clone(),
                    reason: format!("its config lists an invalid diff_id {diff_id:?}"),
                })?,
                created_by: None,
                role: LayerRole::Base,
            })
        })
        .collect()
}

/// A base layer's descriptor as an OCI manifest lists it (Docker's gzip media type becomes
/// the OCI one: same bytes).
fn oci_layer_descriptor(d: &Descriptor) -> Descriptor {
    let media = match d.media_type().to_string().as_str() {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => MediaType::ImageLayerGzip,
        _ => d.media_type().clone(),
    };
    Descriptor::new(media, d.size(), d.digest().clone())
}

/// Fails when the base's libc lacks a `GLIBC_x.y` version the binary or the libraries it
/// brings need. Nothing to check when the base has no libc (the image ships the host's).
fn check_glibc(
    store: &Layout,
    base: &BaseImage,
    executable: &Path,
    closure: &closure::Closure,
) -> Result<()> {
    let Some(libc_path) = base.fs.find_library("libc.so.6") else {
        return Ok(());
    };
    let Some(libc) = crate::base::read_file(store, base, &libc_path)? else {
        return Ok(());
    };
    let Some(provided) = crate::base::glibc_versions(&libc) else {
        return Ok(());
    };
    let mut needed = BTreeMap::new();
    let read = |p: &Path| std::fs::read(p).map_err(crate::io_err("reading", p));
    let mut objects = vec![executable.to_path_buf()];
    objects.extend(closure.files.values().cloned());
    for object in &objects {
        if let Some(v) = crate::base::glibc_versions(&read(object)?) {
            for (version, file) in v.needed {
                needed.entry(version).or_insert(file);
            }
        }
    }
    let missing = crate::base::missing_versions(&needed, &provided.defined);
    if missing.is_empty() {
        return Ok(());
    }
    let newest = provided
        .defined
        .iter()
        .max_by_key(|v| crate::base::version_key(v))
        .cloned()
        .unwrap_or_else(|| "(none)".into());
    Err(Error::GlibcTooOld {
        reference: base.reference.clone(),
        newest,
        binary: executable.display().to_string(),
        missing: missing
            .into_iter()
            .map(|(v, f)| format!("{v} ({f})"))
            .collect(),
    })
}

fn app_layer(target: &BinaryTarget, executable: &Path, extra: &FileList) -> Result<LayerBuilder> {
    let mut b = LayerBuilder::new();
    b.file(
        &format!("{APP_DIR}/{}", target.bin),
        Content::HostFile(executable.to_path_buf()),
        0o755,
    )?;
    for (dst, (src, mode)) in extra {
        b.file(dst, Content::HostFile(src.clone()), *mode)
            .map_err(|e| Error::ExtraFile {
                src: src.clone(),
                reason: e.to_string(),
            })?;
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_predicting_build_script_is_the_first_by_name_that_was_compiled() {
        let dir = tempfile::tempdir().unwrap();
        let build = dir.path().join("build");
        // A build script's run directory has no executable; its compile directory has one.
        for (d, exe) in [("zz-9", true), ("aa-1", false), ("mm-5", true)] {
            std::fs::create_dir_all(build.join(d)).unwrap();
            if exe {
                std::fs::write(build.join(d).join("build-script-build"), b"\x7fELF").unwrap();
            }
        }
        assert_eq!(
            a_build_script(dir.path()),
            Some(build.join("mm-5/build-script-build"))
        );
        assert_eq!(a_build_script(&dir.path().join("nothing")), None);
    }
}
