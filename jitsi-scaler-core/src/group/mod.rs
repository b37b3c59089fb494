//! Groups of instances and their scaling options, with the reference's JSON field names.
//!
//! A group round-trips unchanged: fields this version does not know are kept in `extra` and
//! written back. Validation lives in [`validate`]; `groups.json` loading in [`file`].

pub mod file;
pub mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::instance::{InstanceType, TypeClass};
use crate::schedule::ScheduledScalingConfig;

pub use validate::{FieldError, ValidationErrors};

/// Default autoscale cooldown after a desired-count change, in seconds.
pub const DEFAULT_GRACE_PERIOD_SEC: u64 = 480;
/// Default scale-down protection of `launch-protected`, in seconds.
pub const DEFAULT_PROTECTED_TTL_SEC: u64 = 600;
/// Default drain timeout of the `onConfirmOrTimeout` termination policy, in seconds.
pub const DEFAULT_DRAIN_TIMEOUT_SEC: u64 = 3600;
/// Default age of an open desired/count gap that raises a warning, in seconds.
pub const DEFAULT_CONVERGENCE_WARN_SEC: u64 = 900;

/// A group of instances of one type, scaled together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// Declared by the reference, never used; round-trip only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Primary key.
    pub name: String,
    /// Instance type, original spelling (`JVB`, `jibri`, …); see [`Group::instance_type`].
    #[serde(rename = "type")]
    pub type_name: String,
    /// Cloud region.
    #[serde(default)]
    pub region: String,
    /// Free label used by full-scaling.
    #[serde(default)]
    pub environment: String,
    /// OCI compartment.
    #[serde(default)]
    pub compartment_id: String,
    /// OCI instance configuration, Kubernetes PodTemplate name, …
    #[serde(default)]
    pub instance_configuration_id: String,
    /// Name of the provider that launches this group's instances.
    #[serde(default)]
    pub cloud: String,
    /// The autoscaler may change `desiredCount`.
    #[serde(default)]
    pub enable_auto_scale: bool,
    /// The launcher may launch and flag instances.
    #[serde(default)]
    pub enable_launch: bool,
    /// Takes part in full-scaling (absent ⇒ true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_scheduler: Option<bool>,
    /// Untracked-instance throttle on launches (absent ⇒ true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_untracked_throttle: Option<bool>,
    /// Allows `actions/reconfigure-instances`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_reconfiguration: Option<bool>,
    /// Per-group override of the cloud guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_cloud_guard: Option<bool>,
    /// Autoscale cooldown after a desired-count change (seconds).
    #[serde(default = "default_grace", rename = "gracePeriodTTLSec")]
    pub grace_period_ttl_sec: u64,
    /// Scale-down protection of instances launched by `launch-protected` (seconds).
    #[serde(default = "default_protected", rename = "protectedTTLSec")]
    pub protected_ttl_sec: u64,
    /// Bounds, target and step scaling options.
    pub scaling_options: ScalingOptions,
    /// Free tags (filter of `GET /groups?tag.k=v`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Scheduled scaling configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_scaling: Option<ScheduledScalingConfig>,
    /// Name of the scheduled period last applied (internal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_scaling_active_period: Option<String>,
    /// Options captured on first period entry, restored on exit (internal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_scaling_base_options: Option<ScalingOptions>,
    /// The scaling policy; absent ⇒ the reference's threshold (step) scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyConfig>,
    /// What follows a scale-down flag; absent ⇒ `sidecar` (the instance ends itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_policy: Option<TerminationPolicy>,
    /// Drain timeout of `onConfirmOrTimeout` (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_sec: Option<u64>,
    /// Handling of cloud instances that no sidecar reports; absent ⇒ off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphan_policy: Option<OrphanPolicy>,
    /// Age of an open desired/count gap that raises a warning (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convergence_warn_sec: Option<u64>,
    /// Count an IDLE but UNHEALTHY Jibri as available capacity (reference behaviour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_unhealthy_as_available: Option<bool>,
    /// Cooldown after a scale-up, overriding `gracePeriodTTLSec` (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_grace_period_sec: Option<u64>,
    /// Cooldown after a scale-down, overriding `gracePeriodTTLSec` (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_grace_period_sec: Option<u64>,
    /// Every field this version does not know, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_grace() -> u64 {
    DEFAULT_GRACE_PERIOD_SEC
}

