//! # jitsi-scaler-k8s
//!
//! Kubernetes for jitsi-scaler:
//!
//! - [`provider`]: [`PodProvider`](provider::PodProvider), a `CloudProvider` whose instances
//!   are pods created from a pod template;
//! - [`jibri`]: the Jibri spare-pool controller (a drop-in replacement of
//!   jibri-pod-controller): webhook handling, the sweeper and their configuration, exposed as a
//!   library the server wires to HTTP routes;
//! - [`lease`]: [`LeaseLeadership`](lease::LeaseLeadership), leader election on a
//!   `coordination.k8s.io/v1` Lease with fencing tokens;
//! - [`api`], [`labels`], [`names`], [`reachability`]: API calls with timeouts and retries,
//!   label sets and selectors, Kubernetes naming rules, API reachability for readiness.
//!
//! Clients are built by the caller (`kube::Client::try_default()` in a cluster). Install the
//! ring crypto provider first: `let _ = rustls::crypto::ring::default_provider().install_default();`.
#![warn(missing_docs)]

pub mod api;
pub mod jibri;
pub mod labels;
pub mod lease;
pub mod names;
pub mod provider;
pub mod reachability;

/// Installs rustls' ring crypto provider for the process, if none is installed yet. Call it
/// before building a Kubernetes client or an HTTP client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
