//! One group's reconcile: read, decide, act. Steps in order: the group write (scheduled
//! transition, autoscale decision, cooldown), the launcher (launch or flag victims), the sanity
//! listing when due, the drain follow-up of the termination policy, removal of expired states,
//! then the engine's bookkeeping.

use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::json;

use super::{EngineError, EngineEvent, GroupGauges, GuardStage, Shared};
use crate::audit::{
    AuditEvent, AutoScalerAction, GroupAuditEvent, InstanceAuditKind, LauncherAction,
};
use crate::clock::UnixMillis;
use crate::group::{Group, OrphanMode, TerminationPolicy};
use crate::instance::{CloudInstance, InstanceRecord, InstanceState};
use crate::leader::FencingToken;
use crate::metrics::WindowScratch;
use crate::plan::{Autoscale, GroupDecision, GroupInput, LaunchPlan, cloud_running, decide_group};
use crate::policy::{Decision, Direction, HoldReason};
use crate::provider::{
    CloudProvider, LaunchOutcome, LaunchRequest, LaunchSlot, LaunchedInstance, ProviderError,
    display_name,
};
use crate::schedule;
use crate::store::{
    CloudSnapshot, Expect, FlagUpdate, GroupRecord, GroupRuntime, LaunchIntent, StoreError,
    TerminateRetry,
};

/// After a successful terminate, the same instance is not terminated again for this long.
const TERMINATED_QUIET_MS: i64 = 600_000;

/// How often a provider call in flight checks that this node still leads.
const LEADERSHIP_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// What one reconcile did (for tests, tools and logs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReconcileReport {
    /// The group.
    pub group: String,
    /// This node was leader: the reconcile ran.
    pub leader: bool,
    /// The group existed.
    pub found: bool,
    /// The autoscale step.
    pub autoscale: Option<Autoscale>,
    /// Desired count before the pass.
    pub desired_before: u32,
    /// Desired count after the pass.
    pub desired_after: u32,
    /// The launcher's plan.
    pub launch: Option<LaunchPlan>,
    /// Instances launched (ids).
    pub launched: Vec<String>,
    /// Instances flagged for scale-down.
    pub flagged: Vec<String>,
    /// Instances terminated through the provider.
    pub terminated: Vec<String>,
    /// Expired states removed.
    pub expired: Vec<String>,
    /// The cloud was listed.
    pub listed: bool,
    /// Provider and policy problems met (the pass went on).
    pub problems: Vec<String>,
}

/// Runs a reconcile with its deadline, and reports it to the observer and the log.
pub(crate) async fn reconcile_guarded(shared: &Shared, group: &str) {
    let started = Instant::now();
    let outcome = match tokio::time::timeout(
        shared.options.reconcile_timeout,
        reconcile(shared, group),
    )
    .await
    {
        Ok(Ok(report)) => {
            for problem in &report.problems {
                tracing::warn!(group, problem = %problem, "reconcile problem");
            }
            "ok"
        }
        Ok(Err(EngineError::Store(StoreError::Conflict { .. }))) => {
            tracing::info!(
                group,
                "group changed during the reconcile; it runs again on the next pass"
            );
            "conflict"
        }
        Ok(Err(e)) => {
            tracing::error!(group, error = %e, "reconcile failed; no further action this pass");
            shared.observer.observe(&EngineEvent::StoreError {
                group: group.to_owned(),
            });
            "error"
        }
        Err(_) => {
            tracing::error!(
                group,
                timeout_s = shared.options.reconcile_timeout.as_secs(),
                "reconcile timed out and was cancelled"
            );
            "timeout"
        }
    };
    shared.observer.observe(&EngineEvent::Reconciled {
        group: group.to_owned(),
        outcome,
        duration: started.elapsed(),
    });
}

