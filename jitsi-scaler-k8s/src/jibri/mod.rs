//! The Jibri spare-pool controller: a drop-in replacement of jibri-pod-controller.
//!
//! Jibri runs as a Deployment whose replicas are the idle (spare) Jibris. When a Jibri turns
//! BUSY, its webhook makes the controller relabel the pod out of the Deployment's selector
//! (server-side apply of `JIBRI_BUSY_LABELS` plus the Cluster Autoscaler's `safe-to-evict:
//! "false"`), so the ReplicaSet lets it go and starts a replacement. When it reports EXPIRED,
//! the pod is deleted. A leader-elected [`Sweeper`] deletes detached pods that are done or
//! stuck, in case a webhook was lost.
//!
//! This module knows no HTTP: [`JibriController::on_status`] and
//! [`JibriController::on_session_status`] return a [`WebhookOutcome`] that the server maps to
//! a status code (see its documentation), and [`JibriController::is_ready`] is the readiness.

mod auth;
pub mod config;
mod controller;
pub mod health;
pub mod payload;
mod pods;
pub mod stats;
pub mod sweeper;

pub use auth::kid_key_name;
pub use config::{
    ConfigError, JibriControllerConfig, JwtConfig, JwtKeySource, Secret, WebhookAuthConfig,
};
pub use controller::{
    BUSY_SINCE_ANNOTATION, DELETION_COST_ANNOTATION, JibriController, LAST_WEBHOOK_ANNOTATION,
    NoActionReason, SAFE_TO_EVICT_ANNOTATION, WebhookAction, WebhookOutcome, WebhookRequest,
    decode_pod_name,
};
pub use pods::FIELD_MANAGER;
pub use stats::{ControllerStats, DeletionReason, StatsSnapshot};
pub use sweeper::{SweepReport, Sweeper};
