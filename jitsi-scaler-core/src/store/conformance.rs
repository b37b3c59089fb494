//! The store conformance suite: the behaviour every [`Store`] must have. An implementation runs
//! it in its own tests with [`store_conformance_tests!`](crate::store_conformance_tests), giving
//! a factory that builds an empty store reading time from the given [`ManualClock`].
//!
//! Available to other crates with the `testkit` feature.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{
    CheckIn, CheckInKind, Expect, FlagUpdate, GroupRecord, GroupRuntime, Store, StoreError,
};
use crate::audit::{AuditEvent, GroupAuditEvent, InstanceAuditKind, LauncherAction};
use crate::clock::{Clock, ManualClock, UnixMillis};
use crate::group::Group;
use crate::instance::{InstanceState, Metadata, ReconfigureRequest, StressStats};
use crate::store::CloudSnapshot;

/// The suite's start time: 2026-03-18T18:00:00Z.
pub const T0: UnixMillis = 1_773_856_800_000;

/// Generates one `#[tokio::test]` per conformance case for a store factory
/// `|clock: Arc<ManualClock>| async move { Arc::new(MyStore::...) as Arc<dyn Store> }`.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@cases $factory;
            groups_compare_and_set, fencing_rejects_older_tokens, check_in_records_and_answers,
            samples_are_trimmed_and_deduplicated, flags_gate_samples_and_expire, polls_refresh_liveness,
            reconfiguration_lifecycle, state_retention_follows_the_clock, audit_order_and_retention,
            deleting_a_group_keeps_its_audit, runtime_round_trips);
    };
    (@cases $factory:expr; $($case:ident),*) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::store::conformance::$case($factory).await;
            }
        )*
    };
}

async fn fresh<F, Fut>(factory: F) -> (Arc<dyn Store>, Arc<ManualClock>)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let clock = Arc::new(ManualClock::new(T0));
    (factory(clock.clone()).await, clock)
}

/// A valid JVB group.
pub fn group(name: &str, desired: u32) -> Group {
    let mut g: Group = serde_json::from_value(json!({
        "name": name, "type": "JVB", "region": "r", "cloud": "test",
        "enableAutoScale": true, "enableLaunch": true,
        "scalingOptions": {"minDesired": 0, "maxDesired": 10, "desiredCount": desired}
    }))
    .unwrap_or_else(|e| panic!("test group: {e}"));
    g.extra.insert("note".into(), json!("kept"));
    g
}

/// A stats report state of a JVB at `now`, with a sidecar timestamp.
pub fn report_state(
    id: &str,
    now: UnixMillis,
    report_ts: UnixMillis,
    stress: f64,
) -> InstanceState {
    let mut s = InstanceState::polled(id, "JVB", Metadata::for_group("g"), now);
    s.report_timestamp = Some(report_ts);
    s.reported_at = Some(now);
    s.status.stats = Some(StressStats {
        stress_level: Some(stress),
        ..StressStats::default()
    });
    s
}

/// A report check-in with a sample.
pub fn report(group: &str, state: InstanceState) -> CheckIn {
    let sample = state.status.stats.and_then(|s| s.stress_level);
    CheckIn {
        group: group.to_owned(),
        state,
        kind: CheckInKind::Report { sample },
        reconfigure_complete_ms: None,
        sample_retention_ms: 240_000,
        state_retention_ms: 900_000,
    }
}

fn poll(group: &str, id: &str, now: UnixMillis) -> CheckIn {
    CheckIn {
        group: group.to_owned(),
        state: InstanceState::polled(id, "JVB", Metadata::for_group(group), now),
        kind: CheckInKind::Poll,
        reconfigure_complete_ms: None,
        sample_retention_ms: 240_000,
        state_retention_ms: 900_000,
    }
}

/// Instance `i-1` of group `g` reports at minute `i` (from T0) with stress `i`, for each `i`.
async fn report_each_minute(store: &dyn Store, clock: &ManualClock, minutes: std::ops::Range<i64>) {
    for i in minutes {
        let now = T0 + i * 60_000;
        clock.set(now);
        store
            .check_in(&report("g", report_state("i-1", now, now - 1, i as f64)))
            .await
            .expect("check-in");
    }
}

