//! The operations of the admin API (rest-api.md §4–§7), on any node. Group edits are
//! compare-and-set on the group's version, retried for up to [`EDIT_PATIENCE`], so two replicas
//! editing one group never lose an update.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::Scaler;
use crate::audit::{
    AuditEvent, AutoScalerAction, GroupAuditEvent, GroupAuditLog, InstanceAudit, InstanceAuditKind,
};
use crate::clock::iso8601;
use crate::group::validate::{
    FieldError, MSG_AT_LEAST_ONE, MSG_DESIRED_RANGE, MSG_POSITIVE, parse_group, parse_options_patch,
};
use crate::group::{Group, ScalingOptionsPatch, TerminationPolicy, ValidationErrors};
use crate::instance::{InstanceType, ReconfigureRequest};
use crate::plan::Inventory;
use crate::report::{GroupReport, group_report};
use crate::schedule::{self, SchedulePeriod, ScheduledScalingConfig, merge_with_live_desired};
use crate::store::{Expect, FlagUpdate, GroupRecord, StoreError};

/// How long an edit keeps retrying a compare-and-set that loses to concurrent edits.
pub const EDIT_PATIENCE: Duration = Duration::from_secs(5);

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The group does not exist.
    #[error("Group {0} not found")]
    NotFound(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(ValidationErrors),
    /// Reconfiguration is not enabled for the group (the reference's 403 body).
    #[error("Reconfiguration disabled for group")]
    ReconfigurationDisabled,
    /// The group kept changing under concurrent edits: retry later.
    #[error("group {0} is busy with concurrent changes")]
    Busy(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ValidationErrors> for AdminError {
    fn from(e: ValidationErrors) -> Self {
        AdminError::Invalid(e)
    }
}

fn field(path: &str, msg: impl Into<String>, value: Option<Value>) -> AdminError {
    AdminError::Invalid(vec![FieldError::body(path, msg, value)].into())
}

/// What `PUT /groups/options/full-scaling` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FullScalingResult {
    /// Groups selected.
    pub groups_to_be_updated: u32,
    /// Groups updated.
    pub groups_updated: u32,
    /// Groups left out, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_groups: Vec<SkippedGroup>,
}

/// A group full-scaling left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedGroup {
    /// Group.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// An instance a reconfiguration was requested for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRef {
    /// Instance id.
    pub instance_id: String,
    /// Type as reported.
    pub instance_type: String,
    /// Group.
    pub group: String,
}

/// `GET /groups/:name/scheduled-scaling`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    /// The configuration (null when none).
    pub scheduled_scaling: Option<ScheduledScalingConfig>,
    /// The period active now.
    pub active_period: Option<SchedulePeriod>,
    /// The timezone the schedule is read in (absent without a configuration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_timezone: Option<String>,
    /// The period last applied (absent without a configuration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_scaling_active_period: Option<Option<String>>,
    /// The base options (absent without a configuration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_scaling_base_options: Option<Option<crate::group::ScalingOptions>>,
}

/// The body as a JSON object, or a 400.
fn object(body: &Value) -> Result<&Map<String, Value>, AdminError> {
    body.as_object()
        .ok_or_else(|| field("", "Body must be a JSON object", Some(body.clone())))
}

impl Scaler {
    fn now(&self) -> i64 {
        self.clock().now_ms()
    }

    fn grace_until(&self, group: &Group) -> Option<i64> {
        (group.grace_period_ttl_sec > 0)
            .then(|| self.now() + group.grace_period_ttl_sec as i64 * 1000)
    }

    /// The oldest metric sample time a read asks the store for. The reports and checks of this
    /// module need no samples, but the memory and embedded stores drop every sample older than
    /// the time a snapshot asks from: asking from "now" would erase the autoscaler's window on
    /// every `GET /groups/:name/report`. Asking from the retention edge (as the reconcile does)
    /// drops only what has expired anyway.
    fn samples_since(&self) -> i64 {
        self.now() - self.options().pass.timings.metric_ttl_ms
    }

