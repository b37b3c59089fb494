//! Authentication against a real key server on 127.0.0.1: tokens made exactly as the reference
//! sidecar makes them, the 401/403 matrix, and the key cache's behaviour (negative cache,
//! timeouts, stale-while-error, single flight) and the verified-token cache.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use http::{HeaderValue, Method};
use jitsi_scaler_core::clock::{Clock, ManualClock};
use jitsi_scaler_server::auth::{
    AuthConfig, AuthError, Authenticator, Credential, Principal, Reason, Role, kid_file_stem,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::RsaPrivateKey;
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{Value, json};

/// 2026-11-22T11:28:10Z, the spec's example `iat`.
const NOW_S: i64 = 1_795_346_890;
const KID: &str = "jitsi/test-kid";
const SIDECAR_ISS: &str = "jitsi-autoscaler-sidecar";
const AUD: &str = "jitsi-autoscaler";

// ---------------------------------------------------------------------------------------------
// Keys and tokens

/// A 2048-bit key, generated once per test binary.
fn generate_key(slot: &'static OnceLock<RsaPrivateKey>) -> &'static RsaPrivateKey {
    slot.get_or_init(|| {
        RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("key generation")
    })
}

/// The issuer's key, published on the key server.
fn issuer_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    generate_key(&KEY)
}

/// A key nobody published.
fn stranger_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    generate_key(&KEY)
}

fn spki_pem(key: &RsaPrivateKey) -> String {
    key.to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("SPKI PEM")
}

fn pkcs1_pem(key: &RsaPrivateKey) -> String {
    key.to_public_key()
        .to_pkcs1_pem(LineEnding::LF)
        .expect("PKCS#1 PEM")
}

/// Signs `claims` with RS256, header `{"alg":"RS256","typ":"JWT","kid":kid}`.
fn sign(key: &RsaPrivateKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    let der = key.to_pkcs1_der().expect("PKCS#1 DER");
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(der.as_bytes()))
        .expect("signing")
}

/// The claims the reference sidecar sends: `jsonwebtoken.sign({}, key, {algorithm: 'RS256',
/// keyid, issuer, audience, expiresIn: 3600})`.
fn sidecar_claims(iat: i64, iss: &str) -> Value {
    json!({ "iat": iat, "exp": iat + 3600, "aud": AUD, "iss": iss })
}

/// A token as the reference sidecar makes it at `iat`.
fn sidecar_token(iat: i64) -> String {
    sign(issuer_key(), Some(KID), &sidecar_claims(iat, SIDECAR_ISS))
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).expect("header value")
}

// ---------------------------------------------------------------------------------------------
// The key server

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Serve,
    Fail(StatusCode),
    Hang,
}

#[derive(Default)]
struct ServerState {
    files: Mutex<HashMap<String, String>>,
    mode: Mutex<Option<Mode>>,
    /// Answer this many more requests with 503 before serving.
    fail_next: AtomicUsize,
    hits: Mutex<HashMap<String, usize>>,
    /// When set, requests wait until it reads `true`.
    gate: Mutex<Option<tokio::sync::watch::Receiver<bool>>>,
}

struct KeyServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
}

impl KeyServer {
    async fn start() -> Self {
        let state = Arc::new(ServerState::default());
        let app = Router::new()
            .route("/keys/{file}", get(serve_key))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }

    fn base_url(&self) -> String {
        format!("http://{}/keys", self.addr)
    }

    fn publish(&self, kid: &str, pem: String) {
        self.state
            .files
            .lock()
            .expect("lock")
            .insert(format!("{}.pem", kid_file_stem(kid)), pem);
    }

    fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().expect("lock") = Some(mode);
    }

    /// Requests for `kid`'s key file so far.
    fn hits(&self, kid: &str) -> usize {
        let file = format!("{}.pem", kid_file_stem(kid));
        self.state
            .hits
            .lock()
            .expect("lock")
            .get(&file)
            .copied()
            .unwrap_or(0)
    }
}

