//! Jibri health checks: `GET http://<podIP>:<port>/jibri/api/v1.0/health`, with a timeout,
//! IPv6 addresses in brackets, and the HTTP status checked.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use jitsi_scaler_core::instance::BusyStatus;
use k8s_openapi::api::core::v1::Pod;

use super::payload::parse_health_answer;

/// Path of Jibri's health endpoint.
pub const HEALTH_PATH: &str = "/jibri/api/v1.0/health";

/// Why a health check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreachable {
    /// The pod has no IP (yet, or any more).
    NoIp,
    /// Connection refused (Jibri down, or its API bound to 127.0.0.1).
    Refused,
    /// No answer within the timeout.
    Timeout,
    /// Another transport error.
    Transport,
    /// An HTTP status other than 200.
    Status(u16),
    /// A 200 whose body is not Jibri's health JSON.
    Invalid,
}

/// The outcome of one health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Jibri answered with this busy status.
    Status(BusyStatus),
    /// Jibri could not be asked.
    Unreachable(Unreachable),
}

/// The URL of a Jibri's health endpoint (`http://[fd00::1]:2222/…` for IPv6).
pub fn health_url(ip: IpAddr, port: u16) -> String {
    format!("http://{}{HEALTH_PATH}", SocketAddr::new(ip, port))
}

/// The pod's IP in the cluster's primary family: `status.podIP`, else the first of
/// `status.podIPs`.
pub fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    let status = pod.status.as_ref()?;
    status
        .pod_ip
        .as_deref()
        .or_else(|| status.pod_ips.as_ref()?.first().map(|p| p.ip.as_str()))
        .and_then(|ip| ip.parse().ok())
}

/// Every IP of the pod (`status.podIPs` and `status.podIP`).
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    ips
}

/// Checks Jibris' health over HTTP.
#[derive(Clone, Debug)]
pub(crate) struct HealthProbe {
    http: reqwest::Client,
    port: u16,
    timeout: Duration,
}

impl HealthProbe {
    pub(crate) fn new(http: reqwest::Client, port: u16, timeout: Duration) -> Self {
        Self {
            http,
            port,
            timeout,
        }
    }

    pub(crate) async fn check(&self, ip: Option<IpAddr>) -> Probe {
        let Some(ip) = ip else {
            return Probe::Unreachable(Unreachable::NoIp);
        };
        let url = health_url(ip, self.port);
        let response = match self.http.get(&url).timeout(self.timeout).send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Probe::Unreachable(Unreachable::Timeout),
            Err(e) if e.is_connect() && is_refused(&e) => {
                return Probe::Unreachable(Unreachable::Refused);
            }
            Err(e) => {
                tracing::debug!(url, error = %e, "health check failed");
                return Probe::Unreachable(Unreachable::Transport);
            }
        };
        let status = response.status().as_u16();
        if status != 200 {
            return Probe::Unreachable(Unreachable::Status(status));
        }
        match response.bytes().await {
            Ok(body) => match parse_health_answer(&body) {
                Ok((busy, _)) => Probe::Status(busy),
                Err(e) => {
                    tracing::debug!(url, error = %e, "health answer is not Jibri's");
                    Probe::Unreachable(Unreachable::Invalid)
                }
            },
            Err(e) if e.is_timeout() => Probe::Unreachable(Unreachable::Timeout),
            Err(_) => Probe::Unreachable(Unreachable::Transport),
        }
    }
}

/// Whether the error chain holds an I/O "connection refused".
fn is_refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodIP, PodStatus};

    #[test]
    fn ipv6_addresses_are_bracketed() {
        assert_eq!(
            health_url("10.1.2.3".parse().expect("ip"), 2222),
            "http://10.1.2.3:2222/jibri/api/v1.0/health"
        );
        assert_eq!(
            health_url("fd00::1".parse().expect("ip"), 2222),
            "http://[fd00::1]:2222/jibri/api/v1.0/health"
        );
    }

    #[test]
    fn the_primary_ip_is_used() {
        let pod = |ip: Option<&str>, ips: &[&str]| Pod {
            status: Some(PodStatus {
                pod_ip: ip.map(str::to_owned),
                pod_ips: Some(
                    ips.iter()
                        .map(|i| PodIP {
                            ip: (*i).to_owned(),
                        })
                        .collect(),
                ),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let dual = pod(Some("fd00::5"), &["fd00::5", "10.0.0.5"]);
        assert_eq!(pod_ip(&dual), Some("fd00::5".parse().expect("ip")));
        assert_eq!(pod_ips(&dual).len(), 2);
        assert_eq!(
            pod_ip(&pod(None, &["10.0.0.7"])),
            Some("10.0.0.7".parse().expect("ip"))
        );
        assert_eq!(pod_ip(&pod(None, &[])), None);
        assert_eq!(pod_ip(&pod(Some("garbage"), &[])), None);
        assert_eq!(pod_ip(&Pod::default()), None);
    }
}
