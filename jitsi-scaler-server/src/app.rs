//! Wiring of `jitsi-scaler serve`: the store, the providers, authentication, the engine and the
//! two listeners, and their graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use jitsi_scaler_core::engine::Scaler;
use jitsi_scaler_core::group::file::parse_groups_file;
use jitsi_scaler_core::provider::ProviderRegistry;
use jitsi_scaler_core::clock::SystemClock;
use jitsi_scaler_core::store::{EmbeddedStore, Expect, GroupRecord, MemoryStore, Store};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, Gate, GroupsSource, Limits, OpenGate};
use crate::config::{ConfigError, ServeArgs, StoreKind};
use crate::local::LocalProvider;
use crate::telemetry::Metrics;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The groups file is invalid (every problem, with its line).
    #[error("invalid groups file {path}:\n{problems}")]
    GroupsFile {
        /// The file.
        path: String,
        /// The problems.
        problems: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] jitsi_scaler_core::store::StoreError),
    /// The engine failed.
    #[error("engine: {0}")]
    Engine(#[from] jitsi_scaler_core::engine::EngineError),
    /// Serving failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// Address of the API listener.
    pub api_addr: SocketAddr,
    /// Address of the health and metrics listener.
    pub metrics_addr: SocketAddr,
    /// The engine (tests read it).
    pub scaler: Scaler,
    /// Cancel to stop the server gracefully.
    pub shutdown: CancellationToken,
    task: JoinHandle<Result<(), AppError>>,
}

impl Running {
    /// Waits for the server to stop (after `shutdown` is cancelled).
    pub async fn wait(self) -> Result<(), AppError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(AppError::Io(std::io::Error::other(e.to_string()))),
        }
    }

    /// Stops the server and waits for it.
    pub async fn stop(self) -> Result<(), AppError> {
        self.shutdown.cancel();
        self.wait().await
    }
}

async fn bind(host: &str, port: u16) -> Result<TcpListener, AppError> {
    let addr = format!("{host}:{port}");
    TcpListener::bind(&addr).await.map_err(|source| AppError::Bind { addr, source })
}

async fn open_store(args: &ServeArgs) -> Result<Arc<dyn Store>, AppError> {
    match args.store_kind() {
        StoreKind::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreKind::Embedded => {
            let dir = args.data_dir.clone();
            let opened = tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir, Arc::new(SystemClock)))
                .await
                .map_err(|e| AppError::Io(std::io::Error::other(e.to_string())))?;
            let store = opened.map_err(|e| {
                ConfigError::new("JITSI_SCALER_DATA_DIR", format!("cannot open the store in {}: {e}", args.data_dir.display()))
            })?;
            tracing::info!(path = %store.path().display(), "embedded store opened");
            Ok(Arc::new(store))
        }
        StoreKind::Redis => Err(ConfigError::new("JITSI_SCALER_STORE", "the Redis store is not built in").into()),
    }
}

/// Reads and validates the groups file, if any.
fn groups_file(args: &ServeArgs) -> Result<Vec<jitsi_scaler_core::group::Group>, AppError> {
    let Some(path) = &args.config else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("GROUP_CONFIG_FILE", format!("cannot read {}: {e}", path.display())))?;
    parse_groups_file(
        &text,
        args.default_compartment_id.as_deref(),
        args.default_instance_configuration_id.as_deref(),
    )
    .map_err(|e| AppError::GroupsFile {
        path: path.display().to_string(),
        problems: e.to_string(),
    })
}

