//! A store that fails or hangs on demand: the memory store behind switchable faults, to
//! reach the API's answers to store failures (503, 206, 500) deterministically.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jitsi_scaler_core::audit::{AuditEvent, GroupAuditLog, InstanceAudit};
use jitsi_scaler_core::clock::UnixMillis;
use jitsi_scaler_core::instance::{InstanceFlags, InstanceRecord, InstanceState};
use jitsi_scaler_core::leader::FencingToken;
use jitsi_scaler_core::store::{
    CheckIn, Commands, Expect, FlagUpdate, GroupRecord, GroupRuntime, GroupSnapshot, MemoryStore,
    Store, StoreError,
};

/// What a faulty operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers `StoreError::Unavailable`.
    Fail,
    /// Never answers.
    Hang,
}

#[derive(Clone, Debug)]
struct Rule {
    op: &'static str,
    group: Option<String>,
    fault: Fault,
}

/// The memory store with faults injected per operation (and optionally per group).
#[derive(Debug)]
pub struct FaultyStore {
    inner: MemoryStore,
    rules: Mutex<Vec<Rule>>,
}

impl FaultyStore {
    /// A healthy store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::new(),
            rules: Mutex::new(Vec::new()),
        })
    }

    /// From now on, `op` (a `Store` method name, or `*`) fails or hangs, for `group` only
    /// when given.
    pub fn inject(&self, op: &'static str, group: Option<&str>, fault: Fault) {
        self.rules.lock().expect("rules").push(Rule {
            op,
            group: group.map(str::to_owned),
            fault,
        });
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.rules.lock().expect("rules").clear();
    }

    async fn check(&self, op: &'static str, group: Option<&str>) -> Result<(), StoreError> {
        let fault = self
            .rules
            .lock()
            .expect("rules")
            .iter()
            .find(|r| {
                (r.op == op || r.op == "*")
                    && r.group
                        .as_deref()
                        .is_none_or(|g| group.is_some_and(|x| x == g))
            })
            .map(|r| r.fault);
        match fault {
            None => Ok(()),
            Some(Fault::Fail) => Err(StoreError::Unavailable(format!("injected fault in {op}"))),
            Some(Fault::Hang) => std::future::pending().await,
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.check("ping", None).await?;
        self.inner.ping().await
    }

    async fn list_groups(&self) -> Result<Vec<GroupRecord>, StoreError> {
        self.check("list_groups", None).await?;
        self.inner.list_groups().await
    }

    async fn get_group(&self, name: &str) -> Result<Option<GroupRecord>, StoreError> {
        self.check("get_group", Some(name)).await?;
        self.inner.get_group(name).await
    }

    async fn put_group(
        &self,
        record: &GroupRecord,
        expect: Expect,
        fence: Option<FencingToken>,
    ) -> Result<u64, StoreError> {
        self.check("put_group", Some(&record.group.name)).await?;
        self.inner.put_group(record, expect, fence).await
    }

    async fn delete_group(
        &self,
        name: &str,
        fence: Option<FencingToken>,
    ) -> Result<bool, StoreError> {
        self.check("delete_group", Some(name)).await?;
        self.inner.delete_group(name, fence).await
    }

    async fn snapshot(
        &self,
        group: &str,
        samples_since_ms: UnixMillis,
    ) -> Result<Option<GroupSnapshot>, StoreError> {
        self.check("snapshot", Some(group)).await?;
        self.inner.snapshot(group, samples_since_ms).await
    }

    async fn instances(&self, group: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        self.check("instances", Some(group)).await?;
        self.inner.instances(group).await
    }

    async fn check_in(&self, check_in: &CheckIn) -> Result<Commands, StoreError> {
        self.check("check_in", Some(&check_in.group)).await?;
        self.inner.check_in(check_in).await
    }

    async fn put_instances(
        &self,
        group: &str,
        states: &[InstanceState],
        retention_ms: i64,
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.check("put_instances", Some(group)).await?;
        self.inner
            .put_instances(group, states, retention_ms, fence)
            .await
    }

    async fn remove_instances(
        &self,
        group: &str,
        instance_ids: &[String],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.check("remove_instances", Some(group)).await?;
        self.inner
            .remove_instances(group, instance_ids, fence)
            .await
    }

    async fn update_flags(
        &self,
        updates: &[FlagUpdate],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.check("update_flags", None).await?;
        self.inner.update_flags(updates, fence).await
    }

    async fn flags(&self, instance_id: &str) -> Result<InstanceFlags, StoreError> {
        self.check("flags", None).await?;
        self.inner.flags(instance_id).await
    }

    async fn put_runtime(
        &self,
        group: &str,
        runtime: &GroupRuntime,
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.check("put_runtime", Some(group)).await?;
        self.inner.put_runtime(group, runtime, fence).await
    }

    async fn append_audit(
        &self,
        group: &str,
        events: &[AuditEvent],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.check("append_audit", Some(group)).await?;
        self.inner.append_audit(group, events, fence).await
    }

    async fn group_audit(&self, group: &str) -> Result<Option<GroupAuditLog>, StoreError> {
        self.check("group_audit", Some(group)).await?;
        self.inner.group_audit(group).await
    }

    async fn instance_audit(&self, group: &str) -> Result<Vec<InstanceAudit>, StoreError> {
        self.check("instance_audit", Some(group)).await?;
        self.inner.instance_audit(group).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.check("flush", None).await?;
        self.inner.flush().await
    }
}
