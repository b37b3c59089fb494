//! Audit: every decision and action, per group and per instance, in the reference's shapes
//! (rest-api.md §7.2, §7.3). Stores keep events for `AUDIT_TTL_SEC` (default 48 h).

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::clock::{UnixMillis, iso8601};
use crate::instance::InstanceState;

/// Default audit retention (`AUDIT_TTL_SEC`, 172800 s).
pub const DEFAULT_AUDIT_TTL_MS: i64 = 172_800_000;

/// Serialises a timestamp as the reference's ISO string.
fn iso<S: Serializer>(ms: &UnixMillis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&iso8601(*ms))
}

/// Serialises an optional timestamp as ISO, or `"unknown"`.
fn iso_or_unknown<S: Serializer>(ms: &Option<UnixMillis>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&iso8601(*ms)),
        None => s.serialize_str("unknown"),
    }
}

/// Accepts a timestamp as milliseconds or as an ISO string (stored audit of either form).
fn de_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<UnixMillis, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| serde::de::Error::custom("bad timestamp")),
        Value::String(s) => {
            crate::clock::parse_iso8601(&s).ok_or_else(|| serde::de::Error::custom("bad timestamp"))
        }
        _ => Err(serde::de::Error::custom("bad timestamp")),
    }
}

/// Accepts an optional timestamp as milliseconds, an ISO string, `"unknown"` or null.
fn de_opt_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<UnixMillis>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "unknown" => Ok(None),
        Some(v) => de_ms(v).map(Some).map_err(serde::de::Error::custom),
    }
}

/// An entry of `autoScalerActionItems`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoScalerAction {
    /// When.
    #[serde(serialize_with = "iso", deserialize_with = "de_ms")]
    pub timestamp: UnixMillis,
    /// `increaseDesiredCount`, `decreaseDesiredCount`, `scheduledScalingTransition`,
    /// `scheduledScalingDeleted`.
    pub action_type: String,
    /// Tracked count at the time.
    pub count: u32,
    /// Desired count before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_desired_count: Option<u32>,
    /// Desired count after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_desired_count: Option<u32>,
    /// The bucket summaries the decision rested on.
    #[serde(default)]
    pub scale_metrics: Vec<f64>,
    /// Details (transitions, deletions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// An entry of `launcherActionItems`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LauncherAction {
    /// When.
    #[serde(serialize_with = "iso", deserialize_with = "de_ms")]
    pub timestamp: UnixMillis,
    /// `scaleUp`, `scaleDown`, `launchThrottled`, `launchFailed`.
    pub action_type: String,
    /// Tracked count at the time.
    pub count: u32,
    /// Desired count at the time.
    pub desired_count: u32,
    /// Instances launched or flagged.
    pub scale_quantity: u32,
    /// Details (errors, throttle numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// A group audit event, as the engine and the API append them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum GroupAuditEvent {
    /// An autoscaler decision.
    AutoScaler(AutoScalerAction),
    /// A launcher action.
    Launcher(LauncherAction),
    /// The launcher ran.
    LauncherRun {
        /// When.
        at_ms: UnixMillis,
    },
    /// The autoscaler ran, with the bucket summaries it computed (`null` for no data).
    AutoScalerRun {
        /// When.
        at_ms: UnixMillis,
        /// The summaries, when computed.
        scale_metrics: Option<Vec<Option<f64>>>,
    },
    /// A reconfiguration of the group's instances was requested.
    ReconfigureRequest {
        /// When.
        at_ms: UnixMillis,
    },
}

/// What happened to an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceAuditKind {
    /// Launched by the engine.
    RequestToLaunch,
    /// Reported (status or poll).
    LatestStatus,
    /// Flagged for scale-down.
    RequestToTerminate,
    /// The sidecar confirmed its shutdown.
    ConfirmationOfTermination,
    /// A reconfiguration was requested.
    RequestToReconfigure,
    /// The sidecar reported the reconfiguration done.
    ReconfigureComplete,
    /// The engine terminated the instance through its provider.
    ServerTerminate,
    /// A poll-only sidecar received its reconfiguration (delivered once, R10).
    ReconfigureDelivered,
}

