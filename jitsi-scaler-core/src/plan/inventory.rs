//! Which instances count: state freshness, shutting-down, tracked and untracked instances
//! (scaling-algorithms.md §1).

use crate::clock::UnixMillis;
use crate::instance::{CloudInstance, InstanceRecord};

/// State lifetimes and metric retention (the reference's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// Lifetime of a state after its last report (`IDLE_TTL_SEC`, 300 s).
    pub idle_ttl_ms: i64,
    /// Lifetime of a launch placeholder (`PROVISIONING_TTL_SEC`, 900 s).
    pub provisioning_ttl_ms: i64,
    /// Lifetime of a shutting-down instance's state (`SHUTDOWN_STATUS_TTL_SEC`, 600 s).
    pub shutdown_ttl_ms: i64,
    /// Metric sample retention (`METRIC_TTL_SEC`, 3600 s).
    pub metric_ttl_ms: i64,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            idle_ttl_ms: 300_000,
            provisioning_ttl_ms: 900_000,
            shutdown_ttl_ms: 600_000,
            metric_ttl_ms: 3_600_000,
        }
    }
}

impl Timings {
    /// The lifetime that applies to a record now.
    pub fn ttl_of(&self, record: &InstanceRecord) -> i64 {
        if record.is_shutting_down() {
            self.shutdown_ttl_ms
        } else if record.is_provisioning() {
            self.provisioning_ttl_ms
        } else {
            self.idle_ttl_ms
        }
    }

    /// The record's state has expired at `now`.
    pub fn is_expired(&self, record: &InstanceRecord, now: UnixMillis) -> bool {
        record.state.timestamp + self.ttl_of(record) < now
    }

    /// The longest any state can live: stores keep a state at least this long after its last
    /// write.
    pub fn max_state_ttl_ms(&self) -> i64 {
        self.idle_ttl_ms
            .max(self.provisioning_ttl_ms)
            .max(self.shutdown_ttl_ms)
    }

    /// The record has no usable stats: none reported, or its last report is older than the
    /// idle lifetime while polls keep it alive (R5).
    pub fn has_no_status(&self, record: &InstanceRecord, now: UnixMillis) -> bool {
        record.state.status.has_no_stats()
            || record
                .state
                .reported_at
                .is_none_or(|at| at + self.idle_ttl_ms < now)
    }
}

/// A group's instances sorted by what counts.
#[derive(Clone, Debug, Default)]
pub struct Inventory<'a> {
    /// Live and not shutting down: the group's count (placeholders included).
    pub active: Vec<&'a InstanceRecord>,
    /// Live and shutting down.
    pub shutting_down: Vec<&'a InstanceRecord>,
    /// Expired: to be removed from the store.
    pub expired: Vec<&'a InstanceRecord>,
}

impl<'a> Inventory<'a> {
    /// Sorts records by freshness and shutdown.
    pub fn build(records: &'a [InstanceRecord], now: UnixMillis, timings: &Timings) -> Self {
        let mut inv = Inventory {
            active: Vec::with_capacity(records.len()),
            ..Inventory::default()
        };
        for r in records {
            if timings.is_expired(r, now) {
                inv.expired.push(r);
            } else if r.is_shutting_down() {
                inv.shutting_down.push(r);
            } else {
                inv.active.push(r);
            }
        }
        inv
    }

    /// Tracked instances not shutting down.
    pub fn count(&self) -> u32 {
        self.active.len() as u32
    }

    /// Live instances including those shutting down (the report's `count`).
    pub fn live(&self) -> impl Iterator<Item = &'a InstanceRecord> + '_ {
        self.active.iter().chain(self.shutting_down.iter()).copied()
    }

