//! A small Prometheus registry writing the text exposition format 0.0.4, so metric names are
//! exactly the reference's (counters such as `autoscaler_stats_handled` have no `_total`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A float stored in an atomic.
#[derive(Debug, Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    fn add(&self, v: f64) {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(cur) + v).to_bits();
            match self
                .0
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }
}

/// One series of a histogram.
#[derive(Debug)]
struct HistogramSeries {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum: AtomicF64,
}

#[derive(Debug)]
enum Kind {
    Counter,
    Gauge,
    Histogram(Vec<f64>),
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram(_) => "histogram",
        }
    }
}

#[derive(Debug)]
enum Series {
    Value(AtomicF64),
    Histogram(HistogramSeries),
}

/// A metric with its label names and one series per label values.
#[derive(Debug)]
pub struct Family {
    name: String,
    help: String,
    labels: Vec<&'static str>,
    kind: Kind,
    /// Keyed by the label values joined by [`KEY_SEPARATOR`] (sorted as the values are), so a
    /// lookup needs no allocation; the values themselves are kept beside each series.
    series: RwLock<SeriesMap>,
}

/// Series by joined key, each with its label values.
type SeriesMap = BTreeMap<String, (Vec<String>, Arc<Series>)>;

/// Ends each label value in a series key: below every printable character, so joined keys
/// sort as their value lists do.
const KEY_SEPARATOR: char = '\u{1f}';

