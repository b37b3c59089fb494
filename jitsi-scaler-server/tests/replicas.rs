//! Several `jitsi-scaler serve` processes on one real Redis, behind no load balancer but called
//! in turn, with a counting fake cloud (an HTTP plugin) they all share: shared state, leader
//! failover under SIGKILL (and the handover on SIGTERM), fencing of a paused leader
//! (SIGSTOP/SIGCONT), replicas configured with one identity, and a Redis restart under load.
//!
//! Every test skips (with a message) when `redis-server` is missing, unless
//! `JITSI_SCALER_REQUIRE_SERVICES=1`.

mod cluster;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::fake_cloud::{Delays, FakeCloud, Record};
use cluster::{
    Cluster, LEASE_TTL_SEC, Settings, eventually, get_ok, jvb_group, jvb_report, post_ok, put_ok,
    send,
};
use jitsi_scaler_core::store::redis_testkit::RedisServer;
use jitsi_scaler_core::store::{RedisConfig, RedisStore, Store, StoreError};
use rand::Rng;
use serde_json::{Value, json};

/// How long a test waits for the fleet to settle after a change.
const SETTLE: Duration = Duration::from_secs(30);

fn settings(redis: &RedisServer, cloud: &FakeCloud) -> Settings {
    Settings {
        redis_url: redis.url(),
        cloud_url: cloud.url.clone(),
        extra_args: Vec::new(),
        identity: None,
    }
}

