//! The Oracle Cloud provider (`cloud: "oracle"`): instances launched from the group's instance
//! configuration with an `opc-retry-token`, spread over availability and fault domains (the
//! next untried pair on "Out of host capacity"), listed with `ListInstances` through every page
//! and selected by the freeform tag `group`, terminated with their boot and launch-time data
//! volumes.
//!
//! Requests are signed here ([`signing`]); each call computes its endpoints from the group's
//! region, so groups in different regions share no mutable client state. Availability and
//! fault domain lists are cached per region (1 h by default).

mod api;
mod config;
mod placement;
pub mod signing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use jitsi_scaler_core::group::{FieldError, Group};
use jitsi_scaler_core::instance::CloudInstance;
use jitsi_scaler_core::provider::{
    CloudProvider, LaunchOutcome, LaunchRequest, LaunchSlot, LaunchedInstance, ProviderError,
};
use reqwest::{Method, Url};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

pub use config::{
    DEFAULT_CONFIG_FILE, DEFAULT_DOMAIN, DEFAULT_PROFILE, OciProfile, OracleConfig, OracleEndpoints,
};

use crate::env::ConfigError;
use crate::http::{ApiRequest, HttpClient};
use crate::outcome::keep_worse;
use api::{Domain, Instance, LaunchBody, LaunchDetails, OracleApi};
use placement::{Domains, Placement, Planner};
use signing::RequestSigner;

/// The provider name groups use.
pub const PROVIDER_NAME: &str = "oracle";
/// Instances per listed page.
const PAGE_LIMIT: u32 = 100;
/// Pages followed at most, a guard against a server that never ends.
const MAX_PAGES: u32 = 10_000;

/// Launches, lists and terminates OCI compute instances.
#[derive(Debug)]
pub struct OracleProvider {
    http: HttpClient,
    api: OracleApi,
    profile: OciProfile,
    endpoints: OracleEndpoints,
    domain_cache_ttl: Duration,
    launch_concurrency: usize,
    domains: Mutex<HashMap<String, (Instant, Arc<Domains>)>>,
}

impl OracleProvider {
    /// A provider reading its profile and private key now (a key that cannot be used is an
    /// error here, not at the first launch).
    pub fn new(config: &OracleConfig) -> Result<Self, ConfigError> {
        let profile = OciProfile::load(&config.configuration_file_path, &config.profile)?;
        let pem = std::fs::read_to_string(&profile.key_file).map_err(|e| {
            ConfigError::invalid(
                "OCI_CONFIGURATION_FILE_PATH",
                format!(
                    "profile [{}]: cannot read key_file {}: {e}",
                    config.profile,
                    profile.key_file.display()
                ),
            )
        })?;
        let signer = RequestSigner::from_pem(profile.key_id(), &pem, profile.pass_phrase.as_ref())
            .map_err(|e| {
                ConfigError::invalid(
                    "OCI_CONFIGURATION_FILE_PATH",
                    format!(
                        "profile [{}]: key_file {}: {e}",
                        config.profile,
                        profile.key_file.display()
                    ),
                )
            })?;
        Self::with_signer(config, profile, signer)
    }

