//! The HTTP side of the OCI distribution API: one [`Client`] per registry.
//!
//! Talks to the network. Authentication follows the registry's challenge: anonymous, `Basic`
//! with the credentials found for the registry, or `Bearer` tokens fetched per scope from the
//! registry's token service (with the credentials, if any). Requests that fail on the
//! connection, with a 5xx or with 429 are retried with exponential backoff; uploads restart
//! from a new upload session. TLS trusts the system's roots, `SSL_CERT_FILE`, and the
//! `certs.d/HOST:PORT/ca.crt` files docker and podman use. Plain HTTP is used only for
//! localhost or a registry the caller marks insecure, and only when HTTPS does not answer.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imgbuild_oci::digest::HashingReader;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::auth::{Challenge, Credentials, parse_challenge};
use crate::reference::Reference;
use crate::{Error, Result};

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Allow plain HTTP even though the registry is not local (`--insecure-registry`).
    pub insecure: bool,
    /// Attempts per request before giving up (at least 1).
    pub attempts: u32,
    /// The first retry's delay; each next one doubles.
    pub backoff: Duration,
    /// Credentials; `None`: look them up with [`crate::auth::credentials_for`].
    pub credentials: Option<Credentials>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            insecure: false,
            attempts: 4,
            backoff: Duration::from_millis(250),
            credentials: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
enum Auth {
    #[default]
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// A connection to one registry.
pub struct Client {
    agent: ureq::Agent,
    registry: String,
    base: String,
    credentials: Option<Credentials>,
    options: ClientOptions,
    auth: Mutex<Auth>,
    tokens: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("registry", &self.registry)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A response, with its body read when small.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: http_headers::Headers,
    pub(crate) body: Vec<u8>,
}

/// The few response headers the client needs.
pub(crate) mod http_headers {
    /// Lower-cased header name → value.
    pub(crate) type Headers = std::collections::HashMap<String, String>;
}

fn headers_of(resp: &ureq::http::Response<ureq::Body>) -> http_headers::Headers {
    resp.headers()
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.as_str().to_ascii_lowercase(),
                v.to_str().ok()?.to_string(),
            ))
        })
        .collect()
}

/// A request body.
pub(crate) enum Body<'a> {
    None,
    Bytes(&'a [u8], &'a str),
}

/// The distribution API's error text, e.g. `MANIFEST_UNKNOWN: manifest unknown`.
fn api_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ApiError>,
    }
    #[derive(serde::Deserialize)]
    struct ApiError {
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(body).chars().take(300).collect(),
    }
}

/// Whether a transport error is worth retrying (the connection, not the request, failed).
fn transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Protocol(_)
    )
}

/// Whether the error is about TLS (certificates, handshake): not worth retrying.
fn is_tls(e: &ureq::Error) -> bool {
    if matches!(e, ureq::Error::Tls(_)) {
        return true;
    }
    let text = e.to_string().to_ascii_lowercase();
    text.contains("certificate") || text.contains("handshake") || text.contains("tls")
}

/// PEM files with CA certificates this machine trusts, plus those named for `registry`.
fn trust_files(registry: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.is_file())
    .take(1)
    .collect();
    if let Some(f) = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        files.push(PathBuf::from(f));
    }
    let mut dirs = vec![
        PathBuf::from("/etc/docker/certs.d"),
        PathBuf::from("/etc/containers/certs.d"),
    ];
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".config/containers/certs.d"));
    }
    for dir in dirs {
        let dir = dir.join(registry);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "crt"))
                .collect();
            found.sort();
            files.extend(found);
        }
    }
    files
}

fn root_certs(registry: &str) -> Result<RootCerts> {
    let mut certs: Vec<Certificate<'static>> = Vec::new();
    for file in trust_files(registry) {
        let pem = std::fs::read(&file).map_err(|source| Error::Io {
            action: "reading CA certificates from",
            path: file.clone(),
            source,
        })?;
        for item in ureq::tls::parse_pem(&pem) {
            if let Ok(PemItem::Certificate(c)) = item {
                certs.push(c.to_owned());
            }
        }
    }
    if certs.is_empty() {
        return Ok(RootCerts::WebPki);
    }
    Ok(RootCerts::Specific(Arc::new(certs)))
}

