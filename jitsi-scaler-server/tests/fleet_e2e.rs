//! End to end: the local fleet example (a JVB group of real `jitsi-scaler sim-instance`
//! processes sharing a fleet load curve), with fast timings, scales up to its maximum under
//! load and back down to its minimum when the load drops, observed only through the API.

mod harness;

use std::time::Duration;

use harness::{Config, eventually_within};
use serde_json::{Value, json};

/// The `local-jvb` group of `examples/local/groups.json`, with timings in seconds instead of
/// minutes: the fleet load is 0.4 instance units, 3.2 from 2 s after the first launch (four
/// bridges at 0.8 each, above the 0.7 threshold), and 0.2 from 18 s.
fn fleet_group() -> Value {
    json!({
        "name": "local-jvb", "type": "JVB", "region": "local", "environment": "demo",
        "cloud": "local", "enableAutoScale": true, "enableLaunch": true,
        "gracePeriodTTLSec": 2, "protectedTTLSec": 600,
        "terminationPolicy": "onConfirmOrTimeout", "drainTimeoutSec": 20,
        "scalingOptions": {"minDesired": 1, "maxDesired": 4, "desiredCount": 1,
            "scaleUpQuantity": 1, "scaleDownQuantity": 1, "scaleUpThreshold": 0.7,
            "scaleDownThreshold": 0.3, "scalePeriod": 1, "scaleUpPeriodsCount": 2,
            "scaleDownPeriodsCount": 2},
        "local": {"fleetLoad": "steps:0.4@0,3.2@2,0.2@18", "statsIntervalSec": 0.25,
            "pollIntervalSec": 0.25, "drainSec": 0.5, "noise": 0}
    })
}

/// Instances of the report that serve (tracked, not shutting down).
fn serving(report: &Value) -> usize {
    report["instances"].as_array().map_or(0, |list| {
        list.iter()
            .filter(|i| i["group"].is_string() && i["isShuttingDown"] == false)
            .filter(|i| !matches!(i["scaleStatus"].as_str(), Some("GRACEFUL SHUTDOWN")))
            .count()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_fleet_scales_up_and_back_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("groups.json");
    std::fs::write(&file, json!({"groupEntries": [fleet_group()]}).to_string()).expect("write");
    let s = Config::new(dir.path())
        .set("--config", file.display().to_string())
        .set("--sanity-interval-sec", "1")
        .start()
        .await;
    let report = |s: &harness::Server| {
        let api = s.api.clone();
        let http = s.http.clone();
        async move {
            http.get(format!("{api}/groups/local-jvb/report"))
                .bearer_auth(harness::ADMIN)
                .send()
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()
                .map(|v| v["groupReport"].clone())
        }
    };

    // Up: the desired count climbs to the maximum and four bridges report under load.
    let up = eventually_within(
        Duration::from_secs(18),
        "four bridges serving",
        &mut || async {
            let r = report(&s).await?;
            (r["desiredCount"] == 4 && serving(&r) == 4).then_some(r)
        },
    )
    .await;
    let statuses: Vec<&str> = up["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["scaleStatus"].as_str())
        .collect();
    assert!(
        statuses
            .iter()
            .filter(|s| **s == "SIDECAR_RUNNING" || **s == "IN USE")
            .count()
            >= 1,
        "{up}"
    );

    // Down: the load drops, victims drain, confirm and are terminated; one bridge is left.
    let down = eventually_within(
        Duration::from_secs(40),
        "back to one bridge",
        &mut || async {
            let r = report(&s).await?;
            (r["desiredCount"] == 1 && serving(&r) == 1 && r["cloudCount"] == 1).then_some(r)
        },
    )
    .await;
    assert_eq!(down["unTrackedCount"], 0, "{down}");

    let audit = s.get("/groups/local-jvb/group-audit").await.json()["audit"].clone();
    let count = |list: &str, kind: &str| {
        audit[list]
            .as_array()
            .map_or(0, |a| a.iter().filter(|x| x["actionType"] == kind).count())
    };
    assert_eq!(
        count("autoScalerActionItems", "increaseDesiredCount"),
        3,
        "{audit}"
    );
    assert!(
        count("autoScalerActionItems", "decreaseDesiredCount") >= 3,
        "{audit}"
    );
    assert!(count("launcherActionItems", "scaleUp") >= 4, "{audit}");
    assert!(count("launcherActionItems", "scaleDown") >= 3, "{audit}");
    let audit = s.get("/groups/local-jvb/instance-audit").await.json()["audit"].clone();
    let confirmed = audit
        .as_array()
        .expect("audit")
        .iter()
        .filter(|a| a["terminationConfirmation"] != "unknown")
        .count();
    assert!(confirmed >= 3, "three drained bridges confirmed: {audit}");

    s.stop().await;
}
