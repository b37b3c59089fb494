//! The HTTP client the cloud providers share: connect and request timeouts, retries with
//! exponential back-off and jitter within a time budget, `Retry-After`, a circuit breaker, and
//! the mapping of every failure to a [`ProviderError`] class.
//!
//! Retries: transport failures before the request was sent (connect errors) and 429 are retried
//! for every request; other transport failures, 5xx and the configured retryable status codes
//! only for idempotent requests (a non-idempotent request whose outcome is unknown is left to
//! the provider, which can look before trying again).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use jitsi_scaler_core::backoff::Backoff;
use jitsi_scaler_core::provider::ProviderError;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::env::{ConfigError, Env, duration_ms};
use crate::retry::{Attempt, RetryPolicy, millis};

/// Largest response body read; a bigger one is an error.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Timeouts, retry and circuit-breaker settings of a provider's HTTP calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpConfig {
    /// Time to establish a connection (default 5 s).
    #[serde(rename = "connectTimeoutMs", with = "duration_ms")]
    pub connect_timeout: Duration,
    /// Time for a whole request, body included (default 30 s).
    #[serde(rename = "requestTimeoutMs", with = "duration_ms")]
    pub request_timeout: Duration,
    /// Total time for all attempts of one call (default 60 s, `REPORT_EXT_CALL_MAX_TIME_IN_SECONDS`).
    #[serde(rename = "retryBudgetMs", with = "duration_ms")]
    pub retry_budget: Duration,
    /// Bound of the first back-off delay (default 500 ms).
    #[serde(rename = "retryBaseDelayMs", with = "duration_ms")]
    pub retry_base_delay: Duration,
    /// Longest wait between attempts (default 30 s, `REPORT_EXT_CALL_MAX_DELAY_IN_SECONDS`); a
    /// cloud asking for a longer wait ends the call with a throttled error carrying that wait.
    #[serde(rename = "retryMaxDelayMs", with = "duration_ms")]
    pub retry_max_delay: Duration,
    /// Status codes retried for idempotent requests besides 5xx (default 429 and 409,
    /// `REPORT_EXT_CALL_RETRYABLE_STATUS_CODES`); 429 is retried for every request.
    pub retryable_status_codes: Vec<u16>,
    /// Consecutive failed calls (transient or throttled after all retries) that open the
    /// circuit breaker; 0 disables it (default 5).
    pub circuit_breaker_threshold: u32,
    /// How long an open circuit fails calls at once before letting one through (default 30 s).
    #[serde(rename = "circuitBreakerCooldownMs", with = "duration_ms")]
    pub circuit_breaker_cooldown: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry_budget: Duration::from_secs(60),
            retry_base_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(30),
            retryable_status_codes: vec![429, 409],
            circuit_breaker_threshold: 5,
            circuit_breaker_cooldown: Duration::from_secs(30),
        }
    }
}

