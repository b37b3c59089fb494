//! Sidecar check-ins: served by every node, one store call each.

use crate::audit::{AuditEvent, InstanceAuditKind};
use crate::instance::{InstanceState, InstanceType};
use crate::sidecar::{
    self, InstanceDetails, StatsReport, reconfigure_complete_ms, report_class, sample_of,
    state_from_report,
};
use crate::store::{CheckIn, CheckInKind, Commands, FlagUpdate, StoreError};

use super::{Scaler, Shared};

/// Clock skew above which a warning is logged (R4).
const SKEW_WARN_MS: i64 = 60_000;

/// The answer to a check-in, with what the server counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckInResult {
    /// The commands for the sidecar.
    pub commands: Commands,
    /// The group exists (else the state is kept briefly and creates nothing, R7).
    pub known_group: bool,
    /// The instance's type is a supported one (R2).
    pub known_type: bool,
}

impl CheckInResult {
    /// The wire answer of `/sidecar/status` and `/sidecar/poll`.
    pub fn response(&self) -> sidecar::SidecarResponse {
        sidecar::SidecarResponse {
            shutdown: self.commands.shutdown,
            reconfigure: if self.commands.reconfigure_acknowledged {
                Some(String::new())
            } else {
                self.commands.reconfigure.clone()
            },
        }
    }
}

impl Shared {
    fn check_in_for(
        &self,
        group: &str,
        state: InstanceState,
        kind: CheckInKind,
    ) -> (CheckIn, bool) {
        let timings = &self.options.pass.timings;
        match self.group_info(group) {
            Some(info) => (
                CheckIn {
                    group: group.to_owned(),
                    state,
                    kind,
                    reconfigure_complete_ms: None,
                    sample_retention_ms: info.sample_retention_ms,
                    state_retention_ms: timings.max_state_ttl_ms(),
                },
                true,
            ),
            None => {
                // R7: answered, kept no longer than an idle state, no sample, no group.
                let kind = match kind {
                    CheckInKind::Report { .. } => CheckInKind::Report { sample: None },
                    CheckInKind::Poll => CheckInKind::Poll,
                };
                (
                    CheckIn {
                        group: group.to_owned(),
                        state,
                        kind,
                        reconfigure_complete_ms: None,
                        sample_retention_ms: 0,
                        state_retention_ms: timings.idle_ttl_ms,
                    },
                    false,
                )
            }
        }
    }
}

impl Scaler {
    /// A stats report (`/sidecar/status`, `/sidecar/stats`): records the state and its sample,
    /// and returns the instance's commands.
    pub async fn report(&self, report: &StatsReport) -> Result<CheckInResult, StoreError> {
        let shared = &self.shared;
        let now = shared.clock.now_ms();
        let group = report.instance.group_name();
        let info = shared.group_info(group);
        let instance_type = InstanceType::parse(&report.instance.instance_type);
        let group_type = info.as_ref().and_then(|i| i.instance_type);
        if let (Some(g), Some(i)) = (group_type, instance_type)
            && g.class() != i.class()
        {
            shared.warn_once(&report.instance.instance_id, || {
                    tracing::warn!(
                        group, instance = %report.instance.instance_id, group_type = %g, instance_type = %i,
                        "instance type and group type differ in class; reading the report as the group's type"
                    )
                });
        }
        let class = report_class(group_type, &report.instance.instance_type);
        let state = state_from_report(report, class, now);
        if let Some(ts) = report.timestamp {
            let skew = now - ts;
            if skew.abs() > SKEW_WARN_MS {
                shared.warn_once(&format!("skew:{}", report.instance.instance_id), || {
                    tracing::warn!(group, instance = %report.instance.instance_id, skew_ms = skew,
                        "sidecar clock differs from the server's; server time is used")
                });
            }
        }
        let count_unhealthy = info.as_ref().is_some_and(|i| i.count_unhealthy);
        let sample = sample_of(&state, class, count_unhealthy);
        let (mut check_in, known_group) =
            shared.check_in_for(group, state, CheckInKind::Report { sample });
        check_in.reconfigure_complete_ms = reconfigure_complete_ms(report);
        let commands = shared.store.check_in(&check_in).await?;
        if known_group && commands.state_changed {
            self.trigger(group);
        }
        Ok(CheckInResult {
            commands,
            known_group,
            known_type: instance_type.is_some(),
        })
    }

    /// A poll (`/sidecar/poll`): refreshes liveness (R5) and returns the commands.
    pub async fn poll(&self, details: &InstanceDetails) -> Result<CheckInResult, StoreError> {
        let now = self.shared.clock.now_ms();
        let group = details.group_name();
        let state = InstanceState::polled(
            &details.instance_id,
            &details.instance_type,
            details.metadata.clone(),
            now,
        );
        let (check_in, known_group) = self.shared.check_in_for(group, state, CheckInKind::Poll);
        let commands = self.shared.store.check_in(&check_in).await?;
        if known_group && commands.state_changed {
            self.trigger(group);
        }
        Ok(CheckInResult {
            commands,
            known_group,
            known_type: InstanceType::parse(&details.instance_type).is_some(),
        })
    }

    /// A shutdown confirmation (`/sidecar/shutdown`): recorded once (idempotent), audited, and
    /// followed by a reconcile so the termination policy can act.
    pub async fn confirm_shutdown(&self, details: &InstanceDetails) -> Result<(), StoreError> {
        let shared = &self.shared;
        let now = shared.clock.now_ms();
        let group = details.group_name();
        let expires_ms = now + shared.options.flag_ttl.as_millis() as i64;
        shared
            .store
            .update_flags(
                &[FlagUpdate::ConfirmShutdown {
                    instance_id: details.instance_id.clone(),
                    at_ms: now,
                    expires_ms,
                }],
                None,
            )
            .await?;
        shared
            .store
            .append_audit(
                group,
                &[AuditEvent::instance(
                    &details.instance_id,
                    InstanceAuditKind::ConfirmationOfTermination,
                    now,
                )],
                None,
            )
            .await?;
        tracing::info!(group, instance = %details.instance_id, "sidecar confirmed shutdown");
        if shared.group_info(group).is_some() {
            self.trigger(group);
        }
        Ok(())
    }
}
