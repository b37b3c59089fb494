//! The redb file: its tables, opening with a schema check, loading the working set, and writing
//! a batch of changes in one transaction.
//!
//! Every value is JSON but the sample series, which are binary ([`series_codec`]: most of
//! what a commit writes). Records of groups, runtime, flags and the fencing token must decode, or
//! the file is reported corrupt; instance states, samples and audit that fail to decode are
//! logged and deleted (they are rebuilt by the next check-ins and reconciles).

use std::path::Path;

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, StorageError, Table, TableDefinition,
    TableHandle,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::series_codec;
use crate::store::StoreError;
use crate::store::working_set::{Change, Entry, Key, WorkingSet};

/// The layout version of the file. A newer file is refused; older ones are migrated on open.
pub(super) const SCHEMA_VERSION: u64 = 1;

/// The file name inside the data directory.
pub(super) const FILE_NAME: &str = "jitsi-scaler.redb";

const SCHEMA_KEY: &str = "schemaVersion";
const NEWEST_TOKEN_KEY: &str = "newestToken";

type Single = TableDefinition<'static, &'static str, &'static [u8]>;
type Pair = TableDefinition<'static, (&'static str, &'static str), &'static [u8]>;

/// `schemaVersion`, `newestToken`.
const META: Single = TableDefinition::new("meta");
/// Group name → `GroupRecord`.
const GROUPS: Single = TableDefinition::new("groups");
/// Group name → `GroupRuntime`.
const RUNTIME: Single = TableDefinition::new("runtime");
/// Instance id → flags with expiries.
const FLAGS: Single = TableDefinition::new("flags");
/// (group, instance) → state with retention and order.
const STATES: Pair = TableDefinition::new("states");
/// (group, instance) → metric samples.
const SAMPLES: Pair = TableDefinition::new("samples");
/// Group name → `GroupAuditLog`.
const GROUP_AUDIT: Single = TableDefinition::new("group_audit");
/// (group, instance) → `InstanceAudit`.
const INSTANCE_AUDIT: Pair = TableDefinition::new("instance_audit");

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

fn corrupt(key: impl Into<String>, message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.into(),
        message: message.to_string(),
    }
}

fn storage(what: &str, e: StorageError) -> StoreError {
    match e {
        StorageError::Corrupted(message) => corrupt(what, message),
        other => unavailable(what, other),
    }
}

/// Opens (creating if needed) the database file with a page cache of `cache_bytes`, with a
/// clear error when another process holds it or it is not a sound redb file.
pub(super) fn open_database(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    let shown = path.display().to_string();
    let mut builder = Database::builder();
    // Verify every page on open: a damaged file is reported, never trusted.
    builder.set_check_integrity_on_open(true);
    builder.set_cache_size(cache_bytes);
    builder.create(path).map_err(|e| match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::Unavailable(format!(
                "{shown} is locked: another jitsi-scaler process (or another store in this one) \
                 has it open"
            ))
        }
        DatabaseError::UpgradeRequired(v) => corrupt(
            shown,
            format!("redb file format {v} must be upgraded before this build can open it"),
        ),
        DatabaseError::RepairAborted => corrupt(shown, "the repair of the file was aborted"),
        DatabaseError::Storage(StorageError::Corrupted(message)) => corrupt(shown, message),
        DatabaseError::Storage(StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            corrupt(shown, io)
        }
        other => unavailable(&format!("cannot open {shown}"), other),
    })
}