impl InstanceAuditKind {
    /// Every kind, in declaration order (`ALL[kind as usize] == kind`).
    pub const ALL: [InstanceAuditKind; 8] = [
        InstanceAuditKind::RequestToLaunch,
        InstanceAuditKind::LatestStatus,
        InstanceAuditKind::RequestToTerminate,
        InstanceAuditKind::ConfirmationOfTermination,
        InstanceAuditKind::RequestToReconfigure,
        InstanceAuditKind::ReconfigureComplete,
        InstanceAuditKind::ServerTerminate,
        InstanceAuditKind::ReconfigureDelivered,
    ];
}

/// An instance audit event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceAuditEvent {
    /// Instance id.
    pub instance_id: String,
    /// What happened.
    pub kind: InstanceAuditKind,
    /// When.
    pub at_ms: UnixMillis,
}

/// An audit event of either kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuditEvent {
    /// About the group.
    Group(GroupAuditEvent),
    /// About one instance.
    Instance(InstanceAuditEvent),
}

impl AuditEvent {
    /// An instance event.
    pub fn instance(instance_id: &str, kind: InstanceAuditKind, at_ms: UnixMillis) -> Self {
        AuditEvent::Instance(InstanceAuditEvent {
            instance_id: instance_id.to_owned(),
            kind,
            at_ms,
        })
    }

    /// When it happened.
    pub fn at_ms(&self) -> UnixMillis {
        match self {
            AuditEvent::Instance(e) => e.at_ms,
            AuditEvent::Group(g) => match g {
                GroupAuditEvent::AutoScaler(a) => a.timestamp,
                GroupAuditEvent::Launcher(l) => l.timestamp,
                GroupAuditEvent::LauncherRun { at_ms }
                | GroupAuditEvent::AutoScalerRun { at_ms, .. }
                | GroupAuditEvent::ReconfigureRequest { at_ms } => *at_ms,
            },
        }
    }
}

/// A group's audit, as `GET /groups/:name/group-audit` answers it (`{"audit": …}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupAuditLog {
    /// Last launcher run.
    #[serde(
        serialize_with = "iso_or_unknown",
        deserialize_with = "de_opt_ms",
        default
    )]
    pub last_launcher_run: Option<UnixMillis>,
    /// Last autoscaler run.
    #[serde(
        serialize_with = "iso_or_unknown",
        deserialize_with = "de_opt_ms",
        default
    )]
    pub last_auto_scaler_run: Option<UnixMillis>,
    /// Last reconfiguration request.
    #[serde(
        serialize_with = "iso_or_unknown",
        deserialize_with = "de_opt_ms",
        default
    )]
    pub last_reconfigure_request: Option<UnixMillis>,
    /// Bucket summaries of the last autoscaler run (omitted when it computed none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_metrics: Option<Vec<Option<f64>>>,
    /// Autoscaler decisions, newest first.
    #[serde(default)]
    pub auto_scaler_action_items: Vec<AutoScalerAction>,
    /// Launcher actions, newest first.
    #[serde(default)]
    pub launcher_action_items: Vec<LauncherAction>,
}

impl GroupAuditLog {
    /// Applies one event (items are kept newest first).
    pub fn apply(&mut self, event: &GroupAuditEvent) {
        match event {
            GroupAuditEvent::AutoScaler(a) => self.auto_scaler_action_items.insert(0, a.clone()),
            GroupAuditEvent::Launcher(l) => self.launcher_action_items.insert(0, l.clone()),
            GroupAuditEvent::LauncherRun { at_ms } => self.last_launcher_run = Some(*at_ms),
            GroupAuditEvent::AutoScalerRun {
                at_ms,
                scale_metrics,
            } => {
                self.last_auto_scaler_run = Some(*at_ms);
                self.last_scale_metrics = scale_metrics.clone();
            }
            GroupAuditEvent::ReconfigureRequest { at_ms } => {
                self.last_reconfigure_request = Some(*at_ms)
            }
        }
    }

    /// Drops items older than `oldest_ms`.
    pub fn trim(&mut self, oldest_ms: UnixMillis) {
        self.auto_scaler_action_items
            .retain(|a| a.timestamp >= oldest_ms);
        self.launcher_action_items
            .retain(|l| l.timestamp >= oldest_ms);
        for last in [
            &mut self.last_launcher_run,
            &mut self.last_auto_scaler_run,
            &mut self.last_reconfigure_request,
        ] {
            if last.is_some_and(|at| at < oldest_ms) {
                *last = None;
            }
        }
    }