/// Starts `serve`: returns once both listeners are bound and the engine runs.
pub async fn start(args: ServeArgs) -> Result<Running, AppError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut options = args.scaler_options()?;
    let groups = groups_file(&args)?;
    let store = open_store(&args).await?;
    if store.list_groups().await?.is_empty() {
        // A fresh store tracks no instance that could be missed: no need to wait for sidecars.
        options.initial_delay = std::time::Duration::ZERO;
    }
    let api_listener = bind(&args.bind, args.port).await?;
    let metrics_listener = bind(&args.bind, args.metrics_port).await?;
    let api_addr = api_listener.local_addr()?;
    let metrics_addr = metrics_listener.local_addr()?;

    let mut providers = ProviderRegistry::new();
    let mut local: Option<Arc<LocalProvider>> = None;
    for name in args.provider_names() {
        match name.as_str() {
            "local" => {
                let url = format!("http://127.0.0.1:{}", api_addr.port());
                let provider = Arc::new(
                    LocalProvider::new(args.local.config(url, &args.data_dir))
                        .map_err(|e| ConfigError::new("--local-*", e.to_string()))?,
                );
                providers.register(provider.clone());
                local = Some(provider);
            }
            other => {
                return Err(ConfigError::new("CLOUD_PROVIDERS", format!("unknown provider {other:?}")).into());
            }
        }
    }
    tracing::info!(providers = ?providers, store = ?args.store_kind(), "starting");

    let gate: Arc<dyn Gate> = if args.protected_api {
        Arc::new(OpenGate)
    } else {
        tracing::warn!("PROTECTED_API=false: the API accepts every request without authentication");
        Arc::new(OpenGate)
    };

    let metrics = Arc::new(Metrics::new());
    let scaler = Scaler::builder(store.clone())
        .providers(providers.clone())
        .options(options)
        .observer(metrics.clone())
        .build();

    seed_groups(&scaler, &groups).await?;
    warn_unconfigured(&scaler, &providers).await;

    let state = AppState::new(
        scaler.clone(),
        gate,
        metrics,
        Limits {
            max_body_bytes: args.max_body_bytes,
            ..Limits::default()
        },
        GroupsSource {
            path: args.config.clone(),
            default_compartment_id: args.default_compartment_id.clone(),
            default_instance_configuration_id: args.default_instance_configuration_id.clone(),
        },
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(state, api_listener, metrics_listener, shutdown.clone(), local));
    tracing::info!(api = %api_addr, metrics = %metrics_addr, "listening");
    Ok(Running {
        api_addr,
        metrics_addr,
        scaler,
        shutdown,
        task,
    })
}

/// Seeds an empty store with the groups file (the store is authoritative afterwards).
async fn seed_groups(scaler: &Scaler, groups: &[jitsi_scaler_core::group::Group]) -> Result<(), AppError> {
    if groups.is_empty() || !scaler.store().list_groups().await?.is_empty() {
        return Ok(());
    }
    for g in groups {
        if let Err(e) = scaler.validate_group_body(&serde_json::to_value(g).unwrap_or_default()) {
            return Err(AppError::GroupsFile {
                path: "groups file".into(),
                problems: format!("group {}: {e}", g.name),
            });
        }
        scaler
            .store()
            .put_group(&GroupRecord::new(g.clone()), Expect::Absent, None)
            .await?;
    }
    tracing::info!(groups = groups.len(), "store seeded from the groups file");
    Ok(())
}

/// Logs stored groups whose cloud is not configured.
async fn warn_unconfigured(scaler: &Scaler, providers: &ProviderRegistry) {
    if let Ok(records) = scaler.store().list_groups().await {
        for r in records {
            if providers.get(&r.group.cloud).is_none() {
                tracing::warn!(group = %r.group.name, cloud = %r.group.cloud, "group's cloud is not configured: it will not launch");
            }
        }
    }
}

async fn serve(
    state: AppState,
    api_listener: TcpListener,
    metrics_listener: TcpListener,
    shutdown: CancellationToken,
    local: Option<Arc<LocalProvider>>,
) -> Result<(), AppError> {
    let engine_stop = CancellationToken::new();
    let scaler = state.scaler.clone();
    let engine = {
        let stop = engine_stop.clone();
        tokio::spawn(async move { scaler.run(stop).await })
    };
    let api = axum::serve(
        api_listener,
        api::api_router(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let metrics = axum::serve(metrics_listener, api::metrics_router(state.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let stopping = {
        let state = state.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            state.start_shutdown();
            tracing::info!("shutting down: finishing in-flight requests and the running reconciles");
        }
    };
    let (api, metrics, ()) = tokio::join!(api.into_future(), metrics.into_future(), stopping);
    engine_stop.cancel();
    let engine_result = match engine.await {
        Ok(r) => r.map_err(AppError::from),
        Err(e) => Err(AppError::Io(std::io::Error::other(e.to_string()))),
    };
    if let Some(local) = local {
        let stopped = local.shutdown().await;
        tracing::info!(instances = stopped, "local instances stopped");
    }
    api?;
    metrics?;
    engine_result?;
    tracing::info!("stopped");
    Ok(())
}

/// Stops on SIGTERM or SIGINT.
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
