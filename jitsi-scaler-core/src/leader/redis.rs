//! [`RedisLeadership`]: a leader lease in Redis with a fencing token (feature `redis`).
//!
//! - Acquire: `SET <P>leader "<token> <identity>" NX PX <ttl>` in a script that first takes a
//!   new token from `<P>leader-token` (`INCR`, raised above the store's fencing floor
//!   `<P>fence` if that is higher, so a token can never be one the store already rejects), and
//!   raises the floor to the new token: from the moment a new leader is elected, the store
//!   rejects every write of an older one (a paused or cut-off leader that has not noticed yet),
//!   not only once the new leader has written something. Only a free lease is taken, even when
//!   its holder has this node's identity: that holder may be another process configured with
//!   the same identity, or this process before a restart, so it waits for the lease to end
//!   and leads with a new token.
//! - Renew and release: scripts that act only when the lease still holds this node's token and
//!   identity. A release also pushes to `<P>leader-handover`, on which followers wait
//!   (`BLPOP`), so one takes over at once instead of after the TTL.
//! - [`token`](Leadership::token) answers only while `now < last successful renewal (sent) +
//!   ttl − safety margin`: a leader that cannot renew stops acting before its lease can
//!   expire, and before any other node can take over.
//!
//! The leadership uses its own connection (followers block on it while waiting).

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ::redis::{Script, Value};
use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{FencingToken, Leadership, LeadershipStatus};
use crate::backoff::Backoff;
use crate::store::redis::Keys;
use crate::store::{RedisConfig, RedisConfigError, RedisConnection, StoreError};

/// The default lease TTL.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

/// Settings of a [`RedisLeadership`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisLeadershipConfig {
    /// This node's identity, unique among the replicas (see [`default_identity`](Self::default_identity)).
    pub identity: String,
    /// The lease's TTL in Redis (default 15 s).
    pub ttl: Duration,
    /// How often the leader renews (default ttl / 3); also the longest a follower waits
    /// between two attempts.
    pub renew_interval: Duration,
    /// The leader stops acting this long before its lease could expire (default ttl / 5):
    /// room for clock-rate differences and pauses.
    pub safety_margin: Duration,
}

impl RedisLeadershipConfig {
    /// The defaults for `identity`.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            ttl: DEFAULT_LEASE_TTL,
            renew_interval: DEFAULT_LEASE_TTL / 3,
            safety_margin: DEFAULT_LEASE_TTL / 5,
        }
    }

    /// Sets the TTL, with the renew interval (ttl / 3) and safety margin (ttl / 5) that go
    /// with it.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self.renew_interval = ttl / 3;
        self.safety_margin = ttl / 5;
        self
    }

    /// `<HOSTNAME or "jitsi-scaler">-<pid>-<random>`: unique even for two processes on one host.
    pub fn default_identity() -> String {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| "jitsi-scaler".to_owned());
        format!(
            "{}-{}-{:06x}",
            host.trim(),
            std::process::id(),
            rand::random::<u32>() & 0xff_ffff
        )
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), RedisConfigError> {
        if self.identity.trim().is_empty() {
            return Err(RedisConfigError::invalid(
                "leadership.identity",
                "must not be empty",
            ));
        }
        if self.ttl < Duration::from_millis(100) {
            return Err(RedisConfigError::invalid(
                "leadership.ttl",
                "must be at least 100 ms",
            ));
        }
        if self.safety_margin >= self.ttl {
            return Err(RedisConfigError::invalid(
                "leadership.safety_margin",
                "must be shorter than the TTL",
            ));
        }
        if self.renew_interval.is_zero() || self.renew_interval >= self.ttl - self.safety_margin {
            return Err(RedisConfigError::invalid(
                "leadership.renew_interval",
                "must be positive and shorter than the TTL minus the safety margin",
            ));
        }
        Ok(())
    }
}

const ACQUIRE: &str = r#"
-- KEYS: 1 lease, 2 token counter, 3 store fencing floor, 4 handover
-- ARGV: 1 identity, 2 TTL ms
-- Reply: acquired (1/0), token, holder, remaining ms
local function split(v)
  local sp = string.find(v, ' ', 1, true)
  if not sp then return '0', v end
  return string.sub(v, 1, sp - 1), string.sub(v, sp + 1)
end
local current = redis.call('GET', KEYS[1])
if current then
  local token, owner = split(current)
  return {0, token, owner, redis.call('PTTL', KEYS[1])}
