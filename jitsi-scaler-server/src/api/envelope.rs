//! What every API request goes through, in one layer: its id (the caller's `x-request-id`, or
//! one made here, echoed on the answer), a tracing span carrying it, the HTTP metrics, the
//! deadline, and a panic answered as a JSON 500. One layer with one future per request: the
//! check-in path runs it for every sidecar every few seconds.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use tower::{Layer, Service};
use tracing::Instrument;

use super::ApiError;
use crate::telemetry::Metrics;

/// The request id header, read from the caller and set on every answer.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: a process-wide random prefix and a counter in hex (cheap, unique per process).
#[derive(Debug)]
struct Ids {
    prefix: [u8; ID_PREFIX],
    next: AtomicU64,
}

const ID_PREFIX: usize = 8;

impl Ids {
    fn new() -> Self {
        use rand::Rng;
        let mut prefix = [b'0'; ID_PREFIX];
        for (byte, c) in prefix
            .iter_mut()
            .zip(rand::rng().sample_iter(&rand::distr::Alphanumeric))
        {
            *byte = c;
        }
        Self {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    /// `<prefix>-<counter in hex>`, built without the formatting machinery: one per request.
    fn make(&self) -> Option<HeaderValue> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; ID_PREFIX + 1 + 16];
        id[..ID_PREFIX].copy_from_slice(&self.prefix);
        id[ID_PREFIX] = b'-';
        let digits = (16 - n.leading_zeros() as usize / 4).max(1);
        for (i, byte) in id[ID_PREFIX + 1..ID_PREFIX + 1 + digits]
            .iter_mut()
            .enumerate()
        {
            *byte = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
        }
        HeaderValue::from_bytes(&id[..ID_PREFIX + 1 + digits]).ok()
    }
}

#[derive(Debug)]
struct Shared {
    metrics: Arc<Metrics>,
    deadline: Duration,
    ids: Ids,
}

/// The layer: wraps every route (and the fallback) of a router.
#[derive(Clone, Debug)]
pub struct EnvelopeLayer {
    shared: Arc<Shared>,
}

impl EnvelopeLayer {
    /// Metrics go to `metrics`; a request running longer than `deadline` is answered 503.
    pub fn new(metrics: Arc<Metrics>, deadline: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                metrics,
                deadline,
                ids: Ids::new(),
            }),
        }
    }
}

