//! Leader election on a `coordination.k8s.io/v1` Lease, with optimistic concurrency.
//!
//! Every write is a `replace` guarded by the `resourceVersion` last read, so two candidates
//! can never both win a round: a 409 means somebody else wrote first, and this node is not
//! (or no longer) the leader. The fencing token is the Lease's `leaseTransitions`, which every
//! change of holder increments.
//!
//! The record keeps the fields and meaning of the reference controller's lease
//! (`holderIdentity`, `acquireTime`, `renewTime`, `leaseDurationSeconds`, `leaseTransitions`),
//! so reference pods and this one can share it during a rolling update. A released lease has
//! `holderIdentity: ""` and `leaseDurationSeconds: 1`, which both take over at once.
//!
//! Timing: a holder renews every `renew_period`; others take over once the record has not
//! changed for its `leaseDurationSeconds` (measured on their own monotonic clock since they
//! saw it change), or once its `renewTime` is older than that by wall clock (plus a skew
//! allowance, the reference's rule). The holder stops answering [`Leadership::token`]
//! `renew_deadline` after the start of its last successful renewal, before anyone else may
//! take over.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use jitsi_scaler_core::backoff::Backoff;
use jitsi_scaler_core::clock::{Clock, SystemClock};
use jitsi_scaler_core::leader::{FencingToken, Leadership, LeadershipStatus};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, CallPolicy};
use crate::reachability::ApiReachability;

/// Name of the reference controller's Lease.
pub const JIBRI_LEASE_NAME: &str = "jibri-pod-controller-lease";

/// Field manager of our Lease writes.
const FIELD_MANAGER: &str = "jitsi-scaler";

/// Where the Lease is and how it is held.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This node's identity (`holderIdentity`), usually the pod name.
    pub identity: String,
    /// `leaseDurationSeconds` written (whole seconds, at least 1).
    pub lease_duration: Duration,
    /// Time between renewals (and between attempts of a candidate).
    pub renew_period: Duration,
    /// How long after the start of its last successful renewal the holder still acts:
    /// more than `renew_period`, less than `lease_duration`.
    pub renew_deadline: Duration,
    /// Timeout of one API call.
    pub api_timeout: Duration,
    /// Back-off after a failed round (capped by `renew_period`).
    pub retry_backoff: Backoff,
    /// Allowance for clocks that differ, when judging expiry by the record's `renewTime`.
    pub clock_skew: Duration,
}

