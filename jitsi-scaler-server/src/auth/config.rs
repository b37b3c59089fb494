//! Authentication settings: the reference's environment variables plus ours.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::principal::Role;
use super::static_tokens::{StaticToken, StaticTokenError};

/// Names of the environment variables read by [`AuthConfig::from_env`].
pub mod env {
    /// `true` (default) protects the API port; `false` disables authentication.
    pub const PROTECTED_API: &str = "PROTECTED_API";
    /// Base URL of the public keys: `${base}/${sha256_hex(kid)}.pem`.
    pub const PUB_KEY_BASE_URL: &str = "ASAP_PUB_KEY_BASE_URL";
    /// Seconds a fetched public key stays fresh (default 3600).
    pub const PUB_KEY_TTL: &str = "ASAP_PUB_KEY_TTL";
    /// Seconds a failed key fetch is remembered (default 30, 1–60).
    pub const PUB_KEY_NEGATIVE_TTL: &str = "ASAP_PUB_KEY_NEGATIVE_TTL";
    /// Seconds past its TTL a key is still served while refreshing fails (default 3600, ≤ 3600).
    pub const PUB_KEY_MAX_STALE: &str = "ASAP_PUB_KEY_MAX_STALE";
    /// Seconds a key fetch may take (default 5, 1–5).
    pub const PUB_KEY_FETCH_TIMEOUT: &str = "ASAP_PUB_KEY_FETCH_TIMEOUT";
    /// The required `aud` (default `jitsi-autoscaler`).
    pub const JWT_AUD: &str = "ASAP_JWT_AUD";
    /// Sidecar issuers, comma-separated (default `jitsi-autoscaler-sidecar`).
    pub const JWT_ACCEPTED_HOOK_ISS: &str = "ASAP_JWT_ACCEPTED_HOOK_ISS";
    /// Admin issuers, comma-separated (default none).
    pub const JWT_ACCEPTED_ADMIN_ISS: &str = "ASAP_JWT_ACCEPTED_ADMIN_ISS";
    /// Read-only issuers, comma-separated (default none).
    pub const JWT_ACCEPTED_READ_ISS: &str = "ASAP_JWT_ACCEPTED_READ_ISS";
    /// Seconds of clock leeway on `exp` and `nbf` (default 60, ≤ 60).
    pub const JWT_LEEWAY: &str = "ASAP_JWT_LEEWAY";
    /// `true` gives every accepted issuer every route, as the reference did (default `false`).
    pub const SINGLE_SCOPE: &str = "ASAP_SINGLE_SCOPE";
    /// Verified tokens remembered (default 100000; 0 disables the cache).
    pub const TOKEN_CACHE_SIZE: &str = "ASAP_TOKEN_CACHE_SIZE";
    /// Static tokens: `role:token,role:token`.
    pub const TOKENS: &str = "JITSI_SCALER_TOKENS";
    /// A file of static tokens: `role token` per line, `#` comments.
    pub const TOKENS_FILE: &str = "JITSI_SCALER_TOKENS_FILE";
}

/// Default `aud`.
pub const DEFAULT_AUDIENCE: &str = "jitsi-autoscaler";
/// Default sidecar issuer.
pub const DEFAULT_SIDECAR_ISSUER: &str = "jitsi-autoscaler-sidecar";
/// Longest allowed key fetch.
pub const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest allowed negative cache.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// Longest allowed stale-while-error window.
pub const MAX_STALE: Duration = Duration::from_secs(3600);
/// Largest allowed clock leeway.
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);

