//! Bad input on every route that takes a body, as property tests against the real server:
//! random bytes, random JSON values, and valid bodies with one part replaced, removed or
//! added. Whatever comes in, the answer is below 500 and its body is JSON.

mod harness;

use harness::{Body, Config, Reply, Server, details, group, jvb_report, send};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// The routes that take a body, with a valid body of each.
fn routes() -> Vec<(Method, &'static str, Value)> {
    let mut g = group("fz");
    g["scheduledScaling"] = json!({"enabled": false, "periods": []});
    g["policy"] = json!({"type": "threshold"});
    let jibri = json!({"instance": {"instanceId": "j-1", "instanceType": "jibri", "group": "fz"},
        "stats": {"jibriId": "jibri-1", "status": {"busyStatus": "BUSY",
            "health": {"healthStatus": "HEALTHY", "details": {}}}},
        "timestamp": 1_795_346_892_983_i64, "shutdownStatus": false, "shutdownError": false,
        "reconfigureError": false, "reconfigureComplete": "2026-01-01T00:00:00.000Z",
        "statsError": false});
    vec![
        (Method::PUT, "/groups/fz", g),
        (
            Method::PUT,
            "/groups/fz/desired",
            json!({"minDesired": 0, "maxDesired": 4, "desiredCount": 1}),
        ),
        (
            Method::PUT,
            "/groups/fz/scaling-options",
            json!({"scaleUpQuantity": 1, "scaleDownQuantity": 1, "scaleUpThreshold": 0.7,
                "scaleDownThreshold": 0.3, "scalePeriod": 60, "scaleUpPeriodsCount": 2,
                "scaleDownPeriodsCount": 4, "reservationScaleUpThreshold": 1,
                "gracePeriodTTLSec": 30, "cloudGuardGraceCount": 0}),
        ),
        (
            Method::PUT,
            "/groups/fz/scaling-activities",
            json!({"enableAutoScale": false, "enableLaunch": false, "enableScheduler": true,
                "enableUntrackedThrottle": true, "enableReconfiguration": true,
                "enableCloudGuard": false}),
        ),
        (
            Method::PUT,
            "/groups/fz/instance-configuration",
            json!({"instanceConfigurationId": "ocid1.instanceconfiguration.oc1.phx.1"}),
        ),
        (
            Method::PUT,
            "/groups/options/full-scaling",
            json!({"environment": "test", "region": "local-1", "instanceType": "jvb",
                "direction": "up", "options": {"minDesired": 0, "maxDesired": 4,
                "desiredCount": 1, "scaleUpQuantity": 2, "scaleUpThreshold": 0.6,
                "scalePeriod": 60, "scaleUpPeriodsCount": 2}}),
        ),
        (
            Method::POST,
            "/groups/fz/actions/launch-protected",
            json!({"count": 1, "maxDesired": 4, "protectedTTLSec": 60,
                "instanceConfigurationId": "cfg", "tags": {"purpose": "fuzz"}}),
        ),
        (
            Method::PUT,
            "/groups/fz/scheduled-scaling",
            json!({"enabled": true, "timezone": "America/New_York", "periods": [
                {"name": "weekday-peak", "dayOfWeek": [1, 2, 3, 4, 5], "startHour": 8,
                 "startMinute": 0, "endHour": 20, "endMinute": 0, "priority": 10,
                 "inhibitScaleDown": true,
                 "scalingOptions": {"minDesired": 1, "maxDesired": 4, "desiredCount": 1}}]}),
        ),
        (
            Method::POST,
            "/groups/fz/actions/reconfigure-instances",
            json!({}),
        ),
        (Method::POST, "/groups/actions/reset", json!({})),
        (Method::POST, "/sidecar/poll", details("i-1", "fz")),
        (
            Method::POST,
            "/sidecar/status",
            jvb_report("i-1", "fz", 0.4),
        ),
        (Method::POST, "/sidecar/stats", jibri),
        (Method::POST, "/sidecar/shutdown", details("i-2", "fz")),
    ]
}

