use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;

use super::*;
use crate::audit::{GroupAuditEvent, InstanceAuditKind, LauncherAction};
use crate::clock::ManualClock;
use crate::instance::ReconfigureRequest;
use crate::provider::LaunchSlot;
use crate::store::conformance::{T0, group, report, report_state};
use crate::store::{CheckInKind, CloudSnapshot, LaunchIntent};

/// An embedded store in a temporary directory removed after the store closes.
#[derive(Debug)]
struct InTempDir {
    store: EmbeddedStore,
    _dir: TempDir,
}

#[async_trait]
impl Store for InTempDir {
    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
    async fn list_groups(&self) -> Result<Vec<GroupRecord>, StoreError> {
        self.store.list_groups().await
    }
    async fn get_group(&self, name: &str) -> Result<Option<GroupRecord>, StoreError> {
        self.store.get_group(name).await
    }
    async fn put_group(
        &self,
        record: &GroupRecord,
        expect: Expect,
        fence: Option<FencingToken>,
    ) -> Result<u64, StoreError> {
        self.store.put_group(record, expect, fence).await
    }
    async fn delete_group(
        &self,
        name: &str,
        fence: Option<FencingToken>,
    ) -> Result<bool, StoreError> {
        self.store.delete_group(name, fence).await
    }
    async fn snapshot(
        &self,
        group: &str,
        since: UnixMillis,
    ) -> Result<Option<GroupSnapshot>, StoreError> {
        self.store.snapshot(group, since).await
    }
    async fn instances(&self, group: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        self.store.instances(group).await
    }
    async fn check_in(&self, check_in: &CheckIn) -> Result<Commands, StoreError> {
        self.store.check_in(check_in).await
    }
    async fn put_instances(
        &self,
        group: &str,
        states: &[InstanceState],
        retention_ms: i64,
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.store
            .put_instances(group, states, retention_ms, fence)
            .await
    }
    async fn remove_instances(
        &self,
        group: &str,
        ids: &[String],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.store.remove_instances(group, ids, fence).await
    }
    async fn update_flags(
        &self,
        updates: &[FlagUpdate],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.store.update_flags(updates, fence).await
    }
    async fn flags(&self, instance_id: &str) -> Result<InstanceFlags, StoreError> {
        self.store.flags(instance_id).await
    }
    async fn put_runtime(
        &self,
        group: &str,
        runtime: &GroupRuntime,
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.store.put_runtime(group, runtime, fence).await
    }
    async fn append_audit(
        &self,
        group: &str,
        events: &[AuditEvent],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.store.append_audit(group, events, fence).await
    }
    async fn group_audit(&self, group: &str) -> Result<Option<GroupAuditLog>, StoreError> {
        self.store.group_audit(group).await
    }
    async fn instance_audit(&self, group: &str) -> Result<Vec<InstanceAudit>, StoreError> {
        self.store.instance_audit(group).await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }
}

crate::store_conformance_tests!(|clock: Arc<ManualClock>| async move {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path(), clock).expect("open");
    Arc::new(InTempDir { store, _dir: dir }) as Arc<dyn Store>
});

/// Options under which nothing is committed unless a durable call, a flush or the close asks.
fn manual_commits() -> EmbeddedOptions {
    EmbeddedOptions {
        commit_interval: Duration::from_secs(3600),
        max_batch: usize::MAX,
        sweep_interval: Duration::from_secs(3600),
        ..EmbeddedOptions::default()
    }
}

