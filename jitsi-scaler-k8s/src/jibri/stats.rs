//! Counters and gauges of the Jibri controller, as plain atomics the server exports.
//!
//! Suggested Prometheus names: `jitsi_scaler_jibri_webhooks_total{outcome}`,
//! `jitsi_scaler_jibri_busy_patches_total`, `jitsi_scaler_jibri_pod_deletions_total{reason}`,
//! `jitsi_scaler_jibri_kubernetes_errors_total`, `jitsi_scaler_jibri_sweeps_total`,
//! `jitsi_scaler_jibri_sweep_failures_total`, `jitsi_scaler_jibri_sweep_duration_seconds`
//! (last sweep), `jitsi_scaler_jibri_health_unreachable`,
//! `jitsi_scaler_jibri_health_api_refused` (1 while every busy pod refuses health checks and
//! webhooks keep arriving: Jibri's API bound to 127.0.0.1),
//! `jitsi_scaler_jibri_event_failures_total`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a pod was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeletionReason {
    /// Jibri reported `EXPIRED` (webhook or health check).
    Expired,
    /// A detached single-use Jibri reported `IDLE` by webhook: its session is over.
    IdleAfterBusy,
    /// The pod's phase is `Failed` or `Succeeded`.
    TerminalPhase,
    /// A detached pod's Jibri stayed `IDLE` past the grace period.
    IdleDetached,
    /// The health endpoint stayed unreachable and no webhook came.
    Unreachable,
    /// Busy for longer than `MAX_BUSY_SECONDS`.
    MaxBusy,
}