async fn serve_key(
    State(state): State<Arc<ServerState>>,
    Path(file): Path<String>,
) -> (StatusCode, String) {
    *state
        .hits
        .lock()
        .expect("lock")
        .entry(file.clone())
        .or_default() += 1;
    let gate = state.gate.lock().expect("lock").clone();
    if let Some(mut gate) = gate {
        let _ = gate.wait_for(|open| *open).await;
    }
    if state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, String::from("busy"));
    }
    let mode = state.mode.lock().expect("lock").unwrap_or(Mode::Serve);
    match mode {
        Mode::Serve => match state.files.lock().expect("lock").get(&file) {
            Some(pem) => (StatusCode::OK, pem.clone()),
            None => (StatusCode::NOT_FOUND, String::from("Not Found")),
        },
        Mode::Fail(status) => (status, String::from("failure")),
        Mode::Hang => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------------------------
// The authenticator under test

struct Fixture {
    server: KeyServer,
    clock: Arc<ManualClock>,
    auth: Authenticator,
}

fn test_config(base_url: String) -> AuthConfig {
    AuthConfig {
        pub_key_base_url: Some(base_url),
        admin_issuers: vec![String::from("ops")],
        read_issuers: vec![String::from("grafana")],
        pub_key_fetch_timeout: Duration::from_secs(3),
        pub_key_negative_ttl: Duration::from_secs(30),
        ..AuthConfig::default()
    }
}

impl Fixture {
    async fn start() -> Self {
        Self::with_config(|config| config).await
    }

    async fn with_config(adjust: impl FnOnce(AuthConfig) -> AuthConfig) -> Self {
        let server = KeyServer::start().await;
        server.publish(KID, spki_pem(issuer_key()));
        let clock = Arc::new(ManualClock::new(NOW_S * 1000));
        let config = adjust(test_config(server.base_url()));
        let auth = Authenticator::with_clock(config, clock.clone() as Arc<dyn Clock>)
            .expect("valid config");
        Self {
            server,
            clock,
            auth,
        }
    }

    fn now_s(&self) -> i64 {
        self.clock.now_ms() / 1000
    }

    async fn call(&self, method: Method, path: &str, token: &str) -> Result<Principal, AuthError> {
        self.auth
            .authorize(&method, path, Some(&bearer(token)))
            .await
    }

    async fn poll(&self, token: &str) -> Result<Principal, AuthError> {
        self.call(Method::POST, "/sidecar/poll", token).await
    }
}

fn unauthorized(reason: Reason) -> Result<Role, AuthError> {
    Err(AuthError::Unauthorized(reason))
}

fn forbidden(reason: Reason) -> Result<Role, AuthError> {
    Err(AuthError::Forbidden(reason))
}

fn role(result: Result<Principal, AuthError>) -> Result<Role, AuthError> {
    result.map(|p| p.role)
}

/// Waits (bounded) until `condition` holds.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn a_reference_sidecar_token_verifies() {
    let f = Fixture::start().await;
    let principal = f.poll(&sidecar_token(NOW_S)).await.expect("accepted");
    assert_eq!(principal.role, Role::Sidecar);
    assert_eq!(
        principal.credential,
        Credential::Asap {
            issuer: Arc::from(SIDECAR_ISS),
            subject: None,
            key_id: Arc::from(KID),
        }
    );
    assert_eq!(principal.bound_instance(), None);
    assert_eq!(principal.check_instance_id("any-instance"), Ok(()));
    // The key was fetched from the spec's path for `jitsi/test-kid`.
    let file = "6c415d24f0e9d95bdcc755f854e77ce3afa0c0a4122196b5f066cd05393da9e0.pem";
    assert_eq!(
        f.server.state.hits.lock().expect("lock").get(file),
        Some(&1)
    );
    let m = f.auth.metrics();
    assert_eq!(
        (m.key_fetches, m.key_fetch_failures, m.authorized),
        (1, 0, 1)
    );
}

