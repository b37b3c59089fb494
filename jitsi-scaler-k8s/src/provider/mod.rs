//! [`PodProvider`]: a group's instances are pods, created from a pod template.
//!
//! - Launch creates one pod per slot, named deterministically from the slot's idempotency
//!   key, so a retried launch finds its pod (409 `AlreadyExists`) instead of making another.
//! - List returns the group's pods (label `jitsi-scaler.io/group=<group>`), every page.
//! - Terminate deletes a pod of the group with the group's grace period; a pod that is already
//!   gone is success.
//!
//! The instance id of a pod is its name (what a sidecar reports through the downward API).

pub mod group_config;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use jitsi_scaler_core::backoff::Backoff;
use jitsi_scaler_core::group::{FieldError, Group};
use jitsi_scaler_core::instance::CloudInstance;
use jitsi_scaler_core::provider::{
    CloudProvider, LaunchOutcome, LaunchRequest, LaunchSlot, LaunchedInstance, ProviderError,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplate, PodTemplateSpec};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use sha2::{Digest, Sha256};

pub use group_config::KubernetesGroupConfig;

use crate::api::{ApiError, CallPolicy};
use crate::names::sanitize_dns_label;

/// Name of the provider in a group's `cloud` field.
pub const PROVIDER_NAME: &str = "kubernetes";
/// Label holding the group of a pod.
pub const GROUP_LABEL: &str = "jitsi-scaler.io/group";
/// Label marking the pods this provider manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "jitsi-scaler";
/// Annotation holding the slot's display name.
pub const DISPLAY_NAME_ANNOTATION: &str = "jitsi-scaler.io/display-name";
/// Annotation holding the slot's idempotency key.
pub const LAUNCH_KEY_ANNOTATION: &str = "jitsi-scaler.io/launch-key";
/// Annotation holding the launch intent.
pub const LAUNCH_INTENT_ANNOTATION: &str = "jitsi-scaler.io/launch-intent";
/// The ReplicaSet scale-down preference of a pod (lower goes first).
pub const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Cloud states of pods, as the engine reads them.
pub mod state {
    /// Created, not running yet (`Pending`, or no status yet).
    pub const PROVISIONING: &str = "PROVISIONING";
    /// `Running`.
    pub const RUNNING: &str = "RUNNING";
    /// Being deleted (`deletionTimestamp` set).
    pub const TERMINATING: &str = "TERMINATING";
    /// Ended (`Succeeded` or `Failed`).
    pub const TERMINATED: &str = "TERMINATED";
    /// The node stopped reporting (`Unknown`).
    pub const UNKNOWN: &str = "UNKNOWN";
}

/// Settings of the pod provider.
#[derive(Clone, Debug, PartialEq)]
pub struct PodProviderConfig {
    /// Namespace of groups that name none.
    pub default_namespace: String,
    /// Pods per page when listing.
    pub page_size: u32,
    /// Timeout and retries of each API call.
    pub api: CallPolicy,
    /// Field manager of our writes.
    pub field_manager: String,
}

impl Default for PodProviderConfig {
    fn default() -> Self {
        Self {
            default_namespace: "default".into(),
            page_size: 250,
            api: CallPolicy::retrying(
                Duration::from_secs(10),
                4,
                Backoff::new(Duration::from_millis(250), Duration::from_secs(10)),
            ),
            field_manager: "jitsi-scaler".into(),
        }
    }
}

/// The Kubernetes pod provider; see the [module documentation](self).
#[derive(Clone)]
pub struct PodProvider {
    client: kube::Client,
    config: PodProviderConfig,
    /// The deletion cost last written per group and pod (only changes are written).
    costs: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), i32>>>,
}

impl std::fmt::Debug for PodProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The pod name of a slot: `<group, sanitised, ≤ 40>-<10 hex of sha256(group, key)>`.
pub fn pod_name(group: &str, idempotency_key: &str) -> String {
    let mut prefix = sanitize_dns_label(group, 40);
    if prefix.is_empty() {
        prefix = "pod".into();
    }
    let digest = Sha256::new()
        .chain_update(group.as_bytes())
        .chain_update([0u8])
        .chain_update(idempotency_key.as_bytes())
        .finalize();
    format!("{prefix}-{}", &hex::encode(digest)[..10])
}

