//! The group report (`GET /groups/:name/report`, rest-api.md §7.1): every tracked and
//! cloud-only instance with its scale status, and the counts. Pure: built from a snapshot.

use std::collections::HashSet;

use serde::Serialize;

use crate::clock::{UnixMillis, iso8601};
use crate::group::Group;
use crate::instance::{BusyStatus, CloudInstance, InstanceRecord, TypeClass};
use crate::plan::Timings;
use crate::store::GroupRuntime;

/// One instance in the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReport {
    /// Instance id.
    pub instance_id: String,
    /// Group (absent for cloud-only entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Cloud display name, or `unknown`.
    pub display_name: String,
    /// `metadata.name`, or `unknown` (absent for cloud-only entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    /// See [`scale_status`].
    pub scale_status: String,
    /// The cloud's status, or `unknown`.
    pub cloud_status: String,
    /// `metadata.version`, or `unknown` (absent for cloud-only entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Shutting down by the sidecar's account or a server flag.
    pub is_shutting_down: bool,
    /// The confirmation date, or `false`.
    pub shutdown_complete: serde_json::Value,
    /// Last completed reconfiguration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reconfigured: Option<String>,
    /// The last reconfiguration failed (absent for cloud-only entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconfigure_error: Option<bool>,
    /// The last shutdown attempt failed (absent for cloud-only entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_error: Option<bool>,
    /// Protected from scale-down.
    pub is_scale_down_protected: bool,
    /// Pending reconfiguration date, or null.
    pub reconfigure_scheduled: Option<String>,
    /// Private address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,
    /// Public address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    /// Last check-in (server time; jitsi-scaler).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Server receive time minus the sidecar's report time, in ms (jitsi-scaler).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_skew_ms: Option<i64>,
}

/// The report of a group.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupReport {
    /// Group name.
    pub group_name: String,
    /// `desiredCount`.
    pub desired_count: u32,
    /// Live states, shutting down included.
    pub count: u32,
    /// Cloud entries running or provisioning.
    pub cloud_count: u32,
    /// Launch placeholders.
    pub provisioning_count: u32,
    /// IDLE Jibris.
    pub available_count: u32,
    /// BUSY Jibris.
    pub busy_count: u32,
    /// EXPIRED Jibris.
    pub expired_count: u32,
    /// Cloud instances without a live state.
    pub un_tracked_count: u32,
    /// Shutting down.
    pub shutting_down_count: u32,
    /// Shutdown confirmed.
    pub shutdown_count: u32,
    /// Shutdown errors.
    pub shutdown_error_count: u32,
    /// Reconfiguration errors.
    pub reconfigure_error_count: u32,
    /// Pending reconfigurations.
    pub reconfigure_scheduled_count: u32,
    /// Protected from scale-down.
    pub scale_down_protected_count: u32,
    /// The instances: states first (in the order first stored), then cloud-only entries.
    pub instances: Vec<InstanceReport>,
    /// Age of the cached cloud list in seconds (jitsi-scaler).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_list_age_sec: Option<i64>,
    /// Consecutive launch failures (jitsi-scaler).
    pub launch_failures: u32,
    /// The last launch error (jitsi-scaler).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_launch_error: Option<String>,
    /// Seconds since desired and count differ (jitsi-scaler).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub convergence_lag_sec: Option<i64>,
}

/// The scale status of a tracked instance (first match wins): `SHUTDOWN COMPLETE`, `SHUTDOWN`,
/// `PROVISIONING`; availability types `SIDECAR_RUNNING` or the Jibri's busy status; stress types
/// `ONLINE` (no stats), `GRACEFUL SHUTDOWN`, `IN USE`, `SIDECAR_RUNNING`.
pub fn scale_status(class: Option<TypeClass>, r: &InstanceRecord) -> String {
    let s = &r.state;
    if r.flags.shutdown_confirmed_ms.is_some() {
        return "SHUTDOWN COMPLETE".into();
    }
    if s.shutdown_status {
        return "SHUTDOWN".into();
    }
    if s.status.provisioning {
        return "PROVISIONING".into();
    }
    match class {
        Some(TypeClass::Availability) => match s.status.jibri_status.map(|j| j.busy_status) {
            Some(BusyStatus::Idle) => "IDLE".into(),
            Some(BusyStatus::Busy) => "BUSY".into(),
            Some(BusyStatus::Expired) => "EXPIRED".into(),
            _ => "SIDECAR_RUNNING".into(),
        },
        Some(TypeClass::Stress) => match s.status.stats {
            None => "ONLINE".into(),
            Some(st) if st.graceful_shutdown => "GRACEFUL SHUTDOWN".into(),
            Some(st) if st.in_use() => "IN USE".into(),
            Some(_) => "SIDECAR_RUNNING".into(),
        },
        None => "unknown".into(),
    }
}

