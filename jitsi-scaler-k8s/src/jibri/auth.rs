//! Authentication of webhook callers: none, Jibri's RS256 token (`jwt-info`), or a shared
//! bearer token.
//!
//! Jibri's token has a `kid` header and `iss`/`aud` claims and no `iat`; current Jibri signs
//! it once at start-up and never refreshes it, so expiry is ignored unless configured
//! otherwise. Keys come from one PEM file, or from `<ASAP_PUB_KEY_BASE_URL>/<sha256(kid)>.pem`
//! (cached per `kid`; failures cached for a minute; a cached key is kept up to an hour past
//! its TTL while refreshes fail).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::config::{ConfigError, JwtConfig, JwtKeySource, Secret, WebhookAuthConfig};

/// Timeout of a key fetch.
const KEY_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a failed key fetch is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// How long a cached key is served past its TTL while refreshes fail.
const STALE_WHILE_ERROR: Duration = Duration::from_secs(3600);
/// Largest key document accepted.
const MAX_KEY_BYTES: usize = 64 * 1024;
/// Clock leeway on `exp`/`nbf`, seconds.
const LEEWAY_SECS: u64 = 60;

/// Checks the `Authorization` header of webhook requests.
pub(crate) enum Authenticator {
    None,
    Token(Secret),
    Jwt(Box<JwtVerifier>),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Authenticator::None => "Authenticator::None",
            Authenticator::Token(_) => "Authenticator::Token(<redacted>)",
            Authenticator::Jwt(_) => "Authenticator::Jwt",
        })
    }
}

impl Authenticator {
    pub(crate) fn new(
        config: &WebhookAuthConfig,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        Ok(match config {
            WebhookAuthConfig::None => Authenticator::None,
            WebhookAuthConfig::Token(secret) => Authenticator::Token(secret.clone()),
            WebhookAuthConfig::Jwt(jwt) => {
                Authenticator::Jwt(Box::new(JwtVerifier::new(jwt, http)?))
            }
        })
    }

    /// `Ok` when the caller may go on; the error says why not (for logs and the 401 answer).
    pub(crate) async fn verify(&self, authorization: Option<&str>) -> Result<(), String> {
        match self {
            Authenticator::None => Ok(()),
            Authenticator::Token(secret) => {
                let token = bearer(authorization)?;
                if constant_time_eq(token.as_bytes(), secret.expose().as_bytes()) {
                    Ok(())
                } else {
                    Err("invalid token".into())
                }
            }
            Authenticator::Jwt(verifier) => verifier.verify(bearer(authorization)?).await,
        }
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(authorization: Option<&str>) -> Result<&str, String> {
    let header = authorization.ok_or("missing Authorization header")?;
    let (scheme, token) = header
        .trim()
        .split_once(' ')
        .ok_or("malformed Authorization header")?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err("Authorization is not a bearer token".into());
    }
    Ok(token.trim())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The key file name of a `kid`: lowercase hex SHA-256 of its UTF-8 bytes.
pub fn kid_key_name(kid: &str) -> String {
    hex::encode(Sha256::digest(kid.as_bytes()))
}

pub(crate) struct JwtVerifier {
    keys: KeyStore,
    validation: Validation,
}

enum KeyStore {
    Static(DecodingKey),
    Asap(AsapKeys),
}

impl JwtVerifier {
    fn new(config: &JwtConfig, http: reqwest::Client) -> Result<Self, ConfigError> {
        let keys = match &config.keys {
            JwtKeySource::Pem(pem) => {
                KeyStore::Static(DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
                    ConfigError::new(
                        "WEBHOOK_JWT_PUBLIC_KEY_FILE",
                        format!("not an RSA public key: {e}"),
                    )
                })?)
            }
            JwtKeySource::AsapBaseUrl(base) => KeyStore::Asap(AsapKeys {
                base_url: base.clone(),
                http,
                ttl: config.key_ttl,
                cache: Mutex::new(HashMap::new()),
            }),
        };
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&config.issuers);
        validation.set_audience(&[config.audience.as_str()]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = !config.ignore_expiry;
        validation.validate_nbf = true;
        let mut required = vec!["iss", "aud"];
        if !config.ignore_expiry {
            required.push("exp");
        }
        validation.set_required_spec_claims(&required);
        Ok(Self { keys, validation })
    }

