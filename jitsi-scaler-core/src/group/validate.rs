//! Validation of groups and option bodies: every problem, each with its field path, never a
//! panic. Messages are the reference's where it has one (express-validator shape).

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Group, PolicyConfig, ScalingOptionsPatch};
use crate::instance::InstanceType;
use crate::schedule;

/// Reference message for a negative or non-integer count.
pub const MSG_POSITIVE: &str = "Value must be positive";
/// Reference message for a value that must be ≥ 1.
pub const MSG_AT_LEAST_ONE: &str = "Value must be at least 1";
/// Reference message (sic) for `min ≤ desired ≤ max`.
pub const MSG_DESIRED_RANGE: &str =
    "Desired count must be between min and max; min cannot be grater than max";

/// One problem with a request body, path parameter or file entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldError {
    /// Always `"field"` (express-validator's error type).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The offending value, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// What is wrong.
    pub msg: String,
    /// Dotted path of the field (`scalingOptions.minDesired`, `periods[0].name`).
    pub path: String,
    /// `body`, `params` or `query`.
    pub location: &'static str,
}

impl FieldError {
    /// A body field error.
    pub fn body(path: impl Into<String>, msg: impl Into<String>, value: Option<Value>) -> Self {
        Self {
            kind: "field",
            value,
            msg: msg.into(),
            path: path.into(),
            location: "body",
        }
    }

    /// The same error with its path prefixed (`prefix.path`).
    pub fn prefixed(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() {
            self.path = if self.path.is_empty() {
                prefix.to_owned()
            } else if self.path.starts_with('[') {
                format!("{prefix}{}", self.path)
            } else {
                format!("{prefix}.{}", self.path)
            };
        }
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.msg)
        } else {
            write!(f, "{}: {}", self.path, self.msg)
        }
    }
}

/// Everything wrong with one input. `fields` are field errors; `messages` are the reference's
/// plain-string errors (`{"errors":["..."]}`), used when there is no field error.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ValidationErrors {
    /// Field errors.
    pub fields: Vec<FieldError>,
    /// Plain messages.
    pub messages: Vec<String>,
}

impl ValidationErrors {
    /// No problem found.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.messages.is_empty()
    }

    /// `Ok(())` when empty.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// A single plain message.
    pub fn message(msg: impl Into<String>) -> Self {
        Self {
            fields: Vec::new(),
            messages: vec![msg.into()],
        }
    }
}

impl From<Vec<FieldError>> for ValidationErrors {
    fn from(fields: Vec<FieldError>) -> Self {
        Self {
            fields,
            messages: Vec::new(),
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for e in self
            .fields
            .iter()
            .map(ToString::to_string)
            .chain(self.messages.iter().cloned())
        {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            f.write_str(&e)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Checks JSON field types and ranges before typed deserialisation, so a wrong type is a field
/// error with a path instead of a serde message. Integral floats (`2.0`) are normalised to
/// integers in place, as JavaScript would read them.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    pub(crate) errors: Vec<FieldError>,
}

/// Which integer rule a field follows.
#[derive(Clone, Copy)]
pub(crate) enum IntRule {
    /// ≥ 0, `Value must be positive`.
    NonNegative,
    /// ≥ 1, `Value must be at least 1`.
    AtLeastOne,
}

impl Checker {
    fn push(&mut self, path: String, msg: &str, value: Option<&Value>) {
        self.errors
            .push(FieldError::body(path, msg, value.cloned()));
    }

    /// An unsigned 32-bit integer field.
    pub(crate) fn int(
        &mut self,
        obj: &mut Map<String, Value>,
        key: &str,
        path: &str,
        rule: IntRule,
        required: bool,
    ) {
        let full = join(path, key);
        let (min, msg) = match rule {
            IntRule::NonNegative => (0, MSG_POSITIVE),
            IntRule::AtLeastOne => (1, MSG_AT_LEAST_ONE),
        };
        match obj.get_mut(key) {
            None | Some(Value::Null) => {
                if required {
                    self.push(full, msg, None);
                }
            }
            Some(v) => match as_integer(v) {
                Some(n) if n >= min && n <= i64::from(u32::MAX) => *v = Value::from(n),
                Some(n) if n > i64::from(u32::MAX) => {
                    self.push(full, "Value is too large", Some(v))
                }
                _ => self.push(full, msg, Some(v)),
            },
        }
    }

    /// A non-negative finite number.
    pub(crate) fn number(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
        required: bool,
    ) {
        match obj.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.push(join(path, key), MSG_POSITIVE, None);
                }
            }
            Some(v) => {
                if !v.as_f64().is_some_and(|x| x.is_finite() && x >= 0.0) {
                    self.push(join(path, key), MSG_POSITIVE, Some(v));
                }
            }
        }
    }

