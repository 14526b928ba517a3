//! Alerts for humans and pings for dead-man's switches, delivered in the background.
//!
//! The core calls [`AlertSink::alert`] and `EventSink::emit` inline, so nothing here
//! may block or wait on the network: each delivery goes into a bounded queue served by
//! one background task ([`Outbox`]); when the queue is full the delivery is dropped and
//! counted. A webhook that hangs delays only other deliveries, never a job.
//!
//! The notifier sends only what needs a human (the core decides what is an alert),
//! at most once per `(kind, job, service)` per dedup window and at most `max_per_hour`
//! in all: a flapping service must not page its owner every minute.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::settings::{NotifySettings, SecretUrl, Webhook, WebhookFormat};
use crate::env::tokio::TcpConnector;
use steadfast_core::alert::{Alert, AlertKind, AlertSink};
use steadfast_core::config::Url;
use steadfast_core::env::EventSink;
use steadfast_core::event::{Event, EventKind, Outcome};
use steadfast_core::http::{Method, Request};

/// Deliveries waiting at most; more are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 64;
/// One delivery's timeout.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Dedup keys remembered at most.
const MAX_DEDUP_KEYS: usize = 1024;

/// One request to deliver; `label` names it in logs (never the URL: it is a secret).
#[derive(Debug)]
pub struct Delivery {
    /// e.g. `webhook[0] ntfy` or `ping clock start`.
    pub label: String,
    /// The request.
    pub request: Request,
}

/// The sending half of the background delivery queue.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Delivery>,
    dropped: AtomicU64,
}

impl Outbox {
    /// Spawns the delivery task on the current runtime, trusting the default roots;
    /// it ends when every `Outbox` clone is dropped and the queue is drained.
    pub fn spawn(capacity: usize) -> (Self, tokio::task::JoinHandle<()>) {
        Self::spawn_with(capacity, TcpConnector::new())
    }

