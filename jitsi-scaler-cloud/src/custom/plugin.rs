//! The HTTP plugin provider: a provider in any language behind the JSON protocol of
//! `docs/plugin-protocol.md` (`POST {base}/launch`, `GET {base}/instances`,
//! `DELETE {base}/instances/{id}`, bearer token). Its name is configurable, so several plugins
//! can serve different groups.

use std::collections::HashSet;

use async_trait::async_trait;
use jitsi_scaler_core::group::Group;
use jitsi_scaler_core::instance::CloudInstance;
use jitsi_scaler_core::provider::{
    CloudProvider, LaunchOutcome, LaunchRequest, LaunchedInstance, ProviderError,
};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, Url};
use serde::Deserialize;

use super::protocol::{ErrorReply, InstancePage, LaunchCall, LaunchReply};
use crate::env::{ConfigError, Env};
use crate::http::{
    Api, ApiRequest, ApiResponse, HttpClient, HttpConfig, classify_status, retry_after, snippet,
};
use crate::secret::Secret;

/// Pages followed at most, a guard against a plugin that never ends.
const MAX_PAGES: u32 = 10_000;

/// Settings of one HTTP plugin.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfig {
    /// The provider name groups use in `cloud`.
    pub name: String,
    /// Base URL; the protocol's paths are relative to it.
    pub base_url: String,
    /// Bearer token sent with every call, if any.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Timeouts and retries.
    #[serde(default)]
    pub http: HttpConfig,
}

impl PluginConfig {
    /// Reads `PLUGIN_<NAME>_URL` (required) and `PLUGIN_<NAME>_TOKEN` (optional), `<NAME>` being
    /// the provider name upper-cased with every other character than letters and digits
    /// replaced by `_` (`my-cloud` → `PLUGIN_MY_CLOUD_URL`), and the [`HttpConfig`] variables.
    pub fn from_env(name: &str) -> Result<Self, ConfigError> {
        Self::from_lookup(name, crate::env::process_env)
    }

    /// [`from_env`](Self::from_env) with variables read through `lookup`.
    pub fn from_lookup(
        name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        let prefix = env_prefix(name);
        Ok(Self {
            name: name.to_owned(),
            base_url: env.required(&format!("{prefix}_URL"))?,
            token: env.get(&format!("{prefix}_TOKEN")).map(Secret::new),
            http: HttpConfig::from_lookup(&lookup)?,
        })
    }
}

/// `PLUGIN_<NAME>` for a provider name.
pub fn env_prefix(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("PLUGIN_{upper}")
}

/// Bearer authentication and the protocol's error body.
#[derive(Debug)]
struct PluginApi {
    token: Option<Secret>,
}

impl Api for PluginApi {
    fn authorize(&self, request: &mut reqwest::Request) -> Result<(), ProviderError> {
        if let Some(token) = &self.token {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    ProviderError::Config("the plugin token is not a valid header value".into())
                })?;
            value.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        Ok(())
    }

    fn classify(&self, response: &ApiResponse) -> ProviderError {
        match serde_json::from_slice::<ErrorReply>(&response.body) {
            Ok(reply) => {
                let mut error = ProviderError::from(reply.error);
                if let ProviderError::Throttled {
                    retry_after: wait @ None,
                    ..
                } = &mut error
                {
                    *wait = retry_after(&response.headers);
                }
                error
            }
            Err(_) => classify_status(
                response.status,
                snippet(&response.body),
                retry_after(&response.headers),
            ),
        }
    }
}

/// A provider served by an HTTP plugin.
#[derive(Debug)]
pub struct PluginProvider {
    name: String,
    base: Url,
    http: HttpClient,
    api: PluginApi,
}

impl PluginProvider {
    /// A provider for the plugin at `config.base_url`.
    pub fn new(config: &PluginConfig) -> Result<Self, ConfigError> {
        let variable = format!("{}_URL", env_prefix(&config.name));
        if config.name.trim().is_empty() {
            return Err(ConfigError::invalid("plugin name", "must not be empty"));
        }
        let mut base = Url::parse(&config.base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| ConfigError::invalid(&variable, "not an http(s) URL"))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self {
            name: config.name.clone(),
            http: HttpClient::new(&config.name, &config.http)?,
            api: PluginApi {
                token: config.token.clone(),
            },
            base,
        })
    }

    fn url(&self, path: &str) -> Result<Url, ProviderError> {
        self.base
            .join(path)
            .map_err(|e| ProviderError::Fatal(format!("cannot build the plugin URL {path}: {e}")))
    }

    fn instance_url(&self, instance_id: &str, group: &Group) -> Result<Url, ProviderError> {
        let mut url = self.url("instances")?;
        url.path_segments_mut()
            .map_err(|_| ProviderError::Config("the plugin base URL cannot have paths".into()))?
            .push(instance_id);
        url.query_pairs_mut()
            .append_pair("group", &group.name)
            .append_pair("region", &group.region);
        Ok(url)
    }

    async fn call_launch(
        &self,
        group: &Group,
        request: &LaunchRequest,
    ) -> Result<LaunchReply, ProviderError> {
        let body = LaunchCall {
            group: group.clone(),
            intent_id: request.intent_id.clone(),
            current_count: request.current_count,
            slots: request.slots.clone(),
        };
        // Plugins must honour the idempotency keys, so a launch may be repeated.
        let call = ApiRequest::new(Method::POST, self.url("launch")?)
            .json(&body)?
            .idempotent(true);
        self.http
            .send(&self.api, &call)
            .await?
            .json("plugin launch")
    }
}

