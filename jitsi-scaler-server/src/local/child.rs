//! One instance as a child process: spawned in its own process group with its output in a
//! log file, stopped with SIGTERM, then SIGKILL after a grace period.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use jitsi_scaler_core::clock::UnixMillis;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tracing::warn;

/// How long to wait for a process to be reaped after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// A running (or exited but not yet reaped) instance process.
#[derive(Debug)]
pub struct LocalChild {
    /// Group the instance belongs to.
    pub group: String,
    /// Display name.
    pub display_name: String,
    /// When it was spawned.
    pub created_at_ms: UnixMillis,
    /// Its process (group leader of its own process group).
    process: tokio::process::Child,
    /// Its pid, which is also its process group id.
    pid: Pid,
}

/// What to run for one instance.
#[derive(Debug)]
pub struct Spawn<'a> {
    /// Program.
    pub program: &'a Path,
    /// Arguments.
    pub args: &'a [String],
    /// Environment variables to remove (by prefix) before setting `env`.
    pub clear_prefix: &'a str,
    /// Environment variables.
    pub env: Vec<(&'static str, String)>,
    /// File receiving stdout and stderr.
    pub log_path: &'a Path,
}

impl LocalChild {
    /// Spawns the process in its own process group (so the terminal's Ctrl-C does not reach
    /// it and the whole group can be signalled), output appended to the log file.
    pub fn spawn(
        spawn: Spawn<'_>,
        group: &str,
        display_name: &str,
        now: UnixMillis,
    ) -> Result<Self, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spawn.log_path)
            .map_err(|e| format!("cannot open log file {}: {e}", spawn.log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot open log file {}: {e}", spawn.log_path.display()))?;
        let mut command = tokio::process::Command::new(spawn.program);
        command.args(spawn.args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with(spawn.clear_prefix) {
                command.env_remove(name);
            }
        }
        command
            .envs(spawn.env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(true);
        let process = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", spawn.program.display()))?;
        let pid = process
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
            .ok_or_else(|| format!("{} exited at once", spawn.program.display()))?;
        Ok(Self {
            group: group.to_owned(),
            display_name: display_name.to_owned(),
            created_at_ms: now,
            process,
            pid,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// The exit status if the process has exited (and reaps it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        match self.process.try_wait() {
            Ok(status) => status,
            Err(e) => {
                warn!(pid = self.pid(), error = %e, "cannot check instance process");
                None
            }
        }
    }

    /// SIGTERM to its process group, then SIGKILL after `grace`; the exit status.
    pub async fn stop(&mut self, grace: Duration) -> Result<ExitStatus, String> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.process.wait()).await {
            Ok(result) => return result.map_err(|e| e.to_string()),
            Err(_) => warn!(
                pid = self.pid(),
                grace_ms = grace.as_millis() as u64,
                "instance did not exit after SIGTERM, killing it"
            ),
        }
        self.kill();
        match tokio::time::timeout(KILL_WAIT, self.process.wait()).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "process {} still running after SIGKILL",
                self.pid()
            )),
        }
    }

    /// SIGKILL to its process group, without waiting (for drop).
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
    }

    fn signal(&self, signal: Signal) {
        match killpg(self.pid, signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => warn!(pid = self.pid(), %signal, error = %e, "cannot signal instance"),
        }
    }
}
