//! The instruments: request durations by the OpenTelemetry semantic conventions, recorded from
//! every finished span, and the agent's own health, observed from its counters at each collection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use opentelemetry::metrics::{AsyncInstrument, Histogram, Meter};
use opentelemetry::{Key, KeyValue, StringValue, Value};
use smallvec::SmallVec;

use super::Health;
use crate::export::ExportStats;
use crate::protocols::http1::STANDARD_METHODS;
use crate::span::{AttrStr, AttrValue, SpanKind, SpanRecord, SpanStatus};

/// Histogram bounds, in seconds: kube-apiserver's own `apiserver_request_duration_seconds`
/// buckets (5 ms to 60 s, so dashboards read alike), with 1, 2.5 and 10 ms added for etcd calls,
/// which on a local disk mostly take a few milliseconds.
pub(super) const DURATION_BUCKETS: [f64; 26] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// Which duration a span is, and so which attributes it gives its measurement. Every list is of
/// low-cardinality attributes only: routes are templates, never paths; no object names, keys or
/// ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Measure {
    HttpServer,
    HttpClient,
    /// etcd calls made by a traced client (kube-apiserver).
    DbClient,
    /// gRPC calls a traced server answered: etcd itself when it is a target. Not counted as
    /// `db.client.operation.duration`: with both sides traced, each call would count twice there.
    RpcServer,
    RpcClient,
}

impl Measure {
    /// The measure of a span; `None` for spans that are not requests (connection spans).
    pub(super) fn of(span: &SpanRecord) -> Option<Measure> {
        let has = |key| span.attr(key).is_some();
        match span.kind {
            SpanKind::Client if span.attr("db.system.name").is_some_and(|v| is_str(v, "etcd")) => {
                Some(Measure::DbClient)
            }
            SpanKind::Client if has("rpc.system") => Some(Measure::RpcClient),
            SpanKind::Client if has("http.request.method") => Some(Measure::HttpClient),
            SpanKind::Server if has("rpc.system") || has("db.system.name") => Some(Measure::RpcServer),
            SpanKind::Server if has("http.request.method") => Some(Measure::HttpServer),
            _ => None,
        }
    }

    /// The span attributes this measure keeps, besides `http.request.method` and `error.type`.
    fn copied(self) -> &'static [&'static str] {
        match self {
            Measure::HttpServer => {
                &["url.scheme", "http.route", "http.response.status_code", "k8s.verb", "k8s.resource", "k8s.api.group"]
            }
            // Webhooks are told apart by their server; a client's paths are not templated.
            Measure::HttpClient => &["url.scheme", "server.address", "server.port", "http.response.status_code"],
            Measure::DbClient => &["db.system.name", "db.operation.name", "k8s.resource"],
            Measure::RpcServer => {
                &["rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code", "db.system.name", "k8s.resource"]
            }
            Measure::RpcClient => &["rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code", "server.port"],
        }
    }
}

fn is_str(v: &AttrValue, s: &str) -> bool {
    matches!(v, AttrValue::Str(t) if **t == *s)
}

/// At most this many attributes per measurement: the longest list above and two more.
type MeasurementAttrs = SmallVec<[KeyValue; 10]>;

/// The duration histograms. Cloned into the export handle: recording takes `&self`.
#[derive(Clone)]
pub(super) struct SpanInstruments {
    http_server: Histogram<f64>,
    http_client: Histogram<f64>,
    db_client: Histogram<f64>,
    rpc_server: Histogram<f64>,
    rpc_client: Histogram<f64>,
}

impl SpanInstruments {
    pub(super) fn new(meter: &Meter) -> SpanInstruments {
        let histogram = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build()
        };
        SpanInstruments {
            http_server: histogram("http.server.request.duration", "Duration of HTTP server requests."),
            http_client: histogram("http.client.request.duration", "Duration of HTTP client requests."),
            db_client: histogram("db.client.operation.duration", "Duration of database client operations."),
            rpc_server: histogram("rpc.server.call.duration", "Duration of RPCs served."),
            rpc_client: histogram("rpc.client.call.duration", "Duration of RPCs made."),
        }
    }

    /// One measurement per request span, whatever becomes of the span afterwards.
    pub(super) fn record(&self, span: &SpanRecord) {
        let Some(measure) = Measure::of(span) else { return };
        let attrs = attributes(span, measure);
        let seconds = span.end_unix_nano.saturating_sub(span.start_unix_nano) as f64 * 1e-9;
        let histogram = match measure {
            Measure::HttpServer => &self.http_server,
            Measure::HttpClient => &self.http_client,
            Measure::DbClient => &self.db_client,
            Measure::RpcServer => &self.rpc_server,
            Measure::RpcClient => &self.rpc_client,
        };
        histogram.record(seconds, &attrs);
    }
}

