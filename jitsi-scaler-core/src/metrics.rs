//! Metric windows: samples bucketed by `scalePeriod`, single-bucket gaps filled, and one
//! summary per bucket (scaling-algorithms.md §2).
//!
//! Bucket 0 is the newest. A bucket without any sample is *no data* ([`Bucket::value`] is
//! `None`), never zero load. The summary of a bucket is, over the instances with a sample in
//! it, the sum (availability: expected idle instances) or the mean (stress) of each instance's
//! mean value.
//!
//! This runs for every group on every pass, so it allocates nothing per instance: callers keep
//! a [`WindowScratch`] and reuse it.

use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::clock::UnixMillis;
use crate::instance::TypeClass;

/// One metric sample of one instance, timed by the server's receive time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    /// Server time of the report (ms).
    pub at_ms: UnixMillis,
    /// 1/0 idle for availability types, `stress_level` for stress types.
    pub value: f64,
}

/// The samples of one instance, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceSamples {
    /// Instance id (shared with the store's records of the instance).
    pub instance_id: Arc<str>,
    /// Samples, oldest first.
    pub samples: SharedSamples,
}

/// A read-only run of samples, oldest first, that shares its memory with the series it was
/// read from: a store's snapshot holds a reference to each series, not a copy (a store never
/// changes a series in place: a new sample makes a new one, see [`appended`]). Reads as a
/// slice. The samples sit in the same allocation as the reference counts, so reading them
/// follows one pointer.
#[derive(Clone, Debug, Default)]
pub struct SharedSamples {
    series: Arc<[MetricSample]>,
    from: usize,
}

impl SharedSamples {
    /// The samples of `series` from index `from` on (none past its end).
    pub fn tail(series: Arc<[MetricSample]>, from: usize) -> Self {
        let from = from.min(series.len());
        Self { series, from }
    }

    /// The samples as a slice.
    pub fn as_slice(&self) -> &[MetricSample] {
        &self.series[self.from..]
    }
}

impl Deref for SharedSamples {
    type Target = [MetricSample];

    fn deref(&self) -> &[MetricSample] {
        self.as_slice()
    }
}

impl<'a> IntoIterator for &'a SharedSamples {
    type Item = &'a MetricSample;
    type IntoIter = std::slice::Iter<'a, MetricSample>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl From<Vec<MetricSample>> for SharedSamples {
    fn from(samples: Vec<MetricSample>) -> Self {
        Self::tail(samples.into(), 0)
    }
}

impl FromIterator<MetricSample> for SharedSamples {
    fn from_iter<I: IntoIterator<Item = MetricSample>>(iter: I) -> Self {
        Vec::from_iter(iter).into()
    }
}

impl PartialEq for SharedSamples {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Serialize for SharedSamples {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedSamples {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<MetricSample>::deserialize(d).map(Self::from)
    }
}

/// Which buckets to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    /// The instant buckets are counted back from.
    pub now: UnixMillis,
    /// Width of a bucket (`scalePeriod`) in ms.
    pub period_ms: i64,
    /// Number of buckets (`max(scaleUpPeriodsCount, scaleDownPeriodsCount)`).
    pub periods: usize,
    /// Samples older than this are ignored whatever the buckets (`METRIC_TTL_SEC`).
    pub retention_ms: i64,
}

impl WindowSpec {
    /// The bucket index of a sample time, if inside the window.
    pub fn bucket_of(&self, at_ms: UnixMillis) -> Option<usize> {
        let age = self.now - at_ms;
        if age < 0 || age > self.retention_ms || self.period_ms <= 0 {
            return None;
        }
        let idx = (age / self.period_ms) as usize;
        (idx < self.periods).then_some(idx)
    }

    /// The oldest sample time that can fall in the window.
    pub fn oldest_ms(&self) -> UnixMillis {
        let span = self.period_ms.saturating_mul(self.periods as i64);
        self.now - span.min(self.retention_ms)
    }
}

