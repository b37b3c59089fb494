//! One group's decision pass, as a pure function: scheduled scaling → autoscale → launch or
//! shrink. The engine reads the store, calls [`decide_group`], and carries out the result.
//!
//! - [`inventory`]: which instances count;
//! - [`launch`]: launch quantities, the untracked throttle and the cloud guard;
//! - [`victims`]: which instances a scale-down flags.

pub mod inventory;
pub mod launch;
pub mod victims;

use std::borrow::Cow;

use crate::clock::UnixMillis;
use crate::group::Group;
use crate::instance::{CloudInstance, InstanceRecord};
use crate::metrics::{InstanceSamples, Window, WindowScratch, WindowSpec, summarize};
use crate::policy::{self, Decision, PolicyInput};
use crate::schedule::{self, ScheduleSettings, Transition};

pub use inventory::{Inventory, Timings, cloud_running};
pub use launch::{CloudGuard, LaunchInput, LaunchPlan, MAX_THROTTLE_THRESHOLD, plan_launch};
pub use victims::{Victims, select_victims};

/// Engine-wide settings the decisions depend on.
#[derive(Clone, Debug, PartialEq)]
pub struct PassSettings {
    /// State lifetimes and metric retention.
    pub timings: Timings,
    /// Timezones and jitter of scheduled scaling.
    pub schedule: ScheduleSettings,
    /// `SCHEDULED_SCALING_ENABLED` (default true).
    pub scheduled_scaling: bool,
    /// `CLOUD_GUARD_ENABLED`: the guard for groups that do not say (default false).
    pub cloud_guard: bool,
    /// `CLOUD_GUARD_GRACE_COUNT`: the grace for groups that do not say (default 0).
    pub cloud_guard_grace: u32,
    /// `MAX_THROTTLE_THRESHOLD` (default 40).
    pub max_throttle_threshold: u32,
}

impl Default for PassSettings {
    fn default() -> Self {
        Self {
            timings: Timings::default(),
            schedule: ScheduleSettings::default(),
            scheduled_scaling: true,
            cloud_guard: false,
            cloud_guard_grace: 0,
            max_throttle_threshold: MAX_THROTTLE_THRESHOLD,
        }
    }
}

/// Everything one group's pass decides from.
#[derive(Clone, Copy, Debug)]
pub struct GroupInput<'a> {
    /// The group as stored.
    pub group: &'a Group,
    /// End of the autoscale cooldown, if one runs.
    pub grace_until_ms: Option<UnixMillis>,
    /// Every instance state the store holds for the group, with its flags.
    pub instances: &'a [InstanceRecord],
    /// Metric samples per instance.
    pub samples: &'a [InstanceSamples],
    /// The cloud's list of the group's instances, when known (cached by the sanity step).
    pub cloud: Option<&'a [CloudInstance]>,
}

/// What the autoscale step did.
#[derive(Clone, Debug, PartialEq)]
pub enum Autoscale {
    /// `enableAutoScale` is false.
    Disabled,
    /// The cooldown after the last desired-count change is running.
    Cooldown,
    /// The group's type is not supported (legacy data).
    UnknownType,
    /// The cloud guard found the cloud already runs enough.
    GuardSuppressed {
        /// Cloud instances running.
        running: u32,
    },
    /// The policy ran on the window.
    Ran {
        /// The bucket summaries (the audit's `lastScaleMetrics`).
        window: Window,
        /// Its decision.
        decision: Decision,
    },
}