fn default_protected() -> u64 {
    DEFAULT_PROTECTED_TTL_SEC
}

impl Group {
    /// The parsed instance type, if supported.
    pub fn instance_type(&self) -> Option<InstanceType> {
        InstanceType::parse(&self.type_name)
    }

    /// The type class; `None` for an unsupported type.
    pub fn class(&self) -> Option<TypeClass> {
        self.instance_type().map(InstanceType::class)
    }

    /// Takes part in full-scaling.
    pub fn scheduler_enabled(&self) -> bool {
        self.enable_scheduler.unwrap_or(true)
    }

    /// The untracked-instance throttle applies.
    pub fn untracked_throttle_enabled(&self) -> bool {
        self.enable_untracked_throttle.unwrap_or(true)
    }

    /// Reconfiguration is allowed.
    pub fn reconfiguration_enabled(&self) -> bool {
        self.enable_reconfiguration == Some(true)
    }

    /// The effective termination policy.
    pub fn termination_policy(&self) -> TerminationPolicy {
        self.termination_policy.unwrap_or_default()
    }

    /// The effective drain timeout in seconds.
    pub fn drain_timeout_sec(&self) -> u64 {
        self.drain_timeout_sec.unwrap_or(DEFAULT_DRAIN_TIMEOUT_SEC)
    }

    /// The effective convergence warning age in seconds.
    pub fn convergence_warn_sec(&self) -> u64 {
        self.convergence_warn_sec
            .unwrap_or(DEFAULT_CONVERGENCE_WARN_SEC)
    }

    /// Cooldown after a desired-count change in the given direction, in seconds.
    pub fn grace_period_sec(&self, up: bool) -> u64 {
        let specific = if up {
            self.scale_up_grace_period_sec
        } else {
            self.scale_down_grace_period_sec
        };
        specific.unwrap_or(self.grace_period_ttl_sec)
    }

    /// The policy configuration, defaulting to threshold scaling.
    pub fn policy(&self) -> PolicyConfig {
        self.policy.clone().unwrap_or_default()
    }

    /// A provider-specific section of the group JSON (for example `"kubernetes": {...}`),
    /// deserialised into the provider's own type. `Ok(None)` when absent.
    pub fn extension<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, serde_json::Error> {
        self.extra
            .get(key)
            .map(|v| serde_json::from_value(v.clone()))
            .transpose()
    }
}

/// Bounds, target and step-scaling options of a group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingOptions {
    /// Lower bound of `desiredCount`.
    pub min_desired: u32,
    /// Upper bound of `desiredCount`.
    pub max_desired: u32,
    /// Number of instances wanted.
    pub desired_count: u32,
    /// Step added by a scale-up.
    #[serde(default = "one")]
    pub scale_up_quantity: u32,
    /// Step removed by a scale-down.
    #[serde(default = "one")]
    pub scale_down_quantity: u32,
    /// Availability: idle instances below which to scale up; stress: stress at or above which.
    #[serde(default, serialize_with = "crate::json::number")]
    pub scale_up_threshold: f64,
    /// Availability: idle instances above which to scale down; stress: stress below which.
    #[serde(default, serialize_with = "crate::json::number")]
    pub scale_down_threshold: f64,
    /// Width of one metric bucket (seconds).
    #[serde(default = "sixty")]
    pub scale_period: u64,
    /// Newest buckets that must all call for a scale-up.
    #[serde(default = "one")]
    pub scale_up_periods_count: u32,
    /// Newest buckets that must all call for a scale-down.
    #[serde(default = "one")]
    pub scale_down_periods_count: u32,
    /// Extra cloud instances tolerated by the cloud guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_guard_grace_count: Option<u32>,
    /// selenium-grid only; kept for round-trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_scale_up_threshold: Option<u32>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn one() -> u32 {
    1
}

fn sixty() -> u64 {
    60
}