fn open(dir: &TempDir, clock: &Arc<ManualClock>) -> EmbeddedStore {
    EmbeddedStore::open_with(dir.path(), clock.clone(), manual_commits()).expect("open")
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

fn runtime_with_intent() -> GroupRuntime {
    let mut runtime = GroupRuntime {
        cloud: Some(CloudSnapshot {
            at_ms: T0,
            instances: Arc::default(),
        }),
        launch_failures: 2,
        launch_retry_at_ms: Some(T0 + 30_000),
        last_launch_error: Some("quota".into()),
        pending_launch: Some(LaunchIntent {
            id: "intent-1".into(),
            created_ms: T0,
            slots: vec![LaunchSlot {
                display_name: "g-abcde".into(),
                idempotency_key: "key-1".into(),
            }],
        }),
        ..GroupRuntime::default()
    };
    runtime.orphan_streaks.insert("stray".into(), 3);
    runtime
}

fn all_flags() -> Vec<FlagUpdate> {
    vec![
        FlagUpdate::RequestShutdown {
            instance_id: "i-1".into(),
            at_ms: T0,
            expires_ms: T0 + 86_400_000,
        },
        FlagUpdate::ConfirmShutdown {
            instance_id: "i-1".into(),
            at_ms: T0 + 1,
            expires_ms: T0 + 86_400_000,
        },
        FlagUpdate::Reconfigure {
            instance_id: "i-2".into(),
            request: ReconfigureRequest {
                date: "2026-03-18T18:00:00.000Z".into(),
                at_ms: T0,
            },
            expires_ms: T0 + 86_400_000,
        },
        FlagUpdate::Protect {
            instance_id: "i-3".into(),
            until_ms: T0 + 600_000,
        },
    ]
}

fn launcher_action(at: UnixMillis) -> AuditEvent {
    AuditEvent::Group(GroupAuditEvent::Launcher(LauncherAction {
        timestamp: at,
        action_type: "scaleUp".into(),
        count: 1,
        desired_count: 2,
        scale_quantity: 1,
        detail: None,
    }))
}

/// Everything readable about group `g` and instances `i-1`…`i-3`.
#[derive(Debug, PartialEq)]
struct Everything {
    groups: Vec<GroupRecord>,
    snapshot: Option<GroupSnapshot>,
    flags: Vec<InstanceFlags>,
    group_audit: Option<GroupAuditLog>,
    instance_audit: Vec<InstanceAudit>,
}

async fn everything(store: &dyn Store) -> Everything {
    let mut groups = store.list_groups().await.expect("groups");
    groups.sort_by(|a, b| a.group.name.cmp(&b.group.name));
    let mut flags = Vec::new();
    for id in ["i-1", "i-2", "i-3"] {
        flags.push(store.flags(id).await.expect("flags"));
    }
    let mut instance_audit = store.instance_audit("g").await.expect("audit");
    instance_audit.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    let mut snapshot = store.snapshot("g", 0).await.expect("snapshot");
    if let Some(s) = &mut snapshot {
        s.samples.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    }
    Everything {
        groups,
        snapshot,
        flags,
        group_audit: store.group_audit("g").await.expect("audit"),
        instance_audit,
    }
}

#[tokio::test]
async fn everything_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    let store = open(&dir, &clock);
    let mut record = GroupRecord::new(group("g", 1));
    assert_eq!(
        store.put_group(&record, Expect::Absent, Some(7)).await,
        Ok(1)
    );
    record.grace_until_ms = Some(T0 + 480_000);
    record.protected_until_ms = Some(T0 + 120_000);
    assert_eq!(
        store.put_group(&record, Expect::Version(1), None).await,
        Ok(2)
    );
    store
        .put_group(&GroupRecord::new(group("h", 0)), Expect::Any, None)
        .await
        .expect("second group");
    store.update_flags(&all_flags(), None).await.expect("flags");
    store
        .put_runtime("g", &runtime_with_intent(), Some(7))
        .await
        .expect("runtime");
    store
        .append_audit(
            "g",
            &[
                launcher_action(T0),
                AuditEvent::Group(GroupAuditEvent::LauncherRun { at_ms: T0 }),
                AuditEvent::instance("p-1", InstanceAuditKind::RequestToLaunch, T0),
            ],
            Some(7),
        )
        .await
        .expect("audit");
    store
        .put_instances(
            "g",
            &[InstanceState::placeholder("p-1", "g", "JVB", T0, false)],
            900_000,
            Some(7),
        )
        .await
        .expect("placeholder");
    for (i, stress) in [0.2, 0.4, 0.6].into_iter().enumerate() {
        let now = T0 + i as i64 * 10_000;
        clock.set(now);
        store
            .check_in(&report("g", report_state("i-2", now, now - 1, stress)))
            .await
            .expect("check-in");
    }
    let before = everything(&store).await;
    assert_eq!(before.snapshot.as_ref().map(|s| s.instances.len()), Some(2));
    assert_eq!(
        before.snapshot.as_ref().map(|s| s.samples[0].samples.len()),
        Some(3)
    );
    drop(store);

    let store = open(&dir, &clock);
    let after = everything(&store).await;
    assert_eq!(after, before);
    assert_eq!(after.groups[0].version, 2);
    assert_eq!(after.groups[0].grace_until_ms, Some(T0 + 480_000));
    assert_eq!(
        after.snapshot.map(|s| s.runtime),
        Some(runtime_with_intent())
    );
    assert!(matches!(
        store.put_group(&record, Expect::Any, Some(6)).await,
        Err(StoreError::Fenced {
            token: 6,
            newest: 7
        })
    ));
    assert_eq!(
        store.put_group(&record, Expect::Version(2), Some(7)).await,
        Ok(3),
        "versions continue"
    );
    // New states order after the stored ones.
    store
        .check_in(&report("g", report_state("i-9", clock.now_ms(), T0, 0.1)))
        .await
        .expect("check-in");
    let order: Vec<String> = store
        .instances("g")
        .await
        .expect("instances")
        .into_iter()
        .map(|r| r.state.instance_id.clone())
        .collect();
    assert_eq!(order, vec!["p-1", "i-2", "i-9"]);
}

