//! [`EmbeddedStore`]: the durable store of a single node, in one redb file.

mod disk;
mod series_codec;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};

use super::working_set::WorkingSet;
use super::{
    CheckIn, Commands, Expect, FlagUpdate, GroupRecord, GroupRuntime, GroupSnapshot, Retention,
    Store, StoreError,
};
use crate::audit::{AuditEvent, GroupAuditLog, InstanceAudit};
use crate::clock::{Clock, UnixMillis};
use crate::instance::{InstanceFlags, InstanceRecord, InstanceState};
use crate::leader::FencingToken;
use writer::Message;

/// Tuning of an [`EmbeddedStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Longest time a check-in stays only in memory (the most a crash can lose).
    pub commit_interval: Duration,
    /// Pending records that trigger a commit before the interval ends.
    pub max_batch: usize,
    /// Time between two sweeps of expired records.
    pub sweep_interval: Duration,
    /// Retention of what the store expires on its own (the audit).
    pub retention: Retention,
    /// The file's page cache, in bytes. The working set answers every read, so the cache only
    /// saves a commit re-reading (from the OS's cache) the B-tree pages it rewrites: a larger
    /// one trades resident memory for the writer's CPU.
    pub page_cache_bytes: usize,
    /// How much lower than the rest of the process the writer thread's scheduling priority is:
    /// its nice value above the process's (Linux; ignored elsewhere; at most 19 in all). On a
    /// busy core the requests come first and the writer takes what is left, committing more
    /// changes at once; 0 runs it like every other thread.
    pub writer_nice: u8,
}

impl EmbeddedOptions {
    /// The page cache by default: 16 MiB.
    pub const DEFAULT_PAGE_CACHE_BYTES: usize = 16 << 20;
    /// The writer's nice value above the process's by default.
    pub const DEFAULT_WRITER_NICE: u8 = 10;
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            commit_interval: Duration::from_secs(1),
            max_batch: 10_000,
            sweep_interval: Duration::from_secs(60),
            retention: Retention::default(),
            page_cache_bytes: Self::DEFAULT_PAGE_CACHE_BYTES,
            writer_nice: Self::DEFAULT_WRITER_NICE,
        }
    }
}

