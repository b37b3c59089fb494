//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use jitsi_scaler_cloud::http::HttpConfig;

pub mod prism;

/// Logs to the test output (once per process), `RUST_LOG` or `debug` for this crate.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "jitsi_scaler_cloud=debug".into()),
        )
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}

/// HTTP settings with budgets small enough for tests: 2 s of retries, 10 ms first delay,
/// 200 ms longest wait (a longer `Retry-After` ends the call at once).
pub fn fast_http() -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        retry_budget: Duration::from_secs(2),
        retry_base_delay: Duration::from_millis(10),
        retry_max_delay: Duration::from_millis(200),
        ..HttpConfig::default()
    }
}

/// Whether a service a test needs is there. When it is not, the test is skipped (`false`),
/// unless `JITSI_SCALER_REQUIRE_SERVICES=1`, which makes it fail.
pub fn service_available(name: &str, available: bool, why: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var("JITSI_SCALER_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{name} is required (JITSI_SCALER_REQUIRE_SERVICES=1) but {why}");
    }
    eprintln!("skipping: {name} is not available: {why}");
    false
}

/// The crate's test data directory.
pub fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

/// Reads a test data file.
pub fn read_data(path: &str) -> String {
    std::fs::read_to_string(data(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A plain reqwest client for talking to test servers directly.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
