//! A small fake autoscaler for the sidecar routes: records every request and answers the
//! command polls with a scripted answer.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::watch;

/// How long a test waits for an expected request.
pub const WAIT: Duration = Duration::from_secs(15);

/// One request received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// `status`, `poll`, `stats` or `shutdown`.
    pub route: String,
    /// The JSON body (`Value::Null` if not JSON).
    pub body: Value,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// Server wall clock at arrival (ms).
    pub received_ms: i64,
    /// The answer given to it.
    pub answered: Answer,
}

impl Recorded {
    /// The instance id of a poll/shutdown body or a report.
    pub fn instance_id(&self) -> Option<&str> {
        self.body
            .get("instanceId")
            .or_else(|| self.body.get("instance")?.get("instanceId"))
            .and_then(Value::as_str)
    }

    /// A report's timestamp.
    pub fn timestamp(&self) -> Option<i64> {
        self.body.get("timestamp").and_then(Value::as_i64)
    }
}

/// The answer to `/sidecar/status` and `/sidecar/poll`.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// `200` with `{"shutdown":…,"reconfigure":…}`.
    Command {
        /// `shutdown`.
        shutdown: bool,
        /// `reconfigure` (`None` ⇒ JSON null).
        reconfigure: Option<String>,
    },
    /// This status code with a JSON error body.
    Status(u16),
    /// `200` with an HTML body.
    NotJson,
    /// Never answers.
    Hang,
}

impl Answer {
    /// `{"shutdown":false,"reconfigure":null}`.
    pub fn nothing() -> Self {
        Answer::Command {
            shutdown: false,
            reconfigure: None,
        }
    }
}

struct Inner {
    requests: watch::Sender<Vec<Recorded>>,
    answer: Mutex<Answer>,
}

/// The fake autoscaler, serving on 127.0.0.1 until dropped.
pub struct FakeAutoscaler {
    inner: Arc<Inner>,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAutoscaler {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeAutoscaler {
    /// Serves on a free port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve(listener)
    }

    /// Serves on the given listener.
    pub fn serve(listener: tokio::net::TcpListener) -> Self {
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let inner = Arc::new(Inner {
            requests: watch::Sender::new(Vec::new()),
            answer: Mutex::new(Answer::nothing()),
        });
        let app = Router::new()
            .route("/sidecar/{route}", post(handle))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, url, server }
    }

    /// Sets the answer of the next command polls.
    pub fn answer(&self, answer: Answer) {
        *self.inner.answer.lock().expect("lock") = answer;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.borrow().clone()
    }

    /// Waits (at most [`WAIT`]) until the requests satisfy `done`; the requests then.
    pub async fn wait_for(
        &self,
        what: &str,
        mut done: impl FnMut(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        let mut rx = self.inner.requests.subscribe();
        match tokio::time::timeout(WAIT, rx.wait_for(|r| done(r))).await {
            Ok(Ok(requests)) => requests.clone(),
            _ => panic!(
                "timed out waiting for {what}; requests: {:#?}",
                self.requests()
            ),
        }
    }

    /// Waits until `n` requests on `route` arrived after the first `skip` requests.
    pub async fn wait_for_count(&self, route: &str, skip: usize, n: usize) -> Vec<Recorded> {
        self.wait_for(&format!("{n} requests on /sidecar/{route}"), |r| {
            r.iter().skip(skip).filter(|x| x.route == route).count() >= n
        })
        .await
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    Path(route): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = match route.as_str() {
        "status" | "poll" => inner.answer.lock().expect("lock").clone(),
        _ => Answer::Command {
            shutdown: false,
            reconfigure: None,
        },
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let recorded = Recorded {
        route: route.clone(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        authorization: header("authorization"),
        content_type: header("content-type"),
        received_ms: jiff::Timestamp::now().as_millisecond(),
        answered: answer.clone(),
    };
    inner.requests.send_modify(|r| r.push(recorded));
    match (route.as_str(), answer) {
        ("stats" | "shutdown", _) => axum::Json(json!({"save": "OK"})).into_response(),
        (
            _,
            Answer::Command {
                shutdown,
                reconfigure,
            },
        ) => axum::Json(json!({"shutdown": shutdown, "reconfigure": reconfigure})).into_response(),
        (_, Answer::Status(code)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(json!({"save": "ERROR"})),
        )
            .into_response(),
        (_, Answer::NotJson) => "<html>internal server error</html>".into_response(),
        (_, Answer::Hang) => std::future::pending().await,
    }
}
