//! The simulated component behind the sidecar: what its local stats endpoint would answer
//! (sidecar-protocol.md §7), given the load, and how it drains on a graceful shutdown.
//!
//! Times are in simulated seconds. Everything random is a deterministic function of the seed.

use jitsi_scaler_core::instance::InstanceType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// JVB participants at stress 1.0.
const JVB_PARTICIPANTS_AT_FULL_STRESS: f64 = 100.0;
/// Participants per JVB conference.
const PARTICIPANTS_PER_CONFERENCE: f64 = 4.0;
/// Jigasi's default `CONFERENCES_THRESHOLD`: stress = conferences / threshold.
const JIGASI_CONFERENCES_THRESHOLD: f64 = 100.0;
/// CPU of a simulated Nomad node (MHz).
const NOMAD_TOTAL_CPU: f64 = 4000.0;
/// Memory of a simulated Nomad node (MB).
const NOMAD_TOTAL_MEMORY: f64 = 8192.0;
/// Version the simulated components report.
pub const SIM_VERSION: &str = concat!("sim-", env!("CARGO_PKG_VERSION"));

/// Which stats payload the component produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/colibri/stats` (§7.2).
    Jvb,
    /// Jigasi `/about/stats` (§7.3).
    Jigasi,
    /// Jibri health (§7.1); also `sip-jibri` and `availability`.
    Jibri,
    /// Nomad gauges (§7.5).
    Nomad,
    /// The generic stress object (§7.4): `whisper`, `stress`, `selenium-grid` and unknown types.
    Generic,
}

impl Kind {
    /// The payload kind of an instance type name (case-insensitive; unknown ⇒ generic).
    pub fn of(type_name: &str) -> Kind {
        match InstanceType::parse(type_name) {
            Some(InstanceType::Jvb) => Kind::Jvb,
            Some(InstanceType::Jigasi) => Kind::Jigasi,
            Some(InstanceType::Jibri | InstanceType::SipJibri | InstanceType::Availability) => {
                Kind::Jibri
            }
            Some(InstanceType::Nomad) => Kind::Nomad,
            Some(InstanceType::Whisper | InstanceType::Stress | InstanceType::SeleniumGrid)
            | None => Kind::Generic,
        }
    }
}

/// How a component behaves.
#[derive(Clone, Debug)]
pub struct ComponentConfig {
    /// The payload kind.
    pub kind: Kind,
    /// Noise amplitude: the stress is the load ± at most this much.
    pub noise: f64,
    /// Seed of the noise and of the Jibri busy schedule.
    pub seed: u64,
    /// Length of one Jibri recording slot (simulated seconds).
    pub jibri_session: f64,
    /// Jibri in single-use mode: EXPIRED after its first recording.
    pub single_use: bool,
}

/// A drain in progress.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Drain {
    start: f64,
    end: f64,
    /// Stress when the drain started.
    from: f64,
}

impl Drain {
    /// Share of the load still present at `t` (1 at the start, 0 at the end).
    fn remaining(&self, t: f64) -> f64 {
        if self.end <= self.start {
            return 0.0;
        }
        (1.0 - (t - self.start) / (self.end - self.start)).clamp(0.0, 1.0)
    }
}

/// The simulated component.
#[derive(Debug)]
pub struct Component {
    config: ComponentConfig,
    noise: Noise,
    drain: Option<Drain>,
    /// Jibri: the current recording slot and whether it is busy.
    slot: Option<(u64, bool)>,
    /// Jibri single-use: the one recording is over.
    expired: bool,
}

impl Component {
    /// A component that has not started draining.
    pub fn new(config: ComponentConfig) -> Self {
        Self {
            noise: Noise::new(config.seed, config.noise),
            config,
            drain: None,
            slot: None,
            expired: false,
        }
    }

    /// Its payload kind.
    pub fn kind(&self) -> Kind {
        self.config.kind
    }

