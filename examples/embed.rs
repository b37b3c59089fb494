//! Embedding jitsi-scaler: a `Scaler` over an in-memory store and a toy cloud, fed with
//! synthetic videobridge reports while the load rises and falls.
//!
//! Run with `cargo run -p examples --example embed`. Time is simulated (a manual clock moved a
//! minute at a time), so the whole day below takes a moment.
//!
//! In a real program you would call `scaler.run(shutdown)` once and let it reconcile on its
//! own interval, and pass the sidecars' HTTP requests to `scaler.report` / `scaler.poll`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jitsi_scaler_core::clock::{Clock, ManualClock};
use jitsi_scaler_core::engine::{Scaler, ScalerOptions};
use jitsi_scaler_core::group::Group;
use jitsi_scaler_core::instance::CloudInstance;
use jitsi_scaler_core::provider::{
    CloudProvider, LaunchOutcome, LaunchRequest, LaunchedInstance, ProviderError, ProviderRegistry,
};
use jitsi_scaler_core::sidecar::parse_stats_report;
use jitsi_scaler_core::store::{Expect, GroupRecord, MemoryStore, Store};

/// A cloud that runs instances in a map.
#[derive(Default)]
struct ToyCloud {
    instances: Mutex<BTreeMap<String, CloudInstance>>,
    next_id: Mutex<u32>,
}

#[async_trait]
impl CloudProvider for ToyCloud {
    fn name(&self) -> &str {
        "toy"
    }

    async fn launch(&self, _group: &Group, request: &LaunchRequest) -> LaunchOutcome {
        let mut launched = Vec::new();
        for (slot, s) in request.slots.iter().enumerate() {
            let id = {
                let mut n = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
                *n += 1;
                format!("jvb-{n}")
            };
            let instance = CloudInstance {
                instance_id: id.clone(),
                display_name: s.display_name.clone(),
                cloud_status: "RUNNING".into(),
                created_at_ms: None,
            };
            self.instances
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone(), instance);
            launched.push(LaunchedInstance {
                slot,
                instance_id: id,
                display_name: s.display_name.clone(),
            });
        }
        LaunchOutcome {
            launched,
            error: None,
        }
    }

    async fn list(&self, _group: &Group) -> Result<Vec<CloudInstance>, ProviderError> {
        Ok(self
            .instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect())
    }

    async fn terminate(&self, _group: &Group, instance_id: &str) -> Result<(), ProviderError> {
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(instance_id);
        Ok(())
    }
}

const GROUP: &str = r#"{
  "name": "demo-jvb", "type": "JVB", "region": "local", "cloud": "toy",
  "enableAutoScale": true, "enableLaunch": true, "gracePeriodTTLSec": 120,
  "terminationPolicy": "onConfirmOrTimeout", "drainTimeoutSec": 300,
  "scalingOptions": {"minDesired": 1, "maxDesired": 8, "desiredCount": 1,
    "scaleUpQuantity": 1, "scaleDownQuantity": 1, "scaleUpThreshold": 0.8, "scaleDownThreshold": 0.3,
    "scalePeriod": 60, "scaleUpPeriodsCount": 2, "scaleDownPeriodsCount": 4}
}"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = Arc::new(ManualClock::new(1_773_856_800_000));
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let cloud = Arc::new(ToyCloud::default());
    let scaler = Scaler::builder(store.clone())
        .providers(ProviderRegistry::new().with(cloud.clone()))
        .clock(clock.clone())
        .options(ScalerOptions {
            initial_delay: Duration::ZERO,
            ..ScalerOptions::default()
        })
        .build();
    let group: Group =
        jitsi_scaler_core::group::validate::parse_group(&serde_json::from_str(GROUP)?)?;
    store
        .put_group(&GroupRecord::new(group.clone()), Expect::Absent, None)
        .await?;
    scaler.group_changed(&group);

    println!("minute  load  bridges  desired  decision");
    // Participants over a day, in thousands of "load units" a bridge can take one of.
    let load_at = |minute: u32| -> f64 {
        match minute {
            0..=19 => 0.5,
            20..=59 => 0.5 + f64::from(minute - 20) * 0.15,
            60..=89 => 6.5,
            90..=129 => 6.5 - f64::from(minute - 90) * 0.15,
            _ => 0.5,
        }
    };
    for minute in 0..180 {
        let load = load_at(minute);
        let running: Vec<String> = cloud
            .instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let serving = running.len().max(1) as f64;
        for id in &running {
            let body = serde_json::json!({
                "instance": {"instanceId": id, "instanceType": "JVB", "group": "demo-jvb"},
                "stats": {"stress_level": load / serving, "participants": (load * 20.0 / serving).round()},
                "timestamp": clock.now_ms(),
                "shutdownStatus": false, "statsError": false, "reconfigureComplete": ""
            });
            let commands = scaler
                .report(&parse_stats_report(body.to_string().as_bytes())?)
                .await?
                .commands;
            if commands.shutdown {
                // The sidecar drains the bridge and confirms; the engine then terminates it.
                let details = jitsi_scaler_core::sidecar::parse_instance_details(
                    serde_json::json!({"instanceId": id, "group": "demo-jvb"})
                        .to_string()
                        .as_bytes(),
                )?;
                scaler.confirm_shutdown(&details).await?;
            }
        }
        let report = scaler.reconcile_now("demo-jvb").await?;
        let mut what = Vec::new();
        if report.desired_after != report.desired_before {
            what.push(format!(
                "desired {} -> {}",
                report.desired_before, report.desired_after
            ));
        }
        if !report.launched.is_empty() {
            what.push(format!("launched {:?}", report.launched));
        }
        if !report.flagged.is_empty() {
            what.push(format!("draining {:?}", report.flagged));
        }
        if !report.terminated.is_empty() {
            what.push(format!("terminated {:?}", report.terminated));
        }
        if !what.is_empty() || minute % 30 == 0 {
            println!(
                "{minute:>6}  {load:>4.1}  {:>7}  {:>7}  {}",
                running.len(),
                report.desired_after,
                what.join(", ")
            );
        }
        clock.advance(Duration::from_secs(60));
    }
    Ok(())
}
