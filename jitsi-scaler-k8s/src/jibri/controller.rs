//! [`JibriController`]: Jibri's webhooks turned into Kubernetes actions.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jitsi_scaler_core::clock::{Clock, SystemClock, UnixMillis};
use jitsi_scaler_core::instance::BusyStatus;
use jitsi_scaler_core::leader::Leadership;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};

use super::auth::Authenticator;
use super::config::{ConfigError, JibriControllerConfig};
use super::health::{HealthProbe, pod_ips};
use super::payload::{SessionEvent, parse_status_event};
use super::pods::{Deleted, JibriPods};
use super::stats::{ControllerStats, DeletionReason, StatsSnapshot};
use super::sweeper::Sweeper;
use crate::api::CallPolicy;
use crate::labels::{has_all, selector_of};
use crate::lease::LeaseLeadership;
use crate::names::is_dns1123_subdomain;
use crate::reachability::ApiReachability;

/// Annotation that stops the Cluster Autoscaler from evicting a recording pod.
pub const SAFE_TO_EVICT_ANNOTATION: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
/// Annotation set once, at the first BUSY relabel: when the pod became busy (RFC 3339).
pub const BUSY_SINCE_ANNOTATION: &str = "jitsi-scaler.io/busy-since";
/// Annotation refreshed by BUSY webhooks (at most every 90 s): the last webhook of the pod,
/// shared by every controller replica (RFC 3339).
pub const LAST_WEBHOOK_ANNOTATION: &str = "jitsi-scaler.io/last-webhook";
pub use crate::provider::DELETION_COST_ANNOTATION;

/// A BUSY webhook refreshes [`LAST_WEBHOOK_ANNOTATION`] once it is older than this.
const HEARTBEAT_REFRESH_MS: i64 = 90_000;
/// An IDLE webhook this soon after the BUSY relabel may be an earlier webhook arriving late:
/// it does not delete the pod (the sweeper's idle rule still applies later).
const IDLE_AFTER_BUSY_MIN_MS: i64 = 10_000;
/// Local webhook receipts are forgotten after this long.
const RECEIPT_RETENTION_MS: i64 = 3_600_000;

/// A webhook request as the HTTP front received it.
#[derive(Clone, Copy, Debug)]
pub struct WebhookRequest<'a> {
    /// The `{pod}` path segment, verbatim (percent-encoded as received).
    pub pod: &'a str,
    /// The request body.
    pub body: &'a [u8],
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The peer address, if known (for `WEBHOOK_REQUIRE_SOURCE_IP`).
    pub source_ip: Option<IpAddr>,
}

impl<'a> WebhookRequest<'a> {
    /// A request for `pod` with `body`, no credentials and no known source.
    pub fn new(pod: &'a str, body: &'a [u8]) -> Self {
        Self {
            pod,
            body,
            authorization: None,
            source_ip: None,
        }
    }

    /// With the `Authorization` header.
    pub fn authorization(mut self, value: Option<&'a str>) -> Self {
        self.authorization = value;
        self
    }

    /// With the peer address.
    pub fn source_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.source_ip = ip;
        self
    }
}

/// What a webhook changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookAction {
    /// BUSY: the pod was relabelled out of its Deployment.
    Detached,
    /// The pod was deleted.
    Deleted(DeletionReason),
}

/// Why a webhook changed nothing (the answer is still a success).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoActionReason {
    /// IDLE: nothing to do.
    Idle,
    /// BUSY for a pod that is already detached with current annotations.
    AlreadyDetached,
    /// EXPIRED for a pod that is already gone or being deleted.
    AlreadyGone,
    /// The pod does not exist in the namespace.
    PodNotFound,
    /// The pod is being deleted.
    Terminating,
    /// The pod is not a Jibri pod this controller may act on (not matching
    /// `JIBRI_POD_SELECTOR`, or neither detached nor owned by a ReplicaSet).
    NotJibriPod(String),
    /// A `busyStatus` this version does not know.
    UnknownStatus(String),
    /// A session event: logged only.
    SessionEvent,
}

