//! Spreading instances over availability and fault domains.
//!
//! Each launch picks, for each instance, the (AD, FD) pair with the fewest of the group's
//! instances, preferring the least loaded AD, ties broken by a rotation (the group's current
//! count, as the reference's placement). A pair that answered "Out of host capacity" is not
//! offered again during the launch, and an instance tries each pair at most once.

use std::collections::HashMap;

/// Availability domains of a region, each with its fault domains.
pub(crate) type Domains = Vec<(String, Vec<String>)>;

/// Where to launch one instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Placement {
    pub ad: String,
    /// `None` when the AD lists no fault domain (the cloud then picks one).
    pub fd: Option<String>,
}

/// The placements of one launch and their loads.
#[derive(Debug)]
pub(crate) struct Planner {
    pairs: Vec<Placement>,
    load: Vec<usize>,
    full: Vec<bool>,
    rotation: usize,
}

impl Planner {
    /// `existing`: the (AD, FD) of the group's live instances.
    pub fn new<'a>(
        domains: &Domains,
        existing: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
        rotation: usize,
    ) -> Self {
        let mut pairs = Vec::new();
        for (ad, fds) in domains {
            if fds.is_empty() {
                pairs.push(Placement {
                    ad: ad.clone(),
                    fd: None,
                });
            }
            for fd in fds {
                pairs.push(Placement {
                    ad: ad.clone(),
                    fd: Some(fd.clone()),
                });
            }
        }
        let index: HashMap<(&str, Option<&str>), usize> = pairs
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.ad.as_str(), p.fd.as_deref()), i))
            .collect();
        let mut load = vec![0; pairs.len()];
        for (ad, fd) in existing {
            let found = index
                .get(&(ad, fd))
                .or_else(|| index.get(&(ad, None)))
                .copied()
                .or_else(|| pairs.iter().position(|p| p.ad == ad));
            if let Some(i) = found {
                load[i] += 1;
            }
        }
        let full = vec![false; pairs.len()];
        Self {
            pairs,
            load,
            full,
            rotation,
        }
    }

    /// Number of (AD, FD) pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn placement(&self, pair: usize) -> &Placement {
        &self.pairs[pair]
    }

    fn ad_load(&self, ad: &str) -> usize {
        self.pairs
            .iter()
            .zip(&self.load)
            .filter(|(p, _)| p.ad == ad)
            .map(|(_, l)| *l)
            .sum()
    }

    /// Takes the best pair not in `tried` and not known to be full, counting the instance in it.
    pub fn take(&mut self, tried: &[usize]) -> Option<usize> {
        let n = self.pairs.len();
        let best = (0..n)
            .filter(|i| !self.full[*i] && !tried.contains(i))
            .min_by_key(|&i| {
                (
                    self.ad_load(&self.pairs[i].ad),
                    self.load[i],
                    (i + n - self.rotation % n) % n,
                )
            })?;
        self.load[best] += 1;
        Some(best)
    }

    /// The instance did not land in `pair`.
    pub fn release(&mut self, pair: usize) {
        self.load[pair] = self.load[pair].saturating_sub(1);
    }

    /// `pair` has no capacity now.
    pub fn mark_full(&mut self, pair: usize) {
        self.full[pair] = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> Domains {
        vec![
            (
                "AD-1".into(),
                vec!["FD-1".into(), "FD-2".into(), "FD-3".into()],
            ),
            (
                "AD-2".into(),
                vec!["FD-1".into(), "FD-2".into(), "FD-3".into()],
            ),
        ]
    }

    fn name(planner: &Planner, pair: usize) -> String {
        let p = planner.placement(pair);
        format!("{}/{}", p.ad, p.fd.as_deref().unwrap_or("-"))
    }

    #[test]
    fn an_empty_group_spreads_over_ads_then_fds() {
        let mut planner = Planner::new(&domains(), [], 0);
        let chosen: Vec<String> = (0..6)
            .map(|_| {
                let pair = planner.take(&[]).expect("pair");
                name(&planner, pair)
            })
            .collect();
        assert_eq!(
            chosen,
            [
                "AD-1/FD-1",
                "AD-2/FD-1",
                "AD-1/FD-2",
                "AD-2/FD-2",
                "AD-1/FD-3",
                "AD-2/FD-3"
            ]
        );
    }

    #[test]
    fn existing_instances_steer_new_ones_to_the_emptier_places() {
        let existing = [
            ("AD-1", Some("FD-1")),
            ("AD-1", Some("FD-2")),
            ("AD-2", Some("FD-1")),
        ];
        let mut planner = Planner::new(&domains(), existing, 0);
        let first = planner.take(&[]).expect("pair");
        assert_eq!(name(&planner, first), "AD-2/FD-2");
        let second = planner.take(&[]).expect("pair");
        assert_eq!(name(&planner, second), "AD-1/FD-3");
    }

    #[test]
    fn the_rotation_breaks_ties() {
        let mut planner = Planner::new(&domains(), [], 4);
        let pair = planner.take(&[]).expect("pair");
        assert_eq!(name(&planner, pair), "AD-2/FD-2");
    }

    #[test]
    fn full_and_tried_pairs_are_skipped_until_none_is_left() {
        let mut planner = Planner::new(&domains(), [], 0);
        let mut tried = Vec::new();
        while let Some(pair) = planner.take(&tried) {
            planner.release(pair);
            planner.mark_full(pair);
            tried.push(pair);
        }
        assert_eq!(tried.len(), 6, "every pair once");
        let mut unique = tried.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 6);
    }

    #[test]
    fn ads_without_fault_domains_get_one_pair() {
        let domains = vec![("AD-1".to_owned(), Vec::new())];
        let mut planner = Planner::new(&domains, [("AD-1", Some("FD-9"))], 0);
        assert_eq!(planner.len(), 1);
        let pair = planner.take(&[]).expect("pair");
        assert_eq!(planner.placement(pair).fd, None);
    }
}