    /// Cloud instances that are running or provisioning but have no live state (shutting-down
    /// states count as tracked).
    pub fn untracked<'c>(&self, cloud: &'c [CloudInstance]) -> Vec<&'c CloudInstance> {
        self.untracked_in(cloud).collect()
    }

    /// How many cloud instances [`Inventory::untracked`] would list.
    pub fn untracked_count(&self, cloud: &[CloudInstance]) -> u32 {
        self.untracked_in(cloud).count() as u32
    }

    /// The untracked cloud instances, in the cloud's order (the live ids are made ready for
    /// lookups only when there is something to look up).
    fn untracked_in<'c>(
        &self,
        cloud: &'c [CloudInstance],
    ) -> impl Iterator<Item = &'c CloudInstance> {
        let mut tracked = if cloud.is_empty() {
            TrackedIds::none(self)
        } else {
            TrackedIds::of(self)
        };
        cloud
            .iter()
            .filter(move |c| c.is_running() && !tracked.contains(&c.instance_id))
    }

    /// The live instance at `i` of [`Inventory::live`]'s order.
    fn live_id(&self, i: usize) -> &'a str {
        let record = match i.checked_sub(self.active.len()) {
            None => self.active[i],
            Some(j) => self.shutting_down[j],
        };
        &record.state.instance_id
    }
}

/// Groups with at most this many live instances look ids up by a scan that starts after the
/// last match: a cloud usually lists a group's instances in launch order, the order the store
/// keeps them in, so each lookup is one compare. Larger groups sort hashes of their ids.
const SCAN_MAX: usize = 32;