/// The measurement's attributes, taken from the span's.
pub(super) fn attributes(span: &SpanRecord, measure: Measure) -> MeasurementAttrs {
    let mut attrs = MeasurementAttrs::new();
    if let Some(AttrValue::Str(method)) = span.attr("http.request.method") {
        // The semantic conventions' rule: a method outside the standard set is `_OTHER`, so that
        // clients cannot mint new series.
        let known = STANDARD_METHODS.iter().find(|(m, _)| *m == &**method).map_or("_OTHER", |(m, _)| m);
        attrs.push(KeyValue::new("http.request.method", known));
    }
    for &key in measure.copied() {
        if let Some(v) = span.attr(key) {
            attrs.push(KeyValue::new(Key::from_static_str(key), value(v)));
        }
    }
    if let Some(error) = error_type(span, measure) {
        attrs.push(KeyValue::new("error.type", error));
    }
    if measure == Measure::DbClient
        && let Some(AttrValue::Int(code)) = span.attr("rpc.grpc.status_code")
    {
        attrs.push(KeyValue::new("db.response.status_code", code.to_string()));
    }
    attrs
}

/// `error.type` of a failed request: its status code when it has one (as the conventions say for
/// HTTP), else `_OTHER` (a reset stream, a connection closed before the response).
fn error_type(span: &SpanRecord, measure: Measure) -> Option<String> {
    if !matches!(span.status, SpanStatus::Error(_)) {
        return None;
    }
    let code_key = match measure {
        Measure::HttpServer | Measure::HttpClient => "http.response.status_code",
        Measure::DbClient | Measure::RpcServer | Measure::RpcClient => "rpc.grpc.status_code",
    };
    Some(match span.attr(code_key) {
        Some(AttrValue::Int(code)) if *code != 0 => code.to_string(),
        _ => "_OTHER".to_owned(),
    })
}

fn value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Int(i) => Value::I64(*i),
        AttrValue::Bool(b) => Value::Bool(*b),
        AttrValue::Str(AttrStr::Static(s)) => Value::String(StringValue::from(*s)),
        AttrValue::Str(AttrStr::Shared(s)) => Value::String(StringValue::from(s.clone())),
        AttrValue::Str(s) => Value::String(StringValue::from(s.to_string())),
    }
}

/// Why events were lost, as the stats line names them: the kernel's drop counters and the
/// records the agent could not parse.
pub(super) const LOST_EVENT_REASONS: [&str; 7] = [
    "ringbuf_full",
    "args_full",
    "sockets_full",
    "read_user_failed",
    "go_tls_no_socket",
    "go_tls_calls_full",
    "corrupt",
];

/// The agent's health, read from its counters when the metrics are collected: nothing is done
/// per event or per span for them.
pub(super) fn observe_health(
    meter: &Meter,
    health: Arc<Health>,
    made: Arc<AtomicU64>,
    stats: Arc<ExportStats>,
    queued: Option<Arc<AtomicUsize>>,
) {
    let h = health.clone();
    meter
        .u64_observable_counter("tracer.events")
        .with_unit("{event}")
        .with_description("Events read from the kernel's ring buffer.")
        .with_callback(move |o| o.observe(h.counters().events, &[]))
        .build();
    meter
        .u64_observable_counter("tracer.events.lost")
        .with_unit("{event}")
        .with_description("Events lost, by reason: dropped in the kernel, or unreadable.")
        .with_callback(move |o| {
            let lost = health.counters().lost_events;
            for (reason, n) in LOST_EVENT_REASONS.iter().zip(lost) {
                o.observe(n, &[KeyValue::new("reason", *reason)]);
            }
        })
        .build();
    meter
        .u64_observable_counter("tracer.spans")
        .with_unit("{span}")
        .with_description("Spans made, before any sampling or export.")
        .with_callback(move |o| o.observe(made.load(Relaxed), &[]))
        .build();
    let s = stats.clone();
    meter
        .u64_observable_counter("tracer.spans.exported")
        .with_unit("{span}")
        .with_description("Spans delivered: to the collector, or else to the local output.")
        .with_callback(move |o| o.observe(s.exported.load(Relaxed), &[]))
        .build();
    meter
        .u64_observable_counter("tracer.spans.dropped")
        .with_unit("{span}")
        .with_description("Spans not delivered, by reason.")
        .with_callback(move |o: &dyn AsyncInstrument<u64>| {
            for (reason, n) in [
                ("queue_full", &stats.dropped_queue_full),
                ("export_failed", &stats.dropped_export_failed),
                ("rejected_by_collector", &stats.rejected_by_collector),
            ] {
                o.observe(n.load(Relaxed), &[KeyValue::new("reason", reason)]);
            }
        })
        .build();
    meter
        .u64_observable_gauge("tracer.spans.buffered")
        .with_unit("{span}")
        .with_description("Spans waiting to be exported.")
        .with_callback(move |o| o.observe(queued.as_ref().map_or(0, |q| q.load(Relaxed)) as u64, &[]))
        .build();
}
