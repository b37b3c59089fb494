//! Instances: their type, what we keep of their stats, their lifecycle state and flags.
//!
//! A sidecar report is reduced on arrival to the few values the engine decides on
//! ([`InstanceStatus`]); the rest of the component's stats is not kept. That keeps the
//! check-in path fast and a tracked instance small.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::clock::UnixMillis;

/// The component an instance runs. Parsed case-insensitively (`JVB` ≡ `jvb`); the original
/// spelling is kept wherever the type is stored or echoed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstanceType {
    /// Jibri recorder / streamer.
    Jibri,
    /// Jibri in SIP gateway mode.
    SipJibri,
    /// A generic availability type (behaves as `jibri`).
    Availability,
    /// Jitsi Videobridge.
    Jvb,
    /// Jigasi SIP / transcription gateway.
    Jigasi,
    /// Whisper transcriber (generic stress).
    Whisper,
    /// A generic stress type.
    Stress,
    /// Selenium grid node (scaled as a plain stress type).
    SeleniumGrid,
    /// A Nomad client node.
    Nomad,
}

/// How a type's load is measured and summarised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TypeClass {
    /// Metric is 1 per idle instance; a bucket summary is the expected number of idle instances.
    Availability,
    /// Metric is `stress_level`; a bucket summary is the mean stress.
    Stress,
}

impl InstanceType {
    /// Every supported type, in the reference's spelling.
    pub const ALL: [InstanceType; 9] = [
        InstanceType::Jibri,
        InstanceType::SipJibri,
        InstanceType::Availability,
        InstanceType::Jvb,
        InstanceType::Jigasi,
        InstanceType::Whisper,
        InstanceType::Stress,
        InstanceType::SeleniumGrid,
        InstanceType::Nomad,
    ];

    /// Parses a type name, trimming whitespace and ignoring case.
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name))
    }

    /// The reference's spelling of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceType::Jibri => "jibri",
            InstanceType::SipJibri => "sip-jibri",
            InstanceType::Availability => "availability",
            InstanceType::Jvb => "JVB",
            InstanceType::Jigasi => "jigasi",
            InstanceType::Whisper => "whisper",
            InstanceType::Stress => "stress",
            InstanceType::SeleniumGrid => "selenium-grid",
            InstanceType::Nomad => "nomad",
        }
    }

    /// The class that decides how the type is measured.
    pub fn class(self) -> TypeClass {
        match self {
            InstanceType::Jibri | InstanceType::SipJibri | InstanceType::Availability => {
                TypeClass::Availability
            }
            _ => TypeClass::Stress,
        }
    }
}

impl fmt::Display for InstanceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Jibri's busy status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BusyStatus {
    /// Free to take a recording.
    Idle,
    /// Recording or streaming.
    Busy,
    /// Single-use Jibri that finished its session.
    Expired,
    /// A value this version does not know.
    #[serde(other)]
    Unknown,
}

/// A Jibri's overall health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HealthStatus {
    /// Every component healthy.
    Healthy,
    /// At least one component unhealthy.
    Unhealthy,
    /// A value this version does not know.
    #[serde(other)]
    Unknown,
}

/// `status.health` of a Jibri.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JibriHealth {
    /// Overall health.
    pub health_status: HealthStatus,
}

/// The `status` object of a Jibri health report or webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JibriStatus {
    /// IDLE, BUSY or EXPIRED.
    pub busy_status: BusyStatus,
    /// Health of the Jibri.
    pub health: JibriHealth,
}

impl JibriStatus {
    /// A healthy Jibri with the given busy status.
    pub fn healthy(busy_status: BusyStatus) -> Self {
        Self {
            busy_status,
            health: JibriHealth {
                health_status: HealthStatus::Healthy,
            },
        }
    }
}

