//! State: the [`Store`] trait and its implementations.
//!
//! A store holds groups (with a version for compare-and-set), instance states with their
//! retention, metric samples trimmed on write, per-instance command flags, the engine's
//! per-group runtime state, and the audit. Reads take "now" from the store's [`Clock`], so
//! expiry is exact under a test clock; stores with server-side TTLs use them for garbage
//! collection only.
//!
//! Writes made by a reconcile carry the leader's fencing token; a store rejects a write whose
//! token is older than the newest it has seen ([`StoreError::Fenced`]). API and check-in writes
//! carry none.
//!
//! Every implementation passes the [`conformance`] suite.
//!
//! [`Clock`]: crate::clock::Clock

#[cfg(any(test, feature = "testkit"))]
pub mod conformance;
#[cfg(feature = "embedded")]
mod embedded;
mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;
mod working_set;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, GroupAuditLog, InstanceAudit};
use crate::clock::UnixMillis;
use crate::group::Group;
use crate::instance::{
    CloudInstance, InstanceFlags, InstanceRecord, InstanceState, ReconfigureRequest,
};
use crate::leader::FencingToken;
use crate::metrics::InstanceSamples;
use crate::provider::LaunchSlot;

/// Real redis-server processes for tests.
#[cfg(all(feature = "redis", any(test, feature = "testkit")))]
pub use self::redis::test_server as redis_testkit;
#[cfg(feature = "redis")]
pub use self::redis::{
    DEFAULT_KEY_PREFIX, GC_MARGIN, RedisConfig, RedisConfigError, RedisConnection, RedisStore,
    SentinelConfig,
};
#[cfg(feature = "embedded")]
pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use memory::MemoryStore;

/// Why a store call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The group changed since it was read (compare-and-set failed), or exists/does not exist
    /// contrary to the expectation.
    #[error("group {group} was changed concurrently")]
    Conflict {
        /// The group.
        group: String,
    },
    /// The write carried a fencing token older than one the store has seen.
    #[error("write rejected: fencing token {token} is older than {newest}")]
    Fenced {
        /// The write's token.
        token: FencingToken,
        /// The newest token seen.
        newest: FencingToken,
    },
    /// The store cannot be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read.
    #[error("stored data is corrupt ({key}): {message}")]
    Corrupt {
        /// Where.
        key: String,
        /// What.
        message: String,
    },
}

/// A group as stored: the group, its version, and the group-level timers written atomically
/// with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRecord {
    /// The group.
    pub group: Group,
    /// Version, increased by every write (compare-and-set).
    #[serde(default)]
    pub version: u64,
    /// End of the autoscale cooldown (the reference's `autoScaleGracePeriod:<g>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_until_ms: Option<UnixMillis>,
    /// End of launch protection (the reference's `isScaleDownProtected:<g>`): instances launched
    /// before then are protected from scale-down for `protectedTTLSec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_until_ms: Option<UnixMillis>,
}

impl GroupRecord {
    /// A new record (version 0) without timers.
    pub fn new(group: Group) -> Self {
        Self {
            group,
            version: 0,
            grace_until_ms: None,
            protected_until_ms: None,
        }
    }

    /// The autoscale cooldown runs at `now`.
    pub fn in_cooldown(&self, now: UnixMillis) -> bool {
        self.grace_until_ms.is_some_and(|t| t > now)
    }

    /// Launches at `now` are protected.
    pub fn launch_protected(&self, now: UnixMillis) -> bool {
        self.protected_until_ms.is_some_and(|t| t > now)
    }
}

/// The condition of a group write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is stored.
    Any,
    /// Create only: fail if the group exists.
    Absent,
    /// Replace only the given version.
    Version(u64),
}

/// What a check-in reports.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckInKind {
    /// A stats report (`/sidecar/status`, `/sidecar/stats`), with the metric sample it yields.
    Report {
        /// The sample value, when the report yields one.
        sample: Option<f64>,
    },
    /// A poll (`/sidecar/poll`): liveness only.
    Poll,
}

