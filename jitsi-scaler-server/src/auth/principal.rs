//! Who is calling (a [`Principal`]) and what each [`Role`] may do.

use std::sync::Arc;

use http::Method;

use super::error::{AuthError, Reason};

/// The path prefix of the sidecar routes.
const SIDECAR_PREFIX: &str = "/sidecar";

/// What a credential may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A sidecar: only `/sidecar/*`.
    Sidecar,
    /// An observer: only `GET`/`HEAD`, and not on `/sidecar/*`.
    Read,
    /// An operator: every route.
    Admin,
}

impl Role {
    /// The role's name as written in configuration (`sidecar`, `read`, `admin`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Sidecar => "sidecar",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    /// Parses `sidecar`, `read` or `admin` (any case).
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Sidecar, Role::Read, Role::Admin]
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// Checks that this role may call `method path`; the refusal is a `403` reason.
    pub fn permits(self, method: &Method, path: &str) -> Result<(), Reason> {
        let sidecar_route = is_sidecar_path(path);
        match self {
            Role::Admin => Ok(()),
            Role::Sidecar if sidecar_route => Ok(()),
            Role::Sidecar => Err(Reason::SidecarScopeOnly),
            Role::Read if sidecar_route => Err(Reason::ReadNotOnSidecar),
            Role::Read if method == Method::GET || method == Method::HEAD => Ok(()),
            Role::Read => Err(Reason::ReadOnly),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `/sidecar` itself or anything below `/sidecar/`.
fn is_sidecar_path(path: &str) -> bool {
    path.strip_prefix(SIDECAR_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// How the caller proved who it is. Holds no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A verified ASAP JWT.
    Asap {
        /// The token's `iss`.
        issuer: Arc<str>,
        /// The token's `sub`, if any.
        subject: Option<Arc<str>>,
        /// The header's `kid`.
        key_id: Arc<str>,
    },
    /// A configured static bearer token, named by where it was configured
    /// (e.g. `JITSI_SCALER_TOKENS#2` or `/etc/jitsi-scaler/tokens:5`).
    StaticToken {
        /// Where the token was configured.
        label: Arc<str>,
    },
    /// Authentication is disabled (`PROTECTED_API=false`).
    Unauthenticated,
}

/// An authenticated caller. Cloning is cheap (no allocation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// What the caller may do.
    pub role: Role,
    /// How the caller authenticated.
    pub credential: Credential,
    /// The only instance this caller may report for: a sidecar token's `sub`.
    pub(crate) bound_instance: Option<Arc<str>>,
}

impl Principal {
    /// The caller when authentication is disabled: may do everything.
    pub fn unauthenticated() -> Self {
        Self {
            role: Role::Admin,
            credential: Credential::Unauthenticated,
            bound_instance: None,
        }
    }

    /// The instance this caller is restricted to, if any (a sidecar token's `sub`).
    pub fn bound_instance(&self) -> Option<&str> {
        self.bound_instance.as_deref()
    }

    /// Checks that this caller may report for `instance_id`: a sidecar token that carries a
    /// `sub` may only report for that instance (`403` otherwise). Sidecar handlers call this
    /// with the parsed `instanceId`.
    pub fn check_instance_id(&self, instance_id: &str) -> Result<(), AuthError> {
        match self.bound_instance.as_deref() {
            Some(bound) if bound != instance_id => {
                Err(AuthError::Forbidden(Reason::InstanceMismatch))
            }
            _ => Ok(()),
        }
    }

    /// A non-secret name of the caller for logs and audit entries
    /// (`asap:<iss>`, `token:<label>`, `anonymous`).
    pub fn display_name(&self) -> String {
        match &self.credential {
            Credential::Asap { issuer, .. } => format!("asap:{issuer}"),
            Credential::StaticToken { label } => format!("token:{label}"),
            Credential::Unauthenticated => String::from("anonymous"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_matrix() {
        let get = Method::GET;
        let put = Method::PUT;
        let post = Method::POST;
        let delete = Method::DELETE;

        assert_eq!(Role::Sidecar.permits(&post, "/sidecar/poll"), Ok(()));
        assert_eq!(Role::Sidecar.permits(&post, "/sidecar/status"), Ok(()));
        assert_eq!(
            Role::Sidecar.permits(&get, "/groups"),
            Err(Reason::SidecarScopeOnly)
        );
        assert_eq!(
            Role::Sidecar.permits(&put, "/groups/g1"),
            Err(Reason::SidecarScopeOnly)
        );
        assert_eq!(
            Role::Sidecar.permits(&post, "/sidecarx/poll"),
            Err(Reason::SidecarScopeOnly),
            "a prefix that is not a path segment is not the sidecar scope"
        );

        assert_eq!(Role::Read.permits(&get, "/groups"), Ok(()));
        assert_eq!(Role::Read.permits(&get, "/groups/g1/report"), Ok(()));
        assert_eq!(Role::Read.permits(&Method::HEAD, "/groups"), Ok(()));
        assert_eq!(
            Role::Read.permits(&put, "/groups/g1"),
            Err(Reason::ReadOnly)
        );
        assert_eq!(
            Role::Read.permits(&delete, "/groups/g1"),
            Err(Reason::ReadOnly)
        );
        assert_eq!(
            Role::Read.permits(&post, "/sidecar/poll"),
            Err(Reason::ReadNotOnSidecar)
        );

        for (method, path) in [
            (&get, "/groups"),
            (&put, "/groups/g1"),
            (&delete, "/groups/g1"),
            (&post, "/groups/actions/reset"),
            (&post, "/sidecar/poll"),
        ] {
            assert_eq!(Role::Admin.permits(method, path), Ok(()), "{method} {path}");
        }
    }

    #[test]
    fn role_names_round_trip() {
        for role in [Role::Sidecar, Role::Read, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse(" ADMIN "), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn instance_binding() {
        let bound = Principal {
            role: Role::Sidecar,
            credential: Credential::Asap {
                issuer: Arc::from("jitsi-autoscaler-sidecar"),
                subject: Some(Arc::from("i-1")),
                key_id: Arc::from("k"),
            },
            bound_instance: Some(Arc::from("i-1")),
        };
        assert_eq!(bound.check_instance_id("i-1"), Ok(()));
        assert_eq!(
            bound.check_instance_id("i-2"),
            Err(AuthError::Forbidden(Reason::InstanceMismatch))
        );
        let unbound = Principal {
            bound_instance: None,
            ..bound
        };
        assert_eq!(unbound.check_instance_id("i-2"), Ok(()));
        assert_eq!(Principal::unauthenticated().check_instance_id("x"), Ok(()));
    }
}
