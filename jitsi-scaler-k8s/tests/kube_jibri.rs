//! The Jibri controller against the real kube-apiserver (kube-test) and fake Jibri health
//! servers on loopback addresses: the webhook flow BUSY → detached → EXPIRED → gone, and the
//! sweeper's rules.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::FixedClock;
use futures::TryStreamExt;
use jitsi_scaler_core::leader::SingleNode;
use jitsi_scaler_k8s::jibri::{
    DeletionReason, JibriController, JibriControllerConfig, NoActionReason, SweepReport,
    WebhookAction, WebhookOutcome, WebhookRequest,
};
use jitsi_scaler_k8s::labels::{LabelSelector, parse_label_set};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

const BUSY: &[(&str, &str)] = &[("app", "jibri"), ("state", "busy")];

fn config(ns: &str, health_port: u16) -> JibriControllerConfig {
    let mut c = JibriControllerConfig::new(
        parse_label_set("app=jibri,state=busy").unwrap(),
        health_port,
        "ctrl-0",
        ns,
    );
    c.pod_selector = LabelSelector::parse("app=jibri").unwrap();
    c.health_timeout = Duration::from_millis(300);
    c.sweep_unreachable_cycles = 2;
    c.list_page_size = 2;
    c
}

#[derive(Clone, Copy)]
enum Answer {
    Status(&'static str),
    Hang,
}

/// A fake Jibri external API on `addr`; counts health requests.
async fn fake_jibri(addr: SocketAddr, answer: Answer) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/jibri/api/v1.0/health",
        axum::routing::get(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                match answer {
                    Answer::Status(s) => format!(
                        r#"{{"status":{{"busyStatus":"{s}","health":{{"healthStatus":"HEALTHY","details":{{}}}}}}}}"#
                    ),
                    Answer::Hang => std::future::pending::<String>().await,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let bound = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (bound, hits)
}

async fn sweep(sweeper: &mut jitsi_scaler_k8s::jibri::Sweeper) -> SweepReport {
    tokio::time::timeout(Duration::from_secs(30), sweeper.sweep_once())
        .await
        .expect("a sweep is bounded by its health timeouts")
        .unwrap()
}

fn sorted(mut v: Vec<(String, DeletionReason)>) -> Vec<(String, DeletionReason)> {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

async fn names(pods: &Api<Pod>) -> Vec<String> {
    let mut names: Vec<String> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn busy_detaches_and_expired_deletes() {
    let Some(client) = common::kube_test_client().await else {
        return;
    };
    let ns = common::namespace(&client, "webhook").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = common::jibri_pod(
        "jibri-0",
        &[
            ("app", "jibri"),
            ("state", "idle"),
            ("pod-template-hash", "7d9f8"),
        ],
        true,
    );
    common::create_pod(&client, &ns, &pod).await;
    let c = JibriController::new(client.clone(), config(&ns, 2222)).unwrap();

    let busy = common::status_body("jibri-0", "BUSY");
    let outcome = c.on_status(WebhookRequest::new("jibri-0", &busy)).await;
    assert_eq!(outcome, WebhookOutcome::Ok(WebhookAction::Detached));
    let detached = pods.get("jibri-0").await.unwrap();
    let labels = detached.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("state").map(String::as_str), Some("busy"));
    assert_eq!(labels.get("app").map(String::as_str), Some("jibri"));
    assert_eq!(
        labels.get("pod-template-hash").map(String::as_str),
        Some("7d9f8"),
        "other labels stay"
    );
    let annotations = detached.metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations
            .get("cluster-autoscaler.kubernetes.io/safe-to-evict")
            .map(String::as_str),
        Some("false")
    );
    assert_eq!(
        annotations
            .get("controller.kubernetes.io/pod-deletion-cost")
            .map(String::as_str),
        Some("10000")
    );
    assert!(annotations.contains_key("jitsi-scaler.io/busy-since"));
    let managers: Vec<(String, String)> = detached
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("jibri-pod-controller".into(), "Apply".into())),
        "{managers:?}"
    );

