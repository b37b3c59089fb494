//! Scheduled scaling: periods in a timezone, which one is active, and the transition of a
//! group's options when the active period changes (scaling-algorithms.md §11).
//!
//! Everything here is pure: the engine supplies the time and stores the result.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::UnixMillis;
use crate::group::validate::{Checker, FieldError, ValidationErrors, check_scaling_options, join};
use crate::group::{Group, ScalingOptions, ScalingOptionsPatch};

/// A group's scheduled-scaling configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledScalingConfig {
    /// Periods apply only when enabled.
    pub enabled: bool,
    /// IANA timezone; absent ⇒ from the group's region, else the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The periods, in configuration order.
    #[serde(default)]
    pub periods: Vec<SchedulePeriod>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A weekly time range with the options that apply during it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulePeriod {
    /// Unique name.
    pub name: String,
    /// Days the period starts on, 0 = Sunday … 6 = Saturday.
    pub day_of_week: Vec<u8>,
    /// Start hour (0–23).
    pub start_hour: u8,
    /// Start minute (0–59, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_minute: Option<u8>,
    /// End hour (0–23); an end before the start wraps past midnight; equal means all day.
    pub end_hour: u8,
    /// End minute (0–59, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_minute: Option<u8>,
    /// Highest priority wins among matching periods; ties keep configuration order.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::opt_number"
    )]
    pub priority: Option<f64>,
    /// Blocks metric-driven scale-down while active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inhibit_scale_down: Option<bool>,
    /// Options applied while active (merged over the base options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_options: Option<ScalingOptionsPatch>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SchedulePeriod {
    fn start(&self) -> u32 {
        u32::from(self.start_hour) * 60 + u32::from(self.start_minute.unwrap_or(0))
    }

    fn end(&self) -> u32 {
        u32::from(self.end_hour) * 60 + u32::from(self.end_minute.unwrap_or(0))
    }

    /// Whether the period covers local `weekday` (0 = Sunday) at minute-of-day `minute`.
    pub fn matches(&self, weekday: u8, minute: u32) -> bool {
        let (start, end) = (self.start(), self.end());
        let wraps = start != end && end < start;
        let today = self.day_of_week.contains(&weekday)
            && if start == end {
                true
            } else if end > start {
                start <= minute && minute < end
            } else {
                minute >= start
            };
        let yesterday = (weekday + 6) % 7;
        today || (wraps && self.day_of_week.contains(&yesterday) && minute < end)
    }
}

/// `isTimeInRange` of the reference: the same-day test of a period's range.
pub fn is_time_in_range(minute: u32, start: u32, end: u32) -> bool {
    if start == end {
        true
    } else if end > start {
        start <= minute && minute < end
    } else {
        minute >= start || minute < end
    }
}

/// Timezone resolution and spreading of transitions.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleSettings {
    /// Region → IANA timezone (D15: configurable; defaults to the reference's ten entries).
    pub region_timezones: HashMap<String, String>,
    /// Timezone when neither the config nor the region gives one.
    pub default_timezone: String,
    /// Per-group jitter of transitions, in seconds (0 = all groups at once).
    pub jitter_sec: u64,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        let region_timezones = [
            ("ap-mumbai-1", "Asia/Kolkata"),
            ("ap-sydney-1", "Australia/Sydney"),
            ("ap-tokyo-1", "Asia/Tokyo"),
            ("eu-frankfurt-1", "Europe/Berlin"),
            ("uk-london-1", "Europe/London"),
            ("us-ashburn-1", "America/New_York"),
            ("us-phoenix-1", "America/Phoenix"),
            ("sa-saopaulo-1", "America/Sao_Paulo"),
            ("me-jeddah-1", "Asia/Riyadh"),
            ("ca-toronto-1", "America/Toronto"),
        ]
        .into_iter()
        .map(|(r, z)| (r.to_owned(), z.to_owned()))
        .collect();
        Self {
            region_timezones,
            default_timezone: "UTC".to_owned(),
            jitter_sec: 0,
        }
    }
}

