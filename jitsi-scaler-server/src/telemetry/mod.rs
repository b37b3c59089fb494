//! Logs and metrics: the tracing subscriber, and the Prometheus metrics (the reference's names
//! where they have a meaning here, plus `jitsi_scaler_*`), fed by engine events and the HTTP
//! layer.

pub mod fields;
pub mod registry;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use jitsi_scaler_core::engine::{EngineEvent, GuardStage, Observer};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use registry::{Family, Registry};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber: `RUST_LOG` (or the given level) filters. Text lines
/// are coloured only on a terminal (and not with `NO_COLOR` set): a log file or journal gets
/// plain text, its fields written by [`fields::PlainFields`].
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let registry = tracing_subscriber::registry().with(filter);
    let ansi = colored(
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let result = match format {
        LogFormat::Text if ansi => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(true),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(false)
                    .fmt_fields(fields::PlainFields),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
    };
    // A subscriber already installed (tests, embedding) is fine.
    let _ = result;
}

/// Whether text logs are coloured: on a terminal, unless `NO_COLOR` is set to something.
fn colored(stdout_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stdout_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The job types of the reference's job counters, pre-initialised to 0.
const JOB_TYPES: [&str; 4] = ["SCHEDULED_SCALING", "AUTOSCALE", "LAUNCH", "SANITY"];

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `http_server_requests_in_flight{method}`.
    pub http_in_flight: Arc<Family>,
    /// `http_server_requests_total{method,code,uri}`.
    pub http_requests: Arc<Family>,
    /// `http_server_request_duration_seconds{method,uri}`.
    pub http_duration: Arc<Family>,
    /// `autoscaler_stats_handled`.
    pub stats_handled: Arc<Family>,
    /// `autoscaler_stats_errors`.
    pub stats_errors: Arc<Family>,
    /// `jitsi_scaler_reports_unknown_type_total`.
    pub unknown_type: Arc<Family>,
    /// `jitsi_scaler_reports_unknown_group_total`.
    pub unknown_group: Arc<Family>,
    /// `jitsi_scaler_auth_failures_total{reason}`.
    pub auth_failures: Arc<Family>,
    group_processing_errors: Arc<Family>,
    job_process: Arc<Family>,
    job_process_failure: Arc<Family>,
    reconcile_duration: Arc<Family>,
    decision_skipped: Arc<Family>,
    launched: Arc<Family>,
    downscaled: Arc<Family>,
    instance_errors: Arc<Family>,
    scaleup_suppressed: Arc<Family>,
    launch_suppressed: Arc<Family>,
    launch_throttled: Arc<Family>,
    terminated: Arc<Family>,
    terminate_errors: Arc<Family>,
    list_errors: Arc<Family>,
    transitions: Arc<Family>,
    schedule_errors: Arc<Family>,
    store_errors: Arc<Family>,
    groups_managed: Arc<Family>,
    desired: Arc<Family>,
    minimum: Arc<Family>,
    maximum: Arc<Family>,
    instance_count: Arc<Family>,
    instance_running: Arc<Family>,
    cloud_count: Arc<Family>,
    untracked: Arc<Family>,
    discrepancy: Arc<Family>,
    launcher_discrepancy: Arc<Family>,
    active_period: Arc<Family>,
    convergence_lag: Arc<Family>,
    /// `jitsi_scaler_leader`.
    pub leader: Arc<Family>,
    /// `jitsi_scaler_fencing_token`.
    pub fencing_token: Arc<Family>,
    group_families: Vec<Arc<Family>>,
    groups: Mutex<BTreeSet<String>>,
    periods: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let r = Registry::default();
        let g = &["group"];
        let http_in_flight = r.gauge(
            "http_server_requests_in_flight",
            "In-flight API requests",
            &["method"],
        );
        let http_requests = r.counter(
            "http_server_requests_total",
            "API requests",
            &["method", "code", "uri"],
        );
        let http_duration = r.histogram(
            "http_server_request_duration_seconds",
            "API request duration",
            &["method", "uri"],
            &[0.003, 0.01, 0.05, 0.1, 0.3, 1.0, 2.5, 10.0],
        );
        let stats_handled = r.counter("autoscaler_stats_handled", "Sidecar calls handled", &[]);
        let stats_errors = r.counter("autoscaler_stats_errors", "Sidecar calls failed", &[]);
        let unknown_type = r.counter(
            "jitsi_scaler_reports_unknown_type_total",
            "Reports of an unsupported instance type",
            &[],
        );
        let unknown_group = r.counter(
            "jitsi_scaler_reports_unknown_group_total",
            "Reports for a group that does not exist",
            &[],
        );
        let auth_failures = r.counter(
            "jitsi_scaler_auth_failures_total",
            "Requests refused by authentication",
            &["reason"],
        );
        let group_processing_errors = r.counter(
            "autoscaler_group_processing_errors",
            "Reconcile errors",
            &[],
        );
        let job_process = r.counter("autoscaling_job_process_total", "Jobs processed", &["type"]);
        let job_process_failure = r.counter(
            "autoscaling_job_process_failure_total",
            "Jobs failed",
            &["type"],
        );
        for t in JOB_TYPES {
            job_process.inc_by(&[t], 0.0);
            job_process_failure.inc_by(&[t], 0.0);
        }
        let reconcile_duration = r.histogram(
            "jitsi_scaler_reconcile_duration_seconds",
            "Duration of one group's reconcile",
            &["outcome"],
            &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0],
        );
        let decision_skipped = r.counter(
            "jitsi_scaler_decision_skipped_total",
            "Autoscale decisions skipped for lack of data",
            &["group", "reason"],
        );
        let launched = r.counter(
            "autoscaling_instance_launched_total",
            "Instances launched",
            g,
        );
        let downscaled = r.counter(
            "autoscaling_instance_downscaled_total",
            "Instances flagged for scale-down",
            g,
        );
        let instance_errors = r.counter("autoscaling_instance_errors_total", "Launch errors", g);
        let scaleup_suppressed = r.counter(
            "autoscaling_scaleup_suppressed_cloud_guard_total",
            "Autoscale runs suppressed by the cloud guard",
            g,
        );
        let launch_suppressed = r.counter(
            "autoscaling_launch_suppressed_cloud_guard_total",
            "Launches suppressed by the cloud guard",
            g,
        );
        let launch_throttled = r.counter(
            "jitsi_scaler_launch_throttled_total",
            "Launches skipped by the untracked throttle",
            g,
        );
        let terminated = r.counter(
            "jitsi_scaler_terminated_total",
            "Instances terminated through the provider",
            &["group", "reason"],
        );
        let terminate_errors = r.counter(
            "jitsi_scaler_terminate_errors_total",
            "Failed terminations",
            g,
        );
        let list_errors = r.counter("jitsi_scaler_list_errors_total", "Failed cloud listings", g);
        let transitions = r.counter(
            "scheduled_scaling_transitions_total",
            "Scheduled-scaling transitions",
            g,
        );
        let schedule_errors = r.counter(
            "scheduled_scaling_errors_total",
            "Scheduled-scaling transitions not written",
            g,
        );
        let store_errors = r.counter(
            "jitsi_scaler_store_errors_total",
            "Reconciles stopped by a store error",
            g,
        );
        let groups_managed = r.gauge("autoscaling_groups_managed", "Groups", &[]);
        let desired = r.gauge("autoscaling_desired_count", "Desired count", g);
        let minimum = r.gauge("autoscaling_minimum_count", "Minimum count", g);
        let maximum = r.gauge("autoscaling_maximum_count", "Maximum count", g);
        let instance_count = r.gauge(
            "autoscaling_instance_count",
            "Tracked instances not shutting down",
            g,
        );
        let instance_running = r.gauge(
            "autoscaling_instance_running",
            "Tracked instances not provisioning",
            g,
        );
        let cloud_count = r.gauge(
            "autoscaling_cloud_instance_count",
            "Instances in the cached cloud list",
            g,
        );
        let untracked = r.gauge(
            "autoscaling_untracked_instance_count",
            "Untracked instances",
            g,
        );
        let discrepancy = r.gauge(
            "autoscaling_cloud_sidecar_discrepancy",
            "Cloud running minus tracked",
            g,
        );
        let launcher_discrepancy = r.gauge(
            "autoscaling_launcher_cloud_sidecar_discrepancy",
            "Cloud running minus tracked (launcher)",
            g,
        );
        let active_period = r.gauge(
            "scheduled_scaling_active_period",
            "Active scheduled period (1)",
            &["group", "period"],
        );
        let convergence_lag = r.gauge(
            "jitsi_scaler_convergence_lag_seconds",
            "Seconds since desired and count differ",
            g,
        );
        let leader = r.gauge(
            "jitsi_scaler_leader",
            "This replica leads (1) or not (0)",
            &[],
        );
        let fencing_token = r.gauge(
            "jitsi_scaler_fencing_token",
            "Fencing token of this replica's leadership",
            &[],
        );
        let group_families = vec![
            launched.clone(),
            downscaled.clone(),
            instance_errors.clone(),
            scaleup_suppressed.clone(),
            launch_suppressed.clone(),
            launch_throttled.clone(),
            terminated.clone(),
            terminate_errors.clone(),
            list_errors.clone(),
            transitions.clone(),
            schedule_errors.clone(),
            store_errors.clone(),
            decision_skipped.clone(),
            desired.clone(),
            minimum.clone(),
            maximum.clone(),
            instance_count.clone(),
            instance_running.clone(),
            cloud_count.clone(),
            untracked.clone(),
            discrepancy.clone(),
            launcher_discrepancy.clone(),
            active_period.clone(),
            convergence_lag.clone(),
        ];
        Self {
            registry: r,
            http_in_flight,
            http_requests,
            http_duration,
            stats_handled,
            stats_errors,
            unknown_type,
            unknown_group,
            auth_failures,
            group_processing_errors,
            job_process,
            job_process_failure,
            reconcile_duration,
            decision_skipped,
            launched,
            downscaled,
            instance_errors,
            scaleup_suppressed,
            launch_suppressed,
            launch_throttled,
            terminated,
            terminate_errors,
            list_errors,
            transitions,
            schedule_errors,
            store_errors,
            groups_managed,
            desired,
            minimum,
            maximum,
            instance_count,
            instance_running,
            cloud_count,
            untracked,
            discrepancy,
            launcher_discrepancy,
            active_period,
            convergence_lag,
            leader,
            fencing_token,
            group_families,
            groups: Mutex::new(BTreeSet::new()),
            periods: Mutex::new(BTreeMap::new()),
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        self.registry.encode()
    }

    /// Sets the leadership gauges.
    pub fn set_leadership(&self, token: Option<u64>) {
        self.leader
            .set(&[], if token.is_some() { 1.0 } else { 0.0 });
        self.fencing_token.set(&[], token.unwrap_or(0) as f64);
    }

    fn gauges(&self, g: &jitsi_scaler_core::engine::GroupGauges) {
        let l = &[g.group.as_str()];
        self.desired.set(l, f64::from(g.desired));
        self.minimum.set(l, f64::from(g.min));
        self.maximum.set(l, f64::from(g.max));
        self.instance_count.set(l, f64::from(g.count));
        self.instance_running.set(l, f64::from(g.running));
        self.cloud_count.set(l, f64::from(g.cloud_count));
        self.untracked.set(l, f64::from(g.untracked));
        let discrepancy = f64::from(g.cloud_running) - f64::from(g.count);
        self.discrepancy.set(l, discrepancy);
        self.launcher_discrepancy.set(l, discrepancy);
        self.convergence_lag.set(l, g.convergence_lag_sec);
        let mut periods: BTreeSet<String> = g.periods.iter().cloned().collect();
        periods.insert("none".into());
        let active = g.active_period.as_deref().unwrap_or("none");
        if let Ok(mut known) = self.periods.lock() {
            let previous = known
                .insert(g.group.clone(), periods.clone())
                .unwrap_or_default();
            for gone in previous.difference(&periods) {
                self.active_period.remove_matching("period", gone);
            }
        }
        for p in &periods {
            self.active_period
                .set(&[g.group.as_str(), p], if p == active { 1.0 } else { 0.0 });
        }
        if let Ok(mut groups) = self.groups.lock() {
            groups.insert(g.group.clone());
            self.groups_managed.set(&[], groups.len() as f64);
        }
    }

    fn remove_group(&self, group: &str) {
        for f in &self.group_families {
            f.remove_matching("group", group);
        }
        if let Ok(mut periods) = self.periods.lock() {
            periods.remove(group);
        }
        if let Ok(mut groups) = self.groups.lock() {
            groups.remove(group);
            self.groups_managed.set(&[], groups.len() as f64);
        }
    }
}

