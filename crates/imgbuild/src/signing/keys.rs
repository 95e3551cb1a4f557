//! Signing and verifying keys in the PEM formats `openssl` and cosign write: ECDSA P-256
//! (PKCS#8 `PRIVATE KEY`, or SEC1 `EC PRIVATE KEY` as `openssl ecparam -genkey` writes) and
//! Ed25519 (PKCS#8), public keys as `PUBLIC KEY` (SubjectPublicKeyInfo, what `cosign
//! public-key` and `openssl pkey -pubout` print). Signatures are cosign's: ECDSA over the
//! SHA-256 of the payload, DER-encoded; Ed25519 over the payload itself. cosign's own
//! encrypted `cosign.key` is read too, with its password ([`super::encrypted`]).
//!
//! Reads the key files.

use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use p256::ecdsa::signature::{Signer, Verifier};

use crate::{Error, Result};

/// A private key that signs (its `Debug` shows the public key's id, never the key).
pub(crate) enum SigningKey {
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

/// A public key that verifies.
#[derive(Clone)]
pub(crate) enum VerifyingKey {
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", self.id())
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(crate::io_err("reading the key", path))
}

fn unusable(path: &Path, why: &str) -> Error {
    Error::Key {
        path: path.to_path_buf(),
        reason: why.to_string(),
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public().id())
    }
}

impl SigningKey {
    /// Reads a private key in PEM; `password` opens one of cosign's encrypted keys (cosign
    /// reads it from `COSIGN_PASSWORD`, and so do imgbuild's commands).
    pub(crate) fn from_file(path: &Path, password: Option<&str>) -> Result<Self> {
        Self::from_pem(&read(path)?, password).map_err(|why| unusable(path, &why))
    }

    fn from_pem(pem: &str, password: Option<&str>) -> std::result::Result<Self, String> {
        if super::encrypted::is_cosign_key(pem) {
            let Some(password) = password else {
                return Err("it is encrypted (cosign's format): set COSIGN_PASSWORD to its password (to an empty value if it was made with none)".into());
            };
            let der = super::encrypted::decrypt(pem, password.as_bytes()).map_err(|f| match f {
                super::encrypted::Failure::WrongPassword => {
                    "COSIGN_PASSWORD does not open it: the password is wrong, or the file is damaged".to_string()
                }
                super::encrypted::Failure::Malformed(why) => {
                    format!("not a cosign encrypted key imgbuild can read: {why}")
                }
            })?;
            return Self::from_pkcs8_der(&der).ok_or_else(|| {
                "it opens, but holds neither an ECDSA P-256 nor an Ed25519 key (imgbuild signs with those two)".into()
            });
        }
        if pem.contains("ENCRYPTED") {
            return Err("it is encrypted with openssl's PKCS#8 scheme, which imgbuild does not read (decrypt it: `openssl pkey -in KEY -out cache.key`, or make a cosign key pair)".into());
        }
        if pem.contains("BEGIN EC PRIVATE KEY") {
            return p256::SecretKey::from_sec1_pem(pem)
                .map(|k| Self::P256(k.into()))
                .map_err(|e| format!("not a P-256 EC private key: {e}"));
        }
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(Self::P256(k));
        }
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Ok(Self::Ed25519(k));
        }
        Err("not an ECDSA P-256 or Ed25519 private key in PEM (PKCS#8 `BEGIN PRIVATE KEY`, `BEGIN EC PRIVATE KEY`, or cosign's `BEGIN ENCRYPTED SIGSTORE PRIVATE KEY`)".into())
    }

    fn from_pkcs8_der(der: &[u8]) -> Option<Self> {
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
            return Some(Self::P256(k));
        }
        ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .ok()
            .map(Self::Ed25519)
    }

    /// Signs `payload`: DER ECDSA over its SHA-256, or Ed25519.
    pub(crate) fn sign(&self, payload: &[u8]) -> Vec<u8> {
        match self {
            Self::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(payload);
                sig.to_der().as_bytes().to_vec()
            }
            Self::Ed25519(k) => k.sign(payload).to_bytes().to_vec(),
        }
    }

    /// Its public key.
    pub(crate) fn public(&self) -> VerifyingKey {
        match self {
            Self::P256(k) => VerifyingKey::P256(*k.verifying_key()),
            Self::Ed25519(k) => VerifyingKey::Ed25519(k.verifying_key()),
        }
    }
}

