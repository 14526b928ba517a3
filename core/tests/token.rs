//! Token manager tests against an in-memory OAuth2 token endpoint and API.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use secrecy::{ExposeSecret, SecretString};

use steadfast_core::config::{CredentialConfig, Url};
use steadfast_core::env::{Env, FileSystem};
use steadfast_core::event::EventKind;
use steadfast_core::taxonomy::{ErrorClass, FailureKind};
use steadfast_core::token::{TokenError, TokenManager};
use steadfast_testkit::{TestEnv, serve};

/// Every secret in these tests contains this, so a scan for it finds any leak.
const MARK: &str = "sekrit";
const STATE_DIR: &str = "/state";
const TIMEOUT: Duration = Duration::from_secs(10);

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 25, 16, 0, 0)
        .single()
        .unwrap()
}

/// The token endpoint's and the API's shared state.
struct Server {
    /// The refresh token the endpoint accepts (rotation moves it).
    valid_refresh: String,
    /// Hand out a new refresh token with every access token.
    rotate: bool,
    /// `expires_in` of issued tokens.
    lifetime_secs: u64,
    /// Answer every token request with this status and body instead.
    fail_with: Option<(u16, String)>,
    /// Every token request: content type and decoded form.
    requests: Vec<(String, Vec<(String, String)>)>,
    /// Issued access tokens and their expiry.
    issued: Vec<(String, DateTime<Utc>)>,
    /// API calls answered 200 and 401.
    api_ok: u32,
    api_unauthorized: u32,
}

impl Server {
    fn new() -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            valid_refresh: format!("{MARK}-refresh-0"),
            rotate: false,
            lifetime_secs: 3600,
            fail_with: None,
            requests: Vec::new(),
            issued: Vec::new(),
            api_ok: 0,
            api_unauthorized: 0,
        }))
    }
}

fn lock(server: &Arc<Mutex<Server>>) -> std::sync::MutexGuard<'_, Server> {
    server.lock().unwrap()
}

fn json(status: u16, body: String) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn token_endpoint(
    env: &TestEnv,
    server: &Arc<Mutex<Server>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    // A token endpoint takes a moment: concurrent callers pile up behind the first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let mut s = lock(server);
    s.requests.push((content_type, form.clone()));
    if let Some((status, body)) = s.fail_with.clone() {
        return json(status, body);
    }
    let presented = form
        .iter()
        .find(|(k, _)| k == "refresh_token")
        .map(|(_, v)| v.clone());
    if presented.as_deref() != Some(s.valid_refresh.as_str()) {
        return json(400, r#"{"error":"invalid_grant"}"#.to_string());
    }
    let n = s.requests.len();
    let access = format!("{MARK}-access-{n}");
    let expires = env.now() + chrono::Duration::seconds(s.lifetime_secs as i64);
    s.issued.push((access.clone(), expires));
    let mut answer = serde_json::json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": s.lifetime_secs,
    });
    if s.rotate {
        let refresh = format!("{MARK}-refresh-{n}");
        s.valid_refresh = refresh.clone();
        answer["refresh_token"] = refresh.into();
    }
    json(200, answer.to_string())
}

/// An API that accepts only unexpired tokens from the endpoint.
fn api(env: &TestEnv, server: &Arc<Mutex<Server>>, auth: Option<&str>) -> u16 {
    let mut s = lock(server);
    let now = env.now();
    let ok = auth
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|t| s.issued.iter().any(|(tok, exp)| tok == t && now < *exp));
    if ok {
        s.api_ok += 1;
        200
    } else {
        s.api_unauthorized += 1;
        401
    }
}

fn install(env: &TestEnv, server: &Arc<Mutex<Server>>) {
    for host in ["auth.test", "api.test"] {
        let (env, server) = (env.clone(), server.clone());
        env.parts().net.route(
            host,
            Arc::new({
                let env = env.clone();
                move |stream| {
                    let (env, server) = (env.clone(), server.clone());
                    serve(
                        stream,
                        service_fn(move |req| {
                            let (env, server) = (env.clone(), server.clone());
                            async move {
                                let resp = if req.uri().path() == "/token" {
                                    token_endpoint(&env, &server, req).await
                                } else {
                                    let auth = req
                                        .headers()
                                        .get("authorization")
                                        .and_then(|v| v.to_str().ok())
                                        .map(str::to_string);
                                    let status = api(&env, &server, auth.as_deref());
                                    json(status, "{}".to_string())
                                };
                                Ok::<_, Infallible>(resp)
                            }
                        }),
                    );
                }
            }),
        );
    }
}

