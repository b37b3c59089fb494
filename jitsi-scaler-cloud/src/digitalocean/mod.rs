//! The DigitalOcean provider (`cloud: "digitalocean"`): droplets created in batches of up to
//! ten with `names`, tagged `group:<group>` and with a launch tag so that a launch whose outcome
//! is unknown is looked up instead of repeated; listed by tag through every page; deleted one
//! by one (never by tag).

mod api;
mod config;

use std::collections::HashMap;

use async_trait::async_trait;
use jitsi_scaler_core::group::{FieldError, Group};
use jitsi_scaler_core::instance::CloudInstance;
use jitsi_scaler_core::provider::{
    CloudProvider, LaunchOutcome, LaunchRequest, LaunchedInstance, ProviderError,
};
use reqwest::{Method, Url};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use config::{DEFAULT_BASE_URL, DigitalOceanConfig, DropletConfigs};

use crate::env::ConfigError;
use crate::http::{ApiRequest, HttpClient};
use api::{CreateAnswer, DigitalOceanApi, Droplet, DropletAnswer, DropletPage, cloud_status};

/// The provider name groups use.
pub const PROVIDER_NAME: &str = "digitalocean";
/// Droplets per create request (DigitalOcean's limit for `names`).
pub const MAX_BATCH: usize = 10;
/// Droplets per listed page (DigitalOcean's maximum).
const PER_PAGE: u32 = 200;
/// Pages followed at most (200 000 droplets), a guard against a server that never ends.
const MAX_PAGES: u32 = 1000;
/// Create requests per batch at most when their outcome stays unknown.
const MAX_POSTS_PER_BATCH: u32 = 3;

/// Launches, lists and deletes droplets.
#[derive(Debug)]
pub struct DigitalOceanProvider {
    http: HttpClient,
    api: DigitalOceanApi,
    base: Url,
    droplets: DropletConfigs,
}

impl DigitalOceanProvider {
    /// A provider reading its droplet configuration file now.
    pub fn new(config: &DigitalOceanConfig) -> Result<Self, ConfigError> {
        let droplets = DropletConfigs::from_file(&config.configuration_file_path)?;
        Self::with_droplet_configs(config, droplets)
    }

    /// A provider with droplet configurations given directly (the file is not read).
    pub fn with_droplet_configs(
        config: &DigitalOceanConfig,
        droplets: DropletConfigs,
    ) -> Result<Self, ConfigError> {
        if config.api_token.is_empty() {
            return Err(ConfigError::Missing {
                variable: "DIGITALOCEAN_API_TOKEN".into(),
            });
        }
        let base = Url::parse(&config.base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                ConfigError::invalid("DIGITALOCEAN_API_BASE_URL", "not an http(s) URL")
            })?;
        Ok(Self {
            http: HttpClient::new(PROVIDER_NAME, &config.http)?,
            api: DigitalOceanApi::new(config.api_token.clone()),
            base,
            droplets,
        })
    }

    fn url(&self, path: &str) -> Result<Url, ProviderError> {
        self.base
            .join(path)
            .map_err(|e| ProviderError::Fatal(format!("cannot build the URL of {path}: {e}")))
    }

    /// Every droplet carrying `tag`, all pages.
    async fn list_tagged(&self, tag: &str) -> Result<Vec<Droplet>, ProviderError> {
        let mut droplets = Vec::new();
        let mut page = 1u32;
        loop {
            let mut url = self.url("/v2/droplets")?;
            url.query_pairs_mut()
                .append_pair("tag_name", tag)
                .append_pair("per_page", &PER_PAGE.to_string())
                .append_pair("page", &page.to_string());
            let answer = self
                .http
                .send(&self.api, &ApiRequest::new(Method::GET, url))
                .await?;
            let body: DropletPage = answer.json("droplet list")?;
            let received = body.droplets.len();
            droplets.extend(body.droplets);
            let total = body.meta.and_then(|m| m.total);
            let next = body
                .links
                .and_then(|l| l.pages)
                .and_then(|p| p.next)
                .and_then(|next| next_page(&next));
            tracing::debug!(
                provider = PROVIDER_NAME,
                tag,
                page,
                received,
                ?total,
                ?next,
                "droplet page"
            );
            match next {
                _ if received == 0 => break,
                _ if total.is_some_and(|t| droplets.len() as u64 >= t) => break,
                Some(next) if next > page && next <= MAX_PAGES => page = next,
                Some(next) if next > MAX_PAGES => {
                    return Err(ProviderError::Fatal(format!(
                        "more than {MAX_PAGES} pages of droplets tagged {tag}"
                    )));
                }
                _ => break,
            }
        }
        Ok(droplets)
    }

    /// One create request for `names`; the created droplets by name.
    async fn create(
        &self,
        base_body: &Map<String, Value>,
        names: &[&str],
    ) -> Result<Vec<Droplet>, ProviderError> {
        let mut body = base_body.clone();
        body.insert("names".into(), Value::from(names.to_vec()));
        let request = ApiRequest::new(Method::POST, self.url("/v2/droplets")?).json(&body)?;
        let answer = self.http.send(&self.api, &request).await?;
        let created: CreateAnswer = answer.json("droplet create")?;
        Ok(created
            .droplets
            .unwrap_or_default()
            .into_iter()
            .chain(created.droplet)
            .collect())
    }

    /// Launches one batch, looking the launch tag up whenever a create's outcome is unknown.
    async fn launch_batch(
        &self,
        body: &Map<String, Value>,
        launch_tag: &str,
        request: &LaunchRequest,
        batch: Vec<usize>,
        outcome: &mut LaunchOutcome,
    ) -> Result<(), ProviderError> {
        let mut pending = batch;
        let mut posts = 0u32;
        loop {
            let names: Vec<&str> = pending
                .iter()
                .map(|&i| request.slots[i].display_name.as_str())
                .collect();
            posts += 1;
            let unknown = match self.create(body, &names).await {
                Ok(droplets) => {
                    pending = record(request, &pending, &droplets, outcome);
                    if pending.is_empty() {
                        return Ok(());
                    }
                    ProviderError::Transient(format!(
                        "the create answer did not name {} droplet(s)",
                        pending.len()
                    ))
                }
                // A timeout, lost connection or 5xx: the droplets may exist.
                Err(e @ ProviderError::Transient(_)) => e,
                // Rejected: nothing was created.
                Err(e) => return Err(e),
            };
            tracing::warn!(provider = PROVIDER_NAME, launch_tag, pending = pending.len(), error = %unknown,
                "create outcome unknown; looking the launch tag up before trying again");
            let existing = self.list_tagged(launch_tag).await?;
            pending = record(request, &pending, &existing, outcome);
            if pending.is_empty() {
                return Ok(());
            }
            if posts >= MAX_POSTS_PER_BATCH {
                return Err(unknown);
            }
            tokio::time::sleep(self.http.config().retry_policy().backoff.delay(posts - 1)).await;
        }
    }
}