/// The summary of one bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// The summary; `None` when no instance has a sample in the bucket (no data).
    pub value: Option<f64>,
    /// Instances contributing to the bucket (after gap fill): the bucket's coverage.
    pub instances: u32,
}

impl Bucket {
    /// A bucket known to be `value` without any sample (an availability group with no instance
    /// has a known 0 idle).
    pub fn known(value: f64) -> Self {
        Self {
            value: Some(value),
            instances: 0,
        }
    }
}

/// Bucket summaries, newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    /// One entry per bucket, bucket 0 first.
    pub buckets: Vec<Bucket>,
}

impl Window {
    /// The summaries as the audit shows them (`null` for no data).
    pub fn values(&self) -> Vec<Option<f64>> {
        self.buckets.iter().map(|b| b.value).collect()
    }

    /// The first `n` summaries, if all of them have data.
    pub fn known_values(&self, n: usize) -> Option<Vec<f64>> {
        self.buckets
            .iter()
            .take(n)
            .map(|b| b.value)
            .collect::<Option<Vec<_>>>()
            .filter(|v| v.len() == n)
    }
}

/// A gap fill: an instance's newest sample of bucket `idx + 1` copied into bucket `idx`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fill {
    /// Bucket filled.
    pub period_idx: usize,
    /// Value copied.
    pub value: f64,
}

/// Count marking a bucket that holds one filled value and no sample of its own.
const FILLED: u32 = u32::MAX;

/// Reusable per-instance work space.
#[derive(Debug, Default)]
pub struct WindowScratch {
    sums: Vec<f64>,
    counts: Vec<u32>,
    newest: Vec<(UnixMillis, f64)>,
    group_sum: Vec<f64>,
    group_n: Vec<u32>,
}

impl WindowScratch {
    fn reset_group(&mut self, periods: usize) {
        self.group_sum.clear();
        self.group_sum.resize(periods, 0.0);
        self.group_n.clear();
        self.group_n.resize(periods, 0);
    }

    fn reset_instance(&mut self, periods: usize) {
        self.sums.clear();
        self.sums.resize(periods, 0.0);
        self.counts.clear();
        self.counts.resize(periods, 0);
        self.newest.clear();
        self.newest.resize(periods, (UnixMillis::MIN, 0.0));
    }
}

/// Buckets one instance's samples into the scratch space and fills single-bucket gaps.
/// Calls `on_fill` for each fill. Returns false when the instance has no sample in the window.
fn bucket_instance(
    spec: &WindowSpec,
    samples: &[MetricSample],
    scratch: &mut WindowScratch,
    mut on_fill: impl FnMut(Fill),
) -> bool {
    let p = spec.periods;
    scratch.reset_instance(p);
    let mut seen = false;
    for s in samples {
        if let Some(idx) = spec.bucket_of(s.at_ms) {
            seen = true;
            scratch.sums[idx] += s.value;
            scratch.counts[idx] += 1;
            if s.at_ms >= scratch.newest[idx].0 {
                scratch.newest[idx] = (s.at_ms, s.value);
            }
        }
    }
    if !seen || p < 2 {
        return seen;
    }
    // Presence is the instance's own samples, never a fill, so only single-bucket holes (and a
    // missing newest bucket) are filled.
    let present = |counts: &[u32], idx: usize| counts[idx] > 0 && counts[idx] != FILLED;
    for idx in (0..=p - 2).rev() {
        let absent = scratch.counts[idx] == 0;
        let next_present = present(&scratch.counts, idx + 1);
        let prev_present = idx == 0 || present(&scratch.counts, idx - 1);
        if absent && next_present && prev_present {
            let value = scratch.newest[idx + 1].1;
            scratch.sums[idx] = value;
            scratch.counts[idx] = FILLED;
            on_fill(Fill {
                period_idx: idx,
                value,
            });
        }
    }
    true
}