impl LeaseConfig {
    /// A lease with the default timing: 15 s duration, renewed every 5 s.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::ZERO,
            renew_period: Duration::ZERO,
            renew_deadline: Duration::ZERO,
            api_timeout: Duration::ZERO,
            retry_backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            clock_skew: Duration::from_secs(2),
        }
        .with_timing(Duration::from_secs(15), Duration::from_secs(5))
    }

    /// Sets the lease duration and renew period; the renew deadline becomes two thirds of the
    /// duration and the API timeout the renew period (at most 5 s).
    pub fn with_timing(mut self, lease_duration: Duration, renew_period: Duration) -> Self {
        self.lease_duration = lease_duration;
        self.renew_period = renew_period;
        self.renew_deadline = lease_duration.mul_f64(2.0 / 3.0);
        self.api_timeout = renew_period.min(Duration::from_secs(5));
        self
    }

    /// Checks names and timing.
    pub fn validate(&self) -> Result<(), String> {
        if !crate::names::is_dns1123_subdomain(&self.name) {
            return Err(format!(
                "lease name {:?} is not a DNS-1123 subdomain",
                self.name
            ));
        }
        if !crate::names::is_dns1123_label(&self.namespace) {
            return Err(format!(
                "namespace {:?} is not a DNS-1123 label",
                self.namespace
            ));
        }
        if self.identity.is_empty() {
            return Err("lease holder identity is empty".into());
        }
        if self.lease_duration < Duration::from_secs(1)
            || self.lease_duration.subsec_nanos() != 0
            || self.lease_duration.as_secs() > i32::MAX as u64
        {
            return Err(format!(
                "lease duration {:?} must be a whole number of seconds, at least 1",
                self.lease_duration
            ));
        }
        if self.renew_period.is_zero() || self.renew_period >= self.renew_deadline {
            return Err(format!(
                "renew period {:?} must be positive and shorter than the renew deadline {:?}",
                self.renew_period, self.renew_deadline
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "renew deadline {:?} must be shorter than the lease duration {:?}",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.api_timeout.is_zero() {
            return Err("API timeout must be positive".into());
        }
        Ok(())
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// The last version of the record seen, and when (on the monotonic clock) it was first seen.
#[derive(Debug)]
struct Observed {
    resource_version: Option<String>,
    at: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// While leader: acting is allowed until then.
    leader_until: Option<Instant>,
    /// The token of the current leadership.
    token: Option<FencingToken>,
    /// The holder last seen in the record (empty = nobody).
    holder: Option<String>,
    observed: Option<Observed>,
    /// The record as last read or written (for the guarded release).
    lease: Option<Lease>,
    /// Highest `leaseTransitions` seen, so a re-created lease keeps tokens growing.
    max_transitions: Option<i32>,
}

/// Leadership held on a Kubernetes Lease; see the [module documentation](self).
pub struct LeaseLeadership {
    api: Api<Lease>,
    config: LeaseConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    status_tx: watch::Sender<LeadershipStatus>,
    reachability: Option<Arc<ApiReachability>>,
}

impl std::fmt::Debug for LeaseLeadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLeadership")
            .field("config", &self.config)
            .field("status", &self.status())
            .finish()
    }
}

/// What one round concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Leader,
    Follower,
}

impl LeaseLeadership {
    /// A candidate for the configured Lease.
    pub fn new(client: kube::Client, config: LeaseConfig) -> Result<Self, String> {
        Self::with_clock(client, config, Arc::new(SystemClock))
    }

    /// Same, with a wall clock for the record's timestamps.
    pub fn with_clock(
        client: kube::Client,
        config: LeaseConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        config.validate()?;
        let status = LeadershipStatus {
            identity: config.identity.clone(),
            ..LeadershipStatus::default()
        };
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            clock,
            state: Mutex::new(State::default()),
            status_tx: watch::channel(status).0,
            reachability: None,
        })
    }

    /// Reports the outcome of every lease round to `reachability` (readiness).
    pub fn with_reachability(mut self, reachability: Arc<ApiReachability>) -> Self {
        self.reachability = Some(reachability);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Status updates, sent after every round (for event-driven waits and metrics).
    pub fn subscribe(&self) -> watch::Receiver<LeadershipStatus> {
        self.status_tx.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn policy(&self) -> CallPolicy {
        CallPolicy::once(self.config.api_timeout)
    }

    fn now(&self) -> MicroTime {
        let ms = self.clock.now_ms();
        MicroTime(k8s_openapi::jiff::Timestamp::from_millisecond(ms).unwrap_or_default())
    }

    fn publish(&self) {
        let status = self.status();
        self.status_tx.send_if_modified(|old| {
            let changed = *old != status;
            *old = status;
            changed
        });
    }

    /// Remembers the record and when its version was first seen.
    fn observe(&self, lease: &Lease) {
        let mut state = self.lock();
        let rv = lease.metadata.resource_version.clone();
        if state
            .observed
            .as_ref()
            .is_none_or(|o| o.resource_version != rv)
        {
            state.observed = Some(Observed {
                resource_version: rv,
                at: Instant::now(),
            });
        }
        let spec = lease.spec.as_ref();
        state.holder = spec.and_then(|s| s.holder_identity.clone());
        if let Some(t) = spec.and_then(|s| s.lease_transitions) {
            state.max_transitions = Some(state.max_transitions.map_or(t, |m| m.max(t)));
        }
        state.lease = Some(lease.clone());
    }

    /// The record's holder is gone: its lease ran out on our clock since we saw it change, or
    /// by wall clock since its `renewTime`.
    fn expired(&self, spec: &LeaseSpec) -> bool {
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);
        let by_observation = self
            .lock()
            .observed
            .as_ref()
            .is_some_and(|o| o.at.elapsed() > duration);
        let by_wall_clock = spec.renew_time.as_ref().is_some_and(|renewed| {
            let deadline_ms = renewed.0.as_millisecond()
                + duration.as_millis() as i64
                + self.config.clock_skew.as_millis() as i64;
            self.clock.now_ms() > deadline_ms
        });
        by_observation || by_wall_clock
    }

    fn became_leader(&self, lease: &Lease, round_started: Instant) {
        self.observe(lease);
        let token = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_transitions)
            .map_or(0, |t| u64::try_from(t).unwrap_or(0));
        let mut state = self.lock();
        let was_leader = state.leader_until.is_some_and(|u| u > Instant::now());
        state.leader_until = Some(round_started + self.config.renew_deadline);
        state.token = Some(token);
        drop(state);
        if !was_leader {
            tracing::info!(
                lease = %self.config.name,
                namespace = %self.config.namespace,
                identity = %self.config.identity,
                token,
                "acquired leadership"
            );
        }
    }

    fn lost(&self, holder: Option<&str>) {
        let mut state = self.lock();
        let was = state.leader_until.take().is_some();
        state.token = None;
        drop(state);
        if was {
            tracing::warn!(
                lease = %self.config.name,
                identity = %self.config.identity,
                holder = holder.unwrap_or(""),
                "lost leadership"
            );
        }
    }

    /// One read-decide-write round.
    async fn round(&self) -> Result<Round, ApiError> {
        let started = Instant::now();
        let name = self.config.name.as_str();
        let current = self
            .policy()
            .run("get lease", || self.api.get_opt(name))
            .await?;
        let Some(lease) = current else {
            return self.create(started).await;
        };
        self.observe(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let now = self.now();
        let duration = self.config.duration_secs();
        let (next, acquiring) = if holder == self.config.identity {
            let next = LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                renew_time: Some(now.clone()),
                lease_duration_seconds: Some(duration),
                acquire_time: spec.acquire_time.clone().or(Some(now)),
                lease_transitions: Some(spec.lease_transitions.unwrap_or(0)),
                ..spec
            };
            (next, false)
        } else if holder.is_empty() || self.expired(&spec) {
            let transitions = spec.lease_transitions.unwrap_or(0).saturating_add(1);
            let next = LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_duration_seconds: Some(duration),
                lease_transitions: Some(transitions),
                ..spec
            };
            (next, true)
        } else {
            self.lost(Some(&holder));
            return Ok(Round::Follower);
        };
        let mut updated = lease.clone();
        updated.spec = Some(next);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let what = if acquiring {
            "acquire lease"
        } else {
            "renew lease"
        };
        match self
            .policy()
            .run(what, || self.api.replace(name, &params, &updated))
            .await
        {
            Ok(written) => {
                self.became_leader(&written, started);
                Ok(Round::Leader)
            }
            Err(e) if e.is_conflict() => {
                tracing::debug!(lease = name, what, "lease changed under us (409)");
                self.lost(None);
                Ok(Round::Follower)
            }
            Err(e) => Err(e),
        }
    }

    async fn create(&self, started: Instant) -> Result<Round, ApiError> {
        let now = self.now();
        let transitions = self
            .lock()
            .max_transitions
            .map_or(0, |t| t.saturating_add(1));
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                acquire_time: Some(now.clone()),
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(self.config.duration_secs()),
                lease_transitions: Some(transitions),
                renew_time: Some(now),
                ..LeaseSpec::default()
            }),
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match self
            .policy()
            .run("create lease", || self.api.create(&params, &lease))
            .await
        {
            Ok(created) => {
                self.became_leader(&created, started);
                Ok(Round::Leader)
            }
            Err(e) if e.is_already_exists() => Ok(Round::Follower),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if this node holds it: `holderIdentity: ""`,
    /// `leaseDurationSeconds: 1`, guarded by the last `resourceVersion`.
    async fn release(&self) {
        let lease = {
            let mut state = self.lock();
            let held = state.leader_until.take().is_some();
            state.token = None;
            if held { state.lease.clone() } else { None }
        };
        self.publish();
        let Some(mut lease) = lease else { return };
        let spec = lease.spec.take().unwrap_or_default();
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(String::new()),
            lease_duration_seconds: Some(1),
            renew_time: Some(self.now()),
            ..spec
        });
        let name = self.config.name.as_str();
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match self
            .policy()
            .run("release lease", || self.api.replace(name, &params, &lease))
            .await
        {
            Ok(_) => {
                tracing::info!(lease = name, identity = %self.config.identity, "released leadership")
            }
            Err(e) if e.is_conflict() => {
                tracing::info!(lease = name, "lease already taken over, nothing to release")
            }
            Err(e) => tracing::warn!(lease = name, error = %e, "could not release the lease"),
        }
    }
}