impl Client {
    /// Connects to `reference`'s registry: builds the TLS trust, picks HTTPS (or plain HTTP for
    /// a local or insecure registry that does not speak HTTPS) and reads its authentication
    /// challenge from `GET /v2/`.
    pub fn connect(reference: &Reference, options: ClientOptions) -> Result<Self> {
        let registry = reference.registry.clone();
        let credentials = match options.credentials.clone() {
            Some(c) => Some(c),
            None => crate::auth::credentials_for(&registry)?,
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
            .tls_config(
                TlsConfig::builder()
                    .root_certs(root_certs(&registry)?)
                    .build(),
            )
            .build();
        let agent = ureq::Agent::new_with_config(config);
        let host = reference.api_host().to_string();
        let mut client = Self {
            agent,
            registry,
            base: format!("https://{host}"),
            credentials,
            options,
            auth: Mutex::new(Auth::Anonymous),
            tokens: Mutex::new(HashMap::new()),
        };
        let plain_allowed = reference.is_local() || client.options.insecure;
        // Where plain HTTP is allowed, one HTTPS attempt decides: no retries for the probe.
        let first = client.ping(if plain_allowed {
            1
        } else {
            client.options.attempts
        });
        let ping = match first {
            Err(https @ (Error::Unreachable { .. } | Error::Tls { .. })) if plain_allowed => {
                client.base = format!("http://{host}");
                match client.ping(client.options.attempts) {
                    // A TLS registry whose CA is unknown: say so, not what plain HTTP got.
                    Err(_) if matches!(https, Error::Tls { .. }) => Err(https),
                    other => other,
                }
            }
            Err(https @ Error::Unreachable { .. }) => {
                // Say so when the registry only speaks plain HTTP, which needs consent here.
                let secure = client.base.clone();
                client.base = format!("http://{host}");
                let plain = client.ping(1);
                client.base = secure;
                match plain {
                    Ok(()) => Err(Error::PlainHttpRefused {
                        registry: client.registry.clone(),
                    }),
                    Err(_) => Err(https),
                }
            }
            other => other,
        };
        ping?;
        Ok(client)
    }

    /// The registry, as references name it.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn ping(&self, attempts: u32) -> Result<()> {
        let reply = self.raw_attempts(
            "GET",
            &format!("{}/v2/", self.base),
            &[],
            Body::None,
            attempts,
        )?;
        match reply.status {
            200..=299 => Ok(()),
            401 => {
                let challenge = reply
                    .headers
                    .get("www-authenticate")
                    .and_then(|h| parse_challenge(h));
                *self.auth.lock().expect("auth lock") = match challenge {
                    Some(Challenge::Basic) => Auth::Basic,
                    Some(Challenge::Bearer { realm, service, .. }) => {
                        Auth::Bearer { realm, service }
                    }
                    None => Auth::Basic,
                };
                Ok(())
            }
            status => Err(Error::Status {
                registry: self.registry.clone(),
                request: "GET /v2/".into(),
                status,
                message: api_message(&reply.body),
            }),
        }
    }

