//! `sim-instance` against a fake autoscaler on 127.0.0.1: payloads per type, cached reports,
//! shutdown and reconfigure lifecycles, server errors and hangs, live load files.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use jitsi_scaler_core::instance::{
    BusyStatus, ComponentStatsWire, InstanceStatus, StressStats, TypeClass,
};
use jitsi_scaler_core::sidecar::parse_stats_report;
use jitsi_scaler_server::sim::{self, LoadProfile, SimArgs, SimError, Token};
use serde_json::{Value, json};
use support::{Answer, FakeAutoscaler, Recorded, WAIT};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Fast settings: tens of milliseconds instead of the reference's 30 s / 60 s.
fn args(url: &str, id: &str, instance_type: &str) -> SimArgs {
    let mut args = SimArgs::new(url, id);
    args.instance_type = instance_type.into();
    args.group = "g1".into();
    args.name = Some("g1-aB3xY".into());
    args.stats_interval = Duration::from_millis(40);
    args.poll_interval = Duration::from_millis(20);
    args.request_timeout = Duration::from_millis(500);
    args.noise = 0.0;
    args
}

struct Running {
    stop: CancellationToken,
    handle: JoinHandle<Result<(), SimError>>,
}

impl Running {
    fn start(args: SimArgs) -> Self {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(sim::run(args, stop.clone()));
        Self { stop, handle }
    }

    /// Waits for the simulation to end by itself.
    async fn finished(self) {
        let result = tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("sim-instance did not exit")
            .expect("sim-instance panicked");
        assert!(result.is_ok(), "{result:?}");
    }

    /// Stops it and waits.
    async fn stop(self) {
        self.stop.cancel();
        self.finished().await;
    }
}

fn status_reports(requests: &[Recorded]) -> Vec<&Recorded> {
    requests.iter().filter(|r| r.route == "status").collect()
}

fn stress(report: &Recorded) -> StressStats {
    let stats = report.body["stats"].to_string();
    InstanceStatus::from_stats(TypeClass::Stress, &ComponentStatsWire::parse(&stats))
        .stats
        .expect("stress stats")
}

#[tokio::test]
async fn jvb_posts_its_cached_report_until_the_next_build() {
    let fake = FakeAutoscaler::start().await;
    let mut a = args(&fake.url, "sim-jvb-1", "JVB");
    a.stats_interval = Duration::from_millis(400);
    a.load = LoadProfile::Const(0.5);
    a.token = Some(Token::new("static-token"));
    let sim = Running::start(a);
    let requests = fake
        .wait_for("reports of two stats builds", |r| {
            let stamps: std::collections::BTreeSet<_> = status_reports(r)
                .iter()
                .filter_map(|x| x.timestamp())
                .collect();
            stamps.len() >= 3
        })
        .await;
    sim.stop().await;

    let reports = status_reports(&requests);
    assert_eq!(
        reports.len(),
        requests.len(),
        "no /sidecar/poll once a report exists"
    );
    let first = reports[0];
    assert_eq!(first.authorization.as_deref(), Some("Bearer static-token"));
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        first.body["instance"],
        json!({"instanceId": "sim-jvb-1", "instanceType": "JVB", "group": "g1",
               "name": "g1-aB3xY", "cloud": "local", "version": first.body["instance"]["version"],
               "privateIp": "127.0.0.1"})
    );
    for flag in [
        "shutdownStatus",
        "shutdownError",
        "reconfigureError",
        "statsError",
    ] {
        assert_eq!(first.body[flag], false, "{flag}");
    }
    assert_eq!(first.body["reconfigureComplete"], "");
    let stats = &first.body["stats"];
    assert_eq!(stats["stress_level"], 0.5);
    assert_eq!(stats["participants"], 50.0);
    assert_eq!(stats["graceful_shutdown"], false);
    assert!(stats["conferences"].as_f64() > Some(0.0));
    let parsed = parse_stats_report(&serde_json::to_vec(&first.body).expect("json"))
        .expect("the server's parser accepts it");
    assert_eq!(parsed.instance.instance_id, "sim-jvb-1");
    assert_eq!(parsed.instance.group.as_deref(), Some("g1"));

    // Between two builds every poll re-sends the same cached report, same timestamp.
    let mut by_timestamp: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
    let mut last = 0;
    for r in &reports {
        let ts = r.timestamp().expect("timestamp");
        assert!(ts >= last, "timestamps never go back");
        last = ts;
        by_timestamp.entry(ts).or_default().push(&r.body);
    }
    let (_, first_build) = by_timestamp.iter().next().expect("one build");
    assert!(
        first_build.len() >= 2,
        "the first report was re-sent: {first_build:?}"
    );
    for bodies in by_timestamp.values() {
        assert!(
            bodies.iter().all(|b| *b == bodies[0]),
            "same timestamp ⇒ same report"
        );
    }
}

