//! Authentication and authorization of API requests.
//!
//! Every request to the API port carries `Authorization: Bearer <token>`, where the token is
//! either an ASAP JWT (RS256, verified against keys published per `kid`, as the reference
//! sidecar sends it) or a configured static token. The credential gives a [`Role`]:
//!
//! | role | may call |
//! | --- | --- |
//! | `sidecar` | `/sidecar/*` only (and, when its token has a `sub`, only for that instance) |
//! | `read` | `GET`/`HEAD` outside `/sidecar/*` |
//! | `admin` | everything |
//!
//! ASAP issuers get their role from the list they are in (`ASAP_JWT_ACCEPTED_HOOK_ISS`,
//! `ASAP_JWT_ACCEPTED_READ_ISS`, `ASAP_JWT_ACCEPTED_ADMIN_ISS`); `ASAP_SINGLE_SCOPE=true`
//! restores the reference's single scope (every accepted issuer may call everything).
//!
//! The router calls [`Authenticator::authorize`] once per request; sidecar handlers then call
//! [`Principal::check_instance_id`] with the parsed `instanceId`.

mod asap;
mod config;
mod error;
mod keys;
mod metrics;
mod principal;
mod public_key;
mod static_tokens;
mod token_cache;

use std::sync::Arc;

use http::{HeaderValue, Method};
use jitsi_scaler_core::clock::{Clock, SystemClock};

pub use config::{
    AuthConfig, AuthConfigError, DEFAULT_AUDIENCE, DEFAULT_SIDECAR_ISSUER, MAX_FETCH_TIMEOUT,
    MAX_LEEWAY, MAX_NEGATIVE_TTL, MAX_STALE, env,
};
pub use error::{AuthError, Reason};
pub use keys::{MAX_CACHED_KIDS, MAX_CONCURRENT_FETCHES};
pub use metrics::AuthMetricsSnapshot;
pub use principal::{Credential, Principal, Role};
pub use public_key::{
    MIN_RSA_BITS, PublicKeyError, kid_file_stem, parse_rsa_public_key_pem, public_key_url,
};
pub use static_tokens::{MIN_TOKEN_LEN, StaticToken, StaticTokenError};

use asap::{AsapSettings, AsapVerifier};
use keys::{KeyStore, KeyStoreSettings};
use metrics::AuthMetrics;
use static_tokens::{StaticTokens, token_hash};
use token_cache::{TokenHash, VerifiedTokenCache};

/// Longest accepted bearer token, in bytes.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Decides who is calling and whether they may. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    enabled: bool,
    single_scope: bool,
    static_tokens: StaticTokens,
    asap: Option<AsapVerifier>,
    token_cache: VerifiedTokenCache,
    clock: Arc<dyn Clock>,
    metrics: Arc<AuthMetrics>,
    warnings: Vec<String>,
}

impl Authenticator {
    /// An authenticator for `config` (reads the token file, if any). It may be built outside
    /// a runtime; [`Self::authorize`] must run on a tokio runtime (key fetches run as tasks).
    pub fn new(config: AuthConfig) -> Result<Self, AuthConfigError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// As [`Self::new`], with wall time from `clock` (for tests).
    pub fn with_clock(config: AuthConfig, clock: Arc<dyn Clock>) -> Result<Self, AuthConfigError> {
        config.validate()?;
        if !config.protected {
            return Ok(Self::disabled());
        }
        let metrics = Arc::new(AuthMetrics::default());

        let mut tokens = config.static_tokens.clone();
        if let Some(path) = &config.tokens_file {
            tokens.extend(StaticToken::read_file(path)?);
        }
        let static_tokens = StaticTokens::new(&tokens)?;

        let asap = match &config.pub_key_base_url {
            None => None,
            Some(base_url) => {
                let keys = KeyStore::new(
                    KeyStoreSettings {
                        base_url: base_url.clone(),
                        ttl: config.pub_key_ttl,
                        negative_ttl: config.pub_key_negative_ttl,
                        max_stale: config.pub_key_max_stale,
                        fetch_timeout: config.pub_key_fetch_timeout,
                    },
                    clock.clone(),
                    metrics.clone(),
                )
                .map_err(|e| AuthConfigError::HttpClient(e.without_url().to_string()))?;
                Some(AsapVerifier::new(
                    AsapSettings {
                        audience: config.audience.clone(),
                        issuers: config.issuer_roles(),
                        leeway_s: config.leeway.as_secs() as i64,
                        key_ttl_ms: config.pub_key_ttl.as_millis() as i64,
                    },
                    Arc::new(keys),
                    clock.clone(),
                    metrics.clone(),
                ))
            }
        };

        let warnings = startup_warnings(&config, &static_tokens);
        Ok(Self {
            inner: Arc::new(Inner {
                enabled: true,
                single_scope: config.single_scope,
                static_tokens,
                asap,
                token_cache: VerifiedTokenCache::new(config.token_cache_capacity),
                clock,
                metrics,
                warnings,
            }),
        })
    }

