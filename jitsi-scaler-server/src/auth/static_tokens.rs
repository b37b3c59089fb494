//! Static bearer tokens, each with a role, for operators and tools without an ASAP key.
//!
//! Two sources, usable together:
//! * the environment (`JITSI_SCALER_TOKENS`): `role:token` items separated by commas,
//!   e.g. `admin:3f9c…,read:77ab…`;
//! * a file (`JITSI_SCALER_TOKENS_FILE`): one `role token` pair per line, separated by
//!   whitespace; blank lines and lines starting with `#` are ignored.
//!
//! Roles are `admin`, `read` and `sidecar`. A token is at least [`MIN_TOKEN_LEN`] printable
//! ASCII characters without spaces or commas. Tokens are kept only as SHA-256 hashes and
//! compared by hash, so a look-up's timing tells nothing about a token's characters; no token
//! appears in any error, log line or `Debug` output.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::principal::{Credential, Principal, Role};
use super::token_cache::TokenHash;

/// Shortest accepted static token.
pub const MIN_TOKEN_LEN: usize = 16;

/// One configured static token. `Debug` shows the role and the label, never the token.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticToken {
    /// What the token may do.
    pub role: Role,
    /// Where it was configured (shown in logs instead of the token).
    pub label: String,
    token: String,
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticToken")
            .field("role", &self.role)
            .field("label", &self.label)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// A malformed static-token entry. The message names the source and position, not the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct StaticTokenError {
    /// The variable or `file:line` of the bad entry.
    pub source_name: String,
    /// What is wrong.
    pub message: String,
}

impl StaticToken {
    /// A token with a role; `label` names it in logs.
    pub fn new(
        role: Role,
        token: impl Into<String>,
        label: impl Into<String>,
    ) -> Result<Self, StaticTokenError> {
        let token = token.into();
        let label = label.into();
        check_token(&token).map_err(|message| StaticTokenError {
            source_name: label.clone(),
            message,
        })?;
        Ok(Self { role, label, token })
    }

    /// Parses the environment form `role:token,role:token` (`var` names the source).
    pub fn parse_list(var: &str, list: &str) -> Result<Vec<Self>, StaticTokenError> {
        let mut tokens = Vec::new();
        for (index, item) in list
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .enumerate()
        {
            let label = format!("{var}#{}", index + 1);
            let error = |message: String| StaticTokenError {
                source_name: label.clone(),
                message,
            };
            let (role, token) = item
                .split_once(':')
                .ok_or_else(|| error(String::from("expected role:token")))?;
            let role = parse_role(role).map_err(error)?;
            tokens.push(Self::new(role, token.trim(), label.clone())?);
        }
        Ok(tokens)
    }

    /// Parses the file form: `role token` per line, `#` comments.
    pub fn parse_file_contents(name: &str, contents: &str) -> Result<Vec<Self>, StaticTokenError> {
        let mut tokens = Vec::new();
        for (index, line) in contents.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let label = format!("{name}:{}", index + 1);
            let error = |message: String| StaticTokenError {
                source_name: label.clone(),
                message,
            };
            let mut fields = line.split_whitespace();
            let (Some(role), Some(token), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(error(String::from("expected '<role> <token>'")));
            };
            let role = parse_role(role).map_err(error)?;
            tokens.push(Self::new(role, token, label.clone())?);
        }
        Ok(tokens)
    }

    /// Reads and parses a token file.
    pub fn read_file(path: &Path) -> Result<Vec<Self>, StaticTokenError> {
        let name = path.display().to_string();
        let contents = std::fs::read_to_string(path).map_err(|e| StaticTokenError {
            source_name: name.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse_file_contents(&name, &contents)
    }
}

fn parse_role(role: &str) -> Result<Role, String> {
    Role::parse(role).ok_or_else(|| {
        format!(
            "unknown role '{}' (expected admin, read or sidecar)",
            role.trim()
        )
    })
}

fn check_token(token: &str) -> Result<(), String> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!("token shorter than {MIN_TOKEN_LEN} characters"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        return Err(String::from(
            "token must be printable ASCII without spaces or commas",
        ));
    }
    Ok(())
}

/// SHA-256 of a token.
pub(crate) fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// The configured tokens, by hash.
#[derive(Default)]
pub(crate) struct StaticTokens {
    by_hash: HashMap<TokenHash, Principal>,
}

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticTokens")
            .field("count", &self.by_hash.len())
            .finish()
    }
}

