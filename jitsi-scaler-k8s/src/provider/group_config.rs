//! The `"kubernetes"` section of a group's JSON, and the checks of a group for this provider.
//!
//! ```json
//! {
//!   "name": "jibri-prod", "type": "jibri", "cloud": "kubernetes",
//!   "instanceConfigurationId": "jibri-template",
//!   "kubernetes": {
//!     "namespace": "jitsi",
//!     "podTemplate": { "metadata": { "labels": { "app": "jibri" } }, "spec": { "containers": [ … ] } },
//!     "gracePeriodSec": 30,
//!     "deletionCost": true
//!   }
//! }
//! ```
//!
//! Every field is optional. The pod template is the inline `podTemplate` when given, else the
//! `PodTemplate` object named by `instanceConfigurationId` in the namespace.

use jitsi_scaler_core::group::{FieldError, Group};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::Deserialize;

use crate::names::{is_dns1123_label, is_dns1123_subdomain, validate_label_value};

/// Key of the provider's section in the group JSON.
pub const EXTENSION_KEY: &str = "kubernetes";

/// The `"kubernetes"` section of a group.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesGroupConfig {
    /// Namespace of the group's pods (default: the provider's namespace).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Inline pod template, used instead of a `PodTemplate` object.
    #[serde(default)]
    pub pod_template: Option<PodTemplateSpec>,
    /// Grace period of pod deletions in seconds (default: the pod's
    /// `terminationGracePeriodSeconds`).
    #[serde(default)]
    pub grace_period_sec: Option<u32>,
    /// The engine may annotate pods with `controller.kubernetes.io/pod-deletion-cost` from
    /// their load (for groups whose pods a ReplicaSet scales down).
    #[serde(default)]
    pub deletion_cost: bool,
}

impl KubernetesGroupConfig {
    /// The group's section, or the defaults when it has none.
    pub fn of(group: &Group) -> Result<Self, String> {
        group
            .extension::<Self>(EXTENSION_KEY)
            .map(Option::unwrap_or_default)
            .map_err(|e| format!("{EXTENSION_KEY}: {e}"))
    }

    /// The namespace of the group's pods.
    pub fn namespace<'a>(&'a self, default: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(default)
    }
}

/// Every problem of a group for the pod provider, as field errors.
pub fn validate(group: &Group) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Err(msg) = validate_label_value(&group.name) {
        errors.push(FieldError::body(
            "name",
            format!("a Kubernetes group name must be a valid label value: {msg}"),
            Some(group.name.clone().into()),
        ));
    }
    let config = match KubernetesGroupConfig::of(group) {
        Ok(config) => config,
        Err(msg) => {
            errors.push(FieldError::body(EXTENSION_KEY, msg, None));
            return errors;
        }
    };
    if let Some(ns) = &config.namespace
        && !is_dns1123_label(ns)
    {
        errors.push(FieldError::body(
            "kubernetes.namespace",
            "must be a DNS-1123 label",
            Some(ns.clone().into()),
        ));
    }
    match &config.pod_template {
        Some(template) => {
            let has_containers = template
                .spec
                .as_ref()
                .is_some_and(|s| !s.containers.is_empty());
            if !has_containers {
                errors.push(FieldError::body(
                    "kubernetes.podTemplate.spec.containers",
                    "the pod template needs at least one container",
                    None,
                ));
            }
        }
        None if group.instance_configuration_id.is_empty() => errors.push(FieldError::body(
            "instanceConfigurationId",
            "name a PodTemplate here, or give kubernetes.podTemplate",
            None,
        )),
        None if !is_dns1123_subdomain(&group.instance_configuration_id) => {
            errors.push(FieldError::body(
                "instanceConfigurationId",
                "a PodTemplate name must be a DNS-1123 subdomain",
                Some(group.instance_configuration_id.clone().into()),
            ))
        }
        None => {}
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(extra: serde_json::Value) -> Group {
        let mut v = json!({
            "name": "jibri-prod", "type": "jibri", "cloud": "kubernetes",
            "scalingOptions": {"minDesired": 0, "maxDesired": 3, "desiredCount": 1}
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v).expect("group")
    }

    #[test]
    fn inline_template_and_options_parse() {
        let g = group(json!({"kubernetes": {
            "namespace": "jitsi", "gracePeriodSec": 30, "deletionCost": true,
            "podTemplate": {"metadata": {"labels": {"app": "jibri"}},
                             "spec": {"containers": [{"name": "jibri", "image": "jitsi/jibri"}]}}
        }}));
        let c = KubernetesGroupConfig::of(&g).expect("config");
        assert_eq!(c.namespace("default"), "jitsi");
        assert_eq!(c.grace_period_sec, Some(30));
        assert!(c.deletion_cost);
        assert!(validate(&g).is_empty(), "{:?}", validate(&g));
    }

    #[test]
    fn a_group_needs_a_template_source() {
        let g = group(json!({}));
        let errors = validate(&g);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "instanceConfigurationId");
        let g = group(json!({"instanceConfigurationId": "jibri-template"}));
        assert!(validate(&g).is_empty());
        assert_eq!(
            KubernetesGroupConfig::of(&g).expect("defaults"),
            KubernetesGroupConfig::default()
        );
    }

    #[test]
    fn bad_sections_are_field_errors() {
        let g = group(json!({"instanceConfigurationId": "t", "kubernetes": {"namespce": "typo"}}));
        let errors = validate(&g);
        assert_eq!(errors[0].path, "kubernetes");
        assert!(errors[0].msg.contains("namespce"), "{}", errors[0].msg);

        let g = group(
            json!({"instanceConfigurationId": "Bad_Name", "kubernetes": {"namespace": "Not OK"}}),
        );
        let paths: Vec<_> = validate(&g).into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            vec!["kubernetes.namespace", "instanceConfigurationId"]
        );

        let g = group(json!({"kubernetes": {"podTemplate": {"spec": {"containers": []}}}}));
        assert_eq!(
            validate(&g)[0].path,
            "kubernetes.podTemplate.spec.containers"
        );

        let mut g = group(json!({"instanceConfigurationId": "t"}));
        g.name = "a name with spaces".into();
        assert_eq!(validate(&g)[0].path, "name");
    }
}