#[tokio::test]
async fn each_type_sends_its_components_payload() {
    let fake = FakeAutoscaler::start().await;
    let mut busy = args(&fake.url, "jibri-busy", "jibri");
    busy.load = LoadProfile::Const(1.0);
    let mut idle = args(&fake.url, "jibri-idle", "sip-jibri");
    idle.load = LoadProfile::Const(0.0);
    let mut jigasi = args(&fake.url, "jigasi-1", "jigasi");
    jigasi.load = LoadProfile::Const(0.25);
    let mut nomad = args(&fake.url, "nomad-1", "nomad");
    nomad.load = LoadProfile::Const(0.5);
    let ids = ["jibri-busy", "jibri-idle", "jigasi-1", "nomad-1"];
    let sims: Vec<Running> = [busy, idle, jigasi, nomad]
        .into_iter()
        .map(Running::start)
        .collect();
    let requests = fake
        .wait_for("a report from every instance", |r| {
            ids.iter().all(|id| {
                status_reports(r)
                    .iter()
                    .any(|x| x.instance_id() == Some(id))
            })
        })
        .await;
    for sim in sims {
        sim.stop().await;
    }
    let report = |id: &str| {
        status_reports(&requests)
            .into_iter()
            .find(|x| x.instance_id() == Some(id))
            .expect("report")
            .clone()
    };
    let jibri_status = |r: &Recorded| {
        let stats = r.body["stats"].to_string();
        InstanceStatus::from_stats(TypeClass::Availability, &ComponentStatsWire::parse(&stats))
            .jibri_status
            .expect("jibri status")
    };
    let busy = report("jibri-busy");
    assert_eq!(busy.body["instance"]["instanceType"], "jibri");
    assert_eq!(busy.body["stats"]["status"]["busyStatus"], "BUSY");
    assert_eq!(
        busy.body["stats"]["status"]["health"]["healthStatus"],
        "HEALTHY"
    );
    assert_eq!(jibri_status(&busy).busy_status, BusyStatus::Busy);
    let idle = report("jibri-idle");
    assert_eq!(idle.body["instance"]["instanceType"], "sip-jibri");
    assert_eq!(jibri_status(&idle).busy_status, BusyStatus::Idle);

    let jigasi = report("jigasi-1");
    assert_eq!(jigasi.body["stats"]["conferences"], 25.0);
    assert_eq!(jigasi.body["stats"]["participants"], 50.0);
    assert_eq!(stress(&jigasi).stress_level, Some(0.25));

    let nomad = report("nomad-1");
    assert!(nomad.body["stats"]["Gauges"].is_array());
    assert_eq!(stress(&nomad).stress_level, Some(0.5));
}

#[tokio::test]
async fn shutdown_drains_confirms_once_and_exits() {
    let fake = FakeAutoscaler::start().await;
    let mut a = args(&fake.url, "sim-drain", "JVB");
    a.load = LoadProfile::Const(0.8);
    a.stats_interval = Duration::from_millis(20);
    a.drain_duration = Duration::from_millis(800);
    a.reconfigure_duration = Duration::from_millis(1);
    let sim = Running::start(a);
    fake.wait_for_count("status", 0, 1).await;
    fake.answer(Answer::Command {
        shutdown: true,
        reconfigure: Some("2026-01-01T00:00:00.000Z".into()),
    });
    sim.finished().await;

    let requests = fake.requests();
    let shutdowns: Vec<_> = requests.iter().filter(|r| r.route == "shutdown").collect();
    assert_eq!(shutdowns.len(), 1, "exactly one confirmation");
    assert_eq!(
        requests.last().map(|r| r.route.as_str()),
        Some("shutdown"),
        "nothing after the confirmation"
    );
    let details = &shutdowns[0].body;
    assert_eq!(details["instanceId"], "sim-drain");
    assert_eq!(details["instanceType"], "JVB");
    assert_eq!(details["group"], "g1");
    assert!(
        details.get("stats").is_none(),
        "InstanceDetails, not a report"
    );

    let reports = status_reports(&requests);
    let first_command = reports
        .iter()
        .position(|r| matches!(r.answered, Answer::Command { shutdown: true, .. }))
        .expect("the command was delivered");
    let draining: Vec<_> = reports
        .iter()
        .filter(|r| r.body["shutdownStatus"] == true)
        .collect();
    assert!(
        !draining.is_empty(),
        "reports after the command say shutdownStatus"
    );
    assert!(
        reports[..=first_command]
            .iter()
            .all(|r| r.body["shutdownStatus"] == false),
        "not before"
    );
    assert!(
        draining
            .iter()
            .all(|r| r.body["stats"]["graceful_shutdown"] == true && stress(r).graceful_shutdown)
    );
    let participants: Vec<f64> = draining
        .iter()
        .map(|r| {
            r.body["stats"]["participants"]
                .as_f64()
                .expect("participants")
        })
        .collect();
    assert!(
        participants.windows(2).all(|w| w[1] <= w[0]),
        "participants only go down while draining: {participants:?}"
    );
    assert!(participants.iter().all(|p| *p <= 80.0));
    assert!(
        reports.iter().all(|r| r.body["reconfigureComplete"] == ""),
        "a shutdown wins over a reconfigure"
    );
}

