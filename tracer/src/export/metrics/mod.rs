//! Metrics: the request rate, errors and duration of what the spans describe (RED), and the agent's
//! own health, aggregated by the OpenTelemetry SDK and read by one reader for both outlets: an
//! OTLP push every interval, and a Prometheus scrape page.
//!
//! Spans keep their one-pass encoder (see `otlp/encode.rs`); the SDK is used where it is made for
//! the work: aggregation into histograms and sums, and their export. Each span is measured when
//! the agent submits it for export, before any queue or sampling, so that the metrics count every
//! request even when a span is dropped later.

mod instruments;
mod otlp;
mod prometheus;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality};
use opentelemetry_sdk::resource::Resource;
use tokio::sync::oneshot;

use instruments::LOST_EVENT_REASONS;
pub(super) use otlp::FINAL_PUSH_MIN;

use super::{ExportStats, OtlpSettings};
use crate::span::SpanRecord;

/// The default period of the OTLP metrics export, as the specification's.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// The metrics' `service.name` unless the environment gives one.
const SERVICE_NAME: &str = "kube-apiserver-tracer";

#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// Push to `metrics_endpoint` every `interval`, with these settings (TLS, headers, timeout).
    pub otlp: Option<OtlpSettings>,
    pub interval: Duration,
    /// Serve `/metrics` (Prometheus) and `/healthz` here.
    pub listen: Option<String>,
    pub health: Arc<Health>,
}

/// What the agent's main loop reports about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentCounters {
    /// Ring-buffer records read.
    pub events: u64,
    /// By reason: ringbuf_full, args_full, sockets_full, read_user_failed, go_tls_no_socket,
    /// go_tls_calls_full, corrupt (records the agent could not parse).
    pub lost_events: [u64; LOST_EVENT_REASONS.len()],
}

/// Shared by the main loop, which updates it, and the metrics, which read it.
#[derive(Debug, Default)]
pub struct Health {
    capturing: AtomicBool,
    /// When the main loop last reported (`set_capturing`, `update`): a loop that stopped turning
    /// while the flag still says capturing is not healthy either.
    last_beat: Mutex<Option<Instant>>,
    counters: Mutex<AgentCounters>,
}

/// How long the main loop may go without reporting before `/healthz` fails: many housekeeping
/// periods, so that a busy moment is not taken for a hang.
pub const HEALTH_STALE_AFTER: Duration = Duration::from_secs(10);

impl Health {
    /// Whether the capture loop runs: `/healthz` answers 200 only while it does.
    pub fn set_capturing(&self, on: bool) {
        self.capturing.store(on, Ordering::Release);
        self.beat();
    }

    pub fn capturing(&self) -> bool {
        self.capturing_at(Instant::now())
    }

    fn capturing_at(&self, now: Instant) -> bool {
        let last = *self.last_beat.lock().unwrap_or_else(|e| e.into_inner());
        self.capturing.load(Ordering::Acquire)
            && last.is_some_and(|t| now.saturating_duration_since(t) < HEALTH_STALE_AFTER)
    }

    /// The main loop's counters, at each housekeeping tick.
    pub fn update(&self, counters: AgentCounters) {
        *self.counters.lock().unwrap_or_else(|e| e.into_inner()) = counters;
        self.beat();
    }

