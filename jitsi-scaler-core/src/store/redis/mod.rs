//! [`RedisStore`]: the store of several replicas sharing one Redis (feature `redis`).
//!
//! Every write is one Lua script, so its checks (group version, fencing token, stored state)
//! and the write are atomic; a sidecar check-in is one script, one round trip. Logical expiry
//! (state retention, flag expiry, audit retention) follows the store's [`Clock`], passed into
//! the scripts as "now", exactly as [`MemoryStore`](crate::store::MemoryStore) does; server-side
//! TTLs only collect garbage, a margin ([`GC_MARGIN`]) after the logical expiry.
//!
//! Requires Redis ≥ 4 (Lua, multi-field `HSET`), a single master (plain or behind Sentinel;
//! not Redis Cluster: scripts touch keys computed inside them).
//!
//! # Key layout
//!
//! Every key starts with the configured prefix `P` (default `jitsi-scaler:`), so the store can
//! share a Redis with a running reference (whose keys have no prefix). In group keys, `<g>` is
//! the group name with `%` and `:` escaped as `%25` and `%3A`.
//!
//! | key | type | content | expiry |
//! | --- | --- | --- | --- |
//! | `P groups` | HASH | group name → group record JSON | none |
//! | `P group-versions` | HASH | group name → version (compare-and-set) | none |
//! | `P fence` | STRING | newest fencing token seen or handed to a new leader; older tokens are rejected | none |
//! | `P seq` | STRING | counter: first-seen order, unique sample and audit members | none |
//! | `P group:<g>:instances` | ZSET | instance id, score = first-seen sequence | longest state TTL |
//! | `P group:<g>:state:<id>` | HASH | state parts: `core` (JSON without the next three), `ts`, `meta` (verbatim), `lrc`, and `rts`, `busy`, `sds`, `isd`, `retain` (logical expiry), `seq` | retention + margin |
//! | `P group:<g>:samples` | ZSET | `<id>\|<seq>\|<value>`, score = receive time; trimmed to the retention on write | sample retention + margin |
//! | `P group:<g>:runtime` | STRING | the engine's bookkeeping JSON | none |
//! | `P group:<g>:audit` | ZSET | `<seq>\|<group audit event JSON>`, score = event time; trimmed on write | audit retention + margin |
//! | `P group:<g>:instance-audit` | HASH | `<kind>\|<id>` → latest time; `state\|<id>` → last state of a removed instance | audit retention + margin |
//! | `P group:<g>:instance-audit-index` | ZSET | instance id, score = its newest audit time | audit retention + margin |
//! | `P flags:<id>` | HASH | `shutdown`/`shutdownExp`, `confirmed`/`confirmedExp`, `reconf` (JSON)/`reconfAt`/`reconfExp`, `protect` | last expiry + margin |
//! | `P leader` | STRING | `<token> <identity>`: the leader lease ([`RedisLeadership`](crate::leader::RedisLeadership)) | lease TTL |
//! | `P leader-token` | STRING | counter: the last fencing token handed out | none |
//! | `P leader-handover` | LIST | a released lease wakes a waiting follower | lease TTL |
//!
//! Flags are keyed by instance id only, as in the reference. Deleting a group removes its
//! record, version, states, index, samples and runtime; its audit and the flags expire.

mod codec;
mod config;
mod connection;
mod keys;
mod scripts;
#[cfg(any(test, feature = "testkit"))]
pub mod test_server;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::{Script, Value};
use async_trait::async_trait;

pub use config::{DEFAULT_KEY_PREFIX, RedisConfig, RedisConfigError, SentinelConfig};
pub use connection::RedisConnection;
pub(crate) use keys::Keys;

use self::codec::{
    AUDIT_KINDS, StateParts, audit_kind_name, bad_reply, int, items, json_value, pairs,
    parse_flags, parse_samples, sample_value, text, texts, to_json,
};
use self::scripts::*;
use super::{
    CheckIn, CheckInKind, Commands, Expect, FlagUpdate, GroupRecord, GroupRuntime, GroupSnapshot,
    Retention, Store, StoreError,
};
use crate::audit::{AuditEvent, GroupAuditEvent, GroupAuditLog, InstanceAudit};
use crate::clock::{Clock, SystemClock};
use crate::instance::{InstanceFlags, InstanceRecord, InstanceState};
use crate::leader::FencingToken;