end
local token = redis.call('INCR', KEYS[2])
local floor = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
if floor >= token then
  token = floor + 1
  redis.call('SET', KEYS[2], string.format('%d', token))
end
token = string.format('%d', token)
redis.call('SET', KEYS[3], token)
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[4])
return {1, token, ARGV[1], tonumber(ARGV[2])}
"#;

const RENEW: &str = r#"
-- KEYS: 1 lease; ARGV: 1 identity, 2 token, 3 TTL ms
-- Reply: renewed (1/0), holder's token, holder
local current = redis.call('GET', KEYS[1])
if current == ARGV[2] .. ' ' .. ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, ARGV[2], ARGV[1]}
end
if not current then return {0, '', ''} end
local sp = string.find(current, ' ', 1, true)
if not sp then return {0, '0', current} end
return {0, string.sub(current, 1, sp - 1), string.sub(current, sp + 1)}
"#;

const RELEASE: &str = r#"
-- KEYS: 1 lease, 2 handover; ARGV: 1 identity, 2 token, 3 handover TTL ms
if redis.call('GET', KEYS[1]) == ARGV[2] .. ' ' .. ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
return 0
"#;

static ACQUIRE_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(ACQUIRE));
static RENEW_SCRIPT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(RENEW));
static RELEASE_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(RELEASE));

/// The lease this node holds.
#[derive(Clone, Copy, Debug)]
struct Lease {
    token: FencingToken,
    /// No acting from this instant on.
    valid_until: Instant,
}

#[derive(Debug, Default)]
struct State {
    lease: Option<Lease>,
    /// The holder last seen, and its token.
    leader: Option<(String, FencingToken)>,
    /// The token of the last lease seen held under this node's identity by someone else.
    warned_token: Option<FencingToken>,
}

/// What a lease script answered.
#[derive(Debug, PartialEq, Eq)]
struct LeaseReply {
    ok: bool,
    token: Option<FencingToken>,
    holder: Option<String>,
    remaining_ms: i64,
}

/// Leader election with a Redis lease and a fencing token.
pub struct RedisLeadership {
    conn: RedisConnection,
    keys: Keys,
    config: RedisLeadershipConfig,
    state: Mutex<State>,
    changes: watch::Sender<LeadershipStatus>,
}

impl std::fmt::Debug for RedisLeadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLeadership")
            .field("conn", &self.conn)
            .field("config", &self.config)
            .field("status", &self.status())
            .finish()
    }
}

impl RedisLeadership {
    /// A leadership on its own connection to the Redis of `redis` (no I/O until
    /// [`run`](Leadership::run)).
    pub fn open(
        redis: &RedisConfig,
        config: RedisLeadershipConfig,
    ) -> Result<Self, RedisConfigError> {
        config.validate()?;
        let conn = RedisConnection::open(redis)?;
        let keys = Keys::new(conn.key_prefix());
        let changes = watch::Sender::new(LeadershipStatus {
            identity: config.identity.clone(),
            ..LeadershipStatus::default()
        });
        Ok(Self {
            conn,
            keys,
            config,
            state: Mutex::new(State::default()),
            changes,
        })
    }

    /// Follows every change of [`status`](Leadership::status) (the campaign loop publishes
    /// them, including the instant a lease is no longer valid).
    pub fn subscribe(&self) -> watch::Receiver<LeadershipStatus> {
        self.changes.subscribe()
    }