    /// Nothing recorded.
    pub fn is_empty(&self) -> bool {
        *self == GroupAuditLog::default()
    }
}

/// One instance's audit, as `GET /groups/:name/instance-audit` lists them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceAudit {
    /// Instance id.
    pub instance_id: String,
    /// Launch time.
    #[serde(
        serialize_with = "iso_or_unknown",
        deserialize_with = "de_opt_ms",
        default
    )]
    pub request_to_launch: Option<UnixMillis>,
    /// Latest report or poll.
    #[serde(
        serialize_with = "iso_or_unknown",
        deserialize_with = "de_opt_ms",
        default
    )]
    pub latest_status: Option<UnixMillis>,
    /// Scale-down flag time.
    #[serde(
        serialize_with = "iso_or_unknown",
        deserialize_with = "de_opt_ms",
        default
    )]
    pub request_to_terminate: Option<UnixMillis>,
    /// Reconfiguration request time.
    #[serde(
        serialize_with = "iso_or_unknown",
        deserialize_with = "de_opt_ms",
        default
    )]
    pub request_to_reconfigure: Option<UnixMillis>,
    /// Reconfiguration completion time.
    #[serde(
        serialize_with = "iso_or_unknown",
        deserialize_with = "de_opt_ms",
        default
    )]
    pub reconfigure_complete: Option<UnixMillis>,
    /// Shutdown confirmation time.
    #[serde(
        serialize_with = "iso_or_unknown",
        deserialize_with = "de_opt_ms",
        default
    )]
    pub termination_confirmation: Option<UnixMillis>,
    /// Server-side termination time (jitsi-scaler).
    #[serde(
        serialize_with = "iso_or_unknown",
        deserialize_with = "de_opt_ms",
        default
    )]
    pub server_terminate: Option<UnixMillis>,
    /// One-time delivery of a reconfiguration to a poll-only sidecar (jitsi-scaler).
    #[serde(
        serialize_with = "iso_or_unknown",
        deserialize_with = "de_opt_ms",
        default
    )]
    pub reconfigure_delivered: Option<UnixMillis>,
    /// The latest state, when one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_status_info: Option<InstanceState>,
}

impl InstanceAudit {
    /// An empty audit for an instance.
    pub fn new(instance_id: &str) -> Self {
        Self {
            instance_id: instance_id.to_owned(),
            ..Self::default()
        }
    }

    /// Records an event (the latest time of each kind is kept).
    pub fn apply(&mut self, kind: InstanceAuditKind, at_ms: UnixMillis) {
        let slot = self.slot_mut(kind);
        *slot = Some(slot.map_or(at_ms, |t| t.max(at_ms)));
    }

    /// The latest time of an event kind, if it happened.
    pub fn time_of(&self, kind: InstanceAuditKind) -> Option<UnixMillis> {
        match kind {
            InstanceAuditKind::RequestToLaunch => self.request_to_launch,
            InstanceAuditKind::LatestStatus => self.latest_status,
            InstanceAuditKind::RequestToTerminate => self.request_to_terminate,
            InstanceAuditKind::ConfirmationOfTermination => self.termination_confirmation,
            InstanceAuditKind::RequestToReconfigure => self.request_to_reconfigure,
            InstanceAuditKind::ReconfigureComplete => self.reconfigure_complete,
            InstanceAuditKind::ServerTerminate => self.server_terminate,
            InstanceAuditKind::ReconfigureDelivered => self.reconfigure_delivered,
        }
    }

    fn slot_mut(&mut self, kind: InstanceAuditKind) -> &mut Option<UnixMillis> {
        match kind {
            InstanceAuditKind::RequestToLaunch => &mut self.request_to_launch,
            InstanceAuditKind::LatestStatus => &mut self.latest_status,
            InstanceAuditKind::RequestToTerminate => &mut self.request_to_terminate,
            InstanceAuditKind::ConfirmationOfTermination => &mut self.termination_confirmation,
            InstanceAuditKind::RequestToReconfigure => &mut self.request_to_reconfigure,
            InstanceAuditKind::ReconfigureComplete => &mut self.reconfigure_complete,
            InstanceAuditKind::ServerTerminate => &mut self.server_terminate,
            InstanceAuditKind::ReconfigureDelivered => &mut self.reconfigure_delivered,
        }
    }