/// The result of a webhook, for the HTTP front to answer.
///
/// HTTP mapping (the contract of the `/webhook/{pod}/v1/status` route):
///
/// | outcome | status | body |
/// |---|---|---|
/// | `Ok(_)`, `NoAction(_)` | `200` | empty (Jibri logs anything else as an error) |
/// | `BadRequest(_)` | `400` | empty or the message |
/// | `Unauthorized(_)` | `401` | empty |
/// | `Forbidden(_)` | `403` | empty |
/// | `Unavailable(_)` | `503` | empty (Jibri re-sends within 60 s) |
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// An action was carried out → `200`.
    Ok(WebhookAction),
    /// Nothing to do, or an idempotent repeat → `200`.
    NoAction(NoActionReason),
    /// Bad pod name, malformed JSON or missing field → `400`.
    BadRequest(String),
    /// Missing or invalid credentials → `401`.
    Unauthorized(String),
    /// Valid credentials for another pod (`jibriId`, source IP) → `403`.
    Forbidden(String),
    /// The Kubernetes API failed → `503`.
    Unavailable(String),
}

impl WebhookOutcome {
    /// Short label for logs and metrics (one of [`OUTCOME_LABELS`](super::stats::OUTCOME_LABELS)).
    pub fn label(&self) -> &'static str {
        match self {
            WebhookOutcome::Ok(_) => "ok",
            WebhookOutcome::NoAction(_) => "no_action",
            WebhookOutcome::BadRequest(_) => "bad_request",
            WebhookOutcome::Unauthorized(_) => "unauthorized",
            WebhookOutcome::Forbidden(_) => "forbidden",
            WebhookOutcome::Unavailable(_) => "unavailable",
        }
    }

    /// Answered with success (`200`).
    pub fn is_success(&self) -> bool {
        matches!(self, WebhookOutcome::Ok(_) | WebhookOutcome::NoAction(_))
    }
}

pub(crate) struct Inner {
    pub(crate) config: JibriControllerConfig,
    pub(crate) client: kube::Client,
    pub(crate) pods: JibriPods,
    pub(crate) stats: Arc<ControllerStats>,
    pub(crate) reachability: Arc<ApiReachability>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) probe: HealthProbe,
    pub(crate) busy_selector: String,
    auth: Authenticator,
    webhook_policy: CallPolicy,
    /// Last webhook per pod name, on this replica (wall ms).
    receipts: Mutex<HashMap<String, UnixMillis>>,
}

