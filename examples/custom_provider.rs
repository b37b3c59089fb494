//! Writing your own provider: a toy cloud implementing `CloudProvider`, run inside an embedded
//! `Scaler` with its real run loop, and an `Observer` printing what the engine does.
//!
//! Run with `cargo run -p examples --example custom_provider` (about ten seconds).
//!
//! A provider only launches, lists and terminates; the engine decides everything else. Three
//! rules make a provider safe:
//! - a launch carries one idempotency key per instance: the same key must never create a
//!   second instance (the engine retries a launch whose answer it never got);
//! - `list` returns every instance of the group, and only those;
//! - terminating an instance that is already gone succeeds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jitsi_scaler_core::engine::{EngineEvent, Observer, Scaler, ScalerOptions};
use jitsi_scaler_core::group::Group;
use jitsi_scaler_core::instance::CloudInstance;
use jitsi_scaler_core::provider::{
    CloudProvider, LaunchOutcome, LaunchRequest, LaunchedInstance, ProviderError, ProviderRegistry,
};
use jitsi_scaler_core::sidecar::parse_stats_report;
use jitsi_scaler_core::store::{Expect, GroupRecord, MemoryStore, Store};
use tokio_util::sync::CancellationToken;

/// One VM of the toy cloud.
#[derive(Clone, Debug)]
struct Vm {
    group: String,
    name: String,
}

/// A cloud that keeps its VMs in a map, keyed by the idempotency key of their launch.
#[derive(Debug, Default)]
struct ToyCloud {
    vms: Mutex<BTreeMap<String, Vm>>,
}

impl ToyCloud {
    fn vms(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vm>> {
        self.vms.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl CloudProvider for ToyCloud {
    fn name(&self) -> &str {
        "toy"
    }

    async fn launch(&self, group: &Group, request: &LaunchRequest) -> LaunchOutcome {
        let mut vms = self.vms();
        let launched = request
            .slots
            .iter()
            .enumerate()
            .map(|(slot, s)| {
                // The idempotency key is the VM id: a retried slot finds its VM.
                let vm = vms
                    .entry(format!("vm-{}", s.idempotency_key))
                    .or_insert_with(|| Vm {
                        group: group.name.clone(),
                        name: s.display_name.clone(),
                    });
                LaunchedInstance {
                    slot,
                    instance_id: format!("vm-{}", s.idempotency_key),
                    display_name: vm.name.clone(),
                }
            })
            .collect();
        LaunchOutcome {
            launched,
            error: None,
        }
    }

    async fn list(&self, group: &Group) -> Result<Vec<CloudInstance>, ProviderError> {
        Ok(self
            .vms()
            .iter()
            .filter(|(_, vm)| vm.group == group.name)
            .map(|(id, vm)| CloudInstance {
                instance_id: id.clone(),
                display_name: vm.name.clone(),
                cloud_status: "RUNNING".into(),
                created_at_ms: None,
            })
            .collect())
    }

    async fn terminate(&self, _group: &Group, instance_id: &str) -> Result<(), ProviderError> {
        self.vms().remove(instance_id);
        Ok(())
    }
}

/// Prints the engine's decisions as they happen.
#[derive(Debug)]
struct Printer;

impl Observer for Printer {
    fn observe(&self, event: &EngineEvent) {
        match event {
            EngineEvent::DesiredChanged {
                group, from, to, ..
            } => println!("{group}: desired {from} -> {to}"),
            EngineEvent::Launched { group, count } => println!("{group}: launched {count}"),
            EngineEvent::Downscaled { group, count } => {
                println!("{group}: {count} flagged for shutdown")
            }
            EngineEvent::Terminated { group, reason } => {
                println!("{group}: one terminated ({reason})")
            }
            _ => {}
        }
    }
}

const GROUP: &str = r#"{
  "name": "toy-jvb", "type": "JVB", "region": "toy-1", "cloud": "toy",
  "enableAutoScale": true, "enableLaunch": true, "gracePeriodTTLSec": 2,
  "terminationPolicy": "onConfirm",
  "scalingOptions": {"minDesired": 1, "maxDesired": 4, "desiredCount": 1,
    "scaleUpQuantity": 1, "scaleDownQuantity": 1, "scaleUpThreshold": 0.7, "scaleDownThreshold": 0.3,
    "scalePeriod": 1, "scaleUpPeriodsCount": 2, "scaleDownPeriodsCount": 2}
}"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(MemoryStore::new());
    let cloud = Arc::new(ToyCloud::default());
    let scaler = Scaler::builder(store.clone())
        .providers(ProviderRegistry::new().with(cloud.clone()))
        .observer(Arc::new(Printer))
        .options(ScalerOptions {
            reconcile_interval: Duration::from_millis(250),
            initial_delay: Duration::ZERO,
            ..ScalerOptions::default()
        })
        .build();
    let group = jitsi_scaler_core::group::validate::parse_group(&serde_json::from_str(GROUP)?)?;
    store
        .put_group(&GroupRecord::new(group), Expect::Absent, None)
        .await?;

    let shutdown = CancellationToken::new();
    let engine = tokio::spawn({
        let scaler = scaler.clone();
        let shutdown = shutdown.clone();
        async move { scaler.run(shutdown).await }
    });

    // Simulated sidecars: every VM reports its share of the load, every 200 ms.
    for tick in 0..50 {
        let load = if tick < 25 { 2.5 } else { 0.3 };
        let ids: Vec<String> = cloud.vms().keys().cloned().collect();
        for id in &ids {
            let body = serde_json::json!({
                "instance": {"instanceId": id, "instanceType": "JVB", "group": "toy-jvb"},
                "stats": {"stress_level": load / ids.len() as f64},
                "timestamp": tick, "shutdownStatus": false, "statsError": false, "reconfigureComplete": ""
            });
            let commands = scaler
                .report(&parse_stats_report(body.to_string().as_bytes())?)
                .await?
                .commands;
            if commands.shutdown {
                let details = jitsi_scaler_core::sidecar::parse_instance_details(
                    serde_json::json!({"instanceId": id, "group": "toy-jvb"})
                        .to_string()
                        .as_bytes(),
                )?;
                scaler.confirm_shutdown(&details).await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    engine.await??;
    println!("VMs left: {:?}", cloud.vms().keys().collect::<Vec<_>>());
    Ok(())
}
