//! Exponential back-off with full jitter, for every retry in the project.

use std::time::Duration;

use rand::Rng;

/// Exponential back-off: attempt `n` (from 0) waits a random time in
/// `[0, min(max, base · factorⁿ)]` ("full jitter"), or exactly that bound without jitter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Bound of the first delay.
    pub base: Duration,
    /// Upper bound of every delay.
    pub max: Duration,
    /// Growth per attempt.
    pub factor: f64,
    /// Randomise within the bound (recommended: avoids synchronised retries).
    pub jitter: bool,
}

impl Backoff {
    /// Back-off from `base` doubling up to `max`, with jitter.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            factor: 2.0,
            jitter: true,
        }
    }

    /// The same back-off without jitter (deterministic, for schedules and tests).
    pub const fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The upper bound of attempt `attempt`'s delay.
    pub fn bound(&self, attempt: u32) -> Duration {
        let exp = self.factor.powi(attempt.min(64) as i32);
        let secs = (self.base.as_secs_f64() * exp).min(self.max.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// The delay before retry number `attempt` (0 = first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let bound = self.bound(attempt);
        if !self.jitter || bound.is_zero() {
            return bound;
        }
        let nanos = bound.as_nanos().min(u128::from(u64::MAX)) as u64;
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_grow_and_cap() {
        let b = Backoff::new(Duration::from_secs(30), Duration::from_secs(600)).without_jitter();
        let delays: Vec<u64> = (0..7).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(delays, vec![30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(b.delay(1000).as_secs(), 600, "no overflow on huge attempts");
    }

    #[test]
    fn jitter_stays_within_the_bound() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 0..10 {
            assert!(b.delay(attempt) <= b.bound(attempt));
        }
    }
}
