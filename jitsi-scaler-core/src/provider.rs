//! The [`CloudProvider`] trait every cloud implements, its errors, and the registry of
//! providers by name.
//!
//! A provider launches, lists and terminates the instances of a group. It never decides
//! anything: quantities, victims and retries are the engine's.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use rand::distr::Alphanumeric;

use crate::group::{FieldError, Group};
use crate::instance::CloudInstance;

/// Why a provider call failed, classified so the engine knows whether and when to retry.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// Rate limited; retry after the given delay when the cloud says.
    #[error("throttled: {message}")]
    Throttled {
        /// The cloud's `Retry-After` / rate-limit reset, when given.
        retry_after: Option<Duration>,
        /// What the cloud said.
        message: String,
    },
    /// A transport error, timeout or 5xx: worth retrying with back-off.
    #[error("transient: {0}")]
    Transient(String),
    /// The cloud has no capacity for this shape or placement now.
    #[error("out of capacity: {0}")]
    Capacity(String),
    /// The instance or resource does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The group or provider is misconfigured (bad credentials, unknown image, …): retrying
    /// will not help until an operator acts.
    #[error("configuration: {0}")]
    Config(String),
    /// The provider cannot do this at all (for example terminate without a terminate script).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Any other failure.
    #[error("{0}")]
    Fatal(String),
}

impl ProviderError {
    /// Worth retrying later with back-off.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Throttled { .. }
                | ProviderError::Transient(_)
                | ProviderError::Capacity(_)
        )
    }

    /// Short class name for logs and metric labels.
    pub fn class(&self) -> &'static str {
        match self {
            ProviderError::Throttled { .. } => "throttled",
            ProviderError::Transient(_) => "transient",
            ProviderError::Capacity(_) => "capacity",
            ProviderError::NotFound(_) => "not_found",
            ProviderError::Config(_) => "config",
            ProviderError::Unsupported(_) => "unsupported",
            ProviderError::Fatal(_) => "fatal",
        }
    }
}

/// One instance to launch. The engine persists these before calling the provider, so a retry
/// after a crash sends the same names and keys.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchSlot {
    /// Display name (`<group>-<5 random [A-Za-z0-9]>`, the reference's format).
    pub display_name: String,
    /// Idempotency key: the same key must never create a second instance where the cloud
    /// supports it (OCI `opc-retry-token`, deterministic pod names, launch tags).
    pub idempotency_key: String,
}

/// A launch of several instances of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchRequest {
    /// Id of the persisted launch intent.
    pub intent_id: String,
    /// The instances to launch.
    pub slots: Vec<LaunchSlot>,
    /// Tracked instances of the group now (a placement hint).
    pub current_count: usize,
}

/// An instance the provider launched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchedInstance {
    /// Index into [`LaunchRequest::slots`].
    pub slot: usize,
    /// Cloud id: the id the instance's sidecar will report.
    pub instance_id: String,
    /// Display name in the cloud.
    pub display_name: String,
}

/// What a launch achieved: partial success is normal.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LaunchOutcome {
    /// Instances launched.
    pub launched: Vec<LaunchedInstance>,
    /// Why the rest were not, if any were not.
    pub error: Option<ProviderError>,
}

impl LaunchOutcome {
    /// Nothing launched, for the given reason.
    pub fn failed(error: ProviderError) -> Self {
        Self {
            launched: Vec::new(),
            error: Some(error),
        }
    }
}

/// What a provider can do besides launching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `list` returns the group's real instances (not always empty).
    pub list: bool,
    /// `terminate` can remove an instance.
    pub terminate: bool,
    /// `observe_load` uses the instances' load (for example to steer the platform's own
    /// scale-down order); the engine calls it only when set.
    pub load_feedback: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            list: true,
            terminate: true,
            load_feedback: false,
        }
    }
}

/// A cloud, cluster or launcher that runs a group's instances.
///
/// Implementations must be idempotent where the cloud allows: a retried launch with the same
/// idempotency keys must not create more instances, and terminating an instance that is
/// already gone succeeds. Every network call needs a timeout. `list` returns every page.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait CloudProvider: Send + Sync {
    /// The name groups use in their `cloud` field.
    fn name(&self) -> &str;

    /// What the provider supports besides launch.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Provider-specific checks of a group (naming rules, required settings), run when a
    /// group is created or changed.
    fn validate_group(&self, _group: &Group) -> Vec<FieldError> {
        Vec::new()
    }

    /// Launches one instance per slot.
    async fn launch(&self, group: &Group, request: &LaunchRequest) -> LaunchOutcome;

    /// Every instance of the group the cloud knows (all pages), including terminated ones if the
    /// cloud lists them; never instances of other groups.
    async fn list(&self, group: &Group) -> Result<Vec<CloudInstance>, ProviderError>;

    /// Terminates one instance; an instance that is already gone is success.
    async fn terminate(&self, group: &Group, instance_id: &str) -> Result<(), ProviderError>;

    /// The load of the group's running instances after a reconcile (participants, allocated CPU,
    /// connections or stress; 1 for a busy Jibri, 0 for an idle one). Called only when
    /// [`Capabilities::load_feedback`] is set.
    async fn observe_load(
        &self,
        _group: &Group,
        _loads: &[(String, f64)],
    ) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// A display name in the reference's format: `<group>-<5 random [A-Za-z0-9]>`.
pub fn display_name(group: &str) -> String {
    let suffix: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(5)
        .map(char::from)
        .collect();
    format!("{group}-{suffix}")
}

/// The providers available to the engine, by name.
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    providers: BTreeMap<String, Arc<dyn CloudProvider>>,
}

impl ProviderRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider under its own name (replacing one of the same name).
    pub fn register(&mut self, provider: Arc<dyn CloudProvider>) -> &mut Self {
        self.providers
            .insert(provider.name().to_ascii_lowercase(), provider);
        self
    }

    /// Builder form of [`register`](Self::register).
    pub fn with(mut self, provider: Arc<dyn CloudProvider>) -> Self {
        self.register(provider);
        self
    }

    /// The provider of a name (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Arc<dyn CloudProvider>> {
        self.providers.get(&name.to_ascii_lowercase())
    }

    /// Names of the registered providers.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }

    /// No provider registered.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

impl fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.providers.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_follow_the_reference_format() {
        let name = display_name("prod-jvb-1");
        let suffix = name.strip_prefix("prod-jvb-1-").expect("prefix");
        assert_eq!(suffix.len(), 5);
        assert!(suffix.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(display_name("g"), display_name("g"), "random suffixes");
    }

    #[test]
    fn error_classes_decide_retries() {
        assert!(ProviderError::Transient("x".into()).is_retryable());
        assert!(
            ProviderError::Throttled {
                retry_after: None,
                message: "slow down".into()
            }
            .is_retryable()
        );
        assert!(ProviderError::Capacity("x".into()).is_retryable());
        assert!(!ProviderError::Config("bad key".into()).is_retryable());
        assert!(!ProviderError::NotFound("x".into()).is_retryable());
        assert_eq!(ProviderError::Fatal("x".into()).class(), "fatal");
    }

    #[test]
    fn registry_finds_providers_case_insensitively() {
        let mut mock = MockCloudProvider::new();
        mock.expect_name().return_const("Oracle".to_owned());
        let registry = ProviderRegistry::new().with(Arc::new(mock));
        assert!(registry.get("oracle").is_some());
        assert!(registry.get("ORACLE").is_some());
        assert!(registry.get("digitalocean").is_none());
        assert_eq!(registry.names().collect::<Vec<_>>(), vec!["oracle"]);
    }
}
