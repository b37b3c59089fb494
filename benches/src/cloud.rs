//! A cloud that launches nothing: the benchmarks' groups name it, and never launch.

use async_trait::async_trait;
use jitsi_scaler_core::group::Group;
use jitsi_scaler_core::instance::CloudInstance;
use jitsi_scaler_core::provider::{
    CloudProvider, LaunchOutcome, LaunchRequest, ProviderError, ProviderRegistry,
};
use std::sync::Arc;

/// The provider `local` of the benchmarks' groups, when no server configures one.
#[derive(Debug, Default)]
pub struct NoCloud;

#[async_trait]
impl CloudProvider for NoCloud {
    fn name(&self) -> &str {
        "local"
    }

    async fn launch(&self, _group: &Group, _request: &LaunchRequest) -> LaunchOutcome {
        LaunchOutcome::failed(ProviderError::Unsupported(
            "benchmarks launch nothing".into(),
        ))
    }

    async fn list(&self, _group: &Group) -> Result<Vec<CloudInstance>, ProviderError> {
        Ok(Vec::new())
    }

    async fn terminate(&self, _group: &Group, _instance_id: &str) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// A registry holding only [`NoCloud`].
pub fn registry() -> ProviderRegistry {
    ProviderRegistry::new().with(Arc::new(NoCloud))
}