/// One sidecar check-in: a single store call that records the state (and sample) and returns
/// the instance's pending commands.
///
/// Semantics every store implements:
/// 1. Read the instance's flags.
/// 2. Report: when a reconfiguration is pending and `reconfigure_complete_ms ≥` its time, clear
///    it, audit `reconfigure-complete` and answer `reconfigure_acknowledged`. Poll: when a
///    reconfiguration is pending and the instance has never sent a report (no stored state, or
///    a state without `reportTimestamp`), answer it once, clear it and audit
///    `reconfigure-delivered`.
/// 3. Report: store `state` (keeping the stored `lastReconfigured` when the new one is absent).
///    Poll: refresh the stored state's `timestamp` and metadata, keeping its status and report
///    fields; store `state` when there is none.
/// 4. Report with a sample, when no shutdown flag or confirmation is set, the state is not
///    shutting down, and `reportTimestamp` differs from the stored one: append the sample and
///    drop the instance's samples older than `sample_retention_ms`.
/// 5. Keep the state for `state_retention_ms` after this check-in; audit `latest-status`.
/// 6. Answer `state_changed` when there was no live state, or the Jibri busy status, the
///    sidecar's `shutdownStatus` or the state's `isShuttingDown` differ from the stored ones.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckIn {
    /// The group the state is filed under.
    pub group: String,
    /// The state built from the report (its `timestamp` is the server's receive time).
    pub state: InstanceState,
    /// Report or poll.
    pub kind: CheckInKind,
    /// The instant of the report's `reconfigureComplete`, when set.
    pub reconfigure_complete_ms: Option<UnixMillis>,
    /// Samples older than this (relative to the receive time) are dropped.
    pub sample_retention_ms: i64,
    /// The state is kept at least this long after the check-in.
    pub state_retention_ms: i64,
}

/// The commands for a sidecar, and what the check-in did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commands {
    /// A scale-down flag is set: the sidecar must shut the instance down.
    pub shutdown: bool,
    /// The pending reconfiguration date.
    pub reconfigure: Option<String>,
    /// This report completed the pending reconfiguration (`/sidecar/status` answers `""`).
    pub reconfigure_acknowledged: bool,
    /// The reconfiguration was delivered once to a poll-only sidecar and cleared (R10).
    pub reconfigure_delivered: bool,
    /// A metric sample was recorded.
    pub sample_written: bool,
    /// The instance is new, or its Jibri busy status or shutting-down state changed: worth an
    /// early reconcile.
    pub state_changed: bool,
}

/// A change of one instance's flags. Expiries are absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlagUpdate {
    /// Set the scale-down flag (kept if already set).
    RequestShutdown {
        /// Instance id.
        instance_id: String,
        /// When.
        at_ms: UnixMillis,
        /// Expiry of the flag.
        expires_ms: UnixMillis,
    },
    /// Record the sidecar's shutdown confirmation (kept if already set).
    ConfirmShutdown {
        /// Instance id.
        instance_id: String,
        /// When.
        at_ms: UnixMillis,
        /// Expiry of the confirmation.
        expires_ms: UnixMillis,
    },
    /// Set a reconfiguration request (replacing one pending).
    Reconfigure {
        /// Instance id.
        instance_id: String,
        /// The request.
        request: ReconfigureRequest,
        /// Expiry of the request.
        expires_ms: UnixMillis,
    },
    /// Clear a pending reconfiguration request.
    ClearReconfigure {
        /// Instance id.
        instance_id: String,
    },
    /// Protect from scale-down until the given time.
    Protect {
        /// Instance id.
        instance_id: String,
        /// End of protection.
        until_ms: UnixMillis,
    },
}

impl FlagUpdate {
    /// The instance the update is about.
    pub fn instance_id(&self) -> &str {
        match self {
            FlagUpdate::RequestShutdown { instance_id, .. }
            | FlagUpdate::ConfirmShutdown { instance_id, .. }
            | FlagUpdate::Reconfigure { instance_id, .. }
            | FlagUpdate::ClearReconfigure { instance_id }
            | FlagUpdate::Protect { instance_id, .. } => instance_id,
        }
    }
}

/// The cloud's list of a group's instances, as last read by the sanity step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudSnapshot {
    /// When it was read.
    pub at_ms: UnixMillis,
    /// Instances (terminated ones dropped), shared by every copy of the runtime a pass makes.
    pub instances: Arc<[CloudInstance]>,
}

/// A launch decided and persisted before the provider is called, so that a crash cannot
/// launch twice: after a restart the same slots are retried with the same idempotency keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchIntent {
    /// Intent id.
    pub id: String,
    /// When it was decided.
    pub created_ms: UnixMillis,
    /// The instances to launch.
    pub slots: Vec<LaunchSlot>,
}

