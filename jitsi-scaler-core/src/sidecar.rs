//! The sidecar protocol's wire types (sidecar-protocol.md §2) and what a report becomes:
//! an [`InstanceState`] and, maybe, a metric sample.
//!
//! Parsing is lenient where the reference is (missing or odd optional fields), strict where a
//! request cannot be served (malformed JSON, no instance id), and never builds a JSON tree of
//! the component's stats.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::clock::{UnixMillis, parse_iso8601};
use crate::instance::{
    BusyStatus, ComponentStatsWire, HealthStatus, InstanceState, InstanceStatus, InstanceType,
    Metadata, TypeClass,
};

/// Group name of reports that name none (the reference's default).
pub const DEFAULT_GROUP: &str = "default";

/// Why a sidecar request body cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not JSON, or not the expected shape.
    #[error("malformed JSON body: {0}")]
    Malformed(String),
    /// The instance id is missing or empty.
    #[error("missing required field {0}")]
    MissingField(&'static str),
}

/// `InstanceDetails`: who the instance is. The whole object is kept verbatim as metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceDetails {
    /// Cloud instance id.
    pub instance_id: String,
    /// Type as sent (original spelling; empty when absent).
    pub instance_type: String,
    /// Group, when sent.
    pub group: Option<String>,
    /// The object, verbatim.
    pub metadata: Metadata,
}

impl InstanceDetails {
    /// The group the instance is filed under (`default` when absent or empty).
    pub fn group_name(&self) -> &str {
        self.group
            .as_deref()
            .filter(|g| !g.is_empty())
            .unwrap_or(DEFAULT_GROUP)
    }
}

/// An id may arrive as a string or (from odd clients) a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdWire {
    Text(String),
    Number(serde_json::Number),
    Other(serde::de::IgnoredAny),
}

impl IdWire {
    fn into_string(self) -> Option<String> {
        match self {
            IdWire::Text(s) => Some(s),
            IdWire::Number(n) => Some(n.to_string()),
            IdWire::Other(_) => None,
        }
    }
}

#[derive(Deserialize)]
struct DetailsWire {
    #[serde(rename = "instanceId")]
    instance_id: Option<IdWire>,
    #[serde(rename = "instanceType", default)]
    instance_type: Option<IdWire>,
    #[serde(default)]
    group: Option<IdWire>,
}

fn details_from_raw(raw: Box<RawValue>, field: &'static str) -> Result<InstanceDetails, WireError> {
    if !raw.get().trim_start().starts_with('{') {
        return Err(WireError::Malformed(format!("{field} must be an object")));
    }
    let wire: DetailsWire =
        serde_json::from_str(raw.get()).map_err(|e| WireError::Malformed(e.to_string()))?;
    let instance_id = wire
        .instance_id
        .and_then(IdWire::into_string)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or(WireError::MissingField(field))?;
    Ok(InstanceDetails {
        instance_id,
        instance_type: wire
            .instance_type
            .and_then(IdWire::into_string)
            .unwrap_or_default(),
        group: wire.group.and_then(IdWire::into_string),
        metadata: Metadata::from_raw(raw),
    })
}

/// Parses the body of `/sidecar/poll` and `/sidecar/shutdown`.
pub fn parse_instance_details(body: &[u8]) -> Result<InstanceDetails, WireError> {
    let raw: Box<RawValue> =
        serde_json::from_slice(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    details_from_raw(raw, "instanceId")
}

/// A `StatsReport` (`/sidecar/status`, `/sidecar/stats`).
#[derive(Debug)]
pub struct StatsReport {
    /// Who reports.
    pub instance: InstanceDetails,
    /// The component's stats, reduced to what is used.
    pub stats: ComponentStatsWire,
    /// `stats` was an empty object or not an object.
    pub stats_empty: bool,
    /// The sidecar's report time (absent when missing, zero or not a number).
    pub timestamp: Option<UnixMillis>,
    /// The sidecar is acting on a shutdown.
    pub shutdown_status: bool,
    /// The last shutdown attempt failed.
    pub shutdown_error: bool,
    /// The last reconfiguration failed.
    pub reconfigure_error: bool,
    /// The date of the last completed reconfiguration (`""` when none).
    pub reconfigure_complete: String,
    /// The sidecar could not read its component's stats.
    pub stats_error: bool,
}

#[derive(Deserialize)]
struct ReportWire<'a> {
    instance: Option<Box<RawValue>>,
    /// Borrowed from the body: read once more by the lenient stats parser, never kept.
    #[serde(default, borrow)]
    stats: Option<&'a RawValue>,
    #[serde(default)]
    timestamp: crate::instance::Lenient<f64>,
    #[serde(default, rename = "shutdownStatus")]
    shutdown_status: crate::instance::Lenient<bool>,
    #[serde(default, rename = "shutdownError")]
    shutdown_error: crate::instance::Lenient<bool>,
    #[serde(default, rename = "reconfigureError")]
    reconfigure_error: crate::instance::Lenient<bool>,
    #[serde(default, rename = "reconfigureComplete")]
    reconfigure_complete: Option<IdWire>,
    #[serde(default, rename = "statsError")]
    stats_error: crate::instance::Lenient<bool>,
}

