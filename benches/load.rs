//! Load: the real `jitsi-scaler serve` on loopback, driven by simulated sidecars posting
//! `/sidecar/status` with a JVB's whole StatsReport and an ASAP token signed as the reference
//! sidecar signs it; beside it, in the same run, a bare hyper server that parses the same
//! JSON and answers the same small response: the practical ceiling of this machine.
//!
//! Each server runs in a process of its own (this binary, re-executed), so that its peak RSS
//! and CPU time are its own. With two CPUs or more, the server is pinned to CPU 0 with one
//! runtime worker and the load generator to CPU 1: "per core" numbers, and a generator that
//! never steals the server's CPU. The generator speaks raw HTTP/1.1 on keep-alive connections,
//! a fraction of the server's cost per request; the table shows the server's CPU use, so a
//! run where the server was not the bottleneck is visible.
//!
//! The connections (`LOAD_CONNECTIONS`) speak for a fleet of `LOAD_FLEET` instances in turn,
//! each report from one instance, with its own `timestamp`: at 10 000 check-ins/s each of the
//! 20 000 instances reports every 2 s (a real sidecar: every 30 s or so), so the series the
//! store keeps and the records its commits write are those of a large fleet, not of a few
//! instances reporting hundreds of times a second.
//!
//! Phases per target: a warm-up (every instance once), then a closed loop (`LOAD_REQUESTS`
//! requests over the connections, as fast as the server answers, in `LOAD_ROUNDS` rounds taking turns between the
//! targets; the median round is reported): throughput and latency; then an open loop at
//! `LOAD_RATE` check-ins/s for `LOAD_RATE_SECS` seconds, latency measured from each
//! request's scheduled time (no coordinated omission). `LOAD_TARGETS` picks the targets
//! (`bare,memory,embedded`), `LOAD_PIN=0` turns pinning off.
//!
//! `cargo bench -p benches --bench load`

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::asap::{KeyServer, SidecarKey};
use benches::measure::{Latencies, machine, micros, rss_of};
use benches::payload::{bench_group, jvb_status_body};
use benches::server::serve_args;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jitsi_scaler_core::clock::{Clock, SystemClock};
use jitsi_scaler_core::sidecar::{SidecarResponse, parse_stats_report};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ROLE: &str = "BENCH_LOAD_ROLE";
const PINNED: &str = "BENCH_LOAD_PINNED";
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";
const GROUP: &str = "bench-jvb";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("server") => serve_role(),
        Ok("bare") => bare_role(),
        _ => drive(),
    }
}

// ---------------------------------------------------------------------------------------------
// Servers (child processes)

fn server_runtime() -> tokio::runtime::Runtime {
    let workers = env_or("BENCH_LOAD_WORKERS", 0usize);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    builder.enable_all().build().expect("runtime")
}

/// Tells the parent where the server listens, then serves until the parent closes stdin.
async fn announce_and_wait(addr: SocketAddr) {
    println!("ready {addr}");
    let _ = std::io::stdout().flush();
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
    })
    .await;
}

/// The real server, as `jitsi-scaler serve` runs it.
fn serve_role() {
    let data_dir = tempfile::tempdir().expect("data directory");
    let store = std::env::var("BENCH_LOAD_STORE").expect("set by the parent");
    let keys = std::env::var("BENCH_LOAD_KEYS").expect("set by the parent");
    let args = serve_args(
        &store,
        data_dir.path(),
        &[
            "--initial-wait-for-pooling-ms".into(),
            "0".into(),
            "--asap-pub-key-base-url".into(),
            keys,
            "--tokens".into(),
            format!("admin:{ADMIN_TOKEN}"),
        ],
    );
    jitsi_scaler_server::telemetry::init_logging(args.log_format, &args.log_level);
    server_runtime().block_on(async {
        let running = jitsi_scaler_server::app::start(args)
            .await
            .expect("server start");
        announce_and_wait(running.api_addr).await;
        running.stop().await.expect("graceful stop");
    });
}

/// The ceiling: hyper, the same JSON parsed, the same answer.
fn bare_role() {
    server_runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        let report = parse_stats_report(&body);
                        let answer = SidecarResponse {
                            shutdown: false,
                            reconfigure: report.err().map(|e| e.to_string()),
                        };
                        let json = serde_json::to_vec(&answer).unwrap_or_default();
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(json)))
                                .unwrap_or_default(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        announce_and_wait(addr).await;
    });
}

// ---------------------------------------------------------------------------------------------
// The driver

struct Settings {
    requests: usize,
    connections: usize,
    fleet: usize,
    rate: u64,
    rate_secs: u64,
    targets: Vec<String>,
    rounds: usize,
    pin: bool,
}

