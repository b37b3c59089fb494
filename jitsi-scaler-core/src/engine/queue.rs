//! The reconcile queue: one reconcile per group at a time; a group asked for while it runs is
//! run once more after it finishes (kube-runtime's per-key exclusivity).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct Queue {
    waiting: VecDeque<String>,
    queued: HashSet<String>,
    running: HashSet<String>,
    again: HashSet<String>,
}

impl Queue {
    /// Asks for a reconcile of `group`.
    pub(crate) fn push(&mut self, group: String) {
        if self.running.contains(&group) {
            self.again.insert(group);
        } else if self.queued.insert(group.clone()) {
            self.waiting.push_back(group);
        }
    }

    /// Asks for a reconcile of every group.
    pub(crate) fn push_all(&mut self, groups: impl IntoIterator<Item = String>) {
        for g in groups {
            self.push(g);
        }
    }

    /// The next group to reconcile, marked running.
    pub(crate) fn next(&mut self) -> Option<String> {
        let group = self.waiting.pop_front()?;
        self.queued.remove(&group);
        self.running.insert(group.clone());
        Some(group)
    }

    /// A reconcile of `group` ended.
    pub(crate) fn finished(&mut self, group: &str) {
        self.running.remove(group);
        if self.again.remove(group) {
            self.push(group.to_owned());
        }
    }
}

/// Spaces the triggered reconciles of a group: a trigger sooner than `spacing` after the start
/// of the group's last reconcile waits until then, coalesced with the group's other triggers;
/// any reconcile that starts meanwhile answers it.
#[derive(Debug)]
pub(crate) struct Spacing {
    spacing: Duration,
    last_started: HashMap<String, Instant>,
    deferred: HashMap<String, Instant>,
}

impl Spacing {
    pub(crate) fn new(spacing: Duration) -> Self {
        Self {
            spacing,
            last_started: HashMap::new(),
            deferred: HashMap::new(),
        }
    }

    /// A reconcile of `group` started at `now`.
    pub(crate) fn started(&mut self, group: &str, now: Instant) {
        self.deferred.remove(group);
        match self.last_started.get_mut(group) {
            Some(at) => *at = now,
            None => {
                self.last_started.insert(group.to_owned(), now);
            }
        }
    }

    /// A trigger of `group` at `now`: the group if it may be queued now; else it is deferred.
    pub(crate) fn admit(&mut self, group: String, now: Instant) -> Option<String> {
        if self.deferred.contains_key(&group) {
            return None;
        }
        match self.last_started.get(&group).map(|at| *at + self.spacing) {
            Some(due) if due > now => {
                self.deferred.insert(group, due);
                None
            }
            _ => Some(group),
        }
    }

    /// When the earliest deferred trigger is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.deferred.values().min().copied()
    }

    /// Takes the deferred triggers due at `now`.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<String> {
        let due: Vec<String> = self
            .deferred
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(group, _)| group.clone())
            .collect();
        for group in &due {
            self.deferred.remove(group);
        }
        due
    }

    /// Forgets the groups not in `groups` (deleted).
    pub(crate) fn retain(&mut self, groups: &[String]) {
        let keep: HashSet<&str> = groups.iter().map(String::as_str).collect();
        self.last_started.retain(|g, _| keep.contains(g.as_str()));
        self.deferred.retain(|g, _| keep.contains(g.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_never_runs_twice_at_once_and_reruns_once_if_asked_meanwhile() {
        let mut q = Queue::default();
        q.push("a".into());
        q.push("b".into());
        q.push("a".into());
        assert_eq!(q.next().as_deref(), Some("a"));
        q.push("a".into());
        q.push("a".into());
        assert_eq!(q.next().as_deref(), Some("b"));
        assert_eq!(q.next(), None, "a is running: not handed out again");
        q.finished("a");
        assert_eq!(
            q.next().as_deref(),
            Some("a"),
            "asked for meanwhile: once more"
        );
        q.finished("a");
        q.finished("b");
        assert_eq!(q.next(), None);
    }

    #[test]
    fn triggers_within_the_spacing_wait_for_it_and_coalesce() {
        let t0 = Instant::now();
        let secs = |s: u64| t0 + Duration::from_secs(s);
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut s = Spacing::new(Duration::from_secs(1));
        assert_eq!(s.admit("a".into(), t0).as_deref(), Some("a"), "never ran");
        s.started("a", t0);
        assert_eq!(s.admit("a".into(), ms(100)), None);
        assert_eq!(s.admit("a".into(), ms(900)), None);
        assert_eq!(s.admit("b".into(), ms(900)).as_deref(), Some("b"));
        assert_eq!(s.next_due(), Some(secs(1)), "one entry for both triggers");
        assert!(s.take_due(ms(999)).is_empty());
        assert_eq!(s.take_due(secs(1)), vec!["a".to_owned()]);
        assert_eq!(s.next_due(), None);
        s.started("a", secs(1));
        assert_eq!(s.admit("a".into(), secs(2)).as_deref(), Some("a"), "spaced");

        // A reconcile that starts meanwhile (a periodic one) answers a deferred trigger.
        s.started("a", secs(2));
        assert_eq!(s.admit("a".into(), ms(2500)), None);
        s.started("a", ms(2600));
        assert_eq!(s.next_due(), None);

        // Deleted groups are forgotten.
        assert_eq!(s.admit("a".into(), ms(2700)), None);
        s.retain(&["b".to_owned()]);
        assert_eq!(s.next_due(), None);
        assert_eq!(s.admit("a".into(), ms(2800)).as_deref(), Some("a"));

        // No spacing: every trigger passes.
        let mut none = Spacing::new(Duration::ZERO);
        none.started("a", t0);
        assert_eq!(none.admit("a".into(), t0).as_deref(), Some("a"));
    }
}
