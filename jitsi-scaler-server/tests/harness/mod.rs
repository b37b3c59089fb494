//! A real jitsi-scaler server for HTTP tests: `app::start` on 127.0.0.1:0 with an explicit
//! command line (never the machine's environment), static tokens for the three roles, and a
//! small HTTP client that keeps every answer's status, headers and body.
#![allow(dead_code)]

pub mod faulty;
pub mod parts;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use jitsi_scaler_core::engine::Scaler;
use jitsi_scaler_server::app::{self, Running};
use jitsi_scaler_server::config::{Cli, Command, ServeArgs};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// Static admin token of every test server.
pub const ADMIN: &str = "admin-token-0123456789abcdef";
/// Static sidecar token of every test server.
pub const SIDECAR: &str = "sidecar-token-0123456789abcdef";
/// Static read-only token of every test server.
pub const READ: &str = "read-token-0123456789abcdef";

/// How long a test waits for something the server does on its own.
pub const WAIT: Duration = Duration::from_secs(20);

/// The `jitsi-scaler` binary built with the tests (the `local` provider's instances).
pub fn scaler_binary() -> &'static str {
    env!("CARGO_BIN_EXE_jitsi-scaler")
}

/// Parses `jitsi-scaler serve ARGS` with every environment fallback switched off, so that no
/// variable of the machine (`PORT`, `REDIS_URL`, `PROTECTED_API`…) changes the test server.
pub fn serve_args<S: AsRef<str>>(args: &[S]) -> ServeArgs {
    let command = Cli::command().mut_subcommand("serve", |serve| {
        serve.mut_args(|arg| arg.env(None::<&'static str>))
    });
    let mut argv = vec!["jitsi-scaler".to_owned(), "serve".to_owned()];
    argv.extend(args.iter().map(|a| a.as_ref().to_owned()));
    let matches = command
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| panic!("bad test command line {argv:?}: {e}"));
    match Cli::from_arg_matches(&matches)
        .expect("command line")
        .command
    {
        Command::Serve(args) => *args,
        other => panic!("not serve: {other:?}"),
    }
}

/// The command line of a test server, to adjust before starting it.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data directory (embedded store, local instances' logs).
    pub data_dir: PathBuf,
    /// Every flag.
    pub args: Vec<String>,
}

impl Config {
    /// Memory store, the `local` provider with the built binary, static tokens for the three
    /// roles, reconciles every second, no initial wait.
    pub fn new(data_dir: &Path) -> Self {
        let args = [
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--store",
            "memory",
            "--initial-wait-for-pooling-ms",
            "0",
            "--reconcile-interval-sec",
            "1",
            "--cloud-providers",
            "local",
            "--local-executable",
            scaler_binary(),
            "--local-terminate-grace",
            "2s",
            "--leader-election",
            "single",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
            "--tokens".to_owned(),
            format!("admin:{ADMIN},sidecar:{SIDECAR},read:{READ}"),
        ])
        .collect();
        Self {
            data_dir: data_dir.to_owned(),
            args,
        }
    }

    /// Adds or replaces a flag (`--name value`).
    pub fn set(mut self, flag: &str, value: impl Into<String>) -> Self {
        let value = value.into();
        match self.args.iter().position(|a| a == flag) {
            Some(i) if i + 1 < self.args.len() => self.args[i + 1] = value,
            _ => {
                self.args.push(flag.to_owned());
                self.args.push(value);
            }
        }
        self
    }

    /// Removes a flag and its value.
    pub fn unset(mut self, flag: &str) -> Self {
        if let Some(i) = self.args.iter().position(|a| a == flag) {
            self.args.drain(i..(i + 2).min(self.args.len()));
        }
        self
    }

    /// The embedded (redb) store in the data directory.
    pub fn embedded(self) -> Self {
        self.set("--store", "embedded")
    }

    /// Starts the server.
    pub async fn start(self) -> Server {
        Server::start(self).await
    }
}