/// Records the droplets whose names match pending slots; returns the slots still pending.
fn record(
    request: &LaunchRequest,
    pending: &[usize],
    droplets: &[Droplet],
    outcome: &mut LaunchOutcome,
) -> Vec<usize> {
    let mut by_name: HashMap<&str, Vec<u64>> = HashMap::new();
    for droplet in droplets {
        by_name
            .entry(droplet.name.as_str())
            .or_default()
            .push(droplet.id);
    }
    let mut still = Vec::new();
    for &slot in pending {
        let name = request.slots[slot].display_name.as_str();
        match by_name.get_mut(name).and_then(Vec::pop) {
            Some(id) => outcome.launched.push(LaunchedInstance {
                slot,
                instance_id: id.to_string(),
                display_name: name.to_owned(),
            }),
            None => still.push(slot),
        }
    }
    still
}

/// The page number of a `links.pages.next` URL. Only the number is used: the next request goes
/// to the configured base URL, so the token is never sent to another host.
fn next_page(next: &str) -> Option<u32> {
    let url = Url::parse(next).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
}

/// The tag that marks a launch's droplets: derived from the persisted launch intent (or the
/// slots' idempotency keys), so a retried launch finds what an earlier attempt created.
pub fn launch_tag(request: &LaunchRequest) -> String {
    let mut hash = Sha256::new();
    if request.intent_id.is_empty() {
        for slot in &request.slots {
            hash.update(slot.idempotency_key.as_bytes());
            hash.update(b"\n");
        }
    } else {
        hash.update(request.intent_id.as_bytes());
    }
    let digest = hex::encode(hash.finalize());
    format!("jitsi-scaler-launch:{}", &digest[..20])
}

/// The tag of a group's droplets.
pub fn group_tag(group: &str) -> String {
    format!("group:{group}")
}

/// The create body without names: `region`, then the droplet configuration (whose `region`,
/// if any, wins, as in the reference), then the tags.
fn create_body(group: &Group, config: &Map<String, Value>, launch_tag: &str) -> Map<String, Value> {
    let mut body = Map::new();
    if !group.region.is_empty() {
        body.insert("region".into(), Value::from(group.region.clone()));
    }
    for (key, value) in config {
        if matches!(key.as_str(), "name" | "names" | "tags") {
            continue;
        }
        if key == "region" && value.as_str() != Some(group.region.as_str()) {
            tracing::info!(provider = PROVIDER_NAME, group = %group.name, group_region = %group.region,
                region = %value, "the droplet configuration's region overrides the group's");
        }
        body.insert(key.clone(), value.clone());
    }
    let mut tags: Vec<Value> = config
        .get("tags")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for tag in [group_tag(&group.name), launch_tag.to_owned()] {
        if !tags.iter().any(|t| t.as_str() == Some(tag.as_str())) {
            tags.push(Value::from(tag));
        }
    }
    body.insert("tags".into(), Value::Array(tags));
    body
}