    /// The settings.
    pub fn config(&self) -> &RedisLeadershipConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a plain assignment: a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self) {
        let status = self.status();
        self.changes.send_if_modified(|current| {
            let changed = *current != status;
            if changed {
                *current = status.clone();
            }
            changed
        });
    }

    fn valid_from(&self, sent: Instant) -> Instant {
        sent + (self.config.ttl - self.config.safety_margin)
    }

    async fn run_script(
        &self,
        what: &'static str,
        script: &'static std::sync::LazyLock<Script>,
        keys: Vec<String>,
        args: Vec<String>,
        limit: Duration,
    ) -> Result<Value, StoreError> {
        self.conn
            .call_within(what, limit, move |mut con| async move {
                let mut invocation = script.prepare_invoke();
                for key in &keys {
                    invocation.key(key);
                }
                for arg in &args {
                    invocation.arg(arg);
                }
                invocation.invoke_async::<Value>(&mut con).await
            })
            .await
    }

    fn ttl_ms(&self) -> String {
        self.config.ttl.as_millis().max(1).to_string()
    }

    /// One campaign step: take the lease if free, else wait for a handover or the lease's end. Returns how long to wait before the next step.
    async fn campaign(&self, cancel: &CancellationToken, failures: &mut u32) -> Duration {
        let sent = Instant::now();
        let reply = self
            .run_script(
                "acquire lease",
                &ACQUIRE_SCRIPT,
                vec![
                    self.keys.lease(),
                    self.keys.lease_counter(),
                    self.keys.fence(),
                    self.keys.handover(),
                ],
                vec![self.config.identity.clone(), self.ttl_ms()],
                self.conn.command_timeout(),
            )
            .await
            .and_then(|v| lease_reply("acquire lease", &v));
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                *failures += 1;
                let wait = self.backoff().delay(*failures);
                tracing::warn!(target: "jitsi_scaler::leader", identity = %self.config.identity, %error, retry_ms = wait.as_millis() as u64, "cannot campaign for leadership");
                return wait;
            }
        };
        *failures = 0;
        match (reply.ok, reply.token) {
            (true, Some(token)) => {
                let lease = Lease {
                    token,
                    valid_until: self.valid_from(sent),
                };
                {
                    let mut state = self.lock();
                    state.lease = Some(lease);
                    state.leader = Some((self.config.identity.clone(), token));
                }
                tracing::info!(target: "jitsi_scaler::leader", identity = %self.config.identity, token, "became leader");
                self.publish();
                (sent + self.config.renew_interval).saturating_duration_since(Instant::now())
            }
            _ => {
                let held_under_our_name = {
                    let mut state = self.lock();
                    state.leader = reply.holder.clone().zip(reply.token);
                    let ours = reply.holder.as_deref() == Some(self.config.identity.as_str())
                        && state.warned_token != reply.token;
                    if ours {
                        state.warned_token = reply.token;
                    }
                    ours
                };
                if held_under_our_name {
                    tracing::warn!(target: "jitsi_scaler::leader", identity = %self.config.identity, token = ?reply.token,
                        "the lease is held under this node's identity by another process or an earlier run of this one; waiting for it to end (identities must be unique among replicas)");
                }
                self.publish();
                self.wait_for_handover(reply.remaining_ms, cancel).await;
                Duration::ZERO
            }
        }
    }

    /// Blocks until a release is announced, the held lease can have ended, or a while passes.
    async fn wait_for_handover(&self, remaining_ms: i64, cancel: &CancellationToken) {
        // Keep the block well inside the connection's response timeout.
        let cap = self.conn.command_timeout().mul_f64(0.75);
        let until_end = if remaining_ms > 0 {
            Duration::from_millis(remaining_ms as u64)
        } else {
            // Gone just now (-2): campaign again at once. No TTL (-1): not ours to fix, poll.
            if remaining_ms == -2 {
                return;
            }
            self.config.renew_interval
        };
        let block = until_end
            .min(self.config.renew_interval)
            .min(cap)
            .max(Duration::from_millis(1));
        let key = self.keys.handover();
        let wait = self.conn.call_within(
            "wait for handover",
            block + self.conn.command_timeout(),
            move |mut con| async move {
                ::redis::cmd("BLPOP")
                    .arg(key)
                    .arg(format!("{:.3}", block.as_secs_f64()))
                    .query_async::<Value>(&mut con)
                    .await
            },
        );
        tokio::select! {
            _ = cancel.cancelled() => {}
            result = wait => {
                if let Err(error) = result {
                    tracing::debug!(target: "jitsi_scaler::leader", %error, "waiting for a handover failed");
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(block) => {}
                    }
                }
            }
        }
    }

    /// One renewal step of the leader. Returns how long to wait before the next step.
    async fn renew(&self, lease: Lease, failures: &mut u32) -> Duration {
        let sent = Instant::now();
        if sent >= lease.valid_until {
            {
                let mut state = self.lock();
                state.lease = None;
                state.leader = None;
            }
            tracing::warn!(target: "jitsi_scaler::leader", identity = %self.config.identity, token = lease.token, "leadership lapsed: the lease could not be renewed in time");
            self.publish();
            return Duration::ZERO;
        }
        let limit = self.conn.command_timeout().min(lease.valid_until - sent);
        let reply = self
            .run_script(
                "renew lease",
                &RENEW_SCRIPT,
                vec![self.keys.lease()],
                vec![
                    self.config.identity.clone(),
                    lease.token.to_string(),
                    self.ttl_ms(),
                ],
                limit,
            )
            .await
            .and_then(|v| lease_reply("renew lease", &v));
        match reply {
            Ok(reply) if reply.ok => {
                *failures = 0;
                if let Some(held) = self.lock().lease.as_mut() {
                    held.valid_until = self.valid_from(sent);
                }
                (sent + self.config.renew_interval).saturating_duration_since(Instant::now())
            }
            Ok(reply) => {
                {
                    let mut state = self.lock();
                    state.lease = None;
                    state.leader = reply.holder.clone().zip(reply.token);
                }
                tracing::warn!(target: "jitsi_scaler::leader", identity = %self.config.identity, token = lease.token, holder = ?reply.holder, "leadership lost: the lease is no longer ours");
                self.publish();
                Duration::ZERO
            }
            Err(error) => {
                *failures += 1;
                let left = lease.valid_until.saturating_duration_since(Instant::now());
                let wait = self.backoff().delay(*failures).min(left);
                tracing::warn!(target: "jitsi_scaler::leader", identity = %self.config.identity, %error, valid_ms = left.as_millis() as u64, "cannot renew the leader lease");
                wait
            }
        }
    }

    /// Gives the lease up (if still ours) and wakes a follower.
    async fn release(&self) {
        let lease = {
            let mut state = self.lock();
            let lease = state.lease.take();
            if lease.is_some() {
                state.leader = None;
            }
            lease
        };
        self.publish();
        let Some(lease) = lease else { return };
        let result = self
            .run_script(
                "release lease",
                &RELEASE_SCRIPT,
                vec![self.keys.lease(), self.keys.handover()],
                vec![
                    self.config.identity.clone(),
                    lease.token.to_string(),
                    self.ttl_ms(),
                ],
                self.conn.command_timeout(),
            )
            .await;
        match result {
            Ok(_) => {
                tracing::info!(target: "jitsi_scaler::leader", identity = %self.config.identity, token = lease.token, "released leadership")
            }
            Err(error) => {
                tracing::warn!(target: "jitsi_scaler::leader", identity = %self.config.identity, %error, "could not release the lease; it expires on its own")
            }
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(100).min(self.config.renew_interval),
            self.config.renew_interval,
        )
    }
}

