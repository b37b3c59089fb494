//! A deterministic generator for tests that run many random cases: the same seed gives the
//! same cases on every run.

/// A xorshift64 generator from `seed` (not zero): each call gives a value in `[0, m)`.
pub(crate) fn below(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x = seed;
    move |m| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    }
}