    /// One request with retries on connection failures, 5xx and 429. No authentication.
    fn raw(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<Reply> {
        self.raw_attempts(method, url, headers, body, self.options.attempts)
    }

    fn raw_attempts(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Body<'_>,
        attempts: u32,
    ) -> Result<Reply> {
        let mut delay = self.options.backoff;
        let attempts = attempts.max(1);
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            match self.once(method, url, headers, &body) {
                Ok(reply) if reply.status == 429 || reply.status >= 500 => {
                    last_error = format!("HTTP {}: {}", reply.status, api_message(&reply.body));
                    if attempt == attempts {
                        return Ok(reply);
                    }
                    let wait = reply
                        .headers
                        .get("retry-after")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map_or(delay, |s| Duration::from_secs(s.min(30)));
                    std::thread::sleep(wait);
                }
                Ok(reply) => return Ok(reply),
                Err(e) if is_tls(&e) => {
                    return Err(Error::Tls {
                        registry: self.registry.clone(),
                        reason: e.to_string(),
                    });
                }
                Err(e) if transient(&e) => {
                    last_error = e.to_string();
                    if attempt < attempts {
                        std::thread::sleep(delay);
                    }
                }
                Err(ureq::Error::Tls(e)) => {
                    return Err(Error::Tls {
                        registry: self.registry.clone(),
                        reason: e.to_string(),
                    });
                }
                Err(e) => {
                    let text = e.to_string();
                    if text.contains("certificate") || text.contains("tls") || text.contains("TLS")
                    {
                        return Err(Error::Tls {
                            registry: self.registry.clone(),
                            reason: text,
                        });
                    }
                    return Err(Error::Unreachable {
                        registry: self.registry.clone(),
                        attempts: attempt,
                        reason: text,
                    });
                }
            }
            delay *= 2;
        }
        Err(Error::Unreachable {
            registry: self.registry.clone(),
            attempts,
            reason: last_error,
        })
    }