/// Server-side TTLs outlive the logical expiry by this much, so a clock difference between the
/// replicas and Redis never removes live data.
pub const GC_MARGIN: Duration = Duration::from_secs(3600);

/// A store in Redis.
#[derive(Debug, Clone)]
pub struct RedisStore {
    conn: RedisConnection,
    keys: Keys,
    clock: Arc<dyn Clock>,
    retention: Retention,
}

impl RedisStore {
    /// A store on `conn`, reading time from the system clock.
    pub fn new(conn: RedisConnection) -> Self {
        let keys = Keys::new(conn.key_prefix());
        Self {
            conn,
            keys,
            clock: Arc::new(SystemClock),
            retention: Retention::default(),
        }
    }

    /// Opens a connection for `config` (no I/O yet) and a store on it.
    pub fn open(config: &RedisConfig) -> Result<Self, RedisConfigError> {
        Ok(Self::new(RedisConnection::open(config)?))
    }

    /// Reads time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the retention of what the store expires on its own.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The connection.
    pub fn connection(&self) -> &RedisConnection {
        &self.conn
    }

    async fn eval(
        &self,
        what: &'static str,
        script: &'static LazyLock<Script>,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, StoreError> {
        self.conn
            .call(what, move |mut con| async move {
                let mut invocation = script.prepare_invoke();
                for key in &keys {
                    invocation.key(key);
                }
                for arg in &args {
                    invocation.arg(arg);
                }
                invocation.invoke_async::<Value>(&mut con).await
            })
            .await
    }

