//! Lease election between controllers against the real kube-apiserver (kube-test): one leader,
//! hand-over on release, take-over after a holder dies, and a reference-format lease.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use jitsi_scaler_core::leader::{Leadership, LeadershipStatus};
use jitsi_scaler_k8s::jibri::{JibriController, JibriControllerConfig};
use jitsi_scaler_k8s::labels::parse_label_set;
use jitsi_scaler_k8s::lease::{JIBRI_LEASE_NAME, LeaseConfig, LeaseLeadership};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Lease of 2 s renewed every 300 ms: the holder acts for at most 1.33 s after a renewal starts.
fn lease(ns: &str, identity: &str) -> LeaseConfig {
    LeaseConfig::new(JIBRI_LEASE_NAME, ns, identity)
        .with_timing(Duration::from_secs(2), Duration::from_millis(300))
}

struct Candidate {
    leadership: Arc<LeaseLeadership>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

fn start(client: &kube::Client, config: LeaseConfig) -> Candidate {
    let leadership = Arc::new(LeaseLeadership::new(client.clone(), config).unwrap());
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (l, c) = (leadership.clone(), cancel.clone());
        async move { l.run(c).await }
    });
    Candidate {
        leadership,
        cancel,
        task,
    }
}

/// Waits (bounded) for a status satisfying `pred`.
async fn until(l: &LeaseLeadership, pred: impl Fn(&LeadershipStatus) -> bool) -> LeadershipStatus {
    let mut rx = l.subscribe();
    tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|s| pred(s)))
        .await
        .expect("the leadership did not change in time")
        .unwrap()
        .clone()
}

#[tokio::test]
async fn one_leader_hand_over_on_release_and_take_over_after_a_crash() {
    let Some(client) = common::kube_test_client().await else {
        return;
    };
    let ns = common::namespace(&client, "lease").await;

    let a = start(&client, lease(&ns, "ctrl-a"));
    let first = until(&a.leadership, |s| s.is_leader).await;
    let token_a = first.token.unwrap();
    let b = start(&client, lease(&ns, "ctrl-b"));
    let seen = until(&b.leadership, |s| s.leader.as_deref() == Some("ctrl-a")).await;
    assert!(!seen.is_leader);

    // Only the leader sweeps.
    let mut cfg = JibriControllerConfig::new(
        parse_label_set("app=jibri,state=busy").unwrap(),
        2222,
        "ctrl-a",
        &ns,
    );
    cfg.emit_events = false;
    let controller = JibriController::new(client.clone(), cfg).unwrap();
    let report_a = controller
        .sweeper(a.leadership.clone())
        .sweep_once()
        .await
        .unwrap();
    let report_b = controller
        .sweeper(b.leadership.clone())
        .sweep_once()
        .await
        .unwrap();
    assert!(!report_a.not_leader);
    assert!(report_b.not_leader);

    // A stops (SIGTERM): it releases, and B takes over at its next round.
    a.cancel.cancel();
    a.task.await.unwrap();
    assert_eq!(a.leadership.token(), None);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let released = leases.get(JIBRI_LEASE_NAME).await.unwrap().spec.unwrap();
    assert!(
        released.holder_identity.as_deref() == Some("")
            || released.holder_identity.as_deref() == Some("ctrl-b"),
        "released (or already taken): {released:?}"
    );
    let b_leads = until(&b.leadership, |s| s.is_leader).await;
    let token_b = b_leads.token.unwrap();
    assert!(token_b > token_a, "tokens grow: {token_a} then {token_b}");

    // B crashes (no release): A' takes over once the lease runs out, and B stopped acting first.
    let a2 = start(&client, lease(&ns, "ctrl-a2"));
    until(&a2.leadership, |s| s.leader.as_deref() == Some("ctrl-b")).await;
    b.task.abort();
    let _ = b.task.await;
    let a2_leads = until(&a2.leadership, |s| s.is_leader).await;
    assert_eq!(
        b.leadership.token(),
        None,
        "the dead holder's token expired before the take-over"
    );
    assert!(a2_leads.token.unwrap() > token_b);
    let held = leases.get(JIBRI_LEASE_NAME).await.unwrap().spec.unwrap();
    assert_eq!(held.holder_identity.as_deref(), Some("ctrl-a2"));
    assert_eq!(held.lease_duration_seconds, Some(2));
    a2.cancel.cancel();
    a2.task.await.unwrap();
}

#[tokio::test]
async fn a_reference_format_lease_is_shared() {
    let Some(client) = common::kube_test_client().await else {
        return;
    };
    let ns = common::namespace(&client, "lease-ref").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    // As the reference writes it: `+00:00` timestamps from its renew patches, a 2 × 300 s TTL,
    // last renewed long ago by a pod that is gone.
    let reference: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": JIBRI_LEASE_NAME},
        "spec": {"acquireTime": "2026-01-01T10:00:00.000000Z", "holderIdentity": "reference-0",
                 "leaseDurationSeconds": 600, "leaseTransitions": 6,
                 "renewTime": "2026-01-01T11:10:00.152101+00:00"}
    }))
    .unwrap();
    leases
        .create(&PostParams::default(), &reference)
        .await
        .unwrap();

    let c = start(&client, lease(&ns, "ctrl-0"));
    let status = until(&c.leadership, |s| s.is_leader).await;
    assert_eq!(status.token, Some(7));
    let spec = leases.get(JIBRI_LEASE_NAME).await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("ctrl-0"));
    assert_eq!(spec.lease_transitions, Some(7));
    assert!(spec.renew_time.is_some() && spec.acquire_time.is_some());

    // A reference pod's blind merge patch takes the lease back: we notice and stop acting.
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string();
    let patch = json!({"spec": {"holderIdentity": "reference-1", "renewTime": now,
                                 "leaseDurationSeconds": 600, "leaseTransitions": 8}});
    leases
        .patch(
            JIBRI_LEASE_NAME,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let lost = until(&c.leadership, |s| !s.is_leader).await;
    assert_eq!(lost.leader.as_deref(), Some("reference-1"));
    c.cancel.cancel();
    c.task.await.unwrap();
    let spec = leases.get(JIBRI_LEASE_NAME).await.unwrap().spec.unwrap();
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some("reference-1"),
        "a follower releases nothing"
    );
}
