//! Scaling policies: pure functions from a group's count and metric window to a decision on
//! its desired count.
//!
//! - [`ThresholdPolicy`]: the reference's step scaling (scaling-algorithms.md §3), with its
//!   defects fixed (D1 scale from zero, D2 direction-aware convergence gate, D3 no decision on
//!   missing data).
//! - [`SparePolicy`]: keep N idle instances (availability types: Jibri).
//! - [`TargetPolicy`]: target tracking on average stress, as Kubernetes' HPA, with a tolerance
//!   and a scale-down stabilisation over the window.
//!
//! [`decide`] wraps any policy with what every policy shares: clamping `desired` into
//! `[min, max]` and the convergence gate.

use std::fmt::Debug;

use crate::group::{PolicyConfig, ScalingOptions};
use crate::instance::TypeClass;
use crate::metrics::{Bucket, Window};

/// Minimum share of the tracked instances that must have a sample in a bucket before that
/// bucket can support a scale-down (D3).
pub const MIN_SCALE_DOWN_COVERAGE: f64 = 0.5;

/// What a policy decides from.
#[derive(Clone, Copy, Debug)]
pub struct PolicyInput<'a> {
    /// The group's current options (bounds, target, thresholds, periods).
    pub options: &'a ScalingOptions,
    /// How the group's metric reads.
    pub class: TypeClass,
    /// Tracked instances not shutting down (provisioning placeholders included).
    pub count: u32,
    /// Bucket summaries, newest first.
    pub window: &'a Window,
    /// A scale-up may be decided (D2 gate: `count ≥ desired`).
    pub allow_up: bool,
    /// A scale-down may be decided (D2 gate: `count ≤ desired`, and no scheduled inhibition).
    pub allow_down: bool,
}

/// Direction of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// More instances.
    Up,
    /// Fewer instances.
    Down,
}

/// Why a policy made no change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HoldReason {
    /// A bucket the decision needs has no sample (D3).
    NoData,
    /// A bucket has samples from too few instances to support a scale-down (D3).
    LowCoverage,
    /// No instance and a stress type: there is no load signal (D1).
    NoLoadSignal,
    /// The rules are not met.
    WithinThresholds,
}

impl HoldReason {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::NoData => "no_data",
            HoldReason::LowCoverage => "low_coverage",
            HoldReason::NoLoadSignal => "no_load_signal",
            HoldReason::WithinThresholds => "within_thresholds",
        }
    }
}

/// The outcome of a policy.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Keep the desired count.
    Hold(HoldReason),
    /// Set the desired count (possibly to its current value: the cooldown still starts).
    Scale {
        /// Direction of the decision.
        direction: Direction,
        /// The new desired count, within `[min, max]`.
        to: u32,
        /// The bucket summaries the decision rests on (the audit's `scaleMetrics`).
        metrics: Vec<f64>,
    },
    /// `desired` was outside `[min, max]` and is brought back in (D1).
    Clamp {
        /// The clamped desired count.
        to: u32,
    },
}

/// A rule deciding a group's desired count. Pure: the same input gives the same decision.
pub trait ScalingPolicy: Send + Sync + Debug {
    /// Short name (`threshold`, `spare`, `target`).
    fn name(&self) -> &'static str;

    /// Decides from the input, honouring `allow_up` / `allow_down`.
    fn decide(&self, input: &PolicyInput<'_>) -> Decision;
}

/// Runs a policy with the rules every policy shares: `desired` clamped into `[min, max]`
/// first, and the direction-aware convergence gate (D2: while `count < desired` only
/// scale-down is evaluated, while `count > desired` only scale-up).
pub fn decide(policy: &dyn ScalingPolicy, input: &PolicyInput<'_>) -> Decision {
    let o = input.options;
    let clamped = o.clamped_desired();
    if clamped != o.desired_count {
        return Decision::Clamp { to: clamped };
    }
    let gated = PolicyInput {
        allow_up: input.allow_up && input.count >= o.desired_count,
        allow_down: input.allow_down && input.count <= o.desired_count,
        ..*input
    };
    policy.decide(&gated)
}

/// The built-in policy a group's configuration selects.
pub fn for_config(config: &PolicyConfig) -> BuiltinPolicy {
    match config {
        PolicyConfig::Threshold => BuiltinPolicy::Threshold(ThresholdPolicy),
        PolicyConfig::Spare { spare } => BuiltinPolicy::Spare(SparePolicy { spare: *spare }),
        PolicyConfig::Target {
            target_stress,
            tolerance,
        } => BuiltinPolicy::Target(TargetPolicy {
            target_stress: *target_stress,
            tolerance: tolerance.unwrap_or(TargetPolicy::DEFAULT_TOLERANCE),
        }),
    }
}

/// One of the built-in policies, without allocation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BuiltinPolicy {
    /// [`ThresholdPolicy`].
    Threshold(ThresholdPolicy),
    /// [`SparePolicy`].
    Spare(SparePolicy),
    /// [`TargetPolicy`].
    Target(TargetPolicy),
}

