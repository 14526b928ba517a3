//! The field report as a list of blocks, built from a [`Study`]'s runs.
//!
//! Markdown and HTML render the same blocks, so the two files can never disagree. Cell
//! text uses a tiny inline syntax both renderers understand: `code` and **bold**.

use super::stats::Summary;
use super::svg::{self, Series};
use super::{RunSummary, Study, samples};

/// One piece of the report.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A heading of level 1-3.
    Heading(u8, String),
    /// A paragraph.
    Para(String),
    /// A bulleted list.
    Bullets(Vec<String>),
    /// A table.
    Table {
        /// Column titles.
        head: Vec<String>,
        /// Rows of cells.
        rows: Vec<Vec<String>>,
    },
    /// SVG charts shown together under a caption (HTML only; Markdown points at the HTML).
    Charts(String, Vec<String>),
}

/// How a measure is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A share, printed as a percentage.
    Share,
    /// A count.
    Count,
    /// Hours.
    Hours,
}

/// Which way is better for a measure (`None`: neither, e.g. calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Smaller is better.
    Lower,
    /// Larger is better.
    Higher,
    /// A measure of activity, not quality.
    Neither,
}

/// A measure of [`crate::metrics::Metrics`], by its JSON name, with how to show it.
#[derive(Debug, Clone, Copy)]
pub struct MeasureDef {
    /// The field's JSON name.
    pub key: &'static str,
    /// Its label in tables.
    pub label: &'static str,
    /// How it is printed.
    pub unit: Unit,
    /// Which way is better.
    pub better: Better,
}

const fn m(key: &'static str, label: &'static str, unit: Unit, better: Better) -> MeasureDef {
    MeasureDef {
        key,
        label,
        unit,
        better,
    }
}

/// Every measure in report order (fields not listed are appended by name).
pub const MEASURES: [MeasureDef; 23] = [
    m(
        "lost_task_rate",
        "lost-task rate",
        Unit::Share,
        Better::Lower,
    ),
    m("uptime_ratio", "uptime", Unit::Share, Better::Higher),
    m(
        "manual_interventions",
        "manual interventions",
        Unit::Count,
        Better::Lower,
    ),
    m(
        "hours_between_interventions",
        "hours between interventions",
        Unit::Hours,
        Better::Higher,
    ),
    m(
        "rate_limit_violations",
        "rate-limit violations",
        Unit::Count,
        Better::Lower,
    ),
    m(
        "calls_inside_retry_after",
        "calls inside a Retry-After",
        Unit::Count,
        Better::Lower,
    ),
    m(
        "unmet_prerequisites",
        "writes before the steps they need (`needs`)",
        Unit::Count,
        Better::Lower,
    ),
    m(
        "token_expired_errors",
        "calls with an expired token",
        Unit::Count,
        Better::Lower,
    ),
    m("silent_deaths", "silent deaths", Unit::Count, Better::Lower),
    m(
        "silent_deaths_detected",
        "silent deaths detected",
        Unit::Count,
        Better::Higher,
    ),
    m(
        "duplicate_side_effects",
        "duplicate side effects",
        Unit::Count,
        Better::Lower,
    ),
    m(
        "window_violations",
        "actions outside their window",
        Unit::Count,
        Better::Lower,
    ),
    m(
        "calls_to_open_breaker",
        "calls to an open breaker",
        Unit::Count,
        Better::Lower,
    ),
    m(
        "scheduled_runs",
        "scheduled runs",
        Unit::Count,
        Better::Neither,
    ),
    m(
        "succeeded_runs",
        "succeeded runs",
        Unit::Count,
        Better::Higher,
    ),
    m(
        "degraded_runs",
        "degraded runs",
        Unit::Count,
        Better::Neither,
    ),
    // Fewer failed runs is not better by itself: without alerts they become lost runs.
    m(
        "failed_runs",
        "failed runs (a human was told)",
        Unit::Count,
        Better::Neither,
    ),
    m(
        "lost_runs",
        "lost runs (nobody was told)",
        Unit::Count,
        Better::Lower,
    ),
    // Not better or worse: a world's sleeps and restarts decide them, not the runner.
    m(
        "host_away_runs",
        "runs missed while the host was away (asleep or down)",
        Unit::Count,
        Better::Neither,
    ),
    m(
        "calls",
        "calls that reached an API",
        Unit::Count,
        Better::Neither,
    ),
    m("retries", "retries", Unit::Count, Better::Neither),
    m(
        "token_refreshes",
        "token refreshes",
        Unit::Count,
        Better::Neither,
    ),
    m("runner_starts", "runner starts", Unit::Count, Better::Lower),
];

