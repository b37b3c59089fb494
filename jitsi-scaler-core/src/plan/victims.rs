//! Scale-down victim selection (scaling-algorithms.md §6): protected instances are never
//! chosen; instances that do no work go first; busy Jibris last.

use crate::clock::UnixMillis;
use crate::instance::{BusyStatus, HealthStatus, InstanceRecord, TypeClass};

use super::inventory::Timings;

/// The chosen victims.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Victims<'a> {
    /// Instances to flag, in choice order.
    pub chosen: Vec<&'a InstanceRecord>,
    /// Victims wanted but not available because the rest is protected.
    pub shortfall: u32,
}

/// The rank of an instance as a victim: lower goes first.
fn rank(class: TypeClass, r: &InstanceRecord, now: UnixMillis, t: &Timings) -> u8 {
    if r.is_provisioning() || t.has_no_status(r, now) {
        return 0;
    }
    match class {
        TypeClass::Stress => 1,
        TypeClass::Availability => match r.state.status.jibri_status {
            Some(j) if j.busy_status == BusyStatus::Busy => 5,
            Some(j) if j.health.health_status == HealthStatus::Unhealthy => 1,
            Some(j) if j.busy_status == BusyStatus::Idle => 2,
            Some(j) if j.busy_status == BusyStatus::Expired => 3,
            _ => 4,
        },
    }
}

/// Chooses up to `wanted` victims among `active` (live, not shutting down). Availability types:
/// provisioning or no status, then unhealthy non-busy (R13), IDLE, EXPIRED, unknown, BUSY.
/// Stress types: provisioning or no status, then by ascending load (participants, allocated
/// CPU, connections, stress). Ties keep inventory order.
pub fn select_victims<'a>(
    class: TypeClass,
    active: &[&'a InstanceRecord],
    wanted: u32,
    now: UnixMillis,
    timings: &Timings,
) -> Victims<'a> {
    let mut candidates: Vec<(u8, f64, &'a InstanceRecord)> = active
        .iter()
        .filter(|r| !r.flags.is_protected(now))
        .map(|r| {
            let rank = rank(class, r, now, timings);
            let load = match (class, rank) {
                (TypeClass::Stress, 1) => r.state.status.stats.map_or(0.0, |s| s.load()),
                _ => 0.0,
            };
            (rank, load, *r)
        })
        .collect();
    candidates.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let k = (wanted as usize).min(candidates.len());
    Victims {
        chosen: candidates.into_iter().take(k).map(|c| c.2).collect(),
        shortfall: wanted - k as u32,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::instance::{InstanceFlags, InstanceState, JibriStatus, Metadata, StressStats};

    const NOW: UnixMillis = 10_000_000;

    fn jvb(id: &str, participants: f64, stress: f64) -> InstanceRecord {
        let mut state = InstanceState::polled(id, "JVB", Metadata::default(), NOW);
        state.reported_at = Some(NOW);
        state.status.stats = Some(StressStats {
            participants: Some(participants),
            stress_level: Some(stress),
            ..StressStats::default()
        });
        InstanceRecord {
            state: state.into(),
            flags: InstanceFlags::default(),
        }
    }

    fn ids(v: &Victims<'_>) -> Vec<String> {
        v.chosen
            .iter()
            .map(|r| r.state.instance_id.clone())
            .collect()
    }

    fn protect(r: &mut InstanceRecord) {
        r.flags.protected_until_ms = Some(NOW + 1);
    }

    fn pick(records: &[InstanceRecord], wanted: u32) -> Vec<String> {
        let refs: Vec<&InstanceRecord> = records.iter().collect();
        ids(&select_victims(
            TypeClass::Stress,
            &refs,
            wanted,
            NOW,
            &Timings::default(),
        ))
    }

    #[test]
    fn v1_to_v6_stress_victims() {
        assert!(pick(&[], 0).is_empty(), "V1");
        assert_eq!(pick(&[jvb("007", 1.0, 0.1)], 1), vec!["007"], "V2");
        let mut p = jvb("007", 1.0, 0.1);
        protect(&mut p);
        let refs = [&p];
        let v = select_victims(TypeClass::Stress, &refs, 1, NOW, &Timings::default());
        assert!(v.chosen.is_empty(), "V3");
        assert_eq!(v.shortfall, 1);
        assert_eq!(
            pick(&[jvb("007", 1.0, 0.1), jvb("008", 0.0, 0.1)], 1),
            vec!["008"],
            "V4"
        );
        let v5 = [
            jvb("007", 1.0, 0.1),
            jvb("008", 0.0, 0.1),
            jvb("001", 100.0, 0.9),
        ];
        assert_eq!(pick(&v5, 2), vec!["008", "007"], "V5");
        let mut v6 = v5.clone();
        protect(&mut v6[1]);
        assert_eq!(pick(&v6, 2), vec!["007", "001"], "V6");
    }

    #[test]
    fn instances_without_status_go_first() {
        let mut placeholder = jvb("p", 0.0, 0.0);
        Arc::make_mut(&mut placeholder.state).status.provisioning = true;
        let polled = InstanceRecord {
            state: InstanceState::polled("q", "JVB", Metadata::default(), NOW).into(),
            flags: InstanceFlags::default(),
        };
        let records = [
            jvb("busy", 5.0, 0.5),
            jvb("empty", 0.0, 0.0),
            polled,
            placeholder,
        ];
        assert_eq!(pick(&records, 3), vec!["q", "p", "empty"]);
    }

    fn jibri(id: &str, busy: BusyStatus, health: HealthStatus) -> InstanceRecord {
        let mut state = InstanceState::polled(id, "jibri", Metadata::default(), NOW);
        state.reported_at = Some(NOW);
        let mut status = JibriStatus::healthy(busy);
        status.health.health_status = health;
        state.status.jibri_status = Some(status);
        InstanceRecord {
            state: state.into(),
            flags: InstanceFlags::default(),
        }
    }

    #[test]
    fn busy_jibris_are_chosen_last_and_unhealthy_first() {
        use BusyStatus::*;
        use HealthStatus::*;
        let records = [
            jibri("busy", Busy, Healthy),
            jibri("expired", Expired, Healthy),
            jibri("idle", Idle, Healthy),
            jibri("sick", Idle, Unhealthy),
            jibri("sick-busy", Busy, Unhealthy),
        ];
        let refs: Vec<&InstanceRecord> = records.iter().collect();
        let v = select_victims(TypeClass::Availability, &refs, 5, NOW, &Timings::default());
        assert_eq!(
            ids(&v),
            vec!["sick", "idle", "expired", "busy", "sick-busy"]
        );
        let v = select_victims(TypeClass::Availability, &refs, 2, NOW, &Timings::default());
        assert_eq!(ids(&v), vec!["sick", "idle"]);
    }
}