/// The instance ids of a report.
fn report_ids(report: &Value) -> Vec<String> {
    report["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["instanceId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the cloud runs exactly `target` instances of `group` and the store tracks
/// exactly those, none shutting down; the group's report then.
async fn converge(cluster: &Cluster, cloud: &FakeCloud, group: &str, target: usize) -> Value {
    eventually(
        &format!("{group} converged to {target} instances"),
        SETTLE,
        || async {
            let record = cloud.record();
            let mut running: Vec<String> =
                record.running(group).iter().map(|i| i.id.clone()).collect();
            if running.len() != target {
                return None;
            }
            let report = cluster.report(group).await?;
            let mut tracked = report_ids(&report);
            running.sort();
            tracked.sort();
            (report["count"] == target && report["shuttingDownCount"] == 0 && tracked == running)
                .then_some(report)
        },
    )
    .await
}

/// A check-in on one replica is visible on the other, and edits of one group made at once
/// through both replicas lose no field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_check_ins_and_concurrent_edits() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let cloud = FakeCloud::start(Delays::quick()).await;
    let cluster = Cluster::start(settings(&redis, &cloud), &["a", "b"]);
    let http = cluster.http.clone();
    let (a, b) = (
        cluster.replicas[0].api.clone(),
        cluster.replicas[1].api.clone(),
    );
    let group = "shared-jvb";
    put_ok(
        &http,
        &format!("{a}/groups/{group}"),
        &jvb_group(group, 0, 0, 50),
    )
    .await;
    let seen = get_ok(&http, &format!("{b}/groups/{group}")).await;
    assert_eq!(seen["instanceGroup"]["name"], group);

    // A check-in on A, read on B; and the other way round.
    for (via, read, id) in [(&a, &b, "jvb-on-a"), (&b, &a, "jvb-on-b")] {
        let answer = post_ok(
            &http,
            &format!("{via}/sidecar/status"),
            &jvb_report(group, id, 0.42),
        )
        .await;
        assert_eq!(answer, json!({"shutdown": false, "reconfigure": null}));
        let report = get_ok(&http, &format!("{read}/groups/{group}/report")).await;
        let report = &report["groupReport"];
        let instance = report["instances"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["instanceId"] == id))
            .unwrap_or_else(|| panic!("{id} not in the other replica's report: {report}"));
        assert_eq!(instance["privateIp"], "10.0.0.5", "{instance}");
        assert_eq!(instance["publicIp"], "192.0.2.5", "{instance}");
        assert_eq!(instance["version"], "2.3.100", "{instance}");
        assert_eq!(instance["instanceName"], format!("{id}-name"), "{instance}");
    }
    let report = get_ok(&http, &format!("{a}/groups/{group}/report")).await;
    assert_eq!(report["groupReport"]["count"], 2, "{report}");

    // Each field has one writer that sets it to 1, 2, … N, alternating the replicas; all the
    // writers run at once. The last value of every field must survive.
    const N: u64 = 12;
    let fields = [
        "scaleUpQuantity",
        "scaleDownQuantity",
        "scalePeriod",
        "scaleUpPeriodsCount",
        "scaleDownPeriodsCount",
        "gracePeriodTTLSec",
    ];
    let mut writers = tokio::task::JoinSet::new();
    for field in fields {
        let (http, a, b) = (http.clone(), a.clone(), b.clone());
        writers.spawn(async move {
            for n in 1..=N {
                let via = if n % 2 == 0 { &a } else { &b };
                put_ok(
                    &http,
                    &format!("{via}/groups/{group}/scaling-options"),
                    &json!({ field: n }),
                )
                .await;
            }
        });
    }
    {
        let (http, a, b) = (http.clone(), a.clone(), b.clone());
        writers.spawn(async move {
            for n in 1..=N {
                let via = if n % 2 == 0 { &b } else { &a };
                put_ok(
                    &http,
                    &format!("{via}/groups/{group}/desired"),
                    &json!({"minDesired": n, "desiredCount": 2 * n, "maxDesired": 50 + n}),
                )
                .await;
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("a writer failed");
    }
    let from_a = get_ok(&http, &format!("{a}/groups/{group}")).await;
    let from_b = get_ok(&http, &format!("{b}/groups/{group}")).await;
    assert_eq!(from_a, from_b, "both replicas read the same group");
    let g = &from_a["instanceGroup"];
    let options = &g["scalingOptions"];
    for field in &fields[..5] {
        assert_eq!(options[*field], N, "{field} lost an edit: {g}");
    }
    assert_eq!(
        g["gracePeriodTTLSec"], N,
        "gracePeriodTTLSec lost an edit: {g}"
    );
    assert_eq!(options["minDesired"], N, "{g}");
    assert_eq!(options["desiredCount"], 2 * N, "{g}");
    assert_eq!(options["maxDesired"], 50 + N, "{g}");
}

/// One provider call about a subject (a launch key, or an instance to terminate).
struct SubjectCall<'a> {
    caller: &'a str,
    started: Instant,
    ended: Option<Instant>,
    answered: bool,
}

/// Why calls about one subject were repeated.
#[derive(Debug, Default)]
struct Repeats {
    /// After the earlier caller was killed.
    after_kill: usize,
    /// By a live caller after its earlier call went unanswered (it dropped the call: its
    /// lease lapsed).
    after_drop: usize,
}

/// Checks the repeated calls about each subject: a repeat never overlaps an earlier call, and
/// comes only after the earlier caller was killed or dropped its call unanswered. A live
/// replica never re-sends a call it got the answer to.
fn check_repeats(
    what: &str,
    calls: BTreeMap<&str, Vec<SubjectCall<'_>>>,
    cluster: &Cluster,
) -> Repeats {
    let mut repeats = Repeats::default();
    for (subject, calls) in calls {
        for (i, call) in calls.iter().enumerate().skip(1) {
            for before in &calls[..i] {
                let diagnose = || {
                    let mut lines = Vec::new();
                    for who in [before.caller, call.caller] {
                        lines.push(format!("--- {who}"));
                        lines.extend(
                            cluster.log_lines(who, &["lead", "launch", "abandon", "termin"]),
                        );
                    }
                    lines.join("\n")
                };
                assert!(
                    before.ended.is_some_and(|e| e <= call.started),
                    "{what} {subject}: {}'s call overlapped {}'s\n{}",
                    call.caller,
                    before.caller,
                    diagnose()
                );
                let killed = cluster
                    .killed
                    .get(before.caller)
                    .is_some_and(|k| *k < call.started);
                assert!(
                    killed || !before.answered,
                    "{what} {subject} sent by {} at {:?}, answered, and again by {} at {:?}\n{}",
                    before.caller,
                    before.started,
                    call.caller,
                    call.started,
                    diagnose()
                );
                if killed {
                    repeats.after_kill += 1;
                } else {
                    repeats.after_drop += 1;
                    eprintln!(
                        "{what} {subject} repeated after a dropped call:\n{}",
                        diagnose()
                    );
                }
            }
        }
    }
    repeats
}

/// Kills the leader (SIGKILL) in the middle of its provider calls, again and again: a
/// follower takes over within the lease, and the cloud never sees a double launch or a double
/// terminate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_reconcile_never_launches_or_terminates_twice() {
    const KILLS: usize = 20;
    const LOW: usize = 1;
    const HIGH: usize = 3;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let cloud = FakeCloud::start(Delays {
        launch: 200..900,
        terminate: 200..700,
        list: 0..5,
    })
    .await;
    let mut cluster = Cluster::start(settings(&redis, &cloud), &["a", "b"]);
    let http = cluster.http.clone();
    let group = "failover";
    let mut body = jvb_group(group, 0, LOW as u32, 10);
    body["enableLaunch"] = json!(true);
    body["terminationPolicy"] = json!("onConfirmOrTimeout");
    body["drainTimeoutSec"] = json!(0);
    put_ok(
        &http,
        &format!("{}/groups/{group}", cluster.replicas[0].api),
        &body,
    )
    .await;
    converge(&cluster, &cloud, group, LOW).await;

    let ttl = Duration::from_secs(LEASE_TTL_SEC);
    // From the kill to the new leader's election (its log), and to its health saying so.
    let mut takeovers = Vec::new();
    let mut seen_takeovers = Vec::new();
    let mut mid_call = 0;
    let (mut ups, mut downs) = (0, 0);
    for kill in 0..KILLS {
        let up = kill % 2 == 0;
        let target = if up { HIGH } else { LOW };
        let (leader, _) = cluster.leader(SETTLE).await;
        let since = Instant::now();
        put_ok(
            &http,
            &format!("{}/groups/{group}/desired", cluster.replicas[leader].api),
            &json!({"desiredCount": target}),
        )
        .await;
        // The first provider call of this change, and when it is answered.
        let record = cloud
            .wait_for("a provider call for the change", SETTLE, |r| {
                if up {
                    r.launches.iter().any(|c| c.started > since)
                } else {
                    r.terminates.iter().any(|c| c.started > since)
                }
            })
            .await;
        let (caller, started, delay) = if up {
            let c = record.launches.iter().find(|c| c.started > since);
            c.map(|c| (c.caller.clone(), c.started, c.delay))
        } else {
            let c = record.terminates.iter().find(|c| c.started > since);
            c.map(|c| (c.caller.clone(), c.started, c.delay))
        }
        .expect("the call");
        let slot = cluster
            .slot_of(&caller)
            .unwrap_or_else(|| panic!("{caller} called the cloud but is not running"));
        // Three kills in four land while the call waits for its answer, the fourth just after
        // the answer, before the leader can have recorded it.
        let delay_ms = delay.as_millis() as u64;
        let offset = if kill % 4 == 3 {
            rand::rng().random_range(delay_ms..delay_ms + 150)
        } else {
            rand::rng().random_range(0..delay_ms.saturating_sub(50).max(1))
        };
        tokio::time::sleep_until((started + Duration::from_millis(offset)).into()).await;
        let killed_wall = jiff::Timestamp::now();
        let killed_at = cluster.kill_and_restart(slot);
        let record = cloud.record();
        let unanswered = if up {
            record
                .launches
                .iter()
                .any(|c| c.caller == caller && c.started == started && !c.answered)
        } else {
            record
                .terminates
                .iter()
                .any(|c| c.caller == caller && c.started == started && !c.answered)
        };
        if unanswered {
            mid_call += 1;
        }
        let (_, status) = cluster.leader_except(Some(&caller), ttl * 4).await;
        seen_takeovers.push(killed_at.elapsed());
        // When the new leader took the lease, by its own log.
        let became = eventually("the election in the log", SETTLE, || async {
            cluster
                .log_lines(&status.identity, &["became leader"])
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["token"].as_u64() == status.token)
                .find_map(|v| v["timestamp"].as_str()?.parse::<jiff::Timestamp>().ok())
        })
        .await;
        let took = became.duration_since(killed_wall);
        takeovers.push(Duration::try_from(took).expect("elected after the kill"));
        converge(&cluster, &cloud, group, target).await;
        if up {
            ups += 1;
        } else {
            downs += 1;
        }
    }

    let record: Record = cloud.record();
    let max_takeover = takeovers.iter().max().copied().unwrap_or_default();
    let max_seen = seen_takeovers.iter().max().copied().unwrap_or_default();
    let launch_keys: BTreeMap<&str, Vec<_>> =
        record
            .launches
            .iter()
            .fold(BTreeMap::new(), |mut by_key, c| {
                for key in &c.keys {
                    by_key
                        .entry(key.as_str())
                        .or_insert_with(Vec::new)
                        .push(SubjectCall {
                            caller: &c.caller,
                            started: c.started,
                            ended: c.ended,
                            answered: c.answered,
                        });
                }
                by_key
            });
    let terminated: BTreeMap<&str, Vec<_>> =
        record
            .terminates
            .iter()
            .fold(BTreeMap::new(), |mut by_id, c| {
                by_id
                    .entry(c.instance.as_str())
                    .or_insert_with(Vec::new)
                    .push(SubjectCall {
                        caller: &c.caller,
                        started: c.started,
                        ended: c.ended,
                        answered: c.answered,
                    });
                by_id
            });
    let launch_repeats = check_repeats("launch key", launch_keys, &cluster);
    let terminate_repeats = check_repeats("terminate of", terminated, &cluster);
    eprintln!(
        "failover: {KILLS} kills ({mid_call} left a provider call unanswered), elected after max {:?} avg {:?} (health said so after max {max_seen:?}), \
         {} launch calls (repeated keys: {launch_repeats:?}), {} terminate calls (repeats: {terminate_repeats:?})",
        max_takeover,
        takeovers.iter().sum::<Duration>() / takeovers.len().max(1) as u32,
        record.launches.len(),
        record.terminates.len(),
    );
    // The lease, renewed at most a moment before the kill, runs out at most `ttl` after it;
    // the follower campaigns when it does.
    assert!(
        max_takeover < ttl + Duration::from_millis(500),
        "a follower took {max_takeover:?} to take over (lease {ttl:?})"
    );
    assert!(
        mid_call >= KILLS / 2,
        "only {mid_call} kills hit a call waiting for its answer"
    );
    assert_eq!(
        record.instances.len(),
        LOW + ups * (HIGH - LOW),
        "instances launched: {:#?}",
        record.instances
    );
    assert_eq!(
        record.terminates.iter().filter(|t| t.effective).count(),
        downs * (HIGH - LOW),
        "instances terminated"
    );
    assert_eq!(record.peak_running.get(group).copied(), Some(HIGH));
    assert_eq!(record.low_after_terminate.get(group).copied(), Some(LOW));
    assert_eq!(cluster.killed.len(), KILLS);

    // A leader stopped with SIGTERM releases its lease: the follower takes over without
    // waiting for the lease to expire (at least 2 s of it were left).
    let (leader, _) = cluster.leader(SETTLE).await;
    let stopped_id = cluster.replicas[leader].identity.clone();
    let stopping = Instant::now();
    let status = cluster.replicas[leader]
        .terminate(Duration::from_secs(15))
        .await;
    assert!(status.success(), "{stopped_id} exited with {status}");
    let (_, status) = cluster.leader_except(Some(&stopped_id), ttl * 4).await;
    let handover = stopping.elapsed();
    eprintln!("failover: SIGTERM handover in {handover:?}");
    assert!(
        handover < ttl - Duration::from_millis(1200),
        "{} took over {handover:?} after SIGTERM: the lease was not released",
        status.identity
    );
}

