//! Reading the metrics back: OTLP exports flattened to one point per series (the last of each:
//! the sums are cumulative), and the Prometheus page parsed to its histogram counts.

use std::collections::BTreeMap;

use integration_tests::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;

/// A series' attributes, as text.
pub type Labels = BTreeMap<String, String>;

/// The last value of one series.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub name: String,
    pub labels: Labels,
    /// Histogram: its count; sum: its value; gauge: its value.
    pub value: f64,
    /// Histogram only: bucket counts, one more than the bounds.
    pub buckets: Vec<u64>,
    pub bounds: Vec<f64>,
    /// The resource's attributes.
    pub resource: Labels,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn labels(attrs: &[KeyValue]) -> Labels {
    attrs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

/// One point per (metric, attributes): the latest export's.
pub fn points(exports: &[ExportMetricsServiceRequest]) -> Vec<Point> {
    let mut last: BTreeMap<(String, Vec<(String, String)>), Point> = BTreeMap::new();
    for req in exports {
        for rm in &req.resource_metrics {
            let resource = rm.resource.as_ref().map(|r| labels(&r.attributes)).unwrap_or_default();
            for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                let mut add = |attrs: &[KeyValue], value: f64, buckets: Vec<u64>, bounds: Vec<f64>| {
                    let labels = labels(attrs);
                    let key = (m.name.clone(), labels.clone().into_iter().collect());
                    let resource = resource.clone();
                    last.insert(key, Point { name: m.name.clone(), labels, value, buckets, bounds, resource });
                };
                match &m.data {
                    Some(Data::Histogram(h)) => h.data_points.iter().for_each(|p| {
                        add(&p.attributes, p.count as f64, p.bucket_counts.clone(), p.explicit_bounds.clone())
                    }),
                    Some(Data::Sum(s)) => {
                        s.data_points.iter().for_each(|p| add(&p.attributes, number(&p.value), vec![], vec![]))
                    }
                    Some(Data::Gauge(g)) => {
                        g.data_points.iter().for_each(|p| add(&p.attributes, number(&p.value), vec![], vec![]))
                    }
                    _ => {}
                }
            }
        }
    }
    last.into_values().collect()
}

fn number(v: &Option<opentelemetry_proto::tonic::metrics::v1::number_data_point::Value>) -> f64 {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as N;
    match v {
        Some(N::AsInt(i)) => *i as f64,
        Some(N::AsDouble(d)) => *d,
        None => f64::NAN,
    }
}

/// Counts of the histogram `name`, by the values of `keys` (absent ones as "").
pub fn counts_by(points: &[Point], name: &str, keys: &[&str]) -> BTreeMap<Vec<String>, u64> {
    let mut out = BTreeMap::new();
    for p in points.iter().filter(|p| p.name == name) {
        let key = keys.iter().map(|k| p.labels.get(*k).cloned().unwrap_or_default()).collect();
        *out.entry(key).or_insert(0) += p.value as u64;
    }
    out
}

/// The Prometheus page's `<name>_count` samples: labels → count.
pub fn scrape_counts(page: &str, name: &str) -> Vec<(Labels, u64)> {
    let prefix = format!("{name}_count{{");
    page.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|rest| {
            let (labels, value) = rest.rsplit_once("} ").unwrap_or_else(|| panic!("bad sample line {rest:?}"));
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("bad label {kv:?}"));
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            (labels, value.parse().unwrap_or_else(|e| panic!("bad count {value:?}: {e}")))
        })
        .collect()
}

/// Prometheus counts of `name` by the values of `keys`.
pub fn scrape_counts_by(page: &str, name: &str, keys: &[&str]) -> BTreeMap<Vec<String>, u64> {
    let mut out = BTreeMap::new();
    for (labels, n) in scrape_counts(page, name) {
        let key = keys.iter().map(|k| labels.get(*k).cloned().unwrap_or_default()).collect();
        *out.entry(key).or_insert(0) += n;
    }
    out
}

/// `GET http://ADDR<path>`: status and body.
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let t = curl_one(&[format!("http://{addr}{path}")]);
    (t.code, t.body)
}

/// The tracer flags of a metrics test: scrape page on `addr`, OTLP push every second.
pub fn metrics_flags(addr: &str) -> Vec<String> {
    ["--metrics-addr", addr, "--metrics-interval", "1"].iter().map(|s| s.to_string()).collect()
}

/// Attribute keys that would name objects or connections: never on a metric.
pub const HIGH_CARDINALITY: [&str; 9] = [
    "url.path",
    "k8s.object.name",
    "k8s.namespace.name",
    "etcd.key",
    "etcd.range_end",
    "client.port",
    "client.address",
    "network.peer.port",
    "etcd.lease.id",
];

/// Problems with what the points carry: high-cardinality keys, or any of `never` in a value.
pub fn cardinality_errors(points: &[Point], never: &[&str]) -> Vec<String> {
    let mut errs = Vec::new();
    for p in points {
        for (k, v) in &p.labels {
            if HIGH_CARDINALITY.contains(&k.as_str()) {
                errs.push(format!("{}: high-cardinality attribute {k}={v}", p.name));
            }
            if let Some(n) = never.iter().find(|n| v.contains(*n)) {
                errs.push(format!("{}: {k}={v} names an object ({n})", p.name));
            }
        }
    }
    errs
}
