//! Fleet-level load: one load curve for a whole group, shared by its live instances. A driver
//! writes, every second, the curve's value divided by the number of live instances to the
//! group's load file, which every instance reads at each stats build. Launching more
//! instances therefore lowers each one's load, as a real load balancer would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::sim::LoadProfile;

/// One group's curve.
#[derive(Debug)]
struct Fleet {
    profile: LoadProfile,
    started: Instant,
    time_scale: f64,
    file: PathBuf,
}

/// Counts a group's live instances.
pub(crate) type LiveCount = Arc<dyn Fn(&str) -> usize + Send + Sync>;

/// The fleet curves of the groups that have one, and their driver.
pub(crate) struct Fleets {
    fleets: Arc<Mutex<BTreeMap<String, Fleet>>>,
    driver: Mutex<Option<CancellationToken>>,
    live: LiveCount,
}

impl std::fmt::Debug for Fleets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleets")
            .field("fleets", &self.fleets)
            .finish_non_exhaustive()
    }
}

/// The load file of a group.
pub(crate) fn load_file(dir: &Path, group: &str) -> PathBuf {
    dir.join(format!("{group}.fleet-load"))
}

fn write(fleet: &Fleet, live: usize) {
    let elapsed = fleet.started.elapsed().as_secs_f64() * fleet.time_scale;
    let share = fleet.profile.value_at(elapsed) / live.max(1) as f64;
    let tmp = fleet.file.with_extension("tmp");
    let written = std::fs::write(&tmp, format!("{share:.4}\n"))
        .and_then(|()| std::fs::rename(&tmp, &fleet.file));
    if let Err(e) = written {
        warn!(file = %fleet.file.display(), error = %e, "cannot write the fleet load");
    }
}

impl Fleets {
    pub(crate) fn new(live: LiveCount) -> Self {
        Self {
            fleets: Arc::new(Mutex::new(BTreeMap::new())),
            driver: Mutex::new(None),
            live,
        }
    }

    /// Registers a group's curve (once; the curve keeps its start) and makes sure the driver
    /// runs. Must be called inside a tokio runtime.
    pub(crate) fn ensure(&self, group: &str, profile: LoadProfile, time_scale: f64, file: PathBuf) {
        {
            let mut fleets = self.fleets.lock().unwrap_or_else(PoisonError::into_inner);
            let fleet = fleets.entry(group.to_owned()).or_insert_with(|| Fleet {
                profile: profile.clone(),
                started: Instant::now(),
                time_scale,
                file,
            });
            fleet.profile = profile;
            fleet.time_scale = time_scale;
            write(fleet, (self.live)(group) + 1);
        }
        let mut driver = self.driver.lock().unwrap_or_else(PoisonError::into_inner);
        if driver.is_some() {
            return;
        }
        let stop = CancellationToken::new();
        *driver = Some(stop.clone());
        let fleets = self.fleets.clone();
        let live = self.live.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let fleets = fleets.lock().unwrap_or_else(PoisonError::into_inner);
                for (group, fleet) in fleets.iter() {
                    write(fleet, live(group));
                }
            }
        });
    }

    /// Stops the driver.
    pub(crate) fn stop(&self) {
        if let Some(stop) = self
            .driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            stop.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn the_curve_is_shared_by_the_live_instances() {
        let dir = tempfile::tempdir().expect("dir");
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        let fleets = Fleets::new(Arc::new(move |_| seen.load(Ordering::SeqCst)));
        let file = load_file(dir.path(), "g");
        fleets.ensure("g", LoadProfile::Const(3.0), 1.0, file.clone());
        let read = || {
            std::fs::read_to_string(&file)
                .expect("file")
                .trim()
                .parse::<f64>()
                .expect("number")
        };
        assert_eq!(read(), 3.0, "the first instance takes it all");
        count.store(3, Ordering::SeqCst);
        fleets.ensure("g", LoadProfile::Const(3.0), 1.0, file.clone());
        assert_eq!(read(), 0.75, "a fourth is being launched");
        fleets.stop();
    }
}
