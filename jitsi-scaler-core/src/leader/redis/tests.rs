//! Tests of [`RedisLeadership`] against real `redis-server` processes, with short TTLs and
//! event-driven waits (the status channel) bounded by timeouts.

use std::sync::Arc;
use std::time::Duration;

use ::redis::AsyncCommands;
use tokio::task::JoinHandle;

use super::*;
use crate::store::redis::test_server::{self, Proxy, RedisServer, fresh_prefix};
use crate::store::{Expect, GroupRecord, RedisStore, Store};

struct Node {
    leadership: Arc<RedisLeadership>,
    changes: watch::Receiver<LeadershipStatus>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Node {
    fn start(url: &str, prefix: &str, identity: &str, ttl: Duration) -> Self {
        let leadership = Arc::new(
            RedisLeadership::open(
                &RedisConfig::new(url).with_key_prefix(prefix),
                RedisLeadershipConfig::new(identity).with_ttl(ttl),
            )
            .unwrap_or_else(|e| panic!("open: {e}")),
        );
        let changes = leadership.subscribe();
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let leadership = leadership.clone();
            let cancel = cancel.clone();
            async move { leadership.run(cancel).await }
        });
        Self {
            leadership,
            changes,
            cancel,
            task: Some(task),
        }
    }

    fn id(&self) -> &str {
        &self.leadership.config().identity
    }

    /// Waits (bounded) for a status satisfying `pred`; the instant it was seen.
    async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl FnMut(&LeadershipStatus) -> bool,
    ) -> (LeadershipStatus, Instant) {
        let id = self.id().to_owned();
        let status = tokio::time::timeout(timeout, self.changes.wait_for(pred))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{id}: {what} not within {timeout:?} (now {:?})",
                    self.leadership.status()
                )
            })
            .unwrap_or_else(|_| panic!("{id}: status channel closed"))
            .clone();
        (status, Instant::now())
    }

    /// Cancels the campaign and waits until it has released.
    async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap_or_else(|_| panic!("{} did not stop", self.id()))
                .unwrap_or_else(|e| panic!("{} panicked: {e}", self.id()));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn lease_value(server: &RedisServer, prefix: &str) -> Option<String> {
    server
        .client()
        .await
        .get(format!("{prefix}leader"))
        .await
        .unwrap_or_else(|e| panic!("read lease: {e}"))
}

#[test]
fn settings_are_checked() {
    let ok = RedisLeadershipConfig::new("n1");
    assert_eq!(ok.ttl, Duration::from_secs(15));
    assert_eq!(ok.renew_interval, Duration::from_secs(5));
    assert_eq!(ok.validate(), Ok(()));
    let mut bad = ok.clone();
    bad.renew_interval = Duration::from_secs(13);
    assert!(
        bad.validate().is_err(),
        "renewing after the lease is no longer valid"
    );
    assert!(RedisLeadershipConfig::new(" ").validate().is_err());
    assert!(
        RedisLeadershipConfig::new("n")
            .with_ttl(Duration::from_millis(10))
            .validate()
            .is_err()
    );
    assert_ne!(
        RedisLeadershipConfig::default_identity(),
        RedisLeadershipConfig::default_identity()
    );
}

#[test]
fn lease_replies_parse() {
    let v = Value::Array(vec![
        Value::Int(0),
        Value::BulkString(b"7".to_vec()),
        Value::BulkString(b"other node".to_vec()),
        Value::Int(1234),
    ]);
    assert_eq!(
        lease_reply("acquire", &v),
        Ok(LeaseReply {
            ok: false,
            token: Some(7),
            holder: Some("other node".into()),
            remaining_ms: 1234
        })
    );
    assert!(lease_reply("acquire", &Value::Int(1)).is_err());
}