/// How requests to the API port are authenticated. Plain data: build it in code, from flags,
/// or from the environment with [`AuthConfig::from_env`]; [`Default`] has the reference's
/// defaults (protected, no key server, no static tokens).
#[derive(Clone, PartialEq)]
pub struct AuthConfig {
    /// `PROTECTED_API`: authenticate every request (`false` lets everything through).
    pub protected: bool,
    /// `ASAP_PUB_KEY_BASE_URL`: where public keys are published; `None` disables ASAP tokens.
    pub pub_key_base_url: Option<String>,
    /// `ASAP_JWT_AUD`: the required audience.
    pub audience: String,
    /// `ASAP_JWT_ACCEPTED_HOOK_ISS`: issuers with the sidecar role.
    pub sidecar_issuers: Vec<String>,
    /// `ASAP_JWT_ACCEPTED_ADMIN_ISS`: issuers with the admin role.
    pub admin_issuers: Vec<String>,
    /// `ASAP_JWT_ACCEPTED_READ_ISS`: issuers with the read role.
    pub read_issuers: Vec<String>,
    /// `ASAP_SINGLE_SCOPE`: every accepted issuer gets the admin role (reference behaviour).
    pub single_scope: bool,
    /// `ASAP_PUB_KEY_TTL`: how long a fetched key is fresh.
    pub pub_key_ttl: Duration,
    /// `ASAP_PUB_KEY_NEGATIVE_TTL`: how long a failed fetch is remembered.
    pub pub_key_negative_ttl: Duration,
    /// `ASAP_PUB_KEY_MAX_STALE`: how long past its TTL a key is served while refreshing fails.
    pub pub_key_max_stale: Duration,
    /// `ASAP_PUB_KEY_FETCH_TIMEOUT`: the bound of one key fetch, retries included.
    pub pub_key_fetch_timeout: Duration,
    /// `ASAP_JWT_LEEWAY`: clock leeway on `exp` and `nbf` (whole seconds).
    pub leeway: Duration,
    /// `ASAP_TOKEN_CACHE_SIZE`: verified tokens remembered.
    pub token_cache_capacity: usize,
    /// `JITSI_SCALER_TOKENS`: static tokens.
    pub static_tokens: Vec<StaticToken>,
    /// `JITSI_SCALER_TOKENS_FILE`: a file of static tokens, read when the authenticator is built.
    pub tokens_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            protected: true,
            pub_key_base_url: None,
            audience: String::from(DEFAULT_AUDIENCE),
            sidecar_issuers: vec![String::from(DEFAULT_SIDECAR_ISSUER)],
            admin_issuers: Vec::new(),
            read_issuers: Vec::new(),
            single_scope: false,
            pub_key_ttl: Duration::from_secs(3600),
            pub_key_negative_ttl: Duration::from_secs(30),
            pub_key_max_stale: MAX_STALE,
            pub_key_fetch_timeout: MAX_FETCH_TIMEOUT,
            leeway: MAX_LEEWAY,
            token_cache_capacity: 100_000,
            static_tokens: Vec::new(),
            tokens_file: None,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("protected", &self.protected)
            .field(
                "pub_key_base_url",
                &self.pub_key_base_url.as_deref().map(redact_url),
            )
            .field("audience", &self.audience)
            .field("sidecar_issuers", &self.sidecar_issuers)
            .field("admin_issuers", &self.admin_issuers)
            .field("read_issuers", &self.read_issuers)
            .field("single_scope", &self.single_scope)
            .field("pub_key_ttl", &self.pub_key_ttl)
            .field("pub_key_negative_ttl", &self.pub_key_negative_ttl)
            .field("pub_key_max_stale", &self.pub_key_max_stale)
            .field("pub_key_fetch_timeout", &self.pub_key_fetch_timeout)
            .field("leeway", &self.leeway)
            .field("token_cache_capacity", &self.token_cache_capacity)
            .field("static_tokens", &self.static_tokens)
            .field("tokens_file", &self.tokens_file)
            .finish()
    }
}

