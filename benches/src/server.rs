//! The real server's command line for the benchmarks that start it.

use std::path::Path;

use clap::Parser;
use jitsi_scaler_server::config::{Cli, Command, ServeArgs};

/// `jitsi-scaler serve` on loopback with free ports, the given store and data directory, the
/// `local` provider, one node, warnings only; `extra` flags appended.
pub fn serve_args(store: &str, data_dir: &Path, extra: &[String]) -> ServeArgs {
    let mut argv: Vec<String> = [
        "jitsi-scaler",
        "serve",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--cloud-providers",
        "local",
        "--leader-election",
        "single",
        "--log-level",
        "info",
        "--store",
        store,
    ]
    .map(String::from)
    .to_vec();
    argv.push("--data-dir".into());
    argv.push(data_dir.display().to_string());
    argv.extend_from_slice(extra);
    match Cli::parse_from(argv).command {
        Command::Serve(args) => *args,
        _ => unreachable!("the command line names serve"),
    }
}