    /// An authenticator that lets every request through (`PROTECTED_API=false`).
    pub fn disabled() -> Self {
        Self {
            inner: Arc::new(Inner {
                enabled: false,
                single_scope: false,
                static_tokens: StaticTokens::default(),
                asap: None,
                token_cache: VerifiedTokenCache::new(0),
                clock: Arc::new(SystemClock),
                metrics: Arc::new(AuthMetrics::default()),
                warnings: vec![String::from(
                    "PROTECTED_API=false: authentication is disabled; anyone who reaches the \
                     API port may change groups and post for any instance",
                )],
            }),
        }
    }

    /// Whether requests are authenticated at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Whether the reference's single scope is on (`ASAP_SINGLE_SCOPE=true`).
    pub fn is_single_scope(&self) -> bool {
        self.inner.single_scope
    }

    /// Conditions an operator should be warned about at start-up (log each one at `warn`):
    /// authentication disabled, single scope, no admin credential, keys over plain HTTP.
    pub fn startup_warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    /// The counters so far.
    pub fn metrics(&self) -> AuthMetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Authenticates the request's `Authorization` header and checks that the caller may call
    /// `method path` (the request's URI path). `401` when no valid credential is presented,
    /// `403` when a valid one is used outside its role.
    pub async fn authorize(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<Principal, AuthError> {
        let result = permitted(
            self.authenticate_unrecorded(authorization).await,
            method,
            path,
        );
        self.record(&result, method.as_str(), path);
        result
    }

    /// [`Self::authorize`] when memory can answer it, without waiting: authentication off, a
    /// static token, an ASAP token verified before and still valid, or a refusal no key could
    /// change. `None` when a signature must be verified (which may fetch a public key).
    pub fn authorize_from_memory(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&HeaderValue>,
    ) -> Option<Result<Principal, AuthError>> {
        let FromMemory::Known(authenticated) = self.authenticate_from_memory(authorization) else {
            return None;
        };
        let result = permitted(authenticated, method, path);
        self.record(&result, method.as_str(), path);
        Some(result)
    }

    /// Authenticates the `Authorization` header without a route check (`401` errors only).
    pub async fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
    ) -> Result<Principal, AuthError> {
        let result = self.authenticate_unrecorded(authorization).await;
        self.record(&result, "-", "-");
        result
    }

    fn record(&self, result: &Result<Principal, AuthError>, method: &str, path: &str) {
        match result {
            Ok(_) => AuthMetrics::inc(&self.inner.metrics.authorized),
            Err(err) => {
                self.inner.metrics.refused(err.reason());
                tracing::debug!(
                    method,
                    path,
                    status = err.status().as_u16(),
                    reason = err.reason().label(),
                    "request refused"
                );
            }
        }
    }