impl HttpConfig {
    /// Defaults, overridden by `CLOUD_HTTP_CONNECT_TIMEOUT_MS`, `CLOUD_HTTP_REQUEST_TIMEOUT_MS`,
    /// `REPORT_EXT_CALL_MAX_TIME_IN_SECONDS`, `REPORT_EXT_CALL_MAX_DELAY_IN_SECONDS` and
    /// `REPORT_EXT_CALL_RETRYABLE_STATUS_CODES` (space separated) from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(crate::env::process_env)
    }

    /// [`from_env`](Self::from_env) with variables read through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        let mut config = Self::default();
        if let Some(d) = env.millis("CLOUD_HTTP_CONNECT_TIMEOUT_MS")? {
            config.connect_timeout = d;
        }
        if let Some(d) = env.millis("CLOUD_HTTP_REQUEST_TIMEOUT_MS")? {
            config.request_timeout = d;
        }
        if let Some(d) = env.seconds("REPORT_EXT_CALL_MAX_TIME_IN_SECONDS")? {
            config.retry_budget = d;
        }
        if let Some(d) = env.seconds("REPORT_EXT_CALL_MAX_DELAY_IN_SECONDS")? {
            config.retry_max_delay = d;
        }
        if let Some(codes) = env.get("REPORT_EXT_CALL_RETRYABLE_STATUS_CODES") {
            config.retryable_status_codes = codes
                .split([' ', ','])
                .filter(|c| !c.is_empty())
                .map(|c| {
                    c.parse::<u16>()
                        .ok()
                        .filter(|c| (100..=599).contains(c))
                        .ok_or_else(|| {
                            ConfigError::invalid(
                                "REPORT_EXT_CALL_RETRYABLE_STATUS_CODES",
                                format!("{c:?} is not an HTTP status code"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?;
        }
        Ok(config)
    }

    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            budget: self.retry_budget,
            backoff: Backoff::new(self.retry_base_delay, self.retry_max_delay),
        }
    }
}

/// One call to a cloud API.
#[derive(Clone, Debug)]
pub(crate) struct ApiRequest {
    pub method: Method,
    pub url: Url,
    /// JSON body, sent as is.
    pub body: Option<Bytes>,
    /// Extra headers (authentication is added by the [`Api`]).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Sending it twice has the effect of sending it once.
    pub idempotent: bool,
    /// Statuses besides 2xx that are returned as answers, not errors (404 on a delete).
    pub accept: &'static [u16],
}

impl ApiRequest {
    pub fn new(method: Method, url: Url) -> Self {
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE
        );
        Self {
            method,
            url,
            body: None,
            headers: Vec::new(),
            idempotent,
            accept: &[],
        }
    }

    pub fn json(mut self, body: &impl Serialize) -> Result<Self, ProviderError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ProviderError::Fatal(format!("cannot encode the request body: {e}")))?;
        self.body = Some(Bytes::from(bytes));
        Ok(self)
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Result<Self, ProviderError> {
        let value = HeaderValue::from_str(value)
            .map_err(|_| ProviderError::Fatal(format!("invalid value for header {name}")))?;
        self.headers.push((HeaderName::from_static(name), value));
        Ok(self)
    }

    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    pub fn accept(mut self, statuses: &'static [u16]) -> Self {
        self.accept = statuses;
        self
    }

    /// `METHOD /path` for logs (no query: it may be long; never any credential).
    pub fn label(&self) -> String {
        format!("{} {}", self.method, self.url.path())
    }
}

/// A cloud's answer.
#[derive(Clone, Debug)]
pub(crate) struct ApiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ApiResponse {
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ProviderError::Fatal(format!(
                "unexpected {what} answer (HTTP {}): {e}; body starts with {:?}",
                self.status.as_u16(),
                snippet(&self.body)
            ))
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a provider adds to the shared client: authentication and error classification.
pub(crate) trait Api: Send + Sync {
    /// Adds credentials to a request about to be sent; called for every attempt.
    fn authorize(&self, request: &mut reqwest::Request) -> Result<(), ProviderError>;

    /// Sees every answer (rate-limit headers, request ids).
    fn observe(&self, _response: &ApiResponse) {}

    /// Maps an error answer to its class (rate limits, capacity, configuration, …).
    fn classify(&self, response: &ApiResponse) -> ProviderError;
}

/// A reqwest client with the provider's timeouts, retries and circuit breaker.
#[derive(Debug)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
    config: HttpConfig,
    breaker: CircuitBreaker,
    provider: String,
}

impl HttpClient {
    pub fn new(provider: &str, config: &HttpConfig) -> Result<Self, ConfigError> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("jitsi-scaler/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::invalid("http client", e.to_string()))?;
        Ok(Self {
            client,
            breaker: CircuitBreaker::new(
                config.circuit_breaker_threshold,
                config.circuit_breaker_cooldown,
            ),
            config: config.clone(),
            provider: provider.to_owned(),
        })
    }

    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// Sends a request with retries; a 2xx (or accepted) answer is `Ok`, anything else an error.
    pub async fn send(
        &self,
        api: &dyn Api,
        request: &ApiRequest,
    ) -> Result<ApiResponse, ProviderError> {
        self.breaker.check(&self.provider)?;
        let label = request.label();
        let result = self
            .config
            .retry_policy()
            .run(&label, |attempt| self.attempt(api, request, attempt))
            .await;
        self.breaker.record(&self.provider, &result);
        if let Err(error) = &result {
            tracing::warn!(provider = %self.provider, call = %label, class = error.class(),
                error = %error, "cloud call failed");
        }
        result
    }

