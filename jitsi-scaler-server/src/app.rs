//! Wiring of `jitsi-scaler serve`: the store, the providers, authentication, the engine and the
//! two listeners, and their graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use jitsi_scaler_core::clock::SystemClock;
use jitsi_scaler_core::engine::Scaler;
use jitsi_scaler_core::group::file::parse_groups_file;
use jitsi_scaler_core::leader::{Leadership, RedisLeadership, RedisLeadershipConfig, SingleNode};
use jitsi_scaler_core::provider::{CloudProvider, ProviderRegistry};
use jitsi_scaler_core::store::{
    EmbeddedStore, Expect, GroupRecord, MemoryStore, RedisConfig, RedisStore, Store,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, Gate, GroupsSource, Limits, OpenGate};
use crate::auth::{AuthConfig, Authenticator, Role, StaticToken};
use crate::config::{ConfigError, LeaderElection, ServeArgs, StoreKind};
use crate::local::LocalProvider;
use crate::sim::Token;
use crate::telemetry::Metrics;
use jitsi_scaler_k8s::jibri::{JibriController, JibriControllerConfig};

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
    TcpListener::bind(&addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}

async fn open_store(args: &ServeArgs) -> Result<Arc<dyn Store>, AppError> {
    match args.store_kind() {
        StoreKind::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreKind::Embedded => {
            let dir = args.data_dir.clone();
            let options = args.embedded_options();
            let opened = tokio::task::spawn_blocking(move || {
                EmbeddedStore::open_with(&dir, Arc::new(SystemClock), options)
            })
            .await
            .map_err(|e| AppError::Io(std::io::Error::other(e.to_string())))?;
            let store = opened.map_err(|e| {
                ConfigError::new(
                    "JITSI_SCALER_DATA_DIR",
                    format!("cannot open the store in {}: {e}", args.data_dir.display()),
                )
            })?;
            Ok(Arc::new(store))
        }
        StoreKind::Redis => {
            let config = redis_config(args)?;
            let store = RedisStore::open(&config)
                .map_err(|e| ConfigError::new("REDIS_URL", e.to_string()))?;
            tracing::info!(config = ?config, "Redis store");
            Ok(Arc::new(store))
        }
    }
}

/// The Redis settings: the flags (URL, or the reference's host, port, TLS, password, database),
/// and the other `REDIS_*` variables (Sentinel, user, CA file, key prefix).
fn redis_config(args: &ServeArgs) -> Result<RedisConfig, AppError> {
    let mut config = RedisConfig::from_env().unwrap_or_default();
    config.url = match (&args.redis_url, &args.redis_host) {
        (Some(url), _) => url.clone(),
        (None, Some(host)) => {
            let scheme = if args.redis_tls { "rediss" } else { "redis" };
            format!("{scheme}://{host}:{}", args.redis_port)
        }
        (None, None) => config.url,
    };
    if args.redis_password.is_some() {
        config.password = args.redis_password.clone();
    }
    if args.redis_db != 0 {
        config.db = Some(i64::from(args.redis_db));
    }
    Ok(config)
}

/// The leadership the flags choose.
async fn leadership(args: &ServeArgs) -> Result<Arc<dyn Leadership>, AppError> {
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(RedisLeadershipConfig::default_identity);
    let ttl = std::time::Duration::from_secs(args.leader_lease_ttl_sec.max(3));
    let choice = match args.leader_election {
        LeaderElection::Auto if args.store_kind() == StoreKind::Redis => LeaderElection::Redis,
        LeaderElection::Auto => LeaderElection::Single,
        other => other,
    };
    Ok(match choice {
        LeaderElection::Redis => {
            let config = RedisLeadershipConfig::new(identity).with_ttl(ttl);
            Arc::new(
                RedisLeadership::open(&redis_config(args)?, config)
                    .map_err(|e| ConfigError::new("JITSI_SCALER_LEADER_ELECTION", e.to_string()))?,
            )
        }
        LeaderElection::Kubernetes => {
            jitsi_scaler_k8s::install_crypto_provider();
            let client = kube::Client::try_default().await.map_err(|e| {
                ConfigError::new(
                    "JITSI_SCALER_LEADER_ELECTION",
                    format!("no Kubernetes configuration: {e}"),
                )
            })?;
            let config = jitsi_scaler_k8s::lease::LeaseConfig::new(
                &args.lease_name,
                &args.namespace,
                identity,
            )
            .with_timing(ttl, ttl / 3);
            Arc::new(
                jitsi_scaler_k8s::lease::LeaseLeadership::new(client, config)
                    .map_err(|e| ConfigError::new("JITSI_SCALER_LEADER_ELECTION", e))?,
            )
        }
        _ => Arc::new(SingleNode::new(identity)),
    })
}

