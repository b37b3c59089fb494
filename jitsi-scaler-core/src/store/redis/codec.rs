//! How values are written to and read from Redis: state parts, flags, samples, audit fields,
//! and the replies of the scripts.

use std::collections::HashMap;

use ::redis::Value;
use serde::de::DeserializeOwned;

use crate::audit::InstanceAuditKind;
use crate::clock::UnixMillis;
use crate::instance::{InstanceFlags, InstanceState, ReconfigureRequest};
use crate::metrics::{InstanceSamples, MetricSample};
use crate::store::StoreError;

/// A state split so the scripts can merge and compare it without a JSON parser: `core` is the
/// state's JSON without `timestamp`, `metadata` and `lastReconfigured`, which are kept apart
/// (the scripts reassemble the JSON by concatenation, keeping the metadata verbatim).
#[derive(Debug, Clone)]
pub(crate) struct StateParts {
    pub(crate) core: String,
    pub(crate) ts: String,
    pub(crate) meta: String,
    /// `lastReconfigured` as a JSON string, or empty.
    pub(crate) lrc: String,
    /// `reportTimestamp`, or empty.
    pub(crate) rts: String,
    /// Jibri busy status, or empty.
    pub(crate) busy: String,
    /// `shutdownStatus`, `1` or `0`.
    pub(crate) sds: &'static str,
    /// `isShuttingDown`, `1` or `0`.
    pub(crate) isd: &'static str,
}

impl StateParts {
    pub(crate) fn of(state: &InstanceState) -> Result<Self, StoreError> {
        let bad = |e: serde_json::Error| StoreError::Corrupt {
            key: format!("state of {}", state.instance_id),
            message: e.to_string(),
        };
        let mut value = serde_json::to_value(state).map_err(bad)?;
        if let Some(map) = value.as_object_mut() {
            map.remove("timestamp");
            map.remove("metadata");
            map.remove("lastReconfigured");
        }
        let core = serde_json::to_string(&value).map_err(bad)?;
        if !core.starts_with('{') || core.len() < 3 {
            return Err(StoreError::Corrupt {
                key: format!("state of {}", state.instance_id),
                message: "a state must serialise to a non-empty object".into(),
            });
        }
        let lrc = match &state.last_reconfigured {
            Some(l) => serde_json::to_string(l).map_err(bad)?,
            None => String::new(),
        };
        let busy = match state.status.jibri_status {
            Some(j) => serde_json::to_string(&j.busy_status).map_err(bad)?,
            None => String::new(),
        };
        Ok(Self {
            core,
            ts: state.timestamp.to_string(),
            meta: state.metadata.as_json().to_owned(),
            lrc,
            rts: state
                .report_timestamp
                .map(|t| t.to_string())
                .unwrap_or_default(),
            busy,
            sds: flag(state.shutdown_status),
            isd: flag(state.is_shutting_down),
        })
    }

    /// The arguments of one state, in the order the scripts read them.
    pub(crate) fn args(&self) -> [&str; 8] {
        [
            &self.core, &self.ts, &self.meta, &self.lrc, &self.rts, &self.busy, self.sds, self.isd,
        ]
    }
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// Field names of a flags hash.
pub(crate) mod flag_fields {
    pub(crate) const SHUTDOWN: &str = "shutdown";
    pub(crate) const SHUTDOWN_EXP: &str = "shutdownExp";
    pub(crate) const CONFIRMED: &str = "confirmed";
    pub(crate) const CONFIRMED_EXP: &str = "confirmedExp";
    pub(crate) const RECONF: &str = "reconf";
    pub(crate) const RECONF_EXP: &str = "reconfExp";
    pub(crate) const PROTECT: &str = "protect";
}

/// The live flags at `now` from a flags hash.
pub(crate) fn parse_flags(
    instance_id: &str,
    fields: &HashMap<String, String>,
    now: UnixMillis,
) -> Result<InstanceFlags, StoreError> {
    use flag_fields::*;
    let num = |name: &str| -> Result<Option<i64>, StoreError> {
        fields
            .get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| StoreError::Corrupt {
                    key: format!("flags of {instance_id}"),
                    message: format!("{name} is not a number"),
                })
            })
            .transpose()
    };
    let timed = |at: &str, exp: &str| -> Result<Option<i64>, StoreError> {
        Ok(match (num(at)?, num(exp)?) {
            (Some(at), Some(exp)) if exp > now => Some(at),
            _ => None,
        })
    };
    let reconfigure = match (fields.get(RECONF), num(RECONF_EXP)?) {
        (Some(json), Some(exp)) if exp > now => Some(json_value::<ReconfigureRequest>(
            &format!("flags of {instance_id}"),
            json,
        )?),
        _ => None,
    };
    Ok(InstanceFlags {
        shutdown_requested_ms: timed(SHUTDOWN, SHUTDOWN_EXP)?,
        shutdown_confirmed_ms: timed(CONFIRMED, CONFIRMED_EXP)?,
        reconfigure,
        protected_until_ms: num(PROTECT)?.filter(|t| *t > now),
    })
}