/// What is kept of a stress-type component's stats (JVB, Jigasi, generic, Nomad).
/// Serialised with the component's own field names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StressStats {
    /// Load relative to the component's threshold: 0 idle, 1 at threshold, may exceed 1.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::opt_number"
    )]
    pub stress_level: Option<f64>,
    /// Participants (JVB, Jigasi, generic).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::opt_number"
    )]
    pub participants: Option<f64>,
    /// Connections (generic).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::opt_number"
    )]
    pub connections: Option<f64>,
    /// Allocated CPU (Nomad, generic).
    #[serde(
        default,
        rename = "allocatedCPU",
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::opt_number"
    )]
    pub allocated_cpu: Option<f64>,
    /// Conferences hosted (JVB, Jigasi).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::opt_number"
    )]
    pub conferences: Option<f64>,
    /// The component is draining: `graceful_shutdown` or `shutting_down` (JVB), or a Nomad
    /// node not eligible for scheduling.
    #[serde(default)]
    pub graceful_shutdown: bool,
    /// JVB `drain`: takes no new conferences but is not shutting down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drain: bool,
}

impl StressStats {
    /// Load used to order scale-down victims: the first defined of participants,
    /// allocated CPU, connections and stress level, else 0.
    pub fn load(&self) -> f64 {
        self.participants
            .or(self.allocated_cpu)
            .or(self.connections)
            .or(self.stress_level)
            .unwrap_or(0.0)
    }

    /// Whether the reference report would show the instance as `IN USE`.
    pub fn in_use(&self) -> bool {
        self.participants.unwrap_or(0.0) > 0.0
            || self.connections.unwrap_or(0.0) > 0.0
            || self.allocated_cpu.unwrap_or(0.0) > 1000.0
    }
}

/// The `status` of an instance state: provisioning, and what its last report said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// A launch placeholder not yet reported by its sidecar.
    pub provisioning: bool,
    /// Stress-type stats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<StressStats>,
    /// Availability-type status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jibri_status: Option<JibriStatus>,
}

impl InstanceStatus {
    /// No stats object of either kind ("no status" for victim selection).
    pub fn has_no_stats(&self) -> bool {
        self.stats.is_none() && self.jibri_status.is_none()
    }

    /// The component itself says it is draining (`graceful_shutdown`, `shutting_down`, Nomad
    /// ineligibility).
    pub fn is_draining(&self) -> bool {
        self.stats.is_some_and(|s| s.graceful_shutdown)
    }

    /// Reduces a component's stats JSON to what is kept, by type class. `None` when the stats
    /// are empty or of no known shape for the class.
    pub fn from_stats(class: TypeClass, raw: &ComponentStatsWire) -> InstanceStatus {
        let mut status = InstanceStatus::default();
        match class {
            TypeClass::Availability => status.jibri_status = raw.jibri_status(),
            TypeClass::Stress => status.stats = raw.stress_stats(),
        }
        status
    }
}

/// An instance's free metadata: the sidecar's `InstanceDetails`, kept verbatim as JSON text
/// (an empty object when absent). Shared, not copied, between the copies of a state (the
/// store's, a snapshot's, a report's).
#[derive(Clone, Debug, Default)]
pub struct Metadata(Option<Arc<RawValue>>);

impl Metadata {
    /// Wraps a JSON value received from a sidecar.
    pub fn from_raw(raw: Box<RawValue>) -> Self {
        Self(Some(Arc::from(raw)))
    }

    /// Metadata of a launch placeholder: `{"group": <group>}`.
    pub fn for_group(group: &str) -> Self {
        Self(
            serde_json::value::to_raw_value(&serde_json::json!({ "group": group }))
                .ok()
                .map(Arc::from),
        )
    }

    /// The JSON text.
    pub fn as_json(&self) -> &str {
        self.0.as_deref().map_or("{}", RawValue::get)
    }

    /// Reads one string field (`name`, `version`, `privateIp`, …), if present.
    pub fn get_str(&self, key: &str) -> Option<String> {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(self.as_json()).ok()?;
        map.get(key)?.as_str().map(str::to_owned)
    }
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

impl Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(raw) => raw.serialize(s),
            None => serde_json::Map::new().serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(Metadata::from_raw)
    }
}