    /// The stats payload at simulated time `t` under `load`.
    pub fn sample(&mut self, t: f64, load: f64) -> Value {
        match self.config.kind {
            Kind::Jibri => jibri_health(self.busy_status(t, load)),
            Kind::Jvb => self.jvb(t, load),
            Kind::Jigasi => self.jigasi(t, load),
            Kind::Nomad => self.nomad(t, load),
            Kind::Generic => self.generic(t, load),
        }
    }

    /// Starts a graceful shutdown at `t`; returns the simulated time at which the component
    /// is drained: stress types shed their load linearly over `drain`, a busy Jibri finishes
    /// its recording (at most `drain` from now), an idle one is drained at once.
    pub fn begin_drain(&mut self, t: f64, load: f64, drain: f64) -> f64 {
        if let Some(d) = self.drain {
            return d.end;
        }
        let (from, end) = match self.config.kind {
            Kind::Jibri => {
                let busy = self.busy_status(t, load) == "BUSY";
                let slot_end = (self.slot_of(t) + 1) as f64 * self.config.jibri_session;
                (0.0, if busy { slot_end.min(t + drain) } else { t })
            }
            _ => (self.stress(t, load), t + drain),
        };
        self.drain = Some(Drain {
            start: t,
            end,
            from,
        });
        end
    }

    /// Draining.
    pub fn is_draining(&self) -> bool {
        self.drain.is_some()
    }

    fn stress(&mut self, t: f64, load: f64) -> f64 {
        match self.drain {
            Some(d) => d.from * d.remaining(t),
            None => (load + self.noise.next()).max(0.0),
        }
    }

    fn jvb(&mut self, t: f64, load: f64) -> Value {
        let stress = self.stress(t, load);
        let participants = (stress * JVB_PARTICIPANTS_AT_FULL_STRESS).round();
        let conferences = (participants / PARTICIPANTS_PER_CONFERENCE).ceil();
        json!({
            "stress_level": round4(stress),
            "participants": participants,
            "endpoints": participants,
            "local_endpoints": participants,
            "conferences": conferences,
            "largest_conference": participants.min(PARTICIPANTS_PER_CONFERENCE),
            "graceful_shutdown": self.is_draining(),
            "shutting_down": false,
            "drain": false,
            "healthy": true,
            "version": SIM_VERSION,
            "current_timestamp": current_timestamp(),
        })
    }

    fn jigasi(&mut self, t: f64, load: f64) -> Value {
        let conferences = (self.stress(t, load) * JIGASI_CONFERENCES_THRESHOLD).round();
        json!({
            "stress_level": round4(conferences / JIGASI_CONFERENCES_THRESHOLD),
            "conferences": conferences,
            "participants": conferences * 2.0,
            "graceful_shutdown": self.is_draining(),
            "current_timestamp": current_timestamp(),
        })
    }

    fn generic(&mut self, t: f64, load: f64) -> Value {
        let stress = self.stress(t, load);
        json!({
            "stress_level": round4(stress),
            "graceful_shutdown": self.is_draining(),
            "participants": (stress * JVB_PARTICIPANTS_AT_FULL_STRESS).round(),
            "connections": (stress * JVB_PARTICIPANTS_AT_FULL_STRESS).round(),
        })
    }

    fn nomad(&mut self, t: f64, load: f64) -> Value {
        let cpu = (self.stress(t, load).min(1.0) * NOMAD_TOTAL_CPU).round();
        let memory = (cpu / NOMAD_TOTAL_CPU * NOMAD_TOTAL_MEMORY).round();
        let eligibility = if self.is_draining() {
            "ineligible"
        } else {
            "eligible"
        };
        json!({"Gauges": [
            {"Name": "nomad.client.allocated.cpu", "Value": cpu,
             "Labels": {"node_scheduling_eligibility": eligibility}},
            {"Name": "nomad.client.unallocated.cpu", "Value": NOMAD_TOTAL_CPU - cpu,
             "Labels": {"node_scheduling_eligibility": eligibility}},
            {"Name": "nomad.client.allocated.memory", "Value": memory, "Labels": {}},
            {"Name": "nomad.client.unallocated.memory", "Value": NOMAD_TOTAL_MEMORY - memory,
             "Labels": {}},
        ]})
    }

