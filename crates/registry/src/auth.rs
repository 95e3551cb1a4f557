//! Registry authentication: `WWW-Authenticate` challenges (pure) and the credentials of a
//! registry from docker's and podman's auth files and credential helpers.
//!
//! Reads the auth files and runs `docker-credential-<helper> get`. Secrets are kept in
//! [`Credentials`], whose `Debug` output hides them; they are never printed.

#![allow(clippy::disallowed_methods)] // runs docker-credential-* helpers, as docker does

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::{Error, Result};

/// A username and secret (a password, or an identity token when the username is
/// `<token>`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub secret: String,
    /// Where they came from (a file, or a helper), for error messages.
    pub origin: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"<hidden>")
            .field("origin", &self.origin)
            .finish()
    }
}

impl Credentials {
    /// The `Authorization: Basic …` value.
    pub fn basic(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.username, self.secret))
        )
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=…`.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter, if any.
        service: Option<String>,
        /// The `scope` the registry asked for, if any.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let params = parse_params(params);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

/// `key="value", key2=value2` (quoted values may contain commas).
fn parse_params(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            value.push(next);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(key, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[derive(Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// The auth files consulted, in order: `$REGISTRY_AUTH_FILE` (podman), then
/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn auth_files() -> Vec<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut files = Vec::new();
    if let Some(f) = var("REGISTRY_AUTH_FILE") {
        files.push(f);
    }
    if let Some(dir) = var("DOCKER_CONFIG") {
        files.push(dir.join("config.json"));
    } else if let Some(home) = var("HOME") {
        files.push(home.join(".docker").join("config.json"));
    }
    files
}

/// The key an auth file uses for `registry`, normalized: no scheme, no path; Docker Hub's
/// `https://index.docker.io/v1/` is `docker.io`.
fn normalize_key(key: &str) -> String {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" => crate::reference::DOCKER_HUB.to_string(),
        h => h.to_string(),
    }
}

/// Finds credentials for `registry` (as written in references, e.g. `localhost:5000`,
/// `docker.io`). `None`: anonymous.
pub fn credentials_for(registry: &str) -> Result<Option<Credentials>> {
    for path in auth_files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match lookup(&text, &path, registry)? {
            Found::Helper(helper) => return run_helper(&helper, registry),
            Found::Credentials(c) => return Ok(Some(c)),
            Found::Store(store) => {
                if let Some(c) = run_helper(&store, registry)? {
                    return Ok(Some(c));
                }
            }
            Found::Nothing => {}
        }
    }
    Ok(None)
}

/// What an auth file (docker's `config.json`, podman's `auth.json`) says about `registry`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Found {
    /// A `credHelpers` entry: run `docker-credential-<name>`.
    Helper(String),
    /// An `auths` entry.
    Credentials(Credentials),
    /// No entry, but a `credsStore` to ask.
    Store(String),
    /// Nothing.
    Nothing,
}

/// Reads the auth file `text` (from `path`, named in errors) for `registry`. Pure: helpers
/// are not run.
pub fn lookup(text: &str, path: &std::path::Path, registry: &str) -> Result<Found> {
    let file: AuthFile = serde_json::from_str(text).map_err(|e| Error::AuthFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if let Some((_, helper)) = file
        .cred_helpers
        .iter()
        .find(|(k, _)| normalize_key(k) == registry)
    {
        return Ok(Found::Helper(helper.clone()));
    }
    if let Some((key, entry)) = file
        .auths
        .iter()
        .find(|(k, _)| normalize_key(k) == registry)
    {
        let origin = format!("{} (auths.{key})", path.display());
        return from_entry(entry, &origin, path).map(Found::Credentials);
    }
    Ok(match file.creds_store {
        Some(store) => Found::Store(store),
        None => Found::Nothing,
    })
}

fn from_entry(entry: &AuthEntry, origin: &str, path: &std::path::Path) -> Result<Credentials> {
    let bad = |reason: &str| Error::AuthFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if let Some(token) = &entry.identity_token
        && !token.is_empty()
    {
        return Ok(Credentials {
            username: "<token>".into(),
            secret: token.clone(),
            origin: origin.to_string(),
        });
    }
    if let Some(auth) = &entry.auth
        && !auth.is_empty()
    {
        let decoded = STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("an `auth` value is not base64"))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| bad("an `auth` value is not UTF-8"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| bad("an `auth` value is not base64 of user:password"))?;
        return Ok(Credentials {
            username: user.to_string(),
            secret: pass.to_string(),
            origin: origin.to_string(),
        });
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Ok(Credentials {
            username: u.clone(),
            secret: p.clone(),
            origin: origin.to_string(),
        }),
        _ => Err(bad(
            "an entry has neither `auth` nor `username` and `password`",
        )),
    }
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Runs `docker-credential-<helper> get` with the registry on stdin.
fn run_helper(helper: &str, registry: &str) -> Result<Option<Credentials>> {
    let program = format!("docker-credential-{helper}");
    let failed = |reason: String| Error::CredentialHelper {
        helper: program.clone(),
        registry: registry.to_string(),
        reason,
    };
    let server = if registry == crate::reference::DOCKER_HUB {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            failed(format!(
                "could not start it ({e}); is it installed and on PATH?"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Helpers say "credentials not found in native keychain" when they have none.
        let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        if all.to_ascii_lowercase().contains("not found") {
            return Ok(None);
        }
        return Err(failed(all.trim().to_string()));
    }
    let answer: HelperAnswer = serde_json::from_str(&stdout)
        .map_err(|e| failed(format!("its answer is not the expected JSON: {e}")))?;
    Ok(Some(Credentials {
        username: answer.username,
        secret: answer.secret,
        origin: program.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn auth_file_entries() {
        let path = std::path::Path::new("config.json");
        let entry = AuthEntry {
            auth: Some(STANDARD.encode("me:s3cret:with:colons")),
            ..AuthEntry::default()
        };
        let c = from_entry(&entry, "test", path).unwrap();
        assert_eq!(
            (c.username.as_str(), c.secret.as_str()),
            ("me", "s3cret:with:colons")
        );
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "Debug hides the secret"
        );
        let bad = AuthEntry {
            auth: Some("***".into()),
            ..AuthEntry::default()
        };
        assert!(from_entry(&bad, "test", path).is_err());
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("localhost:5000"), "localhost:5000");
        assert_eq!(normalize_key("http://localhost:5000/v2/"), "localhost:5000");
    }
}