impl BuiltinPolicy {
    /// The policy as a trait object.
    pub fn as_dyn(&self) -> &dyn ScalingPolicy {
        match self {
            BuiltinPolicy::Threshold(p) => p,
            BuiltinPolicy::Spare(p) => p,
            BuiltinPolicy::Target(p) => p,
        }
    }
}

/// The result of testing the newest `n` buckets against a rule.
enum Check {
    /// Every bucket satisfies it; the values.
    Met(Vec<f64>),
    /// Some bucket has no data.
    NoData,
    /// Some bucket's coverage is too low.
    LowCoverage,
    /// Some bucket does not satisfy it.
    NotMet,
}

/// Tests the newest `n` buckets; for an availability group without any instance (D1) every
/// bucket is a known 0 idle. With `coverage_of` set, each bucket needs samples from at least
/// half that many instances.
fn check_buckets(
    input: &PolicyInput<'_>,
    n: u32,
    coverage_of: Option<u32>,
    rule: impl Fn(f64) -> bool,
) -> Check {
    let n = n as usize;
    let zero_idle = input.class == TypeClass::Availability && input.count == 0;
    let known_zero = Bucket::known(0.0);
    let mut values = Vec::with_capacity(n);
    for i in 0..n {
        let bucket = if zero_idle {
            &known_zero
        } else {
            match input.window.buckets.get(i) {
                Some(b) => b,
                None => return Check::NoData,
            }
        };
        let Some(v) = bucket.value else {
            return Check::NoData;
        };
        if let Some(of) = coverage_of.filter(|_| !zero_idle)
            && f64::from(bucket.instances) < MIN_SCALE_DOWN_COVERAGE * f64::from(of)
        {
            return Check::LowCoverage;
        }
        if !rule(v) {
            return Check::NotMet;
        }
        values.push(v);
    }
    Check::Met(values)
}

/// Combines why neither direction was decided.
fn hold(up: Option<Check>, down: Option<Check>) -> Decision {
    let any = |f: fn(&Check) -> bool| up.as_ref().is_some_and(f) || down.as_ref().is_some_and(f);
    if any(|c| matches!(c, Check::NoData)) {
        Decision::Hold(HoldReason::NoData)
    } else if any(|c| matches!(c, Check::LowCoverage)) {
        Decision::Hold(HoldReason::LowCoverage)
    } else {
        Decision::Hold(HoldReason::WithinThresholds)
    }
}

/// The reference's step scaling on thresholds.
///
/// Up when every one of the newest `scaleUpPeriodsCount` buckets satisfies
/// `(count < max && m ≥ upThreshold) || count < min` (stress; availability: `m < upThreshold`),
/// to `min(desired + upQuantity, max)`. Else down when every one of the newest
/// `scaleDownPeriodsCount` buckets satisfies `count > min && m < downThreshold` (availability:
/// `m > downThreshold`), to `max(desired − downQuantity, min)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThresholdPolicy;

impl ScalingPolicy for ThresholdPolicy {
    fn name(&self) -> &'static str {
        "threshold"
    }

    fn decide(&self, input: &PolicyInput<'_>) -> Decision {
        let o = input.options;
        let count = input.count;
        if input.class == TypeClass::Stress && count == 0 {
            return Decision::Hold(HoldReason::NoLoadSignal);
        }
        let availability = input.class == TypeClass::Availability;
        let up = input.allow_up.then(|| {
            check_buckets(input, o.periods(true), None, |m| {
                let over = if availability {
                    m < o.scale_up_threshold
                } else {
                    m >= o.scale_up_threshold
                };
                (count < o.max_desired && over) || count < o.min_desired
            })
        });
        if let Some(Check::Met(metrics)) = up {
            let to = o
                .desired_count
                .saturating_add(o.scale_up_quantity)
                .min(o.max_desired);
            return Decision::Scale {
                direction: Direction::Up,
                to,
                metrics,
            };
        }
        let down = input.allow_down.then(|| {
            check_buckets(input, o.periods(false), Some(count), |m| {
                let under = if availability {
                    m > o.scale_down_threshold
                } else {
                    m < o.scale_down_threshold
                };
                count > o.min_desired && under
            })
        });
        if let Some(Check::Met(metrics)) = down {
            let to = o
                .desired_count
                .saturating_sub(o.scale_down_quantity)
                .max(o.min_desired);
            return Decision::Scale {
                direction: Direction::Down,
                to,
                metrics,
            };
        }
        hold(up, down)
    }
}

