//! The authentication matrix over HTTP: ASAP tokens signed as the reference sidecar signs them,
//! their keys served by a key server on 127.0.0.1, and static tokens, against the real server:
//! 401 for every invalid credential, 403 for a valid one outside its scope (sidecar issuer on
//! admin routes, read issuer on writes, a `sub` that is not the instance).

mod harness;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use harness::{ADMIN, Body, Config, READ, SIDECAR, Server, details, group, jvb_report};
use jitsi_scaler_server::auth::kid_file_stem;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use rsa::RsaPrivateKey;
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{Value, json};

const KID: &str = "jitsi/test-kid";
const PKCS1_KID: &str = "jitsi/pkcs1-kid";
const AUD: &str = "jitsi-autoscaler";
const SIDECAR_ISS: &str = "jitsi-autoscaler-sidecar";
const ADMIN_ISS: &str = "jitsi-scaler-admin";
const READ_ISS: &str = "jitsi-scaler-read";

fn key(slot: &'static OnceLock<RsaPrivateKey>) -> &'static RsaPrivateKey {
    slot.get_or_init(|| RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("key"))
}

/// The key the key server publishes.
fn issuer_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    key(&KEY)
}

/// A key nobody published.
fn stranger_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    key(&KEY)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// An RS256 token with header `{"alg":"RS256","typ":"JWT","kid":kid}`.
fn sign(key: &RsaPrivateKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    let der = key.to_pkcs1_der().expect("DER");
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(der.as_bytes()))
        .expect("signing")
}

/// What the reference sidecar sends: `{iat, exp: iat+3600, aud, iss}`, no `sub`.
fn claims(iss: &str) -> Value {
    let iat = now();
    json!({"iat": iat, "exp": iat + 3600, "aud": AUD, "iss": iss})
}

fn token(iss: &str) -> String {
    sign(issuer_key(), Some(KID), &claims(iss))
}

/// Serves `<base>/<sha256hex(kid)>.pem`.
async fn key_server() -> String {
    let files: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let publish = |kid: &str, pem: String| {
        files
            .lock()
            .expect("lock")
            .insert(format!("{}.pem", kid_file_stem(kid)), pem);
    };
    publish(
        KID,
        issuer_key()
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI"),
    );
    publish(
        PKCS1_KID,
        issuer_key()
            .to_public_key()
            .to_pkcs1_pem(LineEnding::LF)
            .expect("PKCS#1"),
    );
    async fn serve(
        State(files): State<Arc<Mutex<HashMap<String, String>>>>,
        Path(file): Path<String>,
    ) -> (StatusCode, String) {
        match files.lock().expect("lock").get(&file) {
            Some(pem) => (StatusCode::OK, pem.clone()),
            None => (StatusCode::NOT_FOUND, "Not Found".into()),
        }
    }
    let app = Router::new()
        .route("/keys/{file}", get(serve))
        .with_state(files);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/keys", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

async fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = key_server().await;
    let server = Config::new(dir.path())
        .set("--asap-pub-key-base-url", keys)
        .set("--asap-jwt-aud", AUD)
        .set("--asap-jwt-accepted-hook-iss", SIDECAR_ISS)
        .set("--asap-jwt-accepted-admin-iss", ADMIN_ISS)
        .set("--asap-jwt-accepted-read-iss", READ_ISS)
        .start()
        .await;
    server.create_group(&group("g")).await;
    (server, dir)
}

/// One request of the matrix.
struct Call {
    method: Method,
    path: &'static str,
    body: Value,
}

fn call(method: Method, path: &'static str, body: Value) -> Call {
    Call { method, path, body }
}

/// An admin read, an admin write, and a sidecar call.
fn calls() -> Vec<Call> {
    vec![
        call(Method::GET, "/groups", Value::Null),
        call(Method::GET, "/groups/g/report", Value::Null),
        call(Method::PUT, "/groups/g/desired", json!({"desiredCount": 1})),
        call(Method::POST, "/sidecar/poll", details("i-1", "g")),
    ]
}

async fn send(s: &Server, c: &Call, header: Option<&str>) -> harness::Reply {
    let mut request = s
        .http
        .request(c.method.clone(), format!("{}{}", s.api, c.path));
    if let Some(h) = header {
        request = request.header("authorization", h);
    }
    if !c.body.is_null() {
        request = request.json(&c.body);
    }
    harness::Reply::from(request.send().await.expect("request")).await
}

