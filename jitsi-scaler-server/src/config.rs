//! The command line: `jitsi-scaler serve | validate-config | sim-instance`. Every flag of `serve`
//! also reads an environment variable; the reference's names are used where they mean the same.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jitsi_scaler_core::engine::ScalerOptions;
use jitsi_scaler_core::plan::{PassSettings, Timings};
use jitsi_scaler_core::schedule::ScheduleSettings;
use jitsi_scaler_core::store::EmbeddedOptions;

use crate::local::LocalArgs;
use crate::sim::SimArgs;
use crate::telemetry::LogFormat;

/// jitsi-scaler: an autoscaler for Jitsi Meet fleets (JVB, Jibri, Jigasi).
#[derive(Debug, Parser)]
#[command(name = "jitsi-scaler", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the autoscaler: sidecar endpoints, admin API, and the engine.
    Serve(Box<ServeArgs>),
    /// Check a groups.json file and print every problem with its path and line.
    ValidateConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Run a simulated Jitsi component that speaks the sidecar protocol (used by the `local`
    /// provider, tests and benchmarks).
    SimInstance(Box<SimArgs>),
    /// Run the Jibri spare-pool controller for Kubernetes: a drop-in replacement of
    /// jibri-pod-controller, configured by its environment variables (PORT, JIBRI_HEALTH_PORT,
    /// JIBRI_BUSY_LABELS, SWEEP_INTERVAL, POD_NAME, NAMESPACE, ...).
    JibriPodController {
        /// Log format.
        #[arg(
            long,
            env = "JITSI_SCALER_LOG_FORMAT",
            value_enum,
            default_value = "text"
        )]
        log_format: LogFormat,
    },
}

/// Where state lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// A redb file in `--data-dir` (one node, durable). The default.
    Embedded,
    /// Process memory (lost on restart).
    Memory,
    /// Redis (several replicas behind a load balancer).
    Redis,
}

/// Who decides which replica acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LeaderElection {
    /// Redis lease with the Redis store, else this node alone.
    Auto,
    /// This node alone (one replica).
    Single,
    /// A lease in Redis (several replicas on one Redis).
    Redis,
    /// A coordination.k8s.io Lease (replicas in Kubernetes).
    Kubernetes,
}

