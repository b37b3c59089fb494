//! Tests of [`RedisStore`] against real `redis-server` processes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ::redis::AsyncCommands;

use super::test_server::{self, RedisServer, eventually, fresh_prefix};
use super::*;
use crate::audit::{InstanceAuditKind, LauncherAction};
use crate::clock::ManualClock;
use crate::store::conformance::{T0, group, report, report_state};

fn store_on(url: &str, prefix: &str, clock: Arc<ManualClock>) -> RedisStore {
    RedisStore::open(&RedisConfig::new(url).with_key_prefix(prefix))
        .unwrap_or_else(|e| panic!("open: {e}"))
        .with_clock(clock)
}

/// The core conformance suite, one test per case, each on a fresh prefix of a shared server.
macro_rules! redis_conformance {
    ($($case:ident),* $(,)?) => {
        mod conformance {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(server) = test_server::shared() else { return };
                    let url = server.url();
                    crate::store::conformance::$case(move |clock: Arc<ManualClock>| {
                        let store = store_on(&url, &fresh_prefix(), clock);
                        async move { Arc::new(store) as Arc<dyn Store> }
                    })
                    .await;
                }
            )*
        }
    };
}

// The cases of `store_conformance_tests!` (which cannot skip when redis-server is missing).
redis_conformance!(
    groups_compare_and_set,
    fencing_rejects_older_tokens,
    check_in_records_and_answers,
    samples_are_trimmed_and_deduplicated,
    flags_gate_samples_and_expire,
    polls_refresh_liveness,
    reconfiguration_lifecycle,
    state_retention_follows_the_clock,
    audit_order_and_retention,
    deleting_a_group_keeps_its_audit,
    runtime_round_trips,
);

fn launcher_event(token: u64) -> AuditEvent {
    AuditEvent::Group(GroupAuditEvent::Launcher(LauncherAction {
        timestamp: T0,
        action_type: "scaleUp".into(),
        count: 0,
        desired_count: 0,
        scale_quantity: token as u32,
        detail: None,
    }))
}

/// Fencing is atomic with the write: with four clients writing concurrently under random
/// tokens, a rejected write leaves nothing, and accepted writes land in token order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_is_atomic_with_the_write() {
    let Some(server) = test_server::shared() else {
        return;
    };
    let prefix = fresh_prefix();
    let clock = Arc::new(ManualClock::new(T0));
    let mut tasks = Vec::new();
    for writer in 0..4u64 {
        // One store (one connection) per writer, so the writes really interleave.
        let store = store_on(&server.url(), &prefix, clock.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcome = Vec::new();
            for i in 0..40u64 {
                let token = 1 + (writer * 7919 + i * 104_729) % 1000;
                let result = store
                    .append_audit("g", &[launcher_event(token)], Some(token))
                    .await;
                match result {
                    Ok(()) => outcome.push((token, true)),
                    Err(StoreError::Fenced { token: t, newest }) => {
                        assert_eq!(t, token);
                        assert!(newest > token, "rejected {token} with newest {newest}");
                        outcome.push((token, false));
                    }
                    Err(e) => panic!("append: {e}"),
                }
            }
            outcome
        }));
    }
    let mut accepted = BTreeSet::new();
    let mut rejected = BTreeSet::new();
    let mut accepted_writes = 0;
    for task in tasks {
        for (token, ok) in task.await.unwrap_or_else(|e| panic!("writer: {e}")) {
            if ok {
                accepted_writes += 1;
                accepted.insert(token);
            } else {
                rejected.insert(token);
            }
        }
    }
    assert!(!rejected.is_empty(), "the writers interleaved");
    let store = store_on(&server.url(), &prefix, clock);
    let log = store
        .group_audit("g")
        .await
        .expect("audit")
        .expect("written");
    // Items are newest first; in write order the tokens never go down.
    let written: Vec<u64> = log
        .launcher_action_items
        .iter()
        .rev()
        .map(|l| u64::from(l.scale_quantity))
        .collect();
    assert!(
        written.windows(2).all(|w| w[0] <= w[1]),
        "tokens out of order: {written:?}"
    );
    for token in &written {
        assert!(accepted.contains(token), "{token} was written");
    }
    for token in rejected.difference(&accepted) {
        assert!(!written.contains(token), "rejected {token} left an item");
    }
    assert_eq!(
        written.len(),
        accepted_writes,
        "every accepted write appended one item, no rejected one did"
    );
    let floor: String = server
        .client()
        .await
        .get(format!("{prefix}fence"))
        .await
        .expect("fence");
    assert_eq!(floor, accepted.last().expect("some accepted").to_string());
}