/// The latest state of one instance, as stored and as shown in `latestStatusInfo`.
///
/// `timestamp` is the server's receive time of the last sidecar call (liveness);
/// `reportTimestamp` is the sidecar's own report time, kept for diagnostics and deduplication.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceState {
    /// Cloud instance id.
    pub instance_id: String,
    /// Type as reported (original spelling).
    pub instance_type: String,
    /// The sidecar's instance details, verbatim.
    #[serde(default)]
    pub metadata: Metadata,
    /// Provisioning flag and reduced stats.
    #[serde(default)]
    pub status: InstanceStatus,
    /// Server receive time of the latest call from this instance.
    pub timestamp: UnixMillis,
    /// Sidecar time of the latest report (absent for poll-only instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_timestamp: Option<UnixMillis>,
    /// Server receive time of the latest report carrying stats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<UnixMillis>,
    /// The sidecar has started acting on a shutdown command.
    #[serde(default)]
    pub shutdown_status: bool,
    /// The last shutdown attempt failed.
    #[serde(default)]
    pub shutdown_error: bool,
    /// The last reconfigure script failed.
    #[serde(default)]
    pub reconfigure_error: bool,
    /// The sidecar could not read its component's stats.
    #[serde(default)]
    pub stats_error: bool,
    /// The instance is shutting down by its own account (sidecar or component).
    #[serde(default)]
    pub is_shutting_down: bool,
    /// `reconfigureComplete` of the latest report, when non-empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconfigured: Option<String>,
    /// A placeholder written in dry-run mode (no instance was launched).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

impl InstanceState {
    /// The placeholder written for a freshly launched instance; it counts as provisioning
    /// until the instance's sidecar reports.
    pub fn placeholder(
        instance_id: &str,
        group: &str,
        instance_type: &str,
        now: UnixMillis,
        dry_run: bool,
    ) -> Self {
        Self {
            instance_id: instance_id.to_owned(),
            instance_type: instance_type.to_owned(),
            metadata: Metadata::for_group(group),
            status: InstanceStatus {
                provisioning: true,
                ..InstanceStatus::default()
            },
            timestamp: now,
            report_timestamp: None,
            reported_at: None,
            shutdown_status: false,
            shutdown_error: false,
            reconfigure_error: false,
            stats_error: false,
            is_shutting_down: false,
            last_reconfigured: None,
            dry_run,
        }
    }

    /// The state of an instance known only from polls (R5): alive, no stats.
    pub fn polled(
        instance_id: &str,
        instance_type: &str,
        metadata: Metadata,
        now: UnixMillis,
    ) -> Self {
        let mut state = Self::placeholder(instance_id, "", instance_type, now, false);
        state.status.provisioning = false;
        state.metadata = metadata;
        state
    }

    /// Whether the instance has ever sent a stats report (as opposed to polls only).
    pub fn has_reported(&self) -> bool {
        self.report_timestamp.is_some()
    }
}

/// A pending reconfigure request for one instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconfigureRequest {
    /// The date string sent to the sidecar (`YYYY-MM-DDTHH:mm:ss.sssZ`).
    pub date: String,
    /// The same instant in milliseconds.
    pub at_ms: UnixMillis,
}

/// Server-side flags of one instance (keyed by instance id, as in the reference).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceFlags {
    /// When the scale-down (shutdown) command was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_requested_ms: Option<UnixMillis>,
    /// When the sidecar confirmed the shutdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_confirmed_ms: Option<UnixMillis>,
    /// Pending reconfigure request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconfigure: Option<ReconfigureRequest>,
    /// Protected from scale-down until this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_until_ms: Option<UnixMillis>,
}

impl InstanceFlags {
    /// No flag is set.
    pub fn is_empty(&self) -> bool {
        *self == InstanceFlags::default()
    }

    /// Protected from scale-down at `now`.
    pub fn is_protected(&self, now: UnixMillis) -> bool {
        self.protected_until_ms.is_some_and(|until| until > now)
    }
}

/// One instance as the engine sees it: its latest state and its server-side flags.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceRecord {
    /// Latest state, shared with the store that holds it (a snapshot of a large group copies
    /// no state; `Arc::make_mut` gives a private copy to change).
    pub state: Arc<InstanceState>,
    /// Flags (shutdown, confirmation, reconfigure, protection).
    pub flags: InstanceFlags,
}

