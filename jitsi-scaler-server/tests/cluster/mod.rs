//! Replicas of the built `jitsi-scaler serve` as child processes on one Redis, with a fake
//! cloud: start, kill (SIGKILL), pause (SIGSTOP), resume (SIGCONT), terminate (SIGTERM), their
//! logs, their leadership as `/health?deep=1` reports it, and small HTTP helpers.
#![allow(dead_code)]

pub mod fake_cloud;

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// The lease TTL of every replica, in seconds (the smallest allowed).
pub const LEASE_TTL_SEC: u64 = 3;
/// How long a replica may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one HTTP request made by a test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP client for the tests.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("HTTP client")
}

/// Lines a child printed, with a way to wait for one.
#[derive(Default)]
pub struct Log {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

impl Log {
    fn push(&self, line: String) {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
        self.changed.notify_all();
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Lines so far.
    pub fn len(&self) -> usize {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The JSON log records from line `from` on whose `message` contains `needle`.
    pub fn messages(&self, from: usize, needle: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .skip(from)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .filter(|v| v["message"].as_str().is_some_and(|m| m.contains(needle)))
            .collect()
    }

    /// Waits (blocking, at most `timeout`) for a line from `from` on that satisfies `found`.
    fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        found: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(line) = lines.iter().skip(from).find(|l| found(l)) {
                return Some(line.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            lines = self
                .changed
                .wait_timeout(lines, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// What a replica's `/health?deep=1` says of the leadership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The replica's identity.
    pub identity: String,
    /// It leads now.
    pub is_leader: bool,
    /// The leader it knows of.
    pub leader: Option<String>,
    /// The token of that leadership.
    pub token: Option<u64>,
}

/// How replicas are started.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `redis://…`.
    pub redis_url: String,
    /// The fake cloud's URL (`http://127.0.0.1:<port>`).
    pub cloud_url: String,
    /// More `serve` arguments.
    pub extra_args: Vec<String>,
    /// `--identity` of every replica (default: its own `<name>-<incarnation>`).
    pub identity: Option<String>,
}

/// One incarnation of a replica: `<name>-<incarnation>` is its identity (unless the settings
/// give every replica the same one), and the caller name the fake cloud records.
pub struct Replica {
    /// `a`, `b`, …
    pub name: String,
    /// 1 for the first process of this name, then 2, …
    pub incarnation: u32,
    /// `<name>-<incarnation>`: the caller name at the cloud, and the identity.
    pub identity: String,
    /// `http://127.0.0.1:<api port>`.
    pub api: String,
    /// `http://127.0.0.1:<metrics port>`.
    pub metrics: String,
    /// What it printed.
    pub log: Arc<Log>,
    child: Child,
    watchdog: Child,
    _data_dir: tempfile::TempDir,
    exited: bool,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("identity", &self.identity)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Replica {
    /// Starts `jitsi-scaler serve` as `<name>-<incarnation>` and waits until it listens.
    pub fn start(name: &str, incarnation: u32, settings: &Settings) -> Self {
        let identity = format!("{name}-{incarnation}");
        let data_dir = tempfile::tempdir().expect("data directory");
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_jitsi-scaler"));
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .args(["--store", "redis", "--redis-url", &settings.redis_url])
            .args(["--leader-election", "redis", "--identity"])
            .arg(settings.identity.as_deref().unwrap_or(&identity))
            .args(["--leader-lease-ttl-sec", &LEASE_TTL_SEC.to_string()])
            .args(["--bind", "127.0.0.1", "--port", "0", "--metrics-port", "0"])
            .args(["--initial-wait-for-pooling-ms", "0"])
            .args([
                "--reconcile-interval-sec",
                "1",
                "--sanity-interval-sec",
                "1",
            ])
            .args(["--protected-api", "false", "--cloud-providers", "fake"])
            .args(["--log-format", "json", "--log-level", "info"])
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(&settings.extra_args)
            .env_remove("RUST_LOG")
            .env(
                "PLUGIN_FAKE_URL",
                format!("{}/r/{identity}", settings.cloud_url),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn jitsi-scaler serve");
        // Kills the replica when this test process ends, however it ends (stdin EOF).
        let watchdog = Command::new("sh")
            .args([
                "-c",
                "read -r _; kill -9 \"$1\" 2>/dev/null",
                "sh",
                &child.id().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the watchdog");
        let log = Arc::new(Log::default());
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    match line {
                        Ok(line) => log.push(line),
                        Err(_) => break,
                    }
                }
            });
        }
        let mut replica = Self {
            name: name.to_owned(),
            incarnation,
            identity,
            api: String::new(),
            metrics: String::new(),
            log,
            child,
            watchdog,
            _data_dir: data_dir,
            exited: false,
        };
        let listening = replica.log.wait_for(0, START_TIMEOUT, |l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["message"] == "listening" && v["api"].is_string())
        });
        let Some(line) = listening else {
            let status = replica.child.try_wait();
            panic!(
                "{} did not start listening ({status:?}):\n{}",
                replica.identity,
                replica.log.lines().join("\n")
            );
        };
        let v: Value = serde_json::from_str(&line).expect("JSON log line");
        replica.api = format!("http://{}", v["api"].as_str().unwrap_or_default());
        replica.metrics = format!("http://{}", v["metrics"].as_str().unwrap_or_default());
        replica
    }

    /// Waits (at most `timeout`) for a JSON log record from line `from` on whose message
    /// contains one of `needles`; `None` when none came.
    pub async fn wait_for_message(
        &self,
        from: usize,
        needles: &[&str],
        timeout: Duration,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = needles
                .iter()
                .find_map(|n| self.log.messages(from, n).into_iter().next())
            {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap_or_else(|e| panic!("{signal} to {}: {e}", self.identity));
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        if !self.exited {
            self.signal(Signal::SIGKILL);
            let _ = self.child.wait();
            self.exited = true;
        }
    }

    /// SIGSTOP: the process freezes with its connections open.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// SIGTERM, then waits (at most `timeout`) for the exit; its status.
    pub async fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.exited = true;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within {timeout:?} after SIGTERM",
                self.identity
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Still running (not exited).
    pub fn is_running(&mut self) -> bool {
        !self.exited && matches!(self.child.try_wait(), Ok(None))
    }

    /// The leadership its deep health check reports (`None` when it does not answer).
    pub async fn leadership(&self, http: &reqwest::Client) -> Option<Leadership> {
        let response = http
            .get(format!("{}/health?deep=1", self.metrics))
            .header("accept", "application/json")
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let header = response
            .headers()
            .get("x-jitsi-scaler-fencing-token")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body: Value = response.json().await.ok()?;
        let l = &body["leadership"];
        let status = Leadership {
            identity: l["identity"].as_str()?.to_owned(),
            is_leader: l["isLeader"].as_bool()?,
            leader: l["leader"].as_str().map(str::to_owned),
            token: l["token"].as_u64(),
        };
        assert_eq!(status.token, header, "the header carries the same token");
        Some(status)
    }

    /// The deep health check's JSON (200 or 500), or `None` when it does not answer.
    pub async fn deep_health(&self, http: &reqwest::Client) -> Option<(u16, Value)> {
        let response = http
            .get(format!("{}/health?deep=1", self.metrics))
            .header("accept", "application/json")
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    /// The sum of every series of a metric (0 when absent).
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> f64 {
        let text = http
            .get(format!("{}/metrics", self.metrics))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        if !self.exited {
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// An HTTP answer: status and JSON body (`Null` when not JSON).
#[derive(Clone, Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Answer {
    /// 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends a JSON request; `None` when no answer came (connection refused, timeout).
pub async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> Option<Answer> {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.ok()?;
    Some(Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    })
}

/// `GET` expecting 200; the JSON body.
pub async fn get_ok(http: &reqwest::Client, url: &str) -> Value {
    let answer = send(http, reqwest::Method::GET, url, None)
        .await
        .unwrap_or_else(|| panic!("GET {url}: no answer"));
    assert_eq!(answer.status, 200, "GET {url}: {:?}", answer.body);
    answer.body
}

/// `PUT` expecting 200.
pub async fn put_ok(http: &reqwest::Client, url: &str, body: &Value) {
    let answer = send(http, reqwest::Method::PUT, url, Some(body))
        .await
        .unwrap_or_else(|| panic!("PUT {url}: no answer"));
    assert_eq!(answer.status, 200, "PUT {url} {body}: {:?}", answer.body);
}

/// `POST` expecting 200; the JSON body.
pub async fn post_ok(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    let answer = send(http, reqwest::Method::POST, url, Some(body))
        .await
        .unwrap_or_else(|| panic!("POST {url}: no answer"));
    assert_eq!(answer.status, 200, "POST {url} {body}: {:?}", answer.body);
    answer.body
}

/// Polls `check` every 50 ms until it yields a value (at most `timeout`).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sidecar's `/sidecar/status` report of a JVB with the given stress.
pub fn jvb_report(group: &str, instance_id: &str, stress: f64) -> Value {
    serde_json::json!({
        "instance": {"instanceId": instance_id, "instanceType": "JVB", "group": group,
            "cloud": "fake", "region": "test-1", "name": format!("{instance_id}-name"),
            "version": "2.3.100", "privateIp": "10.0.0.5", "publicIp": "192.0.2.5"},
        "stats": {"stress_level": stress, "participants": 3, "conferences": 1},
        "timestamp": jiff::Timestamp::now().as_millisecond(),
        "shutdownStatus": false, "shutdownError": false, "reconfigureError": false,
        "reconfigureComplete": "", "statsError": false,
    })
}

/// A JVB group on the fake cloud (autoscale and launch off unless the caller changes them).
pub fn jvb_group(name: &str, min: u32, desired: u32, max: u32) -> Value {
    serde_json::json!({
        "name": name, "type": "JVB", "region": "test-1", "environment": "test",
        "cloud": "fake", "enableAutoScale": false, "enableLaunch": false,
        "gracePeriodTTLSec": 0,
        "scalingOptions": {"minDesired": min, "maxDesired": max, "desiredCount": desired,
            "scaleUpQuantity": 1, "scaleDownQuantity": 1, "scaleUpThreshold": 0.8,
            "scaleDownThreshold": 0.3, "scalePeriod": 60, "scaleUpPeriodsCount": 2,
            "scaleDownPeriodsCount": 2},
    })
}

/// Replicas sharing one Redis and one fake cloud, each slot restartable as a new incarnation.
pub struct Cluster {
    /// How replicas start.
    pub settings: Settings,
    /// The current incarnation of each slot (`a`, `b`, …).
    pub replicas: Vec<Replica>,
    /// Incarnations killed, with when.
    pub killed: std::collections::HashMap<String, Instant>,
    /// Identities paused now (their health is not asked).
    pub paused: std::collections::HashSet<String>,
    /// The logs of every incarnation, by identity.
    pub logs: std::collections::HashMap<String, Arc<Log>>,
    /// The client the helpers use.
    pub http: reqwest::Client,
}

impl Cluster {
    /// Starts one replica per name, one after the other.
    pub fn start(settings: Settings, names: &[&str]) -> Self {
        let replicas: Vec<Replica> = tokio::task::block_in_place(|| {
            names
                .iter()
                .map(|n| Replica::start(n, 1, &settings))
                .collect()
        });
        let logs = replicas
            .iter()
            .map(|r| (r.identity.clone(), r.log.clone()))
            .collect();
        Self {
            settings,
            replicas,
            killed: Default::default(),
            paused: Default::default(),
            logs,
            http: client(),
        }
    }

    /// The log lines of an incarnation that contain one of `needles`.
    pub fn log_lines(&self, identity: &str, needles: &[&str]) -> Vec<String> {
        self.logs.get(identity).map_or_else(Vec::new, |log| {
            log.lines()
                .into_iter()
                .filter(|l| needles.iter().any(|n| l.contains(n)))
                .collect()
        })
    }

    /// The slot of the incarnation with this identity.
    pub fn slot_of(&self, identity: &str) -> Option<usize> {
        self.replicas.iter().position(|r| r.identity == identity)
    }

    /// Kills slot `i` (SIGKILL) and starts its next incarnation; when the kill happened.
    pub fn kill_and_restart(&mut self, i: usize) -> Instant {
        self.replicas[i].kill();
        let killed_at = Instant::now();
        self.killed
            .insert(self.replicas[i].identity.clone(), killed_at);
        let (name, incarnation) = (
            self.replicas[i].name.clone(),
            self.replicas[i].incarnation + 1,
        );
        let next =
            tokio::task::block_in_place(|| Replica::start(&name, incarnation, &self.settings));
        self.logs.insert(next.identity.clone(), next.log.clone());
        self.replicas[i] = next;
        killed_at
    }

    /// Pauses slot `i` (SIGSTOP).
    pub fn pause(&mut self, i: usize) {
        self.replicas[i].pause();
        self.paused.insert(self.replicas[i].identity.clone());
    }

    /// Resumes slot `i` (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        self.replicas[i].resume();
        self.paused.remove(&self.replicas[i].identity);
    }

    /// Waits for a replica (not paused, not `except`) that reports itself leader; its slot and
    /// leadership.
    pub async fn leader_except(
        &self,
        except: Option<&str>,
        timeout: Duration,
    ) -> (usize, Leadership) {
        eventually("a leader", timeout, || async {
            for (i, r) in self.replicas.iter().enumerate() {
                if self.paused.contains(&r.identity) || Some(r.identity.as_str()) == except {
                    continue;
                }
                if let Some(status) = r.leadership(&self.http).await
                    && status.is_leader
                {
                    return Some((i, status));
                }
            }
            None
        })
        .await
    }

    /// Waits for the leader.
    pub async fn leader(&self, timeout: Duration) -> (usize, Leadership) {
        self.leader_except(None, timeout).await
    }

    /// The API URL of a running (not paused) replica other than `not` when there is one.
    pub fn api_of_another(&self, not: usize) -> String {
        self.replicas
            .iter()
            .enumerate()
            .find(|(i, r)| *i != not && !self.paused.contains(&r.identity))
            .map_or_else(|| self.replicas[not].api.clone(), |(_, r)| r.api.clone())
    }

    /// A group's report (`groupReport`) as the first answering replica has it.
    pub async fn report(&self, group: &str) -> Option<Value> {
        for r in &self.replicas {
            if self.paused.contains(&r.identity) {
                continue;
            }
            if let Some(answer) = send(
                &self.http,
                reqwest::Method::GET,
                &format!("{}/groups/{group}/report", r.api),
                None,
            )
            .await
                && answer.status == 200
            {
                return Some(answer.body["groupReport"].clone());
            }
        }
        None
    }
}