#[tokio::test]
async fn reconfigure_date_is_echoed_exactly_in_later_reports() {
    let fake = FakeAutoscaler::start().await;
    let date = "2026-03-18T18:00:00.123Z";
    let mut a = args(&fake.url, "sim-reconf", "JVB");
    a.reconfigure_duration = Duration::from_millis(150);
    let sim = Running::start(a);
    fake.wait_for_count("status", 0, 1).await;
    fake.answer(Answer::Command {
        shutdown: false,
        reconfigure: Some(date.into()),
    });
    let requests = fake
        .wait_for("a report with reconfigureComplete", |r| {
            status_reports(r)
                .iter()
                .any(|x| x.body["reconfigureComplete"] == date)
        })
        .await;
    // As the server does once completion is seen.
    fake.answer(Answer::Command {
        shutdown: false,
        reconfigure: Some(String::new()),
    });
    let reports = status_reports(&requests);
    let done = reports
        .iter()
        .position(|x| x.body["reconfigureComplete"] == date)
        .expect("completed");
    let first_command = reports
        .iter()
        .find(|r| matches!(&r.answered, Answer::Command { reconfigure: Some(d), .. } if d == date))
        .expect("the command was delivered");
    assert!(
        reports[done].timestamp().expect("ts") >= first_command.received_ms + 150 - 5,
        "built after the simulated reconfiguration ran"
    );
    assert!(
        reports[..done]
            .iter()
            .all(|r| r.body["reconfigureComplete"] == "" && r.body["reconfigureError"] == false)
    );

    let seen = requests.len();
    let later = fake
        .wait_for("two more builds", |r| {
            let stamps: std::collections::BTreeSet<_> = status_reports(&r[seen..])
                .iter()
                .filter_map(|x| x.timestamp())
                .collect();
            stamps.len() >= 2
        })
        .await;
    sim.stop().await;
    assert!(
        status_reports(&later[seen..])
            .iter()
            .all(|r| r.body["reconfigureComplete"] == date),
        "sticky"
    );
    assert!(later.iter().all(|r| r.route == "status"));
}

#[tokio::test]
async fn server_errors_non_json_and_hangs_are_survived() {
    let fake = FakeAutoscaler::start().await;
    let mut a = args(&fake.url, "sim-errors", "JVB");
    a.request_timeout = Duration::from_millis(100);
    a.drain_duration = Duration::ZERO;
    let sim = Running::start(a);
    for answer in [
        Answer::Status(500),
        Answer::Status(503),
        Answer::NotJson,
        Answer::Hang,
    ] {
        fake.answer(answer.clone());
        let skip = fake.requests().len();
        fake.wait_for(&format!("polls answered {answer:?}"), |r| {
            r.iter().skip(skip).filter(|x| x.answered == answer).count() >= 3
        })
        .await;
        assert!(!sim.handle.is_finished(), "still running after {answer:?}");
    }
    let before = fake.requests();
    fake.answer(Answer::Command {
        shutdown: true,
        reconfigure: None,
    });
    sim.finished().await;
    assert!(
        before.iter().all(|r| r.body["shutdownStatus"] == false),
        "errors are never read as a shutdown"
    );
    let requests = fake.requests();
    assert_eq!(requests.iter().filter(|r| r.route == "shutdown").count(), 1);
}