/// Adds one series kept oldest first to the group's sums in one walk, without per-instance
/// scratch or a division per sample: each bucket the instance has samples in adds its mean,
/// and each single-bucket hole between two of them (or a missing newest bucket) adds the newest
/// value of the older neighbour. Returns false, having added nothing, when the series is out
/// of order (the general path then runs).
fn add_sorted(spec: &WindowSpec, samples: &[MetricSample], scratch: &mut WindowScratch) -> bool {
    let period = spec.period_ms;
    if period <= 0 || spec.retention_ms < 0 || !samples.is_sorted_by_key(|s| s.at_ms) {
        return false;
    }
    let span = period.saturating_mul(spec.periods as i64);
    // In the window: 0 <= age <= min(span - 1, retention).
    let oldest = spec.now.saturating_sub((span - 1).min(spec.retention_ms));
    let from = samples.partition_point(|s| s.at_ms < oldest);
    // Samples are timed by the server as they arrive, so the newest is rarely after `now`.
    let to = match samples.last() {
        Some(newest) if newest.at_ms > spec.now => samples.partition_point(|s| s.at_ms <= spec.now),
        _ => samples.len(),
    };
    let window = samples.get(from..to).unwrap_or_default();
    let sums = &mut scratch.group_sum;
    let counts = &mut scratch.group_n;
    // The older neighbour of the bucket being walked: its index and newest value.
    let mut older: Option<(usize, f64)> = None;
    // The bucket being walked: its index, the first time past it, and its samples so far.
    let (mut idx, mut past) = (usize::MAX, UnixMillis::MIN);
    let (mut sum, mut n, mut newest) = (0.0, 0u32, 0.0);
    // `older` is passed in rather than captured: captured, the closure is not inlined and the
    // pass costs 9 % more instructions (callgrind).
    let mut close =
        |idx: usize, sum: f64, n: u32, newest: f64, older: &mut Option<(usize, f64)>| {
            sums[idx] += if n == 1 { sum } else { sum / f64::from(n) };
            counts[idx] += 1;
            if let Some((k, value)) = *older
                && k == idx + 2
            {
                sums[idx + 1] += value;
                counts[idx + 1] += 1;
            }
            *older = Some((idx, newest));
        };
    for s in window {
        if s.at_ms >= past {
            if n > 0 {
                close(idx, sum, n, newest, &mut older);
            }
            idx = ((spec.now - s.at_ms) / period) as usize;
            past = spec.now - idx as i64 * period + 1;
            (sum, n) = (0.0, 0);
        }
        sum += s.value;
        n += 1;
        newest = s.value;
    }
    if n > 0 {
        close(idx, sum, n, newest, &mut older);
    }
    if let Some((1, value)) = older {
        // No sample in the newest bucket: it takes bucket 1's newest value.
        sums[0] += value;
        counts[0] += 1;
    }
    true
}

/// Summarises the window of a group: every instance's samples, bucketed, gap-filled and
/// reduced per bucket by the type class.
pub fn summarize<'a>(
    class: TypeClass,
    spec: &WindowSpec,
    instances: impl IntoIterator<Item = &'a [MetricSample]>,
    scratch: &mut WindowScratch,
) -> Window {
    summarize_by(class, spec, instances, scratch, true)
}

fn summarize_by<'a>(
    class: TypeClass,
    spec: &WindowSpec,
    instances: impl IntoIterator<Item = &'a [MetricSample]>,
    scratch: &mut WindowScratch,
    single_walk: bool,
) -> Window {
    let p = spec.periods;
    scratch.reset_group(p);
    for samples in instances {
        if single_walk && add_sorted(spec, samples, scratch) {
            continue;
        }
        if !bucket_instance(spec, samples, scratch, |_| {}) {
            continue;
        }
        for idx in 0..p {
            let n = scratch.counts[idx];
            if n == 0 {
                continue;
            }
            let mean = if n == FILLED {
                scratch.sums[idx]
            } else {
                scratch.sums[idx] / f64::from(n)
            };
            scratch.group_sum[idx] += mean;
            scratch.group_n[idx] += 1;
        }
    }
    let buckets = (0..p)
        .map(|idx| {
            let n = scratch.group_n[idx];
            let value = (n > 0).then(|| match class {
                TypeClass::Availability => scratch.group_sum[idx],
                TypeClass::Stress => scratch.group_sum[idx] / f64::from(n),
            });
            Bucket {
                value,
                instances: n,
            }
        })
        .collect();
    Window { buckets }
}

