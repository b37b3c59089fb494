//! Test helpers: the real kube-apiserver from kube-test (found through `KUBE_TEST_SERVER` and
//! `KUBE_TEST_TOKEN`), a scripted mock API for request-shape tests, fixed clocks, Jibri pods
//! and tokens.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use jitsi_scaler_core::clock::{Clock, UnixMillis};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{Value, json};

/// Fails instead of skipping when set to `1`.
pub const REQUIRE_SERVICES: &str = "JITSI_SCALER_REQUIRE_SERVICES";

/// A client for the kube-test apiserver, or `None` (after saying why) when it is not
/// configured and services are not required. Panics when required and missing.
pub async fn kube_test_client() -> Option<Client> {
    jitsi_scaler_k8s::install_crypto_provider();
    let server = std::env::var("KUBE_TEST_SERVER")
        .ok()
        .filter(|s| !s.is_empty());
    let token = std::env::var("KUBE_TEST_TOKEN")
        .ok()
        .filter(|s| !s.is_empty());
    let (Some(server), Some(token)) = (server, token) else {
        let why = "KUBE_TEST_SERVER/KUBE_TEST_TOKEN not set: no kube-apiserver \
                   (run ../shared/tools/kube-test/start.sh or .ci/services/kube-test.sh)";
        if std::env::var(REQUIRE_SERVICES).as_deref() == Ok("1") {
            panic!("{why}, and {REQUIRE_SERVICES}=1");
        }
        eprintln!("skipped: {why}");
        return None;
    };
    let mut config = kube::Config::new(server.parse().expect("KUBE_TEST_SERVER is a URL"));
    config.accept_invalid_certs = true;
    config.auth_info.token = Some(secrecy::SecretString::from(token));
    config.read_timeout = Some(Duration::from_secs(20));
    let client = Client::try_from(config).expect("client");
    client
        .apiserver_version()
        .await
        .expect("kube-test apiserver unreachable at KUBE_TEST_SERVER");
    Some(client)
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh namespace `<prefix>-<unique>`.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!("{prefix}-{}-{n}-{nanos:x}", std::process::id());
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
    name
}

/// A Jibri pod as a Deployment would make it: labels, and (when `owned`) a controlling
/// ReplicaSet owner reference.
pub fn jibri_pod(name: &str, labels: &[(&str, &str)], owned: bool) -> Pod {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let mut v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "jibri", "image": "jitsi/jibri:stable"}]}
    });
    if owned {
        v["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "jibri-7d9f8",
            "uid": "0b0ea2b6-4d5a-4c3a-9d7e-6f1f6b0c0a11", "controller": true
        }]);
    }
    serde_json::from_value(v).unwrap()
}

/// Creates a pod in `ns`.
pub async fn create_pod(client: &Client, ns: &str, pod: &Pod) -> Pod {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), pod).await.unwrap()
}

/// Sets a pod's status the way a kubelet would.
pub async fn set_pod_status(client: &Client, ns: &str, name: &str, phase: &str, ip: Option<&str>) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut status = json!({"phase": phase});
    if let Some(ip) = ip {
        status["podIP"] = ip.into();
        status["podIPs"] = json!([{"ip": ip}]);
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap();
}

/// A wall clock that stays where it is set.
#[derive(Debug)]
pub struct FixedClock(pub AtomicU64);

impl FixedClock {
    pub fn at(ms: UnixMillis) -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(ms as u64)))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_ms(&self) -> UnixMillis {
        self.0.load(Ordering::SeqCst) as i64
    }
}

/// One request the mock API received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }

    /// Query parameters, decoded, sorted.
    pub fn query(&self) -> Vec<(String, String)> {
        let mut q: Vec<(String, String)> = self
            .uri
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                let dec = |s: &str| {
                    percent_encoding::percent_decode_str(&s.replace('+', " "))
                        .decode_utf8_lossy()
                        .into_owned()
                };
                (dec(k), dec(v))
            })
            .collect();
        q.sort();
        q
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The requests a mock API received.
pub type Log = Arc<Mutex<Vec<Recorded>>>;

/// A scripted API server behind a client.
#[derive(Clone)]
pub struct MockApi {
    pub log: Log,
    arrived: Arc<tokio::sync::Notify>,
}

impl MockApi {
    /// The requests so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// `(method, path)` of the requests so far.
    pub fn calls(&self) -> Vec<(String, String)> {
        self.requests()
            .iter()
            .map(|r| (r.method.clone(), r.path().to_owned()))
            .collect()
    }

    /// Waits (at most 10 s) until a request satisfies `pred`, and returns it.
    pub async fn wait_for(&self, pred: impl Fn(&Recorded) -> bool) -> Recorded {
        self.wait_within(Duration::from_secs(10), pred).await
    }

    /// Waits at most `limit` (of tokio time: paused tests move it) for a request.
    pub async fn wait_within(&self, limit: Duration, pred: impl Fn(&Recorded) -> bool) -> Recorded {
        tokio::time::timeout(limit, async {
            loop {
                let notified = self.arrived.notified();
                if let Some(r) = self.requests().into_iter().find(|r| pred(r)) {
                    return r;
                }
                notified.await;
            }
        })
        .await
        .expect("the expected request never came")
    }
}

/// A client whose API server is `handler`: every request is recorded and answered with the
/// handler's `(status, JSON body)`.
pub fn mock_client<F>(handler: F) -> (Client, MockApi)
where
    F: Fn(&Recorded) -> (u16, Value) + Send + Sync + 'static,
{
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mock = MockApi {
        log: Arc::new(Mutex::new(Vec::new())),
        arrived: Arc::new(tokio::sync::Notify::new()),
    };
    let seen = mock.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes().to_vec())
                .unwrap_or_default();
            let recorded = Recorded {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body,
            };
            let (status, answer) = handler(&recorded);
            seen.log.lock().unwrap().push(recorded);
            seen.arrived.notify_waiters();
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    (Client::new(service, "default"), mock)
}

/// A Kubernetes `Status` error body.
pub fn status_error(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

/// Path of a test key file.
pub fn key_path(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A token as Jibri's `jwt-info` makes it (RS256, `kid`, `iss`, `aud`, `exp`, no `iat`).
pub fn jibri_token(key_file: &str, kid: &str, iss: &str, aud: &str, exp: u64) -> String {
    let pem = std::fs::read(key_path(key_file)).unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &json!({"iss": iss, "aud": aud, "exp": exp}), &key).unwrap()
}

/// Now, in seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A Jibri health event body.
pub fn status_body(jibri_id: &str, busy: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "jibriId": jibri_id,
        "status": {"busyStatus": busy, "health": {"healthStatus": "HEALTHY", "details": {}}}
    }))
    .unwrap()
}