    async fn verify(&self, token: &str) -> Result<(), String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        if header.alg != Algorithm::RS256 {
            return Err(format!("algorithm {:?} is not RS256", header.alg));
        }
        let kid = header
            .kid
            .filter(|k| !k.is_empty())
            .ok_or("token has no kid")?;
        let key = match &self.keys {
            KeyStore::Static(key) => key.clone(),
            KeyStore::Asap(asap) => asap.key(&kid).await?,
        };
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &self.validation)
            .map(|_| ())
            .map_err(|e| format!("token rejected: {e}"))
    }
}

enum CachedKey {
    Found { key: DecodingKey, at: Instant },
    Failed { at: Instant, error: String },
}

struct AsapKeys {
    base_url: String,
    http: reqwest::Client,
    ttl: Duration,
    cache: Mutex<HashMap<String, CachedKey>>,
}

impl AsapKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedKey>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, String> {
        let stale = match self.lock().get(kid) {
            Some(CachedKey::Found { key, at }) if at.elapsed() < self.ttl => return Ok(key.clone()),
            Some(CachedKey::Failed { at, error }) if at.elapsed() < NEGATIVE_TTL => {
                return Err(error.clone());
            }
            Some(CachedKey::Found { key, at }) if at.elapsed() < self.ttl + STALE_WHILE_ERROR => {
                Some(key.clone())
            }
            _ => None,
        };
        match self.fetch(kid).await {
            Ok(key) => {
                self.lock().insert(
                    kid.to_owned(),
                    CachedKey::Found {
                        key: key.clone(),
                        at: Instant::now(),
                    },
                );
                Ok(key)
            }
            Err(error) => {
                if let Some(key) = stale {
                    tracing::warn!(kid, error = %error, "key refresh failed, using the cached key");
                    return Ok(key);
                }
                tracing::warn!(kid, error = %error, "public key fetch failed");
                self.lock().insert(
                    kid.to_owned(),
                    CachedKey::Failed {
                        at: Instant::now(),
                        error: error.clone(),
                    },
                );
                Err(error)
            }
        }
    }

    async fn fetch(&self, kid: &str) -> Result<DecodingKey, String> {
        let url = format!("{}/{}.pem", self.base_url, kid_key_name(kid));
        let response = self
            .http
            .get(&url)
            .timeout(KEY_FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("key fetch {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("key fetch {url}: HTTP {}", response.status()));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("key fetch {url}: {e}"))?;
        if body.len() > MAX_KEY_BYTES {
            return Err(format!("key fetch {url}: document too large"));
        }
        DecodingKey::from_rsa_pem(&body)
            .map_err(|e| format!("key fetch {url}: not an RSA public key: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_names_follow_the_asap_rule() {
        assert_eq!(
            kid_key_name("jitsi/test-kid"),
            "6c415d24f0e9d95bdcc755f854e77ce3afa0c0a4122196b5f066cd05393da9e0"
        );
    }

    #[test]
    fn bearer_tokens_are_extracted() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Ok("abc"));
        assert!(bearer(None).is_err());
        assert!(bearer(Some("Basic abc")).is_err());
        assert!(bearer(Some("Bearer")).is_err());
        assert!(bearer(Some("Bearer  ")).is_err());
    }

    #[tokio::test]
    async fn shared_tokens_compare_exactly() {
        crate::install_crypto_provider();
        let auth = Authenticator::new(
            &WebhookAuthConfig::Token(Secret::new("0123456789abcdef")),
            reqwest::Client::new(),
        )
        .expect("auth");
        assert!(auth.verify(Some("Bearer 0123456789abcdef")).await.is_ok());
        assert!(auth.verify(Some("Bearer 0123456789abcdeF")).await.is_err());
        assert!(auth.verify(Some("Bearer 0123456789abcde")).await.is_err());
        assert!(auth.verify(None).await.is_err());
        assert!(!format!("{auth:?}").contains("0123"));
        assert!(Authenticator::None.verify(None).await.is_ok());
    }
}