/// The `(instance, value)` entries of each bucket.
pub type BucketContents = Vec<Vec<(String, f64)>>;

/// The reference's `getMetricInventoryPerPeriod`: per bucket, the `(instance, value)` entries
/// after gap fill, and the fills made (for tests and diagnostics; [`summarize`] is the fast path).
pub fn bucket_contents(
    spec: &WindowSpec,
    instances: &[InstanceSamples],
) -> (BucketContents, Vec<(String, Fill)>) {
    let mut scratch = WindowScratch::default();
    let mut buckets: Vec<Vec<(String, f64)>> = vec![Vec::new(); spec.periods];
    let mut fills = Vec::new();
    for inst in instances {
        let mut filled = Vec::new();
        bucket_instance(spec, &inst.samples, &mut scratch, |f| filled.push(f));
        for s in &inst.samples {
            if let Some(idx) = spec.bucket_of(s.at_ms) {
                buckets[idx].push((inst.instance_id.to_string(), s.value));
            }
        }
        for f in filled {
            buckets[f.period_idx].push((inst.instance_id.to_string(), f.value));
            fills.push((inst.instance_id.to_string(), f));
        }
    }
    (buckets, fills)
}

/// A series kept oldest first with `sample` appended and the samples older than `oldest_ms`
/// dropped: one allocation of exactly the samples kept, the counts and samples together.
pub fn appended(
    series: &[MetricSample],
    oldest_ms: UnixMillis,
    sample: MetricSample,
) -> Arc<[MetricSample]> {
    let keep_from = series.partition_point(|s| s.at_ms < oldest_ms);
    let kept = series.get(keep_from..).unwrap_or_default();
    kept.iter()
        .copied()
        .chain(std::iter::once(sample))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = 1_795_346_890_000;

    fn spec(period_s: i64, periods: usize) -> WindowSpec {
        WindowSpec {
            now: NOW,
            period_ms: period_s * 1000,
            periods,
            retention_ms: 3_600_000,
        }
    }

    fn series(id: &str, points: &[(f64, f64)]) -> InstanceSamples {
        // (seconds ago, value), given newest or oldest first: sorted here.
        let mut samples: Vec<MetricSample> = points
            .iter()
            .map(|&(ago, value)| MetricSample {
                at_ms: NOW - (ago * 1000.0) as i64,
                value,
            })
            .collect();
        samples.sort_by_key(|s| s.at_ms);
        InstanceSamples {
            instance_id: id.into(),
            samples: samples.into(),
        }
    }

    fn summary(class: TypeClass, spec: &WindowSpec, inst: &[InstanceSamples]) -> Vec<Option<f64>> {
        let mut scratch = WindowScratch::default();
        summarize(
            class,
            spec,
            inst.iter().map(|i| i.samples.as_slice()),
            &mut scratch,
        )
        .values()
    }

    #[test]
    fn w1_a_missing_newest_bucket_is_filled_from_the_previous() {
        let s = spec(10, 2);
        let a = [series("A", &[(10.35, 0.4)])];
        let (buckets, fills) = bucket_contents(&s, &a);
        assert_eq!(buckets[0], vec![("A".to_owned(), 0.4)]);
        assert_eq!(buckets[1], vec![("A".to_owned(), 0.4)]);
        assert_eq!(
            fills,
            vec![(
                "A".to_owned(),
                Fill {
                    period_idx: 0,
                    value: 0.4
                }
            )]
        );
    }

    #[test]
    fn w2_w3_samples_outside_the_window_are_dropped() {
        let s = spec(60, 2);
        let a = [series("A", &[(1.0, 0.5), (61.0, 0.4), (121.0, 0.4)])];
        let (buckets, fills) = bucket_contents(&s, &a);
        assert_eq!(buckets.len(), 2);
        assert_eq!(buckets[0], vec![("A".to_owned(), 0.5)]);
        assert_eq!(
            buckets[1],
            vec![("A".to_owned(), 0.4)],
            "the -121 s sample is dropped"
        );
        assert!(fills.is_empty());
        let a = [series("A", &[(1.0, 0.5), (61.0, 0.4)])];
        let (buckets, _) = bucket_contents(&s, &a);
        assert!(buckets.iter().all(|b| b.iter().any(|(id, _)| id == "A")));
    }

    #[test]
    fn w4_a_sample_two_periods_old_is_outside_two_buckets() {
        let s = spec(10, 2);
        let a = [series("A", &[(0.35, 0.5), (20.35, 0.4)])];
        let (buckets, fills) = bucket_contents(&s, &a);
        assert_eq!(buckets[0], vec![("A".to_owned(), 0.5)]);
        assert!(buckets[1].is_empty());
        assert!(fills.is_empty(), "the oldest bucket is never filled");
    }

    #[test]
    fn s1_to_s3_stress_summaries_are_means_of_means() {
        let s = spec(60, 2);
        let one = [series("A", &[(1.0, 0.5), (61.0, 0.4)])];
        assert_eq!(
            summary(TypeClass::Stress, &s, &one),
            vec![Some(0.5), Some(0.4)]
        );
        let two = [series("A", &[(1.0, 1.0), (2.0, 0.5), (61.0, 0.4)])];
        assert_eq!(
            summary(TypeClass::Stress, &s, &two),
            vec![Some(0.75), Some(0.4)]
        );
        let three = [
            series("A", &[(1.0, 10.0), (2.0, 5.0), (61.0, 5.0)]),
            series("B", &[(1.0, 1.0), (61.0, 1.0)]),
        ];
        assert_eq!(
            summary(TypeClass::Stress, &s, &three),
            vec![Some(4.25), Some(3.0)]
        );
    }

    #[test]
    fn s4_availability_summaries_are_sums_of_means() {
        let s = spec(60, 2);
        let one = [series("A", &[(1.0, 0.5), (61.0, 0.4)])];
        assert_eq!(
            summary(TypeClass::Availability, &s, &one),
            vec![Some(0.5), Some(0.4)]
        );
        let two = [series("A", &[(1.0, 1.0), (2.0, 0.5), (61.0, 0.4)])];
        assert_eq!(
            summary(TypeClass::Availability, &s, &two),
            vec![Some(0.75), Some(0.4)]
        );
        let three = [
            series("A", &[(1.0, 10.0), (2.0, 5.0), (61.0, 5.0)]),
            series("B", &[(1.0, 1.0), (61.0, 1.0)]),
        ];
        assert_eq!(
            summary(TypeClass::Availability, &s, &three),
            vec![Some(8.5), Some(6.0)]
        );
    }

    #[test]
    fn d3_an_empty_bucket_is_no_data_not_zero() {
        let s = spec(60, 3);
        let a = [series("A", &[(130.0, 0.9)])];
        let mut scratch = WindowScratch::default();
        let w = summarize(
            TypeClass::Stress,
            &s,
            a.iter().map(|i| i.samples.as_slice()),
            &mut scratch,
        );
        // Bucket 2 has the sample; bucket 1 is not filled (bucket 0 is empty too), nor is
        // bucket 0 (bucket 1 is empty).
        assert_eq!(w.values(), vec![None, None, Some(0.9)]);
        assert_eq!(w.buckets[0].instances, 0);
        assert_eq!(w.known_values(1), None);
        assert_eq!(w.known_values(0), Some(vec![]));
        let empty: [InstanceSamples; 0] = [];
        assert_eq!(
            summary(TypeClass::Availability, &s, &empty),
            vec![None, None, None]
        );
    }

    #[test]
    fn only_single_bucket_holes_are_filled() {
        let s = spec(60, 4);
        // Present in buckets 0 and 3 only: 1 is not filled (2 absent), 2 is not (1 absent).
        let a = [series("A", &[(1.0, 0.2), (181.0, 0.8)])];
        let (buckets, fills) = bucket_contents(&s, &a);
        assert!(fills.is_empty());
        assert!(buckets[1].is_empty() && buckets[2].is_empty());
        // Present in 0 and 2: bucket 1 is filled from 2's newest sample.
        let a = [series("A", &[(1.0, 0.2), (125.0, 0.7), (170.0, 0.6)])];
        let (buckets, fills) = bucket_contents(&s, &a);
        assert_eq!(
            fills,
            vec![(
                "A".to_owned(),
                Fill {
                    period_idx: 1,
                    value: 0.7
                }
            )]
        );
        assert_eq!(buckets[1], vec![("A".to_owned(), 0.7)]);
    }

    #[test]
    fn coverage_counts_instances_per_bucket() {
        let s = spec(60, 2);
        let inst = [
            series("A", &[(1.0, 0.2), (61.0, 0.2)]),
            series("B", &[(61.0, 0.4)]),
            series("C", &[]),
        ];
        let mut scratch = WindowScratch::default();
        let w = summarize(
            TypeClass::Stress,
            &s,
            inst.iter().map(|i| i.samples.as_slice()),
            &mut scratch,
        );
        assert_eq!(w.buckets[0].instances, 2, "B is filled into bucket 0");
        assert_eq!(w.buckets[1].instances, 2);
    }

    #[test]
    fn the_single_walk_agrees_with_the_general_path() {
        // Deterministic series with duplicates, gaps, future and expired samples, and (one in
        // five) out of order, over windows of 1 to 64 buckets.
        let mut next = crate::test_rng::below(0x9e37_79b9_7f4a_7c15);
        for round in 0..400 {
            let periods = 1 + next(64) as usize;
            let s = WindowSpec {
                now: NOW,
                period_ms: 1_000 + next(60_000) as i64,
                periods,
                retention_ms: 60_000 + next(3_600_000) as i64,
            };
            let span = s.period_ms * periods as i64;
            let instances: Vec<Vec<MetricSample>> = (0..1 + next(6))
                .map(|_| {
                    let mut v: Vec<MetricSample> = (0..next(40))
                        .map(|_| MetricSample {
                            at_ms: NOW + 5_000 - next((span + 20_000) as u64) as i64,
                            value: next(1000) as f64 / 7.0,
                        })
                        .collect();
                    if next(5) > 0 {
                        v.sort_by_key(|m| m.at_ms);
                    }
                    v
                })
                .collect();
            for class in [TypeClass::Stress, TypeClass::Availability] {
                let mut scratch = WindowScratch::default();
                let fast = summarize(class, &s, instances.iter().map(Vec::as_slice), &mut scratch);
                let general = summarize_by(
                    class,
                    &s,
                    instances.iter().map(Vec::as_slice),
                    &mut scratch,
                    false,
                );
                assert_eq!(fast, general, "round {round}: {s:?}");
            }
        }
    }

    #[test]
    fn appending_keeps_only_recent_samples() {
        let s = series("A", &[(300.0, 1.0), (200.0, 2.0), (100.0, 3.0)]).samples;
        let sample = |at_ms, value| MetricSample { at_ms, value };
        let kept = appended(&s, NOW - 250_000, sample(NOW, 4.0));
        assert_eq!(
            kept.iter().map(|x| x.value).collect::<Vec<_>>(),
            vec![2.0, 3.0, 4.0]
        );
        assert_eq!(s.len(), 3, "the series appended to is left as it was");
        let only_new = appended(&kept, NOW + 1, sample(NOW + 1, 5.0));
        assert_eq!(
            only_new.iter().map(|x| x.value).collect::<Vec<_>>(),
            vec![5.0]
        );
    }
}
