//! The working set: every record of a store in memory, answering all reads, with the semantics
//! every store shares. [`MemoryStore`] is a working set alone; the embedded store also tracks
//! which records the next commit must write or delete.
//!
//! [`MemoryStore`]: crate::store::MemoryStore

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, GroupAuditLog, InstanceAudit, InstanceAuditKind};
use crate::clock::UnixMillis;
use crate::instance::{InstanceFlags, InstanceRecord, InstanceState, ReconfigureRequest};
use crate::leader::FencingToken;
use crate::metrics::{InstanceSamples, MetricSample, SharedSamples, appended};
use crate::store::{
    CheckIn, CheckInKind, Commands, Expect, FlagUpdate, GroupRecord, GroupRuntime, GroupSnapshot,
    Retention, StoreError,
};

/// Check-ins between two sweeps of expired data (as in the memory store).
const SWEEP_EVERY: u64 = 4096;

/// An instance id, allocated once per instance and shared by every table that holds one of
/// its records, by the keys of its changes and by the snapshots that read its samples.
pub(super) type InstanceName = Arc<str>;

/// One record of the working set, as the file keys it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Key {
    /// The newest fencing token seen.
    NewestToken,
    /// A group.
    Group(String),
    /// A group's engine bookkeeping.
    Runtime(String),
    /// One instance's flags.
    Flags(String),
    /// One instance's state, by group and instance.
    State(String, InstanceName),
    /// One instance's metric samples, by group and instance.
    Samples(String, InstanceName),
    /// A group's audit.
    GroupAudit(String),
    /// One instance's audit, by group and instance.
    InstanceAudit(String, InstanceName),
}

#[cfg(feature = "embedded")]
/// The current value of a changed record, copied out of the working set for the writer.
#[derive(Clone, Debug)]
pub(super) enum Entry {
    NewestToken(FencingToken),
    Group(Box<GroupRecord>),
    Runtime(GroupRuntime),
    Flags(StoredFlags),
    State(StateRecord),
    Samples(Series),
    GroupAudit(GroupAuditLog),
    InstanceAudit(InstanceAudit),
}

#[cfg(feature = "embedded")]
/// A record to write (`entry` is `Some`) or delete (`None`).
#[derive(Clone, Debug)]
pub(super) struct Change {
    pub(super) key: Key,
    pub(super) entry: Option<Entry>,
}

/// An instance state with its retention and first-seen order.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct StoredState {
    pub(super) state: Arc<InstanceState>,
    pub(super) retain_until_ms: UnixMillis,
    pub(super) seq: u64,
}

#[cfg(feature = "embedded")]
/// A state record as the file holds it. It also carries the time of the instance's latest
/// status (its audit's `latest-status`, which every check-in moves), so a check-in rewrites
/// its state and samples but not its audit record; loading takes the newer of the two times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StateRecord {
    pub(super) state: Arc<InstanceState>,
    pub(super) retain_until_ms: UnixMillis,
    pub(super) seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) latest_status_ms: Option<UnixMillis>,
}

/// A timestamped flag with its expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Timed {
    at_ms: UnixMillis,
    expires_ms: UnixMillis,
}

/// A reconfiguration request with its expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PendingReconfigure {
    request: ReconfigureRequest,
    expires_ms: UnixMillis,
}

/// One instance's flags with their expiries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredFlags {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shutdown: Option<Timed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    confirmed: Option<Timed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reconfigure: Option<PendingReconfigure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
                .filter(|p| p.expires_ms > now)
                .map(|p| p.request.clone()),
            protected_until_ms: self.protected_until_ms.filter(|t| *t > now),
        }
    }
}

/// One instance's metric samples, with the retention its last check-in asked for (used only to
/// drop series nobody can ask for any more). The samples are shared with the snapshots that
/// read them; a new sample replaces them with a new allocation (see [`appended`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Series {
    pub(super) retention_ms: i64,
    pub(super) samples: Arc<[MetricSample]>,
}

/// One instance's audit as the working set holds it: the latest time of each event kind and,
/// once the instance's state is removed, that last state. A fraction of an [`InstanceAudit`]'s
/// size (its id is the map's key; its state, while live, is the state record's).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct StoredAudit {
    /// By [`InstanceAuditKind::ALL`]'s order; [`StoredAudit::NEVER`] where a kind never happened.
    times: [UnixMillis; InstanceAuditKind::ALL.len()],
    removed_state: Option<Arc<InstanceState>>,
}

impl Default for StoredAudit {
    fn default() -> Self {
        Self::empty()
    }
}

impl StoredAudit {
    /// The time of a kind that never happened.
    const NEVER: UnixMillis = UnixMillis::MIN;

    fn empty() -> Self {
        Self {
            times: [Self::NEVER; InstanceAuditKind::ALL.len()],
            removed_state: None,
        }
    }

    /// Records an event (the latest time of each kind is kept).
    fn apply(&mut self, kind: InstanceAuditKind, at_ms: UnixMillis) {
        let slot = &mut self.times[kind as usize];
        *slot = (*slot).max(at_ms);
    }

    #[cfg(feature = "embedded")]
    /// The time of the latest status, if any.
    fn latest_status_ms(&self) -> Option<UnixMillis> {
        Some(self.times[InstanceAuditKind::LatestStatus as usize]).filter(|t| *t != Self::NEVER)
    }

    #[cfg(feature = "embedded")]
    /// Takes the later time of each kind from `other`, and its removed state when it has one.
    fn merge(&mut self, other: StoredAudit) {
        for (mine, theirs) in self.times.iter_mut().zip(other.times) {
            *mine = (*mine).max(theirs);
        }
        if other.removed_state.is_some() {
            self.removed_state = other.removed_state;
        }
    }

    /// The newest time of any event.
    fn newest_ms(&self) -> Option<UnixMillis> {
        self.times
            .iter()
            .copied()
            .max()
            .filter(|t| *t != Self::NEVER)
    }

