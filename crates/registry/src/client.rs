//! One connection to a registry: [`Client`]. It picks HTTPS (or plain HTTP, only for a local
//! registry or one the caller marks insecure, and only when HTTPS does not answer), reads the
//! registry's authentication challenge, and runs every request through one loop: authorize
//! (`token`), try once (`http`), then do what `retry::decide` says —
//! accept, wait and retry, refresh the token and retry, or give up.
//!
//! Talks to the network. Credentials and tokens are sent only in headers and never appear in
//! errors or `Debug` output.

use std::time::{Duration, Instant, SystemTime};

use ureq::tls::TlsConfig;

use crate::auth::Credentials;
use crate::http::{self, Body, Method, Reply, api_message, strip_query};
use crate::reference::Reference;
use crate::retry::{Decision, Outcome, Policy, decide, parse_retry_after};
use crate::token::{Needed, Session, parse_token};
use crate::{Error, Result};

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Allow plain HTTP even though the registry is not local (`--insecure-registry`).
    pub insecure: bool,
    /// Attempts per request before giving up (at least 1).
    pub attempts: u32,
    /// The first retry's delay; each next one doubles (up to 30 s).
    pub backoff: Duration,
    /// Credentials; `None`: look them up with [`crate::auth::credentials_for`].
    pub credentials: Option<Credentials>,
    /// How long a connection may take to open, and a read or write may wait for the other
    /// side, before the try fails (and is retried).
    pub timeout: Duration,
    /// No retry starts later than this after a request's first try: a registry that never
    /// answers costs at most about `deadline + timeout`.
    pub deadline: Duration,
    /// Told before each retry what is waited for and when the next try comes.
    pub on_retry: Option<RetryHook>,
}

/// A callback for retry notices (one line each, for people).
#[derive(Clone)]
pub struct RetryHook(pub std::sync::Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for RetryHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetryHook")
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            insecure: false,
            attempts: 4,
            backoff: Duration::from_millis(250),
            credentials: None,
            timeout: DEFAULT_TIMEOUT,
            deadline: DEFAULT_DEADLINE,
            on_retry: None,
        }
    }
}

/// [`ClientOptions::timeout`]'s default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// [`ClientOptions::deadline`]'s default.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

/// Idle connections kept per registry: more than a build has open at once (the transfer
/// workers of two stages running side by side, and a request or two besides).
const IDLE_CONNECTIONS: usize = 4 * crate::parallel::WORKERS;

/// The longest wait between two tries, whatever the backoff or `Retry-After` say.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// What one try of a request gave: a reply (any status), or a transport failure.
pub(crate) type Tried = std::result::Result<Reply, ureq::Error>;

