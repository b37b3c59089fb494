//! `jitsi-scaler jibri-pod-controller` as a process against the real kube-apiserver: the
//! reference controller's HTTP contract (routes, methods, status codes) and the webhook flow
//! BUSY → detached → EXPIRED → deleted.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

fn kube_test() -> Option<(String, String)> {
    let server = std::env::var("KUBE_TEST_SERVER")
        .ok()
        .filter(|s| !s.is_empty());
    let token = std::env::var("KUBE_TEST_TOKEN")
        .ok()
        .filter(|s| !s.is_empty());
    match (server, token) {
        (Some(s), Some(t)) => Some((s, t)),
        _ => {
            let why = "KUBE_TEST_SERVER/KUBE_TEST_TOKEN not set (run .ci/services/kube-test.sh)";
            assert!(
                std::env::var("JITSI_SCALER_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{why}"
            );
            eprintln!("skipped: {why}");
            None
        }
    }
}

async fn client(server: &str, token: &str) -> Client {
    jitsi_scaler_k8s::install_crypto_provider();
    let mut config = kube::Config::new(server.parse().unwrap());
    config.accept_invalid_certs = true;
    config.auth_info.token = Some(token.to_owned().into());
    Client::try_from(config).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The controller process; killed when dropped.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(base).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the controller did not become ready");
}

#[tokio::test]
async fn the_drop_in_controller_speaks_the_reference_contract() {
    let Some((server, token)) = kube_test() else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kube = client(&server, &token).await;
    let ns = format!("jibri-ctl-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    let _ = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await;
    let pods: Api<Pod> = Api::namespaced(kube.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "jibri-abc", "labels": {"app": "jibri"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "jibri-7d9f8",
                "uid": "0b0ea2b6-4d5a-4c3a-9d7e-6f1f6b0c0a11", "controller": true}]},
        "spec": {"containers": [{"name": "jibri", "image": "jitsi/jibri:stable"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut f = std::fs::File::create(&kubeconfig).unwrap();
    write!(
        f,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\n\
         users:\n- name: t\n  user:\n    token: {token}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: t\n    namespace: {ns}\n\
         current-context: t\n"
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_jitsi-scaler"))
        .arg("jibri-pod-controller")
        .env("KUBECONFIG", &kubeconfig)
        .env("PORT", port.to_string())
        .env("JIBRI_HEALTH_PORT", "2222")
        .env("JIBRI_BUSY_LABELS", "app=busy-jibri")
        .env("SWEEP_INTERVAL", "300")
        .env("POD_NAME", "controller-0")
        .env("NAMESPACE", &ns)
        .env("JIBRI_POD_SELECTOR", "app in (jibri, busy-jibri)")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _guard = Controller(child);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/");
    wait_ready(&http, &base).await;

    // The readiness probe and its methods.
    assert_eq!(http.head(&base).send().await.unwrap().status(), 200);
    let r = http.post(&base).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD, OPTIONS");
    assert_eq!(
        http.get(format!("{base}nothing"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let hook = format!("{base}webhook/jibri-abc/v1/status");
    let r = http
        .request(reqwest::Method::OPTIONS, &hook)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["allow"], "POST, OPTIONS");
    let r = http.get(&hook).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST, OPTIONS");
    assert_eq!(
        http.post(format!("{hook}/")).send().await.unwrap().status(),
        404,
        "trailing slash"
    );
    let r = http
        .post(&hook)
        .header("content-type", "application/json")
        .body("{\"jibriId\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "malformed JSON");
    let session = format!("{base}webhook/jibri-abc/v1/session/status");
    let r = http
        .post(&session)
        .json(&json!({"jibriId": "jibri-abc", "session": {"sessionId": "s", "status": "ON"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "session webhooks are accepted");

    // BUSY detaches the pod from its Deployment.
    let busy = json!({"jibriId": "jibri-abc", "status": {"busyStatus": "BUSY", "health": {"healthStatus": "HEALTHY", "details": {}}}});
    let r = http.post(&hook).json(&busy).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    let detached = pods.get("jibri-abc").await.unwrap();
    let labels = detached.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("app").map(String::as_str), Some("busy-jibri"));
    let annotations = detached.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get("cluster-autoscaler.kubernetes.io/safe-to-evict")
            .map(String::as_str),
        Some("false")
    );
    // A pod that is neither a Jibri of the Deployment nor detached is refused.
    let r = http
        .post(format!("{base}webhook/kube-apiserver/v1/status"))
        .json(&busy)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "a pod that is no Jibri of the namespace is refused"
    );

    // EXPIRED deletes it.
    let expired = json!({"jibriId": "jibri-abc", "status": {"busyStatus": "EXPIRED", "health": {"healthStatus": "HEALTHY"}}});
    assert_eq!(
        http.post(&hook)
            .json(&expired)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        pods.get_opt("jibri-abc").await.unwrap().is_none(),
        "the expired Jibri is gone"
    );
    assert_eq!(
        http.post(&hook)
            .json(&expired)
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "idempotent"
    );

    let metrics = http
        .get(format!("{base}metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("jitsi_scaler_jibri_busy_patches_total 1"),
        "{metrics}"
    );
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
}