    /// An optional boolean.
    pub(crate) fn boolean(&mut self, obj: &Map<String, Value>, key: &str, path: &str) {
        if let Some(v) = obj.get(key)
            && !v.is_boolean()
            && !v.is_null()
        {
            self.push(join(path, key), "Value must be a boolean", Some(v));
        }
    }

    /// A string, optionally required.
    pub(crate) fn string(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
        required: bool,
    ) {
        match obj.get(key) {
            None | Some(Value::Null) if required => {
                self.push(join(path, key), "Value must be a string", None)
            }
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(v) => self.push(join(path, key), "Value must be a string", Some(v)),
        }
    }

    /// An optional object whose values are all strings.
    pub(crate) fn string_map(&mut self, obj: &Map<String, Value>, key: &str, path: &str) {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    if !v.is_string() {
                        self.push(join(&join(path, key), k), "Value must be a string", Some(v));
                    }
                }
            }
            Some(v) => self.push(join(path, key), "Value must be an object", Some(v)),
        }
    }
}

/// `path.key`, or `key` at the top level.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// An integer, including floats without a fractional part (`2.0`), as JavaScript reads them.
fn as_integer(v: &Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    if v.as_u64().is_some() {
        return Some(i64::MAX);
    }
    let f = v.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

/// The integer fields of `ScalingOptions` and the rule each follows (the reference requires
/// the first three; jitsi-scaler requires periods and `scalePeriod` ≥ 1).
const OPTION_INTS: [(&str, IntRule); 9] = [
    ("minDesired", IntRule::NonNegative),
    ("maxDesired", IntRule::NonNegative),
    ("desiredCount", IntRule::NonNegative),
    ("scaleUpQuantity", IntRule::NonNegative),
    ("scaleDownQuantity", IntRule::NonNegative),
    ("scalePeriod", IntRule::AtLeastOne),
    ("scaleUpPeriodsCount", IntRule::AtLeastOne),
    ("scaleDownPeriodsCount", IntRule::AtLeastOne),
    ("cloudGuardGraceCount", IntRule::NonNegative),
];

/// Checks a (possibly partial) scaling-options object in place. With `require_bounds`, the
/// three bounds are required (whole groups); patches require nothing.
pub(crate) fn check_scaling_options(
    c: &mut Checker,
    obj: &mut Map<String, Value>,
    path: &str,
    require_bounds: bool,
) {
    for (i, (key, rule)) in OPTION_INTS.iter().enumerate() {
        c.int(obj, key, path, *rule, require_bounds && i < 3);
    }
    c.int(
        obj,
        "reservationScaleUpThreshold",
        path,
        IntRule::AtLeastOne,
        false,
    );
    c.number(obj, "scaleUpThreshold", path, false);
    c.number(obj, "scaleDownThreshold", path, false);
}

/// The checks of a whole group body, before deserialisation.
fn check_group_shape(obj: &mut Map<String, Value>) -> Vec<FieldError> {
    let mut c = Checker::default();
    c.string(obj, "name", "", true);
    c.string(obj, "type", "", true);
    for key in [
        "id",
        "region",
        "environment",
        "compartmentId",
        "instanceConfigurationId",
        "cloud",
    ] {
        c.string(obj, key, "", false);
    }
    for key in [
        "enableAutoScale",
        "enableLaunch",
        "enableScheduler",
        "enableUntrackedThrottle",
        "enableReconfiguration",
        "enableCloudGuard",
        "countUnhealthyAsAvailable",
    ] {
        c.boolean(obj, key, "");
    }
    for key in [
        "gracePeriodTTLSec",
        "protectedTTLSec",
        "drainTimeoutSec",
        "convergenceWarnSec",
        "scaleUpGracePeriodSec",
        "scaleDownGracePeriodSec",
    ] {
        c.int(obj, key, "", IntRule::NonNegative, false);
    }
    c.string_map(obj, "tags", "");
    match obj.get_mut("scalingOptions") {
        Some(Value::Object(options)) => {
            check_scaling_options(&mut c, options, "scalingOptions", true)
        }
        Some(v) => c.errors.push(FieldError::body(
            "scalingOptions",
            "Value must be an object",
            Some(v.clone()),
        )),
        None => c.errors.push(FieldError::body(
            "scalingOptions",
            "Value must be an object",
            None,
        )),
    }
    if let Some(Value::Object(base)) = obj.get_mut("scheduledScalingBaseOptions") {
        check_scaling_options(&mut c, base, "scheduledScalingBaseOptions", true);
    }
    let mut errors = c.errors;
    if let Some(schedule) = obj.get_mut("scheduledScaling")
        && !schedule.is_null()
    {
        errors.extend(
            schedule::check_config_shape(schedule)
                .into_iter()
                .map(|e| e.prefixed("scheduledScaling")),
        );
    }
    errors
}

/// Parses and validates a whole group body (`PUT /groups/:name`, `groups.json` entries):
/// shape, then typed deserialisation, then [`Group::validate`]. Returns every problem.
pub fn parse_group(value: &Value) -> Result<Group, ValidationErrors> {
    let mut value = value.clone();
    let Value::Object(obj) = &mut value else {
        return Err(vec![FieldError::body(
            "",
            "Body must be a JSON object",
            Some(value),
        )]
        .into());
    };
    let shape = check_group_shape(obj);
    if !shape.is_empty() {
        return Err(with_other_problems(&value, shape).into());
    }
    let group: Group = serde_json::from_value(value)
        .map_err(|e| ValidationErrors::from(vec![FieldError::body("", e.to_string(), None)]))?;
    let errors = group.validate();
    if errors.is_empty() {
        Ok(group)
    } else {
        Err(errors.into())
    }
}

/// Every problem, not only the shape's: the fields with a shape problem are taken out of a
/// copy, and when the rest still reads as a group its semantic problems are added (those on
/// other paths).
fn with_other_problems(value: &Value, mut shape: Vec<FieldError>) -> Vec<FieldError> {
    let mut probe = value.clone();
    for e in &shape {
        remove_path(&mut probe, &e.path);
    }
    if let Ok(group) = serde_json::from_value::<Group>(probe) {
        let reported: Vec<String> = shape.iter().map(|e| e.path.clone()).collect();
        shape.extend(
            group
                .validate()
                .into_iter()
                .filter(|e| !reported.iter().any(|p| e.path.starts_with(p.as_str()))),
        );
    }
    shape
}

/// Removes the value at a dotted path (`a.b.c`; array paths are left alone).
fn remove_path(value: &mut Value, path: &str) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut cur = value;
    for part in parts {
        match cur.get_mut(part) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Value::Object(map) = cur {
        map.remove(last);
    }
}

/// Parses a partial scaling-options body (`/desired`, `/scaling-options`, full-scaling
/// `options`, schedule periods), checking each present field.
pub fn parse_options_patch(
    value: &Value,
    path: &str,
) -> Result<ScalingOptionsPatch, ValidationErrors> {
    let mut value = value.clone();
    let Value::Object(obj) = &mut value else {
        return Err(vec![FieldError::body(
            path,
            "Value must be an object",
            Some(value),
        )]
        .into());
    };
    let mut c = Checker::default();
    check_scaling_options(&mut c, obj, path, false);
    if !c.errors.is_empty() {
        return Err(c.errors.into());
    }
    serde_json::from_value(value)
        .map_err(|e| vec![FieldError::body(path, e.to_string(), None)].into())
}

/// Whether a name is acceptable for a new group: `^[A-Za-z0-9._-]{1,128}$` and not a reserved
/// path segment.
pub fn group_name_problem(name: &str) -> Option<&'static str> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name.len() > 128 || !valid_chars {
        Some("Group name must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'")
    } else if name == "options" || name == "actions" {
        Some("Group name is reserved")
    } else {
        None
    }
}

