//! Synthetic fleets for the decision pass: JVB groups with the reference's default options,
//! each instance with the full retained window of samples a sidecar reporting every 30 s
//! leaves in the store.

use jitsi_scaler_core::clock::UnixMillis;
use jitsi_scaler_core::group::Group;
use jitsi_scaler_core::instance::{
    CloudInstance, InstanceFlags, InstanceRecord, InstanceState, Metadata, StressStats,
};
use jitsi_scaler_core::metrics::{InstanceSamples, MetricSample};
use serde_json::json;

/// 2026-11-22T11:28:10Z: the instant every fleet is built for.
pub const NOW: UnixMillis = 1_795_346_890_000;

/// The sidecar's default stats cadence (`STATS_POLLING_INTERVAL`).
pub const REPORT_EVERY_MS: i64 = 30_000;

/// Samples an instance holds: the store keeps `(periods + 1) × scalePeriod` of them, i.e.
/// 11 minutes for the reference's 10 × 60 s, one every 30 s.
pub const SAMPLES_PER_INSTANCE: usize = 22;

/// One group and everything its decision reads.
#[derive(Debug)]
pub struct GroupFixture {
    /// The group.
    pub group: Group,
    /// Its instances' states.
    pub instances: Vec<InstanceRecord>,
    /// Their samples.
    pub samples: Vec<InstanceSamples>,
    /// The cloud's list (as cached by the sanity step): every instance running.
    pub cloud: Vec<CloudInstance>,
}

/// A deterministic generator (xorshift64*), so every run builds the same fleet.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// A value in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A JVB group of `size` instances with the reference's default thresholds and periods
/// (`scalePeriod` 60 s, 2 periods up, 10 down), autoscale and launch on, no cooldown.
pub fn jvb_group(name: &str, size: u32) -> Group {
    serde_json::from_value(json!({
        "name": name, "type": "JVB", "region": "us-phoenix-1", "environment": "prod",
        "cloud": "oracle", "compartmentId": "c", "instanceConfigurationId": "ic",
        "enableAutoScale": true, "enableLaunch": true, "enableScheduler": false,
        "gracePeriodTTLSec": 0, "protectedTTLSec": 600,
        "scalingOptions": {"minDesired": 1, "maxDesired": size * 2, "desiredCount": size,
            "scaleUpQuantity": 1, "scaleDownQuantity": 1, "scaleUpThreshold": 0.7,
            "scaleDownThreshold": 0.3, "scalePeriod": 60, "scaleUpPeriodsCount": 2,
            "scaleDownPeriodsCount": 10},
        "tags": {"release_number": "9000"}
    }))
    .expect("a valid group")
}

/// A fleet of `groups` groups of `per_group` instances. Each group has its own load level
/// (so some scale up, some down, most hold) and each instance its own noise around it.
pub fn fleet(groups: usize, per_group: usize) -> Vec<GroupFixture> {
    let mut rng = Rng::new(0x5ca1e);
    (0..groups)
        .map(|g| {
            let name = format!("jvb-{g:05}");
            let level = rng.unit();
            let mut instances = Vec::with_capacity(per_group);
            let mut samples = Vec::with_capacity(per_group);
            let mut cloud = Vec::with_capacity(per_group);
            for i in 0..per_group {
                let id = format!("ocid1.instance.oc1.phx.{g:05}-{i:04}");
                let stress = (level + (rng.unit() - 0.5) * 0.2).max(0.0);
                let (record, series) = instance(&name, &id, stress, &mut rng);
                instances.push(record);
                samples.push(series);
                cloud.push(CloudInstance {
                    instance_id: id,
                    display_name: format!("{name}-{i}"),
                    cloud_status: "RUNNING".into(),
                    created_at_ms: Some(NOW - 86_400_000),
                });
            }
            GroupFixture {
                group: jvb_group(&name, per_group as u32),
                instances,
                samples,
                cloud,
            }
        })
        .collect()
}

fn instance(
    group: &str,
    id: &str,
    stress: f64,
    rng: &mut Rng,
) -> (InstanceRecord, InstanceSamples) {
    let last = NOW - (rng.unit() * REPORT_EVERY_MS as f64) as i64;
    let mut state = InstanceState::polled(id, "JVB", Metadata::for_group(group), last);
    state.report_timestamp = Some(last);
    state.reported_at = Some(last);
    state.status.stats = Some(StressStats {
        stress_level: Some(stress),
        participants: Some((stress * 100.0).round()),
        conferences: Some((stress * 10.0).round()),
        ..StressStats::default()
    });
    let samples = (0..SAMPLES_PER_INSTANCE)
        .rev()
        .map(|k| MetricSample {
            at_ms: last - k as i64 * REPORT_EVERY_MS,
            value: (stress + (rng.unit() - 0.5) * 0.05).max(0.0),
        })
        .collect();
    (
        InstanceRecord {
            state: state.into(),
            flags: InstanceFlags::default(),
        },
        InstanceSamples {
            instance_id: id.into(),
            samples,
        },
    )
}
