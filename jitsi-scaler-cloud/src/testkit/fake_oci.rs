//! A stateful fake of the OCI Compute and Identity calls the Oracle provider makes. It verifies
//! every request's signature with the public key (401 `NotAuthenticated` for a missing, wrong
//! or stale one), honours `opc-retry-token`, pages instance lists with `opc-next-page`, and can
//! answer "Out of host capacity" for chosen (AD, FD) pairs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Fault;
use super::fake_digitalocean::query_map;
use super::server::TestServer;
use crate::oracle::signing::{BASIC_HEADERS, BODY_HEADERS, has_body};

/// The compartment the fake launches into.
pub const COMPARTMENT: &str = "ocid1.compartment.oc1..test";

/// An instance the fake holds.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeInstance {
    /// OCID.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// `PROVISIONING`, `RUNNING`, `TERMINATING`, `TERMINATED`, …
    pub lifecycle_state: String,
    /// Availability domain.
    pub availability_domain: String,
    /// Fault domain, when one was asked for.
    pub fault_domain: Option<String>,
    /// Compartment.
    pub compartment_id: String,
    /// Freeform tags.
    pub freeform_tags: HashMap<String, String>,
}

/// One launch call the fake answered.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchCall {
    /// `opc-retry-token`.
    pub retry_token: Option<String>,
    /// Requested AD.
    pub availability_domain: String,
    /// Requested FD.
    pub fault_domain: Option<String>,
    /// Requested display name.
    pub display_name: String,
    /// HTTP status answered.
    pub status: u16,
}

#[derive(Debug)]
struct State {
    key_id: String,
    key: VerifyingKey<Sha256>,
    domains: Vec<(String, Vec<String>)>,
    instances: Vec<FakeInstance>,
    tokens: HashMap<String, String>,
    full: HashSet<(String, String)>,
    page_size: usize,
    fault: Fault,
    calls: usize,
    domain_calls: usize,
    rejected: Vec<String>,
    launches: Vec<LaunchCall>,
    lose_launch_answers: usize,
    next: u64,
}

/// The fake, serving on 127.0.0.1 until dropped.
#[derive(Debug)]
pub struct FakeOci {
    state: Arc<Mutex<State>>,
    server: TestServer,
}