    /// The full audit of instance `id`, with `state` as its latest status when given, else
    /// the state it had when removed.
    pub(super) fn to_audit(&self, id: &str, state: Option<&InstanceState>) -> InstanceAudit {
        let mut audit = InstanceAudit::new(id);
        for (kind, at_ms) in InstanceAuditKind::ALL.into_iter().zip(self.times) {
            if at_ms != Self::NEVER {
                audit.apply(kind, at_ms);
            }
        }
        audit.latest_status_info = state
            .cloned()
            .or_else(|| self.removed_state.as_deref().cloned());
        audit
    }

    #[cfg(any(test, feature = "embedded"))]
    /// The compact form of a full audit.
    pub(super) fn from_audit(audit: InstanceAudit) -> Self {
        let mut stored = Self::empty();
        for kind in InstanceAuditKind::ALL {
            if let Some(at_ms) = audit.time_of(kind) {
                stored.apply(kind, at_ms);
            }
        }
        stored.removed_state = audit.latest_status_info.map(Arc::new);
        stored
    }
}

/// The records changed since the last commit, when changes are tracked.
#[derive(Debug, Default)]
pub(super) struct Dirty {
    tracking: bool,
    keys: HashSet<Key>,
}

impl Dirty {
    /// Marks the record `key` makes, making it only when changes are tracked (a store that
    /// commits nothing allocates no key strings).
    fn mark(&mut self, key: impl FnOnce() -> Key) {
        if self.tracking {
            self.keys.insert(key());
        }
    }

    fn extend(&mut self, keys: impl IntoIterator<Item = Key>) {
        if self.tracking {
            self.keys.extend(keys);
        }
    }

    #[cfg(feature = "embedded")]
    fn len(&self) -> usize {
        self.keys.len()
    }

    #[cfg(feature = "embedded")]
    fn drain(&mut self) -> impl Iterator<Item = Key> + '_ {
        self.keys.drain()
    }
}

/// When the first record of each per-instance table can expire, at the earliest: a sweep
/// walks a table only once that time has come, so a fleet that keeps reporting costs a
/// sweep no walk over its instances. Every write that could make a record expire sooner
/// lowers the bound; each walk sets it to the table's true earliest expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Expiries {
    /// The earliest instant a state is past its retention.
    states_ms: UnixMillis,
    /// The earliest instant a series' newest sample is past the series' retention.
    samples_ms: UnixMillis,
    /// The oldest newest event of an instance audit (the audit's retention is the sweep's).
    audit_newest_ms: UnixMillis,
}

impl Default for Expiries {
    /// Unknown: the next sweep walks every table.
    fn default() -> Self {
        Self {
            states_ms: UnixMillis::MIN,
            samples_ms: UnixMillis::MIN,
            audit_newest_ms: UnixMillis::MIN,
        }
    }
}

impl Expiries {
    fn state(&mut self, retain_until_ms: UnixMillis) {
        self.states_ms = self.states_ms.min(retain_until_ms.saturating_add(1));
    }

    fn series(&mut self, newest_ms: UnixMillis, retention_ms: i64) {
        let expires = newest_ms.saturating_add(retention_ms).saturating_add(1);
        self.samples_ms = self.samples_ms.min(expires);
    }

    fn audit_event(&mut self, at_ms: UnixMillis) {
        self.audit_newest_ms = self.audit_newest_ms.min(at_ms);
    }
}

/// Everything a store holds, in memory.
#[derive(Debug, Default)]
pub(super) struct WorkingSet {
    pub(super) newest_token: FencingToken,
    seq: u64,
    check_ins: u64,
    pub(super) groups: HashMap<String, GroupRecord>,
    pub(super) states: HashMap<String, HashMap<InstanceName, StoredState>>,
    pub(super) samples: HashMap<String, HashMap<InstanceName, Series>>,
    pub(super) flags: HashMap<String, StoredFlags>,
    pub(super) runtime: HashMap<String, GroupRuntime>,
    pub(super) group_audit: HashMap<String, GroupAuditLog>,
    pub(super) instance_audit: HashMap<String, HashMap<InstanceName, StoredAudit>>,
    expiries: Expiries,
    dirty: Dirty,
}

/// Runs `f` on the value at `key`, inserting a default value first when there is none; the
/// key is made (`make_key`) only then.
fn with_slot<K: Borrow<str> + Hash + Eq, V: Default, R>(
    map: &mut HashMap<K, V>,
    key: &str,
    make_key: impl FnOnce() -> K,
    f: impl FnOnce(&mut V) -> R,
) -> R {
    if let Some(value) = map.get_mut(key) {
        return f(value);
    }
    let mut value = V::default();
    let result = f(&mut value);
    map.insert(make_key(), value);
    result
}

impl WorkingSet {
    #[cfg(feature = "embedded")]
    /// A working set that tracks its changes (for a store that commits them).
    pub(super) fn tracked() -> Self {
        Self {
            dirty: Dirty {
                tracking: true,
                keys: HashSet::new(),
            },
            ..Self::default()
        }
    }

    #[cfg(feature = "embedded")]
    /// Called once the file is loaded: new states are ordered after every stored one.
    pub(super) fn loaded(&mut self) {
        self.seq = self
            .states
            .values()
            .flat_map(|m| m.values().map(|s| s.seq))
            .max()
            .unwrap_or(0);
    }

    #[cfg(feature = "embedded")]
    /// Marks a record for the next commit (a record absent from the working set is deleted).
    pub(super) fn touch(&mut self, key: Key) {
        self.dirty.mark(|| key);
    }

    #[cfg(feature = "embedded")]
    /// How many records the next commit writes.
    pub(super) fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    #[cfg(feature = "embedded")]
    /// Takes the changed records with their current values.
    pub(super) fn drain(&mut self) -> Vec<Change> {
        let keys: Vec<Key> = self.dirty.drain().collect();
        keys.into_iter()
            .map(|key| {
                let entry = self.entry(&key);
                Change { key, entry }
            })
            .collect()
    }

