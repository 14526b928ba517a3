//! Every 429 the world answered (per-minute limits, daily quotas, storms alike), and
//! every call that arrived while a `Retry-After` the same service had advertised, to
//! any caller, was still running: from the moment that answer left the service until
//! the time it named.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::services::ledger::LedgerEntry;

/// A wait: from when the answer left the service until the time it named.
type Span = (DateTime<Utc>, DateTime<Utc>);

/// Requests answered 429.
pub fn too_many_requests(ledger: &[LedgerEntry]) -> u64 {
    ledger.iter().filter(|e| e.status == 429).count() as u64
}

/// Requests (health probes aside) that arrived inside a `Retry-After` their service
/// had advertised to anyone.
pub fn calls_inside_retry_after(ledger: &[LedgerEntry]) -> u64 {
    let mut waits: BTreeMap<Arc<str>, Vec<Span>> = BTreeMap::new();
    for e in ledger {
        if let Some(until) = e.retry_after_until.filter(|u| *u > e.answered_at) {
            waits
                .entry(e.service.clone())
                .or_default()
                .push((e.answered_at, until));
        }
    }
    // Merge each service's waits into disjoint spans, sorted by start.
    for spans in waits.values_mut() {
        spans.sort();
        let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
        for (from, until) in spans.drain(..) {
            match merged.last_mut() {
                Some(last) if from <= last.1 => last.1 = last.1.max(until),
                _ => merged.push((from, until)),
            }
        }
        *spans = merged;
    }
    ledger
        .iter()
        .filter(|e| !e.is_health_check())
        .filter(|e| {
            waits.get(&e.service).is_some_and(|spans| {
                let i = spans.partition_point(|(from, _)| *from < e.at);
                i > 0 && e.at < spans[i - 1].1
            })
        })
        .count() as u64
}
