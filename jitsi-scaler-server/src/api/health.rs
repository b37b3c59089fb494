//! Health, readiness and metrics (the metrics port, as the reference: no auth).

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

/// Whether the query asks for the deep check: any non-empty `deep` value, as the reference's
/// `req.query.deep` truthiness (`?deep=1`, `?deep=1&deep=1`, `?deep=%FF` alike). Read by hand:
/// a typed query extractor would refuse repeated keys with a plain-text 400.
fn wants_deep(query: Option<&str>) -> bool {
    query.unwrap_or_default().split('&').any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        key == "deep" && !value.is_empty()
    })
}

/// What a deep check found.
struct Deep {
    store: bool,
    engine: bool,
    first_pass: bool,
}

async fn deep_check(state: &AppState) -> Deep {
    let store = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.scaler.store().ping(),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    Deep {
        store,
        engine: state.scaler.is_running(),
        first_pass: state.scaler.first_pass_done() || state.scaler.leadership().token().is_none(),
    }
}

/// `GET /health` (`healthy!`), and `GET /health?deep=1` (`deeply healthy`, or 500 with what
/// failed). With `Accept: application/json`, the deep answer is JSON with the leadership.
pub async fn health(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if state.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if !wants_deep(query.as_deref()) {
        return (StatusCode::OK, "healthy!").into_response();
    }
    let d = deep_check(&state).await;
    let leadership = state.scaler.leadership().status();
    let healthy = d.store && d.engine && d.first_pass;
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let mut response = if healthy && !wants_json {
        (StatusCode::OK, "deeply healthy").into_response()
    } else {
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        let body = json!({
            "status": if healthy { "healthy" } else { "unhealthy" },
            "instanceStore": d.store,
            "jobQueue": d.engine,
            "jobsStarted": d.first_pass,
            "leadership": leadership,
        });
        (status, Json(body)).into_response()
    };
    if let Some(leader) = leadership
        .leader
        .as_deref()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        response
            .headers_mut()
            .insert("x-jitsi-scaler-leader", leader);
    }
    if let Some(token) = leadership.token {
        response
            .headers_mut()
            .insert("x-jitsi-scaler-fencing-token", HeaderValue::from(token));
    }
    response
}

/// `GET /livez`: the process serves requests.
pub async fn livez() -> &'static str {
    "ok"
}

/// `GET /readyz`: the store answers and the engine runs; JSON details.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let d = deep_check(&state).await;
    let ready = d.store && d.engine && !state.is_shutting_down();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"ready": ready, "store": d.store, "engine": d.engine,
        "leadership": state.scaler.leadership().status()});
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .set_leadership(state.scaler.leadership().token());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::wants_deep;

    #[test]
    fn deep_is_any_non_empty_value() {
        for q in [
            "deep=1",
            "deep=true",
            "x=1&deep=yes",
            "deep=1&deep=2",
            "deep=%FF",
        ] {
            assert!(wants_deep(Some(q)), "{q}");
        }
        for q in ["", "deep=", "deep", "deeper=1", "x=deep"] {
            assert!(!wants_deep(Some(q)), "{q}");
        }
        assert!(!wants_deep(None));
    }
}