impl DeletionReason {
    /// Every reason, in metric order.
    pub const ALL: [DeletionReason; 6] = [
        DeletionReason::Expired,
        DeletionReason::IdleAfterBusy,
        DeletionReason::TerminalPhase,
        DeletionReason::IdleDetached,
        DeletionReason::Unreachable,
        DeletionReason::MaxBusy,
    ];

    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionReason::Expired => "expired",
            DeletionReason::IdleAfterBusy => "idle_after_busy",
            DeletionReason::TerminalPhase => "terminal_phase",
            DeletionReason::IdleDetached => "idle_detached",
            DeletionReason::Unreachable => "unreachable",
            DeletionReason::MaxBusy => "max_busy",
        }
    }

    /// Reason of the Kubernetes Event.
    pub fn event_reason(self) -> &'static str {
        match self {
            DeletionReason::Expired => "JibriExpired",
            DeletionReason::IdleAfterBusy => "JibriIdleAfterBusy",
            DeletionReason::TerminalPhase => "JibriPodEnded",
            DeletionReason::IdleDetached => "JibriIdleDetached",
            DeletionReason::Unreachable => "JibriUnreachable",
            DeletionReason::MaxBusy => "JibriBusyTooLong",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Labels of webhook outcomes, in metric order (see `WebhookOutcome::label`).
pub const OUTCOME_LABELS: [&str; 6] = [
    "ok",
    "no_action",
    "bad_request",
    "unauthorized",
    "forbidden",
    "unavailable",
];

/// The controller's counters (monotonic) and gauges (last value).
#[derive(Debug, Default)]
pub struct ControllerStats {
    webhooks: [AtomicU64; 6],
    busy_patches: AtomicU64,
    deletions: [AtomicU64; 6],
    kubernetes_errors: AtomicU64,
    sweeps: AtomicU64,
    sweep_failures: AtomicU64,
    last_sweep_millis: AtomicU64,
    health_unreachable: AtomicU64,
    health_api_refused: AtomicU64,
    event_failures: AtomicU64,
}

/// A copy of the counters at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Webhooks answered, by outcome label ([`OUTCOME_LABELS`]).
    pub webhooks: Vec<(&'static str, u64)>,
    /// Busy relabels applied.
    pub busy_patches: u64,
    /// Pods deleted, by reason.
    pub deletions: Vec<(&'static str, u64)>,
    /// Failed Kubernetes calls.
    pub kubernetes_errors: u64,
    /// Sweeps done as leader.
    pub sweeps: u64,
    /// Sweeps that failed (listing).
    pub sweep_failures: u64,
    /// Duration of the last sweep, milliseconds.
    pub last_sweep_millis: u64,
    /// Busy pods whose health check failed in the last sweep.
    pub health_unreachable: u64,
    /// 1 when, in the last sweep, every busy pod refused its health check while webhooks
    /// kept arriving.
    pub health_api_refused: u64,
    /// Kubernetes Events that could not be written.
    pub event_failures: u64,
}

impl StatsSnapshot {
    /// Deletions of one reason.
    pub fn deletions_of(&self, reason: DeletionReason) -> u64 {
        self.deletions
            .iter()
            .find(|(r, _)| *r == reason.as_str())
            .map_or(0, |(_, n)| *n)
    }

    /// Webhooks of one outcome label.
    pub fn webhooks_of(&self, label: &str) -> u64 {
        self.webhooks
            .iter()
            .find(|(l, _)| *l == label)
            .map_or(0, |(_, n)| *n)
    }
}

impl ControllerStats {
    pub(crate) fn webhook(&self, label: &str) {
        if let Some(i) = OUTCOME_LABELS.iter().position(|l| *l == label) {
            self.webhooks[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn busy_patch(&self) {
        self.busy_patches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn deletion(&self, reason: DeletionReason) {
        self.deletions[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn kubernetes_error(&self) {
        self.kubernetes_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sweep(&self, millis: u64, unreachable: u64, refused_everywhere: bool) {
        self.sweeps.fetch_add(1, Ordering::Relaxed);
        self.last_sweep_millis.store(millis, Ordering::Relaxed);
        self.health_unreachable
            .store(unreachable, Ordering::Relaxed);
        self.health_api_refused
            .store(u64::from(refused_everywhere), Ordering::Relaxed);
    }

    pub(crate) fn sweep_failure(&self) {
        self.sweep_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn event_failure(&self) {
        self.event_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            webhooks: OUTCOME_LABELS
                .iter()
                .zip(&self.webhooks)
                .map(|(l, n)| (*l, load(n)))
                .collect(),
            busy_patches: load(&self.busy_patches),
            deletions: DeletionReason::ALL
                .iter()
                .map(|r| (r.as_str(), load(&self.deletions[r.index()])))
                .collect(),
            kubernetes_errors: load(&self.kubernetes_errors),
            sweeps: load(&self.sweeps),
            sweep_failures: load(&self.sweep_failures),
            last_sweep_millis: load(&self.last_sweep_millis),
            health_unreachable: load(&self.health_unreachable),
            health_api_refused: load(&self.health_api_refused),
            event_failures: load(&self.event_failures),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_by_label() {
        let stats = ControllerStats::default();
        stats.deletion(DeletionReason::Expired);
        stats.deletion(DeletionReason::Expired);
        stats.deletion(DeletionReason::MaxBusy);
        stats.webhook("ok");
        stats.webhook("unknown-label-is-ignored");
        stats.sweep(42, 3, true);
        let s = stats.snapshot();
        assert_eq!(s.deletions_of(DeletionReason::Expired), 2);
        assert_eq!(s.deletions_of(DeletionReason::MaxBusy), 1);
        assert_eq!(s.deletions_of(DeletionReason::Unreachable), 0);
        assert_eq!(s.webhooks_of("ok"), 1);
        assert_eq!(s.webhooks.iter().map(|(_, n)| n).sum::<u64>(), 1);
        assert_eq!(
            (
                s.sweeps,
                s.last_sweep_millis,
                s.health_unreachable,
                s.health_api_refused
            ),
            (1, 42, 3, 1)
        );
        let labels: Vec<_> = DeletionReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), 6);
    }
}