impl ScheduleSettings {
    /// The timezone name for a group's schedule.
    pub fn timezone_name<'a>(
        &'a self,
        config: &'a ScheduledScalingConfig,
        region: &str,
    ) -> &'a str {
        config
            .timezone
            .as_deref()
            .or_else(|| self.region_timezones.get(region).map(String::as_str))
            .unwrap_or(&self.default_timezone)
    }

    /// The instant at which a group's schedule is evaluated: `now` delayed by the group's
    /// deterministic jitter.
    pub fn evaluation_instant(&self, group: &str, now: UnixMillis) -> UnixMillis {
        if self.jitter_sec == 0 {
            return now;
        }
        let hash = group.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        now - (hash % (self.jitter_sec * 1000)) as i64
    }
}

/// Local weekday (0 = Sunday) and minute of day of an instant in a timezone.
pub fn local_time(tz_name: &str, at: UnixMillis) -> Option<(u8, u32)> {
    let tz = jiff::tz::TimeZone::get(tz_name).ok()?;
    let zoned = jiff::Timestamp::from_millisecond(at).ok()?.to_zoned(tz);
    let weekday = zoned.weekday().to_sunday_zero_offset() as u8;
    let minute = zoned.hour() as u32 * 60 + zoned.minute() as u32;
    Some((weekday, minute))
}

/// Whether `name` is a timezone this build knows.
pub fn is_known_timezone(name: &str) -> bool {
    jiff::tz::TimeZone::get(name).is_ok()
}

/// The active period at an instant: the matching period of highest priority, the first in
/// configuration order among equals. `None` when nothing matches or the zone is unknown.
pub fn active_period<'a>(
    config: &'a ScheduledScalingConfig,
    tz_name: &str,
    at: UnixMillis,
) -> Option<&'a SchedulePeriod> {
    let (weekday, minute) = local_time(tz_name, at)?;
    let mut best: Option<&SchedulePeriod> = None;
    for p in config.periods.iter().filter(|p| p.matches(weekday, minute)) {
        if best.is_none_or(|b| p.priority.unwrap_or(0.0) > b.priority.unwrap_or(0.0)) {
            best = Some(p);
        }
    }
    best
}

/// The period active for a group now, if its schedule is enabled.
pub fn active_period_for<'a>(
    group: &'a Group,
    settings: &ScheduleSettings,
    now: UnixMillis,
) -> Option<&'a SchedulePeriod> {
    let config = group.scheduled_scaling.as_ref().filter(|c| c.enabled)?;
    let tz = settings.timezone_name(config, &group.region);
    active_period(config, tz, settings.evaluation_instant(&group.name, now))
}

/// Metric-driven scale-down is blocked now by the active period.
pub fn inhibits_scale_down(group: &Group, settings: &ScheduleSettings, now: UnixMillis) -> bool {
    active_period_for(group, settings, now).is_some_and(|p| p.inhibit_scale_down == Some(true))
}

/// `{...base, ...over}`, keeping the live desired count unless the period sets one, then the
/// invariants.
pub fn merge_with_live_desired(
    base: &ScalingOptions,
    live: &ScalingOptions,
    over: Option<&ScalingOptionsPatch>,
) -> ScalingOptions {
    let mut merged = base.clone();
    if let Some(over) = over {
        merged.apply(over);
    }
    if over.is_none_or(|o| o.desired_count.is_none()) {
        merged.desired_count = live.desired_count;
    }
    merged.apply_invariants();
    merged
}

/// A change of a group's active period.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// Previous period (`None` = no period).
    pub from: Option<String>,
    /// New period (`None` = no period).
    pub to: Option<String>,
    /// Options before.
    pub old_options: ScalingOptions,
    /// Options after.
    pub new_options: ScalingOptions,
    /// The group with the transition applied (options and tracking fields).
    pub group: Group,
    /// Something an operator should know (desired or max 0, exit without base).
    pub warning: Option<String>,
}