impl InstanceRecord {
    /// Shutting down by any account: the sidecar, the component, a server shutdown flag, or a
    /// shutdown confirmation.
    pub fn is_shutting_down(&self) -> bool {
        self.state.is_shutting_down
            || self.state.shutdown_status
            || self.state.status.is_draining()
            || self.flags.shutdown_requested_ms.is_some()
            || self.flags.shutdown_confirmed_ms.is_some()
    }

    /// Still a launch placeholder.
    pub fn is_provisioning(&self) -> bool {
        self.state.status.provisioning
    }
}

/// An instance as a cloud lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudInstance {
    /// Cloud id (the id sidecars report as `instanceId`).
    pub instance_id: String,
    /// Display name in the cloud.
    pub display_name: String,
    /// The cloud's own status string (`RUNNING`, `Running`, `PROVISIONING`, …).
    pub cloud_status: CloudStatus,
    /// Creation time, when the cloud tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_ms: Option<UnixMillis>,
}

impl CloudInstance {
    /// Running or provisioning (case-insensitive), as the cloud guard and untracked count read it.
    pub fn is_running(&self) -> bool {
        self.cloud_status.is_running()
    }

    /// Terminated (case-insensitive).
    pub fn is_terminated(&self) -> bool {
        self.cloud_status.eq_ignore_ascii_case("terminated")
    }
}

/// A cloud's own status string, kept as the cloud wrote it, with whether it means running or
/// provisioning decided once when it is made: a decision pass asks that of every cloud instance
/// of every group, and the answer sits beside the text instead of behind it. Reads as a `str`;
/// made from a `String` or `&str` with `.into()`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub struct CloudStatus {
    text: Box<str>,
    running: bool,
}

impl CloudStatus {
    /// A status as the cloud wrote it.
    pub fn new(text: impl Into<Box<str>>) -> Self {
        let text = text.into();
        let running = &*text == "RUNNING"
            || text.eq_ignore_ascii_case("running")
            || text.eq_ignore_ascii_case("provisioning");
        Self { text, running }
    }

