//! Wall-clock time for the engine: one place, so tests can pause and move it.
//!
//! Durations (intervals, timeouts, back-off) use `tokio::time`; timestamps (state freshness,
//! metric buckets, audit dates, schedules) use a [`Clock`]. [`TokioClock`] derives wall time
//! from tokio's clock, so a test with `tokio::time::pause()` moves both together.

use std::fmt::Debug;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as the wire formats use.
pub type UnixMillis = i64;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + Debug {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> UnixMillis;
}

/// The system's wall clock (production).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> UnixMillis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// Wall time that follows tokio's clock from a fixed origin: pausing and advancing tokio's
/// time in a test moves this clock by exactly the same amount.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin_ms: UnixMillis,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `origin_ms` now and advances with tokio's clock.
    pub fn starting_at(origin_ms: UnixMillis) -> Self {
        Self {
            origin_ms,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> UnixMillis {
        self.origin_ms + self.origin.elapsed().as_millis() as i64
    }
}

/// A clock moved by hand (tests of stores and decisions).
#[derive(Debug, Default)]
pub struct ManualClock {
    now: std::sync::atomic::AtomicI64,
}

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: UnixMillis) -> Self {
        Self {
            now: std::sync::atomic::AtomicI64::new(now_ms),
        }
    }

    /// Sets the time.
    pub fn set(&self, now_ms: UnixMillis) {
        self.now.store(now_ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance(&self, by: std::time::Duration) {
        self.now
            .fetch_add(by.as_millis() as i64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> UnixMillis {
        self.now.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Formats a timestamp the way the reference's JavaScript `Date.toISOString()` does:
/// `YYYY-MM-DDTHH:mm:ss.sssZ`.
pub fn iso8601(ms: UnixMillis) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => String::from("1970-01-01T00:00:00.000Z"),
    }
}

/// Parses an ISO-8601 / RFC 3339 instant (as produced by [`iso8601`] or any RFC 3339 writer).
pub fn parse_iso8601(s: &str) -> Option<UnixMillis> {
    s.trim()
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|ts| ts.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trip_matches_javascript_format() {
        assert_eq!(iso8601(1_773_856_800_000), "2026-03-18T18:00:00.000Z");
        assert_eq!(iso8601(1_795_346_890_252), "2026-11-22T11:28:10.252Z");
        assert_eq!(
            parse_iso8601("2026-03-18T18:00:00.000Z"),
            Some(1_773_856_800_000)
        );
        assert_eq!(
            parse_iso8601("2026-03-18T19:00:00+01:00"),
            Some(1_773_856_800_000)
        );
        assert_eq!(parse_iso8601("yesterday"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::starting_at(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        tokio::time::advance(std::time::Duration::from_secs(61)).await;
        assert_eq!(clock.now_ms(), 62_000);
    }
}