/// One reconcile of a group.
pub(crate) async fn reconcile(shared: &Shared, name: &str) -> Result<ReconcileReport, EngineError> {
    let mut report = ReconcileReport {
        group: name.to_owned(),
        ..ReconcileReport::default()
    };
    let Some(token) = shared.leadership.token() else {
        return Ok(report);
    };
    report.leader = true;
    let now = shared.clock.now_ms();
    let timings = shared.options.pass.timings;
    let Some(snap) = shared
        .store
        .snapshot(name, now - timings.metric_ttl_ms)
        .await?
    else {
        if let Ok(mut groups) = shared.groups.write() {
            groups.remove(name);
        }
        shared.observer.observe(&EngineEvent::GroupRemoved {
            group: name.to_owned(),
        });
        return Ok(report);
    };
    report.found = true;
    shared.cache_group(&snap.record.group);
    let provider = shared.providers.get(&snap.record.group.cloud).cloned();
    let mut pass = Pass {
        shared,
        token,
        now,
        provider,
        runtime: snap.runtime.clone(),
        stored_runtime: snap.runtime.clone(),
        report,
    };
    report_missing_provider(&mut pass, &snap.record.group);

    // A launch a crash or timeout left without an answer: the same slots again, then a new pass
    // on fresh data.
    if let Some(intent) = pass.runtime.pending_launch.clone() {
        let count = snap.instances.len() as u32;
        let protected = snap.record.launch_protected(now);
        pass.run_intent(&snap.record.group, intent, count, protected)
            .await?;
        pass.write_runtime(&snap.record.group.name).await?;
        shared_trigger(shared, name);
        return Ok(pass.report);
    }

    let group = &snap.record.group;
    let guard_on = group
        .enable_cloud_guard
        .unwrap_or(shared.options.pass.cloud_guard);
    if guard_on && pass.fresh_cloud().is_none() {
        pass.sanity(group).await;
    }
    let cloud: Option<Arc<[CloudInstance]>> = pass.fresh_cloud();
    let mut scratch = WindowScratch::default();
    let input = GroupInput {
        group,
        grace_until_ms: snap.record.grace_until_ms,
        instances: &snap.instances,
        samples: &snap.samples,
        cloud: cloud.as_deref(),
    };
    let decision = off_the_worker(snap.instances.len(), || {
        decide_group(&input, &shared.options.pass, now, &mut scratch)
    });
    pass.report.desired_before = group.scaling_options.desired_count;
    pass.report.desired_after = decision.desired();
    pass.report.autoscale = Some(decision.autoscale.clone());
    pass.report.launch = decision.launch;

    let record = pass.write_group(&snap.record, &decision).await?;
    pass.launcher(&record, &decision).await?;
    if !pass.still_leader() {
        // Another node leads now: it finishes what this pass started.
        pass.report
            .problems
            .push("leadership lost during the reconcile".into());
        return Ok(pass.report);
    }
    if !pass.report.listed && pass.sanity_due() {
        pass.sanity(&record.group).await;
        let live: Vec<&InstanceRecord> = decision.live().collect();
        pass.orphans(&record.group, &live).await?;
    }
    let draining: Vec<&InstanceRecord> = decision
        .shutting_down
        .iter()
        .chain(decision.expired.iter())
        .copied()
        .collect();
    let terminated = pass.drains(&record.group, &draining).await?;
    let expired: Vec<String> = decision
        .expired
        .iter()
        .map(|r| r.state.instance_id.clone())
        .collect();
    let mut remove: Vec<String> = expired.iter().chain(&terminated).cloned().collect();
    remove.sort();
    remove.dedup();
    if !remove.is_empty() {
        shared
            .store
            .remove_instances(name, &remove, Some(token))
            .await?;
        pass.report.expired = expired;
    }
    pass.feed_load(&record.group, &decision).await;
    pass.converge(&record.group, &decision, cloud.as_deref());
    pass.write_runtime(name).await?;
    Ok(pass.report)
}

/// Groups from this many instances on are decided off the runtime's worker.
const LARGE_GROUP: usize = 1_000;

