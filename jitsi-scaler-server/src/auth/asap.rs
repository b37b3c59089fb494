//! Verification of ASAP tokens (RS256 JWTs) as the reference server does it:
//! `kid` required, RS256 only, key from `${ASAP_PUB_KEY_BASE_URL}/${sha256_hex(kid)}.pem`,
//! `aud` equal to the configured audience, `exp` in the future, `iss` accepted.
//!
//! Additions: `exp` is required (the reference sidecar always sends it), `exp` and `nbf` get
//! a clock leeway, `iat`/`nbf`/`exp` must be numbers when present (as the reference's library
//! demands), `iss` decides the role, and a sidecar token's `sub` binds it to one instance.
//! A future `iat` is not refused: the reference accepts it, and the sidecar's clock may run ahead.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jitsi_scaler_core::clock::{Clock, UnixMillis};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::config::IssuerRole;
use super::error::Reason;
use super::keys::{KeyError, KeyStore};
use super::metrics::AuthMetrics;
use super::principal::{Credential, Principal};

/// Longest accepted `kid`, in bytes.
const MAX_KID_LEN: usize = 512;

/// The header fields that matter before the key is known.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// The claims, typed loosely so that wrong types give a precise reason.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    exp: Option<Value>,
    #[serde(default)]
    nbf: Option<Value>,
    #[serde(default)]
    iat: Option<Value>,
    #[serde(default)]
    iss: Option<Value>,
    #[serde(default)]
    sub: Option<Value>,
    #[serde(default)]
    aud: Option<Value>,
}

/// A token that passed every check.
#[derive(Clone, Debug)]
pub(crate) struct VerifiedToken {
    /// Who the token authenticates.
    pub(crate) principal: Principal,
    /// Until when the verification may be reused (the earlier of `exp` and the key's TTL).
    pub(crate) reuse_until_ms: UnixMillis,
}

/// The ASAP settings the verifier needs.
#[derive(Clone, Debug)]
pub(crate) struct AsapSettings {
    pub(crate) audience: String,
    pub(crate) issuers: HashMap<String, IssuerRole>,
    pub(crate) leeway_s: i64,
    pub(crate) key_ttl_ms: i64,
}

/// Verifies ASAP tokens against the published keys.
#[derive(Debug)]
pub(crate) struct AsapVerifier {
    settings: AsapSettings,
    keys: Arc<KeyStore>,
    clock: Arc<dyn Clock>,
    metrics: Arc<AuthMetrics>,
    validation: Validation,
}

impl AsapVerifier {
    pub(crate) fn new(
        settings: AsapSettings,
        keys: Arc<KeyStore>,
        clock: Arc<dyn Clock>,
        metrics: Arc<AuthMetrics>,
    ) -> Self {
        // jsonwebtoken checks the signature only; the claims are checked below with our clock.
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        Self {
            settings,
            keys,
            clock,
            metrics,
            validation,
        }
    }

