//! Token manager tests against an in-memory OAuth2 token endpoint and API, with the
//! token chain in the store.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use secrecy::{ExposeSecret, SecretString};

use steadfast_core::config::{CredentialConfig, Url};
use steadfast_core::db::{Db, TokenRow};
use steadfast_core::env::Env;
use steadfast_core::event::EventKind;
use steadfast_core::taxonomy::{ErrorClass, FailureKind};
use steadfast_core::token::{TokenError, TokenManager, legacy};
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
    /// Hold each answer back this long after acting on the request (a slow endpoint
    /// that has already rotated the refresh token when its answer is cut off).
    answer_delay: Duration,
    /// Refresh tokens presented after they were spent (a rotating provider's reuse
    /// detection; each revokes the family).
    spent_presented: u32,
    /// Refresh tokens spent by a rotation.
    spent: Vec<String>,
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
            answer_delay: Duration::ZERO,
            spent_presented: 0,
            spent: Vec::new(),
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
    let (status, body, delay) = {
        let mut s = lock(server);
        let (status, body) = token_answer(env, &mut s, content_type, form);
        (status, body, s.answer_delay)
    };
    tokio::time::sleep(delay).await;
    json(status, body)
}

/// What the endpoint does with one request (at once), and its answer.
fn token_answer(
    env: &TestEnv,
    s: &mut Server,
    content_type: String,
    form: Vec<(String, String)>,
) -> (u16, String) {
    s.requests.push((content_type, form.clone()));
    if let Some((status, body)) = s.fail_with.clone() {
        return (status, body);
    }
    let presented = form
        .iter()
        .find(|(k, _)| k == "refresh_token")
        .map(|(_, v)| v.clone());
    if presented.as_deref() != Some(s.valid_refresh.as_str()) {
        if presented.as_ref().is_some_and(|p| s.spent.contains(p)) {
            s.spent_presented += 1;
        }
        return (400, r#"{"error":"invalid_grant"}"#.to_string());
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
        let old = std::mem::replace(&mut s.valid_refresh, refresh.clone());
        s.spent.push(old);
        answer["refresh_token"] = refresh.into();
    }
    (200, answer.to_string())
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
        refresh_timeout: TIMEOUT,
        scope: Some("upload read".to_string()),
    }
}

async fn setup(proactive: bool) -> (TestEnv, Arc<Mutex<Server>>, TokenManager<TestEnv>) {
    let env = TestEnv::new(start(), 7);
    let server = Server::new();
    install(&env, &server);
    let mgr = manager(&env, credential(), proactive).await;
    (env, server, mgr)
}

/// A manager on a connection of its own to the store (as a new process would have).
async fn manager(
    env: &TestEnv,
    config: CredentialConfig,
    proactive: bool,
) -> TokenManager<TestEnv> {
    TokenManager::new(env.clone(), config, store(env).await, proactive)
}

async fn store(env: &TestEnv) -> Arc<Db<TestEnv>> {
    Arc::new(Db::open(env.clone(), Path::new(STATE_DIR)).await.unwrap())
}

