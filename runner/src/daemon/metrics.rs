//! Counters fed by the core's events, and the optional HTTP endpoint serving them:
//! `/healthz` and `/metrics` (Prometheus text format).
//!
//! Counters come from the events (every outcome, retry, breaker transition and token
//! refresh is one), seeded at start from the state files; per-job state and failure
//! streaks come from the runner's [`StatusBoard`] once it is attached.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use steadfast_core::breaker::BreakerState;
use steadfast_core::env::EventSink;
use steadfast_core::event::{Event, EventKind, Outcome, StateName};
use steadfast_core::job_status::{JobStatus, StatusBoard};
use steadfast_core::state_machine::TaskState;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 16;
/// One connection's lifetime at most (a slow client cannot pin a slot).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Counters {
    runs: BTreeMap<(String, Outcome), u64>,
    retries: BTreeMap<String, u64>,
    attempt_failures: BTreeMap<(String, &'static str), u64>,
    token_refreshes: BTreeMap<(String, String), u64>,
    token_refresh_failures: BTreeMap<String, u64>,
    breakers: BTreeMap<String, BreakerState>,
    /// Service -> the instant its gate opens (Retry-After, quota reset, open breaker).
    gates: BTreeMap<String, DateTime<Utc>>,
    /// Service -> steps that waited at (or were deferred by) its gate.
    gate_waits: BTreeMap<String, u64>,
    last_success: BTreeMap<String, DateTime<Utc>>,
    alerts: u64,
    started: Option<DateTime<Utc>>,
    /// Process groups left by a killed runner, found at start, by how they ended.
    reaped: BTreeMap<String, u64>,
}

/// A per-job gauge: name, help text, and its value from a job's status.
type JobGauge = (&'static str, &'static str, fn(&JobStatus) -> u32);

/// The daemon's counters (an [`EventSink`]).
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
    board: OnceLock<Arc<StatusBoard>>,
    /// The state directory whose journal is read at each scrape (missed slots, resumed
    /// and open runs, journaled process groups).
    journal: OnceLock<std::path::PathBuf>,
}

