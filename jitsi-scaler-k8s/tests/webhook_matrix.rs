//! The webhook matrix: IDLE/BUSY/EXPIRED × pod present/absent/not matching × authentication,
//! with the outcome and the Kubernetes calls of each (none for refusals), plus JWT key sources,
//! single-use IDLE and source-IP checks.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    FixedClock, Recorded, jibri_pod, jibri_token, key_path, mock_client, status_body, status_error,
    unix_now,
};
use jitsi_scaler_k8s::jibri::{
    DeletionReason, JibriController, JibriControllerConfig, JwtConfig, JwtKeySource,
    NoActionReason, WebhookAction, WebhookAuthConfig, WebhookOutcome, WebhookRequest, kid_key_name,
};
use jitsi_scaler_k8s::labels::{LabelSelector, parse_label_set};
use serde_json::{Value, json};

const NOW_MS: i64 = 1_795_346_944_000;
const ISS: &str = "jibri";
const AUD: &str = "jibri-pod-controller";
const KID: &str = "jitsi/jibri-kid";

fn jwt_config(keys: JwtKeySource, ignore_expiry: bool) -> WebhookAuthConfig {
    WebhookAuthConfig::Jwt(JwtConfig {
        keys,
        issuers: vec![ISS.into()],
        audience: AUD.into(),
        ignore_expiry,
        key_ttl: Duration::from_secs(3600),
    })
}

fn pem_keys() -> JwtKeySource {
    JwtKeySource::Pem(std::fs::read_to_string(key_path("jibri-test-key.pub.pem")).unwrap())
}

fn config(auth: WebhookAuthConfig) -> JibriControllerConfig {
    let mut c = JibriControllerConfig::new(
        parse_label_set("app=jibri,state=busy").unwrap(),
        2222,
        "ctrl-0",
        "jitsi",
    );
    c.emit_events = false;
    c.pod_selector = LabelSelector::parse("app=jibri").unwrap();
    c.webhook_auth = auth;
    c
}

#[derive(Clone, Copy, Debug)]
enum PodCase {
    Present,
    Absent,
    NotMatching,
}

fn pod_json(case: PodCase) -> Option<Value> {
    let labels: &[(&str, &str)] = match case {
        PodCase::Present => &[("app", "jibri"), ("state", "idle")],
        PodCase::NotMatching => &[("app", "nginx"), ("state", "idle")],
        PodCase::Absent => return None,
    };
    Some(serde_json::to_value(jibri_pod("jibri-abc", labels, true)).unwrap())
}

fn api_for(pod: Option<Value>) -> impl Fn(&Recorded) -> (u16, Value) + Send + Sync + 'static {
    move |_: &Recorded| match &pod {
        Some(p) => (200, p.clone()),
        None => status_error(404, "NotFound", "pods \"jibri-abc\" not found"),
    }
}

#[derive(Clone, Copy, Debug)]
enum AuthCase {
    None,
    Valid,
    ExpiredIgnored,
    BadSignature,
    WrongAudience,
    WrongIssuer,
    Missing,
}

impl AuthCase {
    fn config(self) -> WebhookAuthConfig {
        match self {
            AuthCase::None => WebhookAuthConfig::None,
            _ => jwt_config(pem_keys(), true),
        }
    }

    fn header(self) -> Option<String> {
        let later = unix_now() + 3600;
        let token = match self {
            AuthCase::None | AuthCase::Missing => return None,
            AuthCase::Valid => jibri_token("jibri-test-key.pem", KID, ISS, AUD, later),
            AuthCase::ExpiredIgnored => {
                jibri_token("jibri-test-key.pem", KID, ISS, AUD, unix_now() - 86_400)
            }
            AuthCase::BadSignature => jibri_token("other-test-key.pem", KID, ISS, AUD, later),
            AuthCase::WrongAudience => {
                jibri_token("jibri-test-key.pem", KID, ISS, "someone-else", later)
            }
            AuthCase::WrongIssuer => jibri_token("jibri-test-key.pem", KID, "mallory", AUD, later),
        };
        Some(format!("Bearer {token}"))
    }