impl<S> Layer<S> for EnvelopeLayer {
    type Service = Envelope<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Envelope {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`EnvelopeLayer`] makes.
#[derive(Clone, Debug)]
pub struct Envelope<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request> for Envelope<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let shared = self.shared.clone();
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(id) => Some(id.clone()),
            None => {
                let made = shared.ids.make();
                if let Some(id) = &made {
                    req.headers_mut().insert(X_REQUEST_ID, id.clone());
                }
                made
            }
        };
        let span = tracing::info_span!(
            "request",
            request_id = id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
            method = %req.method(),
            path = %req.uri().path(),
        );
        let method = req.method().clone();
        let route = req.extensions().get::<MatchedPath>().cloned();
        let started = Instant::now();
        shared
            .metrics
            .http_in_flight
            .inc_by(&[method.as_str()], 1.0);
        // The route's future is made here, so the inner service is never cloned per request.
        let called =
            span.in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))));
        Box::pin(
            async move {
                let mut response = match called {
                    Ok(future) => {
                        let guarded = AssertUnwindSafe(future).catch_unwind();
                        match tokio::time::timeout(shared.deadline, guarded).await {
                            Ok(Ok(Ok(response))) => response,
                            Ok(Ok(Err(never))) => match never {},
                            Ok(Err(panic)) => panic_response(panic),
                            Err(_) => ApiError::Unavailable("the request took too long".into())
                                .into_response(),
                        }
                    }
                    Err(panic) => panic_response(panic),
                };
                if let Some(id) = id {
                    response.headers_mut().entry(X_REQUEST_ID).or_insert(id);
                }
                let m = &shared.metrics;
                let uri = route_label(route.as_ref());
                m.http_in_flight.inc_by(&[method.as_str()], -1.0);
                m.http_requests
                    .inc(&[method.as_str(), response.status().as_str(), &uri]);
                m.http_duration
                    .observe(&[method.as_str(), &uri], started.elapsed().as_secs_f64());
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// The route pattern as the reference labels it: `/groups/{name}` → `/groups/name`.
fn route_label(route: Option<&MatchedPath>) -> Cow<'_, str> {
    match route.map(MatchedPath::as_str) {
        None => Cow::Borrowed("unmatched"),
        Some(p) if p.contains(['{', '}']) => Cow::Owned(p.replace(['{', '}'], "")),
        Some(p) => Cow::Borrowed(p),
    }
}

pub(super) fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    tracing::error!(panic = %detail, "a request handler panicked");
    ApiError::Internal("internal error".into()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    fn app(metrics: &Arc<Metrics>) -> Router {
        Router::new()
            .route("/ok/{name}", get(|| async { "fine" }))
            .route(
                "/panic",
                get(|| async {
                    if true {
                        panic!("boom");
                    }
                    "never"
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }),
            )
            .layer(EnvelopeLayer::new(metrics.clone(), Duration::from_secs(5)))
    }

    async fn call(app: Router, uri: &str, id: Option<&str>) -> Response {
        let mut req = Request::builder().uri(uri);
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        app.oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    async fn body_text(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn the_request_id_is_kept_or_made_and_always_answered() {
        let metrics = Arc::new(Metrics::new());
        let r = call(app(&metrics), "/ok/a", Some("caller-id-1")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[X_REQUEST_ID], "caller-id-1");
        let first = call(app(&metrics), "/ok/a", None).await;
        let second = call(app(&metrics), "/ok/a", None).await;
        let (a, b) = (
            &first.headers()[X_REQUEST_ID],
            &second.headers()[X_REQUEST_ID],
        );
        assert!(!a.is_empty() && a != b, "made ids are unique: {a:?} {b:?}");
    }

    #[test]
    fn made_ids_are_the_prefix_and_the_counter_in_hex() {
        let ids = Ids::new();
        let prefix = std::str::from_utf8(&ids.prefix).expect("ASCII").to_owned();
        assert!(
            prefix.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{prefix}"
        );
        for n in [0u64, 1, 9, 0xa, 0xf, 0x10, 0xabc, 0x1234_5678, u64::MAX] {
            ids.next.store(n, Ordering::Relaxed);
            let id = ids.make().expect("a valid header value");
            assert_eq!(id.to_str().expect("ASCII"), format!("{prefix}-{n:x}"));
        }
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_pattern_and_code() {
        let metrics = Arc::new(Metrics::new());
        for _ in 0..2 {
            call(app(&metrics), "/ok/x", None).await;
        }
        call(app(&metrics), "/nowhere", None).await;
        let m = &metrics;
        assert_eq!(m.http_requests.value(&["GET", "200", "/ok/name"]), 2.0);
        assert_eq!(m.http_requests.value(&["GET", "404", "unmatched"]), 1.0);
        assert_eq!(m.http_duration.value(&["GET", "/ok/name"]), 2.0);
        assert_eq!(m.http_in_flight.value(&["GET"]), 0.0);
    }

    #[tokio::test]
    async fn a_panic_is_a_json_500_and_is_counted() {
        let metrics = Arc::new(Metrics::new());
        let r = call(app(&metrics), "/panic", Some("p-1")).await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(r.headers()[X_REQUEST_ID], "p-1");
        let body: serde_json::Value = serde_json::from_str(&body_text(r).await).expect("JSON");
        assert!(body.to_string().contains("internal error"), "{body}");
        assert_eq!(metrics.http_requests.value(&["GET", "500", "/panic"]), 1.0);
        assert_eq!(metrics.http_in_flight.value(&["GET"]), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_deadline_is_a_503() {
        let metrics = Arc::new(Metrics::new());
        let r = call(app(&metrics), "/slow", None).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body_text(r).await.contains("took too long"));
        assert_eq!(metrics.http_requests.value(&["GET", "503", "/slow"]), 1.0);
    }
}