/// Two clients incrementing one group through read-modify-compare-and-set lose no update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compare_and_set_loses_no_update() {
    let Some(server) = test_server::shared() else {
        return;
    };
    let prefix = fresh_prefix();
    let clock = Arc::new(ManualClock::new(T0));
    let first = store_on(&server.url(), &prefix, clock.clone());
    first
        .put_group(&GroupRecord::new(group("g", 0)), Expect::Absent, None)
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let store = store_on(&server.url(), &prefix, clock.clone());
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            for _ in 0..50 {
                loop {
                    let mut rec = store.get_group("g").await.expect("get").expect("exists");
                    rec.group.scaling_options.desired_count += 1;
                    match store
                        .put_group(&rec, Expect::Version(rec.version), None)
                        .await
                    {
                        Ok(v) => {
                            assert_eq!(v, rec.version + 1);
                            break;
                        }
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("put: {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap_or_else(|e| panic!("task: {e}"));
    }
    let rec = first.get_group("g").await.expect("get").expect("exists");
    assert_eq!(rec.group.scaling_options.desired_count, 100);
    assert_eq!(rec.version, 101);
    eprintln!("{conflicts} compare-and-set conflicts retried");
}

async fn keys_of(
    conn: &mut ::redis::aio::MultiplexedConnection,
    pattern: &str,
) -> BTreeSet<String> {
    conn.keys::<_, Vec<String>>(pattern)
        .await
        .expect("keys")
        .into_iter()
        .collect()
}

/// The documented layout: every key under the prefix, garbage-collection TTLs where documented,
/// a deleted group's keys gone and its audit kept.
#[tokio::test]
async fn key_layout_ttls_and_deletion() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let p = "js:";
    let clock = Arc::new(ManualClock::new(T0));
    let store = store_on(&server.url(), p, clock.clone());
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Absent, Some(3))
        .await
        .expect("group");
    store
        .check_in(&report("g", report_state("i-1", T0, T0, 0.5)))
        .await
        .expect("check-in");
    store
        .put_runtime("g", &GroupRuntime::default(), Some(3))
        .await
        .expect("runtime");
    store
        .update_flags(
            &[FlagUpdate::Protect {
                instance_id: "i-1".into(),
                until_ms: T0 + 60_000,
            }],
            None,
        )
        .await
        .expect("flag");
    store
        .append_audit("g", &[launcher_event(3)], Some(3))
        .await
        .expect("audit");
    let mut conn = server.client().await;
    let all = keys_of(&mut conn, "*").await;
    let expected: BTreeSet<String> = [
        "groups",
        "group-versions",
        "fence",
        "seq",
        "flags:i-1",
        "group:g:instances",
        "group:g:state:i-1",
        "group:g:samples",
        "group:g:runtime",
        "group:g:audit",
        "group:g:instance-audit",
        "group:g:instance-audit-index",
    ]
    .iter()
    .map(|k| format!("{p}{k}"))
    .collect();
    assert_eq!(all, expected);
    let ttl = |key: &'static str| {
        let mut conn = conn.clone();
        async move {
            conn.pttl::<_, i64>(format!("{p}{key}"))
                .await
                .expect("pttl")
        }
    };
    assert_eq!(ttl("groups").await, -1, "groups never expire");
    assert_eq!(ttl("group:g:runtime").await, -1);
    let margin = GC_MARGIN.as_millis() as i64;
    let state_ttl = ttl("group:g:state:i-1").await;
    assert!(
        state_ttl > 900_000 && state_ttl <= 900_000 + margin,
        "{state_ttl}"
    );
    assert!(ttl("group:g:samples").await > 240_000);
    let flags_ttl = ttl("flags:i-1").await;
    assert!(
        flags_ttl > 60_000 && flags_ttl <= 60_000 + margin,
        "{flags_ttl}"
    );
    assert!(ttl("group:g:audit").await > 172_800_000);
    assert!(ttl("group:g:instance-audit-index").await > 172_800_000);

    assert!(store.delete_group("g", Some(3)).await.expect("delete"));
    let left = keys_of(&mut conn, "*").await;
    let kept: BTreeSet<String> = [
        "fence",
        "seq",
        "flags:i-1",
        "group:g:audit",
        "group:g:instance-audit",
        "group:g:instance-audit-index",
    ]
    .iter()
    .map(|k| format!("{p}{k}"))
    .collect();
    assert_eq!(left, kept);
}