async fn samples_of(store: &dyn Store, group: &str, id: &str) -> Vec<f64> {
    let snap = store
        .snapshot(group, 0)
        .await
        .expect("snapshot")
        .expect("group exists");
    snap.samples
        .into_iter()
        .find(|s| &*s.instance_id == id)
        .map(|s| s.samples.iter().map(|x| x.value).collect())
        .unwrap_or_default()
}

/// Versions grow by one per write; `Absent` and `Version` conditions are enforced; unknown
/// fields survive.
pub async fn groups_compare_and_set<F, Fut>(factory: F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let (store, _) = fresh(factory).await;
    let rec = GroupRecord::new(group("g", 1));
    assert_eq!(store.put_group(&rec, Expect::Absent, None).await, Ok(1));
    assert_eq!(
        store.put_group(&rec, Expect::Absent, None).await,
        Err(StoreError::Conflict { group: "g".into() })
    );
    let mut changed = rec.clone();
    changed.group.scaling_options.desired_count = 2;
    changed.grace_until_ms = Some(T0 + 480_000);
    assert_eq!(
        store.put_group(&changed, Expect::Version(1), None).await,
        Ok(2)
    );
    assert!(matches!(
        store.put_group(&rec, Expect::Version(1), None).await,
        Err(StoreError::Conflict { .. })
    ));
    let got = store.get_group("g").await.expect("get").expect("exists");
    assert_eq!(got.version, 2);
    assert_eq!(got.group.scaling_options.desired_count, 2);
    assert_eq!(got.grace_until_ms, Some(T0 + 480_000));
    assert_eq!(got.group.extra.get("note"), Some(&json!("kept")));
    assert_eq!(store.put_group(&rec, Expect::Any, None).await, Ok(3));
    store
        .put_group(&GroupRecord::new(group("h", 0)), Expect::Any, None)
        .await
        .expect("second group");
    let mut names: Vec<String> = store
        .list_groups()
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.group.name)
        .collect();
    names.sort();
    assert_eq!(names, vec!["g", "h"]);
    assert_eq!(store.delete_group("g", None).await, Ok(true));
    assert_eq!(store.delete_group("g", None).await, Ok(false));
    assert_eq!(store.get_group("g").await, Ok(None));
    assert!(
        store
            .put_group(&rec, Expect::Version(3), None)
            .await
            .is_err()
    );
}

/// A write with a token older than the newest seen is rejected, everywhere a reconcile writes.
pub async fn fencing_rejects_older_tokens<F, Fut>(factory: F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let (store, _) = fresh(factory).await;
    let rec = GroupRecord::new(group("g", 1));
    store
        .put_group(&rec, Expect::Any, Some(5))
        .await
        .expect("token 5");
    let fenced = |r: Result<_, StoreError>| {
        matches!(
            r,
            Err(StoreError::Fenced {
                token: 4,
                newest: 5
            })
        )
    };
    assert!(fenced(
        store
            .put_group(&rec, Expect::Any, Some(4))
            .await
            .map(|_| ())
    ));
    assert!(fenced(
        store
            .put_runtime("g", &GroupRuntime::default(), Some(4))
            .await
    ));
    assert!(fenced(
        store.remove_instances("g", &["x".into()], Some(4)).await
    ));
    assert!(fenced(
        store
            .update_flags(
                &[FlagUpdate::Protect {
                    instance_id: "x".into(),
                    until_ms: T0 + 1
                }],
                Some(4)
            )
            .await
    ));
    assert!(fenced(store.append_audit("g", &[], Some(4)).await));
    assert!(fenced(store.put_instances("g", &[], 1, Some(4)).await));
    assert!(fenced(store.delete_group("g", Some(4)).await.map(|_| ())));
    assert_eq!(
        store.get_group("g").await.expect("get").map(|r| r.version),
        Some(1)
    );
    // Unfenced (API) writes pass; newer tokens pass and raise the bar.
    store
        .put_group(&rec, Expect::Any, None)
        .await
        .expect("api write");
    store
        .put_group(&rec, Expect::Any, Some(6))
        .await
        .expect("token 6");
    assert!(matches!(
        store.put_group(&rec, Expect::Any, Some(5)).await,
        Err(StoreError::Fenced {
            token: 5,
            newest: 6
        })
    ));
}