#[async_trait]
impl Leadership for LeaseLeadership {
    fn token(&self) -> Option<FencingToken> {
        let state = self.lock();
        match state.leader_until {
            Some(until) if Instant::now() < until => state.token,
            _ => None,
        }
    }

    async fn run(&self, cancel: CancellationToken) {
        let mut failures = 0u32;
        while !cancel.is_cancelled() {
            // A round is not interrupted: its calls are bounded by the API timeout, and the
            // release below needs to know the outcome of a write in flight.
            let result = self.round().await;
            if let Some(r) = &self.reachability {
                r.record(&result);
            }
            let wait = match result {
                Ok(_) => {
                    failures = 0;
                    self.config.renew_period
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(
                        lease = %self.config.name,
                        error = %e,
                        failures,
                        "lease round failed"
                    );
                    self.config
                        .retry_backoff
                        .delay(failures - 1)
                        .min(self.config.renew_period)
                }
            };
            self.publish();
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.release().await;
    }

    fn status(&self) -> LeadershipStatus {
        let token = self.token();
        let holder = self.lock().holder.clone().filter(|h| !h.is_empty());
        LeadershipStatus {
            identity: self.config.identity.clone(),
            is_leader: token.is_some(),
            leader: if token.is_some() {
                Some(self.config.identity.clone())
            } else {
                holder
            },
            token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timing_is_valid_and_checked() {
        let c = LeaseConfig::new(JIBRI_LEASE_NAME, "jibri", "ctrl-0");
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.renew_period, Duration::from_secs(5));
        assert_eq!(c.renew_deadline, Duration::from_secs(10));
        assert!(c.validate().is_ok());
        let slow = c
            .clone()
            .with_timing(Duration::from_secs(3), Duration::from_secs(2));
        assert!(slow.validate().is_err(), "renew period ≥ deadline");
        let fractional = c
            .clone()
            .with_timing(Duration::from_millis(1500), Duration::from_millis(100));
        assert!(fractional.validate().is_err());
        let mut anonymous = c.clone();
        anonymous.identity.clear();
        assert!(anonymous.validate().is_err());
        let mut bad_ns = c;
        bad_ns.namespace = "Bad".into();
        assert!(bad_ns.validate().is_err());
    }
}
