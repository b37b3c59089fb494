//! A stateful fake of the DigitalOcean droplet API (create, list by tag with pages, get,
//! delete), answering with full droplet objects so that Prism can validate its answers against
//! DigitalOcean's OpenAPI description.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Fault;
use super::server::TestServer;

/// A droplet the fake holds.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeDroplet {
    /// Droplet id.
    pub id: u64,
    /// Droplet name.
    pub name: String,
    /// `new`, `active`, `off` or `archive`.
    pub status: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Region slug.
    pub region: String,
    /// Size slug.
    pub size: String,
    /// The create request's body.
    pub create_body: Value,
}

/// A request the fake received.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string (empty when none).
    pub query: String,
    /// JSON body, if any.
    pub body: Option<Value>,
}

#[derive(Debug)]
struct State {
    token: String,
    droplets: BTreeMap<u64, FakeDroplet>,
    next_id: u64,
    fault: Fault,
    calls: usize,
    requests: Vec<Recorded>,
    lose_create_answers: usize,
}

/// The fake, serving on 127.0.0.1 until dropped.
#[derive(Debug)]
pub struct FakeDigitalOcean {
    state: Arc<Mutex<State>>,
    server: TestServer,
}

impl FakeDigitalOcean {
    /// Starts a fake that accepts `Authorization: Bearer <token>`.
    pub async fn start(token: &str) -> Self {
        let state = Arc::new(Mutex::new(State {
            token: token.to_owned(),
            droplets: BTreeMap::new(),
            next_id: 3_164_400,
            fault: Fault::None,
            calls: 0,
            requests: Vec::new(),
            lose_create_answers: 0,
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

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Makes the fake misbehave.
    pub fn set_fault(&self, fault: Fault) {
        self.state.lock().unwrap().fault = fault;
    }

    /// The next `n` creates create their droplets but answer 500 (a lost answer).
    pub fn lose_create_answers(&self, n: usize) {
        self.state.lock().unwrap().lose_create_answers = n;
    }

    /// Requests received so far.
    pub fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }

    /// Every request received.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The droplets that exist.
    pub fn droplets(&self) -> Vec<FakeDroplet> {
        self.state
            .lock()
            .unwrap()
            .droplets
            .values()
            .cloned()
            .collect()
    }

    /// Adds a droplet directly; returns its id.
    pub fn insert(&self, name: &str, tags: &[&str], status: &str) -> u64 {
        let mut state = self.state.lock().unwrap();
        let id = state.next_id;
        state.next_id += 1;
        state.droplets.insert(
            id,
            FakeDroplet {
                id,
                name: name.to_owned(),
                status: status.to_owned(),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                region: "fra1".into(),
                size: "s-1vcpu-1gb".into(),
                create_body: json!({}),
            },
        );
        id
    }

    /// Sets a droplet's status.
    pub fn set_status(&self, id: u64, status: &str) {
        if let Some(d) = self.state.lock().unwrap().droplets.get_mut(&id) {
            d.status = status.to_owned();
        }
    }
}

fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn answer(status: StatusCode, body: Option<Value>, reset_in: u64) -> Response {
    let mut response = match body {
        Some(body) => (status, axum::Json(body)).into_response(),
        None => status.into_response(),
    };
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", "5000".parse().unwrap());
    headers.insert("ratelimit-remaining", "4990".parse().unwrap());
    headers.insert(
        "ratelimit-reset",
        (now_epoch() + reset_in).to_string().parse().unwrap(),
    );
    headers.insert(
        "content-type",
        "application/json; charset=utf-8".parse().unwrap(),
    );
    response
}

fn error(status: StatusCode, id: &str, message: &str) -> Response {
    answer(
        status,
        Some(json!({"id": id, "message": message, "request_id": "fake-request-1"})),
        60,
    )
}

fn droplet_json(d: &FakeDroplet) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "memory": 1024,
        "vcpus": 1,
        "disk": 25,
        "locked": false,
        "status": d.status,
        "kernel": null,
        "created_at": "2026-01-05T21:31:40Z",
        "features": [],
        "backup_ids": [],
        "next_backup_window": null,
        "snapshot_ids": [],
        "image": {"id": 7555620, "name": "test image", "distribution": "Ubuntu", "slug": null,
                  "public": false, "regions": ["fra1"], "type": "snapshot"},
        "volume_ids": [],
        "size": {"slug": d.size, "memory": 1024, "vcpus": 1, "disk": 25, "transfer": 1.0,
                 "price_monthly": 6.0, "price_hourly": 0.00893, "regions": [d.region],
                 "available": true, "description": "Basic"},
        "size_slug": d.size,
        "networks": {"v4": [], "v6": []},
        "region": {"name": "Frankfurt 1", "slug": d.region, "features": [], "available": true,
                   "sizes": [d.size]},
        "tags": d.tags,
    })
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'-')
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 255
        && tag
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b':'))
}

