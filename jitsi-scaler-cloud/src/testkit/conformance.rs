//! The provider conformance suite: every provider, run against its fake backend, must pass it.
//!
//! 1. launching `n` instances launches `n`, each slot once, with distinct ids;
//! 2. all of them appear in the group's listing, and instances of another group never do;
//! 3. terminating them succeeds, after which they are gone (absent, or listed as not running);
//! 4. terminating them again, or terminating an instance that never existed, succeeds;
//! 5. a rate-limited call is retried and succeeds; persistent rate limiting ends in a
//!    `throttled` error;
//! 6. a storm of server errors ends, without hanging, in a `transient` error.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jitsi_scaler_core::group::Group;
use jitsi_scaler_core::provider::{CloudProvider, ProviderError};

use super::launch_request;

/// How the fake backend behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Normally.
    None,
    /// The next call is rate limited (with a wait of 0), later ones are not.
    ThrottleOnce,
    /// Every call is rate limited, with a wait far beyond any retry budget.
    ThrottleAlways,
    /// Every call fails with a server error (5xx, or a failing script).
    ServerErrors,
}

/// A provider wired to its fake backend.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// The provider under test; its retry budget should be small (a second or two).
    fn provider(&self) -> Arc<dyn CloudProvider>;
    /// A group of the provider named `name`.
    fn group(&self, name: &str) -> Group;
    /// Makes the backend misbehave (or stop misbehaving).
    async fn set_fault(&self, fault: Fault);
    /// Calls the backend has received so far.
    async fn calls(&self) -> usize;
    /// A well-formed id of an instance that does not exist.
    fn absent_instance_id(&self) -> String;
}

/// Longest a single provider call may take before the suite calls it a hang.
const HANG: Duration = Duration::from_secs(120);

/// Runs the whole suite.
pub async fn run(fixture: &dyn Fixture) {
    launch_list_terminate(fixture).await;
    throttling(fixture).await;
    server_error_storm(fixture).await;
}

async fn bounded<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(HANG, call).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {HANG:?}"),
    }
}

/// Steps 1 to 4.
pub async fn launch_list_terminate(fixture: &dyn Fixture) {
    let provider = fixture.provider();
    let caps = provider.capabilities();
    assert!(
        caps.list && caps.terminate,
        "the suite needs list and terminate: {caps:?}"
    );
    let a = fixture.group("conf-a");
    let b = fixture.group("conf-b");

    let request = launch_request(&a.name, 3, 0);
    let outcome = bounded("launch", provider.launch(&a, &request)).await;
    assert_eq!(outcome.error, None, "launch of 3 failed");
    assert_eq!(outcome.launched.len(), 3, "launched {:?}", outcome.launched);
    let slots: HashSet<usize> = outcome.launched.iter().map(|l| l.slot).collect();
    assert_eq!(slots, HashSet::from([0, 1, 2]), "each slot once");
    for launched in &outcome.launched {
        assert!(!launched.instance_id.is_empty());
        assert_eq!(
            launched.display_name,
            request.slots[launched.slot].display_name
        );
    }
    let ids_a: HashSet<String> = outcome
        .launched
        .iter()
        .map(|l| l.instance_id.clone())
        .collect();
    assert_eq!(ids_a.len(), 3, "distinct ids");

    let outcome_b = bounded(
        "launch",
        provider.launch(&b, &launch_request(&b.name, 1, 0)),
    )
    .await;
    assert_eq!(outcome_b.error, None, "launch in the other group failed");
    assert_eq!(outcome_b.launched.len(), 1);
    let id_b = outcome_b.launched[0].instance_id.clone();

    let listed_a = bounded("list", provider.list(&a))
        .await
        .expect("list group a");
    for id in &ids_a {
        let found = listed_a
            .iter()
            .find(|i| &i.instance_id == id)
            .unwrap_or_else(|| panic!("launched instance {id} is not listed: {listed_a:?}"));
        assert!(
            found.is_running(),
            "a new instance is running or provisioning: {found:?}"
        );
        let slot = outcome
            .launched
            .iter()
            .find(|l| &l.instance_id == id)
            .expect("launched");
        assert_eq!(found.display_name, slot.display_name);
    }
    assert!(
        listed_a.iter().all(|i| i.instance_id != id_b),
        "an instance of another group is listed: {listed_a:?}"
    );
    let listed_b = bounded("list", provider.list(&b))
        .await
        .expect("list group b");
    assert!(listed_b.iter().any(|i| i.instance_id == id_b));
    assert!(listed_b.iter().all(|i| !ids_a.contains(&i.instance_id)));

    for id in &ids_a {
        bounded("terminate", provider.terminate(&a, id))
            .await
            .unwrap_or_else(|e| panic!("terminate {id}: {e}"));
    }
    let after = bounded("list", provider.list(&a))
        .await
        .expect("list after terminate");
    for id in &ids_a {
        if let Some(i) = after.iter().find(|i| &i.instance_id == id) {
            assert!(!i.is_running(), "a terminated instance still runs: {i:?}");
        }
    }
    for id in &ids_a {
        bounded("terminate", provider.terminate(&a, id))
            .await
            .unwrap_or_else(|e| panic!("terminating {id} again must succeed: {e}"));
    }
    let absent = fixture.absent_instance_id();
    bounded("terminate", provider.terminate(&a, &absent))
        .await
        .unwrap_or_else(|e| panic!("terminating an absent instance must succeed: {e}"));
    let listed_b = bounded("list", provider.list(&b))
        .await
        .expect("list group b");
    assert!(
        listed_b
            .iter()
            .any(|i| i.instance_id == id_b && i.is_running()),
        "terminating group a touched group b"
    );
    bounded("terminate", provider.terminate(&b, &id_b))
        .await
        .expect("terminate b");
}

