//! Request-shape tests against a scripted API (tower-test, as kube-rs does): the exact
//! server-side apply, delete, list and Lease requests, and which calls each webhook makes.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{FixedClock, Recorded, jibri_pod, mock_client, status_body, status_error};
use jitsi_scaler_core::leader::{Leadership, SingleNode};
use jitsi_scaler_k8s::jibri::{
    DeletionReason, JibriController, JibriControllerConfig, NoActionReason, WebhookAction,
    WebhookOutcome, WebhookRequest,
};
use jitsi_scaler_k8s::labels::parse_label_set;
use jitsi_scaler_k8s::lease::{LeaseConfig, LeaseLeadership};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// 2026-11-22T11:29:04Z.
const NOW_MS: i64 = 1_795_346_944_000;

fn config() -> JibriControllerConfig {
    let mut c = JibriControllerConfig::new(
        parse_label_set("app=jibri,state=busy").unwrap(),
        2222,
        "ctrl-0",
        "jitsi",
    );
    c.emit_events = false;
    c
}

fn idle_pod() -> Value {
    serde_json::to_value(jibri_pod(
        "jibri-abc",
        &[
            ("app", "jibri"),
            ("state", "idle"),
            ("pod-template-hash", "7d9f8"),
        ],
        true,
    ))
    .unwrap()
}

fn controller(client: kube::Client, config: JibriControllerConfig) -> JibriController {
    JibriController::with_clock(client, config, FixedClock::at(NOW_MS)).unwrap()
}

/// Answers GET/PATCH/DELETE of pod `jibri-abc` with `pod` (404 when `None`).
fn pod_api(pod: Option<Value>) -> impl Fn(&Recorded) -> (u16, Value) + Send + Sync + 'static {
    move |r: &Recorded| match (&pod, r.method.as_str()) {
        (Some(p), "GET" | "PATCH" | "DELETE") => (200, p.clone()),
        _ => status_error(404, "NotFound", "pods \"jibri-abc\" not found"),
    }
}

#[tokio::test]
async fn busy_is_the_reference_server_side_apply() {
    let (client, api) = mock_client(pod_api(Some(idle_pod())));
    let c = controller(client, config());
    let outcome = c
        .on_status(WebhookRequest::new(
            "jibri-abc",
            &status_body("jibri-abc", "BUSY"),
        ))
        .await;
    assert_eq!(outcome, WebhookOutcome::Ok(WebhookAction::Detached));
    let requests = api.requests();
    assert_eq!(
        api.calls(),
        vec![
            (
                "GET".to_owned(),
                "/api/v1/namespaces/jitsi/pods/jibri-abc".to_owned()
            ),
            (
                "PATCH".to_owned(),
                "/api/v1/namespaces/jitsi/pods/jibri-abc".to_owned()
            ),
        ]
    );
    let patch = &requests[1];
    assert_eq!(
        patch.query(),
        vec![
            ("fieldManager".to_owned(), "jibri-pod-controller".to_owned()),
            ("force".to_owned(), "true".to_owned())
        ]
    );
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(
        patch.json(),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "labels": {"app": "jibri", "state": "busy"},
                "annotations": {
                    "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
                    "controller.kubernetes.io/pod-deletion-cost": "10000",
                    "jitsi-scaler.io/busy-since": "2026-11-22T11:29:04Z",
                    "jitsi-scaler.io/last-webhook": "2026-11-22T11:29:04Z"
                }
            }
        })
    );
    assert_eq!(c.stats().busy_patches, 1);
}

#[tokio::test]
async fn busy_without_deletion_cost_sends_the_reference_fields_and_our_timestamps() {
    let (client, api) = mock_client(pod_api(Some(idle_pod())));
    let mut cfg = config();
    cfg.busy_deletion_cost = None;
    let c = controller(client, cfg);
    c.on_status(WebhookRequest::new("jibri-abc", &status_body("", "BUSY")))
        .await;
    let body = api.requests()[1].json();
    let annotations = body["metadata"]["annotations"].as_object().unwrap();
    let keys: Vec<&str> = annotations.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec![
            "cluster-autoscaler.kubernetes.io/safe-to-evict",
            "jitsi-scaler.io/busy-since",
            "jitsi-scaler.io/last-webhook"
        ]
    );
}

