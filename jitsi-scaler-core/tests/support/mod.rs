//! Test support: a stateful fake cloud, a harness around a `Scaler` on paused time, and
//! simulated sidecar reports.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jitsi_scaler_core::clock::{Clock, TokioClock, UnixMillis};
use jitsi_scaler_core::engine::{RecordingObserver, Scaler, ScalerOptions};
use jitsi_scaler_core::group::Group;
use jitsi_scaler_core::instance::CloudInstance;
use jitsi_scaler_core::provider::{
    CloudProvider, LaunchOutcome, LaunchRequest, LaunchedInstance, ProviderError, ProviderRegistry,
};
use jitsi_scaler_core::sidecar::{parse_instance_details, parse_stats_report};
use jitsi_scaler_core::store::{Commands, Expect, GroupRecord, MemoryStore, Store};
use serde_json::{Value, json};

/// 2026-03-18T18:00:00Z, a Wednesday.
pub const T0: UnixMillis = 1_773_856_800_000;

/// What the fake cloud does on its next launch.
#[derive(Clone, Debug)]
pub enum Next {
    /// Launch everything.
    Ok,
    /// Launch nothing, fail with this error.
    Fail(ProviderError),
    /// Launch the first `n`, then fail with this error.
    Partial(usize, ProviderError),
    /// Never answer.
    Hang,
}

#[derive(Debug, Default)]
pub struct CloudState {
    /// Instances by id.
    pub instances: BTreeMap<String, CloudInstance>,
    /// Every launch request received.
    pub launches: Vec<LaunchRequest>,
    /// Every terminate received.
    pub terminations: Vec<String>,
    /// Every list call.
    pub lists: usize,
    /// Scripted behaviours of the next launches.
    pub script: VecDeque<Next>,
    /// Instance ids by idempotency key.
    pub by_key: BTreeMap<String, String>,
    counter: u32,
}

/// A stateful cloud: launches are idempotent by key, listing returns what it runs.
#[derive(Debug, Default)]
pub struct FakeCloud {
    pub state: Mutex<CloudState>,
}

impl FakeCloud {
    pub fn script(&self, next: Next) {
        self.state.lock().unwrap().script.push_back(next);
    }

    pub fn launches(&self) -> Vec<LaunchRequest> {
        self.state.lock().unwrap().launches.clone()
    }

    pub fn launched_count(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .launches
            .iter()
            .map(|l| l.slots.len())
            .sum()
    }

    pub fn terminations(&self) -> Vec<String> {
        self.state.lock().unwrap().terminations.clone()
    }

    pub fn running(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .instances
            .keys()
            .cloned()
            .collect()
    }

    /// An instance the cloud runs that no sidecar reports.
    pub fn add_untracked(&self, id: &str) {
        self.state.lock().unwrap().instances.insert(
            id.to_owned(),
            CloudInstance {
                instance_id: id.to_owned(),
                display_name: id.to_owned(),
                cloud_status: "RUNNING".into(),
                created_at_ms: Some(T0 - 3_600_000),
            },
        );
    }
}

#[async_trait]
impl CloudProvider for FakeCloud {
    fn name(&self) -> &str {
        "fake"
    }

    async fn launch(&self, _group: &Group, request: &LaunchRequest) -> LaunchOutcome {
        let next = {
            let mut s = self.state.lock().unwrap();
            s.launches.push(request.clone());
            s.script.pop_front().unwrap_or(Next::Ok)
        };
        let (n, error) = match next {
            Next::Ok => (request.slots.len(), None),
            Next::Fail(e) => (0, Some(e)),
            Next::Partial(n, e) => (n, Some(e)),
            Next::Hang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
        };
        let mut s = self.state.lock().unwrap();
        let mut launched = Vec::new();
        for (slot, spec) in request.slots.iter().enumerate().take(n) {
            let id = match s.by_key.get(&spec.idempotency_key) {
                Some(id) => id.clone(),
                None => {
                    s.counter += 1;
                    let id = format!("vm-{}", s.counter);
                    s.by_key.insert(spec.idempotency_key.clone(), id.clone());
                    id
                }
            };
            s.instances.insert(
                id.clone(),
                CloudInstance {
                    instance_id: id.clone(),
                    display_name: spec.display_name.clone(),
                    cloud_status: "PROVISIONING".into(),
                    created_at_ms: None,
                },
            );
            launched.push(LaunchedInstance {
                slot,
                instance_id: id,
                display_name: spec.display_name.clone(),
            });
        }
        LaunchOutcome { launched, error }
    }

