//! `jitsi-scaler sim-instance`: a simulated Jitsi component (JVB, Jibri, Jigasi, …) with its
//! sidecar, speaking the real sidecar protocol (`sidecar-protocol.md`) to an autoscaler.
//!
//! It behaves as the reference sidecar in front of a component:
//!
//! * every `--stats-interval` (reference default 30 s) it builds a `StatsReport` with the
//!   component's own stats payload for its type and caches it;
//! * every `--poll-interval` (60 s) it POSTs the cached report to `/sidecar/status`, with the
//!   same `timestamp` until the next build (or, with `--report-stats false`, the instance
//!   details to `/sidecar/poll`);
//! * `shutdown: true` ⇒ `shutdownStatus: true` in every later report, a graceful drain (JVB,
//!   Jigasi and generic types raise `graceful_shutdown` and shed their load linearly over
//!   `--drain-duration`; a busy Jibri finishes its recording), then one
//!   `POST /sidecar/shutdown` with the instance details, then exit;
//! * `reconfigure: "<date>"` ⇒ a simulated reconfiguration of `--reconfigure-duration`, after
//!   which the next report built carries `reconfigureComplete: "<date>"` (the exact string);
//! * a non-2xx answer, a timeout (`--request-timeout`, 3 s as the sidecar) or a non-JSON
//!   answer is logged and read as `{"shutdown":false,"reconfigure":""}`.
//!
//! # Load
//! The load follows `--load` (see [`profile`] for the syntax: `const:0.3`,
//! `ramp:0.1:0.9:300`, `steps:0.2@0,0.9@120`, `sine:0.1:0.9:600`, `file:trace.json`) on
//! the simulation's own clock: real time since start × `--time-scale`. The drain, the
//! reconfiguration and Jibri recording slots are in the same simulated seconds. For stress
//! types the load is the stress level; for Jibri it is the probability that a recording slot
//! (`--jibri-session`) is busy. Each instance adds its own noise (± `--noise`) and its own busy
//! schedule, a deterministic function of `--seed` and the instance id.
//!
//! **Shared live load:** with `--load-file PATH`, the file holds one number that replaces the
//! profile's value; it is re-read at every stats build. Writing one file changes the load of
//! a whole fleet at once, e.g. `echo 0.9 > /tmp/load` during a demo. While the file is
//! missing or does not hold a non-negative number, the profile applies (and a warning is
//! logged once).
//!
//! Every flag also reads an environment variable (`JITSI_SCALER_SIM_*`, see [`env`]).

mod client;
pub mod component;
pub mod duration;
pub mod profile;
pub mod sidecar;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use futures::future::OptionFuture;
use jitsi_scaler_core::backoff::Backoff;
use sha2::{Digest, Sha256};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

pub use client::CallError;
pub use duration::parse_duration;
pub use profile::LoadProfile;

use client::AutoscalerClient;
use component::{Component, ComponentConfig, Kind, SIM_VERSION};
use sidecar::{Action, Command, InstanceDetails, Sidecar};