impl ScalingOptions {
    /// Options with the given bounds and target, and the reference's stress defaults otherwise.
    pub fn with_bounds(min_desired: u32, desired_count: u32, max_desired: u32) -> Self {
        Self {
            min_desired,
            max_desired,
            desired_count,
            scale_up_quantity: 1,
            scale_down_quantity: 1,
            scale_up_threshold: 0.8,
            scale_down_threshold: 0.3,
            scale_period: 60,
            scale_up_periods_count: 2,
            scale_down_periods_count: 4,
            cloud_guard_grace_count: None,
            reservation_scale_up_threshold: None,
            extra: Map::new(),
        }
    }

    /// `desiredCount` clamped into `[minDesired, maxDesired]`.
    pub fn clamped_desired(&self) -> u32 {
        self.desired_count
            .max(self.min_desired)
            .min(self.max_desired.max(self.min_desired))
    }

    /// Periods count used for a direction, never 0 (a stored legacy 0 reads as 1).
    pub fn periods(&self, up: bool) -> u32 {
        let n = if up {
            self.scale_up_periods_count
        } else {
            self.scale_down_periods_count
        };
        n.max(1)
    }

    /// Number of buckets the window must hold: `max(up, down)` periods.
    pub fn window_periods(&self) -> u32 {
        self.periods(true).max(self.periods(false))
    }

    /// Applies every field set in `patch`.
    pub fn apply(&mut self, patch: &ScalingOptionsPatch) {
        macro_rules! set {
            ($($f:ident),*) => {$( if let Some(v) = patch.$f { self.$f = v; } )*};
        }
        set!(
            min_desired,
            max_desired,
            desired_count,
            scale_up_quantity,
            scale_down_quantity,
            scale_up_threshold,
            scale_down_threshold,
            scale_period,
            scale_up_periods_count,
            scale_down_periods_count
        );
        if patch.cloud_guard_grace_count.is_some() {
            self.cloud_guard_grace_count = patch.cloud_guard_grace_count;
        }
        if patch.reservation_scale_up_threshold.is_some() {
            self.reservation_scale_up_threshold = patch.reservation_scale_up_threshold;
        }
    }

    /// The scheduled-scaling invariants: `min ≤ desired` (raising desired), `desired ≤ max`
    /// (raising max), then `min ≤ max` (lowering min).
    pub fn apply_invariants(&mut self) {
        if self.min_desired > self.desired_count {
            self.desired_count = self.min_desired;
        }
        if self.max_desired < self.desired_count {
            self.max_desired = self.desired_count;
        }
        if self.min_desired > self.max_desired {
            self.min_desired = self.max_desired;
        }
    }
}

/// A partial [`ScalingOptions`]: schedule periods, full-scaling and `scaling-options` bodies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingOptionsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub min_desired: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub max_desired: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub desired_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub scale_up_quantity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub scale_down_quantity: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::opt_number"
    )]
    #[allow(missing_docs)]
    pub scale_up_threshold: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::opt_number"
    )]
    #[allow(missing_docs)]
    pub scale_down_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub scale_period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub scale_up_periods_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub scale_down_periods_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub cloud_guard_grace_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub reservation_scale_up_threshold: Option<u32>,
}

/// How a group's desired count is decided. Selected by the group's `"policy"` JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PolicyConfig {
    /// The reference's step scaling on thresholds (the default).
    #[default]
    Threshold,
    /// Keep `spare` idle instances (the natural rule for Jibri).
    #[serde(rename_all = "camelCase")]
    Spare {
        /// Idle instances to keep.
        spare: u32,
    },
    /// Target tracking on average stress, as Kubernetes' HPA.
    #[serde(rename_all = "camelCase")]
    Target {
        /// Average stress to hold the group at.
        target_stress: f64,
        /// No change while `|observed/target − 1| ≤ tolerance` (default 0.1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tolerance: Option<f64>,
    },
}

/// What follows a scale-down flag (sidecar-protocol.md R9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TerminationPolicy {
    /// The instance ends itself (the reference).
    #[default]
    Sidecar,
    /// The engine terminates through the provider when the sidecar confirms shutdown.
    OnConfirm,
    /// As `onConfirm`, and also after `drainTimeoutSec`, or when the draining instance went silent.
    OnConfirmOrTimeout,
}

/// Handling of cloud instances that no sidecar reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrphanPolicy {
    /// `off`, `log` (dry run: log what would be terminated) or `terminate`.
    pub mode: OrphanMode,
    /// Consecutive sanity runs an instance must be untracked before it counts as an orphan.
    #[serde(default = "three")]
    pub orphan_cycles: u32,
}