impl Settings {
    fn from_env() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            requests: env_or("LOAD_REQUESTS", 200_000),
            connections: env_or("LOAD_CONNECTIONS", 64),
            fleet: env_or("LOAD_FLEET", 20_000),
            rate: env_or("LOAD_RATE", 10_000),
            rate_secs: env_or("LOAD_RATE_SECS", 10),
            targets: env_or("LOAD_TARGETS", String::from("bare,memory,embedded"))
                .split(',')
                .map(str::to_owned)
                .collect(),
            rounds: env_or("LOAD_ROUNDS", 5usize).max(1),
            // The generator re-executed under taskset sees one CPU: it is pinned already.
            pin: std::env::var_os(PINNED).is_some()
                || (env_or("LOAD_PIN", 1u8) == 1 && cpus >= 2 && has_taskset()),
        }
    }
}

fn has_taskset() -> bool {
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn drive() {
    let settings = Settings::from_env();
    // Pin the generator to CPU 1 by running it again under taskset.
    if settings.pin && std::env::var_os(PINNED).is_none() {
        let exe = std::env::current_exe().expect("own path");
        let status = Command::new("taskset")
            .args(["-c", "1"])
            .arg(exe)
            .args(std::env::args().skip(1))
            .env(PINNED, "1")
            .status()
            .expect("taskset");
        std::process::exit(status.code().unwrap_or(1));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if settings.pin { 1 } else { 2 })
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(drive_all(settings));
}

struct Outcome {
    target: String,
    closed: Run,
    open: Run,
    peak_rss: u64,
    server_cpu: f64,
}

struct Run {
    requests: usize,
    elapsed: Duration,
    latencies: Latencies,
}

impl Run {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

async fn drive_all(settings: Settings) {
    println!("machine: {}", machine());
    println!(
        "{} instances over {} connections, {} requests closed-loop, then {} check-ins/s for {} s; pinned: {}",
        settings.fleet,
        settings.connections,
        settings.requests,
        settings.rate,
        settings.rate_secs,
        settings.pin
    );
    let key = SidecarKey::generate();
    let keys = KeyServer::start(&key).await;
    let iat = SystemClock.now_ms() / 1000;
    let tokens: Vec<String> = (0..settings.connections)
        .map(|_| key.sidecar_token(iat))
        .collect();

    // Every server up and warmed first (idle servers cost nothing), then the closed loop in
    // rounds that take turns between the targets, so a slow spell of a shared machine falls on
    // every target alike; each target's closed-loop figures are those of its median round.
    let mut targets = Vec::new();
    for target in &settings.targets {
        let server = ChildServer::start(target, &keys, settings.pin);
        if target != "bare" {
            create_group(server.addr).await;
        }
        let fleet = Arc::new(Fleet::new(server.addr, &tokens, settings.fleet));
        // Warm-up: every instance's state created and every token verified once.
        run_closed(server.addr, &fleet, fleet.size).await;
        targets.push((target.clone(), server, fleet, Vec::new(), 0.0f64));
    }
    let per_round = (settings.requests / settings.rounds).max(settings.connections);
    for _ in 0..settings.rounds {
        for (_, server, fleet, runs, cpu) in &mut targets {
            let before = server.cpu_time();
            let run = run_closed(server.addr, fleet, per_round).await;
            *cpu += (server.cpu_time() - before) / run.elapsed.as_secs_f64();
            runs.push(run);
        }
    }
    let mut outcomes = Vec::new();
    for (target, mut server, fleet, mut runs, cpu) in targets {
        runs.sort_by(|a, b| a.throughput().total_cmp(&b.throughput()));
        let spread = (runs[0].throughput(), runs[runs.len() - 1].throughput());
        let closed = runs.swap_remove(runs.len() / 2);
        let server_cpu = cpu / settings.rounds as f64;
        let open = run_open(server.addr, &fleet, settings.rate, settings.rate_secs).await;
        let peak_rss = server.peak_rss();
        server.stop();
        println!(
            "{target:>9}: {:>8.0} req/s closed-loop, median of {} rounds ({:.0}–{:.0}; server CPU {:.0}%), p99 {:.0} µs at {} req/s",
            closed.throughput(),
            settings.rounds,
            spread.0,
            spread.1,
            server_cpu * 100.0,
            micros(open.latencies.quantile(0.99)),
            settings.rate
        );
        outcomes.push(Outcome {
            target,
            closed,
            open,
            peak_rss,
            server_cpu,
        });
    }
    print_table(&outcomes, settings.rate);
}

fn print_table(outcomes: &[Outcome], rate: u64) {
    let ceiling = outcomes
        .iter()
        .find(|o| o.target == "bare")
        .map(|o| o.closed.throughput());
    println!();
    let per_core = |o: &Outcome| o.closed.throughput() / o.server_cpu.max(f64::EPSILON);
    let ceiling_per_core = outcomes.iter().find(|o| o.target == "bare").map(per_core);
    println!(
        "| target | req/s (closed loop) | vs bare | server CPU | req per server CPU-second | vs bare | p50 / p99 / p999 closed (µs) | p50 / p99 / p999 at {rate}/s (µs) | achieved rate | peak RSS (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let ratio = |ours: f64, theirs: Option<f64>| {
            theirs.map_or(String::from("–"), |c| format!("{:.2}", ours / c))
        };
        let q = |l: &Latencies| {
            format!(
                "{:.0} / {:.0} / {:.0}",
                micros(l.quantile(0.5)),
                micros(l.quantile(0.99)),
                micros(l.quantile(0.999))
            )
        };
        println!(
            "| {} | {:.0} | {} | {:.0}% | {:.0} | {} | {} | {} | {:.0}/s | {:.1} |",
            o.target,
            o.closed.throughput(),
            ratio(o.closed.throughput(), ceiling),
            o.server_cpu * 100.0,
            per_core(o),
            ratio(per_core(o), ceiling_per_core),
            q(&o.closed.latencies),
            q(&o.open.latencies),
            o.open.throughput(),
            o.peak_rss as f64 / (1024.0 * 1024.0)
        );
    }
}

/// A server in a child process of its own.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
}

