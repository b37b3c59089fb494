//! Authentication of the API routes, as a route layer: the [`Gate`] admits a request (its
//! [`Caller`] goes into the request's extensions) or refuses it (401/403, counted and logged).
//! A credential checked before is answered from memory and the route is called at once; only a
//! signature still to verify waits, on a clone of the route.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::future::{BoxFuture, Either};
use tower::{Layer, Service};

use super::{ApiError, Denial, Gate};
use crate::telemetry::Metrics;

/// The layer: `route_layer` it over the routes that need a caller.
#[derive(Clone, Debug)]
pub(super) struct AdmissionLayer {
    gate: Arc<dyn Gate>,
    metrics: Arc<Metrics>,
}

impl AdmissionLayer {
    pub(super) fn new(gate: Arc<dyn Gate>, metrics: Arc<Metrics>) -> Self {
        Self { gate, metrics }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission {
            inner,
            gate: self.gate.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`AdmissionLayer`] makes.
#[derive(Clone, Debug)]
pub(super) struct Admission<S> {
    inner: S,
    gate: Arc<dyn Gate>,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request> for Admission<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let now = self.gate.admit_now(
            req.method(),
            req.uri().path(),
            req.headers().get(header::AUTHORIZATION),
        );
        match now {
            Some(Ok(caller)) => {
                req.extensions_mut().insert(caller);
                Either::Left(self.inner.call(req))
            }
            Some(Err(denial)) => {
                let refused = refuse(&self.metrics, &req, denial);
                Either::Right(Box::pin(async move { Ok(refused) }))
            }
            None => {
                // The ready service goes with the request; this one keeps a fresh clone.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let (gate, metrics) = (self.gate.clone(), self.metrics.clone());
                Either::Right(Box::pin(async move {
                    let admitted = gate
                        .admit(
                            req.method(),
                            req.uri().path(),
                            req.headers().get(header::AUTHORIZATION),
                        )
                        .await;
                    match admitted {
                        Ok(caller) => {
                            req.extensions_mut().insert(caller);
                            inner.call(req).await
                        }
                        Err(denial) => Ok(refuse(&metrics, &req, denial)),
                    }
                }))
            }
        }
    }
}

/// The 401 or 403 answer to a refused request, counted by reason and logged.
fn refuse(metrics: &Metrics, req: &Request, denial: Denial) -> Response {
    let (reason, error) = match denial {
        Denial::Unauthorized(m) => ("unauthorized", ApiError::Unauthorized(m)),
        Denial::Forbidden(m) => ("forbidden", ApiError::Forbidden(m)),
    };
    metrics.auth_failures.inc(&[reason]);
    tracing::info!(method = %req.method(), path = %req.uri().path(), reason, "request refused");
    error.into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use axum::Router;
    use axum::body::Body;
    use axum::http::{HeaderValue, Method, StatusCode};
    use axum::routing::get;
    use axum::{Extension, Json};
    use tower::ServiceExt;

    use super::*;
    use crate::api::Caller;

    /// A gate that admits `Bearer <subject>` and refuses anything else, from memory or not.
    #[derive(Debug, Default)]
    struct Recorded {
        answers_now: bool,
        admits: AtomicUsize,
    }

    impl Recorded {
        fn decide(authorization: Option<&HeaderValue>) -> Result<Caller, Denial> {
            match authorization.and_then(|h| h.to_str().ok()) {
                Some(h) if h.starts_with("Bearer ") => Ok(Caller {
                    subject: Some(h["Bearer ".len()..].to_owned()),
                }),
                _ => Err(Denial::Unauthorized("no token".into())),
            }
        }
    }

    #[async_trait]
    impl Gate for Recorded {
        async fn admit(
            &self,
            _: &Method,
            _: &str,
            authorization: Option<&HeaderValue>,
        ) -> Result<Caller, Denial> {
            self.admits.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
            Self::decide(authorization)
        }

        fn admit_now(
            &self,
            _: &Method,
            _: &str,
            authorization: Option<&HeaderValue>,
        ) -> Option<Result<Caller, Denial>> {
            self.answers_now.then(|| Self::decide(authorization))
        }
    }

    async fn subject(Extension(caller): Extension<Caller>) -> Json<Option<String>> {
        Json(caller.subject)
    }

    async fn call(gate: &Arc<Recorded>, metrics: &Arc<Metrics>, token: Option<&str>) -> Response {
        let app = Router::new()
            .route("/who", get(subject))
            .route_layer(AdmissionLayer::new(gate.clone(), metrics.clone()));
        let mut request = Request::get("/who");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        app.oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    async fn text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn an_answer_from_memory_reaches_the_route_without_waiting_on_the_gate() {
        let gate = Arc::new(Recorded {
            answers_now: true,
            ..Recorded::default()
        });
        let metrics = Arc::new(Metrics::new());
        let admitted = call(&gate, &metrics, Some("i-1")).await;
        assert_eq!(admitted.status(), StatusCode::OK);
        assert_eq!(text(admitted).await, r#""i-1""#);
        let refused = call(&gate, &metrics, None).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(text(refused).await.contains("no token"));
        assert_eq!(gate.admits.load(Ordering::Relaxed), 0, "admit never called");
        assert!(
            metrics
                .encode()
                .contains(r#"jitsi_scaler_auth_failures_total{reason="unauthorized"} 1"#),
            "{}",
            metrics.encode()
        );
    }

    #[tokio::test]
    async fn without_an_answer_from_memory_the_gate_is_awaited() {
        let gate = Arc::new(Recorded::default());
        let metrics = Arc::new(Metrics::new());
        let admitted = call(&gate, &metrics, Some("i-2")).await;
        assert_eq!(admitted.status(), StatusCode::OK);
        assert_eq!(text(admitted).await, r#""i-2""#);
        let refused = call(&gate, &metrics, None).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(gate.admits.load(Ordering::Relaxed), 2);
    }
}