/// The environment variables of the `sim-instance` flags.
pub mod env {
    /// Prefix of every variable below.
    pub const PREFIX: &str = "JITSI_SCALER_SIM_";
    /// `--server-url`.
    pub const SERVER_URL: &str = "JITSI_SCALER_SIM_SERVER_URL";
    /// `--instance-id`.
    pub const INSTANCE_ID: &str = "JITSI_SCALER_SIM_INSTANCE_ID";
    /// `--instance-type`.
    pub const INSTANCE_TYPE: &str = "JITSI_SCALER_SIM_INSTANCE_TYPE";
    /// `--group`.
    pub const GROUP: &str = "JITSI_SCALER_SIM_GROUP";
    /// `--name`.
    pub const NAME: &str = "JITSI_SCALER_SIM_NAME";
    /// `--cloud`.
    pub const CLOUD: &str = "JITSI_SCALER_SIM_CLOUD";
    /// `--region`.
    pub const REGION: &str = "JITSI_SCALER_SIM_REGION";
    /// `--token`.
    pub const TOKEN: &str = "JITSI_SCALER_SIM_TOKEN";
    /// `--stats-interval`.
    pub const STATS_INTERVAL: &str = "JITSI_SCALER_SIM_STATS_INTERVAL";
    /// `--poll-interval`.
    pub const POLL_INTERVAL: &str = "JITSI_SCALER_SIM_POLL_INTERVAL";
    /// `--request-timeout`.
    pub const REQUEST_TIMEOUT: &str = "JITSI_SCALER_SIM_REQUEST_TIMEOUT";
    /// `--report-stats`.
    pub const REPORT_STATS: &str = "JITSI_SCALER_SIM_REPORT_STATS";
    /// `--load`.
    pub const LOAD: &str = "JITSI_SCALER_SIM_LOAD";
    /// `--load-file`.
    pub const LOAD_FILE: &str = "JITSI_SCALER_SIM_LOAD_FILE";
    /// `--noise`.
    pub const NOISE: &str = "JITSI_SCALER_SIM_NOISE";
    /// `--time-scale`.
    pub const TIME_SCALE: &str = "JITSI_SCALER_SIM_TIME_SCALE";
    /// `--drain-duration`.
    pub const DRAIN_DURATION: &str = "JITSI_SCALER_SIM_DRAIN_DURATION";
    /// `--reconfigure-duration`.
    pub const RECONFIGURE_DURATION: &str = "JITSI_SCALER_SIM_RECONFIGURE_DURATION";
    /// `--jibri-session`.
    pub const JIBRI_SESSION: &str = "JITSI_SCALER_SIM_JIBRI_SESSION";
    /// `--single-use`.
    pub const SINGLE_USE: &str = "JITSI_SCALER_SIM_SINGLE_USE";
    /// `--seed`.
    pub const SEED: &str = "JITSI_SCALER_SIM_SEED";
    /// `--parent-pid`.
    pub const PARENT_PID: &str = "JITSI_SCALER_SIM_PARENT_PID";
}

/// A bearer token (a static string or a pre-made JWT). Never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The secret itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl FromStr for Token {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s.trim()))
    }
}

/// The `sim-instance` subcommand's arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct SimArgs {
    /// Base URL of the autoscaler (`http://127.0.0.1:8080`).
    #[arg(long, env = env::SERVER_URL)]
    pub server_url: String,
    /// Instance id reported as `instanceId`.
    #[arg(long, env = env::INSTANCE_ID)]
    pub instance_id: String,
    /// Instance type: `JVB`, `jibri`, `sip-jibri`, `jigasi`, `nomad`, `whisper`, …
    #[arg(long, env = env::INSTANCE_TYPE, default_value = "JVB")]
    pub instance_type: String,
    /// Group name reported in the instance details.
    #[arg(long, env = env::GROUP, default_value = "default")]
    pub group: String,
    /// Display name reported as `name`.
    #[arg(long, env = env::NAME)]
    pub name: Option<String>,
    /// Cloud name reported as `cloud`.
    #[arg(long, env = env::CLOUD, default_value = "local")]
    pub cloud: String,
    /// Region reported as `region`.
    #[arg(long, env = env::REGION)]
    pub region: Option<String>,
    /// Bearer token sent on every call (a static token or a pre-made JWT).
    #[arg(long, env = env::TOKEN, hide_env_values = true)]
    pub token: Option<Token>,
    /// Period of the stats builds (`STATS_POLLING_INTERVAL`).
    #[arg(long, env = env::STATS_INTERVAL, default_value = "30s", value_parser = parse_duration)]
    pub stats_interval: Duration,
    /// Period of the command polls (`SHUTDOWN_POLLING_INTERVAL`).
    #[arg(long, env = env::POLL_INTERVAL, default_value = "60s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Timeout of each call to the autoscaler.
    #[arg(long, env = env::REQUEST_TIMEOUT, default_value = "3s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Report stats through `/sidecar/status` (`ENABLE_REPORT_STATS`); `false` polls
    /// `/sidecar/poll` with the instance details only.
    #[arg(long, env = env::REPORT_STATS, default_value_t = true, action = clap::ArgAction::Set)]
    pub report_stats: bool,
    /// Load profile: `const:V`, `ramp:FROM:TO:SECS`, `steps:V@SEC,…`, `sine:MIN:MAX:PERIOD`
    /// or `file:PATH`.
    #[arg(long, env = env::LOAD, default_value = "const:0.3")]
    pub load: LoadProfile,
    /// A file holding one number that overrides the profile, re-read at every stats build.
    #[arg(long, env = env::LOAD_FILE)]
    pub load_file: Option<PathBuf>,
    /// Amplitude of the per-instance noise added to the load.
    #[arg(long, env = env::NOISE, default_value_t = 0.02)]
    pub noise: f64,
    /// Speed of the simulated clock relative to real time.
    #[arg(long, env = env::TIME_SCALE, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Length of the graceful drain (simulated time).
    #[arg(long, env = env::DRAIN_DURATION, default_value = "30s", value_parser = parse_duration)]
    pub drain_duration: Duration,
    /// Length of a reconfiguration (simulated time).
    #[arg(long, env = env::RECONFIGURE_DURATION, default_value = "2s", value_parser = parse_duration)]
    pub reconfigure_duration: Duration,
    /// Length of one Jibri recording slot (simulated time).
    #[arg(long, env = env::JIBRI_SESSION, default_value = "5m", value_parser = parse_duration)]
    pub jibri_session: Duration,
    /// Jibri in single-use mode: EXPIRED after its first recording.
    #[arg(long, env = env::SINGLE_USE, default_value_t = false, action = clap::ArgAction::Set)]
    pub single_use: bool,
    /// Seed of the noise and the Jibri schedule (combined with the instance id).
    #[arg(long, env = env::SEED)]
    pub seed: Option<u64>,
    /// Exit when this process is no longer the parent (set by the `local` provider, so no
    /// instance outlives its server).
    #[arg(long, env = env::PARENT_PID)]
    pub parent_pid: Option<u32>,
}

