//! What the engine tells the outside world: events for metrics, logs and tests.

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use crate::policy::Direction;

/// Where a cloud guard suppressed scaling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuardStage {
    /// The autoscale step.
    Autoscale,
    /// The launcher.
    Launch,
}

/// Per-group gauges after a reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupGauges {
    /// Group.
    pub group: String,
    /// `desiredCount`.
    pub desired: u32,
    /// `minDesired`.
    pub min: u32,
    /// `maxDesired`.
    pub max: u32,
    /// Tracked instances not shutting down.
    pub count: u32,
    /// Of those, not provisioning.
    pub running: u32,
    /// Length of the cached cloud list (all non-terminated).
    pub cloud_count: u32,
    /// Cloud instances running or provisioning.
    pub cloud_running: u32,
    /// Running cloud instances without a live state.
    pub untracked: u32,
    /// Seconds since desired and count started to differ (0 when equal).
    pub convergence_lag_sec: f64,
    /// The active scheduled period, if any.
    pub active_period: Option<String>,
    /// Names of every period of the group's schedule (for gauges at 0).
    pub periods: Vec<String>,
}

/// Something the engine did or saw.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineEvent {
    /// A reconcile ended.
    Reconciled {
        /// Group.
        group: String,
        /// `ok`, `error`, `timeout` or `conflict`.
        outcome: &'static str,
        /// How long it took.
        duration: Duration,
    },
    /// The autoscaler held for lack of data or coverage.
    DecisionSkipped {
        /// Group.
        group: String,
        /// `no_data`, `low_coverage`, `no_load_signal`.
        reason: &'static str,
    },
    /// The autoscaler changed the desired count.
    DesiredChanged {
        /// Group.
        group: String,
        /// Before.
        from: u32,
        /// After.
        to: u32,
        /// Direction.
        direction: Direction,
    },
    /// The cloud guard suppressed scaling.
    CloudGuardSuppressed {
        /// Group.
        group: String,
        /// Where.
        stage: GuardStage,
    },
    /// The untracked throttle skipped a launch.
    LaunchThrottled {
        /// Group.
        group: String,
    },
    /// Instances were launched (or, in dry-run mode, would have been).
    Launched {
        /// Group.
        group: String,
        /// How many.
        count: u32,
    },
    /// A launch failed in whole or in part.
    LaunchFailed {
        /// Group.
        group: String,
        /// Error class.
        class: &'static str,
    },
    /// Instances were flagged for scale-down.
    Downscaled {
        /// Group.
        group: String,
        /// How many.
        count: u32,
    },
    /// An instance was terminated through its provider.
    Terminated {
        /// Group.
        group: String,
        /// Why: `confirmed`, `drain_timeout`, `silent`, `orphan`.
        reason: &'static str,
    },
    /// A terminate call failed.
    TerminateFailed {
        /// Group.
        group: String,
        /// Error class.
        class: &'static str,
    },
    /// The cloud was listed (sanity).
    Listed {
        /// Group.
        group: String,
        /// Instances listed (terminated dropped).
        instances: u32,
    },
    /// Listing the cloud failed.
    ListFailed {
        /// Group.
        group: String,
        /// Error class.
        class: &'static str,
    },
    /// A scheduled-scaling transition was applied.
    ScheduledTransition {
        /// Group.
        group: String,
    },
    /// A scheduled-scaling transition could not be written.
    ScheduledScalingError {
        /// Group.
        group: String,
    },
    /// A store call of a reconcile failed.
    StoreError {
        /// Group.
        group: String,
    },
    /// Gauges after a reconcile.
    Gauges(GroupGauges),
    /// A group no longer exists: drop its label sets.
    GroupRemoved {
        /// Group.
        group: String,
    },
}

/// Receives engine events (the server exports them as Prometheus metrics).
pub trait Observer: Send + Sync + Debug {
    /// Called for every event, from engine tasks: must be quick and must not block.
    fn observe(&self, event: &EngineEvent);
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl Observer for NoopObserver {
    fn observe(&self, _event: &EngineEvent) {}
}

/// Keeps every event (tests, examples).
#[derive(Debug, Default)]
pub struct RecordingObserver {
    events: Mutex<Vec<EngineEvent>>,
}

impl RecordingObserver {
    /// Every event so far.
    pub fn events(&self) -> Vec<EngineEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Takes the events so far, leaving none.
    pub fn take(&self) -> Vec<EngineEvent> {
        self.events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }
}

impl Observer for RecordingObserver {
    fn observe(&self, event: &EngineEvent) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event.clone());
        }
    }
}