fn credential() -> CredentialConfig {
    CredentialConfig {
        name: "youtube main".to_string(),
        token_url: Url::parse("http://auth.test/token").unwrap(),
        client_id: "client-1".to_string(),
        client_secret: Some(SecretString::from(format!("{MARK}-client & secret"))),
        refresh_token: SecretString::from(format!("{MARK}-refresh-0")),
        skew: Duration::from_secs(300),
        scope: Some("upload read".to_string()),
    }
}

fn setup(proactive: bool) -> (TestEnv, Arc<Mutex<Server>>, TokenManager<TestEnv>) {
    let env = TestEnv::new(start(), 7);
    let server = Server::new();
    install(&env, &server);
    let mgr = manager(&env, credential(), proactive);
    (env, server, mgr)
}

fn manager(env: &TestEnv, config: CredentialConfig, proactive: bool) -> TokenManager<TestEnv> {
    TokenManager::new(
        env.clone(),
        config,
        Path::new(STATE_DIR),
        proactive,
        TIMEOUT,
    )
}

fn token_file() -> PathBuf {
    PathBuf::from("/state/tokens/youtube_main.json")
}

async fn call_api(env: &TestEnv, token: &SecretString) -> u16 {
    let req = steadfast_core::http::Request::new(
        ::http::Method::GET,
        Url::parse("http://api.test/upload").unwrap(),
    )
    .header("authorization", format!("Bearer {}", token.expose_secret()));
    steadfast_core::http::send(env.connector(), &req, TIMEOUT)
        .await
        .unwrap()
        .status
}

fn requests(server: &Arc<Mutex<Server>>) -> usize {
    lock(server).requests.len()
}

