//! Why a request was refused: `401` (who are you?) or `403` (not allowed to do this).

use http::StatusCode;

/// The reason a request was refused. Every reason is safe to show to the caller: it names the
/// failed check, never the token's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No `Authorization` header.
    MissingToken,
    /// The `Authorization` header is not `Bearer <token>`.
    MalformedAuthorization,
    /// The bearer token is neither a known static token nor a well-formed JWT.
    MalformedToken,
    /// The JWT is signed with another algorithm than RS256.
    UnsupportedAlgorithm,
    /// The JWT header has no `kid`.
    MissingKid,
    /// The JWT header's `kid` is unreasonably long or empty.
    InvalidKid,
    /// The key server publishes no key for the token's `kid` (or withdrew it).
    UnknownKey,
    /// The public key could not be fetched (timeout, connection error, bad answer).
    KeyUnavailable,
    /// The signature does not match the published key.
    BadSignature,
    /// `exp` is in the past (beyond the allowed clock leeway).
    Expired,
    /// `nbf` is in the future (beyond the allowed clock leeway).
    NotYetValid,
    /// `aud` is missing or does not name this service.
    WrongAudience,
    /// `iss` is missing or not an accepted issuer.
    UnknownIssuer,
    /// A claim has the wrong type, or `exp` is missing.
    InvalidClaims,
    /// A token that is not a JWT and not a configured static token.
    UnknownToken,
    /// A sidecar credential used outside `/sidecar/*`.
    SidecarScopeOnly,
    /// A read-only credential used for a method other than GET/HEAD.
    ReadOnly,
    /// A read-only credential used on `/sidecar/*`.
    ReadNotOnSidecar,
    /// A sidecar token whose `sub` is not the request's `instanceId`.
    InstanceMismatch,
}

impl Reason {
    /// Every reason, in a fixed order (for metrics).
    pub const ALL: [Reason; 19] = [
        Reason::MissingToken,
        Reason::MalformedAuthorization,
        Reason::MalformedToken,
        Reason::UnsupportedAlgorithm,
        Reason::MissingKid,
        Reason::InvalidKid,
        Reason::UnknownKey,
        Reason::KeyUnavailable,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::WrongAudience,
        Reason::UnknownIssuer,
        Reason::InvalidClaims,
        Reason::UnknownToken,
        Reason::SidecarScopeOnly,
        Reason::ReadOnly,
        Reason::ReadNotOnSidecar,
        Reason::InstanceMismatch,
    ];

    /// A short stable label, e.g. for a Prometheus `reason` label.
    pub const fn label(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::MalformedAuthorization => "malformed_authorization",
            Reason::MalformedToken => "malformed_token",
            Reason::UnsupportedAlgorithm => "unsupported_algorithm",
            Reason::MissingKid => "missing_kid",
            Reason::InvalidKid => "invalid_kid",
            Reason::UnknownKey => "unknown_key",
            Reason::KeyUnavailable => "key_unavailable",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongAudience => "wrong_audience",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::InvalidClaims => "invalid_claims",
            Reason::UnknownToken => "unknown_token",
            Reason::SidecarScopeOnly => "sidecar_scope_only",
            Reason::ReadOnly => "read_only",
            Reason::ReadNotOnSidecar => "read_not_on_sidecar",
            Reason::InstanceMismatch => "instance_mismatch",
        }
    }

    /// A sentence for the error body.
    pub const fn message(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing bearer token",
            Reason::MalformedAuthorization => "the Authorization header is not 'Bearer <token>'",
            Reason::MalformedToken => "the token is not a well-formed JWT",
            Reason::UnsupportedAlgorithm => "only RS256 tokens are accepted",
            Reason::MissingKid => "the token header has no kid",
            Reason::InvalidKid => "the token header's kid is empty or too long",
            Reason::UnknownKey => "no public key is published for the token's kid",
            Reason::KeyUnavailable => "the public key for the token's kid could not be fetched",
            Reason::BadSignature => "the token signature is invalid",
            Reason::Expired => "the token has expired",
            Reason::NotYetValid => "the token is not valid yet",
            Reason::WrongAudience => "the token's audience is not accepted",
            Reason::UnknownIssuer => "the token's issuer is not accepted",
            Reason::InvalidClaims => "the token's claims are invalid",
            Reason::UnknownToken => "invalid token",
            Reason::SidecarScopeOnly => "sidecar credentials may only call /sidecar/*",
            Reason::ReadOnly => "read-only credentials may only use GET",
            Reason::ReadNotOnSidecar => "read-only credentials may not call /sidecar/*",
            Reason::InstanceMismatch => "the token's subject is not the request's instanceId",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// A refused request. `Unauthorized` maps to `401` (answer with `WWW-Authenticate: Bearer`),
/// `Forbidden` to `403`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No valid credential: `401`.
    #[error("unauthorized: {0}")]
    Unauthorized(Reason),
    /// A valid credential that may not do this: `403`.
    #[error("forbidden: {0}")]
    Forbidden(Reason),
}

impl AuthError {
    /// The HTTP status to answer with.
    pub const fn status(&self) -> StatusCode {
        match self {
            AuthError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    /// Why the request was refused.
    pub const fn reason(&self) -> Reason {
        match self {
            AuthError::Unauthorized(reason) | AuthError::Forbidden(reason) => *reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_listed_in_index_order_with_unique_labels() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
        }
        let labels: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
    }

    #[test]
    fn statuses() {
        assert_eq!(
            AuthError::Unauthorized(Reason::Expired).status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            AuthError::Forbidden(Reason::ReadOnly).status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            AuthError::Forbidden(Reason::ReadOnly).reason(),
            Reason::ReadOnly
        );
    }
}