    fn slot_of(&self, t: f64) -> u64 {
        (t.max(0.0) / self.config.jibri_session).floor() as u64
    }

    /// IDLE, BUSY or EXPIRED. Time is cut into recording slots; a slot is busy with
    /// probability `load`, decided by the seed when the slot is first observed. While draining
    /// the current recording runs to the drain end and no new one starts.
    fn busy_status(&mut self, t: f64, load: f64) -> &'static str {
        if self.expired {
            return "EXPIRED";
        }
        let slot = self.slot_of(t);
        let busy = match self.slot {
            Some((current, busy)) if current == slot => busy,
            previous => {
                if self.config.single_use && matches!(previous, Some((_, true))) {
                    self.expired = true;
                    return "EXPIRED";
                }
                let busy = self.drain.is_none()
                    && unit(mix(self.config.seed, slot)) < load.clamp(0.0, 1.0);
                self.slot = Some((slot, busy));
                busy
            }
        };
        match self.drain {
            Some(d) if t >= d.end => "IDLE",
            _ if busy => "BUSY",
            _ => "IDLE",
        }
    }
}

fn jibri_health(busy_status: &str) -> Value {
    json!({"status": {
        "busyStatus": busy_status,
        "health": {
            "healthStatus": "HEALTHY",
            "details": {"JibriManager": {"healthStatus": "HEALTHY", "detail": ""}},
        },
    }})
}

/// JVB's `current_timestamp` format: `yyyy-MM-dd HH:mm:ss.SSS` in UTC.
fn current_timestamp() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Per-instance noise: a fixed offset plus a fresh jitter per sample, within ± amplitude.
#[derive(Debug)]
struct Noise {
    offset: f64,
    half: f64,
    rng: StdRng,
}

impl Noise {
    fn new(seed: u64, amplitude: f64) -> Self {
        let half = amplitude.max(0.0) / 2.0;
        let mut rng = StdRng::seed_from_u64(seed);
        let offset = if half > 0.0 {
            rng.random_range(-half..=half)
        } else {
            0.0
        };
        Self { offset, half, rng }
    }

    fn next(&mut self) -> f64 {
        if self.half > 0.0 {
            self.offset + self.rng.random_range(-self.half..=self.half)
        } else {
            0.0
        }
    }
}

