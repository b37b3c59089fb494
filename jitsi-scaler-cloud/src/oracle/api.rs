//! OCI wire types, signing as authentication, and OCI's error format.

use std::collections::HashMap;

use jitsi_scaler_core::provider::ProviderError;
use serde::{Deserialize, Serialize};

use super::signing::RequestSigner;
use crate::http::{Api, ApiResponse, classify_status, retry_after, snippet};

/// An instance (only the fields the provider reads).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Instance {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub lifecycle_state: String,
    #[serde(default)]
    pub availability_domain: Option<String>,
    #[serde(default)]
    pub fault_domain: Option<String>,
    #[serde(default)]
    pub freeform_tags: Option<HashMap<String, String>>,
    #[serde(default)]
    pub time_created: Option<String>,
}

impl Instance {
    pub fn group(&self) -> Option<&str> {
        self.freeform_tags
            .as_ref()?
            .get("group")
            .map(String::as_str)
    }

    /// TERMINATED or TERMINATING.
    pub fn is_ending(&self) -> bool {
        self.lifecycle_state.eq_ignore_ascii_case("TERMINATED")
            || self.lifecycle_state.eq_ignore_ascii_case("TERMINATING")
    }
}

/// An availability or fault domain.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Domain {
    pub name: String,
}

/// The body of `POST /instanceConfigurations/{id}/actions/launch`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LaunchBody<'a> {
    pub instance_type: &'static str,
    pub launch_details: LaunchDetails<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LaunchDetails<'a> {
    pub availability_domain: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_domain: Option<&'a str>,
    pub display_name: &'a str,
    pub freeform_tags: HashMap<&'static str, &'a str>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Text of OCI's launch error when a placement has no capacity.
pub(crate) const OUT_OF_CAPACITY: &str = "out of host capacity";

/// Signs every request; classifies OCI errors.
#[derive(Debug)]
pub(crate) struct OracleApi {
    pub signer: RequestSigner,
}

impl Api for OracleApi {
    fn authorize(&self, request: &mut reqwest::Request) -> Result<(), ProviderError> {
        self.signer.authorize(request)
    }

    fn classify(&self, response: &ApiResponse) -> ProviderError {
        let body: ErrorBody = serde_json::from_slice(&response.body).unwrap_or_default();
        let code = body.code.unwrap_or_default();
        let message = body.message.unwrap_or_else(|| snippet(&response.body));
        let mut detail = if code.is_empty() {
            message.clone()
        } else {
            format!("{code}: {message}")
        };
        if let Some(id) = response.header("opc-request-id") {
            detail.push_str(&format!(" (opc-request-id {id})"));
        }
        let status = response.status.as_u16();
        if message.to_ascii_lowercase().contains(OUT_OF_CAPACITY) {
            return ProviderError::Capacity(format!("HTTP {status}: {detail}"));
        }
        if matches!(code.as_str(), "LimitExceeded" | "QuotaExceeded") {
            return ProviderError::Capacity(format!("HTTP {status}: {detail}"));
        }
        if status == 401 {
            return ProviderError::Config(format!(
                "HTTP 401: {detail} (check the key, fingerprint and the system clock)"
            ));
        }
        classify_status(response.status, detail, retry_after(&response.headers))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use reqwest::StatusCode;
    use reqwest::header::{HeaderMap, HeaderValue};

    use super::*;

    fn api() -> OracleApi {
        let pem = include_str!("../../tests/data/oci-signing/testkey.pem");
        OracleApi {
            signer: RequestSigner::from_pem("t/u/f", pem, None).expect("key"),
        }
    }

    fn answer(status: u16, body: &str) -> ApiResponse {
        let mut headers = HeaderMap::new();
        headers.insert("opc-request-id", HeaderValue::from_static("REQ1"));
        ApiResponse {
            status: StatusCode::from_u16(status).expect("status"),
            headers,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn capacity_errors_are_recognised() {
        let error = api().classify(&answer(
            500,
            r#"{"code":"InternalError","message":"Out of host capacity."}"#,
        ));
        assert_eq!(error.class(), "capacity");
        assert!(error.to_string().contains("REQ1"));
        let error = api().classify(&answer(
            400,
            r#"{"code":"LimitExceeded","message":"standard-e4-core-count limit"}"#,
        ));
        assert_eq!(error.class(), "capacity");
    }

    #[test]
    fn other_errors_follow_the_status() {
        assert_eq!(
            api()
                .classify(&answer(500, r#"{"code":"InternalError","message":"oops"}"#))
                .class(),
            "transient"
        );
        assert_eq!(
            api()
                .classify(&answer(
                    404,
                    r#"{"code":"NotAuthorizedOrNotFound","message":"x"}"#
                ))
                .class(),
            "not_found"
        );
        assert_eq!(
            api()
                .classify(&answer(401, r#"{"code":"NotAuthenticated","message":"x"}"#))
                .class(),
            "config"
        );
        assert_eq!(api().classify(&answer(429, "{}")).class(), "throttled");
    }
}
