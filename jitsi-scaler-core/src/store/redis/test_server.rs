//! Test helpers (feature `testkit`, with `redis`): real `redis-server` processes on free
//! loopback ports, and a TCP proxy that can cut a client off from its server. They panic on
//! failure, as test code does.
//!
//! Each server runs in its own temporary directory, without persistence unless started with
//! [`RedisServer::start_with_aof`], next to a tiny watchdog shell that kills it (and removes the
//! directory) when the test process exits, even if the process is killed: the watchdog reads
//! its stdin from this process and acts on EOF.
//! The binary is `JITSI_SCALER_REDIS_SERVER` or `redis-server` on the `PATH`. When it is
//! missing, tests print why and return early, unless `JITSI_SCALER_REQUIRE_SERVICES=1`.

use std::io::{BufRead, BufReader};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The redis-server binary, if the machine has one.
pub fn redis_server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("JITSI_SCALER_REDIS_SERVER").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

/// The binary, or `None` after printing why the test is skipped (panics instead when services
/// are required).
fn binary_or_skip() -> Option<PathBuf> {
    let binary = redis_server_binary();
    if binary.is_none() {
        if std::env::var("JITSI_SCALER_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!(
                "redis-server is required (JITSI_SCALER_REQUIRE_SERVICES=1) but not found: \
                 install it (.ci/services/redis.sh) or set JITSI_SCALER_REDIS_SERVER"
            );
        }
        eprintln!("skipped: redis-server not found (set JITSI_SCALER_REDIS_SERVER or install it)");
    }
    binary
}

/// One server shared by the tests that only need a fresh key prefix each.
pub fn shared() -> Option<&'static RedisServer> {
    static SHARED: OnceLock<Option<RedisServer>> = OnceLock::new();
    SHARED.get_or_init(RedisServer::start).as_ref()
}

/// A key prefix no other test uses.
pub fn fresh_prefix() -> String {
    format!("test-{:016x}:", rand::random::<u64>())
}

/// Lines a server printed, with a way to wait for one.
#[derive(Default)]
struct Log {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Log {
    fn push(&self, line: String) {
        let mut guard = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.push(line);
        self.changed.notify_all();
    }

    fn close(&self) {
        let mut guard = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        guard.1 = true;
        self.changed.notify_all();
    }

    /// Waits for a line containing `needle` after line `from`; the lines so far when it does
    /// not come.
    fn wait_for(&self, needle: &str, from: usize, timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(i) = guard.0.iter().skip(from).position(|l| l.contains(needle)) {
                return Ok(from + i);
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                return Err(guard.0.join("\n"));
            }
            guard = self
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn len(&self) -> usize {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).0.len()
    }
}

struct Running {
    child: Child,
    watchdog: Child,
    log: Arc<Log>,
}

/// A redis-server (or sentinel) process owned by a test.
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    /// Arguments after the port and the defaults (`--replicaof …`).
    extra: Vec<String>,
    /// A sentinel: its configuration file.
    sentinel_conf: Option<PathBuf>,
    /// Serves TLS only, with a certificate from a test CA (`ca.pem` in `dir`).
    tls: bool,
    running: Option<Running>,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .finish()
    }
}

impl RedisServer {
    /// A fresh server on a free port, or `None` when the test is to be skipped.
    pub fn start() -> Option<Self> {
        Self::start_with(Vec::new(), None, false)
    }

    /// A fresh server that persists every write before answering (`--appendonly yes
    /// --appendfsync always`): after [`stop`](Self::stop) (a kill) and
    /// [`start_again`](Self::start_again) it holds every acknowledged write.
    pub fn start_with_aof() -> Option<Self> {
        Self::start_with(
            ["--appendonly", "yes", "--appendfsync", "always"]
                .map(String::from)
                .to_vec(),
            None,
            false,
        )
    }

    /// A fresh server speaking TLS only, its certificate signed by a CA made for it (see
    /// [`ca_file`](Self::ca_file)); needs the `openssl` command.
    pub fn start_tls() -> Option<Self> {
        Self::start_with(Vec::new(), None, true)
    }