    /// Reads a group or 404.
    async fn record(&self, name: &str) -> Result<GroupRecord, AdminError> {
        self.store()
            .get_group(name)
            .await?
            .ok_or_else(|| AdminError::NotFound(name.to_owned()))
    }

    /// Read-modify-write of a group with compare-and-set, retried on conflicts.
    async fn edit_group<T>(
        &self,
        name: &str,
        mut edit: impl FnMut(&mut GroupRecord) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        let deadline = tokio::time::Instant::now() + EDIT_PATIENCE;
        let mut attempt = 0u32;
        loop {
            let mut record = self.record(name).await?;
            let version = record.version;
            let out = edit(&mut record)?;
            match self
                .store()
                .put_group(&record, Expect::Version(version), None)
                .await
            {
                Ok(_) => {
                    self.group_changed(&record.group);
                    return Ok(out);
                }
                Err(StoreError::Conflict { .. }) if tokio::time::Instant::now() < deadline => {
                    attempt += 1;
                    let pause = crate::backoff::Backoff::new(
                        Duration::from_millis(10),
                        Duration::from_millis(200),
                    )
                    .delay(attempt);
                    tokio::time::sleep(pause).await;
                }
                Err(StoreError::Conflict { .. }) => return Err(AdminError::Busy(name.to_owned())),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Checks a group against the configured providers.
    fn provider_problems(&self, group: &Group) -> Vec<FieldError> {
        let Some(provider) = self.providers().get(&group.cloud) else {
            let known: Vec<&str> = self.providers().names().collect();
            return vec![FieldError::body(
                "cloud",
                format!(
                    "Cloud {:?} is not configured (configured: {})",
                    group.cloud,
                    known.join(", ")
                ),
                Some(Value::from(group.cloud.clone())),
            )];
        };
        let mut problems = provider.validate_group(group);
        let needs_terminate = group.termination_policy() != TerminationPolicy::Sidecar
            || group
                .orphan_policy
                .is_some_and(|o| o.mode == crate::group::OrphanMode::Terminate);
        if needs_terminate && !provider.capabilities().terminate {
            problems.push(FieldError::body(
                "terminationPolicy",
                format!("provider {} cannot terminate instances", provider.name()),
                None,
            ));
        }
        problems
    }

    /// Validates a whole group as `PUT /groups/:name` does (shape, semantics, providers).
    pub fn validate_group_body(&self, body: &Value) -> Result<Group, AdminError> {
        let group = parse_group(body)?;
        let problems = self.provider_problems(&group);
        if problems.is_empty() {
            Ok(group)
        } else {
            Err(AdminError::Invalid(problems.into()))
        }
    }

    /// `GET /groups`: every group, or those whose tags match all filters, sorted by name
    /// case-insensitively.
    pub async fn list_groups(&self, tags: &[(String, String)]) -> Result<Vec<Group>, AdminError> {
        let mut groups: Vec<Group> = self
            .store()
            .list_groups()
            .await?
            .into_iter()
            .map(|r| r.group)
            .filter(|g| {
                tags.is_empty()
                    || g.tags
                        .as_ref()
                        .is_some_and(|t| tags.iter().all(|(k, v)| t.get(k) == Some(v)))
            })
            .collect();
        groups.sort_by(|a, b| {
            a.name
                .to_lowercase()
                .cmp(&b.name.to_lowercase())
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(groups)
    }

    /// `GET /groups/:name`.
    pub async fn get_group(&self, name: &str) -> Result<Group, AdminError> {
        Ok(self.record(name).await?.group)
    }

    /// `PUT /groups/:name`: creates or replaces a group and starts its cooldown.
    pub async fn put_group(&self, name: &str, body: &Value) -> Result<(), AdminError> {
        let group = self.validate_group_body(body)?;
        if group.name != name {
            return Err(AdminError::Invalid(ValidationErrors::message(
                "The request param group name must match group name in the body",
            )));
        }
        let grace = self.grace_until(&group);
        let deadline = tokio::time::Instant::now() + EDIT_PATIENCE;
        loop {
            let existing = self.store().get_group(name).await?;
            let (expect, protected) = match &existing {
                Some(r) => (Expect::Version(r.version), r.protected_until_ms),
                None => (Expect::Absent, None),
            };
            let record = GroupRecord {
                group: group.clone(),
                version: 0,
                grace_until_ms: grace,
                protected_until_ms: protected,
            };
            match self.store().put_group(&record, expect, None).await {
                Ok(_) => break,
                Err(StoreError::Conflict { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(StoreError::Conflict { .. }) => return Err(AdminError::Busy(name.to_owned())),
                Err(e) => return Err(e.into()),
            }
        }
        tracing::info!(group = name, "group saved");
        self.group_changed(&group);
        Ok(())
    }

    /// `DELETE /groups/:name`: refused while the group has active instances.
    pub async fn delete_group(&self, name: &str) -> Result<(), AdminError> {
        let snapshot = self
            .store()
            .snapshot(name, self.samples_since())
            .await?
            .ok_or_else(|| AdminError::NotFound(name.to_owned()))?;
        let now = self.now();
        let timings = &self.options().pass.timings;
        let cloud = snapshot
            .runtime
            .cloud
            .as_ref()
            .map_or(&[][..], |c| &*c.instances);
        let active = Inventory::build(&snapshot.instances, now, timings)
            .live()
            .filter(|r| r.flags.shutdown_confirmed_ms.is_none())
            .filter(|r| {
                !cloud.iter().any(|c| {
                    c.instance_id == r.state.instance_id
                        && (c.cloud_status.eq_ignore_ascii_case("shutdown") || c.is_terminated())
                })
            })
            .count();
        if active > 0 {
            let mut e = FieldError::body(
                "name",
                "This group has active instances",
                Some(Value::from(name)),
            );
            e.location = "params";
            return Err(AdminError::Invalid(vec![e].into()));
        }
        self.store().delete_group(name, None).await?;
        self.group_removed(name);
        tracing::info!(group = name, "group deleted");
        Ok(())
    }

    /// `POST /groups/actions/reset`: re-applies the configured groups (already validated),
    /// keeping each existing group's desired count. Groups not in the list are untouched.
    pub async fn reset_groups(&self, groups: &[Group]) -> Result<(), AdminError> {
        let problems: Vec<FieldError> = groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| {
                self.provider_problems(g)
                    .into_iter()
                    .map(move |e| e.prefixed(&format!("groupEntries[{i}]")))
            })
            .collect();
        if !problems.is_empty() {
            return Err(AdminError::Invalid(problems.into()));
        }
        for group in groups {
            let created = self
                .store()
                .put_group(&GroupRecord::new(group.clone()), Expect::Absent, None)
                .await;
            match created {
                Ok(_) => self.group_changed(group),
                Err(StoreError::Conflict { .. }) => {
                    self.edit_group(&group.name, |r| {
                        let desired = r.group.scaling_options.desired_count;
                        r.group = group.clone();
                        r.group.scaling_options.desired_count = desired;
                        Ok(())
                    })
                    .await?
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// `PUT /groups/:name/desired`.
    pub async fn set_desired(&self, name: &str, body: &Value) -> Result<(), AdminError> {
        let obj = object(body)?;
        let only: Map<String, Value> = obj
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "minDesired" | "maxDesired" | "desiredCount"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let patch = parse_options_patch(&Value::Object(only), "")?;
        self.edit_group(name, |r| {
            let o = &mut r.group.scaling_options;
            let min = patch.min_desired.unwrap_or(o.min_desired);
            let max = patch.max_desired.unwrap_or(o.max_desired);
            let desired = patch.desired_count.unwrap_or(o.desired_count);
            if !(min <= desired && desired <= max) {
                return Err(field("", MSG_DESIRED_RANGE, None));
            }
            (o.min_desired, o.max_desired, o.desired_count) = (min, max, desired);
            r.grace_until_ms = self.grace_until(&r.group);
            Ok(())
        })
        .await
    }

    /// `PUT /groups/:name/scaling-options` (no cooldown).
    pub async fn set_scaling_options(&self, name: &str, body: &Value) -> Result<(), AdminError> {
        let obj = object(body)?;
        let mut options = obj.clone();
        let grace = options.remove("gracePeriodTTLSec");
        for key in ["minDesired", "maxDesired", "desiredCount"] {
            options.remove(key);
        }
        let patch = parse_options_patch(&Value::Object(options), "");
        let grace = match grace {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= u64::from(u32::MAX))
                .map(Some)
                .ok_or_else(|| vec![FieldError::body("gracePeriodTTLSec", MSG_POSITIVE, Some(v))]),
        };
        let (patch, grace) = match (patch, grace) {
            (Ok(p), Ok(g)) => (p, g),
            (p, g) => {
                let mut fields = p.err().map(|e| e.fields).unwrap_or_default();
                fields.extend(g.err().unwrap_or_default());
                return Err(AdminError::Invalid(fields.into()));
            }
        };
        self.edit_group(name, |r| {
            r.group.scaling_options.apply(&patch);
            if let Some(g) = grace {
                r.group.grace_period_ttl_sec = g;
            }
            Ok(())
        })
        .await
    }

    /// `PUT /groups/:name/scaling-activities`.
    pub async fn set_scaling_activities(&self, name: &str, body: &Value) -> Result<(), AdminError> {
        let obj = object(body)?;
        const KEYS: [&str; 6] = [
            "enableAutoScale",
            "enableLaunch",
            "enableScheduler",
            "enableUntrackedThrottle",
            "enableReconfiguration",
            "enableCloudGuard",
        ];
        let mut values = BTreeMap::new();
        let mut errors = Vec::new();
        for key in KEYS {
            match obj.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => {
                    values.insert(key, *b);
                }
                Some(v) => errors.push(FieldError::body(
                    key,
                    "Value must be a boolean",
                    Some(v.clone()),
                )),
            }
        }
        if !errors.is_empty() {
            return Err(AdminError::Invalid(errors.into()));
        }
        self.edit_group(name, |r| {
            let g = &mut r.group;
            for (key, v) in &values {
                match *key {
                    "enableAutoScale" => g.enable_auto_scale = *v,
                    "enableLaunch" => g.enable_launch = *v,
                    "enableScheduler" => g.enable_scheduler = Some(*v),
                    "enableUntrackedThrottle" => g.enable_untracked_throttle = Some(*v),
                    "enableReconfiguration" => g.enable_reconfiguration = Some(*v),
                    _ => g.enable_cloud_guard = Some(*v),
                }
            }
            Ok(())
        })
        .await
    }

    /// `PUT /groups/:name/instance-configuration`.
    pub async fn set_instance_configuration(
        &self,
        name: &str,
        body: &Value,
    ) -> Result<(), AdminError> {
        let id = object(body)?
            .get("instanceConfigurationId")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                field(
                    "instanceConfigurationId",
                    "Invalid value",
                    body.get("instanceConfigurationId").cloned(),
                )
            })?;
        self.edit_group(name, |r| {
            r.group.instance_configuration_id = id.clone();
            Ok(())
        })
        .await
    }

    /// `PUT /groups/options/full-scaling` (scaling-algorithms.md §10).
    pub async fn full_scaling(&self, body: &Value) -> Result<FullScalingResult, AdminError> {
        let obj = object(body)?;
        let mut errors = Vec::new();
        let options = match obj.get("options") {
            None | Some(Value::Null) => ScalingOptionsPatch::default(),
            Some(v) => match parse_options_patch(v, "options") {
                Ok(p) => p,
                Err(e) => {
                    errors.extend(e.fields);
                    ScalingOptionsPatch::default()
                }
            },
        };
        let text = |key: &str| obj.get(key).and_then(Value::as_str).map(str::to_owned);
        let instance_type = text("instanceType");
        if instance_type
            .as_deref()
            .and_then(InstanceType::parse)
            .is_none()
        {
            errors.push(FieldError::body(
                "instanceType",
                "Instance type not supported. Use stress, availabity, jvb, jigasi, nomad, jibri, whisper or sip-jibri instead",
                obj.get("instanceType").cloned(),
            ));
        }
        let direction = text("direction").map(|d| d.to_lowercase());
        let up = match direction.as_deref() {
            Some("up") => true,
            Some("down") => false,
            _ => {
                errors.push(FieldError::body(
                    "direction",
                    "Scaling direction not supported. Use up or down instead",
                    obj.get("direction").cloned(),
                ));
                false
            }
        };
        for key in ["environment", "region"] {
            if text(key).is_none() {
                errors.push(FieldError::body(
                    key,
                    "Value must be a string",
                    obj.get(key).cloned(),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(AdminError::Invalid(errors.into()));
        }
        let (ty, env, region) = (
            instance_type.as_deref().and_then(InstanceType::parse),
            text("environment").unwrap_or_default(),
            text("region").unwrap_or_default(),
        );
        let mut result = FullScalingResult {
            groups_to_be_updated: 0,
            groups_updated: 0,
            skipped_groups: Vec::new(),
        };
        for g in self
            .store()
            .list_groups()
            .await?
            .into_iter()
            .map(|r| r.group)
        {
            let matches = g.instance_type() == ty
                && g.environment.eq_ignore_ascii_case(&env)
                && g.region.eq_ignore_ascii_case(&region);
            if !matches {
                continue;
            }
            if !g.scheduler_enabled() {
                if g.scheduled_scaling.as_ref().is_some_and(|s| s.enabled) {
                    result.skipped_groups.push(SkippedGroup {
                        name: g.name.clone(),
                        reason: "Group uses scheduled scaling".into(),
                    });
                }
                continue;
            }
            result.groups_to_be_updated += 1;
            let edited = self
                .edit_group(&g.name, |r| {
                    apply_full_scaling(&mut r.group, &options, up);
                    r.grace_until_ms = self.grace_until(&r.group);
                    Ok(())
                })
                .await;
            match edited {
                Ok(()) => result.groups_updated += 1,
                Err(e) => {
                    tracing::warn!(group = %g.name, error = %e, "full-scaling could not update the group")
                }
            }
        }
        Ok(result)
    }

    /// `POST /groups/:name/actions/launch-protected`.
    pub async fn launch_protected(&self, name: &str, body: &Value) -> Result<(), AdminError> {
        let obj = object(body)?;
        let mut errors = Vec::new();
        let int =
            |key: &str, min: u64, required: bool, errors: &mut Vec<FieldError>| -> Option<u32> {
                match obj.get(key) {
                    None | Some(Value::Null) => {
                        if required {
                            errors.push(FieldError::body(
                                key,
                                if min == 0 {
                                    MSG_POSITIVE
                                } else {
                                    MSG_AT_LEAST_ONE
                                },
                                None,
                            ));
                        }
                        None
                    }
                    Some(v) => match v
                        .as_u64()
                        .filter(|n| *n >= min && *n <= u64::from(u32::MAX))
                    {
                        Some(n) => Some(n as u32),
                        None => {
                            errors.push(FieldError::body(
                                key,
                                if min == 0 {
                                    MSG_POSITIVE
                                } else {
                                    MSG_AT_LEAST_ONE
                                },
                                Some(v.clone()),
                            ));
                            None
                        }
                    },
                }
            };
        let count = int("count", 0, true, &mut errors);
        let max = int("maxDesired", 0, false, &mut errors);
        let ttl = int("protectedTTLSec", 1, true, &mut errors);
        let config_id = match obj.get("instanceConfigurationId") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                errors.push(FieldError::body(
                    "instanceConfigurationId",
                    "Value must be a string",
                    Some(v.clone()),
                ));
                None
            }
        };
        let tags: BTreeMap<String, String> = match obj.get("tags") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) if m.values().all(Value::is_string) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect(),
            Some(v) => {
                errors.push(FieldError::body(
                    "tags",
                    "Value must be an object of strings",
                    Some(v.clone()),
                ));
                BTreeMap::new()
            }
        };
        if !errors.is_empty() {
            return Err(AdminError::Invalid(errors.into()));
        }
        let (count, ttl) = (count.unwrap_or(0), ttl.unwrap_or(1));
        let now = self.now();
        self.edit_group(name, |r| {
            let limit = max.unwrap_or(r.group.scaling_options.max_desired);
            if u64::from(count) + u64::from(r.group.scaling_options.desired_count) > u64::from(limit) {
                return Err(field(
                    "count",
                    format!("Max desired value must be increased first if you want to launch {count} new instances."),
                    Some(Value::from(count)),
                ));
            }
            let g = &mut r.group;
            if let Some(id) = &config_id {
                g.instance_configuration_id = id.clone();
            }
            if let Some(m) = max {
                g.scaling_options.max_desired = m;
            }
            if !tags.is_empty() {
                g.tags.get_or_insert_with(BTreeMap::new).extend(tags.clone());
            }
            g.scaling_options.desired_count += count;
            g.protected_ttl_sec = u64::from(ttl);
            r.grace_until_ms = self.grace_until(&r.group);
            r.protected_until_ms = Some(now + i64::from(ttl) * 1000);
            Ok(())
        })
        .await
    }

    /// `POST /groups/:name/actions/reconfigure-instances`: one date for every current instance.
    pub async fn reconfigure_instances(&self, name: &str) -> Result<Vec<InstanceRef>, AdminError> {
        let record = self.record(name).await?;
        if !record.group.reconfiguration_enabled() {
            return Err(AdminError::ReconfigurationDisabled);
        }
        let now = self.now();
        let date = iso8601(now);
        let records = self.store().instances(name).await?;
        let inventory = Inventory::build(&records, now, &self.options().pass.timings);
        let targets: Vec<InstanceRef> = inventory
            .active
            .iter()
            .map(|r| InstanceRef {
                instance_id: r.state.instance_id.clone(),
                instance_type: r.state.instance_type.clone(),
                group: name.to_owned(),
            })
            .collect();
        let expires_ms = now + self.options().flag_ttl.as_millis() as i64;
        let flags: Vec<FlagUpdate> = targets
            .iter()
            .map(|t| FlagUpdate::Reconfigure {
                instance_id: t.instance_id.clone(),
                request: ReconfigureRequest {
                    date: date.clone(),
                    at_ms: now,
                },
                expires_ms,
            })
            .collect();
        self.store().update_flags(&flags, None).await?;
        let mut audits = vec![AuditEvent::Group(GroupAuditEvent::ReconfigureRequest {
            at_ms: now,
        })];
        audits.extend(targets.iter().map(|t| {
            AuditEvent::instance(&t.instance_id, InstanceAuditKind::RequestToReconfigure, now)
        }));
        self.store().append_audit(name, &audits, None).await?;
        tracing::info!(group = name, instances = targets.len(), date = %date, "reconfiguration requested");
        Ok(targets)
    }

    /// `GET /groups/:name/report`.
    pub async fn group_report(&self, name: &str) -> Result<GroupReport, AdminError> {
        let now = self.now();
        let snap = self
            .store()
            .snapshot(name, self.samples_since())
            .await?
            .ok_or_else(|| AdminError::NotFound(name.to_owned()))?;
        Ok(group_report(
            &snap.record.group,
            &snap.instances,
            &snap.runtime,
            &self.options().pass.timings,
            now,
        ))
    }

    /// `GET /groups/:name/group-audit`: 404 only when neither the group nor audit data exists.
    pub async fn group_audit(&self, name: &str) -> Result<GroupAuditLog, AdminError> {
        match self.store().group_audit(name).await? {
            Some(log) => Ok(log),
            None if self.store().get_group(name).await?.is_some() => Ok(GroupAuditLog::default()),
            None => Err(AdminError::NotFound(name.to_owned())),
        }
    }

    /// `GET /groups/:name/instance-audit`: same 404 rule.
    pub async fn instance_audit(&self, name: &str) -> Result<Vec<InstanceAudit>, AdminError> {
        let audit = self.store().instance_audit(name).await?;
        if audit.is_empty() && self.store().get_group(name).await?.is_none() {
            return Err(AdminError::NotFound(name.to_owned()));
        }
        Ok(audit)
    }

    /// `GET /groups/:name/scheduled-scaling`.
    pub async fn scheduled_scaling(&self, name: &str) -> Result<ScheduleView, AdminError> {
        let g = self.record(name).await?.group;
        let settings = &self.options().pass.schedule;
        Ok(match &g.scheduled_scaling {
            None => ScheduleView {
                scheduled_scaling: None,
                active_period: None,
                resolved_timezone: None,
                scheduled_scaling_active_period: None,
                scheduled_scaling_base_options: None,
            },
            Some(config) => {
                let tz = settings.timezone_name(config, &g.region).to_owned();
                ScheduleView {
                    active_period: config
                        .enabled
                        .then(|| schedule::active_period(config, &tz, self.now()).cloned())
                        .flatten(),
                    scheduled_scaling: Some(config.clone()),
                    resolved_timezone: Some(tz),
                    scheduled_scaling_active_period: Some(
                        g.scheduled_scaling_active_period.clone(),
                    ),
                    scheduled_scaling_base_options: Some(g.scheduled_scaling_base_options.clone()),
                }
            }
        })
    }

    /// `PUT /groups/:name/scheduled-scaling`.
    pub async fn put_scheduled_scaling(&self, name: &str, body: &Value) -> Result<(), AdminError> {
        let config = schedule::parse_config(body)?;
        let now = self.now();
        let settings = self.options().pass.schedule.clone();
        self.edit_group(name, |r| {
            let g = &mut r.group;
            g.scheduled_scaling = Some(config.clone());
            if config.enabled {
                g.enable_scheduler = Some(false);
                match schedule::active_period_for(g, &settings, now).cloned() {
                    Some(period) => {
                        let base = g
                            .scheduled_scaling_base_options
                            .clone()
                            .unwrap_or_else(|| g.scaling_options.clone());
                        g.scaling_options = merge_with_live_desired(
                            &base,
                            &g.scaling_options,
                            period.scaling_options.as_ref(),
                        );
                        g.scheduled_scaling_base_options = Some(base);
                        g.scheduled_scaling_active_period = Some(period.name);
                    }
                    None => {
                        g.scheduled_scaling_base_options = None;
                        g.scheduled_scaling_active_period = None;
                    }
                }
            } else {
                restore_base(g);
                g.enable_scheduler = Some(true);
            }
            r.grace_until_ms = self.grace_until(&r.group);
            Ok(())
        })
        .await
    }

    /// `DELETE /groups/:name/scheduled-scaling`: restores the base options, audited.
    pub async fn delete_scheduled_scaling(&self, name: &str) -> Result<(), AdminError> {
        let now = self.now();
        let detail = self
            .edit_group(name, |r| {
                let g = &mut r.group;
                let detail = json!({
                    "previousConfig": g.scheduled_scaling,
                    "previousActivePeriod": g.scheduled_scaling_active_period,
                });
                restore_base(g);
                g.scheduled_scaling = None;
                g.enable_scheduler = Some(true);
                Ok(detail)
            })
            .await?;
        self.store()
            .append_audit(
                name,
                &[AuditEvent::Group(GroupAuditEvent::AutoScaler(
                    AutoScalerAction {
                        timestamp: now,
                        action_type: "scheduledScalingDeleted".into(),
                        count: 0,
                        old_desired_count: None,
                        new_desired_count: None,
                        scale_metrics: Vec::new(),
                        detail: Some(detail),
                    },
                ))],
                None,
            )
            .await?;
        Ok(())
    }
}

/// Puts back the options captured on first period entry, and clears the tracking fields.
fn restore_base(g: &mut Group) {
    if let Some(base) = g.scheduled_scaling_base_options.take() {
        g.scaling_options = base;
    }
    g.scheduled_scaling_active_period = None;
}

/// Full-scaling's rules: a direction-monotone desired count, then bounds, then the clamps
/// (desired wins), then the other options.
pub fn apply_full_scaling(g: &mut Group, options: &ScalingOptionsPatch, up: bool) {
    let o = &mut g.scaling_options;
    if let Some(d) = options.desired_count
        && ((up && d > o.desired_count) || (!up && d < o.desired_count))
    {
        o.desired_count = d;
    }
    if let Some(m) = options.max_desired {
        o.max_desired = m;
    }
    if let Some(m) = options.min_desired {
        o.min_desired = m;
    }
    if o.max_desired < o.desired_count {
        o.max_desired = o.desired_count;
    }
    if o.min_desired > o.desired_count {
        o.min_desired = o.desired_count;
    }
    let rest = ScalingOptionsPatch {
        min_desired: None,
        max_desired: None,
        desired_count: None,
        ..options.clone()
    };
    o.apply(&rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> Group {
        serde_json::from_value(json!({"name": "g", "type": "JVB",
            "scalingOptions": {"minDesired": 2, "maxDesired": 10, "desiredCount": 5}}))
        .expect("group")
    }

    fn run(up: bool, patch: ScalingOptionsPatch) -> (u32, u32, u32) {
        let mut g = group();
        apply_full_scaling(&mut g, &patch, up);
        let o = g.scaling_options;
        (o.min_desired, o.desired_count, o.max_desired)
    }

    fn desired(d: u32) -> ScalingOptionsPatch {
        ScalingOptionsPatch {
            desired_count: Some(d),
            ..Default::default()
        }
    }

    #[test]
    fn full_scaling_vectors() {
        assert_eq!(run(true, desired(8)), (2, 8, 10));
        assert_eq!(run(true, desired(3)), (2, 5, 10));
        assert_eq!(run(false, desired(3)), (2, 3, 10));
        assert_eq!(run(false, desired(8)), (2, 5, 10));
        assert_eq!(run(true, desired(12)), (2, 12, 12), "max raised");
        assert_eq!(run(false, desired(1)), (1, 1, 10), "min lowered");
        let min7 = ScalingOptionsPatch {
            min_desired: Some(7),
            ..Default::default()
        };
        assert_eq!(run(true, min7), (5, 5, 10), "min clamped to desired");
        let max4 = ScalingOptionsPatch {
            max_desired: Some(4),
            ..Default::default()
        };
        assert_eq!(run(true, max4), (2, 5, 5), "max clamped to desired");
        let mut g = group();
        apply_full_scaling(
            &mut g,
            &ScalingOptionsPatch {
                scale_up_threshold: Some(0.6),
                scale_period: Some(30),
                ..Default::default()
            },
            true,
        );
        assert_eq!(g.scaling_options.scale_up_threshold, 0.6);
        assert_eq!(g.scaling_options.scale_period, 30);
    }
}