/// Reads and validates the groups file, if any.
fn groups_file(args: &ServeArgs) -> Result<Vec<jitsi_scaler_core::group::Group>, AppError> {
    let Some(path) = &args.config else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            "GROUP_CONFIG_FILE",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
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

    let (authenticator, local_token) = authenticator(&args)?;
    let mut providers = ProviderRegistry::new();
    let mut local: Option<Arc<LocalProvider>> = None;
    for name in args.provider_names() {
        match name.as_str() {
            "local" => {
                let url = format!("http://127.0.0.1:{}", api_addr.port());
                let mut config = args.local.config(url, &args.data_dir);
                if config.token.is_none() {
                    config.token = local_token.clone();
                }
                let provider = Arc::new(
                    LocalProvider::new(config)
                        .map_err(|e| ConfigError::new("--local-*", e.to_string()))?,
                );
                providers.register(provider.clone());
                local = Some(provider);
            }
            other => {
                providers.register(cloud_provider(other).await?);
            }
        }
    }
    tracing::info!(providers = ?providers, store = ?args.store_kind(), "starting");

    for warning in authenticator.startup_warnings() {
        tracing::warn!("{warning}");
    }
    let gate: Arc<dyn Gate> = if authenticator.is_enabled() {
        Arc::new(authenticator)
    } else {
        Arc::new(OpenGate)
    };

    let metrics = Arc::new(Metrics::new());
    let scaler = Scaler::builder(store.clone())
        .providers(providers.clone())
        .leadership(leadership(&args).await?)
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
    let jibri = if args.jibri_controller {
        Some(jibri_controller().await?)
    } else {
        None
    };
    let task = tokio::spawn(serve(
        state,
        api_listener,
        metrics_listener,
        shutdown.clone(),
        local,
        jibri,
    ));
    tracing::info!(api = %api_addr, metrics = %metrics_addr, "listening");
    Ok(Running {
        api_addr,
        metrics_addr,
        scaler,
        shutdown,
        task,
    })
}

/// A cloud provider by name, configured from its environment variables. Any other name is an
/// HTTP plugin (`PLUGIN_<NAME>_URL`).
async fn cloud_provider(name: &str) -> Result<Arc<dyn CloudProvider>, AppError> {
    use jitsi_scaler_cloud::custom::{PluginConfig, PluginProvider, ScriptConfig, ScriptProvider};
    use jitsi_scaler_cloud::digitalocean::{DigitalOceanConfig, DigitalOceanProvider};
    use jitsi_scaler_cloud::oracle::{OracleConfig, OracleProvider};
    let config_error = |e: jitsi_scaler_cloud::ConfigError| {
        ConfigError::new(format!("provider {name}"), e.to_string())
    };
    Ok(match name {
        "oracle" => Arc::new(
            OracleProvider::new(&OracleConfig::from_env().map_err(config_error)?)
                .map_err(config_error)?,
        ),
        "digitalocean" => Arc::new(
            DigitalOceanProvider::new(&DigitalOceanConfig::from_env().map_err(config_error)?)
                .map_err(config_error)?,
        ),
        "custom" => Arc::new(ScriptProvider::new(
            ScriptConfig::from_env().map_err(config_error)?,
        )),
        "kubernetes" => {
            jitsi_scaler_k8s::install_crypto_provider();
            let client = kube::Client::try_default().await.map_err(|e| {
                ConfigError::new(
                    "provider kubernetes",
                    format!("no usable Kubernetes configuration: {e}"),
                )
            })?;
            let config = jitsi_scaler_k8s::provider::PodProviderConfig {
                default_namespace: std::env::var("NAMESPACE").unwrap_or_else(|_| "default".into()),
                ..Default::default()
            };
            Arc::new(jitsi_scaler_k8s::provider::PodProvider::new(client, config))
        }
        plugin => Arc::new(
            PluginProvider::new(&PluginConfig::from_env(plugin).map_err(config_error)?)
                .map_err(config_error)?,
        ),
    })
}