/// Keys the validators look at, so random objects reach them.
const KEYS: &[&str] = &[
    "name",
    "type",
    "cloud",
    "region",
    "environment",
    "scalingOptions",
    "minDesired",
    "maxDesired",
    "desiredCount",
    "scaleUpQuantity",
    "scaleDownThreshold",
    "scalePeriod",
    "scaleUpPeriodsCount",
    "gracePeriodTTLSec",
    "protectedTTLSec",
    "count",
    "tags",
    "instanceConfigurationId",
    "enabled",
    "timezone",
    "periods",
    "dayOfWeek",
    "startHour",
    "endMinute",
    "priority",
    "direction",
    "instanceType",
    "options",
    "instance",
    "instanceId",
    "stats",
    "stress_level",
    "graceful_shutdown",
    "status",
    "busyStatus",
    "timestamp",
    "shutdownStatus",
    "reconfigureComplete",
    "group",
    "enableAutoScale",
    "enableLaunch",
    "terminationPolicy",
    "policy",
    "local",
    "scheduledScaling",
    "Gauges",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-3i64..30).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        prop::sample::select(vec![
            json!(u64::MAX),
            json!(4_294_967_296_u64),
            json!(1e308),
            json!(-1e-308),
            json!(0.5),
            json!(-0.0),
            json!(i64::MIN),
        ]),
        "\\PC{0,16}".prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "JVB",
            "jvb",
            "jibri",
            "local",
            "up",
            "DOWN",
            "UTC",
            "America/New_York",
            "Mars/Base",
            "été",
            "g\u{0}x",
            "🚀🚀",
            "onConfirm",
            "2026-01-01T00:00:00.000Z",
            "fz",
            "../../etc/passwd",
            "<html>",
        ])
        .prop_map(Value::from),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(KEYS).prop_map(str::to_owned),
        "\\PC{0,8}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Every JSON pointer inside `v` (the root excluded).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| (k.replace('~', "~0").replace('/', "~1"), x))
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| (i.to_string(), x))
            .collect(),
        _ => Vec::new(),
    };
    for (k, x) in children {
        let p = format!("{at}/{k}");
        out.push(p.clone());
        pointers(x, p, out);
    }
}

/// One change to a valid body.
#[derive(Clone, Debug)]
enum Mutation {
    Replace(usize, Value),
    Remove(usize),
    Add(usize, String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), json_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), key(), json_value()).prop_map(|(i, k, v)| Mutation::Add(i, k, v)),
    ]
}

fn mutate(template: &Value, m: &Mutation) -> Value {
    let mut body = template.clone();
    let mut all = Vec::new();
    pointers(&body, String::new(), &mut all);
    if all.is_empty() {
        return body;
    }
    let pick = |i: usize| all[i % all.len()].clone();
    match m {
        Mutation::Replace(i, v) => {
            if let Some(slot) = body.pointer_mut(&pick(*i)) {
                *slot = v.clone();
            }
        }
        Mutation::Remove(i) => {
            let p = pick(*i);
            let (parent, last) = p.rsplit_once('/').unwrap_or(("", ""));
            match body.pointer_mut(parent) {
                Some(Value::Object(o)) => {
                    o.remove(&last.replace("~1", "/").replace("~0", "~"));
                }
                Some(Value::Array(a)) => {
                    if let Ok(n) = last.parse::<usize>()
                        && n < a.len()
                    {
                        a.remove(n);
                    }
                }
                _ => {}
            }
        }
        Mutation::Add(i, k, v) => {
            let p = pick(*i);
            let (parent, _) = p.rsplit_once('/').unwrap_or(("", ""));
            if let Some(Value::Object(o)) = body.pointer_mut(parent) {
                o.insert(k.clone(), v.clone());
            }
        }
    }
    body
}

/// The property: never a 5xx, always a JSON body.
fn check(reply: &Reply, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(reply.status < 500, "{what}: {reply:?}");
    let content_type = reply.header("content-type").unwrap_or_default();
    prop_assert!(
        content_type.starts_with("application/json"),
        "{what}: not JSON: {reply:?}"
    );
    prop_assert!(
        serde_json::from_str::<Value>(&reply.text).is_ok(),
        "{what}: invalid JSON: {reply:?}"
    );
    Ok(())
}

