//! A counting fake cloud speaking the HTTP plugin protocol (docs/plugin-protocol.md), shared by
//! every replica. Each replica incarnation gets its own base URL (`/r/<caller>`), so every call
//! is attributed to the process that made it.
//!
//! It behaves as a correct plugin: a launch slot whose idempotency key already produced an
//! instance is answered with that instance; a terminate of a gone instance answers 404. The
//! effect of a call happens when it arrives (the cloud accepted it); the answer comes after a
//! random delay, so a replica killed or paused during the delay loses the answer, as with a
//! real cloud. Everything is recorded with `Instant`s comparable to the test's own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::watch;

/// One instance the cloud ever launched.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Its id.
    pub id: String,
    /// Its group.
    pub group: String,
    /// The idempotency key that produced it.
    pub key: String,
    /// The caller whose launch created it.
    pub launched_by: String,
    /// When the terminate that ended it arrived.
    pub terminated: Option<Instant>,
}

/// One `POST /launch`.
#[derive(Clone, Debug)]
pub struct LaunchCall {
    /// The caller (replica incarnation).
    pub caller: String,
    /// The group.
    pub group: String,
    /// The launch intent.
    pub intent: String,
    /// The slots' idempotency keys.
    pub keys: Vec<String>,
    /// Keys that already had an instance (answered with it).
    pub repeated: Vec<String>,
    /// Arrival.
    pub started: Instant,
    /// The delay before the answer.
    pub delay: Duration,
    /// When the call ended: answered, or dropped because the caller went away.
    pub ended: Option<Instant>,
    /// The answer was sent.
    pub answered: bool,
    /// Answered 429 without launching anything.
    pub throttled: bool,
}

/// One `DELETE /instances/{id}`.
#[derive(Clone, Debug)]
pub struct TerminateCall {
    /// The caller.
    pub caller: String,
    /// The instance.
    pub instance: String,
    /// Arrival.
    pub started: Instant,
    /// The delay before the answer.
    pub delay: Duration,
    /// When the call ended: answered, or dropped because the caller went away.
    pub ended: Option<Instant>,
    /// The answer was sent.
    pub answered: bool,
    /// The instance was running (else 404).
    pub effective: bool,
}

/// One `GET /instances`.
#[derive(Clone, Debug)]
pub struct ListCall {
    /// The caller.
    pub caller: String,
    /// Arrival.
    pub started: Instant,
}

/// Everything the cloud saw.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// Instances by id.
    pub instances: BTreeMap<String, Instance>,
    /// Idempotency key → instance id.
    pub keys: HashMap<String, String>,
    /// Launch calls in arrival order.
    pub launches: Vec<LaunchCall>,
    /// Terminate calls in arrival order.
    pub terminates: Vec<TerminateCall>,
    /// List calls in arrival order.
    pub lists: Vec<ListCall>,
    /// Most instances running at once, per group.
    pub peak_running: HashMap<String, usize>,
    /// Fewest instances running right after a terminate, per group.
    pub low_after_terminate: HashMap<String, usize>,
}

impl Record {
    /// Instances of `group` not terminated.
    pub fn running(&self, group: &str) -> Vec<&Instance> {
        self.instances
            .values()
            .filter(|i| i.group == group && i.terminated.is_none())
            .collect()
    }

    /// Every call (launch, terminate or list) made by `caller` that arrived after `after`.
    pub fn calls_by_after(&self, caller: &str, after: Instant) -> usize {
        self.launches
            .iter()
            .filter(|c| c.caller == caller && c.started > after)
            .count()
            + self
                .terminates
                .iter()
                .filter(|c| c.caller == caller && c.started > after)
                .count()
            + self
                .lists
                .iter()
                .filter(|c| c.caller == caller && c.started > after)
                .count()
    }
}

/// How slow the cloud answers, in milliseconds.
#[derive(Clone, Debug)]
pub struct Delays {
    /// Of a launch.
    pub launch: Range<u64>,
    /// Of a terminate.
    pub terminate: Range<u64>,
    /// Of a listing.
    pub list: Range<u64>,
}

impl Delays {
    /// A quick cloud.
    pub fn quick() -> Self {
        Self {
            launch: 0..20,
            terminate: 0..20,
            list: 0..5,
        }
    }
}