impl VerifyingKey {
    /// Reads a public key (`BEGIN PUBLIC KEY`).
    pub(crate) fn from_file(path: &Path) -> Result<Self> {
        let pem = read(path)?;
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(&pem) {
            return Ok(Self::P256(k));
        }
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(&pem) {
            return Ok(Self::Ed25519(k));
        }
        Err(unusable(
            path,
            "not an ECDSA P-256 or Ed25519 public key in PEM (`BEGIN PUBLIC KEY`; `openssl pkey -in KEY -pubout` or `cosign public-key` prints one)",
        ))
    }

    /// Whether `signature` is this key's over `payload`.
    pub(crate) fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::P256(k) => p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|sig| k.verify(payload, &sig).is_ok()),
            Self::Ed25519(k) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| k.verify(payload, &sig).is_ok()),
        }
    }

    /// The key in PEM (`BEGIN PUBLIC KEY`), as `cosign public-key` prints it.
    pub(crate) fn to_pem(&self) -> String {
        let le = ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF;
        let pem = match self {
            Self::P256(k) => k.to_public_key_pem(le),
            Self::Ed25519(k) => k.to_public_key_pem(le),
        };
        pem.unwrap_or_default()
    }

    /// A short name for messages: the SHA-256 of the key's SubjectPublicKeyInfo, 12 hex.
    pub(crate) fn id(&self) -> String {
        let der = match self {
            Self::P256(k) => k.to_public_key_der().map(|d| d.as_bytes().to_vec()),
            Self::Ed25519(k) => k.to_public_key_der().map(|d| d.as_bytes().to_vec()),
        };
        let der = der.unwrap_or_default();
        imgbuild_oci::digest::sha256(&der).digest()[..12].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` (a test key,
    // nothing else uses it).
    const P256_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOcnAu72QyEVMWfYr
5mxB21fz9qnUESfMUyo60GHd2UShRANCAARYhpHszNSOXipYFG8e4Esdh00fPeXe
w9ejNjny6TKU6OLWKiouzt2wIXFvi/tb/5sPaxNbGblAU/JugGMwRy66
-----END PRIVATE KEY-----
";

    #[test]
    fn a_signature_verifies_with_its_public_key_only() {
        let key = SigningKey::from_pem(P256_PKCS8, None).unwrap();
        let sig = key.sign(b"payload");
        let public = key.public();
        assert!(public.verifies(b"payload", &sig));
        assert!(!public.verifies(b"payload!", &sig));
        let mut bad = sig.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(!public.verifies(b"payload", &bad));
        let other = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::Ed25519(other);
        assert!(!other.public().verifies(b"payload", &sig));
        let ed_sig = other.sign(b"payload");
        assert!(other.public().verifies(b"payload", &ed_sig));
        assert_eq!(public.id().len(), 12);
    }

    #[test]
    fn encrypted_and_foreign_keys_are_refused_with_the_fix() {
        let e = SigningKey::from_pem("-----BEGIN ENCRYPTED PRIVATE KEY-----\nx\n", Some("pw"))
            .unwrap_err();
        assert!(e.contains("openssl pkey"), "{e}");
        let e = SigningKey::from_pem("-----BEGIN RSA PRIVATE KEY-----\nx\n", None).unwrap_err();
        assert!(e.contains("P-256 or Ed25519"), "{e}");
    }

    #[test]
    fn a_cosign_encrypted_key_opens_with_its_password_only() {
        let plain = SigningKey::from_pem(P256_PKCS8, None).unwrap();
        let der = p256::ecdsa::SigningKey::from_pkcs8_pem(P256_PKCS8).unwrap();
        let der = p256::pkcs8::EncodePrivateKey::to_pkcs8_der(&der).unwrap();
        let sealed = super::super::encrypted::tests::seal(der.as_bytes(), b"s3cret", 10);
        let opened = SigningKey::from_pem(&sealed, Some("s3cret")).unwrap();
        assert_eq!(opened.public().id(), plain.public().id());
        let e = SigningKey::from_pem(&sealed, None).unwrap_err();
        assert!(e.contains("set COSIGN_PASSWORD"), "{e}");
        let e = SigningKey::from_pem(&sealed, Some("secret")).unwrap_err();
        assert!(e.contains("does not open it"), "{e}");
        let sealed = super::super::encrypted::tests::seal(b"not a key", b"", 10);
        let e = SigningKey::from_pem(&sealed, Some("")).unwrap_err();
        assert!(e.contains("neither an ECDSA P-256 nor an Ed25519"), "{e}");
    }
}