    #[cfg(feature = "embedded")]
    /// Marks records again after a failed commit, so the next commit writes them.
    pub(super) fn retry(&mut self, changes: Vec<Change>) {
        self.dirty.extend(changes.into_iter().map(|c| c.key));
    }

    #[cfg(feature = "embedded")]
    fn entry(&self, key: &Key) -> Option<Entry> {
        match key {
            Key::NewestToken => Some(Entry::NewestToken(self.newest_token)),
            Key::Group(g) => self
                .groups
                .get(g)
                .cloned()
                .map(|r| Entry::Group(Box::new(r))),
            Key::Runtime(g) => self.runtime.get(g).cloned().map(Entry::Runtime),
            Key::Flags(id) => self.flags.get(id).cloned().map(Entry::Flags),
            Key::State(g, id) => self.states.get(g).and_then(|m| m.get(id)).map(|s| {
                Entry::State(StateRecord {
                    state: Arc::clone(&s.state),
                    retain_until_ms: s.retain_until_ms,
                    seq: s.seq,
                    latest_status_ms: self
                        .instance_audit
                        .get(g)
                        .and_then(|m| m.get(id))
                        .and_then(StoredAudit::latest_status_ms),
                })
            }),
            Key::Samples(g, id) => self
                .samples
                .get(g)
                .and_then(|m| m.get(id))
                .cloned()
                .map(Entry::Samples),
            Key::GroupAudit(g) => self.group_audit.get(g).cloned().map(Entry::GroupAudit),
            Key::InstanceAudit(g, id) => self
                .instance_audit
                .get(g)
                .and_then(|m| m.get(id))
                .map(|a| Entry::InstanceAudit(a.to_audit(id, None))),
        }
    }

