//! Image assembly: the resolved runtime settings, the image config and the manifest (pure).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use imgbuild_cargo::config::ImageConfig;
use imgbuild_cargo::workspace::BinaryTarget;
use imgbuild_oci::layout::LayerBlob;
use imgbuild_oci::spec::{
    Arch, ConfigBuilder, Descriptor, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder,
    ImageManifest, ImageManifestBuilder, MediaType, Os, RootFsBuilder, SCHEMA_VERSION,
};

use crate::Result;
use crate::rootfs::{CA_BUNDLE_IN_IMAGE, NONROOT_UID};

/// Where the binary goes in the image.
pub(crate) const APP_DIR: &str = "/app";

/// The `PATH` every image starts with.
pub(crate) const DEFAULT_PATH: &str =
    "/app:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything the image config says, after defaults and overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuntimeSpec {
    /// Image name (`name` in `name:tag`).
    pub name: String,
    /// Image tag.
    pub tag: String,
    /// Entrypoint argv.
    pub entrypoint: Vec<String>,
    /// Default arguments.
    pub cmd: Option<Vec<String>>,
    /// Environment, by name.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// User.
    pub user: String,
    /// Exposed ports (`PORT/PROTO`).
    pub expose: Vec<String>,
    /// Config labels.
    pub labels: BTreeMap<String, String>,
}

/// Applies imgbuild's defaults to a merged configuration for `target`, on top of a base
/// image's runtime settings if there is one: the base's environment, working directory,
/// labels and ports carry over; its entrypoint and command do not (the binary is the
/// entrypoint); its user only when it is not root (imgbuild's default is uid 65532).
pub(crate) fn runtime_spec(
    config: &ImageConfig,
    target: &BinaryTarget,
    has_ca_bundle: bool,
    extra_lib_dirs: &[String],
    base: Option<&imgbuild_oci::spec::Config>,
) -> RuntimeSpec {
    let mut env = BTreeMap::new();
    for pair in base.and_then(|b| b.env().clone()).unwrap_or_default() {
        if let Some((k, v)) = pair.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
    env.entry("PATH".to_string())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    if has_ca_bundle {
        env.insert("SSL_CERT_FILE".to_string(), CA_BUNDLE_IN_IMAGE.to_string());
    }
    if !extra_lib_dirs.is_empty() {
        env.insert("LD_LIBRARY_PATH".to_string(), extra_lib_dirs.join(":"));
    }
    env.extend(config.env.clone());
    let default_name = target.bin.to_ascii_lowercase().replace(
        |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '.',
        "_",
    );
    RuntimeSpec {
        name: config.name.clone().unwrap_or(default_name),
        tag: config.tag.clone().unwrap_or_else(|| "latest".to_string()),
        entrypoint: config
            .entrypoint
            .clone()
            .unwrap_or_else(|| vec![format!("{APP_DIR}/{}", target.bin)]),
        cmd: config.cmd.clone(),
        env,
        workdir: config.workdir.clone().or_else(|| {
            base.and_then(|b| b.working_dir().clone())
                .filter(|w| !w.is_empty())
        }),
        user: config
            .user
            .clone()
            .or_else(|| {
                base.and_then(|b| b.user().clone())
                    .filter(|u| !u.is_empty() && u != "root" && u != "0" && !u.starts_with("0:"))
            })
            .unwrap_or_else(|| NONROOT_UID.to_string()),
        expose: {
            let mut ports: Vec<String> = base
                .and_then(|b| b.exposed_ports().clone())
                .unwrap_or_default();
            for p in config.expose.clone().unwrap_or_default() {
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
            ports
        },
        labels: {
            let mut labels: BTreeMap<String, String> = base
                .and_then(|b| b.labels().clone())
                .unwrap_or_default()
                .into_iter()
                .collect();
            labels.extend(config.labels.clone());
            labels
        },
    }
}

/// The image's architecture, from the build host's (images are built for the host target).
pub(crate) fn host_arch() -> Arch {
    match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        "x86" => Arch::i386,
        "arm" => Arch::ARM,
        "riscv64" => Arch::RISCV64,
        "powerpc64" => Arch::PowerPC64,
        "s390x" => Arch::s390x,
        other => Arch::Other(other.to_string()),
    }
}

/// What a layer of an image holds, most stable first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LayerRole {
    /// A layer of the base image, as the base has it.
    Base,
    /// The minimal root filesystem (users, `/tmp`, CA certificates); images from scratch only.
    Rootfs,
    /// The binary's shared-library closure.
    Libraries,
    /// The binary and the declared extra files: the only layer that changes with app code.
    App,
}

impl LayerRole {
    /// The role's name, as events and records spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerRole::Base => "base",
            LayerRole::Rootfs => "rootfs",
            LayerRole::Libraries => "libraries",
            LayerRole::App => "app",
        }
    }
}

