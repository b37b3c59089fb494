//! The server's life over HTTP: a group under load scales up and back down with the test
//! playing the sidecars (check-in → report → decision → shutdown command → confirmation →
//! server-side termination), state that survives a restart on the embedded store, and a
//! graceful shutdown that finishes the request in flight.

mod harness;

use std::collections::BTreeSet;
use std::time::Duration;

use harness::{ADMIN, Config, WAIT, details, eventually, group, jvb_report};
use jitsi_scaler_core::store::FlagUpdate;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// `YYYY-MM-DDTHH:mm:ss.sssZ`.
fn is_iso(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 24 && s.ends_with('Z') && s.parse::<jiff::Timestamp>().is_ok())
}

fn instances(report: &Value) -> &[Value] {
    report["instances"].as_array().map_or(&[], Vec::as_slice)
}

fn find<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|i| i["instanceId"] == id)
        .unwrap_or_else(|| panic!("{id} in {list:?}"))
}

/// What the simulated sidecars saw.
#[derive(Clone, Debug, Default)]
struct Fleet {
    /// Load every sidecar reports.
    load: f64,
    /// Instances seen in the group report, in order of appearance.
    ids: Vec<String>,
    /// Every `/sidecar/status` answer, with the instance.
    answers: Vec<(String, Value)>,
    /// Instances told to shut down.
    told: BTreeSet<String>,
    /// Instances that confirmed their shutdown.
    confirmed: BTreeSet<String>,
}

