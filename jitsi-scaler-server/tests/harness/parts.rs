//! The server assembled from its public parts (engine, routers, metrics) over a
//! [`FaultyStore`], for the answers to store failures that `app::start` cannot produce on
//! demand. The routers and middleware are the real ones; only the store is wrapped.

use std::sync::Arc;
use std::time::Duration;

use jitsi_scaler_core::engine::{Scaler, ScalerOptions};
use jitsi_scaler_core::provider::ProviderRegistry;
use jitsi_scaler_server::api::{self, AppState, GroupsSource, Limits, OpenGate};
use jitsi_scaler_server::local::{LocalConfig, LocalProvider};
use jitsi_scaler_server::telemetry::Metrics;
use tokio_util::sync::CancellationToken;

use super::faulty::FaultyStore;
use super::{Body, Reply, send};

/// A server over a faulty store, without authentication.
#[derive(Debug)]
pub struct Parts {
    /// `http://127.0.0.1:<api port>`.
    pub api: String,
    /// `http://127.0.0.1:<metrics port>`.
    pub metrics: String,
    /// The store, to inject faults.
    pub store: Arc<FaultyStore>,
    /// The handlers' state (to begin a shutdown).
    pub state: AppState,
    /// HTTP client.
    pub http: reqwest::Client,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Parts {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Parts {
    /// Serves the API and metrics routers on 127.0.0.1:0 with these limits; the engine runs.
    pub async fn start(limits: Limits) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FaultyStore::new();
        let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let api_addr = api_listener.local_addr().expect("addr");
        let metrics_addr = metrics_listener.local_addr().expect("addr");
        let mut local = LocalConfig::new(format!("http://{api_addr}"), dir.path().join("logs"));
        local.program = Some("/bin/true".into());
        let mut providers = ProviderRegistry::new();
        providers.register(Arc::new(LocalProvider::new(local).expect("provider")));
        let metrics = Arc::new(Metrics::new());
        let scaler = Scaler::builder(store.clone())
            .providers(providers)
            .options(ScalerOptions {
                reconcile_interval: Duration::from_secs(1),
                initial_delay: Duration::ZERO,
                ..ScalerOptions::default()
            })
            .observer(metrics.clone())
            .build();
        let state = AppState::new(
            scaler.clone(),
            Arc::new(OpenGate),
            metrics,
            limits,
            GroupsSource::default(),
        );
        let stop = CancellationToken::new();
        let engine_stop = stop.clone();
        tokio::spawn(async move {
            let _ = scaler.run(engine_stop).await;
        });
        let api_router = api::api_router(state.clone());
        let api_stop = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(api_listener, api_router)
                .with_graceful_shutdown(api_stop.cancelled_owned())
                .await;
        });
        let metrics_router = api::metrics_router(state.clone());
        let metrics_stop = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(metrics_listener, metrics_router)
                .with_graceful_shutdown(metrics_stop.cancelled_owned())
                .await;
        });
        Self {
            api: format!("http://{api_addr}"),
            metrics: format!("http://{metrics_addr}"),
            store,
            state,
            http: super::client(),
            stop,
            _dir: dir,
        }
    }

    /// A request to the API port.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Body) -> Reply {
        send(
            &self.http,
            method,
            &format!("{}{path}", self.api),
            None,
            body,
        )
        .await
    }

    /// A `GET` on the metrics port.
    pub async fn metrics_get(&self, path: &str, accept: Option<&str>) -> Reply {
        let mut request = self.http.get(format!("{}{path}", self.metrics));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        Reply::from(request.send().await.expect("metrics request")).await
    }
}