impl StaticTokens {
    /// Indexes `tokens`; the same token twice is an error (its roles could differ).
    pub(crate) fn new(tokens: &[StaticToken]) -> Result<Self, StaticTokenError> {
        let mut by_hash = HashMap::with_capacity(tokens.len());
        for token in tokens {
            let principal = Principal {
                role: token.role,
                credential: Credential::StaticToken {
                    label: Arc::from(token.label.as_str()),
                },
                bound_instance: None,
            };
            if by_hash
                .insert(token_hash(&token.token), principal)
                .is_some()
            {
                return Err(StaticTokenError {
                    source_name: token.label.clone(),
                    message: String::from("the same token is configured twice"),
                });
            }
        }
        Ok(Self { by_hash })
    }

    /// The principal of the token with this hash.
    pub(crate) fn get(&self, hash: &TokenHash) -> Option<&Principal> {
        self.by_hash.get(hash)
    }

    /// Whether any token has `role`.
    pub(crate) fn has_role(&self, role: Role) -> bool {
        self.by_hash.values().any(|p| p.role == role)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-token-0123456789";
    const SIDECAR: &str = "sidecar-token-0123456789";

    #[test]
    fn env_form() {
        let tokens = StaticToken::parse_list(
            "JITSI_SCALER_TOKENS",
            &format!(" admin:{ADMIN} , sidecar:{SIDECAR},"),
        )
        .expect("valid list");
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].role, Role::Admin);
        assert_eq!(tokens[0].label, "JITSI_SCALER_TOKENS#1");
        assert_eq!(tokens[1].role, Role::Sidecar);

        let index = StaticTokens::new(&tokens).expect("distinct");
        assert_eq!(
            index.get(&token_hash(ADMIN)).map(|p| p.role),
            Some(Role::Admin)
        );
        assert_eq!(
            index.get(&token_hash(SIDECAR)).map(|p| p.role),
            Some(Role::Sidecar)
        );
        assert!(index.get(&token_hash("admin-token-012345678")).is_none());
    }

    #[test]
    fn file_form_with_comments() {
        let contents = format!(
            "# operators\n\nadmin {ADMIN}\n   # dashboards\nREAD\tread-token-0123456789#x  \n"
        );
        let tokens = StaticToken::parse_file_contents("tokens", &contents).expect("valid file");
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].label, "tokens:3");
        assert_eq!(tokens[1].role, Role::Read);
        assert_eq!(tokens[1].label, "tokens:5");
        let index = StaticTokens::new(&tokens).expect("distinct");
        assert!(index.get(&token_hash("read-token-0123456789#x")).is_some());
    }

    #[test]
    fn errors_name_the_place_but_not_the_token() {
        let secret = "short-secret";
        let err = StaticToken::parse_list(
            "JITSI_SCALER_TOKENS",
            &format!("admin:{ADMIN},admin:{secret}"),
        )
        .expect_err("too short");
        assert_eq!(err.source_name, "JITSI_SCALER_TOKENS#2");
        assert!(!err.to_string().contains(secret), "{err}");

        let err = StaticToken::parse_list("T", &format!("root:{ADMIN}")).expect_err("bad role");
        assert!(err.to_string().contains("unknown role 'root'"), "{err}");
        assert!(!err.to_string().contains(ADMIN));

        let err = StaticToken::parse_list("T", ADMIN).expect_err("no role");
        assert!(err.to_string().contains("expected role:token"), "{err}");
        assert!(!err.to_string().contains(ADMIN));

        let err = StaticToken::parse_file_contents("f", &format!("admin {ADMIN} extra"))
            .expect_err("three fields");
        assert_eq!(err.source_name, "f:1");
        assert!(!err.to_string().contains(ADMIN));

        let err = StaticToken::parse_file_contents("f", "admin tok\u{e9}n-0123456789012")
            .expect_err("non-ASCII");
        assert!(err.to_string().contains("printable ASCII"), "{err}");
    }

    #[test]
    fn duplicate_tokens_are_refused() {
        let tokens = StaticToken::parse_list("T", &format!("admin:{ADMIN},read:{ADMIN}"))
            .expect("each valid");
        let err = StaticTokens::new(&tokens).expect_err("duplicate");
        assert_eq!(err.source_name, "T#2");
    }

    #[test]
    fn debug_hides_the_token() {
        let token = StaticToken::new(Role::Admin, ADMIN, "x").expect("valid");
        let shown = format!("{token:?}");
        assert!(!shown.contains(ADMIN), "{shown}");
        assert!(shown.contains("Admin"));
    }
}