    fn beat(&self) {
        *self.last_beat.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    fn counters(&self) -> AgentCounters {
        *self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The OTLP export interval: `--metrics-interval` (seconds), else `OTEL_METRIC_EXPORT_INTERVAL`
/// (milliseconds, as the specification says), else [`DEFAULT_INTERVAL`].
pub fn interval(flag_seconds: Option<u64>, env_millis: Option<String>) -> anyhow::Result<Duration> {
    if let Some(s) = flag_seconds {
        return Ok(Duration::from_secs(s));
    }
    match env_millis {
        None => Ok(DEFAULT_INTERVAL),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(ms @ 1..) => Ok(Duration::from_millis(ms)),
            _ => anyhow::bail!("OTEL_METRIC_EXPORT_INTERVAL={v:?} is not a number of milliseconds above 0"),
        },
    }
}

/// Measures spans; held by the export handle.
#[derive(Clone)]
pub(super) struct SpanMeter {
    instruments: instruments::SpanInstruments,
    /// Every span measured: `tracer.spans`.
    made: Arc<AtomicU64>,
}

impl SpanMeter {
    pub(super) fn record_all(&self, spans: &[SpanRecord]) {
        self.made.fetch_add(spans.len() as u64, Ordering::Relaxed);
        spans.iter().for_each(|span| self.instruments.record(span));
    }
}

/// The running metrics: the SDK's provider, the OTLP push task and the scrape server.
pub(super) struct Metrics {
    provider: SdkMeterProvider,
    push: Option<(oneshot::Sender<Instant>, tokio::task::JoinHandle<()>)>,
    server: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

/// Sets the instruments up and starts the outlets, on the current tokio runtime. `queued`: the
/// spans waiting in the OTLP queue, if there is one.
pub(super) fn start(
    cfg: MetricsConfig,
    resource_attributes: &[(String, String)],
    stats: Arc<ExportStats>,
    queued: Option<Arc<AtomicUsize>>,
) -> anyhow::Result<(SpanMeter, Metrics)> {
    // Cumulative: what a Prometheus scrape must show, and the OTLP exporters' default.
    let reader = SharedReader(Arc::new(ManualReader::builder().with_temporality(Temporality::Cumulative).build()));
    let provider = SdkMeterProvider::builder()
        .with_resource(resource(resource_attributes, std::env::var("OTEL_SERVICE_NAME").ok()))
        .with_reader(reader.clone())
        .build();
    let meter = provider.meter("tracer");
    let spans = SpanMeter { instruments: instruments::SpanInstruments::new(&meter), made: Arc::default() };
    instruments::observe_health(&meter, cfg.health.clone(), spans.made.clone(), stats, queued);

    let server = match &cfg.listen {
        Some(addr) => {
            let listener = bind(addr)?;
            let (stop, stopped) = oneshot::channel();
            let page = prometheus::ScrapePage::new(reader.clone(), cfg.health.clone());
            tracing::info!("serving metrics on http://{}/metrics and health on /healthz", local_addr(&listener));
            Some((stop, tokio::spawn(prometheus::serve(listener, page, stopped))))
        }
        None => None,
    };
    let push = match &cfg.otlp {
        Some(settings) => {
            let push = otlp::Push::new(settings, reader, cfg.interval)?;
            let (stop, stopped) = oneshot::channel();
            Some((stop, tokio::spawn(push.run(stopped))))
        }
        None => None,
    };
    Ok((spans, Metrics { provider, push, server }))
}

/// `service.name` is the agent's (the metrics describe every traced process at once; their spans
/// carry each one's name) unless `OTEL_RESOURCE_ATTRIBUTES` (`attributes`, as the agent resolved
/// it for the spans too) or `OTEL_SERVICE_NAME` (which wins, as the specification says) names one.
/// `host.name` tells the nodes of a DaemonSet apart.
fn resource(attributes: &[(String, String)], service_name: Option<String>) -> Resource {
    let resource = Resource::builder_empty()
        .with_service_name(SERVICE_NAME)
        .with_attribute(KeyValue::new("host.name", crate::procfs::host_name()))
        .with_attributes(attributes.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())));
    match service_name.filter(|n| !n.trim().is_empty()) {
        Some(name) => resource.with_service_name(name),
        None => resource,
    }
    .build()
}

fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr} for --metrics-addr"))?;
    listener.set_nonblocking(true).context("setting the metrics listener non-blocking")?;
    tokio::net::TcpListener::from_std(listener).context("registering the metrics listener")
}

fn local_addr(listener: &tokio::net::TcpListener) -> String {
    listener.local_addr().map_or_else(|_| "?".to_owned(), |a: SocketAddr| a.to_string())
}

impl Metrics {
    /// A last push (bounded by `until`), then the scrape server and the SDK stop.
    pub(super) async fn shutdown(mut self, until: Instant) {
        if let Some((stop, mut task)) = self.push.take() {
            let _ = stop.send(until);
            let limit = tokio::time::Instant::from_std(until) + Duration::from_millis(200);
            if tokio::time::timeout_at(limit, &mut task).await.is_err() {
                task.abort();
            }
        }
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
        let _ = self.provider.shutdown();
    }
}

/// One reader for both outlets, so that the scrape page and the OTLP push show the same sums.
#[derive(Clone, Debug)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}