/// What each ablation profile switches off, in words.
pub fn pattern_of(profile: &str) -> Option<&'static str> {
    Some(match profile {
        "no-retry" => "retry with exponential backoff (pattern 1)",
        "no-jitter" => "jitter on backoff (pattern 1)",
        "no-budget" => "the per-service retry budget (pattern 1)",
        "no-proactive-refresh" => "proactive token refresh (pattern 2)",
        "no-heartbeat" => "the heartbeat monitor and its alerts (pattern 3)",
        "no-isolation" => "per-job isolation and graceful degradation (pattern 4)",
        "no-checkpoints" => "checkpoints and idempotency keys (pattern 5)",
        "no-windows" => "time-aware execution windows (pattern 6)",
        "no-breakers" => "circuit breakers (pattern 7)",
        "no-contracts" => "output contracts: a 2xx that breaks `expect` is a failure (pattern 4)",
        "no-needs" => "step dependencies (`needs`) (pattern 4)",
        "no-gates" => {
            "per-service gates: one Retry-After, quota or open breaker holds every job (pattern 1)"
        }
        "no-probes" => "breaker probes on their own clock (pattern 7)",
        "no-wall-clock" => "wall-clock schedule with wake detection (pattern 3)",
        _ => return None,
    })
}

/// The definitions of the measures, as the report states them.
pub const DEFINITIONS: [&str; 14] = [
    "**The judge**: every measure but silent deaths, retries and calls to an open breaker is computed from what the world's services saw (a ledger of every request: time, client, token age, answer, Retry-After, side effect), the operator's inbox and the scenario's intended configuration, with the judge's own schedule and window references: never from the runner's events or code.",
    "**Slot**: a due time of a job's schedule inside the world, leaving out times when some step of the job may not run because its time window is closed (that work is not wanted then, whatever the profile).",
    "A slot **produced output** when the services applied the side effects of its job's writing steps for it (`succeeded`; `degraded` when only some were; a job that only reads: its last read answered 2xx), whatever the runner logged. Requests name their run (`{\"run\": \"<job>-<due>\"}` in the body), so a retry that spills past the next slot still counts for its own slot; a run that waited for its window counts for the slot it finished in.",
    "**Missed while the host was away**: a slot without output due while the runner's host was asleep or crashed by the world until the restart the world scheduled (not the runner's own deaths: a silent death, an OOM kill or an exit counts against it), unless the job's catch-up policy owed a run for it on the host's return: under `catch_up = \"latest\"` the last due time at or before the return (a slot due at that very instant is an ordinary slot), under `all` every slot within `catch_up_window` of the return (the newest 32), under `none` none. No runner runs anything while its host cannot, so these are neither failed nor lost; an owed catch-up without output is judged like any slot, so a silent skip still counts as lost, and a burst of every slept slot shows in the services' per-minute calls.",
    "**Failed run**: a slot without output about which an alert (for the job or the whole runner) reached the operator between the job's last output the runner heard of (a request that did work and whose answer reached the process that sent it: no restart or sleep while it was on its way) and one heartbeat threshold after the next slot. Output applied after its caller died does not end what the operator was told: no runner could report it as a recovery.",
    "**Lost run**: a slot without output that nobody was told about. **Lost-task rate** = lost runs / scheduled slots: the field report's \"ran but produced no output due to silent failures\".",
    "**Uptime**: the share of minutes in which every job is within its heartbeat threshold of its last output at the services (or of a slot its window left out).",
    "**Manual intervention**: the simulated operator fixing something (freeing disk, re-authorising a credential, restarting the runner), either after an alert (with the scenario's response delay) or at a daily check that finds the runner dead or a job without output. An alert about a problem that already healed is dismissed and is not an intervention. **Hours between interventions** = simulated hours / interventions (the whole run when there were none): the field report's \"uptime before manual intervention\". **Manual fixes per day** = interventions / simulated days.",
    "**Rate-limit violations**: every 429 the world answered (per-minute limit, daily quota, injected storm). Per day = violations / simulated days. **Calls inside a Retry-After**: requests that reached a service while a `Retry-After` it had advertised (to any caller) was still running.",
    "**Calls with an expired token**: requests an API rejected because the bearer token had expired.",
    "**Silent deaths**: the runner process dying without a word (injected), plus runs that started and neither finished nor were cut short by a restart within twice their deadline (hung). **Detected** when a supervisor restarted the process within a minute or an alert followed within the heartbeat threshold plus two monitor intervals.",
    "**Duplicate side effects**: the same service, method, path and body (or idempotency key) applied more than once. **Actions outside their window**: requests of windowed steps that the service carried out while the window was closed on the world's wall clock. **Calls to an open breaker**: requests that reached a service while the runner's breaker for it was open.",
    "**Health timeline** (chart): per job, sampled every 5 minutes: *down* when the runner process is not running or the job is past its heartbeat threshold without output; *failing* when the job's last finished run produced nothing; *ok* otherwise.",
    "**429 answers per day** (chart): every 429 the world answered (per-minute limit, daily quota and injected storms), by simulated day (24 h from the world's start).",
];