fn three() -> u32 {
    3
}

/// Mode of an [`OrphanPolicy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OrphanMode {
    /// Do nothing.
    Off,
    /// Log and audit the orphans that would be terminated.
    Log,
    /// Terminate orphans through the provider.
    Terminate,
}

/// `groups.json`: `{"groupEntries": [...]}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupsFile {
    /// The groups.
    pub group_entries: Vec<Group>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The reference's example group (rest-api.md §2.4), verbatim.
    pub(crate) const EXAMPLE_GROUP: &str = r#"{"name":"lonely-us-phoenix-1-JibriGroup1","type":"jibri","region":"us-phoenix-1","environment":"lonely",
 "compartmentId":"","instanceConfigurationId":"","enableAutoScale":true,"enableLaunch":true,
 "gracePeriodTTLSec":480,"protectedTTLSec":600,
 "scalingOptions":{"minDesired":1,"maxDesired":2,"desiredCount":2,"scaleUpQuantity":1,"scaleDownQuantity":1,
   "scaleUpThreshold":1,"scaleDownThreshold":2,"scalePeriod":60,"scaleUpPeriodsCount":2,"scaleDownPeriodsCount":4},
 "tags":{"release_number":"150"},"cloud":"oracle"}"#;

    #[test]
    fn example_group_round_trips_field_for_field() {
        let original: Value = serde_json::from_str(EXAMPLE_GROUP).expect("json");
        let group: Group = serde_json::from_value(original.clone()).expect("group");
        assert_eq!(group.instance_type(), Some(InstanceType::Jibri));
        assert_eq!(group.scaling_options.scale_down_periods_count, 4);
        let back = serde_json::to_value(&group).expect("serialise");
        assert_eq!(back, original);
    }

    #[test]
    fn unknown_fields_are_kept_at_both_levels() {
        let mut v: Value = serde_json::from_str(EXAMPLE_GROUP).expect("json");
        v["seleniumGridUrl"] = "http://grid".into();
        v["futureThing"] = serde_json::json!({"a": [1, 2]});
        v["scalingOptions"]["someNewKnob"] = 7.into();
        let group: Group = serde_json::from_value(v.clone()).expect("group");
        assert_eq!(group.extra["futureThing"]["a"][1], 2);
        assert_eq!(serde_json::to_value(&group).expect("serialise"), v);
    }

    #[test]
    fn absent_ttls_default_and_policies_parse() {
        let v = serde_json::json!({
            "name": "g", "type": "jvb",
            "scalingOptions": {"minDesired": 0, "maxDesired": 3, "desiredCount": 1},
            "policy": {"type": "target", "targetStress": 0.6},
            "terminationPolicy": "onConfirmOrTimeout",
            "orphanPolicy": {"mode": "log"}
        });
        let g: Group = serde_json::from_value(v).expect("group");
        assert_eq!(g.grace_period_ttl_sec, 480);
        assert_eq!(g.protected_ttl_sec, 600);
        assert_eq!(
            g.policy(),
            PolicyConfig::Target {
                target_stress: 0.6,
                tolerance: None
            }
        );
        assert_eq!(
            g.termination_policy(),
            TerminationPolicy::OnConfirmOrTimeout
        );
        assert_eq!(g.orphan_policy.map(|o| o.orphan_cycles), Some(3));
        assert_eq!(g.class(), Some(TypeClass::Stress));
        assert_eq!(g.grace_period_sec(true), 480);
    }

    #[test]
    fn invariants_and_clamping() {
        let mut o = ScalingOptions::with_bounds(8, 5, 3);
        o.apply_invariants();
        assert_eq!((o.min_desired, o.desired_count, o.max_desired), (8, 8, 8));
        let o = ScalingOptions::with_bounds(2, 9, 5);
        assert_eq!(o.clamped_desired(), 5);
        let o = ScalingOptions::with_bounds(2, 0, 5);
        assert_eq!(o.clamped_desired(), 2);
        let mut o = ScalingOptions::with_bounds(1, 1, 1);
        o.scale_up_periods_count = 0;
        assert_eq!(o.periods(true), 1, "a stored 0 reads as 1");
    }
}