    /// Authentication as far as memory can take it.
    fn authenticate_from_memory<'t>(
        &'t self,
        authorization: Option<&'t HeaderValue>,
    ) -> FromMemory<'t> {
        let inner = &*self.inner;
        if !inner.enabled {
            return FromMemory::Known(Ok(Principal::unauthenticated()));
        }
        let unauthorized = AuthError::Unauthorized;
        let token = match authorization
            .ok_or(Reason::MissingToken)
            .and_then(bearer_token)
        {
            Ok(token) => token,
            Err(reason) => return FromMemory::Known(Err(unauthorized(reason))),
        };
        let hash = token_hash(token);
        if let Some(principal) = inner.static_tokens.get(&hash) {
            return FromMemory::Known(Ok(principal.clone()));
        }
        let asap = match &inner.asap {
            Some(asap) if looks_like_jwt(token) => asap,
            _ => return FromMemory::Known(Err(unauthorized(Reason::UnknownToken))),
        };
        match inner.token_cache.get(&hash, inner.clock.now_ms()) {
            Some(principal) => {
                AuthMetrics::inc(&inner.metrics.token_cache_hits);
                FromMemory::Known(Ok(principal))
            }
            None => FromMemory::Unverified { asap, token, hash },
        }
    }

    async fn authenticate_unrecorded(
        &self,
        authorization: Option<&HeaderValue>,
    ) -> Result<Principal, AuthError> {
        let (asap, token, hash) = match self.authenticate_from_memory(authorization) {
            FromMemory::Known(result) => return result,
            FromMemory::Unverified { asap, token, hash } => (asap, token, hash),
        };
        let inner = &*self.inner;
        let now_ms = inner.clock.now_ms();
        AuthMetrics::inc(&inner.metrics.token_cache_misses);
        let verified = asap.verify(token).await.map_err(AuthError::Unauthorized)?;
        inner.token_cache.insert(
            hash,
            verified.principal.clone(),
            verified.reuse_until_ms,
            now_ms,
        );
        Ok(verified.principal)
    }
}

/// How far memory took an authentication.
enum FromMemory<'t> {
    /// Decided: authentication off, a static token, a cached ASAP token, or a refusal.
    Known(Result<Principal, AuthError>),
    /// An ASAP token not verified yet (or no longer cached): its signature must be checked.
    Unverified {
        asap: &'t AsapVerifier,
        token: &'t str,
        hash: TokenHash,
    },
}

/// `principal`, when its role may call `method path`.
fn permitted(
    principal: Result<Principal, AuthError>,
    method: &Method,
    path: &str,
) -> Result<Principal, AuthError> {
    let principal = principal?;
    principal
        .role
        .permits(method, path)
        .map(|()| principal)
        .map_err(AuthError::Forbidden)
}

/// The token of `Bearer <token>` (scheme in any case).
fn bearer_token(value: &HeaderValue) -> Result<&str, Reason> {
    let value = value
        .to_str()
        .map_err(|_| Reason::MalformedAuthorization)?
        .trim();
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(Reason::MalformedAuthorization)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Reason::MalformedAuthorization);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Reason::MissingToken);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(Reason::MalformedToken);
    }
    Ok(token)
}

/// Three dot-separated parts: worth verifying as a JWT.
fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

