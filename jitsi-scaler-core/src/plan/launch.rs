//! The launcher's plan: how many instances to launch, or how many to shrink, with the
//! untracked throttle and the cloud guard (scaling-algorithms.md §4, §5, D8).

/// Cap of the untracked throttle threshold (`MAX_THROTTLE_THRESHOLD`).
pub const MAX_THROTTLE_THRESHOLD: u32 = 40;

/// The cloud guard's view: instances the cloud runs, and the extra it tolerates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloudGuard {
    /// Cloud instances running or provisioning.
    pub running: u32,
    /// `cloudGuardGraceCount`.
    pub grace: u32,
}

/// What the launcher decides from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchInput {
    /// Tracked instances not shutting down.
    pub count: u32,
    /// Running cloud instances without a live state.
    pub untracked: u32,
    /// Desired count (after this pass's autoscale decision).
    pub desired: u32,
    /// `minDesired`.
    pub min: u32,
    /// `maxDesired`.
    pub max: u32,
    /// `enableUntrackedThrottle` (absent ⇒ true).
    pub throttle: bool,
    /// Cap of the throttle threshold.
    pub max_throttle_threshold: u32,
    /// The cloud guard, when enabled and the cloud's list is known (a listing error means no
    /// guard, as the reference).
    pub guard: Option<CloudGuard>,
}

/// The launcher's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchPlan {
    /// No scaling activity needed.
    Idle,
    /// Launch this many instances.
    Launch {
        /// Instances to launch.
        quantity: u32,
    },
    /// Too many untracked instances: launching is skipped (D8).
    Throttled {
        /// Untracked instances.
        untracked: u32,
        /// The threshold they reached.
        threshold: u32,
    },
    /// The cloud already runs enough: launching is skipped.
    GuardSuppressed {
        /// Cloud instances running.
        running: u32,
        /// `desired + grace`.
        limit: u32,
    },
    /// Flag this many instances for scale-down.
    ScaleDown {
        /// Victims wanted: `count − max(min, desired)`.
        victims: u32,
    },
}

/// Plans the launcher's step (§5): scale up while `count + untracked` is below both desired and
/// max; else scale down while the tracked count is above both desired and min.
pub fn plan_launch(input: &LaunchInput) -> LaunchPlan {
    let effective = input.count.saturating_add(input.untracked);
    if effective < input.desired && effective < input.max {
        let mut quantity = input.max.min(input.desired) - effective;
        let threshold = input
            .max
            .saturating_add(1)
            .min(input.max_throttle_threshold);
        if input.throttle && input.untracked >= threshold {
            return LaunchPlan::Throttled {
                untracked: input.untracked,
                threshold,
            };
        }
        if let Some(guard) = input.guard
            && guard.running >= input.desired
        {
            let limit = input.desired.saturating_add(guard.grace);
            if guard.running >= limit {
                return LaunchPlan::GuardSuppressed {
                    running: guard.running,
                    limit,
                };
            }
            quantity = quantity.min(limit - guard.running);
        }
        return LaunchPlan::Launch { quantity };
    }
    if input.count > input.desired && input.count > input.min {
        return LaunchPlan::ScaleDown {
            victims: input.count - input.min.max(input.desired),
        };
    }
    LaunchPlan::Idle
}