/// Computes the transition of a group whose active period differs from the one last applied,
/// or `None` when nothing changes (an admin override inside a period is kept).
pub fn transition(
    group: &Group,
    settings: &ScheduleSettings,
    now: UnixMillis,
) -> Option<Transition> {
    let next = active_period_for(group, settings, now);
    let prev = group.scheduled_scaling_active_period.as_deref();
    if prev == next.map(|p| p.name.as_str()) {
        return None;
    }
    let live = &group.scaling_options;
    let mut updated = group.clone();
    let mut warning = None;
    match next {
        Some(period) => {
            let base = group
                .scheduled_scaling_base_options
                .clone()
                .unwrap_or_else(|| live.clone());
            let new = merge_with_live_desired(&base, live, period.scaling_options.as_ref());
            if new.desired_count == 0 || new.max_desired == 0 {
                warning = Some(format!(
                    "period {} sets desiredCount {} and maxDesired {}",
                    period.name, new.desired_count, new.max_desired
                ));
            }
            updated.scheduled_scaling_base_options = Some(base);
            updated.scheduled_scaling_active_period = Some(period.name.clone());
            updated.scaling_options = new;
        }
        None => {
            let Some(base) = &group.scheduled_scaling_base_options else {
                updated.scheduled_scaling_active_period = None;
                return Some(Transition {
                    from: prev.map(str::to_owned),
                    to: None,
                    old_options: live.clone(),
                    new_options: live.clone(),
                    group: updated,
                    warning: Some(
                        "leaving a period without base options: options unchanged".into(),
                    ),
                });
            };
            let exiting_set_desired = group
                .scheduled_scaling
                .as_ref()
                .and_then(|c| c.periods.iter().find(|p| Some(p.name.as_str()) == prev))
                .and_then(|p| p.scaling_options.as_ref())
                .is_some_and(|o| o.desired_count.is_some());
            let mut new = base.clone();
            if !exiting_set_desired {
                new.desired_count = live.desired_count;
            }
            new.apply_invariants();
            updated.scheduled_scaling_base_options = None;
            updated.scheduled_scaling_active_period = None;
            updated.scaling_options = new;
        }
    }
    Some(Transition {
        from: prev.map(str::to_owned),
        to: next.map(|p| p.name.clone()),
        old_options: live.clone(),
        new_options: updated.scaling_options.clone(),
        group: updated,
        warning,
    })
}

// ---------------------------------------------------------------------------------------------
// Validation (rest-api.md §7.4, messages verbatim).

