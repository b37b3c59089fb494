//! The `local` provider: each instance is a child process running
//! `jitsi-scaler sim-instance`, which reports to this server through the sidecar protocol.
//! It lets a whole fleet run on one machine for demos and end-to-end tests.
//!
//! * `launch` spawns one process per slot, configured through `JITSI_SCALER_SIM_*`
//!   environment variables (the token never appears on a command line): the server URL and
//!   token of [`LocalConfig`], the group's name and type, the slot's display name, an instance
//!   id derived from the slot's idempotency key ([`instance_id_for`]), and the group's
//!   `"local"` settings ([`LocalSettings`]). A retried launch with the same key finds the
//!   running process instead of starting another. Output goes to
//!   `<log dir>/<instance id>.log`.
//! * `list` returns the group's live processes as `RUNNING` (exited ones are reaped).
//! * `terminate` sends SIGTERM to the instance's process group, then SIGKILL after the grace
//!   period; an instance already gone is success.
//! * [`LocalProvider::shutdown`] stops every instance gracefully; dropping the provider kills
//!   the rest. Instances also exit by themselves when the server process disappears.

mod child;
mod fleet;
mod settings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use jitsi_scaler_core::group::{FieldError, Group};
use jitsi_scaler_core::instance::CloudInstance;
use jitsi_scaler_core::provider::{
    CloudProvider, LaunchOutcome, LaunchRequest, LaunchedInstance, ProviderError,
};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

pub use settings::LocalSettings;

use crate::sim::duration::parse_duration;
use crate::sim::{Token, env};
use child::{LocalChild, Spawn};

/// The provider's name, as groups write it in `cloud`.
pub const NAME: &str = "local";
/// Default cap on live instances.
pub const DEFAULT_MAX_INSTANCES: usize = 50;
/// Default wait between SIGTERM and SIGKILL.
pub const DEFAULT_TERMINATE_GRACE: Duration = Duration::from_secs(10);

/// Configuration of the `local` provider.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// Program of each instance; `None` ⇒ the running executable.
    pub program: Option<PathBuf>,
    /// Arguments of the program (default `["sim-instance"]`).
    pub args: Vec<String>,
    /// Base URL the instances report to (this server, e.g. `http://127.0.0.1:8080`).
    pub server_url: String,
    /// Bearer token the instances send (a static token or a pre-made JWT).
    pub token: Option<Token>,
    /// Directory of the per-instance log files.
    pub log_dir: PathBuf,
    /// Most live instances across all groups (protects the machine).
    pub max_instances: usize,
    /// Wait between SIGTERM and SIGKILL.
    pub terminate_grace: Duration,
}

impl LocalConfig {
    /// A configuration with the defaults: this executable with `sim-instance`, 50 instances
    /// at most, 10 s grace.
    pub fn new(server_url: impl Into<String>, log_dir: impl Into<PathBuf>) -> Self {
        Self {
            program: None,
            args: vec!["sim-instance".to_owned()],
            server_url: server_url.into(),
            token: None,
            log_dir: log_dir.into(),
            max_instances: DEFAULT_MAX_INSTANCES,
            terminate_grace: DEFAULT_TERMINATE_GRACE,
        }
    }

    /// The default log directory under a data directory: `<data_dir>/local-instances`.
    pub fn default_log_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("local-instances")
    }
}

/// Command-line flags of the `local` provider, for the server's configuration.
#[derive(Clone, Debug, clap::Args)]
pub struct LocalArgs {
    /// Program of each local instance (default: this executable).
    #[arg(long = "local-executable", env = "JITSI_SCALER_LOCAL_EXECUTABLE")]
    pub executable: Option<PathBuf>,
    /// Directory of the local instances' logs (default: `<data dir>/local-instances`).
    #[arg(long = "local-log-dir", env = "JITSI_SCALER_LOCAL_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
    /// Most live local instances.
    #[arg(long = "local-max-instances", env = "JITSI_SCALER_LOCAL_MAX_INSTANCES", default_value_t = DEFAULT_MAX_INSTANCES)]
    pub max_instances: usize,
    /// Wait between SIGTERM and SIGKILL when terminating a local instance.
    #[arg(long = "local-terminate-grace", env = "JITSI_SCALER_LOCAL_TERMINATE_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub terminate_grace: Duration,
    /// Token the local instances send (a static token or a pre-made JWT).
    #[arg(
        long = "local-token",
        env = "JITSI_SCALER_LOCAL_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<Token>,
}

impl LocalArgs {
    /// The provider configuration for a server reachable at `server_url`.
    pub fn config(&self, server_url: impl Into<String>, data_dir: &Path) -> LocalConfig {
        let mut config = LocalConfig::new(
            server_url,
            self.log_dir
                .clone()
                .unwrap_or_else(|| LocalConfig::default_log_dir(data_dir)),
        );
        config.program = self.executable.clone();
        config.max_instances = self.max_instances;
        config.terminate_grace = self.terminate_grace;
        config.token = self.token.clone();
        config
    }
}

