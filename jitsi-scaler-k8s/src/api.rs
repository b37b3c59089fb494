//! Kubernetes API calls with a timeout and retries, and the classification of their errors.

use std::future::Future;
use std::time::Duration;

use jitsi_scaler_core::backoff::Backoff;
use jitsi_scaler_core::provider::ProviderError;

/// A failed Kubernetes API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API server or the transport answered with an error.
    #[error("{what}: {source}")]
    Kube {
        /// What was attempted (`get pod jibri-0`).
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// No answer within the call's timeout.
    #[error("{what}: no answer within {timeout:?}")]
    Timeout {
        /// What was attempted.
        what: String,
        /// The timeout that passed.
        timeout: Duration,
    },
}

impl ApiError {
    fn status(&self) -> Option<&kube::core::Status> {
        match self {
            ApiError::Kube {
                source: kube::Error::Api(status),
                ..
            } => Some(status),
            _ => None,
        }
    }

    /// The HTTP status code of an API error response.
    pub fn code(&self) -> Option<u16> {
        self.status().map(|s| s.code)
    }

    /// The API's machine-readable reason (`NotFound`, `AlreadyExists`, `Conflict`, …).
    pub fn reason(&self) -> Option<&str> {
        self.status().map(|s| s.reason.as_str())
    }

    /// 404: the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// 409: a conflict (stale `resourceVersion`, failed precondition, or already exists).
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }

    /// 409 `AlreadyExists` on create.
    pub fn is_already_exists(&self) -> bool {
        self.is_conflict() && self.reason() == Some("AlreadyExists")
    }

    /// 410: an expired `continue` token or resource version.
    pub fn is_gone(&self) -> bool {
        self.code() == Some(410)
    }

    /// Worth retrying: a timeout, a transport error, 429 or a 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Timeout { .. } => true,
            ApiError::Kube { source, .. } => match source {
                kube::Error::Api(status) => status.code == 429 || status.code >= 500,
                kube::Error::HyperError(_)
                | kube::Error::Service(_)
                | kube::Error::ReadEvents(_)
                | kube::Error::Auth(_) => true,
                _ => false,
            },
        }
    }

    /// The delay the API server asked for (`Retry-After` in a 429's details).
    pub fn retry_after(&self) -> Option<Duration> {
        let secs = self.status()?.details.as_ref()?.retry_after_seconds;
        (secs > 0).then(|| Duration::from_secs(u64::from(secs)))
    }

    /// The error classified for the engine.
    pub fn to_provider_error(&self) -> ProviderError {
        let message = self.to_string();
        match self.code() {
            _ if matches!(self, ApiError::Timeout { .. }) => ProviderError::Transient(message),
            Some(429) => ProviderError::Throttled {
                retry_after: self.retry_after(),
                message,
            },
            Some(403)
                if self
                    .status()
                    .is_some_and(|s| s.message.contains("exceeded quota")) =>
            {
                ProviderError::Capacity(message)
            }
            Some(401 | 403) => ProviderError::Config(message),
            Some(404) => ProviderError::NotFound(message),
            Some(400 | 422) => ProviderError::Config(message),
            Some(code) if code >= 500 => ProviderError::Transient(message),
            _ if self.is_transient() => ProviderError::Transient(message),
            _ => ProviderError::Fatal(message),
        }
    }
}

/// How an API call is made: its timeout per attempt and its retries on transient errors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CallPolicy {
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
}

impl CallPolicy {
    /// One attempt with the given timeout.
    pub const fn once(timeout: Duration) -> Self {
        Self {
            timeout,
            attempts: 1,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
        }
    }

    /// Up to `attempts` attempts with `backoff` between them.
    pub const fn retrying(timeout: Duration, attempts: u32, backoff: Backoff) -> Self {
        Self {
            timeout,
            attempts,
            backoff,
        }
    }

