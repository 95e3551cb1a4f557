//! The minimal root filesystem layer: users, groups, `/tmp`, and CA certificates.
//!
//! Reads one file of the build's root filesystem (the host's, or the build environment's):
//! the CA bundle, when it has one.

use std::path::{Path, PathBuf};

use imgbuild_oci::layer::{Content, EntryKind, LayerBuilder};

use crate::Result;

/// The non-root user images run as by default (the distroless convention).
pub(crate) const NONROOT_UID: u32 = 65532;

/// Where the CA bundle goes in the image (the path most TLS stacks look at first).
pub(crate) const CA_BUNDLE_IN_IMAGE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// CA bundles, in the order they are looked for.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The first CA bundle found in the root filesystem `root` (`/` for the host), as a host path.
pub(crate) fn ca_bundle(root: &Path) -> Option<PathBuf> {
    CA_BUNDLES
        .iter()
        .filter_map(|p| crate::closure::resolve_in_root(root, Path::new(p)))
        .find(|p| p.is_file())
}

/// Builds the rootfs layer. `ca_bundle` is a host file copied to [`CA_BUNDLE_IN_IMAGE`].
pub(crate) fn layer(ca_bundle: Option<&Path>) -> Result<LayerBuilder> {
    let mut b = LayerBuilder::new();
    let passwd = format!(
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/sbin/nologin\n"
    );
    let group = format!("root:x:0:\nnonroot:x:{NONROOT_UID}:\n");
    b.file("/etc/passwd", Content::Bytes(passwd.into_bytes()), 0o644)?;
    b.file("/etc/group", Content::Bytes(group.into_bytes()), 0o644)?;
    b.file(
        "/etc/nsswitch.conf",
        Content::Bytes(b"passwd: files\ngroup: files\nhosts: files dns\n".to_vec()),
        0o644,
    )?;
    b.dir("/tmp", 0o1777)?;
    b.dir("/root", 0o700)?;
    b.add_owned(
        "/home/nonroot",
        EntryKind::Dir { mode: 0o700 },
        NONROOT_UID.into(),
        NONROOT_UID.into(),
    )?;
    if let Some(bundle) = ca_bundle {
        b.file(
            CA_BUNDLE_IN_IMAGE,
            Content::HostFile(bundle.to_path_buf()),
            0o644,
        )?;
    }
    Ok(b)
}
