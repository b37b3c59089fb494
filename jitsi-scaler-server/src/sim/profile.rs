//! Load profiles: the load of a simulated instance as a function of its own (scaled) clock.
//!
//! Syntax (times in simulated seconds since the instance started):
//!
//! | Spec | Meaning |
//! |---|---|
//! | `0.3` or `const:0.3` | constant |
//! | `ramp:0.1:0.9:300` | linear from 0.1 at 0 s to 0.9 at 300 s, then 0.9 |
//! | `steps:0.2@0,0.9@120,0.1@600` | 0.2 from 0 s, 0.9 from 120 s, 0.1 from 600 s (the first value also before its time) |
//! | `sine:0.1:0.9:600` | oscillates between 0.1 and 0.9 with a 600 s period, starting at the low point |
//! | `file:PATH` | JSON array of `[second, value]` pairs, linearly interpolated, held before the first and after the last |
//!
//! For stress types (JVB, Jigasi, …) the value is the stress level; for Jibri it is the
//! probability of being busy.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// A load profile that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid load profile {spec:?}: {reason}")]
pub struct ProfileError {
    spec: String,
    reason: String,
}

/// The load of an instance over its simulated time.
#[derive(Clone, Debug, PartialEq)]
pub enum LoadProfile {
    /// The same value all the time.
    Const(f64),
    /// Linear from `from` at 0 s to `to` at `seconds`, then `to`.
    Ramp {
        /// Value at 0 s.
        from: f64,
        /// Value from `seconds` on.
        to: f64,
        /// Length of the ramp.
        seconds: f64,
    },
    /// `(from_second, value)` steps in ascending time order.
    Steps(Arc<[(f64, f64)]>),
    /// A sine wave between `min` and `max` with the given period, starting at `min`.
    Sine {
        /// Low point.
        min: f64,
        /// High point.
        max: f64,
        /// Period in seconds.
        period: f64,
    },
    /// A trace read from a JSON file: `(second, value)` points, linearly interpolated.
    Trace {
        /// Where the trace was read from (for display).
        path: PathBuf,
        /// The points in ascending time order.
        points: Arc<[(f64, f64)]>,
    },
}

impl LoadProfile {
    /// The load at `t` simulated seconds since start.
    pub fn value_at(&self, t: f64) -> f64 {
        match self {
            LoadProfile::Const(v) => *v,
            LoadProfile::Ramp { from, to, seconds } => {
                if t >= *seconds {
                    *to
                } else {
                    from + (to - from) * (t.max(0.0) / seconds)
                }
            }
            LoadProfile::Steps(steps) => steps
                .iter()
                .take_while(|(at, _)| *at <= t)
                .last()
                .or(steps.first())
                .map_or(0.0, |(_, v)| *v),
            LoadProfile::Sine { min, max, period } => {
                let phase = (t / period) * std::f64::consts::TAU;
                min + (max - min) * (1.0 - phase.cos()) / 2.0
            }
            LoadProfile::Trace { points, .. } => interpolate(points, t),
        }
    }
}

fn interpolate(points: &[(f64, f64)], t: f64) -> f64 {
    let after = points.partition_point(|(at, _)| *at <= t);
    match (
        after.checked_sub(1).and_then(|i| points.get(i)),
        points.get(after),
    ) {
        (Some(&(t0, v0)), Some(&(t1, v1))) => v0 + (v1 - v0) * (t - t0) / (t1 - t0),
        (Some(&(_, v)), None) | (None, Some(&(_, v))) => v,
        (None, None) => 0.0,
    }
}