/// Of three nodes exactly one leads; on release another takes over at once (well before the
/// lease could expire), and the token grows at every change; the last release frees the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_hands_over_at_once_with_growing_tokens() {
    let Some(server) = test_server::shared() else {
        return;
    };
    let prefix = fresh_prefix();
    let ttl = Duration::from_secs(6);
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|id| Node::start(&server.url(), &prefix, id, ttl))
        .collect();
    let mut tokens: Vec<FencingToken> = Vec::new();
    for round in 0..3 {
        // Everyone knows a new leader, and it is the same one.
        let previous = tokens.last().copied().unwrap_or(0);
        let mut leaders = Vec::new();
        for node in nodes.iter_mut() {
            let (status, _) = node
                .wait_for("knows the new leader", ttl, |s| {
                    s.leader.is_some() && s.token.is_some_and(|t| t > previous)
                })
                .await;
            leaders.push(status);
        }
        let leading: Vec<&LeadershipStatus> = leaders.iter().filter(|s| s.is_leader).collect();
        assert_eq!(leading.len(), 1, "round {round}: {leaders:?}");
        let leader = leading[0].identity.clone();
        let token = leading[0].token.unwrap_or_default();
        for s in &leaders {
            assert_eq!(s.leader.as_deref(), Some(leader.as_str()), "{s:?}");
            assert_eq!(s.token, Some(token));
        }
        assert_eq!(
            lease_value(server, &prefix).await,
            Some(format!("{token} {leader}"))
        );
        tokens.push(token);
        let i = nodes
            .iter()
            .position(|n| n.id() == leader)
            .unwrap_or_else(|| panic!("no node {leader}"));
        let mut old = nodes.remove(i);
        assert_eq!(old.leadership.token(), Some(token));
        old.stop().await;
        assert_eq!(old.leadership.token(), None);
        assert!(!old.leadership.status().is_leader);
        if nodes.is_empty() {
            break;
        }
        // A follower takes over within a third of the TTL: only a handover makes that
        // possible (the released lease had at least ttl − renew interval left).
        let mut took_over = false;
        let deadline = Instant::now() + ttl / 3;
        for node in nodes.iter_mut() {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = tokio::time::timeout(
                left.max(Duration::from_millis(1)),
                node.changes.wait_for(|s| s.is_leader),
            )
            .await;
            if matches!(wait, Ok(Ok(_))) {
                took_over = true;
                break;
            }
        }
        assert!(
            took_over,
            "round {round}: nobody took over within {:?}",
            ttl / 3
        );
    }
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    assert_eq!(lease_value(server, &prefix).await, None, "released");
}

/// A leader cut off from Redis stops answering `token()` before its lease can expire (checked
/// against the lease's remaining time in Redis), and a follower takes over once the lease has
/// expired, with a larger token; back online, the old leader follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_stops_before_its_lease_ends_and_is_replaced() {
    let Some(server) = test_server::shared() else {
        return;
    };
    let prefix = fresh_prefix();
    let ttl = Duration::from_secs(2);
    let proxy = Proxy::start(server.port());
    let mut a = Node::start(&proxy.url(), &prefix, "a", ttl);
    let (status, _) = a.wait_for("leads", ttl * 2, |s| s.is_leader).await;
    let token_a = status.token.unwrap_or_default();
    let mut b = Node::start(&server.url(), &prefix, "b", ttl);
    b.wait_for("follows a", ttl * 2, |s| s.leader.as_deref() == Some("a"))
        .await;

    proxy.cut();
    let sent = Instant::now();
    let remaining: i64 = server
        .client()
        .await
        .pttl(format!("{prefix}leader"))
        .await
        .expect("pttl");
    assert!(
        remaining > 0,
        "the lease is alive when the leader is cut off"
    );
    let lease_ends_earliest = sent + Duration::from_millis(remaining as u64);

    let (_, stopped) = a.wait_for("stops acting", ttl * 2, |s| !s.is_leader).await;
    assert_eq!(a.leadership.token(), None);
    assert!(
        stopped < lease_ends_earliest,
        "stopped acting {:?} after the lease could have ended",
        stopped - lease_ends_earliest
    );
    assert_eq!(
        lease_value(server, &prefix).await,
        Some(format!("{token_a} a")),
        "the lease was still a's when a stopped acting"
    );

    let (status, _) = b.wait_for("takes over", ttl * 3, |s| s.is_leader).await;
    let token_b = status.token.unwrap_or_default();
    assert!(token_b > token_a, "{token_b} > {token_a}");
    assert!(Instant::now() >= lease_ends_earliest);

    proxy.restore();
    a.wait_for("follows b", ttl * 4, |s| s.leader.as_deref() == Some("b"))
        .await;
    assert_eq!(a.leadership.token(), None);
    assert_eq!(b.leadership.token(), Some(token_b));
    a.stop().await;
    b.stop().await;
}

/// A frozen Redis (SIGSTOP): the leader's renewals hang, and it still stops acting in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stops_acting_in_time_when_redis_freezes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let mut a = Node::start(&server.url(), "js:", "a", ttl);
    let (status, _) = a.wait_for("leads", ttl * 2, |s| s.is_leader).await;
    let before = status.token.unwrap_or_default();
    server.pause();
    let paused = Instant::now();
    let (_, stopped) = a.wait_for("stops acting", ttl * 2, |s| !s.is_leader).await;
    // Its last renewal was sent before the pause, so its lease lasts at least until then.
    assert!(stopped < paused + ttl, "{:?}", stopped - paused);
    assert_eq!(a.leadership.token(), None);
    server.resume();
    let (status, _) = a.wait_for("leads again", ttl * 4, |s| s.is_leader).await;
    assert!(status.token.unwrap_or_default() >= before);
    a.stop().await;
}