fn startup_warnings(config: &AuthConfig, static_tokens: &StaticTokens) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.single_scope {
        warnings.push(String::from(
            "ASAP_SINGLE_SCOPE=true: every accepted issuer may call every route, as in the \
             reference (a sidecar key can change groups and post for any instance)",
        ));
    }
    let admin_issuers = config.single_scope || !config.admin_issuers.is_empty();
    let asap_admin = config.pub_key_base_url.is_some() && admin_issuers;
    if !asap_admin && !static_tokens.has_role(Role::Admin) {
        warnings.push(String::from(
            "no admin credential is configured (ASAP_JWT_ACCEPTED_ADMIN_ISS, or an admin token \
             in JITSI_SCALER_TOKENS / JITSI_SCALER_TOKENS_FILE): group changes will be refused",
        ));
    }
    if config
        .pub_key_base_url
        .as_deref()
        .is_some_and(|url| url.starts_with("http://"))
    {
        warnings.push(String::from(
            "ASAP_PUB_KEY_BASE_URL uses plain http: public keys can be altered in transit",
        ));
    }
    if config.pub_key_base_url.is_none() && !static_tokens.is_empty() {
        warnings.push(String::from(
            "ASAP_PUB_KEY_BASE_URL is not set: ASAP tokens (the sidecar's) are refused; only \
             static tokens are accepted",
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-token-0123456789";
    const READ: &str = "read-token-0123456789";
    const SIDECAR: &str = "sidecar-token-0123456789";

    fn tokens_only() -> Authenticator {
        let config = AuthConfig {
            static_tokens: StaticToken::parse_list(
                "T",
                &format!("admin:{ADMIN},read:{READ},sidecar:{SIDECAR}"),
            )
            .expect("valid"),
            ..AuthConfig::default()
        };
        Authenticator::new(config).expect("valid config")
    }

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header")
    }

    async fn call(
        auth: &Authenticator,
        method: Method,
        path: &str,
        token: &str,
    ) -> Result<Role, AuthError> {
        auth.authorize(&method, path, Some(&bearer(token)))
            .await
            .map(|p| p.role)
    }

    #[tokio::test]
    async fn static_token_role_matrix() {
        let auth = tokens_only();
        let forbidden = |r| Err(AuthError::Forbidden(r));
        assert_eq!(
            call(&auth, Method::POST, "/sidecar/poll", SIDECAR).await,
            Ok(Role::Sidecar)
        );
        assert_eq!(
            call(&auth, Method::GET, "/groups", SIDECAR).await,
            forbidden(Reason::SidecarScopeOnly)
        );
        assert_eq!(
            call(&auth, Method::GET, "/groups/g/report", READ).await,
            Ok(Role::Read)
        );
        assert_eq!(
            call(&auth, Method::PUT, "/groups/g", READ).await,
            forbidden(Reason::ReadOnly)
        );
        assert_eq!(
            call(&auth, Method::POST, "/sidecar/poll", READ).await,
            forbidden(Reason::ReadNotOnSidecar)
        );
        for (method, path) in [
            (Method::PUT, "/groups/g"),
            (Method::DELETE, "/groups/g"),
            (Method::GET, "/groups"),
            (Method::POST, "/sidecar/status"),
        ] {
            assert_eq!(
                call(&auth, method, path, ADMIN).await,
                Ok(Role::Admin),
                "{path}"
            );
        }
        assert_eq!(
            call(&auth, Method::GET, "/groups", "admin-token-012345678X").await,
            Err(AuthError::Unauthorized(Reason::UnknownToken))
        );
        let principal = auth
            .authorize(&Method::POST, "/sidecar/poll", Some(&bearer(SIDECAR)))
            .await
            .expect("sidecar");
        assert_eq!(principal.check_instance_id("any"), Ok(()));
        assert_eq!(principal.display_name(), "token:T#3");

        let m = auth.metrics();
        assert_eq!(m.authorized, 7);
        assert_eq!(m.refused_for(Reason::SidecarScopeOnly), 1);
        assert_eq!(m.refused_for(Reason::ReadOnly), 1);
        assert_eq!(m.refused_for(Reason::UnknownToken), 1);
        assert_eq!(m.signature_verifications, 0);
    }

    #[tokio::test]
    async fn authorization_header_forms() {
        let auth = tokens_only();
        let get = |value: Option<HeaderValue>| {
            let auth = auth.clone();
            async move {
                auth.authorize(&Method::GET, "/groups", value.as_ref())
                    .await
                    .map(|p| p.role)
            }
        };
        assert_eq!(
            get(None).await,
            Err(AuthError::Unauthorized(Reason::MissingToken))
        );
        assert_eq!(
            get(Some(HeaderValue::from_static("Basic YWRtaW46YWRtaW4="))).await,
            Err(AuthError::Unauthorized(Reason::MalformedAuthorization))
        );
        assert_eq!(
            get(Some(HeaderValue::from_static("Bearer"))).await,
            Err(AuthError::Unauthorized(Reason::MalformedAuthorization))
        );
        assert_eq!(
            get(Some(HeaderValue::from_static("Bearer   "))).await,
            Err(AuthError::Unauthorized(Reason::MalformedAuthorization))
        );
        assert_eq!(
            get(Some(
                HeaderValue::from_str(&format!("bearer  {ADMIN} ")).expect("h")
            ))
            .await,
            Ok(Role::Admin)
        );
        assert_eq!(
            get(Some(
                HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("h")
            ))
            .await,
            Err(AuthError::Unauthorized(Reason::MalformedAuthorization))
        );
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(
            get(Some(HeaderValue::from_str(&huge).expect("h"))).await,
            Err(AuthError::Unauthorized(Reason::MalformedToken))
        );
    }

    #[tokio::test]
    async fn jwt_without_key_server_is_refused() {
        let auth = tokens_only();
        assert_eq!(
            call(
                &auth,
                Method::POST,
                "/sidecar/poll",
                "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"
            )
            .await,
            Err(AuthError::Unauthorized(Reason::UnknownToken))
        );
        assert!(
            auth.startup_warnings()
                .iter()
                .any(|w| w.contains("ASAP_PUB_KEY_BASE_URL is not set"))
        );
    }

    #[tokio::test]
    async fn disabled_lets_everything_through() {
        let auth = Authenticator::disabled();
        assert!(!auth.is_enabled());
        let principal = auth
            .authorize(&Method::DELETE, "/groups/g", None)
            .await
            .expect("open");
        assert_eq!(principal.role, Role::Admin);
        assert_eq!(principal.credential, Credential::Unauthenticated);
        assert!(auth.startup_warnings()[0].starts_with("PROTECTED_API=false"));

        let from_config = Authenticator::new(AuthConfig {
            protected: false,
            ..AuthConfig::default()
        })
        .expect("valid");
        assert!(!from_config.is_enabled());
    }

    #[tokio::test]
    async fn startup_warnings_name_single_scope_and_missing_admin() {
        let base = AuthConfig {
            pub_key_base_url: Some(String::from("https://keys.example")),
            ..AuthConfig::default()
        };
        let plain = Authenticator::new(base.clone()).expect("valid");
        assert!(!plain.is_single_scope());
        assert!(
            plain
                .startup_warnings()
                .iter()
                .any(|w| w.contains("no admin credential"))
        );
        assert!(
            !plain
                .startup_warnings()
                .iter()
                .any(|w| w.contains("SINGLE_SCOPE"))
        );

        let single = Authenticator::new(AuthConfig {
            single_scope: true,
            ..base.clone()
        })
        .expect("valid");
        assert!(single.is_single_scope());
        assert!(
            single
                .startup_warnings()
                .iter()
                .any(|w| w.starts_with("ASAP_SINGLE_SCOPE=true"))
        );
        assert!(
            !single
                .startup_warnings()
                .iter()
                .any(|w| w.contains("no admin credential"))
        );

        let with_admin = Authenticator::new(AuthConfig {
            admin_issuers: vec![String::from("ops")],
            ..base
        })
        .expect("valid");
        assert!(
            with_admin.startup_warnings().is_empty(),
            "{:?}",
            with_admin.startup_warnings()
        );
    }

    #[test]
    fn builds_outside_a_runtime() {
        let auth = Authenticator::new(AuthConfig {
            pub_key_base_url: Some(String::from("https://u:hunter2hunter2@keys.example/asap")),
            static_tokens: StaticToken::parse_list("T", &format!("admin:{ADMIN}")).expect("valid"),
            ..AuthConfig::default()
        })
        .expect("valid");
        assert!(auth.is_enabled());
        let shown = format!("{auth:?}");
        assert!(shown.contains("keys.example/asap"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains(ADMIN), "{shown}");
    }

    #[test]
    fn token_file_is_read_and_errors_name_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, format!("# ops\nadmin {ADMIN}\nread short\n")).expect("write");
        let err = Authenticator::new(AuthConfig {
            tokens_file: Some(path.clone()),
            ..AuthConfig::default()
        })
        .expect_err("short token");
        let shown = err.to_string();
        assert!(shown.contains(&format!("{}:3", path.display())), "{shown}");
        assert!(!shown.contains("short\n"));

        std::fs::write(&path, format!("# ops\nadmin {ADMIN}\n")).expect("write");
        let auth = Authenticator::new(AuthConfig {
            tokens_file: Some(path),
            ..AuthConfig::default()
        })
        .expect("valid");
        assert!(
            auth.startup_warnings()
                .iter()
                .all(|w| !w.contains("no admin credential"))
        );

        let missing = Authenticator::new(AuthConfig {
            tokens_file: Some(dir.path().join("absent")),
            ..AuthConfig::default()
        })
        .expect_err("missing file");
        assert!(missing.to_string().contains("cannot read"), "{missing}");
    }
}
