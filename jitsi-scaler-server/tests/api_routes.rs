//! Every admin route of rest-api.md §3 and the four sidecar routes of sidecar-protocol.md §3,
//! against the real server (`app::start`) on 127.0.0.1: success bodies byte for byte, the
//! reference's validation messages, our 404/405/413/415/501 JSON errors.

mod harness;

use harness::{Body, Config, SIDECAR, Server, details, group, jvb_report};
use reqwest::Method;
use serde_json::{Value, json};

async fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Config::new(dir.path()).start().await;
    (server, dir)
}

/// `YYYY-MM-DDTHH:mm:ss.sssZ`, as the reference's `toISOString()`.
fn is_iso(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 24
            && s.ends_with('Z')
            && s.as_bytes()[19] == b'.'
            && s.parse::<jiff::Timestamp>().is_ok()
    })
}

fn names(list: &Value) -> Vec<String> {
    list["instanceGroups"]
        .as_array()
        .expect("instanceGroups")
        .iter()
        .map(|g| g["name"].as_str().expect("name").to_owned())
        .collect()
}

fn field_error(path: &str, msg: &str, value: Option<Value>) -> Value {
    let mut e = json!({"type": "field", "msg": msg, "path": path, "location": "body"});
    if let Some(v) = value {
        e["value"] = v;
    }
    e
}

#[tokio::test]
async fn groups_are_created_listed_sorted_filtered_and_keep_unknown_fields() {
    let (s, _dir) = server().await;
    s.get("/groups")
        .await
        .expect(200, &json!({"instanceGroups": []}));

    // The reference's example group, with fields jitsi-scaler does not know.
    let mut example = group("lonely-us-phoenix-1-JibriGroup1");
    example["type"] = json!("jibri");
    example["id"] = json!("declared-never-used");
    example["customField"] = json!({"nested": [1, "x", null], "flag": true});
    example["seleniumGridUrl"] = json!("http://grid:4444");
    s.create_group(&example).await;
    let stored = s.group("lonely-us-phoenix-1-JibriGroup1").await;
    for (key, value) in example.as_object().expect("object") {
        assert_eq!(&stored[key], value, "field {key} round-trips");
    }

    // Absent TTLs get the documented defaults; the type is matched case-insensitively and
    // echoed as stored.
    let mut lower = group("B-group");
    lower["type"] = json!("jvb");
    lower
        .as_object_mut()
        .expect("o")
        .remove("gracePeriodTTLSec");
    lower.as_object_mut().expect("o").remove("protectedTTLSec");
    lower["tags"] = json!({"release_number": "150", "env": "x"});
    s.create_group(&lower).await;
    let stored = s.group("B-group").await;
    assert_eq!(stored["type"], "jvb");
    assert_eq!(stored["gracePeriodTTLSec"], 480);
    assert_eq!(stored["protectedTTLSec"], 600);

    let mut untagged = group("c-group");
    untagged.as_object_mut().expect("o").remove("tags");
    s.create_group(&untagged).await;
    let mut a = group("a-group");
    a["tags"] = json!({"release_number": "151"});
    s.create_group(&a).await;

    let mut upper = group("A-group");
    upper.as_object_mut().expect("o").remove("tags");
    s.create_group(&upper).await;

    // Case-insensitive order, ties by bytes: A < a < B < c < lonely.
    let all = s.get("/groups").await;
    assert_eq!(all.status, 200);
    assert_eq!(
        names(&all.json()),
        [
            "A-group",
            "a-group",
            "B-group",
            "c-group",
            "lonely-us-phoenix-1-JibriGroup1"
        ]
    );
    let tagged = s.get("/groups?tag.release_number=150").await.json();
    assert_eq!(
        names(&tagged),
        ["B-group", "lonely-us-phoenix-1-JibriGroup1"]
    );
    let both = s
        .get("/groups?tag.release_number=150&tag.env=x")
        .await
        .json();
    assert_eq!(names(&both), ["B-group"]);
    let none = s.get("/groups?tag.release_number=999").await.json();
    assert_eq!(none, json!({"instanceGroups": []}));

    // Replacing a group replaces it (PUT is not a merge).
    let mut replaced = group("a-group");
    replaced.as_object_mut().expect("o").remove("tags");
    replaced["scalingOptions"]["maxDesired"] = json!(9);
    s.create_group(&replaced).await;
    let stored = s.group("a-group").await;
    assert_eq!(stored["scalingOptions"]["maxDesired"], 9);
    assert!(stored.get("tags").is_none(), "{stored}");

    s.get("/groups/nope").await.expect(
        404,
        &json!({"errors": [{"type": "not_found", "msg": "Group nope not found"}]}),
    );
}

#[tokio::test]
async fn put_group_validation_uses_the_reference_messages() {
    let (s, _dir) = server().await;
    let put = |body: Value| {
        let s = &s;
        async move { s.put("/groups/g", body).await }
    };

    let mut negative = group("g");
    negative["scalingOptions"]["minDesired"] = json!(-1);
    put(negative).await.expect(
        400,
        &json!({"errors": [field_error("scalingOptions.minDesired", "Value must be positive", Some(json!(-1)))]}),
    );

    let mut range = group("g");
    range["scalingOptions"]["minDesired"] = json!(3);
    range["scalingOptions"]["desiredCount"] = json!(2);
    let errors = put(range).await.field_errors();
    assert!(
        errors.contains(&(
            "scalingOptions".into(),
            "Desired count must be between min and max; min cannot be grater than max".into()
        )),
        "{errors:?}"
    );

    let mut reservation = group("g");
    reservation["scalingOptions"]["reservationScaleUpThreshold"] = json!(0);
    assert_eq!(
        put(reservation).await.field_errors(),
        [(
            "scalingOptions.reservationScaleUpThreshold".into(),
            "Value must be at least 1".into()
        )]
    );

    let mut bad_type = group("g");
    bad_type["type"] = json!("banana");
    assert_eq!(
        put(bad_type).await.field_errors(),
        [("type".into(), "Invalid type of instance: banana".into())]
    );

    put(group("other")).await.expect(
        400,
        &json!({"errors": ["The request param group name must match group name in the body"]}),
    );

    let mut cloud = group("g");
    cloud["cloud"] = json!("oracle");
    let errors = put(cloud).await.field_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "cloud");

    let mut periods = group("g");
    periods["scalingOptions"]["scaleUpPeriodsCount"] = json!(0);
    periods["scalingOptions"]["scalePeriod"] = json!(0);
    let errors = put(periods).await.field_errors();
    let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    assert!(
        paths.contains(&"scalingOptions.scaleUpPeriodsCount"),
        "{errors:?}"
    );
    assert!(paths.contains(&"scalingOptions.scalePeriod"), "{errors:?}");

    let mut not_bool = group("g");
    not_bool["enableAutoScale"] = json!("yes");
    assert_eq!(put(not_bool).await.field_errors()[0].0, "enableAutoScale");

    let mut missing = group("g");
    missing.as_object_mut().expect("o").remove("scalingOptions");
    assert_eq!(put(missing).await.field_errors()[0].0, "scalingOptions");

    // Every problem at once, not only the first.
    let mut many = group("g");
    many["scalingOptions"]["maxDesired"] = json!(-2);
    many["scalingOptions"]["scaleUpQuantity"] = json!(1.5);
    many["gracePeriodTTLSec"] = json!(-1);
    assert!(put(many).await.field_errors().len() >= 3);

    for body in [json!([1, 2]), json!("group"), json!(null), json!(42)] {
        let reply = put(body).await;
        assert_eq!(reply.status, 400, "{reply:?}");
        assert!(reply.json()["errors"].is_array());
    }

    // Reserved and non-ASCII names.
    let reply = s.put("/groups/options", group("options")).await;
    assert_eq!(reply.field_errors()[0].0, "name");
    let reply = s.put("/groups/%C3%A9t%C3%A9", group("été")).await;
    assert_eq!(reply.field_errors()[0].0, "name");
    s.get("/groups/%C3%A9t%C3%A9").await.expect(
        404,
        &json!({"errors": [{"type": "not_found", "msg": "Group été not found"}]}),
    );
    let long = "g".repeat(129);
    let reply = s.put(&format!("/groups/{long}"), group(&long)).await;
    assert_eq!(reply.field_errors()[0].0, "name");

    // Nothing was stored by any of these.
    s.get("/groups")
        .await
        .expect(200, &json!({"instanceGroups": []}));
}

