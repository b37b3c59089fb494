//! The sweeper: on the leader only, every `SWEEP_INTERVAL`, checks the detached (busy-labelled)
//! pods and deletes those that are done or stuck.
//!
//! A detached pod is deleted when:
//! - its phase is `Failed` or `Succeeded`;
//! - its Jibri reports `EXPIRED`;
//! - its Jibri has reported `IDLE` for `IDLE_DETACHED_GRACE_SECONDS` in a row;
//! - its health check failed `SWEEP_UNREACHABLE_CYCLES` sweeps in a row **and** no webhook came
//!   from it for 3 minutes (as far as any replica knows: this replica's receipts, the pod's
//!   `jitsi-scaler.io/last-webhook` annotation, and how long this leader has been watching);
//! - it has been busy for `MAX_BUSY_SECONDS` (when set), counted from its
//!   `jitsi-scaler.io/busy-since` annotation.
//!
//! When every checked pod refuses connections while webhooks keep arriving, Jibri's API is
//! bound to 127.0.0.1 (Jibri #603): one error per sweep says so, and the gauge
//! `health_api_refused` is 1.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jitsi_scaler_core::backoff::Backoff;
use jitsi_scaler_core::clock::UnixMillis;
use jitsi_scaler_core::instance::BusyStatus;
use jitsi_scaler_core::leader::Leadership;
use k8s_openapi::api::core::v1::Pod;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::controller::{
    BUSY_SINCE_ANNOTATION, JibriController, LAST_WEBHOOK_ANNOTATION, annotation_ms,
};
use super::health::{Probe, Unreachable, pod_ip};
use super::pods::Deleted;
use super::stats::DeletionReason;
use crate::api::{ApiError, CallPolicy};

/// The limits of the sweeper's rules, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweepRules {
    /// Failed health checks in a row before the unreachable rule applies.
    pub unreachable_cycles: u32,
    /// Webhook silence required by the unreachable rule.
    pub webhook_silence_ms: i64,
    /// Time a detached pod may stay idle.
    pub idle_grace_ms: i64,
    /// Time a detached pod may stay busy (`None` = no limit).
    pub max_busy_ms: Option<i64>,
}

/// What the sweeper remembers of a pod between sweeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodMemory {
    /// Failed health checks in a row.
    pub unreachable_cycles: u32,
    /// Since when the pod has reported IDLE without interruption.
    pub idle_since_ms: Option<UnixMillis>,
}

/// What is known of a pod for the decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodFacts {
    /// Phase `Failed` or `Succeeded`.
    pub terminal_phase: bool,
    /// When the pod became busy, if known.
    pub busy_since_ms: Option<UnixMillis>,
    /// The latest moment a webhook from the pod may have arrived unseen by us.
    pub last_webhook_ms: UnixMillis,
}

/// Decides whether a detached pod goes, updating what is remembered of it.
pub fn decide(
    rules: &SweepRules,
    facts: &PodFacts,
    probe: Option<Probe>,
    memory: &mut PodMemory,
    now_ms: UnixMillis,
) -> Option<DeletionReason> {
    if facts.terminal_phase {
        return Some(DeletionReason::TerminalPhase);
    }
    match probe {
        Some(Probe::Status(status)) => {
            memory.unreachable_cycles = 0;
            match status {
                BusyStatus::Expired => return Some(DeletionReason::Expired),
                BusyStatus::Idle => {
                    let since = *memory.idle_since_ms.get_or_insert(now_ms);
                    if now_ms - since >= rules.idle_grace_ms {
                        return Some(DeletionReason::IdleDetached);
                    }
                }
                BusyStatus::Busy | BusyStatus::Unknown => memory.idle_since_ms = None,
            }
        }
        Some(Probe::Unreachable(_)) => {
            memory.idle_since_ms = None;
            memory.unreachable_cycles = memory.unreachable_cycles.saturating_add(1);
            if memory.unreachable_cycles >= rules.unreachable_cycles
                && now_ms - facts.last_webhook_ms >= rules.webhook_silence_ms
            {
                return Some(DeletionReason::Unreachable);
            }
        }
        None => {}
    }
    match (rules.max_busy_ms, facts.busy_since_ms) {
        (Some(max), Some(since)) if now_ms - since >= max => Some(DeletionReason::MaxBusy),
        _ => None,
    }
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Not the leader: nothing was done.
    pub not_leader: bool,
    /// Detached pods listed.
    pub pods: usize,
    /// Pods deleted, with their reason.
    pub deleted: Vec<(String, DeletionReason)>,
    /// Pods whose health check failed.
    pub unreachable: usize,
    /// Every checked pod refused connections while webhooks kept arriving.
    pub refused_everywhere: bool,
    /// Leadership was lost during the sweep, which stopped.
    pub interrupted: bool,
}