impl SimArgs {
    /// Arguments with the defaults of the flags, for embedding and tests.
    pub fn new(server_url: impl Into<String>, instance_id: impl Into<String>) -> Self {
        Self {
            server_url: server_url.into(),
            instance_id: instance_id.into(),
            instance_type: "JVB".into(),
            group: "default".into(),
            name: None,
            cloud: "local".into(),
            region: None,
            token: None,
            stats_interval: Duration::from_secs(30),
            poll_interval: Duration::from_secs(60),
            request_timeout: Duration::from_secs(3),
            report_stats: true,
            load: LoadProfile::Const(0.3),
            load_file: None,
            noise: 0.02,
            time_scale: 1.0,
            drain_duration: Duration::from_secs(30),
            reconfigure_duration: Duration::from_secs(2),
            jibri_session: Duration::from_secs(300),
            single_use: false,
            seed: None,
            parent_pid: None,
        }
    }
}

/// Why a simulated instance cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The arguments are invalid.
    #[error("invalid sim-instance settings: {0}")]
    Config(String),
}

/// Runs a simulated instance until its shutdown completes (after a `shutdown` command) or
/// `shutdown` is cancelled (SIGTERM/SIGINT in the binary). Transport errors are never fatal.
pub async fn run(args: SimArgs, shutdown: CancellationToken) -> Result<(), SimError> {
    let span = info_span!(
        "sim",
        instance_id = %args.instance_id,
        group = %args.group,
        instance_type = %args.instance_type,
    );
    let simulation = Simulation::new(args)?;
    simulation.run(shutdown).instrument(span).await
}

/// Smallest allowed stats and poll period.
const MIN_INTERVAL: Duration = Duration::from_millis(1);
/// How often the parent process is checked.
const PARENT_CHECK: Duration = Duration::from_secs(1);
/// Attempts of the shutdown confirmation.
const CONFIRM_ATTEMPTS: u32 = 3;
/// Longest simulated wait turned into a timer (a year): keeps `Instant` arithmetic safe.
const MAX_WAIT: Duration = Duration::from_secs(365 * 86_400);

type Call = Pin<Box<dyn Future<Output = Result<Command, CallError>> + Send>>;

/// The simulation's clock: real time since start × scale, in seconds.
#[derive(Clone, Copy, Debug)]
struct SimClock {
    start: Instant,
    scale: f64,
}

