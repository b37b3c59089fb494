//! Test support for providers (feature `testkit`): the provider conformance suite
//! ([`conformance`]) and fake cloud backends on 127.0.0.1 ([`fake_digitalocean`], [`fake_oci`],
//! [`fake_plugin`]) that keep state, check what they are sent, and can be told to misbehave.
//!
//! Everything here panics on unexpected results: it is meant for tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod conformance;
pub mod fake_digitalocean;
pub mod fake_oci;
pub mod fake_plugin;
mod server;

use jitsi_scaler_core::group::Group;
use jitsi_scaler_core::provider::{LaunchRequest, LaunchSlot, display_name};
use rand::Rng;
use rand::distr::Alphanumeric;

pub use conformance::{Fault, Fixture};
pub use server::TestServer;

/// A minimal valid group of type `jibri` on `cloud`, in `region`.
pub fn group(name: &str, cloud: &str, region: &str) -> Group {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "type": "jibri",
        "region": region,
        "environment": "test",
        "compartmentId": "ocid1.compartment.oc1..test",
        "instanceConfigurationId": "ocid1.instanceconfiguration.oc1.test.config",
        "cloud": cloud,
        "enableAutoScale": true,
        "enableLaunch": true,
        "scalingOptions": {
            "minDesired": 0, "maxDesired": 10, "desiredCount": 0,
            "scaleUpQuantity": 1, "scaleDownQuantity": 1,
            "scaleUpThreshold": 0.8, "scaleDownThreshold": 0.3,
            "scalePeriod": 60, "scaleUpPeriodsCount": 2, "scaleDownPeriodsCount": 2
        }
    }))
    .expect("a valid group")
}

/// A launch of `n` instances of `group` with fresh names, idempotency keys and intent id.
pub fn launch_request(group: &str, n: usize, current_count: usize) -> LaunchRequest {
    LaunchRequest {
        intent_id: format!("intent-{}", random(12)),
        slots: (0..n)
            .map(|_| LaunchSlot {
                display_name: display_name(group),
                idempotency_key: random(24),
            })
            .collect(),
        current_count,
    }
}

fn random(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}