/// Checks the JSON shape of a schedule configuration in place (integral floats normalised),
/// with the reference's messages. Paths are relative to the configuration.
pub fn check_config_shape(value: &mut Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut push = |path: String, msg: &str, v: Option<&Value>| {
        errors.push(FieldError::body(path, msg, v.cloned()));
    };
    let Value::Object(obj) = value else {
        push(
            String::new(),
            "scheduledScaling must be an object",
            Some(value),
        );
        return errors;
    };
    if !obj.get("enabled").is_some_and(Value::is_boolean) {
        push(
            "enabled".into(),
            "enabled must be a boolean",
            obj.get("enabled"),
        );
    }
    if obj
        .get("timezone")
        .is_some_and(|v| !v.is_string() && !v.is_null())
    {
        push(
            "timezone".into(),
            "timezone must be a string",
            obj.get("timezone"),
        );
    }
    let mut option_checker = Checker::default();
    match obj.get_mut("periods") {
        Some(Value::Array(periods)) => {
            for (i, period) in periods.iter_mut().enumerate() {
                let path = format!("periods[{i}]");
                let Value::Object(p) = period else {
                    push(path, "Period must be an object", Some(period));
                    continue;
                };
                if !p
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.trim().is_empty())
                {
                    push(
                        join(&path, "name"),
                        "Period name must be a non-empty string",
                        p.get("name"),
                    );
                }
                match p.get("dayOfWeek") {
                    Some(Value::Array(days)) if !days.is_empty() => {
                        if !days.iter().all(|d| d.as_u64().is_some_and(|d| d <= 6)) {
                            push(
                                join(&path, "dayOfWeek"),
                                "dayOfWeek values must be 0-6",
                                p.get("dayOfWeek"),
                            );
                        }
                    }
                    other => push(
                        join(&path, "dayOfWeek"),
                        "dayOfWeek must be a non-empty array",
                        other,
                    ),
                }
                for (key, max, required, msg) in [
                    ("startHour", 23, true, "startHour must be 0-23"),
                    ("startMinute", 59, false, "startMinute must be 0-59"),
                    ("endHour", 23, true, "endHour must be 0-23"),
                    ("endMinute", 59, false, "endMinute must be 0-59"),
                ] {
                    match p.get(key) {
                        None | Some(Value::Null) if !required => {}
                        Some(v) if v.as_u64().is_some_and(|n| n <= max) => {}
                        other => push(join(&path, key), msg, other),
                    }
                }
                if p.get("priority")
                    .is_some_and(|v| !v.is_number() && !v.is_null())
                {
                    push(
                        join(&path, "priority"),
                        "priority must be a number",
                        p.get("priority"),
                    );
                }
                if p.get("inhibitScaleDown")
                    .is_some_and(|v| !v.is_boolean() && !v.is_null())
                {
                    push(
                        join(&path, "inhibitScaleDown"),
                        "inhibitScaleDown must be a boolean",
                        p.get("inhibitScaleDown"),
                    );
                }
                match p.get_mut("scalingOptions") {
                    Some(Value::Object(o)) => check_scaling_options(
                        &mut option_checker,
                        o,
                        &join(&path, "scalingOptions"),
                        false,
                    ),
                    None | Some(Value::Null) => {}
                    Some(v) => push(
                        join(&path, "scalingOptions"),
                        "scalingOptions must be an object",
                        Some(v),
                    ),
                }
            }
        }
        other => push(
            "periods".into(),
            "periods must be an array",
            other.map(|v| &*v),
        ),
    }
    errors.extend(option_checker.errors);
    errors
}

/// Semantic checks of a typed configuration: unique period names, a period's own
/// `minDesired ≤ maxDesired`, a known timezone (`Invalid timezone: <tz>` as a plain message).
pub fn validate_config(config: &ScheduledScalingConfig) -> ValidationErrors {
    let mut errors = ValidationErrors::default();
    let mut names = HashSet::new();
    for (i, p) in config.periods.iter().enumerate() {
        if !names.insert(p.name.as_str()) {
            errors.fields.push(FieldError::body(
                format!("periods[{i}].name"),
                "Period names must be unique",
                Some(Value::from(p.name.clone())),
            ));
        }
        if let Some(o) = &p.scaling_options {
            if let (Some(min), Some(max)) = (o.min_desired, o.max_desired) {
                if min > max {
                    errors.fields.push(FieldError::body(
                        format!("periods[{i}].scalingOptions"),
                        "minDesired cannot be greater than maxDesired",
                        None,
                    ));
                }
            }
        }
    }
    if let Some(tz) = &config.timezone {
        if !is_known_timezone(tz) {
            errors.messages.push(format!("Invalid timezone: {tz}"));
        }
    }
    errors
}

