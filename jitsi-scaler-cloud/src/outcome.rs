//! Helpers shared by providers that launch instance by instance.

use jitsi_scaler_core::provider::ProviderError;

/// Of two launch errors, the one the engine should see: those needing an operator first, then
/// rate limits (they carry a wait), then transient errors, then capacity.
pub(crate) fn keep_worse(
    current: Option<ProviderError>,
    new: ProviderError,
) -> Option<ProviderError> {
    fn rank(e: &ProviderError) -> u8 {
        match e {
            ProviderError::Config(_) | ProviderError::Unsupported(_) | ProviderError::Fatal(_) => 5,
            ProviderError::Throttled { .. } => 4,
            ProviderError::Transient(_) => 3,
            ProviderError::Capacity(_) => 2,
            ProviderError::NotFound(_) => 1,
        }
    }
    match current {
        Some(current) if rank(&current) >= rank(&new) => Some(current),
        _ => Some(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_errors_win_over_capacity() {
        let capacity = ProviderError::Capacity("full".into());
        let config = ProviderError::Config("bad".into());
        assert_eq!(keep_worse(None, capacity.clone()), Some(capacity.clone()));
        assert_eq!(
            keep_worse(Some(capacity.clone()), config.clone()),
            Some(config.clone())
        );
        assert_eq!(keep_worse(Some(config.clone()), capacity), Some(config));
    }
}
