//! TLS trust for registry connections: the system's CA bundle, `SSL_CERT_FILE`, and the
//! per-registry `certs.d/HOST:PORT/*.crt` files docker and podman use.
//!
//! Reads certificate files; no network.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ureq::tls::{Certificate, PemItem, RootCerts};

use crate::{Error, Result};

/// The system CA bundles, in the order distributions put them; the first that exists is used.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The `certs.d` directories that may hold a folder per registry (`HOST:PORT`).
fn certs_d_dirs(home: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = vec![
        PathBuf::from("/etc/docker/certs.d"),
        PathBuf::from("/etc/containers/certs.d"),
    ];
    if let Some(home) = home {
        dirs.push(home.join(".config/containers/certs.d"));
    }
    dirs
}

/// PEM files with CA certificates trusted for `registry`: the first system bundle found,
/// `SSL_CERT_FILE`, then every `*.crt` in `certs.d/<registry>/` (sorted).
pub(crate) fn trust_files(registry: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = SYSTEM_BUNDLES
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .take(1)
        .collect();
    if let Some(f) = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        files.push(PathBuf::from(f));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    for dir in certs_d_dirs(home.as_deref()) {
        files.extend(crt_files(&dir.join(registry)));
    }
    files
}

/// The `*.crt` files directly in `dir`, sorted; none when it does not exist.
fn crt_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "crt"))
        .collect();
    found.sort();
    found
}

/// The certificates in the PEM file `file`.
fn read_certs(file: &Path) -> Result<Vec<Certificate<'static>>> {
    let pem = std::fs::read(file).map_err(|source| Error::Io {
        action: "reading CA certificates from",
        path: file.to_path_buf(),
        source,
    })?;
    Ok(ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
            _ => None,
        })
        .collect())
}

/// What a registry connection trusts.
pub(crate) struct Trust {
    /// The root certificates for ureq's own TLS; webpki's roots when no file has any.
    pub(crate) roots: RootCerts,
    /// When the user configured certificates (`SSL_CERT_FILE`, `certs.d`): a TLS configuration
    /// that also trusts exactly those certificates as server certificates
    /// ([`crate::pinned`]).
    pub(crate) pinned: Option<Arc<rustls::ClientConfig>>,
}

/// The trust for `registry`.
pub(crate) fn trust(registry: &str) -> Result<Trust> {
    let files = trust_files(registry);
    let system = files
        .first()
        .filter(|f| SYSTEM_BUNDLES.iter().any(|s| Path::new(s) == f.as_path()))
        .cloned();
    let mut roots: Vec<Certificate<'static>> = Vec::new();
    let mut configured: Vec<Certificate<'static>> = Vec::new();
    for file in &files {
        let certs = read_certs(file)?;
        if Some(file) != system.as_ref() {
            configured.extend(certs.iter().cloned());
        }
        roots.extend(certs);
    }
    if roots.is_empty() {
        return Ok(Trust {
            roots: RootCerts::WebPki,
            pinned: None,
        });
    }
    let pinned = if configured.is_empty() {
        None
    } else {
        let der =
            |c: &Certificate<'static>| rustls::pki_types::CertificateDer::from(c.der().to_vec());
        let config = crate::pinned::client_config(
            &roots.iter().map(der).collect::<Vec<_>>(),
            configured.iter().map(der).collect(),
        )
        .map_err(|reason| Error::Tls {
            registry: registry.to_string(),
            reason,
        })?;
        Some(config)
    };
    Ok(Trust {
        roots: RootCerts::Specific(Arc::new(roots)),
        pinned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certs_d_files_are_the_crt_files_of_the_registry_folder_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("localhost:5000");
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["b.crt", "a.crt", "client.key", "client.cert"] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        assert_eq!(crt_files(&dir), vec![dir.join("a.crt"), dir.join("b.crt")]);
        assert!(crt_files(&tmp.path().join("missing")).is_empty());
        let home = Path::new("/home/u");
        assert_eq!(
            certs_d_dirs(Some(home)).last().unwrap(),
            &home.join(".config/containers/certs.d")
        );
    }
}
