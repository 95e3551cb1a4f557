//! cosign's encrypted private keys (`cosign generate-key-pair` writes `cosign.key`): a PEM
//! block `ENCRYPTED SIGSTORE PRIVATE KEY` (`ENCRYPTED COSIGN PRIVATE KEY` from cosign before
//! 1.x's rename) whose body is a JSON envelope. The key's PKCS#8 DER is sealed with NaCl's
//! secretbox (XSalsa20-Poly1305, the 16-byte tag first) under a 32-byte key that scrypt
//! derives from the password; the envelope names both and holds the salt, the nonce and the
//! sealed bytes, each in base64.
//!
//! Pure: PEM text and password in, DER out.

use base64::Engine;
use crypto_secretbox::aead::{Aead, KeyInit};
use zeroize::Zeroizing;

/// The PEM labels cosign has written for its encrypted keys.
const LABELS: [&str; 2] = [
    "ENCRYPTED SIGSTORE PRIVATE KEY",
    "ENCRYPTED COSIGN PRIVATE KEY",
];

/// The largest scrypt cost accepted: N = 2^20 with r = 8 needs 1 GiB. cosign uses 2^15
/// or 2^16; a file asking for more is damaged or hostile.
const MAX_LOG_N: u8 = 20;

/// Why a key could not be decrypted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The file is not a well-formed envelope, or uses something cosign never wrote.
    Malformed(String),
    /// The seal did not open: a wrong password (or a damaged file).
    WrongPassword,
}

#[derive(serde::Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(serde::Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(serde::Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(serde::Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

/// Whether `pem` holds one of cosign's encrypted keys.
pub(crate) fn is_cosign_key(pem: &str) -> bool {
    LABELS
        .iter()
        .any(|l| pem.contains(&format!("-----BEGIN {l}-----")))
}

/// The PKCS#8 DER of the private key in `pem`, sealed under `password`.
pub(crate) fn decrypt(pem: &str, password: &[u8]) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let envelope: Envelope = serde_json::from_slice(&pem_body(pem)?)
        .map_err(|e| Failure::Malformed(format!("its body is not cosign's JSON envelope: {e}")))?;
    if envelope.kdf.name != "scrypt" {
        return Err(Failure::Malformed(format!(
            "key derivation `{}` is not scrypt",
            envelope.kdf.name
        )));
    }
    if envelope.cipher.name != "nacl/secretbox" {
        return Err(Failure::Malformed(format!(
            "cipher `{}` is not nacl/secretbox",
            envelope.cipher.name
        )));
    }
    let salt = base64_field("salt", &envelope.kdf.salt)?;
    let nonce = base64_field("nonce", &envelope.cipher.nonce)?;
    let sealed = base64_field("ciphertext", &envelope.ciphertext)?;
    let nonce: [u8; 24] = nonce
        .try_into()
        .map_err(|_| Failure::Malformed("the nonce is not 24 bytes".into()))?;
    let key = derive_key(&envelope.kdf.params, password, &salt)?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new((&*key).into());
    cipher
        .decrypt((&nonce).into(), sealed.as_slice())
        .map(Zeroizing::new)
        .map_err(|_| Failure::WrongPassword)
}

/// scrypt's 32-byte key, within [`MAX_LOG_N`].
fn derive_key(
    params: &ScryptParams,
    password: &[u8],
    salt: &[u8],
) -> Result<Zeroizing<[u8; 32]>, Failure> {
    let ScryptParams { n, r, p } = *params;
    let log_n = n.trailing_zeros();
    let bounded = n.is_power_of_two() && log_n <= u32::from(MAX_LOG_N) && r <= 32 && p <= 16;
    let scrypt_params = u8::try_from(log_n)
        .ok()
        .filter(|_| bounded)
        .and_then(|log_n| scrypt::Params::new(log_n, r, p).ok())
        .ok_or_else(|| {
            Failure::Malformed(format!(
                "scrypt parameters N={n} r={r} p={p} are out of range (N a power of two up to 2^{MAX_LOG_N}, r up to 32, p up to 16)"
            ))
        })?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, salt, &scrypt_params, key.as_mut_slice())
        .map_err(|e| Failure::Malformed(format!("scrypt: {e}")))?;
    Ok(key)
}