/// A report stores the state and a sample and answers the flags.
pub async fn check_in_records_and_answers<F, Fut>(factory: F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let (store, _) = fresh(factory).await;
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, None)
        .await
        .expect("group");
    let c = store
        .check_in(&report("g", report_state("i-1", T0, T0 - 5, 0.4)))
        .await
        .expect("check-in");
    assert!(!c.shutdown);
    assert_eq!(c.reconfigure, None);
    assert!(c.sample_written);
    assert!(c.state_changed, "a new instance");
    let c = store
        .check_in(&report("g", report_state("i-1", T0 + 1, T0, 0.6)))
        .await
        .expect("same state");
    assert!(!c.state_changed);
    let mut draining = report_state("i-1", T0 + 2, T0 + 2, 0.6);
    draining.is_shutting_down = true;
    assert!(
        store
            .check_in(&report("g", draining))
            .await
            .expect("drain")
            .state_changed
    );
    store
        .check_in(&report("g", report_state("i-1", T0 + 3, T0 + 3, 0.4)))
        .await
        .expect("back");
    let instances = store.instances("g").await.expect("instances");
    assert_eq!(instances.len(), 1);
    assert_eq!(
        instances[0].state.status.stats.and_then(|s| s.stress_level),
        Some(0.4)
    );
    assert_eq!(
        samples_of(&*store, "g", "i-1").await,
        vec![0.4, 0.6, 0.4],
        "the draining report wrote none"
    );
    store
        .update_flags(
            &[FlagUpdate::RequestShutdown {
                instance_id: "i-1".into(),
                at_ms: T0,
                expires_ms: T0 + 86_400_000,
            }],
            None,
        )
        .await
        .expect("flag");
    let c = store
        .check_in(&report(
            "g",
            report_state("i-1", T0 + 60_000, T0 + 59_000, 0.5),
        ))
        .await
        .expect("check-in");
    assert!(c.shutdown);
    assert!(!c.sample_written, "no sample while flagged for shutdown");
    let audit = store.instance_audit("g").await.expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].latest_status, Some(T0 + 60_000));
    assert_eq!(
        audit[0].latest_status_info.as_ref().map(|s| s.timestamp),
        Some(T0 + 60_000)
    );
    // Reports for a group that does not exist are stored (bounded by retention) and answered.
    let c = store
        .check_in(&report("nobody", report_state("i-9", T0, T0, 0.1)))
        .await
        .expect("unknown group");
    assert!(!c.shutdown);
}

/// Samples are trimmed to the retention on write, and a re-sent report adds none.
pub async fn samples_are_trimmed_and_deduplicated<F, Fut>(factory: F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let (store, clock) = fresh(factory).await;
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, None)
        .await
        .expect("group");
    report_each_minute(&*store, &clock, 0..6).await;
    // Retention 240 s at the last report (T0 + 300 s): samples from T0 + 60 s on.
    assert_eq!(
        samples_of(&*store, "g", "i-1").await,
        vec![1.0, 2.0, 3.0, 4.0, 5.0]
    );
    let now = T0 + 330_000;
    clock.set(now);
    let c = store
        .check_in(&report(
            "g",
            report_state("i-1", now, T0 + 300_000 - 1, 9.0),
        ))
        .await
        .expect("re-sent report");
    assert!(!c.sample_written, "same reportTimestamp: liveness only");
    assert_eq!(
        store.instances("g").await.expect("instances")[0]
            .state
            .timestamp,
        now
    );
    let snap = store
        .snapshot("g", T0 + 180_000)
        .await
        .expect("snapshot")
        .expect("exists");
    assert_eq!(snap.samples.len(), 1);
    let snapshot_values =
        || -> Vec<f64> { snap.samples[0].samples.iter().map(|s| s.value).collect() };
    assert_eq!(snapshot_values(), vec![3.0, 4.0, 5.0]);
    let snapshot_state = || snap.instances[0].state.report_timestamp;
    assert_eq!(snapshot_state(), Some(T0 + 300_000 - 1));
    // A snapshot is what the store held when it was taken: later writes (which replace the
    // state, trim the series' oldest samples and append) do not show through it.
    report_each_minute(&*store, &clock, 6..10).await;
    assert_eq!(snapshot_values(), vec![3.0, 4.0, 5.0]);
    assert_eq!(snapshot_state(), Some(T0 + 300_000 - 1));
    assert_ne!(
        store.instances("g").await.expect("instances")[0]
            .state
            .report_timestamp,
        snapshot_state()
    );
    assert_eq!(
        samples_of(&*store, "g", "i-1").await,
        vec![5.0, 6.0, 7.0, 8.0, 9.0]
    );
}