/// Keeps `spare` idle instances: the natural rule for Jibri, where each recording takes one
/// whole instance. Up as soon as the newest `scaleUpPeriodsCount` buckets all show fewer idle
/// instances than `spare`, by the deficit of the newest bucket; down when the newest
/// `scaleDownPeriodsCount` buckets all show more, by the smallest excess.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SparePolicy {
    /// Idle instances to keep.
    pub spare: u32,
}

impl ScalingPolicy for SparePolicy {
    fn name(&self) -> &'static str {
        "spare"
    }

    fn decide(&self, input: &PolicyInput<'_>) -> Decision {
        let o = input.options;
        let spare = f64::from(self.spare);
        if input.class == TypeClass::Stress && input.count == 0 {
            return Decision::Hold(HoldReason::NoLoadSignal);
        }
        let up = input
            .allow_up
            .then(|| check_buckets(input, o.periods(true), None, |idle| idle < spare));
        if let Some(Check::Met(metrics)) = &up {
            let deficit = (spare - metrics[0]).ceil().max(1.0) as u32;
            let to = input
                .count
                .saturating_add(deficit)
                .max(o.desired_count)
                .min(o.max_desired);
            if to > o.desired_count || input.count < o.min_desired {
                return Decision::Scale {
                    direction: Direction::Up,
                    to,
                    metrics: metrics.clone(),
                };
            }
        }
        let down = input.allow_down.then(|| {
            check_buckets(input, o.periods(false), Some(input.count), |idle| {
                idle > spare
            })
        });
        if let Some(Check::Met(metrics)) = &down {
            let smallest = metrics.iter().copied().fold(f64::INFINITY, f64::min);
            let excess = (smallest - spare).floor().max(0.0) as u32;
            let to = o.desired_count.saturating_sub(excess).max(o.min_desired);
            if to < o.desired_count {
                return Decision::Scale {
                    direction: Direction::Down,
                    to,
                    metrics: metrics.clone(),
                };
            }
        }
        hold(up, down)
    }
}

/// Target tracking on average stress, as Kubernetes' HPA: the recommendation of a bucket is
/// `ceil(count × stress / target)`. Nothing changes while `|stress/target − 1| ≤ tolerance`.
/// Up when the newest `scaleUpPeriodsCount` buckets are all above the band, to the smallest of
/// their recommendations; down when the newest `scaleDownPeriodsCount` buckets are all below,
/// to the largest of their recommendations (the stabilisation window).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TargetPolicy {
    /// Average stress to hold the group at.
    pub target_stress: f64,
    /// Relative band around the target with no change.
    pub tolerance: f64,
}

impl TargetPolicy {
    /// HPA's default tolerance.
    pub const DEFAULT_TOLERANCE: f64 = 0.1;

    fn recommendation(&self, count: u32, stress: f64) -> u32 {
        let r = (f64::from(count) * stress / self.target_stress).ceil();
        if r.is_finite() {
            r.clamp(0.0, f64::from(u32::MAX)) as u32
        } else {
            count
        }
    }
}