/// Parses a `StatsReport` body.
pub fn parse_stats_report(body: &[u8]) -> Result<StatsReport, WireError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let reason = match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Err(e) => e.to_string(),
            Ok(_) => "body must be a JSON object".to_owned(),
        };
        return Err(WireError::Malformed(reason));
    }
    let wire: ReportWire =
        serde_json::from_slice(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    let instance = details_from_raw(
        wire.instance
            .ok_or(WireError::MissingField("instance.instanceId"))?,
        "instance.instanceId",
    )?;
    let (stats, stats_empty) = match wire.stats {
        Some(raw) => {
            let parsed = ComponentStatsWire::parse(raw.get());
            let text = raw.get().trim();
            let empty = !text.starts_with('{') || text.trim_start_matches('{').trim() == "}";
            (parsed, empty)
        }
        None => (ComponentStatsWire::default(), true),
    };
    Ok(StatsReport {
        instance,
        stats,
        stats_empty,
        timestamp: wire.timestamp.0.filter(|t| *t > 0.0).map(|t| t as i64),
        shutdown_status: wire.shutdown_status.0.unwrap_or(false),
        shutdown_error: wire.shutdown_error.0.unwrap_or(false),
        reconfigure_error: wire.reconfigure_error.0.unwrap_or(false),
        reconfigure_complete: wire
            .reconfigure_complete
            .and_then(IdWire::into_string)
            .unwrap_or_default(),
        stats_error: wire.stats_error.0.unwrap_or(false),
    })
}

/// The command answer of `/sidecar/poll` and `/sidecar/status`: exactly these two keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarResponse {
    /// Shut the instance down.
    pub shutdown: bool,
    /// Pending reconfiguration date; `""` when a report just completed it; `null` when none.
    pub reconfigure: Option<String>,
}

/// The type class a report is read with: the group's type wins over the instance's (R2).
/// `None` for an unknown type: the state is stored without stats and yields no sample.
pub fn report_class(group_type: Option<InstanceType>, instance_type: &str) -> Option<TypeClass> {
    group_type
        .or_else(|| InstanceType::parse(instance_type))
        .map(InstanceType::class)
}

/// What a report says of an instance (§8.2), with the server's receive time.
pub fn state_from_report(
    report: &StatsReport,
    class: Option<TypeClass>,
    received_at: UnixMillis,
) -> InstanceState {
    let status = match class {
        Some(class) if !report.stats_empty && !report.stats_error => {
            InstanceStatus::from_stats(class, &report.stats)
        }
        _ => InstanceStatus::default(),
    };
    let is_shutting_down = report.shutdown_status || status.is_draining();
    InstanceState {
        instance_id: report.instance.instance_id.clone(),
        instance_type: report.instance.instance_type.clone(),
        metadata: report.instance.metadata.clone(),
        status,
        timestamp: received_at,
        report_timestamp: Some(report.timestamp.unwrap_or(received_at)),
        reported_at: Some(received_at),
        shutdown_status: report.shutdown_status,
        shutdown_error: report.shutdown_error,
        reconfigure_error: report.reconfigure_error,
        stats_error: report.stats_error,
        is_shutting_down,
        last_reconfigured: Some(report.reconfigure_complete.clone()).filter(|s| !s.is_empty()),
        dry_run: false,
    }
}

/// The instant of a report's `reconfigureComplete`, when it is a date.
pub fn reconfigure_complete_ms(report: &StatsReport) -> Option<UnixMillis> {
    Some(report.reconfigure_complete.as_str())
        .filter(|s| !s.is_empty())
        .and_then(parse_iso8601)
}