/// `jitsi-scaler serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port of the API (sidecar and admin routes).
    #[arg(long, env = "PORT", default_value_t = 3000, help_heading = "Listeners")]
    pub port: u16,
    /// Port of health, readiness and metrics.
    #[arg(
        long,
        env = "METRICS_PORT",
        default_value_t = 3001,
        help_heading = "Listeners"
    )]
    pub metrics_port: u16,
    /// Address both listeners bind to.
    #[arg(
        long,
        env = "JITSI_SCALER_BIND",
        default_value = "0.0.0.0",
        help_heading = "Listeners"
    )]
    pub bind: String,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "JITSI_SCALER_MAX_BODY_BYTES", default_value_t = 1024 * 1024, help_heading = "Listeners")]
    pub max_body_bytes: usize,

    /// groups.json to seed an empty store with (and to re-apply on `POST /groups/actions/reset`).
    #[arg(
        long = "config",
        visible_alias = "group-config-file",
        env = "GROUP_CONFIG_FILE",
        help_heading = "Groups"
    )]
    pub config: Option<PathBuf>,
    /// Fills an empty `compartmentId` of the groups file.
    #[arg(long, env = "DEFAULT_COMPARTMENT_ID", help_heading = "Groups")]
    pub default_compartment_id: Option<String>,
    /// Fills an empty `instanceConfigurationId` of the groups file.
    #[arg(
        long,
        env = "DEFAULT_INSTANCE_CONFIGURATION_ID",
        help_heading = "Groups"
    )]
    pub default_instance_configuration_id: Option<String>,

    /// Where state lives (default: embedded, or redis when REDIS_URL or REDIS_HOST is set).
    #[arg(long, env = "JITSI_SCALER_STORE", value_enum, help_heading = "State")]
    pub store: Option<StoreKind>,
    /// Directory of the embedded store (and of local instances' logs).
    #[arg(
        long,
        env = "JITSI_SCALER_DATA_DIR",
        default_value = "./jitsi-scaler-data",
        help_heading = "State"
    )]
    pub data_dir: PathBuf,
    /// The embedded store's page cache, in MiB: more saves its writer re-reading pages, at the
    /// cost of resident memory (every read is served from memory either way).
    #[arg(
        long,
        env = "JITSI_SCALER_STORE_CACHE_MIB",
        default_value_t = EmbeddedOptions::DEFAULT_PAGE_CACHE_BYTES >> 20,
        value_parser = clap::value_parser!(usize),
        help_heading = "State"
    )]
    pub store_cache_mib: usize,
    /// How much lower than the server's the embedded store writer's scheduling priority is (its
    /// nice value above the server's, on Linux): on a busy core, check-ins come first and the
    /// writer commits what is left in larger batches. 0 runs it like the rest.
    #[arg(
        long,
        env = "JITSI_SCALER_STORE_WRITER_NICE",
        default_value_t = EmbeddedOptions::DEFAULT_WRITER_NICE,
        value_parser = clap::value_parser!(u8).range(0..=39),
        help_heading = "State"
    )]
    pub store_writer_nice: u8,
    /// Redis URL (redis:// or rediss://).
    #[arg(long, env = "REDIS_URL", help_heading = "State")]
    pub redis_url: Option<String>,
    /// Redis host (the reference's variables; used when no URL is given).
    #[arg(long, env = "REDIS_HOST", help_heading = "State")]
    pub redis_host: Option<String>,
    /// Redis port.
    #[arg(
        long,
        env = "REDIS_PORT",
        default_value_t = 6379,
        help_heading = "State"
    )]
    pub redis_port: u16,
    /// Redis password (never logged).
    #[arg(
        long,
        env = "REDIS_PASSWORD",
        hide_env_values = true,
        help_heading = "State"
    )]
    pub redis_password: Option<String>,
    /// Redis database number.
    #[arg(long, env = "REDIS_DB", default_value_t = 0, help_heading = "State")]
    pub redis_db: u32,
    /// Use TLS to Redis.
    #[arg(long, env = "REDIS_TLS", default_value_t = false, action = clap::ArgAction::Set, help_heading = "State")]
    pub redis_tls: bool,

    /// Leader election among replicas.
    #[arg(
        long,
        env = "JITSI_SCALER_LEADER_ELECTION",
        value_enum,
        default_value = "auto",
        help_heading = "Replicas"
    )]
    pub leader_election: LeaderElection,
    /// Lifetime of the leader's lease, in seconds (a follower takes over within it).
    #[arg(
        long,
        env = "JITSI_SCALER_LEADER_LEASE_TTL_SEC",
        default_value_t = 15,
        help_heading = "Replicas"
    )]
    pub leader_lease_ttl_sec: u64,
    /// This replica's identity, unique among the replicas (default: host name, process id and a
    /// random suffix).
    #[arg(long, env = "JITSI_SCALER_IDENTITY", help_heading = "Replicas")]
    pub identity: Option<String>,
    /// Name of the Kubernetes Lease.
    #[arg(
        long,
        env = "JITSI_SCALER_LEASE_NAME",
        default_value = "jitsi-scaler-leader",
        help_heading = "Replicas"
    )]
    pub lease_name: String,
    /// Namespace of the Kubernetes Lease (and of pods of groups that name none).
    #[arg(
        long,
        env = "NAMESPACE",
        default_value = "default",
        help_heading = "Replicas"
    )]
    pub namespace: String,
    /// Also run the Jibri spare-pool controller: its webhooks on the API port, its sweeper
    /// under this replica's leadership (configured by the controller's variables).
    #[arg(long, env = "JITSI_SCALER_JIBRI_CONTROLLER", default_value_t = false, action = clap::ArgAction::Set, help_heading = "Replicas")]
    pub jibri_controller: bool,

    /// Require authentication on the API (`false` turns it off, with a warning).
    #[arg(long, env = "PROTECTED_API", default_value_t = true, action = clap::ArgAction::Set, help_heading = "Authentication")]
    pub protected_api: bool,
    /// Base URL of the ASAP public keys (`<base>/<sha256hex(kid)>.pem`).
    #[arg(long, env = "ASAP_PUB_KEY_BASE_URL", help_heading = "Authentication")]
    pub asap_pub_key_base_url: Option<String>,
    /// Audience tokens must carry.
    #[arg(
        long,
        env = "ASAP_JWT_AUD",
        default_value = "jitsi-autoscaler",
        help_heading = "Authentication"
    )]
    pub asap_jwt_aud: String,
    /// Issuers accepted for sidecars (comma-separated); allowed only on /sidecar/*.
    #[arg(
        long,
        env = "ASAP_JWT_ACCEPTED_HOOK_ISS",
        default_value = "jitsi-autoscaler-sidecar",
        help_heading = "Authentication"
    )]
    pub asap_jwt_accepted_hook_iss: String,
    /// Issuers accepted for administration (comma-separated); allowed everywhere.
    #[arg(
        long,
        env = "ASAP_JWT_ACCEPTED_ADMIN_ISS",
        help_heading = "Authentication"
    )]
    pub asap_jwt_accepted_admin_iss: Option<String>,
    /// Issuers accepted read-only (comma-separated); GET routes only.
    #[arg(
        long,
        env = "ASAP_JWT_ACCEPTED_READ_ISS",
        help_heading = "Authentication"
    )]
    pub asap_jwt_accepted_read_iss: Option<String>,
    /// Let every accepted issuer call every route, as the reference (logged as a warning).
    #[arg(long, env = "ASAP_SINGLE_SCOPE", default_value_t = false, action = clap::ArgAction::Set, help_heading = "Authentication")]
    pub asap_single_scope: bool,
    /// How long a fetched public key is cached, in seconds.
    #[arg(
        long,
        env = "ASAP_PUB_KEY_TTL",
        default_value_t = 3600,
        help_heading = "Authentication"
    )]
    pub asap_pub_key_ttl: u64,
    /// Static bearer tokens, `role:token` comma-separated (roles: sidecar, read, admin).
    #[arg(
        long,
        env = "JITSI_SCALER_TOKENS",
        hide_env_values = true,
        help_heading = "Authentication"
    )]
    pub tokens: Option<String>,
    /// File of static bearer tokens (`<role> <token>` per line).
    #[arg(
        long,
        env = "JITSI_SCALER_TOKENS_FILE",
        help_heading = "Authentication"
    )]
    pub tokens_file: Option<PathBuf>,

    /// Providers to enable (comma-separated: local, oracle, digitalocean, custom, kubernetes).
    /// Default: `local`, plus every cloud whose configuration variables are set.
    #[arg(long, env = "CLOUD_PROVIDERS", help_heading = "Providers")]
    pub cloud_providers: Option<String>,
    /// The reference's single-provider variable (used when CLOUD_PROVIDERS is not set).
    #[arg(long, env = "CLOUD_PROVIDER", help_heading = "Providers")]
    pub cloud_provider: Option<String>,
    /// Settings of the `local` provider.
    #[command(flatten, next_help_heading = "Local provider")]
    pub local: LocalArgs,

    /// Decide and audit, but launch and terminate nothing.
    #[arg(long, env = "DRY_RUN", default_value_t = false, action = clap::ArgAction::Set, help_heading = "Engine")]
    pub dry_run: bool,
    /// Seconds between two reconciles of a group.
    #[arg(
        long,
        env = "JITSI_SCALER_RECONCILE_INTERVAL_SEC",
        default_value_t = 10,
        help_heading = "Engine"
    )]
    pub reconcile_interval_sec: u64,
    /// Least time between the start of a group's reconcile and one that a check-in or an edit
    /// triggers, in ms (triggers meanwhile wait and coalesce; 0: none).
    #[arg(
        long,
        env = "JITSI_SCALER_TRIGGER_SPACING_MS",
        default_value_t = 1000,
        help_heading = "Engine"
    )]
    pub trigger_spacing_ms: u64,
    /// Wait before the first reconcile, in ms, so sidecars can check in first.
    #[arg(
        long,
        env = "INITIAL_WAIT_FOR_POOLING_MS",
        default_value_t = 120_000,
        help_heading = "Engine"
    )]
    pub initial_wait_for_pooling_ms: u64,
    /// Seconds between two listings of a group's cloud.
    #[arg(
        long,
        env = "SANITY_JOBS_CREATION_INTERVAL_SEC",
        default_value_t = 240,
        help_heading = "Engine"
    )]
    pub sanity_interval_sec: u64,
    /// Reconciles running at once.
    #[arg(
        long,
        env = "JOBS_CONCURRENCY",
        default_value_t = 5,
        help_heading = "Engine"
    )]
    pub jobs_concurrency: usize,
    /// Lifetime of a state after its last report, in seconds.
    #[arg(
        long,
        env = "IDLE_TTL_SEC",
        default_value_t = 300,
        help_heading = "Engine"
    )]
    pub idle_ttl_sec: u64,
    /// Lifetime of a launch placeholder, in seconds.
    #[arg(
        long,
        env = "PROVISIONING_TTL_SEC",
        default_value_t = 900,
        help_heading = "Engine"
    )]
    pub provisioning_ttl_sec: u64,
    /// Lifetime of a shutting-down instance's state, in seconds.
    #[arg(
        long,
        env = "SHUTDOWN_STATUS_TTL_SEC",
        default_value_t = 600,
        help_heading = "Engine"
    )]
    pub shutdown_status_ttl_sec: u64,
    /// Metric sample retention, in seconds.
    #[arg(
        long,
        env = "METRIC_TTL_SEC",
        default_value_t = 3600,
        help_heading = "Engine"
    )]
    pub metric_ttl_sec: u64,
    /// How long a cloud listing is used, in seconds.
    #[arg(
        long,
        env = "SERVICE_LEVEL_METRICS_TTL_SEC",
        default_value_t = 600,
        help_heading = "Engine"
    )]
    pub service_level_metrics_ttl_sec: u64,
    /// Lifetime of shutdown and reconfiguration commands, in seconds.
    #[arg(
        long,
        env = "SHUTDOWN_TTL_SEC",
        default_value_t = 86_400,
        help_heading = "Engine"
    )]
    pub shutdown_ttl_sec: u64,
    /// Audit retention, in seconds.
    #[arg(
        long,
        env = "AUDIT_TTL_SEC",
        default_value_t = 172_800,
        help_heading = "Engine"
    )]
    pub audit_ttl_sec: u64,
    /// Cap of the untracked-instance throttle.
    #[arg(
        long,
        env = "MAX_THROTTLE_THRESHOLD",
        default_value_t = 40,
        help_heading = "Engine"
    )]
    pub max_throttle_threshold: u32,
    /// Cloud guard for groups that do not say.
    #[arg(long, env = "CLOUD_GUARD_ENABLED", default_value_t = false, action = clap::ArgAction::Set, help_heading = "Engine")]
    pub cloud_guard_enabled: bool,
    /// Cloud guard grace for groups that do not say.
    #[arg(
        long,
        env = "CLOUD_GUARD_GRACE_COUNT",
        default_value_t = 0,
        help_heading = "Engine"
    )]
    pub cloud_guard_grace_count: u32,
    /// Scheduled scaling on or off.
    #[arg(long, env = "SCHEDULED_SCALING_ENABLED", default_value_t = true, action = clap::ArgAction::Set, help_heading = "Engine")]
    pub scheduled_scaling_enabled: bool,
    /// Timezone of schedules whose group region has none.
    #[arg(
        long,
        env = "SCHEDULED_SCALING_DEFAULT_TIMEZONE",
        default_value = "UTC",
        help_heading = "Engine"
    )]
    pub scheduled_scaling_default_timezone: String,
    /// Extra or replaced region timezones, `region=Zone/Name` comma-separated.
    #[arg(
        long,
        env = "SCHEDULED_SCALING_REGION_TIMEZONES",
        help_heading = "Engine"
    )]
    pub scheduled_scaling_region_timezones: Option<String>,
    /// Spread of scheduled transitions across groups, in seconds.
    #[arg(
        long,
        env = "SCHEDULED_SCALING_JITTER_SEC",
        default_value_t = 0,
        help_heading = "Engine"
    )]
    pub scheduled_scaling_jitter_sec: u64,

    /// Log format (text is coloured only on a terminal, and not with NO_COLOR set).
    #[arg(
        long,
        env = "JITSI_SCALER_LOG_FORMAT",
        value_enum,
        default_value = "text",
        help_heading = "Logging"
    )]
    pub log_format: LogFormat,
    /// Log level when RUST_LOG is not set.
    #[arg(
        long,
        env = "LOG_LEVEL",
        default_value = "info",
        help_heading = "Logging"
    )]
    pub log_level: String,
}

