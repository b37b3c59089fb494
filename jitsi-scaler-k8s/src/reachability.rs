//! Whether the Kubernetes API has been reachable lately: the readiness of the Jibri controller.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::api::ApiError;

/// How long the API may be unreachable before the controller reports not ready.
pub const DEFAULT_UNREACHABLE_AFTER: Duration = Duration::from_secs(30);

/// Tracks the outcome of Kubernetes API calls. Not ready once calls have failed without a
/// success for longer than the threshold; ready again at the next success.
#[derive(Debug)]
pub struct ApiReachability {
    threshold: Duration,
    failing_since: Mutex<Option<Instant>>,
}

impl ApiReachability {
    /// A tracker that reports unreachable after `threshold` of failures.
    pub fn new(threshold: Duration) -> Self {
        Self {
            threshold,
            failing_since: Mutex::new(None),
        }
    }

    /// A call succeeded (any answer from the API server counts, errors such as 404 included).
    pub fn success(&self) {
        *self.lock() = None;
    }

    /// A call failed without an answer from the API server (timeout, transport, 5xx).
    pub fn failure(&self) {
        self.lock().get_or_insert_with(Instant::now);
    }

    /// Records the outcome of a call: transient errors are failures, anything else is an
    /// answer.
    pub fn record<T>(&self, result: &Result<T, ApiError>) {
        match result {
            Err(e) if e.is_transient() => self.failure(),
            _ => self.success(),
        }
    }

    /// Not failing for longer than the threshold.
    pub fn is_reachable(&self) -> bool {
        self.lock()
            .is_none_or(|since| since.elapsed() <= self.threshold)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.failing_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for ApiReachability {
    fn default() -> Self {
        Self::new(DEFAULT_UNREACHABLE_AFTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn unreachable_only_after_the_threshold() {
        let r = ApiReachability::new(Duration::from_secs(30));
        assert!(r.is_reachable());
        r.failure();
        tokio::time::advance(Duration::from_secs(20)).await;
        r.failure();
        assert!(r.is_reachable(), "20 s of failures is tolerated");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!r.is_reachable(), "31 s since the first failure");
        r.success();
        assert!(r.is_reachable());
    }
}