    async fn list(&self, _group: &Group) -> Result<Vec<CloudInstance>, ProviderError> {
        let mut s = self.state.lock().unwrap();
        s.lists += 1;
        Ok(s.instances.values().cloned().collect())
    }

    async fn terminate(&self, _group: &Group, instance_id: &str) -> Result<(), ProviderError> {
        let mut s = self.state.lock().unwrap();
        s.terminations.push(instance_id.to_owned());
        s.instances.remove(instance_id);
        Ok(())
    }
}

/// A scaler on paused time over a memory store and a fake cloud.
pub struct Harness {
    pub scaler: Scaler,
    pub store: Arc<MemoryStore>,
    pub cloud: Arc<FakeCloud>,
    pub clock: Arc<TokioClock>,
    pub observer: Arc<RecordingObserver>,
}

pub fn options() -> ScalerOptions {
    ScalerOptions {
        initial_delay: Duration::ZERO,
        ..ScalerOptions::default()
    }
}

impl Harness {
    /// Must be called inside a runtime with paused time.
    pub fn new() -> Self {
        Self::with_options(options())
    }

    pub fn with_options(options: ScalerOptions) -> Self {
        Self::with_provider(options, Arc::new(FakeCloud::default()))
    }

    pub fn with_provider(options: ScalerOptions, cloud: Arc<FakeCloud>) -> Self {
        let clock = Arc::new(TokioClock::starting_at(T0));
        let store = Arc::new(MemoryStore::with_clock(clock.clone()));
        let observer = Arc::new(RecordingObserver::default());
        let scaler = Scaler::builder(store.clone())
            .providers(ProviderRegistry::new().with(cloud.clone()))
            .clock(clock.clone())
            .observer(observer.clone())
            .options(options)
            .build();
        Self {
            scaler,
            store,
            cloud,
            clock,
            observer,
        }
    }

    pub fn now(&self) -> UnixMillis {
        self.clock.now_ms()
    }

    pub async fn put(&self, group: Group) {
        self.store
            .put_group(&GroupRecord::new(group.clone()), Expect::Any, None)
            .await
            .unwrap();
        self.scaler.group_changed(&group);
    }

    pub async fn group(&self, name: &str) -> GroupRecord {
        self.store.get_group(name).await.unwrap().unwrap()
    }

    pub async fn desired(&self, name: &str) -> u32 {
        self.group(name).await.group.scaling_options.desired_count
    }

