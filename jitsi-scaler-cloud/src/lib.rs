//! # jitsi-scaler-cloud
//!
//! The cloud providers of jitsi-scaler, each a
//! [`CloudProvider`](jitsi_scaler_core::provider::CloudProvider):
//!
//! - [`digitalocean`]: droplets through the DigitalOcean API v2;
//! - [`oracle`]: instances from instance configurations on Oracle Cloud Infrastructure, with
//!   request signing done here;
//! - [`custom`]: the reference's launch script (plus optional list and terminate scripts), and
//!   HTTP plugins: providers in any language behind a small JSON protocol.
//!
//! Every provider has a config struct with `from_env()` (the reference's variable names) and
//! shares one HTTP layer ([`http::HttpConfig`]): connect and request timeouts, retries with
//! exponential back-off and jitter within a time budget, `Retry-After`, a circuit breaker, and
//! every failure classified as a [`ProviderError`](jitsi_scaler_core::provider::ProviderError).
//! No credential appears in a log line or in `Debug` output. [`DryRunProvider`] wraps any
//! provider for `DRY_RUN=true`.
//!
//! With the `testkit` feature, [`testkit`] offers the provider conformance suite and the fake
//! cloud backends it runs against.
#![warn(missing_docs)]

pub mod custom;
pub mod digitalocean;
mod dry_run;
pub mod env;
pub mod http;
pub mod oracle;
mod outcome;
mod retry;
mod secret;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use dry_run::DryRunProvider;
pub use env::ConfigError;
pub use secret::Secret;
