//! DigitalOcean settings: API token, base URL and the per-type droplet configuration file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jitsi_scaler_core::group::Group;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::env::{ConfigError, Env};
use crate::http::HttpConfig;
use crate::secret::Secret;

/// The public DigitalOcean API.
pub const DEFAULT_BASE_URL: &str = "https://api.digitalocean.com";

/// Settings of the DigitalOcean provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigitalOceanConfig {
    /// API token (`DIGITALOCEAN_API_TOKEN`), scopes `droplet:create/read/delete`, `tag:create/read`,
    /// `image:read`.
    pub api_token: Secret,
    /// The per-type droplet configuration file (`DIGITALOCEAN_CONFIGURATION_FILE_PATH`).
    pub configuration_file_path: PathBuf,
    /// API base URL (`DIGITALOCEAN_API_BASE_URL`, default `https://api.digitalocean.com`).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Timeouts and retries.
    #[serde(default)]
    pub http: HttpConfig,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_owned()
}

impl DigitalOceanConfig {
    /// Reads `DIGITALOCEAN_API_TOKEN`, `DIGITALOCEAN_CONFIGURATION_FILE_PATH` (both required),
    /// `DIGITALOCEAN_API_BASE_URL` and the [`HttpConfig`] variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(crate::env::process_env)
    }

    /// [`from_env`](Self::from_env) with variables read through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        Ok(Self {
            api_token: Secret::new(env.required("DIGITALOCEAN_API_TOKEN")?),
            configuration_file_path: env
                .path("DIGITALOCEAN_CONFIGURATION_FILE_PATH")
                .ok_or_else(|| ConfigError::Missing {
                    variable: "DIGITALOCEAN_CONFIGURATION_FILE_PATH".into(),
                })?,
            base_url: env
                .get("DIGITALOCEAN_API_BASE_URL")
                .unwrap_or_else(default_base_url),
            http: HttpConfig::from_lookup(&lookup)?,
        })
    }
}

/// The droplet settings per group type (or group name), as in the reference's file:
/// `{"jvb":{"size":"s-2vcpu-4gb","image":"…","ssh_keys":[],"tags":["jitsi"]}}`.
///
/// Every key of an entry is sent with the create request (`size`, `image`, `ssh_keys`,
/// `backups`, `ipv6`, `tags`, `private_networking`, `vpc_uuid`, `user_data`, `monitoring`,
/// `volumes`, `with_droplet_agent`, and also `region`, which overrides the group's region).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DropletConfigs {
    entries: BTreeMap<String, Map<String, Value>>,
}

impl DropletConfigs {
    /// Parses the JSON of a configuration file; every entry must be an object.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let Value::Object(map) = value else {
            return Err("expected a JSON object keyed by group type".into());
        };
        let mut entries = BTreeMap::new();
        for (key, entry) in map {
            let Value::Object(entry) = entry else {
                return Err(format!("entry {key:?} is not an object"));
            };
            entries.insert(key, entry);
        }
        Ok(Self { entries })
    }

    /// Reads and parses a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let variable = "DIGITALOCEAN_CONFIGURATION_FILE_PATH";
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::invalid(variable, format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_json(&text)
            .map_err(|e| ConfigError::invalid(variable, format!("{}: {e}", path.display())))
    }

    /// The entry of a group: the key equal to the group name first, then the key equal to the
    /// group type (exactly, then ignoring case).
    pub fn for_group(&self, group: &Group) -> Option<&Map<String, Value>> {
        self.entries
            .get(&group.name)
            .or_else(|| self.entries.get(&group.type_name))
            .or_else(|| {
                self.entries
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(&group.type_name))
                    .map(|(_, entry)| entry)
            })
    }
}
