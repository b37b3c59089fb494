//! The script provider with real scripts: success, failure, hangs (the timeout kills the whole
//! process group), garbage output, list and terminate scripts, the concurrency cap, and the
//! conformance suite against a small "cloud" kept in files by scripts.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jitsi_scaler_cloud::custom::{ArgsStyle, ScriptConfig, ScriptProvider};
use jitsi_scaler_cloud::testkit::{self, Fault, Fixture, conformance};
use jitsi_scaler_core::group::{Group, TerminationPolicy};
use jitsi_scaler_core::provider::{
    Capabilities, CloudProvider, LaunchRequest, LaunchSlot, ProviderError,
};
use tempfile::TempDir;

/// Writes an executable bash script; `__STATE__` is replaced with `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "#!/usr/bin/env bash\nset -u\nSTATE='{}'\n{}",
        dir.display(),
        body
    );
    std::fs::write(&path, text).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn config(launch: PathBuf) -> ScriptConfig {
    ScriptConfig {
        launch_script: launch,
        timeout: Duration::from_secs(20),
        retry_budget: Duration::from_secs(2),
        retry_base_delay: Duration::from_millis(50),
        retry_max_delay: Duration::from_millis(200),
        ..ScriptConfig::default()
    }
}

fn group(name: &str) -> Group {
    testkit::group(name, "custom", "eu-west-1")
}

fn request(names: &[&str]) -> LaunchRequest {
    LaunchRequest {
        intent_id: "intent-1".into(),
        slots: names
            .iter()
            .enumerate()
            .map(|(i, n)| LaunchSlot {
                display_name: (*n).to_owned(),
                idempotency_key: format!("key-{i}"),
            })
            .collect(),
        current_count: 0,
    }
}

const PARSE_ARGS: &str = r#"
for arg in "$@"; do case "$arg" in
  "--name "*) name="${arg#--name }";;
  "--groupName "*) group="${arg#--groupName }";;
  "--type "*) type="${arg#--type }";;
  "--region "*) region="${arg#--region }";;
  "--instanceId "*) id="${arg#--instanceId }";;
esac; done
"#;

const FAULTS: &str = r#"
echo x >> "$STATE/calls"
fault=$(cat "$STATE/fault" 2>/dev/null || true)
case "$fault" in
  throttle-once) rm -f "$STATE/fault"; echo "rate limited" >&2; exit 75;;
  throttle-always) echo "rate limited" >&2; exit 75;;
  error) echo "cloud down" >&2; exit 1;;
esac
"#;

/// A "cloud" kept in files: launch, list and terminate scripts over `instances/<group>/<id>`.
struct ScriptCloud {
    dir: TempDir,
    provider: Arc<ScriptProvider>,
}