/// The Jibri spare-pool controller, shared by the HTTP front (webhooks, readiness, metrics)
/// and the sweeper. Cheap to clone.
///
/// Wiring (what `jitsi-scaler jibri-pod-controller` does):
///
/// ```no_run
/// # async fn wire() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use jitsi_scaler_core::leader::Leadership;
/// use jitsi_scaler_k8s::jibri::{JibriController, JibriControllerConfig};
///
/// jitsi_scaler_k8s::install_crypto_provider();
/// let config = JibriControllerConfig::from_env()?;           // exits non-zero on error
/// let client = kube::Client::try_default().await?;
/// let controller = JibriController::new(client, config)?;
/// let leadership = Arc::new(controller.leadership()?);
/// let cancel = tokio_util::sync::CancellationToken::new();  // cancelled on SIGTERM/SIGINT
/// let lease = tokio::spawn({ let l = leadership.clone(); let c = cancel.clone(); async move { l.run(c).await } });
/// let sweeper = tokio::spawn(controller.sweeper(leadership.clone()).run(cancel.clone()));
/// // HTTP routes call controller.on_status / on_session_status / is_ready.
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JibriController {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for JibriController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JibriController")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The HTTP client of health checks and key fetches: never through a proxy.
fn http_client(config: &JibriControllerConfig) -> Result<reqwest::Client, ConfigError> {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(config.health_timeout.min(Duration::from_secs(2)))
        .pool_max_idle_per_host(2)
        .build()
        .map_err(|e| ConfigError::new("HTTP client", e.to_string()))
}

impl JibriController {
    /// A controller for the configured namespace; checks the configuration and loads keys.
    pub fn new(client: kube::Client, config: JibriControllerConfig) -> Result<Self, ConfigError> {
        Self::with_clock(client, config, Arc::new(SystemClock))
    }

    /// Same, with a wall clock (for tests).
    pub fn with_clock(
        client: kube::Client,
        config: JibriControllerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let http = http_client(&config)?;
        let auth = Authenticator::new(&config.webhook_auth, http.clone())?;
        if !config.has_webhook_guard() {
            tracing::warn!(
                "neither JIBRI_POD_SELECTOR nor WEBHOOK_AUTH=jwt is set: any caller can relabel or \
                 delete Jibri pods of namespace {}",
                config.jibri_namespace
            );
        }
        let stats = Arc::new(ControllerStats::default());
        let reachability = Arc::new(ApiReachability::default());
        let reporter = config.emit_events.then(|| Reporter {
            controller: "jibri-pod-controller".into(),
            instance: Some(config.pod_name.clone()),
        });
        let pods = JibriPods::new(
            client.clone(),
            &config.jibri_namespace,
            reporter,
            stats.clone(),
            reachability.clone(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                probe: HealthProbe::new(http, config.jibri_health_port, config.health_timeout),
                busy_selector: selector_of(&config.busy_labels),
                webhook_policy: CallPolicy::once(config.webhook_api_timeout),
                auth,
                pods,
                stats,
                reachability,
                clock,
                client,
                config,
                receipts: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &JibriControllerConfig {
        &self.inner.config
    }

    /// The counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Readiness: false while the Kubernetes API has been unreachable for more than 30 s.
    pub fn is_ready(&self) -> bool {
        self.inner.reachability.is_reachable()
    }

    /// The API reachability tracker (shared with the Lease, which feeds it too).
    pub fn reachability(&self) -> Arc<ApiReachability> {
        self.inner.reachability.clone()
    }

    /// The reference's Lease (`jibri-pod-controller-lease` in `NAMESPACE`, held as
    /// `POD_NAME`), feeding this controller's readiness.
    pub fn leadership(&self) -> Result<LeaseLeadership, ConfigError> {
        LeaseLeadership::new(self.inner.client.clone(), self.inner.config.lease_config())
            .map(|l| l.with_reachability(self.inner.reachability.clone()))
            .map_err(|m| ConfigError::new("LEASE_DURATION_SECONDS/LEASE_RENEW_SECONDS", m))
    }

    /// The sweeper, acting only while `leadership` has a token.
    pub fn sweeper(&self, leadership: Arc<dyn Leadership>) -> Sweeper {
        Sweeper::new(self.clone(), leadership)
    }

    fn now_ms(&self) -> UnixMillis {
        self.inner.clock.now_ms()
    }

    /// When this replica last received a webhook from `pod`.
    pub(crate) fn last_receipt(&self, pod: &str) -> Option<UnixMillis> {
        self.receipts().get(pod).copied()
    }

    fn receipts(&self) -> std::sync::MutexGuard<'_, HashMap<String, UnixMillis>> {
        self.inner
            .receipts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn note_receipt(&self, pod: &str) {
        let now = self.now_ms();
        let mut receipts = self.receipts();
        if receipts.len() >= 4096 {
            receipts.retain(|_, at| now - *at < RECEIPT_RETENTION_MS);
        }
        receipts.insert(pod.to_owned(), now);
    }

    fn finish(&self, pod: &str, outcome: WebhookOutcome) -> WebhookOutcome {
        self.inner.stats.webhook(outcome.label());
        match &outcome {
            WebhookOutcome::Ok(action) => tracing::info!(pod, ?action, "webhook handled"),
            WebhookOutcome::NoAction(
                reason @ (NoActionReason::NotJibriPod(_)
                | NoActionReason::PodNotFound
                | NoActionReason::UnknownStatus(_)),
            ) => tracing::warn!(pod, ?reason, "webhook ignored"),
            WebhookOutcome::NoAction(reason) => {
                tracing::debug!(pod, ?reason, "webhook: nothing to do")
            }
            WebhookOutcome::Unavailable(msg) => tracing::warn!(pod, error = %msg, "webhook failed"),
            other => tracing::warn!(pod, outcome = ?other, "webhook refused"),
        }
        outcome
    }

    /// Decodes, validates and authenticates; the pod name on success.
    async fn admit(&self, request: &WebhookRequest<'_>) -> Result<String, WebhookOutcome> {
        let pod = decode_pod_name(request.pod).map_err(WebhookOutcome::BadRequest)?;
        self.inner
            .auth
            .verify(request.authorization)
            .await
            .map_err(WebhookOutcome::Unauthorized)?;
        Ok(pod)
    }

    /// Handles `POST /webhook/{pod}/v1/status` (a Jibri health event). See
    /// [`WebhookOutcome`] for the HTTP answer of each outcome.
    ///
    /// IDLE does nothing (except, in single-use mode, delete a detached pod whose session is
    /// over); BUSY detaches the pod from its Deployment by a server-side apply of the busy
    /// labels and annotations; EXPIRED deletes the pod. Before any change the pod must exist in
    /// the namespace, match `JIBRI_POD_SELECTOR`, and be detached or owned by a ReplicaSet.
    pub async fn on_status(&self, request: WebhookRequest<'_>) -> WebhookOutcome {
        let pod_label = request.pod.to_owned();
        let name = match self.admit(&request).await {
            Ok(name) => name,
            Err(outcome) => return self.finish(&pod_label, outcome),
        };
        let outcome = self.handle_status(&name, &request).await;
        self.finish(&name, outcome)
    }

    /// Handles `POST /webhook/{pod}/v1/session/status`: logged, no Kubernetes action; answered
    /// `200` (`NoAction(SessionEvent)`) unless the pod name or the credentials are bad.
    pub async fn on_session_status(&self, request: WebhookRequest<'_>) -> WebhookOutcome {
        let pod_label = request.pod.to_owned();
        let name = match self.admit(&request).await {
            Ok(name) => name,
            Err(outcome) => return self.finish(&pod_label, outcome),
        };
        match serde_json::from_slice::<SessionEvent>(request.body) {
            Ok(event) => {
                let session = event.session.unwrap_or_default();
                tracing::debug!(
                    pod = %name,
                    jibri_id = event.jibri_id.as_deref().unwrap_or(""),
                    session_id = session.session_id.as_deref().unwrap_or(""),
                    status = session.status.as_deref().unwrap_or(""),
                    should_retry = ?session.should_retry,
                    "jibri session event"
                );
            }
            Err(e) => tracing::debug!(pod = %name, error = %e, "unparsable jibri session event"),
        }
        self.finish(
            &name,
            WebhookOutcome::NoAction(NoActionReason::SessionEvent),
        )
    }

    async fn handle_status(&self, name: &str, request: &WebhookRequest<'_>) -> WebhookOutcome {
        let event = match parse_status_event(request.body) {
            Ok(e) => e,
            Err(e) => return WebhookOutcome::BadRequest(format!("malformed status event: {e}")),
        };
        if self.inner.config.check_jibri_id && !event.jibri_id.is_empty() && event.jibri_id != name
        {
            return WebhookOutcome::Forbidden(format!(
                "jibriId {:?} does not name pod {name}",
                event.jibri_id
            ));
        }
        self.note_receipt(name);
        tracing::debug!(pod = name, busy_status = %event.busy_status_raw, health = ?event.health_status, "jibri status");
        match event.busy_status {
            BusyStatus::Unknown => {
                return WebhookOutcome::NoAction(NoActionReason::UnknownStatus(
                    event.busy_status_raw,
                ));
            }
            BusyStatus::Idle if !self.inner.config.single_use => {
                return WebhookOutcome::NoAction(NoActionReason::Idle);
            }
            _ => {}
        }
        let pod = match self.inner.pods.get(name, &self.inner.webhook_policy).await {
            Ok(Some(pod)) => pod,
            Ok(None) if event.busy_status == BusyStatus::Expired => {
                return WebhookOutcome::NoAction(NoActionReason::AlreadyGone);
            }
            Ok(None) if event.busy_status == BusyStatus::Idle => {
                return WebhookOutcome::NoAction(NoActionReason::Idle);
            }
            Ok(None) => return WebhookOutcome::NoAction(NoActionReason::PodNotFound),
            Err(e) => return WebhookOutcome::Unavailable(e.to_string()),
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return WebhookOutcome::NoAction(match event.busy_status {
                BusyStatus::Expired => NoActionReason::AlreadyGone,
                _ => NoActionReason::Terminating,
            });
        }
        let detached = self.is_detached(&pod);
        if let Err(why) = self.check_jibri_pod(&pod, detached) {
            return WebhookOutcome::NoAction(NoActionReason::NotJibriPod(why));
        }
        if self.inner.config.require_source_ip {
            let ips = pod_ips(&pod);
            let from = request.source_ip.map(canonical_ip);
            if from.is_none_or(|ip| !ips.contains(&ip)) {
                return WebhookOutcome::Forbidden(format!(
                    "source {from:?} is not an IP of pod {name}"
                ));
            }
        }
        match event.busy_status {
            BusyStatus::Busy => self.detach(name, &pod).await,
            BusyStatus::Expired => {
                self.delete(&pod, DeletionReason::Expired, "jibri reported EXPIRED")
                    .await
            }
            BusyStatus::Idle if detached && self.session_over(&pod) => {
                self.delete(
                    &pod,
                    DeletionReason::IdleAfterBusy,
                    "detached single-use jibri reported IDLE",
                )
                .await
            }
            _ => WebhookOutcome::NoAction(NoActionReason::Idle),
        }
    }

    pub(crate) fn is_detached(&self, pod: &Pod) -> bool {
        has_all(pod.metadata.labels.as_ref(), &self.inner.config.busy_labels)
    }

    /// A pod the controller may act on: matches the selector, and is detached or controlled
    /// by a ReplicaSet (a Deployment's Jibri).
    fn check_jibri_pod(&self, pod: &Pod, detached: bool) -> Result<(), String> {
        let selector = &self.inner.config.pod_selector;
        if !selector.matches(pod.metadata.labels.as_ref()) {
            return Err(format!("labels do not match JIBRI_POD_SELECTOR {selector}"));
        }
        let owned_by_replica_set = pod.metadata.owner_references.iter().flatten().any(|o| {
            o.kind == "ReplicaSet"
                && o.api_version.starts_with("apps/")
                && o.controller == Some(true)
        });
        if detached || owned_by_replica_set {
            Ok(())
        } else {
            Err("neither detached (busy labels) nor controlled by a ReplicaSet".into())
        }
    }

    /// A detached pod reporting IDLE has served its session, unless the IDLE may be a late
    /// webhook sent before the BUSY one.
    fn session_over(&self, pod: &Pod) -> bool {
        annotation_ms(pod, BUSY_SINCE_ANNOTATION)
            .is_some_and(|since| self.now_ms() - since >= IDLE_AFTER_BUSY_MIN_MS)
    }

    /// The server-side apply body that detaches `pod`, or `None` when it is up to date.
    pub(crate) fn busy_apply_body(&self, pod: &Pod) -> Option<Value> {
        let now = self.now_ms();
        let config = &self.inner.config;
        let existing = pod.metadata.annotations.clone().unwrap_or_default();
        let mut annotations = BTreeMap::new();
        annotations.insert(SAFE_TO_EVICT_ANNOTATION.to_owned(), "false".to_owned());
        if let Some(cost) = config.busy_deletion_cost {
            annotations.insert(DELETION_COST_ANNOTATION.to_owned(), cost.to_string());
        }
        let busy_since = existing
            .get(BUSY_SINCE_ANNOTATION)
            .filter(|v| parse_rfc3339_ms(v).is_some())
            .cloned()
            .unwrap_or_else(|| rfc3339(now));
        annotations.insert(BUSY_SINCE_ANNOTATION.to_owned(), busy_since);
        let heartbeat = existing
            .get(LAST_WEBHOOK_ANNOTATION)
            .filter(|v| parse_rfc3339_ms(v).is_some_and(|at| now - at < HEARTBEAT_REFRESH_MS))
            .cloned()
            .unwrap_or_else(|| rfc3339(now));
        annotations.insert(LAST_WEBHOOK_ANNOTATION.to_owned(), heartbeat);
        let labels_current = has_all(pod.metadata.labels.as_ref(), &config.busy_labels);
        let annotations_current = annotations.iter().all(|(k, v)| existing.get(k) == Some(v));
        if labels_current && annotations_current {
            return None;
        }
        Some(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "labels": config.busy_labels,
                "annotations": annotations,
            }
        }))
    }

    async fn detach(&self, name: &str, pod: &Pod) -> WebhookOutcome {
        let Some(body) = self.busy_apply_body(pod) else {
            return WebhookOutcome::NoAction(NoActionReason::AlreadyDetached);
        };
        match self
            .inner
            .pods
            .apply(name, &body, &self.inner.webhook_policy)
            .await
        {
            Ok(()) => WebhookOutcome::Ok(WebhookAction::Detached),
            Err(e) => WebhookOutcome::Unavailable(e.to_string()),
        }
    }

    async fn delete(&self, pod: &Pod, reason: DeletionReason, detail: &str) -> WebhookOutcome {
        match self
            .inner
            .pods
            .delete(pod, reason, detail, &self.inner.webhook_policy)
            .await
        {
            Ok(Deleted::Now) => WebhookOutcome::Ok(WebhookAction::Deleted(reason)),
            Ok(Deleted::AlreadyGone) => WebhookOutcome::NoAction(NoActionReason::AlreadyGone),
            Err(e) => WebhookOutcome::Unavailable(e.to_string()),
        }
    }
}

/// Percent-decodes the `{pod}` segment and checks it is a DNS-1123 subdomain.
pub fn decode_pod_name(raw: &str) -> Result<String, String> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "pod name is not UTF-8 after percent-decoding".to_owned())?;
    if is_dns1123_subdomain(&decoded) {
        Ok(decoded.into_owned())
    } else {
        Err(format!(
            "{decoded:?} is not a valid pod name (DNS-1123 subdomain)"
        ))
    }
}