    fn fence(&mut self, fence: Option<FencingToken>) -> Result<(), StoreError> {
        match fence {
            Some(token) if token < self.newest_token => Err(StoreError::Fenced {
                token,
                newest: self.newest_token,
            }),
            Some(token) => {
                if token > self.newest_token {
                    self.newest_token = token;
                    self.dirty.mark(|| Key::NewestToken);
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Records an audit event of an instance. A check-in's latest status changes no audit
    /// record but a new one (`carried_by_state`): the state record it writes carries the time.
    fn audit_instance(
        &mut self,
        group: &str,
        instance: &InstanceName,
        kind: InstanceAuditKind,
        at_ms: UnixMillis,
        carried_by_state: bool,
    ) {
        self.expiries.audit_event(at_ms);
        let created = with_slot(
            &mut self.instance_audit,
            group,
            || group.to_owned(),
            |audits| match audits.get_mut(&**instance) {
                Some(audit) => {
                    audit.apply(kind, at_ms);
                    false
                }
                None => {
                    let mut audit = StoredAudit::empty();
                    audit.apply(kind, at_ms);
                    audits.insert(Arc::clone(instance), audit);
                    true
                }
            },
        );
        let carried = carried_by_state && kind == InstanceAuditKind::LatestStatus;
        if created || !carried {
            self.dirty
                .mark(|| Key::InstanceAudit(group.to_owned(), Arc::clone(instance)));
        }
    }

    /// Marks the audit records of removed states: the file's copy may lack the latest status
    /// their state records carried.
    fn mark_audits_of(&mut self, group: &str, removed: &[InstanceName]) {
        let Some(audits) = self.instance_audit.get(group) else {
            return;
        };
        let dirty = &mut self.dirty;
        for id in removed.iter().filter(|id| audits.contains_key(&***id)) {
            dirty.mark(|| Key::InstanceAudit(group.to_owned(), Arc::clone(id)));
        }
    }

    /// The shared name of instance `id` of `group`: the one its other records use, else new.
    fn instance_name(&self, group: &str, id: &str) -> InstanceName {
        fn key_in<V>(
            tables: &HashMap<String, HashMap<InstanceName, V>>,
            group: &str,
            id: &str,
        ) -> Option<InstanceName> {
            tables
                .get(group)
                .and_then(|m| m.get_key_value(id))
                .map(|(name, _)| Arc::clone(name))
        }
        key_in(&self.states, group, id)
            .or_else(|| key_in(&self.samples, group, id))
            .or_else(|| key_in(&self.instance_audit, group, id))
            .unwrap_or_else(|| InstanceName::from(id))
    }

    /// Loads a state record (shares the instance's name with its other records), with the
    /// latest status it carries for the instance's audit.
    #[cfg(feature = "embedded")]
    pub(super) fn load_state(&mut self, group: &str, id: &str, record: StateRecord) {
        let name = self.instance_name(group, id);
        self.expiries.state(record.retain_until_ms);
        if let Some(at_ms) = record.latest_status_ms {
            self.expiries.audit_event(at_ms);
            self.instance_audit
                .entry(group.to_owned())
                .or_default()
                .entry(Arc::clone(&name))
                .or_default()
                .apply(InstanceAuditKind::LatestStatus, at_ms);
        }
        let stored = StoredState {
            state: record.state,
            retain_until_ms: record.retain_until_ms,
            seq: record.seq,
        };
        self.states
            .entry(group.to_owned())
            .or_default()
            .insert(name, stored);
    }

    /// Loads a series (shares the instance's name with its other records).
    #[cfg(feature = "embedded")]
    pub(super) fn load_series(&mut self, group: &str, id: &str, series: Series) {
        let name = self.instance_name(group, id);
        // A series loaded may be empty or unsorted: the next sweep walks them all.
        self.expiries.samples_ms = UnixMillis::MIN;
        self.samples
            .entry(group.to_owned())
            .or_default()
            .insert(name, series);
    }

    /// Loads an instance audit (shares the instance's name with its other records).
    #[cfg(feature = "embedded")]
    pub(super) fn load_audit(&mut self, group: &str, id: &str, audit: InstanceAudit) {
        let name = self.instance_name(group, id);
        // An audit loaded may hold no event at all: the next sweep walks them all.
        self.expiries.audit_newest_ms = UnixMillis::MIN;
        self.instance_audit
            .entry(group.to_owned())
            .or_default()
            .entry(name)
            .or_default()
            .merge(StoredAudit::from_audit(audit));
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

    /// A group's live instance states with their flags, in first-seen order.
    pub(super) fn records(&self, group: &str, now: UnixMillis) -> Vec<InstanceRecord> {
        self.live_states(group, now)
            .into_iter()
            .map(|s| InstanceRecord {
                state: Arc::clone(&s.state),
                flags: self
                    .flags
                    .get(&s.state.instance_id)
                    .map(|f| f.live(now))
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Every group.
    pub(super) fn list_groups(&self) -> Vec<GroupRecord> {
        self.groups.values().cloned().collect()
    }

    /// One group.
    pub(super) fn get_group(&self, name: &str) -> Option<GroupRecord> {
        self.groups.get(name).cloned()
    }

    /// Writes a group if `expect` holds; returns the new version.
    pub(super) fn put_group(
        &mut self,
        record: &GroupRecord,
        expect: Expect,
        fence: Option<FencingToken>,
    ) -> Result<u64, StoreError> {
        let name = &record.group.name;
        let current = self.groups.get(name).map(|r| r.version);
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
        self.fence(fence)?;
        let version = current.unwrap_or(0) + 1;
        let mut stored = record.clone();
        stored.version = version;
        self.groups.insert(name.clone(), stored);
        self.dirty.mark(|| Key::Group(name.clone()));
        Ok(version)
    }

    /// Deletes a group with its states, samples and runtime.
    pub(super) fn delete_group(
        &mut self,
        name: &str,
        fence: Option<FencingToken>,
    ) -> Result<bool, StoreError> {
        self.fence(fence)?;
        let existed = self.groups.remove(name).is_some();
        if existed {
            self.dirty.mark(|| Key::Group(name.to_owned()));
        }
        if let Some(states) = self.states.remove(name) {
            let ids: Vec<InstanceName> = states.into_keys().collect();
            self.mark_audits_of(name, &ids);
            self.dirty
                .extend(ids.into_iter().map(|id| Key::State(name.to_owned(), id)));
        }
        if let Some(samples) = self.samples.remove(name) {
            self.dirty.extend(
                samples
                    .into_keys()
                    .map(|id| Key::Samples(name.to_owned(), id)),
            );
        }
        if self.runtime.remove(name).is_some() {
            self.dirty.mark(|| Key::Runtime(name.to_owned()));
        }
        Ok(existed)
    }

    /// A group with its instances, samples from `samples_since_ms` on (older ones are dropped),
    /// and runtime.
    pub(super) fn snapshot(
        &self,
        group: &str,
        samples_since_ms: UnixMillis,
        now: UnixMillis,
    ) -> Option<GroupSnapshot> {
        let record = self.groups.get(group).cloned()?;
        let instances = self.records(group, now);
        // Reads only filter: samples are trimmed on write and by the sweep, never by a reader
        // that happens to ask for a shorter span than another.
        let samples = self
            .samples
            .get(group)
            .map(|series| {
                series
                    .iter()
                    .filter_map(|(id, s)| {
                        let from = s.samples.partition_point(|x| x.at_ms < samples_since_ms);
                        (from < s.samples.len()).then(|| InstanceSamples {
                            instance_id: Arc::clone(id),
                            samples: SharedSamples::tail(Arc::clone(&s.samples), from),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let runtime = self.runtime.get(group).cloned().unwrap_or_default();
        Some(GroupSnapshot {
            record,
            instances,
            samples,
            runtime,
        })
    }

    /// One sidecar check-in (see [`CheckIn`]).
    pub(super) fn check_in(
        &mut self,
        check_in: &CheckIn,
        now: UnixMillis,
        retention: &Retention,
    ) -> Commands {
        let id = check_in.state.instance_id.as_str();
        let group = check_in.group.as_str();
        let at = check_in.state.timestamp;
        let flags = self.flags.get(id).map(|f| f.live(now)).unwrap_or_default();
        let stored = self.states.get(group).and_then(|m| m.get_key_value(id));
        let name = match stored {
            Some((name, _)) => Arc::clone(name),
            None => self.instance_name(group, id),
        };
        let stored = stored.map(|(_, s)| s).filter(|s| s.retain_until_ms >= now);
        let kept_seq = stored.map(|s| s.seq);
        let previous = stored.map(|s| &s.state);
        let mut commands = Commands {
            shutdown: flags.shutdown_requested_ms.is_some(),
            reconfigure: flags.reconfigure.as_ref().map(|r| r.date.clone()),
            ..Commands::default()
        };
        let report = matches!(check_in.kind, CheckInKind::Report { .. });
        // The latest status, and at most one reconfigure event.
        let mut audits = [Some(InstanceAuditKind::LatestStatus), None];
        if let Some(pending) = &flags.reconfigure {
            if report {
                if check_in
                    .reconfigure_complete_ms
                    .is_some_and(|done| done >= pending.at_ms)
                {
                    commands.reconfigure_acknowledged = true;
                    commands.reconfigure = None;
                    audits[1] = Some(InstanceAuditKind::ReconfigureComplete);
                }
            } else if previous.is_none_or(|p| !p.has_reported()) {
                commands.reconfigure_delivered = true;
                audits[1] = Some(InstanceAuditKind::ReconfigureDelivered);
            }
            if (commands.reconfigure_acknowledged || commands.reconfigure_delivered)
                && let Some(f) = self.flags.get_mut(id)
            {
                f.reconfigure = None;
                self.dirty.mark(|| Key::Flags(id.to_owned()));
            }
        }
        let new_state = match (&check_in.kind, previous) {
            (CheckInKind::Poll, Some(prev)) => {
                let mut merged = InstanceState::clone(prev);
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
                let retention_ms = check_in.sample_retention_ms;
                with_slot(
                    &mut self.samples,
                    group,
                    || group.to_owned(),
                    |series| {
                        with_slot(
                            series,
                            id,
                            || Arc::clone(&name),
                            |series| {
                                series.samples = appended(
                                    &series.samples,
                                    at - retention_ms,
                                    MetricSample { at_ms: at, value },
                                );
                                series.retention_ms = retention_ms;
                            },
                        )
                    },
                );
                self.expiries.series(at, retention_ms);
                self.dirty
                    .mark(|| Key::Samples(group.to_owned(), Arc::clone(&name)));
                commands.sample_written = true;
            }
        }
        let seq = match kept_seq {
            Some(seq) => seq,
            None => self.next_seq(),
        };
        let retain_until_ms = now + check_in.state_retention_ms;
        self.expiries.state(retain_until_ms);
        with_slot(
            &mut self.states,
            group,
            || group.to_owned(),
            |states| match states.get_mut(id) {
                Some(slot) => {
                    // The record is rewritten in place unless a snapshot still holds it.
                    match Arc::get_mut(&mut slot.state) {
                        Some(state) => *state = new_state,
                        None => slot.state = Arc::new(new_state),
                    }
                    slot.retain_until_ms = retain_until_ms;
                    slot.seq = seq;
                }
                None => {
                    let stored = StoredState {
                        state: Arc::new(new_state),
                        retain_until_ms,
                        seq,
                    };
                    states.insert(Arc::clone(&name), stored);
                }
            },
        );
        self.dirty
            .mark(|| Key::State(group.to_owned(), Arc::clone(&name)));
        for kind in audits.into_iter().flatten() {
            self.audit_instance(group, &name, kind, at, true);
        }
        self.check_ins += 1;
        if self.check_ins.is_multiple_of(SWEEP_EVERY) {
            self.sweep(now, retention);
        }
        commands
    }

    /// Writes states kept `retention_ms` from `now`.
    pub(super) fn put_instances(
        &mut self,
        group: &str,
        states: &[InstanceState],
        retention_ms: i64,
        fence: Option<FencingToken>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.fence(fence)?;
        for state in states {
            let seq = self.next_seq();
            let name = self.instance_name(group, &state.instance_id);
            self.expiries.state(now + retention_ms);
            self.states.entry(group.to_owned()).or_default().insert(
                Arc::clone(&name),
                StoredState {
                    state: Arc::new(state.clone()),
                    retain_until_ms: now + retention_ms,
                    seq,
                },
            );
            self.dirty.mark(|| Key::State(group.to_owned(), name));
        }
        Ok(())
    }

    /// Removes states; their last state stays in the instance audit.
    pub(super) fn remove_instances(
        &mut self,
        group: &str,
        instance_ids: &[String],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.fence(fence)?;
        for id in instance_ids {
            let Some((name, removed)) = self
                .states
                .get_mut(group)
                .and_then(|m| m.remove_entry(id.as_str()))
            else {
                continue;
            };
            self.dirty
                .mark(|| Key::State(group.to_owned(), Arc::clone(&name)));
            if let Some(audit) = self
                .instance_audit
                .get_mut(group)
                .and_then(|a| a.get_mut(id.as_str()))
            {
                audit.removed_state = Some(removed.state);
                self.dirty
                    .mark(|| Key::InstanceAudit(group.to_owned(), name));
            }
        }
        // A group left without states keeps no empty table (a sweep would drop it too).
        if self.states.get(group).is_some_and(HashMap::is_empty) {
            self.states.remove(group);
        }
        Ok(())
    }

    /// Applies flag changes.
    pub(super) fn update_flags(
        &mut self,
        updates: &[FlagUpdate],
        fence: Option<FencingToken>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.fence(fence)?;
        for update in updates {
            let flags = self
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
                    flags.reconfigure = Some(PendingReconfigure {
                        request: request.clone(),
                        expires_ms: *expires_ms,
                    });
                }
                FlagUpdate::ClearReconfigure { .. } => flags.reconfigure = None,
                FlagUpdate::Protect { until_ms, .. } => flags.protected_until_ms = Some(*until_ms),
            }
            self.dirty
                .mark(|| Key::Flags(update.instance_id().to_owned()));
        }
        Ok(())
    }

    /// One instance's live flags.
    pub(super) fn flags(&self, instance_id: &str, now: UnixMillis) -> InstanceFlags {
        self.flags
            .get(instance_id)
            .map(|f| f.live(now))
            .unwrap_or_default()
    }

    /// Writes a group's bookkeeping (ignored if the group does not exist).
    pub(super) fn put_runtime(
        &mut self,
        group: &str,
        runtime: &GroupRuntime,
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.fence(fence)?;
        if self.groups.contains_key(group) {
            self.runtime.insert(group.to_owned(), runtime.clone());
            self.dirty.mark(|| Key::Runtime(group.to_owned()));
        }
        Ok(())
    }

    /// Appends audit events of a group.
    pub(super) fn append_audit(
        &mut self,
        group: &str,
        events: &[AuditEvent],
        fence: Option<FencingToken>,
        now: UnixMillis,
        retention: &Retention,
    ) -> Result<(), StoreError> {
        self.fence(fence)?;
        for event in events {
            match event {
                AuditEvent::Group(e) => {
                    let log = self.group_audit.entry(group.to_owned()).or_default();
                    log.apply(e);
                    log.trim(now - retention.audit_ms);
                    self.dirty.mark(|| Key::GroupAudit(group.to_owned()));
                }
                AuditEvent::Instance(e) => {
                    let name = self.instance_name(group, &e.instance_id);
                    self.audit_instance(group, &name, e.kind, e.at_ms, false)
                }
            }
        }
        Ok(())
    }

    /// A group's audit within the retention; `None` when nothing is recorded.
    pub(super) fn group_audit(
        &self,
        group: &str,
        now: UnixMillis,
        retention: &Retention,
    ) -> Option<GroupAuditLog> {
        self.group_audit
            .get(group)
            .map(|log| {
                let mut log = log.clone();
                log.trim(now - retention.audit_ms);
                log
            })
            .filter(|l| !l.is_empty())
    }

    /// The audit of every instance seen in a group, with its latest state when known.
    pub(super) fn instance_audit(
        &self,
        group: &str,
        now: UnixMillis,
        retention: &Retention,
    ) -> Vec<InstanceAudit> {
        let oldest = now - retention.audit_ms;
        let live: HashMap<&str, &InstanceState> = self
            .live_states(group, now)
            .into_iter()
            .map(|s| (s.state.instance_id.as_str(), &*s.state))
            .collect();
        let mut audits: Vec<InstanceAudit> = self
            .instance_audit
            .get(group)
            .map(|audits| {
                audits
                    .iter()
                    .filter(|(_, a)| a.newest_ms().is_some_and(|t| t >= oldest))
                    .map(|(id, a)| a.to_audit(id, live.get(&**id).copied()))
                    .collect()
            })
            .unwrap_or_default();
        audits.sort_unstable_by(|a, b| a.instance_id.cmp(&b.instance_id));
        audits
    }

    /// Drops what has expired everywhere (states past retention, flags, old audit, sample
    /// series older than their retention) and marks it for deletion from the file. A table of
    /// instance records is walked only once its first record can have expired.
    pub(super) fn sweep(&mut self, now: UnixMillis, retention: &Retention) {
        let oldest = now - retention.audit_ms;
        if now >= self.expiries.states_ms {
            self.sweep_states(now);
        }
        if now >= self.expiries.samples_ms {
            self.sweep_samples(now);
        }
        let dirty = &mut self.dirty;
        self.flags.retain(|id, f| {
            let keep = !f.live(now).is_empty();
            if !keep {
                dirty.mark(|| Key::Flags(id.clone()));
            }
            keep
        });
        for (group, log) in &mut self.group_audit {
            if trim_changed(log, oldest) {
                dirty.mark(|| Key::GroupAudit(group.clone()));
            }
        }
        self.group_audit.retain(|_, l| !l.is_empty());
        if self.expiries.audit_newest_ms < oldest {
            self.sweep_instance_audits(oldest);
        }
    }

    fn sweep_states(&mut self, now: UnixMillis) {
        let dirty = &mut self.dirty;
        let mut next = UnixMillis::MAX;
        let mut expired: Vec<(String, InstanceName)> = Vec::new();
        for (group, states) in &mut self.states {
            states.retain(|id, s| {
                let keep = s.retain_until_ms >= now;
                if keep {
                    next = next.min(s.retain_until_ms.saturating_add(1));
                } else {
                    dirty.mark(|| Key::State(group.clone(), id.clone()));
                    if dirty.tracking {
                        expired.push((group.clone(), id.clone()));
                    }
                }
                keep
            });
        }
        self.states.retain(|_, s| !s.is_empty());
        self.expiries.states_ms = next;
        for (group, id) in expired {
            self.mark_audits_of(&group, &[id]);
        }
    }

    fn sweep_samples(&mut self, now: UnixMillis) {
        let dirty = &mut self.dirty;
        let mut next = UnixMillis::MAX;
        for (group, series) in &mut self.samples {
            series.retain(|id, s| {
                let expires = s.samples.last().map(|newest| {
                    newest
                        .at_ms
                        .saturating_add(s.retention_ms)
                        .saturating_add(1)
                });
                let keep = expires.is_some_and(|at| now < at);
                match expires {
                    Some(at) if keep => next = next.min(at),
                    _ => dirty.mark(|| Key::Samples(group.clone(), id.clone())),
                }
                keep
            });
        }
        self.samples.retain(|_, s| !s.is_empty());
        self.expiries.samples_ms = next;
    }

    fn sweep_instance_audits(&mut self, oldest: UnixMillis) {
        let dirty = &mut self.dirty;
        let mut next = UnixMillis::MAX;
        for (group, audits) in &mut self.instance_audit {
            audits.retain(|id, a| {
                let newest = a.newest_ms().filter(|t| *t >= oldest);
                match newest {
                    Some(t) => next = next.min(t),
                    None => dirty.mark(|| Key::InstanceAudit(group.clone(), id.clone())),
                }
                newest.is_some()
            });
        }
        self.instance_audit.retain(|_, a| !a.is_empty());
        self.expiries.audit_newest_ms = next;
    }
}

/// Trims a group audit log; tells whether anything went.
fn trim_changed(log: &mut GroupAuditLog, oldest_ms: UnixMillis) -> bool {
    let before = (
        log.auto_scaler_action_items.len(),
        log.launcher_action_items.len(),
        log.last_launcher_run,
        log.last_auto_scaler_run,
        log.last_reconfigure_request,
    );
    log.trim(oldest_ms);
    before
        != (
            log.auto_scaler_action_items.len(),
            log.launcher_action_items.len(),
            log.last_launcher_run,
            log.last_auto_scaler_run,
            log.last_reconfigure_request,
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{Metadata, StressStats};
    use crate::store::conformance::{group, report};

    const T0: UnixMillis = 1_773_856_800_000;

    fn jvb_report(id: &str, at: UnixMillis) -> CheckIn {
        let mut state = InstanceState::polled(id, "JVB", Metadata::for_group("g"), at);
        state.report_timestamp = Some(at);
        state.status.stats = Some(StressStats {
            stress_level: Some(0.5),
            ..StressStats::default()
        });
        report("g", state)
    }

    /// One step of the sweep's differential test.
    #[derive(Clone, Debug)]
    enum Step {
        CheckIn {
            instance: u8,
            group: u8,
            poll: bool,
            state_ttl_ms: i64,
            sample_ttl_ms: i64,
        },
        Put {
            instance: u8,
            group: u8,
            retention_ms: i64,
        },
        Remove {
            instance: u8,
            group: u8,
        },
        AuditEvent {
            instance: u8,
            group: u8,
            age_ms: i64,
        },
        Wait(i64),
        Sweep,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let at = (0u8..6, 0u8..2);
        prop_oneof![
            4 => (at.clone(), any::<bool>(), 1i64..200_000, 1i64..200_000).prop_map(
                |((instance, group), poll, state_ttl_ms, sample_ttl_ms)| Step::CheckIn {
                    instance, group, poll, state_ttl_ms, sample_ttl_ms,
                }
            ),
            1 => (at.clone(), 1i64..200_000).prop_map(|((instance, group), retention_ms)| {
                Step::Put { instance, group, retention_ms }
            }),
            1 => at.clone().prop_map(|(instance, group)| Step::Remove { instance, group }),
            1 => (at, 0i64..400_000).prop_map(|((instance, group), age_ms)| {
                Step::AuditEvent { instance, group, age_ms }
            }),
            3 => (0i64..150_000).prop_map(Step::Wait),
            2 => Just(Step::Sweep),
        ]
    }

    /// A working set as the embedded store keeps it (tracking its changes) when it can.
    fn fresh() -> WorkingSet {
        #[cfg(feature = "embedded")]
        return WorkingSet::tracked();
        #[cfg(not(feature = "embedded"))]
        return WorkingSet::default();
    }

    fn apply(set: &mut WorkingSet, step: &Step, now: UnixMillis, retention: &Retention) {
        let names = |instance: u8, group: u8| (format!("i-{instance}"), format!("g{group}"));
        match *step {
            Step::CheckIn {
                instance,
                group,
                poll,
                state_ttl_ms,
                sample_ttl_ms,
            } => {
                let (id, group) = names(instance, group);
                let mut check_in = jvb_report(&id, now);
                check_in.group = group;
                check_in.state_retention_ms = state_ttl_ms;
                check_in.sample_retention_ms = sample_ttl_ms;
                if poll {
                    check_in.kind = CheckInKind::Poll;
                }
                set.check_in(&check_in, now, retention);
            }
            Step::Put {
                instance,
                group,
                retention_ms,
            } => {
                let (id, group) = names(instance, group);
                let state = InstanceState::polled(&id, "JVB", Metadata::default(), now);
                set.put_instances(&group, &[state], retention_ms, None, now)
                    .expect("put");
            }
            Step::Remove { instance, group } => {
                let (id, group) = names(instance, group);
                set.remove_instances(&group, &[id], None).expect("remove");
            }
            Step::AuditEvent {
                instance,
                group,
                age_ms,
            } => {
                let (id, group) = names(instance, group);
                let event = AuditEvent::Instance(crate::audit::InstanceAuditEvent {
                    instance_id: id,
                    kind: InstanceAuditKind::RequestToTerminate,
                    at_ms: now - age_ms,
                });
                set.append_audit(&group, &[event], None, now, retention)
                    .expect("audit");
            }
            Step::Wait(_) | Step::Sweep => {}
        }
    }

    proptest::proptest! {
        /// A sweep that skips the tables with nothing due leaves exactly what a sweep that
        /// walks every table leaves, and marks the same records for the file.
        #[test]
        fn a_sweep_that_skips_what_is_not_due_leaves_what_a_full_walk_leaves(
            steps in proptest::collection::vec(step(), 1..80)
        ) {
            let retention = Retention { audit_ms: 300_000 };
            let (mut skipping, mut walking) = (fresh(), fresh());
            let mut now = T0;
            for step in &steps {
                match step {
                    Step::Wait(ms) => now += ms,
                    Step::Sweep => {
                        walking.expiries = Expiries::default();
                        skipping.sweep(now, &retention);
                        walking.sweep(now, &retention);
                        proptest::prop_assert_eq!(&skipping.states, &walking.states);
                        proptest::prop_assert_eq!(&skipping.samples, &walking.samples);
                        proptest::prop_assert_eq!(&skipping.instance_audit, &walking.instance_audit);
                        proptest::prop_assert_eq!(&skipping.dirty.keys, &walking.dirty.keys);
                    }
                    _ => {
                        apply(&mut skipping, step, now, &retention);
                        apply(&mut walking, step, now, &retention);
                    }
                }
            }
        }
    }

    #[test]
    fn a_fleet_that_keeps_reporting_costs_a_sweep_no_walk() {
        // States and samples kept equally long, so one instant is due for both.
        let jvb_report = |id: &str, at: UnixMillis| {
            let mut check_in = jvb_report(id, at);
            check_in.state_retention_ms = check_in.sample_retention_ms;
            check_in
        };
        let mut set = fresh();
        let retention = Retention::default();
        for k in 0..3 {
            set.check_in(&jvb_report(&format!("i-{k}"), T0), T0, &retention);
        }
        set.sweep(T0, &retention);
        let after_walk = set.expiries;
        assert!(after_walk.states_ms > T0 && after_walk.samples_ms > T0);
        // A second later every instance reports again: nothing can have expired yet.
        for k in 0..3 {
            set.check_in(
                &jvb_report(&format!("i-{k}"), T0 + 1000),
                T0 + 1000,
                &retention,
            );
        }
        assert_eq!(set.expiries, after_walk, "reports only push expiries later");
        set.sweep(T0 + 1000, &retention);
        assert_eq!(set.expiries, after_walk, "nothing was walked");
        // When the first bound comes, the walk finds every record refreshed: nothing goes,
        // and the bounds move on by the second between the reports.
        let due = after_walk.states_ms.max(after_walk.samples_ms);
        set.sweep(due, &retention);
        assert_eq!(set.states["g"].len(), 3);
        assert_eq!(set.expiries.states_ms, after_walk.states_ms + 1000);
        assert_eq!(set.expiries.samples_ms, after_walk.samples_ms + 1000);
        // i-0 stops reporting; the others report just before its records would expire.
        let gone = set.expiries.states_ms.max(set.expiries.samples_ms);
        for k in 1..3 {
            set.check_in(
                &jvb_report(&format!("i-{k}"), gone - 1),
                gone - 1,
                &retention,
            );
        }
        set.sweep(gone, &retention);
        assert!(!set.states["g"].contains_key("i-0"), "i-0 expired");
        assert!(!set.samples["g"].contains_key("i-0"), "its series too");
        assert_eq!(set.states["g"].len(), 2);
    }

    #[test]
    fn a_snapshot_keeps_the_samples_it_read_while_check_ins_append() {
        let mut set = WorkingSet::default();
        let retention = Retention::default();
        set.put_group(&GroupRecord::new(group("g", 1)), Expect::Absent, None)
            .expect("group");
        for k in 0..3 {
            set.check_in(&jvb_report("i-1", T0 + k * 1000), T0 + k * 1000, &retention);
        }
        let before = set.snapshot("g", 0, T0 + 2000).expect("snapshot");
        set.check_in(&jvb_report("i-1", T0 + 3000), T0 + 3000, &retention);
        let after = set.snapshot("g", 0, T0 + 3000).expect("snapshot");
        let times = |s: &GroupSnapshot| -> Vec<UnixMillis> {
            s.samples[0].samples.iter().map(|x| x.at_ms).collect()
        };
        assert_eq!(times(&before), [T0, T0 + 1000, T0 + 2000]);
        assert_eq!(times(&after), [T0, T0 + 1000, T0 + 2000, T0 + 3000]);
    }

    #[test]
    fn an_instance_id_is_allocated_once_for_every_record_and_snapshot() {
        let mut set = WorkingSet::default();
        let retention = Retention::default();
        for k in 0..3 {
            set.check_in(&jvb_report("i-1", T0 + k * 1000), T0 + k * 1000, &retention);
        }
        let name = |m: Option<&InstanceName>| m.cloned().expect("a record of i-1");
        let state = name(set.states["g"].keys().next());
        let series = name(set.samples["g"].keys().next());
        let audit = name(set.instance_audit["g"].keys().next());
        assert!(
            Arc::ptr_eq(&state, &series),
            "state and series share the id"
        );
        assert!(Arc::ptr_eq(&state, &audit), "state and audit share the id");
        set.put_group(&GroupRecord::new(group("g", 1)), Expect::Absent, None)
            .expect("group");
        let snapshot = set.snapshot("g", 0, T0 + 2000).expect("snapshot");
        assert_eq!(snapshot.samples[0].samples.len(), 3);
        assert!(Arc::ptr_eq(&snapshot.samples[0].instance_id, &state));

        // A state written by the engine (a launch placeholder), removed, then audited: the
        // audit keeps using the one id.
        set.remove_instances("g", &["i-1".to_owned()], None)
            .expect("remove");
        set.put_instances(
            "g",
            &[InstanceState::polled("i-1", "JVB", Metadata::default(), T0)],
            60_000,
            None,
            T0 + 3000,
        )
        .expect("put");
        let state = name(set.states["g"].keys().next());
        assert!(
            Arc::ptr_eq(&state, &series),
            "a new state reuses the series' id"
        );
    }

    #[cfg(feature = "embedded")]
    #[test]
    fn a_check_in_of_a_known_instance_writes_its_state_and_samples_not_its_audit() {
        let mut set = WorkingSet::tracked();
        let retention = Retention::default();
        set.check_in(&jvb_report("i-1", T0), T0, &retention);
        assert_eq!(
            set.dirty_len(),
            3,
            "a new instance: state, samples and audit"
        );
        set.drain();
        set.check_in(&jvb_report("i-1", T0 + 1000), T0 + 1000, &retention);
        let changes = set.drain();
        assert_eq!(changes.len(), 2, "{changes:?}");
        let carried = changes.iter().find_map(|c| match &c.entry {
            Some(Entry::State(record)) => Some(record.latest_status_ms),
            _ => None,
        });
        assert_eq!(carried, Some(Some(T0 + 1000)), "the state carries the time");
        assert!(
            changes
                .iter()
                .all(|c| !matches!(c.key, Key::InstanceAudit(..))),
            "{changes:?}"
        );

        // Any other audit event is written, and so is the audit of a removed state.
        set.append_audit(
            "g",
            &[AuditEvent::Instance(crate::audit::InstanceAuditEvent {
                instance_id: "i-1".into(),
                kind: InstanceAuditKind::RequestToTerminate,
                at_ms: T0 + 2000,
            })],
            None,
            T0 + 2000,
            &retention,
        )
        .expect("audit");
        assert_eq!(set.dirty_len(), 1);
        set.drain();
        set.remove_instances("g", &["i-1".to_owned()], None)
            .expect("remove");
        let keys: Vec<Key> = set.drain().into_iter().map(|c| c.key).collect();
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(keys.iter().any(|k| matches!(k, Key::InstanceAudit(..))));
    }

    #[test]
    fn a_stored_audit_keeps_every_kind_and_the_removed_state_through_the_full_form() {
        let mut stored = StoredAudit::empty();
        assert_eq!(stored.newest_ms(), None);
        stored.apply(InstanceAuditKind::RequestToLaunch, T0);
        stored.apply(InstanceAuditKind::LatestStatus, T0 + 20);
        stored.apply(InstanceAuditKind::LatestStatus, T0 + 10);
        stored.apply(InstanceAuditKind::ReconfigureDelivered, T0 + 5);
        stored.removed_state = Some(Arc::new(InstanceState::polled(
            "i-1",
            "JVB",
            Metadata::default(),
            T0,
        )));
        assert_eq!(stored.newest_ms(), Some(T0 + 20));

        let full = stored.to_audit("i-1", None);
        assert_eq!(full.instance_id, "i-1");
        assert_eq!(full.request_to_launch, Some(T0));
        assert_eq!(full.latest_status, Some(T0 + 20), "the latest time is kept");
        assert_eq!(full.reconfigure_delivered, Some(T0 + 5));
        assert_eq!(full.request_to_terminate, None);
        assert_eq!(
            full.latest_status_info.as_ref().map(|s| s.timestamp),
            Some(T0)
        );
        assert_eq!(StoredAudit::from_audit(full), stored);

        let live = InstanceState::polled("i-1", "JVB", Metadata::default(), T0 + 20);
        let shown = stored.to_audit("i-1", Some(&live));
        assert_eq!(shown.latest_status_info, Some(live), "a live state wins");
    }
}
