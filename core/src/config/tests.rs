//! Whole-file tests of the reader on the shipped examples and cross-section rules.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveTime;
use chrono_tz::Tz;
use secrecy::ExposeSecret;

use super::*;

const OFFLINE: &str = include_str!("../../../examples/offline.toml");
const HTTP_OAUTH: &str = include_str!("../../../examples/http-oauth.toml");
const MIB: u64 = 1024 * 1024;

/// Answers the secrets `examples/http-oauth.toml` refers to.
struct FakeSecrets;

impl SecretResolver for FakeSecrets {
    fn env(&self, name: &str) -> Option<String> {
        match name {
            "GOOGLE_CLIENT_SECRET" => Some("client-s3cret".to_string()),
            "BLOG_REFRESH_TOKEN" => Some("blog-refresh-s3cret".to_string()),
            _ => None,
        }
    }
    fn file(&self, path: &Path) -> std::io::Result<String> {
        if path == Path::new("/etc/steadfast/secrets/google.refresh") {
            Ok("  google-refresh-s3cret\n".to_string())
        } else {
            Err(std::io::ErrorKind::NotFound.into())
        }
    }
}

fn parse(text: &str) -> Result<Config, Diagnostics> {
    parse_config(text, Path::new("/etc/steadfast/runner.toml"), &FakeSecrets)
}

#[test]
fn offline_example_parses_with_defaults_filled_in() {
    let c = parse_config(OFFLINE, Path::new("/srv/offline.toml"), &NoSecretSources)
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(c.runner.state_dir, PathBuf::from("/srv/state/offline"));
    assert_eq!(c.runner.time_zone, Tz::UTC);
    assert_eq!(c.runner.memory_fatal_bytes, 2048 * MIB);
    assert_eq!(c.patterns, Patterns::ALL);
    assert_eq!(c.retry, RetryPolicy::default());
    let names: Vec<_> = c.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["clock", "disk-report", "heartbeat-file"]);
    for job in &c.jobs {
        assert_eq!(
            job.schedule.cron_pattern(),
            None,
            "offline jobs use `every`"
        );
        let every = job.schedule.nominal_interval();
        assert!((60..=300).contains(&every.as_secs()), "{}", job.name);
        assert!(
            job.steps
                .iter()
                .all(|s| matches!(s.kind, StepKind::Command(_)))
        );
    }
    let clock = &c.jobs[0];
    assert_eq!(clock.deadline, Duration::from_secs(60));
    assert_eq!(clock.heartbeat_threshold, Duration::from_secs(120));
    assert_eq!(clock.overlap, Overlap::Skip);
    let StepKind::Command(date) = &clock.steps[0].kind else {
        unreachable!()
    };
    let argv: Vec<&str> = date.argv.iter().map(Template::as_str).collect();
    assert_eq!(argv, ["date", "-u"]);
    assert_eq!(date.timeout, Duration::from_secs(10));
    let hb = &c.jobs[2];
    assert_eq!(hb.heartbeat_threshold, Duration::from_secs(600));
    let retry = hb.retry.unwrap();
    assert_eq!(
        (retry.max_attempts, retry.base),
        (3, Duration::from_secs(2))
    );
    assert_eq!(
        retry.cap,
        RetryPolicy::default().cap,
        "unset keys come from [retry]"
    );
}

#[test]
fn http_oauth_example_parses_and_resolves_secrets() {
    let c = parse(HTTP_OAUTH).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(c.runner.time_zone, chrono_tz::Europe::Berlin);
    assert_eq!(c.runner.state_dir, PathBuf::from("/etc/steadfast/state"));
    assert_eq!(
        c.windows["publish"],
        WindowConfig {
            start: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
        }
    );
    assert_eq!(c.services["youtube"].call_timeout, Duration::from_secs(120));
    assert_eq!(c.services["blog"].breaker.failure_threshold, 5);
    assert_eq!(c.services["blog"].breaker.window_calls, 20);
    assert_eq!(
        c.services["mail"].breaker.max_cooldown,
        Duration::from_secs(7200)
    );
    let google = &c.credentials["google"];
    assert_eq!(
        google.refresh_token.expose_secret(),
        "google-refresh-s3cret"
    );
    assert_eq!(
        google.client_secret.as_ref().map(|s| s.expose_secret()),
        Some("client-s3cret")
    );
    assert_eq!(
        c.credentials["blog"].refresh_token.expose_secret(),
        "blog-refresh-s3cret"
    );
    assert!(
        !format!("{c:?}").contains("s3cret"),
        "Debug must not show secrets"
    );

    let yt = &c.jobs[0];
    assert_eq!(yt.retry.unwrap().max_attempts, 3);
    let StepKind::Command(render) = &yt.steps[0].kind else {
        unreachable!()
    };
    assert_eq!(render.cwd, Some(PathBuf::from("/etc/steadfast/scripts")));
    let StepKind::Http(upload) = &yt.steps[2].kind else {
        unreachable!()
    };
    assert_eq!(upload.method, http::Method::POST);
    assert_eq!(upload.headers.len(), 1);
    assert_eq!(upload.headers[0].0, http::header::CONTENT_TYPE);
    assert_eq!(upload.headers[0].1.as_str(), "application/json");
    assert_eq!(upload.service.as_str(), "youtube");
    assert_eq!(
        c.service(&upload.service).call_timeout,
        Duration::from_secs(120)
    );
    assert_eq!(yt.steps[2].action.as_deref(), Some("publish"));

    let blog = &c.jobs[1];
    assert_eq!(blog.schedule.cron_pattern(), Some("15 9-21 * * 1-5"));
    // Weekdays only: the largest gap is Friday 21:15 -> Monday 09:15 (60 h), so the
    // default deadline is the 15 min cap.
    assert_eq!(blog.deadline, Duration::from_secs(15 * 60));
    let StepKind::Http(draft) = &blog.steps[0].kind else {
        unreachable!()
    };
    assert_eq!(draft.method, http::Method::GET, "GET is the default");
    assert_eq!(draft.extract["slug"], "/drafts/0/slug");
    assert_eq!(c.jobs[2].heartbeat_threshold, Duration::from_secs(30 * 60));
}

