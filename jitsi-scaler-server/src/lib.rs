//! # jitsi-scaler-server
//!
//! The `jitsi-scaler` binary's library: the HTTP API (sidecar endpoints, admin routes, health,
//! metrics, OpenAPI), authentication, configuration, telemetry, and the wiring of the engine.
#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod jibri;
pub mod local;
pub mod sim;
pub mod telemetry;