#[tokio::test]
async fn delete_refuses_groups_with_active_instances() {
    let (s, _dir) = server().await;
    s.delete("/groups/ghost").await.expect(
        404,
        &json!({"errors": [{"type": "not_found", "msg": "Group ghost not found"}]}),
    );

    s.create_group(&group("g")).await;
    s.sidecar("status", jvb_report("i-1", "g", 0.2))
        .await
        .expect(200, &json!({"shutdown": false, "reconfigure": null}));
    s.delete("/groups/g").await.expect(
        400,
        &json!({"errors": [{"type": "field", "value": "g", "msg": "This group has active instances",
            "path": "name", "location": "params"}]}),
    );

    // Once the instance confirmed its shutdown, it no longer counts.
    s.sidecar("shutdown", details("i-1", "g"))
        .await
        .expect(200, &json!({"save": "OK"}));
    s.delete("/groups/g").await.expect(200, &json!({}));
    assert_eq!(s.get("/groups/g").await.status, 404);

    // The audit of a deleted group stays readable; a name never seen is 404.
    let audit = s.get("/groups/g/instance-audit").await;
    assert_eq!(audit.status, 200, "{audit:?}");
    let entries = audit.json()["audit"].clone();
    assert_eq!(entries[0]["instanceId"], "i-1", "{entries}");
    assert!(is_iso(&entries[0]["terminationConfirmation"]), "{entries}");
    assert_eq!(s.get("/groups/never/group-audit").await.status, 404);
    assert_eq!(s.get("/groups/never/instance-audit").await.status, 404);
}