/// One group's decisions for this pass.
#[derive(Clone, Debug)]
pub struct GroupDecision<'a> {
    /// The group after this pass's transition and autoscale decision.
    pub group: Cow<'a, Group>,
    /// The scheduled-scaling transition, if the active period changed.
    pub transition: Option<Transition>,
    /// The autoscale step.
    pub autoscale: Autoscale,
    /// The desired count changed in this pass (by a transition or the autoscaler).
    pub desired_changed: bool,
    /// Expired states, to remove.
    pub expired: Vec<&'a InstanceRecord>,
    /// Live instances not counted because they are shutting down.
    pub shutting_down: Vec<&'a InstanceRecord>,
    /// Live instances counted (not shutting down).
    pub active: Vec<&'a InstanceRecord>,
    /// Tracked instances not shutting down.
    pub count: u32,
    /// Running cloud instances without a live state (0 when the cloud list is unknown).
    pub untracked: u32,
    /// The launcher's plan; `None` when `enableLaunch` is false.
    pub launch: Option<LaunchPlan>,
    /// Victims when the plan is a scale-down.
    pub victims: Victims<'a>,
}

impl<'a> GroupDecision<'a> {
    /// The desired count this pass ends with.
    pub fn desired(&self) -> u32 {
        self.group.scaling_options.desired_count
    }

    /// Every live instance (counted or shutting down).
    pub fn live(&self) -> impl Iterator<Item = &'a InstanceRecord> + '_ {
        self.active.iter().chain(self.shutting_down.iter()).copied()
    }

    /// Counted instances that are not launch placeholders.
    pub fn running(&self) -> u32 {
        self.active.iter().filter(|r| !r.is_provisioning()).count() as u32
    }
}

/// The cloud guard's input for a group, when the guard is on and the cloud list is known.
fn guard_of(
    group: &Group,
    settings: &PassSettings,
    cloud: Option<&[CloudInstance]>,
) -> Option<CloudGuard> {
    let enabled = group.enable_cloud_guard.unwrap_or(settings.cloud_guard);
    let cloud = cloud.filter(|_| enabled)?;
    Some(CloudGuard {
        running: cloud_running(cloud),
        grace: group
            .scaling_options
            .cloud_guard_grace_count
            .unwrap_or(settings.cloud_guard_grace),
    })
}

/// The window spec of a group's options at `now`.
pub fn window_spec(group: &Group, timings: &Timings, now: UnixMillis) -> WindowSpec {
    let o = &group.scaling_options;
    WindowSpec {
        now,
        period_ms: (o.scale_period.max(1) as i64).saturating_mul(1000),
        periods: o.window_periods() as usize,
        retention_ms: timings.metric_ttl_ms,
    }
}