#[tokio::test]
async fn durable_writes_survive_a_crash_but_check_ins_wait_for_the_batch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    let store = open(&dir, &clock);
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, Some(3))
        .await
        .expect("group");
    store.update_flags(&all_flags(), None).await.expect("flags");
    store
        .put_runtime("g", &runtime_with_intent(), None)
        .await
        .expect("runtime");
    store
        .append_audit("g", &[launcher_action(T0)], None)
        .await
        .expect("audit");
    store
        .put_instances(
            "g",
            &[InstanceState::placeholder("p-1", "g", "JVB", T0, false)],
            900_000,
            None,
        )
        .await
        .expect("placeholder");
    let c = store
        .check_in(&report("g", report_state("i-5", T0, T0, 0.5)))
        .await
        .expect("check-in");
    assert!(c.sample_written);
    assert_eq!(store.instances("g").await.expect("instances").len(), 2);
    let before = everything(&store).await;
    store.simulate_crash();
    drop(store);

    let store = open(&dir, &clock);
    let after = everything(&store).await;
    assert_eq!(after.groups, before.groups);
    assert_eq!(after.flags, before.flags);
    assert_eq!(after.group_audit, before.group_audit);
    let snapshot = after.snapshot.expect("group");
    assert_eq!(snapshot.runtime, runtime_with_intent());
    let ids: Vec<String> = snapshot
        .instances
        .iter()
        .map(|r| r.state.instance_id.clone())
        .collect();
    assert_eq!(ids, vec!["p-1"], "the unflushed check-in was lost");
    assert!(snapshot.samples.is_empty());
    assert!(matches!(
        store
            .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, Some(2))
            .await,
        Err(StoreError::Fenced {
            token: 2,
            newest: 3
        })
    ));
}

#[tokio::test]
async fn a_flushed_check_in_survives_a_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    let store = open(&dir, &clock);
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, None)
        .await
        .expect("group");
    store
        .check_in(&report("g", report_state("i-1", T0, T0 - 5, 0.7)))
        .await
        .expect("check-in");
    store.flush().await.expect("flush");
    let before = everything(&store).await;
    store.simulate_crash();
    drop(store);

    let store = open(&dir, &clock);
    let after = everything(&store).await;
    assert_eq!(after, before);
    let snapshot = after.snapshot.expect("group");
    assert_eq!(snapshot.instances[0].state.report_timestamp, Some(T0 - 5));
    assert_eq!(snapshot.samples[0].samples[0].value, 0.7);
    assert_eq!(after.instance_audit[0].latest_status, Some(T0));
    // The stored report timestamp still deduplicates a re-sent report.
    let c = store
        .check_in(&report("g", report_state("i-1", T0 + 1, T0 - 5, 0.9)))
        .await
        .expect("re-sent");
    assert!(!c.sample_written);
    assert!(!c.state_changed);
}

