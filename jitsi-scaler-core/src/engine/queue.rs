//! The reconcile queue: one reconcile per group at a time; a group asked for while it runs is
//! run once more after it finishes (kube-runtime's per-key exclusivity).

use std::collections::{HashSet, VecDeque};

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
}
