//! Engine tests: a real `Scaler` over a memory store, a fake cloud and simulated sidecars, on
//! paused tokio time.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use jitsi_scaler_core::engine::{EngineEvent, Scaler, ScalerOptions};
use jitsi_scaler_core::leader::{FencingToken, Leadership, LeadershipStatus};
use jitsi_scaler_core::plan::{Autoscale, LaunchPlan};
use jitsi_scaler_core::policy::{Decision, Direction, HoldReason};
use jitsi_scaler_core::provider::{MockCloudProvider, ProviderError, ProviderRegistry};
use jitsi_scaler_core::store::{Expect, GroupRecord, MemoryStore, Store, StoreError};
use serde_json::json;
use support::*;
use tokio::time::advance;
use tokio_util::sync::CancellationToken;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn load_raises_desired_and_the_launcher_launches() {
    let h = Harness::new();
    h.put(jvb_group("jvb", 1, 2, 5)).await;
    h.load("jvb", &["a", "b"], 0.9, 120, 30).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert!(matches!(
        r.autoscale,
        Some(Autoscale::Ran {
            decision: Decision::Scale {
                direction: Direction::Up,
                to: 3,
                ..
            },
            ..
        })
    ));
    assert_eq!(h.desired("jvb").await, 3);
    assert_eq!(r.launched.len(), 1);
    assert_eq!(h.cloud.launched_count(), 1);
    assert_eq!(
        h.ids("jvb").await.len(),
        3,
        "the placeholder counts at once"
    );
    let audit = h.store.group_audit("jvb").await.unwrap().unwrap();
    assert_eq!(
        audit.auto_scaler_action_items[0].action_type,
        "increaseDesiredCount"
    );
    assert_eq!(audit.launcher_action_items[0].action_type, "scaleUp");
    assert_eq!(audit.launcher_action_items[0].scale_quantity, 1);
    // The cooldown holds the autoscaler; count == desired: the launcher idles.
    advance(secs(10)).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(r.autoscale, Some(Autoscale::Cooldown));
    assert_eq!(r.launch, Some(LaunchPlan::Idle));
    assert_eq!(h.cloud.launched_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn scale_down_drains_then_terminates_on_confirmation() {
    let h = Harness::new();
    let mut g = jvb_group("jvb", 1, 3, 5);
    g.termination_policy = Some(jitsi_scaler_core::group::TerminationPolicy::OnConfirm);
    h.put(g).await;
    h.load("jvb", &["a", "b", "c"], 0.1, 120, 30).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(h.desired("jvb").await, 2);
    assert_eq!(r.flagged.len(), 1);
    let victim = r.flagged[0].clone();
    let c = h.jvb("jvb", &victim, 0.1).await;
    assert!(c.shutdown, "the victim's sidecar is told to shut down");
    assert!(!c.sample_written);
    // Draining, not yet confirmed: nothing terminated.
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert!(r.terminated.is_empty());
    assert_eq!(
        r.launch,
        Some(LaunchPlan::Idle),
        "the victim no longer counts"
    );
    h.confirm("jvb", &victim).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(r.terminated, vec![victim.clone()]);
    assert_eq!(h.cloud.terminations(), vec![victim.clone()]);
    assert!(
        !h.ids("jvb").await.contains(&victim),
        "its state is removed"
    );
    let report = h.scaler.group_report("jvb").await.unwrap();
    assert_eq!(report.un_tracked_count, 0, "no phantom untracked instance");
    let audit = h.store.instance_audit("jvb").await.unwrap();
    let a = audit.iter().find(|a| a.instance_id == victim).unwrap();
    assert!(
        a.request_to_terminate.is_some()
            && a.termination_confirmation.is_some()
            && a.server_terminate.is_some()
    );
    // A second confirmation does not terminate twice.
    h.confirm("jvb", &victim).await;
    h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(h.cloud.terminations().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_terminated_instance_leaves_the_cached_cloud_list_at_once() {
    let h = Harness::new();
    let mut g = jvb_group("jvb", 1, 3, 5);
    g.termination_policy = Some(jitsi_scaler_core::group::TerminationPolicy::OnConfirm);
    h.put(g).await;
    for id in ["a", "b", "c"] {
        h.cloud.add_untracked(id);
    }
    h.load("jvb", &["a", "b", "c"], 0.1, 120, 30).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert!(r.listed, "the first pass lists the cloud");
    let victim = r.flagged[0].clone();
    h.confirm("jvb", &victim).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(r.terminated, vec![victim.clone()]);
    assert!(!r.listed, "the list is still fresh: it is not read again");
    let snap = h.store.snapshot("jvb", 0).await.unwrap().unwrap();
    let mut cached: Vec<&str> = snap
        .runtime
        .cloud
        .as_ref()
        .unwrap()
        .instances
        .iter()
        .map(|c| c.instance_id.as_str())
        .collect();
    cached.sort_unstable();
    let mut kept = vec!["a", "b", "c"];
    kept.retain(|id| *id != victim);
    assert_eq!(
        cached, kept,
        "the cached list drops the terminated instance"
    );
    let report = h.scaler.group_report("jvb").await.unwrap();
    assert_eq!(report.un_tracked_count, 0, "no phantom untracked instance");
}

#[tokio::test(start_paused = true)]
async fn the_sidecar_policy_never_terminates() {
    let h = Harness::new();
    h.put(jvb_group("jvb", 1, 2, 5)).await;
    h.load("jvb", &["a", "b"], 0.1, 120, 30).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    let victim = r.flagged[0].clone();
    h.confirm("jvb", &victim).await;
    advance(secs(7200)).await;
    h.scaler.reconcile_now("jvb").await.unwrap();
    assert!(h.cloud.terminations().is_empty());
}

fn timeout_group() -> jitsi_scaler_core::group::Group {
    let mut g = jvb_group("jvb", 1, 2, 5);
    g.termination_policy = Some(jitsi_scaler_core::group::TerminationPolicy::OnConfirmOrTimeout);
    g.drain_timeout_sec = Some(600);
    g
}

#[tokio::test(start_paused = true)]
async fn a_drain_that_never_ends_is_terminated_after_the_timeout() {
    let h = Harness::new();
    h.put(timeout_group()).await;
    h.load("jvb", &["a", "b"], 0.1, 120, 30).await;
    let victim = h.scaler.reconcile_now("jvb").await.unwrap().flagged[0].clone();
    // The victim keeps reporting (a long conference) but never confirms.
    for _ in 0..9 {
        advance(secs(60)).await;
        h.jvb("jvb", &victim, 0.5).await;
        h.jvb("jvb", if victim == "a" { "b" } else { "a" }, 0.5)
            .await;
        let r = h.scaler.reconcile_now("jvb").await.unwrap();
        assert!(r.terminated.is_empty(), "not before the timeout");
    }
    advance(secs(61)).await;
    h.jvb("jvb", &victim, 0.5).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(r.terminated, vec![victim]);
    assert!(h.observer.events().iter().any(|e| matches!(
        e,
        EngineEvent::Terminated {
            reason: "drain_timeout",
            ..
        }
    )));
}

#[tokio::test(start_paused = true)]
async fn a_draining_instance_that_goes_silent_is_terminated() {
    let h = Harness::new();
    h.put(timeout_group()).await;
    h.load("jvb", &["a", "b"], 0.1, 120, 30).await;
    let victim = h.scaler.reconcile_now("jvb").await.unwrap().flagged[0].clone();
    advance(secs(120)).await;
    assert!(
        h.scaler
            .reconcile_now("jvb")
            .await
            .unwrap()
            .terminated
            .is_empty()
    );
    advance(secs(61)).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(r.terminated, vec![victim]);
    assert!(h.observer.events().iter().any(|e| matches!(
        e,
        EngineEvent::Terminated {
            reason: "silent",
            ..
        }
    )));
}

#[tokio::test(start_paused = true)]
async fn throttling_backs_launches_off_for_at_least_retry_after() {
    let h = Harness::new();
    h.put(jvb_group("jvb", 2, 2, 5)).await;
    h.cloud.script(Next::Fail(ProviderError::Throttled {
        retry_after: Some(secs(90)),
        message: "API rate limit exceeded.".into(),
    }));
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert!(r.launched.is_empty());
    assert_eq!(h.cloud.launches().len(), 1);
    let runtime = h.store.snapshot("jvb", 0).await.unwrap().unwrap().runtime;
    assert_eq!(runtime.launch_failures, 1);
    assert_eq!(runtime.launch_retry_at_ms, Some(T0 + 90_000));
    assert_eq!(
        runtime.pending_launch, None,
        "the cloud answered: nothing pending"
    );
    advance(secs(60)).await;
    h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(h.cloud.launches().len(), 1, "backing off");
    advance(secs(31)).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(r.launched.len(), 2);
    let runtime = h.store.snapshot("jvb", 0).await.unwrap().unwrap().runtime;
    assert_eq!(runtime.launch_failures, 0, "reset on success");
    let audit = h.store.group_audit("jvb").await.unwrap().unwrap();
    assert!(
        audit
            .launcher_action_items
            .iter()
            .any(|l| l.action_type == "launchFailed")
    );
}

#[tokio::test(start_paused = true)]
async fn transient_failures_back_off_exponentially() {
    let h = Harness::new();
    h.put(jvb_group("jvb", 1, 1, 5)).await;
    for _ in 0..3 {
        h.cloud.script(Next::Fail(ProviderError::Transient(
            "502 Bad Gateway".into(),
        )));
    }
    let mut attempts_at = Vec::new();
    for t in 0..300 {
        let before = h.cloud.launches().len();
        h.scaler.reconcile_now("jvb").await.unwrap();
        if h.cloud.launches().len() > before {
            attempts_at.push(t);
        }
        advance(secs(1)).await;
    }
    assert_eq!(
        attempts_at,
        vec![0, 30, 90, 210],
        "30 s, 60 s, 120 s between attempts"
    );
    assert_eq!(h.ids("jvb").await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_partial_launch_records_what_launched() {
    let h = Harness::new();
    h.put(jvb_group("jvb", 3, 3, 5)).await;
    h.cloud.script(Next::Partial(
        2,
        ProviderError::Capacity("Out of host capacity".into()),
    ));
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(r.launched.len(), 2);
    assert_eq!(h.ids("jvb").await.len(), 2);
    let audit = h.store.group_audit("jvb").await.unwrap().unwrap();
    let up = audit
        .launcher_action_items
        .iter()
        .find(|l| l.action_type == "scaleUp")
        .unwrap();
    assert_eq!(up.scale_quantity, 2);
    let runtime = h.store.snapshot("jvb", 0).await.unwrap().unwrap().runtime;
    assert_eq!(runtime.launch_failures, 1);
    assert!(runtime.last_launch_error.unwrap().contains("capacity"));
    advance(secs(30)).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(r.launched.len(), 1, "the missing one, after the back-off");
}

#[tokio::test(start_paused = true)]
async fn a_silent_instance_expires_is_replaced_and_silence_never_scales_down() {
    let h = Harness::new();
    h.put(jvb_group("jvb", 1, 2, 5)).await;
    h.load("jvb", &["a", "b"], 0.5, 60, 30).await;
    // Nobody reports any more: no data, so no scale-down decision.
    advance(secs(200)).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert!(matches!(
        r.autoscale,
        Some(Autoscale::Ran {
            decision: Decision::Hold(HoldReason::NoData),
            ..
        })
    ));
    assert_eq!(h.desired("jvb").await, 2);
    assert!(h.observer.events().iter().any(|e| matches!(
        e,
        EngineEvent::DecisionSkipped {
            reason: "no_data",
            ..
        }
    )));
    // "b" keeps reporting, "a" stays silent past the idle TTL (300 s): it expires and is replaced.
    for _ in 0..3 {
        h.jvb("jvb", "b", 0.5).await;
        advance(secs(30)).await;
    }
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(r.expired, vec!["a".to_owned()]);
    assert_eq!(r.launched.len(), 1);
    assert!(!h.ids("jvb").await.contains(&"a".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn untracked_cloud_instances_reduce_launches() {
    let h = Harness::new();
    h.put(jvb_group("jvb", 0, 0, 5)).await;
    h.cloud.add_untracked("ghost-1");
    h.cloud.add_untracked("ghost-2");
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert!(r.listed, "the first pass lists the cloud");
    let mut rec = h.group("jvb").await;
    rec.group.scaling_options.desired_count = 4;
    h.store.put_group(&rec, Expect::Any, None).await.unwrap();
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(
        r.launch,
        Some(LaunchPlan::Launch { quantity: 2 }),
        "4 wanted, 2 already run untracked"
    );
    assert_eq!(r.launched.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_untracked_throttle_skips_instead_of_failing() {
    let mut o = options();
    o.pass.max_throttle_threshold = 3;
    let h = Harness::with_options(o);
    h.put(jvb_group("jvb", 0, 0, 10)).await;
    for i in 0..3 {
        h.cloud.add_untracked(&format!("ghost-{i}"));
    }
    h.scaler.reconcile_now("jvb").await.unwrap(); // lists the cloud
    let mut g = h.group("jvb").await;
    g.group.scaling_options.desired_count = 8;
    h.store.put_group(&g, Expect::Any, None).await.unwrap();
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(
        r.launch,
        Some(LaunchPlan::Throttled {
            untracked: 3,
            threshold: 3
        })
    );
    assert!(h.cloud.launches().is_empty());
    let audit = h.store.group_audit("jvb").await.unwrap().unwrap();
    assert_eq!(
        audit.launcher_action_items[0].action_type,
        "launchThrottled"
    );
}

#[tokio::test(start_paused = true)]
async fn instances_launched_under_protection_are_never_chosen() {
    let h = Harness::new();
    h.put(jvb_group("jvb", 0, 2, 5)).await;
    let mut rec = h.group("jvb").await;
    rec.protected_until_ms = Some(T0 + 600_000);
    h.store.put_group(&rec, Expect::Any, None).await.unwrap();
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    let protected = r.launched.clone();
    assert_eq!(protected.len(), 2);
    for id in &protected {
        assert!(h.store.flags(id).await.unwrap().is_protected(h.now()));
    }
    h.jvb("jvb", "x", 0.0).await;
    for id in &protected {
        h.jvb("jvb", id, 0.0).await;
    }
    let mut rec = h.group("jvb").await;
    rec.group.scaling_options.desired_count = 0;
    rec.group.enable_auto_scale = false;
    h.store.put_group(&rec, Expect::Any, None).await.unwrap();
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(r.launch, Some(LaunchPlan::ScaleDown { victims: 3 }));
    assert_eq!(
        r.flagged,
        vec!["x".to_owned()],
        "only the unprotected instance"
    );
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_period_applies_its_options() {
    let h = Harness::new();
    let mut g = jvb_group("jvb", 1, 1, 5);
    g.scheduled_scaling = Some(
        serde_json::from_value(json!({"enabled": true, "timezone": "UTC", "periods": [
            {"name": "always", "dayOfWeek": [0,1,2,3,4,5,6], "startHour": 0, "endHour": 0,
             "inhibitScaleDown": true, "scalingOptions": {"minDesired": 3, "desiredCount": 3, "maxDesired": 8}}]}))
        .unwrap(),
    );
    h.put(g).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    let rec = h.group("jvb").await;
    let o = &rec.group.scaling_options;
    assert_eq!((o.min_desired, o.desired_count, o.max_desired), (3, 3, 8));
    assert_eq!(
        rec.group.scheduled_scaling_active_period.as_deref(),
        Some("always")
    );
    assert_eq!(
        rec.group
            .scheduled_scaling_base_options
            .as_ref()
            .map(|b| b.desired_count),
        Some(1)
    );
    assert!(rec.in_cooldown(h.now()));
    assert_eq!(r.autoscale, Some(Autoscale::Cooldown));
    assert_eq!(r.launched.len(), 3);
    let audit = h.store.group_audit("jvb").await.unwrap().unwrap();
    let t = &audit.auto_scaler_action_items[0];
    assert_eq!(t.action_type, "scheduledScalingTransition");
    assert_eq!(t.detail.as_ref().unwrap()["toPeriod"], "always");
    assert_eq!(t.detail.as_ref().unwrap()["fromPeriod"], "none");
    // The period inhibits scale-down even under no load.
    advance(secs(130)).await;
    for id in h.ids("jvb").await {
        h.jvb("jvb", &id, 0.0).await;
    }
    advance(secs(61)).await;
    for id in h.ids("jvb").await {
        h.jvb("jvb", &id, 0.0).await;
    }
    h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(h.desired("jvb").await, 3);
}

#[tokio::test(start_paused = true)]
async fn an_availability_group_scales_from_zero() {
    let h = Harness::new();
    h.put(jibri_group("jibri", 0, 0, 3)).await;
    let r = h.scaler.reconcile_now("jibri").await.unwrap();
    assert_eq!(h.desired("jibri").await, 1);
    assert_eq!(r.launched.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn dry_run_writes_placeholders_and_calls_no_provider() {
    let mut o = options();
    o.dry_run = true;
    let h = Harness::with_options(o);
    h.put(jvb_group("jvb", 2, 2, 5)).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(r.launched.len(), 2);
    assert!(h.cloud.launches().is_empty());
    let states = h.store.instances("jvb").await.unwrap();
    assert!(
        states
            .iter()
            .all(|s| s.state.dry_run && s.state.status.provisioning)
    );
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert!(
        r.launched.is_empty(),
        "the placeholders count: no launch every cycle (D10)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_launch_without_answer_is_retried_with_the_same_keys() {
    let mut o = options();
    o.provider_timeout = secs(60);
    let h = Harness::with_options(o);
    h.put(jvb_group("jvb", 2, 2, 5)).await;
    h.cloud.script(Next::Hang);
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert!(r.launched.is_empty());
    let pending = h
        .store
        .snapshot("jvb", 0)
        .await
        .unwrap()
        .unwrap()
        .runtime
        .pending_launch
        .unwrap();
    assert_eq!(pending.slots.len(), 2);
    advance(secs(31)).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(r.launched.len(), 2);
    let launches = h.cloud.launches();
    assert_eq!(launches.len(), 2);
    assert_eq!(
        launches[0].slots, launches[1].slots,
        "same names and idempotency keys"
    );
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert!(r.launched.is_empty());
    assert_eq!(
        h.cloud.running().len(),
        2,
        "one instance per slot, never more"
    );
}

/// A launch that succeeds clears its persisted intent, even when the pass changed nothing
/// else in the group's runtime (here: no cloud listing is due), so the next pass does not send
/// the same launch again.
#[tokio::test(start_paused = true)]
async fn a_completed_launch_leaves_no_intent_behind() {
    let h = Harness::new();
    let mut group = jvb_group("jvb", 0, 1, 5);
    group.enable_auto_scale = false;
    h.put(group).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(r.launched.len(), 1);
    assert!(r.listed, "the first pass lists the cloud");
    h.scaler
        .set_desired("jvb", &json!({"desiredCount": 3}))
        .await
        .unwrap();
    advance(secs(1)).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(r.launched.len(), 2);
    assert!(
        !r.listed,
        "no listing due: the launch is the pass's only runtime change"
    );
    let runtime = h.store.snapshot("jvb", 0).await.unwrap().unwrap().runtime;
    assert_eq!(runtime.pending_launch, None, "the intent is done");
    advance(secs(1)).await;
    let r = h.scaler.reconcile_now("jvb").await.unwrap();
    assert!(r.launched.is_empty());
    assert_eq!(h.cloud.launches().len(), 2, "no launch was sent again");
    let audit = h.store.group_audit("jvb").await.unwrap().unwrap();
    let scale_ups = audit
        .launcher_action_items
        .iter()
        .filter(|a| a.action_type == "scaleUp")
        .count();
    assert_eq!(scale_ups, 2, "each launch audited once");
}

/// Leads for the first `calls` token reads, then loses the lease.
#[derive(Debug)]
struct LosingLeader {
    calls: AtomicUsize,
    lead_for: usize,
    token: FencingToken,
}

#[async_trait]
impl Leadership for LosingLeader {
    fn token(&self) -> Option<FencingToken> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        (n < self.lead_for).then_some(self.token)
    }
    async fn run(&self, cancel: CancellationToken) {
        cancel.cancelled().await;
    }
    fn status(&self) -> LeadershipStatus {
        LeadershipStatus::default()
    }
}

#[tokio::test(start_paused = true)]
async fn leadership_lost_mid_reconcile_makes_no_further_provider_call() {
    let clock = Arc::new(jitsi_scaler_core::clock::TokioClock::starting_at(T0));
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    store
        .put_group(
            &GroupRecord::new(jvb_group("jvb", 2, 2, 5)),
            Expect::Any,
            None,
        )
        .await
        .unwrap();
    let mut mock = MockCloudProvider::new();
    mock.expect_name().return_const("fake".to_owned());
    mock.expect_launch().never();
    mock.expect_list().never();
    mock.expect_terminate().never();
    let scaler = Scaler::builder(store.clone())
        .providers(ProviderRegistry::new().with(Arc::new(mock)))
        .leadership(Arc::new(LosingLeader {
            calls: AtomicUsize::new(0),
            lead_for: 1,
            token: 7,
        }))
        .clock(clock)
        .options(options())
        .build();
    let r = scaler.reconcile_now("jvb").await.unwrap();
    assert!(r.leader);
    assert!(r.launched.is_empty());
    // The intent was persisted for the next leader.
    let pending = store
        .snapshot("jvb", 0)
        .await
        .unwrap()
        .unwrap()
        .runtime
        .pending_launch;
    assert_eq!(pending.map(|p| p.slots.len()), Some(2));
}

/// Leads until a given instant of (paused) tokio time.
#[derive(Debug)]
struct LeaderUntil {
    until: tokio::time::Instant,
    token: FencingToken,
}

#[async_trait]
impl Leadership for LeaderUntil {
    fn token(&self) -> Option<FencingToken> {
        (tokio::time::Instant::now() < self.until).then_some(self.token)
    }
    async fn run(&self, cancel: CancellationToken) {
        cancel.cancelled().await;
    }
    fn status(&self) -> LeadershipStatus {
        LeadershipStatus::default()
    }
}

/// A cloud client that is throttled on its first attempt and sends the launch again after
/// waiting 3 s, as a real client does.
#[derive(Debug, Default)]
struct RetryingCloud {
    attempts: AtomicUsize,
}

#[async_trait]
impl jitsi_scaler_core::provider::CloudProvider for RetryingCloud {
    fn name(&self) -> &str {
        "fake"
    }
    async fn launch(
        &self,
        _group: &jitsi_scaler_core::group::Group,
        request: &jitsi_scaler_core::provider::LaunchRequest,
    ) -> jitsi_scaler_core::provider::LaunchOutcome {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(secs(3)).await;
        self.attempts.fetch_add(1, Ordering::SeqCst);
        jitsi_scaler_core::provider::LaunchOutcome {
            launched: request
                .slots
                .iter()
                .enumerate()
                .map(|(slot, s)| jitsi_scaler_core::provider::LaunchedInstance {
                    slot,
                    instance_id: format!("vm-{slot}"),
                    display_name: s.display_name.clone(),
                })
                .collect(),
            error: None,
        }
    }
    async fn list(
        &self,
        _group: &jitsi_scaler_core::group::Group,
    ) -> Result<Vec<jitsi_scaler_core::instance::CloudInstance>, ProviderError> {
        Ok(Vec::new())
    }
    async fn terminate(
        &self,
        _group: &jitsi_scaler_core::group::Group,
        _instance_id: &str,
    ) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// A provider call in flight when the lease lapses is abandoned: a leader that was paused and
/// resumes after another took over sends nothing more (here: no retry), records nothing, and
/// leaves the persisted intent to the next leader.
#[tokio::test(start_paused = true)]
async fn a_provider_call_in_flight_is_abandoned_when_the_leadership_lapses() {
    let clock = Arc::new(jitsi_scaler_core::clock::TokioClock::starting_at(T0));
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    store
        .put_group(
            &GroupRecord::new(jvb_group("jvb", 2, 2, 5)),
            Expect::Any,
            None,
        )
        .await
        .unwrap();
    let cloud = Arc::new(RetryingCloud::default());
    let started = tokio::time::Instant::now();
    let scaler = Scaler::builder(store.clone())
        .providers(ProviderRegistry::new().with(cloud.clone()))
        .leadership(Arc::new(LeaderUntil {
            until: started + secs(1),
            token: 7,
        }))
        .clock(clock)
        .options(options())
        .build();
    let r = scaler.reconcile_now("jvb").await.unwrap();
    assert!(r.launched.is_empty());
    assert!(
        started.elapsed() < secs(2),
        "abandoned when the lease lapsed, not when the call ended"
    );
    advance(secs(10)).await;
    assert_eq!(
        cloud.attempts.load(Ordering::SeqCst),
        1,
        "the retry after the wait was never sent"
    );
    let snap = store.snapshot("jvb", 0).await.unwrap().unwrap();
    assert!(snap.instances.is_empty(), "nothing recorded");
    assert_eq!(snap.runtime.launch_failures, 0, "not counted as a failure");
    assert_eq!(
        snap.runtime.pending_launch.map(|p| p.slots.len()),
        Some(2),
        "the intent stays for the next leader"
    );
}

#[tokio::test(start_paused = true)]
async fn an_old_leader_is_fenced_off_before_any_provider_call() {
    let clock = Arc::new(jitsi_scaler_core::clock::TokioClock::starting_at(T0));
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    // A newer leader (token 9) already wrote.
    store
        .put_group(
            &GroupRecord::new(jvb_group("jvb", 2, 2, 5)),
            Expect::Any,
            Some(9),
        )
        .await
        .unwrap();
    let mut mock = MockCloudProvider::new();
    mock.expect_name().return_const("fake".to_owned());
    mock.expect_launch().never();
    let scaler = Scaler::builder(store)
        .providers(ProviderRegistry::new().with(Arc::new(mock)))
        .leadership(Arc::new(LosingLeader {
            calls: AtomicUsize::new(0),
            lead_for: usize::MAX,
            token: 8,
        }))
        .clock(clock)
        .options(options())
        .build();
    let err = scaler.reconcile_now("jvb").await.unwrap_err();
    assert!(matches!(
        err,
        jitsi_scaler_core::engine::EngineError::Store(StoreError::Fenced {
            token: 8,
            newest: 9
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn the_run_loop_reconciles_periodically_and_on_events_and_stops_cleanly() {
    let h = Harness::new();
    h.put(jibri_group("jibri", 1, 1, 3)).await;
    let shutdown = CancellationToken::new();
    let scaler = h.scaler.clone();
    let stop = shutdown.clone();
    let run = tokio::spawn(async move { scaler.run(stop).await });
    advance(secs(1)).await;
    tokio::task::yield_now().await;
    wait_until(|| h.cloud.launched_count() == 1).await;
    assert!(h.scaler.is_running());
    let id = h.ids("jibri").await[0].clone();
    // The Jibri starts recording: a state change triggers a reconcile before the next tick.
    for _ in 0..3 {
        h.jibri("jibri", &id, "BUSY").await;
        advance(secs(60)).await;
    }
    wait_until(|| h.cloud.launched_count() == 2).await;
    assert_eq!(h.desired("jibri").await, 2);
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert!(!h.scaler.is_running());
    // It can run again after a clean stop.
    let stop = CancellationToken::new();
    stop.cancel();
    h.scaler.run(stop).await.unwrap();
}

/// Reconciles of `group` that one run loop does while `fleet` new instances check in at once,
/// within the next three seconds (the periodic pass comes every ten).
async fn reconciles_while_a_fleet_arrives(trigger_spacing: Duration, fleet: usize) -> usize {
    let h = Harness::with_options(ScalerOptions {
        trigger_spacing,
        ..options()
    });
    let mut group = jvb_group("jvb", 1, fleet as u32, fleet as u32 * 2);
    group.enable_launch = false;
    h.put(group).await;
    let reconciled = |h: &Harness| {
        h.observer
            .events()
            .iter()
            .filter(|e| matches!(e, EngineEvent::Reconciled { group, .. } if group == "jvb"))
            .count()
    };
    let shutdown = CancellationToken::new();
    let scaler = h.scaler.clone();
    let stop = shutdown.clone();
    let run = tokio::spawn(async move { scaler.run(stop).await });
    wait_until(|| reconciled(&h) >= 1).await;
    advance(secs(2)).await;
    tokio::task::yield_now().await;
    let before = reconciled(&h);
    for i in 0..fleet {
        // Each first check-in is a new instance: it asks for a reconcile.
        h.jvb("jvb", &format!("i-{i}"), 0.5).await;
        tokio::task::yield_now().await;
    }
    for _ in 0..30 {
        advance(Duration::from_millis(100)).await;
        tokio::task::yield_now().await;
    }
    let during = reconciled(&h) - before;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    during
}

#[tokio::test(start_paused = true)]
async fn a_fleet_arriving_at_once_triggers_one_reconcile_per_spacing() {
    let spaced = reconciles_while_a_fleet_arrives(secs(1), 200).await;
    assert_eq!(spaced, 1, "the triggers wait for the spacing and coalesce");
    let unspaced = reconciles_while_a_fleet_arrives(Duration::ZERO, 200).await;
    assert!(
        unspaced > 10,
        "without spacing, the triggers run reconciles back to back: {unspaced}"
    );
}

/// Lets spawned tasks progress on paused time until `done` holds (bounded).
async fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        advance(Duration::from_millis(100)).await;
        tokio::task::yield_now().await;
    }
    assert!(done(), "condition not reached within 20 s of paused time");
}

#[tokio::test(start_paused = true)]
async fn reports_for_unknown_groups_are_answered_and_create_nothing() {
    let h = Harness::new();
    let c = h.jvb("nobody", "i-1", 0.5).await;
    assert!(!c.shutdown);
    assert!(h.store.get_group("nobody").await.unwrap().is_none());
    let report = jitsi_scaler_core::sidecar::parse_stats_report(
        json!({"instance": {"instanceId": "i-2", "instanceType": "toaster"}, "stats": {}})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let result = h.scaler.report(&report).await.unwrap();
    assert!(!result.known_group && !result.known_type);
}

#[tokio::test(start_paused = true)]
async fn group_events_feed_the_gauges() {
    let h = Harness::new();
    h.put(jvb_group("jvb", 1, 1, 3)).await;
    h.scaler.reconcile_now("jvb").await.unwrap();
    let gauges = h
        .observer
        .events()
        .into_iter()
        .find_map(|e| match e {
            EngineEvent::Gauges(g) => Some(g),
            _ => None,
        })
        .unwrap();
    assert_eq!((gauges.desired, gauges.min, gauges.max), (1, 1, 3));
    assert_eq!(gauges.count, 0, "counted before the launch of this pass");
}

fn flaky_harness() -> (Scaler, Arc<FlakyStore>, Arc<FakeCloud>) {
    let clock = Arc::new(jitsi_scaler_core::clock::TokioClock::starting_at(T0));
    let store = Arc::new(FlakyStore::new(clock.clone()));
    let cloud = Arc::new(FakeCloud::default());
    let scaler = Scaler::builder(store.clone())
        .providers(ProviderRegistry::new().with(cloud.clone()))
        .clock(clock)
        .options(options())
        .build();
    (scaler, store, cloud)
}

#[tokio::test(start_paused = true)]
async fn store_errors_stop_the_pass_before_any_cloud_call() {
    let (scaler, store, cloud) = flaky_harness();
    store
        .inner
        .put_group(
            &GroupRecord::new(jvb_group("jvb", 2, 2, 5)),
            Expect::Any,
            None,
        )
        .await
        .unwrap();
    // D13: an unreadable store is never "nothing there".
    store.fail("snapshot");
    assert!(matches!(
        scaler.reconcile_now("jvb").await,
        Err(jitsi_scaler_core::engine::EngineError::Store(
            StoreError::Unavailable(_)
        ))
    ));
    // The launch intent cannot be persisted: no launch (D5).
    store.failing.lock().unwrap().clear();
    store.fail("put_runtime");
    assert!(scaler.reconcile_now("jvb").await.is_err());
    assert!(cloud.launches().is_empty());
    // Check-ins fail loudly too (the server answers 503, never `shutdown: false`).
    store.fail("check_in");
    let report = jitsi_scaler_core::sidecar::parse_stats_report(
        json!({"instance": {"instanceId": "i", "instanceType": "JVB", "group": "jvb"}, "stats": {}}).to_string().as_bytes(),
    )
    .unwrap();
    assert!(scaler.report(&report).await.is_err());
    store.failing.lock().unwrap().clear();
    let r = scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(r.launched.len(), 2, "back to normal once the store answers");
}

#[tokio::test(start_paused = true)]
async fn cooldowns_can_differ_by_direction() {
    let h = Harness::new();
    let mut g = jvb_group("jvb", 1, 2, 5);
    g.scale_up_grace_period_sec = Some(30);
    g.scale_down_grace_period_sec = Some(900);
    h.put(g).await;
    h.load("jvb", &["a", "b"], 0.95, 120, 30).await;
    h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(h.desired("jvb").await, 3);
    assert_eq!(
        h.group("jvb").await.grace_until_ms,
        Some(h.now() + 30_000),
        "D16: up cooldown"
    );
    let ids = h.ids("jvb").await;
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    h.load("jvb", &ids, 0.05, 150, 30).await;
    h.scaler.reconcile_now("jvb").await.unwrap();
    assert_eq!(h.desired("jvb").await, 2);
    assert_eq!(
        h.group("jvb").await.grace_until_ms,
        Some(h.now() + 900_000),
        "D16: down cooldown"
    );
}

/// A fake cloud that wants load feedback and records it.
#[derive(Debug, Default)]
struct LoadAwareCloud {
    inner: FakeCloud,
    loads: std::sync::Mutex<Vec<(String, f64)>>,
}

#[async_trait]
impl jitsi_scaler_core::provider::CloudProvider for LoadAwareCloud {
    fn name(&self) -> &str {
        "fake"
    }
    fn capabilities(&self) -> jitsi_scaler_core::provider::Capabilities {
        jitsi_scaler_core::provider::Capabilities {
            load_feedback: true,
            ..Default::default()
        }
    }
    async fn launch(
        &self,
        g: &jitsi_scaler_core::group::Group,
        r: &jitsi_scaler_core::provider::LaunchRequest,
    ) -> jitsi_scaler_core::provider::LaunchOutcome {
        self.inner.launch(g, r).await
    }
    async fn list(
        &self,
        g: &jitsi_scaler_core::group::Group,
    ) -> Result<Vec<jitsi_scaler_core::instance::CloudInstance>, ProviderError> {
        self.inner.list(g).await
    }
    async fn terminate(
        &self,
        g: &jitsi_scaler_core::group::Group,
        id: &str,
    ) -> Result<(), ProviderError> {
        self.inner.terminate(g, id).await
    }
    async fn observe_load(
        &self,
        _g: &jitsi_scaler_core::group::Group,
        loads: &[(String, f64)],
    ) -> Result<(), ProviderError> {
        *self.loads.lock().unwrap() = loads.to_vec();
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn load_aware_providers_hear_the_load_of_running_instances() {
    let clock = Arc::new(jitsi_scaler_core::clock::TokioClock::starting_at(T0));
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let cloud = Arc::new(LoadAwareCloud::default());
    let scaler = Scaler::builder(store.clone())
        .providers(ProviderRegistry::new().with(cloud.clone()))
        .clock(clock)
        .options(options())
        .build();
    let g = jvb_group("jvb", 1, 2, 5);
    store
        .put_group(&GroupRecord::new(g.clone()), Expect::Any, None)
        .await
        .unwrap();
    scaler.group_changed(&g);
    for (id, stress) in [("a", 0.2), ("b", 0.6)] {
        let body = json!({"instance": {"instanceId": id, "instanceType": "JVB", "group": "jvb"},
            "stats": {"stress_level": stress, "participants": stress * 10.0}, "timestamp": 1});
        let report =
            jitsi_scaler_core::sidecar::parse_stats_report(body.to_string().as_bytes()).unwrap();
        scaler.report(&report).await.unwrap();
    }
    scaler.reconcile_now("jvb").await.unwrap();
    let mut loads = cloud.loads.lock().unwrap().clone();
    loads.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        loads,
        vec![("a".to_owned(), 2.0), ("b".to_owned(), 6.0)],
        "participants, placeholders left out"
    );
}