#[tokio::test]
async fn check_ins_are_batched_visible_at_once_and_durable_after_flush() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    let store = open(&dir, &clock);
    let commits = store.commits();
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, None)
        .await
        .expect("group");
    let after_group = *commits.borrow();
    for round in 0..20i64 {
        let now = T0 + round * 10_000;
        clock.set(now);
        for i in 0..50 {
            let id = format!("i-{i:02}");
            store
                .check_in(&report("g", report_state(&id, now, now, round as f64)))
                .await
                .expect("check-in");
        }
    }
    assert_eq!(*commits.borrow(), after_group, "no commit per check-in");
    let snapshot = store.snapshot("g", 0).await.expect("snapshot").expect("g");
    assert_eq!(snapshot.instances.len(), 50);
    assert!(snapshot.samples.iter().all(|s| s.samples.len() == 20));
    store.flush().await.expect("flush");
    assert_eq!(
        *commits.borrow(),
        after_group + 1,
        "one commit for them all"
    );
    let before = everything(&store).await;
    store.simulate_crash();
    drop(store);

    let store = open(&dir, &clock);
    let after = everything(&store).await;
    assert_eq!(after, before);
    let snapshot = after.snapshot.expect("g");
    assert_eq!(snapshot.instances.len(), 50);
    assert_eq!(snapshot.samples.len(), 50);
    assert!(snapshot.samples.iter().all(|s| s.samples.len() == 20));
}

#[tokio::test]
async fn a_full_batch_is_committed_before_the_interval_ends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    let options = EmbeddedOptions {
        max_batch: 30,
        ..manual_commits()
    };
    let store = EmbeddedStore::open_with(dir.path(), clock.clone(), options).expect("open");
    let mut commits = store.commits();
    // Each report marks its state, samples and audit: the tenth fills the batch.
    for i in 0..10 {
        assert_eq!(
            *commits.borrow(),
            0,
            "nothing committed before the batch is full"
        );
        store
            .check_in(&report(
                "g",
                report_state(&format!("i-{i:02}"), T0, T0, 0.5),
            ))
            .await
            .expect("check-in");
    }
    tokio::time::timeout(Duration::from_secs(30), commits.wait_for(|n| *n >= 1))
        .await
        .expect("a commit within the bound")
        .expect("writer alive");
    store.simulate_crash();
    drop(store);

    let store = open(&dir, &clock);
    assert_eq!(store.instances("g").await.expect("instances").len(), 10);
}

#[tokio::test]
async fn a_consumed_reconfiguration_is_committed_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    let store = open(&dir, &clock);
    store.update_flags(&all_flags(), None).await.expect("flags");
    let poll = CheckIn {
        group: "g".into(),
        state: InstanceState::polled("i-2", "JVB", crate::instance::Metadata::for_group("g"), T0),
        kind: CheckInKind::Poll,
        reconfigure_complete_ms: None,
        sample_retention_ms: 240_000,
        state_retention_ms: 900_000,
    };
    let c = store.check_in(&poll).await.expect("poll");
    assert!(c.reconfigure_delivered);
    store.simulate_crash();
    drop(store);

    let store = open(&dir, &clock);
    assert_eq!(store.flags("i-2").await.expect("flags").reconfigure, None);
    let c = store.check_in(&poll).await.expect("poll again");
    assert_eq!(c.reconfigure, None, "delivered once, even across a crash");
}

#[tokio::test]
async fn concurrent_durable_writes_all_persist() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    let store = Arc::new(open(&dir, &clock));
    let writes = (0..40).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .put_group(
                    &GroupRecord::new(group(&format!("g{i:02}"), 1)),
                    Expect::Absent,
                    None,
                )
                .await
        })
    });
    for write in futures::future::join_all(writes).await {
        assert_eq!(write.expect("task"), Ok(1));
    }
    store.simulate_crash();
    drop(store);

    let store = open(&dir, &clock);
    assert_eq!(store.list_groups().await.expect("groups").len(), 40);
}