fn created_at_ms(droplet: &Droplet) -> Option<i64> {
    let created = droplet.created_at.as_deref()?;
    created
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// A DigitalOcean group name: the droplet name and the `group:` tag must both be valid.
fn valid_group_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

/// Longest group name: the display name adds `-` and 5 characters, droplet names allow 255.
const MAX_GROUP_NAME: usize = 249;

#[async_trait]
impl CloudProvider for DigitalOceanProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn validate_group(&self, group: &Group) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !valid_group_name(&group.name) || group.name.len() > MAX_GROUP_NAME {
            errors.push(FieldError::body(
                "name",
                format!(
                    "A DigitalOcean group name must match ^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$ \
                     and have at most {MAX_GROUP_NAME} characters"
                ),
                Some(Value::from(group.name.clone())),
            ));
        }
        match self.droplets.for_group(group) {
            None => errors.push(FieldError::body(
                "type",
                format!(
                    "No DigitalOcean droplet configuration for group {:?} or type {:?}",
                    group.name, group.type_name
                ),
                Some(Value::from(group.type_name.clone())),
            )),
            Some(config) => {
                for key in ["size", "image"] {
                    if !config.contains_key(key) {
                        errors.push(FieldError::body(
                            "type",
                            format!(
                                "The DigitalOcean droplet configuration for {:?} has no {key:?}",
                                group.type_name
                            ),
                            None,
                        ));
                    }
                }
            }
        }
        errors
    }

    async fn launch(&self, group: &Group, request: &LaunchRequest) -> LaunchOutcome {
        if request.slots.is_empty() {
            return LaunchOutcome::default();
        }
        let Some(config) = self.droplets.for_group(group) else {
            return LaunchOutcome::failed(ProviderError::Config(format!(
                "no DigitalOcean droplet configuration for group {:?} or type {:?}",
                group.name, group.type_name
            )));
        };
        let tag = launch_tag(request);
        let body = create_body(group, config, &tag);
        let mut outcome = LaunchOutcome::default();

        // A launch retried after a crash or a lost answer finds what was created before.
        let existing = match self.list_tagged(&tag).await {
            Ok(existing) => existing,
            Err(error) => return LaunchOutcome::failed(error),
        };
        let all: Vec<usize> = (0..request.slots.len()).collect();
        let pending = record(request, &all, &existing, &mut outcome);
        if !outcome.launched.is_empty() {
            tracing::info!(provider = PROVIDER_NAME, group = %group.name, launch_tag = %tag,
                found = outcome.launched.len(), "droplets of an earlier attempt found");
        }
        for batch in pending.chunks(MAX_BATCH) {
            if let Err(error) = self
                .launch_batch(&body, &tag, request, batch.to_vec(), &mut outcome)
                .await
            {
                outcome.error = Some(error);
                break;
            }
        }
        outcome.launched.sort_by_key(|l| l.slot);
        tracing::info!(provider = PROVIDER_NAME, group = %group.name, launch_tag = %tag,
            requested = request.slots.len(), launched = outcome.launched.len(),
            error = outcome.error.as_ref().map(|e| e.to_string()), "launch done");
        outcome
    }

    async fn list(&self, group: &Group) -> Result<Vec<CloudInstance>, ProviderError> {
        if let Some(wait) = self.api.quota_low() {
            return Err(ProviderError::Throttled {
                retry_after: Some(wait),
                message: "less than 5 % of the DigitalOcean rate limit left; listing deferred"
                    .into(),
            });
        }
        let droplets = self.list_tagged(&group_tag(&group.name)).await?;
        Ok(droplets
            .iter()
            .map(|d| CloudInstance {
                instance_id: d.id.to_string(),
                display_name: d.name.clone(),
                cloud_status: cloud_status(&d.status).into(),
                created_at_ms: created_at_ms(d),
            })
            .collect())
    }

    async fn terminate(&self, group: &Group, instance_id: &str) -> Result<(), ProviderError> {
        let id: u64 = instance_id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id >= 1)
            .ok_or_else(|| {
                ProviderError::Config(format!("{instance_id:?} is not a DigitalOcean droplet id"))
            })?;
        let url = self.url(&format!("/v2/droplets/{id}"))?;
        let answer = self
            .http
            .send(
                &self.api,
                &ApiRequest::new(Method::GET, url.clone()).accept(&[404]),
            )
            .await?;
        if answer.status.as_u16() == 404 {
            tracing::info!(provider = PROVIDER_NAME, group = %group.name, droplet = id, "already gone");
            return Ok(());
        }
        let droplet: DropletAnswer = answer.json("droplet")?;
        let tag = group_tag(&group.name);
        if !droplet.droplet.tags.unwrap_or_default().contains(&tag) {
            return Err(ProviderError::Config(format!(
                "droplet {id} is not tagged {tag}; not deleting it"
            )));
        }
        self.http
            .send(
                &self.api,
                &ApiRequest::new(Method::DELETE, url).accept(&[404]),
            )
            .await?;
        tracing::info!(provider = PROVIDER_NAME, group = %group.name, droplet = id, "droplet deleted");
        Ok(())
    }
}