/// Runs the decision of a group of `instances`: for a large group on a multi-threaded runtime,
/// the worker first hands its other tasks (check-ins) to another thread, so a pass over tens
/// of thousands of instances never holds up a check-in for its whole length. A small group's
/// decision is shorter than that hand-over.
fn off_the_worker<R>(instances: usize, work: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let multi_threaded =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if instances >= LARGE_GROUP && multi_threaded {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

fn shared_trigger(shared: &Shared, group: &str) {
    let _ = shared.wake.try_send(group.to_owned());
}

fn report_missing_provider(pass: &mut Pass<'_>, group: &Group) {
    if pass.provider.is_none() && !pass.shared.options.dry_run {
        pass.report.problems.push(format!(
            "cloud {:?} is not configured: no launch, listing or termination",
            group.cloud
        ));
    }
}

/// The state of one reconcile in progress.
struct Pass<'a> {
    shared: &'a Shared,
    token: FencingToken,
    now: UnixMillis,
    provider: Option<Arc<dyn CloudProvider>>,
    runtime: GroupRuntime,
    /// The runtime as the store holds it: read at the start, or written since.
    stored_runtime: GroupRuntime,
    report: ReconcileReport,
}

fn random_id() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

impl Pass<'_> {
    fn fence(&self) -> Option<FencingToken> {
        Some(self.token)
    }

    /// Still the leader with the same token: a provider call may go out.
    fn still_leader(&self) -> bool {
        self.shared.leadership.token() == Some(self.token)
    }

    fn event(&self, event: EngineEvent) {
        self.shared.observer.observe(&event);
    }

    fn cloud_ttl_ms(&self) -> i64 {
        self.shared.options.cloud_cache_ttl.as_millis() as i64
    }

    /// The cached cloud list, if recent enough.
    fn fresh_cloud(&self) -> Option<Arc<[CloudInstance]>> {
        self.runtime
            .cloud
            .as_ref()
            .filter(|c| self.now - c.at_ms <= self.cloud_ttl_ms())
            .map(|c| Arc::clone(&c.instances))
    }

    fn sanity_due(&self) -> bool {
        let interval = self.shared.options.sanity_interval.as_millis() as i64;
        self.runtime
            .cloud
            .as_ref()
            .is_none_or(|c| self.now - c.at_ms >= interval)
    }

    /// Runs a provider call only while this node leads with the pass's token: `None` when the
    /// leadership is lost first. The call is then dropped, so a leader that was paused and
    /// resumes after another took over sends nothing more (not even a retry the provider's
    /// client was waiting to send).
    async fn while_leader<T>(&self, call: impl std::future::Future<Output = T>) -> Option<T> {
        if !self.still_leader() {
            return None;
        }
        let mut check = tokio::time::interval(LEADERSHIP_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Checked on every wake-up of this task, before the call is polled again.
        let lost = std::future::poll_fn(|cx| {
            if !self.still_leader() {
                return std::task::Poll::Ready(());
            }
            while check.poll_tick(cx).is_ready() {}
            std::task::Poll::Pending
        });
        tokio::select! {
            biased;
            () = lost => None,
            out = call => Some(out),
        }
    }

    /// Runs a provider call with the deadline while this node leads.
    async fn call<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        match self
            .while_leader(tokio::time::timeout(
                self.shared.options.provider_timeout,
                call,
            ))
            .await
        {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ProviderError::Transient(format!("{what} timed out"))),
            None => {
                tracing::warn!(
                    call = what,
                    token = self.token,
                    "leadership lost: provider call abandoned"
                );
                Err(ProviderError::Fatal(format!(
                    "leadership lost during {what}"
                )))
            }
        }
    }

    async fn audit(&self, group: &str, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.shared
            .store
            .append_audit(group, &events, self.fence())
            .await
    }

    /// Writes the runtime when it differs from the stored one.
    async fn write_runtime(&mut self, group: &str) -> Result<(), StoreError> {
        if self.runtime != self.stored_runtime {
            self.shared
                .store
                .put_runtime(group, &self.runtime, self.fence())
                .await?;
            self.stored_runtime = self.runtime.clone();
        }
        Ok(())
    }

    /// Writes the group when the pass changed it (transition, desired count, cooldown), and
    /// audits the autoscaler. Returns the record the rest of the pass works with.
    async fn write_group(
        &mut self,
        old: &GroupRecord,
        decision: &GroupDecision<'_>,
    ) -> Result<GroupRecord, StoreError> {
        let now = self.now;
        let group = decision.group.as_ref();
        let mut audits = Vec::new();
        let mut grace_until = None;
        if let Some(t) = &decision.transition {
            grace_until = Some(now + group.grace_period_ttl_sec as i64 * 1000);
            if let Some(w) = &t.warning {
                tracing::warn!(group = %group.name, warning = %w, "scheduled scaling");
            }
            tracing::info!(group = %group.name, from = ?t.from, to = ?t.to, "scheduled scaling transition");
            audits.push(AuditEvent::Group(GroupAuditEvent::AutoScaler(
                AutoScalerAction {
                    timestamp: now,
                    action_type: "scheduledScalingTransition".into(),
                    count: 0,
                    old_desired_count: None,
                    new_desired_count: None,
                    scale_metrics: Vec::new(),
                    detail: Some(json!({
                        "fromPeriod": t.from.as_deref().unwrap_or("none"),
                        "toPeriod": t.to.as_deref().unwrap_or("none"),
                        "oldOptions": t.old_options,
                        "newOptions": t.new_options,
                    })),
                },
            )));
            self.event(EngineEvent::ScheduledTransition {
                group: group.name.clone(),
            });
        }
        match &decision.autoscale {
            Autoscale::Ran {
                window,
                decision: d,
            } => {
                audits.push(AuditEvent::Group(GroupAuditEvent::AutoScalerRun {
                    at_ms: now,
                    scale_metrics: Some(window.values()),
                }));
                match d {
                    Decision::Scale {
                        direction,
                        to,
                        metrics,
                    } => {
                        let up = *direction == Direction::Up;
                        let from = old.group.scaling_options.desired_count;
                        grace_until = Some(now + group.grace_period_sec(up) as i64 * 1000);
                        audits.push(AuditEvent::Group(GroupAuditEvent::AutoScaler(
                            AutoScalerAction {
                                timestamp: now,
                                action_type: if up {
                                    "increaseDesiredCount"
                                } else {
                                    "decreaseDesiredCount"
                                }
                                .into(),
                                count: decision.count,
                                old_desired_count: Some(from),
                                new_desired_count: Some(*to),
                                scale_metrics: metrics.clone(),
                                detail: None,
                            },
                        )));
                        if *to != from {
                            tracing::info!(group = %group.name, from, to, ?direction, metrics = ?metrics, "desired count changed");
                            self.event(EngineEvent::DesiredChanged {
                                group: group.name.clone(),
                                from,
                                to: *to,
                                direction: *direction,
                            });
                        }
                    }
                    Decision::Clamp { to } => {
                        tracing::warn!(group = %group.name, to, "desired count outside [min, max]: clamped");
                    }
                    Decision::Hold(reason) => {
                        if *reason != HoldReason::WithinThresholds {
                            tracing::debug!(group = %group.name, reason = reason.as_str(), "autoscaler holds");
                            self.event(EngineEvent::DecisionSkipped {
                                group: group.name.clone(),
                                reason: reason.as_str(),
                            });
                        }
                    }
                }
            }
            Autoscale::GuardSuppressed { running } => {
                tracing::info!(group = %group.name, running, "cloud guard: the cloud already runs enough; autoscale skipped");
                self.event(EngineEvent::CloudGuardSuppressed {
                    group: group.name.clone(),
                    stage: GuardStage::Autoscale,
                });
            }
            Autoscale::UnknownType => self.report.problems.push(format!(
                "group type {:?} is not supported: no autoscaling",
                group.type_name
            )),
            Autoscale::Disabled | Autoscale::Cooldown => {}
        }
        let mut record = GroupRecord {
            group: group.clone(),
            version: old.version,
            grace_until_ms: grace_until.or(old.grace_until_ms),
            protected_until_ms: old.protected_until_ms,
        };
        if decision.desired_changed || decision.transition.is_some() || grace_until.is_some() {
            let written = self
                .shared
                .store
                .put_group(&record, Expect::Version(old.version), self.fence())
                .await;
            if written.is_err() && decision.transition.is_some() {
                self.event(EngineEvent::ScheduledScalingError {
                    group: group.name.clone(),
                });
            }
            record.version = written?;
            self.shared.cache_group(&record.group);
        }
        self.audit(&group.name, audits).await?;
        Ok(record)
    }

    /// The launcher's step.
    async fn launcher(
        &mut self,
        record: &GroupRecord,
        decision: &GroupDecision<'_>,
    ) -> Result<(), StoreError> {
        let Some(plan) = decision.launch else {
            return Ok(());
        };
        let group = &record.group;
        let now = self.now;
        let mut audits = vec![AuditEvent::Group(GroupAuditEvent::LauncherRun {
            at_ms: now,
        })];
        match plan {
            LaunchPlan::Launch { quantity } => {
                if let Some(at) = self.runtime.launch_retry_at_ms.filter(|at| *at > now) {
                    tracing::info!(group = %group.name, quantity, retry_in_s = (at - now) / 1000,
                        failures = self.runtime.launch_failures, "launch backing off after failures");
                } else {
                    self.launch(record, quantity, decision.count).await?;
                }
            }
            LaunchPlan::Throttled {
                untracked,
                threshold,
            } => {
                tracing::warn!(group = %group.name, untracked, threshold, "too many untracked instances: launch skipped");
                audits.push(launcher_item(
                    now,
                    "launchThrottled",
                    decision,
                    0,
                    Some(json!({"untracked": untracked, "threshold": threshold})),
                ));
                self.event(EngineEvent::LaunchThrottled {
                    group: group.name.clone(),
                });
            }
            LaunchPlan::GuardSuppressed { running, limit } => {
                tracing::info!(group = %group.name, running, limit, "cloud guard: launch skipped");
                self.event(EngineEvent::CloudGuardSuppressed {
                    group: group.name.clone(),
                    stage: GuardStage::Launch,
                });
            }
            LaunchPlan::ScaleDown { victims } => {
                if decision.victims.shortfall > 0 {
                    tracing::error!(group = %group.name, wanted = victims, shortfall = decision.victims.shortfall,
                        "not enough unprotected instances to scale down");
                }
                let ids: Vec<String> = decision
                    .victims
                    .chosen
                    .iter()
                    .map(|r| r.state.instance_id.clone())
                    .collect();
                if !ids.is_empty() {
                    let expires_ms = now + self.shared.options.flag_ttl.as_millis() as i64;
                    let flags: Vec<FlagUpdate> = ids
                        .iter()
                        .map(|id| FlagUpdate::RequestShutdown {
                            instance_id: id.clone(),
                            at_ms: now,
                            expires_ms,
                        })
                        .collect();
                    self.shared.store.update_flags(&flags, self.fence()).await?;
                    tracing::info!(group = %group.name, instances = ?ids, "scale-down: instances flagged for shutdown");
                    audits.extend(ids.iter().map(|id| {
                        AuditEvent::instance(id, InstanceAuditKind::RequestToTerminate, now)
                    }));
                    audits.push(launcher_item(
                        now,
                        "scaleDown",
                        decision,
                        ids.len() as u32,
                        None,
                    ));
                    self.event(EngineEvent::Downscaled {
                        group: group.name.clone(),
                        count: ids.len() as u32,
                    });
                    self.report.flagged = ids;
                }
            }
            LaunchPlan::Idle => tracing::debug!(group = %group.name, "no scaling activity needed"),
        }
        self.audit(&group.name, audits).await
    }

    /// Launches `quantity` instances: the intent is persisted before the provider is called.
    async fn launch(
        &mut self,
        record: &GroupRecord,
        quantity: u32,
        count: u32,
    ) -> Result<(), StoreError> {
        let group = &record.group;
        let id = random_id();
        let slots = (0..quantity)
            .map(|i| LaunchSlot {
                display_name: display_name(&group.name),
                idempotency_key: format!("{id}-{i}"),
            })
            .collect();
        let intent = LaunchIntent {
            id,
            created_ms: self.now,
            slots,
        };
        let protected = record.launch_protected(self.now);
        if self.shared.options.dry_run {
            let launched: Vec<LaunchedInstance> = intent
                .slots
                .iter()
                .enumerate()
                .map(|(slot, s)| LaunchedInstance {
                    slot,
                    instance_id: format!("dryrun-{}", s.idempotency_key),
                    display_name: s.display_name.clone(),
                })
                .collect();
            tracing::info!(group = %group.name, quantity, "dry run: would launch");
            return self
                .record_launched(group, count, &launched, protected, true)
                .await;
        }
        if self.provider.is_none() {
            self.launch_failed(
                group,
                count,
                &ProviderError::Config(format!("cloud {:?} is not configured", group.cloud)),
            )
            .await;
            return Ok(());
        }
        self.runtime.pending_launch = Some(intent.clone());
        self.write_runtime(&group.name).await?;
        self.run_intent(group, intent, count, protected).await
    }

    /// Calls the provider for a persisted intent and records the outcome. A call without an
    /// answer (timeout) keeps the intent, so the next pass retries it with the same keys.
    async fn run_intent(
        &mut self,
        group: &Group,
        intent: LaunchIntent,
        count: u32,
        protected: bool,
    ) -> Result<(), StoreError> {
        let Some(provider) = self.provider.clone() else {
            return Ok(());
        };
        let request = LaunchRequest {
            intent_id: intent.id.clone(),
            slots: intent.slots.clone(),
            current_count: count as usize,
        };
        tracing::info!(group = %group.name, quantity = request.slots.len(), intent = %intent.id, "launching");
        let outcome = match self
            .while_leader(tokio::time::timeout(
                self.shared.options.provider_timeout,
                provider.launch(group, &request),
            ))
            .await
        {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => {
                let e = ProviderError::Transient(
                    "launch timed out; it will be retried with the same idempotency keys".into(),
                );
                self.launch_failed(group, count, &e).await;
                return Ok(());
            }
            None => {
                tracing::warn!(group = %group.name, intent = %intent.id, token = self.token,
                    "leadership lost: launch abandoned; the next leader repeats it with the same idempotency keys");
                return Ok(());
            }
        };
        self.runtime.pending_launch = None;
        let LaunchOutcome { launched, error } = outcome;
        self.record_launched(group, count, &launched, protected, false)
            .await?;
        match error {
            Some(e) => self.launch_failed(group, count, &e).await,
            None if launched.len() < request.slots.len() => {
                let e = ProviderError::Fatal(format!(
                    "{} of {} instances launched",
                    launched.len(),
                    request.slots.len()
                ));
                self.launch_failed(group, count, &e).await;
            }
            None => {
                self.runtime.launch_failures = 0;
                self.runtime.launch_retry_at_ms = None;
                self.runtime.last_launch_error = None;
            }
        }
        Ok(())
    }

    /// Placeholders, protection, audits and events for launched instances.
    async fn record_launched(
        &mut self,
        group: &Group,
        count: u32,
        launched: &[LaunchedInstance],
        protected: bool,
        dry_run: bool,
    ) -> Result<(), StoreError> {
        if launched.is_empty() {
            return Ok(());
        }
        let now = self.now;
        let store = &self.shared.store;
        let placeholders: Vec<InstanceState> = launched
            .iter()
            .map(|l| {
                InstanceState::placeholder(
                    &l.instance_id,
                    &group.name,
                    &group.type_name,
                    now,
                    dry_run,
                )
            })
            .collect();
        let retention = self.shared.options.pass.timings.provisioning_ttl_ms;
        store
            .put_instances(&group.name, &placeholders, retention, self.fence())
            .await?;
        if protected {
            let until_ms = now + group.protected_ttl_sec as i64 * 1000;
            let flags: Vec<FlagUpdate> = launched
                .iter()
                .map(|l| FlagUpdate::Protect {
                    instance_id: l.instance_id.clone(),
                    until_ms,
                })
                .collect();
            store.update_flags(&flags, self.fence()).await?;
        }
        let mut audits: Vec<AuditEvent> = launched
            .iter()
            .map(|l| AuditEvent::instance(&l.instance_id, InstanceAuditKind::RequestToLaunch, now))
            .collect();
        audits.push(AuditEvent::Group(GroupAuditEvent::Launcher(
            LauncherAction {
                timestamp: now,
                action_type: "scaleUp".into(),
                count,
                desired_count: group.scaling_options.desired_count,
                scale_quantity: launched.len() as u32,
                detail: dry_run.then(|| json!({"dryRun": true})),
            },
        )));
        self.audit(&group.name, audits).await?;
        let ids: Vec<String> = launched.iter().map(|l| l.instance_id.clone()).collect();
        tracing::info!(group = %group.name, instances = ?ids, protected, dry_run, "launched");
        self.event(EngineEvent::Launched {
            group: group.name.clone(),
            count: ids.len() as u32,
        });
        self.report.launched.extend(ids);
        Ok(())
    }

    /// Counts a launch failure and backs the group's launches off (D9).
    async fn launch_failed(&mut self, group: &Group, count: u32, error: &ProviderError) {
        self.runtime.launch_failures = self.runtime.launch_failures.saturating_add(1);
        let mut delay = self
            .shared
            .options
            .launch_backoff
            .delay(self.runtime.launch_failures - 1);
        if let ProviderError::Throttled {
            retry_after: Some(after),
            ..
        } = error
        {
            delay = delay.max(*after);
        }
        self.runtime.launch_retry_at_ms = Some(self.now + delay.as_millis() as i64);
        self.runtime.last_launch_error = Some(error.to_string());
        tracing::error!(group = %group.name, error = %error, class = error.class(),
            failures = self.runtime.launch_failures, retry_in_s = delay.as_secs(), "launch failed");
        self.report.problems.push(format!("launch failed: {error}"));
        self.event(EngineEvent::LaunchFailed {
            group: group.name.clone(),
            class: error.class(),
        });
        let item = LauncherAction {
            timestamp: self.now,
            action_type: "launchFailed".into(),
            count,
            desired_count: group.scaling_options.desired_count,
            scale_quantity: 0,
            detail: Some(
                json!({"class": error.class(), "error": error.to_string(), "failures": self.runtime.launch_failures}),
            ),
        };
        if let Err(e) = self
            .audit(
                &group.name,
                vec![AuditEvent::Group(GroupAuditEvent::Launcher(item))],
            )
            .await
        {
            tracing::warn!(group = %group.name, error = %e, "could not audit a launch failure");
        }
    }

    /// Lists the group's cloud and caches the list (terminated instances dropped).
    async fn sanity(&mut self, group: &Group) {
        let Some(provider) = self.provider.clone() else {
            return;
        };
        match self.call("listing", provider.list(group)).await {
            Ok(list) => {
                let instances: Vec<CloudInstance> =
                    list.into_iter().filter(|c| !c.is_terminated()).collect();
                tracing::debug!(group = %group.name, instances = instances.len(), "cloud listed");
                self.event(EngineEvent::Listed {
                    group: group.name.clone(),
                    instances: instances.len() as u32,
                });
                self.runtime.cloud = Some(CloudSnapshot {
                    at_ms: self.now,
                    instances: instances.into(),
                });
                self.report.listed = true;
            }
            Err(e) => {
                tracing::warn!(group = %group.name, error = %e, "cloud listing failed; keeping the previous list");
                self.report.problems.push(format!("listing failed: {e}"));
                self.event(EngineEvent::ListFailed {
                    group: group.name.clone(),
                    class: e.class(),
                });
            }
        }
    }

    /// The orphan policy (D4) after a fresh listing.
    async fn orphans(&mut self, group: &Group, live: &[&InstanceRecord]) -> Result<(), StoreError> {
        let Some(policy) = group.orphan_policy.filter(|p| p.mode != OrphanMode::Off) else {
            self.runtime.orphan_streaks.clear();
            return Ok(());
        };
        if !self.report.listed {
            return Ok(());
        }
        let tracked: std::collections::HashSet<&str> =
            live.iter().map(|r| r.state.instance_id.as_str()).collect();
        let untracked: Vec<CloudInstance> = self
            .runtime
            .cloud
            .as_ref()
            .map(|c| {
                c.instances
                    .iter()
                    .filter(|i| i.is_running() && !tracked.contains(i.instance_id.as_str()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut streaks = std::collections::BTreeMap::new();
        for c in &untracked {
            let n = self
                .runtime
                .orphan_streaks
                .get(&c.instance_id)
                .copied()
                .unwrap_or(0)
                + 1;
            streaks.insert(c.instance_id.clone(), n);
        }
        self.runtime.orphan_streaks = streaks;
        let provisioning_ttl = self.shared.options.pass.timings.provisioning_ttl_ms;
        let sanity_ms = self.shared.options.sanity_interval.as_millis() as i64;
        for c in untracked {
            let streak = self
                .runtime
                .orphan_streaks
                .get(&c.instance_id)
                .copied()
                .unwrap_or(0);
            let old_enough = match c.created_at_ms {
                Some(created) => self.now - created >= provisioning_ttl,
                None => i64::from(streak) * sanity_ms >= provisioning_ttl,
            };
            if streak < policy.orphan_cycles || !old_enough {
                continue;
            }
            if policy.mode == OrphanMode::Log {
                tracing::warn!(group = %group.name, instance = %c.instance_id, streak,
                    "orphan: running in the cloud, reported by no sidecar (orphan policy log: not terminated)");
                continue;
            }
            if self.terminate(group, &c.instance_id, "orphan").await? {
                self.runtime.orphan_streaks.remove(&c.instance_id);
            }
        }
        Ok(())
    }

    /// The termination policy's follow-up of draining instances. Returns the instances
    /// terminated: gone from the cloud, their states are removed (their audit stays).
    async fn drains(
        &mut self,
        group: &Group,
        records: &[&InstanceRecord],
    ) -> Result<Vec<String>, StoreError> {
        let policy = group.termination_policy();
        if policy == TerminationPolicy::Sidecar || records.is_empty() {
            return Ok(Vec::new());
        }
        let mut terminated = Vec::new();
        let now = self.now;
        let drain_timeout = group.drain_timeout_sec() as i64 * 1000;
        let silence = self.shared.options.drain_silence.as_millis() as i64;
        for rec in records {
            let flags = &rec.flags;
            let reason = if flags.shutdown_confirmed_ms.is_some() {
                Some("confirmed")
            } else if policy == TerminationPolicy::OnConfirmOrTimeout {
                match flags.shutdown_requested_ms {
                    Some(at) if now - at >= drain_timeout => Some("drain_timeout"),
                    Some(_) if now - rec.state.timestamp >= silence => Some("silent"),
                    _ => None,
                }
            } else {
                None
            };
            let Some(reason) = reason else { continue };
            if self
                .terminate(group, &rec.state.instance_id, reason)
                .await?
            {
                terminated.push(rec.state.instance_id.clone());
            }
        }
        Ok(terminated)
    }

    /// Terminates one instance through the provider (idempotent), with per-instance back-off.
    /// Returns whether it was terminated.
    async fn terminate(
        &mut self,
        group: &Group,
        instance_id: &str,
        reason: &'static str,
    ) -> Result<bool, StoreError> {
        let now = self.now;
        if self
            .runtime
            .terminate_retry_at_ms
            .get(instance_id)
            .is_some_and(|r| r.at_ms > now)
        {
            return Ok(false);
        }
        if self.shared.options.dry_run {
            tracing::info!(group = %group.name, instance = instance_id, reason, "dry run: would terminate");
            return Ok(false);
        }
        let Some(provider) = self.provider.clone() else {
            return Ok(false);
        };
        if !provider.capabilities().terminate {
            self.report.problems.push(format!(
                "provider {} cannot terminate; {instance_id} left to itself",
                provider.name()
            ));
            return Ok(false);
        }
        match self
            .call("terminate", provider.terminate(group, instance_id))
            .await
        {
            Ok(()) => {
                tracing::info!(group = %group.name, instance = instance_id, reason, "terminated through the provider");
                // Gone from the cloud: not an untracked instance until the next listing says so.
                if let Some(cloud) = self.runtime.cloud.as_mut() {
                    cloud.instances = cloud
                        .instances
                        .iter()
                        .filter(|c| c.instance_id != instance_id)
                        .cloned()
                        .collect();
                }
                self.runtime.terminate_retry_at_ms.insert(
                    instance_id.to_owned(),
                    TerminateRetry {
                        attempts: 0,
                        at_ms: now + TERMINATED_QUIET_MS,
                    },
                );
                self.audit(
                    &group.name,
                    vec![AuditEvent::instance(
                        instance_id,
                        InstanceAuditKind::ServerTerminate,
                        now,
                    )],
                )
                .await?;
                self.event(EngineEvent::Terminated {
                    group: group.name.clone(),
                    reason,
                });
                self.report.terminated.push(instance_id.to_owned());
                Ok(true)
            }
            Err(e) => {
                let attempts = self
                    .runtime
                    .terminate_retry_at_ms
                    .get(instance_id)
                    .map_or(0, |r| r.attempts)
                    + 1;
                let delay = self.shared.options.terminate_backoff.delay(attempts - 1);
                self.runtime.terminate_retry_at_ms.insert(
                    instance_id.to_owned(),
                    TerminateRetry {
                        attempts,
                        at_ms: now + delay.as_millis() as i64,
                    },
                );
                tracing::warn!(group = %group.name, instance = instance_id, error = %e, attempts, "terminate failed");
                self.report
                    .problems
                    .push(format!("terminate {instance_id} failed: {e}"));
                self.event(EngineEvent::TerminateFailed {
                    group: group.name.clone(),
                    class: e.class(),
                });
                Ok(false)
            }
        }
    }

    /// Tells a load-aware provider the load of the running instances.
    async fn feed_load(&mut self, group: &Group, decision: &GroupDecision<'_>) {
        let Some(provider) = self
            .provider
            .clone()
            .filter(|p| p.capabilities().load_feedback)
        else {
            return;
        };
        if self.shared.options.dry_run {
            return;
        }
        let loads: Vec<(String, f64)> = decision
            .active
            .iter()
            .filter(|r| !r.is_provisioning())
            .map(|r| {
                let status = &r.state.status;
                let load = match (status.stats, status.jibri_status) {
                    (Some(stats), _) => stats.load(),
                    (None, Some(j)) if j.busy_status == crate::instance::BusyStatus::Busy => 1.0,
                    _ => 0.0,
                };
                (r.state.instance_id.clone(), load)
            })
            .collect();
        if let Err(e) = self
            .call("load feedback", provider.observe_load(group, &loads))
            .await
        {
            tracing::debug!(group = %group.name, error = %e, "load feedback failed");
        }
    }

    /// Convergence lag (D2), housekeeping of the runtime, and the group's gauges.
    fn converge(
        &mut self,
        group: &Group,
        decision: &GroupDecision<'_>,
        cloud: Option<&[CloudInstance]>,
    ) {
        let now = self.now;
        let desired = decision.desired();
        if desired == decision.count {
            self.runtime.gap_since_ms = None;
            self.runtime.gap_warned = false;
        } else {
            let since = *self.runtime.gap_since_ms.get_or_insert(now);
            let lag_s = (now - since) / 1000;
            if lag_s >= group.convergence_warn_sec() as i64 && !self.runtime.gap_warned {
                self.runtime.gap_warned = true;
                tracing::warn!(group = %group.name, desired, count = decision.count, lag_s,
                    last_launch_error = ?self.runtime.last_launch_error, "group has not converged to its desired count");
            }
        }
        let stale = now - TERMINATED_QUIET_MS * 6;
        self.runtime
            .terminate_retry_at_ms
            .retain(|_, r| r.at_ms > stale);
        let active_period =
            schedule::active_period_for(group, &self.shared.options.pass.schedule, now)
                .map(|p| p.name.clone());
        let periods = group
            .scheduled_scaling
            .as_ref()
            .map(|c| c.periods.iter().map(|p| p.name.clone()).collect())
            .unwrap_or_default();
        let o = &group.scaling_options;
        self.event(EngineEvent::Gauges(GroupGauges {
            group: group.name.clone(),
            desired,
            min: o.min_desired,
            max: o.max_desired,
            count: decision.count,
            running: decision.running(),
            cloud_count: cloud.map_or(0, |c| c.len() as u32),
            cloud_running: cloud.map_or(0, cloud_running),
            untracked: decision.untracked,
            convergence_lag_sec: self
                .runtime
                .gap_since_ms
                .map_or(0.0, |s| (now - s) as f64 / 1000.0),
            active_period,
            periods,
        }));
    }
}

fn launcher_item(
    now: UnixMillis,
    action: &str,
    decision: &GroupDecision<'_>,
    quantity: u32,
    detail: Option<serde_json::Value>,
) -> AuditEvent {
    AuditEvent::Group(GroupAuditEvent::Launcher(LauncherAction {
        timestamp: now,
        action_type: action.into(),
        count: decision.count,
        desired_count: decision.desired(),
        scale_quantity: quantity,
        detail,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A large group's decision leaves the runtime's one worker free: a task spawned after
    /// the decision began (a check-in) runs while it is still going (here, the decision waits
    /// for it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_large_group_is_decided_off_the_worker() {
        let (tx, rx) = mpsc::channel();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let decision = tokio::spawn(async move {
            off_the_worker(LARGE_GROUP, || {
                started_tx.send(()).expect("started");
                rx.recv_timeout(Duration::from_secs(10)).is_ok()
            })
        });
        started_rx.await.expect("the decision began");
        let other = tokio::spawn(async move { tx.send(()).expect("send") });
        assert!(
            decision.await.expect("decision task"),
            "the other task ran during the decision"
        );
        other.await.expect("task");
    }

    /// A small group is decided in place, and so is any group on a current-thread runtime.
    #[tokio::test]
    async fn small_groups_and_current_thread_runtimes_decide_in_place() {
        let here = std::thread::current().id();
        assert_eq!(off_the_worker(10, || std::thread::current().id()), here);
        assert_eq!(
            off_the_worker(LARGE_GROUP, || std::thread::current().id()),
            here
        );
    }
}