/// Parses stored JSON.
pub(crate) fn json_value<T: DeserializeOwned>(key: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

/// Serialises a value to store.
pub(crate) fn to_json<T: serde::Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
        key: what.to_owned(),
        message: e.to_string(),
    })
}

/// A sample's member in the samples ZSET: `<instance id>|<sequence, 20 digits>|<value>`
/// (the sequence keeps equal samples apart and in order).
pub(crate) fn sample_value(value: f64) -> String {
    // Display prints the shortest text that parses back to the same f64.
    value.to_string()
}

/// Groups `member, score, member, score, …` (ZRANGEBYSCORE … WITHSCORES) per instance,
/// oldest first, instances in the order of their first sample.
pub(crate) fn parse_samples(
    key: &str,
    flat: &[String],
) -> Result<Vec<InstanceSamples>, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        key: key.to_owned(),
        message,
    };
    let mut out: Vec<(String, Vec<MetricSample>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for pair in flat.chunks(2) {
        let [member, score] = pair else {
            return Err(corrupt("odd number of items".into()));
        };
        let mut parts = member.rsplitn(3, '|');
        let (Some(value), Some(_seq), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(corrupt(format!("bad sample {member:?}")));
        };
        let value: f64 = value
            .parse()
            .map_err(|_| corrupt(format!("bad sample value {member:?}")))?;
        let at_ms = score
            .parse::<f64>()
            .map_err(|_| corrupt(format!("bad sample time {score:?}")))?
            as UnixMillis;
        let slot = *index.entry(id.to_owned()).or_insert_with(|| {
            out.push((id.to_owned(), Vec::new()));
            out.len() - 1
        });
        out[slot].1.push(MetricSample { at_ms, value });
    }
    Ok(out
        .into_iter()
        .map(|(instance_id, samples)| InstanceSamples {
            instance_id: instance_id.into(),
            samples: samples.into(),
        })
        .collect())
}

/// Every instance audit kind, in the order the scripts list them.
pub(crate) const AUDIT_KINDS: [InstanceAuditKind; 8] = InstanceAuditKind::ALL;

/// The field name of a kind (its JSON name).
pub(crate) fn audit_kind_name(kind: InstanceAuditKind) -> &'static str {
    match kind {
        InstanceAuditKind::RequestToLaunch => "request-to-launch",
        InstanceAuditKind::LatestStatus => "latest-status",
        InstanceAuditKind::RequestToTerminate => "request-to-terminate",
        InstanceAuditKind::ConfirmationOfTermination => "confirmation-of-termination",
        InstanceAuditKind::RequestToReconfigure => "request-to-reconfigure",
        InstanceAuditKind::ReconfigureComplete => "reconfigure-complete",
        InstanceAuditKind::ServerTerminate => "server-terminate",
        InstanceAuditKind::ReconfigureDelivered => "reconfigure-delivered",
    }
}

// ---------------------------------------------------------------------------------------------
// Script replies.

/// A reply that is not what the script returns.
pub(crate) fn bad_reply(what: &str, value: &Value) -> StoreError {
    StoreError::Corrupt {
        key: format!("reply of {what}"),
        message: format!("unexpected reply {value:?}"),
    }
}

/// Text of a string or integer reply (`Nil` is empty).
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        Value::Nil => Some(String::new()),
        _ => None,
    }
}

/// Items of an array reply.
pub(crate) fn items(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(v) | Value::Set(v) => Some(v),
        Value::Nil => Some(&[]),
        _ => None,
    }
}

/// The texts of an array reply.
pub(crate) fn texts(what: &str, value: &Value) -> Result<Vec<String>, StoreError> {
    items(value)
        .ok_or_else(|| bad_reply(what, value))?
        .iter()
        .map(|v| text(v).ok_or_else(|| bad_reply(what, v)))
        .collect()
}

