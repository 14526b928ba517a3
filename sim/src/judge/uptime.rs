//! Uptime: the share of minutes in which every job was within its heartbeat threshold
//! of its last output at the services (or of a due time it owed nothing for, its
//! window being closed).

use chrono::{DateTime, Utc};

/// One job's alive marks (sorted) and its heartbeat threshold.
pub type Alive = (Vec<DateTime<Utc>>, chrono::Duration);

/// The share of whole minutes from `start` to `end` in which every job was up.
pub fn ratio(jobs: &[Alive], start: DateTime<Utc>, end: DateTime<Utc>) -> f64 {
    let mut cursors = vec![0usize; jobs.len()];
    let mut last = vec![start; jobs.len()];
    let step = chrono::Duration::minutes(1);
    let (mut up, mut total) = (0u64, 0u64);
    let mut t = start;
    while t < end {
        let mut all_up = true;
        for (i, (times, threshold)) in jobs.iter().enumerate() {
            while cursors[i] < times.len() && times[cursors[i]] <= t {
                last[i] = times[cursors[i]];
                cursors[i] += 1;
            }
            if t - last[i] > *threshold {
                all_up = false;
            }
        }
        total += 1;
        up += u64::from(all_up);
        t += step;
    }
    if total == 0 {
        1.0
    } else {
        up as f64 / total as f64
    }
}