fn breaker_value(s: BreakerState) -> u8 {
    match s {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seeds what the state files know: breaker states and last successes.
    pub fn seed(
        &self,
        breakers: &BTreeMap<String, BreakerState>,
        last_success: &BTreeMap<String, DateTime<Utc>>,
    ) {
        let mut c = self.lock();
        c.breakers
            .extend(breakers.iter().map(|(k, v)| (k.clone(), *v)));
        c.last_success
            .extend(last_success.iter().map(|(k, v)| (k.clone(), *v)));
    }

    /// Registers a service so its breaker shows as closed before any transition.
    pub fn service(&self, name: &str) {
        self.lock()
            .breakers
            .entry(name.to_string())
            .or_insert(BreakerState::Closed);
    }

    /// Reads jobs' live state and failure streaks from the runner's board from now on
    /// (a second board is ignored).
    pub fn attach(&self, board: Arc<StatusBoard>) {
        let _ = self.board.set(board);
    }

    /// Reads the journal of `state_dir` at each scrape from now on (a second directory
    /// is ignored).
    pub fn attach_journal(&self, state_dir: &std::path::Path) {
        let _ = self.journal.set(state_dir.to_path_buf());
    }

    /// Runs finished so far by (job, outcome).
    pub fn runs(&self) -> BTreeMap<(String, Outcome), u64> {
        self.lock().runs.clone()
    }

    /// The Prometheus text exposition, ages computed at `now`.
    pub fn render(&self, now: DateTime<Utc>) -> String {
        let c = self.lock();
        let mut out = String::new();
        fn family(out: &mut String, name: &str, kind: &str, help: &str) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        family(
            &mut out,
            "steadfast_up",
            "gauge",
            "1 while the daemon runs.",
        );
        let _ = writeln!(out, "steadfast_up 1");
        if let Some(s) = c.started {
            family(
                &mut out,
                "steadfast_uptime_seconds",
                "gauge",
                "Seconds since the runner started.",
            );
            let _ = writeln!(
                out,
                "steadfast_uptime_seconds {}",
                (now - s).num_seconds().max(0)
            );
        }
        family(
            &mut out,
            "steadfast_runs_total",
            "counter",
            "Finished runs by job and outcome.",
        );
        for ((job, outcome), n) in &c.runs {
            let _ = writeln!(
                out,
                "steadfast_runs_total{{job=\"{}\",outcome=\"{outcome}\"}} {n}",
                label(job)
            );
        }
        family(
            &mut out,
            "steadfast_retries_total",
            "counter",
            "Retries scheduled by job.",
        );
        for (job, n) in &c.retries {
            let _ = writeln!(out, "steadfast_retries_total{{job=\"{}\"}} {n}", label(job));
        }
        family(
            &mut out,
            "steadfast_attempt_failures_total",
            "counter",
            "Failed attempts by job and error class.",
        );
        for ((job, class), n) in &c.attempt_failures {
            let _ = writeln!(
                out,
                "steadfast_attempt_failures_total{{job=\"{}\",class=\"{class}\"}} {n}",
                label(job)
            );
        }
        family(
            &mut out,
            "steadfast_breaker_state",
            "gauge",
            "Circuit breaker per service: 0 closed, 1 half-open, 2 open.",
        );
        for (service, s) in &c.breakers {
            let _ = writeln!(
                out,
                "steadfast_breaker_state{{service=\"{}\"}} {}",
                label(service),
                breaker_value(*s)
            );
        }
        family(
            &mut out,
            "steadfast_service_gate_seconds",
            "gauge",
            "Seconds until each service's gate lets calls through again (0: open).",
        );
        for (service, until) in &c.gates {
            let _ = writeln!(
                out,
                "steadfast_service_gate_seconds{{service=\"{}\"}} {}",
                label(service),
                (*until - now).num_seconds().max(0)
            );
        }
        family(
            &mut out,
            "steadfast_gate_waits_total",
            "counter",
            "Steps that waited at, or were deferred by, a service's gate.",
        );
        for (service, n) in &c.gate_waits {
            let _ = writeln!(
                out,
                "steadfast_gate_waits_total{{service=\"{}\"}} {n}",
                label(service)
            );
        }
        family(
            &mut out,
            "steadfast_token_refreshes_total",
            "counter",
            "Access-token refreshes by credential and reason.",
        );
        for ((cred, reason), n) in &c.token_refreshes {
            let _ = writeln!(
                out,
                "steadfast_token_refreshes_total{{credential=\"{}\",reason=\"{}\"}} {n}",
                label(cred),
                label(reason)
            );
        }
        family(
            &mut out,
            "steadfast_token_refresh_failures_total",
            "counter",
            "Failed token refreshes by credential.",
        );
        for (cred, n) in &c.token_refresh_failures {
            let _ = writeln!(
                out,
                "steadfast_token_refresh_failures_total{{credential=\"{}\"}} {n}",
                label(cred)
            );
        }
        family(
            &mut out,
            "steadfast_heartbeat_age_seconds",
            "gauge",
            "Seconds since each job's last success.",
        );
        for (job, at) in &c.last_success {
            let _ = writeln!(
                out,
                "steadfast_heartbeat_age_seconds{{job=\"{}\"}} {}",
                label(job),
                (now - *at).num_seconds().max(0)
            );
        }
        family(
            &mut out,
            "steadfast_alerts_total",
            "counter",
            "Alerts raised.",
        );
        let _ = writeln!(out, "steadfast_alerts_total {}", c.alerts);
        family(
            &mut out,
            "steadfast_processes_reaped_total",
            "counter",
            "Command steps' process groups a killed runner left, found at start, by outcome (terminated, killed, gone, not_ours).",
        );
        for (how, n) in &c.reaped {
            let _ = writeln!(
                out,
                "steadfast_processes_reaped_total{{outcome=\"{}\"}} {n}",
                label(how)
            );
        }
        if let Some(dir) = self.journal.get() {
            render_journal(&mut out, dir);
        }
        if let Some(board) = self.board.get() {
            let jobs = board.snapshot();
            let gauges: [JobGauge; 3] = [
                (
                    "steadfast_job_consecutive_failures",
                    "Failed runs in a row by job (0 after a success).",
                    |s| s.consecutive_failures,
                ),
                (
                    "steadfast_job_running",
                    "1 while a run of the job is in progress.",
                    |s| u32::from(s.state == TaskState::Running),
                ),
                (
                    "steadfast_job_stopped",
                    "1 when the job stopped on a fatal error and waits for a human.",
                    |s| u32::from(s.state == TaskState::Stopped),
                ),
            ];
            for (name, help, value) in gauges {
                family(&mut out, name, "gauge", help);
                for (job, s) in &jobs {
                    let _ = writeln!(out, "{name}{{job=\"{}\"}} {}", label(job), value(s));
                }
            }
        }
        out
    }
}

impl EventSink for Metrics {
    fn emit(&self, e: Event) {
        let mut c = self.lock();
        let job = e.job.clone().unwrap_or_default();
        match e.event {
            EventKind::RunnerStarted => c.started = Some(e.at),
            EventKind::RunFinished => {
                if let Some(outcome) = e.outcome {
                    *c.runs.entry((job.clone(), outcome)).or_default() += 1;
                    if matches!(outcome, Outcome::Succeeded | Outcome::Degraded) {
                        c.last_success.insert(job, e.at);
                    }
                }
            }
            EventKind::RetryScheduled => *c.retries.entry(job).or_default() += 1,
            EventKind::AttemptFailed => {
                let class = e.class.map(|k| k.as_str()).unwrap_or("unknown");
                *c.attempt_failures.entry((job, class)).or_default() += 1;
            }
            EventKind::BreakerTransition => {
                if let (Some(service), Some(StateName::Breaker(to))) = (e.service, e.to) {
                    c.breakers.insert(service, to);
                }
            }
            EventKind::GateHeld => {
                if let Some(service) = e.service {
                    let held = chrono::Duration::milliseconds(
                        i64::try_from(e.delay_ms.unwrap_or(0)).unwrap_or(i64::MAX),
                    );
                    c.gates.insert(service, e.at + held);
                }
            }
            EventKind::GateWait => {
                *c.gate_waits
                    .entry(e.service.unwrap_or_default())
                    .or_default() += 1;
            }
            EventKind::TokenRefreshed => {
                let cred = e.service.unwrap_or_default();
                let reason = e.detail.unwrap_or_default();
                *c.token_refreshes.entry((cred, reason)).or_default() += 1;
            }
            EventKind::TokenRefreshFailed => {
                *c.token_refresh_failures
                    .entry(e.service.unwrap_or_default())
                    .or_default() += 1;
            }
            EventKind::Alert => c.alerts += 1,
            EventKind::ProcessReaped => {
                // The detail ends with the outcome's name (see the core's reaper).
                let how = e
                    .detail
                    .as_deref()
                    .and_then(|d| d.rsplit(' ').next())
                    .unwrap_or("unknown")
                    .to_string();
                *c.reaped.entry(how).or_default() += 1;
            }
            _ => {}
        }
    }
}

/// The journal's families: gauges over the journal's retention (90 days), read from
/// the store at each scrape; an unreadable store is a gauge of its own, never a silent
/// gap.
fn render_journal(out: &mut String, state_dir: &std::path::Path) {
    let family = |out: &mut String, name: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    };
    let counts = super::status::JournalCounts::read(state_dir);
    family(
        out,
        "steadfast_journal_readable",
        "1 when the state database's journal could be read at this scrape.",
    );
    let _ = writeln!(
        out,
        "steadfast_journal_readable {}",
        u8::from(counts.is_ok())
    );
    let Ok(counts) = counts else {
        return;
    };
    family(
        out,
        "steadfast_slots_missed",
        "Slots recorded missed in the journal, by job and reason.",
    );
    for (job, reasons) in &counts.missed {
        for (reason, n) in reasons {
            let _ = writeln!(
                out,
                "steadfast_slots_missed{{job=\"{}\",reason=\"{}\"}} {n}",
                label(job),
                label(reason)
            );
        }
    }
    family(
        out,
        "steadfast_runs_resumed",
        "Runs in the journal started more than once (interrupted, then resumed), by job.",
    );
    for (job, n) in &counts.resumed {
        let _ = writeln!(out, "steadfast_runs_resumed{{job=\"{}\"}} {n}", label(job));
    }
    family(
        out,
        "steadfast_runs_open",
        "Runs in the journal started and not finished, by job.",
    );
    for (job, n) in &counts.open {
        let _ = writeln!(out, "steadfast_runs_open{{job=\"{}\"}} {n}", label(job));
    }
    family(
        out,
        "steadfast_processes_journaled",
        "Command steps' process groups journaled as running.",
    );
    let _ = writeln!(
        out,
        "steadfast_processes_journaled {}",
        counts.processes.len()
    );
}

