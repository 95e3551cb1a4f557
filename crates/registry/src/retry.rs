//! The one retry policy every registry request follows (pure: no network, no clock, no sleep).
//!
//! [`decide`] looks at one try's [`Outcome`] (a classified transport failure, or a status with
//! its `Retry-After`) and says what to do next: accept the answer, wait and retry, fetch a
//! fresh token and retry, or give up. The loop that sends requests and sleeps lives in
//! [`crate::client`]; this module only decides, so every branch is a unit test.

use std::time::{Duration, SystemTime};

/// How a request's transport failed, as far as retrying cares. Built from `ureq::Error` by
/// [`crate::http::classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The host name did not resolve (DNS may be flaky).
    HostNotFound,
    /// No connection could be made (refused, unreachable).
    Connect,
    /// A connect, send or receive timeout.
    Timeout,
    /// The connection broke mid-exchange (reset, early close, garbled HTTP).
    Broken,
    /// The peer answered, but not with TLS (a plain HTTP server on an HTTPS attempt).
    NotTls,
    /// TLS failed: an untrusted certificate, a wrong name, a failed handshake.
    Tls,
    /// The request itself is wrong (a bad URL, a refused redirect): retrying cannot help.
    Request,
}

impl Fault {
    /// Whether trying again may succeed.
    fn transient(self) -> bool {
        matches!(
            self,
            Self::HostNotFound | Self::Connect | Self::Timeout | Self::Broken
        )
    }
}

/// What one try produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// No answer: the transport failed.
    Failed(Fault),
    /// An answer with this status; `retry_after` is its `Retry-After`, already parsed.
    Answered {
        /// The HTTP status.
        status: u16,
        /// The wait the server asked for, if it sent a `Retry-After` that parses.
        retry_after: Option<Duration>,
    },
}

/// What to do after a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The answer is final (a success, or an error status retrying cannot change).
    Accept,
    /// Wait, then try again.
    Retry {
        /// How long to wait first.
        after: Duration,
    },
    /// Fetch fresh credentials (a new token, or the scheme a new challenge asks for) and try
    /// again at once.
    RefreshToken,
    /// Stop: the failure (or the last error status) is the answer.
    GiveUp,
}

/// The limits of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Tries per request, at least 1; a token refresh does not count as one.
    pub(crate) attempts: u32,
    /// The wait after the first failure; it doubles with each further one.
    pub(crate) backoff: Duration,
    /// No wait is longer than this, whatever the backoff or the server's `Retry-After` say.
    pub(crate) max_wait: Duration,
}

impl Policy {
    /// The exponential backoff after the `attempt`-th try (1-based): `backoff * 2^(attempt-1)`,
    /// capped at `max_wait`.
    pub(crate) fn backoff_after(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff
            .checked_mul(factor)
            .unwrap_or(self.max_wait)
            .min(self.max_wait)
    }
}

/// Statuses that say "not now" rather than "no": worth another try.
fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429) || ((500..=599).contains(&status) && !matches!(status, 501 | 505))
}

/// Decides what follows the `attempt`-th try (1-based) of a request that ended in `outcome`.
/// `may_refresh`: a 401 may be answered by fresh credentials (the request is authenticated and
/// has not refreshed them yet).
pub(crate) fn decide(
    policy: &Policy,
    attempt: u32,
    may_refresh: bool,
    outcome: Outcome,
) -> Decision {
    let last = attempt >= policy.attempts.max(1);
    match outcome {
        Outcome::Failed(fault) if fault.transient() && !last => Decision::Retry {
            after: policy.backoff_after(attempt),
        },
        Outcome::Failed(_) => Decision::GiveUp,
        Outcome::Answered { status: 401, .. } if may_refresh => Decision::RefreshToken,
        Outcome::Answered { status, .. } if !retryable_status(status) => Decision::Accept,
        Outcome::Answered { .. } if last => Decision::GiveUp,
        Outcome::Answered {
            status: 429 | 503,
            retry_after: Some(wait),
        } => Decision::Retry {
            after: wait.min(policy.max_wait),
        },
        Outcome::Answered { .. } => Decision::Retry {
            after: policy.backoff_after(attempt),
        },
    }
}