    /// [`Outbox::spawn`] delivering through `connector` (the daemon's, from `[tls]`).
    pub fn spawn_with(
        capacity: usize,
        connector: TcpConnector,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Delivery>(capacity.max(1));
        let task = tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                match steadfast_core::http::send(&connector, &d.request, DELIVERY_TIMEOUT).await {
                    Ok(resp) if (200..300).contains(&resp.status) => {
                        tracing::debug!(target: "steadfast::notify", delivery = %d.label, status = resp.status, "delivered");
                    }
                    Ok(resp) => {
                        tracing::warn!(target: "steadfast::notify", delivery = %d.label, status = resp.status, "delivery refused");
                    }
                    Err(e) => {
                        tracing::warn!(target: "steadfast::notify", delivery = %d.label, kind = ?e.kind(), "delivery failed");
                    }
                }
            }
        });
        (
            Self {
                tx,
                dropped: AtomicU64::new(0),
            },
            task,
        )
    }

    /// Queues a delivery without waiting; `false` when the queue was full.
    pub fn offer(&self, d: Delivery) -> bool {
        match self.tx.try_send(d) {
            Ok(()) => true,
            Err(e) => {
                let label = match &e {
                    mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d) => {
                        d.label.clone()
                    }
                };
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "steadfast::notify", delivery = %label, "delivery queue full; dropped");
                false
            }
        }
    }

    /// Waits until the queue is empty, at most `within` (at shutdown, so alerts raised
    /// while stopping still go out; the one in flight may not finish).
    pub async fn drain(&self, within: Duration) {
        let _ = tokio::time::timeout(within, async {
            while self.tx.capacity() < self.tx.max_capacity() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Deliveries dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

type DedupKey = (AlertKind, Option<String>, Option<String>);

#[derive(Debug, Default)]
struct Gate {
    last_sent: BTreeMap<DedupKey, Instant>,
    sent_in_hour: VecDeque<Instant>,
    suppressed: u64,
}

/// Sends alerts to webhooks: deduplicated, rate-limited, in the background.
#[derive(Debug)]
pub struct Notifier {
    webhooks: Vec<Webhook>,
    dedup_window: Duration,
    max_per_hour: u32,
    outbox: std::sync::Arc<Outbox>,
    gate: Mutex<Gate>,
}

impl Notifier {
    /// A notifier for the configured webhooks.
    pub fn new(settings: &NotifySettings, outbox: std::sync::Arc<Outbox>) -> Self {
        Self {
            webhooks: settings.webhooks.clone(),
            dedup_window: settings.dedup_window,
            max_per_hour: settings.max_per_hour,
            outbox,
            gate: Mutex::new(Gate::default()),
        }
    }

    /// Alerts held back so far by dedup or the rate limit.
    pub fn suppressed(&self) -> u64 {
        self.lock().suppressed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `alert` may go out now; records it if so.
    fn admit(&self, alert: &Alert, now: Instant) -> bool {
        let mut g = self.lock();
        let hour = Duration::from_secs(3600);
        while g
            .sent_in_hour
            .front()
            .is_some_and(|t| now.duration_since(*t) >= hour)
        {
            g.sent_in_hour.pop_front();
        }
        let key = (alert.kind, alert.job.clone(), alert.service.clone());
        if let Some(last) = g.last_sent.get(&key)
            && now.duration_since(*last) < self.dedup_window
        {
            g.suppressed += 1;
            return false;
        }
        if g.sent_in_hour.len() >= self.max_per_hour as usize {
            g.suppressed += 1;
            return false;
        }
        if g.last_sent.len() >= MAX_DEDUP_KEYS {
            let window = self.dedup_window;
            g.last_sent.retain(|_, t| now.duration_since(*t) < window);
            if g.last_sent.len() >= MAX_DEDUP_KEYS {
                g.last_sent.clear();
            }
        }
        g.last_sent.insert(key, now);
        g.sent_in_hour.push_back(now);
        true
    }
}

impl AlertSink for Notifier {
    fn alert(&self, alert: Alert) {
        // The alert's text is the line's one `message` (a `message = ...` field next to
        // a format string gave the JSON line two `message` keys).
        tracing::error!(target: "steadfast::alert", event = "alert", kind = ?alert.kind, job = alert.job.as_deref(), service = alert.service.as_deref(), "{}", alert.message);
        if self.webhooks.is_empty() || !self.admit(&alert, Instant::now()) {
            return;
        }
        for (i, hook) in self.webhooks.iter().enumerate() {
            self.outbox.offer(Delivery {
                label: format!("webhook[{i}] {}", hook.format.as_str()),
                request: webhook_request(hook, &alert),
            });
        }
    }
}

fn summary(alert: &Alert) -> String {
    let subject = alert
        .job
        .as_deref()
        .or(alert.service.as_deref())
        .unwrap_or("runner");
    format!("{subject}: {}", alert.message)
}

/// The request one webhook gets for one alert.
pub fn webhook_request(hook: &Webhook, alert: &Alert) -> Request {
    let req = Request::new(Method::POST, hook.url.0.clone());
    match hook.format {
        WebhookFormat::Json => {
            let mut body = serde_json::to_value(alert).unwrap_or_default();
            if let Some(obj) = body.as_object_mut() {
                obj.insert("source".into(), "steadfast".into());
            }
            req.header("content-type", "application/json")
                .body(body.to_string())
        }
        WebhookFormat::Ntfy => {
            let priority = match alert.kind {
                AlertKind::Fatal | AlertKind::Overdue => "high",
                _ => "default",
            };
            req.header("content-type", "text/plain; charset=utf-8")
                .header("title", format!("steadfast: {}", alert.kind.as_str()))
                .header("priority", priority)
                .header("tags", "warning")
                .body(summary(alert))
        }
        WebhookFormat::Slack => {
            let text = format!("*steadfast* `{}` {}", alert.kind.as_str(), summary(alert));
            req.header("content-type", "application/json")
                .body(serde_json::json!({ "text": text }).to_string())
        }
    }
}

/// healthchecks.io-style pings per job, driven by the core's events: `<url>/start`
/// when a run starts, `<url>` when it succeeds, `<url>/fail` when it fails.
#[derive(Debug)]
pub struct Pinger {
    urls: BTreeMap<String, SecretUrl>,
    outbox: std::sync::Arc<Outbox>,
}

impl Pinger {
    /// Pings for these jobs.
    pub fn new(urls: BTreeMap<String, SecretUrl>, outbox: std::sync::Arc<Outbox>) -> Self {
        Self { urls, outbox }
    }

    /// The ping for one event, if it calls for one: (suffix, url).
    pub fn ping_for(&self, event: &Event) -> Option<(&'static str, Url)> {
        let job = event.job.as_deref()?;
        let base = &self.urls.get(job)?.0;
        let suffix = match (event.event, event.outcome) {
            (EventKind::RunStarted, _) => "/start",
            (EventKind::RunFinished, Some(Outcome::Succeeded | Outcome::Degraded)) => "",
            (EventKind::RunFinished, Some(Outcome::Failed | Outcome::Fatal)) => "/fail",
            _ => return None,
        };
        let mut url = base.clone();
        let (path, query) = match url.path_and_query.split_once('?') {
            Some((p, q)) => (p.to_string(), format!("?{q}")),
            None => (url.path_and_query.clone(), String::new()),
        };
        url.path_and_query = format!("{}{suffix}{query}", path.trim_end_matches('/'));
        if url.path_and_query.is_empty() || url.path_and_query.starts_with('?') {
            url.path_and_query = format!("/{}", url.path_and_query);
        }
        Some((suffix, url))
    }
}

impl EventSink for Pinger {
    fn emit(&self, event: Event) {
        if let Some((suffix, url)) = self.ping_for(&event) {
            let job = event.job.as_deref().unwrap_or_default();
            let what = if suffix.is_empty() {
                "/success"
            } else {
                suffix
            };
            self.outbox.offer(Delivery {
                label: format!("ping {job} {what}"),
                request: Request::new(Method::POST, url).body(
                    event
                        .detail
                        .clone()
                        .unwrap_or_default()
                        .chars()
                        .take(1000)
                        .collect::<String>(),
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Log lines written by a JSON subscriber, as the daemon configures it.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Issue 11: the alert log line had two `message` keys.
    #[tokio::test]
    async fn an_alert_log_line_has_one_message_key() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(move || writer.clone())
            .finish();
        let (outbox, _task) = Outbox::spawn(1);
        let notifier = Notifier::new(&NotifySettings::default(), Arc::new(outbox));
        tracing::subscriber::with_default(subscriber, || {
            notifier.alert(alert(AlertKind::Overdue, "clock"));
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line = text.lines().next().unwrap_or_default();
        assert_eq!(line.matches("\"message\":").count(), 1, "{line}");
        let json: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(json["message"], "no success for 2h");
        assert_eq!(json["event"], "alert");
        assert_eq!(json["job"], "clock");
    }

    fn alert(kind: AlertKind, job: &str) -> Alert {
        Alert {
            at: chrono::DateTime::UNIX_EPOCH,
            kind,
            job: Some(job.into()),
            service: None,
            message: "no success for 2h".into(),
        }
    }

    fn settings(max_per_hour: u32) -> NotifySettings {
        NotifySettings {
            webhooks: vec![Webhook {
                format: WebhookFormat::Json,
                url: SecretUrl(Url::parse("http://127.0.0.1:9/hook").unwrap()),
            }],
            dedup_window: Duration::from_secs(600),
            max_per_hour,
            pings: BTreeMap::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_alert_is_sent_once_per_dedup_window() {
        let (outbox, _task) = Outbox::spawn(8);
        let n = Notifier::new(&settings(100), Arc::new(outbox));
        let t0 = Instant::now();
        assert!(n.admit(&alert(AlertKind::Overdue, "a"), t0));
        assert!(!n.admit(
            &alert(AlertKind::Overdue, "a"),
            t0 + Duration::from_secs(60)
        ));
        assert!(n.admit(
            &alert(AlertKind::Overdue, "b"),
            t0 + Duration::from_secs(60)
        ));
        assert!(n.admit(&alert(AlertKind::Fatal, "a"), t0 + Duration::from_secs(60)));
        assert!(n.admit(
            &alert(AlertKind::Overdue, "a"),
            t0 + Duration::from_secs(601)
        ));
        assert_eq!(n.suppressed(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flapping_world_pages_at_most_max_per_hour() {
        let (outbox, _task) = Outbox::spawn(8);
        let n = Notifier::new(&settings(3), Arc::new(outbox));
        let t0 = Instant::now();
        let sent = (0..50)
            .filter(|i| n.admit(&alert(AlertKind::Fatal, &format!("job{i}")), t0))
            .count();
        // Without the gate all 50 distinct alerts would page.
        assert_eq!(sent, 3);
        assert!(n.admit(
            &alert(AlertKind::Fatal, "later"),
            t0 + Duration::from_secs(3600)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_instead_of_blocking() {
        // Not spawned: nothing drains the queue, as if the webhook hung forever.
        let (tx, _rx) = mpsc::channel(2);
        let outbox = Outbox {
            tx,
            dropped: AtomicU64::new(0),
        };
        let url = Url::parse("http://127.0.0.1:9/x").unwrap();
        for i in 0..5 {
            outbox.offer(Delivery {
                label: format!("d{i}"),
                request: Request::new(Method::POST, url.clone()),
            });
        }
        assert_eq!(outbox.dropped(), 3);
    }

    #[test]
    fn bodies_match_each_format_and_never_carry_the_url() {
        let a = alert(AlertKind::Overdue, "clock");
        for format in [
            WebhookFormat::Json,
            WebhookFormat::Ntfy,
            WebhookFormat::Slack,
        ] {
            let hook = Webhook {
                format,
                url: SecretUrl(Url::parse("https://hooks.example.com/T0/B0/SECRETPART").unwrap()),
            };
            let req = webhook_request(&hook, &a);
            let body = String::from_utf8(req.body.to_vec()).unwrap();
            assert!(body.contains("no success for 2h"), "{format:?}: {body}");
            assert!(!body.contains("SECRETPART"));
            match format {
                WebhookFormat::Json => {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    assert_eq!(v["kind"], "overdue");
                    assert_eq!(v["job"], "clock");
                }
                WebhookFormat::Slack => {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    assert!(v["text"].as_str().unwrap().contains("clock"));
                }
                WebhookFormat::Ntfy => {
                    assert!(
                        req.headers
                            .iter()
                            .any(|(k, v)| k == "priority" && v == "high")
                    );
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pings_follow_runs() {
        let (outbox, _task) = Outbox::spawn(8);
        let mut urls = BTreeMap::new();
        urls.insert(
            "clock".to_string(),
            SecretUrl(Url::parse("https://hc-ping.com/abc/").unwrap()),
        );
        let p = Pinger::new(urls, Arc::new(outbox));
        let started = Event::new(EventKind::RunStarted).job("clock");
        let ok = Event::new(EventKind::RunFinished)
            .job("clock")
            .outcome(Outcome::Succeeded);
        let bad = Event::new(EventKind::RunFinished)
            .job("clock")
            .outcome(Outcome::Failed);
        let other = Event::new(EventKind::RunStarted).job("other");
        let path = |e: &Event| p.ping_for(e).map(|(_, u)| u.path_and_query);
        assert_eq!(path(&started).as_deref(), Some("/abc/start"));
        assert_eq!(path(&ok).as_deref(), Some("/abc"));
        assert_eq!(path(&bad).as_deref(), Some("/abc/fail"));
        assert_eq!(path(&other), None);
    }
}