impl ChildServer {
    fn start(target: &str, keys: &KeyServer, pin: bool) -> Self {
        let exe = std::env::current_exe().expect("own path");
        let mut command = if pin {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(exe);
            c.env("BENCH_LOAD_WORKERS", "1");
            c
        } else {
            Command::new(exe)
        };
        let role = if target == "bare" { "bare" } else { "server" };
        command
            .env(ROLE, role)
            .env("BENCH_LOAD_STORE", target)
            .env("BENCH_LOAD_KEYS", keys.base_url())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = command.spawn().expect("start the server");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let addr = loop {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).expect("the server's output");
            assert!(n > 0, "the {target} server stopped before it was ready");
            match line.trim().strip_prefix("ready ").map(str::parse) {
                Some(Ok(addr)) => break addr,
                _ => eprint!("{target}: {line}"),
            }
        };
        // Whatever the server logs later goes to this process's stderr.
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                eprintln!("{line}");
            }
        });
        Self { child, addr }
    }

    /// User + system CPU seconds so far.
    fn cpu_time(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which ends with ')'): utime and stime are 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
        let ticks_per_s = 100.0;
        (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / ticks_per_s
    }

    fn peak_rss(&self) -> u64 {
        rss_of(self.child.id()).map_or(0, |(_, peak)| peak)
    }

    fn stop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The check-ins of a fleet of instances, made from one request template: connection `c` of
/// `n` speaks for instances `c`, `c + n`, `c + 2n`, … in turn (as a proxy in front of many
/// sidecars would), each report with a `timestamp` of its own, so every report records a
/// sample. A fleet much larger than the connections keeps each instance's cadence near a real
/// sidecar's, so its sample series and the embedded store's commits are a real fleet's.
struct Fleet {
    /// One head per connection (its own sidecar token).
    heads: Vec<Vec<u8>>,
    /// A report for `ID_PLACEHOLDER` at `TS_PLACEHOLDER`.
    body: Vec<u8>,
    id_at: Vec<usize>,
    ts_at: Vec<usize>,
    size: usize,
}

const ID_PLACEHOLDER: &str = "i-XXXXXXX";
const TS_PLACEHOLDER: i64 = 9_999_999_999_999;

fn positions(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    (0..=haystack.len() - needle.len())
        .filter(|&i| &haystack[i..i + needle.len()] == needle)
        .collect()
}

