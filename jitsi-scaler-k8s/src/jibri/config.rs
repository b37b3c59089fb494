//! Configuration of the Jibri controller, read from the environment and checked at start-up.
//!
//! The reference's variables (all required, as in the reference): `PORT`,
//! `JIBRI_HEALTH_PORT`, `JIBRI_BUSY_LABELS`, `SWEEP_INTERVAL`, `POD_NAME`, `NAMESPACE`.
//!
//! Optional variables:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `JIBRI_NAMESPACE` | `NAMESPACE` | namespace of the Jibri pods |
//! | `JIBRI_POD_SELECTOR` | empty | label selector a pod must match before any webhook action |
//! | `LEASE_DURATION_SECONDS` | 15 | `leaseDurationSeconds` of the Lease |
//! | `LEASE_RENEW_SECONDS` | 5 | renew period of the Lease |
//! | `HEALTH_TIMEOUT_MS` | 2000 | timeout of one Jibri health check |
//! | `SWEEP_CONCURRENCY` | 8 | health checks run at once |
//! | `SWEEP_UNREACHABLE_CYCLES` | 3 | failed health checks in a row before an unreachable pod may be deleted |
//! | `MAX_BUSY_SECONDS` | 0 = off | delete detached pods busy for longer |
//! | `IDLE_DETACHED_GRACE_SECONDS` | 600 | delete detached pods idle for longer |
//! | `WEBHOOK_AUTH` | `none` | `none`, `jwt` (Jibri's `jwt-info`) or `token` (shared bearer token) |
//! | `WEBHOOK_JWT_PUBLIC_KEY_FILE` / `ASAP_PUB_KEY_BASE_URL` | | RSA public key (PEM), or the base URL of keys fetched by `sha256(kid)` |
//! | `ASAP_PUB_KEY_TTL` | 3600 | cache time of fetched keys, seconds |
//! | `WEBHOOK_JWT_ISS` | | accepted issuers (comma-separated), required with `jwt` |
//! | `WEBHOOK_JWT_AUD` | | expected audience, required with `jwt` |
//! | `WEBHOOK_JWT_IGNORE_EXPIRY` | true | accept expired tokens (Jibri never refreshes its token) |
//! | `WEBHOOK_TOKEN` / `WEBHOOK_TOKEN_FILE` | | the shared token, required with `token` |
//! | `WEBHOOK_REQUIRE_SOURCE_IP` | false | a webhook must come from the pod's own IP |
//! | `WEBHOOK_CHECK_JIBRI_ID` | true | refuse a non-empty `jibriId` other than the pod name |
//! | `JIBRI_SINGLE_USE` | true | a detached Jibri reporting `IDLE` again has served its session: delete it |
//! | `JIBRI_BUSY_DELETION_COST` | 10000 | `pod-deletion-cost` set on busy pods; empty or `off` disables |
//! | `JIBRI_EMIT_EVENTS` | true | emit a Kubernetes Event for every deletion |

use std::fmt;
use std::time::Duration;

use crate::labels::{LabelSelector, Labels, parse_label_set};
use crate::lease::{JIBRI_LEASE_NAME, LeaseConfig};
use crate::names::{is_dns1123_label, is_dns1123_subdomain};

/// A variable that is missing or invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    /// The environment variable.
    pub var: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about `var`.
    pub fn new(var: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            message: message.into(),
        }
    }
}

/// A secret string that never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where the public keys of Jibri's tokens come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtKeySource {
    /// One RSA public key (PEM, `BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`) for every `kid`.
    Pem(String),
    /// `<base>/<sha256_hex(kid)>.pem`, fetched and cached per `kid`.
    AsapBaseUrl(String),
}

/// Verification of Jibri's `jwt-info` tokens (RS256).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtConfig {
    /// Public keys.
    pub keys: JwtKeySource,
    /// Accepted `iss` values.
    pub issuers: Vec<String>,
    /// Expected `aud`.
    pub audience: String,
    /// Accept expired tokens (current Jibri signs its token once at start-up).
    pub ignore_expiry: bool,
    /// Cache time of fetched keys.
    pub key_ttl: Duration,
}

