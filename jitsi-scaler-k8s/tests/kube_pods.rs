//! PodProvider against the real kube-apiserver (kube-test): launch from an inline template and
//! from a PodTemplate object, idempotent relaunch, list across pages, terminate.
#![allow(clippy::unwrap_used)]

mod common;

use jitsi_scaler_core::group::Group;
use jitsi_scaler_core::provider::{CloudProvider, LaunchRequest, LaunchSlot, ProviderError};
use jitsi_scaler_k8s::provider::{GROUP_LABEL, PodProvider, PodProviderConfig, pod_name, state};
use k8s_openapi::api::core::v1::{Pod, PodTemplate};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

fn group(name: &str, namespace: &str, inline: bool) -> Group {
    let mut v = json!({
        "name": name, "type": "jibri", "cloud": "kubernetes",
        "instanceConfigurationId": "jibri-template",
        "scalingOptions": {"minDesired": 0, "maxDesired": 20, "desiredCount": 1},
        "kubernetes": {"namespace": namespace, "gracePeriodSec": 0, "deletionCost": true}
    });
    if inline {
        v["kubernetes"]["podTemplate"] = json!({
            "metadata": {"labels": {"app": "jibri"}, "annotations": {"team": "media"}},
            "spec": {"containers": [{"name": "jibri", "image": "jitsi/jibri:stable"}]}
        });
    }
    serde_json::from_value(v).unwrap()
}

fn request(keys: impl IntoIterator<Item = String>) -> LaunchRequest {
    LaunchRequest {
        intent_id: "intent-1".into(),
        slots: keys
            .into_iter()
            .map(|k| LaunchSlot {
                display_name: format!("jibri-{k}"),
                idempotency_key: k,
            })
            .collect(),
        current_count: 0,
    }
}

#[tokio::test]
async fn launch_list_across_pages_and_terminate() {
    let Some(client) = common::kube_test_client().await else {
        return;
    };
    let ns = common::namespace(&client, "pods").await;
    let provider = PodProvider::new(
        client.clone(),
        PodProviderConfig {
            page_size: 5,
            ..PodProviderConfig::default()
        },
    );
    let g = group("jibri-prod", &ns, true);
    assert!(provider.validate_group(&g).is_empty());

    let keys: Vec<String> = (0..12).map(|i| format!("key-{i}")).collect();
    let outcome = provider.launch(&g, &request(keys.clone())).await;
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.launched.len(), 12);
    assert_eq!(outcome.launched[3].slot, 3);
    assert_eq!(
        outcome.launched[3].instance_id,
        pod_name("jibri-prod", "key-3")
    );

    // A retried launch (same keys) makes no new pod.
    let again = provider.launch(&g, &request(keys[..4].to_vec())).await;
    assert_eq!(again.error, None);
    assert_eq!(again.launched.len(), 4);

    // A pod of another group and a foreign pod do not show up.
    let other = provider
        .launch(&group("jibri-other", &ns, true), &request(["x".to_owned()]))
        .await;
    assert_eq!(other.launched.len(), 1);
    common::create_pod(
        &client,
        &ns,
        &common::jibri_pod("not-ours", &[("app", "jibri")], false),
    )
    .await;

    let listed = provider.list(&g).await.unwrap();
    assert_eq!(listed.len(), 12, "12 pods over 3 pages of 5");
    let first = listed
        .iter()
        .find(|i| i.instance_id == pod_name("jibri-prod", "key-0"))
        .unwrap();
    assert_eq!(first.display_name, "jibri-key-0");
    assert_eq!(first.cloud_status, state::PROVISIONING);
    assert!(first.is_running(), "provisioning counts as running");
    assert!(first.created_at_ms.is_some());

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = pods.get(&first.instance_id).await.unwrap();
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(
        labels.get(GROUP_LABEL).map(String::as_str),
        Some("jibri-prod")
    );
    assert_eq!(
        labels.get("app").map(String::as_str),
        Some("jibri"),
        "template labels kept"
    );
    let annotations = pod.metadata.annotations.clone().unwrap();
    assert_eq!(annotations.get("team").map(String::as_str), Some("media"));
    assert_eq!(
        annotations
            .get("jitsi-scaler.io/launch-key")
            .map(String::as_str),
        Some("key-0")
    );

    common::set_pod_status(
        &client,
        &ns,
        &first.instance_id,
        "Running",
        Some("10.0.0.9"),
    )
    .await;
    let listed = provider.list(&g).await.unwrap();
    let first = listed
        .iter()
        .find(|i| i.instance_id == pod_name("jibri-prod", "key-0"))
        .unwrap();
    assert_eq!(first.cloud_status, state::RUNNING);

    provider
        .set_deletion_cost(&g, &first.instance_id, -5)
        .await
        .unwrap();
    let pod = pods.get(&first.instance_id).await.unwrap();
    assert_eq!(
        pod.metadata
            .annotations
            .unwrap()
            .get("controller.kubernetes.io/pod-deletion-cost")
            .map(String::as_str),
        Some("-5")
    );
    assert!(provider.deletion_cost_enabled(&g));
    // Load feedback from the engine: the cost follows the load, written only when it changes.
    let loads = vec![(first.instance_id.clone(), 3.0)];
    provider.observe_load(&g, &loads).await.unwrap();
    let cost = |pod: Pod| {
        pod.metadata
            .annotations
            .unwrap_or_default()
            .get("controller.kubernetes.io/pod-deletion-cost")
            .cloned()
    };
    let pod = pods.get(&first.instance_id).await.unwrap();
    let version = pod.metadata.resource_version.clone();
    assert_eq!(cost(pod).as_deref(), Some("300"));
    provider.observe_load(&g, &loads).await.unwrap();
    let pod = pods.get(&first.instance_id).await.unwrap();
    assert_eq!(
        pod.metadata.resource_version, version,
        "unchanged cost: no write"
    );

    provider.terminate(&g, &first.instance_id).await.unwrap();
    provider.terminate(&g, &first.instance_id).await.unwrap();
    assert!(pods.get_opt(&first.instance_id).await.unwrap().is_none());
    assert_eq!(provider.list(&g).await.unwrap().len(), 11);

    let refused = provider.terminate(&g, "not-ours").await;
    assert!(
        matches!(refused, Err(ProviderError::Fatal(_))),
        "{refused:?}"
    );
    assert!(pods.get_opt("not-ours").await.unwrap().is_some());
}