    /// Runs `call` until it succeeds, fails for good, or the attempts are used up.
    pub async fn run<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut attempt = 0;
        loop {
            let result = match tokio::time::timeout(self.timeout, call()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(source)) => ApiError::Kube {
                    what: what.to_owned(),
                    source,
                },
                Err(_) => ApiError::Timeout {
                    what: what.to_owned(),
                    timeout: self.timeout,
                },
            };
            attempt += 1;
            if attempt >= self.attempts.max(1) || !result.is_transient() {
                return Err(result);
            }
            let delay = result
                .retry_after()
                .unwrap_or_else(|| self.backoff.delay(attempt - 1))
                .min(self.backoff.max);
            tracing::debug!(what, attempt, ?delay, error = %result, "kubernetes call failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::{Status, response::StatusDetails};
    use std::sync::atomic::{AtomicU32, Ordering};

    fn api(code: u16, reason: &str, message: &str) -> ApiError {
        let mut status = Status::failure(message, reason);
        status.code = code;
        ApiError::Kube {
            what: "test".into(),
            source: kube::Error::Api(Box::new(status)),
        }
    }

    #[test]
    fn errors_are_classified() {
        assert!(api(404, "NotFound", "").is_not_found());
        assert!(api(409, "AlreadyExists", "").is_already_exists());
        assert!(api(409, "Conflict", "").is_conflict());
        assert!(!api(409, "Conflict", "").is_already_exists());
        assert!(api(503, "", "").is_transient());
        assert!(api(429, "TooManyRequests", "").is_transient());
        assert!(!api(422, "Invalid", "").is_transient());
        let timeout = ApiError::Timeout {
            what: "x".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(timeout.is_transient());
        assert_eq!(timeout.to_provider_error().class(), "transient");
        assert_eq!(
            api(422, "Invalid", "").to_provider_error().class(),
            "config"
        );
        assert_eq!(
            api(403, "Forbidden", "rbac").to_provider_error().class(),
            "config"
        );
        assert_eq!(
            api(
                403,
                "Forbidden",
                "pods \"x\" is forbidden: exceeded quota: q"
            )
            .to_provider_error()
            .class(),
            "capacity"
        );
        assert_eq!(
            api(404, "NotFound", "").to_provider_error().class(),
            "not_found"
        );
        assert_eq!(api(500, "", "").to_provider_error().class(), "transient");
    }

    #[test]
    fn throttling_carries_retry_after() {
        let mut status = Status::failure("slow down", "TooManyRequests");
        status.code = 429;
        status.details = Some(StatusDetails {
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            causes: Vec::new(),
            retry_after_seconds: 7,
        });
        let err = ApiError::Kube {
            what: "x".into(),
            source: kube::Error::Api(Box::new(status)),
        };
        assert_eq!(
            err.to_provider_error(),
            ProviderError::Throttled {
                retry_after: Some(Duration::from_secs(7)),
                message: err.to_string()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_then_gives_up() {
        let calls = AtomicU32::new(0);
        let policy = CallPolicy::retrying(
            Duration::from_secs(1),
            3,
            Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        );
        let result: Result<(), ApiError> = policy
            .run("get", || {
                calls.fetch_add(1, Ordering::SeqCst);
                async {
                    let mut s = Status::failure("down", "ServiceUnavailable");
                    s.code = 503;
                    Err(kube::Error::Api(Box::new(s)))
                }
            })
            .await;
        assert_eq!(result.map_err(|e| e.code()), Err(Some(503)));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let result: Result<(), ApiError> = policy
            .run("get", || {
                calls.fetch_add(1, Ordering::SeqCst);
                async {
                    let mut s = Status::failure("no", "NotFound");
                    s.code = 404;
                    Err(kube::Error::Api(Box::new(s)))
                }
            })
            .await;
        assert!(result.is_err_and(|e| e.is_not_found()));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a 404 is not retried");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_call_times_out() {
        let policy = CallPolicy::once(Duration::from_millis(500));
        let result: Result<(), ApiError> = policy
            .run("hang", std::future::pending::<Result<(), kube::Error>>)
            .await;
        assert!(matches!(result, Err(ApiError::Timeout { .. })));
    }
}