struct Shared {
    record: watch::Sender<Record>,
    delays: Mutex<Delays>,
    /// Launches from these callers wait until released.
    held: watch::Sender<HashSet<String>>,
    /// The next launch from a caller is answered 429 with this `retryAfterSec`.
    throttle: Mutex<HashMap<String, u64>>,
}

impl Shared {
    fn delay(&self, pick: impl Fn(&Delays) -> Range<u64>) -> Duration {
        let range = pick(&self.delays.lock().unwrap_or_else(|p| p.into_inner()));
        if range.is_empty() {
            return Duration::from_millis(range.start);
        }
        Duration::from_millis(rand::rng().random_range(range))
    }
}

/// Reads a [`FakeCloud`]'s record from anywhere.
#[derive(Clone)]
pub struct CloudView(Arc<Shared>);

impl CloudView {
    /// What the cloud saw so far.
    pub fn record(&self) -> Record {
        self.0.record.borrow().clone()
    }
}

/// The fake cloud, serving on 127.0.0.1 until dropped.
pub struct FakeCloud {
    shared: Arc<Shared>,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCloud {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeCloud {
    /// Serves on a free port.
    pub async fn start(delays: Delays) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake cloud");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let shared = Arc::new(Shared {
            record: watch::Sender::new(Record::default()),
            delays: Mutex::new(delays),
            held: watch::Sender::new(HashSet::new()),
            throttle: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route("/r/{caller}/launch", post(launch))
            .route("/r/{caller}/instances", get(list))
            .route("/r/{caller}/instances/{id}", delete(terminate))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            shared,
            url,
            server,
        }
    }

    /// The plugin base URL for one caller (`PLUGIN_<NAME>_URL`).
    pub fn plugin_url(&self, caller: &str) -> String {
        format!("{}/r/{caller}", self.url)
    }

    /// Changes the delays of the next calls.
    pub fn set_delays(&self, delays: Delays) {
        *self.shared.delays.lock().unwrap_or_else(|p| p.into_inner()) = delays;
    }

    /// What the cloud saw so far.
    pub fn record(&self) -> Record {
        self.shared.record.borrow().clone()
    }

    /// A handle reading the record, for background tasks.
    pub fn view(&self) -> CloudView {
        CloudView(self.shared.clone())
    }

    /// Waits until the record satisfies `done` (at most `timeout`); the record then.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Record) -> bool,
    ) -> Record {
        let mut rx = self.shared.record.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|r| done(r))).await {
            Ok(Ok(record)) => record.clone(),
            _ => panic!("fake cloud: no {what} within {timeout:?}"),
        }
    }

    /// Launches from `caller` are held (after they took effect) until [`release`](Self::release).
    pub fn hold_launches_of(&self, caller: &str) {
        self.shared.held.send_modify(|h| {
            h.insert(caller.to_owned());
        });
    }

    /// Lets every held launch answer.
    pub fn release(&self) {
        self.shared.held.send_modify(HashSet::clear);
    }

    /// The next launch from `caller` is answered `429` with `retryAfterSec`, launching nothing.
    pub fn throttle_next_launch_of(&self, caller: &str, retry_after_sec: u64) {
        self.shared
            .throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(caller.to_owned(), retry_after_sec);
    }
}

enum Call {
    Launch(usize),
    Terminate(usize),
}

/// Records when a call ended. The server drops a handler whose client went away (a killed
/// replica), so an unanswered call ends when this guard is dropped.
struct CallEnd {
    shared: Arc<Shared>,
    call: Call,
}

impl CallEnd {
    fn end(&self, answered: bool) {
        let now = Instant::now();
        self.shared.record.send_modify(|r| {
            let (ended, was_answered) = match self.call {
                Call::Launch(i) => {
                    let c = &mut r.launches[i];
                    (&mut c.ended, &mut c.answered)
                }
                Call::Terminate(i) => {
                    let c = &mut r.terminates[i];
                    (&mut c.ended, &mut c.answered)
                }
            };
            if ended.is_none() {
                *ended = Some(now);
                *was_answered = answered;
            }
        });
    }

    fn answered(self) {
        self.end(true);
    }
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        self.end(false);
    }
}