/// Step 5.
pub async fn throttling(fixture: &dyn Fixture) {
    let provider = fixture.provider();
    let a = fixture.group("conf-a");

    fixture.set_fault(Fault::ThrottleOnce).await;
    let before = fixture.calls().await;
    let listed = bounded("list", provider.list(&a)).await;
    let after = fixture.calls().await;
    fixture.set_fault(Fault::None).await;
    assert!(listed.is_ok(), "a single rate limit is retried: {listed:?}");
    assert!(
        after >= before + 2,
        "the throttled call was repeated ({before} → {after})"
    );

    fixture.set_fault(Fault::ThrottleAlways).await;
    let listed = bounded("list", provider.list(&a)).await;
    let outcome = bounded(
        "launch",
        provider.launch(&a, &launch_request(&a.name, 2, 0)),
    )
    .await;
    fixture.set_fault(Fault::None).await;
    assert!(
        matches!(listed, Err(ProviderError::Throttled { .. })),
        "persistent rate limiting is classified: {listed:?}"
    );
    assert!(outcome.launched.is_empty(), "{outcome:?}");
    assert!(
        matches!(outcome.error, Some(ProviderError::Throttled { .. })),
        "a throttled launch is classified: {:?}",
        outcome.error
    );
}

/// Step 6.
pub async fn server_error_storm(fixture: &dyn Fixture) {
    let provider = fixture.provider();
    let a = fixture.group("conf-a");
    fixture.set_fault(Fault::ServerErrors).await;
    let listed = bounded("list", provider.list(&a)).await;
    let outcome = bounded(
        "launch",
        provider.launch(&a, &launch_request(&a.name, 1, 0)),
    )
    .await;
    let absent = fixture.absent_instance_id();
    let terminated = bounded("terminate", provider.terminate(&a, &absent)).await;
    fixture.set_fault(Fault::None).await;
    assert!(
        matches!(listed, Err(ProviderError::Transient(_))),
        "{listed:?}"
    );
    assert!(outcome.launched.is_empty());
    assert!(
        matches!(outcome.error, Some(ProviderError::Transient(_))),
        "{:?}",
        outcome.error
    );
    assert!(
        matches!(terminated, Err(ProviderError::Transient(_))),
        "{terminated:?}"
    );
}
