//! A plugin implementing the HTTP plugin protocol in memory: idempotency keys honoured, lists
//! paged (two instances per page by default), bearer token checked.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Fault;
use super::fake_digitalocean::query_map;
use super::server::TestServer;
use crate::custom::protocol::{
    ErrorClass, ErrorReply, ErrorWire, InstancePage, InstanceWire, LaunchCall, LaunchReply,
    LaunchedWire,
};

/// An instance the plugin holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInstance {
    /// Id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// Group.
    pub group: String,
    /// `Running` or `Terminated`.
    pub status: String,
}

#[derive(Debug)]
struct State {
    token: String,
    instances: BTreeMap<String, PluginInstance>,
    keys: HashMap<String, String>,
    next: u64,
    fault: Fault,
    calls: usize,
    page_size: usize,
    launch_calls: Vec<LaunchCall>,
    capacity: Option<usize>,
}

/// The plugin, serving on 127.0.0.1 until dropped.
#[derive(Debug)]
pub struct FakePlugin {
    state: Arc<Mutex<State>>,
    server: TestServer,
}

impl FakePlugin {
    /// Starts a plugin that wants `Authorization: Bearer <token>`.
    pub async fn start(token: &str) -> Self {
        let state = Arc::new(Mutex::new(State {
            token: token.to_owned(),
            instances: BTreeMap::new(),
            keys: HashMap::new(),
            next: 1,
            fault: Fault::None,
            calls: 0,
            page_size: 2,
            launch_calls: Vec::new(),
            capacity: None,
        }));
        let shared = state.clone();
        let router = axum::Router::new().fallback(move |request: Request<Body>| {
            let state = shared.clone();
            async move { handle(state, request).await }
        });
        Self {
            state,
            server: TestServer::start(router).await,
        }
    }

    /// Base URL of the protocol (`http://127.0.0.1:<port>/plugin/v1`).
    pub fn url(&self) -> String {
        format!("{}/plugin/v1", self.server.url())
    }

    /// Makes the plugin misbehave.
    pub fn set_fault(&self, fault: Fault) {
        self.state.lock().unwrap().fault = fault;
    }

    /// Calls received so far.
    pub fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }

    /// Every launch call's body.
    pub fn launch_calls(&self) -> Vec<LaunchCall> {
        self.state.lock().unwrap().launch_calls.clone()
    }

    /// Instances held, in any state.
    pub fn instances(&self) -> Vec<PluginInstance> {
        self.state
            .lock()
            .unwrap()
            .instances
            .values()
            .cloned()
            .collect()
    }

    /// At most `n` more instances can be launched; the rest get a `capacity` error.
    pub fn set_capacity(&self, n: usize) {
        self.state.lock().unwrap().capacity = Some(n);
    }
}

fn reply_error(
    status: StatusCode,
    class: ErrorClass,
    message: &str,
    retry_after_sec: Option<f64>,
) -> Response {
    let body = ErrorReply {
        error: ErrorWire {
            class,
            message: message.to_owned(),
            retry_after_sec,
        },
    };
    (status, axum::Json(body)).into_response()
}

async fn handle(state: Arc<Mutex<State>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 1 << 20).await.unwrap_or_default();
    let mut state = state.lock().unwrap();
    state.calls += 1;
    let expected = format!("Bearer {}", state.token);
    if parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
    {
        return reply_error(
            StatusCode::UNAUTHORIZED,
            ErrorClass::Config,
            "bad token",
            None,
        );
    }
    match state.fault {
        Fault::None => {}
        Fault::ThrottleOnce => {
            state.fault = Fault::None;
            return reply_error(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorClass::Throttled,
                "slow down",
                Some(0.0),
            );
        }
        Fault::ThrottleAlways => {
            return reply_error(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorClass::Throttled,
                "slow down",
                Some(3600.0),
            );
        }
        Fault::ServerErrors => {
            return (StatusCode::SERVICE_UNAVAILABLE, "upstream down").into_response();
        }
    }
    let query = query_map(parts.uri.query().unwrap_or_default());
    let segments: Vec<String> = parts
        .uri
        .path()
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::POST, ["plugin", "v1", "launch"]) => {
            let Ok(call) = serde_json::from_slice::<LaunchCall>(&body) else {
                return reply_error(
                    StatusCode::BAD_REQUEST,
                    ErrorClass::Fatal,
                    "bad launch body",
                    None,
                );
            };
            state.launch_calls.push(call.clone());
            let mut reply = LaunchReply::default();
            for (slot, s) in call.slots.iter().enumerate() {
                if let Some(id) = state.keys.get(&s.idempotency_key).cloned() {
                    reply.launched.push(LaunchedWire {
                        slot,
                        instance_id: id,
                        display_name: s.display_name.clone(),
                    });
                    continue;
                }
                if state.capacity == Some(0) {
                    reply.error = Some(ErrorWire {
                        class: ErrorClass::Capacity,
                        message: "no capacity".into(),
                        retry_after_sec: None,
                    });
                    continue;
                }
                if let Some(c) = state.capacity.as_mut() {
                    *c -= 1;
                }
                let id = format!("plugin-{}", state.next);
                state.next += 1;
                state.keys.insert(s.idempotency_key.clone(), id.clone());
                state.instances.insert(
                    id.clone(),
                    PluginInstance {
                        id: id.clone(),
                        display_name: s.display_name.clone(),
                        group: call.group.name.clone(),
                        status: "Running".into(),
                    },
                );
                reply.launched.push(LaunchedWire {
                    slot,
                    instance_id: id,
                    display_name: s.display_name.clone(),
                });
            }
            axum::Json(reply).into_response()
        }
        (&Method::GET, ["plugin", "v1", "instances"]) => {
            let Some(group) = query.get("group") else {
                return reply_error(
                    StatusCode::BAD_REQUEST,
                    ErrorClass::Fatal,
                    "group is required",
                    None,
                );
            };
            let start: usize = query
                .get("pageToken")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let all: Vec<&PluginInstance> = state
                .instances
                .values()
                .filter(|i| &i.group == group)
                .collect();
            let page = InstancePage {
                instances: all
                    .iter()
                    .skip(start)
                    .take(state.page_size)
                    .map(|i| InstanceWire {
                        instance_id: i.id.clone(),
                        display_name: i.display_name.clone(),
                        cloud_status: i.status.clone(),
                        created_at: Some("2026-01-05T21:31:40Z".into()),
                    })
                    .collect(),
                next_page_token: (start + state.page_size < all.len())
                    .then(|| (start + state.page_size).to_string()),
            };
            axum::Json(page).into_response()
        }
        (&Method::DELETE, ["plugin", "v1", "instances", id]) => {
            let id = (*id).to_owned();
            match state.instances.get_mut(&id) {
                Some(i) if i.status != "Terminated" => {
                    i.status = "Terminated".into();
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => reply_error(
                    StatusCode::NOT_FOUND,
                    ErrorClass::NotFound,
                    "no such instance",
                    None,
                ),
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"class": "not_found", "message": "no such endpoint"}})),
        )
            .into_response(),
    }
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
