//! One attempt of one step: an HTTP call or a command, classified by the taxonomy.

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::RunId;
use super::Services;
use super::template::{self, Vars};
use crate::checkpoint::{Resume, idempotency_key};
use crate::config::{CommandStep, HttpStep, StepConfig, StepKind, Url};
use crate::env::{CommandSpec, Env, Spawner, StartedCommand};
use crate::event::{Event, EventKind};
use crate::http::{self, Request};
use crate::retry::{gate, retry_after};
use crate::taxonomy::{ErrorClass, FailureKind, StepError};
use crate::token::TokenManager;

/// Outputs of a successful attempt, or its classified failure; plus the access token
/// it used (for the reactive refresh after a 401).
pub(crate) type AttemptResult = (
    Result<BTreeMap<String, String>, StepError>,
    Option<SecretString>,
);

/// The service a step calls, if it is an HTTP step.
pub(crate) fn service_of(step: &StepConfig) -> Option<&str> {
    match &step.kind {
        StepKind::Http(h) => Some(h.service.as_str()),
        StepKind::Command(_) => None,
    }
}

/// The token manager of an HTTP step's credential.
pub(crate) fn credential_of<'a, E: Env>(
    svc: &'a Services<E>,
    step: &StepConfig,
) -> Option<&'a Arc<TokenManager<E>>> {
    match &step.kind {
        StepKind::Http(h) => h
            .credential
            .as_ref()
            .and_then(|c| svc.tokens.get(c.as_str())),
        StepKind::Command(_) => None,
    }
}

/// Runs one attempt of `step`.
pub(crate) async fn attempt_step<E: Env>(
    svc: &Services<E>,
    job: &str,
    run_id: &RunId,
    step: &StepConfig,
    vars: &Vars,
    attempt: u32,
) -> AttemptResult {
    match &step.kind {
        StepKind::Http(http) => {
            attempt_http(svc, job, run_id, &step.name, http, vars, attempt).await
        }
        StepKind::Command(cmd) => (
            attempt_command(svc, job, run_id, &step.name, cmd, vars).await,
            None,
        ),
    }
}

fn template_error(e: crate::config::MissingValue) -> StepError {
    StepError::new(FailureKind::BadConfig, e.to_string()).with_class(ErrorClass::Degraded)
}

async fn attempt_http<E: Env>(
    svc: &Services<E>,
    job: &str,
    run_id: &RunId,
    step: &str,
    http_step: &HttpStep,
    vars: &Vars,
    attempt: u32,
) -> AttemptResult {
    let env = &svc.env;
    let service = http_step.service.as_str();
    // The token comes first: a failing token endpoint must not count against the API's
    // breaker.
    let token = match &http_step.credential {
        None => None,
        Some(name) => match svc.tokens.get(name.as_str()) {
            None => {
                let err = StepError::new(
                    FailureKind::BadConfig,
                    format!("credential `{name}` is not configured"),
                );
                return (Err(err), None);
            }
            Some(manager) => match manager.access_token().await {
                Ok(t) => Some(t),
                Err(e) => return (Err(StepError::new(e.kind(), e.to_string())), None),
            },
        },
    };
    let request = match build_request(svc, run_id, step, http_step, vars, token.as_ref()) {
        Ok(r) => r,
        Err(e) => return (Err(e), token),
    };
    let permit = match svc.breakers.try_acquire(service) {
        Ok(p) => p,
        Err(rejected) => {
            svc.gates
                .hold(service, rejected.until, "breaker_open")
                .await;
            env.emit(
                Event::new(EventKind::BreakerRejected)
                    .job(job)
                    .run_id(run_id)
                    .step(step)
                    .service(service)
                    .class(ErrorClass::Degraded)
                    .detail(format!("open until {}", rejected.until.to_rfc3339())),
            );
            let err = StepError::new(
                FailureKind::BreakerOpen,
                format!("breaker of `{service}` is open"),
            );
            return (Err(err), token);
        }
    };
    if attempt == 1 {
        svc.retrier.record_call(service, env.now());
    }
    let timeout = svc.config.service(&http_step.service).call_timeout;
    let result = match http::send(env.connector(), &request, timeout).await {
        Ok(resp) => {
            // Whatever the status: a Retry-After or a spent quota holds every caller.
            let advertised = gate::advertised(|n| resp.header(n).map(str::to_string), env.now());
            if let Some((until, reason)) = advertised {
                svc.gates.hold(service, until, reason).await;
            }
            answer(svc, service, http_step, permit, resp).await
        }
        Err(e) => {
            svc.breakers.record(permit, false).await;
            hold_for_open_breaker(svc, service).await;
            Err(StepError::new(e.kind(), e.to_string()))
        }
    };
    (result, token)
}