/// The deterministic instance id of an idempotency key: `local-<key>` when the key is a
/// short `[A-Za-z0-9_-]` word, else `local-<first 20 hex digits of its SHA-256>`.
pub fn instance_id_for(idempotency_key: &str) -> String {
    let plain = !idempotency_key.is_empty()
        && idempotency_key.len() <= 64
        && idempotency_key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        format!("local-{idempotency_key}")
    } else {
        let digest = hex::encode(Sha256::digest(idempotency_key.as_bytes()));
        format!("local-{}", &digest[..20])
    }
}

/// Instances as local child processes.
#[derive(Debug)]
pub struct LocalProvider {
    config: LocalConfig,
    program: PathBuf,
    children: Arc<Mutex<BTreeMap<String, LocalChild>>>,
    fleets: fleet::Fleets,
}

impl LocalProvider {
    /// A provider; creates the log directory and resolves the program.
    pub fn new(config: LocalConfig) -> Result<Self, ProviderError> {
        let program = match &config.program {
            Some(program) => program.clone(),
            None => std::env::current_exe().map_err(|e| {
                ProviderError::Config(format!("cannot find the running executable: {e}"))
            })?,
        };
        std::fs::create_dir_all(&config.log_dir).map_err(|e| {
            ProviderError::Config(format!(
                "cannot create log directory {}: {e}",
                config.log_dir.display()
            ))
        })?;
        let children: Arc<Mutex<BTreeMap<String, LocalChild>>> =
            Arc::new(Mutex::new(BTreeMap::new()));
        let counted = children.clone();
        let live: fleet::LiveCount = Arc::new(move |group: &str| {
            counted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .filter(|c| c.group == group)
                .count()
        });
        Ok(Self {
            config,
            program,
            children,
            fleets: fleet::Fleets::new(live),
        })
    }

    /// The log file of an instance.
    pub fn log_path(&self, instance_id: &str) -> PathBuf {
        self.config.log_dir.join(format!("{instance_id}.log"))
    }

    /// The process id of a live instance.
    pub fn pid(&self, instance_id: &str) -> Option<u32> {
        let mut children = self.lock();
        reap(&mut children);
        children.get(instance_id).map(LocalChild::pid)
    }