/// Samples are trimmed on every write: the set never holds more than the window.
#[tokio::test]
async fn samples_stay_bounded_by_the_window() {
    let Some(server) = test_server::shared() else {
        return;
    };
    let prefix = fresh_prefix();
    let clock = Arc::new(ManualClock::new(T0));
    let store = store_on(&server.url(), &prefix, clock.clone());
    let mut conn = server.client().await;
    for i in 0..100 {
        let now = T0 + i * 10_000;
        clock.set(now);
        let mut c = report("g", report_state("i-1", now, now, 0.1));
        c.sample_retention_ms = 60_000;
        assert!(store.check_in(&c).await.expect("check-in").sample_written);
        let n: usize = conn
            .zcard(format!("{prefix}group:g:samples"))
            .await
            .expect("zcard");
        assert!(n <= 7, "{n} samples after {i} reports");
    }
}

/// A check-in is one command from the client (one `EVALSHA`; the commands the script runs
/// show in MONITOR as coming from `lua`).
#[tokio::test]
async fn a_check_in_is_one_round_trip() {
    use futures::StreamExt;

    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = Arc::new(ManualClock::new(T0));
    let store = store_on(&server.url(), "js:", clock);
    store
        .check_in(&report("g", report_state("i-1", T0, T0, 0.5)))
        .await
        .expect("first check-in loads the script");
    let client = ::redis::Client::open(server.url()).expect("client");
    let monitor = client.get_async_monitor().await.expect("MONITOR");
    let mut lines = monitor.into_on_message::<String>();
    store
        .check_in(&report("g", report_state("i-1", T0 + 1, T0 + 1, 0.5)))
        .await
        .expect("check-in");
    let mut conn = server.client().await;
    ::redis::cmd("ECHO")
        .arg("end-of-check-in")
        .query_async::<String>(&mut conn)
        .await
        .expect("marker");
    let mut from_clients = Vec::new();
    let mut from_lua = 0;
    loop {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next())
            .await
            .expect("monitor output within 5 s")
            .expect("monitor open");
        if line.contains("end-of-check-in") {
            break;
        }
        if line.contains(" lua]") {
            from_lua += 1;
        } else {
            from_clients.push(line);
        }
    }
    assert_eq!(from_clients.len(), 1, "{from_clients:#?}");
    assert!(
        from_clients[0].to_ascii_lowercase().contains("\"evalsha\""),
        "{from_clients:?}"
    );
    assert!(
        from_lua > 5,
        "the script did the work ({from_lua} commands)"
    );
}

fn unavailable<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    let ok = matches!(r, Err(StoreError::Unavailable(_)));
    if !ok {
        eprintln!("expected Unavailable, got {r:?}");
    }
    ok
}

