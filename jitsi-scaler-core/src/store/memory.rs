//! [`MemoryStore`]: everything in process memory. For tests, embedding, and as the working set
//! of the embedded store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{
    CheckIn, CheckInKind, Commands, Expect, FlagUpdate, GroupRecord, GroupRuntime, GroupSnapshot,
    Retention, Store, StoreError,
};
use crate::audit::{AuditEvent, GroupAuditLog, InstanceAudit, InstanceAuditKind};
use crate::clock::{Clock, SystemClock, UnixMillis};
use crate::instance::{InstanceFlags, InstanceRecord, InstanceState, ReconfigureRequest};
use crate::leader::FencingToken;
use crate::metrics::{InstanceSamples, MetricSample, trim_series};

/// Check-ins between two sweeps of expired data.
const SWEEP_EVERY: u64 = 4096;

/// A store in process memory.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
    retention: Retention,
}

#[derive(Debug, Clone)]
struct StoredState {
    state: InstanceState,
    retain_until_ms: UnixMillis,
    seq: u64,
}

/// A timestamped flag with its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timed {
    at_ms: UnixMillis,
    expires_ms: UnixMillis,
}

#[derive(Debug, Clone, Default)]
struct StoredFlags {
    shutdown: Option<Timed>,
    confirmed: Option<Timed>,
    reconfigure: Option<(ReconfigureRequest, UnixMillis)>,
    protected_until_ms: Option<UnixMillis>,
}