#[tokio::test]
async fn the_latest_status_rides_on_the_state_record_and_survives_its_expiry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    let store = open(&dir, &clock);
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, None)
        .await
        .expect("group");
    let latest_status = |audits: Vec<InstanceAudit>| {
        assert_eq!(audits.len(), 1, "one instance: {audits:?}");
        audits[0].latest_status
    };
    // The first check-in writes the audit record; the next ones only the state and samples,
    // whose state record carries the latest status.
    for minute in 0..3 {
        let now = T0 + minute * 60_000;
        clock.set(now);
        store
            .check_in(&report("g", report_state("i-1", now, now, 0.5)))
            .await
            .expect("check-in");
        store.flush().await.expect("flush");
    }
    let last = T0 + 120_000;
    store.simulate_crash();
    drop(store);

    let store = open(&dir, &clock);
    let audits = store.instance_audit("g").await.expect("audit");
    assert_eq!(
        latest_status(audits),
        Some(last),
        "read back from the state"
    );
    drop(store);

    // The state expires (the open sweeps it): the audit record takes the time over.
    clock.set(last + 900_000 + 1);
    let store = open(&dir, &clock);
    assert!(store.instances("g").await.expect("instances").is_empty());
    drop(store);
    let store = open(&dir, &clock);
    let audits = store.instance_audit("g").await.expect("audit");
    assert_eq!(
        latest_status(audits),
        Some(last),
        "kept by the audit record"
    );
}

#[tokio::test]
async fn expired_records_are_deleted_from_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    let store = open(&dir, &clock);
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, None)
        .await
        .expect("group");
    store.update_flags(&all_flags(), None).await.expect("flags");
    store
        .put_runtime("g", &runtime_with_intent(), Some(1))
        .await
        .expect("runtime");
    store
        .append_audit("g", &[launcher_action(T0)], None)
        .await
        .expect("audit");
    store
        .check_in(&report("g", report_state("i-9", T0, T0, 0.5)))
        .await
        .expect("check-in");
    drop(store);
    let path = dir.path().join(disk::FILE_NAME);
    let rows = disk::row_counts(&path).expect("rows");
    assert!(
        rows.iter().all(|(_, n)| *n > 0),
        "every table has rows: {rows:?}"
    );

    // Past every retention: the open sweeps, and the close commits the deletions.
    clock.set(T0 + 172_800_000 + 1);
    let store = open(&dir, &clock);
    assert!(store.instances("g").await.expect("instances").is_empty());
    drop(store);
    let rows = disk::row_counts(&path).expect("rows");
    let count = |table: &str| {
        rows.iter()
            .find(|(t, _)| t == table)
            .map(|(_, n)| *n)
            .unwrap_or_default()
    };
    for table in [
        "flags",
        "states",
        "samples",
        "group_audit",
        "instance_audit",
    ] {
        assert_eq!(count(table), 0, "{table} swept: {rows:?}");
    }
    assert_eq!(count("groups"), 1, "groups never expire");
    assert_eq!(count("runtime"), 1, "nor does their runtime");
}

#[tokio::test]
async fn a_file_in_use_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    let _store = open(&dir, &clock);
    match EmbeddedStore::open(dir.path(), clock.clone()) {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("locked"), "{message}")
        }
        other => panic!("expected a lock error, got {other:?}"),
    }
}

/// Set for the child process of [`a_file_held_by_another_process_is_refused`].
const HOLD_DIR_ENV: &str = "JITSI_SCALER_TEST_HOLD_STORE_DIR";

/// In a child process: holds a store open until its standard input closes.
#[test]
#[ignore = "helper of a_file_held_by_another_process_is_refused"]
fn helper_holds_the_store_open() {
    let Some(dir) = std::env::var_os(HOLD_DIR_ENV) else {
        return;
    };
    let _store = EmbeddedStore::open(std::path::Path::new(&dir), clock()).expect("child open");
    println!("held");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
}