/// A draining or provisioning state, or a confirmed shutdown, writes no sample; flags expire;
/// the first shutdown and confirmation times are kept.
pub async fn flags_gate_samples_and_expire<F, Fut>(factory: F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let (store, clock) = fresh(factory).await;
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, None)
        .await
        .expect("group");
    let mut draining = report_state("i-1", T0, T0, 0.3);
    draining.is_shutting_down = true;
    assert!(
        !store
            .check_in(&report("g", draining))
            .await
            .expect("drain")
            .sample_written
    );
    let confirm = |at_ms| FlagUpdate::ConfirmShutdown {
        instance_id: "i-2".into(),
        at_ms,
        expires_ms: T0 + 1_000,
    };
    store
        .update_flags(&[confirm(T0)], None)
        .await
        .expect("confirm");
    store
        .update_flags(&[confirm(T0 + 500)], None)
        .await
        .expect("confirm again");
    assert_eq!(
        store
            .flags("i-2")
            .await
            .expect("flags")
            .shutdown_confirmed_ms,
        Some(T0)
    );
    assert!(
        !store
            .check_in(&report("g", report_state("i-2", T0, T0, 0.3)))
            .await
            .expect("confirmed")
            .sample_written
    );
    store
        .update_flags(
            &[FlagUpdate::Protect {
                instance_id: "i-3".into(),
                until_ms: T0 + 600_000,
            }],
            None,
        )
        .await
        .expect("protect");
    assert!(store.flags("i-3").await.expect("flags").is_protected(T0));
    clock.advance(Duration::from_millis(1_000));
    assert_eq!(
        store
            .flags("i-2")
            .await
            .expect("flags")
            .shutdown_confirmed_ms,
        None,
        "expired"
    );
    clock.set(T0 + 600_000);
    assert_eq!(
        store.flags("i-3").await.expect("flags").protected_until_ms,
        None
    );
    assert!(
        store
            .check_in(&report(
                "g",
                report_state("i-2", T0 + 600_000, T0 + 600_000, 0.3)
            ))
            .await
            .expect("after expiry")
            .sample_written
    );
}

/// A poll creates a state without stats, or refreshes an existing state's liveness and keeps
/// its status.
pub async fn polls_refresh_liveness<F, Fut>(factory: F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let (store, clock) = fresh(factory).await;
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, None)
        .await
        .expect("group");
    store.check_in(&poll("g", "p-1", T0)).await.expect("poll");
    let first = store.instances("g").await.expect("instances");
    assert_eq!(first.len(), 1);
    assert!(first[0].state.status.has_no_stats());
    assert!(!first[0].state.has_reported());
    store
        .check_in(&report("g", report_state("p-1", T0 + 1_000, T0, 0.7)))
        .await
        .expect("report");
    clock.set(T0 + 61_000);
    let c = store
        .check_in(&poll("g", "p-1", T0 + 61_000))
        .await
        .expect("poll");
    assert!(!c.sample_written);
    let after = store.instances("g").await.expect("instances");
    assert_eq!(after[0].state.timestamp, T0 + 61_000);
    assert_eq!(
        after[0].state.status.stats.and_then(|s| s.stress_level),
        Some(0.7)
    );
    assert_eq!(after[0].state.report_timestamp, Some(T0));
}