#[test]
fn windows_accept_toml_local_times_too() {
    let text = OFFLINE.replace(
        "[runner]",
        "[windows]\npost = { start = 22:30:00, end = \"06:00\" }\n[runner]",
    );
    let c = parse(&text).unwrap_or_else(|d| panic!("{d}"));
    let post = c.windows["post"];
    assert_eq!(post.start, NaiveTime::from_hms_opt(22, 30, 0).unwrap());
    assert!(post.end < post.start, "a window may span midnight");
}

#[test]
fn cron_threshold_spans_the_weekend() {
    let text = "[[jobs]]\nname = \"j\"\ncron = \"0 9 * * 1-5\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n";
    let c = parse(text).unwrap_or_else(|d| panic!("{d}"));
    // Friday 09:00 -> Monday 09:00 is 72 h; a naive "gap between the next two
    // occurrences" from a Monday would say 24 h and alarm every weekend.
    assert_eq!(
        c.jobs[0].heartbeat_threshold,
        Duration::from_secs(2 * 72 * 3600)
    );
    let every_minute = text.replace("0 9 * * 1-5", "* * * * *");
    let c = parse(&every_minute).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(c.jobs[0].heartbeat_threshold, Duration::from_secs(120));
    assert_eq!(c.jobs[0].deadline, Duration::from_secs(60));
}

#[test]
fn callers_read_their_own_sections_with_the_same_reader() {
    let text = format!("[world]\nseed = 7\nbogus = 1\n{OFFLINE}");
    let source = Source::new(Path::new("scenario.toml"), text).unwrap();
    let doc = parse_document(&source).unwrap();
    let reader = Reader::new(&source, &NoSecretSources);
    let keys = [SECTIONS, &["world"]].concat();
    let top = reader.table(&doc, "", &keys);
    top.finish();
    let config = read_config(&top, ReadOptions::default());
    let seed = top.table("world", &["seed"]).and_then(|w| {
        w.finish();
        w.u64_to("seed", 100)
    });
    assert_eq!(seed, Some(7));
    assert_eq!(config.map(|c| c.jobs.len()), Some(3));
    let err = reader.finish(Some(())).unwrap_err().to_string();
    assert_eq!(
        err,
        "scenario.toml:3:1: `world.bogus`: unknown key `bogus` (hint: valid keys here: `seed`)"
    );
}

#[test]
fn secret_values_never_reach_diagnostics() {
    // A literal secret next to mistakes in the same credential.
    let text = "[credentials.c]\ntoken_url = \"nope\"\nclient_id = 5\nclient_secret = \"hunter2-literal\"\nrefresh_token = { file = \"secrets/google.refresh\", env = \"BLOG_REFRESH_TOKEN\" }\n";
    let err = parse(text).unwrap_err().to_string();
    for secret in [
        "hunter2-literal",
        "google-refresh-s3cret",
        "blog-refresh-s3cret",
    ] {
        assert!(!err.contains(secret), "{err}");
    }
    assert!(err.contains("exactly one of `env` and `file`"), "{err}");
}

#[test]
fn command_arguments_are_templates_checked_like_urls() {
    let text = "[[jobs]]\nname = \"j\"\nevery = \"1m\"\n[[jobs.steps]]\nname = \"a\"\nkind = \"command\"\nargv = [\"echo\", \"{{b.x}}\", \"{{run.id}}\"]\n[[jobs.steps]]\nname = \"b\"\nkind = \"command\"\nargv = [\"echo\", \"{{a.out}}\"]\n";
    let err = parse(text).unwrap_err().to_string();
    assert_eq!(
        err,
        "/etc/steadfast/runner.toml:7:17: `jobs[0].steps[0].argv[1]`: placeholder `{{b.x}}` uses step `b`, which does not run before this step (hint: a step can only use outputs of the steps above it; this is the first step, so it cannot use any)"
    );
}

#[test]
fn reading_is_linear_in_jobs() {
    // Not a timing test: the line of each job's name is looked up in the index, so
    // the duplicate check names the right line at the far end of a long file.
    let mut text = String::new();
    for i in 0..2_000 {
        text.push_str(&format!(
            "[[jobs]]\nname = \"j{i}\"\nevery = \"1m\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n"
        ));
    }
    text.push_str("[[jobs]]\nname = \"j1999\"\nevery = \"1m\"\n[[jobs.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"true\"]\n");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.ends_with("`jobs[2000].name`: duplicate job name `j1999` (hint: the first job named `j1999` is on line 13995; job names must be unique)"),
        "{err}"
    );
}