impl Group {
    /// Semantic checks of a typed group: name, type, bounds, periods, thresholds, policy,
    /// schedule. Every problem is returned, with its path.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut push = |path: &str, msg: &str, value: Value| {
            errors.push(FieldError::body(path, msg, Some(value)));
        };
        if let Some(problem) = group_name_problem(&self.name) {
            push("name", problem, Value::from(self.name.clone()));
        }
        if InstanceType::parse(&self.type_name).is_none() {
            push(
                "type",
                &format!("Invalid type of instance: {}", self.type_name),
                Value::from(self.type_name.clone()),
            );
        }
        let o = &self.scaling_options;
        if !(o.min_desired <= o.desired_count && o.desired_count <= o.max_desired) {
            push(
                "scalingOptions",
                MSG_DESIRED_RANGE,
                serde_json::json!({"minDesired": o.min_desired, "desiredCount": o.desired_count, "maxDesired": o.max_desired}),
            );
        }
        for (key, v) in [
            ("scaleUpThreshold", o.scale_up_threshold),
            ("scaleDownThreshold", o.scale_down_threshold),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                push(&join("scalingOptions", key), MSG_POSITIVE, Value::from(v));
            }
        }
        for (key, v) in [
            ("scaleUpPeriodsCount", u64::from(o.scale_up_periods_count)),
            (
                "scaleDownPeriodsCount",
                u64::from(o.scale_down_periods_count),
            ),
            ("scalePeriod", o.scale_period),
        ] {
            if v == 0 {
                push(
                    &join("scalingOptions", key),
                    MSG_AT_LEAST_ONE,
                    Value::from(v),
                );
            }
        }
        match &self.policy {
            Some(PolicyConfig::Target {
                target_stress,
                tolerance,
            }) => {
                if !(target_stress.is_finite() && *target_stress > 0.0) {
                    push(
                        "policy.targetStress",
                        "Value must be greater than 0",
                        Value::from(*target_stress),
                    );
                }
                if let Some(t) = tolerance
                    && !(t.is_finite() && (0.0..1.0).contains(t))
                {
                    push(
                        "policy.tolerance",
                        "Value must be at least 0 and below 1",
                        Value::from(*t),
                    );
                }
            }
            Some(PolicyConfig::Spare { .. }) | Some(PolicyConfig::Threshold) | None => {}
        }
        if let Some(orphans) = &self.orphan_policy
            && orphans.orphan_cycles == 0
        {
            push(
                "orphanPolicy.orphanCycles",
                MSG_AT_LEAST_ONE,
                Value::from(0),
            );
        }
        if let Some(config) = &self.scheduled_scaling {
            errors.extend(
                schedule::validate_config(config)
                    .fields
                    .into_iter()
                    .map(|e| e.prefixed("scheduledScaling")),
            );
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::tests::EXAMPLE_GROUP;
    use serde_json::json;

    fn example() -> Value {
        serde_json::from_str(EXAMPLE_GROUP).expect("json")
    }

    fn paths(e: &ValidationErrors) -> Vec<(&str, &str)> {
        e.fields
            .iter()
            .map(|f| (f.path.as_str(), f.msg.as_str()))
            .collect()
    }

    #[test]
    fn the_example_group_is_valid() {
        let g = parse_group(&example()).expect("valid");
        assert_eq!(g.name, "lonely-us-phoenix-1-JibriGroup1");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut v = example();
        v["scalingOptions"]["minDesired"] = json!(-1);
        v["scalingOptions"]["maxDesired"] = json!("two");
        v["scalingOptions"]["scaleUpPeriodsCount"] = json!(0);
        v["scalingOptions"]["scaleDownThreshold"] = json!(-0.5);
        v["enableLaunch"] = json!("yes");
        v["tags"] = json!({"k": 1});
        let e = parse_group(&v).expect_err("invalid");
        assert_eq!(
            paths(&e),
            vec![
                ("enableLaunch", "Value must be a boolean"),
                ("tags.k", "Value must be a string"),
                ("scalingOptions.minDesired", MSG_POSITIVE),
                ("scalingOptions.maxDesired", MSG_POSITIVE),
                ("scalingOptions.scaleUpPeriodsCount", MSG_AT_LEAST_ONE),
                ("scalingOptions.scaleDownThreshold", MSG_POSITIVE),
            ]
        );
        assert_eq!(e.fields[2].value, Some(json!(-1)));
        assert_eq!(e.fields[2].location, "body");
    }

    #[test]
    fn semantic_rules_run_after_the_shape_is_right() {
        let mut v = example();
        v["type"] = json!("videobridge");
        v["name"] = json!("bad name!");
        v["scalingOptions"]["desiredCount"] = json!(5);
        let e = parse_group(&v).expect_err("invalid");
        assert_eq!(
            paths(&e),
            vec![
                (
                    "name",
                    "Group name must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
                ),
                ("type", "Invalid type of instance: videobridge"),
                ("scalingOptions", MSG_DESIRED_RANGE),
            ]
        );
    }

    #[test]
    fn types_are_case_insensitive_and_names_reserved() {
        let mut v = example();
        v["type"] = json!("jVb");
        assert!(parse_group(&v).is_ok());
        v["name"] = json!("options");
        assert_eq!(
            paths(&parse_group(&v).expect_err("reserved")),
            vec![("name", "Group name is reserved")]
        );
    }

    #[test]
    fn integral_floats_read_as_integers_and_missing_bounds_are_required() {
        let mut v = example();
        v["scalingOptions"]["desiredCount"] = json!(2.0);
        assert_eq!(
            parse_group(&v)
                .expect("valid")
                .scaling_options
                .desired_count,
            2
        );
        v["scalingOptions"]["desiredCount"] = json!(1.5);
        assert_eq!(
            paths(&parse_group(&v).expect_err("fraction")),
            vec![("scalingOptions.desiredCount", MSG_POSITIVE)]
        );
        let v = json!({"name": "g", "type": "JVB", "scalingOptions": {}});
        assert_eq!(
            paths(&parse_group(&v).expect_err("missing")),
            vec![
                ("scalingOptions.minDesired", MSG_POSITIVE),
                ("scalingOptions.maxDesired", MSG_POSITIVE),
                ("scalingOptions.desiredCount", MSG_POSITIVE),
            ]
        );
        let mut mixed = example();
        mixed["name"] = json!("bad name");
        mixed["scalingOptions"]["scalePeriod"] = json!(0);
        mixed["scalingOptions"]["minDesired"] = json!(5);
        assert_eq!(
            paths(&parse_group(&mixed).expect_err("mixed")),
            vec![
                ("scalingOptions.scalePeriod", MSG_AT_LEAST_ONE),
                (
                    "name",
                    "Group name must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
                ),
                ("scalingOptions", MSG_DESIRED_RANGE),
            ],
            "shape and semantic problems together"
        );
        let e = parse_group(&json!({"type": "JVB"})).expect_err("no name");
        assert_eq!(
            paths(&e),
            vec![
                ("name", "Value must be a string"),
                ("scalingOptions", "Value must be an object")
            ]
        );
    }

    #[test]
    fn non_objects_and_huge_values_are_errors_not_panics() {
        assert!(parse_group(&json!([1, 2])).is_err());
        assert!(parse_group(&json!(null)).is_err());
        let mut v = example();
        v["scalingOptions"]["maxDesired"] = json!(1u64 << 40);
        assert_eq!(
            paths(&parse_group(&v).expect_err("huge")),
            vec![("scalingOptions.maxDesired", "Value is too large")]
        );
        v["scalingOptions"]["maxDesired"] = json!(u64::MAX);
        assert!(parse_group(&v).is_err());
    }

    #[test]
    fn policy_parameters_are_checked() {
        let mut v = example();
        v["policy"] = json!({"type": "target", "targetStress": 0, "tolerance": 2});
        assert_eq!(
            paths(&parse_group(&v).expect_err("bad policy")),
            vec![
                ("policy.targetStress", "Value must be greater than 0"),
                ("policy.tolerance", "Value must be at least 0 and below 1"),
            ]
        );
        v["policy"] = json!({"type": "magic"});
        assert!(parse_group(&v).is_err());
    }

    #[test]
    fn patches_check_only_present_fields() {
        let p = parse_options_patch(&json!({"desiredCount": 3, "scaleUpThreshold": 0.7}), "")
            .expect("patch");
        assert_eq!(p.desired_count, Some(3));
        assert_eq!(p.scale_up_threshold, Some(0.7));
        assert_eq!(p.min_desired, None);
        let e = parse_options_patch(
            &json!({"scalePeriod": 0, "reservationScaleUpThreshold": 0}),
            "options",
        )
        .expect_err("bad");
        assert_eq!(
            paths(&e),
            vec![
                ("options.scalePeriod", MSG_AT_LEAST_ONE),
                ("options.reservationScaleUpThreshold", MSG_AT_LEAST_ONE),
            ]
        );
    }
}