/// Parses a `Retry-After` value: delay-seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`), relative to `now`. A date in the past is no wait.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses an IMF-fixdate (RFC 9110 §5.6.7), the form servers must send:
/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let (_weekday, rest) = value.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: u32 = day.parse().ok()?;
    let month = 1 + [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as u32;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *s > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + s))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        attempts: 4,
        backoff: Duration::from_millis(250),
        max_wait: Duration::from_secs(30),
    };

    fn status(status: u16) -> Outcome {
        Outcome::Answered {
            status,
            retry_after: None,
        }
    }

    fn after(ms: u64) -> Decision {
        Decision::Retry {
            after: Duration::from_millis(ms),
        }
    }

    #[test]
    fn answers_that_retrying_cannot_change_are_accepted() {
        for s in [200, 201, 202, 204, 307, 400, 403, 404, 405, 416, 501, 505] {
            assert_eq!(decide(&POLICY, 1, true, status(s)), Decision::Accept, "{s}");
        }
    }

    #[test]
    fn a_401_refreshes_credentials_once() {
        assert_eq!(
            decide(&POLICY, 1, true, status(401)),
            Decision::RefreshToken
        );
        // Also on the last attempt: a refresh is not a retry of a failure.
        assert_eq!(
            decide(&POLICY, 4, true, status(401)),
            Decision::RefreshToken
        );
        // Refreshed already, or not an authenticated request: the 401 is the answer.
        assert_eq!(decide(&POLICY, 1, false, status(401)), Decision::Accept);
    }

    #[test]
    fn busy_and_failing_servers_back_off_exponentially() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(decide(&POLICY, 1, true, status(s)), after(250), "{s}");
            assert_eq!(decide(&POLICY, 2, true, status(s)), after(500), "{s}");
            assert_eq!(decide(&POLICY, 3, true, status(s)), after(1000), "{s}");
            assert_eq!(decide(&POLICY, 4, true, status(s)), Decision::GiveUp, "{s}");
        }
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_only_and_capped() {
        let asked = |status, secs| Outcome::Answered {
            status,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(decide(&POLICY, 1, true, asked(429, 2)), after(2000));
        assert_eq!(decide(&POLICY, 3, true, asked(503, 0)), after(0));
        assert_eq!(decide(&POLICY, 1, true, asked(503, 3600)), after(30_000));
        // A 500's Retry-After is not a promise: plain backoff.
        assert_eq!(decide(&POLICY, 1, true, asked(500, 9)), after(250));
        // Out of attempts, whatever the server asks.
        assert_eq!(decide(&POLICY, 4, true, asked(429, 1)), Decision::GiveUp);
    }

    #[test]
    fn transient_transport_faults_are_retried_until_the_last_attempt() {
        for fault in [
            Fault::HostNotFound,
            Fault::Connect,
            Fault::Timeout,
            Fault::Broken,
        ] {
            let failed = Outcome::Failed(fault);
            assert_eq!(decide(&POLICY, 1, true, failed), after(250), "{fault:?}");
            assert_eq!(decide(&POLICY, 3, false, failed), after(1000), "{fault:?}");
            assert_eq!(
                decide(&POLICY, 4, true, failed),
                Decision::GiveUp,
                "{fault:?}"
            );
        }
        let once = Policy {
            attempts: 1,
            ..POLICY
        };
        assert_eq!(
            decide(&once, 1, true, Outcome::Failed(Fault::Connect)),
            Decision::GiveUp
        );
    }

    #[test]
    fn tls_and_request_faults_give_up_at_once() {
        for fault in [Fault::Tls, Fault::NotTls, Fault::Request] {
            assert_eq!(
                decide(&POLICY, 1, true, Outcome::Failed(fault)),
                Decision::GiveUp,
                "{fault:?}"
            );
        }
    }

    #[test]
    fn backoff_is_capped_and_does_not_overflow() {
        assert_eq!(POLICY.backoff_after(1), Duration::from_millis(250));
        assert_eq!(POLICY.backoff_after(8), Duration::from_secs(30));
        assert_eq!(POLICY.backoff_after(200), Duration::from_secs(30));
        assert_eq!(POLICY.backoff_after(0), Duration::from_millis(250));
    }

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn retry_after_http_dates() {
        // 2015-10-21T07:28:00Z is 1445412480.
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(
            parse_retry_after(date, at(1_445_412_480 - 90)),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after(date, at(1_445_412_480 + 5)),
            Some(Duration::ZERO),
            "a date in the past: no wait"
        );
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(at(784_111_777))
        );
        assert_eq!(
            parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT"),
            Some(at(1_709_164_800))
        );
        for bad in [
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "soon",
        ] {
            assert_eq!(parse_retry_after(bad, at(0)), None, "{bad}");
        }
    }
}