/// Creates the tables, checks (or writes) the schema version, and loads everything.
pub(super) fn load(db: &Database) -> Result<WorkingSet, StoreError> {
    prepare(db)?;
    let txn = db
        .begin_read()
        .map_err(|e| unavailable("read transaction", e))?;
    let mut set = WorkingSet::tracked();
    {
        let meta = txn.open_table(META).map_err(|e| unavailable("meta", e))?;
        if let Some(v) = meta.get(NEWEST_TOKEN_KEY).map_err(|e| storage("meta", e))? {
            set.newest_token = decode(&format!("meta/{NEWEST_TOKEN_KEY}"), v.value())?;
        }
    }
    for_each(&txn, GROUPS, |name, bytes| {
        set.groups
            .insert(name.to_owned(), decode(&format!("groups/{name}"), bytes)?);
        Ok(())
    })?;
    for_each(&txn, RUNTIME, |name, bytes| {
        set.runtime
            .insert(name.to_owned(), decode(&format!("runtime/{name}"), bytes)?);
        Ok(())
    })?;
    for_each(&txn, FLAGS, |id, bytes| {
        set.flags
            .insert(id.to_owned(), decode(&format!("flags/{id}"), bytes)?);
        Ok(())
    })?;
    for_each(&txn, GROUP_AUDIT, |name, bytes| {
        match decode(&format!("group_audit/{name}"), bytes) {
            Ok(log) => {
                set.group_audit.insert(name.to_owned(), log);
            }
            Err(e) => discard(&mut set, Key::GroupAudit(name.to_owned()), &e),
        }
        Ok(())
    })?;
    for_each_pair(&txn, STATES, |group, id, bytes| {
        match decode(&format!("states/{group}/{id}"), bytes) {
            Ok(state) => {
                set.load_state(group, id, state);
            }
            Err(e) => discard(&mut set, Key::State(group.to_owned(), id.into()), &e),
        }
    })?;
    for_each_pair(
        &txn,
        SAMPLES,
        |group, id, bytes| match series_codec::decode(bytes)
            .map_err(|e| corrupt(format!("samples/{group}/{id}"), e))
        {
            Ok(series) => {
                set.load_series(group, id, series);
            }
            Err(e) => discard(&mut set, Key::Samples(group.to_owned(), id.into()), &e),
        },
    )?;
    for_each_pair(&txn, INSTANCE_AUDIT, |group, id, bytes| {
        match decode(&format!("instance_audit/{group}/{id}"), bytes) {
            Ok(audit) => {
                set.load_audit(group, id, audit);
            }
            Err(e) => discard(
                &mut set,
                Key::InstanceAudit(group.to_owned(), id.into()),
                &e,
            ),
        }
    })?;
    set.loaded();
    Ok(set)
}

/// Creates missing tables and settles the schema version in one transaction.
fn prepare(db: &Database) -> Result<(), StoreError> {
    let txn = db
        .begin_write()
        .map_err(|e| unavailable("write transaction", e))?;
    {
        let mut meta = txn.open_table(META).map_err(|e| unavailable("meta", e))?;
        let stored: Option<u64> = meta
            .get(SCHEMA_KEY)
            .map_err(|e| storage("meta", e))?
            .map(|v| decode(&format!("meta/{SCHEMA_KEY}"), v.value()))
            .transpose()?;
        match stored {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(corrupt(
                    format!("meta/{SCHEMA_KEY}"),
                    format!(
                        "the file has schema version {v}, newer than the {SCHEMA_VERSION} this \
                         build reads"
                    ),
                ));
            }
            Some(SCHEMA_VERSION) => {}
            // No version yet (a new file). Migrations from older versions go here.
            _ => {
                meta.insert(SCHEMA_KEY, encode(&SCHEMA_VERSION)?.as_slice())
                    .map_err(|e| storage("meta", e))?;
            }
        }
        for table in [GROUPS, RUNTIME, FLAGS, GROUP_AUDIT] {
            txn.open_table(table)
                .map_err(|e| unavailable("create table", e))?;
        }
        for table in [STATES, SAMPLES, INSTANCE_AUDIT] {
            txn.open_table(table)
                .map_err(|e| unavailable("create table", e))?;
        }
    }
    txn.commit().map_err(|e| unavailable("commit", e))
}