impl StoredFlags {
    fn live(&self, now: UnixMillis) -> InstanceFlags {
        let alive = |t: &Option<Timed>| t.filter(|t| t.expires_ms > now).map(|t| t.at_ms);
        InstanceFlags {
            shutdown_requested_ms: alive(&self.shutdown),
            shutdown_confirmed_ms: alive(&self.confirmed),
            reconfigure: self
                .reconfigure
                .as_ref()
                .filter(|(_, exp)| *exp > now)
                .map(|(r, _)| r.clone()),
            protected_until_ms: self.protected_until_ms.filter(|t| *t > now),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    newest_token: FencingToken,
    seq: u64,
    check_ins: u64,
    groups: HashMap<String, GroupRecord>,
    states: HashMap<String, HashMap<String, StoredState>>,
    samples: HashMap<String, HashMap<String, Vec<MetricSample>>>,
    flags: HashMap<String, StoredFlags>,
    runtime: HashMap<String, GroupRuntime>,
    group_audit: HashMap<String, GroupAuditLog>,
    instance_audit: HashMap<String, BTreeMap<String, InstanceAudit>>,
}

impl Inner {
    fn fence(&mut self, fence: Option<FencingToken>) -> Result<(), StoreError> {
        match fence {
            Some(token) if token < self.newest_token => Err(StoreError::Fenced {
                token,
                newest: self.newest_token,
            }),
            Some(token) => {
                self.newest_token = token;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn audit_instance(
        &mut self,
        group: &str,
        instance_id: &str,
        kind: InstanceAuditKind,
        at_ms: UnixMillis,
    ) {
        let audits = self.instance_audit.entry(group.to_owned()).or_default();
        match audits.get_mut(instance_id) {
            Some(a) => a.apply(kind, at_ms),
            None => {
                let mut a = InstanceAudit::new(instance_id);
                a.apply(kind, at_ms);
                audits.insert(instance_id.to_owned(), a);
            }
        }
    }

    fn live_states(&self, group: &str, now: UnixMillis) -> Vec<&StoredState> {
        let mut live: Vec<&StoredState> = self
            .states
            .get(group)
            .map(|m| m.values().filter(|s| s.retain_until_ms >= now).collect())
            .unwrap_or_default();
        live.sort_by_key(|s| s.seq);
        live
    }

    fn records(&self, group: &str, now: UnixMillis) -> Vec<InstanceRecord> {
        self.live_states(group, now)
            .into_iter()
            .map(|s| InstanceRecord {
                state: s.state.clone(),
                flags: self
                    .flags
                    .get(&s.state.instance_id)
                    .map(|f| f.live(now))
                    .unwrap_or_default(),
            })
            .collect()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Drops what has expired everywhere: states past retention, flags, old audit.
    fn sweep(&mut self, now: UnixMillis, retention: &Retention) {
        for states in self.states.values_mut() {
            states.retain(|_, s| s.retain_until_ms >= now);
        }
        self.states.retain(|_, s| !s.is_empty());
        self.flags.retain(|_, f| !f.live(now).is_empty());
        let oldest = now - retention.audit_ms;
        for log in self.group_audit.values_mut() {
            log.trim(oldest);
        }
        self.group_audit.retain(|_, l| !l.is_empty());
        for audits in self.instance_audit.values_mut() {
            audits.retain(|_, a| a.newest_ms().is_some_and(|t| t >= oldest));
        }
        self.instance_audit.retain(|_, a| !a.is_empty());
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store reading time from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            clock,
            retention: Retention::default(),
        }
    }

    /// Sets the retention of what the store expires on its own.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-written in a way later
        // readers would misread (every write is a single insert or retain), so a poisoned lock
        // is recovered rather than propagated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn list_groups(&self) -> Result<Vec<GroupRecord>, StoreError> {
        Ok(self.lock().groups.values().cloned().collect())
    }

    async fn get_group(&self, name: &str) -> Result<Option<GroupRecord>, StoreError> {
        Ok(self.lock().groups.get(name).cloned())
    }

    async fn put_group(
        &self,
        record: &GroupRecord,
        expect: Expect,
        fence: Option<FencingToken>,
    ) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let name = &record.group.name;
        let current = inner.groups.get(name).map(|r| r.version);
        let ok = match expect {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::Version(v) => current == Some(v),
        };
        if !ok {
            return Err(StoreError::Conflict {
                group: name.clone(),
            });
        }
        inner.fence(fence)?;
        let version = current.unwrap_or(0) + 1;
        let mut stored = record.clone();
        stored.version = version;
        inner.groups.insert(name.clone(), stored);
        Ok(version)
    }

    async fn delete_group(
        &self,
        name: &str,
        fence: Option<FencingToken>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        inner.fence(fence)?;
        let existed = inner.groups.remove(name).is_some();
        inner.states.remove(name);
        inner.samples.remove(name);
        inner.runtime.remove(name);
        Ok(existed)
    }

    async fn snapshot(
        &self,
        group: &str,
        samples_since_ms: UnixMillis,
    ) -> Result<Option<GroupSnapshot>, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let Some(record) = inner.groups.get(group).cloned() else {
            return Ok(None);
        };
        let instances = inner.records(group, now);
        let mut samples = Vec::new();
        if let Some(series) = inner.samples.get_mut(group) {
            series.retain(|id, s| {
                trim_series(s, samples_since_ms);
                if !s.is_empty() {
                    samples.push(InstanceSamples {
                        instance_id: id.clone(),
                        samples: s.clone(),
                    });
                }
                !s.is_empty()
            });
        }
        let runtime = inner.runtime.get(group).cloned().unwrap_or_default();
        Ok(Some(GroupSnapshot {
            record,
            instances,
            samples,
            runtime,
        }))
    }

    async fn instances(&self, group: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        let now = self.clock.now_ms();
        Ok(self.lock().records(group, now))
    }

    async fn check_in(&self, check_in: &CheckIn) -> Result<Commands, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let id = check_in.state.instance_id.as_str();
        let group = check_in.group.as_str();
        let at = check_in.state.timestamp;
        let flags = inner.flags.get(id).map(|f| f.live(now)).unwrap_or_default();
        let previous = inner
            .states
            .get(group)
            .and_then(|m| m.get(id))
            .filter(|s| s.retain_until_ms >= now)
            .map(|s| &s.state);
        let mut commands = Commands {
            shutdown: flags.shutdown_requested_ms.is_some(),
            reconfigure: flags.reconfigure.as_ref().map(|r| r.date.clone()),
            ..Commands::default()
        };
        let report = matches!(check_in.kind, CheckInKind::Report { .. });
        let mut audits = vec![InstanceAuditKind::LatestStatus];
        if let Some(pending) = &flags.reconfigure {
            if report {
                if check_in
                    .reconfigure_complete_ms
                    .is_some_and(|done| done >= pending.at_ms)
                {
                    commands.reconfigure_acknowledged = true;
                    commands.reconfigure = None;
                    audits.push(InstanceAuditKind::ReconfigureComplete);
                }
            } else if previous.is_none_or(|p| !p.has_reported()) {
                commands.reconfigure_delivered = true;
                audits.push(InstanceAuditKind::ReconfigureDelivered);
            }
            if (commands.reconfigure_acknowledged || commands.reconfigure_delivered)
                && let Some(f) = inner.flags.get_mut(id)
            {
                f.reconfigure = None;
            }
        }
        let new_state = match (&check_in.kind, previous) {
            (CheckInKind::Poll, Some(prev)) => {
                let mut merged = prev.clone();
                merged.timestamp = at;
                merged.metadata = check_in.state.metadata.clone();
                merged
            }
            (CheckInKind::Report { .. }, Some(prev))
                if check_in.state.last_reconfigured.is_none() =>
            {
                let mut s = check_in.state.clone();
                s.last_reconfigured = prev.last_reconfigured.clone();
                s
            }
            _ => check_in.state.clone(),
        };
        commands.state_changed = previous.is_none_or(|p| {
            p.status.jibri_status.map(|j| j.busy_status)
                != new_state.status.jibri_status.map(|j| j.busy_status)
                || p.shutdown_status != new_state.shutdown_status
                || p.is_shutting_down != new_state.is_shutting_down
        });
        if let CheckInKind::Report {
            sample: Some(value),
        } = check_in.kind
        {
            let shutting = flags.shutdown_requested_ms.is_some()
                || flags.shutdown_confirmed_ms.is_some()
                || new_state.is_shutting_down
                || new_state.shutdown_status
                || new_state.status.is_draining()
                || new_state.status.provisioning;
            let duplicate = previous.is_some_and(|p| {
                p.report_timestamp.is_some()
                    && p.report_timestamp == check_in.state.report_timestamp
            });
            if !shutting && !duplicate {
                let series = inner
                    .samples
                    .entry(group.to_owned())
                    .or_default()
                    .entry(id.to_owned())
                    .or_default();
                trim_series(series, at - check_in.sample_retention_ms);
                series.push(crate::metrics::MetricSample { at_ms: at, value });
                commands.sample_written = true;
            }
        }
        let seq = match inner.states.get(group).and_then(|m| m.get(id)) {
            Some(s) if s.retain_until_ms >= now => s.seq,
            _ => inner.next_seq(),
        };
        inner.states.entry(group.to_owned()).or_default().insert(
            id.to_owned(),
            StoredState {
                state: new_state,
                retain_until_ms: now + check_in.state_retention_ms,
                seq,
            },
        );
        for kind in audits {
            inner.audit_instance(group, id, kind, at);
        }
        inner.check_ins += 1;
        if inner.check_ins.is_multiple_of(SWEEP_EVERY) {
            inner.sweep(now, &self.retention);
        }
        Ok(commands)
    }

    async fn put_instances(
        &self,
        group: &str,
        states: &[InstanceState],
        retention_ms: i64,
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.fence(fence)?;
        for state in states {
            let seq = inner.next_seq();
            inner.states.entry(group.to_owned()).or_default().insert(
                state.instance_id.clone(),
                StoredState {
                    state: state.clone(),
                    retain_until_ms: now + retention_ms,
                    seq,
                },
            );
        }
        Ok(())
    }

    async fn remove_instances(
        &self,
        group: &str,
        instance_ids: &[String],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.fence(fence)?;
        for id in instance_ids {
            let removed = inner.states.get_mut(group).and_then(|m| m.remove(id));
            if let Some(removed) = removed
                && let Some(audit) = inner
                    .instance_audit
                    .get_mut(group)
                    .and_then(|a| a.get_mut(id))
            {
                audit.latest_status_info = Some(removed.state);
            }
        }
        Ok(())
    }

    async fn update_flags(
        &self,
        updates: &[FlagUpdate],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.fence(fence)?;
        for update in updates {
            let flags = inner
                .flags
                .entry(update.instance_id().to_owned())
                .or_default();
            let live = flags.live(now);
            match update {
                FlagUpdate::RequestShutdown {
                    at_ms, expires_ms, ..
                } => {
                    if live.shutdown_requested_ms.is_none() {
                        flags.shutdown = Some(Timed {
                            at_ms: *at_ms,
                            expires_ms: *expires_ms,
                        });
                    }
                }
                FlagUpdate::ConfirmShutdown {
                    at_ms, expires_ms, ..
                } => {
                    if live.shutdown_confirmed_ms.is_none() {
                        flags.confirmed = Some(Timed {
                            at_ms: *at_ms,
                            expires_ms: *expires_ms,
                        });
                    }
                }
                FlagUpdate::Reconfigure {
                    request,
                    expires_ms,
                    ..
                } => {
                    flags.reconfigure = Some((request.clone(), *expires_ms));
                }
                FlagUpdate::ClearReconfigure { .. } => flags.reconfigure = None,
                FlagUpdate::Protect { until_ms, .. } => flags.protected_until_ms = Some(*until_ms),
            }
        }
        Ok(())
    }

    async fn flags(&self, instance_id: &str) -> Result<InstanceFlags, StoreError> {
        let now = self.clock.now_ms();
        Ok(self
            .lock()
            .flags
            .get(instance_id)
            .map(|f| f.live(now))
            .unwrap_or_default())
    }

    async fn put_runtime(
        &self,
        group: &str,
        runtime: &GroupRuntime,
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.fence(fence)?;
        if inner.groups.contains_key(group) {
            inner.runtime.insert(group.to_owned(), runtime.clone());
        }
        Ok(())
    }

    async fn append_audit(
        &self,
        group: &str,
        events: &[AuditEvent],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.fence(fence)?;
        for event in events {
            match event {
                AuditEvent::Group(e) => {
                    let log = inner.group_audit.entry(group.to_owned()).or_default();
                    log.apply(e);
                    log.trim(now - self.retention.audit_ms);
                }
                AuditEvent::Instance(e) => {
                    inner.audit_instance(group, &e.instance_id, e.kind, e.at_ms)
                }
            }
        }
        Ok(())
    }

    async fn group_audit(&self, group: &str) -> Result<Option<GroupAuditLog>, StoreError> {
        let now = self.clock.now_ms();
        let inner = self.lock();
        Ok(inner.group_audit.get(group).map(|log| {
            let mut log = log.clone();
            log.trim(now - self.retention.audit_ms);
            log
        }))
        .map(|log| log.filter(|l| !l.is_empty()))
    }

    async fn instance_audit(&self, group: &str) -> Result<Vec<InstanceAudit>, StoreError> {
        let now = self.clock.now_ms();
        let inner = self.lock();
        let oldest = now - self.retention.audit_ms;
        let live: HashMap<&str, &InstanceState> = inner
            .live_states(group, now)
            .into_iter()
            .map(|s| (s.state.instance_id.as_str(), &s.state))
            .collect();
        Ok(inner
            .instance_audit
            .get(group)
            .map(|audits| {
                audits
                    .values()
                    .filter(|a| a.newest_ms().is_some_and(|t| t >= oldest))
                    .map(|a| {
                        let mut a = a.clone();
                        if let Some(state) = live.get(a.instance_id.as_str()) {
                            a.latest_status_info = Some((*state).clone());
                        }
                        a
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    crate::store_conformance_tests!(|clock: std::sync::Arc<ManualClock>| async move {
        std::sync::Arc::new(MemoryStore::with_clock(clock))
            as std::sync::Arc<dyn crate::store::Store>
    });
}
