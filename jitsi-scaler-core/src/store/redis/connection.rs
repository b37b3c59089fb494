//! [`RedisConnection`]: one self-healing, multiplexed connection to the Redis master, with a
//! time limit on every call.
//!
//! A direct connection is a redis-rs `ConnectionManager`, which reconnects by itself. With
//! Sentinel, the master is looked up through the sentinels; after a connection error or a
//! `READONLY` answer (the master became a replica) it is looked up again.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{
    Client, ConnectionAddr, IntoConnectionInfo, RedisError, RedisResult, ServerErrorKind,
    TlsCertificates, TlsMode,
};

use super::config::{RedisConfig, RedisConfigError, redact_url, split_host_port};
use crate::store::StoreError;

/// Reconnection: first retry after this, doubling.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
/// Reconnection: longest pause between two attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);
/// Reconnection attempts per outage before pending calls fail (the next call starts over).
const RECONNECT_ATTEMPTS: usize = 4;

/// `url` with a placeholder host when it has none (`redis://`, `rediss://:pw@/2`).
fn with_host(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let start = scheme_end + 3;
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host_start = rest[..end].rfind('@').map_or(0, |at| at + 1);
    if rest[host_start..end].is_empty() {
        format!(
            "{}{}sentinel-master{}",
            &url[..start],
            &rest[..host_start],
            &rest[end..]
        )
    } else {
        url.to_owned()
    }
}

/// A connection to the Redis master. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RedisConnection {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    manager_config: ConnectionManagerConfig,
    command_timeout: Duration,
    key_prefix: String,
    /// The connection in use, with a generation so a stale failure cannot drop a fresh one.
    current: Mutex<Option<(u64, ConnectionManager)>>,
    /// Serialises master look-ups (Sentinel).
    resolving: tokio::sync::Mutex<u64>,
    /// Where, for logs (no credentials).
    shown: String,
}

enum Target {
    Direct,
    Sentinel(Box<tokio::sync::Mutex<SentinelClient>>),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("target", &self.inner.shown)
            .field("key_prefix", &self.inner.key_prefix)
            .field("command_timeout", &self.inner.command_timeout)
            .finish()
    }
}