    let again = c.on_status(WebhookRequest::new("jibri-0", &busy)).await;
    assert_eq!(
        again,
        WebhookOutcome::NoAction(NoActionReason::AlreadyDetached)
    );

    let expired = common::status_body("jibri-0", "EXPIRED");
    let outcome = c.on_status(WebhookRequest::new("jibri-0", &expired)).await;
    assert_eq!(
        outcome,
        WebhookOutcome::Ok(WebhookAction::Deleted(DeletionReason::Expired))
    );
    assert!(pods.get_opt("jibri-0").await.unwrap().is_none());
    let outcome = c.on_status(WebhookRequest::new("jibri-0", &expired)).await;
    assert_eq!(
        outcome,
        WebhookOutcome::NoAction(NoActionReason::AlreadyGone),
        "Jibri re-sends EXPIRED"
    );

    // BUSY for a pod that does not exist creates nothing.
    let ghost = c
        .on_status(WebhookRequest::new(
            "ghost",
            &common::status_body("ghost", "BUSY"),
        ))
        .await;
    assert_eq!(ghost, WebhookOutcome::NoAction(NoActionReason::PodNotFound));
    assert!(pods.get_opt("ghost").await.unwrap().is_none());

    let stats = c.stats();
    assert_eq!(
        (
            stats.busy_patches,
            stats.deletions_of(DeletionReason::Expired)
        ),
        (1, 1)
    );
    assert!(c.is_ready());

    // The deletion is reported as an Event on the pod.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let stream = watcher(events, watcher::Config::default())
        .applied_objects()
        .try_filter(|e| std::future::ready(e.reason.as_deref() == Some("JibriExpired")));
    let mut stream = std::pin::pin!(stream);
    let found = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(
        found.regarding.and_then(|r| r.name).as_deref(),
        Some("jibri-0")
    );
}