/// What the store and its writer thread share.
struct Shared {
    set: Mutex<WorkingSet>,
    clock: Arc<dyn Clock>,
    options: EmbeddedOptions,
    /// A batch-full wake-up is on its way to the writer.
    wake_sent: AtomicBool,
    /// The error of the last commit, until one succeeds.
    failure: Mutex<Option<StoreError>>,
    /// Commits done (observable in tests).
    commits: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, WorkingSet> {
        // Every working-set operation leaves the maps consistent between statements that can
        // panic, so a poisoned lock is recovered rather than propagated (as in the memory store).
        self.set.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> UnixMillis {
        self.clock.now_ms()
    }

    fn sweep(&self) {
        let now = self.now();
        self.lock().sweep(now, &self.options.retention);
    }

    fn health(&self) -> Result<(), StoreError> {
        match &*self.failure.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn set_health(&self, failure: Option<StoreError>) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = failure;
    }
}

/// The durable store of a single node, in one redb file (`<data dir>/jitsi-scaler.redb`).
///
/// # How it works
/// The whole state lives in an in-memory working set that answers every read, with the
/// semantics of [`MemoryStore`] (the same conformance suite). Each write marks the records it
/// changed; a dedicated writer thread copies the marked records out and commits them to the
/// file in one redb transaction (one fsync), so many check-ins of the same instance cost one
/// record write per commit. The file is read only once, when the store opens.
///
/// # Durability
/// - **Durable on return**: every call except `check_in` — [`put_group`], [`delete_group`],
///   [`update_flags`], [`put_runtime`], [`put_instances`], [`remove_instances`] and
///   [`append_audit`] — answers only after its commit reached the disk. Groups (versions,
///   cooldown and protection timers), API edits, command flags (shutdown, confirmation,
///   reconfigure, protection), the engine's runtime with its launch intents, the audit, and the
///   newest fencing token (an old leader stays fenced after a restart) are never lost once
///   acknowledged. Callers that wait at the same time share one commit (group commit).
/// - **Write-behind**: a check-in (the instance state and liveness, the metric sample, the
///   `latest-status` audit) is applied in memory and committed with the next batch: every
///   [`EmbeddedOptions::commit_interval`] (1 s by default), or as soon as
///   [`EmbeddedOptions::max_batch`] records are pending, or with any durable call or
///   [`flush`]. A check-in that consumes a reconfiguration (acknowledged or delivered) waits for
///   its commit, so a crash cannot deliver it twice.
/// - **What a crash loses**: at most the check-ins of the last commit interval (liveness
///   timestamps, samples and `latest-status` times of those seconds), plus the trimming of old
///   samples and the sweep of expired records, which are redone. Never a group edit, a flag,
///   the runtime, the audit of a reconcile or the fencing floor.
/// - [`flush`] commits everything pending (graceful shutdown); dropping the store flushes too
///   and closes the file.
/// - When a commit fails (disk full, I/O error), the call that waited for it answers
///   [`StoreError::Unavailable`] with an unknown outcome, as a network store that timed out: the
///   change is visible to reads and stays marked, so the next commit retries it. [`ping`]
///   reports the failure until a commit succeeds.
///
/// # Expiry
/// As in [`MemoryStore`], expiry is logical (by the injected [`Clock`]), and expired records are
/// swept from memory every few thousand check-ins, every [`EmbeddedOptions::sweep_interval`] and
/// on open; the sweep deletes them from the file too, so it does not grow without bound (its
/// free pages are reused; the file is never compacted). The sweep also drops an instance's
/// sample series once its newest sample is older than the retention its last check-in gave.
///
/// # Format
/// Values are JSON; the `meta` table holds `schemaVersion` (a newer file is refused, older ones
/// are migrated on open) and `newestToken`. Groups, runtime, flags and the token must decode or
/// the open fails with [`StoreError::Corrupt`]; an unreadable state, sample series or audit
/// record is logged and deleted. The file is checked page by page on open: a damaged file is
/// reported as [`StoreError::Corrupt`], a file held by another process as
/// [`StoreError::Unavailable`].
///
/// Nothing blocks the async runtime on the file: the writer thread does all file I/O, and
/// callers await its answer. [`EmbeddedStore::open`] itself reads the file and blocks; call it at
/// start-up (or in `spawn_blocking`).
///
/// [`MemoryStore`]: crate::store::MemoryStore
/// [`Clock`]: crate::clock::Clock
/// [`put_group`]: Store::put_group
/// [`delete_group`]: Store::delete_group
/// [`update_flags`]: Store::update_flags
/// [`put_runtime`]: Store::put_runtime
/// [`put_instances`]: Store::put_instances
/// [`remove_instances`]: Store::remove_instances
/// [`append_audit`]: Store::append_audit
/// [`flush`]: Store::flush
/// [`ping`]: Store::ping
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    path: PathBuf,
    messages: mpsc::Sender<Message>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the store in `dir` (created if missing) with default options.
    pub fn open(dir: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Self::open_with(dir, clock, EmbeddedOptions::default())
    }