/// The credential's row as the store has it (committed transactions only).
async fn stored(env: &TestEnv) -> Option<TokenRow> {
    store(env).await.token("youtube main").unwrap()
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
    let (env, server, mgr) = setup(true).await;
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
    let (env, server, mgr) = setup(false).await;
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
    let (env, server, mgr) = setup(true).await;
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
    let (env, server, mgr) = setup(true).await;
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
    let (env, server, mgr) = setup(true).await;
    lock(&server).rotate = true;
    let db = &env.parts().db;
    // A reader of its own, opened before the disk fills up.
    let reader = store(&env).await;

    let first = mgr.access_token().await.unwrap();
    // Committed before it was handed out: a crash right now keeps the rotated token.
    let row = reader
        .token("youtube main")
        .unwrap()
        .expect("the chain is stored");
    assert_eq!(
        row.token.refresh_token.expose_secret(),
        format!("{MARK}-refresh-1")
    );
    assert_eq!(
        row.token
            .access_token
            .as_ref()
            .map(|a| a.expose_secret().to_string()),
        Some(first.expose_secret().to_string())
    );
    assert_eq!(row.token.expires_at, mgr.expires_at());
    assert_eq!(row.refresh_sent_at, None, "the answer is kept");
    let expiry = mgr.expires_at().unwrap();

    // Into the skew with the disk full: the manager proves it could not keep a rotated
    // token and does not ask the endpoint at all (that would spend the refresh token).
    tokio::time::sleep(Duration::from_secs(3400)).await;
    db.set_full(true);
    let err = mgr.access_token().await.unwrap_err();
    assert!(matches!(err, TokenError::Persist { .. }), "{err}");
    assert_eq!(err.kind(), FailureKind::DiskFull);
    assert_eq!(err.kind().class(), ErrorClass::Fatal);
    let after = reader.token("youtube main").unwrap().unwrap();
    assert_eq!(
        after.token.refresh_token.expose_secret(),
        format!("{MARK}-refresh-1"),
        "old chain intact"
    );
    // Nothing changed: the old token is still the current one, the endpoint never asked.
    assert_eq!(mgr.expires_at(), Some(expiry));
    assert_eq!(requests(&server), 1);

    // The disk recovers: the stored refresh token is still valid and is rotated now.
    db.set_full(false);
    let third = mgr.access_token().await.unwrap();
    assert_eq!(call_api(&env, &third).await, 200);
    let row = reader.token("youtube main").unwrap().unwrap();
    assert_eq!(
        row.token.refresh_token.expose_secret(),
        format!("{MARK}-refresh-2")
    );

    // A restarted manager picks up the stored chain: no refresh while the token is
    // fresh, then a refresh with the latest rotated token (not the configured one).
    drop(mgr);
    let restarted = manager(&env, credential(), true).await;
    let loaded = restarted.access_token().await.unwrap();
    assert_eq!(loaded.expose_secret(), third.expose_secret());
    assert_eq!(requests(&server), 2);
    tokio::time::sleep(Duration::from_secs(3400)).await;
    assert!(restarted.access_token().await.is_ok());
    assert_eq!(requests(&server), 3);
    assert_eq!(lock(&server).spent_presented, 0);
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_is_fatal_and_never_retried() {
    let (env, server, mgr) = setup(true).await;
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
    let (_env, server, mgr) = setup(true).await;
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
    let (env, server, mgr) = setup(true).await;
    env.parts()
        .net
        .fail("auth.test", steadfast_core::env::NetErrorKind::Reset);
    let err = mgr.access_token().await.unwrap_err();
    assert_eq!(err.kind(), FailureKind::ConnectionReset);
    assert_eq!(requests(&server), 0);
}

#[tokio::test(start_paused = true)]
async fn reactive_refresh_happens_once_for_many_401s_of_the_same_token() {
    let (env, server, mgr) = setup(false).await;
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
    let (_env, server, mgr) = setup(true).await;
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
    let (env, server, mgr) = setup(true).await;
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
    )
    .await;
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
async fn an_older_runners_token_file_is_imported_once_and_never_quoted() {
    let (env, server, mgr) = setup(true).await;
    lock(&server).rotate = true;
    lock(&server).valid_refresh = format!("{MARK}-from-the-file");
    let db = store(&env).await;
    let garbage = format!(r#"{{"access_token": 5, "refresh_token": "{MARK}-stolen"}}"#);
    let err = legacy::import(&db, "youtube main", garbage.as_bytes(), env.now())
        .await
        .unwrap_err();
    assert!(!err.to_string().contains(MARK), "{err}");
    assert!(!format!("{err:?}").contains(MARK), "{err:?}");
    assert!(stored(&env).await.is_none(), "nothing imported");

    // The file an older runner left, with a rotated refresh token the endpoint expects.
    let file = format!(
        r#"{{"access_token":"","expires_at":"2024-03-25T15:00:00Z","refresh_token":"{MARK}-from-the-file"}}"#
    );
    let imported = legacy::import(&db, "youtube main", file.as_bytes(), env.now());
    assert!(imported.await.unwrap());
    // A second import (a second start) keeps what the store has.
    let older = file.replace("from-the-file", "older");
    let again = legacy::import(&db, "youtube main", older.as_bytes(), env.now());
    assert!(!again.await.unwrap());
    let token = mgr.access_token().await.unwrap();
    assert_eq!(call_api(&env, &token).await, 200);
    let presented = lock(&server).requests[0].1[1].1.clone();
    assert_eq!(presented, format!("{MARK}-from-the-file"));
    for e in env.events_so_far() {
        assert!(!e.to_json_line().contains(MARK), "{}", e.to_json_line());
    }
}

#[tokio::test(start_paused = true)]
async fn a_newly_configured_refresh_token_replaces_the_stored_chain() {
    let (env, server, mgr) = setup(true).await;
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
    drop(mgr);
    let restarted = manager(&env, config, true).await;
    let token = restarted.access_token().await.unwrap();
    assert_eq!(call_api(&env, &token).await, 200);
    let s = lock(&server);
    assert_eq!(s.requests[1].1[1].1, format!("{MARK}-reauthorised"));
}

#[tokio::test(start_paused = true)]
async fn no_secret_appears_in_events_errors_or_debug() {
    let (env, server, mgr) = setup(true).await;
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
    env.parts().db.set_full(true);
    record(mgr.access_token().await, &mut texts);
    env.parts().db.set_full(false);
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

// ---------------------------------------------------------------------------------
// A refresh, once sent, completes.

#[tokio::test(start_paused = true)]
async fn a_refresh_cut_off_by_its_callers_deadline_completes_and_keeps_the_rotated_token() {
    let (env, server, mgr) = setup(true).await;
    {
        let mut s = lock(&server);
        s.rotate = true;
        // The endpoint rotates at once and answers 8 s later, inside the 10 s
        // refresh timeout but long after the caller's 2 s.
        s.answer_delay = Duration::from_secs(8);
    }
    let cut = tokio::time::timeout(Duration::from_secs(2), mgr.access_token()).await;
    assert!(cut.is_err(), "the caller gave up");
    assert_eq!(requests(&server), 1);
    // Nobody waits any more; the refresh goes on and its answer is committed.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let row = stored(&env).await.expect("the answer was kept");
    assert_eq!(
        row.token.refresh_token.expose_secret(),
        format!("{MARK}-refresh-1")
    );
    assert_eq!(row.refresh_sent_at, None);
    // The next caller gets that token without asking again.
    lock(&server).answer_delay = Duration::ZERO;
    let token = mgr.access_token().await.unwrap();
    assert_eq!(call_api(&env, &token).await, 200);
    assert_eq!(requests(&server), 1);
    // The next refresh presents the rotated token, which the endpoint accepts.
    tokio::time::sleep(Duration::from_secs(3400)).await;
    let token = mgr.access_token().await.unwrap();
    assert_eq!(call_api(&env, &token).await, 200);
    assert_eq!(requests(&server), 2);
    assert_eq!(lock(&server).spent_presented, 0);
    assert_eq!(refresh_details(&env), ["initial", "proactive"]);
}

#[tokio::test(start_paused = true)]
async fn callers_that_join_a_refresh_share_it_and_one_giving_up_cuts_off_no_one() {
    let (env, server, mgr) = setup(true).await;
    {
        let mut s = lock(&server);
        s.rotate = true;
        s.answer_delay = Duration::from_secs(5);
    }
    let mgr = Arc::new(mgr);
    let impatient = {
        let mgr = mgr.clone();
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(1), mgr.access_token())
                .await
                .is_err()
        })
    };
    let patient: Vec<_> = (0..5)
        .map(|_| {
            let mgr = mgr.clone();
            tokio::spawn(async move { mgr.access_token().await.unwrap() })
        })
        .collect();
    assert!(impatient.await.unwrap(), "the impatient caller timed out");
    let mut tokens = Vec::new();
    for p in patient {
        tokens.push(p.await.unwrap().expose_secret().to_string());
    }
    assert!(tokens.iter().all(|t| *t == tokens[0]));
    assert_eq!(requests(&server), 1, "one refresh for all of them");
    assert_eq!(refresh_details(&env), ["initial"]);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_has_its_own_timeout() {
    let (env, server, mgr) = setup(true).await;
    // Longer than the credential's refresh timeout (10 s here).
    lock(&server).answer_delay = Duration::from_secs(60);
    let before = env.now();
    let err = mgr.access_token().await.unwrap_err();
    assert_eq!(err.kind(), FailureKind::Timeout, "{err}");
    assert_eq!(env.now() - before, chrono::Duration::seconds(10));
    // No answer came: the endpoint may have rotated, so the mark stays for the next start.
    assert!(stored(&env).await.unwrap().refresh_sent_at.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_refresh_whose_answer_died_with_the_process_is_reported_at_the_next_start() {
    let (env, server, mgr) = setup(true).await;
    {
        let mut s = lock(&server);
        s.rotate = true;
        s.answer_delay = Duration::from_secs(5);
    }
    let mgr = Arc::new(mgr);
    let waiter = {
        let mgr = mgr.clone();
        tokio::spawn(async move { mgr.access_token().await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The process dies with the grant sent (the only window no client can close).
    waiter.abort();
    let _ = waiter.await;
    drop(mgr);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let row = stored(&env).await.unwrap();
    assert!(row.refresh_sent_at.is_some(), "the mark survives");
    assert_eq!(
        row.token.refresh_token.expose_secret(),
        format!("{MARK}-refresh-0")
    );
    // The next start says so, without a secret, and without the word the simulator's
    // operator takes for a rejection.
    lock(&server).answer_delay = Duration::ZERO;
    let restarted = manager(&env, credential(), true).await;
    let err = restarted.access_token().await.unwrap_err();
    assert!(matches!(err, TokenError::InvalidGrant { .. }), "{err}");
    let events = env.events_so_far();
    let lost: Vec<_> = events
        .iter()
        .filter(|e| {
            e.event == EventKind::TokenRefreshFailed
                && e.detail
                    .as_deref()
                    .is_some_and(|d| d.contains("never kept"))
        })
        .collect();
    assert_eq!(lost.len(), 1, "{events:#?}");
    assert!(!lost[0].detail.as_deref().unwrap().contains("invalid_grant"));
    for e in &events {
        assert!(!e.to_json_line().contains(MARK), "{}", e.to_json_line());
    }
}

/// A runner with one job every 15 minutes calling the API with the credential, its run
/// deadline `deadline`.
fn runner_config(deadline: Duration) -> steadfast_core::config::Config {
    use std::collections::BTreeMap;
    use steadfast_core::config::{
        CatchUp, Config, HttpStep, JobConfig, Overlap, Patterns, RetryPolicy, RunnerSettings,
        Schedule, ScheduleConfig, ServiceConfig, StepConfig, StepKind, Template,
    };
    let credential = CredentialConfig {
        refresh_timeout: Duration::from_secs(60),
        ..credential()
    };
    let step = StepConfig {
        needs: None,
        name: "upload".to_string(),
        action: None,
        kind: StepKind::Http(HttpStep {
            method: "GET".parse().unwrap(),
            url: Template::parse("http://api.test/upload").unwrap(),
            headers: Vec::new(),
            body: None,
            service: "api".into(),
            credential: Some(credential.name.as_str().into()),
            extract: BTreeMap::new(),
            expect: Default::default(),
        }),
    };
    let job = JobConfig {
        name: "uploader".to_string(),
        schedule: Schedule::new(
            &ScheduleConfig::Every(Duration::from_secs(15 * 60)),
            chrono_tz::UTC,
        )
        .unwrap(),
        start_jitter: Duration::ZERO,
        overlap: Overlap::Skip,
        catch_up: CatchUp::Latest,
        catch_up_window: Duration::from_secs(6 * 3600),
        alert_missed: true,
        deadline,
        heartbeat_threshold: Duration::from_secs(3600),
        retry: None,
        steps: vec![step],
    };
    Config {
        runner: RunnerSettings {
            state_dir: STATE_DIR.into(),
            time_zone: chrono_tz::UTC,
            monitor_interval: Duration::from_secs(60),
            memory_warn_bytes: 1 << 30,
            memory_fatal_bytes: 2 << 30,
            shutdown_grace: Duration::from_secs(5),
            breaker_alert_after: Duration::from_secs(3600),
        },
        patterns: Patterns::ALL,
        retry: RetryPolicy::default(),
        windows: BTreeMap::new(),
        services: BTreeMap::from([(
            "api".to_string(),
            ServiceConfig {
                name: "api".to_string(),
                health_url: None,
                call_timeout: Duration::from_secs(10),
                breaker: Default::default(),
            },
        )]),
        credentials: BTreeMap::from([(credential.name.clone(), credential)]),
        jobs: vec![job],
    }
}

/// The bug of issue 10: a refresh cut off by the run's deadline lost the rotated refresh
/// token, the next refresh presented the spent one and the provider revoked the family.
#[tokio::test(start_paused = true)]
async fn a_refresh_answered_after_the_runs_deadline_keeps_the_rotated_token() {
    use steadfast_core::alert::CollectAlerts;
    use steadfast_core::scheduler::Runner;
    let env = TestEnv::new(start(), 7);
    let server = Server::new();
    install(&env, &server);
    {
        let mut s = lock(&server);
        s.rotate = true;
        // Rotated at once, answered after 20 s: past the run's 10 s deadline.
        s.answer_delay = Duration::from_secs(20);
    }
    let alerts = Arc::new(CollectAlerts::default());
    let runner = Runner::new(
        env.clone(),
        runner_config(Duration::from_secs(10)),
        alerts.clone(),
    )
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(runner.run(rx));
    // Past the first slot (16:15), then the endpoint answers at once again.
    tokio::time::sleep(Duration::from_secs(16 * 60)).await;
    lock(&server).answer_delay = Duration::ZERO;
    // Three hours: two more refreshes, each presenting the latest rotated token.
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    let _ = tx.send(true);
    handle.await.unwrap();

    let s = lock(&server);
    assert_eq!(s.spent_presented, 0, "a spent refresh token was presented");
    assert!(s.requests.len() >= 3, "{} refreshes", s.requests.len());
    assert!(s.api_ok >= 12, "{} good calls", s.api_ok);
    let events = env.events_so_far();
    let finished: Vec<_> = events
        .iter()
        .filter(|e| e.event == EventKind::RunFinished)
        .filter_map(|e| e.outcome.map(|o| o.as_str()))
        .collect();
    assert_eq!(
        finished.first(),
        Some(&"failed"),
        "the first run hit its deadline"
    );
    assert!(
        !events.iter().any(|e| e
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("invalid_grant"))),
        "{events:#?}"
    );
    assert!(alerts.0.lock().unwrap().is_empty());
}

/// Issue 13: the machine sleeps three hours, far past the token's hour of life. The
/// token is judged by the wall clock, so the first call after the wake carries a
/// fresh one; without proactive refresh the API sees the expired token first.
#[tokio::test(start_paused = true)]
async fn a_token_that_expired_during_a_sleep_is_refreshed_before_the_first_call() {
    use steadfast_core::alert::CollectAlerts;
    use steadfast_core::scheduler::Runner;
    async fn scenario(proactive: bool) -> (u32, u32) {
        let env = TestEnv::new(start(), 7);
        let server = Server::new();
        install(&env, &server);
        let mut cfg = runner_config(Duration::from_secs(600));
        cfg.patterns.proactive_refresh = proactive;
        let runner = Runner::new(env.clone(), cfg, Arc::new(CollectAlerts::default()))
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let handle = tokio::spawn(runner.run(rx));
        // 16:15 runs with the first token; asleep from 16:20 to 19:20.
        tokio::time::sleep(Duration::from_secs(20 * 60)).await;
        env.parts().clock.step_wall(chrono::Duration::hours(3));
        tokio::time::sleep(Duration::from_secs(30 * 60)).await;
        let _ = tx.send(true);
        handle.await.unwrap();
        let s = lock(&server);
        (s.api_ok, s.api_unauthorized)
    }
    let (ok, unauthorized) = scenario(true).await;
    assert_eq!(unauthorized, 0, "an expired token was sent after the wake");
    // 16:15, the catch-up of 19:15, 19:30, 19:45.
    assert_eq!(ok, 4);
    let (_, unauthorized) = scenario(false).await;
    assert!(
        unauthorized >= 1,
        "the reactive runner sends the expired token"
    );
}