/// A problem with the configuration, naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    /// The flag or variable.
    pub setting: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A problem with a setting.
    pub fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            message: message.into(),
        }
    }
}

fn secs(s: u64) -> i64 {
    (s as i64).saturating_mul(1000)
}

impl ServeArgs {
    /// The store to use.
    pub fn store_kind(&self) -> StoreKind {
        self.store
            .unwrap_or(if self.redis_url.is_some() || self.redis_host.is_some() {
                StoreKind::Redis
            } else {
                StoreKind::Embedded
            })
    }

    /// The embedded store's options.
    pub fn embedded_options(&self) -> EmbeddedOptions {
        EmbeddedOptions {
            page_cache_bytes: self.store_cache_mib.saturating_mul(1 << 20),
            writer_nice: self.store_writer_nice,
            ..EmbeddedOptions::default()
        }
    }

    /// The providers to enable, lower-cased.
    pub fn provider_names(&self) -> Vec<String> {
        let listed = self
            .cloud_providers
            .as_deref()
            .or(self.cloud_provider.as_deref());
        let mut names: Vec<String> = match listed {
            Some(list) => list
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            None => {
                let mut names = vec!["local".to_owned()];
                let set = |v: &str| std::env::var_os(v).is_some_and(|x| !x.is_empty());
                if set("OCI_CONFIGURATION_FILE_PATH") {
                    names.push("oracle".into());
                }
                if set("DIGITALOCEAN_API_TOKEN") || set("DIGITALOCEAN_CONFIGURATION_FILE_PATH") {
                    names.push("digitalocean".into());
                }
                if set("CUSTOM_CONFIGURATION_LAUNCH_SCRIPT_FILE_PATH") {
                    names.push("custom".into());
                }
                names
            }
        };
        names.dedup();
        names
    }