    /// `RUNNING` or `PROVISIONING`, in any case.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The text as the cloud wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::ops::Deref for CloudStatus {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for CloudStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for CloudStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<String> for CloudStatus {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

impl From<&str> for CloudStatus {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl Serialize for CloudStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl PartialEq<str> for CloudStatus {
    fn eq(&self, other: &str) -> bool {
        &*self.text == other
    }
}

impl PartialEq<&str> for CloudStatus {
    fn eq(&self, other: &&str) -> bool {
        &*self.text == *other
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing a component's stats object, leniently and without building a JSON tree.

/// The union of every stats shape a sidecar forwards (JVB, Jigasi, generic, Jibri, Nomad),
/// reading only the fields the engine uses. A field of an unexpected JSON type reads as absent
/// instead of failing the whole report.
#[derive(Debug, Default, Deserialize)]
pub struct ComponentStatsWire {
    #[serde(default)]
    stress_level: Lenient<f64>,
    #[serde(default)]
    participants: Lenient<f64>,
    #[serde(default)]
    connections: Lenient<f64>,
    #[serde(default, rename = "allocatedCPU")]
    allocated_cpu: Lenient<f64>,
    #[serde(default)]
    conferences: Lenient<f64>,
    #[serde(default)]
    graceful_shutdown: Lenient<bool>,
    #[serde(default)]
    shutting_down: Lenient<bool>,
    #[serde(default)]
    drain: Lenient<bool>,
    #[serde(default)]
    status: Lenient<JibriStatusWire>,
    #[serde(default, rename = "Gauges")]
    gauges: Lenient<Vec<NomadGauge>>,
}

#[derive(Debug, Deserialize)]
struct JibriStatusWire {
    #[serde(rename = "busyStatus")]
    busy_status: BusyStatus,
    #[serde(default)]
    health: Option<JibriHealthWire>,
}

#[derive(Debug, Deserialize)]
struct JibriHealthWire {
    #[serde(rename = "healthStatus", default = "unknown_health")]
    health_status: HealthStatus,
}

fn unknown_health() -> HealthStatus {
    HealthStatus::Unknown
}

#[derive(Debug, Deserialize)]
struct NomadGauge {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Value", default)]
    value: Lenient<f64>,
    #[serde(rename = "Labels", default)]
    labels: Option<std::collections::HashMap<String, String>>,
}

impl ComponentStatsWire {
    /// Parses a stats object; anything else (arrays, scalars, broken JSON) yields empty stats.
    pub fn parse(json: &str) -> Self {
        if !json.trim_start().starts_with('{') {
            return Self::default();
        }
        serde_json::from_str(json).unwrap_or_default()
    }

    /// The Jibri status, when the object carries one.
    pub fn jibri_status(&self) -> Option<JibriStatus> {
        let wire = self.status.0.as_ref()?;
        Some(JibriStatus {
            busy_status: wire.busy_status,
            health: JibriHealth {
                health_status: wire
                    .health
                    .as_ref()
                    .map_or(HealthStatus::Unknown, |h| h.health_status),
            },
        })
    }

    /// The stress stats, when the object carries a stress level or Nomad gauges.
    pub fn stress_stats(&self) -> Option<StressStats> {
        if let Some(gauges) = &self.gauges.0 {
            return Some(nomad_stats(gauges));
        }
        let stats = StressStats {
            stress_level: self.stress_level.0,
            participants: self.participants.0,
            connections: self.connections.0,
            allocated_cpu: self.allocated_cpu.0,
            conferences: self.conferences.0,
            graceful_shutdown: self.graceful_shutdown.0.unwrap_or(false)
                || self.shutting_down.0.unwrap_or(false),
            drain: self.drain.0.unwrap_or(false),
        };
        let empty = stats == StressStats::default();
        (!empty).then_some(stats)
    }
}

/// Nomad gauges → stress stats (R12: eligibility looked up across all gauges; zero total CPU
/// is zero stress).
fn nomad_stats(gauges: &[NomadGauge]) -> StressStats {
    let gauge = |name: &str| {
        gauges
            .iter()
            .find(|g| g.name == name)
            .and_then(|g| g.value.0)
            .unwrap_or(0.0)
    };
    let allocated = gauge("nomad.client.allocated.cpu");
    let unallocated = gauge("nomad.client.unallocated.cpu");
    let total = allocated + unallocated;
    let eligible = gauges
        .iter()
        .filter_map(|g| g.labels.as_ref()?.get("node_scheduling_eligibility"))
        .next()
        .is_none_or(|v| v == "eligible");
    StressStats {
        stress_level: Some(if total > 0.0 { allocated / total } else { 0.0 }),
        allocated_cpu: Some(allocated),
        graceful_shutdown: !eligible,
        ..StressStats::default()
    }
}

/// A value that deserialises to `None` instead of failing when the JSON has another type.
#[derive(Debug, Clone, PartialEq)]
pub struct Lenient<T>(pub Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de> Deserialize<'de> for Lenient<f64> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Lenient<f64>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Lenient(v.is_finite().then_some(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Lenient(Some(v as f64)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Lenient(Some(v as f64)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Lenient(
                    v.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
                ))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Lenient<bool> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Lenient<bool>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Lenient(Some(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Lenient(match v {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                }))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Structured values (`status`, `Gauges`): parsed when well-formed, absent otherwise.
macro_rules! lenient_structured {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for Lenient<$t> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = Box::<RawValue>::deserialize(d)?;
                Ok(Lenient(serde_json::from_str(raw.get()).ok()))
            }
        }
    };
}
lenient_structured!(JibriStatusWire);
lenient_structured!(Vec<NomadGauge>);

#[cfg(test)]
mod tests {
    use super::*;

    fn status(class: TypeClass, json: &str) -> InstanceStatus {
        InstanceStatus::from_stats(class, &ComponentStatsWire::parse(json))
    }

