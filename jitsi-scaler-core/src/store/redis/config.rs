//! [`RedisConfig`]: where the Redis is, how to authenticate, and how long to wait for it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The default prefix of every key (lets jitsi-scaler share a Redis with a running reference).
pub const DEFAULT_KEY_PREFIX: &str = "jitsi-scaler:";

/// The default connect and command timeout: below the sidecar's 3 s timeout, so a check-in can
/// answer 503 in time when Redis is away.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// How to reach Redis.
///
/// `Debug` never shows a password: neither the fields nor one embedded in the URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user[:password]@]host[:port][/db]`, or `rediss://…` for TLS. With
    /// [`sentinel`](Self::sentinel) only the scheme (TLS or not) and the credentials and
    /// database in it are used; the master's address comes from the sentinels and the host
    /// may be left out (`redis://`, `rediss://:password@/2`).
    pub url: String,
    /// The user (ACL), overriding one in the URL.
    pub username: Option<String>,
    /// The password, overriding one in the URL.
    pub password: Option<String>,
    /// The database number, overriding one in the URL.
    pub db: Option<i64>,
    /// With TLS: a PEM file of the CA that signed the server certificates, trusted instead of
    /// the system's roots (a private CA).
    pub tls_ca_file: Option<PathBuf>,
    /// Find the master through Redis Sentinel.
    pub sentinel: Option<SentinelConfig>,
    /// Prefix of every key (default [`DEFAULT_KEY_PREFIX`]).
    pub key_prefix: String,
    /// Limit of one connection attempt.
    pub connect_timeout: Duration,
    /// Limit of one store call, including waiting for a reconnection.
    pub command_timeout: Duration,
}

/// Redis Sentinel: the master is looked up by name and looked up again after a failover.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    /// The monitored master's name (`sentinel monitor <name> …`).
    pub master_name: String,
    /// Sentinel addresses, `host:port` (port 26379 when absent).
    pub addresses: Vec<String>,
    /// The sentinels' own password, when they require one.
    pub password: Option<String>,
}

/// A configuration that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RedisConfigError {
    /// A setting has a value that cannot be used.
    #[error("invalid Redis setting {setting}: {message}")]
    Invalid {
        /// The setting (field or environment variable).
        setting: String,
        /// Why.
        message: String,
    },
}

impl RedisConfigError {
    pub(crate) fn invalid(setting: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            setting: setting.to_owned(),
            message: message.into(),
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self::new("redis://127.0.0.1:6379")
    }
}