    async fn attempt(
        &self,
        api: &dyn Api,
        request: &ApiRequest,
        attempt: u32,
    ) -> Attempt<ApiResponse> {
        let mut builder = self
            .client
            .request(request.method.clone(), request.url.clone())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json");
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let mut http_request = match builder.build() {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Done(Err(ProviderError::Fatal(format!(
                    "cannot build {}: {}",
                    request.label(),
                    describe(&e)
                ))));
            }
        };
        if let Err(e) = api.authorize(&mut http_request) {
            return Attempt::Done(Err(e));
        }
        tracing::debug!(provider = %self.provider, call = %request.label(), attempt, "sending");
        let response = match self.client.execute(http_request).await {
            Ok(r) => r,
            Err(e) => return self.transport_failure(request, &e),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match read_body(response).await {
            Ok(b) => b,
            Err(BodyError::Transport(e)) => return self.transport_failure(request, &e),
            Err(BodyError::TooLarge) => {
                return Attempt::Done(Err(ProviderError::Fatal(format!(
                    "{}: answer larger than {MAX_BODY_BYTES} bytes",
                    request.label()
                ))));
            }
        };
        let answer = ApiResponse {
            status,
            headers,
            body,
        };
        api.observe(&answer);
        if status.is_success() || request.accept.contains(&status.as_u16()) {
            return Attempt::Done(Ok(answer));
        }
        let error = api.classify(&answer);
        tracing::debug!(provider = %self.provider, call = %request.label(), status = status.as_u16(),
            class = error.class(), error = %error, "error answer");
        let retryable_status = status.is_server_error()
            || self
                .config
                .retryable_status_codes
                .contains(&status.as_u16());
        match &error {
            // A rate-limited request was not processed: retry whatever the method.
            ProviderError::Throttled { retry_after, .. } => Attempt::Retry {
                after: *retry_after,
                error,
            },
            // The same placement will not have capacity on the next attempt.
            ProviderError::Capacity(_) => Attempt::Done(Err(error)),
            _ if request.idempotent && retryable_status => Attempt::Retry { error, after: None },
            _ => Attempt::Done(Err(error)),
        }
    }

    fn transport_failure(&self, request: &ApiRequest, e: &reqwest::Error) -> Attempt<ApiResponse> {
        let not_sent = e.is_connect();
        let what = if e.is_timeout() {
            "timed out"
        } else {
            "failed"
        };
        let error =
            ProviderError::Transient(format!("{} {what}: {}", request.label(), describe(e)));
        if not_sent || request.idempotent {
            Attempt::Retry { error, after: None }
        } else {
            Attempt::Done(Err(error))
        }
    }
}

enum BodyError {
    Transport(reqwest::Error),
    TooLarge,
}

async fn read_body(mut response: reqwest::Response) -> Result<Bytes, BodyError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// An error and its causes on one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The first bytes of a body, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.into_owned()
}

/// Installs rustls' ring provider as the process default (idempotent; reqwest is built
/// without a provider of its own).
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The generic class of an HTTP error status.
pub(crate) fn classify_status(
    status: StatusCode,
    detail: String,
    retry_after: Option<Duration>,
) -> ProviderError {
    let message = format!("HTTP {}: {detail}", status.as_u16());
    match status.as_u16() {
        429 => ProviderError::Throttled {
            retry_after,
            message,
        },
        400 | 401 | 403 | 405 | 413 | 422 => ProviderError::Config(message),
        404 | 410 => ProviderError::NotFound(message),
        408 | 409 | 425 => ProviderError::Transient(message),
        s if s >= 500 => ProviderError::Transient(message),
        _ => ProviderError::Fatal(message),
    }
}