/// SplitMix64 of two words: a stable, well-mixed hash.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash mapped to `[0, 1)`.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use jitsi_scaler_core::instance::{
        BusyStatus, ComponentStatsWire, InstanceStatus, InstanceType, TypeClass,
    };

    fn component(kind: Kind, noise: f64, seed: u64) -> Component {
        Component::new(ComponentConfig {
            kind,
            noise,
            seed,
            jibri_session: 100.0,
            single_use: false,
        })
    }

    /// What the server's parser reads from a payload.
    fn parsed(class: TypeClass, stats: &Value) -> InstanceStatus {
        InstanceStatus::from_stats(class, &ComponentStatsWire::parse(&stats.to_string()))
    }

    #[test]
    fn kinds_follow_the_instance_type() {
        assert_eq!(Kind::of("JVB"), Kind::Jvb);
        assert_eq!(Kind::of("jvb"), Kind::Jvb);
        assert_eq!(Kind::of("sip-jibri"), Kind::Jibri);
        assert_eq!(Kind::of("availability"), Kind::Jibri);
        assert_eq!(Kind::of("jigasi"), Kind::Jigasi);
        assert_eq!(Kind::of("nomad"), Kind::Nomad);
        assert_eq!(Kind::of("whisper"), Kind::Generic);
        assert_eq!(Kind::of("something-new"), Kind::Generic);
    }

    #[test]
    fn jvb_payload_follows_the_load_and_parses_on_the_server() {
        let mut c = component(Kind::Jvb, 0.0, 1);
        let stats = c.sample(0.0, 0.3);
        assert_eq!(stats["stress_level"], 0.3);
        assert_eq!(stats["participants"], 30.0);
        assert_eq!(stats["conferences"], 8.0);
        assert_eq!(stats["graceful_shutdown"], false);
        let ts = stats["current_timestamp"].as_str().expect("timestamp");
        assert_eq!(ts.len(), "2026-01-01 00:00:00.000".len(), "{ts}");
        let status = parsed(TypeClass::Stress, &stats);
        let s = status.stats.expect("stress stats");
        assert_eq!(s.stress_level, Some(0.3));
        assert_eq!(s.participants, Some(30.0));
        assert!(!status.is_draining());
    }

    #[test]
    fn noise_stays_within_its_amplitude_and_depends_on_the_seed() {
        let mut a = component(Kind::Jvb, 0.1, 7);
        let mut b = component(Kind::Jvb, 0.1, 8);
        let mut a_again = component(Kind::Jvb, 0.1, 7);
        let mut seen = Vec::new();
        for i in 0..200 {
            let t = f64::from(i);
            let va = a.sample(t, 0.5)["stress_level"].as_f64().expect("stress");
            let vb = b.sample(t, 0.5)["stress_level"].as_f64().expect("stress");
            let again = a_again.sample(t, 0.5)["stress_level"]
                .as_f64()
                .expect("stress");
            assert!((va - 0.5).abs() <= 0.1 + 1e-9, "{va}");
            assert_eq!(va, again, "deterministic per seed");
            seen.push((va, vb));
        }
        assert!(seen.iter().any(|(a, b)| a != b), "seeds differ");
        let mut zero = component(Kind::Jvb, 0.3, 1);
        for _ in 0..50 {
            assert!(zero.sample(0.0, 0.0)["stress_level"].as_f64() >= Some(0.0));
        }
    }

    #[test]
    fn jvb_drain_sheds_participants_to_zero() {
        let mut c = component(Kind::Jvb, 0.0, 1);
        assert_eq!(c.sample(0.0, 0.8)["participants"], 80.0);
        let end = c.begin_drain(10.0, 0.8, 20.0);
        assert_eq!(end, 30.0);
        assert_eq!(c.begin_drain(15.0, 0.8, 20.0), 30.0, "one drain");
        let mid = c.sample(20.0, 0.8);
        assert_eq!(mid["graceful_shutdown"], true);
        assert_eq!(mid["participants"], 40.0);
        assert_eq!(mid["stress_level"], 0.4);
        assert!(parsed(TypeClass::Stress, &mid).is_draining());
        let done = c.sample(30.0, 0.8);
        assert_eq!(done["participants"], 0.0);
        assert_eq!(done["stress_level"], 0.0);
        let instant = component(Kind::Jigasi, 0.0, 1).begin_drain(5.0, 0.5, 0.0);
        assert_eq!(instant, 5.0);
    }

    #[test]
    fn jigasi_and_generic_payloads() {
        let mut j = component(Kind::Jigasi, 0.0, 1);
        let stats = j.sample(0.0, 0.25);
        assert_eq!(stats["conferences"], 25.0);
        assert_eq!(stats["participants"], 50.0);
        assert_eq!(stats["stress_level"], 0.25);
        let s = parsed(TypeClass::Stress, &stats).stats.expect("stats");
        assert_eq!(s.conferences, Some(25.0));
        let mut g = component(Kind::Generic, 0.0, 1);
        let stats = g.sample(0.0, 0.6);
        assert_eq!(stats["stress_level"], 0.6);
        assert_eq!(stats["graceful_shutdown"], false);
    }

    #[test]
    fn nomad_gauges_convert_to_the_load() {
        let mut n = component(Kind::Nomad, 0.0, 1);
        let stats = n.sample(0.0, 0.3);
        let s = parsed(TypeClass::Stress, &stats).stats.expect("stats");
        assert_eq!(s.stress_level, Some(0.3));
        assert!(!s.graceful_shutdown);
        n.begin_drain(0.0, 0.3, 10.0);
        let s = parsed(TypeClass::Stress, &n.sample(5.0, 0.3))
            .stats
            .expect("stats");
        assert!(s.graceful_shutdown, "an ineligible node drains");
        assert_eq!(s.stress_level, Some(0.15));
    }

    fn busy(stats: &Value) -> BusyStatus {
        parsed(TypeClass::Availability, stats)
            .jibri_status
            .expect("jibri status")
            .busy_status
    }

    #[test]
    fn jibri_is_busy_with_the_load_as_probability() {
        let mut always = component(Kind::Jibri, 0.0, 3);
        let mut never = component(Kind::Jibri, 0.0, 3);
        for slot in 0..20 {
            let t = f64::from(slot) * 100.0 + 1.0;
            assert_eq!(busy(&always.sample(t, 1.0)), BusyStatus::Busy);
            assert_eq!(busy(&never.sample(t, 0.0)), BusyStatus::Idle);
        }
        let mut half = component(Kind::Jibri, 0.0, 3);
        let busy_slots = (0..1000)
            .filter(|slot| busy(&half.sample(f64::from(*slot) * 100.0, 0.5)) == BusyStatus::Busy)
            .count();
        assert!((400..600).contains(&busy_slots), "{busy_slots}");
        let mut same = component(Kind::Jibri, 0.0, 3);
        let mut half = component(Kind::Jibri, 0.0, 3);
        for slot in 0..50 {
            let t = f64::from(slot) * 100.0;
            assert_eq!(same.sample(t, 0.5), half.sample(t, 0.5), "deterministic");
        }
        assert_eq!(
            InstanceType::parse("jibri").map(InstanceType::class),
            Some(TypeClass::Availability)
        );
    }

    #[test]
    fn jibri_status_is_stable_within_a_slot() {
        let mut c = component(Kind::Jibri, 0.0, 11);
        let first = busy(&c.sample(200.0, 0.5));
        for t in [210.0, 250.0, 299.9] {
            assert_eq!(busy(&c.sample(t, 0.5)), first);
        }
    }

    #[test]
    fn a_draining_jibri_finishes_its_recording_then_idles() {
        let mut c = component(Kind::Jibri, 0.0, 5);
        assert_eq!(busy(&c.sample(120.0, 1.0)), BusyStatus::Busy);
        let end = c.begin_drain(150.0, 1.0, 1000.0);
        assert_eq!(end, 200.0, "the recording ends with its slot");
        assert_eq!(busy(&c.sample(180.0, 1.0)), BusyStatus::Busy);
        assert_eq!(busy(&c.sample(200.0, 1.0)), BusyStatus::Idle);
        assert_eq!(busy(&c.sample(350.0, 1.0)), BusyStatus::Idle, "no new one");

        let mut capped = component(Kind::Jibri, 0.0, 5);
        capped.sample(120.0, 1.0);
        assert_eq!(capped.begin_drain(150.0, 1.0, 10.0), 160.0, "capped");

        let mut idle = component(Kind::Jibri, 0.0, 5);
        idle.sample(120.0, 0.0);
        assert_eq!(idle.begin_drain(150.0, 0.0, 1000.0), 150.0, "idle: at once");
    }

    #[test]
    fn single_use_jibri_expires_after_its_recording() {
        let mut c = Component::new(ComponentConfig {
            kind: Kind::Jibri,
            noise: 0.0,
            seed: 1,
            jibri_session: 100.0,
            single_use: true,
        });
        assert_eq!(busy(&c.sample(0.0, 0.0)), BusyStatus::Idle);
        assert_eq!(busy(&c.sample(100.0, 1.0)), BusyStatus::Busy);
        assert_eq!(busy(&c.sample(200.0, 1.0)), BusyStatus::Expired);
        assert_eq!(busy(&c.sample(900.0, 0.0)), BusyStatus::Expired);
    }
}