/// A running server and a client for it.
#[derive(Debug)]
pub struct Server {
    running: Option<Running>,
    /// `http://127.0.0.1:<api port>`.
    pub api: String,
    /// `http://127.0.0.1:<metrics port>`.
    pub metrics: String,
    /// The engine (to read or prepare the store).
    pub scaler: Scaler,
    /// The command line it was started with.
    pub config: Config,
    /// The HTTP client.
    pub http: reqwest::Client,
}

/// The rustls provider reqwest needs (the workspace uses `ring`).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client with a timeout on every request.
pub fn client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("HTTP client")
}

impl Server {
    /// Starts a server with this configuration.
    pub async fn start(config: Config) -> Self {
        let running = app::start(serve_args(&config.args))
            .await
            .unwrap_or_else(|e| panic!("server did not start: {e}"));
        Self {
            api: format!("http://{}", running.api_addr),
            metrics: format!("http://{}", running.metrics_addr),
            scaler: running.scaler.clone(),
            running: Some(running),
            config,
            http: client(),
        }
    }

    /// The running server (to stop it).
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(30), running.stop())
                .await
                .expect("the server stops within 30 s")
                .expect("the server stops cleanly");
        }
    }

    /// A request to the API port.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Body) -> Reply {
        send(
            &self.http,
            method,
            &format!("{}{path}", self.api),
            token,
            body,
        )
        .await
    }

    /// `GET` as admin.
    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, Some(ADMIN), Body::None).await
    }

    /// `PUT` JSON as admin.
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(ADMIN), Body::Json(body))
            .await
    }

    /// `POST` JSON as admin.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(ADMIN), Body::Json(body))
            .await
    }

    /// `POST` without a body as admin.
    pub async fn post_empty(&self, path: &str) -> Reply {
        self.call(Method::POST, path, Some(ADMIN), Body::None).await
    }

    /// `DELETE` as admin.
    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, Some(ADMIN), Body::None)
            .await
    }

    /// `POST /sidecar/<route>` with the sidecar token.
    pub async fn sidecar(&self, route: &str, body: Value) -> Reply {
        self.call(
            Method::POST,
            &format!("/sidecar/{route}"),
            Some(SIDECAR),
            Body::Json(body),
        )
        .await
    }

    /// `GET` on the metrics port.
    pub async fn metrics_get(&self, path: &str, accept: Option<&str>) -> Reply {
        let mut request = self.http.get(format!("{}{path}", self.metrics));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        Reply::from(request.send().await.expect("metrics request")).await
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let reply = self.metrics_get("/metrics", None).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.text
    }

    /// Creates a group (must succeed).
    pub async fn create_group(&self, group: &Value) {
        let name = group["name"].as_str().expect("name");
        let reply = self.put(&format!("/groups/{name}"), group.clone()).await;
        reply.expect(200, &json!({"save": "OK"}));
    }

    /// The group report (must exist).
    pub async fn report(&self, group: &str) -> Value {
        let reply = self.get(&format!("/groups/{group}/report")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.json()["groupReport"].clone()
    }

    /// The group as stored (must exist).
    pub async fn group(&self, group: &str) -> Value {
        let reply = self.get(&format!("/groups/{group}")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.json()["instanceGroup"].clone()
    }
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body.
    None,
    /// JSON with `Content-Type: application/json`.
    Json(Value),
    /// Raw bytes with this content type (none when `None`).
    Raw(Vec<u8>, Option<&'static str>),
}

/// Sends one request.
pub async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Body,
) -> Reply {
    let mut request = http.request(method.clone(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request = match body {
        Body::None => request,
        Body::Json(v) => request
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&v).expect("JSON")),
        Body::Raw(bytes, content_type) => {
            let request = match content_type {
                Some(ct) => request.header("content-type", ct),
                None => request,
            };
            request.body(bytes)
        }
    };
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    Reply::from(response).await
}

/// One answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body text.
    pub text: String,
}