/// The autoscaler's cloud guard (§4): while `count < desired`, if the cloud already runs at
/// least `desired` and `desired + grace` instances, the whole autoscale run is skipped.
pub fn autoscale_guard_suppresses(count: u32, desired: u32, guard: Option<CloudGuard>) -> bool {
    match guard {
        Some(g) if count < desired => {
            g.running >= desired && g.running >= desired.saturating_add(g.grace)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The LAUNCH vectors' group: tracked count 1, min 1.
    fn input(desired: u32, max: u32) -> LaunchInput {
        LaunchInput {
            count: 1,
            untracked: 0,
            desired,
            min: 1,
            max,
            throttle: true,
            max_throttle_threshold: MAX_THROTTLE_THRESHOLD,
            guard: None,
        }
    }

    fn guarded(desired: u32, max: u32, running: u32, grace: u32) -> LaunchInput {
        LaunchInput {
            guard: Some(CloudGuard { running, grace }),
            ..input(desired, max)
        }
    }

    #[test]
    fn l2_to_l7_basic_launcher_steps() {
        assert_eq!(plan_launch(&input(1, 1)), LaunchPlan::Idle, "L2");
        let l3 = LaunchInput {
            min: 0,
            ..input(0, 1)
        };
        assert_eq!(plan_launch(&l3), LaunchPlan::ScaleDown { victims: 1 }, "L3");
        assert_eq!(
            plan_launch(&input(2, 2)),
            LaunchPlan::Launch { quantity: 1 },
            "L4/L5/L7"
        );
        let l6 = LaunchInput {
            untracked: 1,
            ..input(2, 2)
        };
        assert_eq!(plan_launch(&l6), LaunchPlan::Idle, "L6: effective 2");
        let l10 = LaunchInput {
            untracked: 2,
            ..input(5, 5)
        };
        assert_eq!(plan_launch(&l10), LaunchPlan::Launch { quantity: 2 }, "L10");
    }

    #[test]
    fn l8_to_l16_cloud_guard() {
        assert_eq!(
            plan_launch(&guarded(2, 2, 2, 0)),
            LaunchPlan::GuardSuppressed {
                running: 2,
                limit: 2
            },
            "L8/L9/L11"
        );
        assert_eq!(
            plan_launch(&guarded(2, 5, 2, 2)),
            LaunchPlan::Launch { quantity: 1 },
            "L12"
        );
        assert_eq!(
            plan_launch(&guarded(2, 5, 4, 2)),
            LaunchPlan::GuardSuppressed {
                running: 4,
                limit: 4
            },
            "L13"
        );
        assert_eq!(
            plan_launch(&guarded(3, 6, 4, 3)),
            LaunchPlan::Launch { quantity: 2 },
            "L14"
        );
        assert_eq!(
            plan_launch(&guarded(5, 5, 3, 2)),
            LaunchPlan::Launch { quantity: 4 },
            "L15"
        );
        assert_eq!(
            plan_launch(&input(2, 2)),
            LaunchPlan::Launch { quantity: 1 },
            "L16: listing failed, no guard"
        );
    }

    #[test]
    fn d8_throttle_skips_instead_of_failing() {
        // max 5: threshold min(6, 40) = 6; 6 untracked with a count of 0.
        let i = LaunchInput {
            count: 0,
            untracked: 6,
            min: 0,
            ..input(10, 5)
        };
        assert_eq!(
            plan_launch(&i),
            LaunchPlan::Idle,
            "effective 6 ≥ max 5: nothing to launch"
        );
        let i = LaunchInput {
            count: 0,
            untracked: 6,
            min: 0,
            max: 20,
            max_throttle_threshold: 6,
            ..input(10, 20)
        };
        assert_eq!(
            plan_launch(&i),
            LaunchPlan::Throttled {
                untracked: 6,
                threshold: 6
            }
        );
        let off = LaunchInput {
            throttle: false,
            ..i
        };
        assert_eq!(plan_launch(&off), LaunchPlan::Launch { quantity: 4 });
    }

    #[test]
    fn scale_down_uses_the_tracked_count() {
        let i = LaunchInput {
            count: 5,
            untracked: 3,
            min: 1,
            ..input(2, 10)
        };
        assert_eq!(plan_launch(&i), LaunchPlan::ScaleDown { victims: 3 });
        let at_min = LaunchInput {
            count: 5,
            min: 5,
            ..input(2, 10)
        };
        assert_eq!(plan_launch(&at_min), LaunchPlan::Idle);
    }

    #[test]
    fn g1_to_g9_autoscale_guard() {
        let g = |running, grace| Some(CloudGuard { running, grace });
        assert!(autoscale_guard_suppresses(5, 10, g(10, 0)), "G1/G5");
        assert!(
            !autoscale_guard_suppresses(5, 5, g(10, 0)),
            "G2: count == desired"
        );
        assert!(!autoscale_guard_suppresses(1, 1, g(10, 0)), "G3");
        assert!(!autoscale_guard_suppresses(5, 10, g(5, 0)), "G4");
        assert!(!autoscale_guard_suppresses(5, 14, g(10, 2)), "G6");
        assert!(!autoscale_guard_suppresses(5, 10, g(10, 2)), "G7");
        assert!(autoscale_guard_suppresses(5, 10, g(12, 2)), "G8");
        assert!(
            !autoscale_guard_suppresses(5, 10, None),
            "G9: listing failed"
        );
    }
}