impl FromStr for LoadProfile {
    type Err = ProfileError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let spec = spec.trim();
        let fail = |reason: &str| ProfileError {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let (kind, rest) = spec.split_once(':').unwrap_or(("const", spec));
        let fields: Vec<&str> = rest.split(':').collect();
        match kind.trim() {
            "const" => {
                let [v] = fields[..] else {
                    return Err(fail("expected const:VALUE"));
                };
                Ok(LoadProfile::Const(load(v).map_err(|r| fail(&r))?))
            }
            "ramp" => {
                let [from, to, seconds] = fields[..] else {
                    return Err(fail("expected ramp:FROM:TO:SECONDS"));
                };
                Ok(LoadProfile::Ramp {
                    from: load(from).map_err(|r| fail(&r))?,
                    to: load(to).map_err(|r| fail(&r))?,
                    seconds: positive(seconds).map_err(|r| fail(&r))?,
                })
            }
            "sine" => {
                let [min, max, period] = fields[..] else {
                    return Err(fail("expected sine:MIN:MAX:PERIOD"));
                };
                Ok(LoadProfile::Sine {
                    min: load(min).map_err(|r| fail(&r))?,
                    max: load(max).map_err(|r| fail(&r))?,
                    period: positive(period).map_err(|r| fail(&r))?,
                })
            }
            "steps" => {
                let steps = rest
                    .split(',')
                    .map(|step| {
                        let (v, at) = step
                            .split_once('@')
                            .ok_or_else(|| format!("step {step:?} is not VALUE@SECOND"))?;
                        Ok((second(at)?, load(v)?))
                    })
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(|r| fail(&r))?;
                ascending(&steps).map_err(|r| fail(&r))?;
                Ok(LoadProfile::Steps(steps.into()))
            }
            "file" => {
                let path = PathBuf::from(rest.trim());
                let points = read_trace(&path).map_err(|r| fail(&r))?;
                Ok(LoadProfile::Trace {
                    path,
                    points: points.into(),
                })
            }
            other => Err(fail(&format!(
                "unknown kind {other:?} (use const, ramp, steps, sine or file)"
            ))),
        }
    }
}

impl fmt::Display for LoadProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadProfile::Const(v) => write!(f, "const:{v}"),
            LoadProfile::Ramp { from, to, seconds } => write!(f, "ramp:{from}:{to}:{seconds}"),
            LoadProfile::Steps(steps) => {
                f.write_str("steps:")?;
                for (i, (at, v)) in steps.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    write!(f, "{sep}{v}@{at}")?;
                }
                Ok(())
            }
            LoadProfile::Sine { min, max, period } => write!(f, "sine:{min}:{max}:{period}"),
            LoadProfile::Trace { path, .. } => write!(f, "file:{}", path.display()),
        }
    }
}

fn number(text: &str) -> Result<f64, String> {
    let text = text.trim();
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{text:?} is not a number"))
}

/// A load value: finite and not negative.
fn load(text: &str) -> Result<f64, String> {
    number(text).and_then(checked_load)
}

fn checked_load(v: f64) -> Result<f64, String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!("load {v} is negative or not finite"));
    }
    Ok(v)
}

/// A point in time: finite and not negative.
fn second(text: &str) -> Result<f64, String> {
    number(text).and_then(checked_second)
}

fn checked_second(v: f64) -> Result<f64, String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!("time {v} is negative or not finite"));
    }
    Ok(v)
}

fn positive(text: &str) -> Result<f64, String> {
    let v = number(text)?;
    if v <= 0.0 {
        return Err(format!("duration {v} must be positive"));
    }
    Ok(v)
}

fn ascending(points: &[(f64, f64)]) -> Result<(), String> {
    if points.is_empty() {
        return Err("no points".to_owned());
    }
    match points.windows(2).find(|w| w[1].0 <= w[0].0) {
        Some(w) => Err(format!(
            "times must be strictly ascending ({} then {})",
            w[0].0, w[1].0
        )),
        None => Ok(()),
    }
}