fn assert_unauthorized(reply: &harness::Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {reply:?}");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{what}");
    assert_eq!(reply.json()["errors"][0]["type"], "unauthorized", "{what}");
}

fn assert_forbidden(reply: &harness::Reply, what: &str) {
    assert_eq!(reply.status, 403, "{what}: {reply:?}");
    assert_eq!(reply.json()["errors"][0]["type"], "forbidden", "{what}");
}

#[tokio::test]
async fn invalid_credentials_are_401_everywhere() {
    let (s, _dir) = server().await;
    let t = now();
    let expired = json!({"iat": t - 7200, "exp": t - 3600, "aud": AUD, "iss": SIDECAR_ISS});
    let wrong_aud = json!({"iat": t, "exp": t + 3600, "aud": "someone-else", "iss": ADMIN_ISS});
    let hs256 = jsonwebtoken::encode(
        &Header {
            kid: Some(KID.into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims(ADMIN_ISS),
        &EncodingKey::from_secret(b"a shared secret of some length"),
    )
    .expect("HS256");
    let admin = token(ADMIN_ISS);
    let mut tampered = admin.clone();
    tampered.truncate(admin.len() - 4);
    tampered.push_str("AAAA");
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("not Bearer", Some("Basic YWRtaW46YWRtaW4=".into())),
        ("empty Bearer", Some("Bearer ".into())),
        (
            "unknown static token",
            Some("Bearer not-a-token-0123456789".into()),
        ),
        ("not a JWT", Some("Bearer a.b.c".into())),
        (
            "bad signature",
            Some(format!(
                "Bearer {}",
                sign(stranger_key(), Some(KID), &claims(ADMIN_ISS))
            )),
        ),
        ("tampered signature", Some(format!("Bearer {tampered}"))),
        (
            "wrong audience",
            Some(format!(
                "Bearer {}",
                sign(issuer_key(), Some(KID), &wrong_aud)
            )),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                sign(issuer_key(), Some(KID), &expired)
            )),
        ),
        (
            "unknown issuer",
            Some(format!("Bearer {}", token("somebody-else"))),
        ),
        (
            "no kid",
            Some(format!(
                "Bearer {}",
                sign(issuer_key(), None, &claims(ADMIN_ISS))
            )),
        ),
        (
            "unpublished kid",
            Some(format!(
                "Bearer {}",
                sign(issuer_key(), Some("jitsi/unknown"), &claims(ADMIN_ISS))
            )),
        ),
        ("HS256", Some(format!("Bearer {hs256}"))),
    ];
    for (what, header) in &cases {
        for c in calls() {
            let reply = send(&s, &c, header.as_deref()).await;
            assert_unauthorized(&reply, &format!("{what} on {} {}", c.method, c.path));
        }
    }
    // Nothing was changed by any of them, and every refusal was counted.
    assert_eq!(s.group("g").await["scalingOptions"]["desiredCount"], 1);
    let metrics = s.metrics_text().await;
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("jitsi_scaler_auth_failures_total{reason=\"unauthorized\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("auth failures counted:\n{metrics}"));
    assert!(refused >= (cases.len() * 4) as f64, "{refused}");
}