/// An array of `field, value, …` as a map.
pub(crate) fn pairs(what: &str, value: &Value) -> Result<HashMap<String, String>, StoreError> {
    if let Value::Map(entries) = value {
        return entries
            .iter()
            .map(|(k, v)| match (text(k), text(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(bad_reply(what, value)),
            })
            .collect();
    }
    let flat = texts(what, value)?;
    if flat.len() % 2 != 0 {
        return Err(bad_reply(what, value));
    }
    Ok(flat
        .chunks(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect())
}

/// An integer reply.
pub(crate) fn int(what: &str, value: &Value) -> Result<i64, StoreError> {
    text(value)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| bad_reply(what, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{BusyStatus, JibriStatus, Metadata};

    #[test]
    fn state_parts_leave_out_what_is_kept_apart() {
        let mut s = InstanceState::polled(
            "i-1",
            "jibri",
            Metadata::from_raw(
                serde_json::value::RawValue::from_string(r#"{"b":1,"a":[]}"#.into()).expect("raw"),
            ),
            1_000,
        );
        s.last_reconfigured = Some("2026-03-18T18:00:00.000Z".into());
        s.report_timestamp = Some(999);
        s.status.jibri_status = Some(JibriStatus::healthy(BusyStatus::Busy));
        s.shutdown_status = true;
        let p = StateParts::of(&s).expect("parts");
        assert!(!p.core.contains("timestamp\":1000"), "{}", p.core);
        assert!(!p.core.contains("metadata") && !p.core.contains("lastReconfigured"));
        assert_eq!(p.meta, r#"{"b":1,"a":[]}"#, "metadata verbatim");
        assert_eq!(p.lrc, "\"2026-03-18T18:00:00.000Z\"");
        assert_eq!((p.rts.as_str(), p.busy.as_str()), ("999", "\"BUSY\""));
        assert_eq!((p.sds, p.isd), ("1", "0"));
        // The scripts' reassembly gives the state back.
        let json = format!(
            "{{\"timestamp\":{},\"metadata\":{},\"lastReconfigured\":{},{}",
            p.ts,
            p.meta,
            p.lrc,
            &p.core[1..]
        );
        let back: InstanceState = serde_json::from_str(&json).expect("reassembled");
        assert_eq!(back, s);
        assert_eq!(back.metadata.as_json(), r#"{"b":1,"a":[]}"#);
    }

    #[test]
    fn samples_parse_per_instance_in_order() {
        let flat: Vec<String> = [
            ("a|00000000000000000001|0.5", "1000"),
            ("b|c|00000000000000000002|1", "1000"),
            ("a|00000000000000000003|0.30000000000000004", "2000"),
        ]
        .iter()
        .flat_map(|(m, s)| [(*m).to_owned(), (*s).to_owned()])
        .collect();
        let got = parse_samples("k", &flat).expect("parsed");
        assert_eq!(got.len(), 2);
        assert_eq!(&*got[0].instance_id, "a");
        assert_eq!(
            got[0].samples.as_slice(),
            [
                MetricSample {
                    at_ms: 1000,
                    value: 0.5
                },
                MetricSample {
                    at_ms: 2000,
                    value: 0.1 + 0.2
                }
            ]
        );
        assert_eq!(&*got[1].instance_id, "b|c");
        assert_eq!(sample_value(0.1 + 0.2), "0.30000000000000004");
        assert!(parse_samples("k", &["x".into(), "1".into()]).is_err());
    }

    #[test]
    fn audit_kind_names_are_the_json_names() {
        for kind in AUDIT_KINDS {
            assert_eq!(
                serde_json::to_value(kind).expect("json"),
                serde_json::Value::from(audit_kind_name(kind))
            );
        }
    }

    #[test]
    fn flags_expire_by_the_given_time() {
        let fields: HashMap<String, String> = [
            ("shutdown", "10"),
            ("shutdownExp", "100"),
            ("confirmed", "20"),
            ("confirmedExp", "50"),
            ("reconf", r#"{"date":"d","atMs":5}"#),
            ("reconfExp", "100"),
            ("protect", "60"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let f = parse_flags("i", &fields, 50).expect("flags");
        assert_eq!(f.shutdown_requested_ms, Some(10));
        assert_eq!(f.shutdown_confirmed_ms, None);
        assert_eq!(f.reconfigure.map(|r| r.at_ms), Some(5));
        assert_eq!(f.protected_until_ms, Some(60));
        assert!(parse_flags("i", &fields, 100).expect("flags").is_empty());
        let mut broken = fields.clone();
        broken.insert("protect".into(), "soon".into());
        assert!(matches!(
            parse_flags("i", &broken, 0),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
