//! The HTTP front of the Jibri spare-pool controller (jibri-kubernetes.md §2): the reference
//! controller's routes and status codes exactly, so Jibri's webhooks and the readiness probe
//! work unchanged. Answers have empty bodies, as Jibri ignores them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use jitsi_scaler_k8s::jibri::{JibriController, WebhookOutcome, WebhookRequest};

/// Largest webhook body read (Jibri's are a few hundred bytes).
const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

fn status(code: StatusCode) -> Response {
    (code, Body::empty()).into_response()
}

fn not_allowed(allow: &'static str) -> Response {
    let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// Which webhook a path names: the raw (still percent-encoded) pod segment and whether it is
/// the session webhook.
fn webhook_target(path: &str) -> Option<(&str, bool)> {
    let rest = path.strip_prefix("/webhook/")?;
    let (pod, session) = if let Some(pod) = rest.strip_suffix("/v1/session/status") {
        (pod, true)
    } else {
        (rest.strip_suffix("/v1/status")?, false)
    };
    (!pod.is_empty() && !pod.contains('/')).then_some((pod, session))
}

fn answer(outcome: &WebhookOutcome) -> Response {
    match outcome {
        WebhookOutcome::Ok(_) | WebhookOutcome::NoAction(_) => status(StatusCode::OK),
        WebhookOutcome::BadRequest(msg) => (StatusCode::BAD_REQUEST, msg.clone()).into_response(),
        WebhookOutcome::Unauthorized(_) => status(StatusCode::UNAUTHORIZED),
        WebhookOutcome::Forbidden(_) => status(StatusCode::FORBIDDEN),
        WebhookOutcome::Unavailable(_) => status(StatusCode::SERVICE_UNAVAILABLE),
    }
}

/// `POST /webhook/{pod}/v1/status` and `/v1/session/status`, and their 204/405 answers.
async fn webhook(State(controller): State<Arc<JibriController>>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let path = req.uri().path().to_owned();
    let Some((pod, session)) = webhook_target(&path) else {
        return status(StatusCode::NOT_FOUND);
    };
    match *req.method() {
        Method::POST => {}
        Method::OPTIONS => {
            let mut r = status(StatusCode::NO_CONTENT);
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
            return r;
        }
        _ => return not_allowed("POST, OPTIONS"),
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let pod = pod.to_owned();
    let body = match axum::body::to_bytes(req.into_body(), MAX_WEBHOOK_BYTES).await {
        Ok(b) => b,
        Err(_) => return status(StatusCode::PAYLOAD_TOO_LARGE),
    };
    let request = WebhookRequest::new(&pod, &body)
        .authorization(authorization.as_deref())
        .source_ip(peer);
    let outcome = if session {
        controller.on_session_status(request).await
    } else {
        controller.on_status(request).await
    };
    if !outcome.is_success() {
        tracing::info!(pod = %pod, outcome = outcome.label(), "jibri webhook refused");
    }
    answer(&outcome)
}

/// `GET`/`HEAD`/`OPTIONS /`: the readiness probe (503 while the Kubernetes API is unreachable).
async fn root(State(controller): State<Arc<JibriController>>, method: Method) -> Response {
    match method {
        Method::GET | Method::HEAD | Method::OPTIONS => {
            if controller.is_ready() {
                status(StatusCode::OK)
            } else {
                status(StatusCode::SERVICE_UNAVAILABLE)
            }
        }
        _ => not_allowed("GET, HEAD, OPTIONS"),
    }
}

/// `GET /metrics`: the controller's counters in Prometheus text format.
async fn metrics(State(controller): State<Arc<JibriController>>) -> Response {
    let s = controller.stats();
    let mut out = String::new();
    let mut counter = |name: &str, labels: &str, v: u64| {
        out.push_str(&format!("jitsi_scaler_jibri_{name}{labels} {v}\n"));
    };
    for (outcome, n) in &s.webhooks {
        counter("webhooks_total", &format!("{{outcome=\"{outcome}\"}}"), *n);
    }
    for (reason, n) in &s.deletions {
        counter(
            "pod_deletions_total",
            &format!("{{reason=\"{reason}\"}}"),
            *n,
        );
    }
    counter("busy_patches_total", "", s.busy_patches);
    counter("kubernetes_errors_total", "", s.kubernetes_errors);
    counter("sweeps_total", "", s.sweeps);
    counter("sweep_failures_total", "", s.sweep_failures);
    counter("event_failures_total", "", s.event_failures);
    out.push_str(&format!(
        "jitsi_scaler_jibri_last_sweep_seconds {}\n",
        s.last_sweep_millis as f64 / 1000.0
    ));
    out.push_str(&format!(
        "jitsi_scaler_jibri_unreachable_busy_pods {}\n",
        s.health_unreachable
    ));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

async fn not_found() -> Response {
    status(StatusCode::NOT_FOUND)
}

/// The webhook routes alone (mounted into `serve`'s API router when the controller runs there).
pub fn webhook_routes(controller: Arc<JibriController>) -> Router {
    Router::new()
        .route("/webhook/{*rest}", any(webhook))
        .with_state(controller)
}

/// The drop-in controller's whole router.
pub fn router(controller: Arc<JibriController>) -> Router {
    Router::new()
        .route("/", any(root))
        .route("/metrics", axum::routing::get(metrics))
        .route("/webhook/{*rest}", any(webhook))
        .fallback(not_found)
        .with_state(controller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_paths_are_matched_exactly() {
        assert_eq!(
            webhook_target("/webhook/jibri-0/v1/status"),
            Some(("jibri-0", false))
        );
        assert_eq!(
            webhook_target("/webhook/jibri-0/v1/session/status"),
            Some(("jibri-0", true))
        );
        assert_eq!(
            webhook_target("/webhook/a%2Fb/v1/status"),
            Some(("a%2Fb", false))
        );
        assert_eq!(
            webhook_target("/webhook/jibri-0/v1/status/"),
            None,
            "trailing slash"
        );
        assert_eq!(webhook_target("/webhook//v1/status"), None);
        assert_eq!(webhook_target("/webhook/a/b/v1/status"), None);
        assert_eq!(webhook_target("/webhook/jibri-0"), None);
        assert_eq!(webhook_target("/hook/jibri-0/v1/status"), None);
    }
}