impl std::fmt::Display for LayerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A layer of an image and the history line that describes it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Layer {
    /// The compressed blob, as the manifest lists it.
    pub descriptor: Descriptor,
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: imgbuild_oci::spec::Digest,
    /// `history[].created_by`; `None` for a base image's layer (the base's history is kept).
    pub created_by: Option<String>,
    /// What the layer holds.
    pub role: LayerRole,
}

impl Layer {
    /// A layer imgbuild wrote.
    pub(crate) fn written(blob: &LayerBlob, role: LayerRole, created_by: String) -> Self {
        Self {
            descriptor: blob.descriptor.clone(),
            diff_id: blob.diff_id.clone(),
            created_by: Some(created_by),
            role,
        }
    }
}

/// An image in the local store, not yet tagged: from this build, or from the app cache.
pub(crate) struct StoredImage {
    /// The manifest's descriptor.
    pub(crate) manifest: Descriptor,
    /// The config's descriptor.
    pub(crate) config: Descriptor,
    /// The image's name and tag.
    pub(crate) name: String,
    /// The image's tag.
    pub(crate) tag: String,
    /// The layers, most stable first.
    pub(crate) layers: Vec<Layer>,
    /// The executable (for an app-cache hit: where the last build left it).
    pub(crate) executable: PathBuf,
    /// Host files copied into the image (app-key inputs; empty for a hit).
    pub(crate) host_files: Vec<PathBuf>,
    /// How the compile reached the network, when known (the provenance says).
    pub(crate) network: Option<crate::supply::Network>,
}

/// Builds the image config; `base_history` (a base image's own history) comes first.
pub(crate) fn config(
    spec: &RuntimeSpec,
    layers: &[Layer],
    created: &str,
    base_history: &[imgbuild_oci::spec::History],
    platform: Option<&crate::platform::Platform>,
) -> Result<ImageConfiguration> {
    let mut runtime = ConfigBuilder::default()
        .user(spec.user.clone())
        .env(
            spec.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .entrypoint(spec.entrypoint.clone());
    if let Some(cmd) = &spec.cmd {
        runtime = runtime.cmd(cmd.clone());
    }
    if let Some(dir) = &spec.workdir {
        runtime = runtime.working_dir(dir.clone());
    }
    if !spec.expose.is_empty() {
        runtime = runtime.exposed_ports(spec.expose.clone());
    }
    if !spec.labels.is_empty() {
        runtime = runtime.labels(spec.labels.clone().into_iter().collect::<HashMap<_, _>>());
    }
    let mut history = base_history.to_vec();
    for layer in layers {
        if let Some(by) = &layer.created_by {
            history.push(
                HistoryBuilder::default()
                    .created(created.to_string())
                    .created_by(by.clone())
                    .build()?,
            );
        }
    }
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(
            layers
                .iter()
                .map(|l| l.diff_id.to_string())
                .collect::<Vec<_>>(),
        )
        .build()?;
    let mut builder = ImageConfigurationBuilder::default();
    if let Some(variant) = platform.and_then(|p| p.variant.clone()) {
        builder = builder.variant(variant);
    }
    let architecture = platform.map_or_else(host_arch, |p| Arch::from(p.architecture.as_str()));
    Ok(builder
        .created(created.to_string())
        .architecture(architecture)
        .os(Os::Linux)
        .config(runtime.build()?)
        .rootfs(rootfs)
        .history(history)
        .build()?)
}

/// Builds the manifest.
pub(crate) fn manifest(
    config: Descriptor,
    layers: &[Layer],
    annotations: &BTreeMap<String, String>,
) -> Result<ImageManifest> {
    let mut builder = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(
            layers
                .iter()
                .map(|l| l.descriptor.clone())
                .collect::<Vec<_>>(),
        );
    if !annotations.is_empty() {
        builder = builder.annotations(annotations.clone().into_iter().collect::<HashMap<_, _>>());
    }
    Ok(builder.build()?)
}

/// Facts for the standard `org.opencontainers.image.*` annotations.
#[derive(Debug, Clone, Default)]
pub(crate) struct Provenance {
    /// Image creation time, RFC 3339.
    pub created: String,
    /// VCS revision of the source.
    pub revision: Option<String>,
}

/// The standard annotations for `target`.
pub(crate) fn annotations(
    target: &BinaryTarget,
    provenance: &Provenance,
) -> BTreeMap<String, String> {
    let p = &target.package;
    let mut a = BTreeMap::new();
    let mut put = |k: &str, v: Option<&String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            a.insert(format!("org.opencontainers.image.{k}"), v.clone());
        }
    };
    put("title", Some(&target.bin));
    put("version", Some(&p.version));
    put("created", Some(&provenance.created));
    put("revision", provenance.revision.as_ref());
    put("source", p.repository.as_ref());
    put("url", p.homepage.as_ref());
    put("description", p.description.as_ref());
    put("licenses", p.license.as_ref());
    put("authors", p.authors.as_ref());
    a
}
