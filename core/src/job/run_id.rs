//! The identity of a run: the job and the schedule slot (its due time) it runs.
//!
//! A run keeps its id across a resume, a restart and a catch-up, so idempotency keys
//! derived from it (and everything a service or a log reader matches runs by) stay the
//! same however often the run is picked up again. The text form is
//! `<job>-<YYYYMMDD>T<HHMMSS>Z`; job names may contain `-`, so it is parsed from the right.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};

/// The `strftime` form of the due time inside a run id.
const DUE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// A run: one slot of one job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId {
    job: String,
    due: DateTime<Utc>,
}

impl RunId {
    /// The run of `job` due at `due` (sub-second parts are dropped: slots are whole seconds).
    pub fn new(job: impl Into<String>, due: DateTime<Utc>) -> Self {
        let due = DateTime::from_timestamp(due.timestamp(), 0).unwrap_or(due);
        Self {
            job: job.into(),
            due,
        }
    }

    /// The job.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The slot's due time.
    pub fn due(&self) -> DateTime<Utc> {
        self.due
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.due;
        if !(0..=9999).contains(&d.year()) {
            // `%Y` signs years outside 0..=9999; the fast path below does not.
            return write!(f, "{}-{}", self.job, d.format(DUE_FORMAT));
        }
        // DUE_FORMAT written out field by field: parsing the format string on every
        // call was a visible share of the simulator's time (ids are formed per request).
        write!(
            f,
            "{}-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            self.job,
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        )
    }
}

/// Why a text is not a run id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a run id (hint: a run id reads <job>-<YYYYMMDD>T<HHMMSS>Z)")]
pub struct ParseRunIdError(String);

impl FromStr for RunId {
    type Err = ParseRunIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ParseRunIdError(text.chars().take(80).collect());
        let (job, due) = text.rsplit_once('-').ok_or_else(bad)?;
        if job.is_empty() {
            return Err(bad());
        }
        let due = NaiveDateTime::parse_from_str(due, DUE_FORMAT).map_err(|_| bad())?;
        Ok(Self::new(job, due.and_utc()))
    }
}

impl serde::Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_text_form_names_the_job_and_the_slot() {
        let due = Utc.with_ymd_and_hms(2026, 3, 2, 6, 30, 0).unwrap();
        let id = RunId::new("blog-publisher", due);
        assert_eq!(id.to_string(), "blog-publisher-20260302T063000Z");
        assert_eq!("blog-publisher-20260302T063000Z".parse::<RunId>(), Ok(id));
    }

    #[test]
    fn malformed_ids_are_refused_with_a_hint() {
        for bad in [
            "",
            "blog",
            "-20260302T063000Z",
            "blog-2026",
            "blog-20261302T063000Z",
        ] {
            let err = bad.parse::<RunId>().unwrap_err();
            assert!(err.to_string().contains("hint"), "{bad}: {err}");
        }
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(job in "[a-z][a-z0-9-]{0,30}", secs in 0i64..4_000_000_000) {
            let due = DateTime::from_timestamp(secs, 0).unwrap();
            let id = RunId::new(job, due);
            prop_assert_eq!(id.to_string().parse::<RunId>(), Ok(id));
        }

        #[test]
        fn display_writes_exactly_the_due_format(secs in -70_000_000_000i64..300_000_000_000) {
            let due = DateTime::from_timestamp(secs, 0).unwrap();
            let id = RunId::new("j", due);
            prop_assert_eq!(id.to_string(), format!("j-{}", due.format(DUE_FORMAT)));
        }
    }
}
