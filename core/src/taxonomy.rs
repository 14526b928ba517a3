//! The error taxonomy: every failure is classified, and the class decides what happens.
//!
//! | class       | examples                                   | what the runner does                  |
//! |-------------|--------------------------------------------|---------------------------------------|
//! | Critical    | 401, token expired                         | refresh the token, retry              |
//! | Recoverable | 429, 503, timeouts, ECONNRESET, DNS,       | back off, retry                       |
//! |             | a 200 that breaks its output contract      |                                       |
//! | Degraded    | service down, breaker open                 | skip the step, continue, run degraded |
//! | Fatal       | disk full, out of memory, invalid_grant,   | alert a human, stop the job           |
//! |             | bad config                                 |                                       |

use std::time::Duration;

use serde::Serialize;

use crate::env::NetErrorKind;

/// How bad a failure is; decides retry, skip or stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Authentication: refresh and retry.
    Critical,
    /// Transient: back off and retry.
    Recoverable,
    /// A dependency is down: skip the step, continue the others.
    Degraded,
    /// Needs a human: alert and stop the job.
    Fatal,
}

impl ErrorClass {
    /// The snake_case name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Recoverable => "recoverable",
            Self::Degraded => "degraded",
            Self::Fatal => "fatal",
        }
    }
}

/// What exactly failed; [`FailureKind::class`] maps it to its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "status")]
pub enum FailureKind {
    /// HTTP 401, or the API said the token expired.
    Unauthorized,
    /// HTTP 429.
    RateLimited,
    /// HTTP 5xx other than 501/505.
    ServerError(u16),
    /// An accepted status whose answer breaks the step's output contract (empty,
    /// truncated, not JSON, a required field missing, an unlisted 2xx).
    BadAnswer,
    /// The call got no answer in time (a stall).
    Timeout,
    /// The connection was reset.
    ConnectionReset,
    /// The connection was refused.
    ConnectionRefused,
    /// The name did not resolve.
    Dns,
    /// TLS failed.
    Tls,
    /// The service is down for good this run (retries exhausted on a recoverable error).
    ServiceDown,
    /// The service's circuit breaker is open.
    BreakerOpen,
    /// The retry budget of the service is spent.
    BudgetExhausted,
    /// A step was skipped because a step it needs was not done.
    PrerequisiteNotDone,
    /// ENOSPC while persisting state.
    DiskFull,
    /// The memory probe is over its hard limit.
    OutOfMemory,
    /// The token endpoint rejected the refresh token.
    InvalidGrant,
    /// The configuration is wrong (e.g. 4xx that no retry can fix, missing credential).
    BadConfig,
    /// HTTP 4xx other than 401/408/429.
    ClientError(u16),
    /// A command step exited with a failure code.
    CommandFailed(i32),
    /// The job's code panicked.
    Panic,
    /// Another I/O failure.
    Io,
}

impl FailureKind {
    /// The class of this failure.
    pub fn class(self) -> ErrorClass {
        match self {
            Self::Unauthorized => ErrorClass::Critical,
            Self::RateLimited
            | Self::ServerError(_)
            | Self::BadAnswer
            | Self::Timeout
            | Self::ConnectionReset
            | Self::ConnectionRefused
            | Self::Dns
            | Self::Tls
            | Self::Io => ErrorClass::Recoverable,
            Self::ServiceDown
            | Self::BreakerOpen
            | Self::BudgetExhausted
            | Self::PrerequisiteNotDone
            | Self::ClientError(_) => ErrorClass::Degraded,
            Self::DiskFull
            | Self::OutOfMemory
            | Self::InvalidGrant
            | Self::BadConfig
            | Self::Panic => ErrorClass::Fatal,
            Self::CommandFailed(_) => ErrorClass::Recoverable,
        }
    }

    /// The kind of an HTTP status, or `None` for success.
    pub fn from_status(status: u16) -> Option<Self> {
        match status {
            200..=399 => None,
            401 => Some(Self::Unauthorized),
            408 => Some(Self::Timeout),
            429 => Some(Self::RateLimited),
            501 | 505 => Some(Self::BadConfig),
            500..=599 => Some(Self::ServerError(status)),
            400..=499 => Some(Self::ClientError(status)),
            _ => Some(Self::Io),
        }
    }