impl FakeOci {
    /// Starts a fake that accepts signatures by `key_id` verifiable with `public_key_pem`, with
    /// availability domains `AD-1`..`AD-<ads>` of `fds` fault domains each.
    pub async fn start(key_id: &str, public_key_pem: &str, ads: usize, fds: usize) -> Self {
        let public = RsaPublicKey::from_public_key_pem(public_key_pem).expect("public key");
        let domains = (1..=ads)
            .map(|a| {
                (
                    format!("Uocm:TEST-AD-{a}"),
                    (1..=fds).map(|f| format!("FAULT-DOMAIN-{f}")).collect(),
                )
            })
            .collect();
        let state = Arc::new(Mutex::new(State {
            key_id: key_id.to_owned(),
            key: VerifyingKey::<Sha256>::new(public),
            domains,
            instances: Vec::new(),
            tokens: HashMap::new(),
            full: HashSet::new(),
            page_size: 100,
            fault: Fault::None,
            calls: 0,
            domain_calls: 0,
            rejected: Vec::new(),
            launches: Vec::new(),
            lose_launch_answers: 0,
            next: 1,
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

    /// Base URL of both Compute and Identity, API version included.
    pub fn url(&self) -> String {
        format!("{}/20160918", self.server.url())
    }

    /// Makes the fake misbehave.
    pub fn set_fault(&self, fault: Fault) {
        self.state.lock().unwrap().fault = fault;
    }

    /// Requests received so far (including rejected ones).
    pub fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }

    /// Availability and fault domain list calls so far.
    pub fn domain_calls(&self) -> usize {
        self.state.lock().unwrap().domain_calls
    }

    /// Why requests were rejected with 401.
    pub fn rejected(&self) -> Vec<String> {
        self.state.lock().unwrap().rejected.clone()
    }

    /// Every launch call.
    pub fn launches(&self) -> Vec<LaunchCall> {
        self.state.lock().unwrap().launches.clone()
    }

    /// The instances that exist (in any state).
    pub fn instances(&self) -> Vec<FakeInstance> {
        self.state.lock().unwrap().instances.clone()
    }

    /// Launches at `(ad, fd)` answer "Out of host capacity".
    pub fn set_full(&self, ad: &str, fd: &str) {
        self.state
            .lock()
            .unwrap()
            .full
            .insert((ad.to_owned(), fd.to_owned()));
    }

    /// Instances per listed page at most.
    pub fn set_page_size(&self, n: usize) {
        self.state.lock().unwrap().page_size = n.max(1);
    }

    /// The next `n` launches launch but answer 500 (a lost answer).
    pub fn lose_launch_answers(&self, n: usize) {
        self.state.lock().unwrap().lose_launch_answers = n;
    }

    /// TERMINATING instances become TERMINATED.
    pub fn settle(&self) {
        for i in &mut self.state.lock().unwrap().instances {
            if i.lifecycle_state == "TERMINATING" {
                i.lifecycle_state = "TERMINATED".into();
            }
        }
    }

    /// Adds an instance directly; returns its id.
    pub fn insert(
        &self,
        display_name: &str,
        group: Option<&str>,
        state: &str,
        ad: &str,
        fd: &str,
    ) -> String {
        let mut s = self.state.lock().unwrap();
        let id = format!("ocid1.instance.oc1.test.fake{}", s.next);
        s.next += 1;
        s.instances.push(FakeInstance {
            id: id.clone(),
            display_name: display_name.to_owned(),
            lifecycle_state: state.to_owned(),
            availability_domain: ad.to_owned(),
            fault_domain: Some(fd.to_owned()),
            compartment_id: COMPARTMENT.to_owned(),
            freeform_tags: group
                .map(|g| HashMap::from([("group".to_owned(), g.to_owned())]))
                .unwrap_or_default(),
        });
        id
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response();
    response
        .headers_mut()
        .insert("opc-request-id", "FAKE/REQUEST/1".parse().unwrap());
    response
}

fn instance_json(i: &FakeInstance) -> Value {
    json!({
        "id": i.id,
        "displayName": i.display_name,
        "lifecycleState": i.lifecycle_state,
        "availabilityDomain": i.availability_domain,
        "faultDomain": i.fault_domain,
        "compartmentId": i.compartment_id,
        "region": "test-region-1",
        "shape": "VM.Standard.E4.Flex",
        "freeformTags": i.freeform_tags,
        "definedTags": {},
        "metadata": {},
        "timeCreated": "2026-01-05T21:31:40.000Z",
    })
}

/// Checks a request's signature as OCI does; the reason when it is not acceptable.
fn verify(
    state: &State,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let authorization = header("authorization").ok_or("no Authorization header")?;
    let params = authorization
        .strip_prefix("Signature ")
        .ok_or("not a Signature authorization")?;
    let mut fields = HashMap::new();
    for part in params.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or("malformed signature parameters")?;
        fields.insert(k.trim(), v.trim().trim_matches('"'));
    }
    if fields.get("version") != Some(&"1") || fields.get("algorithm") != Some(&"rsa-sha256") {
        return Err("unsupported signature version or algorithm".into());
    }
    if fields.get("keyId") != Some(&state.key_id.as_str()) {
        return Err(format!("unknown keyId {:?}", fields.get("keyId")));
    }
    let expected: &[&str] = if has_body(method) {
        BODY_HEADERS
    } else {
        BASIC_HEADERS
    };
    if fields.get("headers").copied() != Some(expected.join(" ").as_str()) {
        return Err(format!("signed headers {:?}", fields.get("headers")));
    }
    let date = header("date").ok_or("no date header")?;
    let sent = httpdate::parse_http_date(date).map_err(|_| "unparsable date")?;
    let now = SystemTime::now();
    let skew = now
        .duration_since(sent)
        .or_else(|_| sent.duration_since(now))
        .unwrap_or_default();
    if skew > Duration::from_secs(300) {
        return Err(format!("date {date} is more than 5 minutes off"));
    }
    if expected == BODY_HEADERS {
        let length = header("content-length").ok_or("no content-length")?;
        if length != body.len().to_string() {
            return Err(format!("content-length {length} but {} bytes", body.len()));
        }
        let digest = BASE64.encode(Sha256::digest(body));
        if header("x-content-sha256") != Some(digest.as_str()) {
            return Err("x-content-sha256 does not match the body".into());
        }
    }
    let lines: Vec<String> = expected
        .iter()
        .map(|name| match *name {
            "(request-target)" => Ok(format!(
                "(request-target): {} {target}",
                method.as_str().to_ascii_lowercase()
            )),
            other => header(other)
                .map(|v| format!("{other}: {v}"))
                .ok_or_else(|| format!("signed header {other} missing")),
        })
        .collect::<Result<_, _>>()?;
    let signature = BASE64
        .decode(fields.get("signature").ok_or("no signature")?)
        .map_err(|_| "signature is not base64")?;
    let signature = Signature::try_from(signature.as_slice()).map_err(|_| "malformed signature")?;
    state
        .key
        .verify(lines.join("\n").as_bytes(), &signature)
        .map_err(|_| "signature does not verify".to_owned())
}

async fn handle(state: Arc<Mutex<State>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 1 << 20).await.unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let mut state = state.lock().unwrap();
    state.calls += 1;
    if let Err(reason) = verify(&state, &parts.method, &target, &parts.headers, &body) {
        state.rejected.push(reason.clone());
        return error(StatusCode::UNAUTHORIZED, "NotAuthenticated", &reason);
    }
    match state.fault {
        Fault::None => {}
        Fault::ThrottleOnce => {
            state.fault = Fault::None;
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests",
            );
            r.headers_mut().insert("retry-after", "0".parse().unwrap());
            return r;
        }
        Fault::ThrottleAlways => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests",
            );
            r.headers_mut()
                .insert("retry-after", "3600".parse().unwrap());
            return r;
        }
        Fault::ServerErrors => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "Internal error",
            );
        }
    }
    let query = query_map(parts.uri.query().unwrap_or_default());
    let path = parts.uri.path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["20160918", "availabilityDomains"]) => {
            state.domain_calls += 1;
            let ads: Vec<Value> = state
                .domains
                .iter()
                .map(|(ad, _)| json!({"name": ad, "id": format!("ocid1.availabilitydomain.{ad}"), "compartmentId": query.get("compartmentId")}))
                .collect();
            axum::Json(Value::Array(ads)).into_response()
        }
        (&Method::GET, ["20160918", "faultDomains"]) => {
            state.domain_calls += 1;
            let ad = query.get("availabilityDomain").cloned().unwrap_or_default();
            match state.domains.iter().find(|(name, _)| *name == ad) {
                Some((_, fds)) => axum::Json(Value::Array(
                    fds.iter()
                        .map(|fd| json!({"name": fd, "id": format!("ocid1.faultdomain.{fd}"), "availabilityDomain": ad}))
                        .collect(),
                ))
                .into_response(),
                None => error(StatusCode::BAD_REQUEST, "InvalidParameter", "unknown availability domain"),
            }
        }
        (&Method::POST, ["20160918", "instanceConfigurations", _, "actions", "launch"]) => {
            let token = parts
                .headers
                .get("opc-retry-token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            launch(&mut state, token, &body)
        }
        (&Method::GET, ["20160918", "instances"]) => list(&state, &query),
        (&Method::GET, ["20160918", "instances", id]) => {
            match state.instances.iter().find(|i| i.id == *id) {
                Some(i) => axum::Json(instance_json(i)).into_response(),
                None => error(
                    StatusCode::NOT_FOUND,
                    "NotAuthorizedOrNotFound",
                    "Authorization failed or requested resource not found.",
                ),
            }
        }
        (&Method::DELETE, ["20160918", "instances", id]) => {
            if query.get("preserveBootVolume").map(String::as_str) != Some("false")
                || query
                    .get("preserveDataVolumesCreatedAtLaunch")
                    .map(String::as_str)
                    != Some("false")
            {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameter",
                    "the fake wants preserveBootVolume=false and preserveDataVolumesCreatedAtLaunch=false",
                );
            }
            let id = (*id).to_owned();
            match state.instances.iter_mut().find(|i| i.id == id) {
                None => error(
                    StatusCode::NOT_FOUND,
                    "NotAuthorizedOrNotFound",
                    "Authorization failed or requested resource not found.",
                ),
                Some(i)
                    if i.lifecycle_state == "TERMINATING" || i.lifecycle_state == "TERMINATED" =>
                {
                    error(
                        StatusCode::CONFLICT,
                        "IncorrectState",
                        "The instance is already terminating",
                    )
                }
                Some(i) => {
                    i.lifecycle_state = "TERMINATING".into();
                    StatusCode::NO_CONTENT.into_response()
                }
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "NotAuthorizedOrNotFound",
            "no such endpoint in the fake",
        ),
    }
}