fn for_each(
    txn: &redb::ReadTransaction,
    table: Single,
    mut f: impl FnMut(&str, &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let name = table.name().to_owned();
    let table = txn.open_table(table).map_err(|e| unavailable(&name, e))?;
    for item in table.iter().map_err(|e| storage(&name, e))? {
        let (k, v) = item.map_err(|e| storage(&name, e))?;
        f(k.value(), v.value())?;
    }
    Ok(())
}

fn for_each_pair(
    txn: &redb::ReadTransaction,
    table: Pair,
    mut f: impl FnMut(&str, &str, &[u8]),
) -> Result<(), StoreError> {
    let name = table.name().to_owned();
    let table = txn.open_table(table).map_err(|e| unavailable(&name, e))?;
    for item in table.iter().map_err(|e| storage(&name, e))? {
        let (k, v) = item.map_err(|e| storage(&name, e))?;
        let (group, id) = k.value();
        f(group, id, v.value());
    }
    Ok(())
}

/// Drops an undecodable record that the engine rebuilds on its own, and deletes it from the
/// file at the next commit.
fn discard(set: &mut WorkingSet, key: Key, error: &StoreError) {
    tracing::warn!(?key, %error, "discarding an unreadable record of the embedded store");
    set.touch(key);
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(key, e))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| corrupt("encode", e))
}

/// Replaces `bytes` with the record's stored form.
fn encode_entry(entry: &Entry, bytes: &mut Vec<u8>) -> Result<(), StoreError> {
    fn json<T: Serialize>(value: &T, bytes: &mut Vec<u8>) -> Result<(), StoreError> {
        serde_json::to_writer(bytes, value).map_err(|e| corrupt("encode", e))
    }
    bytes.clear();
    match entry {
        Entry::NewestToken(t) => json(t, bytes),
        Entry::Group(g) => json(g, bytes),
        Entry::Runtime(r) => json(r, bytes),
        Entry::Flags(f) => json(f, bytes),
        Entry::State(s) => json(s, bytes),
        Entry::Samples(s) => {
            series_codec::encode_into(s, bytes);
            Ok(())
        }
        Entry::GroupAudit(a) => json(a, bytes),
        Entry::InstanceAudit(a) => json(a, bytes),
    }
}

/// The tables of one write transaction.
struct Tables<'t> {
    meta: Table<'t, &'static str, &'static [u8]>,
    groups: Table<'t, &'static str, &'static [u8]>,
    runtime: Table<'t, &'static str, &'static [u8]>,
    flags: Table<'t, &'static str, &'static [u8]>,
    states: Table<'t, (&'static str, &'static str), &'static [u8]>,
    samples: Table<'t, (&'static str, &'static str), &'static [u8]>,
    group_audit: Table<'t, &'static str, &'static [u8]>,
    instance_audit: Table<'t, (&'static str, &'static str), &'static [u8]>,
}

fn put(
    table: &mut Table<'_, &'static str, &'static [u8]>,
    key: &str,
    bytes: Option<&[u8]>,
) -> Result<(), StorageError> {
    match bytes {
        Some(b) => table.insert(key, b).map(drop),
        None => table.remove(key).map(drop),
    }
}

fn put_pair(
    table: &mut Table<'_, (&'static str, &'static str), &'static [u8]>,
    key: (&str, &str),
    bytes: Option<&[u8]>,
) -> Result<(), StorageError> {
    match bytes {
        Some(b) => table.insert(key, b).map(drop),
        None => table.remove(key).map(drop),
    }
}