/// The cloud state of a pod.
pub fn cloud_status(pod: &Pod) -> &'static str {
    if pod.metadata.deletion_timestamp.is_some() {
        return state::TERMINATING;
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") => state::RUNNING,
        Some("Succeeded" | "Failed") => state::TERMINATED,
        Some("Unknown") => state::UNKNOWN,
        _ => state::PROVISIONING,
    }
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

impl PodProvider {
    /// A provider using `client`.
    pub fn new(client: kube::Client, config: PodProviderConfig) -> Self {
        Self {
            client,
            config,
            costs: Default::default(),
        }
    }

    /// The deletion cost of a load: its hundredths, so the least loaded pod goes first.
    pub fn cost_of(load: f64) -> i32 {
        (load * 100.0)
            .round()
            .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
    }

    fn group_config(&self, group: &Group) -> Result<KubernetesGroupConfig, ProviderError> {
        KubernetesGroupConfig::of(group).map_err(ProviderError::Config)
    }

    fn pods(&self, config: &KubernetesGroupConfig) -> Api<Pod> {
        Api::namespaced(
            self.client.clone(),
            config.namespace(&self.config.default_namespace),
        )
    }

    /// The group's pod template: inline, or the named `PodTemplate` object.
    async fn template(
        &self,
        group: &Group,
        config: &KubernetesGroupConfig,
    ) -> Result<PodTemplateSpec, ProviderError> {
        if let Some(template) = &config.pod_template {
            return Ok(template.clone());
        }
        let name = group.instance_configuration_id.as_str();
        if name.is_empty() {
            return Err(ProviderError::Config(format!(
                "group {}: no pod template (instanceConfigurationId or kubernetes.podTemplate)",
                group.name
            )));
        }
        let ns = config.namespace(&self.config.default_namespace);
        let api: Api<PodTemplate> = Api::namespaced(self.client.clone(), ns);
        let found = self
            .config
            .api
            .run(&format!("get podtemplate {ns}/{name}"), || {
                api.get_opt(name)
            })
            .await
            .map_err(|e| e.to_provider_error())?;
        found.and_then(|t| t.template).ok_or_else(|| {
            ProviderError::Config(format!("PodTemplate {ns}/{name} not found or empty"))
        })
    }

    /// The pod of one slot, from the template.
    fn build_pod(
        &self,
        template: &PodTemplateSpec,
        group: &Group,
        request: &LaunchRequest,
        slot: &LaunchSlot,
    ) -> Pod {
        let mut metadata = template.metadata.clone().unwrap_or_default();
        metadata.name = Some(pod_name(&group.name, &slot.idempotency_key));
        metadata.generate_name = None;
        metadata.namespace = None;
        metadata.resource_version = None;
        metadata.uid = None;
        metadata.owner_references = None;
        let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(GROUP_LABEL.into(), group.name.clone());
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        let annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(DISPLAY_NAME_ANNOTATION.into(), slot.display_name.clone());
        annotations.insert(LAUNCH_KEY_ANNOTATION.into(), slot.idempotency_key.clone());
        annotations.insert(LAUNCH_INTENT_ANNOTATION.into(), request.intent_id.clone());
        Pod {
            metadata,
            spec: template.spec.clone(),
            status: None,
        }
    }