    /// The PEM file of the CA of a TLS server.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A replica of the server on `master_port`.
    pub fn start_replica_of(master_port: u16) -> Option<Self> {
        let server = Self::start_with(
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master_port.to_string(),
            ],
            None,
            false,
        )?;
        server.wait_for_log("MASTER <-> REPLICA sync: Finished with success", 0);
        Some(server)
    }

    /// A sentinel monitoring the master on `master_port` as `name` (quorum 1).
    pub fn start_sentinel(master_port: u16, name: &str) -> Option<Self> {
        let conf = format!(
            "sentinel monitor {name} 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 5000\n"
        );
        Self::start_with(Vec::new(), Some(conf), false)
    }

    fn start_with(extra: Vec<String>, sentinel_conf: Option<String>, tls: bool) -> Option<Self> {
        let binary = binary_or_skip()?;
        if tls && !command_exists("openssl") {
            if std::env::var("JITSI_SCALER_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("openssl is required for the TLS test but not found");
            }
            eprintln!("skipped: openssl not found (needed to make test certificates)");
            return None;
        }
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "jitsi-scaler-redis-{}-{port}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            if let Err(e) = std::fs::create_dir_all(&dir) {
                panic!("temporary directory {}: {e}", dir.display());
            }
            let sentinel_conf = sentinel_conf.as_ref().map(|text| {
                let path = dir.join("sentinel.conf");
                if let Err(e) = std::fs::write(&path, text) {
                    panic!("sentinel configuration: {e}");
                }
                path
            });
            if tls {
                make_certificates(&dir);
            }
            let mut server = Self {
                binary: binary.clone(),
                port,
                dir,
                extra: extra.clone(),
                sentinel_conf,
                tls,
                running: None,
            };
            match server.spawn() {
                Ok(running) => {
                    server.running = Some(running);
                    return Some(server);
                }
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start:\n{last_error}");
    }

    fn spawn(&self) -> Result<Running, String> {
        let mut cmd = Command::new(&self.binary);
        if let Some(conf) = &self.sentinel_conf {
            cmd.arg(conf).arg("--sentinel");
        }
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra);
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.join("server.pem"))
                .arg("--tls-key-file")
                .arg(self.dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(self.ca_file())
                .args(["--tls-auth-clients", "no"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        let watchdog = Command::new("sh")
            .args([
                "-c",
                "read -r _; kill -9 \"$1\" 2>/dev/null; rm -rf \"$2\"",
                "sh",
                &child.id().to_string(),
            ])
            .arg(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let watchdog = match watchdog {
            Ok(w) => w,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("spawn watchdog: {e}"));
            }
        };
        let log = Arc::new(Log::default());
        if let Some(stdout) = child.stdout.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(line) => log.push(line),
                        Err(_) => break,
                    }
                }
                log.close();
            });
        }
        let mut running = Running {
            child,
            watchdog,
            log,
        };
        let ready = if self.sentinel_conf.is_some() {
            "+monitor master"
        } else {
            "Ready to accept connections"
        };
        match running.log.wait_for(ready, 0, START_TIMEOUT) {
            Ok(_) => Ok(running),
            Err(output) => {
                stop(&mut running);
                Err(output)
            }
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The process id while running.
    pub fn pid(&self) -> u32 {
        self.running
            .as_ref()
            .map(|r| r.child.id())
            .unwrap_or_else(|| panic!("server on port {} is not running", self.port))
    }

    /// Kills the server (SIGKILL). Its data is gone, unless it was started with
    /// [`start_with_aof`](Self::start_with_aof).
    pub fn stop(&mut self) {
        if let Some(mut running) = self.running.take() {
            stop(&mut running);
        }
    }

    /// Starts the server again on the same port and in the same directory (a server with an
    /// append-only file loads it).
    pub fn start_again(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(running) => {
                    self.running = Some(running);
                    return;
                }
                Err(e) if Instant::now() >= deadline => panic!("restart failed:\n{e}"),
                // The old socket may linger an instant after the kill.
                Err(_) => continue,
            }
        }
    }

    /// Freezes the process (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }

    /// Waits for a log line containing `needle` after line `from`; its index.
    pub fn wait_for_log(&self, needle: &str, from: usize) -> usize {
        let log = &self
            .running
            .as_ref()
            .unwrap_or_else(|| panic!("server on port {} is not running", self.port))
            .log;
        log.wait_for(needle, from, START_TIMEOUT)
            .unwrap_or_else(|lines| panic!("no {needle:?} in the log:\n{lines}"))
    }

    /// Lines logged so far.
    pub fn log_len(&self) -> usize {
        self.running.as_ref().map_or(0, |r| r.log.len())
    }

    /// A plain client connection for checks made around the code under test.
    pub async fn client(&self) -> ::redis::aio::MultiplexedConnection {
        let client = ::redis::Client::open(self.url())
            .unwrap_or_else(|e| panic!("client for {}: {e}", self.url()));
        tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .unwrap_or_else(|_| panic!("no connection to {} within 5 s", self.url()))
        .unwrap_or_else(|e| panic!("connection to {}: {e}", self.url()))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stop(running: &mut Running) {
    // The watchdog first, so it can never signal a reused pid.
    let _ = running.watchdog.kill();
    let _ = running.watchdog.wait();
    let _ = running.child.kill();
    let _ = running.child.wait();
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill {sig} {pid}: {e}"));
    assert!(status.success(), "kill {sig} {pid} failed");
}

fn command_exists(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(name).is_file()))
}

/// A CA (`ca.pem`) and a server certificate it signed for 127.0.0.1 (`server.pem`,
/// `server.key`) in `dir`.
fn make_certificates(dir: &std::path::Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap_or_else(|e| panic!("certificate extensions: {e}"));
    for args in [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca",
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost",
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
         -days 2 -extfile server.ext",
    ] {
        let output = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("openssl {args}: {e}"));
        assert!(
            output.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Waits until `check` holds, trying every 50 ms, at most `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy in front of a server, which can cut every connection and refuse new ones.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct ProxyState {
    cut: AtomicBool,
    closed: AtomicBool,
    streams: Mutex<Vec<TcpStream>>,
}

impl ProxyState {
    fn cut_all(&self) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        for s in streams.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Proxy {
    /// A proxy on a free port forwarding to `127.0.0.1:<target>`.
    pub fn start(target: u16) -> Self {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("proxy listener: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy address: {e}"))
            .port();
        let state = Arc::new(ProxyState::default());
        let accept_state = state.clone();
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept_state.closed.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if accept_state.cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
                    client.try_clone(),
                    upstream.try_clone(),
                    client.try_clone(),
                    upstream.try_clone(),
                ) else {
                    continue;
                };
                accept_state
                    .streams
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend([c3, u3]);
                std::thread::spawn(move || pump(client, upstream));
                std::thread::spawn(move || pump(u2, c2));
            }
        });
        Self {
            port,
            state,
            accept: Some(accept),
        }
    }

    /// `redis://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state.cut_all();
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so it sees `closed`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}
