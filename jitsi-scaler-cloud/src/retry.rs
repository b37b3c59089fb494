//! The retry loop shared by every provider call: exponential back-off with full jitter, waits
//! the cloud asks for (`Retry-After`), and a total time budget.

use std::future::Future;
use std::time::Duration;

use jitsi_scaler_core::backoff::Backoff;
use jitsi_scaler_core::provider::ProviderError;
use rand::Rng;
use tokio::time::Instant;

/// What one attempt achieved.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    /// Finished: success or an error not worth retrying.
    Done(Result<T, ProviderError>),
    /// Failed in a way worth retrying, after the given wait when the cloud asked for one.
    Retry {
        error: ProviderError,
        after: Option<Duration>,
    },
}

/// How long and how often to retry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RetryPolicy {
    /// Total time for all attempts and waits of one call.
    pub budget: Duration,
    /// Delays between attempts.
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// The longest wait between two attempts; a cloud asking for more ends the call.
    pub fn max_delay(&self) -> Duration {
        self.backoff.max
    }

    /// Runs `attempt` (given the attempt number from 0) until it is done, or until the next
    /// wait would leave the budget or exceed the maximum delay; then the last error is returned.
    pub async fn run<T, F, Fut>(&self, label: &str, mut attempt: F) -> Result<T, ProviderError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let start = Instant::now();
        let mut number = 0u32;
        loop {
            let (error, after) = match attempt(number).await {
                Attempt::Done(result) => return result,
                Attempt::Retry { error, after } => (error, after),
            };
            let delay = match after {
                Some(wait) if wait > self.max_delay() => {
                    tracing::warn!(call = label, attempt = number, wait_ms = millis(wait),
                        error = %error, "the cloud asks for a longer wait than allowed; giving up");
                    return Err(error);
                }
                Some(wait) => wait + small_jitter(self.backoff.base),
                None => self.backoff.delay(number),
            };
            if start.elapsed() + delay > self.budget {
                tracing::warn!(call = label, attempts = number + 1, budget_ms = millis(self.budget),
                    error = %error, "retry budget exhausted");
                return Err(error);
            }
            tracing::debug!(call = label, attempt = number, delay_ms = millis(delay),
                error = %error, "retrying");
            tokio::time::sleep(delay).await;
            number = number.saturating_add(1);
        }
    }
}

/// Up to `base` (at most one second) of extra wait, so clients released by the same
/// `Retry-After` do not return in lockstep.
fn small_jitter(base: Duration) -> Duration {
    let bound = base.min(Duration::from_secs(1));
    let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            budget: Duration::from_secs(60),
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_storm_of_transient_errors_ends_within_the_budget() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let result: Result<(), _> = policy()
            .run("test", |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async {
                    Attempt::Retry {
                        error: ProviderError::Transient("503".into()),
                        after: None,
                    }
                }
            })
            .await;
        assert_eq!(result, Err(ProviderError::Transient("503".into())));
        assert!(
            start.elapsed() <= Duration::from_secs(60),
            "stays within the budget"
        );
        assert!(calls.load(Ordering::SeqCst) > 2, "retried several times");
    }

    #[tokio::test(start_paused = true)]
    async fn honours_the_wait_the_cloud_asks_for() {
        let start = Instant::now();
        let result = policy()
            .run("test", |n| async move {
                if n == 0 {
                    Attempt::Retry {
                        error: ProviderError::Throttled {
                            retry_after: Some(Duration::from_secs(7)),
                            message: "slow down".into(),
                        },
                        after: Some(Duration::from_secs(7)),
                    }
                } else {
                    Attempt::Done(Ok(n))
                }
            })
            .await;
        assert_eq!(result, Ok(1));
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(7), "waited {waited:?}");
        assert!(waited <= Duration::from_millis(7500), "waited {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_beyond_the_maximum_delay_ends_the_call_at_once() {
        let start = Instant::now();
        let throttled = ProviderError::Throttled {
            retry_after: Some(Duration::from_secs(3600)),
            message: "rate limit".into(),
        };
        let result: Result<(), _> = policy()
            .run("test", |_| {
                let error = throttled.clone();
                async move {
                    Attempt::Retry {
                        error,
                        after: Some(Duration::from_secs(3600)),
                    }
                }
            })
            .await;
        assert_eq!(result, Err(throttled));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn final_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = policy()
            .run("test", |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Attempt::Done(Err(ProviderError::Config("bad token".into()))) }
            })
            .await;
        assert_eq!(result, Err(ProviderError::Config("bad token".into())));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