/// Parses `{ok, token, holder[, remaining ms]}`.
fn lease_reply(what: &str, value: &Value) -> Result<LeaseReply, StoreError> {
    let bad = || StoreError::Corrupt {
        key: format!("reply of {what}"),
        message: format!("unexpected reply {value:?}"),
    };
    let Value::Array(items) = value else {
        return Err(bad());
    };
    let text = |i: usize| -> Option<String> {
        match items.get(i)? {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            Value::Int(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let ok = text(0).ok_or_else(bad)? == "1";
    let token = text(1).filter(|t| !t.is_empty());
    let token = token
        .map(|t| t.parse::<FencingToken>().map_err(|_| bad()))
        .transpose()?;
    let holder = text(2).filter(|h| !h.is_empty());
    let remaining_ms = match text(3) {
        Some(ms) => ms.parse().map_err(|_| bad())?,
        None => 0,
    };
    Ok(LeaseReply {
        ok,
        token,
        holder,
        remaining_ms,
    })
}

#[async_trait]
impl Leadership for RedisLeadership {
    fn token(&self) -> Option<FencingToken> {
        self.lock()
            .lease
            .filter(|l| Instant::now() < l.valid_until)
            .map(|l| l.token)
    }

    async fn run(&self, cancel: CancellationToken) {
        tracing::info!(target: "jitsi_scaler::leader", identity = %self.config.identity, ttl_ms = self.config.ttl.as_millis() as u64, "campaigning for leadership");
        let mut failures = 0u32;
        while !cancel.is_cancelled() {
            let lease = self.lock().lease;
            let wait = match lease {
                Some(lease) => self.renew(lease, &mut failures).await,
                None => self.campaign(&cancel, &mut failures).await,
            };
            self.publish();
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.release().await;
    }

    fn status(&self) -> LeadershipStatus {
        let token = self.token();
        let leader = self.lock().leader.clone();
        LeadershipStatus {
            identity: self.config.identity.clone(),
            is_leader: token.is_some(),
            leader: match token {
                Some(_) => Some(self.config.identity.clone()),
                None => leader.as_ref().map(|(holder, _)| holder.clone()),
            },
            token: token.or(leader.map(|(_, t)| t)),
        }
    }
}

#[cfg(test)]
mod tests;