#[tokio::test]
async fn each_issuer_and_static_role_stays_in_its_scope() {
    let (s, _dir) = server().await;
    let bearer = |t: &str| format!("Bearer {t}");
    let sidecar_jwt = bearer(&token(SIDECAR_ISS));
    let read_jwt = bearer(&token(READ_ISS));
    let admin_jwt = bearer(&token(ADMIN_ISS));
    let pkcs1_admin = bearer(&sign(issuer_key(), Some(PKCS1_KID), &claims(ADMIN_ISS)));
    // (credential, [GET /groups, GET report, PUT desired, POST /sidecar/poll])
    let matrix: [(&str, String, [u16; 4]); 7] = [
        ("sidecar issuer", sidecar_jwt, [403, 403, 403, 200]),
        ("read issuer", read_jwt, [200, 200, 403, 403]),
        ("admin issuer", admin_jwt, [200, 200, 200, 200]),
        (
            "admin issuer, PKCS#1 key",
            pkcs1_admin,
            [200, 200, 200, 200],
        ),
        (
            "static sidecar token",
            bearer(SIDECAR),
            [403, 403, 403, 200],
        ),
        ("static read token", bearer(READ), [200, 200, 403, 403]),
        ("static admin token", bearer(ADMIN), [200, 200, 200, 200]),
    ];
    for (what, header, expected) in &matrix {
        for (c, status) in calls().iter().zip(expected) {
            let reply = send(&s, c, Some(header)).await;
            let label = format!("{what} on {} {}", c.method, c.path);
            match status {
                200 => assert_eq!(reply.status, 200, "{label}: {reply:?}"),
                _ => assert_forbidden(&reply, &label),
            }
        }
    }
    // Writes of every kind are refused to the read and sidecar scopes.
    for header in [
        bearer(READ),
        bearer(&token(READ_ISS)),
        bearer(&token(SIDECAR_ISS)),
    ] {
        for (method, path, body) in [
            (Method::PUT, "/groups/g", group("g")),
            (Method::DELETE, "/groups/g", Value::Null),
            (Method::POST, "/groups/actions/reset", Value::Null),
            (
                Method::POST,
                "/groups/g/actions/launch-protected",
                json!({"count": 1, "protectedTTLSec": 60}),
            ),
            (Method::PUT, "/groups/options/full-scaling", json!({})),
        ] {
            let reply = send(&s, &call(method.clone(), path, body), Some(&header)).await;
            assert_forbidden(&reply, &format!("{method} {path}"));
        }
    }
    // The read scope never reaches the sidecar routes (it could fake reports).
    let reply = send(
        &s,
        &call(Method::POST, "/sidecar/status", jvb_report("i-1", "g", 0.2)),
        Some(&bearer(READ)),
    )
    .await;
    assert_forbidden(&reply, "read token on /sidecar/status");
    assert!(
        s.get("/groups/g").await.status == 200,
        "the group is still there"
    );
}

#[tokio::test]
async fn a_sidecar_token_with_a_subject_reports_only_for_that_instance() {
    let (s, _dir) = server().await;
    let mut bound = claims(SIDECAR_ISS);
    bound["sub"] = json!("i-1");
    let header = format!("Bearer {}", sign(issuer_key(), Some(KID), &bound));
    let routes = |id: &str| {
        vec![
            call(Method::POST, "/sidecar/poll", details(id, "g")),
            call(Method::POST, "/sidecar/status", jvb_report(id, "g", 0.2)),
            call(Method::POST, "/sidecar/stats", jvb_report(id, "g", 0.2)),
            call(Method::POST, "/sidecar/shutdown", details(id, "g")),
        ]
    };
    for c in routes("i-2") {
        let reply = send(&s, &c, Some(&header)).await;
        assert_forbidden(&reply, &format!("sub i-1 posting for i-2 on {}", c.path));
    }
    let report = s.report("g").await;
    assert_eq!(report["count"], 0, "nothing recorded for i-2: {report}");
    for c in routes("i-1") {
        let reply = send(&s, &c, Some(&header)).await;
        assert_eq!(reply.status, 200, "{}: {reply:?}", c.path);
    }
    assert_eq!(s.report("g").await["count"], 1);

    // A token without a subject (the reference sidecar's) may post for any instance.
    let anyone = format!("Bearer {}", token(SIDECAR_ISS));
    for c in routes("i-3") {
        let reply = send(&s, &c, Some(&anyone)).await;
        assert_eq!(reply.status, 200, "{}: {reply:?}", c.path);
    }
}

#[tokio::test]
async fn auth_is_checked_before_the_body_and_unrouted_paths_need_none() {
    let (s, _dir) = server().await;
    // A refused caller learns nothing about the body: 401 even for garbage or huge bodies.
    let reply = s
        .call(
            Method::PUT,
            "/groups/g",
            None,
            Body::Raw(b"{not json".to_vec(), Some("application/json")),
        )
        .await;
    assert_unauthorized(&reply, "garbage body without a token");
    let reply = s
        .call(
            Method::PUT,
            "/groups/g",
            Some(SIDECAR),
            Body::Raw(b"{not json".to_vec(), Some("application/json")),
        )
        .await;
    assert_forbidden(&reply, "garbage body with a sidecar token");
    // Unknown paths are 404 for anyone; the OpenAPI document is public.
    let reply = s.call(Method::GET, "/admin", None, Body::None).await;
    reply.expect_error(404, "not_found");
    assert_eq!(
        s.call(Method::GET, "/openapi.json", None, Body::None)
            .await
            .status,
        200
    );
    // Reservations (501) are behind authentication like every /groups route.
    let reply = s
        .call(Method::GET, "/groups/g/reservations", None, Body::None)
        .await;
    assert_unauthorized(&reply, "reservations without a token");
}