#[tokio::test]
async fn a_pkcs1_published_key_is_accepted() {
    let f = Fixture::start().await;
    f.server
        .publish("jitsi/jwt-2026-11-01", pkcs1_pem(issuer_key()));
    let token = sign(
        issuer_key(),
        Some("jitsi/jwt-2026-11-01"),
        &sidecar_claims(NOW_S, SIDECAR_ISS),
    );
    assert_eq!(role(f.poll(&token).await), Ok(Role::Sidecar));
}

#[tokio::test]
async fn invalid_tokens_get_401_with_the_reason() {
    let f = Fixture::start().await;
    let now = NOW_S;
    let with = |patch: Value| {
        let mut claims = sidecar_claims(now, SIDECAR_ISS);
        if let (Some(claims), Some(patch)) = (claims.as_object_mut(), patch.as_object()) {
            for (k, v) in patch {
                if v.is_null() {
                    claims.remove(k);
                } else {
                    claims.insert(k.clone(), v.clone());
                }
            }
        }
        sign(issuer_key(), Some(KID), &claims)
    };

    assert_eq!(
        role(f.auth.authorize(&Method::POST, "/sidecar/poll", None).await),
        unauthorized(Reason::MissingToken)
    );
    assert_eq!(
        role(f.poll("abc.def.ghi").await),
        unauthorized(Reason::MalformedToken)
    );
    assert_eq!(
        role(f.poll("not-a-jwt").await),
        unauthorized(Reason::UnknownToken)
    );
    let by_stranger = sign(stranger_key(), Some(KID), &sidecar_claims(now, SIDECAR_ISS));
    assert_eq!(
        role(f.poll(&by_stranger).await),
        unauthorized(Reason::BadSignature)
    );
    let valid = sidecar_token(now);
    let (head, _) = valid.rsplit_once('.').expect("three parts");
    let (_, foreign_sig) = by_stranger.rsplit_once('.').expect("three parts");
    assert_eq!(
        role(f.poll(&format!("{head}.{foreign_sig}")).await),
        unauthorized(Reason::BadSignature)
    );
    assert_eq!(
        role(f.poll(&with(json!({"aud": "someone-else"}))).await),
        unauthorized(Reason::WrongAudience)
    );
    assert_eq!(
        role(f.poll(&with(json!({"aud": null}))).await),
        unauthorized(Reason::WrongAudience)
    );
    assert_eq!(
        role(
            f.poll(&with(json!({"iat": now - 3661, "exp": now - 61})))
                .await
        ),
        unauthorized(Reason::Expired),
        "expired beyond the 60 s leeway"
    );
    assert_eq!(
        role(
            f.poll(&with(json!({"iat": now - 3630, "exp": now - 30})))
                .await
        ),
        Ok(Role::Sidecar),
        "expired within the leeway"
    );
    assert_eq!(
        role(f.poll(&with(json!({"nbf": now + 120}))).await),
        unauthorized(Reason::NotYetValid)
    );
    assert_eq!(
        role(f.poll(&with(json!({"nbf": now + 30}))).await),
        Ok(Role::Sidecar)
    );
    assert_eq!(
        role(f.poll(&with(json!({"iat": now + 600}))).await),
        Ok(Role::Sidecar),
        "a sidecar clock ahead of ours is accepted, as by the reference"
    );
    assert_eq!(
        role(f.poll(&with(json!({"exp": null}))).await),
        unauthorized(Reason::InvalidClaims)
    );
    assert_eq!(
        role(f.poll(&with(json!({"exp": "tomorrow"}))).await),
        unauthorized(Reason::InvalidClaims)
    );
    assert_eq!(
        role(f.poll(&with(json!({"iss": "someone"}))).await),
        unauthorized(Reason::UnknownIssuer)
    );
    assert_eq!(
        role(f.poll(&with(json!({"iss": null}))).await),
        unauthorized(Reason::UnknownIssuer)
    );
    let no_kid = sign(issuer_key(), None, &sidecar_claims(now, SIDECAR_ISS));
    assert_eq!(
        role(f.poll(&no_kid).await),
        unauthorized(Reason::MissingKid)
    );

    let hs256 = jsonwebtoken::encode(
        &Header {
            kid: Some(KID.to_owned()),
            ..Header::new(Algorithm::HS256)
        },
        &sidecar_claims(now, SIDECAR_ISS),
        &EncodingKey::from_secret(spki_pem(issuer_key()).as_bytes()),
    )
    .expect("HS256 token");
    assert_eq!(
        role(f.poll(&hs256).await),
        unauthorized(Reason::UnsupportedAlgorithm),
        "the public key is never used as an HMAC secret"
    );

    let m = f.auth.metrics();
    assert_eq!(m.refused_for(Reason::BadSignature), 2);
    assert_eq!(m.refused_for(Reason::Expired), 1);
    assert_eq!(m.key_fetches, 1, "one kid, one fetch");
}