    /// Creates one slot's pod; an existing pod of the same group and key is success.
    async fn launch_one(
        &self,
        api: &Api<Pod>,
        group: &Group,
        pod: &Pod,
        slot: &LaunchSlot,
    ) -> Result<String, ProviderError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = PostParams {
            field_manager: Some(self.config.field_manager.clone()),
            ..PostParams::default()
        };
        let created = self
            .config
            .api
            .run(&format!("create pod {name}"), || api.create(&params, pod))
            .await;
        match created {
            Ok(_) => {
                tracing::info!(group = %group.name, pod = %name, display_name = %slot.display_name, "pod created");
                Ok(name)
            }
            Err(e) if e.is_already_exists() => {
                let existing = self
                    .config
                    .api
                    .run(&format!("get pod {name}"), || api.get_opt(&name))
                    .await
                    .map_err(|e| e.to_provider_error())?;
                match existing {
                    Some(p)
                        if label(&p, GROUP_LABEL) == Some(group.name.as_str())
                            && annotation(&p, LAUNCH_KEY_ANNOTATION)
                                == Some(slot.idempotency_key.as_str()) =>
                    {
                        tracing::info!(group = %group.name, pod = %name, "pod already launched");
                        Ok(name)
                    }
                    Some(_) => Err(ProviderError::Fatal(format!(
                        "pod {name} exists but was not launched for group {} with this key",
                        group.name
                    ))),
                    // Deleted between the create and the get: the slot must be retried.
                    None => Err(ProviderError::Transient(format!(
                        "pod {name} existed and is gone"
                    ))),
                }
            }
            Err(e) => Err(e.to_provider_error()),
        }
    }

    /// Sets `controller.kubernetes.io/pod-deletion-cost` of a pod in the group's namespace, so
    /// a ReplicaSet scaling down removes pods of lower cost (less load) first.
    pub async fn set_deletion_cost(
        &self,
        group: &Group,
        pod: &str,
        cost: i32,
    ) -> Result<(), ProviderError> {
        let config = self.group_config(group)?;
        let api = self.pods(&config);
        let patch = Patch::Merge(serde_json::json!({
            "metadata": {"annotations": {DELETION_COST_ANNOTATION: cost.to_string()}}
        }));
        let params = PatchParams {
            field_manager: Some(self.config.field_manager.clone()),
            ..PatchParams::default()
        };
        self.config
            .api
            .run(&format!("annotate pod {pod}"), || {
                api.patch(pod, &params, &patch)
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_provider_error())
    }

    /// Whether the group asks for deletion costs (`kubernetes.deletionCost`).
    pub fn deletion_cost_enabled(&self, group: &Group) -> bool {
        KubernetesGroupConfig::of(group).is_ok_and(|c| c.deletion_cost)
    }

    /// Every pod matching `selector` in the API's namespace, all pages; an expired continue
    /// token restarts the listing (at most three times).
    pub(crate) async fn list_all(
        api: &Api<Pod>,
        policy: &CallPolicy,
        selector: &str,
        page_size: u32,
    ) -> Result<Vec<Pod>, ApiError> {
        let mut restarts = 0;
        'listing: loop {
            let mut pods = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let mut params = ListParams::default().labels(selector).limit(page_size);
                if let Some(t) = &token {
                    params = params.continue_token(t);
                }
                let page = match policy.run("list pods", || api.list(&params)).await {
                    Ok(page) => page,
                    Err(e) if e.is_gone() && restarts < 3 => {
                        restarts += 1;
                        tracing::debug!(
                            selector,
                            restarts,
                            "continue token expired, listing again"
                        );
                        continue 'listing;
                    }
                    Err(e) => return Err(e),
                };
                pods.extend(page.items);
                match page.metadata.continue_.filter(|t| !t.is_empty()) {
                    Some(next) => token = Some(next),
                    None => return Ok(pods),
                }
            }
        }
    }
}

