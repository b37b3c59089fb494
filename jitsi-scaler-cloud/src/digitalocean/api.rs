//! DigitalOcean API v2 wire types, authentication, error classification and rate-limit state.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jitsi_scaler_core::provider::ProviderError;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Deserialize;

use crate::http::{Api, ApiResponse, classify_status, retry_after, snippet};
use crate::secret::Secret;

/// A droplet as listed or created (only the fields the provider reads).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Droplet {
    pub id: u64,
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// `GET /v2/droplets`.
#[derive(Debug, Deserialize)]
pub(crate) struct DropletPage {
    #[serde(default)]
    pub droplets: Vec<Droplet>,
    #[serde(default)]
    pub links: Option<Links>,
    #[serde(default)]
    pub meta: Option<Meta>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Links {
    #[serde(default)]
    pub pages: Option<Pages>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Pages {
    #[serde(default)]
    pub next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Meta {
    #[serde(default)]
    pub total: Option<u64>,
}

/// `POST /v2/droplets` (single or multiple create).
#[derive(Debug, Deserialize)]
pub(crate) struct CreateAnswer {
    #[serde(default)]
    pub droplets: Option<Vec<Droplet>>,
    #[serde(default)]
    pub droplet: Option<Droplet>,
}

/// `GET /v2/droplets/{id}`.
#[derive(Debug, Deserialize)]
pub(crate) struct DropletAnswer {
    pub droplet: Droplet,
}

/// DigitalOcean's error body.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
}

/// The `status` of a droplet as jitsi-scaler reports it: `new` → `Provisioning`,
/// `active` → `Running`, anything else → `Terminated`.
pub(crate) fn cloud_status(status: &str) -> &'static str {
    match status.to_ascii_lowercase().as_str() {
        "new" => "Provisioning",
        "active" => "Running",
        _ => "Terminated",
    }
}

/// The last rate-limit headers seen.
#[derive(Clone, Copy, Debug, Default)]
struct RateLimit {
    limit: u64,
    remaining: u64,
    reset_epoch: u64,
}

/// Bearer authentication and DigitalOcean's error format.
#[derive(Debug)]
pub(crate) struct DigitalOceanApi {
    token: Secret,
    rate: Mutex<Option<RateLimit>>,
}

impl DigitalOceanApi {
    pub fn new(token: Secret) -> Self {
        Self {
            token,
            rate: Mutex::new(None),
        }
    }

    /// When the remaining hourly quota is below 5 %, the time until it resets.
    pub fn quota_low(&self) -> Option<Duration> {
        let rate = (*self.rate.lock().unwrap_or_else(PoisonError::into_inner))?;
        if rate.limit == 0 || rate.remaining.saturating_mul(20) >= rate.limit {
            return None;
        }
        let wait = until_epoch(rate.reset_epoch);
        (!wait.is_zero()).then_some(wait)
    }

    fn observe(&self, response: &ApiResponse) {
        let number = |name: &str| {
            response
                .header(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(limit), Some(remaining), Some(reset_epoch)) = (
            number("ratelimit-limit"),
            number("ratelimit-remaining"),
            number("ratelimit-reset"),
        ) {
            *self.rate.lock().unwrap_or_else(PoisonError::into_inner) = Some(RateLimit {
                limit,
                remaining,
                reset_epoch,
            });
        }
    }
}

fn until_epoch(epoch_secs: u64) -> Duration {
    let at = UNIX_EPOCH + Duration::from_secs(epoch_secs);
    at.duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

impl Api for DigitalOceanApi {
    fn authorize(&self, request: &mut reqwest::Request) -> Result<(), ProviderError> {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", self.token.expose())).map_err(|_| {
                ProviderError::Config(
                    "the DigitalOcean API token is not a valid header value".into(),
                )
            })?;
        value.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, value);
        Ok(())
    }

    fn observe(&self, response: &ApiResponse) {
        DigitalOceanApi::observe(self, response);
    }