    /// A provider with a profile and signer given directly.
    pub fn with_signer(
        config: &OracleConfig,
        profile: OciProfile,
        signer: RequestSigner,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpClient::new(PROVIDER_NAME, &config.http)?,
            api: OracleApi { signer },
            profile,
            endpoints: config.endpoints.clone(),
            domain_cache_ttl: config.domain_cache_ttl,
            launch_concurrency: config.launch_concurrency.max(1),
            domains: Mutex::new(HashMap::new()),
        })
    }

    fn region<'a>(&'a self, group: &'a Group) -> Result<&'a str, ProviderError> {
        let region = if group.region.is_empty() {
            self.profile.region.as_str()
        } else {
            group.region.as_str()
        };
        if valid_region(region) {
            Ok(region)
        } else {
            Err(ProviderError::Config(format!(
                "{region:?} is not an OCI region"
            )))
        }
    }

    fn compartment<'a>(&self, group: &'a Group) -> Result<&'a str, ProviderError> {
        if group.compartment_id.is_empty() {
            Err(ProviderError::Config(format!(
                "group {:?} has no compartmentId",
                group.name
            )))
        } else {
            Ok(&group.compartment_id)
        }
    }

    fn url(&self, base: String, path: &str, query: &[(&str, &str)]) -> Result<Url, ProviderError> {
        let mut url = Url::parse(&format!("{base}{path}"))
            .map_err(|e| ProviderError::Config(format!("invalid OCI endpoint {base}: {e}")))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// Availability domains of a region with their fault domains, cached.
    async fn domains(&self, region: &str) -> Result<Arc<Domains>, ProviderError> {
        {
            let cache = self.domains.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, domains)) = cache.get(region)
                && at.elapsed() < self.domain_cache_ttl
            {
                return Ok(domains.clone());
            }
        }
        let identity = self.endpoints.identity(region);
        let tenancy = self.profile.tenancy.as_str();
        let url = self.url(
            identity.clone(),
            "/availabilityDomains",
            &[("compartmentId", tenancy)],
        )?;
        let ads: Vec<Domain> = self
            .http
            .send(&self.api, &ApiRequest::new(Method::GET, url))
            .await?
            .json("availability domains")?;
        let mut domains = Vec::new();
        for ad in ads {
            let url = self.url(
                identity.clone(),
                "/faultDomains",
                &[("compartmentId", tenancy), ("availabilityDomain", &ad.name)],
            )?;
            let fds: Vec<Domain> = self
                .http
                .send(&self.api, &ApiRequest::new(Method::GET, url))
                .await?
                .json("fault domains")?;
            let mut fds: Vec<String> = fds.into_iter().map(|f| f.name).collect();
            fds.sort();
            domains.push((ad.name, fds));
        }
        domains.sort_by(|a, b| a.0.cmp(&b.0));
        tracing::info!(
            provider = PROVIDER_NAME,
            region,
            ads = domains.len(),
            pairs = domains.iter().map(|d| d.1.len().max(1)).sum::<usize>(),
            "availability and fault domains"
        );
        let domains = Arc::new(domains);
        self.domains
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(region.to_owned(), (Instant::now(), domains.clone()));
        Ok(domains)
    }

    /// Every instance of the compartment tagged with the group, all pages.
    async fn instances(&self, group: &Group) -> Result<Vec<Instance>, ProviderError> {
        let region = self.region(group)?;
        let compartment = self.compartment(group)?;
        let base = self.endpoints.compute(region);
        let limit = PAGE_LIMIT.to_string();
        let mut found = Vec::new();
        let mut page: Option<String> = None;
        for number in 1..=MAX_PAGES {
            let mut query = vec![("compartmentId", compartment), ("limit", limit.as_str())];
            if let Some(page) = &page {
                query.push(("page", page.as_str()));
            }
            let url = self.url(base.clone(), "/instances", &query)?;
            let answer = self
                .http
                .send(&self.api, &ApiRequest::new(Method::GET, url))
                .await?;
            let instances: Vec<Instance> = answer.json("instance list")?;
            let next = answer
                .header("opc-next-page")
                .map(str::to_owned)
                .filter(|p| !p.is_empty());
            tracing::debug!(provider = PROVIDER_NAME, group = %group.name, page = number,
                received = instances.len(), more = next.is_some(), "instance page");
            found.extend(
                instances
                    .into_iter()
                    .filter(|i| i.group() == Some(group.name.as_str())),
            );
            match next {
                Some(next) if page.as_deref() != Some(next.as_str()) => page = Some(next),
                _ => return Ok(found),
            }
        }
        Err(ProviderError::Fatal(format!(
            "more than {MAX_PAGES} pages of instances in compartment {compartment}"
        )))
    }

    async fn launch_one(
        &self,
        group: &Group,
        region: &str,
        planner: &Mutex<Planner>,
        slot: &LaunchSlot,
    ) -> Result<String, ProviderError> {
        let lock = || planner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut tried = Vec::new();
        let mut last_capacity = None;
        loop {
            let Some(pair) = lock().take(&tried) else {
                let total = lock().len();
                return Err(ProviderError::Capacity(format!(
                    "no capacity in any of {} untried availability/fault domain pairs ({} tried){}",
                    total - tried.len(),
                    tried.len(),
                    last_capacity
                        .map(|e: ProviderError| format!("; last: {e}"))
                        .unwrap_or_default()
                )));
            };
            tried.push(pair);
            let placement = lock().placement(pair).clone();
            match self.post_launch(group, region, slot, &placement).await {
                Ok(id) => return Ok(id),
                Err(error @ ProviderError::Capacity(_)) => {
                    tracing::warn!(provider = PROVIDER_NAME, group = %group.name, name = %slot.display_name,
                        ad = %placement.ad, fd = placement.fd.as_deref().unwrap_or("-"), error = %error,
                        "no capacity; trying the next placement");
                    let mut planner = lock();
                    planner.release(pair);
                    planner.mark_full(pair);
                    last_capacity = Some(error);
                }
                Err(error) => {
                    lock().release(pair);
                    return Err(error);
                }
            }
        }
    }

    async fn post_launch(
        &self,
        group: &Group,
        region: &str,
        slot: &LaunchSlot,
        placement: &Placement,
    ) -> Result<String, ProviderError> {
        let configuration = ocid(&group.instance_configuration_id, "instanceConfigurationId")?;
        let url = self.url(
            self.endpoints.compute(region),
            &format!("/instanceConfigurations/{configuration}/actions/launch"),
            &[],
        )?;
        let body = LaunchBody {
            instance_type: "compute",
            launch_details: LaunchDetails {
                availability_domain: &placement.ad,
                fault_domain: placement.fd.as_deref(),
                display_name: &slot.display_name,
                freeform_tags: HashMap::from([
                    ("group", group.name.as_str()),
                    ("managed-by", "jitsi-scaler"),
                ]),
            },
        };
        let request = ApiRequest::new(Method::POST, url)
            .json(&body)?
            .header(
                "opc-retry-token",
                &retry_token(&slot.idempotency_key, placement),
            )?
            .idempotent(true);
        let instance: Instance = self
            .http
            .send(&self.api, &request)
            .await?
            .json("launched instance")?;
        tracing::info!(provider = PROVIDER_NAME, group = %group.name, name = %slot.display_name,
            instance = %instance.id, ad = %placement.ad, fd = placement.fd.as_deref().unwrap_or("-"),
            "instance launched");
        Ok(instance.id)
    }

    async fn get_instance(
        &self,
        group: &Group,
        id: &str,
    ) -> Result<Option<Instance>, ProviderError> {
        let url = self.url(
            self.endpoints.compute(self.region(group)?),
            &format!("/instances/{id}"),
            &[],
        )?;
        let answer = self
            .http
            .send(&self.api, &ApiRequest::new(Method::GET, url).accept(&[404]))
            .await?;
        if answer.status.as_u16() == 404 {
            return Ok(None);
        }
        answer.json("instance").map(Some)
    }
}

