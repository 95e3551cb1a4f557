//! Signatures, the cosign way: the cache repository's entries signed by the writer that
//! pushed them and checked by readers that trust its key (`--cache-sign-key`,
//! `--cache-trust`), and pushed images signed for `cosign verify --key`
//! (`push --sign-key`, `imgbuild verify-signature`).

pub(crate) mod cosign;
pub(crate) mod encrypted;
pub(crate) mod keys;
pub(crate) mod remote;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) use keys::{SigningKey, VerifyingKey};

/// The keys one build signs and checks with, each file read (and decrypted) once, when the
/// build is prepared: a key that cannot be used fails the build before anything compiles.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    /// Signs pushed images (`push --sign-key`).
    pub(crate) push: Option<Arc<SigningKey>>,
    /// Signs what a read-write build pushes to the cache repository.
    pub(crate) cache: Option<Arc<SigningKey>>,
    /// The cache repository's entries are used only when one of these signed them.
    pub(crate) trust: Vec<VerifyingKey>,
}

/// The key files one build uses ([`crate::BuildOptions`] says which).
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyFiles<'a> {
    /// `push --sign-key`.
    pub(crate) push: Option<&'a Path>,
    /// `--cache-sign-key`, when the build writes to a cache repository.
    pub(crate) cache: Option<&'a Path>,
    /// `--cache-trust`.
    pub(crate) trust: &'a [PathBuf],
}

impl KeyFiles<'_> {
    /// The trusted public keys alone: nothing to decrypt.
    pub(crate) fn trust_only(self) -> Self {
        Self {
            push: None,
            cache: None,
            ..self
        }
    }
}

impl Keys {
    /// Reads `files`; `password` opens cosign's encrypted private keys.
    pub(crate) fn load(files: KeyFiles<'_>, password: Option<&str>) -> crate::Result<Self> {
        let signing = |path: Option<&Path>| {
            path.map(|p| SigningKey::from_file(p, password).map(Arc::new))
                .transpose()
        };
        let push = signing(files.push)?;
        // One file for both (a team's one key) is read and decrypted once.
        let cache = match (&push, files.cache) {
            (Some(key), Some(path)) if files.push == Some(path) => Some(key.clone()),
            _ => signing(files.cache)?,
        };
        Ok(Self {
            push,
            cache,
            trust: files
                .trust
                .iter()
                .map(|p| VerifyingKey::from_file(p))
                .collect::<crate::Result<_>>()?,
        })
    }
}

/// The public key of the private key at `path`, in PEM.
pub(crate) fn public_key_pem(path: &Path, password: Option<&str>) -> crate::Result<String> {
    Ok(SigningKey::from_file(path, password)?.public().to_pem())
}