    #[test]
    fn types_parse_case_insensitively_and_keep_classes() {
        assert_eq!(InstanceType::parse("JVB"), Some(InstanceType::Jvb));
        assert_eq!(InstanceType::parse(" jvb "), Some(InstanceType::Jvb));
        assert_eq!(
            InstanceType::parse("Sip-Jibri"),
            Some(InstanceType::SipJibri)
        );
        assert_eq!(InstanceType::parse("videobridge"), None);
        assert_eq!(InstanceType::Availability.class(), TypeClass::Availability);
        assert_eq!(InstanceType::Jibri.class(), TypeClass::Availability);
        assert_eq!(InstanceType::Nomad.class(), TypeClass::Stress);
        assert_eq!(InstanceType::SeleniumGrid.class(), TypeClass::Stress);
    }

    #[test]
    fn jvb_stats_keep_what_the_engine_uses() {
        let s = status(
            TypeClass::Stress,
            r#"{"stress_level":0.12,"graceful_shutdown":false,"participants":3,"conferences":1,"largest_conference":3,"version":"2.3"}"#,
        );
        let stats = s.stats.expect("stats");
        assert_eq!(stats.stress_level, Some(0.12));
        assert_eq!(stats.participants, Some(3.0));
        assert_eq!(stats.conferences, Some(1.0));
        assert!(!stats.graceful_shutdown);
        assert!(!s.is_draining());
        assert_eq!(stats.load(), 3.0);
    }

    #[test]
    fn jvb_shutting_down_counts_as_graceful_shutdown() {
        let s = status(
            TypeClass::Stress,
            r#"{"stress_level":0.1,"shutting_down":true}"#,
        );
        assert!(s.is_draining());
        let s = status(
            TypeClass::Stress,
            r#"{"stress_level":0.1,"graceful_shutdown":true}"#,
        );
        assert!(s.is_draining());
    }

    #[test]
    fn fields_of_unexpected_types_read_as_absent() {
        let s = status(
            TypeClass::Stress,
            r#"{"stress_level":"0.5","participants":{"x":1},"graceful_shutdown":1,"drain":[true]}"#,
        );
        let stats = s.stats.expect("stats");
        assert_eq!(stats.stress_level, Some(0.5));
        assert_eq!(stats.participants, None);
        assert!(!stats.graceful_shutdown);
        assert!(!stats.drain);
    }

    #[test]
    fn empty_and_garbage_stats_give_no_status() {
        assert!(status(TypeClass::Stress, "{}").has_no_stats());
        assert!(status(TypeClass::Stress, "[1,2]").has_no_stats());
        assert!(status(TypeClass::Availability, "{}").has_no_stats());
        assert!(status(TypeClass::Availability, r#"{"status":"weird"}"#).has_no_stats());
    }

    #[test]
    fn jibri_health_and_webhook_bodies_give_the_status() {
        let polled = status(
            TypeClass::Availability,
            r#"{"status":{"busyStatus":"IDLE","health":{"healthStatus":"HEALTHY","details":{"JibriManager":{"healthStatus":"HEALTHY","detail":""}}}}}"#,
        );
        assert_eq!(
            polled.jibri_status,
            Some(JibriStatus::healthy(BusyStatus::Idle))
        );
        let hook = status(
            TypeClass::Availability,
            r#"{"jibriId":"jibri-1","status":{"busyStatus":"BUSY","health":{"healthStatus":"UNHEALTHY","details":{}}}}"#,
        );
        let js = hook.jibri_status.expect("jibri status");
        assert_eq!(js.busy_status, BusyStatus::Busy);
        assert_eq!(js.health.health_status, HealthStatus::Unhealthy);
        let odd = status(
            TypeClass::Availability,
            r#"{"status":{"busyStatus":"RESTING","health":{"healthStatus":"MEH"}}}"#,
        );
        let js = odd.jibri_status.expect("jibri status");
        assert_eq!(js.busy_status, BusyStatus::Unknown);
        assert_eq!(js.health.health_status, HealthStatus::Unknown);
    }

    #[test]
    fn nomad_gauges_convert_with_eligibility_from_any_gauge() {
        let s = status(
            TypeClass::Stress,
            r#"{"Gauges":[{"Name":"nomad.client.allocated.cpu","Value":1200,"Labels":{}},
                {"Name":"nomad.client.unallocated.cpu","Value":2800,"Labels":{"node_scheduling_eligibility":"ineligible"}}]}"#,
        );
        let stats = s.stats.expect("stats");
        assert_eq!(stats.stress_level, Some(0.3));
        assert_eq!(stats.allocated_cpu, Some(1200.0));
        assert!(stats.graceful_shutdown, "ineligible node drains");
        let zero = status(
            TypeClass::Stress,
            r#"{"Gauges":[{"Name":"nomad.client.allocated.cpu","Value":0},{"Name":"nomad.client.unallocated.cpu","Value":0}]}"#,
        );
        assert_eq!(zero.stats.expect("stats").stress_level, Some(0.0));
    }

