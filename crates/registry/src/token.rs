//! The authentication state of one registry connection: the scheme its challenge asked for
//! (anonymous, `Basic`, or `Bearer` tokens from a token service), the credentials, and the
//! bearer tokens fetched so far, cached per set of scopes.
//!
//! No network: [`Session::authorize`] says what a request needs, and the client fetches a token
//! when told to ([`Needed::Token`]) and hands it back with [`Session::store`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use crate::auth::{Challenge, Credentials, parse_challenge};
use crate::http::with_query;

/// How the registry wants requests authenticated, from its last challenge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Scheme {
    /// No challenge yet (or none needed).
    #[default]
    Anonymous,
    /// `Basic` with the credentials.
    Basic,
    /// `Bearer` tokens from the token service at `realm`.
    Bearer {
        /// The token service.
        realm: String,
        /// Its `service` parameter.
        service: Option<String>,
    },
}

/// A set of scopes, order and repeats ignored: the key of the token cache.
type ScopeSet = BTreeSet<String>;

fn scope_set(scopes: &[String]) -> ScopeSet {
    scopes.iter().cloned().collect()
}

/// What a request needs before it can be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Needed {
    /// Nothing: send it as is.
    Nothing,
    /// This `Authorization` header value.
    Header(String),
    /// A token from the token service: `GET url` (with [`Session::token_request_auth`]).
    Token {
        /// The token request's URL (realm, service and scopes).
        url: String,
        /// The realm, for messages.
        realm: String,
    },
    /// Credentials that were not found.
    Credentials,
}

/// The authentication state of one client; shared by its requests. Its `Debug` output shows
/// neither the secret nor the tokens.
pub(crate) struct Session {
    credentials: Option<Credentials>,
    scheme: Mutex<Scheme>,
    tokens: Mutex<HashMap<ScopeSet, String>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("credentials", &self.credentials)
            .field("scheme", &self.scheme)
            .field("tokens", &"<hidden>")
            .finish()
    }
}