#[tokio::test]
async fn repeated_busy_is_a_no_op_until_the_heartbeat_is_stale() {
    let mut pod = idle_pod();
    pod["metadata"]["labels"]["state"] = "busy".into();
    pod["metadata"]["annotations"] = json!({
        "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
        "controller.kubernetes.io/pod-deletion-cost": "10000",
        "jitsi-scaler.io/busy-since": "2026-11-22T11:00:00Z",
        "jitsi-scaler.io/last-webhook": "2026-11-22T11:28:30Z"
    });
    let (client, api) = mock_client(pod_api(Some(pod.clone())));
    let c = controller(client, config());
    let outcome = c
        .on_status(WebhookRequest::new(
            "jibri-abc",
            &status_body("jibri-abc", "BUSY"),
        ))
        .await;
    assert_eq!(
        outcome,
        WebhookOutcome::NoAction(NoActionReason::AlreadyDetached)
    );
    assert_eq!(api.calls().len(), 1, "only the GET");

    pod["metadata"]["annotations"]["jitsi-scaler.io/last-webhook"] = "2026-11-22T11:27:00Z".into();
    let (client, api) = mock_client(pod_api(Some(pod)));
    let c = controller(client, config());
    let outcome = c
        .on_status(WebhookRequest::new(
            "jibri-abc",
            &status_body("jibri-abc", "BUSY"),
        ))
        .await;
    assert_eq!(outcome, WebhookOutcome::Ok(WebhookAction::Detached));
    let body = api.requests()[1].json();
    assert_eq!(
        body["metadata"]["annotations"]["jitsi-scaler.io/busy-since"], "2026-11-22T11:00:00Z",
        "kept"
    );
    assert_eq!(
        body["metadata"]["annotations"]["jitsi-scaler.io/last-webhook"], "2026-11-22T11:29:04Z",
        "refreshed"
    );
}

#[tokio::test]
async fn expired_is_the_reference_delete() {
    let (client, api) = mock_client(pod_api(Some(idle_pod())));
    let c = controller(client, config());
    let outcome = c
        .on_status(WebhookRequest::new(
            "jibri-abc",
            &status_body("jibri-abc", "EXPIRED"),
        ))
        .await;
    assert_eq!(
        outcome,
        WebhookOutcome::Ok(WebhookAction::Deleted(DeletionReason::Expired))
    );
    let delete = &api.requests()[1];
    assert_eq!(delete.method, "DELETE");
    assert_eq!(delete.path(), "/api/v1/namespaces/jitsi/pods/jibri-abc");
    assert!(
        delete.query().is_empty(),
        "no options in the query: {}",
        delete.uri
    );
    assert_eq!(delete.content_type.as_deref(), Some("application/json"));
    assert_eq!(delete.json(), json!({}));
    assert_eq!(c.stats().deletions_of(DeletionReason::Expired), 1);
}

#[tokio::test]
async fn expired_for_a_gone_pod_is_success_without_a_delete() {
    let (client, api) = mock_client(pod_api(None));
    let c = controller(client, config());
    let outcome = c
        .on_status(WebhookRequest::new(
            "jibri-abc",
            &status_body("jibri-abc", "EXPIRED"),
        ))
        .await;
    assert_eq!(
        outcome,
        WebhookOutcome::NoAction(NoActionReason::AlreadyGone)
    );
    assert_eq!(api.calls().len(), 1);

    // Deleted by someone else between the GET and the DELETE.
    let pod = idle_pod();
    let (client, _api) = mock_client(move |r: &Recorded| match r.method.as_str() {
        "GET" => (200, pod.clone()),
        _ => status_error(404, "NotFound", "gone"),
    });
    let c = controller(client, config());
    let outcome = c
        .on_status(WebhookRequest::new(
            "jibri-abc",
            &status_body("jibri-abc", "EXPIRED"),
        ))
        .await;
    assert_eq!(
        outcome,
        WebhookOutcome::NoAction(NoActionReason::AlreadyGone)
    );
    assert!(outcome.is_success());
}