fn fmt_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Share => format!("{:.2}%", v * 100.0),
        Unit::Hours => {
            if v >= 100.0 {
                format!("{v:.0} h")
            } else {
                format!("{v:.1} h")
            }
        }
        Unit::Count => {
            if v == v.trunc() || v.abs() >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        }
    }
}

/// `mean ± sd (min-max)` for several seeds, the value alone for one.
pub fn fmt_summary(s: &Summary, unit: Unit) -> String {
    if s.n == 0 {
        return "n/a".into();
    }
    if s.n == 1 || s.is_constant() {
        return fmt_value(s.mean, unit);
    }
    let sd = match unit {
        Unit::Share => format!("{:.2}", s.stddev * 100.0),
        _ => fmt_value(s.stddev, Unit::Count),
    };
    format!(
        "{} ± {sd} ({}–{})",
        fmt_value(s.mean, unit),
        fmt_value(s.min, unit),
        fmt_value(s.max, unit)
    )
}

/// The value as the mean-only ablation table prints it.
pub fn fmt_mean(s: &Summary, unit: Unit) -> String {
    if s.n == 0 {
        "n/a".into()
    } else {
        fmt_value(s.mean, unit)
    }
}

fn per_day(runs: &[&RunSummary], f: impl Fn(&RunSummary) -> f64) -> Summary {
    Summary::of(
        &runs
            .iter()
            .map(|r| f(r) / r.days.max(1e-9))
            .collect::<Vec<_>>(),
    )
}

fn measure(runs: &[&RunSummary], key: &str) -> Summary {
    Summary::of(samples(runs).get(key).map_or(&[][..], |v| v.as_slice()))
}

/// Builds the whole report.
pub fn build(study: &Study) -> Vec<Block> {
    let mut out = Vec::new();
    let o = &study.options;
    let s = &o.scenario;
    let file = s.file.as_ref().map_or_else(
        || "the embedded default scenario".to_string(),
        |f| format!("`{}`", f.display()),
    );
    let days = s.world.duration.as_secs_f64() / 86_400.0;
    let seeds = o
        .seeds
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    out.push(Block::Heading(1, "The field report, reproduced".into()));
    out.push(Block::Para(format!(
        "Every number below comes from simulation runs of the unchanged runner core in the deterministic world of {file} ({days:.0} simulated days, {} jobs, {} fault entries), \
         run under each profile on seeds {seeds}. The field report's own numbers are quoted as the author gave them; nothing else is typed in.",
        s.config.jobs.len(),
        s.faults.len()
    )));
    out.push(Block::Bullets(vec![
        format!("Command: `{}`", o.command),
        format!("Commit: `{}`", o.commit),
        format!("Scenario: {file}; jitter experiment: `{}`", study.jitter.as_ref().map_or("not run", |j| j.file.as_str())),
        format!("Seeds: {seeds} ({} per profile); profiles: {}", o.seeds.len(), o.profiles.iter().map(|p| format!("`{}`", p.name)).collect::<Vec<_>>().join(", ")),
        "Spread: `mean ± sample standard deviation (min–max)` over the seeds; one value when every seed agreed.".into(),
        format!("Reproduce one run: `sim run {} --profile <profile> --seed <seed>`", s.file.as_ref().map_or("scenarios/default.toml".to_string(), |f| f.display().to_string())),
    ]));
    before_after(study, &mut out);
    fit_and_prediction(study, &mut out);
    ablation(study, &mut out);
    jitter_section(study, &mut out);
    charts(study, &mut out);
    out.push(Block::Heading(2, "Definitions".into()));
    out.push(Block::Para(
        "The measures are computed after each run from the runner's event trace and the simulated services' own records (`sim/src/metrics.rs`):".into(),
    ));
    out.push(Block::Bullets(
        DEFINITIONS.iter().map(|d| d.to_string()).collect(),
    ));
    out
}

