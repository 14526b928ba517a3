//! Probes on their own clock: when an open breaker's cooldown ends, one cheap health
//! request (`GET health_url`) goes out then, through the breaker as its half-open
//! probe, instead of waiting for the next scheduled start to probe with real work.
//!
//! A schedule in step with a periodic outage (DNS failing 2 minutes of every 5, a job
//! every 15) would otherwise probe in the failing phase every time and grow the
//! cooldown to its cap; probing when the (jittered) cooldown ends decouples the probe
//! from the schedule. A run already waiting at the service's gate may take the probe
//! first; then this one finds the breaker half-open and does nothing. Services without
//! a `health_url` are probed by their next call, as before. With breakers off no
//! breaker ever opens and the prober only sleeps.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::env::Env;
use crate::heartbeat::HealthProbe;
use crate::http;
use crate::job::Services;

/// The longest the prober sleeps without looking again (a wall-clock jump is noticed
/// within it).
const SLICE: Duration = Duration::from_secs(60);

/// Runs until `halt` turns true.
pub(crate) async fn run<E: Env>(
    svc: Arc<Services<E>>,
    probes: Vec<HealthProbe>,
    mut halt: watch::Receiver<bool>,
) {
    if probes.is_empty() {
        return;
    }
    let env = svc.env.clone();
    loop {
        if *halt.borrow() {
            return;
        }
        let now = env.now();
        let next = probes
            .iter()
            .filter_map(|p| svc.breakers.open_until(&p.service).map(|u| (u, p)))
            .min_by_key(|(u, _)| *u);
        let sleep = match next {
            Some((until, probe)) if until <= now => {
                probe_one(&svc, probe).await;
                continue;
            }
            Some((until, _)) => (until - now).to_std().unwrap_or_default().min(SLICE),
            None => SLICE,
        };
        tokio::select! {
            biased;
            _ = halt.changed() => {}
            () = svc.breakers.tripped() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// One health request as `probe.service`'s half-open probe, if the breaker grants it.
async fn probe_one<E: Env>(svc: &Services<E>, probe: &HealthProbe) {
    let Ok(permit) = svc.breakers.try_acquire(&probe.service) else {
        return;
    };
    if !permit.is_probe() {
        // Closed meanwhile (another caller's probe succeeded): nothing to probe.
        return;
    }
    let req = http::Request::new(::http::Method::GET, probe.url.clone());
    let healthy = matches!(
        http::send(svc.env.connector(), &req, probe.timeout).await,
        Ok(resp) if (200..300).contains(&resp.status)
    );
    svc.breakers.record(permit, healthy).await;
    if let Some(until) = svc.breakers.open_until(&probe.service) {
        svc.gates.hold(&probe.service, until, "breaker_open").await;
    }
}
