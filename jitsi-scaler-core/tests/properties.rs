//! Property tests of the decision invariants: bounds always hold, protected instances are never
//! victims, and missing data never scales down.
#![allow(clippy::unwrap_used)]

use jitsi_scaler_core::group::{PolicyConfig, ScalingOptions};
use jitsi_scaler_core::instance::{
    BusyStatus, HealthStatus, InstanceFlags, InstanceRecord, InstanceState, JibriStatus, Metadata,
    StressStats, TypeClass,
};
use jitsi_scaler_core::metrics::{Bucket, Window};
use jitsi_scaler_core::plan::{Timings, select_victims};
use jitsi_scaler_core::policy::{self, Decision, Direction, PolicyInput};
use proptest::prelude::*;

const NOW: i64 = 1_773_856_800_000;

fn options() -> impl Strategy<Value = ScalingOptions> {
    (
        0u32..20,
        0u32..20,
        0u32..30,
        0u32..5,
        0u32..5,
        0.0f64..3.0,
        0.0f64..3.0,
        1u32..5,
        1u32..5,
    )
        .prop_map(
            |(a, b, desired, up_q, down_q, up_t, down_t, up_p, down_p)| {
                let (min, max) = (a.min(b), a.max(b));
                let mut o = ScalingOptions::with_bounds(min, desired, max);
                o.scale_up_quantity = up_q;
                o.scale_down_quantity = down_q;
                o.scale_up_threshold = up_t;
                o.scale_down_threshold = down_t;
                o.scale_up_periods_count = up_p;
                o.scale_down_periods_count = down_p;
                o
            },
        )
}

fn window() -> impl Strategy<Value = Window> {
    prop::collection::vec((prop::option::weighted(0.8, 0.0f64..4.0), 0u32..20), 0..6).prop_map(
        |b| Window {
            buckets: b
                .into_iter()
                .map(|(value, instances)| Bucket { value, instances })
                .collect(),
        },
    )
}

fn policy_config() -> impl Strategy<Value = PolicyConfig> {
    prop_oneof![
        Just(PolicyConfig::Threshold),
        (0u32..5).prop_map(|spare| PolicyConfig::Spare { spare }),
        (0.05f64..2.0, prop::option::of(0.0f64..0.5)).prop_map(|(target_stress, tolerance)| {
            PolicyConfig::Target {
                target_stress,
                tolerance,
            }
        }),
    ]
}

fn class() -> impl Strategy<Value = TypeClass> {
    prop_oneof![Just(TypeClass::Stress), Just(TypeClass::Availability)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the inputs, a new desired count lies within [min, max].
    #[test]
    fn decisions_keep_desired_within_bounds(
        o in options(), w in window(), count in 0u32..30, cfg in policy_config(), class in class(), inhibit in any::<bool>()
    ) {
        let built = policy::for_config(&cfg);
        let input = PolicyInput { options: &o, class, count, window: &w, allow_up: true, allow_down: !inhibit };
        match policy::decide(built.as_dyn(), &input) {
            Decision::Scale { to, direction, .. } => {
                prop_assert!(o.min_desired <= to && to <= o.max_desired, "{to} outside [{}, {}]", o.min_desired, o.max_desired);
                prop_assert!(!(inhibit && direction == Direction::Down));
            }
            Decision::Clamp { to } => prop_assert!(o.min_desired <= to && to <= o.max_desired),
            Decision::Hold(_) => {}
        }
    }

    /// A scale-down never rests on a bucket without data (D3).
    #[test]
    fn missing_data_never_scales_down(
        o in options(), w in window(), count in 1u32..30, cfg in policy_config(), class in class()
    ) {
        let built = policy::for_config(&cfg);
        let input = PolicyInput { options: &o, class, count, window: &w, allow_up: true, allow_down: true };
        if let Decision::Scale { direction: Direction::Down, metrics, .. } = policy::decide(built.as_dyn(), &input) {
            let needed = o.scale_down_periods_count as usize;
            prop_assert!(w.buckets.len() >= needed);
            prop_assert!(w.buckets.iter().take(needed).all(|b| b.value.is_some()), "scaled down on {:?}", w);
            prop_assert_eq!(metrics.len(), needed);
        }
    }

    /// Protected instances are never chosen, and at most `wanted` are.
    #[test]
    fn protected_instances_are_never_victims(
        specs in prop::collection::vec((any::<bool>(), 0u8..5, 0.0f64..100.0, any::<bool>()), 0..30),
        wanted in 0u32..35,
        class in class(),
    ) {
        let records: Vec<InstanceRecord> = specs
            .iter()
            .enumerate()
            .map(|(i, (protected, kind, load, provisioning))| record(i, *protected, *kind, *load, *provisioning))
            .collect();
        let refs: Vec<&InstanceRecord> = records.iter().collect();
        let victims = select_victims(class, &refs, wanted, NOW, &Timings::default());
        prop_assert!(victims.chosen.len() <= wanted as usize);
        prop_assert!(victims.chosen.iter().all(|r| !r.flags.is_protected(NOW)));
        let unprotected = records.iter().filter(|r| !r.flags.is_protected(NOW)).count();
        prop_assert_eq!(victims.chosen.len(), (wanted as usize).min(unprotected));
        prop_assert_eq!(victims.shortfall as usize, wanted as usize - victims.chosen.len());
    }
}

fn record(i: usize, protected: bool, kind: u8, load: f64, provisioning: bool) -> InstanceRecord {
    let mut state = InstanceState::polled(&format!("i-{i}"), "JVB", Metadata::default(), NOW);
    state.reported_at = Some(NOW);
    state.status.provisioning = provisioning;
    match kind {
        0 => {}
        1 => {
            state.status.stats = Some(StressStats {
                participants: Some(load),
                stress_level: Some(load / 100.0),
                ..StressStats::default()
            })
        }
        n => {
            let busy =
                [BusyStatus::Idle, BusyStatus::Busy, BusyStatus::Expired][usize::from(n - 2)];
            let mut j = JibriStatus::healthy(busy);
            if load > 50.0 {
                j.health.health_status = HealthStatus::Unhealthy;
            }
            state.status.jibri_status = Some(j);
        }
    }
    InstanceRecord {
        state: state.into(),
        flags: InstanceFlags {
            protected_until_ms: protected.then_some(NOW + 1),
            ..InstanceFlags::default()
        },
    }
}
