//! The registry side of imgbuild: the OCI distribution API, blocking and streaming.
//!
//! - [`mod@reference`]: image references (pure);
//! - [`auth`]: authentication challenges (pure) and credentials from docker's and podman's
//!   auth files and credential helpers (reads files, runs helpers);
//! - [`client`]: one registry connection: HTTPS or local plain HTTP, and the one loop every
//!   request goes through (authorize, try, retry or refresh the token) (network);
//! - `retry`: the retry policy, a pure decision from a try's outcome (pure);
//! - `token`: the auth scheme a challenge asks for and bearer tokens per scope set (pure);
//! - `http`: methods, URLs, sending one request and reading its reply, classifying transport
//!   errors (one try, network);
//! - `tls`: the CA certificates trusted for a registry (reads files);
//! - `transfer`: streamed blob uploads and downloads, hashed as they go (network, files);
//! - [`progress`]: what a push or pull reports, per blob and per byte (pure);
//! - [`push`]: push only what the registry lacks (HEAD, cross-repository mount, streamed
//!   upload, manifest by digest then tag) and pull with verification (network, layout).

pub mod auth;
pub mod client;
mod http;
pub mod manage;
pub mod parallel;
mod pinned;
pub mod progress;
pub mod pull;
pub mod push;
pub mod reference;
pub mod referrers;
mod retry;
mod tls;
mod token;
mod transfer;

pub use client::{Client, ClientOptions, RetryHook};
pub use reference::Reference;
pub use transfer::Tap;

use std::path::PathBuf;

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference cannot be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The text given.
        reference: String,
        /// The rule it breaks.
        reason: String,
    },
    /// The registry could not be reached (after retries).
    #[error(
        "registry {registry} could not be reached after {attempts} attempt(s): {reason}; check the address, that it is running, and proxies (HTTPS_PROXY, NO_PROXY)"
    )]
    Unreachable {
        /// The registry.
        registry: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The registry answered, but the token service it sends clients to could not be reached.
    #[error(
        "registry {registry} answered, but its token service {realm} could not be reached after {attempts} attempt(s): {reason}; the registry advertises that address in its WWW-Authenticate challenge (its auth.token.realm setting): make it reachable from here, or check proxies (HTTPS_PROXY, NO_PROXY)"
    )]
    TokenServiceUnreachable {
        /// The registry.
        registry: String,
        /// The token service's address, as the registry gave it.
        realm: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The registry answers only plain HTTP, and it is neither local nor marked insecure.
    #[error(
        "registry {registry} answers only plain HTTP; imgbuild uses plain HTTP only for localhost or a registry marked insecure: pass --insecure-registry {registry} if that is intended"
    )]
    PlainHttpRefused {
        /// The registry.
        registry: String,
    },
    /// TLS failed (an unknown CA, a wrong name).
    #[error(
        "TLS with registry {registry} failed: {reason}; if it uses a private CA, point SSL_CERT_FILE at its certificate or put it in /etc/docker/certs.d/{registry}/ca.crt"
    )]
    Tls {
        /// The registry.
        registry: String,
        /// What the TLS layer said.
        reason: String,
    },
    /// The registry refused the credentials, or wants some.
    #[error("registry {registry} refused access ({reason}); {}", match credentials { Some(origin) => format!("the credentials used came from {origin}: check them (docker login {registry})"), None => format!("no credentials were found for it: run `docker login {registry}` or add it to $DOCKER_CONFIG/config.json or $REGISTRY_AUTH_FILE") })]
    Unauthorized {
        /// The registry.
        registry: String,
        /// Where the credentials came from, never the secret.
        credentials: Option<String>,
        /// What the registry said.
        reason: String,
    },
    /// A repository, manifest or blob does not exist.
    #[error("{what}: {repository} not found on {registry} ({message})")]
    NotFound {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// What was asked for.
        what: String,
        /// The registry's message.
        message: String,
    },
    /// The registry answered with an unexpected status.
    #[error("registry {registry}: {request} answered HTTP {status}: {message}")]
    Status {
        /// The registry.
        registry: String,
        /// The request.
        request: String,
        /// The HTTP status.
        status: u16,
        /// The registry's message.
        message: String,
    },
    /// Something pulled does not match its digest.
    #[error(
        "registry {registry} sent a {what} whose bytes do not match its digest (expected {expected}, got {actual}); refused"
    )]
    RemoteDigestMismatch {
        /// The registry.
        registry: String,
        /// What was pulled.
        what: String,
        /// The digest expected.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A local blob's bytes do not match its digest; it was not pushed.
    #[error(
        "local blob {digest} is corrupt (its bytes hash to {actual}); not pushed: rebuild the image, or run `imgbuild cache prune` to drop damaged blobs"
    )]
    LocalBlobCorrupt {
        /// The digest.
        digest: String,
        /// The digest of its bytes.
        actual: String,
    },
    /// An index has no manifest for the wanted platform.
    #[error("{reference} has no image for {platform} (it has: {available})")]
    NoPlatform {
        /// The reference.
        reference: String,
        /// The platform wanted.
        platform: String,
        /// The platforms listed.
        available: String,
    },
    /// An auth file cannot be read.
    #[error("auth file {}: {reason}", path.display())]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A credential helper failed.
    #[error("credential helper {helper} failed for {registry}: {reason}")]
    CredentialHelper {
        /// The helper program.
        helper: String,
        /// The registry.
        registry: String,
        /// Its output or the failure.
        reason: String,
    },
    /// Reading or writing the local layout failed.
    #[error(transparent)]
    Oci(#[from] imgbuild_oci::Error),
    /// A filesystem operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A download its caller stopped ([`Tap::stopped`]): what it would have brought is no
    /// longer needed.
    #[error("the download of {what} was stopped: it is no longer needed")]
    Stopped {
        /// The blob.
        what: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
