//! Running an external script: no shell, its own process group, a timeout that kills the whole
//! group, output captured with a size cap and logged truncated.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Output kept per stream; the rest is read and dropped.
pub(crate) const MAX_OUTPUT: usize = 4 * 1024 * 1024;
/// Output shown per stream in a log line.
pub(crate) const MAX_LOGGED: usize = 4 * 1024;

/// A finished run.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Some output was dropped beyond [`MAX_OUTPUT`].
    pub truncated: bool,
}

/// Why a run did not finish.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("timed out after {0} ms; its process group was killed")]
    Timeout(u128),
    #[error("reading its output failed: {0}")]
    Io(std::io::Error),
}

/// Kills a process group when dropped while armed (a run cancelled or timed out).
struct GroupKiller {
    pgid: Option<Pid>,
}

impl GroupKiller {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH (already gone) is fine.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `program` with `args` and extra environment variables, within `timeout`.
pub(crate) async fn run(
    program: &Path,
    args: &[String],
    envs: &[(&str, &str)],
    timeout: Duration,
) -> Result<Finished, RunError> {
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| RunError::Spawn {
        program: program.display().to_string(),
        source,
    })?;
    // The child leads its own group; the group dies with it on timeout or cancellation.
    let mut killer = GroupKiller {
        pgid: child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let work = async {
        let (status, out, err) =
            tokio::join!(child.wait(), read_capped(stdout), read_capped(stderr));
        Ok::<_, std::io::Error>((status?, out?, err?))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok((status, (stdout, cut_out), (stderr, cut_err)))) => {
            killer.disarm();
            Ok(Finished {
                status,
                stdout,
                stderr,
                truncated: cut_out || cut_err,
            })
        }
        Ok(Err(e)) => Err(RunError::Io(e)),
        Err(_) => {
            killer.kill();
            // The leader died with its group; kill it directly too in case the group signal
            // failed, and reap it, boundedly.
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            Err(RunError::Timeout(timeout.as_millis()))
        }
    }
}

async fn read_capped<R: AsyncRead + Unpin>(stream: Option<R>) -> std::io::Result<(Vec<u8>, bool)> {
    let Some(mut stream) = stream else {
        return Ok((Vec::new(), false));
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = MAX_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        truncated |= n > room;
    }
}

/// Output for a log line: lossy UTF-8, at most [`MAX_LOGGED`] bytes.
pub(crate) fn for_log(output: &[u8]) -> String {
    let shown = &output[..output.len().min(MAX_LOGGED)];
    let mut text = String::from_utf8_lossy(shown).trim_end().to_owned();
    if output.len() > MAX_LOGGED {
        text.push_str(&format!("… ({} more bytes)", output.len() - MAX_LOGGED));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_output_is_truncated() {
        let big = vec![b'x'; MAX_LOGGED + 10];
        let shown = for_log(&big);
        assert!(shown.starts_with("xxx"));
        assert!(
            shown.ends_with("(10 more bytes)"),
            "{}",
            &shown[shown.len() - 30..]
        );
        assert_eq!(for_log(b"ok\n"), "ok");
    }

    #[tokio::test]
    async fn captures_output_and_status() {
        let finished = run(
            Path::new("/bin/sh"),
            &["-c".into(), "echo out; echo err >&2; exit 3".into()],
            &[],
            Duration::from_secs(30),
        )
        .await
        .expect("run");
        assert_eq!(finished.status.code(), Some(3));
        assert_eq!(finished.stdout, b"out\n");
        assert_eq!(finished.stderr, b"err\n");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let err = run(
            Path::new("/nonexistent/script"),
            &[],
            &[],
            Duration::from_secs(1),
        )
        .await
        .expect_err("missing");
        assert!(matches!(err, RunError::Spawn { .. }), "{err}");
    }
}