impl Fleet {
    fn new(addr: SocketAddr, tokens: &[String], size: usize) -> Self {
        assert!(size < 10_000_000, "instance ids have 7 digits");
        let body = jvb_status_body(ID_PLACEHOLDER, GROUP, 0.3, TS_PLACEHOLDER);
        let id_at = positions(&body, ID_PLACEHOLDER.as_bytes());
        let ts_at = positions(&body, TS_PLACEHOLDER.to_string().as_bytes());
        assert!(
            !id_at.is_empty() && ts_at.len() == 1,
            "placeholders in the body"
        );
        let heads = tokens
            .iter()
            .map(|token| {
                format!(
                    "POST /sidecar/status HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes()
            })
            .collect();
        Self {
            heads,
            body,
            id_at,
            ts_at,
            size: size.max(tokens.len()),
        }
    }

    fn connections(&self) -> usize {
        self.heads.len()
    }

    /// The instances connection `c` speaks for.
    fn own(&self, c: usize) -> usize {
        let n = self.connections();
        self.size / n + usize::from(c < self.size % n)
    }

    /// The `k`-th request of connection `c`, written into `out`; `last` holds the timestamps
    /// of the connection's instances' last reports (each report is the current time, later
    /// than the instance's last).
    fn request(&self, c: usize, k: usize, last: &mut Vec<i64>, out: &mut Vec<u8>) {
        let own = self.own(c);
        last.resize(own, 0);
        let slot = k % own;
        let instance = c + self.connections() * slot;
        let ts = SystemClock.now_ms().max(last[slot] + 1);
        last[slot] = ts;
        out.clear();
        out.extend_from_slice(&self.heads[c]);
        let start = out.len();
        out.extend_from_slice(&self.body);
        let id = format!("i-{instance:07}");
        for at in &self.id_at {
            out[start + at..start + at + id.len()].copy_from_slice(id.as_bytes());
        }
        let ts = format!("{ts:013}");
        for at in &self.ts_at {
            out[start + at..start + at + ts.len()].copy_from_slice(ts.as_bytes());
        }
    }
}

/// One keep-alive HTTP/1.1 connection, spoken raw.
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends a request and reads its response; panics unless it is a 200.
    async fn call(&mut self, request: &[u8]) {
        self.stream.write_all(request).await.expect("write");
        self.buf.clear();
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).expect("ASCII head");
                assert!(
                    head.starts_with("HTTP/1.1 200"),
                    "unexpected answer: {head}\n{}",
                    String::from_utf8_lossy(&self.buf[end..])
                );
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .expect("content-length");
                while self.buf.len() < end + 4 + length {
                    self.read_more().await;
                }
                return;
            }
            self.read_more().await;
        }
    }

    async fn read_more(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `total` requests over all sidecars, each sending as soon as its last answer came.
async fn run_closed(addr: SocketAddr, fleet: &Arc<Fleet>, total: usize) -> Run {
    let n = fleet.connections();
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let fleet = fleet.clone();
            let count = total / n + usize::from(i < total % n);
            tokio::spawn(async move {
                let mut conn = Connection::open(addr).await;
                let mut latencies = Vec::with_capacity(count);
                let (mut request, mut last) = (Vec::new(), Vec::new());
                for k in 0..count {
                    fleet.request(i, k, &mut last, &mut request);
                    let sent = Instant::now();
                    conn.call(&request).await;
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    collect(tasks, start).await
}

/// `rate` requests per second for `secs` seconds, spread over the sidecars; each latency is
/// counted from the request's scheduled time.
async fn run_open(addr: SocketAddr, fleet: &Arc<Fleet>, rate: u64, secs: u64) -> Run {
    let n = fleet.connections();
    let per_sidecar = (rate * secs) as usize / n;
    let interval = Duration::from_secs_f64(n as f64 / rate as f64);
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let fleet = fleet.clone();
            tokio::spawn(async move {
                let mut conn = Connection::open(addr).await;
                let (mut request, mut last) = (Vec::new(), Vec::new());
                let offset = interval.mul_f64(i as f64 / n as f64);
                let first = tokio::time::Instant::now() + offset;
                let mut latencies = Vec::with_capacity(per_sidecar);
                for k in 0..per_sidecar {
                    // Counted from the scheduled time when the previous answer came too late
                    // to send on time (no coordinated omission), else from the send (the
                    // timer's own lateness is the generator's, not the server's).
                    fleet.request(i, k, &mut last, &mut request);
                    let scheduled = first + interval * k as u32;
                    let now = tokio::time::Instant::now();
                    let start = if now > scheduled {
                        scheduled
                    } else {
                        tokio::time::sleep_until(scheduled).await;
                        tokio::time::Instant::now()
                    };
                    conn.call(&request).await;
                    latencies.push(tokio::time::Instant::now() - start);
                }
                latencies
            })
        })
        .collect();
    collect(tasks, start).await
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>, start: Instant) -> Run {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("sidecar task"));
    }
    let elapsed = start.elapsed();
    Run {
        requests: all.len(),
        elapsed,
        latencies: Latencies::new(all),
    }
}

/// `PUT /groups/bench-jvb` with the admin token.
async fn create_group(addr: SocketAddr) {
    let body = serde_json::to_vec(&bench_group(GROUP)).expect("JSON");
    let mut request = format!(
        "PUT /groups/{GROUP} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    Connection::open(addr).await.call(&request).await;
}