impl SimClock {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * self.scale
    }

    /// The real duration of `seconds` of simulated time.
    fn real(&self, seconds: f64) -> Duration {
        Duration::try_from_secs_f64((seconds / self.scale).max(0.0))
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT)
    }
}

#[derive(Debug)]
struct Simulation {
    client: AutoscalerClient,
    sidecar: Sidecar,
    component: Component,
    clock: SimClock,
    profile: LoadProfile,
    load_file: Option<PathBuf>,
    load_file_problem: Option<String>,
    stats_interval: Duration,
    poll_interval: Duration,
    report_stats: bool,
    drain: f64,
    reconfigure: f64,
    parent_pid: Option<u32>,
}

impl Simulation {
    fn new(args: SimArgs) -> Result<Self, SimError> {
        let fail = |msg: String| Err(SimError::Config(msg));
        let instance_id = args.instance_id.trim().to_owned();
        if instance_id.is_empty() {
            return fail("the instance id is empty".into());
        }
        if !(args.time_scale.is_finite() && args.time_scale > 0.0) {
            return fail(format!("time scale {} must be positive", args.time_scale));
        }
        if !(args.noise.is_finite() && args.noise >= 0.0) {
            return fail(format!("noise {} must be 0 or more", args.noise));
        }
        for (name, value) in [
            ("stats interval", args.stats_interval),
            ("poll interval", args.poll_interval),
            ("request timeout", args.request_timeout),
            ("Jibri session", args.jibri_session),
        ] {
            if value < MIN_INTERVAL {
                return fail(format!("{name} must be at least 1ms"));
            }
        }
        let client =
            AutoscalerClient::new(&args.server_url, args.token.as_ref(), args.request_timeout)
                .map_err(SimError::Config)?;
        let details = InstanceDetails {
            instance_id: instance_id.clone(),
            instance_type: args.instance_type.clone(),
            group: args.group,
            name: args.name,
            cloud: args.cloud,
            region: args.region,
            version: SIM_VERSION.to_owned(),
            private_ip: "127.0.0.1".to_owned(),
        };
        let component = Component::new(ComponentConfig {
            kind: Kind::of(&args.instance_type),
            noise: args.noise,
            seed: instance_seed(args.seed, &instance_id),
            jibri_session: args.jibri_session.as_secs_f64(),
            single_use: args.single_use,
        });
        Ok(Self {
            client,
            sidecar: Sidecar::new(details),
            component,
            clock: SimClock {
                start: Instant::now(),
                scale: args.time_scale,
            },
            profile: args.load,
            load_file: args.load_file,
            load_file_problem: None,
            stats_interval: args.stats_interval,
            poll_interval: args.poll_interval,
            report_stats: args.report_stats,
            drain: args.drain_duration.as_secs_f64(),
            reconfigure: args.reconfigure_duration.as_secs_f64(),
            parent_pid: args.parent_pid,
        })
    }

