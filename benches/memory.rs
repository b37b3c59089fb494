//! Memory: the resident memory the server gains per tracked instance. The real server is
//! started in this process (`jitsi-scaler serve`'s own start-up, memory or embedded store),
//! JVB groups are created, and `MEMORY_INSTANCES` instances (default 100 000) each check in
//! 22 times with their whole StatsReport through the engine's check-in path (what
//! `/sidecar/status` calls after parsing): state, audit entry and a full retained window of
//! samples each. The RSS gained, divided by the instances, is the cost of one.
//!
//! Two layouts per store (`MEMORY_LAYOUTS`, default `1,1000`: the number of groups the
//! instances are spread over): all in one group, the worst case (the engine's pass copies
//! a group's whole snapshot while it decides it, so the largest group's snapshot is part of
//! the peak), and a fleet of 1 000 groups of 100.
//!
//! The sidecars' ASAP tokens are not part of it: verified tokens are cached in a cache
//! bounded by `--token-cache-capacity` (100 000 by default), whatever the fleet's size.
//!
//! `cargo bench -p benches --bench memory`

use benches::fleet::SAMPLES_PER_INSTANCE;
use benches::measure::{machine, own_rss};
use benches::payload::{bench_group, jvb_status_body};
use benches::server::serve_args;
use jitsi_scaler_core::clock::{Clock, SystemClock};
use jitsi_scaler_core::sidecar::parse_stats_report;

fn main() {
    let instances: usize = std::env::var("MEMORY_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    if let Ok(store) = std::env::var("MEMORY_ONE_STORE") {
        one_store(&store, instances);
        return;
    }
    let list = |name: &str, default: &str| -> Vec<String> {
        std::env::var(name)
            .unwrap_or_else(|_| default.to_owned())
            .split(',')
            .map(str::to_owned)
            .collect()
    };
    println!("machine: {}", machine());
    println!(
        "| store | instances | groups | samples each | RSS before (MiB) | RSS after (MiB) | per instance (bytes) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for store in list("MEMORY_STORES", "memory,embedded") {
        for groups in list("MEMORY_LAYOUTS", "1,1000") {
            // One process per run: the allocator keeps what a previous run freed.
            let status = std::process::Command::new(std::env::current_exe().expect("own path"))
                .env("MEMORY_ONE_STORE", &store)
                .env("MEMORY_INSTANCES", instances.to_string())
                .env("MEMORY_GROUPS", &groups)
                .status()
                .expect("child");
            assert!(
                status.success(),
                "the {store} run over {groups} groups failed"
            );
        }
    }
}

/// Runs in the child: one store and layout, one line of the table.
fn one_store(store: &str, instances: usize) {
    let groups: usize = std::env::var("MEMORY_GROUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .clamp(1, instances.max(1));
    let names: Vec<String> = (0..groups).map(|g| format!("bench-jvb-{g:05}")).collect();
    let data_dir = tempfile::tempdir().expect("data directory");
    let args = serve_args(
        store,
        data_dir.path(),
        &["--protected-api".into(), "false".into()],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let running = jitsi_scaler_server::app::start(args)
            .await
            .expect("server start");
        let scaler = running.scaler.clone();
        for name in &names {
            scaler
                .put_group(name, &bench_group(name))
                .await
                .expect("group");
        }
        let (before, _) = own_rss().expect("/proc");
        let now = SystemClock.now_ms();
        for i in 0..instances {
            let group = &names[i % groups];
            let body = jvb_status_body(&format!("ocid1.instance.oc1.phx.{i:08}"), group, 0.4, now);
            let mut report = parse_stats_report(&body).expect("report");
            for k in 0..SAMPLES_PER_INSTANCE {
                report.timestamp = Some(now + k as i64);
                let result = scaler.report(&report).await.expect("stored");
                assert!(result.known_group);
            }
        }
        // Let the embedded store's writer commit what it holds.
        running.scaler.store().flush().await.expect("flush");
        let (after, _) = own_rss().expect("/proc");
        println!(
            "| {store} | {instances} | {groups} | {SAMPLES_PER_INSTANCE} | {:.1} | {:.1} | {:.0} |",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            (after.saturating_sub(before)) as f64 / instances as f64
        );
        running.stop().await.expect("stop");
    });
}