/// A random secret of 32 alphanumerics.
fn secret() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

fn list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The authenticator from the flags. When the API is protected, local instances get a
/// generated sidecar token; when no admin credential is configured, an admin token is generated
/// and written to `<data-dir>/admin-token` (mode 0600), never to the log.
fn authenticator(args: &ServeArgs) -> Result<(Authenticator, Option<Token>), AppError> {
    let mut config = AuthConfig {
        protected: args.protected_api,
        pub_key_base_url: args.asap_pub_key_base_url.clone().filter(|u| !u.is_empty()),
        audience: args.asap_jwt_aud.clone(),
        sidecar_issuers: list(Some(&args.asap_jwt_accepted_hook_iss)),
        admin_issuers: list(args.asap_jwt_accepted_admin_iss.as_deref()),
        read_issuers: list(args.asap_jwt_accepted_read_iss.as_deref()),
        single_scope: args.asap_single_scope,
        pub_key_ttl: std::time::Duration::from_secs(args.asap_pub_key_ttl),
        tokens_file: args.tokens_file.clone(),
        ..AuthConfig::default()
    };
    if let Some(tokens) = &args.tokens {
        config.static_tokens = StaticToken::parse_list("JITSI_SCALER_TOKENS", tokens)
            .map_err(|e| ConfigError::new("JITSI_SCALER_TOKENS", e.to_string()))?;
    }
    if !args.protected_api {
        return Ok((Authenticator::disabled(), None));
    }
    let local_token = if args.local.token.is_none() {
        let token = secret();
        config.static_tokens.push(
            StaticToken::new(Role::Sidecar, token.clone(), "local-instances")
                .map_err(|e| ConfigError::new("local instances", e.to_string()))?,
        );
        Some(Token::new(token))
    } else {
        None
    };
    let has_admin = !config.admin_issuers.is_empty()
        || config.single_scope
        || config.static_tokens.iter().any(|t| t.role == Role::Admin)
        || config.tokens_file.is_some();
    if !has_admin {
        let token = secret();
        let path = args.data_dir.join("admin-token");
        write_secret(&path, &token).map_err(|e| {
            ConfigError::new(
                "JITSI_SCALER_DATA_DIR",
                format!("cannot write {}: {e}", path.display()),
            )
        })?;
        config.static_tokens.push(
            StaticToken::new(Role::Admin, token, "generated-admin")
                .map_err(|e| ConfigError::new("admin token", e.to_string()))?,
        );
        tracing::warn!(file = %path.display(), "no admin credential configured: a generated admin token was written to this file (use it as a Bearer token)");
    }
    let auth = Authenticator::new(config)
        .map_err(|e| ConfigError::new("authentication", e.to_string()))?;
    Ok((auth, local_token))
}

fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(secret.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, secret)
    }
}