    fn admitted(self) -> bool {
        matches!(
            self,
            AuthCase::None | AuthCase::Valid | AuthCase::ExpiredIgnored
        )
    }
}

fn expected(busy: &str, pod: PodCase) -> (WebhookOutcome, Vec<&'static str>) {
    let not_ours = || {
        WebhookOutcome::NoAction(NoActionReason::NotJibriPod(
            "labels do not match JIBRI_POD_SELECTOR app=jibri".into(),
        ))
    };
    match (busy, pod) {
        (_, PodCase::NotMatching) => (not_ours(), vec!["GET"]),
        ("IDLE", _) => (WebhookOutcome::NoAction(NoActionReason::Idle), vec!["GET"]),
        ("BUSY", PodCase::Present) => (
            WebhookOutcome::Ok(WebhookAction::Detached),
            vec!["GET", "PATCH"],
        ),
        ("BUSY", PodCase::Absent) => (
            WebhookOutcome::NoAction(NoActionReason::PodNotFound),
            vec!["GET"],
        ),
        ("EXPIRED", PodCase::Present) => (
            WebhookOutcome::Ok(WebhookAction::Deleted(DeletionReason::Expired)),
            vec!["GET", "DELETE"],
        ),
        ("EXPIRED", PodCase::Absent) => (
            WebhookOutcome::NoAction(NoActionReason::AlreadyGone),
            vec!["GET"],
        ),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn webhook_matrix() {
    let auths = [
        AuthCase::None,
        AuthCase::Valid,
        AuthCase::ExpiredIgnored,
        AuthCase::BadSignature,
        AuthCase::WrongAudience,
        AuthCase::WrongIssuer,
        AuthCase::Missing,
    ];
    for auth in auths {
        for busy in ["IDLE", "BUSY", "EXPIRED"] {
            for pod in [PodCase::Present, PodCase::Absent, PodCase::NotMatching] {
                let (client, api) = mock_client(api_for(pod_json(pod)));
                let c = JibriController::with_clock(
                    client,
                    config(auth.config()),
                    FixedClock::at(NOW_MS),
                )
                .unwrap();
                let header = auth.header();
                let body = status_body("jibri-abc", busy);
                let request =
                    WebhookRequest::new("jibri-abc", &body).authorization(header.as_deref());
                let outcome = c.on_status(request).await;
                let methods: Vec<String> = api.requests().into_iter().map(|r| r.method).collect();
                let case = format!("{auth:?} × {busy} × {pod:?}");
                if auth.admitted() {
                    let (want, calls) = expected(busy, pod);
                    assert_eq!(outcome, want, "{case}");
                    assert_eq!(methods, calls, "{case}");
                    assert!(outcome.is_success(), "{case}: Jibri must get a 200");
                } else {
                    assert!(
                        matches!(outcome, WebhookOutcome::Unauthorized(_)),
                        "{case}: {outcome:?}"
                    );
                    assert!(methods.is_empty(), "{case}: no call before authentication");
                }
            }
        }
    }
}

#[tokio::test]
async fn expiry_is_enforced_when_configured() {
    let (client, api) = mock_client(api_for(pod_json(PodCase::Present)));
    let c = JibriController::new(client, config(jwt_config(pem_keys(), false))).unwrap();
    let body = status_body("jibri-abc", "BUSY");
    let old = format!(
        "Bearer {}",
        jibri_token("jibri-test-key.pem", KID, ISS, AUD, unix_now() - 3600)
    );
    let outcome = c
        .on_status(WebhookRequest::new("jibri-abc", &body).authorization(Some(&old)))
        .await;
    assert!(
        matches!(outcome, WebhookOutcome::Unauthorized(ref m) if m.contains("xpired")),
        "{outcome:?}"
    );
    let fresh = format!(
        "Bearer {}",
        jibri_token("jibri-test-key.pem", KID, ISS, AUD, unix_now() + 600)
    );
    let outcome = c
        .on_status(WebhookRequest::new("jibri-abc", &body).authorization(Some(&fresh)))
        .await;
    assert_eq!(outcome, WebhookOutcome::Ok(WebhookAction::Detached));
    assert_eq!(api.requests().len(), 2);
}

#[tokio::test]
async fn tokens_without_kid_and_pkcs1_keys() {
    let pkcs1 = std::fs::read_to_string(key_path("jibri-test-key.rsa-pub.pem")).unwrap();
    let (client, _api) = mock_client(api_for(None));
    let c =
        JibriController::new(client, config(jwt_config(JwtKeySource::Pem(pkcs1), true))).unwrap();
    let valid = format!(
        "Bearer {}",
        jibri_token("jibri-test-key.pem", KID, ISS, AUD, unix_now() + 600)
    );
    let outcome = c
        .on_session_status(WebhookRequest::new("jibri-abc", b"{}").authorization(Some(&valid)))
        .await;
    assert!(
        outcome.is_success(),
        "BEGIN RSA PUBLIC KEY is accepted: {outcome:?}"
    );

    let pem = std::fs::read(key_path("jibri-test-key.pem")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    let no_kid = jsonwebtoken::encode(&header, &json!({"iss": ISS, "aud": AUD}), &key).unwrap();
    let auth = format!("Bearer {no_kid}");
    let outcome = c
        .on_session_status(WebhookRequest::new("jibri-abc", b"{}").authorization(Some(&auth)))
        .await;
    assert!(
        matches!(outcome, WebhookOutcome::Unauthorized(ref m) if m.contains("kid")),
        "{outcome:?}"
    );
    let outcome = c
        .on_session_status(
            WebhookRequest::new("jibri-abc", b"{}").authorization(Some("Bearer not.a.jwt")),
        )
        .await;
    assert!(matches!(outcome, WebhookOutcome::Unauthorized(_)));
}

/// Keys served as `/<sha256(kid)>.pem` by a real HTTP server on 127.0.0.1.
#[tokio::test]
async fn asap_keys_are_fetched_by_kid_hash_and_cached() {
    jitsi_scaler_k8s::install_crypto_provider();
    let fetches = Arc::new(AtomicUsize::new(0));
    let public = std::fs::read_to_string(key_path("jibri-test-key.pub.pem")).unwrap();
    let expected_path = format!("/keys/{}.pem", kid_key_name(KID));
    let app = axum::Router::new().fallback({
        let fetches = fetches.clone();
        move |uri: http::Uri| {
            let fetches = fetches.clone();
            let public = public.clone();
            let expected_path = expected_path.clone();
            async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                if uri.path() == expected_path {
                    (http::StatusCode::OK, public)
                } else {
                    (http::StatusCode::NOT_FOUND, String::new())
                }
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/keys", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let (client, _api) = mock_client(api_for(None));
    let c = JibriController::new(
        client,
        config(jwt_config(JwtKeySource::AsapBaseUrl(base), true)),
    )
    .unwrap();
    let good = format!(
        "Bearer {}",
        jibri_token("jibri-test-key.pem", KID, ISS, AUD, unix_now() + 600)
    );
    for _ in 0..3 {
        let outcome = c
            .on_session_status(WebhookRequest::new("jibri-abc", b"{}").authorization(Some(&good)))
            .await;
        assert!(outcome.is_success(), "{outcome:?}");
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "the key is cached per kid"
    );

    let unknown = format!(
        "Bearer {}",
        jibri_token(
            "jibri-test-key.pem",
            "jitsi/unknown",
            ISS,
            AUD,
            unix_now() + 600
        )
    );
    for _ in 0..3 {
        let outcome = c
            .on_session_status(
                WebhookRequest::new("jibri-abc", b"{}").authorization(Some(&unknown)),
            )
            .await;
        assert!(
            matches!(outcome, WebhookOutcome::Unauthorized(ref m) if m.contains("404")),
            "{outcome:?}"
        );
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "a failed fetch is remembered"
    );
    server.abort();
}

#[tokio::test]
async fn idle_after_busy_deletes_a_single_use_pod_once_its_session_is_over() {
    let detached = |busy_since: &str| {
        let mut p = serde_json::to_value(jibri_pod(
            "jibri-abc",
            &[("app", "jibri"), ("state", "busy")],
            false,
        ))
        .unwrap();
        p["metadata"]["annotations"] = json!({"jitsi-scaler.io/busy-since": busy_since});
        p
    };
    let body = status_body("jibri-abc", "IDLE");

    let (client, api) = mock_client(api_for(Some(detached("2026-11-22T11:28:00Z"))));
    let c = JibriController::with_clock(
        client,
        config(WebhookAuthConfig::None),
        FixedClock::at(NOW_MS),
    )
    .unwrap();
    let outcome = c.on_status(WebhookRequest::new("jibri-abc", &body)).await;
    assert_eq!(
        outcome,
        WebhookOutcome::Ok(WebhookAction::Deleted(DeletionReason::IdleAfterBusy))
    );
    assert_eq!(api.calls().last().unwrap().0, "DELETE");

    let (client, api) = mock_client(api_for(Some(detached("2026-11-22T11:29:00Z"))));
    let c = JibriController::with_clock(
        client,
        config(WebhookAuthConfig::None),
        FixedClock::at(NOW_MS),
    )
    .unwrap();
    let outcome = c.on_status(WebhookRequest::new("jibri-abc", &body)).await;
    assert_eq!(
        outcome,
        WebhookOutcome::NoAction(NoActionReason::Idle),
        "4 s after BUSY: maybe a late webhook"
    );
    assert_eq!(api.calls().len(), 1);

    let (client, api) = mock_client(api_for(Some(detached("2026-11-22T11:28:00Z"))));
    let mut cfg = config(WebhookAuthConfig::None);
    cfg.single_use = false;
    let c = JibriController::with_clock(client, cfg, FixedClock::at(NOW_MS)).unwrap();
    let outcome = c.on_status(WebhookRequest::new("jibri-abc", &body)).await;
    assert_eq!(outcome, WebhookOutcome::NoAction(NoActionReason::Idle));
    assert!(
        api.calls().is_empty(),
        "IDLE needs no call unless single-use"
    );
}

#[tokio::test]
async fn bare_pods_are_not_jibri_pods() {
    let bare = serde_json::to_value(jibri_pod("jibri-abc", &[("app", "jibri")], false)).unwrap();
    let (client, api) = mock_client(api_for(Some(bare)));
    let mut cfg = config(WebhookAuthConfig::None);
    cfg.pod_selector = LabelSelector::default();
    let c = JibriController::new(client, cfg).unwrap();
    let outcome = c
        .on_status(WebhookRequest::new(
            "jibri-abc",
            &status_body("jibri-abc", "EXPIRED"),
        ))
        .await;
    assert!(
        matches!(
            outcome,
            WebhookOutcome::NoAction(NoActionReason::NotJibriPod(_))
        ),
        "{outcome:?}"
    );
    assert_eq!(api.calls().len(), 1, "no delete of an arbitrary pod");
}

#[tokio::test]
async fn the_source_ip_must_be_the_pods_when_required() {
    let mut pod = pod_json(PodCase::Present).unwrap();
    pod["status"] =
        json!({"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}]});
    let (client, api) = mock_client(api_for(Some(pod)));
    let mut cfg = config(WebhookAuthConfig::None);
    cfg.require_source_ip = true;
    let c = JibriController::new(client, cfg).unwrap();
    let body = status_body("jibri-abc", "BUSY");
    let outcome = c
        .on_status(
            WebhookRequest::new("jibri-abc", &body).source_ip(Some("10.0.0.6".parse().unwrap())),
        )
        .await;
    assert!(
        matches!(outcome, WebhookOutcome::Forbidden(_)),
        "{outcome:?}"
    );
    let outcome = c.on_status(WebhookRequest::new("jibri-abc", &body)).await;
    assert!(
        matches!(outcome, WebhookOutcome::Forbidden(_)),
        "unknown source: {outcome:?}"
    );
    assert_eq!(api.calls().len(), 2, "GETs only");
    let outcome = c
        .on_status(
            WebhookRequest::new("jibri-abc", &body)
                .source_ip(Some("::ffff:10.0.0.5".parse().unwrap())),
        )
        .await;
    assert_eq!(outcome, WebhookOutcome::Ok(WebhookAction::Detached));
}
