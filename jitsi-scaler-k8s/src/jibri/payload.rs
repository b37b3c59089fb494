//! Jibri's webhook bodies and health answers.
//!
//! Health event (`POST …/v1/status`) and health answer (`GET /jibri/api/v1.0/health`) share
//! the `status` object:
//! `{"jibriId":"jibri-abc","status":{"busyStatus":"BUSY","health":{"healthStatus":"HEALTHY","details":{}}}}`.
//! `jibriId`, `status.busyStatus` and `status.health.healthStatus` are required (the webhook
//! needs `jibriId`, the health answer does not carry it); other fields are ignored; a value
//! this version does not know reads as `Unknown`.

use jitsi_scaler_core::instance::{BusyStatus, HealthStatus};
use serde::Deserialize;

/// A parsed health event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    /// The Jibri's `jibri.id` (`""` by default).
    pub jibri_id: String,
    /// Busy status; `Unknown` for a value this version does not know.
    pub busy_status: BusyStatus,
    /// Overall health; `Unknown` for a value this version does not know.
    pub health_status: HealthStatus,
    /// `busyStatus` as sent, for logs.
    pub busy_status_raw: String,
}

#[derive(Deserialize)]
struct StatusEventWire {
    #[serde(rename = "jibriId")]
    jibri_id: String,
    status: StatusWire,
}

#[derive(Deserialize)]
struct HealthAnswerWire {
    status: StatusWire,
}

#[derive(Deserialize)]
struct StatusWire {
    #[serde(rename = "busyStatus")]
    busy_status: String,
    health: HealthWire,
}

#[derive(Deserialize)]
struct HealthWire {
    #[serde(rename = "healthStatus")]
    health_status: String,
}

fn busy(raw: &str) -> BusyStatus {
    match raw {
        "IDLE" => BusyStatus::Idle,
        "BUSY" => BusyStatus::Busy,
        "EXPIRED" => BusyStatus::Expired,
        _ => BusyStatus::Unknown,
    }
}

fn health(raw: &str) -> HealthStatus {
    match raw {
        "HEALTHY" => HealthStatus::Healthy,
        "UNHEALTHY" => HealthStatus::Unhealthy,
        _ => HealthStatus::Unknown,
    }
}

/// Parses a health event; the error says what is malformed or missing.
pub fn parse_status_event(body: &[u8]) -> Result<StatusEvent, String> {
    let wire: StatusEventWire = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(StatusEvent {
        jibri_id: wire.jibri_id,
        busy_status: busy(&wire.status.busy_status),
        health_status: health(&wire.status.health.health_status),
        busy_status_raw: wire.status.busy_status,
    })
}

/// Parses the answer of Jibri's health endpoint into its busy status.
pub fn parse_health_answer(body: &[u8]) -> Result<(BusyStatus, HealthStatus), String> {
    let wire: HealthAnswerWire = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok((
        busy(&wire.status.busy_status),
        health(&wire.status.health.health_status),
    ))
}

/// What a session event tells, for logs (`{"jibriId":…,"session":{"sessionId":…,"status":…}}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct SessionEvent {
    /// The Jibri's id.
    #[serde(rename = "jibriId", default)]
    pub jibri_id: Option<String>,
    /// The session.
    #[serde(default)]
    pub session: Option<SessionInfo>,
}

/// The session of a [`SessionEvent`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct SessionInfo {
    /// Session id.
    #[serde(rename = "sessionId", default)]
    pub session_id: Option<String>,
    /// `ON`, `OFF`, `PENDING` or `UNDEFINED`.
    #[serde(default)]
    pub status: Option<String>,
    /// Whether a failed session should be retried.
    #[serde(rename = "shouldRetry", default)]
    pub should_retry: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jibri_bodies_parse() {
        let e = parse_status_event(br#"{"jibriId":"jibri_id","status":{"busyStatus":"IDLE","health":{"healthStatus":"HEALTHY","details":{}}}}"#).expect("idle");
        assert_eq!(
            (e.jibri_id.as_str(), e.busy_status, e.health_status),
            ("jibri_id", BusyStatus::Idle, HealthStatus::Healthy)
        );
        let e = parse_status_event(br#"{"status":{"health":{"details":{"JibriManager":{"healthStatus":"HEALTHY","detail":""}},"healthStatus":"UNHEALTHY"},"busyStatus":"BUSY"},"jibriId":"jibri-abc"}"#).expect("any order");
        assert_eq!(
            (e.busy_status, e.health_status),
            (BusyStatus::Busy, HealthStatus::Unhealthy)
        );
        let minimal = parse_status_event(br#"{"jibriId":"jibri-abc","status":{"busyStatus":"EXPIRED","health":{"healthStatus":"HEALTHY"}}}"#).expect("minimal");
        assert_eq!(minimal.busy_status, BusyStatus::Expired);
        let future = parse_status_event(
            br#"{"jibriId":"j","status":{"busyStatus":"RESTING","health":{"healthStatus":"MEH"}}}"#,
        )
        .expect("unknown values");
        assert_eq!(
            (future.busy_status, future.health_status),
            (BusyStatus::Unknown, HealthStatus::Unknown)
        );
        assert_eq!(future.busy_status_raw, "RESTING");
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for bad in [
            &b"not json"[..],
            br#"{"status":{"busyStatus":"BUSY","health":{"healthStatus":"HEALTHY"}}}"#,
            br#"{"jibriId":"j","status":{"health":{"healthStatus":"HEALTHY"}}}"#,
            br#"{"jibriId":"j","status":{"busyStatus":"BUSY"}}"#,
            br#"{"jibriId":null,"status":{"busyStatus":"BUSY","health":{"healthStatus":"HEALTHY"}}}"#,
            br#"{"jibriId":"j","status":{"busyStatus":1,"health":{"healthStatus":"HEALTHY"}}}"#,
            b"",
        ] {
            assert!(parse_status_event(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn health_answers_parse() {
        let (b, _) = parse_health_answer(br#"{"status":{"busyStatus":"BUSY","health":{"healthStatus":"HEALTHY","details":{}}},"environmentContext":{"name":"meet.jit.si"}}"#).expect("busy");
        assert_eq!(b, BusyStatus::Busy);
        assert!(parse_health_answer(b"<html>").is_err());
    }

    #[test]
    fn session_events_parse_leniently() {
        let e: SessionEvent = serde_json::from_slice(br#"{"jibriId":"jibri-abc","session":{"sessionId":"RecordTest","status":"OFF","sipAddress":null,"failure":{"reason":"ERROR","error":{"scope":"SESSION","detail":"x"}},"shouldRetry":true}}"#).expect("session");
        let s = e.session.expect("session");
        assert_eq!(s.session_id.as_deref(), Some("RecordTest"));
        assert_eq!(s.should_retry, Some(true));
    }
}