/// Parses and validates a schedule configuration body (`PUT .../scheduled-scaling`).
pub fn parse_config(value: &Value) -> Result<ScheduledScalingConfig, ValidationErrors> {
    let mut value = value.clone();
    let shape = check_config_shape(&mut value);
    if !shape.is_empty() {
        return Err(shape.into());
    }
    let config: ScheduledScalingConfig = serde_json::from_value(value)
        .map_err(|e| ValidationErrors::from(vec![FieldError::body("", e.to_string(), None)]))?;
    validate_config(&config).into_result().map(|()| config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(iso: &str) -> UnixMillis {
        crate::clock::parse_iso8601(iso).expect("instant")
    }

    fn period(
        name: &str,
        days: &[u8],
        start: (u8, u8),
        end: (u8, u8),
        priority: f64,
    ) -> SchedulePeriod {
        SchedulePeriod {
            name: name.into(),
            day_of_week: days.to_vec(),
            start_hour: start.0,
            start_minute: Some(start.1),
            end_hour: end.0,
            end_minute: Some(end.1),
            priority: Some(priority),
            inhibit_scale_down: None,
            scaling_options: None,
            extra: Map::new(),
        }
    }

    fn config(tz: Option<&str>, periods: Vec<SchedulePeriod>) -> ScheduledScalingConfig {
        ScheduledScalingConfig {
            enabled: true,
            timezone: tz.map(str::to_owned),
            periods,
            extra: Map::new(),
        }
    }

    fn spec_config() -> ScheduledScalingConfig {
        let mut peak = period("weekday-peak", &[1, 2, 3, 4, 5], (8, 0), (20, 0), 10.0);
        peak.inhibit_scale_down = Some(true);
        peak.scaling_options = Some(ScalingOptionsPatch {
            min_desired: Some(10),
            max_desired: Some(20),
            desired_count: Some(10),
            ..Default::default()
        });
        let mut weekend = period("weekend", &[6, 0], (0, 0), (0, 0), 20.0);
        weekend.scaling_options = Some(ScalingOptionsPatch {
            min_desired: Some(0),
            max_desired: Some(2),
            desired_count: Some(1),
            ..Default::default()
        });
        config(Some("America/New_York"), vec![peak, weekend])
    }

    fn active(c: &ScheduledScalingConfig, iso: &str) -> Option<String> {
        let tz = c.timezone.as_deref().unwrap_or("UTC");
        active_period(c, tz, ts(iso)).map(|p| p.name.clone())
    }

    #[test]
    fn p1_to_p4_weekday_peak_and_weekend() {
        let c = spec_config();
        assert_eq!(
            active(&c, "2026-03-18T18:00:00Z").as_deref(),
            Some("weekday-peak")
        );
        assert_eq!(active(&c, "2026-03-19T03:00:00Z"), None);
        assert_eq!(
            active(&c, "2026-03-21T16:00:00Z").as_deref(),
            Some("weekend")
        );
        assert_eq!(
            active(&c, "2026-03-22T14:00:00Z").as_deref(),
            Some("weekend")
        );
        assert_eq!(
            active(
                &config(Some("America/New_York"), vec![]),
                "2026-03-18T18:00:00Z"
            ),
            None
        );
    }

    #[test]
    fn p5_priority_wins() {
        let c = config(
            Some("America/New_York"),
            vec![
                period("peak", &[0, 1, 2, 3, 4, 5, 6], (8, 0), (20, 0), 10.0),
                period("weekend", &[6, 0], (8, 0), (20, 0), 20.0),
            ],
        );
        // Saturday 2026-03-21 12:00 in New York (EDT, UTC-4).
        assert_eq!(
            active(&c, "2026-03-21T16:00:00Z").as_deref(),
            Some("weekend")
        );
    }

    #[test]
    fn p6_to_p9_wrapping_and_all_day() {
        let night = config(
            None,
            vec![period("night-shift", &[1], (22, 0), (6, 0), 0.0)],
        );
        // 2026-03-17 is a Tuesday, 2026-03-16 a Monday.
        assert!(active(&night, "2026-03-17T03:00:00Z").is_some());
        assert!(active(&night, "2026-03-16T23:00:00Z").is_some());
        assert!(active(&night, "2026-03-16T03:00:00Z").is_none());
        let sat = config(None, vec![period("sat-late", &[6], (23, 0), (2, 0), 0.0)]);
        assert!(
            active(&sat, "2026-03-22T01:00:00Z").is_some(),
            "P7 Sunday 01:00"
        );
        let wed = config(None, vec![period("wed", &[3], (0, 0), (0, 0), 0.0)]);
        assert!(active(&wed, "2026-03-18T23:59:00Z").is_some());
        assert!(
            active(&wed, "2026-03-19T10:00:00Z").is_none(),
            "P8 Thursday"
        );
        let weeknights = config(
            None,
            vec![period("wn", &[1, 2, 3, 4, 5], (22, 0), (6, 0), 0.0)],
        );
        assert!(
            active(&weeknights, "2026-03-21T03:00:00Z").is_some(),
            "P9 Saturday 03:00"
        );
        assert!(
            active(&weeknights, "2026-03-22T03:00:00Z").is_none(),
            "P9 Sunday 03:00"
        );
    }

    #[test]
    fn p10_higher_priority_overlap() {
        let c = config(
            None,
            vec![
                period("mon-night", &[1], (22, 0), (10, 0), 10.0),
                period("tue-morning", &[2], (6, 0), (12, 0), 20.0),
            ],
        );
        assert_eq!(
            active(&c, "2026-03-17T08:00:00Z").as_deref(),
            Some("tue-morning")
        );
    }

    #[test]
    fn p11_is_time_in_range() {
        let m = |h: u32, min: u32| h * 60 + min;
        assert!(is_time_in_range(m(8, 0), m(8, 0), m(20, 0)));
        assert!(!is_time_in_range(m(20, 0), m(8, 0), m(20, 0)));
        assert!(is_time_in_range(m(23, 0), m(22, 0), m(6, 0)));
        assert!(is_time_in_range(m(3, 0), m(22, 0), m(6, 0)));
        assert!(!is_time_in_range(m(12, 0), m(22, 0), m(6, 0)));
        assert!(is_time_in_range(m(7, 45), m(7, 45), m(8, 0)));
        assert!(!is_time_in_range(m(8, 0), m(7, 45), m(8, 0)));
        assert!(!is_time_in_range(m(7, 44), m(7, 45), m(8, 0)));
        assert!(is_time_in_range(m(23, 45), m(23, 30), m(0, 15)));
        assert!(is_time_in_range(m(0, 10), m(23, 30), m(0, 15)));
        assert!(!is_time_in_range(m(12, 0), m(23, 30), m(0, 15)));
    }

    fn opts(min: u32, desired: u32, max: u32) -> ScalingOptions {
        ScalingOptions::with_bounds(min, desired, max)
    }

    fn patch(min: Option<u32>, desired: Option<u32>, max: Option<u32>) -> ScalingOptionsPatch {
        ScalingOptionsPatch {
            min_desired: min,
            desired_count: desired,
            max_desired: max,
            ..Default::default()
        }
    }

    fn triple(o: &ScalingOptions) -> (u32, u32, u32) {
        (o.min_desired, o.desired_count, o.max_desired)
    }

    #[test]
    fn m1_to_m4_merge_with_live_desired() {
        let base = opts(1, 5, 20);
        let m = merge_with_live_desired(&base, &opts(1, 12, 20), Some(&patch(Some(8), None, None)));
        assert_eq!(triple(&m), (8, 12, 20));
        let m = merge_with_live_desired(
            &base,
            &opts(1, 12, 20),
            Some(&patch(Some(8), Some(10), None)),
        );
        assert_eq!(m.desired_count, 10);
        let m = merge_with_live_desired(&base, &opts(1, 3, 20), Some(&patch(Some(8), None, None)));
        assert_eq!(m.desired_count, 8);
        let m = merge_with_live_desired(
            &base,
            &opts(1, 12, 20),
            Some(&patch(Some(0), Some(0), Some(0))),
        );
        assert_eq!(triple(&m), (0, 0, 0));
    }

    fn group_with(config: ScheduledScalingConfig, options: ScalingOptions) -> Group {
        let v = json!({"name": "g", "type": "JVB", "region": "us-ashburn-1",
            "scalingOptions": {"minDesired": 0, "maxDesired": 0, "desiredCount": 0}});
        let mut g: Group = serde_json::from_value(v).expect("group");
        g.scheduled_scaling = Some(config);
        g.scaling_options = options;
        g
    }

    fn always(name: &str, p: ScalingOptionsPatch) -> SchedulePeriod {
        let mut period = period(name, &[0, 1, 2, 3, 4, 5, 6], (0, 0), (0, 0), 0.0);
        period.scaling_options = Some(p);
        period
    }

    const NOW: &str = "2026-03-18T18:00:00Z";

    #[test]
    fn t1_entering_captures_the_base() {
        let mut base = opts(1, 2, 5);
        base.scale_up_quantity = 1;
        let c = config(
            None,
            vec![always("always-peak", patch(Some(10), Some(10), Some(20)))],
        );
        let g = group_with(c, base.clone());
        let t = transition(&g, &ScheduleSettings::default(), ts(NOW)).expect("transition");
        assert_eq!(t.from, None);
        assert_eq!(t.to.as_deref(), Some("always-peak"));
        assert_eq!(triple(&t.new_options), (10, 10, 20));
        assert_eq!(t.old_options.desired_count, 2);
        assert_eq!(t.group.scheduled_scaling_base_options, Some(base));
        assert_eq!(
            t.group.scheduled_scaling_active_period.as_deref(),
            Some("always-peak")
        );
        assert!(
            transition(&t.group, &ScheduleSettings::default(), ts(NOW)).is_none(),
            "stable"
        );
    }

    #[test]
    fn t2_t3_exiting_restores_the_base() {
        let base = opts(1, 2, 5);
        // T2: the exiting period set desired: the base comes back whole.
        let c = config(None, vec![period("gone", &[], (0, 0), (0, 0), 0.0)]);
        let mut g = group_with(c, opts(10, 10, 20));
        if let Some(p) = g
            .scheduled_scaling
            .as_mut()
            .and_then(|c| c.periods.first_mut())
        {
            p.scaling_options = Some(patch(Some(10), Some(10), Some(20)));
        }
        g.scheduled_scaling_active_period = Some("gone".into());
        g.scheduled_scaling_base_options = Some(base.clone());
        let t = transition(&g, &ScheduleSettings::default(), ts(NOW)).expect("exit");
        assert_eq!(triple(&t.new_options), (1, 2, 5));
        assert_eq!(t.group.scheduled_scaling_active_period, None);
        assert_eq!(t.group.scheduled_scaling_base_options, None);
        // T3: the exiting period set only min: live desired is kept, invariants applied.
        if let Some(p) = g
            .scheduled_scaling
            .as_mut()
            .and_then(|c| c.periods.first_mut())
        {
            p.scaling_options = Some(patch(Some(10), None, None));
        }
        g.scaling_options = opts(10, 15, 20);
        let t = transition(&g, &ScheduleSettings::default(), ts(NOW)).expect("exit");
        assert_eq!(triple(&t.new_options), (1, 15, 15));
    }

    #[test]
    fn t4_t5_switching_merges_onto_the_base() {
        let base = opts(1, 2, 5);
        let c = config(
            None,
            vec![always("night", patch(Some(0), Some(1), Some(3)))],
        );
        let mut g = group_with(c, opts(10, 10, 20));
        g.scheduled_scaling_active_period = Some("day".into());
        g.scheduled_scaling_base_options = Some(base.clone());
        let t = transition(&g, &ScheduleSettings::default(), ts(NOW)).expect("switch");
        assert_eq!(triple(&t.new_options), (0, 1, 3));
        assert_eq!(t.group.scheduled_scaling_base_options, Some(base.clone()));
        let c = config(None, vec![always("night", patch(Some(0), None, Some(3)))]);
        let mut g = group_with(c, opts(10, 12, 20));
        g.scheduled_scaling_active_period = Some("day".into());
        g.scheduled_scaling_base_options = Some(base);
        let t = transition(&g, &ScheduleSettings::default(), ts(NOW)).expect("switch");
        assert_eq!(triple(&t.new_options), (0, 12, 12));
    }

    #[test]
    fn disabled_schedules_and_region_timezones() {
        let mut c = spec_config();
        c.timezone = None;
        let g = group_with(c.clone(), opts(1, 2, 5));
        let s = ScheduleSettings::default();
        assert_eq!(s.timezone_name(&c, "us-ashburn-1"), "America/New_York");
        assert_eq!(s.timezone_name(&c, "fra1"), "UTC");
        assert!(inhibits_scale_down(&g, &s, ts(NOW)));
        let mut off = g.clone();
        if let Some(c) = off.scheduled_scaling.as_mut() {
            c.enabled = false;
        }
        assert!(!inhibits_scale_down(&off, &s, ts(NOW)));
        assert!(transition(&off, &s, ts(NOW)).is_none());
    }

    #[test]
    fn jitter_delays_evaluation_deterministically_within_bounds() {
        let s = ScheduleSettings {
            jitter_sec: 60,
            ..ScheduleSettings::default()
        };
        let now = ts(NOW);
        let a = s.evaluation_instant("group-a", now);
        assert_eq!(a, s.evaluation_instant("group-a", now));
        assert!(now - a < 60_000 && now >= a);
        assert_eq!(
            ScheduleSettings::default().evaluation_instant("group-a", now),
            now
        );
    }

    #[test]
    fn validation_messages_are_the_references() {
        let body = json!({"enabled": "yes", "timezone": 5, "periods": [
            {"name": "", "dayOfWeek": [], "startHour": 24, "endHour": 3, "startMinute": 60, "priority": "high"},
            {"name": "ok", "dayOfWeek": [7], "startHour": 1, "endHour": 2, "scalingOptions": {"minDesired": -1}}
        ]});
        let e = parse_config(&body).expect_err("invalid");
        let got: Vec<(String, String)> = e
            .fields
            .iter()
            .map(|f| (f.path.clone(), f.msg.clone()))
            .collect();
        let want = [
            ("enabled", "enabled must be a boolean"),
            ("timezone", "timezone must be a string"),
            ("periods[0].name", "Period name must be a non-empty string"),
            (
                "periods[0].dayOfWeek",
                "dayOfWeek must be a non-empty array",
            ),
            ("periods[0].startHour", "startHour must be 0-23"),
            ("periods[0].startMinute", "startMinute must be 0-59"),
            ("periods[0].priority", "priority must be a number"),
            ("periods[1].dayOfWeek", "dayOfWeek values must be 0-6"),
            (
                "periods[1].scalingOptions.minDesired",
                "Value must be positive",
            ),
        ];
        assert_eq!(got, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
        let e = parse_config(&json!({"enabled": true, "timezone": "Mars/Olympus", "periods": []}))
            .expect_err("tz");
        assert_eq!(
            e.messages,
            vec!["Invalid timezone: Mars/Olympus".to_owned()]
        );
        let dup = json!({"enabled": true, "periods": [
            {"name": "a", "dayOfWeek": [1], "startHour": 1, "endHour": 2},
            {"name": "a", "dayOfWeek": [1], "startHour": 1, "endHour": 2, "scalingOptions": {"minDesired": 5, "maxDesired": 2}}]});
        let e = parse_config(&dup).expect_err("dup");
        assert_eq!(e.fields.len(), 2);
        assert!(parse_config(&spec_value()).is_ok());
    }

    fn spec_value() -> Value {
        json!({"enabled":true,"timezone":"America/New_York",
            "periods":[{"name":"weekday-peak","dayOfWeek":[1,2,3,4,5],"startHour":8,"startMinute":0,"endHour":20,"endMinute":0,
                "priority":10,"inhibitScaleDown":true,"scalingOptions":{"minDesired":10,"maxDesired":20,"desiredCount":10}}]})
    }

    #[test]
    fn the_spec_example_round_trips() {
        let v = spec_value();
        let c = parse_config(&v).expect("valid");
        assert_eq!(serde_json::to_value(&c).expect("json"), v);
    }
}