/// Holds the service's gate while its breaker is open (after a call tripped it).
async fn hold_for_open_breaker<E: Env>(svc: &Services<E>, service: &str) {
    if let Some(until) = svc.breakers.open_until(service) {
        svc.gates.hold(service, until, "breaker_open").await;
    }
}

/// The outcome of an answer: its contract, its status, and what the breaker learns.
async fn answer<E: Env>(
    svc: &Services<E>,
    service: &str,
    http_step: &HttpStep,
    permit: crate::breaker::Permit,
    resp: http::Response,
) -> Result<BTreeMap<String, String>, StepError> {
    let env = &svc.env;
    match svc
        .contracts
        .check(&http_step.expect, resp.status, &resp.body)
    {
        Some(Ok(())) => {
            svc.breakers.record(permit, true).await;
            Ok(template::extract(&resp.body, &http_step.extract))
        }
        Some(Err(bad)) => {
            // The service answered without what the step needs: it failed.
            svc.breakers.record(permit, false).await;
            hold_for_open_breaker(svc, service).await;
            Err(bad)
        }
        None => {
            let kind = FailureKind::from_status(resp.status).unwrap_or(FailureKind::Io);
            // The service answered: only server-side failures count against it.
            let service_failed = matches!(kind, FailureKind::ServerError(_) | FailureKind::Timeout);
            svc.breakers.record(permit, !service_failed).await;
            hold_for_open_breaker(svc, service).await;
            let wait = resp
                .header("retry-after")
                .and_then(|v| retry_after::parse(v, env.now()));
            Err(StepError::new(kind, format!("http {}", resp.status)).with_retry_after(wait))
        }
    }
}

fn build_request<E: Env>(
    svc: &Services<E>,
    run_id: &RunId,
    step: &str,
    http_step: &HttpStep,
    vars: &Vars,
    token: Option<&SecretString>,
) -> Result<Request, StepError> {
    let url_text = http_step.url.fill(vars).map_err(template_error)?;
    let url = Url::parse(&url_text)
        .map_err(|e| StepError::new(FailureKind::BadConfig, format!("{e} in step url")))?;
    let mut request = Request::new(http_step.method.clone(), url);
    for (name, value) in &http_step.headers {
        request = request.header(name.as_str(), value.fill(vars).map_err(template_error)?);
    }
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {}", token.expose_secret()));
    }
    if svc.resume == Resume::FromLastStep {
        request = request.header("idempotency-key", idempotency_key(run_id, step));
    }
    if let Some(body) = &http_step.body {
        request = request.body(body.fill(vars).map_err(template_error)?);
    }
    Ok(request)
}

/// The progress file a command step may keep (`STEADFAST_CHECKPOINT`): stable across
/// the step's retries and its run's resumes, removed when the run finishes.
pub(crate) fn progress_file(
    state_dir: &std::path::Path,
    run: &RunId,
    step: &str,
) -> std::path::PathBuf {
    state_dir.join("checkpoints").join(format!(
        "{}.{}.{}.script",
        crate::store::file_stem(run.job()),
        crate::store::file_stem(step),
        crate::store::file_stem(&run.to_string())
    ))
}

/// Removes the progress files of `run`'s command steps: the run is finished (done or
/// closed) and will never be resumed. A file that cannot be removed is reported.
pub(crate) async fn sweep_progress<E: Env>(
    svc: &Services<E>,
    job: &crate::config::JobConfig,
    run: &RunId,
) {
    use crate::env::FileSystem;
    for step in &job.steps {
        if !matches!(step.kind, StepKind::Command(_)) {
            continue;
        }
        let path = progress_file(&svc.config.runner.state_dir, run, &step.name);
        if let Err(e) = svc.env.fs().remove(&path).await {
            svc.env.emit(
                Event::new(EventKind::HeartbeatFinding)
                    .job(run.job())
                    .run_id(run)
                    .step(&step.name)
                    .detail(format!("failed to remove {}: {e}", path.display())),
            );
        }
    }
}

/// Exit codes of command steps (sysexits.h), mapped to the taxonomy.
pub mod exit_codes {
    /// Temporary failure: retry later (recoverable).
    pub const TEMPFAIL: i32 = 75;
    /// A service is unavailable: skip, run degraded.
    pub const UNAVAILABLE: i32 = 69;
    /// Not permitted: credentials (critical).
    pub const NOPERM: i32 = 77;
}