    /// Region → timezone map: the reference's ten entries plus the configured ones.
    pub fn schedule_settings(&self) -> Result<ScheduleSettings, ConfigError> {
        let mut settings = ScheduleSettings {
            default_timezone: self.scheduled_scaling_default_timezone.clone(),
            jitter_sec: self.scheduled_scaling_jitter_sec,
            ..ScheduleSettings::default()
        };
        let check = |tz: &str, setting: &str| {
            if jitsi_scaler_core::schedule::is_known_timezone(tz) {
                Ok(())
            } else {
                Err(ConfigError::new(
                    setting,
                    format!("unknown timezone {tz:?}"),
                ))
            }
        };
        check(
            &settings.default_timezone,
            "SCHEDULED_SCALING_DEFAULT_TIMEZONE",
        )?;
        if let Some(map) = &self.scheduled_scaling_region_timezones {
            let parsed: HashMap<String, String> = map
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|pair| {
                    let (region, tz) = pair.split_once('=').ok_or_else(|| {
                        ConfigError::new(
                            "SCHEDULED_SCALING_REGION_TIMEZONES",
                            format!("{pair:?} is not region=Zone/Name"),
                        )
                    })?;
                    check(tz.trim(), "SCHEDULED_SCALING_REGION_TIMEZONES")?;
                    Ok((region.trim().to_owned(), tz.trim().to_owned()))
                })
                .collect::<Result<_, ConfigError>>()?;
            settings.region_timezones.extend(parsed);
        }
        Ok(settings)
    }

    /// Engine options from the flags.
    pub fn scaler_options(&self) -> Result<ScalerOptions, ConfigError> {
        if self.reconcile_interval_sec == 0 {
            return Err(ConfigError::new(
                "JITSI_SCALER_RECONCILE_INTERVAL_SEC",
                "must be at least 1",
            ));
        }
        let defaults = ScalerOptions::default();
        Ok(ScalerOptions {
            reconcile_interval: Duration::from_secs(self.reconcile_interval_sec),
            trigger_spacing: Duration::from_millis(self.trigger_spacing_ms),
            initial_delay: Duration::from_millis(self.initial_wait_for_pooling_ms),
            sanity_interval: Duration::from_secs(self.sanity_interval_sec.max(1)),
            cloud_cache_ttl: Duration::from_secs(self.service_level_metrics_ttl_sec),
            pass: PassSettings {
                timings: Timings {
                    idle_ttl_ms: secs(self.idle_ttl_sec),
                    provisioning_ttl_ms: secs(self.provisioning_ttl_sec),
                    shutdown_ttl_ms: secs(self.shutdown_status_ttl_sec),
                    metric_ttl_ms: secs(self.metric_ttl_sec),
                },
                schedule: self.schedule_settings()?,
                scheduled_scaling: self.scheduled_scaling_enabled,
                cloud_guard: self.cloud_guard_enabled,
                cloud_guard_grace: self.cloud_guard_grace_count,
                max_throttle_threshold: self.max_throttle_threshold,
            },
            dry_run: self.dry_run,
            concurrency: self.jobs_concurrency.max(1),
            flag_ttl: Duration::from_secs(self.shutdown_ttl_sec),
            ..defaults
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn serve(args: &[&str]) -> ServeArgs {
        let mut full = vec!["jitsi-scaler", "serve"];
        full.extend_from_slice(args);
        match Cli::try_parse_from(full).expect("parse").command {
            Command::Serve(s) => *s,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn defaults_and_flags_map_to_engine_options() {
        let s = serve(&[
            "--reconcile-interval-sec",
            "5",
            "--idle-ttl-sec",
            "60",
            "--dry-run",
            "true",
        ]);
        assert_eq!(s.port, 3000);
        assert_eq!(s.metrics_port, 3001);
        assert_eq!(s.store_kind(), StoreKind::Embedded);
        assert_eq!(
            s.embedded_options().page_cache_bytes,
            EmbeddedOptions::DEFAULT_PAGE_CACHE_BYTES
        );
        assert_eq!(
            serve(&["--store-cache-mib", "64"])
                .embedded_options()
                .page_cache_bytes,
            64 << 20
        );
        assert_eq!(
            s.embedded_options().writer_nice,
            EmbeddedOptions::DEFAULT_WRITER_NICE
        );
        assert_eq!(
            serve(&["--store-writer-nice", "0"])
                .embedded_options()
                .writer_nice,
            0
        );
        let o = s.scaler_options().expect("options");
        assert_eq!(o.reconcile_interval, Duration::from_secs(5));
        assert_eq!(o.pass.timings.idle_ttl_ms, 60_000);
        assert!(o.dry_run);
        assert_eq!(o.initial_delay, Duration::from_secs(120));
        assert_eq!(o.trigger_spacing, ScalerOptions::default().trigger_spacing);
        let spacing = serve(&["--trigger-spacing-ms", "250"]).scaler_options();
        assert_eq!(
            spacing.expect("options").trigger_spacing,
            Duration::from_millis(250)
        );
        let s = serve(&["--redis-host", "redis.internal"]);
        assert_eq!(s.store_kind(), StoreKind::Redis);
        let s = serve(&["--cloud-providers", "Oracle, local"]);
        assert_eq!(s.provider_names(), vec!["oracle", "local"]);
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let s = serve(&[
            "--scheduled-scaling-region-timezones",
            "fra1=Europe/Berlin,xx",
        ]);
        let e = s.scaler_options().expect_err("bad map");
        assert_eq!(e.setting, "SCHEDULED_SCALING_REGION_TIMEZONES");
        let s = serve(&["--scheduled-scaling-region-timezones", "fra1=Mars/Base"]);
        assert!(
            s.scaler_options()
                .expect_err("bad zone")
                .message
                .contains("Mars/Base")
        );
        let s = serve(&["--scheduled-scaling-region-timezones", "fra1=Europe/Berlin"]);
        let o = s.scaler_options().expect("ok");
        assert_eq!(
            o.pass
                .schedule
                .region_timezones
                .get("fra1")
                .map(String::as_str),
            Some("Europe/Berlin")
        );
        assert_eq!(o.pass.schedule.region_timezones.len(), 11);
        assert!(Cli::try_parse_from(["jitsi-scaler", "serve", "--port", "http"]).is_err());
    }
}