#[test]
fn a_file_held_by_another_process_is_refused() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "store::embedded::tests::helper_holds_the_store_open",
            "--ignored",
            "--nocapture",
        ])
        .env(HOLD_DIR_ENV, dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok);
    assert!(
        lines.any(|line| line == "held"),
        "the child opened the store"
    );
    let refused = EmbeddedStore::open(dir.path(), clock());
    drop(child.stdin.take());
    lines.for_each(drop);
    let status = child.wait().expect("child exits");
    match refused {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("locked"), "{message}")
        }
        other => panic!("expected a lock error, got {other:?}"),
    }
    assert!(status.success());
    EmbeddedStore::open(dir.path(), clock()).expect("free again once the child exited");
}

#[tokio::test]
async fn a_damaged_file_is_reported_corrupt() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(disk::FILE_NAME), vec![0xA5u8; 64 * 1024]).expect("write");
    let result = EmbeddedStore::open(dir.path(), clock());
    assert!(
        matches!(result, Err(StoreError::Corrupt { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn damage_anywhere_is_reported_or_harmless_never_a_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    let store = open(&dir, &clock);
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, None)
        .await
        .expect("group");
    for i in 0..200 {
        store
            .check_in(&report(
                "g",
                report_state(&format!("i-{i:03}"), T0, T0, 0.5),
            ))
            .await
            .expect("check-in");
    }
    let expected = everything(&store).await;
    drop(store);
    let path = dir.path().join(disk::FILE_NAME);
    let original = std::fs::read(&path).expect("read");
    let mut reported = 0;
    for offset in (0..original.len()).step_by(original.len() / 40) {
        let mut bytes = original.clone();
        let end = (offset + 64).min(bytes.len());
        bytes[offset..end].iter_mut().for_each(|b| *b ^= 0x5A);
        std::fs::write(&path, &bytes).expect("write");
        match EmbeddedStore::open(dir.path(), clock.clone()) {
            // The damage hit free space: every record reads back as written.
            Ok(store) => assert_eq!(everything(&store).await, expected, "offset {offset}"),
            Err(StoreError::Corrupt { .. }) => reported += 1,
            Err(other) => panic!("offset {offset}: {other:?}"),
        }
    }
    assert!(reported > 0, "the header and the data pages are checked");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    drop(open(&dir, &clock));
    let path = dir.path().join(disk::FILE_NAME);
    disk::poke(&path, "meta", &["schemaVersion"], b"2").expect("poke");
    match EmbeddedStore::open(dir.path(), clock.clone()) {
        Err(StoreError::Corrupt { key, message }) => {
            assert_eq!(key, "meta/schemaVersion");
            assert!(message.contains("schema version 2"), "{message}");
        }
        other => panic!("expected a schema error, got {other:?}"),
    }
}

#[tokio::test]
async fn unreadable_records_are_dropped_or_refused_by_kind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    let store = open(&dir, &clock);
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, None)
        .await
        .expect("group");
    for id in ["i-1", "i-2"] {
        store
            .check_in(&report("g", report_state(id, T0, T0, 0.5)))
            .await
            .expect("check-in");
    }
    drop(store);
    let path = dir.path().join(disk::FILE_NAME);
    disk::poke(&path, "states", &["g", "i-1"], b"{not json").expect("poke");

    // A state is rebuilt by the next check-in: it is dropped, and deleted from the file.
    let store = open(&dir, &clock);
    let ids: Vec<String> = store
        .instances("g")
        .await
        .expect("instances")
        .into_iter()
        .map(|r| r.state.instance_id.clone())
        .collect();
    assert_eq!(ids, vec!["i-2"]);
    drop(store);
    let rows = disk::row_counts(&path).expect("rows");
    assert!(rows.contains(&("states".to_string(), 1)), "{rows:?}");

    // So is a binary series of the wrong length.
    disk::poke(&path, "samples", &["g", "i-2"], &[1, 2, 3]).expect("poke");
    let store = open(&dir, &clock);
    let snapshot = store.snapshot("g", 0).await.expect("snapshot").expect("g");
    let ids: Vec<&str> = snapshot.samples.iter().map(|s| &*s.instance_id).collect();
    assert_eq!(ids, vec!["i-1"]);
    drop(store);
    let rows = disk::row_counts(&path).expect("rows");
    assert!(rows.contains(&("samples".to_string(), 1)), "{rows:?}");

    // A group is not: the open fails and names it.
    disk::poke(&path, "groups", &["g"], b"[]").expect("poke");
    match EmbeddedStore::open(dir.path(), clock.clone()) {
        Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, "groups/g"),
        other => panic!("expected a corrupt group, got {other:?}"),
    }
}