struct Fuzz {
    runtime: tokio::runtime::Runtime,
    server: Server,
    _dir: tempfile::TempDir,
}

impl Fuzz {
    /// A server whose engine launches nothing (dry run), with the group `fz`.
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let server = runtime.block_on(async {
            let s = Config::new(dir.path())
                .set("--dry-run", "true")
                .start()
                .await;
            s.create_group(&group("fz")).await;
            s
        });
        Self {
            runtime,
            server,
            _dir: dir,
        }
    }

    fn send(&self, method: &Method, path: &str, body: Body) -> Reply {
        self.runtime.block_on(send(
            &self.server.http,
            method.clone(),
            &format!("{}{path}", self.server.api),
            Some(harness::ADMIN),
            body,
        ))
    }

    fn run<S: Strategy>(
        &self,
        cases: u32,
        strategy: S,
        test: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) {
        let mut runner = TestRunner::new(ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        if let Err(e) = runner.run(&strategy, test) {
            panic!("{e}");
        }
    }
}

#[test]
fn random_bytes_on_every_body_route() {
    let fuzz = Fuzz::start();
    let routes = routes();
    let strategy = (
        0..routes.len(),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            // Almost JSON: a valid body cut anywhere.
            (0..routes.len(), any::<prop::sample::Index>()).prop_map(|(r, cut)| {
                let text = serde_json::to_vec(&self::routes()[r].2).expect("json");
                text[..cut.index(text.len() + 1)].to_vec()
            }),
        ],
        prop::sample::select(vec![Some("application/json"), None, Some("text/plain")]),
    );
    fuzz.run(600, strategy, |(r, bytes, content_type)| {
        let (method, path, _) = &routes[r];
        let reply = fuzz.send(method, path, Body::Raw(bytes.clone(), content_type));
        check(
            &reply,
            &format!("{method} {path} {:?}", String::from_utf8_lossy(&bytes)),
        )
    });
}

#[test]
fn random_json_on_every_body_route() {
    let fuzz = Fuzz::start();
    let routes = routes();
    fuzz.run(800, (0..routes.len(), json_value()), |(r, body)| {
        let (method, path, _) = &routes[r];
        let reply = fuzz.send(method, path, Body::Json(body.clone()));
        check(&reply, &format!("{method} {path} {body}"))
    });
}

#[test]
fn valid_bodies_with_one_part_changed() {
    let fuzz = Fuzz::start();
    let routes = routes();
    fuzz.run(1500, (0..routes.len(), mutation()), |(r, m)| {
        let (method, path, template) = &routes[r];
        let body = mutate(template, &m);
        let reply = fuzz.send(method, path, Body::Json(body.clone()));
        check(&reply, &format!("{method} {path} {body}"))
    });
    // The templates themselves are accepted (the property is not vacuous).
    for (method, path, body) in routes.iter().filter(|(_, p, _)| !p.contains("reconfigure")) {
        let reply = fuzz.send(method, path, Body::Json(body.clone()));
        assert!(reply.status < 300, "{method} {path}: {reply:?}");
    }
}

#[test]
fn random_group_names_in_paths() {
    let fuzz = Fuzz::start();
    let encode = |name: &str| {
        name.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let names = prop_oneof![
        "\\PC{1,40}",
        "[A-Za-z0-9._-]{1,140}",
        prop::collection::vec(any::<u8>(), 1..20)
            .prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect::<String>()),
    ];
    fuzz.run(300, names, |name| {
        let path = if name.starts_with('%') {
            name.clone()
        } else {
            encode(&name)
        };
        let mut body = group("x");
        body["name"] = json!(name);
        for (method, suffix, body) in [
            (Method::PUT, "", Body::Json(body)),
            (Method::GET, "", Body::None),
            (Method::GET, "/report", Body::None),
            (
                Method::PUT,
                "/desired",
                Body::Json(json!({"desiredCount": 1})),
            ),
            (Method::DELETE, "", Body::None),
        ] {
            let reply = fuzz.send(&method, &format!("/groups/{path}{suffix}"), body);
            check(&reply, &format!("{method} /groups/{path}{suffix}"))?;
        }
        Ok(())
    });
}
