//! Kubernetes naming rules: DNS-1123 names, label keys and values.

/// Longest DNS-1123 subdomain (object names such as pods).
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Longest DNS-1123 label (namespaces, label names).
pub const DNS1123_LABEL_MAX: usize = 63;

/// A DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= DNS1123_LABEL_MAX
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1123 subdomain: `[a-z0-9]([-a-z0-9.]*[a-z0-9])?`, at most 253 characters (the rule the
/// API server applies to pod names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= DNS1123_SUBDOMAIN_MAX
        && b.iter().all(|&c| alnum(c) || c == b'-' || c == b'.')
        && alnum(b[0])
        && alnum(b[b.len() - 1])
}

/// A label value or the name part of a label key: at most 63 characters of
/// `[A-Za-z0-9_.-]`, starting and ending with an alphanumeric (empty allowed for values).
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() <= DNS1123_LABEL_MAX
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_none_or(|c| c.is_ascii_alphanumeric())
        && b.last().is_none_or(|c| c.is_ascii_alphanumeric())
}

/// Checks a label (or annotation) key: `[prefix/]name`, the prefix a DNS-1123 subdomain, the
/// name 1–63 characters of `[A-Za-z0-9_.-]` starting and ending with an alphanumeric.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns1123_subdomain(prefix)
    {
        return Err(format!(
            "label key {key:?}: prefix must be a DNS-1123 subdomain"
        ));
    }
    if name.is_empty() || !is_qualified_name_part(name) {
        return Err(format!(
            "label key {key:?}: name must be 1-63 characters of [A-Za-z0-9_.-], \
             starting and ending with an alphanumeric"
        ));
    }
    Ok(())
}

/// Checks a label value: empty, or at most 63 characters of `[A-Za-z0-9_.-]` starting and
/// ending with an alphanumeric.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if is_qualified_name_part(value) {
        Ok(())
    } else {
        Err(format!(
            "label value {value:?}: must be at most 63 characters of [A-Za-z0-9_.-], \
             starting and ending with an alphanumeric"
        ))
    }
}

/// Lower-cases `s` and replaces what a DNS-1123 label cannot hold by `-`, trimmed to `max`
/// characters without leading or trailing dashes. May return an empty string.
pub fn sanitize_dns_label(s: &str, max: usize) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    let cut: String = trimmed.chars().take(max).collect();
    cut.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains() {
        assert!(is_dns1123_subdomain("jibri-7d9f8-abcde"));
        assert!(is_dns1123_subdomain("a.b-c.1"));
        assert!(!is_dns1123_subdomain(""));
        assert!(!is_dns1123_subdomain("a/b"));
        assert!(!is_dns1123_subdomain("Jibri"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(!is_dns1123_subdomain("a."));
        assert!(is_dns1123_subdomain(&"a".repeat(253)));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
    }

    #[test]
    fn labels_and_values() {
        assert!(is_dns1123_label("jibri"));
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(validate_label_key("app").is_ok());
        assert!(validate_label_key("cluster-autoscaler.kubernetes.io/safe-to-evict").is_ok());
        assert!(validate_label_key("My_Key.1").is_ok());
        assert!(validate_label_key("").is_err());
        assert!(validate_label_key("/x").is_err());
        assert!(validate_label_key("Bad_Prefix/x").is_err());
        assert!(validate_label_key("a b").is_err());
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value("busy").is_ok());
        assert!(validate_label_value("-busy").is_err());
        assert!(validate_label_value("a,b").is_err());
        assert!(validate_label_value(&"v".repeat(64)).is_err());
    }

    #[test]
    fn sanitizing() {
        assert_eq!(sanitize_dns_label("Prod_JVB.1", 63), "prod-jvb-1");
        assert_eq!(sanitize_dns_label("--x--", 63), "x");
        assert_eq!(sanitize_dns_label("abc-def", 4), "abc");
        assert_eq!(sanitize_dns_label("___", 10), "");
    }
}