/// The decoded pairs of a query string.
pub(crate) fn query_map(query: &str) -> BTreeMap<String, String> {
    let url = reqwest::Url::parse(&format!("http://fake/?{query}")).unwrap();
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn handle(state: Arc<Mutex<State>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 1 << 20).await.unwrap_or_default();
    let json_body: Option<Value> = serde_json::from_slice(&body).ok();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let mut state = state.lock().unwrap();
    state.calls += 1;
    state.requests.push(Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: json_body.clone(),
    });
    if !authorized(&parts.headers, &state.token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unable to authenticate you",
        );
    }
    match state.fault {
        Fault::None => {}
        Fault::ThrottleOnce => {
            state.fault = Fault::None;
            return answer(
                StatusCode::TOO_MANY_REQUESTS,
                Some(json!({"id": "too_many_requests", "message": "API rate limit exceeded."})),
                0,
            );
        }
        Fault::ThrottleAlways => {
            return answer(
                StatusCode::TOO_MANY_REQUESTS,
                Some(json!({"id": "too_many_requests", "message": "API rate limit exceeded."})),
                3600,
            );
        }
        Fault::ServerErrors => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "Unexpected server-side error",
            );
        }
    }
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["v2", "droplets"]) => list(&state, &query, &host),
        (&Method::POST, ["v2", "droplets"]) => create(&mut state, json_body),
        (&Method::DELETE, ["v2", "droplets"]) => {
            // Delete by tag: never used by the provider; answered so a test can see it in the log.
            answer(StatusCode::NO_CONTENT, None, 60)
        }
        (&Method::GET, ["v2", "droplets", id]) => match id
            .parse::<u64>()
            .ok()
            .and_then(|id| state.droplets.get(&id))
        {
            Some(d) => answer(
                StatusCode::OK,
                Some(json!({"droplet": droplet_json(d), "links": {}})),
                60,
            ),
            None => error(
                StatusCode::NOT_FOUND,
                "not_found",
                "The resource you were accessing could not be found.",
            ),
        },
        (&Method::DELETE, ["v2", "droplets", id]) => {
            match id
                .parse::<u64>()
                .ok()
                .and_then(|id| state.droplets.remove(&id))
            {
                Some(_) => answer(StatusCode::NO_CONTENT, None, 60),
                None => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "The resource you were accessing could not be found.",
                ),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint in the fake",
        ),
    }
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {token}"))
}

fn list(state: &State, query: &str, host: &str) -> Response {
    let params = query_map(query);
    let per_page: usize = match params.get("per_page").map(|v| v.parse::<usize>()) {
        None => 20,
        Some(Ok(n)) if (1..=200).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable_entity",
                "per_page must be between 1 and 200",
            );
        }
    };
    let page: usize = params
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let tag = params.get("tag_name");
    let matching: Vec<&FakeDroplet> = state
        .droplets
        .values()
        .filter(|d| tag.is_none_or(|t| d.tags.contains(t)))
        .collect();
    let total = matching.len();
    let start = (page - 1) * per_page;
    let droplets: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(per_page)
        .map(|d| droplet_json(d))
        .collect();
    let last_page = total.div_ceil(per_page).max(1);
    let link = |n: usize| {
        let mut url = reqwest::Url::parse(&format!("http://{host}/v2/droplets")).unwrap();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("page", &n.to_string());
            q.append_pair("per_page", &per_page.to_string());
            if let Some(tag) = tag {
                q.append_pair("tag_name", tag);
            }
        }
        url.to_string()
    };
    let mut pages = serde_json::Map::new();
    if page < last_page {
        pages.insert("next".into(), Value::from(link(page + 1)));
        pages.insert("last".into(), Value::from(link(last_page)));
    }
    if page > 1 {
        pages.insert("first".into(), Value::from(link(1)));
        pages.insert("prev".into(), Value::from(link(page - 1)));
    }
    answer(
        StatusCode::OK,
        Some(json!({"droplets": droplets, "links": {"pages": pages}, "meta": {"total": total}})),
        60,
    )
}

fn create(state: &mut State, body: Option<Value>) -> Response {
    let unprocessable =
        |m: &str| error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_entity", m);
    let Some(Value::Object(body)) = body else {
        return unprocessable("the body must be a JSON object");
    };
    let (Some(size), Some(_image)) = (body.get("size").and_then(Value::as_str), body.get("image"))
    else {
        return unprocessable("size and image are required");
    };
    let names: Vec<String> = match (body.get("name"), body.get("names")) {
        (Some(Value::String(n)), None) => vec![n.clone()],
        (None, Some(Value::Array(names))) => names
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect(),
        _ => return unprocessable("exactly one of name and names is required"),
    };
    if names.is_empty() || names.len() > 10 {
        return unprocessable("names must hold 1 to 10 names");
    }
    if let Some(bad) = names.iter().find(|n| !valid_name(n)) {
        return unprocessable(&format!("{bad} is not a valid droplet name"));
    }
    let tags: Vec<String> = body
        .get("tags")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(bad) = tags.iter().find(|t| !valid_tag(t)) {
        return unprocessable(&format!("{bad} is not a valid tag"));
    }
    let region = body
        .get("region")
        .and_then(Value::as_str)
        .unwrap_or("nyc3")
        .to_owned();
    let mut created = Vec::new();
    for name in &names {
        let id = state.next_id;
        state.next_id += 1;
        let droplet = FakeDroplet {
            id,
            name: name.clone(),
            status: "new".into(),
            tags: tags.clone(),
            region: region.clone(),
            size: size.to_owned(),
            create_body: Value::Object(body.clone()),
        };
        created.push(droplet_json(&droplet));
        state.droplets.insert(id, droplet);
    }
    if state.lose_create_answers > 0 {
        state.lose_create_answers -= 1;
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "Unexpected server-side error",
        );
    }
    let actions: Vec<Value> = created
        .iter()
        .map(|d| json!({"id": d["id"], "rel": "create", "href": format!("https://api.digitalocean.com/v2/actions/{}", d["id"])}))
        .collect();
    if body.contains_key("name") {
        answer(
            StatusCode::ACCEPTED,
            Some(json!({"droplet": created[0], "links": {"actions": actions}})),
            60,
        )
    } else {
        answer(
            StatusCode::ACCEPTED,
            Some(json!({"droplets": created, "links": {"actions": actions}})),
            60,
        )
    }
}