/// A setting that cannot be used. The message names the variable (or file line), never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    /// A variable has a value that cannot be used.
    #[error("{name}: {message}")]
    Invalid {
        /// The environment variable (or setting) at fault.
        name: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A static token entry is malformed.
    #[error("static tokens: {0}")]
    StaticToken(#[from] StaticTokenError),
    /// Authentication is on but nothing could ever authenticate.
    #[error(
        "PROTECTED_API is true but no credential is configured: set ASAP_PUB_KEY_BASE_URL \
         and/or JITSI_SCALER_TOKENS or JITSI_SCALER_TOKENS_FILE (or set PROTECTED_API=false)"
    )]
    NoCredentialSource,
    /// The HTTP client for the key server could not be built.
    #[error("cannot build the key server's HTTP client: {0}")]
    HttpClient(String),
}

impl AuthConfig {
    /// Reads the settings from the process environment (see [`env`]); unset variables keep
    /// their defaults.
    pub fn from_env() -> Result<Self, AuthConfigError> {
        Self::from_lookup(|name| std::env::var_os(name).map(|v| v.into_string()))
    }

    /// Reads the settings from `vars` (a map of variable name to value), as [`Self::from_env`].
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, AuthConfigError> {
        Self::from_lookup(|name| vars.get(name).cloned().map(Ok))
    }