impl Reply {
    /// Reads a response.
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("response body");
        Self {
            status,
            headers,
            text,
        }
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON, with `Content-Type: application/json` (panics otherwise).
    pub fn json(&self) -> Value {
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "not a JSON answer (content-type {content_type:?}): {self:?}"
        );
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("invalid JSON ({e}): {self:?}"))
    }

    /// Asserts the status and the exact JSON body.
    pub fn expect(&self, status: u16, body: &Value) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(&self.json(), body, "{self:?}");
    }

    /// Asserts an error answer: this status, a JSON body of the shape
    /// `{"errors":[{"type":kind,"msg":msg}]}`; returns the message.
    pub fn expect_error(&self, status: u16, kind: &str) -> String {
        assert_eq!(self.status, status, "{self:?}");
        let body = self.json();
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{self:?}"));
        assert_eq!(errors.len(), 1, "{self:?}");
        assert_eq!(errors[0]["type"], kind, "{self:?}");
        errors[0]["msg"]
            .as_str()
            .unwrap_or_else(|| panic!("{self:?}"))
            .to_owned()
    }

    /// Asserts a 400 with express-validator field errors; returns `(path, msg)` pairs.
    pub fn field_errors(&self) -> Vec<(String, String)> {
        assert_eq!(self.status, 400, "{self:?}");
        let body = self.json();
        body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{self:?}"))
            .iter()
            .map(|e| {
                assert_eq!(e["type"], "field", "{self:?}");
                assert_eq!(e["location"], "body", "{self:?}");
                (
                    e["path"].as_str().unwrap_or_default().to_owned(),
                    e["msg"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

/// Waits (at most `WAIT`) until `probe` returns `Some`, probing every 100 ms; the value.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(WAIT, what, &mut probe).await
}

/// [`eventually`] with its own deadline.
pub async fn eventually_within<T, F, Fut>(limit: Duration, what: &str, probe: &mut F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A group body in the reference's shape (rest-api.md §2.4) on the `local` provider, with
/// the engine's hands off (no autoscale, no launch) unless the test turns them on.
pub fn group(name: &str) -> Value {
    json!({
        "name": name, "type": "JVB", "region": "local-1", "environment": "test",
        "compartmentId": "", "instanceConfigurationId": "",
        "enableAutoScale": false, "enableLaunch": false,
        "gracePeriodTTLSec": 0, "protectedTTLSec": 600,
        "scalingOptions": {"minDesired": 0, "maxDesired": 4, "desiredCount": 1,
            "scaleUpQuantity": 1, "scaleDownQuantity": 1, "scaleUpThreshold": 0.7,
            "scaleDownThreshold": 0.3, "scalePeriod": 60, "scaleUpPeriodsCount": 2,
            "scaleDownPeriodsCount": 4},
        "tags": {"release_number": "150"},
        "cloud": "local"
    })
}

/// An `InstanceDetails` body.
pub fn details(instance_id: &str, group: &str) -> Value {
    json!({"instanceId": instance_id, "instanceType": "JVB", "group": group,
        "cloud": "local", "region": "local-1", "name": format!("{group}-{instance_id}"),
        "version": "2.3.100", "privateIp": "10.0.0.5", "publicIp": "1.2.3.4"})
}

/// A JVB `StatsReport` body as the reference sidecar sends it.
pub fn jvb_report(instance_id: &str, group: &str, stress: f64) -> Value {
    json!({"instance": details(instance_id, group),
        "stats": {"stress_level": stress, "graceful_shutdown": false, "participants": 3,
                  "conferences": 1, "largest_conference": 3},
        "timestamp": jiff::Timestamp::now().as_millisecond(),
        "shutdownStatus": false, "shutdownError": false, "reconfigureError": false,
        "reconfigureComplete": "", "statsError": false})
}

/// Writes an executable shell script through `sh` (so no writable descriptor of it ever
/// exists in this multi-threaded process, which could make a concurrent `exec` of it fail
/// with ETXTBSY).
pub fn write_script(path: &Path, body: &str) {
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("printf '%s\\n' \"$2\" > \"$1\" && chmod 755 \"$1\"")
        .arg("sh")
        .arg(path)
        .arg(body)
        .status()
        .expect("sh");
    assert!(status.success(), "cannot write {}", path.display());
}
