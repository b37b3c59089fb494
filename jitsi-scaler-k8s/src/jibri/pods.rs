//! The Kubernetes calls of the Jibri controller: read a pod, detach it (server-side apply),
//! delete it (with a reason, a counter and an Event), list the detached pods.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::Value;

use super::stats::{ControllerStats, DeletionReason};
use crate::api::{ApiError, CallPolicy};
use crate::provider::PodProvider;
use crate::reachability::ApiReachability;

/// Field manager of the busy apply: the reference's, so both own the same fields.
pub const FIELD_MANAGER: &str = "jibri-pod-controller";

/// What a delete achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deleted {
    Now,
    AlreadyGone,
}

pub(crate) struct JibriPods {
    api: Api<Pod>,
    namespace: String,
    recorder: Option<Recorder>,
    stats: Arc<ControllerStats>,
    reachability: Arc<ApiReachability>,
}

impl JibriPods {
    pub(crate) fn new(
        client: kube::Client,
        namespace: &str,
        reporter: Option<Reporter>,
        stats: Arc<ControllerStats>,
        reachability: Arc<ApiReachability>,
    ) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_owned(),
            recorder: reporter.map(|r| Recorder::new(client, r)),
            stats,
            reachability,
        }
    }

    fn record<T>(&self, result: &Result<T, ApiError>) {
        self.reachability.record(result);
        if let Err(e) = result
            && !e.is_not_found()
        {
            self.stats.kubernetes_error();
        }
    }

    pub(crate) async fn get(
        &self,
        name: &str,
        policy: &CallPolicy,
    ) -> Result<Option<Pod>, ApiError> {
        let result = policy
            .run(&format!("get pod {}/{name}", self.namespace), || {
                self.api.get_opt(name)
            })
            .await;
        self.record(&result);
        result
    }

    /// Server-side apply of `body` (a partial Pod) with the reference's field manager, forced.
    pub(crate) async fn apply(
        &self,
        name: &str,
        body: &Value,
        policy: &CallPolicy,
    ) -> Result<(), ApiError> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(body);
        let result = policy
            .run(
                &format!("apply busy labels to pod {}/{name}", self.namespace),
                || self.api.patch(name, &params, &patch),
            )
            .await
            .map(|_| ());
        self.record(&result);
        if result.is_ok() {
            self.stats.busy_patch();
        }
        result
    }

    /// Deletes a pod with its own grace period (`DELETE` with `{}`); a pod that is already
    /// gone is `AlreadyGone`. Counts, logs and reports the deletion as an Event.
    pub(crate) async fn delete(
        &self,
        pod: &Pod,
        reason: DeletionReason,
        detail: &str,
        policy: &CallPolicy,
    ) -> Result<Deleted, ApiError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams::default();
        let result = policy
            .run(&format!("delete pod {}/{name}", self.namespace), || {
                self.api.delete(&name, &params)
            })
            .await;
        self.record(&result);
        match result {
            Ok(_) => {
                self.stats.deletion(reason);
                tracing::info!(
                    pod = %name,
                    namespace = %self.namespace,
                    reason = reason.as_str(),
                    detail,
                    "deleted jibri pod"
                );
                self.emit(pod, reason, detail);
                Ok(Deleted::Now)
            }
            Err(e) if e.is_not_found() => Ok(Deleted::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    /// The pods carrying every busy label, all pages.
    pub(crate) async fn list(
        &self,
        selector: &str,
        page_size: u32,
        policy: &CallPolicy,
    ) -> Result<Vec<Pod>, ApiError> {
        let result = PodProvider::list_all(&self.api, policy, selector, page_size).await;
        self.record(&result);
        result
    }

    /// Emits a Kubernetes Event about a deletion, in the background; failures are counted and
    /// logged at debug level (RBAC for events is optional).
    fn emit(&self, pod: &Pod, reason: DeletionReason, detail: &str) {
        let Some(recorder) = self.recorder.clone() else {
            return;
        };
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: Some(self.namespace.clone()),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Normal,
            reason: reason.event_reason().into(),
            note: Some(format!("deleted by jibri-pod-controller: {detail}")),
            action: "Delete".into(),
            secondary: None,
        };
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let published =
                tokio::time::timeout(Duration::from_secs(5), recorder.publish(&event, &reference))
                    .await;
            match published {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    stats.event_failure();
                    tracing::debug!(error = %e, "could not emit event");
                }
                Err(_) => {
                    stats.event_failure();
                    tracing::debug!("event emission timed out");
                }
            }
        });
    }
}
