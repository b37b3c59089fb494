//! The `local` provider with real child processes: plain programs (`/bin/sleep`, `/bin/sh`)
//! for the process lifecycle, and the built `jitsi-scaler sim-instance` reporting to a fake
//! autoscaler for the whole loop.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use jitsi_scaler_core::group::Group;
use jitsi_scaler_core::provider::{CloudProvider, LaunchRequest, LaunchSlot, ProviderError};
use jitsi_scaler_server::local::{LocalConfig, LocalProvider, instance_id_for};
use jitsi_scaler_server::sim::Token;
use serde_json::{Value, json};
use support::{Answer, FakeAutoscaler, WAIT};

fn group(name: &str, instance_type: &str, local: Value) -> Group {
    serde_json::from_value(json!({
        "name": name, "type": instance_type, "cloud": "local", "region": "local-1",
        "scalingOptions": {"minDesired": 0, "maxDesired": 5, "desiredCount": 1},
        "local": local,
    }))
    .expect("group")
}

fn request(intent: &str, slots: &[(&str, &str)]) -> LaunchRequest {
    LaunchRequest {
        intent_id: intent.into(),
        slots: slots
            .iter()
            .map(|(name, key)| LaunchSlot {
                display_name: (*name).into(),
                idempotency_key: (*key).into(),
            })
            .collect(),
        current_count: 0,
    }
}

fn config(dir: &Path, program: &str, args: &[&str]) -> LocalConfig {
    let mut config = LocalConfig::new("http://127.0.0.1:9", dir.join("logs"));
    config.program = Some(PathBuf::from(program));
    config.args = args.iter().map(|a| (*a).to_owned()).collect();
    config.terminate_grace = Duration::from_secs(5);
    config.token = Some(Token::new("secret-token"));
    config
}

/// `/proc/<pid>/stat` fields after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Gone, or a zombie waiting to be reaped: either way it has exited.
fn has_exited(pid: u32) -> bool {
    stat_fields(pid).is_none_or(|f| f.first().is_some_and(|s| s == "Z" || s == "X"))
}

/// Live processes of a process group.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            stat_fields(*pid)
                .is_some_and(|f| f.get(2) == Some(&pgid.to_string()) && !has_exited(*pid))
        })
        .collect()
}

/// Waits (bounded) until the condition holds, checking every 20 ms.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn launch_list_terminate_and_drop_with_plain_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let provider =
        LocalProvider::new(config(dir.path(), "/bin/sleep", &["3600"])).expect("provider");
    let g = group(
        "g",
        "JVB",
        json!({"load": "const:0.5", "statsIntervalSec": 0.5}),
    );
    let req = request("i1", &[("g-aaaaa", "i1-0"), ("g-bbbbb", "i1-1")]);

    let outcome = provider.launch(&g, &req).await;
    assert_eq!(outcome.error, None);
    let ids: Vec<_> = outcome
        .launched
        .iter()
        .map(|l| l.instance_id.clone())
        .collect();
    assert_eq!(ids, vec!["local-i1-0", "local-i1-1"]);
    assert_eq!(outcome.launched[1].slot, 1);
    assert_eq!(outcome.launched[1].display_name, "g-bbbbb");

    let mut listed = provider.list(&g).await.expect("list");
    listed.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|i| i.cloud_status == "RUNNING" && i.is_running())
    );
    assert_eq!(listed[0].display_name, "g-aaaaa");
    assert!(listed[0].created_at_ms.is_some());
    let other = group("other", "JVB", json!({}));
    assert!(provider.list(&other).await.expect("list").is_empty());

    let pids: Vec<u32> = ids
        .iter()
        .map(|id| provider.pid(id).expect("pid"))
        .collect();
    assert!(pids.iter().all(|p| !has_exited(*p)));

    // The child gets its settings in the environment, the token never on its command line.
    let environ = std::fs::read(format!("/proc/{}/environ", pids[0])).expect("environ");
    let environ: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    for expected in [
        "JITSI_SCALER_SIM_INSTANCE_ID=local-i1-0",
        "JITSI_SCALER_SIM_INSTANCE_TYPE=JVB",
        "JITSI_SCALER_SIM_GROUP=g",
        "JITSI_SCALER_SIM_NAME=g-aaaaa",
        "JITSI_SCALER_SIM_REGION=local-1",
        "JITSI_SCALER_SIM_SERVER_URL=http://127.0.0.1:9",
        "JITSI_SCALER_SIM_TOKEN=secret-token",
        "JITSI_SCALER_SIM_LOAD=const:0.5",
        "JITSI_SCALER_SIM_STATS_INTERVAL=500ms",
    ] {
        assert!(
            environ.iter().any(|v| v == expected),
            "{expected} in {environ:?}"
        );
    }
    let parent = format!("JITSI_SCALER_SIM_PARENT_PID={}", std::process::id());
    assert!(environ.contains(&parent));
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", pids[0])).expect("cmdline");
    assert!(!cmdline.contains("secret-token"));
    assert_eq!(group_members(pids[0]), vec![pids[0]], "own process group");
    assert!(provider.log_path(&ids[0]).exists());

    // A retried launch with the same keys finds the running processes.
    let again = provider.launch(&g, &req).await;
    assert_eq!(again.error, None);
    assert_eq!(again.launched, outcome.launched);
    let pids_again: Vec<u32> = ids
        .iter()
        .map(|id| provider.pid(id).expect("pid"))
        .collect();
    assert_eq!(pids_again, pids, "no second process");
    assert_eq!(provider.list(&g).await.expect("list").len(), 2);

    // Terminating one really ends its process; terminating it again is fine.
    provider.terminate(&g, &ids[0]).await.expect("terminate");
    assert!(has_exited(pids[0]));
    let listed = provider.list(&g).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].instance_id, ids[1]);
    provider
        .terminate(&g, &ids[0])
        .await
        .expect("terminate again");
    provider
        .terminate(&g, "local-unknown")
        .await
        .expect("unknown is gone");
    let wrong_group = provider.terminate(&other, &ids[1]).await;
    assert!(
        matches!(wrong_group, Err(ProviderError::NotFound(_))),
        "{wrong_group:?}"
    );
    assert!(!has_exited(pids[1]), "not killed through another group");

    // Dropping the provider kills the rest.
    drop(provider);
    eventually("the last process exits after the drop", || {
        has_exited(pids[1])
    })
    .await;
}

