//! The admin routes (rest-api.md §3–§7). Handlers parse, call the engine, and answer.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::body::JsonBody;
use super::{ApiError, AppState};

type Answer = Result<Json<Value>, ApiError>;

/// `{"<key>": value}`, serialized straight into the body. Never through `serde_json::Value`
/// (what `json!` does, unwrapping): stored sidecar metadata is kept verbatim and may be
/// nested deeper than serde_json's recursion limit, which that conversion refuses.
fn wrapped<T: serde::Serialize>(key: &'static str, value: T) -> Json<BTreeMap<&'static str, T>> {
    Json(BTreeMap::from([(key, value)]))
}

type Wrapped<T> = Result<Json<BTreeMap<&'static str, T>>, ApiError>;

/// The `{name}` path segment. A segment that does not decode (not UTF-8) is a JSON 400 like
/// every other error, not axum's plain-text rejection.
#[derive(Debug)]
pub struct GroupName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for GroupName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(name)| GroupName(name))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

fn saved() -> Answer {
    Ok(Json(json!({"save": "OK"})))
}

/// Tag filters from the raw query: every `tag.<key>=<value>`.
fn tag_filters(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else {
        return Vec::new();
    };
    url_pairs(query)
        .filter_map(|(k, v)| k.strip_prefix("tag.").map(|k| (k.to_owned(), v)))
        .collect()
}

