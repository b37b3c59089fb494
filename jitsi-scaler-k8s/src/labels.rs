//! Label sets (`k=v,k2=v2`, as `JIBRI_BUSY_LABELS`) and label selectors (as
//! `JIBRI_POD_SELECTOR`), parsed and checked once at start-up and matched locally.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::names::{validate_label_key, validate_label_value};

/// Labels by key.
pub type Labels = BTreeMap<String, String>;

/// Parses `k=v,k2=v2` exactly as the reference does (split on `,`, then on the first `=`; a
/// missing `=` gives an empty value; no trimming; a repeated key keeps the last value), but
/// rejects an empty key or a key or value that is not a valid Kubernetes label.
pub fn parse_label_set(s: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    for item in s.split(',') {
        let (key, value) = item.split_once('=').unwrap_or((item, ""));
        if key.is_empty() {
            return Err(format!("empty label key in {s:?}"));
        }
        validate_label_key(key)?;
        validate_label_value(value)?;
        labels.insert(key.to_owned(), value.to_owned());
    }
    Ok(labels)
}

/// The equality selector of a label set: `k=v,k2=v2` (keys sorted).
pub fn selector_of(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether `labels` holds every key of `wanted` with the same value.
pub fn has_all(labels: Option<&Labels>, wanted: &Labels) -> bool {
    wanted
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn matches(&self, labels: Option<&Labels>) -> bool {
        let get = |k: &String| labels.and_then(|l| l.get(k));
        match self {
            Requirement::Equals(k, v) => get(k) == Some(v),
            Requirement::NotEquals(k, v) => get(k) != Some(v),
            Requirement::In(k, set) => get(k).is_some_and(|v| set.contains(v)),
            Requirement::NotIn(k, set) => get(k).is_none_or(|v| !set.contains(v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
        match self {
            Requirement::Equals(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Requirement::In(k, s) => write!(f, "{k} in ({})", set(s)),
            Requirement::NotIn(k, s) => write!(f, "{k} notin ({})", set(s)),
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::NotExists(k) => write!(f, "!{k}"),
        }
    }
}

/// A Kubernetes label selector in its string form: `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
/// `k notin (a,b)`, `k`, `!k`, joined by commas (all must hold). An empty selector selects
/// everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses a selector; every key and value is checked.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(s)? {
            let part = part.trim();
            if part.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return Err(format!("empty requirement in selector {s:?}"));
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self { requirements })
    }

    /// Selects every object.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: Option<&Labels>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced ')' in selector {s:?}"))?;
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in selector {s:?}"));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn key(k: &str) -> Result<String, String> {
    let k = k.trim();
    validate_label_key(k)?;
    Ok(k.to_owned())
}

fn value(v: &str) -> Result<String, String> {
    let v = v.trim();
    validate_label_value(v)?;
    Ok(v.to_owned())
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(open) = part.find('(') {
        let close = part
            .rfind(')')
            .filter(|&c| c > open && part[c + 1..].trim().is_empty())
            .ok_or_else(|| format!("malformed set requirement {part:?}"))?;
        let head: Vec<&str> = part[..open].split_whitespace().collect();
        let values = part[open + 1..close]
            .split(',')
            .map(value)
            .collect::<Result<BTreeSet<_>, _>>()?;
        return match head.as_slice() {
            [k, "in"] => Ok(Requirement::In(key(k)?, values)),
            [k, "notin"] => Ok(Requirement::NotIn(key(k)?, values)),
            _ => Err(format!(
                "malformed set requirement {part:?} (expected `key in (…)` or `key notin (…)`)"
            )),
        };
    }
    if let Some(k) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(key(k)?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(key(k)?, value(v)?));
    }
    if let Some((k, v)) = part.split_once("==") {
        return Ok(Requirement::Equals(key(k)?, value(v)?));
    }
    if let Some((k, v)) = part.split_once('=') {
        return Ok(Requirement::Equals(key(k)?, value(v)?));
    }
    if part.contains(['<', '>']) {
        return Err(format!("unsupported requirement {part:?} (no `<`/`>`)"));
    }
    Ok(Requirement::Exists(key(part)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn label_sets_parse_like_the_reference() {
        assert_eq!(
            parse_label_set("app=jibri,state=busy"),
            Ok(labels(&[("app", "jibri"), ("state", "busy")]))
        );
        assert_eq!(parse_label_set("busy"), Ok(labels(&[("busy", "")])));
        assert_eq!(
            parse_label_set("a=1,a=2"),
            Ok(labels(&[("a", "2")])),
            "last value wins"
        );
        assert!(parse_label_set("").is_err(), "empty key");
        assert!(
            parse_label_set("app=jibri,").is_err(),
            "trailing comma: empty key"
        );
        assert!(parse_label_set("=x").is_err());
        assert!(
            parse_label_set("app= jibri").is_err(),
            "no trimming: a space is invalid"
        );
        assert!(
            parse_label_set("a=b=c").is_err(),
            "value `b=c` is not a label value"
        );
        assert_eq!(
            selector_of(&labels(&[("state", "busy"), ("app", "jibri")])),
            "app=jibri,state=busy"
        );
    }

    #[test]
    fn selectors_parse_and_match() {
        let sel = LabelSelector::parse("app=jibri, tier in (rec,stream),!legacy,env!=dev")
            .expect("parse");
        assert_eq!(
            sel.to_string(),
            "app=jibri,tier in (rec,stream),!legacy,env!=dev"
        );
        let ok = labels(&[("app", "jibri"), ("tier", "rec")]);
        assert!(sel.matches(Some(&ok)));
        let mut legacy = ok.clone();
        legacy.insert("legacy".into(), String::new());
        assert!(!sel.matches(Some(&legacy)));
        let mut dev = ok.clone();
        dev.insert("env".into(), "dev".into());
        assert!(!sel.matches(Some(&dev)));
        assert!(!sel.matches(None));
        assert!(!sel.matches(Some(&labels(&[("app", "jibri"), ("tier", "x")]))));

        let sel = LabelSelector::parse("app==jibri,tier notin (x),present").expect("parse");
        assert!(sel.matches(Some(&labels(&[("app", "jibri"), ("present", "1")]))));
        assert!(!sel.matches(Some(&labels(&[
            ("app", "jibri"),
            ("tier", "x"),
            ("present", "")
        ]))));

        let all = LabelSelector::parse("").expect("parse");
        assert!(all.is_empty());
        assert!(all.matches(None));
    }

    #[test]
    fn bad_selectors_are_rejected() {
        for bad in [
            "a in (b",
            "a in b)",
            "a,,b",
            "a > 1",
            "a in (b) x",
            "a foo (b)",
            "a=b c",
            "!",
        ] {
            assert!(
                LabelSelector::parse(bad).is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn has_all_checks_values() {
        let want = labels(&[("app", "jibri"), ("state", "busy")]);
        assert!(has_all(
            Some(&labels(&[("app", "jibri"), ("state", "busy"), ("x", "y")])),
            &want
        ));
        assert!(!has_all(
            Some(&labels(&[("app", "jibri"), ("state", "idle")])),
            &want
        ));
        assert!(!has_all(None, &want));
    }
}