#[tokio::test]
async fn an_exited_instance_disappears_from_the_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let provider =
        LocalProvider::new(config(dir.path(), "/bin/sh", &["-c", "read x"])).expect("provider");
    let g = group("g", "jibri", json!({}));
    let outcome = provider.launch(&g, &request("i", &[("g-a", "k1")])).await;
    assert_eq!(outcome.launched.len(), 1, "{outcome:?}");
    // stdin is /dev/null: `read` returns at once and the shell exits.
    eventually("the exited instance is reaped", || {
        provider.pid("local-k1").is_none()
    })
    .await;
    assert!(provider.list(&g).await.expect("list").is_empty());
}

#[tokio::test]
async fn the_cap_limits_live_instances_and_shutdown_stops_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), "/bin/sleep", &["3600"]);
    cfg.max_instances = 1;
    let provider = LocalProvider::new(cfg).expect("provider");
    let g = group("g", "JVB", json!({}));
    let outcome = provider
        .launch(&g, &request("i", &[("g-a", "a"), ("g-b", "b")]))
        .await;
    assert_eq!(outcome.launched.len(), 1);
    assert!(
        matches!(outcome.error, Some(ProviderError::Capacity(_))),
        "{:?}",
        outcome.error
    );
    let pid = provider.pid("local-a").expect("pid");
    assert_eq!(provider.shutdown().await, 1);
    assert!(has_exited(pid));
    assert!(provider.list(&g).await.expect("list").is_empty());
    assert_eq!(provider.shutdown().await, 0);
}

#[tokio::test]
async fn instances_ignoring_sigterm_are_killed_with_their_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(
        dir.path(),
        "/bin/sh",
        &["-c", "trap '' TERM; sleep 3600 & sleep 3600; wait"],
    );
    cfg.terminate_grace = Duration::from_millis(300);
    let provider = LocalProvider::new(cfg).expect("provider");
    let g = group("g", "JVB", json!({}));
    let outcome = provider
        .launch(&g, &request("i", &[("g-a", "stubborn")]))
        .await;
    assert_eq!(outcome.error, None);
    let pid = provider.pid("local-stubborn").expect("pid");
    eventually("the shell started its sleeps", || {
        group_members(pid).len() == 3
    })
    .await;
    provider
        .terminate(&g, "local-stubborn")
        .await
        .expect("terminate");
    assert!(has_exited(pid));
    eventually("no process of its group is left", || {
        group_members(pid).is_empty()
    })
    .await;
}

#[tokio::test]
async fn bad_settings_and_programs_are_configuration_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let provider =
        LocalProvider::new(config(dir.path(), "/nonexistent/jitsi-scaler", &[])).expect("provider");
    let bad = group("g", "JVB", json!({"load": "ramp:1", "statsIntervalSec": 1}));
    let errors = provider.validate_group(&bad);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "local");
    assert!(
        errors[0].msg.contains("invalid load profile"),
        "{}",
        errors[0].msg
    );
    let outcome = provider.launch(&bad, &request("i", &[("g-a", "a")])).await;
    assert!(matches!(outcome.error, Some(ProviderError::Config(_))));
    assert!(outcome.launched.is_empty());

    let good = group("g", "JVB", json!({"load": "const:0.2"}));
    assert!(provider.validate_group(&good).is_empty());
    let outcome = provider.launch(&good, &request("i", &[("g-a", "a")])).await;
    let Some(ProviderError::Config(msg)) = &outcome.error else {
        panic!("{outcome:?}");
    };
    assert!(msg.contains("/nonexistent/jitsi-scaler"), "{msg}");
    assert!(outcome.launched.is_empty());
}