/// Decodes `a=b&c=d` with percent-decoding and `+` as space.
fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k), decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /groups`.
#[utoipa::path(get, path = "/groups", tag = "groups",
    params(("tag.<key>" = Option<String>, Query, description = "Only groups whose tag <key> equals the value (repeatable)")),
    responses((status = 200, description = "{\"instanceGroups\":[...]}", body = Object)))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Wrapped<Vec<jitsi_scaler_core::group::Group>> {
    let groups = state
        .scaler
        .list_groups(&tag_filters(query.as_deref()))
        .await?;
    Ok(wrapped("instanceGroups", groups))
}

/// `GET /groups/{name}`.
#[utoipa::path(get, path = "/groups/{name}", tag = "groups", params(("name" = String, Path)),
    responses((status = 200, description = "{\"instanceGroup\":{...}}", body = Object), (status = 404, description = "Unknown group")))]
pub async fn get(
    State(state): State<AppState>,
    GroupName(name): GroupName,
) -> Wrapped<jitsi_scaler_core::group::Group> {
    Ok(wrapped(
        "instanceGroup",
        state.scaler.get_group(&name).await?,
    ))
}

/// `PUT /groups/{name}`: create or replace.
#[utoipa::path(put, path = "/groups/{name}", tag = "groups", params(("name" = String, Path)),
    request_body(content = Object, description = "InstanceGroup"),
    responses((status = 200, description = "{\"save\":\"OK\"}", body = Object), (status = 400, description = "Invalid group")))]
pub async fn put(
    State(state): State<AppState>,
    GroupName(name): GroupName,
    JsonBody(body): JsonBody,
) -> Answer {
    state.scaler.put_group(&name, &body).await?;
    saved()
}

/// `DELETE /groups/{name}`.
#[utoipa::path(delete, path = "/groups/{name}", tag = "groups", params(("name" = String, Path)),
    responses((status = 200, description = "{}", body = Object), (status = 400, description = "The group has active instances"),
              (status = 404, description = "Unknown group")))]
pub async fn delete(State(state): State<AppState>, GroupName(name): GroupName) -> Answer {
    state.scaler.delete_group(&name).await?;
    Ok(Json(json!({})))
}

/// `POST /groups/actions/reset`: re-applies the groups file.
#[utoipa::path(post, path = "/groups/actions/reset", tag = "groups",
    responses((status = 200, description = "{\"reset\":\"OK\"}", body = Object), (status = 400, description = "The groups file is invalid")))]
pub async fn reset(State(state): State<AppState>) -> Answer {
    let groups = state.reload_groups_file()?;
    state.scaler.reset_groups(&groups).await?;
    Ok(Json(json!({"reset": "OK"})))
}

/// `PUT /groups/{name}/desired`.
#[utoipa::path(put, path = "/groups/{name}/desired", tag = "groups", params(("name" = String, Path)),
    request_body(content = Object, description = "{minDesired?, maxDesired?, desiredCount?}"),
    responses((status = 200, description = "{\"save\":\"OK\"}", body = Object), (status = 400, description = "Invalid"), (status = 404, description = "Unknown group")))]
pub async fn desired(
    State(state): State<AppState>,
    GroupName(name): GroupName,
    JsonBody(body): JsonBody,
) -> Answer {
    state.scaler.set_desired(&name, &body).await?;
    saved()
}

/// `PUT /groups/{name}/scaling-options`.
#[utoipa::path(put, path = "/groups/{name}/scaling-options", tag = "groups", params(("name" = String, Path)),
    request_body(content = Object, description = "Partial scaling options and gracePeriodTTLSec"),
    responses((status = 200, description = "{\"save\":\"OK\"}", body = Object), (status = 400, description = "Invalid"), (status = 404, description = "Unknown group")))]
pub async fn scaling_options(
    State(state): State<AppState>,
    GroupName(name): GroupName,
    JsonBody(body): JsonBody,
) -> Answer {
    state.scaler.set_scaling_options(&name, &body).await?;
    saved()
}

/// `PUT /groups/{name}/scaling-activities`.
#[utoipa::path(put, path = "/groups/{name}/scaling-activities", tag = "groups", params(("name" = String, Path)),
    request_body(content = Object, description = "enableAutoScale, enableLaunch, enableScheduler, enableUntrackedThrottle, enableReconfiguration, enableCloudGuard"),
    responses((status = 200, description = "{\"save\":\"OK\"}", body = Object), (status = 400, description = "Invalid"), (status = 404, description = "Unknown group")))]
pub async fn scaling_activities(
    State(state): State<AppState>,
    GroupName(name): GroupName,
    JsonBody(body): JsonBody,
) -> Answer {
    state.scaler.set_scaling_activities(&name, &body).await?;
    saved()
}

/// `PUT /groups/{name}/instance-configuration`.
#[utoipa::path(put, path = "/groups/{name}/instance-configuration", tag = "groups", params(("name" = String, Path)),
    request_body(content = Object, description = "{instanceConfigurationId}"),
    responses((status = 200, description = "{\"save\":\"OK\"}", body = Object), (status = 400, description = "Invalid"), (status = 404, description = "Unknown group")))]
pub async fn instance_configuration(
    State(state): State<AppState>,
    GroupName(name): GroupName,
    JsonBody(body): JsonBody,
) -> Answer {
    state
        .scaler
        .set_instance_configuration(&name, &body)
        .await?;
    saved()
}

/// `PUT /groups/options/full-scaling`: 200 when every selected group was updated, else 206.
#[utoipa::path(put, path = "/groups/options/full-scaling", tag = "groups",
    request_body(content = Object, description = "{environment, region, instanceType, direction, options}"),
    responses((status = 200, description = "All selected groups updated", body = Object),
              (status = 206, description = "Some selected groups could not be updated", body = Object),
              (status = 400, description = "Invalid")))]
pub async fn full_scaling(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let result = state.scaler.full_scaling(&body).await?;
    let status = if result.groups_updated == result.groups_to_be_updated {
        StatusCode::OK
    } else {
        StatusCode::PARTIAL_CONTENT
    };
    Ok((status, Json(result)).into_response())
}

/// `POST /groups/{name}/actions/launch-protected`.
#[utoipa::path(post, path = "/groups/{name}/actions/launch-protected", tag = "groups", params(("name" = String, Path)),
    request_body(content = Object, description = "{count, protectedTTLSec, maxDesired?, instanceConfigurationId?, tags?}"),
    responses((status = 200, description = "{\"launch\":\"OK\"}", body = Object), (status = 400, description = "Invalid"), (status = 404, description = "Unknown group")))]
pub async fn launch_protected(
    State(state): State<AppState>,
    GroupName(name): GroupName,
    JsonBody(body): JsonBody,
) -> Answer {
    state.scaler.launch_protected(&name, &body).await?;
    Ok(Json(json!({"launch": "OK"})))
}

/// `POST /groups/{name}/actions/reconfigure-instances`.
#[utoipa::path(post, path = "/groups/{name}/actions/reconfigure-instances", tag = "groups", params(("name" = String, Path)),
    responses((status = 200, description = "{\"save\":\"OK\",\"instances\":[...]}", body = Object),
              (status = 403, description = "Reconfiguration disabled for the group"), (status = 404, description = "Unknown group"),
              (status = 500, description = "Failed to trigger reconfiguration")))]
pub async fn reconfigure(State(state): State<AppState>, GroupName(name): GroupName) -> Answer {
    match state.scaler.reconfigure_instances(&name).await {
        Ok(instances) => Ok(Json(json!({"save": "OK", "instances": instances}))),
        Err(jitsi_scaler_core::engine::admin::AdminError::Store(e)) => {
            tracing::error!(group = %name, error = %e, "reconfiguration could not be stored");
            Err(ApiError::Raw(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"save": false, "error": "Failed to trigger reconfiguration"}),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /groups/{name}/report`.