    pub async fn ids(&self, name: &str) -> Vec<String> {
        self.store
            .instances(name)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.state.instance_id.clone())
            .collect()
    }

    /// A JVB report with this stress.
    pub async fn jvb(&self, group: &str, id: &str, stress: f64) -> Commands {
        let body = json!({
            "instance": {"instanceId": id, "instanceType": "JVB", "group": group},
            "stats": {"stress_level": stress, "participants": (stress * 100.0).round(), "graceful_shutdown": false},
            "timestamp": self.now(), "shutdownStatus": false, "shutdownError": false,
            "reconfigureError": false, "reconfigureComplete": "", "statsError": false
        });
        self.send(body).await
    }

    /// A Jibri report with this busy status.
    pub async fn jibri(&self, group: &str, id: &str, busy: &str) -> Commands {
        let body = json!({
            "instance": {"instanceId": id, "instanceType": "jibri", "group": group},
            "stats": {"status": {"busyStatus": busy, "health": {"healthStatus": "HEALTHY", "details": {}}}},
            "timestamp": self.now(), "shutdownStatus": false, "shutdownError": false,
            "reconfigureError": false, "reconfigureComplete": "", "statsError": false
        });
        self.send(body).await
    }

    pub async fn send(&self, body: Value) -> Commands {
        let report = parse_stats_report(body.to_string().as_bytes()).unwrap();
        self.scaler.report(&report).await.unwrap().commands
    }

    pub async fn confirm(&self, group: &str, id: &str) {
        let details = parse_instance_details(
            json!({"instanceId": id, "group": group})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        self.scaler.confirm_shutdown(&details).await.unwrap();
    }

    /// Every instance of the group reports this stress, every `every` seconds, for `secs` seconds.
    pub async fn load(&self, group: &str, ids: &[&str], stress: f64, secs: u64, every: u64) {
        let mut t = 0;
        while t < secs {
            for id in ids {
                self.jvb(group, id, stress).await;
            }
            tokio::time::advance(Duration::from_secs(every)).await;
            t += every;
        }
    }
}

/// A JVB group on the fake cloud: thresholds 0.8 / 0.3, 60 s periods, 2 up / 2 down.
pub fn jvb_group(name: &str, min: u32, desired: u32, max: u32) -> Group {
    serde_json::from_value(json!({
        "name": name, "type": "JVB", "region": "local", "cloud": "fake",
        "enableAutoScale": true, "enableLaunch": true, "gracePeriodTTLSec": 120, "protectedTTLSec": 600,
        "scalingOptions": {"minDesired": min, "maxDesired": max, "desiredCount": desired,
            "scaleUpQuantity": 1, "scaleDownQuantity": 1, "scaleUpThreshold": 0.8, "scaleDownThreshold": 0.3,
            "scalePeriod": 60, "scaleUpPeriodsCount": 2, "scaleDownPeriodsCount": 2}
    }))
    .unwrap()
}

/// A Jibri group on the fake cloud (the operator's defaults of the reference).
pub fn jibri_group(name: &str, min: u32, desired: u32, max: u32) -> Group {
    serde_json::from_value(json!({
        "name": name, "type": "jibri", "region": "local", "cloud": "fake",
        "enableAutoScale": true, "enableLaunch": true, "gracePeriodTTLSec": 120,
        "scalingOptions": {"minDesired": min, "maxDesired": max, "desiredCount": desired,
            "scaleUpQuantity": 1, "scaleDownQuantity": 1, "scaleUpThreshold": 1, "scaleDownThreshold": 2,
            "scalePeriod": 60, "scaleUpPeriodsCount": 2, "scaleDownPeriodsCount": 4}
    }))
    .unwrap()
}

/// A memory store whose chosen operations fail with `Unavailable` (D13 tests).
#[derive(Debug)]
pub struct FlakyStore {
    pub inner: MemoryStore,
    pub failing: Mutex<std::collections::HashSet<&'static str>>,
}