    fn once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &Body<'_>,
    ) -> std::result::Result<Reply, ureq::Error> {
        macro_rules! with_headers {
            ($req:expr) => {{
                let mut req = $req;
                for (k, v) in headers {
                    req = req.header(*k, v.as_str());
                }
                req
            }};
        }
        let mut resp = match (method, body) {
            ("GET", _) => with_headers!(self.agent.get(url)).call()?,
            ("HEAD", _) => with_headers!(self.agent.head(url)).call()?,
            ("DELETE", _) => with_headers!(self.agent.delete(url)).call()?,
            ("POST", Body::None) => with_headers!(self.agent.post(url)).send_empty()?,
            ("PUT", Body::None) => with_headers!(self.agent.put(url)).send_empty()?,
            ("POST", Body::Bytes(b, ct)) => with_headers!(self.agent.post(url))
                .header("Content-Type", *ct)
                .send(*b)?,
            (_, Body::Bytes(b, ct)) => with_headers!(self.agent.put(url))
                .header("Content-Type", *ct)
                .send(*b)?,
            (_, Body::None) => with_headers!(self.agent.put(url)).send_empty()?,
        };
        let headers = headers_of(&resp);
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            resp.body_mut()
                .with_config()
                .limit(16 << 20)
                .read_to_vec()?
        };
        Ok(Reply {
            status: resp.status().as_u16(),
            headers,
            body,
        })
    }

    /// The `Authorization` header for `scopes`, fetching a token when needed.
    fn authorization(&self, scopes: &[String], refresh: bool) -> Result<Option<String>> {
        let auth = self.auth.lock().expect("auth lock").clone();
        match auth {
            Auth::Anonymous => Ok(None),
            Auth::Basic => match &self.credentials {
                Some(c) => Ok(Some(c.basic())),
                None => Err(self.unauthorized(None)),
            },
            Auth::Bearer { realm, service } => {
                let key = scopes.join(" ");
                if !refresh && let Some(t) = self.tokens.lock().expect("token lock").get(&key) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let token = self.fetch_token(&realm, service.as_deref(), scopes)?;
                self.tokens
                    .lock()
                    .expect("token lock")
                    .insert(key, token.clone());
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    fn unauthorized(&self, reason: Option<String>) -> Error {
        Error::Unauthorized {
            registry: self.registry.clone(),
            credentials: self.credentials.as_ref().map(|c| c.origin.clone()),
            reason: reason.unwrap_or_else(|| "the registry requires credentials".into()),
        }
    }

    fn fetch_token(&self, realm: &str, service: Option<&str>, scopes: &[String]) -> Result<String> {
        let mut url = realm.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(s) = service {
            url.push_str(&format!("{sep}service={}", encode(s)));
            sep = '&';
        }
        for scope in scopes {
            url.push_str(&format!("{sep}scope={}", encode(scope)));
            sep = '&';
        }
        let mut headers = Vec::new();
        if let Some(c) = &self.credentials {
            headers.push(("Authorization", c.basic()));
        }
        let reply = self.raw("GET", &url, &headers, Body::None)?;
        if reply.status == 401 || reply.status == 403 {
            return Err(self.unauthorized(Some(format!(
                "the token service at {realm} refused them: {}",
                api_message(&reply.body)
            ))));
        }
        if !(200..300).contains(&reply.status) {
            return Err(Error::Status {
                registry: self.registry.clone(),
                request: format!("GET {realm} (token)"),
                status: reply.status,
                message: api_message(&reply.body),
            });
        }
        #[derive(serde::Deserialize)]
        struct Token {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&reply.body).map_err(|e| Error::Status {
            registry: self.registry.clone(),
            request: format!("GET {realm} (token)"),
            status: reply.status,
            message: format!("not a token response: {e}"),
        })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.unauthorized(Some("the token service sent no token".into())))
    }

    /// An authenticated request on `path` (under `/v2/`) with the given scopes; a 401 gets one
    /// fresh token and one more try.
    pub(crate) fn request(
        &self,
        method: &str,
        path_or_url: &str,
        scopes: &[String],
        headers: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<Reply> {
        let url = self.url(path_or_url);
        let mut refresh = false;
        loop {
            let mut all: Vec<(&str, String)> = headers.to_vec();
            if let Some(a) = self.authorization(scopes, refresh)? {
                all.push(("Authorization", a));
            }
            let body = match &body {
                Body::None => Body::None,
                Body::Bytes(b, ct) => Body::Bytes(b, ct),
            };
            let reply = self.raw(method, &url, &all, body)?;
            if reply.status != 401 {
                return Ok(reply);
            }
            if refresh {
                return Err(self.unauthorized(Some(format!(
                    "{method} {} answered 401: {}",
                    strip_query(&url),
                    api_message(&reply.body)
                ))));
            }
            // The registry may ask for another scheme or scope than the ping suggested.
            if let Some(c) = reply
                .headers
                .get("www-authenticate")
                .and_then(|h| parse_challenge(h))
            {
                *self.auth.lock().expect("auth lock") = match c {
                    Challenge::Basic => Auth::Basic,
                    Challenge::Bearer { realm, service, .. } => Auth::Bearer { realm, service },
                };
            }
            refresh = true;
        }
    }

    /// An absolute URL for a `/v2/…` path or a `Location` header (absolute or relative).
    pub(crate) fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{}", self.base, path_or_url)
        }
    }

    /// Streams `size` bytes from `open()` as the blob `digest` into `repository`, through a new
    /// upload session each attempt. The bytes sent are hashed: a local blob that does not match
    /// its digest is refused here, before the registry answers.
    pub(crate) fn upload(
        &self,
        repository: &str,
        digest: &str,
        size: u64,
        scopes: &[String],
        open: &dyn Fn() -> Result<Box<dyn Read>>,
    ) -> Result<()> {
        let attempts = self.options.attempts.max(1);
        let mut delay = self.options.backoff;
        let mut last = String::new();
        for attempt in 1..=attempts {
            let start = self.request(
                "POST",
                &format!("/v2/{repository}/blobs/uploads/"),
                scopes,
                &[],
                Body::None,
            )?;
            if start.status != 202 {
                return Err(self.status_error("POST blobs/uploads", repository, &start));
            }
            let location = start
                .headers
                .get("location")
                .cloned()
                .ok_or_else(|| Error::Status {
                    registry: self.registry.clone(),
                    request: format!("POST /v2/{repository}/blobs/uploads/"),
                    status: start.status,
                    message: "no Location header in the answer".into(),
                })?;
            let sep = if location.contains('?') { '&' } else { '?' };
            let url = format!("{}{sep}digest={}", self.url(&location), encode(digest));
            let mut hashing = HashingReader::new(open()?);
            let mut req = self
                .agent
                .put(&url)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Length", size.to_string());
            if let Some(a) = self.authorization(scopes, false)? {
                req = req.header("Authorization", a);
            }
            let result = req.send(ureq::SendBody::from_reader(&mut hashing));
            let (sent_digest, sent) = hashing.finish();
            match result {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    if sent_digest.to_string() != digest || sent != size {
                        return Err(Error::LocalBlobCorrupt {
                            digest: digest.to_string(),
                            actual: sent_digest.to_string(),
                        });
                    }
                    if status == 201 {
                        return Ok(());
                    }
                    let body = resp.body_mut().read_to_vec().unwrap_or_default();
                    if (status >= 500 || status == 429) && attempt < attempts {
                        last = format!("HTTP {status}: {}", api_message(&body));
                    } else {
                        return Err(Error::Status {
                            registry: self.registry.clone(),
                            request: format!("PUT blob {digest} into {repository}"),
                            status,
                            message: api_message(&body),
                        });
                    }
                }
                Err(e) if transient(&e) && attempt < attempts => last = e.to_string(),
                Err(e) => {
                    return Err(Error::Unreachable {
                        registry: self.registry.clone(),
                        attempts: attempt,
                        reason: e.to_string(),
                    });
                }
            }
            std::thread::sleep(delay);
            delay *= 2;
        }
        Err(Error::Unreachable {
            registry: self.registry.clone(),
            attempts,
            reason: last,
        })
    }

    pub(crate) fn status_error(&self, what: &str, repository: &str, reply: &Reply) -> Error {
        if reply.status == 404 {
            return Error::NotFound {
                registry: self.registry.clone(),
                repository: repository.to_string(),
                what: what.to_string(),
                message: api_message(&reply.body),
            };
        }
        Error::Status {
            registry: self.registry.clone(),
            request: format!("{what} ({repository})"),
            status: reply.status,
            message: api_message(&reply.body),
        }
    }

    /// Streams a blob's body (GET, following redirects) into `out`, returning the reader for
    /// the caller to verify.
    pub(crate) fn get_stream(&self, path: &str, scopes: &[String]) -> Result<Box<dyn Read + Send>> {
        let url = self.url(path);
        let mut refresh = false;
        let attempts = self.options.attempts.max(1);
        let mut delay = self.options.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.agent.get(&url);
            if let Some(a) = self.authorization(scopes, refresh)? {
                req = req.header("Authorization", a);
            }
            match req.call() {
                Ok(resp) if resp.status().as_u16() == 200 => {
                    return Ok(Box::new(resp.into_body().into_reader()));
                }
                Ok(resp) if resp.status().as_u16() == 401 && !refresh => refresh = true,
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.body_mut().read_to_vec().unwrap_or_default();
                    if (status >= 500 || status == 429) && attempt < attempts {
                        std::thread::sleep(delay);
                        delay *= 2;
                        continue;
                    }
                    let reply = Reply {
                        status,
                        headers: HashMap::new(),
                        body,
                    };
                    return Err(self.status_error(&format!("GET {path}"), path, &reply));
                }
                Err(e) if transient(&e) && attempt < attempts => {
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(e) => {
                    return Err(Error::Unreachable {
                        registry: self.registry.clone(),
                        attempts: attempt,
                        reason: e.to_string(),
                    });
                }
            }
        }
    }
}

fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// Percent-encodes a query value.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(encode("sha256:ab"), "sha256%3Aab");
    }

    #[test]
    fn api_errors_are_summarized() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        assert_eq!(api_message(body), "MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(api_message(b"plain text"), "plain text");
    }
}