#[utoipa::path(get, path = "/groups/{name}/report", tag = "groups", params(("name" = String, Path)),
    responses((status = 200, description = "{\"groupReport\":{...}}", body = Object), (status = 404, description = "Unknown group")))]
pub async fn report(
    State(state): State<AppState>,
    GroupName(name): GroupName,
) -> Wrapped<jitsi_scaler_core::report::GroupReport> {
    Ok(wrapped(
        "groupReport",
        state.scaler.group_report(&name).await?,
    ))
}

/// `GET /groups/{name}/group-audit`.
#[utoipa::path(get, path = "/groups/{name}/group-audit", tag = "groups", params(("name" = String, Path)),
    responses((status = 200, description = "{\"audit\":{...}}", body = Object), (status = 404, description = "No group and no audit")))]
pub async fn group_audit(
    State(state): State<AppState>,
    GroupName(name): GroupName,
) -> Wrapped<jitsi_scaler_core::audit::GroupAuditLog> {
    Ok(wrapped("audit", state.scaler.group_audit(&name).await?))
}

/// `GET /groups/{name}/instance-audit`.
#[utoipa::path(get, path = "/groups/{name}/instance-audit", tag = "groups", params(("name" = String, Path)),
    responses((status = 200, description = "{\"audit\":[...]}", body = Object), (status = 404, description = "No group and no audit")))]
pub async fn instance_audit(
    State(state): State<AppState>,
    GroupName(name): GroupName,
) -> Wrapped<Vec<jitsi_scaler_core::audit::InstanceAudit>> {
    Ok(wrapped("audit", state.scaler.instance_audit(&name).await?))
}

/// `GET /groups/{name}/scheduled-scaling`.
#[utoipa::path(get, path = "/groups/{name}/scheduled-scaling", tag = "groups", params(("name" = String, Path)),
    responses((status = 200, description = "The configuration and the active period", body = Object), (status = 404, description = "Unknown group")))]
pub async fn get_schedule(State(state): State<AppState>, GroupName(name): GroupName) -> Answer {
    let view = state.scaler.scheduled_scaling(&name).await?;
    serde_json::to_value(view)
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// `PUT /groups/{name}/scheduled-scaling`.
#[utoipa::path(put, path = "/groups/{name}/scheduled-scaling", tag = "groups", params(("name" = String, Path)),
    request_body(content = Object, description = "ScheduledScalingConfig"),
    responses((status = 200, description = "{\"save\":\"OK\"}", body = Object), (status = 400, description = "Invalid"), (status = 404, description = "Unknown group")))]
pub async fn put_schedule(
    State(state): State<AppState>,
    GroupName(name): GroupName,
    JsonBody(body): JsonBody,
) -> Answer {
    state.scaler.put_scheduled_scaling(&name, &body).await?;
    saved()
}

/// `DELETE /groups/{name}/scheduled-scaling`.
#[utoipa::path(delete, path = "/groups/{name}/scheduled-scaling", tag = "groups", params(("name" = String, Path)),
    responses((status = 200, description = "{\"save\":\"OK\"}", body = Object), (status = 404, description = "Unknown group")))]
pub async fn delete_schedule(State(state): State<AppState>, GroupName(name): GroupName) -> Answer {
    state.scaler.delete_scheduled_scaling(&name).await?;
    saved()
}

/// Selenium-grid reservations: out of scope, answered 501 (not 404) so operators see why.
pub async fn reservations() -> ApiError {
    ApiError::NotImplemented("selenium-grid reservations are not implemented by jitsi-scaler")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_filters_decode_the_query() {
        assert_eq!(
            tag_filters(Some(
                "tag.release_number=150&tag.env=a%20b&other=1&tag.x=y+z"
            )),
            vec![
                ("release_number".to_owned(), "150".to_owned()),
                ("env".to_owned(), "a b".to_owned()),
                ("x".to_owned(), "y z".to_owned()),
            ]
        );
        assert!(tag_filters(None).is_empty());
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