    /// Runs a write script and checks its status; the rest of the reply on success.
    async fn write(
        &self,
        what: &'static str,
        script: &'static LazyLock<Script>,
        keys: Vec<String>,
        args: Vec<String>,
        group: &str,
        fence: Option<FencingToken>,
    ) -> Result<Vec<Value>, StoreError> {
        let reply = self.eval(what, script, keys, args).await?;
        let parts = items(&reply).ok_or_else(|| bad_reply(what, &reply))?;
        match parts.first().and_then(text).as_deref() {
            Some("OK") => Ok(parts[1..].to_vec()),
            Some("CONFLICT") => Err(StoreError::Conflict {
                group: group.to_owned(),
            }),
            Some("FENCED") => {
                let newest = parts
                    .get(1)
                    .and_then(text)
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| bad_reply(what, &reply))?;
                Err(StoreError::Fenced {
                    token: fence.unwrap_or_default(),
                    newest,
                })
            }
            _ => Err(bad_reply(what, &reply)),
        }
    }

    fn records(&self, what: &str, value: &Value) -> Result<Vec<InstanceRecord>, StoreError> {
        let now = self.clock.now_ms();
        items(value)
            .ok_or_else(|| bad_reply(what, value))?
            .iter()
            .map(|entry| {
                let [state, flags] = items(entry).ok_or_else(|| bad_reply(what, entry))? else {
                    return Err(bad_reply(what, entry));
                };
                let state: InstanceState = json_value(
                    "instance state",
                    &text(state).ok_or_else(|| bad_reply(what, state))?,
                )?;
                let flags = parse_flags(&state.instance_id, &pairs(what, flags)?, now)?;
                Ok(InstanceRecord {
                    state: Arc::new(state),
                    flags,
                })
            })
            .collect()
    }

    fn group_record(
        &self,
        name: &str,
        json: &str,
        version: &str,
    ) -> Result<GroupRecord, StoreError> {
        let mut record: GroupRecord = json_value(&format!("group {name}"), json)?;
        record.version = version.parse().map_err(|_| StoreError::Corrupt {
            key: format!("version of group {name}"),
            message: format!("{version:?} is not a number"),
        })?;
        Ok(record)
    }

    fn token_arg(fence: Option<FencingToken>) -> String {
        fence.map(|t| t.to_string()).unwrap_or_default()
    }

    fn audit_ttl(&self) -> String {
        (self.retention.audit_ms + GC_MARGIN.as_millis() as i64).to_string()
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.conn
            .call("ping", |mut con| async move {
                ::redis::cmd("PING").query_async::<String>(&mut con).await
            })
            .await
            .map(|_| ())
    }

    async fn list_groups(&self) -> Result<Vec<GroupRecord>, StoreError> {
        let (groups, versions) = (self.keys.groups(), self.keys.versions());
        let (records, versions): (HashMap<String, String>, HashMap<String, String>) = self
            .conn
            .call("list groups", |mut con| async move {
                ::redis::pipe()
                    .atomic()
                    .hgetall(groups)
                    .hgetall(versions)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        records
            .iter()
            .map(|(name, json)| {
                let version = versions.get(name).map_or("0", String::as_str);
                self.group_record(name, json, version)
            })
            .collect()
    }

    async fn get_group(&self, name: &str) -> Result<Option<GroupRecord>, StoreError> {
        let (groups, versions, field) = (self.keys.groups(), self.keys.versions(), name.to_owned());
        let (json, version): (Option<String>, Option<String>) = self
            .conn
            .call("get group", |mut con| async move {
                ::redis::pipe()
                    .atomic()
                    .hget(groups, &field)
                    .hget(versions, &field)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        json.map(|json| self.group_record(name, &json, version.as_deref().unwrap_or("0")))
            .transpose()
    }

    async fn put_group(
        &self,
        record: &GroupRecord,
        expect: Expect,
        fence: Option<FencingToken>,
    ) -> Result<u64, StoreError> {
        let name = &record.group.name;
        let (mode, expected) = match expect {
            Expect::Any => ("any", String::new()),
            Expect::Absent => ("absent", String::new()),
            Expect::Version(v) => ("version", v.to_string()),
        };
        let reply = self
            .write(
                "put group",
                &PUT_GROUP_SCRIPT,
                vec![self.keys.groups(), self.keys.versions(), self.keys.fence()],
                vec![
                    name.clone(),
                    to_json("group record", record)?,
                    mode.to_owned(),
                    expected,
                    Self::token_arg(fence),
                ],
                name,
                fence,
            )
            .await?;
        let version = reply
            .first()
            .map(|v| int("put group", v))
            .transpose()?
            .ok_or_else(|| bad_reply("put group", &Value::Array(reply.clone())))?;
        u64::try_from(version).map_err(|_| bad_reply("put group", &Value::Int(version)))
    }

    async fn delete_group(
        &self,
        name: &str,
        fence: Option<FencingToken>,
    ) -> Result<bool, StoreError> {
        let reply = self
            .write(
                "delete group",
                &DELETE_GROUP_SCRIPT,
                vec![
                    self.keys.fence(),
                    self.keys.groups(),
                    self.keys.versions(),
                    self.keys.instances(name),
                    self.keys.samples(name),
                    self.keys.runtime(name),
                ],
                vec![
                    Self::token_arg(fence),
                    name.to_owned(),
                    self.keys.state_prefix(name),
                ],
                name,
                fence,
            )
            .await?;
        Ok(reply
            .first()
            .map(|v| int("delete group", v))
            .transpose()?
            .is_some_and(|n| n > 0))
    }

    async fn snapshot(
        &self,
        group: &str,
        samples_since_ms: crate::clock::UnixMillis,
    ) -> Result<Option<GroupSnapshot>, StoreError> {
        const WHAT: &str = "snapshot";
        let reply = self
            .eval(
                WHAT,
                &SNAPSHOT_SCRIPT,
                vec![
                    self.keys.groups(),
                    self.keys.versions(),
                    self.keys.instances(group),
                    self.keys.samples(group),
                    self.keys.runtime(group),
                ],
                vec![
                    group.to_owned(),
                    self.clock.now_ms().to_string(),
                    samples_since_ms.to_string(),
                    self.keys.state_prefix(group),
                    self.keys.flags_prefix(),
                ],
            )
            .await?;
        let parts = items(&reply).ok_or_else(|| bad_reply(WHAT, &reply))?;
        let [record, version, instances, samples, runtime] = parts else {
            return if parts.is_empty() {
                Ok(None)
            } else {
                Err(bad_reply(WHAT, &reply))
            };
        };
        let text_of = |v: &Value| text(v).ok_or_else(|| bad_reply(WHAT, v));
        let record = self.group_record(group, &text_of(record)?, &text_of(version)?)?;
        let samples_key = self.keys.samples(group);
        let samples = parse_samples(&samples_key, &texts(WHAT, samples)?)?;
        let runtime = match text_of(runtime)?.as_str() {
            "" => GroupRuntime::default(),
            json => json_value(&self.keys.runtime(group), json)?,
        };
        Ok(Some(GroupSnapshot {
            record,
            instances: self.records(WHAT, instances)?,
            samples,
            runtime,
        }))
    }

    async fn instances(&self, group: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        let reply = self
            .eval(
                "instances",
                &INSTANCES_SCRIPT,
                vec![self.keys.instances(group)],
                vec![
                    self.clock.now_ms().to_string(),
                    self.keys.state_prefix(group),
                    self.keys.flags_prefix(),
                ],
            )
            .await?;
        self.records("instances", &reply)
    }

    async fn check_in(&self, check_in: &CheckIn) -> Result<Commands, StoreError> {
        const WHAT: &str = "check-in";
        let now = self.clock.now_ms();
        let state = &check_in.state;
        let group = check_in.group.as_str();
        let id = state.instance_id.as_str();
        let at = state.timestamp;
        let gc = GC_MARGIN.as_millis() as i64;
        let (kind, sample) = match check_in.kind {
            CheckInKind::Report { sample } => ("report", sample.map(sample_value)),
            CheckInKind::Poll => ("poll", None),
        };
        let gated = state.is_shutting_down
            || state.shutdown_status
            || state.status.is_draining()
            || state.status.provisioning;
        let parts = StateParts::of(state)?;
        let mut args = vec![
            now.to_string(),
            id.to_owned(),
            kind.to_owned(),
            sample.unwrap_or_default(),
            check_in
                .reconfigure_complete_ms
                .map(|t| t.to_string())
                .unwrap_or_default(),
            (at - check_in.sample_retention_ms).to_string(),
            (now + check_in.state_retention_ms).to_string(),
            (check_in.state_retention_ms.max(0) + gc).to_string(),
            (check_in.sample_retention_ms.max(0) + gc).to_string(),
            (now - self.retention.audit_ms).to_string(),
            self.audit_ttl(),
            if gated { "1" } else { "0" }.to_owned(),
        ];
        args.extend(parts.args().iter().map(|s| (*s).to_owned()));
        let reply = self
            .eval(
                WHAT,
                &CHECK_IN_SCRIPT,
                vec![
                    self.keys.flags(id),
                    self.keys.state(group, id),
                    self.keys.instances(group),
                    self.keys.samples(group),
                    self.keys.instance_audit(group),
                    self.keys.instance_audit_index(group),
                    self.keys.seq(),
                ],
                args,
            )
            .await?;
        let parts = items(&reply).ok_or_else(|| bad_reply(WHAT, &reply))?;
        let [
            shutdown,
            reconfigure,
            acknowledged,
            delivered,
            written,
            changed,
        ] = parts
        else {
            return Err(bad_reply(WHAT, &reply));
        };
        let yes = |v: &Value| int(WHAT, v).map(|n| n == 1);
        let reconfigure = match text(reconfigure).as_deref() {
            None => return Err(bad_reply(WHAT, reconfigure)),
            Some("") => None,
            Some(json) => Some(
                json_value::<crate::instance::ReconfigureRequest>(&self.keys.flags(id), json)?.date,
            ),
        };
        Ok(Commands {
            shutdown: yes(shutdown)?,
            reconfigure,
            reconfigure_acknowledged: yes(acknowledged)?,
            reconfigure_delivered: yes(delivered)?,
            sample_written: yes(written)?,
            state_changed: yes(changed)?,
        })
    }

    async fn put_instances(
        &self,
        group: &str,
        states: &[InstanceState],
        retention_ms: i64,
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let mut args = vec![
            Self::token_arg(fence),
            (now + retention_ms).to_string(),
            (retention_ms.max(0) + GC_MARGIN.as_millis() as i64).to_string(),
            self.keys.state_prefix(group),
        ];
        for state in states {
            args.push(state.instance_id.clone());
            args.extend(
                StateParts::of(state)?
                    .args()
                    .iter()
                    .map(|s| (*s).to_owned()),
            );
        }
        self.write(
            "put instances",
            &PUT_INSTANCES_SCRIPT,
            vec![
                self.keys.fence(),
                self.keys.instances(group),
                self.keys.seq(),
            ],
            args,
            group,
            fence,
        )
        .await
        .map(|_| ())
    }

    async fn remove_instances(
        &self,
        group: &str,
        instance_ids: &[String],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        let mut args = vec![Self::token_arg(fence), self.keys.state_prefix(group)];
        args.extend(instance_ids.iter().cloned());
        self.write(
            "remove instances",
            &REMOVE_INSTANCES_SCRIPT,
            vec![
                self.keys.fence(),
                self.keys.instances(group),
                self.keys.instance_audit(group),
                self.keys.instance_audit_index(group),
            ],
            args,
            group,
            fence,
        )
        .await
        .map(|_| ())
    }

    async fn update_flags(
        &self,
        updates: &[FlagUpdate],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        let mut keys = vec![self.keys.fence()];
        let mut args = vec![
            Self::token_arg(fence),
            self.clock.now_ms().to_string(),
            GC_MARGIN.as_millis().to_string(),
        ];
        for update in updates {
            keys.push(self.keys.flags(update.instance_id()));
            let (op, a, b, c) = match update {
                FlagUpdate::RequestShutdown {
                    at_ms, expires_ms, ..
                } => (
                    "shutdown",
                    at_ms.to_string(),
                    expires_ms.to_string(),
                    String::new(),
                ),
                FlagUpdate::ConfirmShutdown {
                    at_ms, expires_ms, ..
                } => (
                    "confirm",
                    at_ms.to_string(),
                    expires_ms.to_string(),
                    String::new(),
                ),
                FlagUpdate::Reconfigure {
                    request,
                    expires_ms,
                    ..
                } => (
                    "reconfigure",
                    to_json("reconfigure request", request)?,
                    request.at_ms.to_string(),
                    expires_ms.to_string(),
                ),
                FlagUpdate::ClearReconfigure { .. } => (
                    "clear-reconfigure",
                    String::new(),
                    String::new(),
                    String::new(),
                ),
                FlagUpdate::Protect { until_ms, .. } => (
                    "protect",
                    until_ms.to_string(),
                    String::new(),
                    String::new(),
                ),
            };
            args.extend([op.to_owned(), a, b, c]);
        }
        self.write("update flags", &UPDATE_FLAGS_SCRIPT, keys, args, "", fence)
            .await
            .map(|_| ())
    }

    async fn flags(&self, instance_id: &str) -> Result<InstanceFlags, StoreError> {
        let key = self.keys.flags(instance_id);
        let fields: HashMap<String, String> = self
            .conn
            .call("flags", |mut con| async move {
                ::redis::cmd("HGETALL").arg(key).query_async(&mut con).await
            })
            .await?;
        parse_flags(instance_id, &fields, self.clock.now_ms())
    }

    async fn put_runtime(
        &self,
        group: &str,
        runtime: &GroupRuntime,
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.write(
            "put runtime",
            &PUT_RUNTIME_SCRIPT,
            vec![
                self.keys.fence(),
                self.keys.groups(),
                self.keys.runtime(group),
            ],
            vec![
                Self::token_arg(fence),
                group.to_owned(),
                to_json("group runtime", runtime)?,
            ],
            group,
            fence,
        )
        .await
        .map(|_| ())
    }

    async fn append_audit(
        &self,
        group: &str,
        events: &[AuditEvent],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let mut args = vec![
            Self::token_arg(fence),
            (now - self.retention.audit_ms).to_string(),
            self.audit_ttl(),
        ];
        for event in events {
            let at = event.at_ms().to_string();
            match event {
                AuditEvent::Group(e) => {
                    args.extend([
                        "group".to_owned(),
                        at,
                        to_json("group audit event", e)?,
                        String::new(),
                    ]);
                }
                AuditEvent::Instance(e) => {
                    args.extend([
                        "instance".to_owned(),
                        at,
                        audit_kind_name(e.kind).to_owned(),
                        e.instance_id.clone(),
                    ]);
                }
            }
        }
        self.write(
            "append audit",
            &APPEND_AUDIT_SCRIPT,
            vec![
                self.keys.fence(),
                self.keys.audit(group),
                self.keys.instance_audit(group),
                self.keys.instance_audit_index(group),
                self.keys.seq(),
            ],
            args,
            group,
            fence,
        )
        .await
        .map(|_| ())
    }

    async fn group_audit(&self, group: &str) -> Result<Option<GroupAuditLog>, StoreError> {
        let key = self.keys.audit(group);
        let oldest = self.clock.now_ms() - self.retention.audit_ms;
        let members: Vec<String> = self
            .conn
            .call("group audit", |mut con| {
                let key = key.clone();
                async move {
                    ::redis::cmd("ZRANGEBYSCORE")
                        .arg(key)
                        .arg(oldest)
                        .arg("+inf")
                        .query_async(&mut con)
                        .await
                }
            })
            .await?;
        let mut log = GroupAuditLog::default();
        for member in &members {
            let (_, json) = member.split_once('|').ok_or_else(|| StoreError::Corrupt {
                key: key.clone(),
                message: format!("bad audit item {member:?}"),
            })?;
            log.apply(&json_value::<GroupAuditEvent>(&key, json)?);
        }
        Ok((!log.is_empty()).then_some(log))
    }

    async fn instance_audit(&self, group: &str) -> Result<Vec<InstanceAudit>, StoreError> {
        const WHAT: &str = "instance audit";
        let now = self.clock.now_ms();
        let reply = self
            .eval(
                WHAT,
                &INSTANCE_AUDIT_SCRIPT,
                vec![
                    self.keys.instance_audit(group),
                    self.keys.instance_audit_index(group),
                ],
                vec![
                    now.to_string(),
                    (now - self.retention.audit_ms).to_string(),
                    self.keys.state_prefix(group),
                ],
            )
            .await?;
        let rows = items(&reply).ok_or_else(|| bad_reply(WHAT, &reply))?;
        let mut audits = Vec::with_capacity(rows.len());
        for row in rows {
            let row = texts(WHAT, row)?;
            // id, stored state, one time per kind, live state
            if row.len() != AUDIT_KINDS.len() + 3 {
                return Err(bad_reply(WHAT, &reply));
            }
            let mut audit = InstanceAudit::new(&row[0]);
            for (kind, at) in AUDIT_KINDS.iter().zip(&row[2..]) {
                if !at.is_empty() {
                    let at = at.parse().map_err(|_| StoreError::Corrupt {
                        key: self.keys.instance_audit(group),
                        message: format!("bad time {at:?}"),
                    })?;
                    audit.apply(*kind, at);
                }
            }
            let state = match (row[AUDIT_KINDS.len() + 2].as_str(), row[1].as_str()) {
                ("", "") => None,
                ("", stored) => Some(stored),
                (live, _) => Some(live),
            };
            audit.latest_status_info = state
                .map(|json| json_value::<InstanceState>("instance audit state", json))
                .transpose()?;
            audits.push(audit);
        }
        audits.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(audits)
    }
}