/// A leader whose lease was taken over (here: overwritten) stops at its next renewal.
#[tokio::test]
async fn a_leader_whose_lease_is_taken_stops_at_once() {
    let Some(server) = test_server::shared() else {
        return;
    };
    let prefix = fresh_prefix();
    let ttl = Duration::from_secs(3);
    let mut a = Node::start(&server.url(), &prefix, "a", ttl);
    a.wait_for("leads", ttl * 2, |s| s.is_leader).await;
    let _: () = server
        .client()
        .await
        .set_ex(format!("{prefix}leader"), "999 intruder", 60)
        .await
        .expect("overwrite");
    let (status, _) = a
        .wait_for("sees the intruder", ttl * 2, |s| {
            s.leader.as_deref() == Some("intruder")
        })
        .await;
    assert!(!status.is_leader);
    assert_eq!(status.token, Some(999));
    assert_eq!(a.leadership.token(), None);
    a.stop().await;
    assert_eq!(
        lease_value(server, &prefix).await.as_deref(),
        Some("999 intruder"),
        "a release never removes someone else's lease"
    );
}

/// Tokens start above the store's fencing floor, so a new leader is never fenced out.
#[tokio::test]
async fn tokens_start_above_the_store_fencing_floor() {
    let Some(server) = test_server::shared() else {
        return;
    };
    let prefix = fresh_prefix();
    let store =
        RedisStore::open(&RedisConfig::new(server.url()).with_key_prefix(&prefix)).expect("store");
    store
        .put_group(
            &GroupRecord::new(crate::store::conformance::group("g", 1)),
            Expect::Any,
            Some(500),
        )
        .await
        .expect("write at 500");
    let ttl = Duration::from_secs(3);
    let mut a = Node::start(&server.url(), &prefix, "a", ttl);
    let (status, _) = a.wait_for("leads", ttl * 2, |s| s.is_leader).await;
    let token = status.token.unwrap_or_default();
    assert!(token > 500, "{token}");
    let rec = store.get_group("g").await.expect("get").expect("exists");
    store
        .put_group(&rec, Expect::Any, Some(token))
        .await
        .expect("the new leader writes");
    a.stop().await;
}

/// An election raises the store's fencing floor to the new token: a deposed leader's writes
/// are rejected before the new leader has written anything.
#[tokio::test]
async fn an_election_fences_older_tokens_at_once() {
    let Some(server) = test_server::shared() else {
        return;
    };
    let prefix = fresh_prefix();
    let store =
        RedisStore::open(&RedisConfig::new(server.url()).with_key_prefix(&prefix)).expect("store");
    let ttl = Duration::from_secs(3);
    let mut a = Node::start(&server.url(), &prefix, "a", ttl);
    let (status, _) = a.wait_for("a leads", ttl * 2, |s| s.is_leader).await;
    let old = status.token.unwrap_or_default();
    store
        .put_group(
            &GroupRecord::new(crate::store::conformance::group("g", 1)),
            Expect::Absent,
            Some(old),
        )
        .await
        .expect("the leader writes");
    a.stop().await;
    let mut b = Node::start(&server.url(), &prefix, "b", ttl);
    let (status, _) = b.wait_for("b leads", ttl * 2, |s| s.is_leader).await;
    let new = status.token.unwrap_or_default();
    assert!(new > old, "{new} > {old}");
    let rec = store.get_group("g").await.expect("get").expect("exists");
    let stale = store.put_group(&rec, Expect::Any, Some(old)).await;
    assert!(
        matches!(stale, Err(crate::store::StoreError::Fenced { token, newest }) if token == old && newest == new),
        "a write of the deposed leader: {stale:?}"
    );
    b.stop().await;
}

/// Two processes configured with the same identity never lead at once: the second waits for
/// the first's lease to end and leads with a new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_one_identity_never_lead_at_once() {
    let Some(server) = test_server::shared() else {
        return;
    };
    let prefix = fresh_prefix();
    let ttl = Duration::from_secs(2);
    let mut first = Node::start(&server.url(), &prefix, "same", ttl);
    let (status, _) = first.wait_for("leads", ttl * 2, |s| s.is_leader).await;
    let first_token = status.token.unwrap_or_default();
    let mut second = Node::start(&server.url(), &prefix, "same", ttl);
    second
        .wait_for("sees the lease", ttl * 2, |s| s.token == Some(first_token))
        .await;
    // Over two lease lifetimes, the second never leads while the first does.
    let until = Instant::now() + ttl * 2;
    while Instant::now() < until {
        assert!(
            first.leadership.token().is_some(),
            "the first keeps leading"
        );
        assert_eq!(
            second.leadership.token(),
            None,
            "two leaders with one identity"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first stops and releases: the second leads, with a new token.
    first.stop().await;
    let (status, _) = second
        .wait_for("takes over", ttl * 2, |s| s.is_leader)
        .await;
    assert!(status.token.unwrap_or_default() > first_token);
    second.stop().await;
}
