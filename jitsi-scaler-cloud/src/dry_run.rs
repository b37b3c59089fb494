//! `DRY_RUN=true`: a provider wrapper that lists through the real provider but launches and
//! terminates nothing.

use std::sync::Arc;

use async_trait::async_trait;
use jitsi_scaler_core::group::{FieldError, Group};
use jitsi_scaler_core::instance::CloudInstance;
use jitsi_scaler_core::provider::{
    Capabilities, CloudProvider, LaunchOutcome, LaunchRequest, LaunchedInstance, ProviderError,
};

/// Wraps a provider: `launch` answers synthetic ids (`dry-run-<display name>`) and `terminate`
/// succeeds, both without any call; `list`, `validate_group` and `capabilities` are the
/// wrapped provider's.
#[derive(Clone)]
pub struct DryRunProvider {
    inner: Arc<dyn CloudProvider>,
}

impl std::fmt::Debug for DryRunProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DryRunProvider")
            .field("inner", &self.inner.name())
            .finish()
    }
}

impl DryRunProvider {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn CloudProvider>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl CloudProvider for DryRunProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn validate_group(&self, group: &Group) -> Vec<FieldError> {
        self.inner.validate_group(group)
    }

    async fn launch(&self, group: &Group, request: &LaunchRequest) -> LaunchOutcome {
        tracing::info!(provider = self.inner.name(), group = %group.name,
            count = request.slots.len(), "dry run: no instance launched");
        LaunchOutcome {
            launched: request
                .slots
                .iter()
                .enumerate()
                .map(|(slot, s)| LaunchedInstance {
                    slot,
                    instance_id: format!("dry-run-{}", s.display_name),
                    display_name: s.display_name.clone(),
                })
                .collect(),
            error: None,
        }
    }

    async fn list(&self, group: &Group) -> Result<Vec<CloudInstance>, ProviderError> {
        self.inner.list(group).await
    }

    async fn terminate(&self, group: &Group, instance_id: &str) -> Result<(), ProviderError> {
        tracing::info!(provider = self.inner.name(), group = %group.name, instance = instance_id,
            "dry run: not terminated");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use jitsi_scaler_core::provider::MockCloudProvider;

    use super::*;
    use crate::testkit::{group, launch_request};

    #[tokio::test]
    async fn mutating_calls_never_reach_the_provider() {
        let mut inner = MockCloudProvider::new();
        inner.expect_name().return_const("oracle".to_owned());
        inner.expect_launch().never();
        inner.expect_terminate().never();
        inner.expect_list().times(1).returning(|_| Ok(Vec::new()));
        let provider = DryRunProvider::new(Arc::new(inner));
        let g = group("g", "oracle", "r");
        let request = launch_request("g", 2, 0);
        let outcome = provider.launch(&g, &request).await;
        assert_eq!(outcome.error, None);
        assert_eq!(
            outcome.launched[1].instance_id,
            format!("dry-run-{}", request.slots[1].display_name)
        );
        assert_eq!(provider.terminate(&g, "i-1").await, Ok(()));
        assert_eq!(provider.list(&g).await, Ok(Vec::new()));
        assert_eq!(provider.name(), "oracle");
    }
}
