//! The script provider (`cloud: "custom"`): the reference's launch script, plus optional list and
//! terminate scripts.
//!
//! The launch script is run once per instance, without a shell, with the reference's four
//! arguments `"--type <type>" "--name <displayName>" "--groupName <group>" "--region <region>"`
//! (each flag and value one token) or, with `CUSTOM_SCRIPT_ARGS_STYLE=split`, the same eight
//! tokens separately. The last line of its trimmed stdout is the instance id; an empty line or
//! one containing whitespace or control characters is a failure. The environment is inherited,
//! plus `JITSI_SCALER_IDEMPOTENCY_KEY` and `JITSI_SCALER_LAUNCH_INTENT` for scripts that can
//! use them.
//!
//! Exit status: 0 is success; 69 (`EX_UNAVAILABLE`) means no capacity, 75 (`EX_TEMPFAIL`)
//! throttled, 78 (`EX_CONFIG`) a configuration error; any other failure, a signal or the
//! timeout is transient. A timed-out script is killed with its whole process group.
//!
//! The list script (`--groupName <g> --region <r>`) prints a JSON array of
//! `{"instanceId","displayName","cloudStatus","createdAt"?}` (`createdAt`: RFC 3339 or epoch
//! milliseconds). The terminate script (`--instanceId <id> --groupName <g> --region <r>`) exits
//! 0 when the instance is terminated or already gone. Both are retried with back-off on
//! transient failures; without them `list` returns nothing and `terminate` is unsupported.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jitsi_scaler_core::backoff::Backoff;
use jitsi_scaler_core::group::{FieldError, Group, OrphanMode, TerminationPolicy};
use jitsi_scaler_core::instance::CloudInstance;
use jitsi_scaler_core::provider::{
    Capabilities, CloudProvider, LaunchOutcome, LaunchRequest, LaunchedInstance, ProviderError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::process::{self, Finished, RunError, for_log};
use crate::env::{ConfigError, Env, duration_ms};
use crate::outcome::keep_worse;
use crate::retry::{Attempt, RetryPolicy};

/// The provider name groups use.
pub const PROVIDER_NAME: &str = "custom";
/// The reference's default launch script.
pub const DEFAULT_LAUNCH_SCRIPT: &str = "./scripts/custom-launch.sh";
/// Exit status: no capacity.
pub const EXIT_CAPACITY: i32 = 69;
/// Exit status: throttled, try later.
pub const EXIT_THROTTLED: i32 = 75;
/// Exit status: misconfigured.
pub const EXIT_CONFIG: i32 = 78;

/// How flags and values are passed to the scripts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ArgsStyle {
    /// The reference's: each flag and its value in one argument, `"--name g-abc12"`.
    #[default]
    #[serde(alias = "reference")]
    Joined,
    /// Flag and value as separate arguments, `"--name" "g-abc12"`.
    Split,
}

impl ArgsStyle {
    /// The arguments for `(flag, value)` pairs.
    pub fn args(self, pairs: &[(&str, &str)]) -> Vec<String> {
        match self {
            ArgsStyle::Joined => pairs.iter().map(|(f, v)| format!("{f} {v}")).collect(),
            ArgsStyle::Split => pairs
                .iter()
                .flat_map(|(f, v)| [(*f).to_owned(), (*v).to_owned()])
                .collect(),
        }
    }
}