#[tokio::test]
async fn roles_follow_the_issuer_lists() {
    let f = Fixture::start().await;
    let token = |iss: &str| sign(issuer_key(), Some(KID), &sidecar_claims(NOW_S, iss));
    let sidecar = token(SIDECAR_ISS);
    let read = token("grafana");
    let admin = token("ops");

    assert_eq!(role(f.poll(&sidecar).await), Ok(Role::Sidecar));
    assert_eq!(
        role(f.call(Method::GET, "/groups", &sidecar).await),
        forbidden(Reason::SidecarScopeOnly)
    );
    assert_eq!(
        role(f.call(Method::PUT, "/groups/g1", &sidecar).await),
        forbidden(Reason::SidecarScopeOnly)
    );

    assert_eq!(
        role(f.call(Method::GET, "/groups", &read).await),
        Ok(Role::Read)
    );
    assert_eq!(
        role(f.call(Method::PUT, "/groups/g1/desired", &read).await),
        forbidden(Reason::ReadOnly)
    );
    assert_eq!(
        role(f.poll(&read).await),
        forbidden(Reason::ReadNotOnSidecar)
    );

    for (method, path) in [
        (Method::GET, "/groups"),
        (Method::PUT, "/groups/g1"),
        (Method::DELETE, "/groups/g1"),
        (Method::POST, "/groups/actions/reset"),
        (Method::POST, "/sidecar/status"),
    ] {
        assert_eq!(
            role(f.call(method, path, &admin).await),
            Ok(Role::Admin),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_sidecar_token_with_sub_is_bound_to_that_instance() {
    let f = Fixture::start().await;
    let mut claims = sidecar_claims(NOW_S, SIDECAR_ISS);
    claims["sub"] = json!("i-0abc");
    let principal = f
        .poll(&sign(issuer_key(), Some(KID), &claims))
        .await
        .expect("accepted");
    assert_eq!(principal.bound_instance(), Some("i-0abc"));
    assert_eq!(principal.check_instance_id("i-0abc"), Ok(()));
    assert_eq!(
        principal.check_instance_id("i-other"),
        Err(AuthError::Forbidden(Reason::InstanceMismatch))
    );

    // An admin's `sub` names a person, not an instance.
    let mut claims = sidecar_claims(NOW_S, "ops");
    claims["sub"] = json!("alice");
    let admin = f
        .poll(&sign(issuer_key(), Some(KID), &claims))
        .await
        .expect("accepted");
    assert_eq!(admin.check_instance_id("i-other"), Ok(()));

    let mut claims = sidecar_claims(NOW_S, SIDECAR_ISS);
    claims["sub"] = json!(42);
    assert_eq!(
        role(f.poll(&sign(issuer_key(), Some(KID), &claims)).await),
        unauthorized(Reason::InvalidClaims)
    );
}

#[tokio::test]
async fn single_scope_gives_every_issuer_every_route() {
    let f = Fixture::with_config(|c| AuthConfig {
        single_scope: true,
        ..c
    })
    .await;
    assert!(f.auth.is_single_scope());
    assert!(
        f.auth
            .startup_warnings()
            .iter()
            .any(|w| w.starts_with("ASAP_SINGLE_SCOPE=true"))
    );
    let sidecar = sidecar_token(NOW_S);
    assert_eq!(
        role(f.call(Method::PUT, "/groups/g1", &sidecar).await),
        Ok(Role::Admin)
    );
    assert_eq!(role(f.poll(&sidecar).await), Ok(Role::Admin));
    let unknown = sign(issuer_key(), Some(KID), &sidecar_claims(NOW_S, "someone"));
    assert_eq!(
        role(f.poll(&unknown).await),
        unauthorized(Reason::UnknownIssuer)
    );
}

#[tokio::test]
async fn an_unknown_kid_is_negatively_cached() {
    let f = Fixture::start().await;
    let kid = "jitsi/unknown";
    let token = sign(issuer_key(), Some(kid), &sidecar_claims(NOW_S, SIDECAR_ISS));
    assert_eq!(role(f.poll(&token).await), unauthorized(Reason::UnknownKey));
    assert_eq!(f.server.hits(kid), 1);

    // Within the negative TTL: refused again without a fetch.
    f.clock.advance(Duration::from_secs(29));
    assert_eq!(role(f.poll(&token).await), unauthorized(Reason::UnknownKey));
    assert_eq!(f.server.hits(kid), 1);
    assert_eq!(f.auth.metrics().key_negative_hits, 1);

    // After it, the key server is asked again, and a key published meanwhile is found.
    f.server.publish(kid, spki_pem(issuer_key()));
    f.clock.advance(Duration::from_secs(2));
    assert_eq!(role(f.poll(&token).await), Ok(Role::Sidecar));
    assert_eq!(f.server.hits(kid), 2);
}

#[tokio::test]
async fn a_key_server_that_is_down_gives_401() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let clock = Arc::new(ManualClock::new(NOW_S * 1000));
    let auth = Authenticator::with_clock(
        test_config(format!("http://{closed}/keys")),
        clock as Arc<dyn Clock>,
    )
    .expect("valid config");
    let result = auth
        .authorize(
            &Method::POST,
            "/sidecar/poll",
            Some(&bearer(&sidecar_token(NOW_S))),
        )
        .await;
    assert_eq!(role(result), unauthorized(Reason::KeyUnavailable));
    let m = auth.metrics();
    assert_eq!((m.key_fetches, m.key_fetch_failures), (1, 1));
}

#[tokio::test]
async fn a_hanging_key_server_times_out() {
    let f = Fixture::with_config(|c| AuthConfig {
        pub_key_fetch_timeout: Duration::from_millis(300),
        ..c
    })
    .await;
    f.server.set_mode(Mode::Hang);
    let outcome = tokio::time::timeout(Duration::from_secs(10), f.poll(&sidecar_token(NOW_S)))
        .await
        .expect("the fetch timeout ends the wait, not this guard");
    assert_eq!(role(outcome), unauthorized(Reason::KeyUnavailable));
    assert_eq!(f.server.hits(KID), 1);
}

#[tokio::test]
async fn transient_failures_are_retried_within_one_fetch() {
    let f = Fixture::start().await;
    f.server.state.fail_next.store(2, Ordering::SeqCst);
    assert_eq!(role(f.poll(&sidecar_token(NOW_S)).await), Ok(Role::Sidecar));
    assert_eq!(f.server.hits(KID), 3);
    let m = f.auth.metrics();
    assert_eq!((m.key_fetches, m.key_fetch_failures), (1, 0));
}

#[tokio::test]
async fn a_bad_key_document_gives_401() {
    let f = Fixture::start().await;
    f.server.publish(KID, String::from("<html>login</html>"));
    assert_eq!(
        role(f.poll(&sidecar_token(NOW_S)).await),
        unauthorized(Reason::KeyUnavailable)
    );
}

#[tokio::test]
async fn a_cached_key_outlives_a_failing_key_server_for_the_stale_window() {
    let f = Fixture::start().await;
    assert_eq!(
        role(f.poll(&sidecar_token(f.now_s())).await),
        Ok(Role::Sidecar)
    );
    assert_eq!(f.server.hits(KID), 1);

    // TTL passed, key server failing: the cached key is still served.
    f.clock.advance(Duration::from_secs(3600 + 1));
    f.server
        .set_mode(Mode::Fail(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(
        role(f.poll(&sidecar_token(f.now_s())).await),
        Ok(Role::Sidecar)
    );
    assert!(f.server.hits(KID) >= 2, "a refresh was attempted");
    // Within the negative TTL no new attempt is made, and the stale key still serves.
    let hits = f.server.hits(KID);
    f.clock.advance(Duration::from_secs(5));
    assert_eq!(
        role(f.poll(&sidecar_token(f.now_s())).await),
        Ok(Role::Sidecar)
    );
    assert_eq!(f.server.hits(KID), hits);
    assert!(f.auth.metrics().key_stale_served >= 2);

    // Past TTL + stale window: refused.
    f.clock.advance(Duration::from_secs(3600));
    assert_eq!(
        role(f.poll(&sidecar_token(f.now_s())).await),
        unauthorized(Reason::KeyUnavailable)
    );

    // The key server recovers: after the negative TTL the key is fetched again.
    f.server.set_mode(Mode::Serve);
    f.clock.advance(Duration::from_secs(31));
    assert_eq!(
        role(f.poll(&sidecar_token(f.now_s())).await),
        Ok(Role::Sidecar)
    );
}

#[tokio::test]
async fn a_withdrawn_key_is_not_served_stale() {
    let f = Fixture::start().await;
    assert_eq!(
        role(f.poll(&sidecar_token(f.now_s())).await),
        Ok(Role::Sidecar)
    );
    f.server.state.files.lock().expect("lock").clear();
    f.clock.advance(Duration::from_secs(3600 + 1));
    assert_eq!(
        role(f.poll(&sidecar_token(f.now_s())).await),
        unauthorized(Reason::UnknownKey)
    );
}

#[tokio::test]
async fn concurrent_first_requests_share_one_fetch() {
    const CALLERS: usize = 16;
    let f = Arc::new(Fixture::start().await);
    let (open, gate) = tokio::sync::watch::channel(false);
    *f.server.state.gate.lock().expect("lock") = Some(gate);

    let mut callers = Vec::new();
    for i in 0..CALLERS {
        let f = f.clone();
        // Distinct tokens, so the verified-token cache plays no part.
        let token = sidecar_token(NOW_S - i as i64);
        callers.push(tokio::spawn(async move { f.poll(&token).await }));
    }
    wait_until("every caller waits for the one fetch", || {
        let m = f.auth.metrics();
        m.key_cache_misses == 1 && m.key_fetch_joins == CALLERS as u64 - 1
    })
    .await;
    open.send(true).expect("gate receivers alive");

    for caller in callers {
        let result = caller.await.expect("caller task");
        assert_eq!(role(result), Ok(Role::Sidecar));
    }
    assert_eq!(f.server.hits(KID), 1);
    assert_eq!(f.auth.metrics().key_fetches, 1);
}

#[tokio::test]
async fn a_fetch_survives_its_caller_giving_up() {
    let f = Fixture::start().await;
    let (open, gate) = tokio::sync::watch::channel(false);
    *f.server.state.gate.lock().expect("lock") = Some(gate);
    let token = sidecar_token(NOW_S);
    let gave_up = tokio::time::timeout(Duration::from_millis(50), f.poll(&token)).await;
    assert!(gave_up.is_err(), "the key server is gated");
    open.send(true).expect("gate receivers alive");
    wait_until("the abandoned fetch completes", || {
        f.auth.metrics().key_fetches == 1 && f.server.hits(KID) == 1
    })
    .await;
    // The next request finds the key (or joins the same fetch): no second fetch.
    assert_eq!(role(f.poll(&token).await), Ok(Role::Sidecar));
    assert_eq!(f.server.hits(KID), 1);
}

#[tokio::test]
async fn a_verified_token_is_not_verified_again_until_it_expires() {
    let f = Fixture::start().await;
    let token = sidecar_token(NOW_S);
    assert_eq!(role(f.poll(&token).await), Ok(Role::Sidecar));
    assert_eq!(f.auth.metrics().signature_verifications, 1);

    // Re-sent for 45 minutes, as the sidecar does: no further signature check.
    for _ in 0..5 {
        f.clock.advance(Duration::from_secs(9 * 60));
        assert_eq!(role(f.poll(&token).await), Ok(Role::Sidecar));
    }
    // The cache stores the principal, not the decision: the route is still checked.
    assert_eq!(
        role(f.call(Method::GET, "/groups", &token).await),
        forbidden(Reason::SidecarScopeOnly)
    );
    let m = f.auth.metrics();
    assert_eq!(m.signature_verifications, 1);
    assert_eq!(m.token_cache_hits, 6);
    assert_eq!(m.token_cache_misses, 1);

    // Past `exp` + leeway the cache does not keep it alive.
    f.clock.advance(Duration::from_secs(15 * 60 + 61));
    assert_eq!(role(f.poll(&token).await), unauthorized(Reason::Expired));
    assert_eq!(f.auth.metrics().signature_verifications, 2);
}

#[tokio::test]
async fn memory_answers_what_needs_no_signature_check() {
    let f = Fixture::start().await;
    let token = sidecar_token(NOW_S);
    let header = bearer(&token);
    let from_memory = |method: Method, path: &str, header: Option<&HeaderValue>| {
        f.auth
            .authorize_from_memory(&method, path, header)
            .map(role)
    };
    // A token never verified: only `authorize` can tell, and memory does not try.
    assert_eq!(
        from_memory(Method::POST, "/sidecar/poll", Some(&header)),
        None
    );
    assert_eq!(f.auth.metrics().signature_verifications, 0);
    // Refusals no key could change are answered from memory.
    assert_eq!(
        from_memory(Method::POST, "/sidecar/poll", None),
        Some(unauthorized(Reason::MissingToken))
    );
    assert_eq!(
        from_memory(Method::POST, "/sidecar/poll", Some(&bearer("not-a-jwt"))),
        Some(unauthorized(Reason::UnknownToken))
    );
    // Once verified, the token is admitted from memory, the route still checked.
    assert_eq!(role(f.poll(&token).await), Ok(Role::Sidecar));
    assert_eq!(
        from_memory(Method::POST, "/sidecar/poll", Some(&header)),
        Some(Ok(Role::Sidecar))
    );
    assert_eq!(
        from_memory(Method::GET, "/groups", Some(&header)),
        Some(forbidden(Reason::SidecarScopeOnly))
    );
    let m = f.auth.metrics();
    assert_eq!((m.signature_verifications, m.token_cache_hits), (1, 2));
    // Past its validity the cache no longer answers: a signature check is due again.
    f.clock.advance(Duration::from_secs(61 * 60));
    assert_eq!(
        from_memory(Method::POST, "/sidecar/poll", Some(&header)),
        None
    );
}

#[tokio::test]
async fn the_token_cache_can_be_disabled() {
    let f = Fixture::with_config(|c| AuthConfig {
        token_cache_capacity: 0,
        ..c
    })
    .await;
    let token = sidecar_token(NOW_S);
    for _ in 0..3 {
        assert_eq!(role(f.poll(&token).await), Ok(Role::Sidecar));
    }
    let m = f.auth.metrics();
    assert_eq!(m.signature_verifications, 3);
    assert_eq!(m.key_fetches, 1, "the key is still cached");
}

#[tokio::test]
async fn static_tokens_and_asap_tokens_together() {
    let f = Fixture::with_config(|c| AuthConfig {
        static_tokens: jitsi_scaler_server::auth::StaticToken::parse_list(
            "JITSI_SCALER_TOKENS",
            "admin:0123456789abcdef-admin",
        )
        .expect("valid"),
        ..c
    })
    .await;
    let admin = f
        .call(Method::DELETE, "/groups/g1", "0123456789abcdef-admin")
        .await
        .expect("static admin");
    assert_eq!(admin.display_name(), "token:JITSI_SCALER_TOKENS#1");
    assert_eq!(role(f.poll(&sidecar_token(NOW_S)).await), Ok(Role::Sidecar));
    assert_eq!(f.auth.metrics().signature_verifications, 1);
}