#[async_trait]
impl CloudProvider for PodProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn capabilities(&self) -> jitsi_scaler_core::provider::Capabilities {
        jitsi_scaler_core::provider::Capabilities {
            load_feedback: true,
            ..Default::default()
        }
    }

    /// Writes `controller.kubernetes.io/pod-deletion-cost` from each pod's load when the group
    /// asks for it (`kubernetes.deletionCost`), only where the cost changed.
    async fn observe_load(
        &self,
        group: &Group,
        loads: &[(String, f64)],
    ) -> Result<(), ProviderError> {
        if !self.deletion_cost_enabled(group) {
            return Ok(());
        }
        let changed: Vec<(String, i32)> = {
            let mut costs = self.costs.lock().unwrap_or_else(|p| p.into_inner());
            costs.retain(|(g, pod), _| g != &group.name || loads.iter().any(|(p, _)| p == pod));
            loads
                .iter()
                .map(|(pod, load)| (pod.clone(), Self::cost_of(*load)))
                .filter(|(pod, cost)| costs.get(&(group.name.clone(), pod.clone())) != Some(cost))
                .collect()
        };
        for (pod, cost) in changed {
            self.set_deletion_cost(group, &pod, cost).await?;
            self.costs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((group.name.clone(), pod), cost);
        }
        Ok(())
    }

    fn validate_group(&self, group: &Group) -> Vec<FieldError> {
        group_config::validate(group)
    }

    async fn launch(&self, group: &Group, request: &LaunchRequest) -> LaunchOutcome {
        let config = match self.group_config(group) {
            Ok(c) => c,
            Err(e) => return LaunchOutcome::failed(e),
        };
        let template = match self.template(group, &config).await {
            Ok(t) => t,
            Err(e) => return LaunchOutcome::failed(e),
        };
        let api = self.pods(&config);
        let mut outcome = LaunchOutcome::default();
        for (index, slot) in request.slots.iter().enumerate() {
            let pod = self.build_pod(&template, group, request, slot);
            match self.launch_one(&api, group, &pod, slot).await {
                Ok(instance_id) => outcome.launched.push(LaunchedInstance {
                    slot: index,
                    instance_id,
                    display_name: slot.display_name.clone(),
                }),
                Err(e) => {
                    tracing::warn!(group = %group.name, slot = index, error = %e, "pod launch failed");
                    outcome.error = Some(e);
                    break;
                }
            }
        }
        outcome
    }

    async fn list(&self, group: &Group) -> Result<Vec<CloudInstance>, ProviderError> {
        let config = self.group_config(group)?;
        let api = self.pods(&config);
        let selector = format!("{GROUP_LABEL}={}", group.name);
        let pods = Self::list_all(&api, &self.config.api, &selector, self.config.page_size)
            .await
            .map_err(|e| e.to_provider_error())?;
        Ok(pods
            .iter()
            .map(|pod| {
                let name = pod.metadata.name.clone().unwrap_or_default();
                CloudInstance {
                    display_name: annotation(pod, DISPLAY_NAME_ANNOTATION)
                        .map_or_else(|| name.clone(), str::to_owned),
                    instance_id: name,
                    cloud_status: cloud_status(pod).into(),
                    created_at_ms: pod
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_millisecond()),
                }
            })
            .collect())
    }

    async fn terminate(&self, group: &Group, instance_id: &str) -> Result<(), ProviderError> {
        let config = self.group_config(group)?;
        let api = self.pods(&config);
        let existing = self
            .config
            .api
            .run(&format!("get pod {instance_id}"), || {
                api.get_opt(instance_id)
            })
            .await
            .map_err(|e| e.to_provider_error())?;
        let Some(pod) = existing else {
            tracing::debug!(group = %group.name, pod = instance_id, "pod already gone");
            return Ok(());
        };
        if label(&pod, GROUP_LABEL) != Some(group.name.as_str()) {
            return Err(ProviderError::Fatal(format!(
                "pod {instance_id} does not belong to group {}",
                group.name
            )));
        }
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let params = DeleteParams {
            grace_period_seconds: config.grace_period_sec,
            preconditions: pod.metadata.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self
            .config
            .api
            .run(&format!("delete pod {instance_id}"), || {
                api.delete(instance_id, &params)
            })
            .await
        {
            Ok(_) => {
                tracing::info!(group = %group.name, pod = instance_id, "pod deleted");
                Ok(())
            }
            // Gone, or replaced by another pod of the same name: ours is gone either way.
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e.to_provider_error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn pod_names_are_deterministic_and_valid() {
        let a = pod_name("Prod_Jibri", "key-1");
        assert_eq!(a, pod_name("Prod_Jibri", "key-1"));
        assert_ne!(a, pod_name("Prod_Jibri", "key-2"));
        assert_ne!(
            a,
            pod_name("prod-jibri", "key-1"),
            "the group is part of the hash"
        );
        assert!(a.starts_with("prod-jibri-"));
        assert!(crate::names::is_dns1123_label(&a));
        let long = pod_name(&"g".repeat(200), "k");
        assert!(long.len() <= 51 && crate::names::is_dns1123_label(&long));
        assert!(pod_name("___", "k").starts_with("pod-"));
    }

    #[test]
    fn pod_states_map_to_cloud_states() {
        let with_phase = |phase: Option<&str>| Pod {
            status: Some(PodStatus {
                phase: phase.map(str::to_owned),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert_eq!(cloud_status(&Pod::default()), state::PROVISIONING);
        assert_eq!(
            cloud_status(&with_phase(Some("Pending"))),
            state::PROVISIONING
        );
        assert_eq!(cloud_status(&with_phase(Some("Running"))), state::RUNNING);
        assert_eq!(cloud_status(&with_phase(Some("Failed"))), state::TERMINATED);
        assert_eq!(
            cloud_status(&with_phase(Some("Succeeded"))),
            state::TERMINATED
        );
        assert_eq!(cloud_status(&with_phase(Some("Unknown"))), state::UNKNOWN);
        let mut deleting = with_phase(Some("Running"));
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(cloud_status(&deleting), state::TERMINATING);
        let running = CloudInstance {
            instance_id: "p".into(),
            display_name: "p".into(),
            cloud_status: state::RUNNING.into(),
            created_at_ms: None,
        };
        assert!(running.is_running());
    }
}