    /// Opens the store in `dir` (created if missing): loads the file into memory and starts the
    /// writer thread. Blocks while it reads the file.
    pub fn open_with(
        dir: &Path,
        clock: Arc<dyn Clock>,
        options: EmbeddedOptions,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join(disk::FILE_NAME);
        let db = disk::open_database(&path, options.page_cache_bytes)?;
        let mut set = disk::load(&db)?;
        set.sweep(clock.now_ms(), &options.retention);
        let shared = Arc::new(Shared {
            set: Mutex::new(set),
            clock,
            options,
            wake_sent: AtomicBool::new(false),
            failure: Mutex::new(None),
            commits: watch::Sender::new(0),
        });
        let (messages, inbox) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("jitsi-scaler-store".into())
            .spawn({
                let shared = shared.clone();
                move || writer::run(db, inbox, shared)
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
        tracing::info!(path = %path.display(), "embedded store opened");
        Ok(Self {
            shared,
            path,
            messages,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, WorkingSet> {
        self.shared.lock()
    }

    fn now(&self) -> UnixMillis {
        self.shared.now()
    }

    /// Waits until everything changed so far is committed.
    async fn commit(&self) -> Result<(), StoreError> {
        let (ack, answer) = oneshot::channel();
        self.messages
            .send(Message::Commit(ack))
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?
    }

    /// Applies a write to the working set, then waits for its commit.
    async fn durable<T>(
        &self,
        write: impl FnOnce(&mut WorkingSet, UnixMillis) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let now = self.now();
        let value = write(&mut self.lock(), now)?;
        self.commit().await?;
        Ok(value)
    }

    /// Stops the writer, committing first when `flush` is set, and waits for it to close the
    /// file.
    fn stop(&self, flush: bool) {
        let _ = self.messages.send(Message::Stop { flush });
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the store writer panicked");
        }
    }

    /// Stops the writer without committing, as a crash would (tests of durability).
    #[cfg(test)]
    fn simulate_crash(&self) {
        self.stop(false);
    }

    /// A receiver of the number of commits done (tests of batching).
    #[cfg(test)]
    fn commits(&self) -> watch::Receiver<u64> {
        self.shared.commits.subscribe()
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.stop(true);
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let stopped = self
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_none_or(|h| h.is_finished());
        if stopped {
            return Err(StoreError::Unavailable(
                "the store writer has stopped".into(),
            ));
        }
        self.shared.health()
    }

    async fn list_groups(&self) -> Result<Vec<GroupRecord>, StoreError> {
        Ok(self.lock().list_groups())
    }

    async fn get_group(&self, name: &str) -> Result<Option<GroupRecord>, StoreError> {
        Ok(self.lock().get_group(name))
    }

    async fn put_group(
        &self,
        record: &GroupRecord,
        expect: Expect,
        fence: Option<FencingToken>,
    ) -> Result<u64, StoreError> {
        self.durable(|set, _| set.put_group(record, expect, fence))
            .await
    }

    async fn delete_group(
        &self,
        name: &str,
        fence: Option<FencingToken>,
    ) -> Result<bool, StoreError> {
        self.durable(|set, _| set.delete_group(name, fence)).await
    }

    async fn snapshot(
        &self,
        group: &str,
        samples_since_ms: UnixMillis,
    ) -> Result<Option<GroupSnapshot>, StoreError> {
        let now = self.now();
        Ok(self.lock().snapshot(group, samples_since_ms, now))
    }

    async fn instances(&self, group: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        let now = self.now();
        Ok(self.lock().records(group, now))
    }

    async fn check_in(&self, check_in: &CheckIn) -> Result<Commands, StoreError> {
        let now = self.now();
        let (commands, batch_full) = {
            let mut set = self.lock();
            let commands = set.check_in(check_in, now, &self.shared.options.retention);
            (commands, set.dirty_len() >= self.shared.options.max_batch)
        };
        if commands.reconfigure_acknowledged || commands.reconfigure_delivered {
            // The flag was consumed: commit now, so a crash cannot hand it out again. The
            // answer stands even if the commit fails (the flag is gone from memory already).
            if let Err(error) = self.commit().await {
                tracing::error!(
                    instance = %check_in.state.instance_id,
                    %error,
                    "could not commit a consumed reconfiguration"
                );
            }
        } else if batch_full && !self.shared.wake_sent.swap(true, Ordering::AcqRel) {
            let _ = self.messages.send(Message::Wake);
        }
        Ok(commands)
    }

    async fn put_instances(
        &self,
        group: &str,
        states: &[InstanceState],
        retention_ms: i64,
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.durable(|set, now| set.put_instances(group, states, retention_ms, fence, now))
            .await
    }

    async fn remove_instances(
        &self,
        group: &str,
        instance_ids: &[String],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.durable(|set, _| set.remove_instances(group, instance_ids, fence))
            .await
    }

    async fn update_flags(
        &self,
        updates: &[FlagUpdate],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.durable(|set, now| set.update_flags(updates, fence, now))
            .await
    }

    async fn flags(&self, instance_id: &str) -> Result<InstanceFlags, StoreError> {
        let now = self.now();
        Ok(self.lock().flags(instance_id, now))
    }

    async fn put_runtime(
        &self,
        group: &str,
        runtime: &GroupRuntime,
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        self.durable(|set, _| set.put_runtime(group, runtime, fence))
            .await
    }

    async fn append_audit(
        &self,
        group: &str,
        events: &[AuditEvent],
        fence: Option<FencingToken>,
    ) -> Result<(), StoreError> {
        let retention = self.shared.options.retention;
        self.durable(|set, now| set.append_audit(group, events, fence, now, &retention))
            .await
    }

    async fn group_audit(&self, group: &str) -> Result<Option<GroupAuditLog>, StoreError> {
        let now = self.now();
        Ok(self
            .lock()
            .group_audit(group, now, &self.shared.options.retention))
    }

    async fn instance_audit(&self, group: &str) -> Result<Vec<InstanceAudit>, StoreError> {
        let now = self.now();
        Ok(self
            .lock()
            .instance_audit(group, now, &self.shared.options.retention))
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.commit().await
    }
}