/// The fit (naive vs the report's "before" column, which `sim calibrate` fitted the
/// world's unstated rates to) and the prediction (self-healing vs the "after" column,
/// never fitted), each with its seed spread and a verdict with its reason.
fn fit_and_prediction(study: &Study, out: &mut Vec<Block>) {
    use crate::calibrate::{
        AFTER, BEFORE, CRASH_COUNTS, CRASH_DEFINITION, Measures, TOLERANCE, compare, describe,
        spread,
    };
    let naive: Vec<Measures> = study.runs_of("naive").iter().map(|r| r.field).collect();
    let healing: Vec<Measures> = study
        .runs_of("self-healing")
        .iter()
        .map(|r| r.field)
        .collect();
    if naive.is_empty() || healing.is_empty() {
        return;
    }
    out.push(Block::Heading(3, "Fit and prediction".into()));
    out.push(Block::Para(format!(
        "The world's rates the field report does not state ([calibration]: {}) were fitted by `sim calibrate` to the report's before column only, with the naive profile. \
         The naive column is therefore a fit (met within ±{:.0}% of the report's figure); the self-healing column is a prediction on the same world, never fitted. \
         Definitions: {CRASH_DEFINITION}. The other ways of counting crashes are shown below the fit, not fitted. Rate-limit violations are every 429 a service answered.",
        describe(&study.options.scenario.calibration),
        TOLERANCE * 100.0
    )));
    let verdict = |row: &crate::calibrate::Row| match &row.reason {
        None => "met".to_string(),
        Some(why) => format!("**missed**: {why}"),
    };
    for (title, figures, runs, column) in [
        ("fit", &BEFORE[..], &naive, "naive"),
        (
            "other crash counts (not fitted)",
            &CRASH_COUNTS[..],
            &naive,
            "naive",
        ),
        ("prediction", &AFTER[..], &healing, "self-healing"),
    ] {
        out.push(Block::Table {
            head: vec![
                "figure".to_string(),
                format!(
                    "field report ({})",
                    if title == "prediction" {
                        "after"
                    } else {
                        "before"
                    }
                ),
                format!("measured: `{column}`"),
                title.to_string(),
            ],
            rows: compare(figures, runs)
                .iter()
                .map(|row| {
                    vec![
                        row.figure.name.to_string(),
                        row.figure.quote.to_string(),
                        spread(row),
                        verdict(row),
                    ]
                })
                .collect(),
        });
    }
}

