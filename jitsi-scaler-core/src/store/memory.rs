//! [`MemoryStore`]: everything in process memory. For tests, embedding, and one node that can
//! afford to lose its state on restart. The semantics live in the working set it shares with
//! the embedded store.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::working_set::WorkingSet;
use super::{
    CheckIn, Commands, Expect, FlagUpdate, GroupRecord, GroupRuntime, GroupSnapshot, Retention,
    Store, StoreError,
};
use crate::audit::{AuditEvent, GroupAuditLog, InstanceAudit};
use crate::clock::{Clock, SystemClock, UnixMillis};
use crate::instance::{InstanceFlags, InstanceRecord, InstanceState};
use crate::leader::FencingToken;

/// A store in process memory.
#[derive(Debug)]
pub struct MemoryStore {
    set: Mutex<WorkingSet>,
    clock: Arc<dyn Clock>,
    retention: Retention,
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store reading time from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            set: Mutex::new(WorkingSet::default()),
            clock,
            retention: Retention::default(),
        }
    }

    /// Sets the retention of what the store expires on its own.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    fn now(&self) -> UnixMillis {
        self.clock.now_ms()
    }

    fn lock(&self) -> MutexGuard<'_, WorkingSet> {
        // Every write is a single insert or retain: a panic while holding the lock cannot leave
        // a record half-written, so a poisoned lock is recovered rather than propagated.
        self.set.lock().unwrap_or_else(|p| p.into_inner())
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
        Ok(self.lock().list_groups())
    }

    async fn get_group(&self, name: &str) -> Result<Option<GroupRecord>, StoreError> {
        Ok(self.lock().get_group(name))
    }

    async fn put_group(
        &self,
        record: &GroupRecord,
        expect: Expect,
        fence: Option<FencingToken>,
    ) -> Result<u64, StoreError> {
        self.lock().put_group(record, expect, fence)
    }

    async fn delete_group(
        &self,
        name: &str,
        fence: Option<FencingToken>,
    ) -> Result<bool, StoreError> {
        self.lock().delete_group(name, fence)
    }

    async fn snapshot(
        &self,
        group: &str,
        samples_since_ms: UnixMillis,
    ) -> Result<Option<GroupSnapshot>, StoreError> {
        let now = self.now();
        Ok(self.lock().snapshot(group, samples_since_ms, now))
    }

    async fn instances(&self, group: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        let now = self.now();
        Ok(self.lock().records(group, now))
    }

    async fn check_in(&self, check_in: &CheckIn) -> Result<Commands, StoreError> {
        let now = self.now();
        Ok(self.lock().check_in(check_in, now, &self.retention))
    }

    async fn put_instances(
        &self,
        group: &str,
        states: &[InstanceState],
        retention_ms: i64,
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        self.lock()
            .put_instances(group, states, retention_ms, fence, now)
    }

    async fn remove_instances(
        &self,
        group: &str,
        instance_ids: &[String],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.lock().remove_instances(group, instance_ids, fence)
    }

    async fn update_flags(
        &self,
        updates: &[FlagUpdate],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        self.lock().update_flags(updates, fence, now)
    }

    async fn flags(&self, instance_id: &str) -> Result<InstanceFlags, StoreError> {
        let now = self.now();
        Ok(self.lock().flags(instance_id, now))
    }

    async fn put_runtime(
        &self,
        group: &str,
        runtime: &GroupRuntime,
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.lock().put_runtime(group, runtime, fence)
    }

    async fn append_audit(
        &self,
        group: &str,
        events: &[AuditEvent],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        self.lock()
            .append_audit(group, events, fence, now, &self.retention)
    }

    async fn group_audit(&self, group: &str) -> Result<Option<GroupAuditLog>, StoreError> {
        let now = self.now();
        Ok(self.lock().group_audit(group, now, &self.retention))
    }

    async fn instance_audit(&self, group: &str) -> Result<Vec<InstanceAudit>, StoreError> {
        let now = self.now();
        Ok(self.lock().instance_audit(group, now, &self.retention))
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