/// Redis restarts: calls in between fail as `Unavailable` (never "not set"), then the store
/// reconnects by itself and reloads its scripts.
#[tokio::test]
async fn the_store_reconnects_after_a_restart() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let clock = Arc::new(ManualClock::new(T0));
    let store = RedisStore::open(
        &RedisConfig::new(server.url())
            .with_key_prefix("js:")
            .with_timeout(Duration::from_millis(500)),
    )
    .expect("open")
    .with_clock(clock);
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Absent, None)
        .await
        .expect("before");
    server.stop();
    assert!(unavailable(store.ping().await));
    assert!(unavailable(store.flags("i-1").await), "never 'not set'");
    assert!(unavailable(store.get_group("g").await));
    assert!(unavailable(
        store
            .check_in(&report("g", report_state("i-1", T0, T0, 0.5)))
            .await
    ));
    assert!(unavailable(
        store
            .put_group(&GroupRecord::new(group("g", 1)), Expect::Any, None)
            .await
    ));
    server.start_again();
    eventually("reconnected", Duration::from_secs(15), || async {
        match store.ping().await {
            Ok(()) => true,
            Err(StoreError::Unavailable(_)) => false,
            Err(e) => panic!("unexpected error while reconnecting: {e}"),
        }
    })
    .await;
    // The new server has no data and no scripts: both come back.
    assert_eq!(store.get_group("g").await, Ok(None));
    assert_eq!(
        store
            .put_group(&GroupRecord::new(group("g", 1)), Expect::Absent, None)
            .await,
        Ok(1)
    );
    assert!(
        store
            .check_in(&report("g", report_state("i-1", T0, T0, 0.5)))
            .await
            .expect("check-in")
            .state_changed
    );
}

/// A frozen Redis (SIGSTOP) makes calls fail within the command timeout, not hang.
#[tokio::test]
async fn a_frozen_redis_answers_unavailable_in_time() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = Arc::new(ManualClock::new(T0));
    let store = RedisStore::open(
        &RedisConfig::new(server.url())
            .with_key_prefix("js:")
            .with_timeout(Duration::from_millis(300)),
    )
    .expect("open")
    .with_clock(clock);
    store.ping().await.expect("up");
    server.pause();
    let check_in = report("g", report_state("i-1", T0, T0, 0.5));
    let r = tokio::time::timeout(Duration::from_secs(5), store.check_in(&check_in))
        .await
        .expect("a check-in answers within 5 s with a 300 ms timeout");
    assert!(unavailable(r));
    let r = tokio::time::timeout(Duration::from_secs(5), store.flags("i-1"))
        .await
        .expect("a flags read answers within 5 s with a 300 ms timeout");
    assert!(unavailable(r));
    server.resume();
    eventually("answers again", Duration::from_secs(15), || async {
        store.ping().await.is_ok()
    })
    .await;
}