/// How webhook callers authenticate.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum WebhookAuthConfig {
    /// No authentication (the reference's behaviour).
    #[default]
    None,
    /// `Authorization: Bearer <jwt>` signed by Jibri's `jwt-info` key.
    Jwt(JwtConfig),
    /// `Authorization: Bearer <token>` with a shared token.
    Token(Secret),
}

/// Everything the Jibri controller and its HTTP front need; see the module documentation
/// for the variables.
#[derive(Clone, Debug, PartialEq)]
pub struct JibriControllerConfig {
    /// HTTP port of the controller (`PORT`).
    pub port: u16,
    /// Jibri's external API port (`JIBRI_HEALTH_PORT`).
    pub jibri_health_port: u16,
    /// Labels applied on BUSY, and the sweeper's selector (`JIBRI_BUSY_LABELS`).
    pub busy_labels: Labels,
    /// Sweep period (`SWEEP_INTERVAL`, seconds).
    pub sweep_interval: Duration,
    /// This pod's name: the lease holder identity (`POD_NAME`).
    pub pod_name: String,
    /// Namespace of the Lease (`NAMESPACE`).
    pub namespace: String,
    /// Namespace of the Jibri pods (`JIBRI_NAMESPACE`, default `NAMESPACE`).
    pub jibri_namespace: String,
    /// Selector a pod must match before any webhook action (`JIBRI_POD_SELECTOR`).
    pub pod_selector: LabelSelector,
    /// `leaseDurationSeconds` (`LEASE_DURATION_SECONDS`).
    pub lease_duration: Duration,
    /// Lease renew period (`LEASE_RENEW_SECONDS`).
    pub lease_renew: Duration,
    /// Timeout of one Jibri health check (`HEALTH_TIMEOUT_MS`).
    pub health_timeout: Duration,
    /// Health checks at once (`SWEEP_CONCURRENCY`).
    pub sweep_concurrency: usize,
    /// Failed health checks in a row before an unreachable pod may go (`SWEEP_UNREACHABLE_CYCLES`).
    pub sweep_unreachable_cycles: u32,
    /// Longest time a detached pod may stay busy (`MAX_BUSY_SECONDS`; `None` = no limit).
    pub max_busy: Option<Duration>,
    /// Longest time a detached pod may stay idle (`IDLE_DETACHED_GRACE_SECONDS`).
    pub idle_detached_grace: Duration,
    /// Silence of a pod's webhooks before the unreachable rule may delete it (3 min).
    pub webhook_silence: Duration,
    /// Webhook authentication (`WEBHOOK_AUTH` and friends).
    pub webhook_auth: WebhookAuthConfig,
    /// A webhook must come from the pod's IP (`WEBHOOK_REQUIRE_SOURCE_IP`).
    pub require_source_ip: bool,
    /// Refuse a non-empty `jibriId` other than the pod name (`WEBHOOK_CHECK_JIBRI_ID`).
    pub check_jibri_id: bool,
    /// Single-use Jibris: a detached one reporting IDLE is deleted (`JIBRI_SINGLE_USE`).
    pub single_use: bool,
    /// `pod-deletion-cost` of busy pods (`JIBRI_BUSY_DELETION_COST`; `None` = not set).
    pub busy_deletion_cost: Option<i32>,
    /// Emit Kubernetes Events for deletions (`JIBRI_EMIT_EVENTS`).
    pub emit_events: bool,
    /// Timeout of one Kubernetes call made while answering a webhook (Jibri waits 2 s).
    pub webhook_api_timeout: Duration,
    /// Timeout of one Kubernetes call made by the sweeper.
    pub sweep_api_timeout: Duration,
    /// Pods per page when the sweeper lists.
    pub list_page_size: u32,
}