#[tokio::test]
async fn api_errors_are_unavailable_and_counted() {
    let (client, _api) =
        mock_client(|_: &Recorded| status_error(500, "InternalError", "etcd down"));
    let c = controller(client, config());
    let outcome = c
        .on_status(WebhookRequest::new(
            "jibri-abc",
            &status_body("jibri-abc", "BUSY"),
        ))
        .await;
    assert!(
        matches!(outcome, WebhookOutcome::Unavailable(ref m) if m.contains("etcd down")),
        "{outcome:?}"
    );
    assert_eq!(c.stats().kubernetes_errors, 1);
    assert_eq!(c.stats().webhooks_of("unavailable"), 1);
}

#[tokio::test]
async fn malformed_and_foreign_requests_make_no_call() {
    let (client, api) = mock_client(pod_api(Some(idle_pod())));
    let c = controller(client, config());
    let cases: Vec<(WebhookRequest<'_>, &str)> = vec![
        (WebhookRequest::new("a%2Fb", b"{}"), "bad_request"),
        (WebhookRequest::new("jibri-abc", b"{not json"), "bad_request"),
        (WebhookRequest::new("jibri-abc", br#"{"jibriId":"jibri-abc","status":{"busyStatus":"BUSY"}}"#), "bad_request"),
        (WebhookRequest::new("jibri-abc", br#"{"jibriId":"jibri-abc","status":{"busyStatus":"NAPPING","health":{"healthStatus":"HEALTHY"}}}"#), "no_action"),
    ];
    for (request, label) in cases {
        let outcome = c.on_status(request).await;
        assert_eq!(outcome.label(), label, "{request:?} → {outcome:?}");
    }
    let other = status_body("jibri-xyz", "EXPIRED");
    let outcome = c.on_status(WebhookRequest::new("jibri-abc", &other)).await;
    assert!(
        matches!(outcome, WebhookOutcome::Forbidden(_)),
        "{outcome:?}"
    );
    assert!(api.calls().is_empty(), "{:?}", api.calls());
}

#[tokio::test]
async fn session_events_are_accepted_and_do_nothing() {
    let (client, api) = mock_client(pod_api(Some(idle_pod())));
    let c = controller(client, config());
    let body = br#"{"jibriId":"jibri-abc","session":{"sessionId":"RecordTest","status":"ON","sipAddress":null,"failure":null,"shouldRetry":null}}"#;
    let outcome = c
        .on_session_status(WebhookRequest::new("jibri-abc", body))
        .await;
    assert_eq!(
        outcome,
        WebhookOutcome::NoAction(NoActionReason::SessionEvent)
    );
    let outcome = c
        .on_session_status(WebhookRequest::new("jibri-abc", b"garbage"))
        .await;
    assert!(outcome.is_success());
    assert!(api.calls().is_empty());
}

#[tokio::test]
async fn deletions_emit_events() {
    let (client, api) = mock_client(|r: &Recorded| match r.method.as_str() {
        "POST" => (201, r.json()),
        _ => (200, idle_pod()),
    });
    let mut cfg = config();
    cfg.emit_events = true;
    let c = controller(client, cfg);
    let outcome = c
        .on_status(WebhookRequest::new(
            "jibri-abc",
            &status_body("jibri-abc", "EXPIRED"),
        ))
        .await;
    assert!(outcome.is_success());
    let event = api.wait_for(|r| r.method == "POST").await;
    assert_eq!(
        event.path(),
        "/apis/events.k8s.io/v1/namespaces/jitsi/events"
    );
    let body = event.json();
    assert_eq!(body["reason"], "JibriExpired");
    assert_eq!(body["action"], "Delete");
    assert_eq!(body["regarding"]["name"], "jibri-abc");
    assert_eq!(body["reportingController"], "jibri-pod-controller");
    assert_eq!(body["reportingInstance"], "ctrl-0");
}

#[tokio::test]
async fn the_sweeper_lists_by_busy_labels_page_by_page() {
    let failed = {
        let mut p = idle_pod();
        p["metadata"]["name"] = "jibri-old".into();
        p["metadata"]["uid"] = "u-1".into();
        p["metadata"]["labels"]["state"] = "busy".into();
        p["status"] = json!({"phase": "Failed"});
        p
    };
    let (client, api) = mock_client(move |r: &Recorded| match r.method.as_str() {
        "GET" if !r.uri.contains("continue=") => (
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"continue": "page-2"}, "items": [failed.clone()]}),
        ),
        "GET" => (
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
        ),
        _ => (200, failed.clone()),
    });
    let c = controller(client, config());
    let mut sweeper = c.sweeper(Arc::new(SingleNode::new("ctrl-0")));
    let report = sweeper.sweep_once().await.unwrap();
    assert_eq!(report.pods, 1);
    assert_eq!(
        report.deleted,
        vec![("jibri-old".to_owned(), DeletionReason::TerminalPhase)]
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 3, "{:?}", api.calls());
    assert_eq!(requests[0].path(), "/api/v1/namespaces/jitsi/pods");
    assert_eq!(
        requests[0].query(),
        vec![
            (
                "labelSelector".to_owned(),
                "app=jibri,state=busy".to_owned()
            ),
            ("limit".to_owned(), "100".to_owned())
        ]
    );
    assert!(
        requests[0]
            .uri
            .contains("labelSelector=app%3Djibri%2Cstate%3Dbusy"),
        "{}",
        requests[0].uri
    );
    assert!(
        requests[1]
            .query()
            .contains(&("continue".to_owned(), "page-2".to_owned()))
    );
    assert_eq!(
        (requests[2].method.as_str(), requests[2].path()),
        ("DELETE", "/api/v1/namespaces/jitsi/pods/jibri-old")
    );
}

#[tokio::test]
async fn the_sweeper_does_nothing_without_leadership() {
    let (client, api) = mock_client(pod_api(None));
    let c = controller(client, config());
    let mut leadership = jitsi_scaler_core::leader::MockLeadership::new();
    leadership.expect_token().return_const(None);
    let mut sweeper = c.sweeper(Arc::new(leadership));
    assert!(sweeper.sweep_once().await.unwrap().not_leader);
    assert!(api.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_sweep_loop_ticks_and_retries_failed_sweeps() {
    let lists = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = lists.clone();
    let (client, api) = mock_client(move |_: &Recorded| {
        // The first sweep fails on all three attempts of its listing.
        if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3 {
            status_error(503, "ServiceUnavailable", "apiserver restarting")
        } else {
            (
                200,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
            )
        }
    });
    let mut cfg = config();
    cfg.sweep_interval = Duration::from_secs(300);
    let c = controller(client, cfg);
    let cancel = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let task = tokio::spawn(
        c.sweeper(Arc::new(SingleNode::new("ctrl-0")))
            .run(cancel.clone()),
    );
    let hour = Duration::from_secs(3600);
    api.wait_within(hour, |_| {
        lists.load(std::sync::atomic::Ordering::SeqCst) >= 4
    })
    .await;
    let retried_after = started.elapsed();
    assert!(
        retried_after < Duration::from_secs(60),
        "a failed sweep is retried with back-off, not at the next tick: {retried_after:?}"
    );
    api.wait_within(hour, |_| {
        lists.load(std::sync::atomic::Ordering::SeqCst) >= 5
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(300),
        "then every SWEEP_INTERVAL"
    );
    cancel.cancel();
    task.await.unwrap();
    // The sweep in flight at cancellation completes: 3 attempts failed (1 sweep), 2 sweeps done.
    assert_eq!((c.stats().sweep_failures, c.stats().sweeps), (1, 2));
}

/// A Lease store with `resourceVersion` checks, like the API server's.
fn lease_api(initial: Option<Value>) -> impl Fn(&Recorded) -> (u16, Value) + Send + Sync + 'static {
    shared_lease_api(Arc::new(Mutex::new(initial)))
}

/// The same, over a store several clients share.
fn shared_lease_api(
    stored: Arc<Mutex<Option<Value>>>,
) -> impl Fn(&Recorded) -> (u16, Value) + Send + Sync + 'static {
    move |r: &Recorded| {
        let mut stored = stored.lock().unwrap();
        let version = |v: &Value| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("0")
                .parse::<u64>()
                .unwrap_or(0)
        };
        match r.method.as_str() {
            "GET" => match stored.as_ref() {
                Some(lease) => (200, lease.clone()),
                None => status_error(404, "NotFound", "leases not found"),
            },
            "POST" if stored.is_some() => status_error(409, "AlreadyExists", "exists"),
            "POST" => {
                let mut lease = r.json();
                lease["metadata"]["resourceVersion"] = "1".into();
                *stored = Some(lease.clone());
                (201, lease)
            }
            "PUT" => {
                let mut lease = r.json();
                let current = stored.as_ref().map(version).unwrap_or(0);
                if version(&lease) != current {
                    return status_error(409, "Conflict", "the object has been modified");
                }
                lease["metadata"]["resourceVersion"] = (current + 1).to_string().into();
                *stored = Some(lease.clone());
                (200, lease)
            }
            _ => status_error(405, "MethodNotAllowed", ""),
        }
    }
}

fn lease_config(identity: &str) -> LeaseConfig {
    LeaseConfig::new("jibri-pod-controller-lease", "jitsi", identity)
        .with_timing(Duration::from_secs(3), Duration::from_secs(1))
}

async fn until_leader(l: &LeaseLeadership, leader: bool) {
    let mut rx = l.subscribe();
    tokio::time::timeout(
        Duration::from_secs(60),
        rx.wait_for(|s| s.is_leader == leader),
    )
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn lease_create_renew_and_release_bodies() {
    let (client, api) = mock_client(lease_api(None));
    let l = Arc::new(
        LeaseLeadership::with_clock(client, lease_config("ctrl-0"), FixedClock::at(NOW_MS))
            .unwrap(),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (l, c) = (l.clone(), cancel.clone());
        async move { l.run(c).await }
    });
    until_leader(&l, true).await;
    assert_eq!(l.token(), Some(0));
    let create = api.wait_for(|r| r.method == "POST").await;
    assert_eq!(
        create.path(),
        "/apis/coordination.k8s.io/v1/namespaces/jitsi/leases"
    );
    assert_eq!(create.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        create.json(),
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "jibri-pod-controller-lease", "namespace": "jitsi"},
            "spec": {
                "acquireTime": "2026-11-22T11:29:04.000000Z",
                "holderIdentity": "ctrl-0",
                "leaseDurationSeconds": 3,
                "leaseTransitions": 0,
                "renewTime": "2026-11-22T11:29:04.000000Z"
            }
        })
    );
    let renew = api.wait_for(|r| r.method == "PUT").await;
    assert_eq!(
        renew.path(),
        "/apis/coordination.k8s.io/v1/namespaces/jitsi/leases/jibri-pod-controller-lease"
    );
    let body = renew.json();
    assert_eq!(
        body["metadata"]["resourceVersion"], "1",
        "guarded by the version read"
    );
    assert_eq!(body["spec"]["holderIdentity"], "ctrl-0");
    assert_eq!(body["spec"]["leaseTransitions"], 0);
    assert!(
        renew
            .query()
            .contains(&("fieldManager".to_owned(), "jitsi-scaler".to_owned()))
    );

    cancel.cancel();
    task.await.unwrap();
    assert_eq!(l.token(), None);
    let release = api
        .requests()
        .into_iter()
        .rfind(|r| r.method == "PUT")
        .unwrap();
    let body = release.json();
    assert_eq!(
        body["spec"]["holderIdentity"], "",
        "an empty string, never null"
    );
    assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
    assert_eq!(body["spec"]["leaseTransitions"], 0);
}