impl ScriptCloud {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let launch = script(
            dir.path(),
            "launch.sh",
            &format!(
                r#"{FAULTS}{PARSE_ARGS}
id="i-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
mkdir -p "$STATE/instances/$group"
printf '%s' "$name" > "$STATE/instances/$group/$id"
echo "launching $name of type $type in $region"
echo "$id"
"#
            ),
        );
        let list = script(
            dir.path(),
            "list.sh",
            &format!(
                r#"{FAULTS}{PARSE_ARGS}
printf '['; sep=''
for f in "$STATE/instances/$group"/*; do
  [ -e "$f" ] || continue
  printf '%s{{"instanceId":"%s","displayName":"%s","cloudStatus":"Running","createdAt":"2026-01-05T21:31:40Z"}}' "$sep" "$(basename "$f")" "$(cat "$f")"
  sep=','
done
echo ']'
"#
            ),
        );
        let terminate = script(
            dir.path(),
            "terminate.sh",
            &format!(
                r#"{FAULTS}{PARSE_ARGS}
rm -f "$STATE/instances/$group/$id"
"#
            ),
        );
        let mut config = config(launch);
        config.list_script = Some(list);
        config.terminate_script = Some(terminate);
        Self {
            provider: Arc::new(ScriptProvider::new(config)),
            dir,
        }
    }
}

#[async_trait]
impl Fixture for ScriptCloud {
    fn provider(&self) -> Arc<dyn CloudProvider> {
        self.provider.clone()
    }
    fn group(&self, name: &str) -> Group {
        group(name)
    }
    async fn set_fault(&self, fault: Fault) {
        let path = self.dir.path().join("fault");
        let text = match fault {
            Fault::None => {
                let _ = std::fs::remove_file(&path);
                return;
            }
            Fault::ThrottleOnce => "throttle-once",
            Fault::ThrottleAlways => "throttle-always",
            Fault::ServerErrors => "error",
        };
        std::fs::write(path, text).expect("fault");
    }
    async fn calls(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
    fn absent_instance_id(&self) -> String {
        "i-absent".into()
    }
}

#[tokio::test]
async fn conformance_against_scripts() {
    common::init_tracing();
    conformance::run(&ScriptCloud::new()).await;
}

#[tokio::test]
async fn arguments_follow_the_reference_or_the_split_style() {
    let dir = tempfile::tempdir().expect("tempdir");
    let launch = script(
        dir.path(),
        "launch.sh",
        r#"printf '%s\n' "$@" > "$STATE/args-$JITSI_SCALER_IDEMPOTENCY_KEY"
echo "$JITSI_SCALER_LAUNCH_INTENT" > "$STATE/intent"
echo i-1"#,
    );
    let g = group("args");
    let joined = ScriptProvider::new(config(launch.clone()));
    let outcome = joined.launch(&g, &request(&["args-abcde"])).await;
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.launched[0].instance_id, "i-1");
    let args = std::fs::read_to_string(dir.path().join("args-key-0")).expect("args");
    assert_eq!(
        args,
        "--type jibri\n--name args-abcde\n--groupName args\n--region eu-west-1\n"
    );
    let intent = std::fs::read_to_string(dir.path().join("intent")).expect("intent");
    assert_eq!(intent.trim(), "intent-1");

    let mut split = config(launch);
    split.args_style = ArgsStyle::Split;
    let outcome = ScriptProvider::new(split)
        .launch(&g, &request(&["zero-aaaaa", "one-bbbbb"]))
        .await;
    assert_eq!(outcome.error, None);
    let args = std::fs::read_to_string(dir.path().join("args-key-1")).expect("args");
    assert_eq!(
        args,
        "--type\njibri\n--name\none-bbbbb\n--groupName\nargs\n--region\neu-west-1\n"
    );
}

#[tokio::test]
async fn failures_are_classified_by_exit_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let launch = script(
        dir.path(),
        "launch.sh",
        &format!(
            r#"{PARSE_ARGS}
case "$name" in
  *fail) echo "quota exceeded" >&2; exit 1;;
  *full) exit 69;;
  *conf) exit 78;;
  *slow) exit 75;;
esac
echo "i-$name""#
        ),
    );
    let provider = ScriptProvider::new(config(launch));
    let g = group("fail");
    let outcome = provider
        .launch(&g, &request(&["ok-aaaaa", "x-fail", "ok-bbbbb"]))
        .await;
    let mut slots: Vec<usize> = outcome.launched.iter().map(|l| l.slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, [0, 2], "partial success");
    match &outcome.error {
        Some(ProviderError::Transient(m)) => assert!(m.contains("quota exceeded"), "{m}"),
        other => panic!("expected transient, got {other:?}"),
    }
    let class = |names: &'static [&'static str]| {
        let provider = &provider;
        let g = &g;
        async move {
            provider
                .launch(g, &request(names))
                .await
                .error
                .map(|e| e.class())
        }
    };
    assert_eq!(class(&["x-full"]).await, Some("capacity"));
    assert_eq!(class(&["x-conf"]).await, Some("config"));
    assert_eq!(class(&["x-slow"]).await, Some("throttled"));
    assert_eq!(
        class(&["x-full", "y-conf"]).await,
        Some("config"),
        "the operator's error wins"
    );

    let missing = ScriptProvider::new(config(dir.path().join("nope.sh")));
    let outcome = missing.launch(&g, &request(&["a-aaaaa"])).await;
    assert!(
        matches!(outcome.error, Some(ProviderError::Config(_))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn garbage_output_is_a_failure_not_an_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let launch = script(
        dir.path(),
        "launch.sh",
        &format!(
            r#"{PARSE_ARGS}
case "$name" in
  words*) echo "instance created with id 42";;
  empty*) echo; echo "   ";;
  binary*) printf '\xff\xfe\x00\x01\n';;
  huge*) head -c 5000000 /dev/zero | tr '\0' x; echo; echo i-1;;
  good*) printf 'starting\r\nstill starting\r\ni-good\r\n';;
esac"#
        ),
    );
    let provider = ScriptProvider::new(config(launch));
    let g = group("garbage");
    for name in ["words-aaaaa", "empty-aaaaa", "binary-aaaa", "huge-aaaaa"] {
        let outcome = provider.launch(&g, &request(&[name])).await;
        assert!(outcome.launched.is_empty(), "{name}: {outcome:?}");
        assert!(
            matches!(outcome.error, Some(ProviderError::Fatal(_))),
            "{name}: {:?}",
            outcome.error
        );
    }
    let outcome = provider.launch(&g, &request(&["good-aaaaa"])).await;
    assert_eq!(outcome.launched[0].instance_id, "i-good");
}

/// Whether a process has ended (gone, or a zombie nobody reaped).
fn ended(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

#[tokio::test]
async fn a_hanging_script_is_killed_with_its_children() {
    common::init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let launch = script(
        dir.path(),
        "launch.sh",
        r#"sleep 1000 &
echo $! > "$STATE/child.pid"
echo $$ > "$STATE/script.pid"
wait"#,
    );
    let mut config = config(launch);
    config.timeout = Duration::from_secs(2);
    let provider = ScriptProvider::new(config);
    let outcome = provider
        .launch(&group("hang"), &request(&["hang-aaaaa"]))
        .await;
    match &outcome.error {
        Some(ProviderError::Transient(m)) => assert!(m.contains("timed out"), "{m}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let read_pid = |f: &str| -> i32 {
        std::fs::read_to_string(dir.path().join(f))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid")
    };
    let (script_pid, child_pid) = (read_pid("script.pid"), read_pid("child.pid"));
    assert!(ended(script_pid), "the script was killed");
    // SIGKILL is delivered asynchronously; wait for the child's end, boundedly.
    let child_ended = tokio::time::timeout(Duration::from_secs(10), async {
        while !ended(child_pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        child_ended.is_ok(),
        "the script's child {child_pid} still runs"
    );
}

#[tokio::test]
async fn at_most_the_configured_number_of_scripts_run_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let launch = script(
        dir.path(),
        "launch.sh",
        r#"mkdir -p "$STATE/running"
touch "$STATE/running/$$"
ls "$STATE/running" | wc -l >> "$STATE/counts"
sleep 0.2
rm "$STATE/running/$$"
echo "i-$$""#,
    );
    let mut config = config(launch);
    config.max_concurrency = 2;
    let provider = ScriptProvider::new(config);
    let names: Vec<String> = (0..6).map(|i| format!("cap-{i:05}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let outcome = provider.launch(&group("cap"), &request(&names)).await;
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.launched.len(), 6);
    let counts: Vec<usize> = std::fs::read_to_string(dir.path().join("counts"))
        .expect("counts")
        .lines()
        .map(|l| l.trim().parse().expect("count"))
        .collect();
    assert_eq!(counts.len(), 6);
    assert!(counts.iter().all(|c| *c <= 2), "{counts:?}");
}

#[tokio::test]
async fn without_list_and_terminate_scripts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = ScriptProvider::new(config(script(dir.path(), "launch.sh", "echo i-1")));
    assert_eq!(
        provider.capabilities(),
        Capabilities {
            list: false,
            terminate: false,
            load_feedback: false
        }
    );
    let g = group("plain");
    assert_eq!(provider.list(&g).await, Ok(Vec::new()));
    assert!(matches!(
        provider.terminate(&g, "i-1").await,
        Err(ProviderError::Unsupported(_))
    ));
    assert!(provider.validate_group(&g).is_empty());
    let mut on_confirm = g.clone();
    on_confirm.termination_policy = Some(TerminationPolicy::OnConfirm);
    let errors = provider.validate_group(&on_confirm);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "terminationPolicy");
}

#[tokio::test]
async fn list_output_must_be_instances_and_failing_terminates_are_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(script(dir.path(), "launch.sh", "echo i-1"));
    config.list_script = Some(script(
        dir.path(),
        "list.sh",
        r#"echo '{"not": "an array"}'"#,
    ));
    config.terminate_script = Some(script(
        dir.path(),
        "terminate.sh",
        r#"echo x >> "$STATE/terminates"; echo "api down" >&2; exit 2"#,
    ));
    let provider = ScriptProvider::new(config);
    let g = group("bad");
    let listed = provider.list(&g).await;
    assert!(matches!(listed, Err(ProviderError::Fatal(_))), "{listed:?}");
    let terminated = provider.terminate(&g, "i-1").await;
    assert!(
        matches!(terminated, Err(ProviderError::Transient(_))),
        "{terminated:?}"
    );
    let attempts = std::fs::read_to_string(dir.path().join("terminates"))
        .expect("attempts")
        .lines()
        .count();
    assert!(attempts > 1, "retried ({attempts} attempts)");
}