/// With Sentinel, the store finds the master, and after a failover finds the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_finds_the_master_and_follows_a_failover() {
    let Some(master) = RedisServer::start() else {
        return;
    };
    let Some(replica) = RedisServer::start_replica_of(master.port()) else {
        return;
    };
    let Some(sentinel) = RedisServer::start_sentinel(master.port(), "js-master") else {
        return;
    };
    // The sentinel learns of the replica from the master.
    sentinel.wait_for_log("+slave slave", 0);
    let mut config = RedisConfig::new("redis://").with_key_prefix("js:");
    config.sentinel = Some(SentinelConfig {
        master_name: "js-master".into(),
        addresses: vec![format!("127.0.0.1:{}", sentinel.port())],
        password: None,
    });
    let clock = Arc::new(ManualClock::new(T0));
    let store = RedisStore::open(&config).expect("open").with_clock(clock);
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Absent, None)
        .await
        .expect("through sentinel");
    let mut on_master = master.client().await;
    assert!(
        on_master
            .hexists::<_, _, bool>("js:groups", "g")
            .await
            .expect("hexists")
    );

    let from = sentinel.log_len();
    let to_sentinel = sentinel.client().await;
    // The sentinel refuses ("NOGOODSLAVE") until it has talked to the replica.
    eventually(
        "the sentinel starts a failover",
        Duration::from_secs(20),
        || {
            let mut to_sentinel = to_sentinel.clone();
            async move {
                ::redis::cmd("SENTINEL")
                    .arg("FAILOVER")
                    .arg("js-master")
                    .query_async::<()>(&mut to_sentinel)
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    tokio::task::block_in_place(|| sentinel.wait_for_log("+switch-master", from));
    let mut on_replica = replica.client().await;
    let mut n = 1;
    eventually(
        "writes reach the new master",
        Duration::from_secs(20),
        || {
            n += 1;
            let rec = GroupRecord::new(group(&format!("g{n}"), 1));
            let store = &store;
            let mut on_replica = on_replica.clone();
            async move {
                store.put_group(&rec, Expect::Any, None).await.is_ok()
                    && on_replica
                        .hexists::<_, _, bool>("js:groups", &rec.group.name)
                        .await
                        .unwrap_or(false)
            }
        },
    )
    .await;
    let role: Vec<::redis::Value> = ::redis::cmd("ROLE")
        .query_async(&mut on_replica)
        .await
        .expect("role");
    assert_eq!(
        role.first().and_then(codec::text).as_deref(),
        Some("master")
    );
}

/// Instance audit is read per group from its index, with the last state of removed instances.
#[tokio::test]
async fn instance_audit_is_indexed_per_group() {
    let Some(server) = test_server::shared() else {
        return;
    };
    let clock = Arc::new(ManualClock::new(T0));
    let store = store_on(&server.url(), &fresh_prefix(), clock);
    store
        .append_audit(
            "g",
            &[
                AuditEvent::instance("a", InstanceAuditKind::RequestToLaunch, T0),
                AuditEvent::instance("b", InstanceAuditKind::ServerTerminate, T0 + 5),
            ],
            None,
        )
        .await
        .expect("audit");
    store
        .append_audit(
            "h",
            &[AuditEvent::instance(
                "c",
                InstanceAuditKind::RequestToLaunch,
                T0,
            )],
            None,
        )
        .await
        .expect("audit");
    store
        .check_in(&report("g", report_state("b", T0 + 10, T0, 0.5)))
        .await
        .expect("check-in");
    store
        .remove_instances("g", &["b".into()], None)
        .await
        .expect("remove");
    let audit = store.instance_audit("g").await.expect("audit");
    let ids: Vec<&str> = audit.iter().map(|a| a.instance_id.as_str()).collect();
    assert_eq!(ids, vec!["a", "b"]);
    assert_eq!(audit[0].request_to_launch, Some(T0));
    assert_eq!(audit[1].server_terminate, Some(T0 + 5));
    assert_eq!(audit[1].latest_status, Some(T0 + 10));
    assert_eq!(
        audit[1].latest_status_info.as_ref().map(|s| s.timestamp),
        Some(T0 + 10),
        "the removed instance's last state"
    );
}

/// Over TLS (`rediss://`) with a private CA; without that CA the server is not trusted.
#[tokio::test]
async fn tls_with_a_private_ca() {
    let Some(server) = RedisServer::start_tls() else {
        return;
    };
    let clock = Arc::new(ManualClock::new(T0));
    let mut config = RedisConfig::new(server.url())
        .with_key_prefix("js:")
        .with_timeout(Duration::from_secs(2));
    config.tls_ca_file = Some(server.ca_file());
    let store = RedisStore::open(&config)
        .expect("open")
        .with_clock(clock.clone());
    store
        .put_group(&GroupRecord::new(group("g", 1)), Expect::Absent, None)
        .await
        .expect("write over TLS");
    assert_eq!(
        store.get_group("g").await.expect("read").map(|r| r.version),
        Some(1)
    );
    config.tls_ca_file = None;
    let untrusted = RedisStore::open(&config).expect("open").with_clock(clock);
    assert!(
        unavailable(untrusted.ping().await),
        "an unknown CA is refused"
    );
}