/// Settings of the script provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ScriptConfig {
    /// `CUSTOM_CONFIGURATION_LAUNCH_SCRIPT_FILE_PATH` (default `./scripts/custom-launch.sh`).
    pub launch_script: PathBuf,
    /// `CUSTOM_CONFIGURATION_LAUNCH_SCRIPT_TIMEOUT_MS` (default 60 000); also the timeout of the
    /// list and terminate scripts.
    #[serde(rename = "timeoutMs", with = "duration_ms")]
    pub timeout: Duration,
    /// `CUSTOM_SCRIPT_ARGS_STYLE`: `joined` (the reference's, default) or `split`.
    pub args_style: ArgsStyle,
    /// `CUSTOM_LIST_SCRIPT_FILE_PATH`.
    pub list_script: Option<PathBuf>,
    /// `CUSTOM_TERMINATE_SCRIPT_FILE_PATH`.
    pub terminate_script: Option<PathBuf>,
    /// `CUSTOM_SCRIPT_MAX_CONCURRENCY`: scripts running at once (default 8).
    pub max_concurrency: usize,
    /// Total time for retries of a list or terminate script (default 60 s).
    #[serde(rename = "retryBudgetMs", with = "duration_ms")]
    pub retry_budget: Duration,
    /// Bound of the first retry delay (default 500 ms).
    #[serde(rename = "retryBaseDelayMs", with = "duration_ms")]
    pub retry_base_delay: Duration,
    /// Longest retry delay (default 30 s).
    #[serde(rename = "retryMaxDelayMs", with = "duration_ms")]
    pub retry_max_delay: Duration,
}

impl Default for ScriptConfig {
    fn default() -> Self {
        Self {
            launch_script: PathBuf::from(DEFAULT_LAUNCH_SCRIPT),
            timeout: Duration::from_millis(60_000),
            args_style: ArgsStyle::Joined,
            list_script: None,
            terminate_script: None,
            max_concurrency: 8,
            retry_budget: Duration::from_secs(60),
            retry_base_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(30),
        }
    }
}

impl ScriptConfig {
    /// Reads the `CUSTOM_*` variables (see the fields) and `REPORT_EXT_CALL_MAX_TIME_IN_SECONDS`
    /// / `REPORT_EXT_CALL_MAX_DELAY_IN_SECONDS` for the retries.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(crate::env::process_env)
    }

    /// [`from_env`](Self::from_env) with variables read through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        let mut config = Self::default();
        if let Some(path) = env.path("CUSTOM_CONFIGURATION_LAUNCH_SCRIPT_FILE_PATH") {
            config.launch_script = path;
        }
        if let Some(timeout) = env.millis("CUSTOM_CONFIGURATION_LAUNCH_SCRIPT_TIMEOUT_MS")? {
            if timeout.is_zero() {
                return Err(ConfigError::invalid(
                    "CUSTOM_CONFIGURATION_LAUNCH_SCRIPT_TIMEOUT_MS",
                    "must be more than 0",
                ));
            }
            config.timeout = timeout;
        }
        if let Some(style) = env.get("CUSTOM_SCRIPT_ARGS_STYLE") {
            config.args_style = match style.to_ascii_lowercase().as_str() {
                "joined" | "reference" => ArgsStyle::Joined,
                "split" => ArgsStyle::Split,
                other => {
                    return Err(ConfigError::invalid(
                        "CUSTOM_SCRIPT_ARGS_STYLE",
                        format!("{other:?} is neither \"joined\" nor \"split\""),
                    ));
                }
            };
        }
        config.list_script = env.path("CUSTOM_LIST_SCRIPT_FILE_PATH");
        config.terminate_script = env.path("CUSTOM_TERMINATE_SCRIPT_FILE_PATH");
        if let Some(n) = env.parse::<usize>("CUSTOM_SCRIPT_MAX_CONCURRENCY")? {
            if n == 0 {
                return Err(ConfigError::invalid(
                    "CUSTOM_SCRIPT_MAX_CONCURRENCY",
                    "must be at least 1",
                ));
            }
            config.max_concurrency = n;
        }
        if let Some(d) = env.seconds("REPORT_EXT_CALL_MAX_TIME_IN_SECONDS")? {
            config.retry_budget = d;
        }
        if let Some(d) = env.seconds("REPORT_EXT_CALL_MAX_DELAY_IN_SECONDS")? {
            config.retry_max_delay = d;
        }
        Ok(config)
    }
}

