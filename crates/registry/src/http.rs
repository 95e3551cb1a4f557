//! HTTP plumbing for the registry client: methods as a type, URLs and query strings, sending one
//! request through `ureq`, reading its reply, the distribution API's error text, and the
//! classification of `ureq` errors that the retry policy decides on.
//!
//! [`send`] and [`read_reply`] touch the network (one try each, no retries); everything else here
//! is pure.

use std::collections::HashMap;
use std::io::Read;

use ureq::http::Response;

use crate::retry::Fault;

/// The HTTP methods the distribution API needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: the reply has no body.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
}

impl Method {
    /// The method as `ureq` (the `http` crate) spells it.
    fn as_http(self) -> ureq::http::Method {
        match self {
            Self::Get => ureq::http::Method::GET,
            Self::Head => ureq::http::Method::HEAD,
            Self::Post => ureq::http::Method::POST,
            Self::Put => ureq::http::Method::PUT,
            Self::Delete => ureq::http::Method::DELETE,
        }
    }

    /// Whether the request carries a body (an empty one is sent as `Content-Length: 0`, which
    /// registries want on a bodiless `POST` or `PUT`).
    fn sends_body(self) -> bool {
        matches!(self, Self::Post | Self::Put)
    }

    /// Whether the reply carries a body.
    fn reads_body(self) -> bool {
        !matches!(self, Self::Head)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_http().as_str())
    }
}

/// A small request body, sent from memory (and again on a retry).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Body<'a> {
    /// None (an empty one for `POST` and `PUT`).
    None,
    /// These bytes, with this content type.
    Bytes(&'a [u8], &'a str),
}

/// A reply, its body read (a small one: an error, a manifest, a token).
#[derive(Debug)]
pub(crate) struct Reply {
    /// The HTTP status.
    pub(crate) status: u16,
    /// Header name (lower case) → value.
    pub(crate) headers: HashMap<String, String>,
    /// The body; empty for `HEAD`.
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// A header's value, by its lower-case name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// The most a [`Reply`] body may hold; blobs are streamed, never read into one.
const REPLY_LIMIT: u64 = 16 << 20;

/// A request builder for `method` on `url` with `headers`.
fn builder(method: Method, url: &str, headers: &[(&str, String)]) -> ureq::http::request::Builder {
    let mut request = ureq::http::Request::builder()
        .method(method.as_http())
        .uri(url);
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    request
}

/// Sends one request with a small body (no retries).
pub(crate) fn send(
    agent: &ureq::Agent,
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Body<'_>,
) -> Result<Response<ureq::Body>, ureq::Error> {
    let request = builder(method, url, headers);
    match body {
        Body::None if method.sends_body() => agent.run(request.body(&[][..])?),
        Body::None => agent.run(request.body(())?),
        Body::Bytes(bytes, content_type) => {
            agent.run(request.header("Content-Type", content_type).body(bytes)?)
        }
    }
}

/// Sends one request whose body is `len` bytes streamed from `reader` (no retries).
pub(crate) fn send_stream(
    agent: &ureq::Agent,
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    reader: &mut dyn Read,
    len: u64,
) -> Result<Response<ureq::Body>, ureq::Error> {
    let request = builder(method, url, headers)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", len.to_string());
    agent.run(request.body(ureq::SendBody::from_reader(reader))?)
}

/// Reads a reply: its status, headers, and (unless `method` is `HEAD`) its body.
pub(crate) fn read_reply(
    mut response: Response<ureq::Body>,
    method: Method,
) -> Result<Reply, ureq::Error> {
    let headers = response
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.as_str().to_ascii_lowercase(),
                v.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    let body = if method.reads_body() {
        response
            .body_mut()
            .with_config()
            .limit(REPLY_LIMIT)
            .read_to_vec()?
    } else {
        Vec::new()
    };
    Ok(Reply {
        status: response.status().as_u16(),
        headers,
        body,
    })
}

/// What kind of failure a `ureq` error is, by its variant (and, for I/O errors, the error kind
/// or the TLS error inside), never by its text.
pub(crate) fn classify(error: &ureq::Error) -> Fault {
    match error {
        ureq::Error::HostNotFound => Fault::HostNotFound,
        ureq::Error::ConnectionFailed | ureq::Error::ConnectProxyFailed(_) => Fault::Connect,
        ureq::Error::Timeout(_) => Fault::Timeout,
        ureq::Error::Protocol(_) | ureq::Error::BodyStalled => Fault::Broken,
        ureq::Error::Tls(_)
        | ureq::Error::Pem(_)
        | ureq::Error::Rustls(_)
        | ureq::Error::TlsRequired => Fault::Tls,
        ureq::Error::Io(e) => classify_io(e),
        _ => Fault::Request,
    }
}

/// An I/O error: a TLS failure when rustls is inside it, else by its kind.
fn classify_io(error: &std::io::Error) -> Fault {
    use std::io::ErrorKind as K;
    if let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        return match tls {
            // Bytes that are not TLS records: the peer speaks plain HTTP.
            rustls::Error::InvalidMessage(_) => Fault::NotTls,
            _ => Fault::Tls,
        };
    }
    match error.kind() {
        K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => {
            Fault::Connect
        }
        K::TimedOut | K::WouldBlock => Fault::Timeout,
        _ => Fault::Broken,
    }
}