    /// Verifies `token` (the text after `Bearer `).
    pub(crate) async fn verify(&self, token: &str) -> Result<VerifiedToken, Reason> {
        let header = parse_header(token)?;
        if header.alg != "RS256" {
            return Err(Reason::UnsupportedAlgorithm);
        }
        let kid = header.kid.ok_or(Reason::MissingKid)?;
        if kid.is_empty() || kid.len() > MAX_KID_LEN {
            return Err(Reason::InvalidKid);
        }
        let key = self.keys.get(&kid).await.map_err(|err| match err {
            KeyError::NotFound => Reason::UnknownKey,
            KeyError::Unavailable => Reason::KeyUnavailable,
        })?;
        AuthMetrics::inc(&self.metrics.signature_verifications);
        let claims = jsonwebtoken::decode::<RawClaims>(token, &key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_) => Reason::MalformedToken,
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                    Reason::UnsupportedAlgorithm
                }
                _ => Reason::BadSignature,
            })?
            .claims;
        self.check_claims(claims, kid)
    }

    fn check_claims(&self, claims: RawClaims, kid: String) -> Result<VerifiedToken, Reason> {
        let now_ms = self.clock.now_ms();
        let now_s = now_ms.div_euclid(1000) as f64;
        let leeway = self.settings.leeway_s as f64;

        let exp = claims
            .exp
            .as_ref()
            .and_then(Value::as_f64)
            .ok_or(Reason::InvalidClaims)?;
        if now_s >= exp + leeway {
            return Err(Reason::Expired);
        }
        if let Some(nbf) = &claims.nbf {
            let nbf = nbf.as_f64().ok_or(Reason::InvalidClaims)?;
            if nbf > now_s + leeway {
                return Err(Reason::NotYetValid);
            }
        }
        if claims.iat.as_ref().is_some_and(|iat| !iat.is_number()) {
            return Err(Reason::InvalidClaims);
        }
        if !audience_matches(claims.aud.as_ref(), &self.settings.audience) {
            return Err(Reason::WrongAudience);
        }
        let issuer = match &claims.iss {
            Some(Value::String(iss)) => iss.as_str(),
            _ => return Err(Reason::UnknownIssuer),
        };
        let issuer_role = *self
            .settings
            .issuers
            .get(issuer)
            .ok_or(Reason::UnknownIssuer)?;
        let subject: Option<Arc<str>> = match &claims.sub {
            None => None,
            Some(Value::String(sub)) => Some(Arc::from(sub.as_str())),
            Some(_) => return Err(Reason::InvalidClaims),
        };

        let exp_ms = (exp * 1000.0) as i64; // saturating
        let reuse_until_ms = exp_ms.min(now_ms.saturating_add(self.settings.key_ttl_ms));
        Ok(VerifiedToken {
            principal: Principal {
                role: issuer_role.role,
                bound_instance: subject.clone().filter(|_| issuer_role.binds_instance),
                credential: Credential::Asap {
                    issuer: Arc::from(issuer),
                    subject,
                    key_id: Arc::from(kid),
                },
            },
            reuse_until_ms,
        })
    }
}

/// `aud` as a string equal to `audience`, or an array containing it (as the reference's
/// library accepts).
fn audience_matches(aud: Option<&Value>, audience: &str) -> bool {
    match aud {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
}

/// The header of a compact JWS with three parts.
fn parse_header(token: &str) -> Result<RawHeader, Reason> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::MalformedToken);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| Reason::MalformedToken)?;
    serde_json::from_slice(&json).map_err(|_| Reason::MalformedToken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn header_parsing() {
        let token = format!(
            "{}.e30.c2ln",
            encode(r#"{"alg":"RS256","typ":"JWT","kid":"jitsi/test-kid"}"#)
        );
        let header = parse_header(&token).expect("valid");
        assert_eq!(header.alg, "RS256");
        assert_eq!(header.kid.as_deref(), Some("jitsi/test-kid"));

        for bad in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.c2ln"] {
            assert_eq!(
                parse_header(bad).err(),
                Some(Reason::MalformedToken),
                "{bad}"
            );
        }
        let kid_not_string = format!("{}.e30.c2ln", encode(r#"{"alg":"RS256","kid":7}"#));
        assert_eq!(
            parse_header(&kid_not_string).err(),
            Some(Reason::MalformedToken)
        );
    }

    #[test]
    fn audience_forms() {
        let aud = "jitsi-autoscaler";
        assert!(audience_matches(Some(&Value::from(aud)), aud));
        assert!(audience_matches(
            Some(&serde_json::json!(["other", aud])),
            aud
        ));
        assert!(!audience_matches(Some(&Value::from("other")), aud));
        assert!(!audience_matches(Some(&serde_json::json!(["other"])), aud));
        assert!(!audience_matches(None, aud));
        assert!(!audience_matches(Some(&Value::from(5)), aud));
    }
}