#[tokio::test]
async fn the_sweeper_deletes_done_and_stuck_pods_only() {
    let Some(client) = common::kube_test_client().await else {
        return;
    };
    let ns = common::namespace(&client, "sweeper").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // One port, several loopback addresses: 127.0.0.1 EXPIRED, .2 BUSY, .3 IDLE, .4 nothing
    // listening (refused), .5 never answers.
    let (expired_at, _) =
        fake_jibri("127.0.0.1:0".parse().unwrap(), Answer::Status("EXPIRED")).await;
    let port = expired_at.port();
    let at = |ip: &str| format!("{ip}:{port}").parse::<SocketAddr>().unwrap();
    fake_jibri(at("127.0.0.2"), Answer::Status("BUSY")).await;
    fake_jibri(at("127.0.0.3"), Answer::Status("IDLE")).await;
    let (_, hung_hits) = fake_jibri(at("127.0.0.5"), Answer::Hang).await;

    let layout: &[(&str, Option<(&str, &str)>)] = &[
        ("p-expired", Some(("Running", "127.0.0.1"))),
        ("p-busy", Some(("Running", "127.0.0.2"))),
        ("p-idle", Some(("Running", "127.0.0.3"))),
        ("p-refused", Some(("Running", "127.0.0.4"))),
        ("p-talking", Some(("Running", "127.0.0.4"))),
        ("p-hung", Some(("Running", "127.0.0.5"))),
        ("p-failed", Some(("Failed", "127.0.0.1"))),
        ("p-noip", None),
    ];
    for (name, status) in layout {
        common::create_pod(&client, &ns, &common::jibri_pod(name, BUSY, false)).await;
        if let Some((phase, ip)) = status {
            common::set_pod_status(&client, &ns, name, phase, Some(ip)).await;
        }
    }
    // A spare Jibri of the Deployment: not detached, never swept.
    common::create_pod(
        &client,
        &ns,
        &common::jibri_pod("spare", &[("app", "jibri"), ("state", "idle")], true),
    )
    .await;
    common::set_pod_status(&client, &ns, "spare", "Running", Some("127.0.0.1")).await;

    let clock = FixedClock::at(common::unix_now() as i64 * 1000);
    let c = JibriController::with_clock(client.clone(), config(&ns, port), clock.clone()).unwrap();
    let mut sweeper = c.sweeper(Arc::new(SingleNode::new("ctrl-0")));

    let first = sweep(&mut sweeper).await;
    assert_eq!(first.pods, 8, "8 detached pods over 4 pages of 2");
    assert_eq!(
        sorted(first.deleted),
        vec![
            ("p-expired".to_owned(), DeletionReason::Expired),
            ("p-failed".to_owned(), DeletionReason::TerminalPhase)
        ]
    );
    assert_eq!(first.unreachable, 4, "refused ×2, hung (timed out), no IP");
    assert!(hung_hits.load(Ordering::SeqCst) >= 1);

    clock.advance(Duration::from_secs(601));
    // p-talking still sends webhooks: the unreachable rule must spare it (K10).
    let outcome = c
        .on_status(WebhookRequest::new(
            "p-talking",
            &common::status_body("p-talking", "BUSY"),
        ))
        .await;
    assert_eq!(outcome, WebhookOutcome::Ok(WebhookAction::Detached));

    let second = sweep(&mut sweeper).await;
    assert_eq!(
        sorted(second.deleted),
        vec![
            ("p-hung".to_owned(), DeletionReason::Unreachable),
            ("p-idle".to_owned(), DeletionReason::IdleDetached),
            ("p-noip".to_owned(), DeletionReason::Unreachable),
            ("p-refused".to_owned(), DeletionReason::Unreachable),
        ]
    );
    assert_eq!(names(&pods).await, vec!["p-busy", "p-talking", "spare"]);
    let stats = c.stats();
    assert_eq!(stats.deletions_of(DeletionReason::Unreachable), 3);
    assert_eq!(stats.deletions_of(DeletionReason::IdleDetached), 1);
    assert_eq!(stats.sweeps, 2);
    assert_eq!(stats.health_unreachable, 4);
}

#[tokio::test]
async fn jibri_api_on_localhost_only_is_detected() {
    let Some(client) = common::kube_test_client().await else {
        return;
    };
    let ns = common::namespace(&client, "k10").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    for name in ["rec-a", "rec-b"] {
        common::create_pod(&client, &ns, &common::jibri_pod(name, BUSY, false)).await;
        common::set_pod_status(&client, &ns, name, "Running", Some("127.0.0.1")).await;
    }
    let c = JibriController::new(client.clone(), config(&ns, port)).unwrap();
    let outcome = c
        .on_status(WebhookRequest::new(
            "rec-a",
            &common::status_body("rec-a", "BUSY"),
        ))
        .await;
    assert!(outcome.is_success());
    let mut sweeper = c.sweeper(Arc::new(SingleNode::new("ctrl-0")));
    let report = sweep(&mut sweeper).await;
    assert!(report.refused_everywhere);
    assert!(report.deleted.is_empty());
    assert_eq!(c.stats().health_api_refused, 1);
}

#[tokio::test]
async fn ipv6_pod_ips_are_checked() {
    let Some(client) = common::kube_test_client().await else {
        return;
    };
    let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    };
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (addr, hits) = fake_jibri(addr, Answer::Status("EXPIRED")).await;
    let ns = common::namespace(&client, "ipv6").await;
    common::create_pod(&client, &ns, &common::jibri_pod("rec-v6", BUSY, false)).await;
    common::set_pod_status(&client, &ns, "rec-v6", "Running", Some("::1")).await;
    let c = JibriController::new(client.clone(), config(&ns, addr.port())).unwrap();
    let mut sweeper = c.sweeper(Arc::new(SingleNode::new("ctrl-0")));
    let report = sweep(&mut sweeper).await;
    assert_eq!(
        report.deleted,
        vec![("rec-v6".to_owned(), DeletionReason::Expired)]
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