/// A rough timing of the check-in path (run with `--release -- --ignored --nocapture`).
#[tokio::test]
#[ignore = "timing only; run by hand in release mode"]
async fn check_in_throughput() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    let store = EmbeddedStore::open(dir.path(), clock.clone()).expect("open");
    let started = std::time::Instant::now();
    let total = 100_000i64;
    for n in 0..total {
        let now = T0 + n * 10;
        clock.set(now);
        let id = format!("i-{:04}", n % 1000);
        store
            .check_in(&report("g", report_state(&id, now, now, 0.5)))
            .await
            .expect("check-in");
    }
    let elapsed = started.elapsed();
    store.flush().await.expect("flush");
    let flushed = started.elapsed();
    println!(
        "{total} check-ins over 1000 instances: {:?} ({:.0}/s), flushed after {:?}",
        elapsed,
        total as f64 / elapsed.as_secs_f64(),
        flushed
    );
    assert_eq!(store.instances("g").await.expect("instances").len(), 1000);
}

/// The nice value in a `/proc/.../stat` text (its 19th field; the command name, in
/// parentheses, may hold spaces).
#[cfg(target_os = "linux")]
fn nice_in(stat: &str) -> i32 {
    let (_, fields) = stat.rsplit_once(')').expect("stat names the command");
    fields
        .split_whitespace()
        .nth(16)
        .and_then(|n| n.parse().ok())
        .expect("nice value")
}

#[cfg(target_os = "linux")]
fn own_nice() -> i32 {
    nice_in(&std::fs::read_to_string("/proc/thread-self/stat").expect("own stat"))
}

#[cfg(target_os = "linux")]
#[test]
fn lowering_the_priority_raises_the_threads_nice_value_up_to_19() {
    let caller = own_nice();
    std::thread::spawn(|| {
        let before = own_nice();
        super::writer::lower_priority(0);
        assert_eq!(own_nice(), before, "0 leaves the priority alone");
        super::writer::lower_priority(3);
        assert_eq!(own_nice(), (before + 3).min(19));
        super::writer::lower_priority(40);
        assert_eq!(own_nice(), 19, "capped at the lowest priority");
    })
    .join()
    .expect("the thread's checks");
    assert_eq!(own_nice(), caller, "only the thread that asked is lowered");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_writer_thread_runs_at_the_configured_lower_priority() {
    let base = own_nice();
    let nice = 13;
    assert!(
        base + i32::from(EmbeddedOptions::DEFAULT_WRITER_NICE) < 19,
        "this process runs at nice {base}: the writers' priorities cannot be told apart"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let options = EmbeddedOptions {
        writer_nice: nice,
        ..manual_commits()
    };
    let store = EmbeddedStore::open_with(dir.path(), clock(), options).expect("open");
    // The writer answers a flush from its loop, which starts after the priority is set.
    store.flush().await.expect("flush");
    // Writers of stores other tests open meanwhile run at the default.
    let writers: Vec<i32> = std::fs::read_dir("/proc/self/task")
        .expect("threads")
        .filter_map(|task| {
            let path = task.ok()?.path();
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            (name.trim() == "jitsi-scaler-st").then(|| nice_in(&stat))
        })
        .collect();
    assert!(
        writers.contains(&(base + i32::from(nice)).min(19)),
        "a writer at nice {base} + {nice}: {writers:?}"
    );
}
