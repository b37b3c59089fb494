//! One full decision pass (window summaries, policy, launch or shrink plan) over synthetic
//! fleets: every group of the fleet decided in turn on one core, as the engine's pass does
//! once it holds the snapshots. Throughput is per instance.

use std::hint::black_box;

use benches::fleet::{GroupFixture, NOW, fleet};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use jitsi_scaler_core::metrics::WindowScratch;
use jitsi_scaler_core::plan::{GroupInput, PassSettings, decide_group};

/// Decides every group; returns how many changed their desired count (so nothing is elided).
fn pass(fleet: &[GroupFixture], settings: &PassSettings, scratch: &mut WindowScratch) -> usize {
    let mut changed = 0;
    for g in fleet {
        let input = GroupInput {
            group: &g.group,
            grace_until_ms: None,
            instances: &g.instances,
            samples: &g.samples,
            cloud: Some(&g.cloud),
        };
        let decision = decide_group(&input, settings, NOW, scratch);
        changed += usize::from(decision.desired_changed);
        black_box(&decision);
    }
    changed
}

fn decision_pass(c: &mut Criterion) {
    let settings = PassSettings::default();
    let mut group = c.benchmark_group("decision_pass");
    group.sample_size(20);
    for (groups, per_group) in [(100, 10), (1_000, 10), (10_000, 10), (1_000, 100)] {
        let fleet = fleet(groups, per_group);
        let mut scratch = WindowScratch::default();
        let changed = pass(&fleet, &settings, &mut scratch);
        assert!(
            changed > 0 && changed < groups,
            "a mixed fleet: {changed} of {groups} change"
        );
        group.throughput(Throughput::Elements((groups * per_group) as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("{groups}x{per_group}")),
            |b| b.iter(|| pass(black_box(&fleet), &settings, &mut scratch)),
        );
    }
    group.finish();
}

criterion_group!(benches, decision_pass);
criterion_main!(benches);
