//! The HTTP API: the routers of the API port (sidecar and admin routes, authenticated) and of
//! the metrics port (health, readiness, metrics), with their middleware: request ids, metrics,
//! timeouts, body limits, panics answered as JSON.

mod admission;
pub mod body;
mod envelope;
mod error;
pub mod groups;
pub mod health;
pub mod sidecar;

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use jitsi_scaler_core::engine::Scaler;
use jitsi_scaler_core::group::Group;
use jitsi_scaler_core::group::file::parse_groups_file;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use admission::AdmissionLayer;
use envelope::panic_response;
pub use envelope::{Envelope, EnvelopeLayer, X_REQUEST_ID};
pub use error::ApiError;

use crate::telemetry::Metrics;

/// Who is calling, once admitted.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The token's `sub`, for sidecar tokens that carry one: it must equal the instance id.
    pub subject: Option<String>,
}

impl Caller {
    /// R3: a sidecar token with a subject may only report for that instance.
    pub fn require_subject(&self, instance_id: &str) -> Result<(), ApiError> {
        match &self.subject {
            Some(sub) if sub != instance_id => Err(ApiError::Forbidden(
                "the token's subject is not this instance".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Why a request was not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No valid credentials (401).
    Unauthorized(String),
    /// Valid credentials without the right to this route (403).
    Forbidden(String),
}

/// Authentication and authorization of API requests.
#[async_trait]
pub trait Gate: Send + Sync + Debug {
    /// Admits a request or says why not.
    async fn admit(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<Caller, Denial>;

    /// [`Gate::admit`] when it can be answered without waiting (a credential checked before):
    /// `None` when only `admit` can tell. Every request tries this first, so the common case
    /// costs no extra future and no clone of the route.
    fn admit_now(
        &self,
        _method: &Method,
        _path: &str,
        _authorization: Option<&HeaderValue>,
    ) -> Option<Result<Caller, Denial>> {
        None
    }

    /// Counters to export as `jitsi_scaler_auth_<name>` (name, value).
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

#[async_trait]
impl Gate for crate::auth::Authenticator {
    async fn admit(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<Caller, Denial> {
        gate_answer(self.authorize(method, path, authorization).await)
    }

    fn admit_now(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&HeaderValue>,
    ) -> Option<Result<Caller, Denial>> {
        self.authorize_from_memory(method, path, authorization)
            .map(gate_answer)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let m = self.metrics();
        vec![
            ("authorized_total", m.authorized),
            ("key_fetches_total", m.key_fetches),
            ("key_fetch_failures_total", m.key_fetch_failures),
            ("key_cache_hits_total", m.key_cache_hits),
            ("key_cache_misses_total", m.key_cache_misses),
            ("key_stale_served_total", m.key_stale_served),
            ("token_cache_hits_total", m.token_cache_hits),
            ("token_cache_misses_total", m.token_cache_misses),
            ("signature_verifications_total", m.signature_verifications),
        ]
    }
}

/// The gate's answer for an authorization's outcome.
fn gate_answer(
    authorized: Result<crate::auth::Principal, crate::auth::AuthError>,
) -> Result<Caller, Denial> {
    match authorized {
        Ok(principal) => Ok(Caller {
            subject: principal.bound_instance().map(str::to_owned),
        }),
        Err(e) => {
            let msg = e.reason().message().to_string();
            Err(match e {
                crate::auth::AuthError::Unauthorized(_) => Denial::Unauthorized(msg),
                crate::auth::AuthError::Forbidden(_) => Denial::Forbidden(msg),
            })
        }
    }
}

/// Admits everyone (`PROTECTED_API=false`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenGate;

#[async_trait]
impl Gate for OpenGate {
    async fn admit(&self, _: &Method, _: &str, _: Option<&HeaderValue>) -> Result<Caller, Denial> {
        Ok(Caller::default())
    }

    fn admit_now(
        &self,
        _: &Method,
        _: &str,
        _: Option<&HeaderValue>,
    ) -> Option<Result<Caller, Denial>> {
        Some(Ok(Caller::default()))
    }
}

/// Limits of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Deadline of one request.
    pub request_timeout: Duration,
    /// Deadline of a sidecar call's store access (below the sidecar's 3 s timeout).
    pub sidecar_store_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            sidecar_store_timeout: sidecar::SIDECAR_STORE_TIMEOUT,
        }
    }
}

/// Where `POST /groups/actions/reset` reads the groups from.
#[derive(Clone, Debug, Default)]
pub struct GroupsSource {
    /// `GROUP_CONFIG_FILE`.
    pub path: Option<PathBuf>,
    /// `DEFAULT_COMPARTMENT_ID`.
    pub default_compartment_id: Option<String>,
    /// `DEFAULT_INSTANCE_CONFIGURATION_ID`.
    pub default_instance_configuration_id: Option<String>,
}

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The engine.
    pub scaler: Scaler,
    /// Authentication.
    pub gate: Arc<dyn Gate>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Limits.
    pub limits: Limits,
    /// The groups file (shared: the state is cloned for every request).
    pub groups_source: Arc<GroupsSource>,
    shutting_down: Arc<AtomicBool>,
}

impl AppState {
    /// State for the routers.
    pub fn new(
        scaler: Scaler,
        gate: Arc<dyn Gate>,
        metrics: Arc<Metrics>,
        limits: Limits,
        groups_source: GroupsSource,
    ) -> Self {
        Self {
            scaler,
            gate,
            metrics,
            limits,
            groups_source: Arc::new(groups_source),
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Health answers 503 from now on.
    pub fn start_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Reads and validates the groups file again.
    pub fn reload_groups_file(&self) -> Result<Vec<Group>, ApiError> {
        let src = &self.groups_source;
        let Some(path) = &src.path else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ApiError::Internal(format!("cannot read {}: {e}", path.display())))?;
        parse_groups_file(
            &text,
            src.default_compartment_id.as_deref(),
            src.default_instance_configuration_id.as_deref(),
        )
        .map_err(|e| {
            ApiError::Invalid(jitsi_scaler_core::group::ValidationErrors {
                fields: Vec::new(),
                messages: e.0.iter().map(ToString::to_string).collect(),
            })
        })
    }
}

async fn no_route() -> ApiError {
    ApiError::NoRoute
}

async fn no_method() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The routes of the API port, with their OpenAPI description.
pub fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sidecar::poll))
        .routes(routes!(sidecar::status))
        .routes(routes!(sidecar::stats))
        .routes(routes!(sidecar::shutdown))
        .routes(routes!(groups::list))
        .routes(routes!(groups::get, groups::put, groups::delete))
        .routes(routes!(groups::reset))
        .routes(routes!(groups::full_scaling))
        .routes(routes!(groups::desired))
        .routes(routes!(groups::scaling_options))
        .routes(routes!(groups::scaling_activities))
        .routes(routes!(groups::instance_configuration))
        .routes(routes!(groups::launch_protected))
        .routes(routes!(groups::reconfigure))
        .routes(routes!(groups::report))
        .routes(routes!(groups::group_audit))
        .routes(routes!(groups::instance_audit))
        .routes(routes!(
            groups::get_schedule,
            groups::put_schedule,
            groups::delete_schedule
        ))
}

/// The OpenAPI document of every API route, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = documented_routes().split_for_parts();
    doc.info.title = "jitsi-scaler".into();
    doc.info.description = Some(
        "Sidecar endpoints and admin API of jitsi-scaler (compatible with jitsi-autoscaler)".into(),
    );
    doc
}

async fn openapi_json() -> Response {
    axum::Json(openapi()).into_response()
}

/// The API port's router: sidecar and admin routes behind authentication, `/openapi.json`.
pub fn api_router(state: AppState) -> Router {
    let (routes, _) = documented_routes().split_for_parts();
    let protected = routes
        .route("/groups/{name}/reservations", any(groups::reservations))
        .route(
            "/groups/{name}/reservations/{id}",
            any(groups::reservations),
        )
        .route_layer(AdmissionLayer::new(
            state.gate.clone(),
            state.metrics.clone(),
        ));
    Router::new()
        .merge(protected)
        .route("/openapi.json", get(openapi_json))
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(EnvelopeLayer::new(
            state.metrics.clone(),
            state.limits.request_timeout,
        ))
        .with_state(state)
}

/// The metrics port's router: health, readiness, metrics.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi_json))
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}
