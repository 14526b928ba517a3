//! The world's ledger: every request a service received and what the world did with it.
//!
//! This is the ground truth the judge ([`crate::judge`]) reads. It is written by the
//! connection layer ([`crate::net`]) at one place, after the answer is decided, from
//! what the world can see: the request as it arrived, the service's own account of it
//! ([`Observation`]: the client it attributed the call to, the access token's age, the
//! side effect it applied) and the answer, whoever gave it (the service or an injected
//! fault). Times are the world's true simulated time, never the runner's wall clock
//! (which may be offset).
//!
//! The ledger is bounded: past [`MAX_ENTRIES`] it keeps counting what it could not
//! record ([`Ledger::dropped`]), and the judge fails its `ledger_complete` invariant
//! rather than compute figures from a truncated record.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use steadfast_core::job::RunId;

use super::{SimRequest, SimResponse};
use crate::faults::FaultKind;

/// At most this many requests are recorded per world (a 21-day world of the field
/// report sees about 50,000).
pub const MAX_ENTRIES: usize = 1_000_000;

/// The access token a request presented, as the service that checked it saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TokenSeen {
    /// The service did not check a token (it needs none, or a fault answered first).
    #[default]
    NotChecked,
    /// A live token, issued this long before the call (seconds).
    Valid {
        /// Seconds since the token was issued.
        age_secs: i64,
    },
    /// A token past its expiry.
    Expired {
        /// Seconds since the token was issued.
        age_secs: i64,
        /// Seconds since it expired.
        expired_for_secs: i64,
    },
    /// No token, an unknown one, or a revoked one.
    Invalid,
}

/// What the service did to its data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Nothing changed (a read, a refusal, or a fault answered before the service).
    #[default]
    None,
    /// A side effect was applied.
    Applied,
    /// A stored answer was replayed for a repeated idempotency key: nothing applied.
    Replayed,
}

/// The service's own account of one request, beyond its answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// The client the request was attributed to, if the service identified one.
    pub client: Option<String>,
    /// The access token presented.
    pub token: TokenSeen,
    /// The side effect, if any.
    pub effect: Effect,
}

/// Who gave the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "by", content = "fault")]
pub enum AnsweredBy {
    /// The service handled the request.
    Service,
    /// An injected fault answered (or dropped) it before the service saw it.
    Fault(FaultKind),
}

/// One request the world received.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LedgerEntry {
    /// Order of arrival (0, 1, ...).
    pub seq: u64,
    /// When it arrived (world time).
    pub at: DateTime<Utc>,
    /// When its answer left the service (arrival plus latency and stalls); equal to
    /// `at` for a reset, which has no answer.
    pub answered_at: DateTime<Utc>,
    /// The service's host name.
    #[serde(serialize_with = "as_str")]
    pub service: Arc<str>,
    /// Method.
    pub method: String,
    /// Path without its query.
    pub path: String,
    /// The client the service attributed it to, if any.
    pub client: Option<String>,
    /// The access token presented.
    pub token: TokenSeen,
    /// The `Idempotency-Key` header, if any.
    pub idempotency_key: Option<String>,
    /// The run the request says it belongs to: the `run` field of a JSON body, when it
    /// reads as a run id (`<job>-<YYYYMMDD>T<HHMMSS>Z`).
    pub run: Option<RunId>,
    /// The status answered; 0 when the connection was reset without an answer.
    pub status: u16,
    /// Who answered.
    pub answered_by: AnsweredBy,
    /// Until when the answer asked the caller to wait (its `Retry-After`, as seconds or
    /// an HTTP date), if it advertised one.
    pub retry_after_until: Option<DateTime<Utc>>,
    /// The side effect.
    pub effect: Effect,
    /// For an applied side effect: whether the same write (same service, method, path
    /// and body, or the same idempotency key) had already been applied before.
    pub duplicate: bool,
}

impl LedgerEntry {
    /// Whether this is a `GET /health` probe (not part of any job's work).
    pub fn is_health_check(&self) -> bool {
        self.method == "GET" && self.path == "/health"
    }
}

/// Everything needed to record one request.
#[derive(Debug)]
pub struct Received<'a> {
    /// The service's host name.
    pub service: &'a str,
    /// The request as it arrived.
    pub request: &'a SimRequest,
    /// When it arrived.
    pub at: DateTime<Utc>,
    /// When the answer left (`at` for a reset).
    pub answered_at: DateTime<Utc>,
    /// The answer; `None` for a reset.
    pub response: Option<&'a SimResponse>,
    /// Who answered.
    pub answered_by: AnsweredBy,
    /// The service's account (default when a fault answered).
    pub observation: Observation,
}

#[derive(Debug, Default)]
struct State {
    entries: Vec<LedgerEntry>,
    received: u64,
    dropped: u64,
    /// Service names, shared by their entries.
    names: BTreeMap<String, Arc<str>>,
    /// Applied writes by fingerprint (service, method, path, body digest).
    applied: BTreeMap<(Arc<str>, String, String, [u8; 16]), u64>,
    /// Applied writes by (service, client, idempotency key).
    applied_keys: BTreeMap<(Arc<str>, String, String), u64>,
}