impl RedisConnection {
    /// Prepares a connection; nothing is sent until the first call, so this succeeds while
    /// Redis is away (calls then fail with [`StoreError::Unavailable`] until it is back).
    pub fn open(config: &RedisConfig) -> Result<Self, RedisConfigError> {
        config.validate()?;
        if config.uses_tls() {
            // rustls needs a process-wide crypto provider; keep one installed by the program.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let url = match config.sentinel {
            // The master's address comes from the sentinels; the URL may leave it out.
            Some(_) => with_host(config.url.trim()),
            None => config.url.trim().to_owned(),
        };
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(|_| RedisConfigError::invalid("url", "not a valid Redis URL"))?;
        let mut settings = info.redis_settings().clone();
        if let Some(username) = &config.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &config.password {
            settings = settings.set_password(password);
        }
        if let Some(db) = config.db {
            settings = settings.set_db(db);
        }
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY)
            .set_number_of_retries(RECONNECT_ATTEMPTS);
        let certificates = match &config.tls_ca_file {
            Some(path) => Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|e| {
                    RedisConfigError::invalid("tls_ca_file", format!("{}: {e}", path.display()))
                })?),
            }),
            None => None,
        };
        let (target, current, shown) = match &config.sentinel {
            None => {
                let info = info.set_redis_settings(settings);
                let client = match certificates {
                    Some(certificates) => Client::build_with_tls(info, certificates),
                    None => Client::open(info),
                }
                .map_err(|e| RedisConfigError::invalid("url", e.to_string()))?;
                let manager =
                    ConnectionManager::new_lazy_with_config(client, manager_config.clone())
                        .map_err(|e| RedisConfigError::invalid("url", e.to_string()))?;
                (Target::Direct, Some((0, manager)), redact_url(&config.url))
            }
            Some(sentinel) => {
                let tls = config.uses_tls();
                let mut addresses = Vec::with_capacity(sentinel.addresses.len());
                for address in &sentinel.addresses {
                    let (host, port) = split_host_port(address, 26379)?;
                    addresses.push(if tls {
                        ConnectionAddr::TcpTls {
                            host,
                            port,
                            insecure: false,
                            tls_params: None,
                        }
                    } else {
                        ConnectionAddr::Tcp(host, port)
                    });
                }
                let mut builder = SentinelClientBuilder::new(
                    addresses,
                    &sentinel.master_name,
                    SentinelServerType::Master,
                )
                .map_err(|e| RedisConfigError::invalid("sentinel", e.to_string()))?
                .set_client_to_redis_db(settings.db());
                if let Some(username) = settings.username() {
                    builder = builder.set_client_to_redis_username(username);
                }
                if let Some(password) = settings.password() {
                    builder = builder.set_client_to_redis_password(password);
                }
                if let Some(password) = &sentinel.password {
                    builder = builder.set_client_to_sentinel_password(password);
                }
                if tls {
                    builder = builder
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                }
                if let Some(certificates) = certificates {
                    builder = builder
                        .set_client_to_redis_certificates(certificates.clone())
                        .set_client_to_sentinel_certificates(certificates);
                }
                let client = builder
                    .build()
                    .map_err(|e| RedisConfigError::invalid("sentinel", e.to_string()))?;
                let shown = format!(
                    "sentinel master {} via {}",
                    sentinel.master_name,
                    sentinel.addresses.join(",")
                );
                (
                    Target::Sentinel(Box::new(tokio::sync::Mutex::new(client))),
                    None,
                    shown,
                )
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                manager_config,
                command_timeout: config.command_timeout,
                key_prefix: config.key_prefix.clone(),
                current: Mutex::new(current),
                resolving: tokio::sync::Mutex::new(0),
                shown,
            }),
        })
    }

    /// The prefix of every key.
    pub fn key_prefix(&self) -> &str {
        &self.inner.key_prefix
    }

    /// The limit of one call.
    pub fn command_timeout(&self) -> Duration {
        self.inner.command_timeout
    }

    /// Runs `op` on the connection within the command timeout. Every failure (no answer in
    /// time, connection lost, a Redis error) is [`StoreError::Unavailable`].
    pub(crate) async fn call<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.call_within(what, self.inner.command_timeout, op).await
    }

    /// [`call`](Self::call) with an explicit limit.
    pub(crate) async fn call_within<T, F, Fut>(
        &self,
        what: &'static str,
        limit: Duration,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempt = async {
            let (generation, manager) = self.manager().await?;
            op(manager).await.map_err(|e| (Some(generation), e))
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err((generation, error))) => {
                if let Some(generation) = generation
                    && self.master_may_have_moved(&error)
                {
                    self.forget(generation);
                }
                tracing::debug!(target: "jitsi_scaler::redis", call = what, error = %error, redis = %self.inner.shown, "Redis call failed");
                Err(StoreError::Unavailable(format!("Redis {what}: {error}")))
            }
            Err(_) => {
                let generation = self.lock_current().as_ref().map(|(g, _)| *g);
                if let (Target::Sentinel(_), Some(generation)) = (&self.inner.target, generation) {
                    self.forget(generation);
                }
                tracing::debug!(target: "jitsi_scaler::redis", call = what, timeout_ms = limit.as_millis() as u64, redis = %self.inner.shown, "Redis call timed out");
                Err(StoreError::Unavailable(format!(
                    "Redis {what}: no answer within {} ms",
                    limit.as_millis()
                )))
            }
        }
    }

    fn lock_current(&self) -> MutexGuard<'_, Option<(u64, ConnectionManager)>> {
        // The slot holds a plain value replaced in one assignment: a panic elsewhere cannot
        // leave it half-written.
        self.inner.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection in use, looking the master up first when there is none.
    async fn manager(&self) -> Result<(u64, ConnectionManager), (Option<u64>, RedisError)> {
        if let Some(current) = self.lock_current().clone() {
            return Ok(current);
        }
        let Target::Sentinel(sentinel) = &self.inner.target else {
            return Err((
                None,
                RedisError::from((::redis::ErrorKind::Client, "no Redis connection")),
            ));
        };
        let mut generation = self.inner.resolving.lock().await;
        if let Some(current) = self.lock_current().clone() {
            return Ok(current);
        }
        let client = sentinel
            .lock()
            .await
            .async_get_client()
            .await
            .map_err(|e| (None, e))?;
        let manager =
            ConnectionManager::new_lazy_with_config(client, self.inner.manager_config.clone())
                .map_err(|e| (None, e))?;
        *generation += 1;
        tracing::info!(target: "jitsi_scaler::redis", redis = %self.inner.shown, generation = *generation, "Redis master looked up through Sentinel");
        *self.lock_current() = Some((*generation, manager.clone()));
        Ok((*generation, manager))
    }

    /// With Sentinel, errors that suggest the master changed: the next call looks it up again.
    fn master_may_have_moved(&self, error: &RedisError) -> bool {
        matches!(self.inner.target, Target::Sentinel(_))
            && (error.kind() == ::redis::ErrorKind::Server(ServerErrorKind::ReadOnly)
                || error.is_io_error()
                || error.is_connection_dropped()
                || error.is_connection_refusal()
                || error.is_timeout())
    }

    fn forget(&self, generation: u64) {
        let mut current = self.lock_current();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            tracing::warn!(target: "jitsi_scaler::redis", redis = %self.inner.shown, "Redis master unreachable or read-only; looking it up again");
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_may_leave_the_host_out() {
        assert_eq!(with_host("redis://"), "redis://sentinel-master");
        assert_eq!(
            with_host("rediss://:pw@/2"),
            "rediss://:pw@sentinel-master/2"
        );
        assert_eq!(with_host("redis://h:1/0"), "redis://h:1/0");
    }

    #[tokio::test]
    async fn opening_needs_no_server_and_calls_fail_as_unavailable() {
        // A port nothing listens on: opening succeeds, calls fail in time.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let conn = RedisConnection::open(
            &RedisConfig::new(format!("redis://127.0.0.1:{port}"))
                .with_timeout(Duration::from_millis(300)),
        )
        .expect("open");
        let r = conn
            .call("ping", |mut con| async move {
                ::redis::cmd("PING").query_async::<String>(&mut con).await
            })
            .await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        assert!(!format!("{conn:?}").is_empty());
    }
}
