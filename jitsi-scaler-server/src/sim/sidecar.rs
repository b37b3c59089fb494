//! The sidecar's side of the protocol (sidecar-protocol.md §2, §4): the instance details, the
//! cached stats report, the command answers and what they trigger. No I/O here.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

/// `InstanceDetails` as the sidecar sends it: the two ids first, then the metadata.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDetails {
    /// Cloud instance id.
    pub instance_id: String,
    /// Instance type, as configured.
    pub instance_type: String,
    /// Group name.
    pub group: String,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Cloud name.
    pub cloud: String,
    /// Region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Component version.
    pub version: String,
    /// Private address.
    pub private_ip: String,
}

/// A `StatsReport` (§2.2) as sent.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatsReport<'a> {
    instance: &'a InstanceDetails,
    stats: &'a Value,
    timestamp: i64,
    shutdown_status: bool,
    shutdown_error: bool,
    reconfigure_error: bool,
    reconfigure_complete: &'a str,
    stats_error: bool,
}

/// A report as built at a stats fetch, cached for the status polls until the next fetch.
#[derive(Clone, Debug, PartialEq)]
pub struct BuiltReport {
    /// The sidecar timestamp of the build (ms since the epoch).
    pub timestamp: i64,
    /// The JSON body.
    pub body: Bytes,
}

/// The server's command answer, read as the reference sidecar reads it: any truthy `shutdown`
/// is a shutdown, any non-empty `reconfigure` string a reconfigure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Command {
    /// Shut down.
    pub shutdown: bool,
    /// Reconfigure, with the date to echo once done.
    pub reconfigure: Option<String>,
}

impl Command {
    /// Parses a command answer; `None` if the body is not JSON.
    pub fn parse(body: &[u8]) -> Option<Command> {
        let value: Value = serde_json::from_slice(body).ok()?;
        let reconfigure = match value.get("reconfigure") {
            Some(Value::String(date)) if !date.is_empty() => Some(date.clone()),
            _ => None,
        };
        Some(Command {
            shutdown: value.get("shutdown").is_some_and(truthy),
            reconfigure,
        })
    }
}

/// JavaScript truthiness of a JSON value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0 && !x.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// What a command answer asks the simulation to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing new.
    None,
    /// Start the graceful shutdown.
    Shutdown,
    /// Start a reconfiguration for this date.
    Reconfigure(String),
}

/// The sidecar's state: its flags and the cached report.
#[derive(Debug)]
pub struct Sidecar {
    details: InstanceDetails,
    report: Option<BuiltReport>,
    shutdown_status: bool,
    reconfigure_complete: String,
    reconfiguring: Option<String>,
}

impl Sidecar {
    /// A sidecar that has built no report yet.
    pub fn new(details: InstanceDetails) -> Self {
        Self {
            details,
            report: None,
            shutdown_status: false,
            reconfigure_complete: String::new(),
            reconfiguring: None,
        }
    }

    /// Who the instance is.
    pub fn details(&self) -> &InstanceDetails {
        &self.details
    }

    /// The cached report, if one was built.
    pub fn report(&self) -> Option<&BuiltReport> {
        self.report.as_ref()
    }

    /// Acting on a shutdown.
    pub fn shutting_down(&self) -> bool {
        self.shutdown_status
    }

    /// Builds and caches the report of a stats fetch at `now_ms`. Timestamps strictly
    /// increase, so two builds are never mistaken for one.
    pub fn build_report(&mut self, stats: &Value, now_ms: i64) -> &BuiltReport {
        let timestamp = match &self.report {
            Some(last) if now_ms <= last.timestamp => last.timestamp + 1,
            _ => now_ms,
        };
        let report = StatsReport {
            instance: &self.details,
            stats,
            timestamp,
            shutdown_status: self.shutdown_status,
            shutdown_error: false,
            reconfigure_error: false,
            reconfigure_complete: &self.reconfigure_complete,
            stats_error: false,
        };
        // Serialising plain data into memory cannot fail; fall back to no body change anyway.
        let body = serde_json::to_vec(&report)
            .map(Bytes::from)
            .unwrap_or_default();
        self.report.insert(BuiltReport { timestamp, body })
    }

    /// Reacts to a command answer (§4.1): a shutdown wins over a reconfigure, and neither
    /// starts while one of its kind runs.
    pub fn on_command(&mut self, command: &Command) -> Action {
        if command.shutdown {
            if self.shutdown_status {
                return Action::None;
            }
            self.shutdown_status = true;
            return Action::Shutdown;
        }
        match &command.reconfigure {
            Some(date) if self.reconfiguring.is_none() => {
                self.reconfiguring = Some(date.clone());
                Action::Reconfigure(date.clone())
            }
            _ => Action::None,
        }
    }