#[tokio::test]
async fn dropped_connections_are_retried_at_every_poll() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let sim = Running::start(args(&url, "sim-late", "JVB"));
    // The first polls find a server that hangs up without answering.
    for _ in 0..3 {
        let accepted = tokio::time::timeout(WAIT, listener.accept()).await;
        let (socket, _) = accepted.expect("a poll").expect("accept");
        drop(socket);
    }
    assert!(!sim.handle.is_finished());
    let fake = FakeAutoscaler::serve(listener);
    fake.wait_for_count("status", 0, 2).await;
    sim.stop().await;
}

#[tokio::test]
async fn a_stop_signal_ends_it_promptly_without_confirming_a_shutdown() {
    let fake = FakeAutoscaler::start().await;
    let mut a = args(&fake.url, "sim-stop", "JVB");
    a.poll_interval = Duration::from_secs(3600);
    let sim = Running::start(a);
    fake.wait_for_count("status", 0, 1).await;
    sim.stop().await;
    assert!(fake.requests().iter().all(|r| r.route == "status"));
}

#[tokio::test]
async fn poll_only_sidecars_post_their_instance_details() {
    let fake = FakeAutoscaler::start().await;
    let mut a = args(&fake.url, "sim-poll", "jibri");
    a.report_stats = false;
    a.token = Some(Token::new("header.payload.signature"));
    let sim = Running::start(a);
    let requests = fake.wait_for_count("poll", 0, 3).await;
    sim.stop().await;
    assert!(requests.iter().all(|r| r.route == "poll"));
    let body = &requests[0].body;
    assert_eq!(body["instanceId"], "sim-poll");
    assert_eq!(body["instanceType"], "jibri");
    assert_eq!(body["group"], "g1");
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some("Bearer header.payload.signature")
    );
    let parsed = jitsi_scaler_core::sidecar::parse_instance_details(
        &serde_json::to_vec(body).expect("json"),
    )
    .expect("the server's parser accepts it");
    assert_eq!(parsed.group_name(), "g1");
}

#[tokio::test]
async fn a_load_file_changes_the_load_live() {
    let fake = FakeAutoscaler::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("load");
    let write = |text: &str| {
        let tmp = dir.path().join("load.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
    };
    write("0.9\n");
    let mut a = args(&fake.url, "sim-file", "JVB");
    a.load = LoadProfile::Const(0.1);
    a.load_file = Some(path.clone());
    let sim = Running::start(a);
    let has_stress = |level: f64| {
        move |r: &[Recorded]| {
            status_reports(r)
                .iter()
                .any(|x| x.body["stats"]["stress_level"] == level)
        }
    };
    fake.wait_for("stress 0.9 from the file", has_stress(0.9))
        .await;
    write("0.4");
    fake.wait_for("stress 0.4 after the change", has_stress(0.4))
        .await;
    write("lots");
    fake.wait_for(
        "the profile's 0.1 while the file is garbage",
        has_stress(0.1),
    )
    .await;
    write("0.6");
    fake.wait_for("stress 0.6", has_stress(0.6)).await;
    std::fs::remove_file(&path).expect("remove");
    let skip = fake.requests().len();
    fake.wait_for("the profile's 0.1 without the file", |r| {
        has_stress(0.1)(&r[skip..])
    })
    .await;
    sim.stop().await;
}

#[tokio::test]
async fn noise_keeps_the_stress_near_the_load() {
    let fake = FakeAutoscaler::start().await;
    let mut a = args(&fake.url, "sim-noise", "JVB");
    a.noise = 0.1;
    a.seed = Some(7);
    a.stats_interval = Duration::from_millis(10);
    a.poll_interval = Duration::from_millis(10);
    a.load = LoadProfile::Const(0.5);
    let sim = Running::start(a);
    let requests = fake
        .wait_for("ten builds", |r| {
            let stamps: std::collections::BTreeSet<_> = status_reports(r)
                .iter()
                .filter_map(|x| x.timestamp())
                .collect();
            stamps.len() >= 10
        })
        .await;
    sim.stop().await;
    let levels: Vec<f64> = status_reports(&requests)
        .iter()
        .map(|r| stress(r).stress_level.expect("stress"))
        .collect();
    assert!(
        levels.iter().all(|l| (l - 0.5).abs() <= 0.1 + 1e-9),
        "{levels:?}"
    );
    assert!(levels.iter().any(|l| *l != 0.5), "noisy: {levels:?}");
}