impl ScalingPolicy for TargetPolicy {
    fn name(&self) -> &'static str {
        "target"
    }

    fn decide(&self, input: &PolicyInput<'_>) -> Decision {
        let o = input.options;
        if input.count == 0 || self.target_stress.is_nan() || self.target_stress <= 0.0 {
            return Decision::Hold(HoldReason::NoLoadSignal);
        }
        let high = self.target_stress * (1.0 + self.tolerance);
        let low = self.target_stress * (1.0 - self.tolerance);
        let up = input
            .allow_up
            .then(|| check_buckets(input, o.periods(true), None, |m| m > high));
        if let Some(Check::Met(metrics)) = &up {
            let rec = metrics
                .iter()
                .map(|m| self.recommendation(input.count, *m))
                .min()
                .unwrap_or(input.count);
            let to = rec.min(o.max_desired).max(o.desired_count);
            if to > o.desired_count {
                return Decision::Scale {
                    direction: Direction::Up,
                    to,
                    metrics: metrics.clone(),
                };
            }
        }
        let down = input
            .allow_down
            .then(|| check_buckets(input, o.periods(false), Some(input.count), |m| m < low));
        if let Some(Check::Met(metrics)) = &down {
            let rec = metrics
                .iter()
                .map(|m| self.recommendation(input.count, *m))
                .max()
                .unwrap_or(input.count);
            let to = rec.max(o.min_desired).min(o.desired_count);
            if to < o.desired_count {
                return Decision::Scale {
                    direction: Direction::Down,
                    to,
                    metrics: metrics.clone(),
                };
            }
        }
        hold(up, down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(values: &[Option<f64>], instances: u32) -> Window {
        Window {
            buckets: values
                .iter()
                .map(|v| Bucket {
                    value: *v,
                    instances: if v.is_some() { instances } else { 0 },
                })
                .collect(),
        }
    }

    fn known(values: &[f64]) -> Window {
        window(&values.iter().map(|v| Some(*v)).collect::<Vec<_>>(), 1)
    }

    /// A JVB group: desired 1 unless changed, thresholds 0.8/0.3, periods 2/2 (A1–A4) or as set.
    fn opts(min: u32, desired: u32, max: u32) -> ScalingOptions {
        let mut o = ScalingOptions::with_bounds(min, desired, max);
        o.scale_up_periods_count = 2;
        o.scale_down_periods_count = 2;
        o
    }

    fn run(
        policy: &dyn ScalingPolicy,
        o: &ScalingOptions,
        class: TypeClass,
        count: u32,
        w: &Window,
    ) -> Decision {
        decide(
            policy,
            &PolicyInput {
                options: o,
                class,
                count,
                window: w,
                allow_up: true,
                allow_down: true,
            },
        )
    }

    fn threshold(o: &ScalingOptions, count: u32, w: &Window) -> Decision {
        run(&ThresholdPolicy, o, TypeClass::Stress, count, w)
    }

    fn up(to: u32, metrics: &[f64]) -> Decision {
        Decision::Scale {
            direction: Direction::Up,
            to,
            metrics: metrics.to_vec(),
        }
    }

    fn down(to: u32, metrics: &[f64]) -> Decision {
        Decision::Scale {
            direction: Direction::Down,
            to,
            metrics: metrics.to_vec(),
        }
    }

    #[test]
    fn a1_a2_scale_up_on_stress_at_or_above_threshold() {
        let o = opts(1, 1, 2);
        assert_eq!(threshold(&o, 1, &known(&[1.0, 1.0])), up(2, &[1.0, 1.0]));
        assert_eq!(
            threshold(&o, 1, &known(&[0.8, 0.8])),
            up(2, &[0.8, 0.8]),
            ">= is inclusive"
        );
        assert_eq!(
            threshold(&o, 1, &known(&[0.5, 0.5])),
            Decision::Hold(HoldReason::WithinThresholds)
        );
    }

    #[test]
    fn a3_a4_scale_down_below_threshold_above_min() {
        assert_eq!(
            threshold(&opts(0, 1, 2), 1, &known(&[0.1, 0.1])),
            down(0, &[0.1, 0.1])
        );
        assert_eq!(
            threshold(&opts(1, 1, 2), 1, &known(&[0.5, 0.5])),
            Decision::Hold(HoldReason::WithinThresholds)
        );
        assert_eq!(
            threshold(&opts(0, 1, 2), 1, &known(&[0.3, 0.3])),
            Decision::Hold(HoldReason::WithinThresholds),
            "< is strict"
        );
    }

    #[test]
    fn a5_to_a10_quantities_are_capped_and_floored() {
        let three = known(&[1.0, 1.0, 1.0]);
        let mut o = opts(1, 1, 2);
        o.scale_up_periods_count = 3;
        assert_eq!(threshold(&o, 1, &three), up(2, &[1.0, 1.0, 1.0]));
        o.scale_up_quantity = 5;
        assert_eq!(
            threshold(&o, 1, &three),
            up(2, &[1.0, 1.0, 1.0]),
            "A6 capped at max"
        );
        let mut o7 = opts(1, 1, 1);
        o7.scale_up_periods_count = 3;
        assert_eq!(
            threshold(&o7, 1, &three),
            Decision::Hold(HoldReason::WithinThresholds),
            "A7"
        );
        let low = known(&[0.1, 0.1, 0.1]);
        let mut o8 = opts(0, 1, 2);
        o8.scale_down_periods_count = 3;
        assert_eq!(threshold(&o8, 1, &low), down(0, &[0.1, 0.1, 0.1]));
        o8.scale_down_quantity = 5;
        assert_eq!(
            threshold(&o8, 1, &low),
            down(0, &[0.1, 0.1, 0.1]),
            "A9 floored at min"
        );
        let mut o10 = opts(1, 1, 2);
        o10.scale_down_periods_count = 3;
        assert_eq!(
            threshold(&o10, 1, &low),
            Decision::Hold(HoldReason::WithinThresholds)
        );
    }

    #[test]
    fn a11_no_change_cases() {
        // count ≠ desired with count 2 > desired 1 = max: only up is evaluated and count < max
        // is false (D2).
        let o = opts(1, 1, 1);
        assert_eq!(
            threshold(&o, 2, &known(&[0.1, 0.1])),
            Decision::Hold(HoldReason::WithinThresholds)
        );
        // Stress group with no instance: no load signal.
        assert_eq!(
            threshold(&opts(0, 0, 2), 0, &known(&[])),
            Decision::Hold(HoldReason::NoLoadSignal)
        );
    }

    #[test]
    fn d1_availability_groups_scale_from_zero() {
        let mut o = opts(0, 0, 3);
        o.scale_up_threshold = 1.0;
        o.scale_down_threshold = 2.0;
        let empty = window(&[None, None], 0);
        assert_eq!(
            run(&ThresholdPolicy, &o, TypeClass::Availability, 0, &empty),
            up(1, &[0.0, 0.0])
        );
    }

    #[test]
    fn d1_desired_outside_bounds_is_clamped_first() {
        let mut o = opts(2, 1, 5);
        assert_eq!(
            threshold(&o, 1, &known(&[0.5, 0.5])),
            Decision::Clamp { to: 2 }
        );
        o = opts(0, 9, 5);
        assert_eq!(
            threshold(&o, 9, &known(&[0.5, 0.5])),
            Decision::Clamp { to: 5 }
        );
    }

    #[test]
    fn d2_the_gate_keeps_only_the_direction_that_helps() {
        let o = opts(0, 3, 5);
        // count 2 < desired 3: a scale-up is not evaluated (the launcher is catching up)…
        assert_eq!(
            threshold(&o, 2, &known(&[0.9, 0.9])),
            Decision::Hold(HoldReason::WithinThresholds)
        );
        // …but a scale-down is.
        assert_eq!(threshold(&o, 2, &known(&[0.1, 0.1])), down(2, &[0.1, 0.1]));
        // count 4 > desired 3: only scale-up.
        assert_eq!(
            threshold(&o, 4, &known(&[0.1, 0.1])),
            Decision::Hold(HoldReason::WithinThresholds)
        );
        assert_eq!(threshold(&o, 4, &known(&[0.9, 0.9])), up(4, &[0.9, 0.9]));
    }

    #[test]
    fn d3_missing_or_thin_data_never_scales_down() {
        let o = opts(0, 2, 5);
        let missing = window(&[Some(0.1), None], 2);
        assert_eq!(
            threshold(&o, 2, &missing),
            Decision::Hold(HoldReason::NoData)
        );
        let thin = Window {
            buckets: vec![
                Bucket {
                    value: Some(0.1),
                    instances: 1,
                },
                Bucket {
                    value: Some(0.1),
                    instances: 1,
                },
            ],
        };
        assert_eq!(
            threshold(&o, 4, &thin),
            Decision::Hold(HoldReason::WithinThresholds),
            "gate: count>desired"
        );
        let o = opts(0, 4, 5);
        assert_eq!(
            threshold(&o, 4, &thin),
            Decision::Hold(HoldReason::LowCoverage)
        );
        let half = Window {
            buckets: vec![
                Bucket {
                    value: Some(0.1),
                    instances: 2,
                },
                Bucket {
                    value: Some(0.1),
                    instances: 2,
                },
            ],
        };
        assert_eq!(threshold(&o, 4, &half), down(3, &[0.1, 0.1]));
    }

    #[test]
    fn scheduled_inhibition_blocks_scale_down() {
        let o = opts(0, 1, 2);
        let d = decide(
            &ThresholdPolicy,
            &PolicyInput {
                options: &o,
                class: TypeClass::Stress,
                count: 1,
                window: &known(&[0.1, 0.1]),
                allow_up: true,
                allow_down: false,
            },
        );
        assert_eq!(d, Decision::Hold(HoldReason::WithinThresholds));
    }

    #[test]
    fn jibri_thresholds_read_idle_counts() {
        // The operator's view (§12): up when fewer than 1 idle for 2 periods, down when more
        // than 2 idle for 4 periods.
        let mut o = ScalingOptions::with_bounds(1, 3, 10);
        o.scale_up_threshold = 1.0;
        o.scale_down_threshold = 2.0;
        o.scale_up_periods_count = 2;
        o.scale_down_periods_count = 4;
        let busy = known(&[0.0, 0.5, 1.0, 1.0]);
        assert_eq!(
            run(&ThresholdPolicy, &o, TypeClass::Availability, 3, &busy),
            up(4, &[0.0, 0.5])
        );
        let idle = window(&[Some(3.0); 4], 3);
        assert_eq!(
            run(&ThresholdPolicy, &o, TypeClass::Availability, 3, &idle),
            down(2, &[3.0; 4])
        );
    }

    #[test]
    fn spare_policy_keeps_n_idle() {
        let p = SparePolicy { spare: 2 };
        let mut o = ScalingOptions::with_bounds(0, 4, 10);
        o.scale_up_periods_count = 1;
        o.scale_down_periods_count = 2;
        // 4 Jibris, 0.5 idle on average in the newest bucket: 2 more.
        let w = window(&[Some(0.5), Some(1.0)], 4);
        assert_eq!(run(&p, &o, TypeClass::Availability, 4, &w), up(6, &[0.5]));
        // 4 idle for two buckets: 2 too many.
        let w = window(&[Some(4.0), Some(4.0)], 4);
        assert_eq!(
            run(&p, &o, TypeClass::Availability, 4, &w),
            down(2, &[4.0, 4.0])
        );
        // 2.5 idle: within.
        let w = window(&[Some(2.5), Some(2.5)], 4);
        assert_eq!(
            run(&p, &o, TypeClass::Availability, 4, &w),
            Decision::Hold(HoldReason::WithinThresholds)
        );
        // From zero: nothing idle, so spare instances.
        let o0 = ScalingOptions::with_bounds(0, 0, 10);
        assert_eq!(
            run(&p, &o0, TypeClass::Availability, 0, &window(&[None], 0)),
            up(2, &[0.0, 0.0])
        );
    }

    #[test]
    fn target_policy_tracks_the_target_with_tolerance_and_stabilisation() {
        let p = TargetPolicy {
            target_stress: 0.5,
            tolerance: 0.1,
        };
        let mut o = ScalingOptions::with_bounds(1, 4, 20);
        o.scale_up_periods_count = 1;
        o.scale_down_periods_count = 3;
        // 4 bridges at 0.9: ceil(4·0.9/0.5) = 8.
        assert_eq!(
            run(&p, &o, TypeClass::Stress, 4, &window(&[Some(0.9)], 4)),
            up(8, &[0.9])
        );
        // Within the band.
        let w = window(&[Some(0.54), Some(0.46), Some(0.5)], 4);
        assert_eq!(
            run(&p, &o, TypeClass::Stress, 4, &w),
            Decision::Hold(HoldReason::WithinThresholds)
        );
        // Below the band: the largest recommendation of the window wins (stabilisation).
        let w = window(&[Some(0.1), Some(0.2), Some(0.3)], 4);
        assert_eq!(
            run(&p, &o, TypeClass::Stress, 4, &w),
            down(3, &[0.1, 0.2, 0.3])
        );
        // Capped by max.
        let w = window(&[Some(5.0)], 4);
        assert_eq!(run(&p, &o, TypeClass::Stress, 4, &w), up(20, &[5.0]));
        // No instance: no load signal.
        assert_eq!(
            run(&p, &o, TypeClass::Stress, 0, &window(&[None], 0)),
            Decision::Hold(HoldReason::NoLoadSignal)
        );
    }

    #[test]
    fn builtins_are_selected_by_config() {
        assert_eq!(
            for_config(&PolicyConfig::Threshold).as_dyn().name(),
            "threshold"
        );
        assert_eq!(
            for_config(&PolicyConfig::Spare { spare: 1 })
                .as_dyn()
                .name(),
            "spare"
        );
        let t = for_config(&PolicyConfig::Target {
            target_stress: 0.6,
            tolerance: None,
        });
        assert_eq!(
            t,
            BuiltinPolicy::Target(TargetPolicy {
                target_stress: 0.6,
                tolerance: 0.1
            })
        );
    }
}
