//! The JSON of the HTTP plugin protocol (`docs/plugin-protocol.md`), shared by the client
//! ([`PluginProvider`](super::PluginProvider)) and by plugins written in Rust.

use std::time::Duration;

use jitsi_scaler_core::group::Group;
use jitsi_scaler_core::provider::{LaunchSlot, ProviderError};
use serde::{Deserialize, Serialize};

/// `POST {base}/launch`: launch one instance per slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchCall {
    /// The group, as jitsi-scaler stores it (`name`, `type`, `region`, … and any extra fields).
    pub group: Group,
    /// Id of the persisted launch intent (the same on a retried launch).
    pub intent_id: String,
    /// Instances of the group jitsi-scaler tracks now (a placement hint).
    pub current_count: usize,
    /// The instances to launch: display name and idempotency key each.
    pub slots: Vec<LaunchSlot>,
}

/// The answer to a launch: what was launched, and why the rest was not.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchReply {
    /// Launched instances (an empty list when none was).
    #[serde(default)]
    pub launched: Vec<LaunchedWire>,
    /// Why some or all slots were not launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorWire>,
}

/// One launched instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchedWire {
    /// Index into the call's `slots`.
    pub slot: usize,
    /// The cloud's id of the instance (what its sidecar reports as `instanceId`).
    pub instance_id: String,
    /// The instance's name in the cloud.
    pub display_name: String,
}

/// `GET {base}/instances?group=G&region=R[&pageToken=T]`: one page of a group's instances.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancePage {
    /// Instances of the group on this page.
    pub instances: Vec<InstanceWire>,
    /// Token of the next page; absent or null on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// An instance as a plugin lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceWire {
    /// Cloud id.
    pub instance_id: String,
    /// Name in the cloud.
    #[serde(default)]
    pub display_name: String,
    /// The cloud's status; `Running`/`Provisioning` (any case) count as live, `Terminated` as gone.
    pub cloud_status: String,
    /// Creation time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// An error body: `{"error": {...}}` on any non-2xx answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The error.
    pub error: ErrorWire,
}

/// An error and its class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorWire {
    /// What kind of failure, deciding whether and when jitsi-scaler retries.
    pub class: ErrorClass,
    /// Human-readable detail.
    pub message: String,
    /// With `throttled`: seconds to wait before the next call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_sec: Option<f64>,
}

/// Classes of [`ErrorWire`], those of [`ProviderError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Rate limited.
    Throttled,
    /// Worth retrying with back-off.
    Transient,
    /// No capacity now.
    Capacity,
    /// No such instance or resource.
    NotFound,
    /// Misconfigured: an operator must act.
    Config,
    /// The plugin cannot do this.
    Unsupported,
    /// Anything else.
    Fatal,
}

impl From<&ProviderError> for ErrorWire {
    fn from(error: &ProviderError) -> Self {
        let (class, message, retry_after_sec) = match error {
            ProviderError::Throttled {
                retry_after,
                message,
            } => (
                ErrorClass::Throttled,
                message.clone(),
                retry_after.map(|d| d.as_secs_f64()),
            ),
            ProviderError::Transient(m) => (ErrorClass::Transient, m.clone(), None),
            ProviderError::Capacity(m) => (ErrorClass::Capacity, m.clone(), None),
            ProviderError::NotFound(m) => (ErrorClass::NotFound, m.clone(), None),
            ProviderError::Config(m) => (ErrorClass::Config, m.clone(), None),
            ProviderError::Unsupported(m) => (ErrorClass::Unsupported, m.clone(), None),
            ProviderError::Fatal(m) => (ErrorClass::Fatal, m.clone(), None),
        };
        Self {
            class,
            message,
            retry_after_sec,
        }
    }
}

impl From<ErrorWire> for ProviderError {
    fn from(wire: ErrorWire) -> Self {
        let message = wire.message;
        match wire.class {
            ErrorClass::Throttled => ProviderError::Throttled {
                retry_after: wire
                    .retry_after_sec
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| Duration::from_secs_f64(s.min(86_400.0))),
                message,
            },
            ErrorClass::Transient => ProviderError::Transient(message),
            ErrorClass::Capacity => ProviderError::Capacity(message),
            ErrorClass::NotFound => ProviderError::NotFound(message),
            ErrorClass::Config => ProviderError::Config(message),
            ErrorClass::Unsupported => ProviderError::Unsupported(message),
            ErrorClass::Fatal => ProviderError::Fatal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip_through_the_wire() {
        let errors = [
            ProviderError::Throttled {
                retry_after: Some(Duration::from_secs(30)),
                message: "slow".into(),
            },
            ProviderError::Transient("t".into()),
            ProviderError::Capacity("c".into()),
            ProviderError::NotFound("n".into()),
            ProviderError::Config("x".into()),
            ProviderError::Unsupported("u".into()),
            ProviderError::Fatal("f".into()),
        ];
        for error in errors {
            let json = serde_json::to_string(&ErrorWire::from(&error)).expect("json");
            let back: ErrorWire = serde_json::from_str(&json).expect("parse");
            assert_eq!(ProviderError::from(back), error, "{json}");
        }
        let wire: ErrorWire =
            serde_json::from_str(r#"{"class":"not_found","message":"gone"}"#).expect("parse");
        assert_eq!(wire.class, ErrorClass::NotFound);
    }

    #[test]
    fn a_launch_reply_may_omit_everything() {
        let reply: LaunchReply = serde_json::from_str("{}").expect("parse");
        assert_eq!(reply, LaunchReply::default());
        let reply: LaunchReply = serde_json::from_str(
            r#"{"launched":[{"slot":0,"instanceId":"i-1","displayName":"g-abcde"}],
                "error":{"class":"throttled","message":"later","retryAfterSec":12}}"#,
        )
        .expect("parse");
        assert_eq!(reply.launched[0].instance_id, "i-1");
        assert_eq!(reply.error.map(|e| e.retry_after_sec), Some(Some(12.0)));
    }
}