    #[test]
    fn state_serialises_in_the_reference_shape() {
        let mut state = InstanceState::placeholder("i-1", "g", "JVB", 1_000, false);
        state.status.provisioning = false;
        state.status.stats = Some(StressStats {
            stress_level: Some(0.2),
            participants: Some(4.0),
            ..StressStats::default()
        });
        let json = serde_json::to_value(&state).expect("serialise");
        assert_eq!(json["status"]["stats"]["stress_level"], 0.2);
        assert_eq!(json["status"]["stats"]["graceful_shutdown"], false);
        assert_eq!(json["metadata"]["group"], "g");
        assert_eq!(json["isShuttingDown"], false);
        let back: InstanceState = serde_json::from_value(json).expect("deserialise");
        assert_eq!(back, state);
    }

    #[test]
    fn record_shutting_down_by_any_account() {
        let state = InstanceState::polled("i", "JVB", Metadata::default(), 0);
        let mut rec = InstanceRecord {
            state: state.into(),
            flags: InstanceFlags::default(),
        };
        assert!(!rec.is_shutting_down());
        rec.flags.shutdown_requested_ms = Some(5);
        assert!(rec.is_shutting_down());
        rec.flags = InstanceFlags {
            shutdown_confirmed_ms: Some(5),
            ..InstanceFlags::default()
        };
        assert!(rec.is_shutting_down());
        rec.flags = InstanceFlags::default();
        Arc::make_mut(&mut rec.state).shutdown_status = true;
        assert!(rec.is_shutting_down());
    }

    #[test]
    fn metadata_reads_fields_and_round_trips_verbatim() {
        let raw: Box<RawValue> =
            serde_json::from_str(r#"{"instanceId":"i-1","name":"n1","publicIp":"1.2.3.4","n":3}"#)
                .expect("raw");
        let m = Metadata::from_raw(raw);
        assert_eq!(m.get_str("name").as_deref(), Some("n1"));
        assert_eq!(m.get_str("n"), None);
        assert_eq!(m.get_str("missing"), None);
        assert_eq!(serde_json::to_string(&m).expect("json"), m.as_json());
    }

    #[test]
    fn cloud_statuses_know_running_and_keep_their_text() {
        for (text, running) in [
            ("RUNNING", true),
            ("Running", true),
            ("running", true),
            ("PROVISIONING", true),
            ("Provisioning", true),
            ("TERMINATED", false),
            ("Terminating", false),
            ("active", false),
            ("", false),
            ("RUNNING ", false),
        ] {
            let status = CloudStatus::from(text);
            assert_eq!(status.is_running(), running, "{text:?}");
            assert_eq!(CloudStatus::from(text.to_owned()).is_running(), running);
            assert_eq!(status, text);
            assert_eq!(status.as_str(), text);
            assert_eq!(format!("{status}"), text);
            assert_eq!(format!("{status:?}"), format!("{text:?}"));
            let json = serde_json::to_string(&status).expect("json");
            assert_eq!(json, serde_json::to_string(text).expect("json"));
            let back: CloudStatus = serde_json::from_str(&json).expect("back");
            assert_eq!(back, status);
            assert_eq!(back.is_running(), running);
        }
        let listed: CloudInstance = serde_json::from_str(
            r#"{"instanceId":"i-1","displayName":"d","cloudStatus":"Provisioning"}"#,
        )
        .expect("cloud instance");
        assert!(listed.is_running());
        assert_eq!(listed.cloud_status, "Provisioning");
    }
}