#[async_trait]
impl CloudProvider for PluginProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn launch(&self, group: &Group, request: &LaunchRequest) -> LaunchOutcome {
        if request.slots.is_empty() {
            return LaunchOutcome::default();
        }
        let reply = match self.call_launch(group, request).await {
            Ok(reply) => reply,
            Err(error) => return LaunchOutcome::failed(error),
        };
        let mut outcome = LaunchOutcome {
            launched: Vec::new(),
            error: reply.error.map(ProviderError::from),
        };
        let mut seen = HashSet::new();
        let mut invalid = 0usize;
        for entry in reply.launched {
            let valid = entry.slot < request.slots.len()
                && !entry.instance_id.trim().is_empty()
                && seen.insert(entry.slot);
            if valid {
                outcome.launched.push(LaunchedInstance {
                    slot: entry.slot,
                    instance_id: entry.instance_id,
                    display_name: entry.display_name,
                });
            } else {
                invalid += 1;
            }
        }
        if invalid > 0 && outcome.error.is_none() {
            outcome.error = Some(ProviderError::Fatal(format!(
                "the plugin answered {invalid} launched entries with an unknown or repeated slot \
                 or an empty instanceId"
            )));
        }
        if outcome.error.is_none() && outcome.launched.len() < request.slots.len() {
            outcome.error = Some(ProviderError::Fatal(format!(
                "the plugin launched {} of {} instances without saying why",
                outcome.launched.len(),
                request.slots.len()
            )));
        }
        outcome.launched.sort_by_key(|l| l.slot);
        tracing::info!(provider = %self.name, group = %group.name, requested = request.slots.len(),
            launched = outcome.launched.len(), error = outcome.error.as_ref().map(|e| e.to_string()),
            "launch done");
        outcome
    }

    async fn list(&self, group: &Group) -> Result<Vec<CloudInstance>, ProviderError> {
        let mut instances = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut url = self.url("instances")?;
            {
                let mut query = url.query_pairs_mut();
                query
                    .append_pair("group", &group.name)
                    .append_pair("region", &group.region);
                if let Some(token) = &token {
                    query.append_pair("pageToken", token);
                }
            }
            let page: InstancePage = self
                .http
                .send(&self.api, &ApiRequest::new(Method::GET, url))
                .await?
                .json("plugin instance list")?;
            instances.extend(page.instances.into_iter().map(|i| {
                CloudInstance {
                    created_at_ms: i
                        .created_at
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .map(|t| t.as_millisecond()),
                    instance_id: i.instance_id,
                    display_name: i.display_name,
                    cloud_status: i.cloud_status.into(),
                }
            }));
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) if token.as_deref() != Some(next.as_str()) => token = Some(next),
                _ => return Ok(instances),
            }
        }
        Err(ProviderError::Fatal(format!(
            "the plugin answered more than {MAX_PAGES} pages"
        )))
    }

    async fn terminate(&self, group: &Group, instance_id: &str) -> Result<(), ProviderError> {
        let url = self.instance_url(instance_id, group)?;
        let answer = self
            .http
            .send(
                &self.api,
                &ApiRequest::new(Method::DELETE, url).accept(&[404]),
            )
            .await?;
        tracing::info!(provider = %self.name, group = %group.name, instance = instance_id,
            status = answer.status.as_u16(), "instance terminated");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_names_derive_from_the_provider_name() {
        assert_eq!(env_prefix("my-cloud"), "PLUGIN_MY_CLOUD");
        let config = PluginConfig::from_lookup("hetzner", |name| match name {
            "PLUGIN_HETZNER_URL" => Some("http://127.0.0.1:9000/v1".into()),
            "PLUGIN_HETZNER_TOKEN" => Some("s3cret".into()),
            _ => None,
        })
        .expect("config");
        assert_eq!(config.base_url, "http://127.0.0.1:9000/v1");
        assert!(!format!("{config:?}").contains("s3cret"));
        let err = PluginConfig::from_lookup("aws", |_| None).expect_err("missing");
        assert_eq!(err.variable(), "PLUGIN_AWS_URL");
    }

    #[test]
    fn urls_keep_the_base_path_and_encode_ids() {
        let provider = PluginProvider::new(&PluginConfig {
            name: "p".into(),
            base_url: "http://127.0.0.1:9000/v1".into(),
            token: None,
            http: HttpConfig::default(),
        })
        .expect("provider");
        assert_eq!(
            provider.url("launch").expect("url").as_str(),
            "http://127.0.0.1:9000/v1/launch"
        );
        let group: Group = serde_json::from_value(serde_json::json!({
            "name": "g1", "type": "jibri", "region": "r1",
            "scalingOptions": {"minDesired":0,"maxDesired":1,"desiredCount":0,"scaleUpQuantity":1,
              "scaleDownQuantity":1,"scaleUpThreshold":0.8,"scaleDownThreshold":0.3,"scalePeriod":60,
              "scaleUpPeriodsCount":2,"scaleDownPeriodsCount":2}
        }))
        .expect("group");
        assert_eq!(
            provider
                .instance_url("a/b c", &group)
                .expect("url")
                .as_str(),
            "http://127.0.0.1:9000/v1/instances/a%2Fb%20c?group=g1&region=r1"
        );
    }
}