/// `Retry-After` in seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Fails calls fast after repeated failures, so a cloud that is down is not hammered.
#[derive(Debug)]
struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
}

impl CircuitBreaker {
    fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            state: Mutex::new(BreakerState::default()),
        }
    }

    fn check(&self, provider: &str) -> Result<(), ProviderError> {
        if self.threshold == 0 {
            return Ok(());
        }
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.open_until {
            Some(until) if Instant::now() < until => Err(ProviderError::Transient(format!(
                "{provider}: circuit open after {} failed calls; next try in {} ms",
                state.failures,
                millis(until - Instant::now())
            ))),
            _ => Ok(()),
        }
    }

    fn record<T>(&self, provider: &str, result: &Result<T, ProviderError>) {
        if self.threshold == 0 {
            return;
        }
        let failed = matches!(
            result,
            Err(ProviderError::Transient(_) | ProviderError::Throttled { .. })
        );
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !failed {
            state.failures = 0;
            state.open_until = None;
            return;
        }
        state.failures = state.failures.saturating_add(1);
        if state.failures >= self.threshold {
            state.open_until = Some(Instant::now() + self.cooldown);
            tracing::warn!(
                provider,
                failures = state.failures,
                cooldown_ms = millis(self.cooldown),
                "circuit breaker open"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_classes() {
        let class = |s: u16| {
            classify_status(StatusCode::from_u16(s).expect("status"), "x".into(), None).class()
        };
        assert_eq!(class(429), "throttled");
        assert_eq!(class(401), "config");
        assert_eq!(class(422), "config");
        assert_eq!(class(404), "not_found");
        assert_eq!(class(409), "transient");
        assert_eq!(class(500), "transient");
        assert_eq!(class(503), "transient");
        assert_eq!(class(418), "fatal");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("12"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(12)));
        let later = SystemTime::now() + Duration::from_secs(120);
        let date = HeaderValue::from_str(&httpdate::fmt_http_date(later)).expect("header");
        headers.insert(RETRY_AFTER, date);
        let wait = retry_after(&headers).expect("date");
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn environment_overrides_defaults() {
        let config = HttpConfig::from_lookup(|name| match name {
            "REPORT_EXT_CALL_MAX_TIME_IN_SECONDS" => Some("90".into()),
            "REPORT_EXT_CALL_RETRYABLE_STATUS_CODES" => Some("429 409 423".into()),
            "CLOUD_HTTP_CONNECT_TIMEOUT_MS" => Some("1500".into()),
            _ => None,
        })
        .expect("config");
        assert_eq!(config.retry_budget, Duration::from_secs(90));
        assert_eq!(config.retryable_status_codes, vec![429, 409, 423]);
        assert_eq!(config.connect_timeout, Duration::from_millis(1500));
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        let err = HttpConfig::from_lookup(|name| {
            (name == "REPORT_EXT_CALL_RETRYABLE_STATUS_CODES").then(|| "429 abc".to_owned())
        })
        .expect_err("bad code");
        assert_eq!(err.variable(), "REPORT_EXT_CALL_RETRYABLE_STATUS_CODES");
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_repeated_failures_and_closes_after_the_cooldown() {
        let breaker = CircuitBreaker::new(2, Duration::from_secs(30));
        let failure: Result<(), _> = Err(ProviderError::Transient("503".into()));
        breaker.record("p", &failure);
        assert!(breaker.check("p").is_ok(), "one failure keeps it closed");
        breaker.record("p", &failure);
        let open = breaker.check("p").expect_err("open");
        assert_eq!(open.class(), "transient");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(breaker.check("p").is_ok(), "half-open after the cooldown");
        breaker.record("p", &Ok::<(), ProviderError>(()));
        breaker.record("p", &failure);
        assert!(breaker.check("p").is_ok(), "a success resets the count");
        let config_error: Result<(), _> = Err(ProviderError::Config("bad token".into()));
        breaker.record("p", &config_error);
        breaker.record("p", &config_error);
        assert!(
            breaker.check("p").is_ok(),
            "configuration errors do not open it"
        );
    }
}