    fn classify(&self, response: &ApiResponse) -> ProviderError {
        let body: ErrorBody = serde_json::from_slice(&response.body).unwrap_or_default();
        let mut detail = match (&body.id, &body.message) {
            (Some(id), Some(message)) => format!("{id}: {message}"),
            (None, Some(message)) => message.clone(),
            (Some(id), None) => id.clone(),
            (None, None) => snippet(&response.body),
        };
        if let Some(request_id) = &body.request_id {
            detail.push_str(&format!(" (request_id {request_id})"));
        }
        let wait = retry_after(&response.headers).or_else(|| {
            response
                .header("ratelimit-reset")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(until_epoch)
        });
        let status = response.status.as_u16();
        let message = body.message.unwrap_or_default().to_ascii_lowercase();
        if status == 422 && message.contains("droplet limit") {
            return ProviderError::Capacity(format!("HTTP 422: {detail}"));
        }
        classify_status(response.status, detail, wait)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;

    use super::*;

    fn answer(status: u16, headers: &[(&'static str, String)], body: &str) -> ApiResponse {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).expect("header"));
        }
        ApiResponse {
            status: StatusCode::from_u16(status).expect("status"),
            headers: map,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn statuses_map_as_the_spec_says() {
        assert_eq!(cloud_status("new"), "Provisioning");
        assert_eq!(cloud_status("active"), "Running");
        assert_eq!(cloud_status("off"), "Terminated");
        assert_eq!(cloud_status("archive"), "Terminated");
    }

    #[test]
    fn rate_limit_answers_wait_until_the_reset() {
        let api = DigitalOceanApi::new(Secret::new("t"));
        let reset = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("time")
            .as_secs()
            + 40;
        let error = api.classify(&answer(
            429,
            &[("ratelimit-reset", reset.to_string())],
            r#"{"id":"too_many_requests","message":"API rate limit exceeded."}"#,
        ));
        let ProviderError::Throttled {
            retry_after,
            message,
        } = error
        else {
            panic!("expected throttled, got {error:?}");
        };
        let wait = retry_after.expect("wait");
        assert!(
            wait > Duration::from_secs(30) && wait <= Duration::from_secs(40),
            "{wait:?}"
        );
        assert!(message.contains("API rate limit exceeded."), "{message}");
    }

    #[test]
    fn errors_carry_the_request_id_and_limits_are_capacity() {
        let api = DigitalOceanApi::new(Secret::new("t"));
        let error = api.classify(&answer(
            401,
            &[],
            r#"{"id":"unauthorized","message":"Unable to authenticate you","request_id":"r-1"}"#,
        ));
        assert_eq!(error.class(), "config");
        assert!(error.to_string().contains("r-1"));
        let error = api.classify(&answer(
            422,
            &[],
            r#"{"id":"unprocessable_entity","message":"creating this/these droplet(s) will exceed your droplet limit"}"#,
        ));
        assert_eq!(error.class(), "capacity");
        assert_eq!(
            api.classify(&answer(502, &[], "<html>")).class(),
            "transient"
        );
    }

    #[test]
    fn a_nearly_spent_quota_defers_listings_until_the_reset() {
        let api = DigitalOceanApi::new(Secret::new("t"));
        assert_eq!(api.quota_low(), None);
        let reset = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("time")
            .as_secs()
            + 600;
        api.observe(&answer(
            200,
            &[
                ("ratelimit-limit", "5000".into()),
                ("ratelimit-remaining", "4000".into()),
                ("ratelimit-reset", reset.to_string()),
            ],
            "{}",
        ));
        assert_eq!(api.quota_low(), None);
        api.observe(&answer(
            200,
            &[
                ("ratelimit-limit", "5000".into()),
                ("ratelimit-remaining", "100".into()),
                ("ratelimit-reset", reset.to_string()),
            ],
            "{}",
        ));
        assert!(
            api.quota_low()
                .is_some_and(|w| w > Duration::from_secs(500))
        );
    }

    #[test]
    fn the_token_is_sent_but_never_shown() {
        let api = DigitalOceanApi::new(Secret::new("dop_v1_secret"));
        assert!(!format!("{api:?}").contains("dop_v1_secret"));
        let mut request = reqwest::Request::new(
            reqwest::Method::GET,
            reqwest::Url::parse("http://127.0.0.1/v2/droplets").expect("url"),
        );
        api.authorize(&mut request).expect("authorize");
        let value = request.headers().get(AUTHORIZATION).expect("header");
        assert_eq!(value.to_str().expect("ascii"), "Bearer dop_v1_secret");
        assert!(value.is_sensitive());
        assert!(!format!("{request:?}").contains("dop_v1_secret"));
    }
}