/// Reports acknowledge a reconfiguration with `reconfigureComplete ≥` its date; poll-only
/// sidecars get it exactly once.
pub async fn reconfiguration_lifecycle<F, Fut>(factory: F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let (store, _) = fresh(factory).await;
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, None)
        .await
        .expect("group");
    let request = |id: &str| FlagUpdate::Reconfigure {
        instance_id: id.into(),
        request: ReconfigureRequest {
            date: "2026-03-18T18:00:00.000Z".into(),
            at_ms: T0,
        },
        expires_ms: T0 + 86_400_000,
    };
    store
        .update_flags(&[request("i-1"), request("p-1")], None)
        .await
        .expect("request");
    let mut old = report("g", report_state("i-1", T0 + 1, T0, 0.2));
    old.reconfigure_complete_ms = Some(T0 - 1);
    let c = store.check_in(&old).await.expect("older completion");
    assert_eq!(c.reconfigure.as_deref(), Some("2026-03-18T18:00:00.000Z"));
    assert!(!c.reconfigure_acknowledged);
    let mut done = report("g", report_state("i-1", T0 + 2, T0 + 2, 0.2));
    done.reconfigure_complete_ms = Some(T0);
    done.state.last_reconfigured = Some("2026-03-18T18:00:00.000Z".into());
    let c = store.check_in(&done).await.expect("completion");
    assert!(c.reconfigure_acknowledged);
    assert_eq!(c.reconfigure, None);
    assert_eq!(store.flags("i-1").await.expect("flags").reconfigure, None);
    // The next report without reconfigureComplete keeps lastReconfigured.
    store
        .check_in(&report("g", report_state("i-1", T0 + 3, T0 + 3, 0.2)))
        .await
        .expect("report");
    let state = store.instances("g").await.expect("instances")[0]
        .state
        .clone();
    assert_eq!(
        state.last_reconfigured.as_deref(),
        Some("2026-03-18T18:00:00.000Z")
    );
    // A poll-only sidecar gets the date once.
    let c = store
        .check_in(&poll("g", "p-1", T0 + 4))
        .await
        .expect("poll");
    assert_eq!(c.reconfigure.as_deref(), Some("2026-03-18T18:00:00.000Z"));
    assert!(c.reconfigure_delivered);
    let c = store
        .check_in(&poll("g", "p-1", T0 + 5))
        .await
        .expect("poll again");
    assert_eq!(c.reconfigure, None);
    let audit = store.instance_audit("g").await.expect("audit");
    let p = audit
        .iter()
        .find(|a| a.instance_id == "p-1")
        .expect("p-1 audited");
    assert_eq!(p.reconfigure_delivered, Some(T0 + 4));
    let i = audit
        .iter()
        .find(|a| a.instance_id == "i-1")
        .expect("i-1 audited");
    assert_eq!(i.reconfigure_complete, Some(T0 + 2));
}

/// States disappear after their retention; placeholders keep their first-seen order.
pub async fn state_retention_follows_the_clock<F, Fut>(factory: F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let (store, clock) = fresh(factory).await;
    store
        .put_group(&GroupRecord::new(group("g", 2)), Expect::Any, None)
        .await
        .expect("group");
    let placeholders = [
        InstanceState::placeholder("b", "g", "JVB", T0, false),
        InstanceState::placeholder("a", "g", "JVB", T0, true),
    ];
    store
        .put_instances("g", &placeholders, 900_000, Some(1))
        .await
        .expect("placeholders");
    let got: Vec<String> = store
        .instances("g")
        .await
        .expect("instances")
        .into_iter()
        .map(|r| r.state.instance_id.clone())
        .collect();
    assert_eq!(got, vec!["b", "a"]);
    assert!(
        store.instances("g").await.expect("instances")[1]
            .state
            .dry_run
    );
    clock.set(T0 + 900_001);
    assert!(store.instances("g").await.expect("instances").is_empty());
    let snap = store
        .snapshot("g", 0)
        .await
        .expect("snapshot")
        .expect("exists");
    assert!(snap.instances.is_empty());
    // remove_instances keeps the last state in the audit.
    clock.set(T0);
    store
        .check_in(&report("g", report_state("c", T0, T0, 0.1)))
        .await
        .expect("report");
    store
        .remove_instances("g", &["c".into()], Some(1))
        .await
        .expect("remove");
    assert!(
        store
            .instances("g")
            .await
            .expect("instances")
            .iter()
            .all(|r| r.state.instance_id != "c")
    );
    let audit = store.instance_audit("g").await.expect("audit");
    let c = audit
        .iter()
        .find(|a| a.instance_id == "c")
        .expect("audited");
    assert_eq!(c.latest_status_info.as_ref().map(|s| s.timestamp), Some(T0));
}