/// The bytes between the BEGIN and END lines of the first encrypted-key block.
fn pem_body(pem: &str) -> Result<Vec<u8>, Failure> {
    let mut lines = pem.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(|line| {
            LABELS
                .iter()
                .find(|l| line == format!("-----BEGIN {l}-----"))
        })
        .ok_or_else(|| Failure::Malformed("no BEGIN line of an encrypted cosign key".into()))?;
    let end = format!("-----END {label}-----");
    let mut text = String::new();
    for line in lines {
        if line == end {
            return base64_field("PEM body", &text);
        }
        text.push_str(line);
    }
    Err(Failure::Malformed(format!("no `{end}` line")))
}

fn base64_field(what: &str, text: &str) -> Result<Vec<u8>, Failure> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Failure::Malformed(format!("its {what} is not base64: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crypto_secretbox::aead::Aead;

    /// Seals `der` the way cosign does (the test's side of the format; the e2e test reads a
    /// key cosign itself made). `log_n` is small here so tests stay fast.
    pub(crate) fn seal(der: &[u8], password: &[u8], log_n: u8) -> String {
        let salt = [7u8; 32];
        let nonce = [9u8; 24];
        let params = scrypt::Params::new(log_n, 8, 1).unwrap();
        let mut key = [0u8; 32];
        scrypt::scrypt(password, &salt, &params, &mut key).unwrap();
        let sealed = crypto_secretbox::XSalsa20Poly1305::new((&key).into())
            .encrypt((&nonce).into(), der)
            .unwrap();
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let json = serde_json::json!({
            "kdf": {"name": "scrypt", "params": {"N": 1u64 << log_n, "r": 8, "p": 1}, "salt": b64(&salt)},
            "cipher": {"name": "nacl/secretbox", "nonce": b64(&nonce)},
            "ciphertext": b64(&sealed),
        });
        let body = b64(json.to_string().as_bytes());
        let mut pem = String::from("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n");
        for chunk in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n");
        pem
    }

    #[test]
    fn the_right_password_opens_the_seal_and_a_wrong_one_does_not() {
        let pem = seal(b"the key's DER", b"hunter2", 10);
        assert!(is_cosign_key(&pem));
        assert_eq!(
            decrypt(&pem, b"hunter2").unwrap().as_slice(),
            b"the key's DER"
        );
        assert_eq!(decrypt(&pem, b"hunter3"), Err(Failure::WrongPassword));
        assert_eq!(decrypt(&pem, b""), Err(Failure::WrongPassword));
    }

    #[test]
    fn an_empty_password_is_a_password() {
        let pem = seal(b"der", b"", 10);
        assert_eq!(decrypt(&pem, b"").unwrap().as_slice(), b"der");
    }

    #[test]
    fn a_damaged_or_foreign_envelope_is_named() {
        let pem = seal(b"der", b"pw", 10);
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let json = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        let json = String::from_utf8(json).unwrap();
        let rewrap = |json: &str| {
            let b = base64::engine::general_purpose::STANDARD.encode(json);
            format!(
                "-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n{b}\n-----END ENCRYPTED COSIGN PRIVATE KEY-----\n"
            )
        };
        let cases = [
            (json.replace("scrypt", "pbkdf2"), "not scrypt"),
            (
                json.replace("nacl/secretbox", "aes-gcm"),
                "not nacl/secretbox",
            ),
            (json.replace("\"N\":1024", "\"N\":1000"), "out of range"),
            (
                json.replace("\"N\":1024", "\"N\":1073741824"),
                "out of range",
            ),
            ("{}".to_string(), "JSON envelope"),
        ];
        for (json, says) in cases {
            match decrypt(&rewrap(&json), b"pw") {
                Err(Failure::Malformed(why)) => assert!(why.contains(says), "{why}"),
                other => panic!("{json}: {other:?}"),
            }
        }
        // The old label reads as well.
        assert_eq!(decrypt(&rewrap(&json), b"pw").unwrap().as_slice(), b"der");
        let cut = pem.replace("-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n", "");
        assert!(
            matches!(decrypt(&cut, b"pw"), Err(Failure::Malformed(why)) if why.contains("END"))
        );
    }
}