/// Seeds an empty store with the groups file (the store is authoritative afterwards).
async fn seed_groups(
    scaler: &Scaler,
    groups: &[jitsi_scaler_core::group::Group],
) -> Result<(), AppError> {
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
    jibri: Option<Arc<JibriController>>,
) -> Result<(), AppError> {
    let engine_stop = CancellationToken::new();
    let scaler = state.scaler.clone();
    let engine = {
        let stop = engine_stop.clone();
        tokio::spawn(async move { scaler.run(stop).await })
    };
    let mut api_routes = api::api_router(state.clone());
    if let Some(controller) = &jibri {
        api_routes = api_routes.merge(crate::jibri::webhook_routes(controller.clone()));
        let sweeper = controller.sweeper(state.scaler.leadership().clone());
        let stop = engine_stop.clone();
        tokio::spawn(async move { sweeper.run(stop).await });
    }
    let api = axum::serve(
        api_listener,
        api_routes.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    // Health keeps answering (`503 shutting down`) until the API has drained, so probes see it.
    let api_drained = CancellationToken::new();
    let metrics = axum::serve(metrics_listener, api::metrics_router(state.clone()))
        .with_graceful_shutdown(api_drained.clone().cancelled_owned());
    let api = async {
        let result = api.into_future().await;
        api_drained.cancel();
        result
    };
    let stopping = {
        let state = state.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            state.start_shutdown();
            tracing::info!(
                "shutting down: finishing in-flight requests and the running reconciles"
            );
        }
    };
    let (api, metrics, ()) = tokio::join!(api, metrics.into_future(), stopping);
    engine_stop.cancel();
    let engine_result = match engine.await {
        Ok(r) => r.map_err(AppError::from),
        Err(e) => Err(AppError::Io(std::io::Error::other(e.to_string()))),
    };
    if let Some(local) = local {
        local.shutdown().await;
    }
    api?;
    metrics?;
    engine_result?;
    tracing::info!("stopped");
    Ok(())
}

/// The Jibri controller from its environment variables, on the in-cluster Kubernetes client.
async fn jibri_controller() -> Result<Arc<JibriController>, AppError> {
    jitsi_scaler_k8s::install_crypto_provider();
    let config = JibriControllerConfig::from_env()
        .map_err(|e| ConfigError::new("jibri controller", e.to_string()))?;
    let client = kube::Client::try_default().await.map_err(|e| {
        ConfigError::new(
            "jibri controller",
            format!("no Kubernetes configuration: {e}"),
        )
    })?;
    let controller = JibriController::new(client, config)
        .map_err(|e| ConfigError::new("jibri controller", e.to_string()))?;
    Ok(Arc::new(controller))
}

/// `jitsi-scaler jibri-pod-controller`: the drop-in controller. Listens on `PORT` (IPv6 and
/// IPv4), campaigns for the reference's Lease, sweeps while leading, and releases the lease on
/// shutdown.
pub async fn run_jibri_pod_controller(shutdown: CancellationToken) -> Result<(), AppError> {
    let controller = jibri_controller().await?;
    let port = controller.config().port;
    let leadership = Arc::new(
        controller
            .leadership()
            .map_err(|e| ConfigError::new("jibri controller", e.to_string()))?,
    );
    let stop = CancellationToken::new();
    let lease_task = {
        let l = leadership.clone();
        let stop = stop.clone();
        tokio::spawn(async move { l.run(stop).await })
    };
    let sweeper = controller.sweeper(leadership.clone());
    let sweep_task = {
        let stop = stop.clone();
        tokio::spawn(async move { sweeper.run(stop).await })
    };
    let router =
        crate::jibri::router(controller).into_make_service_with_connect_info::<SocketAddr>();
    let mut listeners = Vec::new();
    match TcpListener::bind(("::", port)).await {
        Ok(l) => listeners.push(l),
        Err(e) => tracing::info!(error = %e, "no IPv6 listener"),
    }
    match TcpListener::bind(("0.0.0.0", port)).await {
        Ok(l) => listeners.push(l),
        Err(e) if !listeners.is_empty() && e.kind() == std::io::ErrorKind::AddrInUse => {}
        Err(source) => {
            return Err(AppError::Bind {
                addr: format!("0.0.0.0:{port}"),
                source,
            });
        }
    }
    tracing::info!(port, "jibri pod controller listening");
    let servers = listeners.into_iter().map(|l| {
        let router = router.clone();
        let shutdown = shutdown.clone();
        async move {
            axum::serve(l, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    });
    let results = futures::future::join_all(servers).await;
    stop.cancel();
    let _ = sweep_task.await;
    let _ = lease_task.await;
    tracing::info!("jibri pod controller stopped; lease released");
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
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
