//! `jitsi-scaler`: the autoscaler for Jitsi Meet fleets.

use std::process::ExitCode;

use clap::Parser;
use jitsi_scaler_server::app;
use jitsi_scaler_server::config::{Cli, Command};
use jitsi_scaler_server::telemetry::{self, LogFormat};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => {
            telemetry::init_logging(args.log_format, &args.log_level);
            let running = match app::start(*args).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start");
                    eprintln!("jitsi-scaler: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let shutdown = running.shutdown.clone();
            tokio::spawn(async move {
                app::termination_signal().await;
                shutdown.cancel();
            });
            match running.wait().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "stopped with an error");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ValidateConfig { file } => validate(&file),
        Command::JibriPodController { log_format } => {
            telemetry::init_logging(log_format, "info");
            let shutdown = CancellationToken::new();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                app::termination_signal().await;
                stop.cancel();
            });
            match app::run_jibri_pod_controller(shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "jibri pod controller failed");
                    eprintln!("jibri-pod-controller: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::SimInstance(args) => {
            telemetry::init_logging(LogFormat::Text, "info");
            let cancel = CancellationToken::new();
            let stop = cancel.clone();
            tokio::spawn(async move {
                app::termination_signal().await;
                stop.cancel();
            });
            match jitsi_scaler_server::sim::run(*args, cancel).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sim-instance: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// `validate-config FILE`: every problem with its path and line; exit 1 when any.
fn validate(file: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    match jitsi_scaler_core::group::file::parse_groups_file(&text, None, None) {
        Ok(groups) => {
            println!("{}: {} group(s), valid", file.display(), groups.len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for problem in &errors.0 {
                println!("{}: {problem}", file.display());
            }
            eprintln!("{} problem(s)", errors.0.len());
            ExitCode::FAILURE
        }
    }
}