/// The live instance ids of an inventory, ready to be looked up.
enum TrackedIds<'i, 'a> {
    /// Scanned in order from `next` on, wrapping around.
    Scan {
        inventory: &'i Inventory<'a>,
        len: usize,
        next: usize,
    },
    /// Id hashes, sorted, each with its id.
    Hashed(Vec<(u64, &'a str)>),
}

impl<'i, 'a> TrackedIds<'i, 'a> {
    /// Ids that are never looked up (an empty cloud list).
    fn none(inventory: &'i Inventory<'a>) -> Self {
        Self::Scan {
            inventory,
            len: 0,
            next: 0,
        }
    }

    fn of(inventory: &'i Inventory<'a>) -> Self {
        let len = inventory.active.len() + inventory.shutting_down.len();
        if len <= SCAN_MAX {
            return Self::Scan {
                inventory,
                len,
                next: 0,
            };
        }
        // Each candidate is confirmed by the id itself: ids share long prefixes, so comparing
        // strings directly costs a long compare each.
        let mut hashed: Vec<(u64, &str)> = inventory
            .live()
            .map(|r| (id_hash(&r.state.instance_id), r.state.instance_id.as_str()))
            .collect();
        hashed.sort_unstable_by_key(|(h, _)| *h);
        Self::Hashed(hashed)
    }

    fn contains(&mut self, id: &str) -> bool {
        match self {
            Self::Scan {
                inventory,
                len,
                next,
            } => {
                let mut i = *next;
                for _ in 0..*len {
                    if i >= *len {
                        i = 0;
                    }
                    if same_id(inventory.live_id(i), id) {
                        *next = i + 1;
                        return true;
                    }
                    i += 1;
                }
                false
            }
            Self::Hashed(hashed) => {
                let h = id_hash(id);
                let from = hashed.partition_point(|(t, _)| *t < h);
                hashed[from..]
                    .iter()
                    .take_while(|(t, _)| *t == h)
                    .any(|(_, t)| *t == id)
            }
        }
    }
}

/// Two ids are the same: lengths and last eight bytes first (ids of one cloud differ at the
/// end), then the whole ids.
fn same_id(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    if let (Some(x), Some(y)) = (a.last_chunk::<8>(), b.last_chunk::<8>())
        && x != y
    {
        return false;
    }
    a == b
}

/// A fast, non-cryptographic hash of an instance id. Ids of one cloud share long prefixes and
/// differ at the end, so an id of 16 bytes or more is hashed by its length and last 16 bytes;
/// a shorter one eight bytes at a time (FxHash's mix). Only orders candidates: every match is
/// confirmed by comparing the ids.
fn id_hash(id: &str) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mix = |h: u64, bytes: &[u8]| {
        let mut word = [0u8; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K)
    };
    let bytes = id.as_bytes();
    let h = bytes.len() as u64;
    if let Some(from) = bytes.len().checked_sub(16) {
        let (a, b) = bytes[from..].split_at(8);
        return mix(mix(h, a), b);
    }
    bytes.chunks(8).fold(h, mix)
}

/// Cloud instances running or provisioning (the cloud guard's count).
pub fn cloud_running(cloud: &[CloudInstance]) -> u32 {
    cloud.iter().filter(|c| c.is_running()).count() as u32
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::instance::{InstanceFlags, InstanceState, Metadata};

    const NOW: UnixMillis = 10_000_000;

    pub(crate) fn reported(id: &str, age_s: i64) -> InstanceRecord {
        let mut state = InstanceState::polled(id, "JVB", Metadata::default(), NOW - age_s * 1000);
        state.reported_at = Some(state.timestamp);
        state.status.stats = Some(Default::default());
        InstanceRecord {
            state: state.into(),
            flags: InstanceFlags::default(),
        }
    }

    fn cloud(id: &str, status: &str) -> CloudInstance {
        CloudInstance {
            instance_id: id.into(),
            display_name: id.into(),
            cloud_status: status.into(),
            created_at_ms: None,
        }
    }

    #[test]
    fn ttls_depend_on_the_state() {
        let t = Timings::default();
        let fresh = reported("a", 299);
        let stale = reported("b", 301);
        let mut placeholder = reported("c", 800);
        Arc::make_mut(&mut placeholder.state).status.provisioning = true;
        let mut draining = reported("d", 599);
        draining.flags.shutdown_requested_ms = Some(NOW);
        let mut gone = reported("e", 601);
        Arc::make_mut(&mut gone.state).shutdown_status = true;
        let records = vec![fresh, stale, placeholder, draining, gone];
        let inv = Inventory::build(&records, NOW, &t);
        let ids = |v: &[&InstanceRecord]| {
            v.iter()
                .map(|r| r.state.instance_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&inv.active), vec!["a", "c"]);
        assert_eq!(ids(&inv.shutting_down), vec!["d"]);
        assert_eq!(ids(&inv.expired), vec!["b", "e"]);
        assert_eq!(inv.count(), 2);
        assert_eq!(inv.live().count(), 3);
    }

    #[test]
    fn untracked_are_running_cloud_instances_without_live_state() {
        let mut draining = reported("d", 10);
        Arc::make_mut(&mut draining.state).is_shutting_down = true;
        let records = vec![reported("a", 10), draining, reported("old", 1000)];
        let inv = Inventory::build(&records, NOW, &Timings::default());
        let list = vec![
            cloud("a", "RUNNING"),
            cloud("d", "Running"),
            cloud("old", "RUNNING"),
            cloud("new", "provisioning"),
            cloud("stopped", "STOPPED"),
            cloud("t", "TERMINATED"),
        ];
        let untracked: Vec<&str> = inv
            .untracked(&list)
            .iter()
            .map(|c| c.instance_id.as_str())
            .collect();
        assert_eq!(untracked, vec!["old", "new"]);
        assert_eq!(cloud_running(&list), 4);
    }

    #[test]
    fn untracked_compares_whole_ids_of_every_length() {
        // Ids of 0 to 40 bytes sharing prefixes; every other one tracked.
        let ids: Vec<String> = (0..=40).map(|n| "x".repeat(n)).collect();
        let records: Vec<InstanceRecord> =
            ids.iter().step_by(2).map(|id| reported(id, 1)).collect();
        let inv = Inventory::build(&records, NOW, &Timings::default());
        let list: Vec<CloudInstance> = ids.iter().map(|id| cloud(id, "RUNNING")).collect();
        let untracked: Vec<usize> = inv
            .untracked(&list)
            .iter()
            .map(|c| c.instance_id.len())
            .collect();
        assert_eq!(untracked, (1..=39).step_by(2).collect::<Vec<_>>());
        assert_ne!(id_hash("ocid1.a-0001"), id_hash("ocid1.a-0002"));
    }

    #[test]
    fn ids_that_differ_only_before_their_last_16_bytes_are_told_apart() {
        let tail = "instance.oc1.phx.0001";
        let (a, b) = (format!("a.{tail}"), format!("b.{tail}"));
        assert_eq!(id_hash(&a), id_hash(&b), "the hash sees only the tail");
        let records = vec![reported(&a, 1)];
        let inv = Inventory::build(&records, NOW, &Timings::default());
        let list = vec![cloud(&a, "RUNNING"), cloud(&b, "RUNNING")];
        let untracked: Vec<&str> = inv
            .untracked(&list)
            .iter()
            .map(|c| c.instance_id.as_str())
            .collect();
        assert_eq!(untracked, vec![b.as_str()]);
    }

    #[test]
    fn the_scan_and_the_hashes_find_the_same_untracked_instances() {
        // Live groups of 0 to 70 (both lookups), cloud lists in launch order, reversed or
        // shuffled, with foreign ids sharing tails or prefixes and instances not running.
        let mut next = crate::test_rng::below(0x2545_f491_4f6c_dd1d);
        for round in 0..300 {
            let live = next(71) as usize;
            let records: Vec<InstanceRecord> = (0..live)
                .map(|i| {
                    let mut r = reported(&format!("ocid1.instance.oc1.phx.{i:04}"), 1);
                    if next(4) == 0 {
                        Arc::make_mut(&mut r.state).is_shutting_down = true;
                    }
                    r
                })
                .collect();
            let inv = Inventory::build(&records, NOW, &Timings::default());
            let mut list: Vec<CloudInstance> = records
                .iter()
                .filter(|_| next(5) > 0)
                .map(|r| cloud(&r.state.instance_id, "RUNNING"))
                .collect();
            for k in 0..next(6) {
                let id = match k % 3 {
                    0 => format!("ocid1.instance.oc1.iad.{:04}", next(80)),
                    1 => format!("ocid1.instance.oc1.phx.{:04}", 100 + next(80)),
                    _ => format!("x{}", next(80)),
                };
                let status = ["RUNNING", "provisioning", "STOPPED"][next(3) as usize];
                list.insert(next(list.len() as u64 + 1) as usize, cloud(&id, status));
            }
            match round % 3 {
                0 => {}
                1 => list.reverse(),
                _ => {
                    for i in (1..list.len()).rev() {
                        list.swap(i, next(i as u64 + 1) as usize);
                    }
                }
            }
            let expected: Vec<&str> = list
                .iter()
                .filter(|c| {
                    c.is_running() && !inv.live().any(|r| r.state.instance_id == c.instance_id)
                })
                .map(|c| c.instance_id.as_str())
                .collect();
            let found: Vec<&str> = inv
                .untracked(&list)
                .iter()
                .map(|c| c.instance_id.as_str())
                .collect();
            assert_eq!(found, expected, "round {round}: {live} live");
            assert_eq!(inv.untracked_count(&list) as usize, expected.len());
        }
    }

    #[test]
    fn poll_only_or_stale_reports_have_no_status() {
        let t = Timings::default();
        let polled = InstanceRecord {
            state: InstanceState::polled("p", "JVB", Metadata::default(), NOW).into(),
            flags: InstanceFlags::default(),
        };
        assert!(t.has_no_status(&polled, NOW));
        let mut r = reported("r", 10);
        assert!(!t.has_no_status(&r, NOW));
        Arc::make_mut(&mut r.state).reported_at = Some(NOW - 301_000);
        Arc::make_mut(&mut r.state).timestamp = NOW;
        assert!(
            t.has_no_status(&r, NOW),
            "polls keep it alive, its stats are stale"
        );
    }
}
