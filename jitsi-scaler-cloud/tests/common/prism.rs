//! Prism (Stoplight) in proxy mode: validates requests and answers against an OpenAPI file.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// Prism in proxy mode in front of a fake, killed when dropped.
pub struct Prism {
    child: tokio::process::Child,
    /// Where Prism listens.
    pub url: String,
}

impl Prism {
    /// Starts Prism before `upstream`, or `None` (test skipped) when Prism is not installed.
    pub async fn start(spec: &Path, upstream: &str) -> Option<Prism> {
        let prism = std::env::var("JITSI_SCALER_PRISM").ok().or_else(|| {
            let cache = std::env::var("JITSI_SCALER_CACHE").ok().or_else(|| {
                std::env::var("HOME")
                    .ok()
                    .map(|h| format!("{h}/.cache/jitsi-scaler"))
            })?;
            let path = format!("{cache}/prism-5.14.2/node_modules/.bin/prism");
            std::path::Path::new(&path).exists().then_some(path)
        });
        let available = prism
            .as_ref()
            .is_some_and(|p| std::path::Path::new(p).exists());
        if !super::service_available(
            "Prism",
            available,
            "JITSI_SCALER_PRISM is not set or not executable (run .ci/services/prism.sh)",
        ) {
            return None;
        }
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            listener.local_addr().expect("addr").port()
        };
        let mut child = tokio::process::Command::new(prism.expect("prism"))
            .arg("proxy")
            .arg(spec)
            .arg(upstream)
            .args(["--errors", "-h", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start prism");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(90), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Prism is listening") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "Prism did not start");
        // Keep draining Prism's log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Some(Prism {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