fn refresh_details(env: &TestEnv) -> Vec<String> {
    env.events_so_far()
        .iter()
        .filter(|e| e.event == EventKind::TokenRefreshed)
        .map(|e| e.detail.clone().unwrap_or_default())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn proactive_refresh_happens_before_expiry_so_the_api_never_sees_an_expired_token() {
    let (env, server, mgr) = setup(true);
    // Six hours of calls every minute, each token living an hour.
    for _ in 0..360 {
        let token = mgr.access_token().await.unwrap();
        assert_eq!(call_api(&env, &token).await, 200, "at {}", env.now());
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let s = lock(&server);
    assert_eq!(s.api_unauthorized, 0);
    assert_eq!(s.api_ok, 360);
    // One initial refresh, then one per (lifetime - skew) = 55 min.
    assert_eq!(s.requests.len(), 7);
    drop(s);
    let details = refresh_details(&env);
    assert_eq!(details[0], "initial");
    assert!(details[1..].iter().all(|d| d == "proactive"), "{details:?}");
    assert!(mgr.expires_at().unwrap() > env.now());
}

#[tokio::test(start_paused = true)]
async fn naive_manager_hands_out_the_expired_token_and_the_api_rejects_it() {
    let (env, server, mgr) = setup(false);
    let first = mgr.access_token().await.unwrap();
    let first_expiry = mgr.expires_at().unwrap();
    tokio::time::sleep(Duration::from_secs(3601)).await;
    // Expired, yet handed out as is: the naive habit.
    let stale = mgr.access_token().await.unwrap();
    assert!(mgr.expires_at().unwrap() <= env.now());
    assert_eq!(stale.expose_secret(), first.expose_secret());
    assert_eq!(mgr.expires_at(), Some(first_expiry));
    assert_eq!(call_api(&env, &stale).await, 401);
    // The reactive path recovers, at the cost of a failed call.
    let fresh = mgr.refresh_after_unauthorized(&stale).await.unwrap();
    assert_eq!(call_api(&env, &fresh).await, 200);

    // Over six hours, every expiry costs one 401, where the proactive run above saw none.
    for _ in 0..360 {
        let token = mgr.access_token().await.unwrap();
        if call_api(&env, &token).await == 401 {
            let token = mgr.refresh_after_unauthorized(&token).await.unwrap();
            assert_eq!(call_api(&env, &token).await, 200);
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    assert!(lock(&server).api_unauthorized >= 6);
    assert!(refresh_details(&env).iter().any(|d| d == "reactive"));
}

#[tokio::test(start_paused = true)]
async fn twenty_concurrent_callers_cause_exactly_one_refresh() {
    let (env, server, mgr) = setup(true);
    let mgr = Arc::new(mgr);
    for wave in 1..=2 {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let mgr = mgr.clone();
            set.spawn(async move { mgr.access_token().await.unwrap() });
        }
        let tokens: Vec<String> = set
            .join_all()
            .await
            .iter()
            .map(|t| t.expose_secret().to_string())
            .collect();
        assert!(tokens.iter().all(|t| *t == tokens[0]));
        assert_eq!(requests(&server), wave);
        // Into the skew of the first token: the second wave must refresh once more.
        tokio::time::sleep(Duration::from_secs(3300)).await;
    }
    assert_eq!(refresh_details(&env), ["initial", "proactive"]);
}

#[tokio::test(start_paused = true)]
async fn queued_callers_share_a_failed_attempt_instead_of_each_asking() {
    let (env, server, mgr) = setup(true);
    lock(&server).fail_with = Some((503, r#"{"error":"temporarily_unavailable"}"#.into()));
    let mgr = Arc::new(mgr);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let mgr = mgr.clone();
        set.spawn(async move { mgr.access_token().await });
    }
    for result in set.join_all().await {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), FailureKind::ServerError(503));
        assert_eq!(err.kind().class(), ErrorClass::Recoverable);
    }
    assert_eq!(requests(&server), 1);
    // A later caller tries again; once the endpoint heals it succeeds.
    lock(&server).fail_with = None;
    assert!(mgr.access_token().await.is_ok());
    assert_eq!(requests(&server), 2);
    let failed: Vec<_> = env
        .events_so_far()
        .into_iter()
        .filter(|e| e.event == EventKind::TokenRefreshFailed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].class, Some(ErrorClass::Recoverable));
    assert_eq!(failed[0].service.as_deref(), Some("youtube main"));
}

#[tokio::test(start_paused = true)]
async fn rotated_refresh_token_is_persisted_before_the_new_access_token_is_used() {
    let (env, server, mgr) = setup(true);
    lock(&server).rotate = true;
    let fs = &env.parts().fs;

    let first = mgr.access_token().await.unwrap();
    // Durable before it was handed out: a crash right now keeps the rotated token.
    fs.crash();
    let saved = fs.contents(&token_file()).unwrap();
    let file: serde_json::Value = serde_json::from_slice(&saved).unwrap();
    assert_eq!(file["refresh_token"], format!("{MARK}-refresh-1"));
    assert_eq!(file["access_token"], first.expose_secret());
    let expiry = DateTime::parse_from_rfc3339(file["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expiry, mgr.expires_at().unwrap());

    // Into the skew with the disk full: the manager proves it could not keep a rotated
    // token and does not ask the endpoint at all (that would spend the refresh token).
    tokio::time::sleep(Duration::from_secs(3400)).await;
    fs.set_full(true);
    let err = mgr.access_token().await.unwrap_err();
    assert!(matches!(err, TokenError::Persist { .. }), "{err}");
    assert_eq!(err.kind(), FailureKind::DiskFull);
    assert_eq!(err.kind().class(), ErrorClass::Fatal);
    assert_eq!(
        fs.contents(&token_file()).unwrap(),
        saved,
        "old file intact"
    );
    // Nothing changed: the old token is still the current one, the endpoint never asked.
    assert_eq!(mgr.expires_at(), Some(expiry.with_timezone(&Utc)));
    assert_eq!(requests(&server), 1);

    // The disk recovers: the stored refresh token is still valid and is rotated now.
    fs.set_full(false);
    let third = mgr.access_token().await.unwrap();
    assert_eq!(call_api(&env, &third).await, 200);
    fs.crash();
    let file: serde_json::Value =
        serde_json::from_slice(&fs.contents(&token_file()).unwrap()).unwrap();
    assert_eq!(file["refresh_token"], format!("{MARK}-refresh-2"));

    // A restarted manager picks up the stored chain: no refresh while the token is
    // fresh, then a refresh with the latest rotated token (not the configured one).
    let restarted = manager(&env, credential(), true);
    let loaded = restarted.access_token().await.unwrap();
    assert_eq!(loaded.expose_secret(), third.expose_secret());
    assert_eq!(requests(&server), 2);
    tokio::time::sleep(Duration::from_secs(3400)).await;
    assert!(restarted.access_token().await.is_ok());
    assert_eq!(requests(&server), 3);
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_is_fatal_and_never_retried() {
    let (env, server, mgr) = setup(true);
    lock(&server).valid_refresh = "someone-else".to_string();
    let err = mgr.access_token().await.unwrap_err();
    assert!(matches!(err, TokenError::InvalidGrant { .. }), "{err}");
    assert_eq!(err.kind(), FailureKind::InvalidGrant);
    assert_eq!(err.kind().class(), ErrorClass::Fatal);
    assert!(err.to_string().contains("re-authorise"));
    // Neither path asks the endpoint again.
    assert!(matches!(
        mgr.access_token().await,
        Err(TokenError::InvalidGrant { .. })
    ));
    let whatever = SecretString::from("x".to_string());
    assert!(matches!(
        mgr.refresh_after_unauthorized(&whatever).await,
        Err(TokenError::InvalidGrant { .. })
    ));
    assert_eq!(requests(&server), 1);
    let failed: Vec<_> = env
        .events_so_far()
        .into_iter()
        .filter(|e| e.event == EventKind::TokenRefreshFailed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].class, Some(ErrorClass::Fatal));
}

#[tokio::test(start_paused = true)]
async fn invalid_client_is_bad_config_and_other_rejections_keep_their_status() {
    let (_env, server, mgr) = setup(true);
    lock(&server).fail_with = Some((401, r#"{"error":"invalid_client"}"#.into()));
    let err = mgr.access_token().await.unwrap_err();
    assert_eq!(err.kind(), FailureKind::BadConfig);
    assert!(
        err.to_string().contains("http 401 (invalid_client)"),
        "{err}"
    );
    lock(&server).fail_with = Some((429, "slow down".into()));
    let err = mgr.access_token().await.unwrap_err();
    assert_eq!(err.kind(), FailureKind::RateLimited);
    lock(&server).fail_with = Some((200, r#"{"token_type":"Bearer"}"#.into()));
    let err = mgr.access_token().await.unwrap_err();
    assert_eq!(err.kind(), FailureKind::Io);
    assert!(err.to_string().contains("no access_token"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn unreachable_endpoint_is_classified_by_the_network_error() {
    let (env, server, mgr) = setup(true);
    env.parts()
        .net
        .fail("auth.test", steadfast_core::env::NetErrorKind::Reset);
    let err = mgr.access_token().await.unwrap_err();
    assert_eq!(err.kind(), FailureKind::ConnectionReset);
    assert_eq!(requests(&server), 0);
}

#[tokio::test(start_paused = true)]
async fn reactive_refresh_happens_once_for_many_401s_of_the_same_token() {
    let (env, server, mgr) = setup(false);
    let mgr = Arc::new(mgr);
    let rejected = mgr.access_token().await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (mgr, rejected) = (mgr.clone(), rejected.clone());
        set.spawn(async move { mgr.refresh_after_unauthorized(&rejected).await.unwrap() });
    }
    let fresh: Vec<String> = set
        .join_all()
        .await
        .iter()
        .map(|t| t.expose_secret().to_string())
        .collect();
    assert!(fresh.iter().all(|t| *t == fresh[0]));
    assert_ne!(fresh[0], rejected.expose_secret());
    assert_eq!(requests(&server), 2);
    // A late 401 for the old token does not refresh again.
    let late = mgr.refresh_after_unauthorized(&rejected).await.unwrap();
    assert_eq!(late.expose_secret(), fresh[0]);
    assert_eq!(requests(&server), 2);
    // A 401 for the current token does.
    let current = SecretString::from(fresh[0].clone());
    let newer = mgr.refresh_after_unauthorized(&current).await.unwrap();
    assert_ne!(newer.expose_secret(), fresh[0]);
    assert_eq!(requests(&server), 3);
    assert_eq!(refresh_details(&env), ["initial", "reactive", "reactive"]);
}

#[tokio::test(start_paused = true)]
async fn the_request_is_a_form_post_with_every_field_encoded() {
    let (_env, server, mgr) = setup(true);
    mgr.access_token().await.unwrap();
    let s = lock(&server);
    let (content_type, form) = &s.requests[0];
    assert_eq!(content_type, "application/x-www-form-urlencoded");
    let expected: Vec<(String, String)> = [
        ("grant_type", "refresh_token".to_string()),
        ("refresh_token", format!("{MARK}-refresh-0")),
        ("client_id", "client-1".to_string()),
        ("client_secret", format!("{MARK}-client & secret")),
        ("scope", "upload read".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(*form, expected);
}

#[tokio::test(start_paused = true)]
async fn expires_in_defaults_to_an_hour_and_may_be_a_string() {
    let (env, server, mgr) = setup(true);
    lock(&server).fail_with = Some((200, r#"{"access_token":"a1"}"#.into()));
    let before = env.now();
    mgr.access_token().await.unwrap();
    // Measured from when the request was sent.
    assert_eq!(
        mgr.expires_at(),
        Some(before + chrono::Duration::seconds(3600))
    );
    let other = manager(
        &env,
        CredentialConfig {
            name: "other".into(),
            ..credential()
        },
        true,
    );
    lock(&server).fail_with = Some((200, r#"{"access_token":"a2","expires_in":"120"}"#.into()));
    let before = env.now();
    other.access_token().await.unwrap();
    assert_eq!(
        other.expires_at(),
        Some(before + chrono::Duration::seconds(120))
    );
    // A 120 s token with a 300 s skew is not refreshed on every call: half its life.
    tokio::time::sleep(Duration::from_secs(59)).await;
    other.access_token().await.unwrap();
    assert_eq!(requests(&server), 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    other.access_token().await.unwrap();
    assert_eq!(requests(&server), 3);
}

#[tokio::test(start_paused = true)]
async fn corrupt_state_file_falls_back_to_the_configured_refresh_token() {
    let (env, server, mgr) = setup(true);
    let garbage = format!(r#"{{"access_token": 5, "refresh_token": "{MARK}-stolen"}}"#);
    env.fs()
        .create_dir_all(Path::new("/state/tokens"))
        .await
        .unwrap();
    env.fs()
        .write(&token_file(), garbage.as_bytes())
        .await
        .unwrap();
    let token = mgr.access_token().await.unwrap();
    assert_eq!(call_api(&env, &token).await, 200);
    let presented = lock(&server).requests[0].1[1].1.clone();
    assert_eq!(presented, format!("{MARK}-refresh-0"));
    assert!(
        env.fs()
            .read(&token_file().with_extension("corrupt"))
            .await
            .is_ok()
    );
    let events = env.events_so_far();
    assert!(
        events
            .iter()
            .any(|e| e.event == EventKind::TokenRefreshFailed
                && e.detail.as_deref().is_some_and(|d| d.contains("corrupt")))
    );
    for e in events {
        assert!(!e.to_json_line().contains(MARK), "{}", e.to_json_line());
    }
}

#[tokio::test(start_paused = true)]
async fn a_newly_configured_refresh_token_replaces_the_stored_chain() {
    let (env, server, mgr) = setup(true);
    lock(&server).rotate = true;
    mgr.access_token().await.unwrap();
    // The operator re-authorises: the endpoint now knows only the new token, and the
    // configuration carries it. The stored (rotated) chain must not override it.
    lock(&server).valid_refresh = format!("{MARK}-reauthorised");
    let config = CredentialConfig {
        refresh_token: SecretString::from(format!("{MARK}-reauthorised")),
        ..credential()
    };
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let restarted = manager(&env, config, true);
    let token = restarted.access_token().await.unwrap();
    assert_eq!(call_api(&env, &token).await, 200);
    let s = lock(&server);
    assert_eq!(s.requests[1].1[1].1, format!("{MARK}-reauthorised"));
}

#[tokio::test(start_paused = true)]
async fn no_secret_appears_in_events_errors_or_debug() {
    let (env, server, mgr) = setup(true);
    lock(&server).rotate = true;
    let mut texts = Vec::new();
    let record = |r: Result<SecretString, TokenError>, texts: &mut Vec<String>| {
        if let Err(e) = r {
            texts.push(e.to_string());
            texts.push(format!("{e:?}"));
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                texts.push(s.to_string());
                source = s.source();
            }
        }
    };
    record(mgr.access_token().await, &mut texts);
    // A rejection whose description quotes the secret.
    lock(&server).fail_with = Some((
        400,
        format!(r#"{{"error":"invalid_request","error_description":"bad {MARK}-refresh-1"}}"#),
    ));
    tokio::time::sleep(Duration::from_secs(3400)).await;
    record(mgr.access_token().await, &mut texts);
    // A success body that does not parse as a token response.
    lock(&server).fail_with = Some((200, format!(r#"{{"access_token": ["{MARK}-x"]}}"#)));
    record(mgr.access_token().await, &mut texts);
    lock(&server).fail_with = None;
    // Persist failure on rotation.
    env.parts().fs.set_full(true);
    record(mgr.access_token().await, &mut texts);
    env.parts().fs.set_full(false);
    record(mgr.access_token().await, &mut texts);
    // Reactive refresh, then invalid_grant.
    let current = mgr.access_token().await.unwrap();
    record(mgr.refresh_after_unauthorized(&current).await, &mut texts);
    lock(&server).valid_refresh = "gone".to_string();
    let current = mgr.access_token().await.unwrap();
    record(mgr.refresh_after_unauthorized(&current).await, &mut texts);
    texts.push(format!("{mgr:?}"));
    texts.extend(env.events_so_far().iter().map(|e| e.to_json_line()));

    assert!(
        texts.len() > 10,
        "the scenario produced {} texts",
        texts.len()
    );
    assert!(texts.iter().any(|t| t.contains("invalid_grant")));
    for text in &texts {
        assert!(!text.contains(MARK), "secret leaked: {text}");
    }
}