    /// The running reconfiguration finished: later reports carry its exact date.
    pub fn reconfigure_done(&mut self) -> Option<&str> {
        let date = self.reconfiguring.take()?;
        self.reconfigure_complete = date;
        Some(&self.reconfigure_complete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn details() -> InstanceDetails {
        InstanceDetails {
            instance_id: "i-1".into(),
            instance_type: "JVB".into(),
            group: "g".into(),
            name: Some("g-abcde".into()),
            cloud: "local".into(),
            region: None,
            version: "v".into(),
            private_ip: "127.0.0.1".into(),
        }
    }

    fn body(report: &BuiltReport) -> Value {
        serde_json::from_slice(&report.body).expect("json")
    }

    #[test]
    fn reports_have_the_wire_shape_and_parse_on_the_server() {
        let mut s = Sidecar::new(details());
        let stats = json!({"stress_level": 0.2, "participants": 4});
        let built = s.build_report(&stats, 1_795_346_890_252).clone();
        let json = body(&built);
        assert_eq!(
            json,
            json!({"instance": {"instanceId": "i-1", "instanceType": "JVB", "group": "g",
                "name": "g-abcde", "cloud": "local", "version": "v", "privateIp": "127.0.0.1"},
              "stats": {"stress_level": 0.2, "participants": 4},
              "timestamp": 1_795_346_890_252_i64, "shutdownStatus": false, "shutdownError": false,
              "reconfigureError": false, "reconfigureComplete": "", "statsError": false})
        );
        let text = String::from_utf8(built.body.to_vec()).expect("utf8");
        assert!(text.starts_with(r#"{"instance":{"instanceId":"i-1","instanceType":"JVB""#));
        let parsed = jitsi_scaler_core::sidecar::parse_stats_report(&built.body).expect("parse");
        assert_eq!(parsed.instance.instance_id, "i-1");
        assert_eq!(parsed.timestamp, Some(1_795_346_890_252));
        assert_eq!(s.report(), Some(&built), "cached");
    }

    #[test]
    fn timestamps_strictly_increase() {
        let mut s = Sidecar::new(details());
        let stats = json!({});
        assert_eq!(s.build_report(&stats, 100).timestamp, 100);
        assert_eq!(s.build_report(&stats, 100).timestamp, 101);
        assert_eq!(s.build_report(&stats, 50).timestamp, 102, "clock went back");
        assert_eq!(s.build_report(&stats, 500).timestamp, 500);
    }

    #[test]
    fn commands_read_with_javascript_truthiness() {
        let parse = |s: &str| Command::parse(s.as_bytes());
        assert_eq!(
            parse(r#"{"shutdown":false,"reconfigure":null}"#),
            Some(Command::default())
        );
        assert_eq!(
            parse(r#"{"shutdown":false,"reconfigure":""}"#),
            Some(Command::default())
        );
        assert!(parse(r#"{"shutdown":true,"reconfigure":null}"#).is_some_and(|c| c.shutdown));
        assert!(parse(r#"{"shutdown":1}"#).is_some_and(|c| c.shutdown));
        assert!(parse(r#"{"shutdown":"yes"}"#).is_some_and(|c| c.shutdown));
        assert!(parse(r#"{"shutdown":0}"#).is_some_and(|c| !c.shutdown));
        assert!(parse(r#"{"shutdown":""}"#).is_some_and(|c| !c.shutdown));
        assert_eq!(
            parse(r#"{"shutdown":false,"reconfigure":"2026-03-18T18:00:00.000Z"}"#)
                .and_then(|c| c.reconfigure),
            Some("2026-03-18T18:00:00.000Z".to_owned())
        );
        assert_eq!(parse(r#"{"save":"OK"}"#), Some(Command::default()));
        assert_eq!(parse("<html>oops</html>"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn shutdown_wins_and_is_acted_on_once() {
        let mut s = Sidecar::new(details());
        let both = Command {
            shutdown: true,
            reconfigure: Some("d".into()),
        };
        assert_eq!(s.on_command(&both), Action::Shutdown);
        assert!(s.shutting_down());
        assert_eq!(s.on_command(&both), Action::None);
        let built = s.build_report(&json!({}), 1).clone();
        assert_eq!(body(&built)["shutdownStatus"], true);
    }

    #[test]
    fn reconfigure_echoes_the_exact_date_in_the_next_built_report() {
        let mut s = Sidecar::new(details());
        let date = "2026-03-18T18:00:00.000Z";
        let cmd = Command {
            shutdown: false,
            reconfigure: Some(date.into()),
        };
        s.build_report(&json!({}), 1);
        assert_eq!(s.on_command(&cmd), Action::Reconfigure(date.into()));
        assert_eq!(s.on_command(&cmd), Action::None, "one at a time");
        assert_eq!(s.reconfigure_done(), Some(date));
        assert_eq!(s.reconfigure_done(), None);
        let cached = s.report().map(body).expect("cached");
        assert_eq!(cached["reconfigureComplete"], "", "cached report unchanged");
        let next = body(&s.build_report(&json!({}), 2).clone());
        assert_eq!(next["reconfigureComplete"], date);
        let later = body(&s.build_report(&json!({}), 3).clone());
        assert_eq!(later["reconfigureComplete"], date, "sticky");
        assert_eq!(
            s.on_command(&cmd),
            Action::Reconfigure(date.into()),
            "a repeated date runs again, as the reference sidecar does"
        );
    }
}