fn before_after(study: &Study, out: &mut Vec<Block>) {
    out.push(Block::Heading(2, "1. Before and after".into()));
    let naive = study.runs_of("naive");
    let healing = study.runs_of("self-healing");
    if naive.is_empty() || healing.is_empty() {
        out.push(Block::Para(
            "Not run: the study needs both the `naive` and `self-healing` profiles.".into(),
        ));
        return;
    }
    let head = vec![
        "measure".to_string(),
        "field report: before".into(),
        "field report: after".into(),
        "measured: `naive`".into(),
        "measured: `self-healing`".into(),
    ];
    let hbi = |runs: &[&RunSummary]| {
        if runs.iter().all(|r| r.metrics.manual_interventions == 0) {
            format!("no intervention in {:.0} days (every seed)", runs[0].days)
        } else {
            fmt_summary(&measure(runs, "hours_between_interventions"), Unit::Hours)
        }
    };
    let row = |label: &str, before: &str, after: &str, n: String, h: String| {
        vec![
            label.to_string(),
            before.to_string(),
            after.to_string(),
            n,
            h,
        ]
    };
    let mut rows = vec![
        row(
            "uptime before manual intervention (hours between interventions)",
            "6 h",
            "3+ weeks (≥ 504 h)",
            hbi(&naive),
            hbi(&healing),
        ),
        row(
            "manual fixes per day",
            "3–5",
            "~1 per week (≈ 0.14)",
            fmt_summary(
                &per_day(&naive, |r| r.metrics.manual_interventions as f64),
                Unit::Count,
            ),
            fmt_summary(
                &per_day(&healing, |r| r.metrics.manual_interventions as f64),
                Unit::Count,
            ),
        ),
        row(
            "lost tasks (lost-task rate)",
            "~30%",
            "< 2%",
            fmt_summary(&measure(&naive, "lost_task_rate"), Unit::Share),
            fmt_summary(&measure(&healing, "lost_task_rate"), Unit::Share),
        ),
        row(
            "rate-limit violations per day",
            "~12",
            "~1 per week (≈ 0.14)",
            fmt_summary(
                &per_day(&naive, |r| r.metrics.rate_limit_violations as f64),
                Unit::Count,
            ),
            fmt_summary(
                &per_day(&healing, |r| r.metrics.rate_limit_violations as f64),
                Unit::Count,
            ),
        ),
        row(
            "silent deaths detected (of silent deaths)",
            "",
            "3 caught by heartbeats in the first week",
            deaths(&naive),
            deaths(&healing),
        ),
        row(
            "calls with an expired token",
            "",
            "",
            fmt_summary(&measure(&naive, "token_expired_errors"), Unit::Count),
            fmt_summary(&measure(&healing, "token_expired_errors"), Unit::Count),
        ),
        row(
            "uptime (every job within its heartbeat threshold)",
            "",
            "",
            fmt_summary(&measure(&naive, "uptime_ratio"), Unit::Share),
            fmt_summary(&measure(&healing, "uptime_ratio"), Unit::Share),
        ),
    ];
    if study.has("no-proactive-refresh") {
        let without = study.runs_of("no-proactive-refresh");
        let bad = |runs: &[&RunSummary]| {
            Summary::of(
                &runs
                    .iter()
                    .map(|r| (r.metrics.failed_runs + r.metrics.lost_runs) as f64)
                    .collect::<Vec<_>>(),
            )
            .mean
        };
        let (w, h) = (bad(&without), bad(&healing));
        let removed = if w > 0.0 {
            format!(
                "{:.0}% (failed + lost runs: {w:.1} without it, {h:.1} with it)",
                (1.0 - h / w) * 100.0
            )
        } else {
            "no failures to remove (none without it either)".into()
        };
        rows.push(row(
            "failures removed by proactive token refresh",
            "",
            "~80%",
            "".into(),
            removed,
        ));
    }
    let held = |runs: &[&RunSummary]| {
        format!(
            "{} of {}",
            runs.iter().filter(|r| r.exit_code == 0).count(),
            runs.len()
        )
    };
    rows.push(row(
        "seeds where every invariant and liveness held",
        "",
        "",
        held(&naive),
        held(&healing),
    ));
    out.push(Block::Table { head, rows });
    // The targets, checked against the measured means.
    let nl = measure(&naive, "lost_task_rate").mean;
    let nh = measure(&naive, "hours_between_interventions").mean;
    let hl = measure(&healing, "lost_task_rate").mean;
    let yes = |ok: bool| if ok { "met" } else { "**missed**" };
    out.push(Block::Bullets(vec![
        format!(
            "Target: naive lost-task rate ≥ 15%: {} (mean {:.2}%).",
            yes(nl >= 0.15),
            nl * 100.0
        ),
        format!(
            "Target: naive hours between interventions ≤ 24: {} (mean {nh:.1} h).",
            yes(nh <= 24.0)
        ),
        format!(
            "Target: self-healing lost-task rate ≤ 2%: {} (mean {:.2}%).",
            yes(hl <= 0.02),
            hl * 100.0
        ),
    ]));
}

fn deaths(runs: &[&RunSummary]) -> String {
    let d: u64 = runs.iter().map(|r| r.metrics.silent_deaths).sum();
    let det: u64 = runs.iter().map(|r| r.metrics.silent_deaths_detected).sum();
    format!("{det} of {d} over {} seeds", runs.len())
}

/// The measure that moved most between self-healing and an ablation, normalised by a
/// floor per unit so that 0 -> 3 counts and 1% -> 4% compare sensibly.
fn biggest_change(
    healing: &[&RunSummary],
    ablated: &[&RunSummary],
) -> Option<(MeasureDef, Summary, Summary)> {
    let mut best: Option<(f64, MeasureDef, Summary, Summary)> = None;
    for def in MEASURES.iter().filter(|d| d.better != Better::Neither) {
        let h = measure(healing, def.key);
        let a = measure(ablated, def.key);
        let floor = match def.unit {
            Unit::Share => 0.01,
            Unit::Count => 1.0,
            Unit::Hours => 24.0,
        };
        let score = (a.mean - h.mean).abs() / h.mean.abs().max(floor);
        if score > 1e-9 && best.as_ref().is_none_or(|b| score > b.0) {
            best = Some((score, *def, h, a));
        }
    }
    best.map(|(_, d, h, a)| (d, h, a))
}