impl FlakyStore {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: MemoryStore::with_clock(clock),
            failing: Mutex::new(Default::default()),
        }
    }

    pub fn fail(&self, op: &'static str) {
        self.failing.lock().unwrap().insert(op);
    }

    fn check(&self, op: &'static str) -> Result<(), jitsi_scaler_core::store::StoreError> {
        if self.failing.lock().unwrap().contains(op) {
            Err(jitsi_scaler_core::store::StoreError::Unavailable(format!(
                "{op} failed"
            )))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn ping(&self) -> Result<(), jitsi_scaler_core::store::StoreError> {
        self.check("ping")
    }
    async fn list_groups(&self) -> Result<Vec<GroupRecord>, jitsi_scaler_core::store::StoreError> {
        self.check("list_groups")?;
        self.inner.list_groups().await
    }
    async fn get_group(
        &self,
        name: &str,
    ) -> Result<Option<GroupRecord>, jitsi_scaler_core::store::StoreError> {
        self.check("get_group")?;
        self.inner.get_group(name).await
    }
    async fn put_group(
        &self,
        record: &GroupRecord,
        expect: Expect,
        fence: Option<u64>,
    ) -> Result<u64, jitsi_scaler_core::store::StoreError> {
        self.check("put_group")?;
        self.inner.put_group(record, expect, fence).await
    }
    async fn delete_group(
        &self,
        name: &str,
        fence: Option<u64>,
    ) -> Result<bool, jitsi_scaler_core::store::StoreError> {
        self.check("delete_group")?;
        self.inner.delete_group(name, fence).await
    }
    async fn snapshot(
        &self,
        group: &str,
        since: UnixMillis,
    ) -> Result<Option<jitsi_scaler_core::store::GroupSnapshot>, jitsi_scaler_core::store::StoreError>
    {
        self.check("snapshot")?;
        self.inner.snapshot(group, since).await
    }
    async fn instances(
        &self,
        group: &str,
    ) -> Result<
        Vec<jitsi_scaler_core::instance::InstanceRecord>,
        jitsi_scaler_core::store::StoreError,
    > {
        self.check("instances")?;
        self.inner.instances(group).await
    }
    async fn check_in(
        &self,
        check_in: &jitsi_scaler_core::store::CheckIn,
    ) -> Result<Commands, jitsi_scaler_core::store::StoreError> {
        self.check("check_in")?;
        self.inner.check_in(check_in).await
    }
    async fn put_instances(
        &self,
        group: &str,
        states: &[jitsi_scaler_core::instance::InstanceState],
        retention_ms: i64,
        fence: Option<u64>,
    ) -> Result<(), jitsi_scaler_core::store::StoreError> {
        self.check("put_instances")?;
        self.inner
            .put_instances(group, states, retention_ms, fence)
            .await
    }
    async fn remove_instances(
        &self,
        group: &str,
        ids: &[String],
        fence: Option<u64>,
    ) -> Result<(), jitsi_scaler_core::store::StoreError> {
        self.check("remove_instances")?;
        self.inner.remove_instances(group, ids, fence).await
    }
    async fn update_flags(
        &self,
        updates: &[jitsi_scaler_core::store::FlagUpdate],
        fence: Option<u64>,
    ) -> Result<(), jitsi_scaler_core::store::StoreError> {
        self.check("update_flags")?;
        self.inner.update_flags(updates, fence).await
    }
    async fn flags(
        &self,
        id: &str,
    ) -> Result<jitsi_scaler_core::instance::InstanceFlags, jitsi_scaler_core::store::StoreError>
    {
        self.check("flags")?;
        self.inner.flags(id).await
    }
    async fn put_runtime(
        &self,
        group: &str,
        runtime: &jitsi_scaler_core::store::GroupRuntime,
        fence: Option<u64>,
    ) -> Result<(), jitsi_scaler_core::store::StoreError> {
        self.check("put_runtime")?;
        self.inner.put_runtime(group, runtime, fence).await
    }
    async fn append_audit(
        &self,
        group: &str,
        events: &[jitsi_scaler_core::audit::AuditEvent],
        fence: Option<u64>,
    ) -> Result<(), jitsi_scaler_core::store::StoreError> {
        self.check("append_audit")?;
        self.inner.append_audit(group, events, fence).await
    }
    async fn group_audit(
        &self,
        group: &str,
    ) -> Result<Option<jitsi_scaler_core::audit::GroupAuditLog>, jitsi_scaler_core::store::StoreError>
    {
        self.check("group_audit")?;
        self.inner.group_audit(group).await
    }
    async fn instance_audit(
        &self,
        group: &str,
    ) -> Result<Vec<jitsi_scaler_core::audit::InstanceAudit>, jitsi_scaler_core::store::StoreError>
    {
        self.check("instance_audit")?;
        self.inner.instance_audit(group).await
    }
}