impl RedisConfig {
    /// A configuration for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            username: None,
            password: None,
            db: None,
            tls_ca_file: None,
            sentinel: None,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            connect_timeout: DEFAULT_TIMEOUT,
            command_timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the key prefix.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets both the connect and the command timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self.command_timeout = timeout;
        self
    }

    /// Reads the configuration from the environment: `REDIS_URL`, or the reference's
    /// `REDIS_HOST` (127.0.0.1), `REDIS_PORT` (6379) and `REDIS_TLS` (`true`/`false`); then
    /// `REDIS_USERNAME`, `REDIS_PASSWORD`, `REDIS_DB`, `REDIS_TLS_CA_FILE`, `REDIS_KEY_PREFIX`,
    /// and Sentinel with
    /// `REDIS_SENTINEL_MASTER`, `REDIS_SENTINEL_ADDRESSES` (comma-separated `host:port`) and
    /// `REDIS_SENTINEL_PASSWORD`. Empty variables count as unset.
    pub fn from_env() -> Result<Self, RedisConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) reading variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, RedisConfigError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let tls = match get("REDIS_TLS") {
            Some(v) => parse_bool(&v).ok_or_else(|| {
                RedisConfigError::invalid("REDIS_TLS", "expected true, false, 1 or 0")
            })?,
            None => false,
        };
        let url = match get("REDIS_URL") {
            Some(url) => url.trim().to_owned(),
            None => {
                let host = get("REDIS_HOST").unwrap_or_else(|| "127.0.0.1".to_owned());
                let port = match get("REDIS_PORT") {
                    Some(p) => p.trim().parse::<u16>().map_err(|_| {
                        RedisConfigError::invalid("REDIS_PORT", "expected a port number")
                    })?,
                    None => 6379,
                };
                let host = host.trim();
                let host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]")
                } else {
                    host.to_owned()
                };
                let scheme = if tls { "rediss" } else { "redis" };
                format!("{scheme}://{host}:{port}")
            }
        };
        let mut config = Self::new(url);
        config.username = get("REDIS_USERNAME");
        config.password = get("REDIS_PASSWORD");
        if let Some(db) = get("REDIS_DB") {
            config.db = Some(
                db.trim()
                    .parse::<i64>()
                    .map_err(|_| RedisConfigError::invalid("REDIS_DB", "expected a number"))?,
            );
        }
        config.tls_ca_file = get("REDIS_TLS_CA_FILE").map(PathBuf::from);
        if let Some(prefix) = var("REDIS_KEY_PREFIX") {
            config.key_prefix = prefix;
        }
        if let Some(master_name) = get("REDIS_SENTINEL_MASTER") {
            let addresses = get("REDIS_SENTINEL_ADDRESSES")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect();
            config.sentinel = Some(SentinelConfig {
                master_name: master_name.trim().to_owned(),
                addresses,
                password: get("REDIS_SENTINEL_PASSWORD"),
            });
            if tls && !config.uses_tls() {
                config.url = config.url.replacen("redis://", "rediss://", 1);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Connections use TLS (`rediss://`).
    pub fn uses_tls(&self) -> bool {
        self.url
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("rediss://")
    }

    /// Checks the settings without connecting.
    pub fn validate(&self) -> Result<(), RedisConfigError> {
        let lower = self.url.trim_start().to_ascii_lowercase();
        if !(lower.starts_with("redis://") || lower.starts_with("rediss://")) {
            return Err(RedisConfigError::invalid(
                "url",
                "expected a redis:// or rediss:// URL",
            ));
        }
        if self.tls_ca_file.is_some() && !self.uses_tls() {
            return Err(RedisConfigError::invalid(
                "tls_ca_file",
                "a CA file needs a rediss:// URL (or REDIS_TLS=true)",
            ));
        }
        if self.db.is_some_and(|db| db < 0) {
            return Err(RedisConfigError::invalid("db", "must not be negative"));
        }
        if self.connect_timeout.is_zero() || self.command_timeout.is_zero() {
            return Err(RedisConfigError::invalid(
                "timeout",
                "timeouts must be positive",
            ));
        }
        if let Some(sentinel) = &self.sentinel {
            if sentinel.master_name.trim().is_empty() {
                return Err(RedisConfigError::invalid(
                    "sentinel.master_name",
                    "must not be empty",
                ));
            }
            if sentinel.addresses.is_empty() {
                return Err(RedisConfigError::invalid(
                    "sentinel.addresses",
                    "at least one sentinel address is needed",
                ));
            }
            for address in &sentinel.addresses {
                split_host_port(address, 26379)?;
            }
        }
        Ok(())
    }
}

/// Splits `host:port`, `[v6]:port` or a bare host.
pub(crate) fn split_host_port(
    address: &str,
    default_port: u16,
) -> Result<(String, u16), RedisConfigError> {
    let bad = || {
        RedisConfigError::invalid(
            "sentinel.addresses",
            format!("{address:?} is not host:port"),
        )
    };
    let address = address.trim();
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(bad()),
        }
    } else {
        match address.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => (address, None),
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| bad())?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The URL with any credentials replaced by `****`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!(
            "{}****{}",
            &url[..authority_start],
            &url[authority_start + at..]
        ),
        None => url.to_owned(),
    }
}

fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "****")
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("db", &self.db)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("sentinel", &self.sentinel)
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