/// Serves `/healthz` and `/metrics` on `listener` until `shutdown` is true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&metrics, req.uri().path())) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

fn respond(metrics: &Metrics, path: &str) -> hyper::Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        "/healthz" => (200, "text/plain", "ok\n".to_string()),
        "/metrics" => (200, "text/plain; version=0.0.4", metrics.render(Utc::now())),
        _ => (
            404,
            "text/plain",
            "not found (try /healthz or /metrics)\n".into(),
        ),
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use steadfast_core::taxonomy::ErrorClass;

    #[test]
    fn events_become_prometheus_series() {
        let m = Metrics::new();
        let t = Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap();
        m.service("api");
        m.emit(Event::new(EventKind::RunnerStarted).at(t));
        m.emit(
            Event::new(EventKind::RunFinished)
                .job("a")
                .outcome(Outcome::Succeeded)
                .at(t),
        );
        m.emit(
            Event::new(EventKind::RunFinished)
                .job("a")
                .outcome(Outcome::Failed)
                .at(t),
        );
        m.emit(Event::new(EventKind::RetryScheduled).job("a"));
        m.emit(
            Event::new(EventKind::AttemptFailed)
                .job("a")
                .class(ErrorClass::Recoverable),
        );
        m.emit(
            Event::new(EventKind::BreakerTransition)
                .service("api")
                .transition(BreakerState::Closed, BreakerState::Open),
        );
        m.emit(
            Event::new(EventKind::TokenRefreshed)
                .service("google")
                .detail("proactive"),
        );
        let text = m.render(t + chrono::Duration::seconds(90));
        for line in [
            "steadfast_runs_total{job=\"a\",outcome=\"succeeded\"} 1",
            "steadfast_runs_total{job=\"a\",outcome=\"failed\"} 1",
            "steadfast_retries_total{job=\"a\"} 1",
            "steadfast_attempt_failures_total{job=\"a\",class=\"recoverable\"} 1",
            "steadfast_breaker_state{service=\"api\"} 2",
            "steadfast_token_refreshes_total{credential=\"google\",reason=\"proactive\"} 1",
            "steadfast_heartbeat_age_seconds{job=\"a\"} 90",
            "steadfast_uptime_seconds 90",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }

    #[test]
    fn gates_show_the_seconds_until_they_open() {
        let m = Metrics::new();
        let t = Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap();
        m.emit(
            Event::new(EventKind::GateHeld)
                .service("api")
                .delay(std::time::Duration::from_secs(120))
                .at(t),
        );
        m.emit(Event::new(EventKind::GateWait).service("api").at(t));
        let text = m.render(t + chrono::Duration::seconds(30));
        for line in [
            "steadfast_service_gate_seconds{service=\"api\"} 90",
            "steadfast_gate_waits_total{service=\"api\"} 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
        let later = m.render(t + chrono::Duration::seconds(300));
        assert!(later.contains("steadfast_service_gate_seconds{service=\"api\"} 0"));
    }

    #[test]
    fn an_attached_board_adds_live_job_gauges() {
        let m = Metrics::new();
        let t = Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap();
        assert!(
            !m.render(t).contains("steadfast_job_"),
            "no board, no job gauges"
        );
        let status = |state, failures| JobStatus {
            state,
            last_outcome: None,
            last_success: None,
            next_run: None,
            consecutive_failures: failures,
        };
        let board = Arc::new(StatusBoard::new(BTreeMap::from([
            ("a".to_string(), status(TaskState::Running, 0)),
            ("b\"x".to_string(), status(TaskState::Stopped, 4)),
        ])));
        m.attach(board.clone());
        board.update("a", |s| s.consecutive_failures = 2);
        let text = m.render(t);
        for line in [
            "steadfast_job_consecutive_failures{job=\"a\"} 2",
            "steadfast_job_consecutive_failures{job=\"b\\\"x\"} 4",
            "steadfast_job_running{job=\"a\"} 1",
            "steadfast_job_running{job=\"b\\\"x\"} 0",
            "steadfast_job_stopped{job=\"b\\\"x\"} 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }

    #[tokio::test]
    async fn the_endpoint_serves_healthz_and_metrics() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = Arc::new(Metrics::new());
        m.service("api");
        let (tx, rx) = watch::channel(false);
        let server = tokio::spawn(serve(listener, m, rx));
        let get = |path: &'static str| async move {
            let url = steadfast_core::config::Url::parse(&format!("http://{addr}{path}")).unwrap();
            steadfast_core::http::send(
                &crate::env::tokio::TcpConnector::new(),
                &steadfast_core::http::Request::new(steadfast_core::http::Method::GET, url),
                Duration::from_secs(5),
            )
            .await
            .unwrap()
        };
        assert_eq!(get("/healthz").await.status, 200);
        let metrics = get("/metrics").await;
        assert!(
            String::from_utf8_lossy(&metrics.body)
                .contains("steadfast_breaker_state{service=\"api\"} 0")
        );
        assert_eq!(get("/nope").await.status, 404);
        tx.send(true).unwrap();
        server.await.unwrap();
    }
}
