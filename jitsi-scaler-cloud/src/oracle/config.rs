//! Oracle Cloud settings: the standard OCI configuration file and profile, endpoints, caches.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::env::{ConfigError, Env, duration_ms, expand_home};
use crate::http::HttpConfig;
use crate::secret::Secret;

/// The OCI configuration file the SDKs and the CLI use by default.
pub const DEFAULT_CONFIG_FILE: &str = "~/.oci/config";
/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "DEFAULT";
/// Second-level domain of the commercial realm (oc1).
pub const DEFAULT_DOMAIN: &str = "oraclecloud.com";

/// Settings of the Oracle Cloud provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OracleConfig {
    /// The OCI configuration file (`OCI_CONFIGURATION_FILE_PATH`, default `~/.oci/config`).
    pub configuration_file_path: PathBuf,
    /// The profile in it (`OCI_CONFIGURATION_PROFILE`, default `DEFAULT`).
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Where the APIs are.
    #[serde(default)]
    pub endpoints: OracleEndpoints,
    /// How long availability and fault domain lists are reused (default 1 h).
    #[serde(
        default = "default_domain_cache_ttl",
        rename = "domainCacheTtlMs",
        with = "duration_ms"
    )]
    pub domain_cache_ttl: Duration,
    /// Launch calls of one launch run at the same time (default 4).
    #[serde(default = "default_launch_concurrency")]
    pub launch_concurrency: usize,
    /// Timeouts and retries.
    #[serde(default)]
    pub http: HttpConfig,
}

fn default_profile() -> String {
    DEFAULT_PROFILE.to_owned()
}

fn default_domain_cache_ttl() -> Duration {
    Duration::from_secs(3600)
}

fn default_launch_concurrency() -> usize {
    4
}

/// The API endpoints. By default they follow the group's region:
/// `https://iaas.{region}.{domain}/20160918` and `https://identity.{region}.oci.{domain}/20160918`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OracleEndpoints {
    /// Second-level domain of the realm (`OCI_REALM_DOMAIN`, default `oraclecloud.com`).
    pub domain: String,
    /// Fixed Compute base URL including the API version, for every region (`OCI_COMPUTE_ENDPOINT`).
    pub compute: Option<String>,
    /// Fixed Identity base URL including the API version, for every region (`OCI_IDENTITY_ENDPOINT`).
    pub identity: Option<String>,
}

impl Default for OracleEndpoints {
    fn default() -> Self {
        Self {
            domain: DEFAULT_DOMAIN.to_owned(),
            compute: None,
            identity: None,
        }
    }
}

impl OracleEndpoints {
    /// The Compute base URL of a region, without a trailing slash.
    pub fn compute(&self, region: &str) -> String {
        match &self.compute {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://iaas.{region}.{}/20160918", self.domain),
        }
    }

    /// The Identity base URL of a region, without a trailing slash.
    pub fn identity(&self, region: &str) -> String {
        match &self.identity {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://identity.{region}.oci.{}/20160918", self.domain),
        }
    }
}

impl OracleConfig {
    /// A configuration with defaults for everything but the file.
    pub fn new(configuration_file_path: impl Into<PathBuf>) -> Self {
        Self {
            configuration_file_path: configuration_file_path.into(),
            profile: default_profile(),
            endpoints: OracleEndpoints::default(),
            domain_cache_ttl: default_domain_cache_ttl(),
            launch_concurrency: default_launch_concurrency(),
            http: HttpConfig::default(),
        }
    }

    /// Reads `OCI_CONFIGURATION_FILE_PATH`, `OCI_CONFIGURATION_PROFILE`, `OCI_REALM_DOMAIN`,
    /// `OCI_COMPUTE_ENDPOINT`, `OCI_IDENTITY_ENDPOINT` and the [`HttpConfig`] variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(crate::env::process_env)
    }

    /// [`from_env`](Self::from_env) with variables read through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        let mut config = Self::new(
            env.path("OCI_CONFIGURATION_FILE_PATH")
                .unwrap_or_else(|| expand_home(DEFAULT_CONFIG_FILE)),
        );
        if let Some(profile) = env.get("OCI_CONFIGURATION_PROFILE") {
            config.profile = profile;
        }
        if let Some(domain) = env.get("OCI_REALM_DOMAIN") {
            config.endpoints.domain = domain;
        }
        config.endpoints.compute = env.get("OCI_COMPUTE_ENDPOINT");
        config.endpoints.identity = env.get("OCI_IDENTITY_ENDPOINT");
        config.http = HttpConfig::from_lookup(&lookup)?;
        Ok(config)
    }
}

/// One profile of an OCI configuration file (a named profile inherits missing keys from
/// `DEFAULT`, as in the SDKs).
#[derive(Clone, PartialEq, Eq)]
pub struct OciProfile {
    /// User OCID.
    pub user: String,
    /// Fingerprint of the API signing key.
    pub fingerprint: String,
    /// Tenancy OCID.
    pub tenancy: String,
    /// Home region, used for groups without a region.
    pub region: String,
    /// PEM private key file (`~` expanded).
    pub key_file: PathBuf,
    /// Pass phrase of an encrypted key.
    pub pass_phrase: Option<Secret>,
}