    /// A short snake_case label for logs and metrics.
    pub fn label(self) -> String {
        match self {
            Self::ServerError(s) | Self::ClientError(s) => format!("http_{s}"),
            Self::CommandFailed(c) => format!("exit_{c}"),
            other => {
                let json = serde_json::to_value(other).unwrap_or_default();
                json.get("kind")
                    .and_then(|k| k.as_str())
                    .unwrap_or("unknown")
                    .to_string()
            }
        }
    }
}

impl From<NetErrorKind> for FailureKind {
    fn from(kind: NetErrorKind) -> Self {
        match kind {
            NetErrorKind::Dns => Self::Dns,
            NetErrorKind::Refused => Self::ConnectionRefused,
            NetErrorKind::Reset => Self::ConnectionReset,
            NetErrorKind::TimedOut => Self::Timeout,
            NetErrorKind::Tls => Self::Tls,
            NetErrorKind::Other => Self::Io,
        }
    }
}

impl From<&std::io::Error> for FailureKind {
    fn from(err: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match err.kind() {
            K::StorageFull | K::QuotaExceeded => Self::DiskFull,
            K::OutOfMemory => Self::OutOfMemory,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                Self::ConnectionReset
            }
            K::ConnectionRefused => Self::ConnectionRefused,
            K::TimedOut => Self::Timeout,
            _ if err.raw_os_error() == Some(28) => Self::DiskFull,
            _ => Self::Io,
        }
    }
}

/// A classified failure of one step attempt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{detail}")]
pub struct StepError {
    /// What failed.
    pub kind: FailureKind,
    /// Its class (usually `kind.class()`; a policy may override).
    pub class: ErrorClass,
    /// A server-requested wait (`Retry-After`), if any.
    pub retry_after: Option<Duration>,
    /// A lowercase fragment for logs (never a secret).
    pub detail: String,
}

impl StepError {
    /// A failure of `kind` with its default class.
    pub fn new(kind: FailureKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            class: kind.class(),
            retry_after: None,
            detail: detail.into(),
        }
    }

    /// Attaches a `Retry-After` wait.
    pub fn with_retry_after(mut self, wait: Option<Duration>) -> Self {
        self.retry_after = wait;
        self
    }

    /// Overrides the class.
    pub fn with_class(mut self, class: ErrorClass) -> Self {
        self.class = class;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_field_report_ranking() {
        assert_eq!(FailureKind::from_status(200), None);
        assert_eq!(
            FailureKind::from_status(401).map(FailureKind::class),
            Some(ErrorClass::Critical)
        );
        for s in [429, 503, 500, 502, 408] {
            assert_eq!(
                FailureKind::from_status(s).map(FailureKind::class),
                Some(ErrorClass::Recoverable),
                "status {s}"
            );
        }
        assert_eq!(FailureKind::ServiceDown.class(), ErrorClass::Degraded);
        assert_eq!(FailureKind::BreakerOpen.class(), ErrorClass::Degraded);
        for k in [
            FailureKind::DiskFull,
            FailureKind::OutOfMemory,
            FailureKind::InvalidGrant,
            FailureKind::BadConfig,
        ] {
            assert_eq!(k.class(), ErrorClass::Fatal, "{k:?}");
        }
    }

    #[test]
    fn io_errors_classify() {
        let enospc = std::io::Error::from_raw_os_error(28);
        assert_eq!(FailureKind::from(&enospc), FailureKind::DiskFull);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(FailureKind::from(&reset), FailureKind::ConnectionReset);
        assert_eq!(
            FailureKind::from(NetErrorKind::Dns).class(),
            ErrorClass::Recoverable
        );
    }

    #[test]
    fn labels_are_snake_case() {
        assert_eq!(FailureKind::RateLimited.label(), "rate_limited");
        assert_eq!(FailureKind::ServerError(503).label(), "http_503");
    }
}