    /// `lookup` answers a variable's value, `Err` with the raw value if it is not UTF-8.
    fn from_lookup<F>(lookup: F) -> Result<Self, AuthConfigError>
    where
        F: Fn(&str) -> Option<Result<String, std::ffi::OsString>>,
    {
        let get = |name: &'static str| -> Result<Option<String>, AuthConfigError> {
            match lookup(name) {
                None => Ok(None),
                Some(Ok(value)) if value.trim().is_empty() => Ok(None),
                Some(Ok(value)) => Ok(Some(value.trim().to_owned())),
                Some(Err(_)) => Err(invalid(name, "not valid UTF-8")),
            }
        };
        let mut config = Self::default();
        if let Some(v) = get(env::PROTECTED_API)? {
            config.protected = parse_bool(env::PROTECTED_API, &v)?;
        }
        config.pub_key_base_url = get(env::PUB_KEY_BASE_URL)?;
        if let Some(v) = get(env::JWT_AUD)? {
            config.audience = v;
        }
        if let Some(v) = get(env::JWT_ACCEPTED_HOOK_ISS)? {
            config.sidecar_issuers = split_list(&v);
        }
        if let Some(v) = get(env::JWT_ACCEPTED_ADMIN_ISS)? {
            config.admin_issuers = split_list(&v);
        }
        if let Some(v) = get(env::JWT_ACCEPTED_READ_ISS)? {
            config.read_issuers = split_list(&v);
        }
        if let Some(v) = get(env::SINGLE_SCOPE)? {
            config.single_scope = parse_bool(env::SINGLE_SCOPE, &v)?;
        }
        if let Some(v) = get(env::PUB_KEY_TTL)? {
            config.pub_key_ttl = parse_secs(env::PUB_KEY_TTL, &v)?;
        }
        if let Some(v) = get(env::PUB_KEY_NEGATIVE_TTL)? {
            config.pub_key_negative_ttl = parse_secs(env::PUB_KEY_NEGATIVE_TTL, &v)?;
        }
        if let Some(v) = get(env::PUB_KEY_MAX_STALE)? {
            config.pub_key_max_stale = parse_secs(env::PUB_KEY_MAX_STALE, &v)?;
        }
        if let Some(v) = get(env::PUB_KEY_FETCH_TIMEOUT)? {
            config.pub_key_fetch_timeout = parse_secs(env::PUB_KEY_FETCH_TIMEOUT, &v)?;
        }
        if let Some(v) = get(env::JWT_LEEWAY)? {
            config.leeway = parse_secs(env::JWT_LEEWAY, &v)?;
        }
        if let Some(v) = get(env::TOKEN_CACHE_SIZE)? {
            config.token_cache_capacity = v
                .parse()
                .map_err(|_| invalid(env::TOKEN_CACHE_SIZE, "expected a whole number"))?;
        }
        if let Some(v) = get(env::TOKENS)? {
            config.static_tokens = StaticToken::parse_list(env::TOKENS, &v)?;
        }
        config.tokens_file = get(env::TOKENS_FILE)?.map(PathBuf::from);
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting; [`super::Authenticator::new`] calls it too.
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        if !self.protected {
            return Ok(());
        }
        if self.pub_key_base_url.is_none()
            && self.static_tokens.is_empty()
            && self.tokens_file.is_none()
        {
            return Err(AuthConfigError::NoCredentialSource);
        }
        if let Some(url) = &self.pub_key_base_url {
            let parsed = reqwest::Url::parse(url).map_err(|e| {
                invalid(
                    env::PUB_KEY_BASE_URL,
                    &format!("not a URL ({e}): {}", redact_url(url)),
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(
                    env::PUB_KEY_BASE_URL,
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if self.audience.trim().is_empty() {
            return Err(invalid(env::JWT_AUD, "must not be empty"));
        }
        in_range(
            env::PUB_KEY_TTL,
            self.pub_key_ttl,
            Duration::from_secs(1),
            Duration::from_secs(86_400),
        )?;
        in_range(
            env::PUB_KEY_NEGATIVE_TTL,
            self.pub_key_negative_ttl,
            Duration::from_secs(1),
            MAX_NEGATIVE_TTL,
        )?;
        in_range(
            env::PUB_KEY_MAX_STALE,
            self.pub_key_max_stale,
            Duration::ZERO,
            MAX_STALE,
        )?;
        in_range(
            env::PUB_KEY_FETCH_TIMEOUT,
            self.pub_key_fetch_timeout,
            Duration::from_millis(1),
            MAX_FETCH_TIMEOUT,
        )?;
        in_range(env::JWT_LEEWAY, self.leeway, Duration::ZERO, MAX_LEEWAY)?;
        if !self.single_scope {
            self.check_issuers_disjoint()?;
        }
        Ok(())
    }

    /// An issuer in two lists would have an ambiguous role.
    fn check_issuers_disjoint(&self) -> Result<(), AuthConfigError> {
        let mut seen: HashMap<&str, &'static str> = HashMap::new();
        for (name, list) in [
            (env::JWT_ACCEPTED_HOOK_ISS, &self.sidecar_issuers),
            (env::JWT_ACCEPTED_ADMIN_ISS, &self.admin_issuers),
            (env::JWT_ACCEPTED_READ_ISS, &self.read_issuers),
        ] {
            for issuer in list {
                if let Some(other) = seen.insert(issuer.as_str(), name)
                    && other != name
                {
                    return Err(invalid(
                        name,
                        &format!(
                            "issuer '{issuer}' is also listed in {other}; an issuer has one role"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The role of each accepted issuer (all admin in single-scope mode).
    pub(crate) fn issuer_roles(&self) -> HashMap<String, IssuerRole> {
        let mut roles = HashMap::new();
        for (list, class) in [
            (&self.read_issuers, Role::Read),
            (&self.sidecar_issuers, Role::Sidecar),
            (&self.admin_issuers, Role::Admin),
        ] {
            for issuer in list {
                let role = if self.single_scope {
                    Role::Admin
                } else {
                    class
                };
                roles.insert(
                    issuer.clone(),
                    IssuerRole {
                        role,
                        binds_instance: class == Role::Sidecar,
                    },
                );
            }
        }
        roles
    }
}

/// What a token of one issuer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IssuerRole {
    /// The role granted.
    pub(crate) role: Role,
    /// A sidecar issuer: a `sub` binds the token to that instance.
    pub(crate) binds_instance: bool,
}

fn invalid(name: &'static str, message: &str) -> AuthConfigError {
    AuthConfigError::Invalid {
        name,
        message: message.to_owned(),
    }
}

fn parse_bool(name: &'static str, value: &str) -> Result<bool, AuthConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(name, "expected true or false")),
    }
}

fn parse_secs(name: &'static str, value: &str) -> Result<Duration, AuthConfigError> {
    value
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| invalid(name, "expected a whole number of seconds"))
}

fn in_range(
    name: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), AuthConfigError> {
    if value < min || value > max {
        return Err(invalid(
            name,
            &format!("must be between {min:?} and {max:?}, not {value:?}"),
        ));
    }
    Ok(())
}

/// Comma-separated items, trimmed, without empty ones.
fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A URL without user name and password (safe to log).
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if !parsed.username().is_empty() || parsed.password().is_some() {
                let _ = parsed.set_username("");
                let _ = parsed.set_password(None);
            }
            parsed.to_string()
        }
        Err(_) => String::from("<unparsable URL>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reference_defaults() {
        let config =
            AuthConfig::from_vars(&vars(&[("ASAP_PUB_KEY_BASE_URL", "https://keys.example/")]))
                .expect("valid");
        assert!(config.protected);
        assert_eq!(config.audience, "jitsi-autoscaler");
        assert_eq!(config.sidecar_issuers, vec!["jitsi-autoscaler-sidecar"]);
        assert!(config.admin_issuers.is_empty());
        assert_eq!(config.pub_key_ttl, Duration::from_secs(3600));
        assert!(config.pub_key_negative_ttl <= MAX_NEGATIVE_TTL);
        assert!(config.pub_key_fetch_timeout <= MAX_FETCH_TIMEOUT);
        assert!(!config.single_scope);
    }

    #[test]
    fn every_variable_is_read() {
        let config = AuthConfig::from_vars(&vars(&[
            ("PROTECTED_API", "TRUE"),
            ("ASAP_PUB_KEY_BASE_URL", "http://127.0.0.1:9/keys"),
            ("ASAP_JWT_AUD", "scaler"),
            ("ASAP_JWT_ACCEPTED_HOOK_ISS", "side-a, side-b,,"),
            ("ASAP_JWT_ACCEPTED_ADMIN_ISS", "ops"),
            ("ASAP_JWT_ACCEPTED_READ_ISS", "grafana"),
            ("ASAP_SINGLE_SCOPE", "false"),
            ("ASAP_PUB_KEY_TTL", "600"),
            ("ASAP_PUB_KEY_NEGATIVE_TTL", "10"),
            ("ASAP_PUB_KEY_MAX_STALE", "0"),
            ("ASAP_PUB_KEY_FETCH_TIMEOUT", "2"),
            ("ASAP_JWT_LEEWAY", "30"),
            ("ASAP_TOKEN_CACHE_SIZE", "5"),
            ("JITSI_SCALER_TOKENS", "read:read-token-0123456789"),
            ("JITSI_SCALER_TOKENS_FILE", "/etc/jitsi-scaler/tokens"),
        ]))
        .expect("valid");
        assert_eq!(config.audience, "scaler");
        assert_eq!(config.sidecar_issuers, vec!["side-a", "side-b"]);
        assert_eq!(config.admin_issuers, vec!["ops"]);
        assert_eq!(config.read_issuers, vec!["grafana"]);
        assert_eq!(config.pub_key_ttl, Duration::from_secs(600));
        assert_eq!(config.pub_key_negative_ttl, Duration::from_secs(10));
        assert_eq!(config.pub_key_max_stale, Duration::ZERO);
        assert_eq!(config.pub_key_fetch_timeout, Duration::from_secs(2));
        assert_eq!(config.leeway, Duration::from_secs(30));
        assert_eq!(config.token_cache_capacity, 5);
        assert_eq!(config.static_tokens.len(), 1);
        assert_eq!(
            config.tokens_file.as_deref(),
            Some(std::path::Path::new("/etc/jitsi-scaler/tokens"))
        );
        let roles = config.issuer_roles();
        assert_eq!(roles["side-a"].role, Role::Sidecar);
        assert!(roles["side-a"].binds_instance);
        assert_eq!(roles["ops"].role, Role::Admin);
        assert_eq!(roles["grafana"].role, Role::Read);
    }

    #[test]
    fn errors_name_the_variable() {
        let base = ("ASAP_PUB_KEY_BASE_URL", "https://keys.example");
        for (pairs, name) in [
            (vec![("PROTECTED_API", "maybe")], "PROTECTED_API"),
            (vec![base, ("ASAP_PUB_KEY_TTL", "1h")], "ASAP_PUB_KEY_TTL"),
            (
                vec![base, ("ASAP_PUB_KEY_NEGATIVE_TTL", "120")],
                "ASAP_PUB_KEY_NEGATIVE_TTL",
            ),
            (
                vec![base, ("ASAP_PUB_KEY_FETCH_TIMEOUT", "30")],
                "ASAP_PUB_KEY_FETCH_TIMEOUT",
            ),
            (
                vec![base, ("ASAP_PUB_KEY_MAX_STALE", "7200")],
                "ASAP_PUB_KEY_MAX_STALE",
            ),
            (vec![base, ("ASAP_JWT_LEEWAY", "600")], "ASAP_JWT_LEEWAY"),
            (
                vec![("ASAP_PUB_KEY_BASE_URL", "keys.example")],
                "ASAP_PUB_KEY_BASE_URL",
            ),
            (
                vec![("ASAP_PUB_KEY_BASE_URL", "ftp://keys.example")],
                "ASAP_PUB_KEY_BASE_URL",
            ),
            (vec![base, ("ASAP_SINGLE_SCOPE", "2")], "ASAP_SINGLE_SCOPE"),
            (
                vec![
                    base,
                    ("ASAP_JWT_ACCEPTED_ADMIN_ISS", "jitsi-autoscaler-sidecar"),
                ],
                "ASAP_JWT_ACCEPTED_ADMIN_ISS",
            ),
        ] {
            let err = AuthConfig::from_vars(&vars(&pairs)).expect_err(name);
            assert!(
                matches!(&err, AuthConfigError::Invalid { name: n, .. } if *n == name),
                "{name}: {err}"
            );
            assert!(err.to_string().starts_with(name), "{err}");
        }
    }

    #[test]
    fn overlapping_issuers_are_fine_in_single_scope() {
        let config = AuthConfig::from_vars(&vars(&[
            ("ASAP_PUB_KEY_BASE_URL", "https://keys.example"),
            ("ASAP_JWT_ACCEPTED_ADMIN_ISS", "jitsi-autoscaler-sidecar"),
            ("ASAP_SINGLE_SCOPE", "true"),
        ]))
        .expect("valid");
        let roles = config.issuer_roles();
        assert_eq!(roles["jitsi-autoscaler-sidecar"].role, Role::Admin);
    }

    #[test]
    fn protection_needs_a_credential_source() {
        assert_eq!(
            AuthConfig::from_vars(&vars(&[])),
            Err(AuthConfigError::NoCredentialSource)
        );
        let open = AuthConfig::from_vars(&vars(&[("PROTECTED_API", "false")])).expect("valid");
        assert!(!open.protected);
        let tokens_only = AuthConfig::from_vars(&vars(&[(
            "JITSI_SCALER_TOKENS",
            "admin:admin-token-0123456789",
        )]))
        .expect("valid");
        assert!(tokens_only.pub_key_base_url.is_none());
    }

    #[test]
    fn debug_shows_no_secret() {
        let config = AuthConfig::from_vars(&vars(&[
            (
                "ASAP_PUB_KEY_BASE_URL",
                "https://user:hunter2hunter2@keys.example/k",
            ),
            ("JITSI_SCALER_TOKENS", "admin:admin-token-0123456789"),
        ]))
        .expect("valid");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("admin-token-0123456789"), "{shown}");
        assert!(shown.contains("keys.example/k"), "{shown}");
        let err = AuthConfig::from_vars(&vars(&[(
            "ASAP_PUB_KEY_BASE_URL",
            "https://user:hunter2hunter2@keys example",
        )]))
        .expect_err("bad URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