async fn launch(
    State(shared): State<Arc<Shared>>,
    Path(caller): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let started = Instant::now();
    let group = body["group"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let intent = body["intentId"].as_str().unwrap_or_default().to_owned();
    let slots: Vec<(String, String)> = body["slots"]
        .as_array()
        .map(|slots| {
            slots
                .iter()
                .map(|s| {
                    (
                        s["idempotencyKey"].as_str().unwrap_or_default().to_owned(),
                        s["displayName"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let throttled = shared
        .throttle
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&caller);
    if let Some(retry_after) = throttled {
        shared.record.send_modify(|r| {
            r.launches.push(LaunchCall {
                caller: caller.clone(),
                group: group.clone(),
                intent: intent.clone(),
                keys: slots.iter().map(|(k, _)| k.clone()).collect(),
                repeated: Vec::new(),
                started,
                delay: Duration::ZERO,
                ended: Some(Instant::now()),
                answered: true,
                throttled: true,
            });
        });
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after.to_string())],
            axum::Json(
                json!({"error": {"class": "throttled", "message": "slow down",
                "retryAfterSec": retry_after}}),
            ),
        )
            .into_response();
    }
    let delay = shared.delay(|d| d.launch.clone());
    let mut launched = Vec::new();
    let mut index = 0;
    shared.record.send_modify(|r| {
        let mut repeated = Vec::new();
        for (slot, (key, display_name)) in slots.iter().enumerate() {
            let id = match r.keys.get(key) {
                Some(id) => {
                    repeated.push(key.clone());
                    id.clone()
                }
                None => {
                    let id = format!("i-{:04}", r.instances.len() + 1);
                    r.keys.insert(key.clone(), id.clone());
                    r.instances.insert(
                        id.clone(),
                        Instance {
                            id: id.clone(),
                            group: group.clone(),
                            key: key.clone(),
                            launched_by: caller.clone(),
                            terminated: None,
                        },
                    );
                    id
                }
            };
            launched.push(json!({"slot": slot, "instanceId": id, "displayName": display_name}));
        }
        let running = r.running(&group).len();
        let peak = r.peak_running.entry(group.clone()).or_default();
        *peak = (*peak).max(running);
        index = r.launches.len();
        r.launches.push(LaunchCall {
            caller: caller.clone(),
            group: group.clone(),
            intent: intent.clone(),
            keys: slots.iter().map(|(k, _)| k.clone()).collect(),
            repeated,
            started,
            delay,
            ended: None,
            answered: false,
            throttled: false,
        });
    });
    let end = CallEnd {
        shared: shared.clone(),
        call: Call::Launch(index),
    };
    let mut held = shared.held.subscribe();
    let _ = held.wait_for(|h| !h.contains(&caller)).await;
    tokio::time::sleep(delay).await;
    end.answered();
    axum::Json(json!({"launched": launched})).into_response()
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Path(caller): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let started = Instant::now();
    let group = query.get("group").cloned().unwrap_or_default();
    let delay = shared.delay(|d| d.list.clone());
    let mut instances = Vec::new();
    shared.record.send_modify(|r| {
        r.lists.push(ListCall {
            caller: caller.clone(),
            started,
        });
        instances = r
            .instances
            .values()
            .filter(|i| i.group == group)
            .map(|i| {
                let status = if i.terminated.is_some() {
                    "Terminated"
                } else {
                    "Running"
                };
                json!({"instanceId": i.id, "displayName": i.id, "cloudStatus": status})
            })
            .collect();
    });
    tokio::time::sleep(delay).await;
    axum::Json(json!({"instances": instances})).into_response()
}

async fn terminate(
    State(shared): State<Arc<Shared>>,
    Path((caller, id)): Path<(String, String)>,
) -> Response {
    let started = Instant::now();
    let delay = shared.delay(|d| d.terminate.clone());
    let mut index = 0;
    let mut effective = false;
    shared.record.send_modify(|r| {
        let group = match r.instances.get_mut(&id) {
            Some(i) if i.terminated.is_none() => {
                i.terminated = Some(started);
                effective = true;
                Some(i.group.clone())
            }
            _ => None,
        };
        if let Some(group) = group {
            let running = r.running(&group).len();
            let low = r.low_after_terminate.entry(group).or_insert(running);
            *low = (*low).min(running);
        }
        index = r.terminates.len();
        r.terminates.push(TerminateCall {
            caller: caller.clone(),
            instance: id.clone(),
            started,
            delay,
            ended: None,
            answered: false,
            effective,
        });
    });
    let end = CallEnd {
        shared: shared.clone(),
        call: Call::Terminate(index),
    };
    tokio::time::sleep(delay).await;
    end.answered();
    if effective {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"class": "not_found", "message": "no such instance"}})),
        )
            .into_response()
    }
}