/// The sweeper task; see the [module documentation](self).
pub struct Sweeper {
    controller: JibriController,
    leadership: Arc<dyn Leadership>,
    memory: HashMap<String, PodMemory>,
    /// Since when this node has been sweeping as leader (wall ms).
    watching_since: Option<UnixMillis>,
    policy: CallPolicy,
}

impl std::fmt::Debug for Sweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper")
            .field("pods_remembered", &self.memory.len())
            .field("watching_since", &self.watching_since)
            .finish_non_exhaustive()
    }
}

impl Sweeper {
    pub(crate) fn new(controller: JibriController, leadership: Arc<dyn Leadership>) -> Self {
        let timeout = controller.inner.config.sweep_api_timeout;
        Self {
            controller,
            leadership,
            memory: HashMap::new(),
            watching_since: None,
            policy: CallPolicy::retrying(
                timeout,
                3,
                Backoff::new(Duration::from_millis(500), Duration::from_secs(5)),
            ),
        }
    }

    fn rules(&self) -> SweepRules {
        let c = &self.controller.inner.config;
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        SweepRules {
            unreachable_cycles: c.sweep_unreachable_cycles,
            webhook_silence_ms: ms(c.webhook_silence),
            idle_grace_ms: ms(c.idle_detached_grace),
            max_busy_ms: c.max_busy.map(ms),
        }
    }

