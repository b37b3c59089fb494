//! # jitsi-scaler-core
//!
//! The domain and the engine of jitsi-scaler, an autoscaler for Jitsi Meet fleets (JVB, Jibri,
//! Jigasi, …). This crate knows no HTTP framework and no cloud API:
//!
//! - [`group`], [`instance`]: the model, with the reference's JSON field names;
//! - [`metrics`], [`policy`], [`plan`], [`schedule`]: pure decisions, tested with plain values;
//! - [`provider`]: the [`CloudProvider`](provider::CloudProvider) trait clouds implement;
//! - [`store`], [`leader`]: state and leadership, behind traits;
//! - [`engine`]: the [`Scaler`](engine::Scaler) that ties them together.
#![warn(missing_docs)]

pub mod audit;
pub mod backoff;
pub mod clock;
pub mod engine;
pub mod group;
pub mod instance;
mod json;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod provider;
pub mod report;
pub mod schedule;
pub mod sidecar;
pub mod store;
#[cfg(test)]
mod test_rng;