/// Group audit items come newest first, and everything older than the retention goes.
pub async fn audit_order_and_retention<F, Fut>(factory: F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let (store, clock) = fresh(factory).await;
    assert_eq!(store.group_audit("g").await, Ok(None));
    let action = |t: UnixMillis, q: u32| {
        AuditEvent::Group(GroupAuditEvent::Launcher(LauncherAction {
            timestamp: t,
            action_type: "scaleUp".into(),
            count: 1,
            desired_count: 2,
            scale_quantity: q,
            detail: None,
        }))
    };
    store
        .append_audit(
            "g",
            &[
                action(T0, 1),
                action(T0 + 1_000, 2),
                AuditEvent::Group(GroupAuditEvent::LauncherRun { at_ms: T0 + 1_000 }),
                AuditEvent::instance("i-1", InstanceAuditKind::RequestToLaunch, T0),
            ],
            Some(1),
        )
        .await
        .expect("append");
    store
        .append_audit("g", &[action(T0 + 2_000, 3)], None)
        .await
        .expect("append");
    let log = store
        .group_audit("g")
        .await
        .expect("audit")
        .expect("present");
    let quantities: Vec<u32> = log
        .launcher_action_items
        .iter()
        .map(|l| l.scale_quantity)
        .collect();
    assert_eq!(quantities, vec![3, 2, 1]);
    assert_eq!(log.last_launcher_run, Some(T0 + 1_000));
    let instances = store.instance_audit("g").await.expect("instance audit");
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].request_to_launch, Some(T0));
    clock.set(T0 + 172_800_000 + 1_500);
    let log = store
        .group_audit("g")
        .await
        .expect("audit")
        .expect("present");
    assert_eq!(
        log.launcher_action_items.len(),
        1,
        "only the newest is within 48 h"
    );
    assert_eq!(log.last_launcher_run, None);
    assert!(store.instance_audit("g").await.expect("audit").is_empty());
    clock.set(T0 + 172_800_000 + 2_001);
    assert_eq!(store.group_audit("g").await, Ok(None));
}

/// Deleting a group removes its states, samples and runtime; its audit stays readable.
pub async fn deleting_a_group_keeps_its_audit<F, Fut>(factory: F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let (store, _) = fresh(factory).await;
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, None)
        .await
        .expect("group");
    store
        .check_in(&report("g", report_state("i-1", T0, T0, 0.1)))
        .await
        .expect("report");
    store
        .put_runtime(
            "g",
            &GroupRuntime {
                launch_failures: 2,
                ..GroupRuntime::default()
            },
            Some(1),
        )
        .await
        .expect("runtime");
    assert!(store.delete_group("g", Some(1)).await.expect("delete"));
    assert!(store.instances("g").await.expect("instances").is_empty());
    assert!(store.snapshot("g", 0).await.expect("snapshot").is_none());
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Absent, None)
        .await
        .expect("recreate");
    let snap = store
        .snapshot("g", 0)
        .await
        .expect("snapshot")
        .expect("exists");
    assert!(snap.instances.is_empty() && snap.samples.is_empty());
    assert_eq!(
        snap.runtime,
        GroupRuntime::default(),
        "runtime went with the group"
    );
    assert_eq!(store.instance_audit("g").await.expect("audit").len(), 1);
}

/// The engine's bookkeeping round-trips, and is not written for a missing group.
pub async fn runtime_round_trips<F, Fut>(factory: F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let (store, clock) = fresh(factory).await;
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, None)
        .await
        .expect("group");
    let mut runtime = GroupRuntime {
        cloud: Some(CloudSnapshot {
            at_ms: clock.now_ms(),
            instances: vec![crate::instance::CloudInstance {
                instance_id: "i-1".into(),
                display_name: "g-abcde".into(),
                cloud_status: "RUNNING".into(),
                created_at_ms: Some(T0),
            }]
            .into(),
        }),
        launch_failures: 1,
        launch_retry_at_ms: Some(T0 + 30_000),
        ..GroupRuntime::default()
    };
    runtime.orphan_streaks.insert("x".into(), 2);
    store
        .put_runtime("g", &runtime, Some(1))
        .await
        .expect("runtime");
    let snap = store
        .snapshot("g", 0)
        .await
        .expect("snapshot")
        .expect("exists");
    assert_eq!(snap.runtime, runtime);
    store
        .put_runtime("missing", &runtime, Some(1))
        .await
        .expect("ignored");
    assert!(
        store
            .snapshot("missing", 0)
            .await
            .expect("snapshot")
            .is_none()
    );
    store.ping().await.expect("ping");
    store.flush().await.expect("flush");
}
