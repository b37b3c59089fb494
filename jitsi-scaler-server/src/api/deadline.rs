//! Time limits on request work that usually finishes at once.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use tokio::time::error::Elapsed;

/// `future`, limited to `limit` from the moment it first has to wait. A future that finishes
/// on its first poll (a check-in on an in-memory store, a handler with its body read) costs
/// no clock reading and no timer; one that waits gets the whole `limit` from then.
pub(super) async fn limit_once_waiting<F: Future>(
    limit: Duration,
    future: F,
) -> Result<F::Output, Elapsed> {
    let mut future = std::pin::pin!(future);
    match futures::poll!(future.as_mut()) {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => tokio::time::timeout(limit, future).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(2);

    #[tokio::test(start_paused = true)]
    async fn work_done_at_once_needs_no_timer() {
        assert_eq!(limit_once_waiting(LIMIT, async { 7 }).await, Ok(7));
        // Even a zero limit cannot cut work that never waited.
        assert_eq!(limit_once_waiting(Duration::ZERO, async { 8 }).await, Ok(8));
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_waits_gets_the_limit_and_no_more() {
        let within = async {
            tokio::time::sleep(LIMIT - Duration::from_millis(1)).await;
            1
        };
        assert_eq!(limit_once_waiting(LIMIT, within).await, Ok(1));
        let started = tokio::time::Instant::now();
        let past = async {
            tokio::time::sleep(LIMIT * 10).await;
            2
        };
        assert!(limit_once_waiting(LIMIT, past).await.is_err());
        assert_eq!(started.elapsed(), LIMIT);
    }
}