/// A leader paused (SIGSTOP) during a provider call, then resumed (SIGCONT) once a follower
/// took over, makes no provider call and no store write with its old token; the same for a
/// leader paused while its plugin client waits to retry a throttled launch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_cannot_act_after_it_resumes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let cloud = FakeCloud::start(Delays {
        launch: 500..501,
        terminate: 0..5,
        list: 0..5,
    })
    .await;
    let mut cluster = Cluster::start(settings(&redis, &cloud), &["a", "b"]);
    let http = cluster.http.clone();
    let group = "fencing";
    let mut body = jvb_group(group, 0, 0, 10);
    body["enableLaunch"] = json!(true);
    put_ok(
        &http,
        &format!("{}/groups/{group}", cluster.replicas[0].api),
        &body,
    )
    .await;
    let ttl = Duration::from_secs(LEASE_TTL_SEC);
    let store = RedisStore::open(&RedisConfig::new(redis.url())).expect("store");

    // 1. Paused while its launch call is in flight; the new leader's repeat of the launch is
    //    held by the cloud, so the new leader has written nothing when the old one resumes.
    let (old, old_status) = cluster.leader(SETTLE).await;
    let new = 1 - old;
    let (old_id, new_id) = (
        cluster.replicas[old].identity.clone(),
        cluster.replicas[new].identity.clone(),
    );
    let old_token = old_status.token.expect("token");
    cloud.hold_launches_of(&new_id);
    let since = Instant::now();
    put_ok(
        &http,
        &format!("{}/groups/{group}/desired", cluster.replicas[old].api),
        &json!({"desiredCount": 2}),
    )
    .await;
    let record = cloud
        .wait_for("the leader's launch", SETTLE, |r| {
            r.launches
                .iter()
                .any(|c| c.caller == old_id && c.started > since)
        })
        .await;
    cluster.pause(old);
    let keys = record.launches.last().expect("launch").keys.clone();
    let (_, status) = cluster.leader_except(Some(&old_id), ttl * 4).await;
    assert_eq!(status.identity, new_id);
    let new_token = status.token.expect("token");
    assert!(new_token > old_token, "{new_token} > {old_token}");
    cloud
        .wait_for("the new leader's repeat of the launch", SETTLE, |r| {
            r.launches
                .iter()
                .any(|c| c.caller == new_id && c.keys == keys)
        })
        .await;
    let from = cluster.replicas[old].log.len();
    let resumed_at = Instant::now();
    cluster.resume(old);
    let ended = cluster.replicas[old]
        .wait_for_message(
            from,
            &["launched", "reconcile failed", "leadership lost"],
            SETTLE,
        )
        .await
        .unwrap_or_else(|| {
            panic!(
                "the resumed leader's reconcile did not end:\n{}",
                cluster.replicas[old].log.lines()[from..].join("\n")
            )
        });
    eventually("the resumed leader follows", SETTLE, || async {
        let s = cluster.replicas[old].leadership(&http).await?;
        (!s.is_leader && s.leader.as_deref() == Some(new_id.as_str())).then_some(())
    })
    .await;
    assert_eq!(
        cloud.record().calls_by_after(&old_id, resumed_at),
        0,
        "the resumed leader called the cloud"
    );
    let report = cluster.report(group).await.expect("report");
    assert_eq!(
        report["count"], 0,
        "the resumed leader recorded its launch ({ended}): {report}"
    );
    let audit = get_ok(
        &http,
        &format!("{}/groups/{group}/group-audit", cluster.replicas[new].api),
    )
    .await;
    assert_eq!(
        launcher_actions(&audit, "scaleUp"),
        0,
        "the resumed leader audited its launch: {audit}"
    );
    // Whatever it would still write with its old token is rejected.
    let snapshot = store
        .snapshot(group, 0)
        .await
        .expect("snapshot")
        .expect("group");
    let rejected = store
        .put_runtime(group, &snapshot.runtime, Some(old_token))
        .await;
    assert!(
        matches!(rejected, Err(StoreError::Fenced { .. })),
        "a write with the old token: {rejected:?}"
    );
    cloud.release();
    converge(&cluster, &cloud, group, 2).await;
    let audit = get_ok(
        &http,
        &format!("{}/groups/{group}/group-audit", cluster.replicas[new].api),
    )
    .await;
    assert_eq!(launcher_actions(&audit, "scaleUp"), 1, "{audit}");

    // 2. Paused while its plugin client waits to retry a throttled launch.
    let old = new;
    let (old_id, new_id) = (new_id, old_id);
    cloud.throttle_next_launch_of(&old_id, 2);
    let since = Instant::now();
    put_ok(
        &http,
        &format!("{}/groups/{group}/desired", cluster.replicas[old].api),
        &json!({"desiredCount": 4}),
    )
    .await;
    cloud
        .wait_for("the throttled launch", SETTLE, |r| {
            r.launches
                .iter()
                .any(|c| c.caller == old_id && c.throttled && c.started > since)
        })
        .await;
    cluster.pause(old);
    let (_, status) = cluster.leader_except(Some(&old_id), ttl * 4).await;
    assert_eq!(status.identity, new_id);
    converge(&cluster, &cloud, group, 4).await;
    let from = cluster.replicas[old].log.len();
    let resumed_at = Instant::now();
    cluster.resume(old);
    eventually("the resumed leader follows", SETTLE, || async {
        let s = cluster.replicas[old].leadership(&http).await?;
        (!s.is_leader && s.leader.as_deref() == Some(new_id.as_str())).then_some(())
    })
    .await;
    cluster.replicas[old]
        .wait_for_message(
            from,
            &[
                "launched",
                "launch failed",
                "reconcile failed",
                "leadership lost",
            ],
            SETTLE,
        )
        .await
        .unwrap_or_else(|| {
            panic!(
                "the resumed leader's reconcile did not end:\n{}",
                cluster.replicas[old].log.lines()[from..].join("\n")
            )
        });
    let record = cloud.record();
    assert_eq!(
        record.calls_by_after(&old_id, resumed_at),
        0,
        "the resumed leader retried its launch: {:#?}",
        record.launches.last()
    );
    assert_eq!(record.instances.len(), 4);
    converge(&cluster, &cloud, group, 4).await;
}