/// An absolute URL: `path_or_url` when it is one (a `Location` header may be), else `base`
/// followed by the path (a `/v2/…` path, or a relative `Location`).
pub(crate) fn join(base: &str, path_or_url: &str) -> String {
    if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
        path_or_url.to_string()
    } else if path_or_url.starts_with('/') {
        format!("{base}{path_or_url}")
    } else {
        format!("{base}/{path_or_url}")
    }
}

/// `url` with the query parameters added (percent-encoded), after any it has.
pub(crate) fn with_query(url: &str, params: &[(&str, &str)]) -> String {
    let mut out = url.to_string();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (key, value) in params {
        out.push(sep);
        out.push_str(&encode(key));
        out.push('=');
        out.push_str(&encode(value));
        sep = '&';
    }
    out
}

/// `url` without its query (which may carry upload state), for messages.
pub(crate) fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
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

/// The distribution API's error text, e.g. `MANIFEST_UNKNOWN: manifest unknown`; else the
/// start of the body.
pub(crate) fn api_message(body: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error as IoError, ErrorKind};

    #[test]
    fn methods_know_their_bodies() {
        let all = [Method::Get, Method::Head, Method::Post, Method::Put];
        let names: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["GET", "HEAD", "POST", "PUT"]);
        let sends: Vec<bool> = all.iter().map(|m| m.sends_body()).collect();
        assert_eq!(sends, [false, false, true, true]);
        let reads: Vec<bool> = all.iter().map(|m| m.reads_body()).collect();
        assert_eq!(reads, [true, false, true, true]);
    }

    #[test]
    fn urls_join_paths_and_locations() {
        let base = "https://r.example:5000";
        assert_eq!(join(base, "/v2/"), "https://r.example:5000/v2/");
        assert_eq!(
            join(base, "/v2/a/blobs/uploads/u1?_state=x"),
            "https://r.example:5000/v2/a/blobs/uploads/u1?_state=x"
        );
        assert_eq!(
            join(base, "http://other:1/upload/u1"),
            "http://other:1/upload/u1"
        );
        assert_eq!(join(base, "v2/x"), "https://r.example:5000/v2/x");
    }

    #[test]
    fn query_parameters_are_appended_and_encoded() {
        assert_eq!(
            with_query("http://h/u1", &[("digest", "sha256:ab")]),
            "http://h/u1?digest=sha256%3Aab"
        );
        assert_eq!(
            with_query("http://h/u1?_state=a%2Bb", &[("digest", "sha256:ab")]),
            "http://h/u1?_state=a%2Bb&digest=sha256%3Aab"
        );
        assert_eq!(
            with_query(
                "https://auth/token",
                &[("service", "reg"), ("scope", "repository:a/b:pull,push")]
            ),
            "https://auth/token?service=reg&scope=repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(with_query("http://h/x", &[]), "http://h/x");
        assert_eq!(strip_query("http://h/u1?_state=secret"), "http://h/u1");
        assert_eq!(encode("a b~"), "a%20b~");
    }

    #[test]
    fn api_errors_are_summarized() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        assert_eq!(api_message(body), "MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(api_message(b"plain text"), "plain text");
    }

    #[test]
    fn transport_errors_are_classified_by_type() {
        let io = |kind| ureq::Error::Io(IoError::from(kind));
        assert_eq!(classify(&ureq::Error::HostNotFound), Fault::HostNotFound);
        assert_eq!(classify(&ureq::Error::ConnectionFailed), Fault::Connect);
        assert_eq!(classify(&io(ErrorKind::ConnectionRefused)), Fault::Connect);
        assert_eq!(classify(&io(ErrorKind::TimedOut)), Fault::Timeout);
        assert_eq!(
            classify(&ureq::Error::Timeout(ureq::Timeout::Global)),
            Fault::Timeout
        );
        for kind in [
            ErrorKind::ConnectionReset,
            ErrorKind::BrokenPipe,
            ErrorKind::UnexpectedEof,
        ] {
            assert_eq!(classify(&io(kind)), Fault::Broken, "{kind:?}");
        }
        assert_eq!(classify(&ureq::Error::Tls("no provider")), Fault::Tls);
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert_eq!(classify(&ureq::Error::Rustls(cert.clone())), Fault::Tls);
        // rustls inside an I/O error, as a failed handshake reaches ureq.
        let wrapped = |e| ureq::Error::Io(IoError::new(ErrorKind::InvalidData, e));
        assert_eq!(classify(&wrapped(cert)), Fault::Tls);
        let plain = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert_eq!(classify(&wrapped(plain)), Fault::NotTls);
        assert_eq!(classify(&ureq::Error::BadUri("x".into())), Fault::Request);
        assert_eq!(classify(&ureq::Error::RedirectFailed), Fault::Request);
    }
}