/// Builds a group's report from its instance records (live and expired alike: expired ones are
/// left out), its cached cloud list, and the engine's runtime.
pub fn group_report(
    group: &Group,
    records: &[InstanceRecord],
    runtime: &GroupRuntime,
    timings: &Timings,
    now: UnixMillis,
) -> GroupReport {
    let class = group.class();
    let cloud: &[CloudInstance] = runtime.cloud.as_ref().map_or(&[], |c| &*c.instances);
    let cloud_of = |id: &str| cloud.iter().find(|c| c.instance_id == id);
    let live: Vec<&InstanceRecord> = records
        .iter()
        .filter(|r| !timings.is_expired(r, now))
        .collect();
    let tracked: HashSet<&str> = live.iter().map(|r| r.state.instance_id.as_str()).collect();
    let mut instances: Vec<InstanceReport> = live
        .iter()
        .map(|r| {
            let s = &r.state;
            let c = cloud_of(&s.instance_id);
            InstanceReport {
                instance_id: s.instance_id.clone(),
                group: Some(group.name.clone()),
                display_name: c.map_or_else(|| "unknown".into(), |c| c.display_name.clone()),
                instance_name: Some(
                    s.metadata
                        .get_str("name")
                        .unwrap_or_else(|| "unknown".into()),
                ),
                scale_status: scale_status(class, r),
                cloud_status: c
                    .map_or_else(|| "unknown".into(), |c| c.cloud_status.as_str().to_owned()),
                version: Some(
                    s.metadata
                        .get_str("version")
                        .unwrap_or_else(|| "unknown".into()),
                ),
                is_shutting_down: s.shutdown_status || r.flags.shutdown_requested_ms.is_some(),
                shutdown_complete: r
                    .flags
                    .shutdown_confirmed_ms
                    .map_or(serde_json::Value::Bool(false), |t| iso8601(t).into()),
                last_reconfigured: s.last_reconfigured.clone(),
                reconfigure_error: Some(s.reconfigure_error),
                shutdown_error: Some(s.shutdown_error),
                is_scale_down_protected: r.flags.is_protected(now),
                reconfigure_scheduled: r.flags.reconfigure.as_ref().map(|x| x.date.clone()),
                private_ip: s.metadata.get_str("privateIp"),
                public_ip: s.metadata.get_str("publicIp"),
                last_seen: Some(iso8601(s.timestamp)),
                clock_skew_ms: s
                    .report_timestamp
                    .zip(s.reported_at)
                    .map(|(ts, at)| at - ts),
            }
        })
        .collect();
    instances.extend(
        cloud
            .iter()
            .filter(|c| !tracked.contains(c.instance_id.as_str()))
            .map(|c| InstanceReport {
                instance_id: c.instance_id.clone(),
                group: None,
                display_name: c.display_name.clone(),
                instance_name: None,
                scale_status: "unknown".into(),
                cloud_status: c.cloud_status.as_str().to_owned(),
                version: None,
                is_shutting_down: false,
                shutdown_complete: serde_json::Value::Bool(false),
                last_reconfigured: None,
                reconfigure_error: None,
                shutdown_error: None,
                is_scale_down_protected: false,
                reconfigure_scheduled: None,
                private_ip: None,
                public_ip: None,
                last_seen: None,
                clock_skew_ms: None,
            }),
    );
    let count_if =
        |f: &dyn Fn(&InstanceReport) -> bool| instances.iter().filter(|i| f(i)).count() as u32;
    let running = |i: &InstanceReport| {
        i.cloud_status.eq_ignore_ascii_case("running")
            || i.cloud_status.eq_ignore_ascii_case("provisioning")
    };
    let availability = class == Some(TypeClass::Availability);
    let status_count = |s: &str| {
        if availability {
            count_if(&|i: &InstanceReport| i.scale_status == s)
        } else {
            0
        }
    };
    GroupReport {
        group_name: group.name.clone(),
        desired_count: group.scaling_options.desired_count,
        count: live.len() as u32,
        cloud_count: count_if(&running),
        provisioning_count: count_if(&|i| i.scale_status == "PROVISIONING"),
        available_count: status_count("IDLE"),
        busy_count: status_count("BUSY"),
        expired_count: status_count("EXPIRED"),
        un_tracked_count: count_if(&|i| i.scale_status == "unknown" && running(i)),
        shutting_down_count: count_if(&|i| i.is_shutting_down),
        shutdown_count: count_if(&|i| i.shutdown_complete != serde_json::Value::Bool(false)),
        shutdown_error_count: count_if(&|i| i.shutdown_error == Some(true)),
        reconfigure_error_count: count_if(&|i| i.reconfigure_error == Some(true)),
        reconfigure_scheduled_count: count_if(&|i| i.reconfigure_scheduled.is_some()),
        scale_down_protected_count: count_if(&|i| i.is_scale_down_protected),
        instances,
        cloud_list_age_sec: runtime.cloud.as_ref().map(|c| (now - c.at_ms) / 1000),
        launch_failures: runtime.launch_failures,
        last_launch_error: runtime.last_launch_error.clone(),
        convergence_lag_sec: runtime.gap_since_ms.map(|s| (now - s) / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{InstanceFlags, InstanceState, JibriStatus, Metadata, StressStats};
    use crate::store::CloudSnapshot;
    use serde_json::json;

    const NOW: UnixMillis = 1_773_856_800_000;

    fn group(t: &str) -> Group {
        serde_json::from_value(json!({"name": "g", "type": t,
            "scalingOptions": {"minDesired": 0, "maxDesired": 9, "desiredCount": 3}}))
        .expect("group")
    }

    fn rec(id: &str, f: impl FnOnce(&mut InstanceState, &mut InstanceFlags)) -> InstanceRecord {
        let raw = serde_json::value::to_raw_value(&json!({"instanceId": id, "name": format!("n-{id}"), "version": "2.3", "privateIp": "10.0.0.5"}))
            .expect("raw");
        let mut state = InstanceState::polled(id, "JVB", Metadata::from_raw(raw), NOW - 1_000);
        let mut flags = InstanceFlags::default();
        f(&mut state, &mut flags);
        InstanceRecord {
            state: state.into(),
            flags,
        }
    }

    fn cloud(id: &str, status: &str) -> CloudInstance {
        CloudInstance {
            instance_id: id.into(),
            display_name: format!("g-{id}"),
            cloud_status: status.into(),
            created_at_ms: None,
        }
    }

    #[test]
    fn stress_statuses_and_counts() {
        let stats = |p: f64, graceful: bool| StressStats {
            stress_level: Some(0.1),
            participants: Some(p),
            graceful_shutdown: graceful,
            ..StressStats::default()
        };
        let records = vec![
            rec("online", |_, _| {}),
            rec("idle", |s, _| s.status.stats = Some(stats(0.0, false))),
            rec("busy", |s, _| s.status.stats = Some(stats(4.0, false))),
            rec("draining", |s, _| s.status.stats = Some(stats(4.0, true))),
            rec("prov", |s, _| s.status.provisioning = true),
            rec("down", |s, f| {
                s.shutdown_status = true;
                f.shutdown_requested_ms = Some(NOW);
            }),
            rec("done", |s, f| {
                s.shutdown_status = true;
                f.shutdown_confirmed_ms = Some(NOW);
            }),
            rec("expired", |s, _| s.timestamp = NOW - 400_000),
        ];
        let runtime = GroupRuntime {
            cloud: Some(CloudSnapshot {
                at_ms: NOW - 30_000,
                instances: vec![
                    cloud("busy", "RUNNING"),
                    cloud("ghost", "Running"),
                    cloud("old", "TERMINATED"),
                ]
                .into(),
            }),
            ..GroupRuntime::default()
        };
        let r = group_report(&group("JVB"), &records, &runtime, &Timings::default(), NOW);
        let status: Vec<(&str, &str)> = r
            .instances
            .iter()
            .map(|i| (i.instance_id.as_str(), i.scale_status.as_str()))
            .collect();
        assert_eq!(
            status,
            vec![
                ("online", "ONLINE"),
                ("idle", "SIDECAR_RUNNING"),
                ("busy", "IN USE"),
                ("draining", "GRACEFUL SHUTDOWN"),
                ("prov", "PROVISIONING"),
                ("down", "SHUTDOWN"),
                ("done", "SHUTDOWN COMPLETE"),
                ("ghost", "unknown"),
                ("old", "unknown"),
            ]
        );
        assert_eq!(r.count, 7);
        assert_eq!(r.cloud_count, 2);
        assert_eq!(r.un_tracked_count, 1);
        assert_eq!(r.provisioning_count, 1);
        assert_eq!(r.shutting_down_count, 2);
        assert_eq!(r.shutdown_count, 1);
        assert_eq!(
            r.available_count, 0,
            "stress types have no availability counts"
        );
        assert_eq!(r.cloud_list_age_sec, Some(30));
        let v = serde_json::to_value(&r).expect("json");
        let busy = &v["instances"][2];
        assert_eq!(busy["displayName"], "g-busy");
        assert_eq!(busy["cloudStatus"], "RUNNING");
        assert_eq!(busy["instanceName"], "n-busy");
        assert_eq!(busy["version"], "2.3");
        assert_eq!(busy["privateIp"], "10.0.0.5");
        assert_eq!(busy["shutdownComplete"], false);
        assert_eq!(busy["reconfigureScheduled"], serde_json::Value::Null);
        assert!(busy.get("publicIp").is_none());
        assert_eq!(
            v["instances"][6]["shutdownComplete"],
            "2026-03-18T18:00:00.000Z"
        );
        let ghost = &v["instances"][7];
        assert!(ghost.get("group").is_none() && ghost.get("version").is_none());
        assert_eq!(v["unTrackedCount"], 1);
        assert_eq!(v["groupName"], "g");
    }

    #[test]
    fn jibri_statuses_and_availability_counts() {
        let jibri = |b| Some(JibriStatus::healthy(b));
        let records = vec![
            rec("a", |s, _| s.status.jibri_status = jibri(BusyStatus::Idle)),
            rec("b", |s, f| {
                s.status.jibri_status = jibri(BusyStatus::Busy);
                f.protected_until_ms = Some(NOW + 1);
            }),
            rec("c", |s, _| {
                s.status.jibri_status = jibri(BusyStatus::Expired)
            }),
            rec("d", |s, f| {
                f.reconfigure = Some(crate::instance::ReconfigureRequest {
                    date: "2026-03-18T18:00:00.000Z".into(),
                    at_ms: NOW,
                });
                s.reconfigure_error = true;
            }),
        ];
        let r = group_report(
            &group("jibri"),
            &records,
            &GroupRuntime::default(),
            &Timings::default(),
            NOW,
        );
        let status: Vec<&str> = r
            .instances
            .iter()
            .map(|i| i.scale_status.as_str())
            .collect();
        assert_eq!(status, vec!["IDLE", "BUSY", "EXPIRED", "SIDECAR_RUNNING"]);
        assert_eq!(
            (r.available_count, r.busy_count, r.expired_count),
            (1, 1, 1)
        );
        assert_eq!(r.scale_down_protected_count, 1);
        assert_eq!(r.reconfigure_scheduled_count, 1);
        assert_eq!(r.reconfigure_error_count, 1);
        assert_eq!(r.cloud_count, 0);
    }
}