/// Decides one group's pass. Pure: the same input and instant give the same decisions.
pub fn decide_group<'a>(
    input: &GroupInput<'a>,
    settings: &PassSettings,
    now: UnixMillis,
    scratch: &mut WindowScratch,
) -> GroupDecision<'a> {
    let timings = &settings.timings;
    let inventory = Inventory::build(input.instances, now, timings);
    let mut group = Cow::Borrowed(input.group);
    let mut grace_until = input.grace_until_ms;
    let mut desired_changed = false;

    let transition = settings
        .scheduled_scaling
        .then(|| schedule::transition(&group, &settings.schedule, now))
        .flatten();
    if let Some(t) = &transition {
        desired_changed = t.new_options.desired_count != t.old_options.desired_count;
        group = Cow::Owned(t.group.clone());
        grace_until = Some(now + group.grace_period_ttl_sec as i64 * 1000);
    }

    let count = inventory.count();
    let guard = guard_of(&group, settings, input.cloud);
    let autoscale = if !group.enable_auto_scale {
        Autoscale::Disabled
    } else if grace_until.is_some_and(|until| until > now) {
        Autoscale::Cooldown
    } else if let Some(class) = group.class() {
        if launch::autoscale_guard_suppresses(count, group.scaling_options.desired_count, guard) {
            Autoscale::GuardSuppressed {
                running: guard.map_or(0, |g| g.running),
            }
        } else {
            let spec = window_spec(&group, timings, now);
            let window = summarize(
                class,
                &spec,
                input.samples.iter().map(|s| s.samples.as_slice()),
                scratch,
            );
            let inhibited = schedule::inhibits_scale_down(&group, &settings.schedule, now);
            let built = policy::for_config(&group.policy());
            let decision = policy::decide(
                built.as_dyn(),
                &PolicyInput {
                    options: &group.scaling_options,
                    class,
                    count,
                    window: &window,
                    allow_up: true,
                    allow_down: !inhibited,
                },
            );
            Autoscale::Ran { window, decision }
        }
    } else {
        Autoscale::UnknownType
    };
    if let Autoscale::Ran {
        decision: Decision::Scale { to, .. } | Decision::Clamp { to },
        ..
    } = &autoscale
        && *to != group.scaling_options.desired_count
    {
        group.to_mut().scaling_options.desired_count = *to;
        desired_changed = true;
    }

    let untracked = input.cloud.map_or(0, |c| inventory.untracked_count(c));
    let o = &group.scaling_options;
    let launch = group.enable_launch.then(|| {
        plan_launch(&LaunchInput {
            count,
            untracked,
            desired: o.desired_count,
            min: o.min_desired,
            max: o.max_desired,
            throttle: group.untracked_throttle_enabled(),
            max_throttle_threshold: settings.max_throttle_threshold,
            guard,
        })
    });
    let victims = match (launch, group.class()) {
        (Some(LaunchPlan::ScaleDown { victims }), Some(class)) => {
            select_victims(class, &inventory.active, victims, now, timings)
        }
        _ => Victims::default(),
    };
    GroupDecision {
        transition,
        autoscale,
        desired_changed,
        expired: inventory.expired,
        shutting_down: inventory.shutting_down,
        active: inventory.active,
        count,
        untracked,
        launch,
        victims,
        group,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::instance::{InstanceFlags, InstanceState, Metadata, StressStats};
    use crate::metrics::MetricSample;
    use crate::policy::{Direction, HoldReason};
    use serde_json::json;

    const NOW: UnixMillis = 1_795_346_890_000;

    fn group(desired: u32) -> Group {
        serde_json::from_value(json!({
            "name": "g", "type": "JVB", "enableAutoScale": true, "enableLaunch": true,
            "scalingOptions": {"minDesired": 1, "maxDesired": 5, "desiredCount": desired,
                "scaleUpQuantity": 1, "scaleDownQuantity": 1, "scaleUpThreshold": 0.8,
                "scaleDownThreshold": 0.3, "scalePeriod": 60, "scaleUpPeriodsCount": 2,
                "scaleDownPeriodsCount": 2}
        }))
        .expect("group")
    }

    fn jvb(id: &str, stress: f64) -> (InstanceRecord, InstanceSamples) {
        let mut state = InstanceState::polled(id, "JVB", Metadata::default(), NOW - 1000);
        state.reported_at = Some(NOW - 1000);
        state.status.stats = Some(StressStats {
            stress_level: Some(stress),
            ..StressStats::default()
        });
        let samples = [NOW - 61_000, NOW - 1_000]
            .into_iter()
            .map(|at_ms| MetricSample {
                at_ms,
                value: stress,
            })
            .collect();
        (
            InstanceRecord {
                state: state.into(),
                flags: InstanceFlags::default(),
            },
            InstanceSamples {
                instance_id: id.into(),
                samples,
            },
        )
    }

    fn fleet(stresses: &[f64]) -> (Vec<InstanceRecord>, Vec<InstanceSamples>) {
        stresses
            .iter()
            .enumerate()
            .map(|(i, s)| jvb(&format!("i-{i}"), *s))
            .unzip()
    }

    fn run<'a>(
        g: &'a Group,
        records: &'a [InstanceRecord],
        samples: &'a [InstanceSamples],
    ) -> GroupDecision<'a> {
        let input = GroupInput {
            group: g,
            grace_until_ms: None,
            instances: records,
            samples,
            cloud: None,
        };
        decide_group(
            &input,
            &PassSettings::default(),
            NOW,
            &mut WindowScratch::default(),
        )
    }

    #[test]
    fn load_raises_desired_and_the_launcher_launches_in_the_same_pass() {
        let g = group(2);
        let (records, samples) = fleet(&[0.9, 0.95]);
        let d = run(&g, &records, &samples);
        assert!(matches!(
            d.autoscale,
            Autoscale::Ran {
                decision: Decision::Scale {
                    direction: Direction::Up,
                    to: 3,
                    ..
                },
                ..
            }
        ));
        assert!(d.desired_changed);
        assert_eq!(d.desired(), 3);
        assert_eq!(d.launch, Some(LaunchPlan::Launch { quantity: 1 }));
    }

    #[test]
    fn low_load_lowers_desired_and_flags_the_least_loaded() {
        let g = group(3);
        let (mut records, samples) = fleet(&[0.1, 0.05, 0.2]);
        Arc::make_mut(&mut records[0].state).status.stats = Some(StressStats {
            stress_level: Some(0.1),
            participants: Some(9.0),
            ..StressStats::default()
        });
        let d = run(&g, &records, &samples);
        assert_eq!(d.desired(), 2);
        assert_eq!(d.launch, Some(LaunchPlan::ScaleDown { victims: 1 }));
        assert_eq!(d.victims.chosen[0].state.instance_id, "i-1");
    }

    #[test]
    fn cooldown_and_disabled_skip_autoscale_but_not_the_launcher() {
        let g = group(3);
        let (records, samples) = fleet(&[0.9]);
        let input = GroupInput {
            group: &g,
            grace_until_ms: Some(NOW + 1),
            instances: &records,
            samples: &samples,
            cloud: None,
        };
        let d = decide_group(
            &input,
            &PassSettings::default(),
            NOW,
            &mut WindowScratch::default(),
        );
        assert_eq!(d.autoscale, Autoscale::Cooldown);
        assert_eq!(d.launch, Some(LaunchPlan::Launch { quantity: 2 }));
        let mut off = group(1);
        off.enable_auto_scale = false;
        off.enable_launch = false;
        let d = run(&off, &records, &samples);
        assert_eq!(d.autoscale, Autoscale::Disabled);
        assert_eq!(d.launch, None);
    }

    #[test]
    fn silence_holds_and_expired_states_are_reported() {
        let g = group(2);
        let (mut records, _) = fleet(&[0.1, 0.1]);
        Arc::make_mut(&mut records[1].state).timestamp = NOW - 400_000;
        let d = run(&g, &records, &[]);
        assert_eq!(d.expired.len(), 1);
        assert_eq!(d.count, 1);
        assert!(matches!(
            d.autoscale,
            Autoscale::Ran {
                decision: Decision::Hold(HoldReason::NoData),
                ..
            }
        ));
        // One instance short of desired: the launcher replaces it.
        assert_eq!(d.launch, Some(LaunchPlan::Launch { quantity: 1 }));
    }

    #[test]
    fn the_cloud_list_counts_untracked_and_guards() {
        let mut g = group(3);
        g.enable_cloud_guard = Some(true);
        let (records, samples) = fleet(&[0.5]);
        let cloud: Vec<CloudInstance> = ["i-0", "x-1", "x-2"]
            .iter()
            .map(|id| CloudInstance {
                instance_id: (*id).into(),
                display_name: (*id).into(),
                cloud_status: "RUNNING".into(),
                created_at_ms: None,
            })
            .collect();
        let input = GroupInput {
            group: &g,
            grace_until_ms: None,
            instances: &records,
            samples: &samples,
            cloud: Some(&cloud),
        };
        let d = decide_group(
            &input,
            &PassSettings::default(),
            NOW,
            &mut WindowScratch::default(),
        );
        assert_eq!(d.untracked, 2);
        assert_eq!(d.autoscale, Autoscale::GuardSuppressed { running: 3 });
        assert_eq!(d.launch, Some(LaunchPlan::Idle), "effective 3 = desired");
    }
}