impl fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelConfig")
            .field("master_name", &self.master_name)
            .field("addresses", &self.addresses)
            .field("password", &redacted(&self.password))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn reference_variables_build_a_url() {
        let c = RedisConfig::from_vars(vars(&[
            ("REDIS_HOST", "redis.internal"),
            ("REDIS_PORT", "6380"),
            ("REDIS_TLS", "true"),
            ("REDIS_PASSWORD", "s3cret"),
            ("REDIS_DB", "2"),
        ]))
        .expect("valid");
        assert_eq!(c.url, "rediss://redis.internal:6380");
        assert!(c.uses_tls());
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert_eq!(c.db, Some(2));
        assert_eq!(c.key_prefix, DEFAULT_KEY_PREFIX);
        assert_eq!(c.command_timeout, Duration::from_secs(2));
        let d = RedisConfig::from_vars(vars(&[])).expect("defaults");
        assert_eq!(d.url, "redis://127.0.0.1:6379");
        let v6 =
            RedisConfig::from_vars(vars(&[("REDIS_HOST", "::1"), ("REDIS_TLS", "")])).expect("v6");
        assert_eq!(v6.url, "redis://[::1]:6379");
    }

    #[test]
    fn redis_url_wins_and_sentinel_is_read() {
        let c = RedisConfig::from_vars(vars(&[
            ("REDIS_URL", "redis://:pw@h:1/3"),
            ("REDIS_HOST", "ignored"),
            ("REDIS_SENTINEL_MASTER", "mymaster"),
            ("REDIS_SENTINEL_ADDRESSES", "s1:26379, s2 ,[::1]:5000"),
            ("REDIS_SENTINEL_PASSWORD", "spw"),
            ("REDIS_TLS", "1"),
            ("REDIS_KEY_PREFIX", "js2:"),
            ("REDIS_TLS_CA_FILE", "/etc/ca.pem"),
        ]))
        .expect("valid");
        assert_eq!(c.url, "rediss://:pw@h:1/3");
        assert_eq!(c.key_prefix, "js2:");
        assert_eq!(c.tls_ca_file, Some(PathBuf::from("/etc/ca.pem")));
        let s = c.sentinel.as_ref().expect("sentinel");
        assert_eq!(s.master_name, "mymaster");
        assert_eq!(s.addresses, vec!["s1:26379", "s2", "[::1]:5000"]);
        assert_eq!(split_host_port("s2", 26379), Ok(("s2".into(), 26379)));
        assert_eq!(
            split_host_port("[::1]:5000", 26379),
            Ok(("::1".into(), 5000))
        );
        assert_eq!(split_host_port("::1", 26379), Ok(("::1".into(), 26379)));
    }

    #[test]
    fn bad_values_are_clear_errors() {
        for (pairs, setting) in [
            (vec![("REDIS_PORT", "http")], "REDIS_PORT"),
            (vec![("REDIS_DB", "one")], "REDIS_DB"),
            (vec![("REDIS_TLS", "maybe")], "REDIS_TLS"),
            (vec![("REDIS_URL", "http://h")], "url"),
            (vec![("REDIS_DB", "-1")], "db"),
            (vec![("REDIS_TLS_CA_FILE", "/ca.pem")], "tls_ca_file"),
            (vec![("REDIS_SENTINEL_MASTER", "m")], "sentinel.addresses"),
            (
                vec![
                    ("REDIS_SENTINEL_MASTER", "m"),
                    ("REDIS_SENTINEL_ADDRESSES", "h:port"),
                ],
                "sentinel.addresses",
            ),
        ] {
            match RedisConfig::from_vars(vars(&pairs)) {
                Err(RedisConfigError::Invalid { setting: s, .. }) => assert_eq!(s, setting),
                other => panic!("{pairs:?}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn debug_never_shows_a_password() {
        let mut c = RedisConfig::new("redis://user:urlsecret@h:6379/0");
        c.password = Some("fieldsecret".into());
        c.sentinel = Some(SentinelConfig {
            master_name: "m".into(),
            addresses: vec!["s:26379".into()],
            password: Some("sentinelsecret".into()),
        });
        let shown = format!("{c:?}");
        for secret in ["urlsecret", "fieldsecret", "sentinelsecret", "user:"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("redis://****@h:6379/0"), "{shown}");
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact_url("rediss://:p@w@h:1"), "rediss://****@h:1");
    }
}