    /// Sweeps every `SWEEP_INTERVAL` (the first at once; late ticks are delayed, not bursted)
    /// until `cancel`. A failed sweep is retried with back-off (at most the interval).
    pub async fn run(mut self, cancel: CancellationToken) {
        let period = self.controller.inner.config.sweep_interval;
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match self.sweep_once().await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.controller.inner.stats.sweep_failure();
                    tracing::warn!(error = %e, failures, "sweep failed");
                    let delay = backoff.delay(failures - 1).min(period);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => ticker.reset_immediately(),
                    }
                }
            }
        }
    }

    /// One sweep (public for tests and one-shot use).
    pub async fn sweep_once(&mut self) -> Result<SweepReport, ApiError> {
        if self.leadership.token().is_none() {
            tracing::debug!("not leader, skipping sweep");
            self.memory.clear();
            self.watching_since = None;
            return Ok(SweepReport {
                not_leader: true,
                ..SweepReport::default()
            });
        }
        let started = Instant::now();
        let inner = self.controller.inner.clone();
        let now = inner.clock.now_ms();
        let watching_since = *self.watching_since.get_or_insert(now);
        let pods = inner
            .pods
            .list(
                &inner.busy_selector,
                inner.config.list_page_size,
                &self.policy,
            )
            .await?;
        let mut report = SweepReport {
            pods: pods.len(),
            ..SweepReport::default()
        };
        let live: Vec<Pod> = pods
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && p.metadata.name.is_some())
            .collect();
        self.memory
            .retain(|uid, _| live.iter().any(|p| p.metadata.uid.as_deref() == Some(uid)));

        let probe = inner.probe.clone();
        let checked: Vec<(Pod, Option<Probe>)> = futures::stream::iter(live)
            .map(|pod| {
                let probe = probe.clone();
                async move {
                    if is_terminal(&pod) {
                        (pod, None)
                    } else {
                        let result = probe.check(pod_ip(&pod)).await;
                        (pod, Some(result))
                    }
                }
            })
            .buffer_unordered(inner.config.sweep_concurrency)
            .collect()
            .await;

        let rules = self.rules();
        let now = inner.clock.now_ms();
        let mut refused = 0usize;
        let mut recently_heard = false;
        for (pod, probe) in &checked {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let heard = [
                self.controller.last_receipt(&name),
                annotation_ms(pod, LAST_WEBHOOK_ANNOTATION),
                Some(watching_since),
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(watching_since);
            let facts = PodFacts {
                terminal_phase: is_terminal(pod),
                busy_since_ms: annotation_ms(pod, BUSY_SINCE_ANNOTATION),
                last_webhook_ms: heard,
            };
            if let Some(Probe::Unreachable(kind)) = probe {
                report.unreachable += 1;
                if *kind == Unreachable::Refused {
                    refused += 1;
                }
                tracing::warn!(pod = %name, reason = ?kind, "sweeper: failed to check jibri status");
                if self
                    .controller
                    .last_receipt(&name)
                    .is_some_and(|at| now - at < rules.webhook_silence_ms)
                    || annotation_ms(pod, LAST_WEBHOOK_ANNOTATION)
                        .is_some_and(|at| now - at < rules.webhook_silence_ms)
                {
                    recently_heard = true;
                }
            }
            let key = pod.metadata.uid.clone().unwrap_or_else(|| name.clone());
            let memory = self.memory.entry(key.clone()).or_default();
            let Some(reason) = decide(&rules, &facts, *probe, memory, now) else {
                continue;
            };
            if self.leadership.token().is_none() {
                tracing::warn!("leadership lost during the sweep, stopping");
                report.interrupted = true;
                break;
            }
            let detail = describe(reason, &rules);
            match inner.pods.delete(pod, reason, &detail, &self.policy).await {
                Ok(Deleted::Now) => report.deleted.push((name, reason)),
                Ok(Deleted::AlreadyGone) => {}
                Err(e) => tracing::warn!(pod = %name, error = %e, "sweeper: delete failed"),
            }
            self.memory.remove(&key);
        }
        let probed = checked.iter().filter(|(_, p)| p.is_some()).count();
        report.refused_everywhere = probed > 0 && refused == probed && recently_heard;
        if report.refused_everywhere {
            tracing::error!(
                pods = probed,
                port = inner.config.jibri_health_port,
                "every busy Jibri refuses health checks on its pod IP while webhooks arrive: Jibri's \
                 HTTP API listens on 127.0.0.1 only; set jibri.api.http.external-api-host = \"0.0.0.0\" \
                 (Jibri #603) and external-api-port = JIBRI_HEALTH_PORT"
            );
        }
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        inner
            .stats
            .sweep(millis, report.unreachable as u64, report.refused_everywhere);
        tracing::debug!(
            pods = report.pods,
            deleted = report.deleted.len(),
            unreachable = report.unreachable,
            millis,
            "sweep done"
        );
        Ok(report)
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed" | "Succeeded")
    )
}