/// Two replicas started with the same `--identity` (one value for every replica of a
/// deployment) never lead at once, and only the leader calls the cloud; when it dies the other
/// leads with a new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_one_identity_never_lead_at_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let cloud = FakeCloud::start(Delays::quick()).await;
    let began = Instant::now();
    let mut cluster = Cluster::start(
        Settings {
            identity: Some("scaler".into()),
            ..settings(&redis, &cloud)
        },
        &["a", "b"],
    );
    let http = cluster.http.clone();
    let group = "one-identity";
    let mut body = jvb_group(group, 0, 1, 5);
    body["enableLaunch"] = json!(true);
    put_ok(
        &http,
        &format!("{}/groups/{group}", cluster.replicas[1].api),
        &body,
    )
    .await;
    let (leader, status) = cluster.leader(SETTLE).await;
    let token = status.token.expect("token");
    converge(&cluster, &cloud, group, 1).await;
    // Watch both over more than a lease lifetime.
    let ttl = Duration::from_secs(LEASE_TTL_SEC);
    let until = Instant::now() + ttl + Duration::from_secs(1);
    let mut polls = 0;
    while Instant::now() < until {
        let mut leading = Vec::new();
        for r in &cluster.replicas {
            if let Some(s) = r.leadership(&http).await
                && s.is_leader
            {
                leading.push((r.name.clone(), s.token));
            }
        }
        assert_eq!(
            leading,
            vec![(cluster.replicas[leader].name.clone(), Some(token))],
            "exactly the first leader leads"
        );
        polls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(polls >= 10);
    let follower = &cluster.replicas[1 - leader].identity;
    assert_eq!(
        cloud.record().calls_by_after(follower, began),
        0,
        "the follower called the cloud"
    );
    let caller = cluster.replicas[leader].identity.clone();
    cluster.kill_and_restart(leader);
    let (_, status) = cluster.leader_except(Some(&caller), ttl * 4).await;
    assert!(status.token.expect("token") > token);
}