fn ablation(study: &Study, out: &mut Vec<Block>) {
    out.push(Block::Heading(
        2,
        "2. Ablation: self-healing with one pattern off".into(),
    ));
    let healing = study.runs_of("self-healing");
    let ablations: Vec<&str> = study
        .options
        .profiles
        .iter()
        .map(|p| p.name)
        .filter(|n| pattern_of(n).is_some())
        .collect();
    if healing.is_empty() || ablations.is_empty() {
        out.push(Block::Para(
            "Not run: the study needs `self-healing` and at least one `no-*` profile.".into(),
        ));
        return;
    }
    out.push(Block::Para(format!(
        "Means over {} seed(s). Each column is `self-healing` with one pattern switched off.",
        study.options.seeds.len()
    )));
    let mut head = vec!["measure".to_string(), "`self-healing`".into()];
    head.extend(ablations.iter().map(|a| format!("`{a}`")));
    let mut columns: Vec<Vec<&RunSummary>> = vec![healing.clone()];
    columns.extend(ablations.iter().map(|a| study.runs_of(a)));
    let mut rows: Vec<Vec<String>> = MEASURES
        .iter()
        .map(|def| {
            let mut row = vec![def.label.to_string()];
            row.extend(
                columns
                    .iter()
                    .map(|runs| fmt_mean(&measure(runs, def.key), def.unit)),
            );
            row
        })
        .collect();
    // A measure added to `Metrics` later still shows up, by its name.
    if let Some(first) = healing.first() {
        for key in samples(&[first])
            .keys()
            .filter(|k| !MEASURES.iter().any(|d| d.key == k.as_str()))
        {
            let mut row = vec![format!("`{key}`")];
            row.extend(
                columns
                    .iter()
                    .map(|runs| fmt_mean(&measure(runs, key), Unit::Count)),
            );
            rows.push(row);
        }
    }
    out.push(Block::Table { head, rows });
    out.push(Block::Heading(3, "What each pattern buys".into()));
    let mut bullets = Vec::new();
    for a in &ablations {
        let runs = study.runs_of(a);
        let pattern = pattern_of(a).unwrap_or(a);
        let sentence = match biggest_change(&healing, &runs) {
            None => format!(
                "**{pattern}** (`{a}`): no measurable effect in this world; no measure moved."
            ),
            Some((def, h, without)) => {
                let worse = match def.better {
                    Better::Lower => without.mean > h.mean,
                    Better::Higher => without.mean < h.mean,
                    Better::Neither => false,
                };
                let noise = study.options.seeds.len() > 1
                    && (without.mean - h.mean).abs() <= h.stddev + without.stddev;
                let (with_it, without_it) = (fmt_mean(&h, def.unit), fmt_mean(&without, def.unit));
                if noise {
                    format!(
                        "**{pattern}** (`{a}`): no effect beyond seed noise in this world; the biggest change, in {} ({with_it} with it, {without_it} without it), is within the seed spread.",
                        def.label
                    )
                } else if worse {
                    format!(
                        "**{pattern}** (`{a}`) buys most in {}: {with_it} with it, {without_it} without it.",
                        def.label
                    )
                } else {
                    format!(
                        "**{pattern}** (`{a}`): the biggest change is in {}, and switching it off *improved* it ({with_it} with it, {without_it} without it): in this world the pattern costs more there than it buys.",
                        def.label
                    )
                }
            }
        };
        bullets.push(sentence);
    }
    out.push(Block::Bullets(bullets));
    showcase_table(study, out);
}

/// Where each pattern shows: its focused world, the measure, both ways over the seeds.
fn showcase_table(study: &Study, out: &mut Vec<Block>) {
    out.push(Block::Heading(3, "Where each pattern shows".into()));
    if study.showcase.is_empty() {
        out.push(Block::Para(
            "Not run in this study (each pattern's focused world: `sim/src/study/showcase.rs`)."
                .into(),
        ));
        return;
    }
    out.push(Block::Para(format!(
        "This world is a mix in which some patterns have no room to act. Each pattern also has a committed focused world in which switching it off costs something the judge measures; each is run with `self-healing` and with the pattern off on seeds {} (`mean ± sd (min–max)`). **Beyond the spread** means every seed without the pattern is worse than every seed with it. `tests/tests/ablation.rs` asserts each claim.",
        study
            .options
            .seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )));
    let head = [
        "pattern",
        "world",
        "measure",
        "with it",
        "without it",
        "beyond the spread",
        "why",
    ]
    .map(String::from)
    .to_vec();
    let rows = study
        .showcase
        .iter()
        .map(|r| {
            let row = r.showcase;
            let pattern = format!("`{}`", row.profile);
            match row.shown {
                None => vec![
                    pattern,
                    "none".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                    "cannot be shown".into(),
                    row.note.into(),
                ],
                Some(shown) => {
                    let unit = MEASURES
                        .iter()
                        .find(|d| d.key == shown.measure)
                        .map_or(Unit::Count, |d| d.unit);
                    vec![
                        pattern,
                        format!("`{}`", shown.file),
                        format!("`{}`", shown.measure),
                        fmt_summary(&Summary::of(&r.with), unit),
                        fmt_summary(&Summary::of(&r.without), unit),
                        if r.beyond_spread() { "yes" } else { "**no**" }.into(),
                        row.note.into(),
                    ]
                }
            }
        })
        .collect();
    out.push(Block::Table { head, rows });
}