/// One entry of the list script's output.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedInstance {
    instance_id: String,
    #[serde(default)]
    display_name: String,
    cloud_status: String,
    #[serde(default)]
    created_at: Option<Value>,
}

/// Launches, lists and terminates instances through external scripts.
#[derive(Debug)]
pub struct ScriptProvider {
    config: ScriptConfig,
    permits: Arc<Semaphore>,
}

impl ScriptProvider {
    /// A provider for the configured scripts. Missing scripts are reported at their first run
    /// (as configuration errors), as in the reference.
    pub fn new(config: ScriptConfig) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_concurrency.max(1)));
        Self { config, permits }
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            budget: self.config.retry_budget,
            backoff: Backoff::new(self.config.retry_base_delay, self.config.retry_max_delay),
        }
    }

    /// Runs a script under the concurrency cap; logs its output; maps failures to classes.
    async fn run(
        &self,
        what: &str,
        script: &Path,
        args: &[String],
        envs: &[(&str, &str)],
    ) -> Result<Finished, ProviderError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ProviderError::Fatal("the script provider is shut down".into()))?;
        let result = process::run(script, args, envs, self.config.timeout).await;
        let finished = match result {
            Ok(f) => f,
            Err(RunError::Spawn { program, source }) => {
                return Err(ProviderError::Config(format!(
                    "{what} script {program} cannot be started: {source}"
                )));
            }
            Err(e @ RunError::Timeout(_)) => {
                tracing::warn!(provider = PROVIDER_NAME, script = %script.display(), what, error = %e, "script timed out");
                return Err(ProviderError::Transient(format!("{what} script {e}")));
            }
            Err(e) => return Err(ProviderError::Transient(format!("{what} script: {e}"))),
        };
        let code = finished.status.code();
        tracing::info!(provider = PROVIDER_NAME, script = %script.display(), what, ?code,
            stdout = %for_log(&finished.stdout), stderr = %for_log(&finished.stderr),
            truncated = finished.truncated, "script finished");
        if finished.status.success() {
            if finished.truncated {
                return Err(ProviderError::Fatal(format!(
                    "{what} script printed more than {} bytes",
                    process::MAX_OUTPUT
                )));
            }
            return Ok(finished);
        }
        let detail = format!(
            "{what} script exited with {}: {}",
            code.map_or_else(|| "a signal".to_owned(), |c| format!("status {c}")),
            for_log(&finished.stderr)
        );
        Err(match code {
            Some(EXIT_CAPACITY) => ProviderError::Capacity(detail),
            Some(EXIT_THROTTLED) => ProviderError::Throttled {
                retry_after: None,
                message: detail,
            },
            Some(EXIT_CONFIG) => ProviderError::Config(detail),
            _ => ProviderError::Transient(detail),
        })
    }

    /// Runs an idempotent script (list, terminate) with retries on transient failures.
    async fn run_retried(
        &self,
        what: &str,
        script: &Path,
        args: &[String],
    ) -> Result<Finished, ProviderError> {
        self.retry_policy()
            .run(what, |_| async {
                match self.run(what, script, args, &[]).await {
                    Ok(f) => Attempt::Done(Ok(f)),
                    Err(e @ (ProviderError::Transient(_) | ProviderError::Throttled { .. })) => {
                        Attempt::Retry {
                            error: e,
                            after: None,
                        }
                    }
                    Err(e) => Attempt::Done(Err(e)),
                }
            })
            .await
    }

    async fn launch_one(
        &self,
        group: &Group,
        request: &LaunchRequest,
        slot: usize,
    ) -> Result<String, ProviderError> {
        let name = request.slots[slot].display_name.as_str();
        let args = self.config.args_style.args(&[
            ("--type", &group.type_name),
            ("--name", name),
            ("--groupName", &group.name),
            ("--region", &group.region),
        ]);
        let envs = [
            (
                "JITSI_SCALER_IDEMPOTENCY_KEY",
                request.slots[slot].idempotency_key.as_str(),
            ),
            ("JITSI_SCALER_LAUNCH_INTENT", request.intent_id.as_str()),
        ];
        let finished = self
            .run("launch", &self.config.launch_script, &args, &envs)
            .await?;
        instance_id(&finished.stdout).map_err(|reason| {
            ProviderError::Fatal(format!("launch script output for {name}: {reason}"))
        })
    }
}