    async fn run(mut self, stop: CancellationToken) -> Result<(), SimError> {
        info!(
            kind = ?self.component.kind(),
            load = %self.profile,
            load_file = ?self.load_file,
            stats_interval_ms = self.stats_interval.as_millis() as u64,
            poll_interval_ms = self.poll_interval.as_millis() as u64,
            time_scale = self.clock.scale,
            "simulated instance started"
        );
        let mut next_stats = Instant::now();
        let mut next_poll = Instant::now();
        let mut call: Option<Call> = None;
        let mut reconfigured_at: Option<Instant> = None;
        let mut drained_at: Option<Instant> = None;
        let mut parent_check = tokio::time::interval(PARENT_CHECK);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    info!("stop requested, exiting");
                    return Ok(());
                }
                () = sleep_until_some(drained_at) => {
                    info!("drained, confirming the shutdown");
                    self.confirm_shutdown(&stop).await;
                    info!("simulated instance shut down");
                    return Ok(());
                }
                _ = parent_check.tick(), if self.parent_pid.is_some() => {
                    if self.parent_gone() {
                        warn!(parent_pid = ?self.parent_pid, "parent process gone, exiting");
                        return Ok(());
                    }
                }
                () = sleep_until(next_stats), if self.report_stats => {
                    self.build_report().await;
                    next_stats = Instant::now() + self.stats_interval;
                }
                () = sleep_until_some(reconfigured_at) => {
                    reconfigured_at = None;
                    if let Some(date) = self.sidecar.reconfigure_done() {
                        info!(date, "reconfiguration complete");
                    }
                }
                Some(result) = OptionFuture::from(call.as_mut()), if call.is_some() => {
                    call = None;
                    next_poll = Instant::now() + self.poll_interval;
                    let command = match result {
                        Ok(command) => {
                            debug!(?command, "command poll answered");
                            command
                        }
                        Err(error) => {
                            warn!(%error, "command poll failed, continuing as if no command");
                            Command::default()
                        }
                    };
                    match self.sidecar.on_command(&command) {
                        Action::Shutdown => drained_at = Some(self.begin_drain().await),
                        Action::Reconfigure(date) => {
                            info!(date, "reconfiguration requested");
                            reconfigured_at = Some(Instant::now() + self.clock.real(self.reconfigure));
                        }
                        Action::None => {}
                    }
                }
                () = sleep_until(next_poll), if call.is_none() => {
                    call = Some(self.poll_call());
                }
            }
        }
    }

    /// The next command poll: the cached report to `/sidecar/status`, or the instance details
    /// to `/sidecar/poll` when no report was built.
    fn poll_call(&self) -> Call {
        let client = self.client.clone();
        let (route, body) = match self.sidecar.report() {
            Some(report) if self.report_stats => ("status", report.body.clone()),
            _ => ("poll", self.details_body()),
        };
        Box::pin(async move { client.command(route, body).await })
    }

    fn details_body(&self) -> Bytes {
        serde_json::to_vec(self.sidecar.details())
            .map(Bytes::from)
            .unwrap_or_default()
    }

    async fn build_report(&mut self) {
        let t = self.clock.now();
        let load = self.load(t).await;
        let stats = self.component.sample(t, load);
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let report = self.sidecar.build_report(&stats, now_ms);
        debug!(
            timestamp = report.timestamp,
            sim_seconds = t,
            load,
            "stats report built"
        );
    }

    /// The current load: the load file's number when it has one, else the profile's value.
    async fn load(&mut self, t: f64) -> f64 {
        if let Some(path) = &self.load_file {
            let read = tokio::fs::read_to_string(path).await;
            let parsed = match read {
                Ok(text) => text
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| format!("does not hold a non-negative number: {text:.40?}")),
                Err(e) => Err(e.to_string()),
            };
            match parsed {
                Ok(load) => {
                    if self.load_file_problem.take().is_some() {
                        info!(path = %path.display(), load, "load file readable again");
                    }
                    return load;
                }
                Err(problem) => {
                    if self.load_file_problem.as_ref() != Some(&problem) {
                        warn!(path = %path.display(), %problem, "load file unusable, following the profile");
                        self.load_file_problem = Some(problem);
                    }
                }
            }
        }
        self.profile.value_at(t)
    }

    /// Starts the drain; the instant it completes.
    async fn begin_drain(&mut self) -> Instant {
        let t = self.clock.now();
        let load = self.load(t).await;
        let end = self.component.begin_drain(t, load, self.drain);
        let wait = self.clock.real(end - t);
        info!(
            drain_ms = wait.as_millis() as u64,
            "shutdown requested, draining"
        );
        Instant::now() + wait
    }

    /// `POST /sidecar/shutdown` once; retried with back-off only when it fails.
    async fn confirm_shutdown(&self, stop: &CancellationToken) {
        let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(4));
        let body = self.details_body();
        for attempt in 0..CONFIRM_ATTEMPTS {
            let result = tokio::select! {
                () = stop.cancelled() => return,
                r = self.client.confirm_shutdown(body.clone()) => r,
            };
            match result {
                Ok(()) => {
                    info!("shutdown confirmed to the autoscaler");
                    return;
                }
                Err(error) if attempt + 1 < CONFIRM_ATTEMPTS => {
                    warn!(%error, attempt, "shutdown confirmation failed, retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff.delay(attempt)) => {}
                    }
                }
                Err(error) => warn!(%error, "shutdown confirmation failed, giving up"),
            }
        }
    }

    fn parent_gone(&self) -> bool {
        let parent = nix::unistd::getppid().as_raw();
        self.parent_pid
            .is_some_and(|expected| i64::from(parent) != i64::from(expected))
    }
}