/// The `opc-retry-token` of one instance at one placement: the same slot retried at the same
/// placement reuses it (and gets the same instance); another placement gets another token.
pub(crate) fn retry_token(idempotency_key: &str, placement_ad: &Placement) -> String {
    let mut hash = Sha256::new();
    for part in [
        idempotency_key,
        placement_ad.ad.as_str(),
        placement_ad.fd.as_deref().unwrap_or(""),
    ] {
        hash.update(part.as_bytes());
        hash.update(b"\n");
    }
    hex::encode(hash.finalize())
}

fn valid_region(region: &str) -> bool {
    !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An OCID safe to put in a URL path.
fn ocid<'a>(value: &'a str, what: &str) -> Result<&'a str, ProviderError> {
    let ok = value.starts_with("ocid")
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(value)
    } else {
        Err(ProviderError::Config(format!(
            "{what} {value:?} is not an OCID"
        )))
    }
}

fn created_at_ms(instance: &Instance) -> Option<i64> {
    instance
        .time_created
        .as_deref()?
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

#[async_trait]
impl CloudProvider for OracleProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn validate_group(&self, group: &Group) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if group.compartment_id.is_empty() {
            errors.push(FieldError::body(
                "compartmentId",
                "An Oracle group needs a compartmentId",
                None,
            ));
        }
        if ocid(&group.instance_configuration_id, "instanceConfigurationId").is_err() {
            errors.push(FieldError::body(
                "instanceConfigurationId",
                "An Oracle group needs the OCID of an instance configuration",
                Some(Value::from(group.instance_configuration_id.clone())),
            ));
        }
        if !group.region.is_empty() && !valid_region(&group.region) {
            errors.push(FieldError::body(
                "region",
                "Not an OCI region identifier (like eu-frankfurt-1)",
                Some(Value::from(group.region.clone())),
            ));
        }
        errors
    }

    async fn launch(&self, group: &Group, request: &LaunchRequest) -> LaunchOutcome {
        if request.slots.is_empty() {
            return LaunchOutcome::default();
        }
        let region = match self.region(group) {
            Ok(r) => r,
            Err(e) => return LaunchOutcome::failed(e),
        };
        if let Err(e) = ocid(&group.instance_configuration_id, "instanceConfigurationId") {
            return LaunchOutcome::failed(e);
        }
        let domains = match self.domains(region).await {
            Ok(d) if !d.is_empty() => d,
            Ok(_) => {
                return LaunchOutcome::failed(ProviderError::Config(format!(
                    "no availability domain in {region}"
                )));
            }
            Err(e) => return LaunchOutcome::failed(e),
        };
        // The group's live instances: their placement steers the spreading, and a slot whose
        // name is already there was launched by an earlier attempt of this launch.
        let live: Vec<Instance> = match self.instances(group).await {
            Ok(all) => all.into_iter().filter(|i| !i.is_ending()).collect(),
            Err(e) => {
                tracing::warn!(provider = PROVIDER_NAME, group = %group.name, error = %e,
                    "cannot list the group before launching; placing without its distribution");
                Vec::new()
            }
        };
        let planner = Mutex::new(Planner::new(
            &domains,
            live.iter().filter_map(|i| {
                i.availability_domain
                    .as_deref()
                    .map(|ad| (ad, i.fault_domain.as_deref()))
            }),
            request.current_count,
        ));
        let mut outcome = LaunchOutcome::default();
        let mut to_launch = Vec::new();
        for (index, slot) in request.slots.iter().enumerate() {
            match live
                .iter()
                .find(|i| i.display_name.as_deref() == Some(slot.display_name.as_str()))
            {
                Some(existing) => outcome.launched.push(LaunchedInstance {
                    slot: index,
                    instance_id: existing.id.clone(),
                    display_name: slot.display_name.clone(),
                }),
                None => to_launch.push(index),
            }
        }
        let results: Vec<(usize, Result<String, ProviderError>)> = futures::stream::iter(to_launch)
            .map(|index| {
                let planner = &planner;
                async move {
                    let slot = &request.slots[index];
                    (index, self.launch_one(group, region, planner, slot).await)
                }
            })
            .buffer_unordered(self.launch_concurrency)
            .collect()
            .await;
        for (index, result) in results {
            match result {
                Ok(instance_id) => outcome.launched.push(LaunchedInstance {
                    slot: index,
                    instance_id,
                    display_name: request.slots[index].display_name.clone(),
                }),
                Err(error) => outcome.error = keep_worse(outcome.error.take(), error),
            }
        }
        outcome.launched.sort_by_key(|l| l.slot);
        tracing::info!(provider = PROVIDER_NAME, group = %group.name, region,
            requested = request.slots.len(), launched = outcome.launched.len(),
            error = outcome.error.as_ref().map(|e| e.to_string()), "launch done");
        outcome
    }

    async fn list(&self, group: &Group) -> Result<Vec<CloudInstance>, ProviderError> {
        Ok(self
            .instances(group)
            .await?
            .into_iter()
            .filter(|i| !i.lifecycle_state.eq_ignore_ascii_case("TERMINATED"))
            .map(|i| CloudInstance {
                created_at_ms: created_at_ms(&i),
                display_name: i.display_name.unwrap_or_default(),
                cloud_status: i.lifecycle_state.into(),
                instance_id: i.id,
            })
            .collect())
    }

    async fn terminate(&self, group: &Group, instance_id: &str) -> Result<(), ProviderError> {
        let id = ocid(instance_id, "instance id")?;
        let Some(instance) = self.get_instance(group, id).await? else {
            tracing::info!(provider = PROVIDER_NAME, group = %group.name, instance = id, "already gone");
            return Ok(());
        };
        if instance.group() != Some(group.name.as_str()) {
            return Err(ProviderError::Config(format!(
                "instance {id} is not tagged group={}; not terminating it",
                group.name
            )));
        }
        if instance.lifecycle_state.eq_ignore_ascii_case("TERMINATED") {
            return Ok(());
        }
        let url = self.url(
            self.endpoints.compute(self.region(group)?),
            &format!("/instances/{id}"),
            &[
                ("preserveBootVolume", "false"),
                ("preserveDataVolumesCreatedAtLaunch", "false"),
            ],
        )?;
        let answer = self
            .http
            .send(
                &self.api,
                &ApiRequest::new(Method::DELETE, url).accept(&[404, 409]),
            )
            .await?;
        if answer.status.as_u16() == 409 {
            // Success only when the conflict is that the instance is already ending.
            match self.get_instance(group, id).await? {
                None => {}
                Some(i) if i.is_ending() => {}
                Some(i) => {
                    return Err(ProviderError::Transient(format!(
                        "instance {id} cannot be terminated now (state {})",
                        i.lifecycle_state
                    )));
                }
            }
        }
        tracing::info!(provider = PROVIDER_NAME, group = %group.name, instance = id,
            status = answer.status.as_u16(), "instance terminating");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_tokens_follow_the_slot_and_the_placement() {
        let a = Placement {
            ad: "AD-1".into(),
            fd: Some("FD-1".into()),
        };
        let b = Placement {
            ad: "AD-1".into(),
            fd: Some("FD-2".into()),
        };
        assert_eq!(retry_token("k1", &a), retry_token("k1", &a));
        assert_ne!(retry_token("k1", &a), retry_token("k1", &b));
        assert_ne!(retry_token("k1", &a), retry_token("k2", &a));
        assert_eq!(retry_token("k1", &a).len(), 64);
    }

    #[test]
    fn ocids_and_regions_are_checked_before_they_reach_a_url() {
        assert!(ocid("ocid1.instance.oc1.eu-frankfurt-1.abc", "id").is_ok());
        assert!(ocid("ocid1.instance/../x", "id").is_err());
        assert!(ocid("i-123", "id").is_err());
        assert!(valid_region("eu-frankfurt-1"));
        assert!(!valid_region("evil.com/x"));
        assert!(!valid_region(""));
    }
}