#[tokio::test(start_paused = true)]
async fn an_expired_reference_lease_is_acquired_with_one_more_transition() {
    let reference = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "jibri-pod-controller-lease", "namespace": "jitsi", "resourceVersion": "7"},
        "spec": {"acquireTime": "2026-11-22T10:00:00.000000Z", "holderIdentity": "reference-0",
                 "leaseDurationSeconds": 600, "leaseTransitions": 3,
                 "renewTime": "2026-11-22T11:10:00.152101+00:00"}
    });
    let (client, api) = mock_client(lease_api(Some(reference)));
    let l = Arc::new(
        LeaseLeadership::with_clock(client, lease_config("ctrl-0"), FixedClock::at(NOW_MS))
            .unwrap(),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (l, c) = (l.clone(), cancel.clone());
        async move { l.run(c).await }
    });
    until_leader(&l, true).await;
    assert_eq!(l.token(), Some(4), "fencing token = leaseTransitions");
    let acquire = api.wait_for(|r| r.method == "PUT").await;
    let spec = &acquire.json()["spec"];
    assert_eq!(spec["holderIdentity"], "ctrl-0");
    assert_eq!(spec["leaseTransitions"], 4);
    assert_eq!(spec["leaseDurationSeconds"], 3);
    assert_eq!(spec["acquireTime"], "2026-11-22T11:29:04.000000Z");
    assert_eq!(acquire.json()["metadata"]["resourceVersion"], "7");
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_live_lease_is_taken_only_after_it_stops_changing() {
    let held = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "jibri-pod-controller-lease", "namespace": "jitsi", "resourceVersion": "7"},
        "spec": {"holderIdentity": "other", "leaseDurationSeconds": 5, "leaseTransitions": 1,
                 "renewTime": "2026-11-22T11:29:03.000000Z"}
    });
    let (client, api) = mock_client(lease_api(Some(held)));
    // The wall clock stands still: only the observed-time rule can expire the lease.
    let l = Arc::new(
        LeaseLeadership::with_clock(client, lease_config("ctrl-0"), FixedClock::at(NOW_MS))
            .unwrap(),
    );
    let cancel = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let task = tokio::spawn({
        let (l, c) = (l.clone(), cancel.clone());
        async move { l.run(c).await }
    });
    let mut rx = l.subscribe();
    tokio::time::timeout(
        Duration::from_secs(60),
        rx.wait_for(|s| s.leader.as_deref() == Some("other")),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!l.status().is_leader);
    until_leader(&l, true).await;
    assert!(
        started.elapsed() > Duration::from_secs(5),
        "not before the record's 5 s ran out"
    );
    assert_eq!(l.token(), Some(2));
    assert_eq!(
        api.requests().iter().filter(|r| r.method == "PUT").count(),
        1
    );
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_is_taken_over_within_one_renew_period() {
    let store = Arc::new(Mutex::new(None));
    let candidate = |identity: &str| {
        let (client, _api) = mock_client(shared_lease_api(store.clone()));
        Arc::new(
            LeaseLeadership::with_clock(client, lease_config(identity), FixedClock::at(NOW_MS))
                .unwrap(),
        )
    };
    let (a, b) = (candidate("ctrl-a"), candidate("ctrl-b"));
    let (cancel_a, cancel_b) = (CancellationToken::new(), CancellationToken::new());
    let task_a = tokio::spawn({
        let (l, c) = (a.clone(), cancel_a.clone());
        async move { l.run(c).await }
    });
    until_leader(&a, true).await;
    let task_b = tokio::spawn({
        let (l, c) = (b.clone(), cancel_b.clone());
        async move { l.run(c).await }
    });
    let mut rx = b.subscribe();
    rx.wait_for(|s| s.leader.as_deref() == Some("ctrl-a"))
        .await
        .unwrap();
    // Both keep running for a while: only one leads.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(a.token().is_some() && b.token().is_none());

    cancel_a.cancel();
    task_a.await.unwrap();
    let released = tokio::time::Instant::now();
    until_leader(&b, true).await;
    let renew = lease_config("x").renew_period;
    assert!(
        released.elapsed() <= renew,
        "taken over {:?} after the release (renew period {renew:?})",
        released.elapsed()
    );
    assert_eq!(b.token(), Some(1));
    cancel_b.cancel();
    task_b.await.unwrap();
}