#[tokio::test]
async fn launch_from_a_pod_template_object() {
    let Some(client) = common::kube_test_client().await else {
        return;
    };
    let ns = common::namespace(&client, "podtemplate").await;
    let provider = PodProvider::new(client.clone(), PodProviderConfig::default());
    let g = group("jibri-t", &ns, false);

    let missing = provider.launch(&g, &request(["a".to_owned()])).await;
    assert!(
        matches!(missing.error, Some(ProviderError::Config(_))),
        "{missing:?}"
    );
    assert!(missing.launched.is_empty());

    let templates: Api<PodTemplate> = Api::namespaced(client.clone(), &ns);
    let template: PodTemplate = serde_json::from_value(json!({
        "metadata": {"name": "jibri-template"},
        "template": {"metadata": {"labels": {"app": "jibri-t"}},
                     "spec": {"containers": [{"name": "jibri", "image": "jitsi/jibri:stable"}]}}
    }))
    .unwrap();
    templates
        .create(&PostParams::default(), &template)
        .await
        .unwrap();

    let outcome = provider
        .launch(&g, &request(["a".to_owned(), "b".to_owned()]))
        .await;
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.launched.len(), 2);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = pods.get(&outcome.launched[0].instance_id).await.unwrap();
    assert_eq!(
        pod.metadata.labels.unwrap().get("app").map(String::as_str),
        Some("jibri-t")
    );

    // A pod of the same name launched with another key is not mistaken for ours.
    let clash = LaunchRequest {
        intent_id: "intent-2".into(),
        slots: vec![LaunchSlot {
            display_name: "x".into(),
            idempotency_key: "a".into(),
        }],
        current_count: 2,
    };
    let _ = provider.launch(&g, &clash).await;
    let name = pod_name("jibri-t", "a");
    let mut stolen = pods.get(&name).await.unwrap();
    stolen
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("jitsi-scaler.io/launch-key".into(), "other".into());
    pods.replace(&name, &PostParams::default(), &stolen)
        .await
        .unwrap();
    let outcome = provider.launch(&g, &clash).await;
    assert!(
        matches!(outcome.error, Some(ProviderError::Fatal(_))),
        "{outcome:?}"
    );
}