/// Sleeps until the instant, or forever when there is none.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The per-instance seed: the given seed (or 0) mixed with a hash of the instance id, so a
/// fleet sharing a seed still varies, reproducibly.
fn instance_seed(seed: Option<u64>, instance_id: &str) -> u64 {
    let digest = Sha256::digest(instance_id.as_bytes());
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest[..8]);
    component::mix(seed.unwrap_or(0), u64::from_le_bytes(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn flags_parse_with_reference_defaults() {
        let cli = Cli::try_parse_from([
            "sim",
            "--server-url",
            "http://127.0.0.1:1",
            "--instance-id",
            "i-1",
        ])
        .expect("parse");
        let args = cli.sim;
        assert_eq!(args.stats_interval, Duration::from_secs(30));
        assert_eq!(args.poll_interval, Duration::from_secs(60));
        assert_eq!(args.request_timeout, Duration::from_secs(3));
        assert_eq!(args.instance_type, "JVB");
        assert!(args.report_stats);
        assert_eq!(args.load, LoadProfile::Const(0.3));
        let defaults = SimArgs::new("http://127.0.0.1:1", "i-1");
        assert_eq!(format!("{args:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn flags_accept_sub_second_intervals_and_profiles() {
        let cli = Cli::try_parse_from([
            "sim",
            "--server-url=http://127.0.0.1:1",
            "--instance-id=i-1",
            "--instance-type=jibri",
            "--stats-interval=20ms",
            "--poll-interval=0.01",
            "--load=ramp:0:1:60",
            "--report-stats=false",
            "--token=secret-token",
        ])
        .expect("parse");
        assert_eq!(cli.sim.stats_interval, Duration::from_millis(20));
        assert_eq!(cli.sim.poll_interval, Duration::from_millis(10));
        assert!(!cli.sim.report_stats);
        assert!(matches!(cli.sim.load, LoadProfile::Ramp { .. }));
        let debug = format!("{:?}", cli.sim);
        assert!(!debug.contains("secret-token"), "{debug}");
        let bad =
            Cli::try_parse_from(["sim", "--server-url=x", "--instance-id=i", "--load=ramp:1"]);
        let err = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("invalid load profile"), "{err}");
    }

    #[test]
    fn invalid_settings_are_reported() {
        let base = || SimArgs::new("http://127.0.0.1:1", "i-1");
        let cases: Vec<(SimArgs, &str)> = vec![
            (
                SimArgs {
                    time_scale: 0.0,
                    ..base()
                },
                "time scale",
            ),
            (
                SimArgs {
                    noise: -1.0,
                    ..base()
                },
                "noise",
            ),
            (
                SimArgs {
                    poll_interval: Duration::ZERO,
                    ..base()
                },
                "poll interval",
            ),
            (SimArgs::new("not a url", "i-1"), "server URL"),
            (SimArgs::new("ftp://host/", "i-1"), "http(s)"),
            (SimArgs::new("http://127.0.0.1:1", "  "), "instance id"),
            (
                SimArgs {
                    token: Some(Token::new("bad\ntoken")),
                    ..base()
                },
                "token",
            ),
        ];
        for (args, expected) in cases {
            let err = Simulation::new(args).expect_err(expected).to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn seeds_differ_per_instance_and_repeat() {
        assert_eq!(instance_seed(Some(1), "a"), instance_seed(Some(1), "a"));
        assert_ne!(instance_seed(Some(1), "a"), instance_seed(Some(1), "b"));
        assert_ne!(instance_seed(Some(1), "a"), instance_seed(Some(2), "a"));
    }

    #[test]
    fn the_clock_scales_simulated_time() {
        let clock = SimClock {
            start: Instant::now(),
            scale: 10.0,
        };
        assert_eq!(clock.real(30.0), Duration::from_secs(3));
        assert_eq!(clock.real(-1.0), Duration::ZERO);
        let slow = SimClock {
            start: Instant::now(),
            scale: 1e-300,
        };
        assert_eq!(slow.real(1.0), MAX_WAIT);
    }
}