impl Observer for Metrics {
    fn observe(&self, event: &EngineEvent) {
        match event {
            EngineEvent::Reconciled {
                outcome, duration, ..
            } => {
                self.reconcile_duration
                    .observe(&[outcome], duration.as_secs_f64());
                for t in &JOB_TYPES[..3] {
                    self.job_process.inc(&[t]);
                    if *outcome == "error" || *outcome == "timeout" {
                        self.job_process_failure.inc(&[t]);
                    }
                }
                if *outcome == "error" || *outcome == "timeout" {
                    self.group_processing_errors.inc(&[]);
                }
            }
            EngineEvent::DecisionSkipped { group, reason } => {
                self.decision_skipped.inc(&[group, reason])
            }
            EngineEvent::DesiredChanged { .. } => {}
            EngineEvent::CloudGuardSuppressed { group, stage } => match stage {
                GuardStage::Autoscale => self.scaleup_suppressed.inc(&[group]),
                GuardStage::Launch => self.launch_suppressed.inc(&[group]),
            },
            EngineEvent::LaunchThrottled { group } => self.launch_throttled.inc(&[group]),
            EngineEvent::Launched { group, count } => {
                self.launched.inc_by(&[group], f64::from(*count))
            }
            EngineEvent::LaunchFailed { group, .. } => self.instance_errors.inc(&[group]),
            EngineEvent::Downscaled { group, count } => {
                self.downscaled.inc_by(&[group], f64::from(*count))
            }
            EngineEvent::Terminated { group, reason } => self.terminated.inc(&[group, reason]),
            EngineEvent::TerminateFailed { group, .. } => self.terminate_errors.inc(&[group]),
            EngineEvent::ListFailed { group, .. } => {
                self.list_errors.inc(&[group]);
                self.job_process_failure.inc(&["SANITY"]);
            }
            EngineEvent::Listed { .. } => self.job_process.inc(&["SANITY"]),
            EngineEvent::ScheduledTransition { group } => self.transitions.inc(&[group]),
            EngineEvent::StoreError { group } => self.store_errors.inc(&[group]),
            EngineEvent::ScheduledScalingError { group } => self.schedule_errors.inc(&[group]),
            EngineEvent::Gauges(g) => self.gauges(g),
            EngineEvent::GroupRemoved { group } => self.remove_group(group),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jitsi_scaler_core::engine::GroupGauges;
    use std::ffi::OsStr;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colored(true, None));
        assert!(colored(true, Some(OsStr::new(""))));
        assert!(!colored(true, Some(OsStr::new("1"))));
        assert!(!colored(false, None), "a pipe or file gets no escape codes");
        assert!(!colored(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn events_become_metrics_and_deleted_groups_disappear() {
        let m = Metrics::new();
        m.observe(&EngineEvent::Launched {
            group: "g".into(),
            count: 2,
        });
        m.observe(&EngineEvent::Gauges(GroupGauges {
            group: "g".into(),
            desired: 3,
            max: 5,
            count: 2,
            cloud_running: 4,
            periods: vec!["peak".into()],
            active_period: Some("peak".into()),
            ..GroupGauges::default()
        }));
        let text = m.encode();
        assert!(
            text.contains("autoscaling_instance_launched_total{group=\"g\"} 2"),
            "{text}"
        );
        assert!(text.contains("autoscaling_desired_count{group=\"g\"} 3"));
        assert!(text.contains("autoscaling_cloud_sidecar_discrepancy{group=\"g\"} 2"));
        assert!(text.contains("scheduled_scaling_active_period{group=\"g\",period=\"peak\"} 1"));
        assert!(text.contains("scheduled_scaling_active_period{group=\"g\",period=\"none\"} 0"));
        assert!(text.contains("autoscaling_job_process_total{type=\"SANITY\"} 0"));
        assert!(text.contains("autoscaling_groups_managed 1"));
        m.observe(&EngineEvent::GroupRemoved { group: "g".into() });
        let text = m.encode();
        assert!(!text.contains("group=\"g\""), "{text}");
        assert!(text.contains("autoscaling_groups_managed 0"));
    }
}