#[tokio::test]
async fn reset_reapplies_the_groups_file_keeping_desired_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("groups.json");
    let write = |entries: Vec<Value>| {
        std::fs::write(&file, json!({"groupEntries": entries}).to_string()).expect("write")
    };
    write(vec![group("g1"), group("g2")]);
    let s = Config::new(dir.path())
        .set("--config", file.display().to_string())
        .start()
        .await;
    assert_eq!(names(&s.get("/groups").await.json()), ["g1", "g2"]);

    s.put("/groups/g1/desired", json!({"desiredCount": 3}))
        .await
        .expect(200, &json!({"save": "OK"}));
    s.put("/groups/g1/scaling-options", json!({"scaleUpQuantity": 2}))
        .await
        .expect(200, &json!({"save": "OK"}));
    s.create_group(&group("g3")).await;
    s.delete("/groups/g2").await.expect(200, &json!({}));

    s.post_empty("/groups/actions/reset")
        .await
        .expect(200, &json!({"reset": "OK"}));
    let g1 = s.group("g1").await;
    assert_eq!(g1["scalingOptions"]["desiredCount"], 3, "desired kept");
    assert_eq!(
        g1["scalingOptions"]["scaleUpQuantity"], 1,
        "file re-applied"
    );
    assert_eq!(names(&s.get("/groups").await.json()), ["g1", "g2", "g3"]);

    // An invalid file changes nothing.
    let mut bad = group("g1");
    bad["scalingOptions"]["minDesired"] = json!(5);
    write(vec![bad, group("g4")]);
    let reply = s.post_empty("/groups/actions/reset").await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(
        reply.json()["errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    );
    assert_eq!(names(&s.get("/groups").await.json()), ["g1", "g2", "g3"]);
    assert_eq!(s.group("g1").await["scalingOptions"]["minDesired"], 0);

    // A file that is not JSON at all is a 400 too, never a 500.
    std::fs::write(&file, "{not json").expect("write");
    assert_eq!(s.post_empty("/groups/actions/reset").await.status, 400);
}

#[tokio::test]
async fn desired_merges_and_checks_the_range() {
    let (s, _dir) = server().await;
    s.create_group(&group("g")).await;
    let ok = json!({"save": "OK"});
    s.put("/groups/g/desired", json!({"desiredCount": 3, "bogus": 1}))
        .await
        .expect(200, &ok);
    let g = s.group("g").await;
    assert_eq!(g["scalingOptions"]["desiredCount"], 3);
    assert!(g.get("bogus").is_none() && g["scalingOptions"].get("bogus").is_none());

    s.put("/groups/g/desired", json!({"minDesired": -1}))
        .await
        .expect(
            400,
            &json!({"errors": [field_error("minDesired", "Value must be positive", Some(json!(-1)))]}),
        );
    for bad in [json!("3"), json!(2.5), json!(true), json!(-7), json!([1])] {
        let reply = s
            .put("/groups/g/desired", json!({"desiredCount": bad}))
            .await;
        assert_eq!(
            reply.field_errors(),
            [("desiredCount".into(), "Value must be positive".into())],
            "{bad}"
        );
    }
    let errors = s
        .put("/groups/g/desired", json!({"desiredCount": 9}))
        .await
        .field_errors();
    assert_eq!(
        errors[0].1,
        "Desired count must be between min and max; min cannot be grater than max"
    );
    s.put(
        "/groups/g/desired",
        json!({"minDesired": 5, "maxDesired": 8, "desiredCount": 6}),
    )
    .await
    .expect(200, &ok);
    let o = &s.group("g").await["scalingOptions"];
    assert_eq!(
        (&o["minDesired"], &o["maxDesired"], &o["desiredCount"]),
        (&json!(5), &json!(8), &json!(6))
    );
    s.put("/groups/g/desired", json!({})).await.expect(200, &ok);
    s.put("/groups/nope/desired", json!({"desiredCount": 1}))
        .await
        .expect(
            404,
            &json!({"errors": [{"type": "not_found", "msg": "Group nope not found"}]}),
        );
}

#[tokio::test]
async fn scaling_options_and_activities_and_instance_configuration() {
    let (s, _dir) = server().await;
    s.create_group(&group("g")).await;
    let ok = json!({"save": "OK"});

    s.put(
        "/groups/g/scaling-options",
        json!({"scaleUpQuantity": 2, "scaleDownThreshold": 0.1, "scalePeriod": 30,
               "gracePeriodTTLSec": 30, "cloudGuardGraceCount": 1, "reservationScaleUpThreshold": 2}),
    )
    .await
    .expect(200, &ok);
    let g = s.group("g").await;
    let o = &g["scalingOptions"];
    assert_eq!(o["scaleUpQuantity"], 2);
    assert_eq!(o["scaleDownThreshold"], 0.1);
    assert_eq!(o["scalePeriod"], 30);
    assert_eq!(o["cloudGuardGraceCount"], 1);
    assert_eq!(o["reservationScaleUpThreshold"], 2);
    assert_eq!(
        g["gracePeriodTTLSec"], 30,
        "the grace period goes to the root"
    );
    assert!(o.get("gracePeriodTTLSec").is_none());

    let cases = [
        (
            json!({"scaleUpQuantity": -1}),
            "scaleUpQuantity",
            "Value must be positive",
        ),
        (
            json!({"scaleUpThreshold": -0.5}),
            "scaleUpThreshold",
            "Value must be positive",
        ),
        (
            json!({"scalePeriod": 0}),
            "scalePeriod",
            "Value must be at least 1",
        ),
        (
            json!({"scaleDownPeriodsCount": 0}),
            "scaleDownPeriodsCount",
            "Value must be at least 1",
        ),
        (
            json!({"reservationScaleUpThreshold": 0}),
            "reservationScaleUpThreshold",
            "Value must be at least 1",
        ),
        (
            json!({"gracePeriodTTLSec": -5}),
            "gracePeriodTTLSec",
            "Value must be positive",
        ),
        (
            json!({"cloudGuardGraceCount": "x"}),
            "cloudGuardGraceCount",
            "Value must be positive",
        ),
    ];
    for (body, path, msg) in cases {
        let reply = s.put("/groups/g/scaling-options", body.clone()).await;
        assert_eq!(reply.field_errors(), [(path.into(), msg.into())], "{body}");
    }
    assert_eq!(
        s.put("/groups/nope/scaling-options", json!({"scalePeriod": 5}))
            .await
            .expect_error(404, "not_found"),
        "Group nope not found"
    );

    s.put(
        "/groups/g/scaling-activities",
        json!({"enableAutoScale": true, "enableLaunch": false, "enableScheduler": false,
               "enableUntrackedThrottle": false, "enableReconfiguration": true, "enableCloudGuard": true}),
    )
    .await
    .expect(200, &ok);
    let g = s.group("g").await;
    for (key, value) in [
        ("enableAutoScale", true),
        ("enableLaunch", false),
        ("enableScheduler", false),
        ("enableUntrackedThrottle", false),
        ("enableReconfiguration", true),
        ("enableCloudGuard", true),
    ] {
        assert_eq!(g[key], value, "{key}");
    }
    // The other values stay as they are; a non-boolean is refused.
    s.put(
        "/groups/g/scaling-activities",
        json!({"enableAutoScale": false}),
    )
    .await
    .expect(200, &ok);
    assert_eq!(s.group("g").await["enableReconfiguration"], true);
    s.put("/groups/g/scaling-activities", json!({"enableLaunch": "yes"}))
        .await
        .expect(
            400,
            &json!({"errors": [field_error("enableLaunch", "Value must be a boolean", Some(json!("yes")))]}),
        );
    assert_eq!(
        s.put(
            "/groups/nope/scaling-activities",
            json!({"enableLaunch": true})
        )
        .await
        .status,
        404
    );

    s.put(
        "/groups/g/instance-configuration",
        json!({"instanceConfigurationId": "ocid1.instanceconfiguration.oc1.phx.2"}),
    )
    .await
    .expect(200, &ok);
    assert_eq!(
        s.group("g").await["instanceConfigurationId"],
        "ocid1.instanceconfiguration.oc1.phx.2"
    );
    s.put("/groups/g/instance-configuration", json!({}))
        .await
        .expect(
            400,
            &json!({"errors": [field_error("instanceConfigurationId", "Invalid value", None)]}),
        );
    s.put(
        "/groups/g/instance-configuration",
        json!({"instanceConfigurationId": 5}),
    )
    .await
    .expect(
        400,
        &json!({"errors": [field_error("instanceConfigurationId", "Invalid value", Some(json!(5)))]}),
    );
    assert_eq!(
        s.put(
            "/groups/nope/instance-configuration",
            json!({"instanceConfigurationId": "x"})
        )
        .await
        .status,
        404
    );
}

#[tokio::test]
async fn full_scaling_selects_case_insensitively_and_skips_scheduled_groups() {
    let (s, _dir) = server().await;
    let make = |name: &str, region: &str, env: &str| {
        let mut g = group(name);
        g["region"] = json!(region);
        g["environment"] = json!(env);
        g
    };
    let j1 = make("j1", "us-ashburn-1", "prod");
    let j2 = make("j2", "US-ASHBURN-1", "PROD");
    let j3 = make("j3", "eu-frankfurt-1", "prod");
    let j4 = make("j4", "us-ashburn-1", "prod");
    let mut j5 = make("j5", "us-ashburn-1", "prod");
    j5["enableScheduler"] = json!(false);
    let mut jibri = make("jibri1", "us-ashburn-1", "prod");
    jibri["type"] = json!("jibri");
    for g in [&j1, &j2, &j3, &j4, &j5, &jibri] {
        s.create_group(g).await;
    }
    s.put(
        "/groups/j4/scheduled-scaling",
        json!({"enabled": true, "timezone": "UTC", "periods": []}),
    )
    .await
    .expect(200, &json!({"save": "OK"}));

    let body = |direction: &str, desired: u32| {
        json!({"environment": "prod", "region": "us-ashburn-1", "instanceType": "jvb",
            "direction": direction,
            "options": {"minDesired": 0, "maxDesired": 20, "desiredCount": desired,
                "scaleUpQuantity": 2, "scaleDownQuantity": 1, "scaleUpThreshold": 0.6,
                "scaleDownThreshold": 0.2, "scalePeriod": 60, "scaleUpPeriodsCount": 2,
                "scaleDownPeriodsCount": 4}})
    };
    let reply = s.put("/groups/options/full-scaling", body("UP", 6)).await;
    reply.expect(
        200,
        &json!({"groupsToBeUpdated": 2, "groupsUpdated": 2,
            "skippedGroups": [{"name": "j4", "reason": "Group uses scheduled scaling"}]}),
    );
    for name in ["j1", "j2"] {
        let o = &s.group(name).await["scalingOptions"];
        assert_eq!(
            (&o["desiredCount"], &o["maxDesired"], &o["scaleUpQuantity"]),
            (&json!(6), &json!(20), &json!(2)),
            "{name}"
        );
    }
    for name in ["j3", "j4", "j5", "jibri1"] {
        assert_eq!(
            s.group(name).await["scalingOptions"]["desiredCount"],
            1,
            "{name}"
        );
    }
    // Direction-monotone: "down" never raises the desired count.
    s.put("/groups/options/full-scaling", body("down", 8))
        .await
        .expect(
            200,
            &json!({"groupsToBeUpdated": 2, "groupsUpdated": 2,
                "skippedGroups": [{"name": "j4", "reason": "Group uses scheduled scaling"}]}),
        );
    assert_eq!(s.group("j1").await["scalingOptions"]["desiredCount"], 6);

    let mut nothing = body("up", 1);
    nothing["region"] = json!("ap-tokyo-1");
    s.put("/groups/options/full-scaling", nothing)
        .await
        .expect(200, &json!({"groupsToBeUpdated": 0, "groupsUpdated": 0}));

    let mut bad = body("sideways", 1);
    bad["instanceType"] = json!("banana");
    bad["options"]["minDesired"] = json!(-1);
    let errors = s
        .put("/groups/options/full-scaling", bad)
        .await
        .field_errors();
    assert!(
        errors.contains(&(
            "direction".into(),
            "Scaling direction not supported. Use up or down instead".into()
        )),
        "{errors:?}"
    );
    assert!(errors.contains(&("instanceType".into(), "Instance type not supported. Use stress, availabity, jvb, jigasi, nomad, jibri, whisper or sip-jibri instead".into())), "{errors:?}");
    assert!(
        errors.contains(&("options.minDesired".into(), "Value must be positive".into())),
        "{errors:?}"
    );
}

#[tokio::test]
async fn launch_protected_raises_desired_and_merges_tags() {
    let (s, _dir) = server().await;
    s.create_group(&group("g")).await;
    s.post(
        "/groups/g/actions/launch-protected",
        json!({"count": 2, "protectedTTLSec": 300, "tags": {"purpose": "event"},
               "instanceConfigurationId": "cfg-2"}),
    )
    .await
    .expect(200, &json!({"launch": "OK"}));
    let g = s.group("g").await;
    assert_eq!(g["scalingOptions"]["desiredCount"], 3);
    assert_eq!(g["protectedTTLSec"], 300);
    assert_eq!(g["instanceConfigurationId"], "cfg-2");
    assert_eq!(
        g["tags"],
        json!({"release_number": "150", "purpose": "event"})
    );

    s.post(
        "/groups/g/actions/launch-protected",
        json!({"count": 5, "protectedTTLSec": 300}),
    )
    .await
    .expect(
        400,
        &json!({"errors": [field_error("count",
            "Max desired value must be increased first if you want to launch 5 new instances.",
            Some(json!(5)))]}),
    );
    s.post(
        "/groups/g/actions/launch-protected",
        json!({"count": 5, "maxDesired": 10, "protectedTTLSec": 60}),
    )
    .await
    .expect(200, &json!({"launch": "OK"}));
    let o = &s.group("g").await["scalingOptions"];
    assert_eq!(
        (&o["desiredCount"], &o["maxDesired"]),
        (&json!(8), &json!(10))
    );

    let cases = [
        (json!({"count": -1, "protectedTTLSec": 60}), "count"),
        (json!({"protectedTTLSec": 60}), "count"),
        (json!({"count": 1}), "protectedTTLSec"),
        (json!({"count": 1, "protectedTTLSec": 0}), "protectedTTLSec"),
        (
            json!({"count": 1, "protectedTTLSec": 60, "tags": {"a": 1}}),
            "tags",
        ),
        (
            json!({"count": 1, "protectedTTLSec": 60, "instanceConfigurationId": 3}),
            "instanceConfigurationId",
        ),
    ];
    for (body, path) in cases {
        let errors = s
            .post("/groups/g/actions/launch-protected", body.clone())
            .await
            .field_errors();
        assert_eq!(errors.len(), 1, "{body}: {errors:?}");
        assert_eq!(errors[0].0, path, "{body}");
    }
    assert_eq!(
        s.post(
            "/groups/nope/actions/launch-protected",
            json!({"count": 1, "protectedTTLSec": 60})
        )
        .await
        .status,
        404
    );
    assert_eq!(s.group("g").await["scalingOptions"]["desiredCount"], 8);
}

#[tokio::test]
async fn reconfigure_round_trip_with_status_and_poll_only_sidecars() {
    let (s, _dir) = server().await;
    s.create_group(&group("g")).await;
    s.post_empty("/groups/g/actions/reconfigure-instances")
        .await
        .expect(
            403,
            &json!({"save": false, "error": "Reconfiguration disabled for group"}),
        );
    assert_eq!(
        s.post_empty("/groups/nope/actions/reconfigure-instances")
            .await
            .expect_error(404, "not_found"),
        "Group nope not found"
    );
    s.put(
        "/groups/g/scaling-activities",
        json!({"enableReconfiguration": true}),
    )
    .await
    .expect(200, &json!({"save": "OK"}));

    let nothing = json!({"shutdown": false, "reconfigure": null});
    s.sidecar("status", jvb_report("i-1", "g", 0.2))
        .await
        .expect(200, &nothing);
    s.sidecar("poll", details("i-2", "g"))
        .await
        .expect(200, &nothing);

    let reply = s
        .post_empty("/groups/g/actions/reconfigure-instances")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let mut instances = reply.json()["instances"]
        .as_array()
        .expect("instances")
        .clone();
    instances.sort_by_key(|i| i["instanceId"].as_str().unwrap_or_default().to_owned());
    assert_eq!(reply.json()["save"], "OK");
    assert_eq!(
        instances,
        [
            json!({"instanceId": "i-1", "instanceType": "JVB", "group": "g"}),
            json!({"instanceId": "i-2", "instanceType": "JVB", "group": "g"}),
        ]
    );

    // A reporting sidecar gets the date until it reports completion.
    let answer = s
        .sidecar("status", jvb_report("i-1", "g", 0.2))
        .await
        .json();
    assert_eq!(answer["shutdown"], false);
    let date = answer["reconfigure"].clone();
    assert!(is_iso(&date), "{answer}");
    assert_eq!(
        s.sidecar("poll", details("i-1", "g")).await.json()["reconfigure"],
        date
    );
    let report = s.report("g").await;
    assert_eq!(report["reconfigureScheduledCount"], 2, "{report}");
    assert!(is_iso(
        &s.get("/groups/g/group-audit").await.json()["audit"]["lastReconfigureRequest"]
    ));

    let mut done = jvb_report("i-1", "g", 0.2);
    done["reconfigureComplete"] = date.clone();
    s.sidecar("status", done.clone())
        .await
        .expect(200, &json!({"shutdown": false, "reconfigure": ""}));
    s.sidecar("status", done).await.expect(200, &nothing);
    let report = s.report("g").await;
    let i1 = report["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .find(|i| i["instanceId"] == "i-1")
        .expect("i-1")
        .clone();
    assert_eq!(i1["lastReconfigured"], date, "{i1}");
    assert_eq!(i1["reconfigureScheduled"], Value::Null, "{i1}");

    // A poll-only sidecar gets it once (R10).
    assert_eq!(
        s.sidecar("poll", details("i-2", "g")).await.json()["reconfigure"],
        date
    );
    s.sidecar("poll", details("i-2", "g"))
        .await
        .expect(200, &nothing);
    assert_eq!(s.report("g").await["reconfigureScheduledCount"], 0);

    let audit = s.get("/groups/g/instance-audit").await.json()["audit"].clone();
    let i1 = audit
        .as_array()
        .expect("audit")
        .iter()
        .find(|a| a["instanceId"] == "i-1")
        .expect("i-1 audited")
        .clone();
    assert!(is_iso(&i1["requestToReconfigure"]), "{i1}");
    assert!(is_iso(&i1["reconfigureComplete"]), "{i1}");
    assert!(is_iso(&i1["latestStatus"]), "{i1}");
    assert_eq!(i1["latestStatusInfo"]["instanceId"], "i-1", "{i1}");
}

#[tokio::test]
async fn report_shows_every_instance_with_its_scale_status() {
    let (s, _dir) = server().await;
    s.create_group(&group("g")).await;
    s.sidecar("status", jvb_report("i-busy", "g", 0.4)).await;
    let mut draining = jvb_report("i-drain", "g", 0.1);
    draining["stats"]["graceful_shutdown"] = json!(true);
    s.sidecar("status", draining).await;
    let mut idle = jvb_report("i-idle", "g", 0.0);
    idle["stats"] = json!({"stress_level": 0.0, "participants": 0, "conferences": 0});
    s.sidecar("status", idle).await;
    s.sidecar("poll", details("i-poll", "g")).await;
    let mut stopping = jvb_report("i-stop", "g", 0.1);
    stopping["shutdownStatus"] = json!(true);
    s.sidecar("status", stopping).await;
    s.sidecar("shutdown", details("i-stop", "g")).await;

    let report = s.report("g").await;
    let status_of = |id: &str| {
        report["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .find(|i| i["instanceId"] == id)
            .unwrap_or_else(|| panic!("{id} in {report}"))
            .clone()
    };
    assert_eq!(status_of("i-busy")["scaleStatus"], "IN USE");
    assert_eq!(status_of("i-drain")["scaleStatus"], "GRACEFUL SHUTDOWN");
    assert_eq!(status_of("i-idle")["scaleStatus"], "SIDECAR_RUNNING");
    assert_eq!(status_of("i-poll")["scaleStatus"], "ONLINE");
    assert_eq!(status_of("i-stop")["scaleStatus"], "SHUTDOWN COMPLETE");
    assert!(is_iso(&status_of("i-stop")["shutdownComplete"]));

    let busy = status_of("i-busy");
    for (key, value) in [
        ("group", json!("g")),
        ("displayName", json!("unknown")),
        ("instanceName", json!("g-i-busy")),
        ("version", json!("2.3.100")),
        ("cloudStatus", json!("unknown")),
        ("isShuttingDown", json!(false)),
        ("shutdownComplete", json!(false)),
        ("reconfigureError", json!(false)),
        ("shutdownError", json!(false)),
        ("isScaleDownProtected", json!(false)),
        ("reconfigureScheduled", Value::Null),
        ("privateIp", json!("10.0.0.5")),
        ("publicIp", json!("1.2.3.4")),
    ] {
        assert_eq!(busy[key], value, "{key} in {busy}");
    }
    assert_eq!(report["groupName"], "g");
    assert_eq!(report["desiredCount"], 1);
    assert_eq!(report["count"], 5);
    assert_eq!(report["shuttingDownCount"], 1);
    assert_eq!(report["shutdownCount"], 1);
    assert_eq!(report["provisioningCount"], 0);
    assert_eq!(
        report["availableCount"], 0,
        "stress groups have no idle count"
    );
    for key in [
        "cloudCount",
        "busyCount",
        "expiredCount",
        "unTrackedCount",
        "shutdownErrorCount",
        "reconfigureErrorCount",
        "reconfigureScheduledCount",
        "scaleDownProtectedCount",
    ] {
        assert_eq!(report[key], 0, "{key}");
    }
    assert_eq!(
        s.get("/groups/nope/report")
            .await
            .expect_error(404, "not_found"),
        "Group nope not found"
    );

    let audit = s.get("/groups/g/group-audit").await;
    assert_eq!(audit.status, 200, "{audit:?}");
    let audit = audit.json()["audit"].clone();
    for key in [
        "lastLauncherRun",
        "lastAutoScalerRun",
        "lastReconfigureRequest",
    ] {
        assert!(
            audit[key] == "unknown" || is_iso(&audit[key]),
            "{key}: {audit}"
        );
    }
    assert_eq!(audit["lastReconfigureRequest"], "unknown");
    assert!(audit["autoScalerActionItems"].is_array() && audit["launcherActionItems"].is_array());
}

#[tokio::test]
async fn jibri_groups_count_idle_busy_and_expired() {
    let (s, _dir) = server().await;
    let mut g = group("jibri");
    g["type"] = json!("jibri");
    s.create_group(&g).await;
    for (id, status) in [
        ("j-1", "IDLE"),
        ("j-2", "BUSY"),
        ("j-3", "EXPIRED"),
        ("j-4", "IDLE"),
    ] {
        let body = json!({"instance": {"instanceId": id, "instanceType": "jibri", "group": "jibri"},
            "stats": {"status": {"busyStatus": status, "health": {"healthStatus": "HEALTHY", "details": {}}}},
            "timestamp": jiff::Timestamp::now().as_millisecond(), "shutdownStatus": false,
            "shutdownError": false, "reconfigureError": false, "reconfigureComplete": "", "statsError": false});
        s.sidecar("stats", body)
            .await
            .expect(200, &json!({"save": "OK"}));
    }
    let report = s.report("jibri").await;
    assert_eq!(
        (
            &report["availableCount"],
            &report["busyCount"],
            &report["expiredCount"],
            &report["count"]
        ),
        (&json!(2), &json!(1), &json!(1), &json!(4)),
        "{report}"
    );
}

#[tokio::test]
async fn scheduled_scaling_get_put_delete() {
    let (s, _dir) = server().await;
    s.create_group(&group("g")).await;
    s.get("/groups/g/scheduled-scaling").await.expect(
        200,
        &json!({"scheduledScaling": null, "activePeriod": null}),
    );

    // A period covering every minute of every day (start == end) is always active.
    let period = json!({"name": "always", "dayOfWeek": [0, 1, 2, 3, 4, 5, 6], "startHour": 0,
        "startMinute": 0, "endHour": 0, "endMinute": 0, "priority": 10, "inhibitScaleDown": true,
        "scalingOptions": {"minDesired": 2, "maxDesired": 6}});
    let config = json!({"enabled": true, "timezone": "America/New_York", "periods": [period]});
    s.put("/groups/g/scheduled-scaling", config.clone())
        .await
        .expect(200, &json!({"save": "OK"}));
    let view = s.get("/groups/g/scheduled-scaling").await.json();
    assert_eq!(view["scheduledScaling"], config);
    assert_eq!(view["activePeriod"], config["periods"][0]);
    assert_eq!(view["resolvedTimezone"], "America/New_York");
    assert_eq!(view["scheduledScalingActivePeriod"], "always");
    assert_eq!(
        view["scheduledScalingBaseOptions"],
        group("g")["scalingOptions"]
    );
    let g = s.group("g").await;
    assert_eq!(g["enableScheduler"], false);
    let o = &g["scalingOptions"];
    assert_eq!(
        (&o["minDesired"], &o["maxDesired"], &o["desiredCount"]),
        (&json!(2), &json!(6), &json!(2))
    );

    // Disabling restores the base options and lets full-scaling select the group again.
    let mut disabled = config.clone();
    disabled["enabled"] = json!(false);
    s.put("/groups/g/scheduled-scaling", disabled)
        .await
        .expect(200, &json!({"save": "OK"}));
    let g = s.group("g").await;
    assert_eq!(g["enableScheduler"], true);
    assert_eq!(g["scalingOptions"], group("g")["scalingOptions"]);
    let view = s.get("/groups/g/scheduled-scaling").await.json();
    assert_eq!(view["activePeriod"], Value::Null, "{view}");
    assert_eq!(view["scheduledScalingActivePeriod"], Value::Null, "{view}");
    s.put("/groups/g/scheduled-scaling", config.clone())
        .await
        .expect(200, &json!({"save": "OK"}));

    s.delete("/groups/g/scheduled-scaling")
        .await
        .expect(200, &json!({"save": "OK"}));
    let g = s.group("g").await;
    assert_eq!(g["enableScheduler"], true);
    assert_eq!(
        g["scalingOptions"],
        group("g")["scalingOptions"],
        "base options restored"
    );
    assert!(g.get("scheduledScaling").is_none_or(Value::is_null), "{g}");
    s.get("/groups/g/scheduled-scaling").await.expect(
        200,
        &json!({"scheduledScaling": null, "activePeriod": null}),
    );
    let audit = s.get("/groups/g/group-audit").await.json();
    let items = audit["audit"]["autoScalerActionItems"]
        .as_array()
        .expect("items")
        .clone();
    assert!(
        items
            .iter()
            .any(|i| i["actionType"] == "scheduledScalingDeleted"
                && i["detail"]["previousActivePeriod"] == "always"),
        "{audit}"
    );

    s.put(
        "/groups/g/scheduled-scaling",
        json!({"enabled": true, "timezone": "Mars/Base", "periods": []}),
    )
    .await
    .expect(400, &json!({"errors": ["Invalid timezone: Mars/Base"]}));
    let messages = |body: Value| {
        let s = &s;
        async move {
            s.put("/groups/g/scheduled-scaling", body)
                .await
                .field_errors()
                .into_iter()
                .map(|(_, m)| m)
                .collect::<Vec<_>>()
        }
    };
    let bad_period = json!({"name": "", "dayOfWeek": [7], "startHour": 24, "startMinute": 60,
        "endHour": -1, "endMinute": 99, "priority": "high", "scalingOptions": {"minDesired": -1}});
    let found = messages(json!({"enabled": true, "periods": [bad_period]})).await;
    for expected in [
        "Period name must be a non-empty string",
        "dayOfWeek values must be 0-6",
        "startHour must be 0-23",
        "startMinute must be 0-59",
        "endHour must be 0-23",
        "endMinute must be 0-59",
        "priority must be a number",
        "Value must be positive",
    ] {
        assert!(
            found.iter().any(|m| m == expected),
            "{expected} in {found:?}"
        );
    }
    let found = messages(json!({"enabled": "yes", "timezone": 5, "periods": "x"})).await;
    for expected in [
        "enabled must be a boolean",
        "timezone must be a string",
        "periods must be an array",
    ] {
        assert!(
            found.iter().any(|m| m == expected),
            "{expected} in {found:?}"
        );
    }
    let found = messages(
        json!({"enabled": true, "periods": [{"name": "p", "dayOfWeek": [],
        "startHour": 1, "endHour": 2}]}),
    )
    .await;
    assert!(
        found
            .iter()
            .any(|m| m == "dayOfWeek must be a non-empty array"),
        "{found:?}"
    );

    for (method, body) in [
        (Method::GET, Body::None),
        (Method::PUT, Body::Json(config)),
        (Method::DELETE, Body::None),
    ] {
        let reply = s
            .call(
                method,
                "/groups/nope/scheduled-scaling",
                Some(harness::ADMIN),
                body,
            )
            .await;
        assert_eq!(reply.expect_error(404, "not_found"), "Group nope not found");
    }
}

#[tokio::test]
async fn sidecar_routes_answer_commands_and_refuse_bad_bodies() {
    let (s, _dir) = server().await;
    s.create_group(&group("g")).await;
    let nothing = json!({"shutdown": false, "reconfigure": null});
    s.sidecar("poll", details("i-1", "g"))
        .await
        .expect(200, &nothing);
    s.sidecar("status", jvb_report("i-1", "g", 0.3))
        .await
        .expect(200, &nothing);
    s.sidecar("stats", jvb_report("i-1", "g", 0.3))
        .await
        .expect(200, &json!({"save": "OK"}));

    // Only the type and the id are required; metadata of any kind is kept.
    s.sidecar(
        "poll",
        json!({"instanceId": "i-min", "instanceType": "JVB"}),
    )
    .await
    .expect(200, &nothing);
    // A report for a group that does not exist is answered, not stored as a group (R7).
    s.sidecar("status", jvb_report("i-x", "no-such-group", 0.3))
        .await
        .expect(200, &nothing);
    assert_eq!(s.get("/groups/no-such-group").await.status, 404);

    // R1: a JSON body is parsed whatever the content type says.
    let raw = serde_json::to_vec(&details("i-1", "g")).expect("json");
    for content_type in [
        Some("text/plain"),
        None,
        Some("application/x-www-form-urlencoded"),
    ] {
        s.call(
            Method::POST,
            "/sidecar/poll",
            Some(SIDECAR),
            Body::Raw(raw.clone(), content_type),
        )
        .await
        .expect(200, &nothing);
    }

    let bad_bodies: [(&str, &[u8]); 8] = [
        ("poll", b"{\"instanceId\": \"i-1\""),
        ("poll", b"{}"),
        ("poll", b"{\"instanceId\": \"\"}"),
        ("poll", b"[]"),
        ("poll", b""),
        ("status", b"{\"instance\": {}}"),
        ("stats", b"{\"stats\": {}}"),
        ("shutdown", b"not json at all"),
    ];
    for (route, body) in bad_bodies {
        let reply = s
            .call(
                Method::POST,
                &format!("/sidecar/{route}"),
                Some(SIDECAR),
                Body::Raw(body.to_vec(), Some("application/json")),
            )
            .await;
        assert_eq!(
            reply.status,
            400,
            "{route} {:?}: {reply:?}",
            String::from_utf8_lossy(body)
        );
        assert!(reply.json()["errors"][0]["msg"].is_string(), "{reply:?}");
    }

    // The shutdown flag reaches both command routes; the confirmation is idempotent.
    let now = jiff::Timestamp::now().as_millisecond();
    s.scaler
        .store()
        .update_flags(
            &[jitsi_scaler_core::store::FlagUpdate::RequestShutdown {
                instance_id: "i-1".into(),
                at_ms: now,
                expires_ms: now + 60_000,
            }],
            None,
        )
        .await
        .expect("flag");
    let shutdown = json!({"shutdown": true, "reconfigure": null});
    s.sidecar("poll", details("i-1", "g"))
        .await
        .expect(200, &shutdown);
    s.sidecar("status", jvb_report("i-1", "g", 0.3))
        .await
        .expect(200, &shutdown);
    for _ in 0..2 {
        s.sidecar("shutdown", details("i-1", "g"))
            .await
            .expect(200, &json!({"save": "OK"}));
    }
    let report = s.report("g").await;
    assert_eq!(report["shutdownCount"], 1, "{report}");
}

#[tokio::test]
async fn unknown_paths_methods_media_types_sizes_and_reservations_are_json() {
    let (s, _dir) = server().await;
    s.create_group(&group("g")).await;

    let reply = s
        .call(Method::GET, "/nope", Some(harness::ADMIN), Body::None)
        .await;
    reply.expect(
        404,
        &json!({"errors": [{"type": "not_found", "msg": "Not Found"}]}),
    );
    let reply = s
        .call(Method::GET, "/groups/g/nope/deeper", None, Body::None)
        .await;
    assert_eq!(reply.expect_error(404, "not_found"), "Not Found");

    for (method, path) in [
        (Method::PATCH, "/groups/g"),
        (Method::GET, "/sidecar/poll"),
        (Method::POST, "/groups/g"),
        (Method::DELETE, "/groups/options/full-scaling"),
        (Method::GET, "/groups/actions/reset"),
    ] {
        let reply = s
            .call(method.clone(), path, Some(harness::ADMIN), Body::None)
            .await;
        assert_eq!(
            reply.expect_error(405, "request"),
            "Method Not Allowed",
            "{method} {path}"
        );
    }

    for (method, path) in [
        (Method::GET, "/groups/g/reservations"),
        (Method::POST, "/groups/g/reservations"),
        (Method::GET, "/groups/g/reservations/r-1"),
        (Method::PUT, "/groups/g/reservations/r-1"),
        (Method::DELETE, "/groups/g/reservations/r-1"),
    ] {
        let reply = s
            .call(
                method.clone(),
                path,
                Some(harness::ADMIN),
                Body::Json(json!({})),
            )
            .await;
        reply.expect_error(501, "not_implemented");
    }

    let reply = s
        .call(
            Method::PUT,
            "/groups/g/desired",
            Some(harness::ADMIN),
            Body::Raw(b"{\"desiredCount\":2}".to_vec(), Some("text/plain")),
        )
        .await;
    reply.expect_error(415, "request");
    // No content type with a JSON body is parsed (rest-api.md §1).
    s.call(
        Method::PUT,
        "/groups/g/desired",
        Some(harness::ADMIN),
        Body::Raw(b"{\"desiredCount\":2}".to_vec(), None),
    )
    .await
    .expect(200, &json!({"save": "OK"}));

    // Bodies beyond the 1 MiB limit: 413 JSON on admin and sidecar routes alike.
    let mut huge = group("g");
    huge["padding"] = json!("x".repeat(1_100_000));
    let reply = s.put("/groups/g", huge).await;
    reply.expect_error(413, "request");
    let mut huge_report = jvb_report("i-1", "g", 0.1);
    huge_report["stats"]["padding"] = json!("y".repeat(1_100_000));
    let reply = s.sidecar("status", huge_report).await;
    reply.expect_error(413, "request");
    // Just under the limit is fine.
    let mut big = group("g");
    big["padding"] = json!("x".repeat(1_000_000));
    s.put("/groups/g", big)
        .await
        .expect(200, &json!({"save": "OK"}));

    // Malformed JSON on admin routes: 400 JSON, never 500.
    for path in [
        "/groups/g",
        "/groups/g/desired",
        "/groups/options/full-scaling",
    ] {
        let reply = s
            .call(
                Method::PUT,
                path,
                Some(harness::ADMIN),
                Body::Raw(b"{\"name\": \"g\",".to_vec(), Some("application/json")),
            )
            .await;
        reply.expect_error(400, "request");
    }
    // Every answer carries a request id.
    assert!(reply_has_request_id(&s.get("/groups").await));
}

fn reply_has_request_id(reply: &harness::Reply) -> bool {
    reply.header("x-request-id").is_some_and(|v| !v.is_empty())
}

#[tokio::test]
async fn path_names_that_are_not_utf8_get_a_json_error() {
    let (s, _dir) = server().await;
    for path in ["/groups/%FF", "/groups/%FF/report", "/groups/a%C3/desired"] {
        let method = if path.ends_with("desired") {
            Method::PUT
        } else {
            Method::GET
        };
        let reply = s
            .call(method, path, Some(harness::ADMIN), Body::Json(json!({})))
            .await;
        assert!(
            reply.status == 400 || reply.status == 404,
            "{path}: {reply:?}"
        );
        assert!(reply.json()["errors"].is_array(), "{path}: {reply:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Health, metrics, OpenAPI

/// The value of the first sample line starting with `series` (name and labels).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn health_answers_as_the_reference() {
    let (s, _dir) = server().await;
    let reply = s.metrics_get("/health", None).await;
    assert_eq!((reply.status, reply.text.as_str()), (200, "healthy!"));
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    let reply = s.metrics_get("/health?deep=", None).await;
    assert_eq!((reply.status, reply.text.as_str()), (200, "healthy!"));

    // Deep health waits for the engine's first pass.
    let deep = harness::eventually("deep health", || async {
        let reply = s.metrics_get("/health?deep=1", None).await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(deep.text, "deeply healthy");
    let reply = s
        .metrics_get("/health?deep=yes", Some("application/json"))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(
        (
            &body["instanceStore"],
            &body["jobQueue"],
            &body["jobsStarted"]
        ),
        (&json!(true), &json!(true), &json!(true))
    );
    assert!(body["leadership"].is_object(), "{body}");

    let reply = s.metrics_get("/livez", None).await;
    assert_eq!((reply.status, reply.text.as_str()), (200, "ok"));
    let reply = s.metrics_get("/readyz", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["ready"], true);
    let reply = s.metrics_get("/nope", None).await;
    reply.expect(
        404,
        &json!({"errors": [{"type": "not_found", "msg": "Not Found"}]}),
    );
    // Repeated or undecodable values still ask for the deep check (never a plain-text 400).
    for query in [
        "/health?deep=%FF",
        "/health?deep=1&deep=2",
        "/health?x=1&deep=true",
    ] {
        let reply = s.metrics_get(query, None).await;
        assert_eq!(
            (reply.status, reply.text.as_str()),
            (200, "deeply healthy"),
            "{query}"
        );
    }
}

#[tokio::test]
async fn metrics_expose_the_reference_names() {
    let (s, _dir) = server().await;
    s.create_group(&group("g")).await;
    s.get("/groups").await;
    s.get("/groups/nope").await;
    s.sidecar("status", jvb_report("i-1", "g", 0.3)).await;
    s.sidecar("status", jvb_report("i-2", "ghost-group", 0.3))
        .await;

    let text = s.metrics_text().await;
    for family in [
        "# TYPE autoscaler_stats_handled counter",
        "# TYPE autoscaler_stats_errors counter",
        "# TYPE http_server_requests_total counter",
        "# TYPE http_server_requests_in_flight gauge",
        "# TYPE http_server_request_duration_seconds histogram",
        "# TYPE autoscaling_desired_count gauge",
        "# TYPE autoscaling_groups_managed gauge",
        "# TYPE autoscaler_group_processing_errors counter",
    ] {
        assert!(text.contains(family), "{family} in\n{text}");
    }
    assert!(
        sample(&text, "autoscaler_stats_handled").is_some_and(|v| v >= 2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"http_server_requests_total{method="GET",code="200",uri="/groups"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"http_server_requests_total{method="GET",code="404",uri="/groups/name"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"http_server_requests_total{method="POST",code="200",uri="/sidecar/status"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        text.contains(
            r#"http_server_request_duration_seconds_bucket{method="GET",uri="/groups",le="0.003"}"#
        ),
        "{text}"
    );
    assert_eq!(
        sample(&text, "jitsi_scaler_reports_unknown_group_total"),
        Some(1.0),
        "{text}"
    );
    for kind in ["AUTOSCALE", "LAUNCH", "SANITY", "SCHEDULED_SCALING"] {
        let series = format!(r#"autoscaling_job_process_total{{type="{kind}"}}"#);
        assert!(sample(&text, &series).is_some(), "{series} in\n{text}");
    }

    // Group gauges follow the group, and disappear with it.
    let desired = |n: f64| {
        let s = &s;
        move || async move {
            let text = s.metrics_text().await;
            (sample(&text, r#"autoscaling_desired_count{group="g"}"#) == Some(n)).then_some(text)
        }
    };
    let text = harness::eventually("desired count 1 exported", desired(1.0)).await;
    assert_eq!(
        sample(&text, r#"autoscaling_maximum_count{group="g"}"#),
        Some(4.0)
    );
    assert_eq!(sample(&text, "autoscaling_groups_managed"), Some(1.0));
    assert_eq!(
        sample(&text, "jitsi_scaler_leader"),
        Some(1.0),
        "a single node leads"
    );
    s.put("/groups/g/desired", json!({"desiredCount": 3})).await;
    harness::eventually("desired count 3 exported", desired(3.0)).await;
    s.sidecar("shutdown", details("i-1", "g")).await;
    s.delete("/groups/g").await.expect(200, &json!({}));
    let text = harness::eventually("the group's gauges removed", || async {
        let text = s.metrics_text().await;
        (!text.contains(r#"group="g""#)).then_some(text)
    })
    .await;
    assert_eq!(
        sample(&text, "autoscaling_groups_managed"),
        Some(0.0),
        "{text}"
    );
}

/// Every admin route of rest-api.md §3 and the sidecar routes, with their methods.
const ROUTES: [(&str, &[&str]); 18] = [
    ("/sidecar/poll", &["post"]),
    ("/sidecar/status", &["post"]),
    ("/sidecar/stats", &["post"]),
    ("/sidecar/shutdown", &["post"]),
    ("/groups", &["get"]),
    ("/groups/{name}", &["get", "put", "delete"]),
    ("/groups/actions/reset", &["post"]),
    ("/groups/options/full-scaling", &["put"]),
    ("/groups/{name}/desired", &["put"]),
    ("/groups/{name}/scaling-options", &["put"]),
    ("/groups/{name}/scaling-activities", &["put"]),
    ("/groups/{name}/instance-configuration", &["put"]),
    ("/groups/{name}/actions/launch-protected", &["post"]),
    ("/groups/{name}/actions/reconfigure-instances", &["post"]),
    ("/groups/{name}/report", &["get"]),
    ("/groups/{name}/group-audit", &["get"]),
    ("/groups/{name}/instance-audit", &["get"]),
    (
        "/groups/{name}/scheduled-scaling",
        &["get", "put", "delete"],
    ),
];

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// The structural rules of an OpenAPI 3 document that a client generator relies on.
fn check_openapi(doc: &Value) {
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in ROUTES {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} documented"));
        for method in methods {
            assert!(item.get(*method).is_some(), "{method} {path} documented");
        }
    }
    let mut operation_ids = std::collections::HashSet::new();
    for (path, item) in paths {
        assert!(path.starts_with('/'), "{path}");
        let templated: Vec<&str> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, op) in item.as_object().expect("path item") {
            assert!(
                [
                    "get", "put", "post", "delete", "patch", "head", "options", "trace"
                ]
                .contains(&method.as_str()),
                "{method} {path}"
            );
            let responses = op["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{method} {path} has responses");
            for (code, response) in responses {
                assert!(
                    code == "default" || (code.len() == 3 && code.parse::<u16>().is_ok()),
                    "{method} {path}: {code}"
                );
                assert!(
                    response["description"].is_string(),
                    "{method} {path} {code}"
                );
            }
            for name in &templated {
                let declared = op["parameters"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p["name"] == *name && p["in"] == "path" && p["required"] == true)
                });
                assert!(declared, "{method} {path} declares {{{name}}}");
            }
            if let Some(id) = op["operationId"].as_str() {
                assert!(
                    operation_ids.insert(id.to_owned()),
                    "operationId {id} is unique"
                );
            }
        }
    }
    let mut all = Vec::new();
    refs(doc, &mut all);
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("local $ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "$ref {r} resolves");
    }
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let (s, _dir) = server().await;
    let on_api = s.call(Method::GET, "/openapi.json", None, Body::None).await;
    assert_eq!(on_api.status, 200, "no token needed: {on_api:?}");
    check_openapi(&on_api.json());
    let on_metrics = s.metrics_get("/openapi.json", None).await;
    assert_eq!(on_metrics.json(), on_api.json());
}

// ---------------------------------------------------------------------------------------------
// Store failures (the server assembled over a faulty store)

use harness::faulty::Fault;
use harness::parts::Parts;
use jitsi_scaler_server::api::Limits;

#[tokio::test]
async fn store_failures_are_503_with_retry_after() {
    let p = Parts::start(Limits::default()).await;
    p.call(Method::PUT, "/groups/g", Body::Json(group("g")))
        .await
        .expect(200, &json!({"save": "OK"}));
    p.store.inject("*", None, Fault::Fail);
    let check = |reply: harness::Reply| {
        reply.expect_error(503, "unavailable");
        assert_eq!(reply.header("retry-after"), Some("1"), "{reply:?}");
    };
    for (route, body) in [
        ("poll", details("i-1", "g")),
        ("status", jvb_report("i-1", "g", 0.5)),
        ("stats", jvb_report("i-1", "g", 0.5)),
        ("shutdown", details("i-1", "g")),
    ] {
        check(
            p.call(Method::POST, &format!("/sidecar/{route}"), Body::Json(body))
                .await,
        );
    }
    check(p.call(Method::GET, "/groups", Body::None).await);
    check(p.call(Method::GET, "/groups/g/report", Body::None).await);
    check(
        p.call(
            Method::PUT,
            "/groups/g/desired",
            Body::Json(json!({"desiredCount": 2})),
        )
        .await,
    );

    let reply = p.metrics_get("/health?deep=1", None).await;
    assert_eq!(reply.status, 500, "{reply:?}");
    let body = reply.json();
    assert_eq!(
        (&body["status"], &body["instanceStore"]),
        (&json!("unhealthy"), &json!(false))
    );
    assert_eq!(p.metrics_get("/readyz", None).await.status, 503);
    assert_eq!(
        p.metrics_get("/health", None).await.text,
        "healthy!",
        "shallow health needs no store"
    );

    p.store.heal();
    p.call(
        Method::POST,
        "/sidecar/poll",
        Body::Json(details("i-1", "g")),
    )
    .await
    .expect(200, &json!({"shutdown": false, "reconfigure": null}));
}

#[tokio::test]
async fn a_hanging_store_is_answered_before_the_sidecar_gives_up() {
    let p = Parts::start(Limits::default()).await;
    p.store.inject("check_in", None, Fault::Hang);
    for (route, body) in [
        ("poll", details("i-1", "g")),
        ("status", jvb_report("i-1", "g", 0.5)),
    ] {
        // The reference sidecar waits 3 s.
        let response = p
            .http
            .post(format!("{}/sidecar/{route}", p.api))
            .json(&body)
            .timeout(std::time::Duration::from_secs(3))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{route} answered within 3 s: {e}"));
        let reply = harness::Reply::from(response).await;
        reply.expect_error(503, "unavailable");
        assert_eq!(reply.header("retry-after"), Some("1"));
    }

    // Admin requests are cut at the request deadline, with the same answer.
    let p = Parts::start(Limits {
        request_timeout: std::time::Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    p.store.inject("list_groups", None, Fault::Hang);
    let reply = p.call(Method::GET, "/groups", Body::None).await;
    reply.expect_error(503, "unavailable");
    assert_eq!(reply.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn full_scaling_answers_206_when_a_group_cannot_be_updated() {
    let p = Parts::start(Limits::default()).await;
    for name in ["j1", "j2"] {
        let mut g = group(name);
        g["environment"] = json!("prod");
        p.call(Method::PUT, &format!("/groups/{name}"), Body::Json(g))
            .await
            .expect(200, &json!({"save": "OK"}));
    }
    p.store.inject("put_group", Some("j2"), Fault::Fail);
    let body = json!({"environment": "prod", "region": "local-1", "instanceType": "JVB",
        "direction": "up", "options": {"desiredCount": 3}});
    p.call(
        Method::PUT,
        "/groups/options/full-scaling",
        Body::Json(body),
    )
    .await
    .expect(206, &json!({"groupsToBeUpdated": 2, "groupsUpdated": 1}));
    let j1 = p.call(Method::GET, "/groups/j1", Body::None).await.json();
    assert_eq!(j1["instanceGroup"]["scalingOptions"]["desiredCount"], 3);
    let j2 = p.call(Method::GET, "/groups/j2", Body::None).await.json();
    assert_eq!(j2["instanceGroup"]["scalingOptions"]["desiredCount"], 1);
}

#[tokio::test]
async fn reconfiguration_that_cannot_be_stored_is_the_reference_500() {
    let p = Parts::start(Limits::default()).await;
    let mut g = group("g");
    g["enableReconfiguration"] = json!(true);
    p.call(Method::PUT, "/groups/g", Body::Json(g)).await;
    p.call(
        Method::POST,
        "/sidecar/status",
        Body::Json(jvb_report("i-1", "g", 0.2)),
    )
    .await;
    p.store.inject("update_flags", None, Fault::Fail);
    p.call(
        Method::POST,
        "/groups/g/actions/reconfigure-instances",
        Body::None,
    )
    .await
    .expect(
        500,
        &json!({"save": false, "error": "Failed to trigger reconfiguration"}),
    );
}

#[tokio::test]
async fn health_says_shutting_down_once_shutdown_begins() {
    let p = Parts::start(Limits::default()).await;
    assert_eq!(p.metrics_get("/health", None).await.text, "healthy!");
    p.state.start_shutdown();
    let reply = p.metrics_get("/health", None).await;
    assert_eq!((reply.status, reply.text.as_str()), (503, "shutting down"));
    let reply = p.metrics_get("/health?deep=1", None).await;
    assert_eq!(reply.status, 503);
    assert_eq!(p.metrics_get("/readyz", None).await.status, 503);
}

#[tokio::test]
async fn reading_the_report_keeps_the_autoscalers_samples() {
    for embedded in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::new(dir.path());
        let s = if embedded { config.embedded() } else { config }
            .start()
            .await;
        s.create_group(&group("g")).await;
        let t0 = jiff::Timestamp::now().as_millisecond();
        for i in 0..3 {
            let mut report = jvb_report("i-1", "g", 0.5);
            report["timestamp"] = json!(t0 + i);
            s.sidecar("status", report).await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        for _ in 0..3 {
            s.report("g").await;
        }
        assert_eq!(s.delete("/groups/g").await.status, 400, "active instance");
        let snapshot = s
            .scaler
            .store()
            .snapshot("g", 0)
            .await
            .expect("snapshot")
            .expect("group");
        let samples: usize = snapshot.samples.iter().map(|s| s.samples.len()).sum();
        assert_eq!(samples, 3, "embedded store: {embedded}");
    }
}

#[tokio::test]
async fn deeply_nested_sidecar_bodies_are_refused_and_stored_metadata_stays_readable() {
    let (s, _dir) = server().await;
    s.create_group(&group("g")).await;
    let nested = |depth: usize| "[".repeat(depth) + &"]".repeat(depth);
    // Deeper than serde_json reads: refused before anything is stored.
    for route in ["poll", "status", "stats", "shutdown"] {
        let body = format!(
            r#"{{"instanceId":"deep","instance":{{"instanceId":"deep","instanceType":"JVB","group":"g","m":{}}},"instanceType":"JVB","group":"g"}}"#,
            nested(500)
        );
        let reply = s
            .call(
                Method::POST,
                &format!("/sidecar/{route}"),
                Some(SIDECAR),
                Body::Raw(body.into_bytes(), Some("application/json")),
            )
            .await;
        reply.expect_error(400, "request");
    }
    // Just within the limit: stored verbatim, and the instance audit that carries it answers.
    let body = format!(
        r#"{{"instance":{{"instanceId":"nested","instanceType":"JVB","group":"g","m":{}}},"stats":{{"stress_level":0.1}},"timestamp":1}}"#,
        nested(126)
    );
    s.call(
        Method::POST,
        "/sidecar/status",
        Some(SIDECAR),
        Body::Raw(body.into_bytes(), Some("application/json")),
    )
    .await
    .expect(200, &json!({"shutdown": false, "reconfigure": null}));
    let reply = s.get("/groups/g/instance-audit").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    assert!(
        reply.text.contains(r#""instanceId":"nested""#),
        "{}",
        &reply.text[..200]
    );
    assert_eq!(s.report("g").await["count"], 1);
}

/// Metric samples per instance, from the store.
async fn samples(s: &Server, group: &str) -> std::collections::BTreeMap<String, usize> {
    let snapshot = s
        .scaler
        .store()
        .snapshot(group, 0)
        .await
        .expect("snapshot")
        .expect("group");
    snapshot
        .samples
        .into_iter()
        .map(|x| (x.instance_id.to_string(), x.samples.len()))
        .collect()
}

#[tokio::test]
async fn reports_follow_the_protocol_improvements() {
    let (s, _dir) = server().await;
    let mut g = group("g");
    g["type"] = json!("jvb");
    s.create_group(&g).await;
    // R2: types match case-insensitively, the original spelling is kept.
    let mut lower = jvb_report("lower", "g", 0.4);
    lower["instance"]["instanceType"] = json!("jvb");
    s.sidecar("status", lower).await;
    // R14: a JVB shutting down is draining: no sample, shown as such.
    let mut draining = jvb_report("draining", "g", 0.4);
    draining["stats"]["shutting_down"] = json!(true);
    s.sidecar("status", draining).await;
    // R6: the same report through /stats then /status, then again: one sample.
    let mut same = jvb_report("same", "g", 0.4);
    same["timestamp"] = json!(1_795_346_890_252_i64);
    for route in ["stats", "status", "status"] {
        s.sidecar(route, same.clone()).await;
    }
    // R5: a poll-only sidecar is tracked, without a sample.
    s.sidecar("poll", details("polled", "g")).await;

    let report = s.report("g").await;
    let status = |id: &str| {
        report["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .find(|i| i["instanceId"] == id)
            .map(|i| i["scaleStatus"].clone())
            .unwrap_or_else(|| panic!("{id} in {report}"))
    };
    assert_eq!(status("lower"), "IN USE");
    assert_eq!(status("draining"), "GRACEFUL SHUTDOWN");
    assert_eq!(status("polled"), "ONLINE");
    assert_eq!(report["count"], 4);
    assert_eq!(
        samples(&s, "g").await,
        [("lower".to_owned(), 1), ("same".to_owned(), 1)].into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_of_one_group_lose_no_update() {
    for embedded in [false, true] {
        concurrent_edits(embedded).await;
    }
}

async fn concurrent_edits(embedded: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::new(dir.path());
    let s = if embedded { config.embedded() } else { config }
        .start()
        .await;
    let mut g = group("g");
    g["scalingOptions"]["maxDesired"] = json!(1000);
    s.create_group(&g).await;
    let edits = (0..24).map(|i| {
        let s = &s;
        async move {
            let reply = if i % 2 == 0 {
                s.post(
                    "/groups/g/actions/launch-protected",
                    json!({"count": 1, "protectedTTLSec": 60}),
                )
                .await
            } else {
                s.put("/groups/g/scaling-options", json!({"scaleUpQuantity": i}))
                    .await
            };
            assert_eq!(reply.status, 200, "{reply:?}");
        }
    });
    futures::future::join_all(edits).await;
    let g = s.group("g").await;
    assert_eq!(
        g["scalingOptions"]["desiredCount"],
        1 + 12,
        "embedded {embedded}: {g}"
    );
}