fn read_trace(path: &std::path::Path) -> Result<Vec<(f64, f64)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let raw: Vec<(f64, f64)> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is not a JSON array of [second, value] pairs: {e}",
            path.display()
        )
    })?;
    for &(at, v) in &raw {
        checked_second(at)?;
        checked_load(v)?;
    }
    ascending(&raw)?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> LoadProfile {
        spec.parse().expect(spec)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn constants_with_and_without_kind() {
        assert_eq!(parse("const:0.3"), LoadProfile::Const(0.3));
        assert_eq!(parse("0.7"), LoadProfile::Const(0.7));
        assert_eq!(parse("const:1.5").value_at(1e6), 1.5, "stress may exceed 1");
    }

    #[test]
    fn ramps_interpolate_then_hold() {
        let p = parse("ramp:0.1:0.9:300");
        assert!(close(p.value_at(0.0), 0.1));
        assert!(close(p.value_at(150.0), 0.5));
        assert!(close(p.value_at(300.0), 0.9));
        assert!(close(p.value_at(1000.0), 0.9));
        let down = parse("ramp:1:0:10");
        assert!(close(down.value_at(2.5), 0.75));
    }

    #[test]
    fn steps_take_the_latest_step_reached() {
        let p = parse("steps:0.2@0,0.9@120,0.1@600");
        assert_eq!(p.value_at(0.0), 0.2);
        assert_eq!(p.value_at(119.9), 0.2);
        assert_eq!(p.value_at(120.0), 0.9);
        assert_eq!(p.value_at(599.0), 0.9);
        assert_eq!(p.value_at(10_000.0), 0.1);
        let late = parse("steps:0.5@10,0.8@20");
        assert_eq!(late.value_at(0.0), 0.5, "first value before its time");
    }

    #[test]
    fn sine_moves_between_its_bounds() {
        let p = parse("sine:0.1:0.9:600");
        assert!(close(p.value_at(0.0), 0.1));
        assert!(close(p.value_at(300.0), 0.9));
        assert!(close(p.value_at(150.0), 0.5));
        assert!(close(p.value_at(600.0), 0.1));
    }

    #[test]
    fn traces_from_files_interpolate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trace.json");
        std::fs::write(&path, "[[0, 0.2], [100, 0.6], [200, 0.2]]").expect("write");
        let p = parse(&format!("file:{}", path.display()));
        assert!(close(p.value_at(-5.0), 0.2));
        assert!(close(p.value_at(50.0), 0.4));
        assert!(close(p.value_at(100.0), 0.6));
        assert!(close(p.value_at(150.0), 0.4));
        assert!(close(p.value_at(500.0), 0.2));
        assert_eq!(p.to_string(), format!("file:{}", path.display()));
    }

    #[test]
    fn bad_specs_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let unsorted = dir.path().join("unsorted.json");
        std::fs::write(&unsorted, "[[10, 0.2], [5, 0.6]]").expect("write");
        let not_pairs = dir.path().join("bad.json");
        std::fs::write(&not_pairs, r#"{"a":1}"#).expect("write");
        let cases = [
            ("", "not a number"),
            ("const:", "not a number"),
            ("const:-0.1", "negative"),
            ("const:NaN", "not a number"),
            ("const:1:2", "expected const:VALUE"),
            ("ramp:0.1:0.9", "expected ramp"),
            ("ramp:0.1:0.9:0", "must be positive"),
            ("steps:0.2@0,0.9", "not VALUE@SECOND"),
            ("steps:0.2@10,0.9@5", "strictly ascending"),
            ("steps:0.2@-1", "negative"),
            ("sine:0:1:-5", "must be positive"),
            ("wave:1", "unknown kind"),
            ("file:/nonexistent/trace.json", "cannot read"),
        ];
        for (spec, expected) in cases {
            let err = spec.parse::<LoadProfile>().expect_err(spec).to_string();
            assert!(err.contains(expected), "{spec}: {err}");
        }
        let err = format!("file:{}", unsorted.display())
            .parse::<LoadProfile>()
            .expect_err("unsorted");
        assert!(err.to_string().contains("ascending"), "{err}");
        let err = format!("file:{}", not_pairs.display())
            .parse::<LoadProfile>()
            .expect_err("not pairs");
        assert!(err.to_string().contains("JSON array"), "{err}");
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            "const:0.3",
            "ramp:0.1:0.9:300",
            "steps:0.2@0,0.9@120,0.1@600",
            "sine:0.1:0.9:600",
        ] {
            let p = parse(spec);
            assert_eq!(p.to_string(), spec);
            assert_eq!(parse(&p.to_string()), p);
        }
    }
}