/// The engine's bookkeeping for one group, written only by the leader.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRuntime {
    /// The cloud's list from the last sanity run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<CloudSnapshot>,
    /// Launch failures in a row (D9 back-off).
    #[serde(default)]
    pub launch_failures: u32,
    /// No launch before this time (D9 back-off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_retry_at_ms: Option<UnixMillis>,
    /// The last launch error, for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_launch_error: Option<String>,
    /// A launch in flight (persisted before the provider call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_launch: Option<LaunchIntent>,
    /// Since when desired and count differ (D2 convergence lag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_since_ms: Option<UnixMillis>,
    /// The convergence warning was logged for the current gap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gap_warned: bool,
    /// Consecutive sanity runs each untracked cloud instance was seen (orphan policy).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub orphan_streaks: BTreeMap<String, u32>,
    /// Per instance: no terminate call before this time (after a failure, with back-off; after
    /// a success, while the instance disappears).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub terminate_retry_at_ms: BTreeMap<String, TerminateRetry>,
}

/// When an instance may be terminated again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminateRetry {
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this time.
    pub at_ms: UnixMillis,
}

/// Everything a reconcile reads for one group, in one store call.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupSnapshot {
    /// The group.
    pub record: GroupRecord,
    /// Its instance states (not yet expired by retention), with flags.
    pub instances: Vec<InstanceRecord>,
    /// Metric samples per instance, from the requested time on.
    pub samples: Vec<InstanceSamples>,
    /// The engine's bookkeeping.
    pub runtime: GroupRuntime,
}

/// State storage. Implementations: [`MemoryStore`]; `EmbeddedStore` and `RedisStore` with
/// their features. All must pass the [`conformance`] suite.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Checks the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Every group.
    async fn list_groups(&self) -> Result<Vec<GroupRecord>, StoreError>;

    /// One group.
    async fn get_group(&self, name: &str) -> Result<Option<GroupRecord>, StoreError>;

    /// Writes a group (its `version` is ignored) if `expect` holds; returns the new version.
    async fn put_group(
        &self,
        record: &GroupRecord,
        expect: Expect,
        fence: Option<FencingToken>,
    ) -> Result<u64, StoreError>;

    /// Deletes a group with its instance states, samples and runtime (audit and flags expire on
    /// their own). Returns whether it existed.
    async fn delete_group(
        &self,
        name: &str,
        fence: Option<FencingToken>,
    ) -> Result<bool, StoreError>;

    /// A group with its instances, samples from `samples_since_ms` on, and runtime.
    async fn snapshot(
        &self,
        group: &str,
        samples_since_ms: UnixMillis,
    ) -> Result<Option<GroupSnapshot>, StoreError>;

    /// A group's instance states (not yet expired by retention) with their flags, in the order
    /// they were first stored.
    async fn instances(&self, group: &str) -> Result<Vec<InstanceRecord>, StoreError>;

    /// One sidecar check-in (see [`CheckIn`]).
    async fn check_in(&self, check_in: &CheckIn) -> Result<Commands, StoreError>;

    /// Writes states (launch placeholders) kept `retention_ms` from now.
    async fn put_instances(
        &self,
        group: &str,
        states: &[InstanceState],
        retention_ms: i64,
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError>;

    /// Removes states (expired ones); their last state stays in the instance audit.
    async fn remove_instances(
        &self,
        group: &str,
        instance_ids: &[String],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError>;

    /// Applies flag changes.
    async fn update_flags(
        &self,
        updates: &[FlagUpdate],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError>;

    /// One instance's live flags.
    async fn flags(&self, instance_id: &str) -> Result<InstanceFlags, StoreError>;

    /// Writes the engine's bookkeeping of a group (ignored if the group does not exist).
    async fn put_runtime(
        &self,
        group: &str,
        runtime: &GroupRuntime,
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError>;

    /// Appends audit events of a group.
    async fn append_audit(
        &self,
        group: &str,
        events: &[AuditEvent],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError>;

    /// A group's audit; `None` when nothing is recorded.
    async fn group_audit(&self, group: &str) -> Result<Option<GroupAuditLog>, StoreError>;

    /// The audit of every instance seen in a group, with its latest state when known.
    async fn instance_audit(&self, group: &str) -> Result<Vec<InstanceAudit>, StoreError>;

    /// Makes every acknowledged write durable (graceful shutdown).
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Retention of what a store keeps on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Audit events (`AUDIT_TTL_SEC`).
    pub audit_ms: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            audit_ms: crate::audit::DEFAULT_AUDIT_TTL_MS,
        }
    }
}
