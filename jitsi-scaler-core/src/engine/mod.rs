//! The engine: [`Scaler`] reconciles every group on an interval (and early on events), one
//! reconcile per group at a time, only while this node leads; it also serves sidecar
//! check-ins on every node.
//!
//! A reconcile reads the group's snapshot from the store, asks [`plan::decide_group`] what to
//! do, and carries it out: the group write (schedule transition, desired count, cooldown),
//! launches through the group's provider, scale-down flags, the sanity listing of the cloud,
//! and the drain follow-up of the group's termination policy. Every write carries the leader's
//! fencing token; a provider call starts only while the token is still valid, and is abandoned
//! (dropped, retries included) as soon as the lease lapses.
//!
//! [`plan::decide_group`]: crate::plan::decide_group

pub mod admin;
mod checkin;
pub mod events;
mod queue;
mod reconcile;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::clock::{Clock, SystemClock};
use crate::group::Group;
use crate::instance::InstanceType;
use crate::leader::{Leadership, SingleNode};
use crate::plan::PassSettings;
use crate::provider::ProviderRegistry;
use crate::store::{Store, StoreError};

pub use checkin::CheckInResult;
pub use events::{EngineEvent, GroupGauges, GuardStage, NoopObserver, Observer, RecordingObserver};
pub use reconcile::ReconcileReport;

/// How the engine runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalerOptions {
    /// Reconcile every group this often (default 10 s).
    pub reconcile_interval: Duration,
    /// Least time between the start of a group's reconcile and one that a check-in or an edit
    /// triggers (default 1 s): a fleet that starts or comes back at once triggers one
    /// reconcile per second, not one per instance. Periodic reconciles are not held back.
    pub trigger_spacing: Duration,
    /// Wait this long after start before the first reconcile, so sidecars can check in first
    /// (the reference's `INITIAL_WAIT_FOR_POOLING_MS`; default 120 s, set 0 with a durable
    /// store that already holds the fleet).
    pub initial_delay: Duration,
    /// List each group's cloud this often (SANITY; default 240 s).
    pub sanity_interval: Duration,
    /// A cached cloud list is used this long (`SERVICE_LEVEL_METRICS_TTL_SEC`; default 600 s).
    pub cloud_cache_ttl: Duration,
    /// Decision settings (timings, schedules, cloud guard, throttle).
    pub pass: PassSettings,
    /// Decide and audit as usual, but call no provider; launches write dry-run placeholders.
    pub dry_run: bool,
    /// Reconciles running at once (`JOBS_CONCURRENCY`; default 5).
    pub concurrency: usize,
    /// Deadline of one reconcile; its work is cancelled past it (default 180 s).
    pub reconcile_timeout: Duration,
    /// Deadline of one provider call (default 120 s).
    pub provider_timeout: Duration,
    /// Back-off of a group's launches after consecutive failures (D9; 30 s → 10 min).
    pub launch_backoff: Backoff,
    /// Back-off of a failed server-side terminate of one instance.
    pub terminate_backoff: Backoff,
    /// Lifetime of shutdown flags, confirmations and reconfiguration requests (86400 s).
    pub flag_ttl: Duration,
    /// A draining instance silent this long counts as gone (`onConfirmOrTimeout`; 180 s).
    pub drain_silence: Duration,
}

impl Default for ScalerOptions {
    fn default() -> Self {
        Self {
            reconcile_interval: Duration::from_secs(10),
            trigger_spacing: Duration::from_secs(1),
            initial_delay: Duration::from_secs(120),
            sanity_interval: Duration::from_secs(240),
            cloud_cache_ttl: Duration::from_secs(600),
            pass: PassSettings::default(),
            dry_run: false,
            concurrency: 5,
            reconcile_timeout: Duration::from_secs(180),
            provider_timeout: Duration::from_secs(120),
            launch_backoff: Backoff::new(Duration::from_secs(30), Duration::from_secs(600))
                .without_jitter(),
            terminate_backoff: Backoff::new(Duration::from_secs(30), Duration::from_secs(600)),
            flag_ttl: Duration::from_secs(86_400),
            drain_silence: Duration::from_secs(180),
        }
    }
}

/// Why the engine could not do something.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `run` was called twice.
    #[error("the engine is already running")]
    AlreadyRunning,
}

/// What the check-in path needs to know of a group, cached per node.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GroupInfo {
    pub(crate) instance_type: Option<InstanceType>,
    pub(crate) sample_retention_ms: i64,
    pub(crate) count_unhealthy: bool,
}