/// The instance id: the last line of the trimmed output.
fn instance_id(stdout: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(stdout).map_err(|_| "not UTF-8".to_owned())?;
    let last = text.trim().lines().last().unwrap_or_default();
    if last.is_empty() {
        return Err("empty; the last line must be the instance id".into());
    }
    if last.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the last line {:?} contains whitespace or control characters",
            last.chars().take(200).collect::<String>()
        ));
    }
    Ok(last.to_owned())
}

fn created_at_ms(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s
            .parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_millisecond()),
        _ => None,
    }
}

#[async_trait]
impl CloudProvider for ScriptProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list: self.config.list_script.is_some(),
            terminate: self.config.terminate_script.is_some(),
            load_feedback: false,
        }
    }

    fn validate_group(&self, group: &Group) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.config.terminate_script.is_none() {
            if group.termination_policy() != TerminationPolicy::Sidecar {
                errors.push(FieldError::body(
                    "terminationPolicy",
                    "This termination policy needs CUSTOM_TERMINATE_SCRIPT_FILE_PATH; use sidecar",
                    None,
                ));
            }
            if group
                .orphan_policy
                .is_some_and(|p| p.mode == OrphanMode::Terminate)
            {
                errors.push(FieldError::body(
                    "orphanPolicy.mode",
                    "Terminating orphans needs CUSTOM_TERMINATE_SCRIPT_FILE_PATH",
                    None,
                ));
            }
        }
        if self.config.list_script.is_none()
            && group
                .orphan_policy
                .is_some_and(|p| p.mode != OrphanMode::Off)
        {
            errors.push(FieldError::body(
                "orphanPolicy.mode",
                "Finding orphans needs CUSTOM_LIST_SCRIPT_FILE_PATH",
                None,
            ));
        }
        errors
    }

    async fn launch(&self, group: &Group, request: &LaunchRequest) -> LaunchOutcome {
        let runs = (0..request.slots.len())
            .map(|slot| async move { (slot, self.launch_one(group, request, slot).await) });
        let mut outcome = LaunchOutcome::default();
        for (slot, result) in futures::future::join_all(runs).await {
            match result {
                Ok(instance_id) => outcome.launched.push(LaunchedInstance {
                    slot,
                    instance_id,
                    display_name: request.slots[slot].display_name.clone(),
                }),
                Err(error) => outcome.error = keep_worse(outcome.error.take(), error),
            }
        }
        tracing::info!(provider = PROVIDER_NAME, group = %group.name, requested = request.slots.len(),
            launched = outcome.launched.len(), error = outcome.error.as_ref().map(|e| e.to_string()),
            "launch done");
        outcome
    }

    async fn list(&self, group: &Group) -> Result<Vec<CloudInstance>, ProviderError> {
        let Some(script) = &self.config.list_script else {
            return Ok(Vec::new());
        };
        let args = self
            .config
            .args_style
            .args(&[("--groupName", &group.name), ("--region", &group.region)]);
        let finished = self.run_retried("list", script, &args).await?;
        let listed: Vec<ListedInstance> = serde_json::from_slice(&finished.stdout).map_err(|e| {
            ProviderError::Fatal(format!(
                "list script output is not a JSON array of instances: {e}; output starts with {:?}",
                crate::http::snippet(&finished.stdout)
            ))
        })?;
        Ok(listed
            .into_iter()
            .map(|i| CloudInstance {
                created_at_ms: created_at_ms(i.created_at.as_ref()),
                instance_id: i.instance_id,
                display_name: i.display_name,
                cloud_status: i.cloud_status.into(),
            })
            .collect())
    }

    async fn terminate(&self, group: &Group, instance_id: &str) -> Result<(), ProviderError> {
        let Some(script) = &self.config.terminate_script else {
            return Err(ProviderError::Unsupported(
                "the custom provider has no terminate script (CUSTOM_TERMINATE_SCRIPT_FILE_PATH)"
                    .into(),
            ));
        };
        let args = self.config.args_style.args(&[
            ("--instanceId", instance_id),
            ("--groupName", &group.name),
            ("--region", &group.region),
        ]);
        self.run_retried("terminate", script, &args).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_the_last_line_of_the_trimmed_output() {
        assert_eq!(
            instance_id(b"booting\n1700000000\n\n"),
            Ok("1700000000".into())
        );
        assert_eq!(instance_id(b"  i-abc  "), Ok("i-abc".into()));
        assert_eq!(instance_id(b"a\r\nb\r\n"), Ok("b".into()));
        assert!(instance_id(b"").is_err());
        assert!(instance_id(b" \n \n").is_err());
        assert!(instance_id(b"created\nid with space").is_err());
        assert!(instance_id(b"\x1b[31mred").is_err());
        assert!(instance_id(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn argument_styles() {
        let pairs = [("--type", "jibri"), ("--name", "g-abc12")];
        assert_eq!(
            ArgsStyle::Joined.args(&pairs),
            ["--type jibri", "--name g-abc12"]
        );
        assert_eq!(
            ArgsStyle::Split.args(&pairs),
            ["--type", "jibri", "--name", "g-abc12"]
        );
    }

    #[test]
    fn environment_names_follow_the_reference_and_the_spec() {
        let config = ScriptConfig::from_lookup(|name| match name {
            "CUSTOM_CONFIGURATION_LAUNCH_SCRIPT_FILE_PATH" => Some("/opt/launch.sh".into()),
            "CUSTOM_CONFIGURATION_LAUNCH_SCRIPT_TIMEOUT_MS" => Some("1500".into()),
            "CUSTOM_SCRIPT_ARGS_STYLE" => Some("split".into()),
            "CUSTOM_LIST_SCRIPT_FILE_PATH" => Some("/opt/list.sh".into()),
            _ => None,
        })
        .expect("config");
        assert_eq!(config.launch_script, PathBuf::from("/opt/launch.sh"));
        assert_eq!(config.timeout, Duration::from_millis(1500));
        assert_eq!(config.args_style, ArgsStyle::Split);
        assert_eq!(config.list_script, Some(PathBuf::from("/opt/list.sh")));
        assert_eq!(config.terminate_script, None);
        let provider = ScriptProvider::new(config);
        assert_eq!(
            provider.capabilities(),
            Capabilities {
                list: true,
                terminate: false,
                load_feedback: false
            }
        );
        let defaults = ScriptConfig::from_lookup(|_| None).expect("defaults");
        assert_eq!(defaults.launch_script, PathBuf::from(DEFAULT_LAUNCH_SCRIPT));
        assert_eq!(defaults.timeout, Duration::from_secs(60));
        assert_eq!(defaults.max_concurrency, 8);
        let err = ScriptConfig::from_lookup(|name| {
            (name == "CUSTOM_SCRIPT_ARGS_STYLE").then(|| "weird".to_owned())
        })
        .expect_err("bad style");
        assert_eq!(err.variable(), "CUSTOM_SCRIPT_ARGS_STYLE");
    }

    #[test]
    fn created_at_accepts_rfc3339_and_millis() {
        assert_eq!(
            created_at_ms(Some(&Value::from("2024-01-01T00:00:00Z"))),
            Some(1_704_067_200_000)
        );
        assert_eq!(created_at_ms(Some(&Value::from(5))), Some(5));
        assert_eq!(created_at_ms(Some(&Value::from("yesterday"))), None);
    }
}
