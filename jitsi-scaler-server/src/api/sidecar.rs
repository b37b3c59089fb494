//! The sidecar endpoints (sidecar-protocol.md §3): what existing jitsi-autoscaler-sidecars call.

use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use jitsi_scaler_core::engine::CheckInResult;
use jitsi_scaler_core::sidecar::{SidecarResponse, parse_instance_details, parse_stats_report};
use jitsi_scaler_core::store::StoreError;
use serde_json::{Value, json};

use super::body::SidecarBody;
use super::{ApiError, AppState, Caller};

/// Commands must be answered (or refused with 503) well within the sidecar's 3 s timeout.
pub const SIDECAR_STORE_TIMEOUT: Duration = Duration::from_secs(2);

async fn within<T>(
    state: &AppState,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(state.limits.sidecar_store_timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            state.metrics.stats_errors.inc(&[]);
            tracing::warn!(error = %e, "sidecar call failed on the store");
            Err(ApiError::Unavailable(
                "the store cannot be reached; commands unknown".into(),
            ))
        }
        Err(_) => {
            state.metrics.stats_errors.inc(&[]);
            tracing::warn!("sidecar call timed out on the store");
            Err(ApiError::Unavailable(
                "the store did not answer in time; commands unknown".into(),
            ))
        }
    }
}

fn count(state: &AppState, result: &CheckInResult) {
    state.metrics.stats_handled.inc(&[]);
    if !result.known_group {
        state.metrics.unknown_group.inc(&[]);
    }
    if !result.known_type {
        state.metrics.unknown_type.inc(&[]);
    }
}

/// `POST /sidecar/poll`: refreshes liveness and returns the commands.
#[utoipa::path(post, path = "/sidecar/poll", tag = "sidecar",
    request_body(content = Object, description = "InstanceDetails"),
    responses((status = 200, description = "Commands: {shutdown, reconfigure}", body = Object),
              (status = 400, description = "Malformed JSON or missing instanceId"),
              (status = 401, description = "Missing or invalid token"), (status = 403, description = "Token not allowed here"),
              (status = 503, description = "Store unavailable: commands unknown")))]
pub async fn poll(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SidecarBody(body): SidecarBody,
) -> Result<Json<SidecarResponse>, ApiError> {
    let details = parse_instance_details(&body)?;
    caller.require_subject(&details.instance_id)?;
    let result = within(&state, state.scaler.poll(&details)).await?;
    count(&state, &result);
    Ok(Json(result.response()))
}

/// `POST /sidecar/status`: records the report and returns the commands.
#[utoipa::path(post, path = "/sidecar/status", tag = "sidecar",
    request_body(content = Object, description = "StatsReport"),
    responses((status = 200, description = "Commands: {shutdown, reconfigure}", body = Object),
              (status = 400, description = "Malformed JSON or missing instance.instanceId"),
              (status = 401, description = "Missing or invalid token"), (status = 403, description = "Token not allowed here"),
              (status = 503, description = "Store unavailable: commands unknown")))]
pub async fn status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SidecarBody(body): SidecarBody,
) -> Result<Json<SidecarResponse>, ApiError> {
    let report = parse_stats_report(&body)?;
    caller.require_subject(&report.instance.instance_id)?;
    let result = within(&state, state.scaler.report(&report)).await?;
    count(&state, &result);
    Ok(Json(result.response()))
}

/// `POST /sidecar/stats`: records the report (Jibri webhook path).
#[utoipa::path(post, path = "/sidecar/stats", tag = "sidecar",
    request_body(content = Object, description = "StatsReport"),
    responses((status = 200, description = "{\"save\":\"OK\"}", body = Object),
              (status = 400, description = "Malformed JSON or missing instance.instanceId"),
              (status = 503, description = "Store unavailable")))]
pub async fn stats(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SidecarBody(body): SidecarBody,
) -> Result<Json<Value>, ApiError> {
    let report = parse_stats_report(&body)?;
    caller.require_subject(&report.instance.instance_id)?;
    let result = within(&state, state.scaler.report(&report)).await?;
    count(&state, &result);
    Ok(Json(json!({"save": "OK"})))
}

/// `POST /sidecar/shutdown`: records the shutdown confirmation (idempotent).
#[utoipa::path(post, path = "/sidecar/shutdown", tag = "sidecar",
    request_body(content = Object, description = "InstanceDetails"),
    responses((status = 200, description = "{\"save\":\"OK\"}", body = Object),
              (status = 400, description = "Malformed JSON or missing instanceId"),
              (status = 503, description = "Store unavailable")))]
pub async fn shutdown(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    SidecarBody(body): SidecarBody,
) -> Result<Json<Value>, ApiError> {
    let details = parse_instance_details(&body)?;
    caller.require_subject(&details.instance_id)?;
    within(&state, state.scaler.confirm_shutdown(&details)).await?;
    state.metrics.stats_handled.inc(&[]);
    Ok(Json(json!({"save": "OK"})))
}