fn launch(state: &mut State, token: Option<String>, body: &[u8]) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "body is not JSON",
        );
    };
    let details = &body["launchDetails"];
    let ad = details["availabilityDomain"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let fd = details["faultDomain"].as_str().map(str::to_owned);
    let name = details["displayName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut call = LaunchCall {
        retry_token: token.clone(),
        availability_domain: ad.clone(),
        fault_domain: fd.clone(),
        display_name: name.clone(),
        status: 200,
    };
    if body["instanceType"] != "compute" {
        call.status = 400;
        state.launches.push(call);
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "instanceType must be compute",
        );
    }
    if let Some(existing) = token.as_ref().and_then(|t| state.tokens.get(t)).cloned() {
        state.launches.push(call);
        let instance = state.instances.iter().find(|i| i.id == existing).unwrap();
        return axum::Json(instance_json(instance)).into_response();
    }
    if !state.domains.iter().any(|(name, _)| *name == ad) {
        call.status = 400;
        state.launches.push(call);
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "unknown availability domain",
        );
    }
    if fd
        .as_ref()
        .is_some_and(|fd| state.full.contains(&(ad.clone(), fd.clone())))
    {
        call.status = 500;
        state.launches.push(call);
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "Out of host capacity.",
        );
    }
    let id = format!("ocid1.instance.oc1.test.fake{}", state.next);
    state.next += 1;
    let tags: HashMap<String, String> = details["freeformTags"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let instance = FakeInstance {
        id: id.clone(),
        display_name: name,
        lifecycle_state: "PROVISIONING".into(),
        availability_domain: ad,
        fault_domain: fd,
        compartment_id: COMPARTMENT.to_owned(),
        freeform_tags: tags,
    };
    let json = instance_json(&instance);
    state.instances.push(instance);
    if let Some(token) = token {
        state.tokens.insert(token, id);
    }
    if state.lose_launch_answers > 0 {
        state.lose_launch_answers -= 1;
        call.status = 500;
        state.launches.push(call);
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "Internal error",
        );
    }
    state.launches.push(call);
    axum::Json(json).into_response()
}

fn list(state: &State, query: &std::collections::BTreeMap<String, String>) -> Response {
    let Some(compartment) = query.get("compartmentId") else {
        return error(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            "compartmentId is required",
        );
    };
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100);
    let size = limit.min(state.page_size).max(1);
    let start: usize = match query.get("page") {
        None => 0,
        Some(p) => match p.strip_prefix("offset-").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameter",
                    "bad page token",
                );
            }
        },
    };
    let matching: Vec<&FakeInstance> = state
        .instances
        .iter()
        .filter(|i| &i.compartment_id == compartment)
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(size)
        .map(|i| instance_json(i))
        .collect();
    let mut response = axum::Json(Value::Array(page)).into_response();
    if start + size < matching.len() {
        response.headers_mut().insert(
            "opc-next-page",
            format!("offset-{}", start + size).parse().unwrap(),
        );
    }
    response
}