/// Writes a batch of changes in one durable transaction (one fsync). Each record is encoded
/// into one reused buffer as it is written, so a large batch holds no second copy of itself.
pub(super) fn write(db: &Database, changes: &[Change]) -> Result<(), StoreError> {
    let mut buffer = Vec::new();
    let txn = db
        .begin_write()
        .map_err(|e| unavailable("write transaction", e))?;
    {
        let open = |e: redb::TableError| unavailable("open table", e);
        let mut t = Tables {
            meta: txn.open_table(META).map_err(open)?,
            groups: txn.open_table(GROUPS).map_err(open)?,
            runtime: txn.open_table(RUNTIME).map_err(open)?,
            flags: txn.open_table(FLAGS).map_err(open)?,
            states: txn.open_table(STATES).map_err(open)?,
            samples: txn.open_table(SAMPLES).map_err(open)?,
            group_audit: txn.open_table(GROUP_AUDIT).map_err(open)?,
            instance_audit: txn.open_table(INSTANCE_AUDIT).map_err(open)?,
        };
        for change in changes {
            let bytes = match &change.entry {
                Some(entry) => {
                    encode_entry(entry, &mut buffer)?;
                    Some(buffer.as_slice())
                }
                None => None,
            };
            match &change.key {
                Key::NewestToken => put(&mut t.meta, NEWEST_TOKEN_KEY, bytes),
                Key::Group(g) => put(&mut t.groups, g, bytes),
                Key::Runtime(g) => put(&mut t.runtime, g, bytes),
                Key::Flags(id) => put(&mut t.flags, id, bytes),
                Key::State(g, id) => put_pair(&mut t.states, (g, id), bytes),
                Key::Samples(g, id) => put_pair(&mut t.samples, (g, id), bytes),
                Key::GroupAudit(g) => put(&mut t.group_audit, g, bytes),
                Key::InstanceAudit(g, id) => put_pair(&mut t.instance_audit, (g, id), bytes),
            }
            .map_err(|e| storage("write", e))?;
        }
    }
    txn.commit().map_err(|e| unavailable("commit", e))
}

/// The page cache of a file opened by a test helper.
#[cfg(test)]
const TEST_CACHE_BYTES: usize = 1 << 20;

/// Row counts per table of a closed file (tests of physical cleanup).
#[cfg(test)]
pub(super) fn row_counts(path: &Path) -> Result<Vec<(String, u64)>, StoreError> {
    use redb::ReadableTableMetadata;
    let db = open_database(path, TEST_CACHE_BYTES)?;
    let txn = db.begin_read().map_err(|e| unavailable("read", e))?;
    let mut counts = Vec::new();
    for table in [META, GROUPS, RUNTIME, FLAGS, GROUP_AUDIT] {
        let t = txn.open_table(table).map_err(|e| unavailable("open", e))?;
        counts.push((
            table.name().to_owned(),
            t.len().map_err(|e| storage("len", e))?,
        ));
    }
    for table in [STATES, SAMPLES, INSTANCE_AUDIT] {
        let t = txn.open_table(table).map_err(|e| unavailable("open", e))?;
        counts.push((
            table.name().to_owned(),
            t.len().map_err(|e| storage("len", e))?,
        ));
    }
    Ok(counts)
}

/// Overwrites one raw value of a closed file (tests of unreadable records).
#[cfg(test)]
pub(super) fn poke(path: &Path, table: &str, key: &[&str], bytes: &[u8]) -> Result<(), StoreError> {
    let db = open_database(path, TEST_CACHE_BYTES)?;
    let txn = db.begin_write().map_err(|e| unavailable("write", e))?;
    {
        let singles = [META, GROUPS, RUNTIME, FLAGS, GROUP_AUDIT];
        let pairs = [STATES, SAMPLES, INSTANCE_AUDIT];
        match key {
            [k] => {
                let def = singles
                    .into_iter()
                    .find(|d| d.name() == table)
                    .ok_or_else(|| corrupt(table, "no such table"))?;
                let mut t = txn.open_table(def).map_err(|e| unavailable("open", e))?;
                put(&mut t, k, Some(bytes)).map_err(|e| storage("poke", e))?;
            }
            [g, id] => {
                let def = pairs
                    .into_iter()
                    .find(|d| d.name() == table)
                    .ok_or_else(|| corrupt(table, "no such table"))?;
                let mut t = txn.open_table(def).map_err(|e| unavailable("open", e))?;
                put_pair(&mut t, (g, id), Some(bytes)).map_err(|e| storage("poke", e))?;
            }
            _ => return Err(corrupt(table, "a key has one or two parts")),
        }
    }
    txn.commit().map_err(|e| unavailable("commit", e))
}