fn describe(reason: DeletionReason, rules: &SweepRules) -> String {
    match reason {
        DeletionReason::Expired => "jibri reported EXPIRED".into(),
        DeletionReason::IdleAfterBusy => "detached jibri reported IDLE".into(),
        DeletionReason::TerminalPhase => "pod phase is Failed or Succeeded".into(),
        DeletionReason::IdleDetached => {
            format!("detached jibri idle for {} s", rules.idle_grace_ms / 1000)
        }
        DeletionReason::Unreachable => format!(
            "health check failed {} sweeps in a row and no webhook for {} s",
            rules.unreachable_cycles,
            rules.webhook_silence_ms / 1000
        ),
        DeletionReason::MaxBusy => format!(
            "busy for more than {} s",
            rules.max_busy_ms.unwrap_or_default() / 1000
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: SweepRules = SweepRules {
        unreachable_cycles: 3,
        webhook_silence_ms: 180_000,
        idle_grace_ms: 600_000,
        max_busy_ms: None,
    };

    fn status(s: BusyStatus) -> Option<Probe> {
        Some(Probe::Status(s))
    }

    const DOWN: Option<Probe> = Some(Probe::Unreachable(Unreachable::Refused));

    #[test]
    fn expired_and_ended_pods_go() {
        let mut m = PodMemory::default();
        let facts = PodFacts::default();
        assert_eq!(
            decide(&RULES, &facts, status(BusyStatus::Expired), &mut m, 0),
            Some(DeletionReason::Expired)
        );
        let ended = PodFacts {
            terminal_phase: true,
            ..facts
        };
        assert_eq!(
            decide(&RULES, &ended, None, &mut m, 0),
            Some(DeletionReason::TerminalPhase)
        );
        assert_eq!(
            decide(&RULES, &facts, status(BusyStatus::Busy), &mut m, 0),
            None
        );
    }

    #[test]
    fn idle_pods_go_after_the_grace_period_without_interruption() {
        let mut m = PodMemory::default();
        let f = PodFacts::default();
        assert_eq!(
            decide(&RULES, &f, status(BusyStatus::Idle), &mut m, 1_000),
            None
        );
        assert_eq!(
            decide(&RULES, &f, status(BusyStatus::Idle), &mut m, 500_000),
            None
        );
        assert_eq!(
            decide(&RULES, &f, status(BusyStatus::Busy), &mut m, 550_000),
            None,
            "busy resets"
        );
        assert_eq!(
            decide(&RULES, &f, status(BusyStatus::Idle), &mut m, 600_000),
            None
        );
        assert_eq!(
            decide(&RULES, &f, status(BusyStatus::Idle), &mut m, 1_199_999),
            None
        );
        assert_eq!(
            decide(&RULES, &f, status(BusyStatus::Idle), &mut m, 1_200_000),
            Some(DeletionReason::IdleDetached)
        );
    }

    #[test]
    fn unreachable_pods_go_only_after_n_cycles_and_webhook_silence() {
        let mut m = PodMemory::default();
        let silent = PodFacts {
            last_webhook_ms: 0,
            ..PodFacts::default()
        };
        let now = 1_000_000;
        assert_eq!(decide(&RULES, &silent, DOWN, &mut m, now), None);
        assert_eq!(decide(&RULES, &silent, DOWN, &mut m, now), None);
        assert_eq!(
            decide(&RULES, &silent, DOWN, &mut m, now),
            Some(DeletionReason::Unreachable)
        );

        let mut m = PodMemory::default();
        let talking = PodFacts {
            last_webhook_ms: now - 60_000,
            ..PodFacts::default()
        };
        for _ in 0..10 {
            assert_eq!(
                decide(&RULES, &talking, DOWN, &mut m, now),
                None,
                "still sending webhooks (K10)"
            );
        }
        assert_eq!(m.unreachable_cycles, 10);
        assert_eq!(
            decide(&RULES, &talking, status(BusyStatus::Busy), &mut m, now),
            None
        );
        assert_eq!(m.unreachable_cycles, 0, "an answer resets the count");
        let no_ip = Some(Probe::Unreachable(Unreachable::NoIp));
        let mut m = PodMemory {
            unreachable_cycles: 2,
            idle_since_ms: Some(5),
        };
        assert_eq!(
            decide(&RULES, &silent, no_ip, &mut m, now),
            Some(DeletionReason::Unreachable)
        );
    }

    #[test]
    fn long_busy_pods_go_when_limited() {
        let rules = SweepRules {
            max_busy_ms: Some(3_600_000),
            ..RULES
        };
        let mut m = PodMemory::default();
        let f = PodFacts {
            busy_since_ms: Some(0),
            last_webhook_ms: 0,
            terminal_phase: false,
        };
        assert_eq!(
            decide(&rules, &f, status(BusyStatus::Busy), &mut m, 3_599_999),
            None
        );
        assert_eq!(
            decide(&rules, &f, status(BusyStatus::Busy), &mut m, 3_600_000),
            Some(DeletionReason::MaxBusy)
        );
        let unknown_start = PodFacts {
            busy_since_ms: None,
            ..f
        };
        assert_eq!(
            decide(
                &rules,
                &unknown_start,
                status(BusyStatus::Busy),
                &mut m,
                9_999_999
            ),
            None
        );
        assert_eq!(
            decide(&RULES, &f, status(BusyStatus::Busy), &mut m, 9_999_999),
            None,
            "off by default"
        );
    }
}