thread_local! {
    /// The key of the series being looked up, reused by every lookup on this thread.
    static LOOKUP_KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

impl Family {
    fn series(&self, values: &[&str]) -> Arc<Series> {
        LOOKUP_KEY.with_borrow_mut(|key| {
            key.clear();
            for v in values {
                key.push_str(v);
                key.push(KEY_SEPARATOR);
            }
            if let Ok(map) = self.series.read()
                && let Some((_, s)) = map.get(key.as_str())
            {
                return s.clone();
            }
            let mut map = self.series.write().unwrap_or_else(|p| p.into_inner());
            map.entry(key.clone())
                .or_insert_with(|| {
                    let series = Arc::new(match &self.kind {
                        Kind::Histogram(bounds) => Series::Histogram(HistogramSeries {
                            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
                            count: AtomicU64::new(0),
                            sum: AtomicF64::default(),
                        }),
                        _ => Series::Value(AtomicF64::default()),
                    });
                    (values.iter().map(|v| (*v).to_owned()).collect(), series)
                })
                .1
                .clone()
        })
    }

    /// Adds to a counter (or gauge) series.
    pub fn inc_by(&self, values: &[&str], v: f64) {
        if let Series::Value(x) = &*self.series(values) {
            x.add(v);
        }
    }

    /// Adds one.
    pub fn inc(&self, values: &[&str]) {
        self.inc_by(values, 1.0);
    }

    /// Sets a gauge series.
    pub fn set(&self, values: &[&str], v: f64) {
        if let Series::Value(x) = &*self.series(values) {
            x.set(v);
        }
    }

    /// Records an observation in a histogram series.
    pub fn observe(&self, values: &[&str], v: f64) {
        if let (Series::Histogram(h), Kind::Histogram(bounds)) = (&*self.series(values), &self.kind)
        {
            for (i, bound) in bounds.iter().enumerate() {
                if v <= *bound {
                    h.buckets[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            h.count.fetch_add(1, Ordering::Relaxed);
            h.sum.add(v);
        }
    }

    /// The value of a counter or gauge series (tests).
    pub fn value(&self, values: &[&str]) -> f64 {
        match &*self.series(values) {
            Series::Value(x) => x.get(),
            Series::Histogram(h) => h.count.load(Ordering::Relaxed) as f64,
        }
    }

    /// Removes every series whose label `label` has value `value` (a deleted group).
    pub fn remove_matching(&self, label: &str, value: &str) {
        let Some(idx) = self.labels.iter().position(|l| *l == label) else {
            return;
        };
        if let Ok(mut map) = self.series.write() {
            map.retain(|_, (values, _)| values[idx] != value);
        }
    }

    fn encode(&self, out: &mut String) {
        let Ok(map) = self.series.read() else { return };
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind.name());
        for (values, series) in map.values() {
            let labels = |extra: Option<(&str, String)>| -> String {
                let mut pairs: Vec<String> = self
                    .labels
                    .iter()
                    .zip(values)
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                if let Some((k, v)) = extra {
                    pairs.push(format!("{k}=\"{v}\""));
                }
                if pairs.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", pairs.join(","))
                }
            };
            match (&**series, &self.kind) {
                (Series::Value(x), _) => {
                    let _ = writeln!(out, "{}{} {}", self.name, labels(None), fmt_value(x.get()));
                }
                (Series::Histogram(h), Kind::Histogram(bounds)) => {
                    for (i, bound) in bounds.iter().enumerate() {
                        let n = h.buckets[i].load(Ordering::Relaxed);
                        let _ = writeln!(
                            out,
                            "{}_bucket{} {n}",
                            self.name,
                            labels(Some(("le", fmt_value(*bound))))
                        );
                    }
                    let count = h.count.load(Ordering::Relaxed);
                    let _ = writeln!(
                        out,
                        "{}_bucket{} {count}",
                        self.name,
                        labels(Some(("le", "+Inf".into())))
                    );
                    let _ = writeln!(
                        out,
                        "{}_sum{} {}",
                        self.name,
                        labels(None),
                        fmt_value(h.sum.get())
                    );
                    let _ = writeln!(out, "{}_count{} {count}", self.name, labels(None));
                }
                _ => {}
            }
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn fmt_value(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Every metric of the process.
#[derive(Debug, Default)]
pub struct Registry {
    families: RwLock<Vec<Arc<Family>>>,
}

impl Registry {
    fn add(&self, name: &str, help: &str, labels: &[&'static str], kind: Kind) -> Arc<Family> {
        let family = Arc::new(Family {
            name: name.to_owned(),
            help: help.to_owned(),
            labels: labels.to_vec(),
            kind,
            series: RwLock::new(BTreeMap::new()),
        });
        if let Ok(mut f) = self.families.write() {
            f.push(family.clone());
        }
        family
    }

    /// A counter family.
    pub fn counter(&self, name: &str, help: &str, labels: &[&'static str]) -> Arc<Family> {
        self.add(name, help, labels, Kind::Counter)
    }

    /// A gauge family.
    pub fn gauge(&self, name: &str, help: &str, labels: &[&'static str]) -> Arc<Family> {
        self.add(name, help, labels, Kind::Gauge)
    }

    /// A histogram family with the given bucket bounds.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[&'static str],
        buckets: &[f64],
    ) -> Arc<Family> {
        self.add(name, help, labels, Kind::Histogram(buckets.to_vec()))
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Ok(families) = self.families.read() {
            for f in families.iter() {
                f.encode(&mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_keeps_names_and_escapes_labels() {
        let r = Registry::default();
        let c = r.counter("autoscaler_stats_handled", "handled", &[]);
        let g = r.gauge("autoscaling_desired_count", "desired", &["group"]);
        let h = r.histogram(
            "http_server_request_duration_seconds",
            "latency",
            &["method", "uri"],
            &[0.01, 0.1],
        );
        c.inc(&[]);
        c.inc(&[]);
        g.set(&["g\"1"], 3.0);
        h.observe(&["GET", "/groups"], 0.05);
        let text = r.encode();
        assert!(
            text.contains("# TYPE autoscaler_stats_handled counter\nautoscaler_stats_handled 2\n"),
            "{text}"
        );
        assert!(
            text.contains("autoscaling_desired_count{group=\"g\\\"1\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("http_server_request_duration_seconds_bucket{method=\"GET\",uri=\"/groups\",le=\"0.01\"} 0\n"));
        assert!(text.contains("http_server_request_duration_seconds_bucket{method=\"GET\",uri=\"/groups\",le=\"0.1\"} 1\n"));
        assert!(text.contains("http_server_request_duration_seconds_bucket{method=\"GET\",uri=\"/groups\",le=\"+Inf\"} 1\n"));
        assert!(text.contains(
            "http_server_request_duration_seconds_count{method=\"GET\",uri=\"/groups\"} 1\n"
        ));
        g.remove_matching("group", "g\"1");
        assert!(!r.encode().contains("autoscaling_desired_count{"));
    }
}