impl Session {
    /// A session that will use `credentials`, anonymous until a challenge says otherwise.
    pub(crate) fn new(credentials: Option<Credentials>) -> Self {
        Self {
            credentials,
            scheme: Mutex::new(Scheme::Anonymous),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Where the credentials came from (never the secret), for messages.
    pub(crate) fn credentials_origin(&self) -> Option<String> {
        self.credentials.as_ref().map(|c| c.origin.clone())
    }

    /// Adopts a `WWW-Authenticate` challenge; one that cannot be parsed means `Basic`.
    pub(crate) fn adopt(&self, challenge: Option<&str>) {
        let scheme = match challenge.and_then(parse_challenge) {
            Some(Challenge::Bearer { realm, service, .. }) => Scheme::Bearer { realm, service },
            Some(Challenge::Basic) | None => Scheme::Basic,
        };
        *self.scheme.lock().expect("auth scheme lock") = scheme;
    }

    /// What a request with `scopes` needs; `fresh`: ignore a cached token (it was refused).
    pub(crate) fn authorize(&self, scopes: &[String], fresh: bool) -> Needed {
        let scheme = self.scheme.lock().expect("auth scheme lock").clone();
        match scheme {
            Scheme::Anonymous => Needed::Nothing,
            Scheme::Basic => match &self.credentials {
                Some(c) => Needed::Header(c.basic()),
                None => Needed::Credentials,
            },
            Scheme::Bearer { realm, service } => {
                let cached = self
                    .tokens
                    .lock()
                    .expect("token cache lock")
                    .get(&scope_set(scopes))
                    .cloned();
                match cached {
                    Some(token) if !fresh => Needed::Header(format!("Bearer {token}")),
                    _ => Needed::Token {
                        url: token_url(&realm, service.as_deref(), scopes),
                        realm,
                    },
                }
            }
        }
    }

    /// The `Authorization` header of a token request: the credentials, if any (anonymous
    /// tokens otherwise).
    pub(crate) fn token_request_auth(&self) -> Option<String> {
        self.credentials.as_ref().map(Credentials::basic)
    }

    /// Caches `token` for `scopes`; returns the `Authorization` header value.
    pub(crate) fn store(&self, scopes: &[String], token: String) -> String {
        let header = format!("Bearer {token}");
        self.tokens
            .lock()
            .expect("token cache lock")
            .insert(scope_set(scopes), token);
        header
    }
}

/// The token request for `scopes` at `realm` (which may have a query already).
fn token_url(realm: &str, service: Option<&str>, scopes: &[String]) -> String {
    let mut params: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = service {
        params.push(("service", s));
    }
    params.extend(scopes.iter().map(|s| ("scope", s.as_str())));
    with_query(realm, &params)
}

/// The token in a token service's answer (`token`, or OAuth2's `access_token`); `None`
/// when there is none. `Err`: not JSON of that shape.
pub(crate) fn parse_token(body: &[u8]) -> Result<Option<String>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
    }
    let a: Answer = serde_json::from_slice(body)?;
    Ok(a.token
        .filter(|t| !t.is_empty())
        .or(a.access_token)
        .filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn creds() -> Credentials {
        Credentials {
            username: "u".into(),
            secret: "p".into(),
            origin: "test".into(),
        }
    }

    const BEARER: &str = r#"Bearer realm="http://auth/token?a=1",service="reg""#;

    #[test]
    fn anonymous_until_challenged_then_basic() {
        let s = Session::new(Some(creds()));
        assert_eq!(s.authorize(&scopes(&["x"]), false), Needed::Nothing);
        s.adopt(Some(r#"Basic realm="r""#));
        assert_eq!(s.authorize(&[], false), Needed::Header(creds().basic()));
        let anonymous = Session::new(None);
        anonymous.adopt(None);
        assert_eq!(anonymous.authorize(&[], false), Needed::Credentials);
    }

    #[test]
    fn bearer_tokens_are_cached_per_scope_set() {
        let s = Session::new(None);
        s.adopt(Some(BEARER));
        let push = scopes(&["repository:a:pull,push", "repository:b:pull"]);
        let Needed::Token { url, realm } = s.authorize(&push, false) else {
            panic!("a token is needed first");
        };
        assert_eq!(realm, "http://auth/token?a=1");
        assert_eq!(
            url,
            "http://auth/token?a=1&service=reg&scope=repository%3Aa%3Apull%2Cpush&scope=repository%3Ab%3Apull"
        );
        assert_eq!(s.store(&push, "t1".into()), "Bearer t1");
        // The same scopes in another order share the token; other scopes do not.
        let reordered = scopes(&["repository:b:pull", "repository:a:pull,push"]);
        assert_eq!(
            s.authorize(&reordered, false),
            Needed::Header("Bearer t1".into())
        );
        assert!(matches!(
            s.authorize(&scopes(&["repository:a:pull"]), false),
            Needed::Token { .. }
        ));
        // A refused token is fetched again.
        assert!(matches!(s.authorize(&push, true), Needed::Token { .. }));
        s.store(&push, "t2".into());
        assert_eq!(
            s.authorize(&push, false),
            Needed::Header("Bearer t2".into())
        );
    }

    #[test]
    fn token_requests_carry_the_credentials_only_when_there_are_some() {
        assert_eq!(Session::new(None).token_request_auth(), None);
        assert_eq!(
            Session::new(Some(creds())).token_request_auth(),
            Some(creds().basic())
        );
    }

    #[test]
    fn token_answers() {
        assert_eq!(parse_token(br#"{"token":"a"}"#).unwrap(), Some("a".into()));
        assert_eq!(
            parse_token(br#"{"access_token":"b","expires_in":60}"#).unwrap(),
            Some("b".into())
        );
        assert_eq!(
            parse_token(br#"{"token":"","access_token":"c"}"#).unwrap(),
            Some("c".into())
        );
        assert_eq!(parse_token(b"{}").unwrap(), None);
        assert!(parse_token(b"<html>").is_err());
    }
}