/// An IPv4-mapped IPv6 address as IPv4 (a dual-stack listener reports IPv4 peers so).
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// RFC 3339 in UTC with whole seconds (`2026-11-22T11:29:04Z`).
pub(crate) fn rfc3339(ms: UnixMillis) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

pub(crate) fn parse_rfc3339_ms(s: &str) -> Option<UnixMillis> {
    jitsi_scaler_core::clock::parse_iso8601(s)
}

/// A timestamp annotation of the pod, in ms.
pub(crate) fn annotation_ms(pod: &Pod, key: &str) -> Option<UnixMillis> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .and_then(|v| parse_rfc3339_ms(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_are_decoded_and_checked() {
        assert_eq!(
            decode_pod_name("jibri-7d9f8-abcde"),
            Ok("jibri-7d9f8-abcde".into())
        );
        assert_eq!(decode_pod_name("jibri%2D0"), Ok("jibri-0".into()));
        assert!(decode_pod_name("a%2Fb").is_err(), "no path tricks");
        assert!(decode_pod_name("..").is_err());
        assert!(decode_pod_name("").is_err());
        assert!(decode_pod_name("Jibri").is_err());
        assert!(decode_pod_name("%ff").is_err());
        assert!(decode_pod_name(&"a".repeat(254)).is_err());
    }

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(rfc3339(1_795_346_944_152), "2026-11-22T11:29:04Z");
        assert_eq!(
            parse_rfc3339_ms("2026-11-22T11:29:04Z"),
            Some(1_795_346_944_000)
        );
        assert_eq!(parse_rfc3339_ms("soon"), None);
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().expect("ip");
        assert_eq!(
            canonical_ip(mapped),
            "10.0.0.5".parse::<IpAddr>().expect("ip")
        );
        let v6: IpAddr = "fd00::5".parse().expect("ip");
        assert_eq!(canonical_ip(v6), v6);
    }

    #[test]
    fn outcomes_have_labels() {
        assert!(WebhookOutcome::NoAction(NoActionReason::Idle).is_success());
        assert!(!WebhookOutcome::Unavailable("x".into()).is_success());
        assert_eq!(WebhookOutcome::Forbidden("x".into()).label(), "forbidden");
    }
}