/// `scaleUp`-like launcher actions in a group audit.
fn launcher_actions(audit: &Value, action: &str) -> usize {
    audit["audit"]["launcherActionItems"]
        .as_array()
        .map_or(0, |a| {
            a.iter().filter(|i| i["actionType"] == action).count()
        })
}

/// What the simulated sidecars saw.
#[derive(Default)]
struct Fleet {
    /// Successful reports per replica API URL, with the last success.
    ok: HashMap<String, (u64, Option<Instant>)>,
    failed: u64,
    /// Instances told to shut down.
    shutdown: Vec<String>,
}

/// Redis is killed and started again (with an append-only file) while sidecars report and a
/// group is edited: the replicas reconnect by themselves, nothing scales down, and no
/// acknowledged edit is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_ride_out_a_redis_restart() {
    let Some(mut redis) = RedisServer::start_with_aof() else {
        return;
    };
    let cloud = FakeCloud::start(Delays::quick()).await;
    let mut cluster = Cluster::start(settings(&redis, &cloud), &["a", "b"]);
    let http = cluster.http.clone();
    let apis: Vec<String> = cluster.replicas.iter().map(|r| r.api.clone()).collect();
    let group = "restart-jvb";
    let mut body = jvb_group(group, 2, 3, 8);
    body["enableLaunch"] = json!(true);
    body["enableAutoScale"] = json!(true);
    body["scalingOptions"]["scalePeriod"] = json!(1);
    put_ok(&http, &format!("{}/groups/{group}", apis[0]), &body).await;

    let stop = Arc::new(AtomicBool::new(false));
    // Sidecars of every instance the cloud runs report a stress inside the thresholds.
    let fleet = Arc::new(Mutex::new(Fleet::default()));
    let sidecars = {
        let (http, apis, stop, fleet) = (http.clone(), apis.clone(), stop.clone(), fleet.clone());
        let cloud = cloud.view();
        tokio::spawn(async move {
            let mut turn = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let running: Vec<String> = cloud
                    .record()
                    .running(group)
                    .iter()
                    .map(|i| i.id.clone())
                    .collect();
                for id in running {
                    turn += 1;
                    let api = &apis[turn % apis.len()];
                    let answer = send(
                        &http,
                        reqwest::Method::POST,
                        &format!("{api}/sidecar/status"),
                        Some(&jvb_report(group, &id, 0.5)),
                    )
                    .await;
                    let mut f = fleet.lock().expect("fleet");
                    match answer {
                        Some(a) if a.status == 200 => {
                            let entry = f.ok.entry(api.clone()).or_default();
                            entry.0 += 1;
                            entry.1 = Some(Instant::now());
                            if a.body["shutdown"] == true {
                                f.shutdown.push(id.clone());
                            }
                        }
                        _ => f.failed += 1,
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let report = eventually("three reporting instances", SETTLE, || async {
        let report = cluster.report(group).await?;
        (report["count"] == 3 && report["provisioningCount"] == 0).then_some(report)
    })
    .await;
    assert_eq!(report["desiredCount"], 3);

    // An editor sets instanceConfigurationId to cfg-1, cfg-2, … through both replicas.
    let attempted = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let editing = Arc::new(AtomicBool::new(true));
    let editor = {
        let (http, apis, stop) = (http.clone(), apis.clone(), stop.clone());
        let (attempted, acked, editing) = (attempted.clone(), acked.clone(), editing.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                if editing.load(Ordering::SeqCst) {
                    n += 1;
                    attempted.store(n, Ordering::SeqCst);
                    let answer = send(
                        &http,
                        reqwest::Method::PUT,
                        &format!(
                            "{}/groups/{group}/instance-configuration",
                            apis[n as usize % 2]
                        ),
                        Some(&json!({"instanceConfigurationId": format!("cfg-{n}")})),
                    )
                    .await;
                    if answer.is_some_and(|a| a.status == 200) {
                        acked.store(n, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // A reader records every desired count it sees.
    let desired_seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let reader = {
        let (http, apis, stop, seen) = (
            http.clone(),
            apis.clone(),
            stop.clone(),
            desired_seen.clone(),
        );
        tokio::spawn(async move {
            let mut turn = 0usize;
            while !stop.load(Ordering::SeqCst) {
                turn += 1;
                let url = format!("{}/groups/{group}", apis[turn % 2]);
                if let Some(a) = send(&http, reqwest::Method::GET, &url, None).await
                    && a.status == 200
                    && let Some(d) =
                        a.body["instanceGroup"]["scalingOptions"]["desiredCount"].as_u64()
                {
                    seen.lock().expect("seen").push(d);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let reports_ok = |f: &Fleet| f.ok.values().map(|e| e.0).sum::<u64>();
    eventually("reports, edits and reads flowing", SETTLE, || async {
        (reports_ok(&fleet.lock().expect("fleet")) >= 60
            && acked.load(Ordering::SeqCst) >= 10
            && desired_seen.lock().expect("seen").len() >= 10)
            .then_some(())
    })
    .await;

    // Redis goes away.
    redis.stop();
    let failed_at_stop = fleet.lock().expect("fleet").failed;
    eventually("both replicas see the outage", SETTLE, || async {
        for r in &cluster.replicas {
            let (_, health) = r.deep_health(&http).await?;
            if health["instanceStore"] != false || health["leadership"]["isLeader"] != false {
                return None;
            }
        }
        (fleet.lock().expect("fleet").failed >= failed_at_stop + 5).then_some(())
    })
    .await;
    editing.store(false, Ordering::SeqCst);
    eventually("the editor idle", SETTLE, || async {
        // Its last request has an answer once `attempted` stops moving.
        let before = attempted.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        (attempted.load(Ordering::SeqCst) == before).then_some(())
    })
    .await;
    let (acked_before, attempted_before) = (
        acked.load(Ordering::SeqCst),
        attempted.load(Ordering::SeqCst),
    );

    // Redis comes back with its append-only file.
    tokio::task::block_in_place(|| redis.start_again());
    let restarted_at = Instant::now();
    let group_after = eventually("the group readable again", SETTLE, || async {
        let a = send(
            &http,
            reqwest::Method::GET,
            &format!("{}/groups/{group}", apis[0]),
            None,
        )
        .await?;
        (a.status == 200).then_some(a.body)
    })
    .await;
    let config = group_after["instanceGroup"]["instanceConfigurationId"]
        .as_str()
        .and_then(|c| c.strip_prefix("cfg-"))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("instanceConfigurationId");
    assert!(
        (acked_before..=attempted_before).contains(&config),
        "after the restart the group holds cfg-{config}; cfg-{acked_before} was acknowledged"
    );
    editing.store(true, Ordering::SeqCst);

    // Both replicas reconnect on their own: check-ins pass through each, health is deep again,
    // a leader is elected and acts.
    let ok_at_restart = reports_ok(&fleet.lock().expect("fleet"));
    eventually("check-ins through both replicas", SETTLE, || async {
        let f = fleet.lock().expect("fleet");
        let through_both = apis.iter().all(|api| {
            f.ok.get(api)
                .and_then(|e| e.1)
                .is_some_and(|t| t > restarted_at)
        });
        (through_both && reports_ok(&f) >= ok_at_restart + 60).then_some(())
    })
    .await;
    eventually("both replicas deeply healthy", SETTLE, || async {
        for r in &cluster.replicas {
            let (status, _) = r.deep_health(&http).await?;
            if status != 200 {
                return None;
            }
        }
        Some(())
    })
    .await;
    let (leader, _) = cluster.leader(SETTLE).await;
    put_ok(
        &http,
        &format!("{}/groups/{group}/desired", cluster.api_of_another(leader)),
        &json!({"desiredCount": 4}),
    )
    .await;
    eventually(
        "a fourth instance launched and reporting",
        SETTLE,
        || async {
            let report = cluster.report(group).await?;
            (report["count"] == 4 && report["provisioningCount"] == 0).then_some(())
        },
    )
    .await;

    eventually("an edit acknowledged after the restart", SETTLE, || async {
        (acked.load(Ordering::SeqCst) > attempted_before + 3).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for task in [sidecars, editor, reader] {
        task.await.expect("task");
    }
    let last_acked = acked.load(Ordering::SeqCst);
    let final_group = get_ok(&http, &format!("{}/groups/{group}", apis[1])).await;
    let last_attempted = attempted.load(Ordering::SeqCst);
    let final_config = final_group["instanceGroup"]["instanceConfigurationId"]
        .as_str()
        .and_then(|c| c.strip_prefix("cfg-"))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("instanceConfigurationId");
    assert!(
        (last_acked..=last_attempted).contains(&final_config),
        "cfg-{final_config}, last acknowledged cfg-{last_acked}"
    );

    // Nothing scaled down, ever.
    let seen = desired_seen.lock().expect("seen").clone();
    assert!(
        seen.iter().all(|d| *d >= 3),
        "desired counts seen: {seen:?}"
    );
    let (shutdown, reports, failed) = {
        let f = fleet.lock().expect("fleet");
        (f.shutdown.clone(), reports_ok(&f), f.failed)
    };
    assert!(
        shutdown.is_empty(),
        "instances told to shut down: {shutdown:?}"
    );
    let record = cloud.record();
    assert!(record.terminates.is_empty(), "{:?}", record.terminates);
    assert_eq!(record.instances.len(), 4);
    let audit = get_ok(&http, &format!("{}/groups/{group}/group-audit", apis[0])).await;
    let decreases = audit["audit"]["autoScalerActionItems"]
        .as_array()
        .map_or(0, |a| {
            a.iter()
                .filter(|i| i["actionType"] == "decreaseDesiredCount")
                .count()
        });
    assert_eq!(decreases, 0, "{audit}");
    for r in &mut cluster.replicas {
        assert!(r.is_running(), "{} exited", r.identity);
        assert_eq!(r.incarnation, 1, "no replica was restarted");
    }
    eprintln!(
        "redis restart: {} reports ok, {} failed; {} edits acknowledged; {} desired reads",
        reports,
        failed,
        last_acked,
        seen.len()
    );
}