/// The metric sample a state yields (§8.1): availability types 1 per idle (and, unless
/// `count_unhealthy`, healthy) Jibri, else 0; stress types their `stress_level`, or none.
pub fn sample_of(
    state: &InstanceState,
    class: Option<TypeClass>,
    count_unhealthy: bool,
) -> Option<f64> {
    match class? {
        TypeClass::Availability => {
            let idle = state.status.jibri_status.is_some_and(|j| {
                j.busy_status == BusyStatus::Idle
                    && (count_unhealthy || j.health.health_status != HealthStatus::Unhealthy)
            });
            Some(if idle { 1.0 } else { 0.0 })
        }
        TypeClass::Stress => state.status.stats.and_then(|s| s.stress_level),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = 1_795_346_900_000;

    const JIBRI: &str = r#"{"instance":{"instanceId":"i-test","instanceType":"jibri","group":"g1","region":"us-east-1","cloud":"oracle","privateIp":"127.0.0.1"},
 "stats":{"status":{"busyStatus":"IDLE","health":{"healthStatus":"HEALTHY","details":{"JibriManager":{"healthStatus":"HEALTHY","detail":""}}}}},
 "timestamp":1795346890252,"shutdownStatus":false,"shutdownError":false,"reconfigureError":false,"reconfigureComplete":"","statsError":false}"#;

    const HOOK: &str = r#"{"instance":{"instanceId":"i-test","instanceType":"jibri","group":"g1"},
 "stats":{"jibriId":"jibri-1","status":{"busyStatus":"BUSY","health":{"healthStatus":"HEALTHY","details":{}}}},
 "timestamp":1795346892983,"shutdownStatus":false,"shutdownError":false,"reconfigureError":false,"reconfigureComplete":"2026-01-01T00:00:00.000Z","statsError":false}"#;

    const JVB: &str = r#"{"instance":{"instanceId":"i-1","instanceType":"JVB","group":"g","name":"bridge-1"},
 "stats":{"stress_level":0.12,"graceful_shutdown":false,"participants":3,"conferences":1,"largest_conference":3},
 "timestamp":1795346890252,"shutdownStatus":false,"shutdownError":false,"reconfigureError":false,"reconfigureComplete":"","statsError":false}"#;

    #[test]
    fn the_reference_payloads_parse() {
        let r = parse_stats_report(JIBRI.as_bytes()).expect("jibri");
        assert_eq!(r.instance.instance_id, "i-test");
        assert_eq!(r.instance.group_name(), "g1");
        assert_eq!(r.timestamp, Some(1_795_346_890_252));
        let class = report_class(None, &r.instance.instance_type);
        let state = state_from_report(&r, class, NOW);
        assert_eq!(state.timestamp, NOW, "server time, not the sidecar's");
        assert_eq!(state.report_timestamp, Some(1_795_346_890_252));
        assert_eq!(sample_of(&state, class, false), Some(1.0));
        assert_eq!(
            state.metadata.get_str("privateIp").as_deref(),
            Some("127.0.0.1")
        );

        let hook = parse_stats_report(HOOK.as_bytes()).expect("hook");
        let state = state_from_report(&hook, class, NOW);
        assert_eq!(sample_of(&state, class, false), Some(0.0));
        assert_eq!(
            state.last_reconfigured.as_deref(),
            Some("2026-01-01T00:00:00.000Z")
        );
        assert_eq!(
            reconfigure_complete_ms(&hook),
            parse_iso8601("2026-01-01T00:00:00.000Z")
        );

        let jvb = parse_stats_report(JVB.as_bytes()).expect("jvb");
        let class = report_class(None, "JVB");
        let state = state_from_report(&jvb, class, NOW);
        assert_eq!(sample_of(&state, class, false), Some(0.12));
        assert!(!state.is_shutting_down);
    }

    #[test]
    fn the_group_type_wins_and_unknown_types_yield_no_sample() {
        assert_eq!(
            report_class(Some(InstanceType::Jvb), "jibri"),
            Some(TypeClass::Stress)
        );
        assert_eq!(report_class(None, "jvb"), Some(TypeClass::Stress));
        assert_eq!(
            report_class(None, "availability"),
            Some(TypeClass::Availability)
        );
        assert_eq!(report_class(None, "toaster"), None);
        let r = parse_stats_report(JVB.as_bytes()).expect("jvb");
        let state = state_from_report(&r, None, NOW);
        assert!(state.status.has_no_stats());
        assert_eq!(sample_of(&state, None, false), None);
    }

    #[test]
    fn failed_stats_give_no_status_and_jibri_zero() {
        let body = r#"{"instance":{"instanceId":"i","instanceType":"jibri"},"stats":{},"timestamp":0,"shutdownStatus":false,"statsError":true}"#;
        let r = parse_stats_report(body.as_bytes()).expect("parse");
        assert!(r.stats_empty && r.stats_error);
        assert_eq!(r.timestamp, None, "0 is no timestamp");
        assert_eq!(r.instance.group_name(), DEFAULT_GROUP);
        let class = report_class(None, "jibri");
        let state = state_from_report(&r, class, NOW);
        assert!(state.status.has_no_stats());
        assert_eq!(state.report_timestamp, Some(NOW));
        assert_eq!(sample_of(&state, class, false), Some(0.0));
    }

    #[test]
    fn draining_is_shutting_down_and_unhealthy_idle_is_not_available() {
        let body = JVB.replace("\"graceful_shutdown\":false", "\"graceful_shutdown\":true");
        let r = parse_stats_report(body.as_bytes()).expect("parse");
        assert!(state_from_report(&r, Some(TypeClass::Stress), NOW).is_shutting_down);
        let sick = JIBRI.replace(
            "\"healthStatus\":\"HEALTHY\",\"details\":{\"JibriManager\"",
            "\"healthStatus\":\"UNHEALTHY\",\"details\":{\"JibriManager\"",
        );
        let r = parse_stats_report(sick.as_bytes()).expect("parse");
        let state = state_from_report(&r, Some(TypeClass::Availability), NOW);
        assert_eq!(
            sample_of(&state, Some(TypeClass::Availability), false),
            Some(0.0)
        );
        assert_eq!(
            sample_of(&state, Some(TypeClass::Availability), true),
            Some(1.0)
        );
    }

    #[test]
    fn bad_bodies_are_errors_with_a_reason() {
        assert!(matches!(
            parse_stats_report(b"{\"instance\":"),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            parse_stats_report(b""),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            parse_stats_report(b"[1]"),
            Err(WireError::Malformed(_))
        ));
        assert_eq!(
            parse_stats_report(b"{\"stats\":{}}").err(),
            Some(WireError::MissingField("instance.instanceId"))
        );
        assert_eq!(
            parse_stats_report(b"{\"instance\":{\"instanceId\":\"  \"}}").err(),
            Some(WireError::MissingField("instance.instanceId"))
        );
        assert!(matches!(
            parse_stats_report(b"{\"instance\":\"i-1\"}"),
            Err(WireError::Malformed(_))
        ));
        assert_eq!(
            parse_instance_details(b"{}").err(),
            Some(WireError::MissingField("instanceId"))
        );
        assert!(matches!(
            parse_instance_details(b"nope"),
            Err(WireError::Malformed(_))
        ));
        let d = parse_instance_details(
            br#"{"instanceId":12345,"instanceType":"JVB","group":"g","extra":{"a":1}}"#,
        )
        .expect("numeric id");
        assert_eq!(d.instance_id, "12345");
        assert_eq!(
            d.metadata.as_json(),
            r#"{"instanceId":12345,"instanceType":"JVB","group":"g","extra":{"a":1}}"#
        );
        // Odd optional fields do not fail the report.
        let odd = r#"{"instance":{"instanceId":"i","instanceType":7},"stats":"x","timestamp":"soon","shutdownStatus":"yes","reconfigureComplete":null}"#;
        let r = parse_stats_report(odd.as_bytes()).expect("lenient");
        assert!(r.stats_empty);
        assert_eq!(r.timestamp, None);
        assert!(!r.shutdown_status);
        assert_eq!(r.instance.instance_type, "7");
    }

    #[test]
    fn responses_have_exactly_the_two_keys() {
        let none = SidecarResponse {
            shutdown: false,
            reconfigure: None,
        };
        assert_eq!(
            serde_json::to_string(&none).expect("json"),
            r#"{"shutdown":false,"reconfigure":null}"#
        );
        let ack = SidecarResponse {
            shutdown: false,
            reconfigure: Some(String::new()),
        };
        assert_eq!(
            serde_json::to_string(&ack).expect("json"),
            r#"{"shutdown":false,"reconfigure":""}"#
        );
    }
}
