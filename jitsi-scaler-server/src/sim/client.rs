//! The HTTP calls of the sidecar to the autoscaler: one attempt each, with the sidecar's
//! headers and timeout.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{StatusCode, Url};

use super::Token;
use super::sidecar::Command;

/// Why a call to the autoscaler failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer (connection refused, timeout, …).
    #[error("request failed: {0}")]
    Transport(String),
    /// A non-2xx answer.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
    /// A 2xx answer that is not JSON.
    #[error("answer is not JSON: {0}")]
    NotJson(String),
}

/// A client of the autoscaler's sidecar routes.
#[derive(Clone)]
pub struct AutoscalerClient {
    http: reqwest::Client,
    base: Url,
    authorization: Option<HeaderValue>,
}

impl fmt::Debug for AutoscalerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutoscalerClient")
            .field("base", &self.base.as_str())
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl AutoscalerClient {
    /// A client of the server at `base` (`http://host:port`, maybe with a path prefix).
    pub fn new(base: &str, token: Option<&Token>, timeout: Duration) -> Result<Self, String> {
        let base = Url::parse(base.trim()).map_err(|e| format!("server URL {base:?}: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(format!(
                "server URL {:?} must be http(s)://host[:port]",
                base.as_str()
            ));
        }
        let authorization = token
            .map(|t| {
                let mut value = HeaderValue::try_from(format!("Bearer {}", t.expose()))
                    .map_err(|_| "the token contains characters not allowed in a header")?;
                value.set_sensitive(true);
                Ok::<_, String>(value)
            })
            .transpose()?;
        // reqwest is built without a TLS crypto provider of its own: make sure one is
        // installed (a no-op when the process already chose one).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            http,
            base,
            authorization,
        })
    }

    fn url(&self, route: &str) -> String {
        format!(
            "{}/sidecar/{route}",
            self.base.as_str().trim_end_matches('/')
        )
    }

    /// POSTs a JSON body to `/sidecar/<route>`; the 2xx answer's body.
    async fn post(&self, route: &str, body: Bytes) -> Result<Bytes, CallError> {
        let mut request = self
            .http
            .post(self.url(route))
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(body);
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| CallError::Transport(error_chain(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| CallError::Transport(error_chain(&e)))?;
        if !status.is_success() {
            return Err(CallError::Status {
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            });
        }
        Ok(body)
    }

    /// `/sidecar/status` or `/sidecar/poll` with the given body; the command answer.
    pub async fn command(&self, route: &str, body: Bytes) -> Result<Command, CallError> {
        let answer = self.post(route, body).await?;
        Command::parse(&answer).ok_or_else(|| {
            CallError::NotJson(String::from_utf8_lossy(&answer[..answer.len().min(200)]).into())
        })
    }

    /// `/sidecar/shutdown` with the instance details.
    pub async fn confirm_shutdown(&self, body: Bytes) -> Result<(), CallError> {
        self.post("shutdown", body).await.map(|_| ())
    }
}

/// An error with its sources (reqwest hides the useful part, e.g. "connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