impl JibriControllerConfig {
    /// A configuration with the required values and every default.
    pub fn new(
        busy_labels: Labels,
        jibri_health_port: u16,
        pod_name: impl Into<String>,
        namespace: impl Into<String>,
    ) -> Self {
        let namespace = namespace.into();
        Self {
            port: 8080,
            jibri_health_port,
            busy_labels,
            sweep_interval: Duration::from_secs(300),
            pod_name: pod_name.into(),
            jibri_namespace: namespace.clone(),
            namespace,
            pod_selector: LabelSelector::default(),
            lease_duration: Duration::from_secs(15),
            lease_renew: Duration::from_secs(5),
            health_timeout: Duration::from_millis(2000),
            sweep_concurrency: 8,
            sweep_unreachable_cycles: 3,
            max_busy: None,
            idle_detached_grace: Duration::from_secs(600),
            webhook_silence: Duration::from_secs(180),
            webhook_auth: WebhookAuthConfig::None,
            require_source_ip: false,
            check_jibri_id: true,
            single_use: true,
            busy_deletion_cost: Some(10_000),
            emit_events: true,
            webhook_api_timeout: Duration::from_millis(900),
            sweep_api_timeout: Duration::from_secs(10),
            list_page_size: 100,
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let busy_labels = parse_label_set(&env.required("JIBRI_BUSY_LABELS")?)
            .map_err(|m| ConfigError::new("JIBRI_BUSY_LABELS", m))?;
        let jibri_health_port: u16 = env.required_parsed("JIBRI_HEALTH_PORT")?;
        if jibri_health_port == 0 {
            return Err(ConfigError::new("JIBRI_HEALTH_PORT", "must not be 0"));
        }
        let pod_name = env.required("POD_NAME")?;
        if pod_name.is_empty() {
            return Err(ConfigError::new("POD_NAME", "must not be empty"));
        }
        let namespace = env.required("NAMESPACE")?;
        let mut c = Self::new(busy_labels, jibri_health_port, pod_name, namespace);
        c.port = env.required_parsed("PORT")?;
        c.sweep_interval = Duration::from_secs(env.required_parsed::<u64>("SWEEP_INTERVAL")?);
        if let Some(ns) = env.optional("JIBRI_NAMESPACE") {
            c.jibri_namespace = ns;
        }
        if let Some(sel) = env.optional("JIBRI_POD_SELECTOR") {
            c.pod_selector = LabelSelector::parse(&sel)
                .map_err(|m| ConfigError::new("JIBRI_POD_SELECTOR", m))?;
        }
        if let Some(s) = env.parsed::<u64>("LEASE_DURATION_SECONDS")? {
            c.lease_duration = Duration::from_secs(s);
        }
        if let Some(s) = env.parsed::<u64>("LEASE_RENEW_SECONDS")? {
            c.lease_renew = Duration::from_secs(s);
        }
        if let Some(ms) = env.parsed::<u64>("HEALTH_TIMEOUT_MS")? {
            c.health_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = env.parsed("SWEEP_CONCURRENCY")? {
            c.sweep_concurrency = n;
        }
        if let Some(n) = env.parsed("SWEEP_UNREACHABLE_CYCLES")? {
            c.sweep_unreachable_cycles = n;
        }
        if let Some(s) = env.parsed::<u64>("MAX_BUSY_SECONDS")? {
            c.max_busy = (s > 0).then(|| Duration::from_secs(s));
        }
        if let Some(s) = env.parsed::<u64>("IDLE_DETACHED_GRACE_SECONDS")? {
            c.idle_detached_grace = Duration::from_secs(s);
        }
        c.webhook_auth = webhook_auth(&env)?;
        if let Some(b) = env.flag("WEBHOOK_REQUIRE_SOURCE_IP")? {
            c.require_source_ip = b;
        }
        if let Some(b) = env.flag("WEBHOOK_CHECK_JIBRI_ID")? {
            c.check_jibri_id = b;
        }
        if let Some(b) = env.flag("JIBRI_SINGLE_USE")? {
            c.single_use = b;
        }
        if let Some(b) = env.flag("JIBRI_EMIT_EVENTS")? {
            c.emit_events = b;
        }
        if let Some(raw) = lookup("JIBRI_BUSY_DELETION_COST") {
            let raw = raw.trim();
            c.busy_deletion_cost = if raw.is_empty() || raw.eq_ignore_ascii_case("off") {
                None
            } else {
                Some(raw.parse().map_err(|_| {
                    ConfigError::new(
                        "JIBRI_BUSY_DELETION_COST",
                        format!("{raw:?} is not a 32-bit integer, empty or `off`"),
                    )
                })?)
            };
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks values that do not come from a parser (also for configurations built in code).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_dns1123_label(&self.namespace) {
            return Err(ConfigError::new("NAMESPACE", "must be a DNS-1123 label"));
        }
        if !is_dns1123_label(&self.jibri_namespace) {
            return Err(ConfigError::new(
                "JIBRI_NAMESPACE",
                "must be a DNS-1123 label",
            ));
        }
        if !is_dns1123_subdomain(&self.pod_name) {
            return Err(ConfigError::new("POD_NAME", "must be a DNS-1123 subdomain"));
        }
        if self.busy_labels.is_empty() {
            return Err(ConfigError::new("JIBRI_BUSY_LABELS", "must not be empty"));
        }
        if self.sweep_interval.is_zero() {
            return Err(ConfigError::new(
                "SWEEP_INTERVAL",
                "must be at least 1 second",
            ));
        }
        if self.health_timeout.is_zero() {
            return Err(ConfigError::new("HEALTH_TIMEOUT_MS", "must be at least 1"));
        }
        if self.sweep_concurrency == 0 {
            return Err(ConfigError::new("SWEEP_CONCURRENCY", "must be at least 1"));
        }
        if self.sweep_unreachable_cycles == 0 {
            return Err(ConfigError::new(
                "SWEEP_UNREACHABLE_CYCLES",
                "must be at least 1",
            ));
        }
        self.lease_config()
            .validate()
            .map_err(|m| ConfigError::new("LEASE_DURATION_SECONDS/LEASE_RENEW_SECONDS", m))?;
        Ok(())
    }

    /// The Lease of the reference controller: `jibri-pod-controller-lease` in `NAMESPACE`,
    /// held as `POD_NAME`.
    pub fn lease_config(&self) -> LeaseConfig {
        LeaseConfig::new(JIBRI_LEASE_NAME, &self.namespace, &self.pod_name)
            .with_timing(self.lease_duration, self.lease_renew)
    }

    /// Whether webhook actions are guarded by anything besides the pod's existence (a start-up
    /// warning is due when not).
    pub fn has_webhook_guard(&self) -> bool {
        !self.pod_selector.is_empty() || matches!(self.webhook_auth, WebhookAuthConfig::Jwt(_))
    }
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn required(&self, var: &str) -> Result<String, ConfigError> {
        (self.0)(var).ok_or_else(|| ConfigError::new(var, "is required"))
    }

    fn optional(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    fn required_parsed<T: std::str::FromStr>(&self, var: &str) -> Result<T, ConfigError> {
        let raw = self.required(var)?;
        parse(var, &raw)
    }

    fn parsed<T: std::str::FromStr>(&self, var: &str) -> Result<Option<T>, ConfigError> {
        self.optional(var).map(|raw| parse(var, &raw)).transpose()
    }

    fn flag(&self, var: &str) -> Result<Option<bool>, ConfigError> {
        self.optional(var)
            .map(|raw| match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::new(var, format!("{raw:?} is not a boolean"))),
            })
            .transpose()
    }
}

fn parse<T: std::str::FromStr>(var: &str, raw: &str) -> Result<T, ConfigError> {
    raw.trim().parse().map_err(|_| {
        ConfigError::new(
            var,
            format!("{raw:?} is not a valid {}", std::any::type_name::<T>()),
        )
    })
}

fn webhook_auth(env: &Env<'_>) -> Result<WebhookAuthConfig, ConfigError> {
    let mode = env
        .optional("WEBHOOK_AUTH")
        .unwrap_or_else(|| "none".into())
        .trim()
        .to_ascii_lowercase();
    match mode.as_str() {
        "none" => Ok(WebhookAuthConfig::None),
        "token" => {
            let token = match (
                env.optional("WEBHOOK_TOKEN"),
                env.optional("WEBHOOK_TOKEN_FILE"),
            ) {
                (Some(t), None) => t,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .map_err(|e| ConfigError::new("WEBHOOK_TOKEN_FILE", format!("{path}: {e}")))?
                    .trim()
                    .to_owned(),
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        "WEBHOOK_TOKEN",
                        "set WEBHOOK_TOKEN or WEBHOOK_TOKEN_FILE, not both",
                    ));
                }
                (None, None) => {
                    return Err(ConfigError::new(
                        "WEBHOOK_TOKEN",
                        "WEBHOOK_AUTH=token needs WEBHOOK_TOKEN or WEBHOOK_TOKEN_FILE",
                    ));
                }
            };
            if token.len() < 16 {
                return Err(ConfigError::new(
                    "WEBHOOK_TOKEN",
                    "the shared token must have at least 16 characters",
                ));
            }
            Ok(WebhookAuthConfig::Token(Secret::new(token)))
        }
        "jwt" => {
            let keys = match (
                env.optional("WEBHOOK_JWT_PUBLIC_KEY_FILE"),
                env.optional("ASAP_PUB_KEY_BASE_URL"),
            ) {
                (Some(path), None) => {
                    let pem = std::fs::read_to_string(&path).map_err(|e| {
                        ConfigError::new("WEBHOOK_JWT_PUBLIC_KEY_FILE", format!("{path}: {e}"))
                    })?;
                    jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
                        ConfigError::new(
                            "WEBHOOK_JWT_PUBLIC_KEY_FILE",
                            format!("{path}: not an RSA public key in PEM: {e}"),
                        )
                    })?;
                    JwtKeySource::Pem(pem)
                }
                (None, Some(url)) => {
                    let url = url.trim().trim_end_matches('/').to_owned();
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(ConfigError::new(
                            "ASAP_PUB_KEY_BASE_URL",
                            "must be an http:// or https:// URL",
                        ));
                    }
                    JwtKeySource::AsapBaseUrl(url)
                }
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        "WEBHOOK_JWT_PUBLIC_KEY_FILE",
                        "set WEBHOOK_JWT_PUBLIC_KEY_FILE or ASAP_PUB_KEY_BASE_URL, not both",
                    ));
                }
                (None, None) => {
                    return Err(ConfigError::new(
                        "WEBHOOK_JWT_PUBLIC_KEY_FILE",
                        "WEBHOOK_AUTH=jwt needs WEBHOOK_JWT_PUBLIC_KEY_FILE or ASAP_PUB_KEY_BASE_URL",
                    ));
                }
            };
            let issuers: Vec<String> = env
                .required("WEBHOOK_JWT_ISS")?
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if issuers.is_empty() {
                return Err(ConfigError::new(
                    "WEBHOOK_JWT_ISS",
                    "must name at least one issuer",
                ));
            }
            let audience = env.required("WEBHOOK_JWT_AUD")?.trim().to_owned();
            if audience.is_empty() {
                return Err(ConfigError::new("WEBHOOK_JWT_AUD", "must not be empty"));
            }
            Ok(WebhookAuthConfig::Jwt(JwtConfig {
                keys,
                issuers,
                audience,
                ignore_expiry: env.flag("WEBHOOK_JWT_IGNORE_EXPIRY")?.unwrap_or(true),
                key_ttl: Duration::from_secs(env.parsed("ASAP_PUB_KEY_TTL")?.unwrap_or(3600)),
            }))
        }
        other => Err(ConfigError::new(
            "WEBHOOK_AUTH",
            format!("{other:?}: expected none, jwt or token"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The reference's variables with typical values, for tests and examples.
    fn reference_env() -> BTreeMap<&'static str, &'static str> {
        BTreeMap::from([
            ("PORT", "8080"),
            ("JIBRI_HEALTH_PORT", "2222"),
            ("JIBRI_BUSY_LABELS", "app=jibri,state=busy"),
            ("SWEEP_INTERVAL", "300"),
            ("POD_NAME", "jibri-pod-controller-0"),
            ("NAMESPACE", "jitsi"),
        ])
    }

    fn config(
        extra: &[(&'static str, &'static str)],
    ) -> Result<JibriControllerConfig, ConfigError> {
        let mut env = reference_env();
        for (k, v) in extra {
            env.insert(k, v);
        }
        JibriControllerConfig::from_lookup(|name| env.get(name).map(|v| (*v).to_owned()))
    }

    #[test]
    fn reference_variables_and_defaults() {
        let c = config(&[]).expect("config");
        assert_eq!(c.port, 8080);
        assert_eq!(c.jibri_health_port, 2222);
        assert_eq!(c.busy_labels.get("state").map(String::as_str), Some("busy"));
        assert_eq!(c.sweep_interval, Duration::from_secs(300));
        assert_eq!(c.jibri_namespace, "jitsi", "pods default to NAMESPACE (K1)");
        assert_eq!(
            c.lease_duration,
            Duration::from_secs(15),
            "decoupled from the sweep (K4)"
        );
        assert_eq!(c.lease_renew, Duration::from_secs(5));
        assert_eq!(c.health_timeout, Duration::from_millis(2000));
        assert_eq!(c.sweep_concurrency, 8);
        assert_eq!(c.sweep_unreachable_cycles, 3);
        assert_eq!(c.max_busy, None);
        assert_eq!(c.idle_detached_grace, Duration::from_secs(600));
        assert_eq!(c.webhook_auth, WebhookAuthConfig::None);
        assert!(!c.require_source_ip);
        assert!(!c.has_webhook_guard());
        let lease = c.lease_config();
        assert_eq!(lease.name, "jibri-pod-controller-lease");
        assert_eq!(lease.namespace, "jitsi");
        assert_eq!(lease.identity, "jibri-pod-controller-0");
    }

    #[test]
    fn optional_variables_parse() {
        let c = config(&[
            ("JIBRI_NAMESPACE", "recorders"),
            ("JIBRI_POD_SELECTOR", "app=jibri"),
            ("LEASE_DURATION_SECONDS", "30"),
            ("LEASE_RENEW_SECONDS", "10"),
            ("HEALTH_TIMEOUT_MS", "500"),
            ("SWEEP_CONCURRENCY", "2"),
            ("SWEEP_UNREACHABLE_CYCLES", "5"),
            ("MAX_BUSY_SECONDS", "14400"),
            ("IDLE_DETACHED_GRACE_SECONDS", "60"),
            ("WEBHOOK_REQUIRE_SOURCE_IP", "true"),
            ("JIBRI_BUSY_DELETION_COST", "off"),
            ("JIBRI_SINGLE_USE", "false"),
            ("WEBHOOK_AUTH", "token"),
            ("WEBHOOK_TOKEN", "0123456789abcdef-shared"),
        ])
        .expect("config");
        assert_eq!(c.jibri_namespace, "recorders");
        assert_eq!(c.namespace, "jitsi");
        assert_eq!(c.pod_selector.to_string(), "app=jibri");
        assert_eq!(c.lease_duration, Duration::from_secs(30));
        assert_eq!(c.max_busy, Some(Duration::from_secs(14400)));
        assert_eq!(c.busy_deletion_cost, None);
        assert!(!c.single_use);
        assert!(c.require_source_ip);
        assert!(c.has_webhook_guard());
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("0123456789abcdef"),
            "the token never shows: {debug}"
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&[(&'static str, &'static str)], &str)] = &[
            (&[("PORT", "http")], "PORT"),
            (&[("PORT", "70000")], "PORT"),
            (&[("JIBRI_HEALTH_PORT", "0")], "JIBRI_HEALTH_PORT"),
            (&[("SWEEP_INTERVAL", "0")], "SWEEP_INTERVAL"),
            (&[("SWEEP_INTERVAL", "-5")], "SWEEP_INTERVAL"),
            (&[("JIBRI_BUSY_LABELS", "app=jibri,")], "JIBRI_BUSY_LABELS"),
            (
                &[("JIBRI_BUSY_LABELS", "state=very busy")],
                "JIBRI_BUSY_LABELS",
            ),
            (&[("NAMESPACE", "Jitsi")], "NAMESPACE"),
            (&[("POD_NAME", "")], "POD_NAME"),
            (
                &[("JIBRI_POD_SELECTOR", "app in (jibri")],
                "JIBRI_POD_SELECTOR",
            ),
            (
                &[("LEASE_RENEW_SECONDS", "20")],
                "LEASE_DURATION_SECONDS/LEASE_RENEW_SECONDS",
            ),
            (&[("SWEEP_CONCURRENCY", "0")], "SWEEP_CONCURRENCY"),
            (&[("WEBHOOK_AUTH", "basic")], "WEBHOOK_AUTH"),
            (&[("WEBHOOK_AUTH", "token")], "WEBHOOK_TOKEN"),
            (
                &[("WEBHOOK_AUTH", "token"), ("WEBHOOK_TOKEN", "short")],
                "WEBHOOK_TOKEN",
            ),
            (&[("WEBHOOK_AUTH", "jwt")], "WEBHOOK_JWT_PUBLIC_KEY_FILE"),
            (
                &[
                    ("WEBHOOK_AUTH", "jwt"),
                    ("ASAP_PUB_KEY_BASE_URL", "ftp://keys"),
                ],
                "ASAP_PUB_KEY_BASE_URL",
            ),
            (
                &[
                    ("WEBHOOK_AUTH", "jwt"),
                    ("ASAP_PUB_KEY_BASE_URL", "https://keys"),
                ],
                "WEBHOOK_JWT_ISS",
            ),
            (
                &[
                    ("WEBHOOK_AUTH", "jwt"),
                    ("WEBHOOK_JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem"),
                ],
                "WEBHOOK_JWT_PUBLIC_KEY_FILE",
            ),
            (
                &[("WEBHOOK_REQUIRE_SOURCE_IP", "maybe")],
                "WEBHOOK_REQUIRE_SOURCE_IP",
            ),
            (
                &[("JIBRI_BUSY_DELETION_COST", "lots")],
                "JIBRI_BUSY_DELETION_COST",
            ),
        ];
        for (extra, var) in cases {
            let err = config(extra).expect_err(&format!("{extra:?} must fail"));
            assert_eq!(err.var, *var, "{extra:?}: {err}");
        }
        let mut env = reference_env();
        env.remove("SWEEP_INTERVAL");
        let err = JibriControllerConfig::from_lookup(|n| env.get(n).map(|v| (*v).to_owned()))
            .expect_err("missing");
        assert_eq!(err.to_string(), "SWEEP_INTERVAL: is required");
    }

    #[test]
    fn asap_jwt_configuration() {
        let c = config(&[
            ("WEBHOOK_AUTH", "jwt"),
            ("ASAP_PUB_KEY_BASE_URL", "https://keys.example/asap/"),
            ("WEBHOOK_JWT_ISS", "jibri, jibri-2"),
            ("WEBHOOK_JWT_AUD", "jibri-pod-controller"),
        ])
        .expect("config");
        let WebhookAuthConfig::Jwt(jwt) = c.webhook_auth else {
            panic!("jwt expected");
        };
        assert_eq!(
            jwt.keys,
            JwtKeySource::AsapBaseUrl("https://keys.example/asap".into())
        );
        assert_eq!(jwt.issuers, vec!["jibri", "jibri-2"]);
        assert!(jwt.ignore_expiry, "Jibri never refreshes its token (K2)");
        assert_eq!(jwt.key_ttl, Duration::from_secs(3600));
    }
}