/// A connection to one registry.
pub struct Client {
    pub(crate) agent: ureq::Agent,
    registry: String,
    base: String,
    options: ClientOptions,
    session: Session,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("registry", &self.registry)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
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
            .timeout_connect(Some(options.timeout))
            .timeout_recv_response(Some(options.timeout))
            .timeout_per_read(Some(options.timeout))
            .timeout_per_write(Some(options.timeout))
            .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
            // Keep every connection a build's transfers use (several workers, some stages at
            // once): a connection dropped from the pool costs a TCP and TLS handshake, two
            // round trips or more, at the next parallel step (ureq keeps 3 per host).
            .max_idle_connections_per_host(IDLE_CONNECTIONS)
            .max_idle_connections(IDLE_CONNECTIONS * 2);
        let trust = crate::tls::trust(&registry)?;
        let config = config
            .tls_config(TlsConfig::builder().root_certs(trust.roots).build())
            .build();
        let agent = match trust.pinned {
            Some(tls) => ureq::Agent::with_parts(
                config,
                crate::pinned::connector(tls),
                ureq::unversioned::resolver::DefaultResolver::default(),
            ),
            None => ureq::Agent::new_with_config(config),
        };
        let host = reference.api_host().to_string();
        let mut client = Self {
            agent,
            registry,
            base: format!("https://{host}"),
            options,
            session: Session::new(credentials),
        };
        let plain_allowed = reference.is_local() || client.options.insecure;
        client.choose_scheme(&host, plain_allowed)?;
        Ok(client)
    }

    /// Pings over HTTPS, falling back to plain HTTP where `plain_allowed`; where it is not,
    /// says so when the registry only speaks plain HTTP.
    fn choose_scheme(&mut self, host: &str, plain_allowed: bool) -> Result<()> {
        // Where plain HTTP is allowed, one HTTPS attempt decides: no retries for the probe.
        let first = self.ping(if plain_allowed {
            1
        } else {
            self.options.attempts
        });
        match first {
            Err(https @ (Error::Unreachable { .. } | Error::Tls { .. })) if plain_allowed => {
                self.base = format!("http://{host}");
                match self.ping(self.options.attempts) {
                    // A TLS registry whose CA is unknown: say so, not what plain HTTP got.
                    Err(_) if matches!(https, Error::Tls { .. }) => Err(https),
                    other => other,
                }
            }
            Err(https @ Error::Unreachable { .. }) => {
                let secure = std::mem::replace(&mut self.base, format!("http://{host}"));
                let plain = self.ping(1);
                self.base = secure;
                match plain {
                    Ok(()) => Err(Error::PlainHttpRefused {
                        registry: self.registry.clone(),
                    }),
                    Err(_) => Err(https),
                }
            }
            other => other,
        }
    }

    /// The registry, as references name it.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `GET /v2/`: a 401 carries the challenge that says how to authenticate.
    fn ping(&self, attempts: u32) -> Result<()> {
        let url = self.url("/v2/");
        let reply = self.exchange("GET /v2/", None, attempts, &mut |_| {
            Ok(http::send(&self.agent, Method::Get, &url, &[], Body::None)
                .and_then(|r| http::read_reply(r, Method::Get)))
        })?;
        match reply.status {
            200..=299 => Ok(()),
            401 => {
                self.session.adopt(reply.header("www-authenticate"));
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

    /// An absolute URL for a `/v2/…` path or a `Location` header (absolute or relative).
    pub(crate) fn url(&self, path_or_url: &str) -> String {
        http::join(&self.base, path_or_url)
    }

    /// The one retry loop. Calls `send` with the `Authorization` header to use (for requests
    /// with `scopes`) until the policy accepts a reply or gives up, at most `attempts` tries
    /// plus one after a token refresh. A reply the policy gives up on is returned (the caller
    /// reports its status); a transport failure it gives up on is an error. `send` returning
    /// `Err` stops the loop at once.
    pub(crate) fn exchange(
        &self,
        what: &str,
        scopes: Option<&[String]>,
        attempts: u32,
        send: &mut dyn FnMut(Option<&str>) -> Result<Tried>,
    ) -> Result<Reply> {
        let started = Instant::now();
        let policy = Policy {
            attempts: attempts.max(1),
            backoff: self.options.backoff,
            max_wait: MAX_WAIT,
        };
        let (mut attempt, mut refreshed, mut fresh) = (1, false, false);
        loop {
            let authorization = match scopes {
                Some(scopes) => self.authorization(scopes, fresh)?,
                None => None,
            };
            fresh = false;
            let tried = send(authorization.as_deref())?;
            let outcome = match &tried {
                Ok(reply) => Outcome::Answered {
                    status: reply.status,
                    retry_after: reply
                        .header("retry-after")
                        .and_then(|v| parse_retry_after(v, SystemTime::now())),
                },
                Err(e) => Outcome::Failed(http::classify(e)),
            };
            let may_refresh = scopes.is_some() && !refreshed;
            match (decide(&policy, attempt, may_refresh, outcome), tried) {
                (Decision::Accept | Decision::GiveUp, Ok(reply)) => return Ok(reply),
                (Decision::Accept | Decision::GiveUp, Err(e)) => {
                    return Err(self.transport_error(&e, attempt));
                }
                (Decision::Retry { after }, tried) => {
                    let elapsed = started.elapsed();
                    if elapsed + after > self.options.deadline {
                        return match tried {
                            Ok(reply) => Ok(reply),
                            Err(e) => Err(self.deadline_error(&e, attempt, elapsed)),
                        };
                    }
                    if let Some(hook) = &self.options.on_retry {
                        let cause = match &tried {
                            Ok(reply) => format!("answered {}", reply.status),
                            Err(e) => e.to_string(),
                        };
                        (hook.0)(&format!(
                            "registry {}: {what}: {cause} (waits up to {} s); next try ({} of {}) in {:.1} s",
                            self.registry,
                            self.options.timeout.as_secs(),
                            attempt + 1,
                            policy.attempts,
                            after.as_secs_f64()
                        ));
                    }
                    std::thread::sleep(after);
                    attempt += 1;
                }
                (Decision::RefreshToken, tried) => {
                    // The registry may ask for another scheme or scope than the ping suggested.
                    if let Ok(reply) = &tried
                        && let Some(challenge) = reply.header("www-authenticate")
                    {
                        self.session.adopt(Some(challenge));
                    }
                    (refreshed, fresh) = (true, true);
                }
            }
        }
    }

    /// The `Authorization` header for a request with `scopes`, fetching a token when needed;
    /// `fresh`: the cached one was refused.
    pub(crate) fn authorization(&self, scopes: &[String], fresh: bool) -> Result<Option<String>> {
        match self.session.authorize(scopes, fresh) {
            Needed::Nothing => Ok(None),
            Needed::Header(h) => Ok(Some(h)),
            Needed::Credentials => Err(self.unauthorized(None)),
            Needed::Token { url, realm } => {
                let token = self.fetch_token(&url, &realm)?;
                Ok(Some(self.session.store(scopes, token)))
            }
        }
    }

    /// `GET url` from the token service at `realm`, with the credentials if there are any.
    fn fetch_token(&self, url: &str, realm: &str) -> Result<String> {
        let headers: Vec<(&str, String)> = self
            .session
            .token_request_auth()
            .map(|basic| ("Authorization", basic))
            .into_iter()
            .collect();
        let reply = self
            .exchange(
                &format!("GET token from {realm}"),
                None,
                self.options.attempts,
                &mut |_| {
                    Ok(
                        http::send(&self.agent, Method::Get, url, &headers, Body::None)
                            .and_then(|r| http::read_reply(r, Method::Get)),
                    )
                },
            )
            .map_err(|e| match e {
                // The registry itself answered the ping: name the address that did not.
                Error::Unreachable {
                    registry,
                    attempts,
                    reason,
                } => Error::TokenServiceUnreachable {
                    registry,
                    realm: realm.to_string(),
                    attempts,
                    reason,
                },
                other => other,
            })?;
        let failed = |message: String| Error::Status {
            registry: self.registry.clone(),
            request: format!("GET {realm} (token)"),
            status: reply.status,
            message,
        };
        match reply.status {
            401 | 403 => Err(self.unauthorized(Some(format!(
                "the token service at {realm} refused them: {}",
                api_message(&reply.body)
            )))),
            200..=299 => parse_token(&reply.body)
                .map_err(|e| failed(format!("not a token response: {e}")))?
                .ok_or_else(|| self.unauthorized(Some("the token service sent no token".into()))),
            _ => Err(failed(api_message(&reply.body))),
        }
    }

    /// An authenticated request on `path_or_url` (a `/v2/…` path or a `Location`) with the
    /// given scopes and a small body, through [`Client::exchange`]. A 401 that survives a token
    /// refresh is an error.
    pub(crate) fn request(
        &self,
        method: Method,
        path_or_url: &str,
        scopes: &[String],
        headers: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<Reply> {
        let url = self.url(path_or_url);
        let what = format!("{method} {}", strip_query(&url));
        let reply = self.exchange(
            &what,
            Some(scopes),
            self.options.attempts,
            &mut |authorization| {
                let mut all = headers.to_vec();
                all.extend(authorization.map(|a| ("Authorization", a.to_string())));
                Ok(http::send(&self.agent, method, &url, &all, body)
                    .and_then(|r| http::read_reply(r, method)))
            },
        )?;
        if reply.status == 401 {
            return Err(self.unauthorized(Some(format!(
                "{method} {} answered 401: {}",
                strip_query(&url),
                api_message(&reply.body)
            ))));
        }
        Ok(reply)
    }

    /// Tries per request (the retry policy's limit).
    pub(crate) fn attempts(&self) -> u32 {
        self.options.attempts
    }

    /// Access refused: names where the credentials came from, never the secret.
    pub(crate) fn unauthorized(&self, reason: Option<String>) -> Error {
        Error::Unauthorized {
            registry: self.registry.clone(),
            credentials: self.session.credentials_origin(),
            reason: reason.unwrap_or_else(|| "the registry requires credentials".into()),
        }
    }

    /// A transport failure given up on because the operation's deadline passed.
    fn deadline_error(&self, error: &ureq::Error, attempts: u32, elapsed: Duration) -> Error {
        match self.transport_error(error, attempts) {
            Error::Unreachable {
                registry,
                attempts,
                reason,
            } => Error::Unreachable {
                registry,
                attempts,
                reason: format!(
                    "{reason}; gave up after {:.0} s (each try waits up to {} s, no retry after {} s: raise --registry-timeout or --registry-deadline for a slow registry)",
                    elapsed.as_secs_f64(),
                    self.options.timeout.as_secs(),
                    self.options.deadline.as_secs()
                ),
            },
            other => other,
        }
    }

    /// A transport failure given up on after `attempts` tries: TLS, or unreachable.
    pub(crate) fn transport_error(&self, error: &ureq::Error, attempts: u32) -> Error {
        match http::classify(error) {
            crate::retry::Fault::Tls => Error::Tls {
                registry: self.registry.clone(),
                reason: error.to_string(),
            },
            _ => Error::Unreachable {
                registry: self.registry.clone(),
                attempts,
                reason: error.to_string(),
            },
        }
    }

    /// An unexpected reply to `what` on `repository`: not found, or a status error.
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
}
