//! The writer thread: the only user of the redb file after loading. It commits the working
//! set's changed records every commit interval, when a batch fills, and at once when a caller
//! waits for durability; callers waiting at the same time share one commit (group commit).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use redb::Database;
use tokio::sync::oneshot;

use super::Shared;
use super::disk;
use crate::store::StoreError;

/// What the store asks of the writer.
#[derive(Debug)]
pub(super) enum Message {
    /// Commit everything changed so far and answer when it is durable.
    Commit(oneshot::Sender<Result<(), StoreError>>),
    /// A batch is full: commit now, nobody waits.
    Wake,
    /// Commit what is pending (unless `flush` is false: a simulated crash) and close the file.
    Stop {
        /// Commit before closing.
        flush: bool,
    },
}

/// Runs until told to stop or until the store is gone.
pub(super) fn run(db: Database, messages: Receiver<Message>, shared: Arc<Shared>) {
    lower_priority(shared.options.writer_nice);
    let interval = shared.options.commit_interval;
    let mut next_commit = Instant::now() + interval;
    let mut next_sweep = Instant::now() + shared.options.sweep_interval;
    loop {
        let mut inbox = Vec::new();
        let mut stop = None;
        match messages.recv_timeout(next_commit.saturating_duration_since(Instant::now())) {
            Ok(message) => inbox.push(message),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => stop = Some(true),
        }
        // Everyone who asked meanwhile shares this commit.
        inbox.extend(messages.try_iter());
        let mut waiting = Vec::new();
        for message in inbox {
            match message {
                Message::Commit(ack) => waiting.push(ack),
                Message::Wake => {}
                Message::Stop { flush } => stop = Some(flush),
            }
        }
        if stop == Some(false) {
            tracing::warn!("embedded store closed without committing (simulated crash)");
            return;
        }
        if Instant::now() >= next_sweep {
            shared.sweep();
            next_sweep = Instant::now() + shared.options.sweep_interval;
        }
        let result = commit(&db, &shared);
        next_commit = Instant::now() + interval;
        for ack in waiting {
            // The caller may have given up waiting; the commit stands.
            let _ = ack.send(result.clone());
        }
        if stop.is_some() {
            if let Err(e) = db.close() {
                tracing::error!(error = %e, "closing the embedded store file failed");
            }
            return;
        }
    }
}

/// Raises the calling thread's nice value by `by` (capped at 19), so the scheduler favours the
/// process's other threads. On Linux a thread's nice value is its own; elsewhere this does
/// nothing. A failure is logged, and the thread keeps its priority.
pub(super) fn lower_priority(by: u8) {
    if by == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let thread = Some(rustix::thread::gettid());
        let lowered = getpriority_process(thread)
            .and_then(|now| setpriority_process(thread, (now + i32::from(by)).min(19)));
        if let Err(e) = lowered {
            tracing::warn!(error = %e, "the store writer could not lower its priority");
        }
    }
}

/// Writes every changed record in one transaction. On failure the records stay marked, so the
/// next commit writes them.
fn commit(db: &Database, shared: &Shared) -> Result<(), StoreError> {
    let changes = {
        let mut set = shared.lock();
        shared.wake_sent.store(false, Ordering::Release);
        set.drain()
    };
    if changes.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    match disk::write(db, &changes) {
        Ok(()) => {
            tracing::debug!(
                records = changes.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "embedded store commit"
            );
            shared.set_health(None);
            shared.commits.send_modify(|n| *n += 1);
            Ok(())
        }
        Err(e) => {
            tracing::error!(records = changes.len(), error = %e, "embedded store commit failed");
            shared.lock().retry(changes);
            shared.set_health(Some(e.clone()));
            Err(e)
        }
    }
}