fn jitter_section(study: &Study, out: &mut Vec<Block>) {
    out.push(Block::Heading(2, "3. The jitter experiment".into()));
    let Some(j) = &study.jitter else {
        out.push(Block::Para("Not run in this study.".into()));
        return;
    };
    out.push(Block::Para(format!(
        "{} jobs share one rate-limited API (`{}`) and are all due at the same instants; {} times per run a 503 burst starts at such an instant so they all fail together. \
         Each mode is `self-healing` with only the backoff jitter changed, over {} simulated day(s) and {} seed(s). \
         **Calls** counts every attempt the jobs made (the trace's `attempt` events, including those the burst failed); **time to finish** is, per burst, the time from its onset until every job has finished a run `succeeded` (over every burst of every seed).",
        j.jobs,
        j.file,
        j.bursts,
        j.days,
        study.options.seeds.len()
    )));
    let summaries = j.summaries();
    let head = vec![
        "jitter".to_string(),
        "calls".into(),
        "retries".into(),
        "rate-limit violations".into(),
        "time to finish (s)".into(),
        "steps that gave up".into(),
        "bursts not finished before the next".into(),
    ];
    let rows = summaries
        .iter()
        .map(|s| {
            vec![
                format!("`{}`", s.mode),
                fmt_summary(&s.calls, Unit::Count),
                fmt_summary(&s.retries, Unit::Count),
                fmt_summary(&s.rate_limit_violations, Unit::Count),
                fmt_summary(&s.finish_seconds, Unit::Count),
                format!(
                    "{}{}",
                    fmt_summary(&s.gave_up, Unit::Count),
                    if s.gave_up_reasons.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (all seeds: {})",
                            s.gave_up_reasons
                                .iter()
                                .map(|(k, v)| format!("{k} {v}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ),
                s.unfinished.to_string(),
            ]
        })
        .collect();
    out.push(Block::Table { head, rows });
    if summaries.iter().all(|s| s.calls.n > 0) {
        let by = |f: &dyn Fn(&super::jitter::ModeSummary) -> f64, max: bool| {
            let mut v: Vec<_> = summaries.iter().map(|s| (f(s), s.mode)).collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            if max {
                v.last().copied()
            } else {
                v.first().copied()
            }
        };
        let fewest = by(&|s| s.calls.mean, false);
        let most = by(&|s| s.calls.mean, true);
        let most_rl = by(&|s| s.rate_limit_violations.mean, true);
        let slowest = by(&|s| s.finish_seconds.mean, true);
        let fastest = by(&|s| s.finish_seconds.mean, false);
        let name = |x: Option<(f64, &str)>| x.map_or("n/a".to_string(), |(_, n)| format!("`{n}`"));
        let aws_worst = most.is_some_and(|m| m.1 == "none");
        let aws_full = fewest.is_some_and(|m| m.1 == "full");
        let verdict = match (aws_worst, aws_full) {
            (true, true) => {
                "This matches AWS's result: no jitter does the most work and full jitter the least."
                    .to_string()
            }
            (true, false) => format!(
                "This partly matches AWS's result: no jitter does the most work, but {} (not full jitter) made the fewest calls.",
                name(fewest)
            ),
            (false, true) => format!(
                "This partly matches AWS's result: full jitter made the fewest calls, but {} (not no jitter) made the most.",
                name(most)
            ),
            (false, false) => format!(
                "This differs from AWS's result (no jitter worst, full jitter fewest calls): here {} made the most calls and {} the fewest.",
                name(most),
                name(fewest)
            ),
        };
        let mut text = format!(
            "Measured: fewest calls {}, most calls {}; most rate-limit violations {}; fastest to finish {}, slowest {}. {verdict}",
            name(fewest),
            name(most),
            name(most_rl),
            name(fastest),
            name(slowest)
        );
        if summaries.iter().any(|s| s.gave_up.mean > 0.0) {
            let gave_up = summaries
                .iter()
                .map(|s| format!("`{}` {:.1}", s.mode, s.gave_up.mean))
                .collect::<Vec<_>>()
                .join(", ");
            text.push_str(&format!(
                " Steps that gave up per run (mean): {gave_up}. A step that gives up (attempts spent, or past the run's deadline) leaves its job to its next slot, \
                 so where give-ups happen they, not the spacing of retries, set the time to finish: a mode whose early delays are shorter spends its attempts inside the burst."
            ));
        }
        out.push(Block::Para(text));
    }
}

fn per_day_series(
    runs: &[&RunSummary],
    f: impl Fn(&super::DayCounts) -> u64,
) -> (Vec<f64>, Vec<(f64, f64)>) {
    let days = runs.iter().map(|r| r.per_day.len()).max().unwrap_or(0);
    let mut means = Vec::new();
    let mut ranges = Vec::new();
    for d in 0..days {
        let v: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.per_day.get(d))
            .map(|c| f(c) as f64)
            .collect();
        let s = Summary::of(&v);
        means.push(s.mean);
        ranges.push((s.min, s.max));
    }
    (means, ranges)
}

fn charts(study: &Study, out: &mut Vec<Block>) {
    out.push(Block::Heading(
        2,
        "4. Charts: naive and self-healing side by side".into(),
    ));
    let naive = study.runs_of("naive");
    let healing = study.runs_of("self-healing");
    if naive.is_empty() || healing.is_empty() {
        out.push(Block::Para(
            "Not drawn: the study needs both `naive` and `self-healing`.".into(),
        ));
        return;
    }
    out.push(Block::Para(
        "The charts are in `field-report.html` next to this file. Per-day means over the seeds (bars), with the min–max over seeds as a whisker; the health timeline shows the first seed.".into(),
    ));
    let first = study.options.seeds.first().copied().unwrap_or(1);
    let mut timelines = Vec::new();
    for runs in [&naive, &healing] {
        if let Some(r) = runs.iter().find(|r| r.seed == first) {
            timelines.push(svg::timeline(
                &format!("Per-job health, {} (seed {})", r.profile, r.seed),
                r.days * 24.0,
                &r.health,
            ));
        }
    }
    out.push(Block::Charts(
        "Per-job health over the world: naive, then self-healing".into(),
        timelines,
    ));
    let days = naive
        .iter()
        .chain(healing.iter())
        .map(|r| r.per_day.len())
        .max()
        .unwrap_or(0);
    let cats: Vec<String> = (1..=days).map(|d| d.to_string()).collect();
    let series = |f: &dyn Fn(&super::DayCounts) -> u64| {
        let (nm, nr) = per_day_series(&naive, f);
        let (hm, hr) = per_day_series(&healing, f);
        vec![
            Series {
                name: "naive".into(),
                color: "#d32f2f".into(),
                values: nm,
                ranges: Some(nr),
            },
            Series {
                name: "self-healing".into(),
                color: "#2e7d32".into(),
                values: hm,
                ranges: Some(hr),
            },
        ]
    };
    let lost = series(&|c| c.lost);
    let limited = series(&|c| c.rate_limited);
    out.push(Block::Charts(
        "Lost tasks and 429 answers per simulated day".into(),
        vec![
            svg::bar_chart("Lost tasks per day", "lost runs", &cats, &lost),
            svg::bar_chart("429 answers per day", "429 answers", &cats, &limited),
        ],
    ));
    // The same numbers as a table, for readers of the Markdown.
    let head = vec![
        "day".to_string(),
        "lost: naive".into(),
        "lost: self-healing".into(),
        "429s: naive".into(),
        "429s: self-healing".into(),
    ];
    let f1 = |v: f64| fmt_value(v, Unit::Count);
    let rows = (0..days)
        .map(|d| {
            vec![
                (d + 1).to_string(),
                f1(lost[0].values.get(d).copied().unwrap_or(0.0)),
                f1(lost[1].values.get(d).copied().unwrap_or(0.0)),
                f1(limited[0].values.get(d).copied().unwrap_or(0.0)),
                f1(limited[1].values.get(d).copied().unwrap_or(0.0)),
            ]
        })
        .collect();
    out.push(Block::Table { head, rows });
}