impl GroupInfo {
    fn of(group: &Group) -> Self {
        let o = &group.scaling_options;
        let period_ms = (o.scale_period.max(1) as i64).saturating_mul(1000);
        Self {
            instance_type: group.instance_type(),
            sample_retention_ms: period_ms.saturating_mul(i64::from(o.window_periods()) + 1),
            count_unhealthy: group.count_unhealthy_as_available.unwrap_or(false),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) providers: ProviderRegistry,
    pub(crate) leadership: Arc<dyn Leadership>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: ScalerOptions,
    pub(crate) observer: Arc<dyn Observer>,
    groups: RwLock<HashMap<String, GroupInfo>>,
    wake: mpsc::Sender<String>,
    wake_rx: Mutex<Option<mpsc::Receiver<String>>>,
    running: AtomicBool,
    first_pass_done: AtomicBool,
    warned: Mutex<HashSet<String>>,
}

/// The embeddable controller. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Scaler {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Scaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scaler")
            .field("store", &self.shared.store)
            .field("providers", &self.shared.providers)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Scaler`].
#[derive(Debug)]
pub struct ScalerBuilder {
    store: Arc<dyn Store>,
    providers: ProviderRegistry,
    leadership: Option<Arc<dyn Leadership>>,
    clock: Option<Arc<dyn Clock>>,
    options: ScalerOptions,
    observer: Option<Arc<dyn Observer>>,
}

impl ScalerBuilder {
    /// The providers groups launch through.
    pub fn providers(mut self, providers: ProviderRegistry) -> Self {
        self.providers = providers;
        self
    }

    /// Leader election (default: [`SingleNode`]).
    pub fn leadership(mut self, leadership: Arc<dyn Leadership>) -> Self {
        self.leadership = Some(leadership);
        self
    }

    /// Wall clock (default: the system's).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Engine options.
    pub fn options(mut self, options: ScalerOptions) -> Self {
        self.options = options;
        self
    }

    /// Receiver of engine events (default: none).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The scaler.
    pub fn build(self) -> Scaler {
        let (wake, wake_rx) = mpsc::channel(1024);
        Scaler {
            shared: Arc::new(Shared {
                store: self.store,
                providers: self.providers,
                leadership: self
                    .leadership
                    .unwrap_or_else(|| Arc::new(SingleNode::default())),
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                options: self.options,
                observer: self.observer.unwrap_or_else(|| Arc::new(NoopObserver)),
                groups: RwLock::new(HashMap::new()),
                wake,
                wake_rx: Mutex::new(Some(wake_rx)),
                running: AtomicBool::new(false),
                first_pass_done: AtomicBool::new(false),
                warned: Mutex::new(HashSet::new()),
            }),
        }
    }
}

impl Scaler {
    /// Starts building a scaler over a store.
    pub fn builder(store: Arc<dyn Store>) -> ScalerBuilder {
        ScalerBuilder {
            store,
            providers: ProviderRegistry::new(),
            leadership: None,
            clock: None,
            options: ScalerOptions::default(),
            observer: None,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// The providers.
    pub fn providers(&self) -> &ProviderRegistry {
        &self.shared.providers
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    /// The options.
    pub fn options(&self) -> &ScalerOptions {
        &self.shared.options
    }

    /// The leadership.
    pub fn leadership(&self) -> &Arc<dyn Leadership> {
        &self.shared.leadership
    }

    /// `run` is active.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// A first round of reconciles has been dispatched since `run` started.
    pub fn first_pass_done(&self) -> bool {
        self.shared.first_pass_done.load(Ordering::SeqCst)
    }

    /// Asks for an early reconcile of a group (coalesced with one already queued).
    pub fn trigger(&self, group: &str) {
        // A full channel only means many triggers are already pending; the periodic pass
        // covers the group anyway.
        let _ = self.shared.wake.try_send(group.to_owned());
    }

    /// Updates the check-in cache after a group was written, and asks for a reconcile.
    pub fn group_changed(&self, group: &Group) {
        self.shared.cache_group(group);
        self.trigger(&group.name);
    }

    /// Forgets a deleted group.
    pub fn group_removed(&self, name: &str) {
        if let Ok(mut groups) = self.shared.groups.write() {
            groups.remove(name);
        }
        self.shared.observer.observe(&EngineEvent::GroupRemoved {
            group: name.to_owned(),
        });
    }

    /// Reloads the check-in cache from the store.
    pub async fn refresh_groups(&self) -> Result<Vec<String>, StoreError> {
        self.shared.refresh_groups().await
    }

    /// Reconciles one group now, exclusively of nothing: for tests and tools. The run loop is
    /// the normal way, which guarantees one reconcile per group at a time.
    pub async fn reconcile_now(&self, group: &str) -> Result<ReconcileReport, EngineError> {
        reconcile::reconcile(&self.shared, group).await
    }

    /// Runs the engine until `shutdown` fires: leadership, periodic and triggered reconciles.
    /// On shutdown it stops dispatching, lets running reconciles finish, releases the
    /// leadership and flushes the store.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), EngineError> {
        let mut wake_rx = self
            .shared
            .wake_rx
            .lock()
            .ok()
            .and_then(|mut rx| rx.take())
            .ok_or(EngineError::AlreadyRunning)?;
        self.shared.running.store(true, Ordering::SeqCst);
        let leadership_stop = CancellationToken::new();
        let leadership = self.shared.leadership.clone();
        let stop = leadership_stop.clone();
        let leader_task = tokio::spawn(async move { leadership.run(stop).await });
        if let Err(e) = self.shared.refresh_groups().await {
            tracing::warn!(error = %e, "could not load groups at start; retrying on the next tick");
        }
        let options = &self.shared.options;
        tokio::select! {
            _ = tokio::time::sleep(options.initial_delay) => {}
            _ = shutdown.cancelled() => {}
        }
        let mut ticker = tokio::time::interval(options.reconcile_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut queue = queue::Queue::default();
        let mut spacing = queue::Spacing::new(options.trigger_spacing);
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut task_groups: HashMap<tokio::task::Id, String> = HashMap::new();
        while !shutdown.is_cancelled() {
            while tasks.len() < options.concurrency.max(1) {
                let Some(group) = queue.next() else { break };
                spacing.started(&group, Instant::now());
                let shared = self.shared.clone();
                let name = group.clone();
                let handle =
                    tasks.spawn(async move { reconcile::reconcile_guarded(&shared, &name).await });
                task_groups.insert(handle.id(), group);
            }
            let next_due = spacing.next_due();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let id = match &done { Ok((id, ())) => *id, Err(e) => e.id() };
                    if let Err(e) = &done {
                        tracing::error!(error = %e, "a reconcile task failed");
                    }
                    if let Some(group) = task_groups.remove(&id) {
                        queue.finished(&group);
                    }
                }
                _ = ticker.tick() => {
                    match self.shared.refresh_groups().await {
                        Ok(names) if self.shared.leadership.token().is_some() => {
                            spacing.retain(&names);
                            queue.push_all(names);
                            self.shared.first_pass_done.store(true, Ordering::SeqCst);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot list groups; holding all decisions"),
                    }
                }
                Some(group) = wake_rx.recv() => {
                    if self.shared.leadership.token().is_some()
                        && let Some(group) = spacing.admit(group, Instant::now())
                    {
                        queue.push(group);
                    }
                }
                _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {
                    queue.push_all(spacing.take_due(Instant::now()));
                }
            }
        }
        tracing::info!(
            running = tasks.len(),
            "stopping: letting running reconciles finish"
        );
        while tasks.join_next().await.is_some() {}
        leadership_stop.cancel();
        if let Err(e) = leader_task.await {
            tracing::error!(error = %e, "leadership task failed");
        }
        let flushed = self.shared.store.flush().await;
        if let Ok(mut rx) = self.shared.wake_rx.lock() {
            *rx = Some(wake_rx);
        }
        self.shared.running.store(false, Ordering::SeqCst);
        flushed.map_err(EngineError::from)
    }
}

impl Shared {
    pub(crate) fn cache_group(&self, group: &Group) {
        if let Ok(mut groups) = self.groups.write() {
            groups.insert(group.name.clone(), GroupInfo::of(group));
        }
    }

    pub(crate) fn group_info(&self, name: &str) -> Option<GroupInfo> {
        self.groups.read().ok().and_then(|g| g.get(name).cloned())
    }

    async fn refresh_groups(&self) -> Result<Vec<String>, StoreError> {
        let records = self.store.list_groups().await?;
        let fresh: HashMap<String, GroupInfo> = records
            .iter()
            .map(|r| (r.group.name.clone(), GroupInfo::of(&r.group)))
            .collect();
        let names: Vec<String> = fresh.keys().cloned().collect();
        if let Ok(mut groups) = self.groups.write() {
            for gone in groups.keys().filter(|k| !fresh.contains_key(*k)) {
                self.observer.observe(&EngineEvent::GroupRemoved {
                    group: gone.clone(),
                });
            }
            *groups = fresh;
        }
        Ok(names)
    }

    /// Logs a message once per key (bounded memory).
    pub(crate) fn warn_once(&self, key: &str, message: impl FnOnce()) {
        if let Ok(mut warned) = self.warned.lock() {
            if warned.len() > 10_000 {
                warned.clear();
            }
            if warned.insert(key.to_owned()) {
                message();
            }
        }
    }
}
