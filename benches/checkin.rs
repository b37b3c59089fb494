//! The in-process check-in path of `POST /sidecar/status`: authorize the sidecar's ASAP token
//! (a cached, already verified token, as a sidecar reuses its token for 45 minutes), parse the
//! reference's StatsReport of a JVB (its whole `/colibri/stats`), write state and sample to
//! the store and read the commands, and serialize the answer. Once per store: `MemoryStore`,
//! `EmbeddedStore` (redb on a temporary directory) and, when `redis-server` is installed,
//! `RedisStore` on a redis-server of its own. Then `memory-router`: the same check-in as a
//! request through the API router itself (the request envelope, routing, the authentication
//! layer, body limits, the handler, the JSON answer), logging at `info` as `serve` does by
//! default: everything of the server's request path but hyper and the socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::asap::{KeyServer, SidecarKey};
use benches::payload::{bench_group, jvb_status_body};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderValue, Method};
use jitsi_scaler_core::clock::{Clock, SystemClock};
use jitsi_scaler_core::engine::Scaler;
use jitsi_scaler_core::sidecar::parse_stats_report;
use jitsi_scaler_core::store::redis_testkit::RedisServer;
use jitsi_scaler_core::store::{EmbeddedStore, MemoryStore, RedisConfig, RedisStore, Store};
use jitsi_scaler_server::api::{self, AppState, GroupsSource, Limits};
use jitsi_scaler_server::auth::{AuthConfig, Authenticator};
use jitsi_scaler_server::telemetry::{self, LogFormat, Metrics};
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// Distinct sidecars the check-ins rotate through.
const SIDECARS: usize = 1_000;
const GROUP: &str = "bench-jvb";

/// What one check-in needs, prepared ahead: the sidecar's header and two bodies that differ
/// in `timestamp`, alternated so that every report records a sample.
struct Fleet {
    auth: Authenticator,
    headers: Vec<HeaderValue>,
    bodies: [Vec<Vec<u8>>; 2],
    _keys: KeyServer,
}

impl Fleet {
    async fn new() -> Self {
        let key = SidecarKey::generate();
        let keys = KeyServer::start(&key).await;
        let auth = Authenticator::new(AuthConfig {
            pub_key_base_url: Some(keys.base_url()),
            ..AuthConfig::default()
        })
        .expect("auth config");
        let now_s = SystemClock.now_ms() / 1000;
        let headers: Vec<HeaderValue> = (0..SIDECARS)
            .map(|_| {
                HeaderValue::from_str(&format!("Bearer {}", key.sidecar_token(now_s)))
                    .expect("header")
            })
            .collect();
        let body = |i: usize, ts: i64| {
            jvb_status_body(&format!("i-{i:05}"), GROUP, (i % 90) as f64 / 100.0, ts)
        };
        let now = SystemClock.now_ms();
        let bodies = [0, 1].map(|k| (0..SIDECARS).map(|i| body(i, now + k)).collect());
        for header in &headers {
            auth.authorize(&Method::POST, "/sidecar/status", Some(header))
                .await
                .expect("a valid sidecar token");
        }
        Self {
            auth,
            headers,
            bodies,
            _keys: keys,
        }
    }

    /// Check-in number `n`: what the handler does, minus the socket.
    async fn check_in(&self, scaler: &Scaler, n: usize) -> Vec<u8> {
        let sidecar = n % SIDECARS;
        let body = &self.bodies[(n / SIDECARS) % 2][sidecar];
        self.auth
            .authorize(
                &Method::POST,
                "/sidecar/status",
                Some(&self.headers[sidecar]),
            )
            .await
            .expect("authorized");
        let report = parse_stats_report(body).expect("a valid report");
        let result = scaler.report(&report).await.expect("stored");
        assert!(result.known_group);
        serde_json::to_vec(&result.response()).expect("JSON")
    }
}

async fn scaler_on(store: Arc<dyn Store>) -> Scaler {
    let scaler = Scaler::builder(store)
        .providers(benches::cloud::registry())
        .build();
    scaler
        .put_group(GROUP, &bench_group(GROUP))
        .await
        .expect("the bench group");
    scaler
}

fn bench_store(c: &mut Criterion, rt: &Runtime, fleet: &Fleet, name: &str, scaler: &Scaler) {
    // The first round creates the states; the measured ones update them.
    rt.block_on(async {
        for n in 0..SIDECARS {
            fleet.check_in(scaler, n).await;
        }
    });
    let mut group = c.benchmark_group("checkin");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    let mut n = 0usize;
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(fleet.check_in(scaler, n).await);
                    n += 1;
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

/// The API router over `scaler`, authenticating with the fleet's (warmed) token cache.
fn router_on(fleet: &Fleet, scaler: &Scaler) -> axum::Router {
    let state = AppState::new(
        scaler.clone(),
        Arc::new(fleet.auth.clone()),
        Arc::new(Metrics::new()),
        Limits::default(),
        GroupsSource::default(),
    );
    api::api_router(state)
}

/// Check-in number `n` as a request through the router.
async fn check_in_routed(fleet: &Fleet, router: &axum::Router, n: usize) -> axum::body::Bytes {
    let sidecar = n % SIDECARS;
    let body = fleet.bodies[(n / SIDECARS) % 2][sidecar].clone();
    let request = http::Request::post("/sidecar/status")
        .header(http::header::AUTHORIZATION, fleet.headers[sidecar].clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(body))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    assert!(response.status().is_success(), "{}", response.status());
    axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("answer")
}

fn bench_router(c: &mut Criterion, rt: &Runtime, fleet: &Fleet, scaler: &Scaler) {
    telemetry::init_logging(LogFormat::Text, "info");
    let router = router_on(fleet, scaler);
    rt.block_on(async {
        for n in 0..SIDECARS {
            check_in_routed(fleet, &router, n).await;
        }
    });
    let mut group = c.benchmark_group("checkin");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    let mut n = 0usize;
    group.bench_function("memory-router", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(check_in_routed(fleet, &router, n).await);
                    n += 1;
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn checkin(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let fleet = rt.block_on(Fleet::new());

    let memory = rt.block_on(scaler_on(Arc::new(MemoryStore::new())));
    bench_store(c, &rt, &fleet, "memory", &memory);

    let dir = tempfile::tempdir().expect("temporary directory");
    let embedded = EmbeddedStore::open(dir.path(), Arc::new(SystemClock)).expect("embedded store");
    let embedded = rt.block_on(scaler_on(Arc::new(embedded)));
    bench_store(c, &rt, &fleet, "embedded", &embedded);

    match RedisServer::start() {
        Some(server) => {
            let redis = rt.block_on(async {
                let store = RedisStore::open(&RedisConfig::new(server.url())).expect("redis");
                scaler_on(Arc::new(store)).await
            });
            bench_store(c, &rt, &fleet, "redis", &redis);
        }
        None => eprintln!("checkin/redis skipped: no redis-server installed"),
    }

    let routed = rt.block_on(scaler_on(Arc::new(MemoryStore::new())));
    bench_router(c, &rt, &fleet, &routed);
}

criterion_group!(benches, checkin);
criterion_main!(benches);