/// The world's ledger. Cheap to clone; clones share the record.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    state: Arc<Mutex<State>>,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one request.
    pub fn record(&self, r: Received<'_>) {
        let req = r.request;
        let path = req.path_only().to_string();
        let method = req.method.to_string();
        let key = req.header_str("idempotency-key").map(str::to_string);
        let run = run_of(&req.body);
        let retry_after_until = r
            .response
            .and_then(|resp| resp.header("retry-after"))
            .and_then(|v| retry_after_until(v, r.answered_at));
        let mut s = self.lock();
        let seq = s.received;
        s.received += 1;
        if s.entries.len() >= MAX_ENTRIES {
            s.dropped += 1;
            return;
        }
        let service = s
            .names
            .entry(r.service.to_string())
            .or_insert_with(|| Arc::from(r.service))
            .clone();
        let mut duplicate = false;
        if r.observation.effect == Effect::Applied {
            let digest: [u8; 16] = Sha256::digest(&req.body)[..16]
                .try_into()
                .unwrap_or_default();
            let n = s
                .applied
                .entry((service.clone(), method.clone(), path.clone(), digest))
                .or_default();
            duplicate = *n > 0;
            *n += 1;
            if let Some(key) = &key {
                let client = r.observation.client.clone().unwrap_or_default();
                let n = s
                    .applied_keys
                    .entry((service.clone(), client, key.clone()))
                    .or_default();
                duplicate |= *n > 0;
                *n += 1;
            }
        }
        s.entries.push(LedgerEntry {
            seq,
            at: r.at,
            answered_at: r.answered_at,
            service,
            method,
            path,
            client: r.observation.client,
            token: r.observation.token,
            idempotency_key: key,
            run,
            status: r.response.map_or(0, |resp| resp.status),
            answered_by: r.answered_by,
            retry_after_until,
            effect: r.observation.effect,
            duplicate,
        });
    }

    /// Every recorded request, in order of arrival.
    pub fn entries(&self) -> Vec<LedgerEntry> {
        self.lock().entries.clone()
    }

    /// Calls `f` with the recorded requests, without copying them.
    pub fn with_entries<T>(&self, f: impl FnOnce(&[LedgerEntry]) -> T) -> T {
        f(&self.lock().entries)
    }

    /// Requests received but not recorded because the ledger was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

fn as_str<S: serde::Serializer>(s: &Arc<str>, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s)
}

/// The `run` field of a JSON object body, when it is a run id.
fn run_of(body: &[u8]) -> Option<RunId> {
    if body.first() != Some(&b'{') {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("run")?.as_str()?.parse().ok()
}

/// Until when a `Retry-After` value sent at `sent` asks the caller to wait: delay
/// seconds, or an HTTP date (RFC 9110 IMF-fixdate, read as RFC 2822).
pub fn retry_after_until(value: &str, sent: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        let secs = i64::try_from(secs).ok()?;
        return sent.checked_add_signed(chrono::Duration::try_seconds(secs)?);
    }
    DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn post(body: &str) -> SimRequest {
        SimRequest::new(http::Method::POST, "/v1/posts?x=1").body(body.to_string())
    }

    fn applied() -> Observation {
        Observation {
            client: Some("c".into()),
            effect: Effect::Applied,
            ..Observation::default()
        }
    }

    #[test]
    fn records_run_retry_after_and_duplicates() {
        let ledger = Ledger::default();
        let t = at("2026-03-02T10:00:00Z");
        let req = post(r#"{"run": "blog-20260302T100000Z"}"#);
        let ok = SimResponse::json(200, &serde_json::json!({}));
        let limited = SimResponse::too_many_requests(std::time::Duration::from_secs(30), "x");
        for (response, observation) in [
            (&ok, applied()),
            (&limited, Observation::default()),
            (&ok, applied()),
        ] {
            ledger.record(Received {
                service: "blog.sim",
                request: &req,
                at: t,
                answered_at: t,
                response: Some(response),
                answered_by: AnsweredBy::Service,
                observation,
            });
        }
        let e = ledger.entries();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].path, "/v1/posts");
        assert_eq!(
            e[0].run.as_ref().map(|r| r.job().to_string()).as_deref(),
            Some("blog")
        );
        assert_eq!(
            e[1].retry_after_until,
            Some(t + chrono::Duration::seconds(30))
        );
        assert_eq!((e[0].duplicate, e[2].duplicate), (false, true));
        assert_eq!(ledger.dropped(), 0);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let t = at("2026-03-02T10:00:00Z");
        assert_eq!(
            retry_after_until("120", t),
            Some(t + chrono::Duration::minutes(2))
        );
        assert_eq!(
            retry_after_until("Mon, 02 Mar 2026 10:05:00 GMT", t),
            Some(at("2026-03-02T10:05:00Z"))
        );
        assert_eq!(retry_after_until("soon", t), None);
    }

    #[test]
    fn a_body_without_a_run_id_has_no_run() {
        assert_eq!(run_of(b"{\"run\": \"nope\"}"), None);
        assert_eq!(run_of(b"not json"), None);
        assert_eq!(run_of(b""), None);
    }
}
