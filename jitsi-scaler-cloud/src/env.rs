//! Reading provider settings from environment variables, with errors that name the variable.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A provider setting is missing or invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set (or empty).
    #[error("{variable} is required but not set")]
    Missing {
        /// The environment variable (or config key).
        variable: String,
    },
    /// A variable is set to a value that cannot be used.
    #[error("{variable}: {reason}")]
    Invalid {
        /// The environment variable (or config key).
        variable: String,
        /// What is wrong (never contains a secret value).
        reason: String,
    },
}

impl ConfigError {
    /// An invalid-value error.
    pub fn invalid(variable: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            variable: variable.into(),
            reason: reason.into(),
        }
    }

    /// The variable the error is about.
    pub fn variable(&self) -> &str {
        match self {
            ConfigError::Missing { variable } | ConfigError::Invalid { variable, .. } => variable,
        }
    }
}

/// Looks variables up through a function, so tests need not touch the process environment.
pub(crate) struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Env<'a> {
    pub(crate) fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { lookup }
    }

    /// The trimmed value; unset and blank are both `None`.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.get(name).ok_or_else(|| ConfigError::Missing {
            variable: name.to_owned(),
        })
    }

    pub(crate) fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(|p| expand_home(&p))
    }

    pub(crate) fn parse<T: FromStr>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        self.get(name)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| ConfigError::invalid(name, format!("cannot parse {v:?}: {e}")))
            })
            .transpose()
    }

    pub(crate) fn millis(&self, name: &str) -> Result<Option<Duration>, ConfigError> {
        Ok(self.parse::<u64>(name)?.map(Duration::from_millis))
    }

    pub(crate) fn seconds(&self, name: &str) -> Result<Option<Duration>, ConfigError> {
        let Some(secs) = self.parse::<f64>(name)? else {
            return Ok(None);
        };
        if !secs.is_finite() || secs < 0.0 {
            return Err(ConfigError::invalid(
                name,
                "must be a non-negative number of seconds",
            ));
        }
        Ok(Some(Duration::from_secs_f64(secs)))
    }
}

/// The process environment as a lookup function.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Expands a leading `~` or `~/` to `$HOME`.
pub(crate) fn expand_home(path: &str) -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    if path == "~" {
        if let Some(home) = home() {
            return home;
        }
    } else if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = home()
    {
        return home.join(rest);
    }
    PathBuf::from(path)
}

/// Serde helpers for durations written as whole milliseconds.
pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_values_count_as_unset_and_errors_name_the_variable() {
        let lookup = |name: &str| match name {
            "BLANK" => Some("  ".to_owned()),
            "NUM" => Some("12x".to_owned()),
            "MS" => Some("250".to_owned()),
            _ => None,
        };
        let env = Env::new(&lookup);
        assert_eq!(env.get("BLANK"), None);
        assert_eq!(
            env.required("NOPE"),
            Err(ConfigError::Missing {
                variable: "NOPE".into()
            })
        );
        let err = env.parse::<u64>("NUM").expect_err("not a number");
        assert_eq!(err.variable(), "NUM");
        assert_eq!(env.millis("MS"), Ok(Some(Duration::from_millis(250))));
    }

    #[test]
    fn tilde_expands_to_home() {
        let Some(home) = std::env::var_os("HOME") else {
            return;
        };
        assert_eq!(
            expand_home("~/.oci/key.pem"),
            PathBuf::from(home).join(".oci/key.pem")
        );
        assert_eq!(expand_home("/abs/key.pem"), PathBuf::from("/abs/key.pem"));
    }
}