impl fmt::Debug for OciProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OciProfile")
            .field("user", &self.user)
            .field("fingerprint", &self.fingerprint)
            .field("tenancy", &self.tenancy)
            .field("region", &self.region)
            .field("key_file", &self.key_file)
            .field("pass_phrase", &self.pass_phrase.as_ref().map(|_| "***"))
            .finish()
    }
}

impl OciProfile {
    /// `keyId` of request signatures: `<tenancy>/<user>/<fingerprint>`.
    pub fn key_id(&self) -> String {
        format!("{}/{}/{}", self.tenancy, self.user, self.fingerprint)
    }

    /// Reads a profile from a configuration file.
    pub fn load(path: &Path, profile: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::invalid(
                "OCI_CONFIGURATION_FILE_PATH",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        Self::parse(&text, profile).map_err(|reason| {
            ConfigError::invalid(
                "OCI_CONFIGURATION_FILE_PATH",
                format!("{}: {reason}", path.display()),
            )
        })
    }

    /// Reads a profile from the text of a configuration file.
    pub fn parse(text: &str, profile: &str) -> Result<Self, String> {
        let sections = parse_ini(text)?;
        let default = sections.get(DEFAULT_PROFILE);
        let own = sections.get(profile);
        if own.is_none() {
            return Err(format!("no profile [{profile}]"));
        }
        let get = |key: &str| {
            own.and_then(|s| s.get(key))
                .or_else(|| default.and_then(|s| s.get(key)))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let required =
            |key: &str| get(key).ok_or_else(|| format!("profile [{profile}] has no {key}"));
        Ok(Self {
            user: required("user")?,
            fingerprint: required("fingerprint")?,
            tenancy: required("tenancy")?,
            region: required("region")?,
            key_file: expand_home(&required("key_file")?),
            pass_phrase: get("pass_phrase").map(Secret::new),
        })
    }
}

/// Sections of an INI file: `[name]`, `key = value` or `key=value`, `#` and `;` comments.
fn parse_ini(text: &str) -> Result<HashMap<String, HashMap<String, String>>, String> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_owned();
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected key=value", number + 1));
        };
        let Some(section) = &current else {
            return Err(format!("line {}: key outside of a [profile]", number + 1));
        };
        sections
            .entry(section.clone())
            .or_default()
            .insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# comment
[DEFAULT]
user=ocid1.user.oc1..aaa
fingerprint=20:3b:97:13
tenancy = ocid1.tenancy.oc1..ttt
region=eu-frankfurt-1
key_file=~/.oci/key.pem

[ADMIN]
user=ocid1.user.oc1..admin
pass_phrase = hunter2
";

    #[test]
    fn reads_the_default_profile() {
        let profile = OciProfile::parse(FILE, "DEFAULT").expect("profile");
        assert_eq!(profile.user, "ocid1.user.oc1..aaa");
        assert_eq!(profile.tenancy, "ocid1.tenancy.oc1..ttt");
        assert_eq!(profile.region, "eu-frankfurt-1");
        assert_eq!(
            profile.key_id(),
            "ocid1.tenancy.oc1..ttt/ocid1.user.oc1..aaa/20:3b:97:13"
        );
        assert!(!profile.key_file.to_string_lossy().starts_with('~'));
        assert_eq!(profile.pass_phrase, None);
    }

    #[test]
    fn named_profiles_inherit_from_default_and_hide_the_pass_phrase() {
        let profile = OciProfile::parse(FILE, "ADMIN").expect("profile");
        assert_eq!(profile.user, "ocid1.user.oc1..admin");
        assert_eq!(profile.region, "eu-frankfurt-1");
        assert_eq!(
            profile.pass_phrase.as_ref().map(Secret::expose),
            Some("hunter2")
        );
        assert!(!format!("{profile:?}").contains("hunter2"));
    }

    #[test]
    fn missing_profiles_and_keys_are_named() {
        assert_eq!(
            OciProfile::parse(FILE, "NOPE"),
            Err("no profile [NOPE]".into())
        );
        let err = OciProfile::parse("[DEFAULT]\nuser=u\n", "DEFAULT").expect_err("incomplete");
        assert!(err.contains("fingerprint"), "{err}");
        assert!(OciProfile::parse("user=u\n", "DEFAULT").is_err());
    }

    #[test]
    fn environment_and_endpoints() {
        let config = OracleConfig::from_lookup(|name| match name {
            "OCI_CONFIGURATION_FILE_PATH" => Some("/etc/oci/config".into()),
            "OCI_CONFIGURATION_PROFILE" => Some("PROD".into()),
            _ => None,
        })
        .expect("config");
        assert_eq!(
            config.configuration_file_path,
            PathBuf::from("/etc/oci/config")
        );
        assert_eq!(config.profile, "PROD");
        assert_eq!(
            config.endpoints.compute("us-phoenix-1"),
            "https://iaas.us-phoenix-1.oraclecloud.com/20160918"
        );
        assert_eq!(
            config.endpoints.identity("us-phoenix-1"),
            "https://identity.us-phoenix-1.oci.oraclecloud.com/20160918"
        );
        let fixed = OracleEndpoints {
            compute: Some("http://127.0.0.1:9/20160918/".into()),
            ..OracleEndpoints::default()
        };
        assert_eq!(fixed.compute("any"), "http://127.0.0.1:9/20160918");
    }
}