    /// Stops every instance (SIGTERM, then SIGKILL after the grace period) and waits for
    /// them; the number stopped. Call it before the server exits.
    pub async fn shutdown(&self) -> usize {
        self.fleets.stop();
        let all = std::mem::take(&mut *self.lock());
        let count = all.len();
        let grace = self.config.terminate_grace;
        futures::future::join_all(all.into_iter().map(|(id, mut child)| async move {
            match child.stop(grace).await {
                Ok(status) => info!(instance_id = %id, %status, "local instance stopped"),
                Err(error) => warn!(instance_id = %id, %error, "cannot stop local instance"),
            }
        }))
        .await;
        if count > 0 {
            info!(count, "local instances stopped");
        }
        count
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, LocalChild>> {
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(
        &self,
        group: &Group,
        settings: &LocalSettings,
        instance_id: &str,
        display_name: &str,
    ) -> Result<LocalChild, ProviderError> {
        let mut vars = vec![
            (env::SERVER_URL, self.config.server_url.clone()),
            (env::INSTANCE_ID, instance_id.to_owned()),
            (env::INSTANCE_TYPE, group.type_name.clone()),
            (env::GROUP, group.name.clone()),
            (env::NAME, display_name.to_owned()),
            (env::CLOUD, NAME.to_owned()),
            (env::PARENT_PID, std::process::id().to_string()),
        ];
        if !group.region.is_empty() {
            vars.push((env::REGION, group.region.clone()));
        }
        if let Some(token) = &self.config.token {
            vars.push((env::TOKEN, token.expose().to_owned()));
        }
        vars.extend(settings.env_vars());
        if settings.fleet_load.is_some() {
            let file = fleet::load_file(&self.config.log_dir, &group.name);
            vars.push((env::LOAD_FILE, file.display().to_string()));
        }
        let log_path = self.log_path(instance_id);
        LocalChild::spawn(
            Spawn {
                program: &self.program,
                args: &self.config.args,
                clear_prefix: env::PREFIX,
                env: vars,
                log_path: &log_path,
            },
            &group.name,
            display_name,
            jiff::Timestamp::now().as_millisecond(),
        )
        .map_err(ProviderError::Config)
    }
}

/// Forgets the instances whose process has exited.
fn reap(children: &mut BTreeMap<String, LocalChild>) {
    children.retain(|id, child| match child.exited() {
        Some(status) => {
            info!(instance_id = %id, group = %child.group, %status, "local instance exited");
            false
        }
        None => true,
    });
}

#[async_trait]
impl CloudProvider for LocalProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn validate_group(&self, group: &Group) -> Vec<FieldError> {
        match LocalSettings::of(group) {
            Ok(_) => Vec::new(),
            Err(msg) => vec![FieldError::body(
                "local",
                msg,
                group.extra.get("local").cloned(),
            )],
        }
    }

    async fn launch(&self, group: &Group, request: &LaunchRequest) -> LaunchOutcome {
        let settings = match LocalSettings::of(group) {
            Ok(settings) => settings,
            Err(msg) => return LaunchOutcome::failed(ProviderError::Config(msg)),
        };
        if let Some(curve) = &settings.fleet_load {
            match curve.parse() {
                Ok(profile) => self.fleets.ensure(
                    &group.name,
                    profile,
                    settings.time_scale.unwrap_or(1.0),
                    fleet::load_file(&self.config.log_dir, &group.name),
                ),
                Err(e) => {
                    return LaunchOutcome::failed(ProviderError::Config(format!("fleetLoad: {e}")));
                }
            }
        }
        let mut outcome = LaunchOutcome::default();
        let mut children = self.lock();
        reap(&mut children);
        for (slot, launch) in request.slots.iter().enumerate() {
            let instance_id = instance_id_for(&launch.idempotency_key);
            if let Some(existing) = children.get(&instance_id) {
                if existing.group != group.name {
                    outcome.error = Some(ProviderError::Config(format!(
                        "idempotency key {:?} is already used by group {}",
                        launch.idempotency_key, existing.group
                    )));
                    break;
                }
                info!(%instance_id, group = %group.name, "local instance already running for this key");
                outcome.launched.push(LaunchedInstance {
                    slot,
                    instance_id,
                    display_name: existing.display_name.clone(),
                });
                continue;
            }
            if children.len() >= self.config.max_instances {
                outcome.error = Some(ProviderError::Capacity(format!(
                    "the local provider runs at most {} instances",
                    self.config.max_instances
                )));
                break;
            }
            match self.spawn(group, &settings, &instance_id, &launch.display_name) {
                Ok(child) => {
                    info!(
                        %instance_id,
                        group = %group.name,
                        display_name = %launch.display_name,
                        pid = child.pid(),
                        log = %self.log_path(&instance_id).display(),
                        "local instance started"
                    );
                    children.insert(instance_id.clone(), child);
                    outcome.launched.push(LaunchedInstance {
                        slot,
                        instance_id,
                        display_name: launch.display_name.clone(),
                    });
                }
                Err(error) => {
                    warn!(%instance_id, group = %group.name, %error, "cannot start local instance");
                    outcome.error = Some(error);
                    break;
                }
            }
        }
        outcome
    }

    async fn list(&self, group: &Group) -> Result<Vec<CloudInstance>, ProviderError> {
        let mut children = self.lock();
        reap(&mut children);
        Ok(children
            .iter()
            .filter(|(_, child)| child.group == group.name)
            .map(|(id, child)| CloudInstance {
                instance_id: id.clone(),
                display_name: child.display_name.clone(),
                cloud_status: "RUNNING".into(),
                created_at_ms: Some(child.created_at_ms),
            })
            .collect())
    }

    async fn terminate(&self, group: &Group, instance_id: &str) -> Result<(), ProviderError> {
        let taken = {
            let mut children = self.lock();
            match children.get(instance_id) {
                None => None,
                Some(child) if child.group != group.name => {
                    return Err(ProviderError::NotFound(format!(
                        "instance {instance_id} belongs to group {}, not {}",
                        child.group, group.name
                    )));
                }
                Some(_) => children.remove(instance_id),
            }
        };
        let Some(mut child) = taken else {
            info!(%instance_id, group = %group.name, "local instance already gone");
            return Ok(());
        };
        match child.stop(self.config.terminate_grace).await {
            Ok(status) => {
                info!(%instance_id, group = %group.name, %status, "local instance terminated");
                Ok(())
            }
            Err(error) => {
                self.lock().insert(instance_id.to_owned(), child);
                Err(ProviderError::Transient(error))
            }
        }
    }
}

impl Drop for LocalProvider {
    /// Kills every instance still running (use [`LocalProvider::shutdown`] for a graceful
    /// stop).
    fn drop(&mut self) {
        self.fleets.stop();
        let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, child) in children.iter_mut() {
            if child.exited().is_none() {
                warn!(instance_id = %id, "killing local instance");
                child.kill();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_deterministic_and_safe() {
        assert_eq!(instance_id_for("abc-123_X"), "local-abc-123_X");
        let odd = instance_id_for("intent/7 slot 2");
        assert_eq!(odd, instance_id_for("intent/7 slot 2"));
        assert_ne!(odd, instance_id_for("intent/7 slot 3"));
        assert_eq!(odd.len(), "local-".len() + 20);
        assert!(odd.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert!(instance_id_for("").starts_with("local-"));
        assert_eq!(instance_id_for(&"k".repeat(65)).len(), 26);
    }

    #[test]
    fn args_build_the_config() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            local: LocalArgs,
        }
        let cli = Cli::try_parse_from(["x", "--local-max-instances=3", "--local-token=t0k"])
            .expect("parse");
        let config = cli.local.config("http://127.0.0.1:9", Path::new("/data"));
        assert_eq!(config.log_dir, PathBuf::from("/data/local-instances"));
        assert_eq!(config.max_instances, 3);
        assert_eq!(config.terminate_grace, DEFAULT_TERMINATE_GRACE);
        assert_eq!(config.args, vec!["sim-instance".to_owned()]);
        assert!(!format!("{config:?}").contains("t0k"));
    }
}