/// Plays the reference sidecar of every instance the server launched: reports `load` on
/// `/sidecar/status` every 200 ms, and on `shutdown:true` reports `shutdownStatus` and
/// confirms through `/sidecar/shutdown` (the instance's shutdown hook), then goes silent.
async fn sidecars(
    api: String,
    http: reqwest::Client,
    group: &'static str,
    fleet: watch::Sender<Fleet>,
    stop: CancellationToken,
) {
    let admin = |path: String| http.get(format!("{api}{path}")).bearer_auth(ADMIN).send();
    while !stop.is_cancelled() {
        if let Ok(response) = admin(format!("/groups/{group}/report")).await
            && let Ok(report) = response.json::<Value>().await
        {
            for i in instances(&report["groupReport"]) {
                let id = i["instanceId"].as_str().unwrap_or_default().to_owned();
                fleet.send_if_modified(|f| {
                    let new = !id.is_empty() && !f.ids.contains(&id);
                    if new {
                        f.ids.push(id.clone());
                    }
                    new
                });
            }
        }
        let now = fleet.borrow().clone();
        for id in now.ids.iter().filter(|id| !now.confirmed.contains(*id)) {
            let mut body = jvb_report(id, group, now.load);
            body["shutdownStatus"] = json!(now.told.contains(id));
            let Ok(response) = http
                .post(format!("{api}/sidecar/status"))
                .bearer_auth(harness::SIDECAR)
                .json(&body)
                .send()
                .await
            else {
                continue;
            };
            let Ok(answer) = response.json::<Value>().await else {
                continue;
            };
            let shutdown = answer["shutdown"] == true;
            fleet.send_modify(|f| {
                f.answers.push((id.clone(), answer));
                if shutdown {
                    f.told.insert(id.clone());
                }
            });
            if shutdown {
                let confirmed = http
                    .post(format!("{api}/sidecar/shutdown"))
                    .bearer_auth(harness::SIDECAR)
                    .json(&details(id, group))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if confirmed {
                    fleet.send_modify(|f| {
                        f.confirmed.insert(id.clone());
                    });
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn wait_fleet(rx: &mut watch::Receiver<Fleet>, what: &str, done: impl FnMut(&Fleet) -> bool) {
    let reached = matches!(
        tokio::time::timeout(WAIT, rx.wait_for(done)).await,
        Ok(Ok(_))
    );
    assert!(reached, "timed out waiting for {what}: {:#?}", *rx.borrow());
}

#[tokio::test]
async fn load_scales_up_then_down_and_the_victim_is_told_to_shut_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Instances are plain processes that never report: the test is their sidecar.
    let instance = dir.path().join("instance.sh");
    harness::write_script(&instance, "#!/bin/sh\nexec sleep 600");
    let s = Config::new(dir.path())
        .set("--local-executable", instance.display().to_string())
        .set("--sanity-interval-sec", "1")
        .start()
        .await;
    let mut g = group("rt");
    g["enableAutoScale"] = json!(true);
    g["enableLaunch"] = json!(true);
    g["scalingOptions"] = json!({"minDesired": 1, "maxDesired": 3, "desiredCount": 1,
        "scaleUpQuantity": 1, "scaleDownQuantity": 1, "scaleUpThreshold": 0.7,
        "scaleDownThreshold": 0.3, "scalePeriod": 1, "scaleUpPeriodsCount": 2,
        "scaleDownPeriodsCount": 2});
    s.create_group(&g).await;

    let (tx, mut rx) = watch::channel(Fleet {
        load: 0.9,
        ..Fleet::default()
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(sidecars(
        s.api.clone(),
        s.http.clone(),
        "rt",
        tx.clone(),
        stop.clone(),
    ));

    // Under load: the engine raises the desired count and launches.
    wait_fleet(&mut rx, "a second instance launched under load", |f| {
        f.ids.len() >= 2
    })
    .await;
    let report = eventually("desired raised", || async {
        let r = s.report("rt").await;
        (r["desiredCount"].as_u64() >= Some(2)).then_some(r)
    })
    .await;
    assert!(report["count"].as_u64() >= Some(2), "{report}");
    let first = rx.borrow().ids[0].clone();
    assert!(
        rx.borrow()
            .answers
            .iter()
            .filter(|(id, _)| *id == first)
            .all(|(_, a)| *a == json!({"shutdown": false, "reconfigure": null})),
        "no command while under load"
    );

    // Low load: desired goes back to the minimum, each victim is told through its next
    // status answer and confirms (the reference's `sidecar` termination policy: the server
    // terminates nothing itself).
    tx.send_modify(|f| f.load = 0.05);
    let report = eventually("scaled back down to 1", || async {
        // The fleet first: a confirmation it records is already in the report read after it.
        let fleet = rx.borrow().clone();
        let r = s.report("rt").await;
        let live = fleet.ids.len() - fleet.confirmed.len();
        (r["desiredCount"] == 1 && live == 1 && !fleet.confirmed.is_empty()).then_some(r)
    })
    .await;
    stop.cancel();
    task.await.expect("sidecars");
    let fleet = rx.borrow().clone();
    assert_eq!(fleet.told, fleet.confirmed);
    for victim in &fleet.confirmed {
        let answers: Vec<&Value> = fleet
            .answers
            .iter()
            .filter(|(id, _)| id == victim)
            .map(|(_, a)| a)
            .collect();
        assert_eq!(
            answers.last(),
            Some(&&json!({"shutdown": true, "reconfigure": null})),
            "{victim}: {answers:?}"
        );
        let i = find(instances(&report), victim);
        assert_eq!(i["scaleStatus"], "SHUTDOWN COMPLETE", "{i}");
        assert_eq!(i["isShuttingDown"], true, "{i}");
        assert!(is_iso(&i["shutdownComplete"]), "{i}");
    }
    assert_eq!(
        report["shutdownCount"].as_u64(),
        Some(fleet.confirmed.len() as u64)
    );

    let audit = s.get("/groups/rt/group-audit").await.json()["audit"].clone();
    let actions = |list: &str, kind: &str| {
        audit[list]
            .as_array()
            .map_or(0, |a| a.iter().filter(|x| x["actionType"] == kind).count())
    };
    assert!(
        actions("autoScalerActionItems", "increaseDesiredCount") >= 1,
        "{audit}"
    );
    assert!(
        actions("autoScalerActionItems", "decreaseDesiredCount") >= 1,
        "{audit}"
    );
    assert!(actions("launcherActionItems", "scaleUp") >= 2, "{audit}");
    assert!(actions("launcherActionItems", "scaleDown") >= 1, "{audit}");
    let raise = audit["autoScalerActionItems"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .rev()
                .find(|x| x["actionType"] == "increaseDesiredCount")
        })
        .expect("first raise")
        .clone();
    assert_eq!(
        (&raise["oldDesiredCount"], &raise["newDesiredCount"]),
        (&json!(1), &json!(2)),
        "{raise}"
    );
    assert!(
        is_iso(&audit["lastAutoScalerRun"]) && is_iso(&audit["lastLauncherRun"]),
        "{audit}"
    );

    assert_eq!(
        report["cloudCount"],
        fleet.ids.len(),
        "nothing terminated by the server"
    );
    let victim = fleet.confirmed.iter().next().expect("a victim").clone();
    let audit = s.get("/groups/rt/instance-audit").await.json()["audit"].clone();
    let entry = find(audit.as_array().map_or(&[], Vec::as_slice), &victim).clone();
    for key in [
        "requestToLaunch",
        "requestToTerminate",
        "terminationConfirmation",
    ] {
        assert!(is_iso(&entry[key]), "{key}: {entry}");
    }
    assert_eq!(entry["serverTerminate"], "unknown", "{entry}");

    // With `onConfirm` the server terminates the confirmed instances through the provider:
    // their processes end and the cloud lists the survivor only.
    g["terminationPolicy"] = json!("onConfirm");
    s.create_group(&g).await;
    let entry = eventually("server-side termination audited", || async {
        let audit = s.get("/groups/rt/instance-audit").await.json()["audit"].clone();
        let list = audit.as_array().cloned().unwrap_or_default();
        let v = list
            .iter()
            .find(|a| a["instanceId"] == victim.as_str())?
            .clone();
        is_iso(&v["serverTerminate"]).then_some(v)
    })
    .await;
    assert!(is_iso(&entry["terminationConfirmation"]), "{entry}");
    eventually(
        "the cloud and the store track the survivor only",
        || async {
            let r = s.report("rt").await;
            (r["cloudCount"] == 1 && r["unTrackedCount"] == 0 && r["count"] == 1).then_some(())
        },
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn instances_launched_under_launch_protection_are_never_victims() {
    let dir = tempfile::tempdir().expect("tempdir");
    let instance = dir.path().join("instance.sh");
    harness::write_script(&instance, "#!/bin/sh\nexec sleep 600");
    let s = Config::new(dir.path())
        .set("--local-executable", instance.display().to_string())
        .start()
        .await;
    let mut g = group("p");
    g["enableLaunch"] = json!(true);
    g["scalingOptions"]["minDesired"] = json!(0);
    g["scalingOptions"]["desiredCount"] = json!(0);
    s.create_group(&g).await;
    s.post(
        "/groups/p/actions/launch-protected",
        json!({"count": 1, "protectedTTLSec": 600}),
    )
    .await
    .expect(200, &json!({"launch": "OK"}));
    let id = eventually("the protected launch", || async {
        let r = s.report("p").await;
        let i = instances(&r).first()?.clone();
        (i["isScaleDownProtected"] == true && r["scaleDownProtectedCount"] == 1)
            .then(|| i["instanceId"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    s.sidecar("status", jvb_report(&id, "p", 0.0))
        .await
        .expect(200, &json!({"shutdown": false, "reconfigure": null}));

    // Desired back to 0: the launcher runs, but the only instance is protected.
    s.put("/groups/p/desired", json!({"desiredCount": 0}))
        .await
        .expect(200, &json!({"save": "OK"}));
    let changed = jiff::Timestamp::now();
    eventually("two launcher runs after the change", || async {
        let audit = s.get("/groups/p/group-audit").await.json()["audit"].clone();
        let run: jiff::Timestamp = audit["lastLauncherRun"].as_str()?.parse().ok()?;
        (run.duration_since(changed) > jiff::SignedDuration::from_secs(2)).then_some(())
    })
    .await;
    s.sidecar("status", jvb_report(&id, "p", 0.0))
        .await
        .expect(200, &json!({"shutdown": false, "reconfigure": null}));
    let report = s.report("p").await;
    assert_eq!(
        find(instances(&report), &id)["isShuttingDown"],
        false,
        "{report}"
    );
    s.stop().await;
}

#[tokio::test]
async fn group_edits_and_commands_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::new(dir.path()).embedded();
    let s = config.clone().start().await;
    let mut g = group("keep");
    g["enableReconfiguration"] = json!(true);
    s.create_group(&g).await;
    s.put("/groups/keep/desired", json!({"desiredCount": 3}))
        .await
        .expect(200, &json!({"save": "OK"}));
    s.put(
        "/groups/keep/scaling-options",
        json!({"scaleUpQuantity": 2}),
    )
    .await
    .expect(200, &json!({"save": "OK"}));
    s.sidecar("status", jvb_report("i-1", "keep", 0.2)).await;
    s.sidecar("status", jvb_report("i-2", "keep", 0.2)).await;
    let now = jiff::Timestamp::now().as_millisecond();
    s.scaler
        .store()
        .update_flags(
            &[FlagUpdate::RequestShutdown {
                instance_id: "i-1".into(),
                at_ms: now,
                expires_ms: now + 3_600_000,
            }],
            None,
        )
        .await
        .expect("flag");
    let reconfigure = s
        .post_empty("/groups/keep/actions/reconfigure-instances")
        .await;
    assert_eq!(reconfigure.status, 200, "{reconfigure:?}");
    let before = s.sidecar("poll", details("i-2", "keep")).await.json();
    assert!(is_iso(&before["reconfigure"]), "{before}");
    // i-1 was flagged before the reconfiguration: it is not reconfigured.
    s.sidecar("poll", details("i-1", "keep"))
        .await
        .expect(200, &json!({"shutdown": true, "reconfigure": null}));
    s.stop().await;

    let s = config.start().await;
    let stored = s.group("keep").await;
    assert_eq!(stored["scalingOptions"]["desiredCount"], 3);
    assert_eq!(stored["scalingOptions"]["scaleUpQuantity"], 2);
    assert_eq!(stored["enableReconfiguration"], true);
    s.sidecar("poll", details("i-1", "keep"))
        .await
        .expect(200, &json!({"shutdown": true, "reconfigure": null}));
    s.sidecar("status", jvb_report("i-2", "keep", 0.2))
        .await
        .expect(
            200,
            &json!({"shutdown": false, "reconfigure": before["reconfigure"]}),
        );
    let report = s.report("keep").await;
    assert_eq!(report["count"], 2, "{report}");
    assert_eq!(find(instances(&report), "i-1")["isShuttingDown"], true);
    assert_eq!(report["reconfigureScheduledCount"], 1, "{report}");
    let audit = s.get("/groups/keep/group-audit").await.json();
    assert!(is_iso(&audit["audit"]["lastReconfigureRequest"]), "{audit}");
    s.stop().await;
}

/// The value of a metric sample line.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Config::new(dir.path()).start().await;
    s.create_group(&group("g")).await;
    let scaler = s.scaler.clone();
    let api_addr = s.running().api_addr;

    // A request whose body arrives in two parts: in flight while the shutdown begins.
    let body = br#"{"desiredCount": 3}"#;
    let mut conn = tokio::net::TcpStream::connect(api_addr)
        .await
        .expect("connect");
    let head = format!(
        "PUT /groups/g/desired HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("head");
    conn.write_all(&body[..5]).await.expect("first part");
    eventually("the request in flight", || async {
        let text = s.metrics_text().await;
        (sample(&text, r#"http_server_requests_in_flight{method="PUT"}"#) == Some(1.0))
            .then_some(())
    })
    .await;

    let metrics = s.metrics.clone();
    let http = s.http.clone();
    s.running().shutdown.cancel();
    eventually("new connections refused", || async {
        tokio::net::TcpStream::connect(api_addr)
            .await
            .err()
            .map(|_| ())
    })
    .await;
    // Probes never see "healthy!" once the shutdown began.
    match http.get(format!("{metrics}/health")).send().await {
        Err(_) => {}
        Ok(response) => {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            assert_eq!((status, text.as_str()), (503, "shutting down"));
        }
    }

    conn.write_all(&body[5..]).await.expect("second part");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"save":"OK"}"#), "{answer}");
    s.stop().await;
    let g = scaler.get_group("g").await.expect("group");
    assert_eq!(g.scaling_options.desired_count, 3);
}