    /// The newest time of any event.
    pub fn newest_ms(&self) -> Option<UnixMillis> {
        InstanceAuditKind::ALL
            .into_iter()
            .filter_map(|kind| self.time_of(kind))
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: UnixMillis = 1_773_856_800_000; // 2026-03-18T18:00:00.000Z

    #[test]
    fn every_instance_audit_kind_sits_at_its_own_index() {
        for (i, kind) in InstanceAuditKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i, "{kind:?}");
        }
    }

    #[test]
    fn group_audit_serialises_in_the_reference_shape() {
        let mut log = GroupAuditLog::default();
        log.apply(&GroupAuditEvent::AutoScaler(AutoScalerAction {
            timestamp: T0,
            action_type: "increaseDesiredCount".into(),
            count: 3,
            old_desired_count: Some(3),
            new_desired_count: Some(4),
            scale_metrics: vec![0.9, 0.85],
            detail: None,
        }));
        log.apply(&GroupAuditEvent::Launcher(LauncherAction {
            timestamp: T0 + 30_000,
            action_type: "scaleUp".into(),
            count: 3,
            desired_count: 4,
            scale_quantity: 1,
            detail: None,
        }));
        log.apply(&GroupAuditEvent::LauncherRun { at_ms: T0 + 30_000 });
        let v = serde_json::to_value(&log).expect("json");
        assert_eq!(
            v,
            json!({
                "lastLauncherRun": "2026-03-18T18:00:30.000Z",
                "lastAutoScalerRun": "unknown",
                "lastReconfigureRequest": "unknown",
                "autoScalerActionItems": [{"timestamp": "2026-03-18T18:00:00.000Z",
                    "actionType": "increaseDesiredCount", "count": 3, "oldDesiredCount": 3,
                    "newDesiredCount": 4, "scaleMetrics": [0.9, 0.85]}],
                "launcherActionItems": [{"timestamp": "2026-03-18T18:00:30.000Z",
                    "actionType": "scaleUp", "count": 3, "desiredCount": 4, "scaleQuantity": 1}]
            })
        );
        let back: GroupAuditLog = serde_json::from_value(v).expect("parse");
        assert_eq!(back.auto_scaler_action_items, log.auto_scaler_action_items);
    }

    #[test]
    fn items_are_newest_first_and_trimmed_by_age() {
        let mut log = GroupAuditLog::default();
        for i in 0..3 {
            log.apply(&GroupAuditEvent::Launcher(LauncherAction {
                timestamp: T0 + i,
                action_type: "scaleDown".into(),
                count: 1,
                desired_count: 1,
                scale_quantity: 1,
                detail: None,
            }));
        }
        let times: Vec<i64> = log
            .launcher_action_items
            .iter()
            .map(|l| l.timestamp - T0)
            .collect();
        assert_eq!(times, vec![2, 1, 0]);
        log.apply(&GroupAuditEvent::AutoScalerRun {
            at_ms: T0,
            scale_metrics: Some(vec![Some(0.4), None]),
        });
        assert_eq!(
            serde_json::to_value(&log).expect("json")["lastScaleMetrics"],
            json!([0.4, null])
        );
        log.trim(T0 + 2);
        assert_eq!(log.launcher_action_items.len(), 1);
        assert_eq!(log.last_auto_scaler_run, None);
    }

    #[test]
    fn instance_audit_keeps_the_latest_time_per_kind() {
        let mut a = InstanceAudit::new("i-1");
        a.apply(InstanceAuditKind::RequestToLaunch, T0);
        a.apply(InstanceAuditKind::LatestStatus, T0 + 10_000);
        a.apply(InstanceAuditKind::LatestStatus, T0 + 5_000);
        assert_eq!(a.newest_ms(), Some(T0 + 10_000));
        let v = serde_json::to_value(&a).expect("json");
        assert_eq!(v["requestToLaunch"], "2026-03-18T18:00:00.000Z");
        assert_eq!(v["latestStatus"], "2026-03-18T18:00:10.000Z");
        assert_eq!(v["requestToTerminate"], "unknown");
        assert!(v.get("latestStatusInfo").is_none());
    }
}