async fn attempt_command<E: Env>(
    svc: &Services<E>,
    job: &str,
    run_id: &RunId,
    step: &str,
    cmd: &CommandStep,
    vars: &Vars,
) -> Result<BTreeMap<String, String>, StepError> {
    let env = &svc.env;
    let mut argv = Vec::with_capacity(cmd.argv.len());
    for arg in &cmd.argv {
        argv.push(arg.fill(vars).map_err(template_error)?);
    }
    let mut vars_env: Vec<(String, String)> = cmd.env.clone();
    vars_env.push(("STEADFAST_JOB".into(), job.to_string()));
    vars_env.push(("STEADFAST_RUN_ID".into(), run_id.to_string()));
    vars_env.push((
        "STEADFAST_IDEMPOTENCY_KEY".into(),
        idempotency_key(run_id, step),
    ));
    // The script's own progress file, stable across retries and resumes of this run's
    // step, so a long script can pick up where it stopped.
    let progress = progress_file(&svc.config.runner.state_dir, run_id, step);
    vars_env.push((
        "STEADFAST_CHECKPOINT".into(),
        progress.display().to_string(),
    ));
    for name in &cmd.credentials {
        let Some(manager) = svc.tokens.get(name.as_str()) else {
            return Err(StepError::new(
                FailureKind::BadConfig,
                format!("credential `{name}` is not configured"),
            ));
        };
        let token = manager
            .access_token()
            .await
            .map_err(|e| StepError::new(e.kind(), e.to_string()))?;
        let var = format!(
            "ACCESS_TOKEN_{}",
            name.as_str().to_ascii_uppercase().replace(['-', '.'], "_")
        );
        vars_env.push((var, token.expose_secret().to_string()));
    }
    let spec = CommandSpec {
        argv,
        cwd: cmd.cwd.clone(),
        env: vars_env,
        timeout: cmd.timeout,
        capture_limit_bytes: 64 * 1024,
    };
    let started = env.spawner().start(&spec).await.map_err(|e| {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                FailureKind::BadConfig
            }
            _ => FailureKind::from(&e),
        };
        StepError::new(kind, format!("failed to start command: {e}"))
    })?;
    // The group is in the store before the program runs: a runner killed from here on
    // leaves a row the next start stops, never an orphan nobody knows of. If the store
    // refuses, `started` is dropped and its group killed before the program ran.
    svc.db
        .process_started(run_id, step, started.pgid(), env.now())
        .await
        .map_err(|e| {
            StepError::new(
                e.kind(),
                format!("cannot journal the command's process group: {e}"),
            )
        })?;
    let out = started.finish().await;
    if let Err(e) = svc.db.process_ended(run_id, step).await {
        // The row stays; the next start finds the group gone. Reported, not fatal.
        env.emit(
            Event::new(EventKind::HeartbeatFinding)
                .job(job)
                .run_id(run_id)
                .step(step)
                .detail(e.to_string()),
        );
    }
    let out = out.map_err(|e| {
        StepError::new(FailureKind::from(&e), format!("failed to run command: {e}"))
    })?;
    if out.timed_out {
        return Err(StepError::new(
            FailureKind::Timeout,
            format!("command ran past {}s and was killed", cmd.timeout.as_secs()),
        ));
    }
    match out.code {
        Some(0) => Ok(last_line_outputs(&out.stdout)),
        Some(exit_codes::TEMPFAIL) => Err(StepError::new(
            FailureKind::CommandFailed(exit_codes::TEMPFAIL),
            "command reported a temporary failure (exit 75)",
        )),
        Some(exit_codes::UNAVAILABLE) => Err(StepError::new(
            FailureKind::ServiceDown,
            "command reported a service unavailable (exit 69)",
        )),
        Some(exit_codes::NOPERM) => Err(StepError::new(
            FailureKind::Unauthorized,
            "command reported missing permission (exit 77)",
        )),
        Some(code) => Err(StepError::new(
            FailureKind::CommandFailed(code),
            format!("command exited with {code}"),
        )
        .with_class(ErrorClass::Recoverable)),
        None => Err(StepError::new(
            FailureKind::CommandFailed(-1),
            "command killed by a signal",
        )),
    }
}

/// A command may print a JSON object as its last stdout line; its string and number
/// fields become the step's outputs.
fn last_line_outputs(stdout: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(stdout);
    let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
        return BTreeMap::new();
    };
    match serde_json::from_str::<serde_json::Value>(last.trim()) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                serde_json::Value::Number(n) => Some((k, n.to_string())),
                serde_json::Value::Bool(b) => Some((k, b.to_string())),
                _ => None,
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}
