//! The per-group settings of locally simulated instances: the group JSON's `"local"` section.

use std::path::PathBuf;
use std::time::Duration;

use jitsi_scaler_core::group::Group;
use serde::{Deserialize, Serialize};

use crate::sim::duration::format_duration;
use crate::sim::{LoadProfile, env};

/// The `"local"` section of a group: how its simulated instances behave. Every field is
/// optional; an absent one keeps the `sim-instance` default. Example:
///
/// ```json
/// "local": {"load": "ramp:0.1:0.9:300", "loadFile": "/tmp/jvb-load", "statsIntervalSec": 5,
///           "pollIntervalSec": 5, "timeScale": 10, "drainSec": 30, "seed": 42}
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalSettings {
    /// Load profile (`const:0.3`, `ramp:0.1:0.9:300`, `steps:…`, `sine:…`, `file:PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<String>,
    /// Load of the whole group in instance units (a profile, e.g. `steps:0.5@0,4@60,0.5@240`):
    /// each live instance gets its share, so more instances means less load each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_load: Option<String>,
    /// Shared load file: one number, re-read at every stats build, overriding the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_file: Option<PathBuf>,
    /// Stats build period in seconds (fractions allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_interval_sec: Option<f64>,
    /// Command poll period in seconds (fractions allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_sec: Option<f64>,
    /// Speed of the simulated clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_scale: Option<f64>,
    /// Drain length in simulated seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_sec: Option<f64>,
    /// Reconfiguration length in simulated seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconfigure_sec: Option<f64>,
    /// Jibri recording slot length in simulated seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jibri_session_sec: Option<f64>,
    /// Jibri single-use mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_use: Option<bool>,
    /// Noise amplitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<f64>,
    /// Seed (combined with each instance id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Report stats (`/sidecar/status`) rather than only polling (`/sidecar/poll`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_stats: Option<bool>,
}

impl LocalSettings {
    /// The group's settings (defaults when the section is absent), checked.
    pub fn of(group: &Group) -> Result<Self, String> {
        let settings = group
            .extension::<LocalSettings>("local")
            .map_err(|e| format!("invalid \"local\" section: {e}"))?
            .unwrap_or_default();
        settings.check()?;
        Ok(settings)
    }

    /// Checks values the instances would refuse.
    pub fn check(&self) -> Result<(), String> {
        if let Some(load) = &self.load {
            load.parse::<LoadProfile>().map_err(|e| e.to_string())?;
        }
        if let Some(load) = &self.fleet_load {
            load.parse::<LoadProfile>()
                .map_err(|e| format!("fleetLoad: {e}"))?;
        }
        let positive = [
            ("statsIntervalSec", self.stats_interval_sec),
            ("pollIntervalSec", self.poll_interval_sec),
            ("timeScale", self.time_scale),
            ("jibriSessionSec", self.jibri_session_sec),
        ];
        for (name, value) in positive {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.001)
            {
                return Err(format!("{name} must be at least 0.001, not {v}"));
            }
        }
        let non_negative = [
            ("drainSec", self.drain_sec),
            ("reconfigureSec", self.reconfigure_sec),
            ("noise", self.noise),
        ];
        for (name, value) in non_negative {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!("{name} must be 0 or more, not {v}"));
            }
        }
        Ok(())
    }

    /// The `sim-instance` environment variables carrying these settings.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        let secs =
            |v: f64| Duration::try_from_secs_f64(v).map_or_else(|_| v.to_string(), format_duration);
        let mut vars = Vec::new();
        let mut set = |name, value: Option<String>| {
            if let Some(value) = value {
                vars.push((name, value));
            }
        };
        set(env::LOAD, self.load.clone());
        set(
            env::LOAD_FILE,
            self.load_file.as_ref().map(|p| p.display().to_string()),
        );
        set(env::STATS_INTERVAL, self.stats_interval_sec.map(secs));
        set(env::POLL_INTERVAL, self.poll_interval_sec.map(secs));
        set(env::TIME_SCALE, self.time_scale.map(|v| v.to_string()));
        set(env::DRAIN_DURATION, self.drain_sec.map(secs));
        set(env::RECONFIGURE_DURATION, self.reconfigure_sec.map(secs));
        set(env::JIBRI_SESSION, self.jibri_session_sec.map(secs));
        set(env::SINGLE_USE, self.single_use.map(|v| v.to_string()));
        set(env::NOISE, self.noise.map(|v| v.to_string()));
        set(env::SEED, self.seed.map(|v| v.to_string()));
        set(env::REPORT_STATS, self.report_stats.map(|v| v.to_string()));
        vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::parse_duration;
    use jitsi_scaler_core::group::ScalingOptions;

    fn group(local: Option<serde_json::Value>) -> Group {
        let mut json = serde_json::json!({
            "name": "g", "type": "JVB", "cloud": "local",
            "scalingOptions": serde_json::to_value(ScalingOptions::with_bounds(1, 1, 3)).expect("json"),
        });
        if let Some(local) = local {
            json["local"] = local;
        }
        serde_json::from_value(json).expect("group")
    }

    #[test]
    fn absent_section_means_defaults() {
        assert_eq!(
            LocalSettings::of(&group(None)),
            Ok(LocalSettings::default())
        );
        assert!(LocalSettings::default().env_vars().is_empty());
    }

    #[test]
    fn settings_become_sim_environment_variables() {
        let settings = LocalSettings::of(&group(Some(serde_json::json!({
            "load": "ramp:0.1:0.9:300", "loadFile": "/tmp/load", "statsIntervalSec": 0.05,
            "pollIntervalSec": 2, "timeScale": 10, "drainSec": 30, "reconfigureSec": 0.5,
            "jibriSessionSec": 60, "singleUse": true, "noise": 0, "seed": 42, "reportStats": false
        }))))
        .expect("valid");
        let vars: std::collections::BTreeMap<_, _> = settings.env_vars().into_iter().collect();
        assert_eq!(vars[env::LOAD], "ramp:0.1:0.9:300");
        assert_eq!(vars[env::LOAD_FILE], "/tmp/load");
        assert_eq!(
            parse_duration(&vars[env::STATS_INTERVAL]),
            Ok(Duration::from_millis(50))
        );
        assert_eq!(
            parse_duration(&vars[env::POLL_INTERVAL]),
            Ok(Duration::from_secs(2))
        );
        assert_eq!(
            parse_duration(&vars[env::RECONFIGURE_DURATION]),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(vars[env::TIME_SCALE], "10");
        assert_eq!(vars[env::SINGLE_USE], "true");
        assert_eq!(vars[env::SEED], "42");
        assert_eq!(vars[env::REPORT_STATS], "false");
        assert_eq!(vars.len(), 12);
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        let cases = [
            (
                serde_json::json!({"load": "ramp:1"}),
                "invalid load profile",
            ),
            (
                serde_json::json!({"statsIntervalSec": 0}),
                "statsIntervalSec",
            ),
            (serde_json::json!({"timeScale": -2}), "timeScale"),
            (serde_json::json!({"drainSec": -1}), "drainSec"),
            (serde_json::json!({"lod": "const:1"}), "unknown field"),
            (serde_json::json!("fast"), "invalid \"local\" section"),
        ];
        for (local, expected) in cases {
            let err = LocalSettings::of(&group(Some(local.clone()))).expect_err(expected);
            assert!(err.contains(expected), "{local}: {err}");
        }
    }
}