/// The built binary, when it has the `sim-instance` subcommand; otherwise the test is skipped
/// (or fails when services are required).
fn sim_binary() -> Option<PathBuf> {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_jitsi-scaler"));
    let help = std::process::Command::new(&exe)
        .args(["sim-instance", "--help"])
        .output();
    let wired = help.is_ok_and(|h| String::from_utf8_lossy(&h.stdout).contains("--instance-id"));
    if wired {
        return Some(exe);
    }
    let required = std::env::var("JITSI_SCALER_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "the jitsi-scaler binary has no sim-instance subcommand"
    );
    eprintln!("skipped: the jitsi-scaler binary has no sim-instance subcommand yet");
    None
}

#[tokio::test]
async fn a_sim_instance_exits_when_its_parent_dies() {
    use std::io::BufRead;
    let Some(exe) = sim_binary() else {
        return;
    };
    // A shell starts the instance with itself as the watched parent, prints its pid, waits.
    let script = r#"JITSI_SCALER_SIM_PARENT_PID=$$ "$0" sim-instance --server-url http://127.0.0.1:9 --instance-id orphan --poll-interval 1h >/dev/null 2>&1 & echo $!; wait"#;
    let mut shell = std::process::Command::new("/bin/sh")
        .args(["-c", script])
        .arg(&exe)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("shell");
    let stdout = shell.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("pid line");
    let sim_pid: u32 = line.trim().parse().expect("pid");
    assert!(!has_exited(sim_pid));
    shell.kill().expect("kill the parent");
    shell.wait().expect("reap the parent");
    eventually("the orphaned instance exits", || has_exited(sim_pid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_instances_report_to_the_server_and_end_on_terminate_or_shutdown() {
    let Some(exe) = sim_binary() else {
        return;
    };
    let fake = FakeAutoscaler::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = LocalConfig::new(fake.url.clone(), dir.path().join("logs"));
    cfg.program = Some(exe);
    cfg.token = Some(Token::new("sidecar-token"));
    cfg.terminate_grace = Duration::from_secs(5);
    let provider = LocalProvider::new(cfg).expect("provider");
    let g = group(
        "demo",
        "JVB",
        json!({"load": "const:0.4", "noise": 0, "statsIntervalSec": 0.05,
               "pollIntervalSec": 0.05, "drainSec": 0.2}),
    );
    let outcome = provider
        .launch(
            &g,
            &request("i", &[("demo-aaaaa", "k-1"), ("demo-bbbbb", "k-2")]),
        )
        .await;
    assert_eq!(outcome.error, None);
    let (one, two) = (instance_id_for("k-1"), instance_id_for("k-2"));
    let requests = fake
        .wait_for("reports from both instances", |r| {
            [&one, &two].iter().all(|id| {
                r.iter()
                    .any(|x| x.route == "status" && x.instance_id() == Some(id.as_str()))
            })
        })
        .await;
    let report = requests
        .iter()
        .find(|x| x.instance_id() == Some(one.as_str()))
        .expect("report");
    assert_eq!(
        report.authorization.as_deref(),
        Some("Bearer sidecar-token")
    );
    assert_eq!(report.body["instance"]["group"], "demo");
    assert_eq!(report.body["instance"]["name"], "demo-aaaaa");
    assert_eq!(report.body["instance"]["cloud"], "local");
    assert_eq!(report.body["stats"]["stress_level"], 0.4);

    // A cloud termination (SIGTERM) ends the process promptly.
    let pid_one = provider.pid(&one).expect("pid");
    provider.terminate(&g, &one).await.expect("terminate");
    assert!(has_exited(pid_one));

    // A scale-down: the other drains, confirms and exits by itself.
    fake.answer(Answer::Command {
        shutdown: true,
        reconfigure: None,
    });
    let pid_two = provider.pid(&two).expect("pid");
    eventually("the drained instance exits", || {
        provider.pid(&two).is_none()
    })
    .await;
    assert!(has_exited(pid_two));
    let confirmations: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.route == "shutdown")
        .collect();
    assert_eq!(confirmations.len(), 1);
    assert_eq!(confirmations[0].instance_id(), Some(two.as_str()));
    let log = std::fs::read_to_string(provider.log_path(&two)).expect("log");
    assert!(!log.contains("sidecar-token"), "no token in the logs");
}
