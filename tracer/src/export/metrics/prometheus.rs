//! The scrape page: what the SDK's reader collects, written in the Prometheus (OpenMetrics) text
//! format by prometheus-client, and `/healthz`, on a small hyper server. Names follow the
//! OpenTelemetry-to-Prometheus rules: dots become underscores, the unit `s` becomes `_seconds`,
//! counters end in `_total`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, header};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::{Semaphore, oneshot};

use super::{Health, SharedReader};

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Connections served at once: scrapers and liveness probes, a handful. More wait in the
/// listen queue, so a flood cannot take memory.
const MAX_CONNECTIONS: usize = 16;
/// A client has this long to send its request head: a stalled one cannot hold a connection.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct ScrapePage {
    registry: Registry,
    health: Arc<Health>,
}

impl ScrapePage {
    pub(super) fn new(reader: SharedReader, health: Arc<Health>) -> ScrapePage {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SdkCollector(reader)));
        ScrapePage { registry, health }
    }

    /// `/metrics` and `/healthz`; anything else is 404.
    pub(super) fn respond(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match path {
            "/metrics" => {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &self.registry) {
                    Ok(()) => reply(StatusCode::OK, CONTENT_TYPE, text),
                    Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot write the metrics\n"),
                }
            }
            "/healthz" if self.health.capturing() => plain(StatusCode::OK, "ok\n"),
            "/healthz" => plain(StatusCode::SERVICE_UNAVAILABLE, "not capturing\n"),
            _ => plain(StatusCode::NOT_FOUND, "not found: /metrics, /healthz\n"),
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", text.to_owned())
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

/// Serves until `stop`. Runs on the agent's runtime: a scrape's work (a collection, a few
/// hundred lines of text) is done between two reads of the ring buffer.
pub(super) async fn serve(listener: tokio::net::TcpListener, page: ScrapePage, mut stop: oneshot::Receiver<()>) {
    let page = Arc::new(page);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let stream = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of fds, most likely: wait rather than spin.
                    tracing::debug!("metrics listener: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let page = page.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let response = page.respond(req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!("metrics connection: {e}");
            }
            drop(slot);
        });
    }
}

/// Hands the SDK's collection to prometheus-client at each scrape.
#[derive(Debug)]
struct SdkCollector(SharedReader);

impl Collector for SdkCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Fmt {
        let mut collected = ResourceMetrics::default();
        if let Err(e) = self.0.collect(&mut collected) {
            tracing::debug!("collecting metrics for a scrape: {e}");
            return Ok(());
        }
        for metric in collected.scope_metrics().flat_map(|scope| scope.metrics()) {
            match metric.data() {
                AggregatedMetrics::F64(data) => encode_metric(&mut encoder, metric, data)?,
                AggregatedMetrics::U64(data) => encode_metric(&mut encoder, metric, data)?,
                AggregatedMetrics::I64(data) => encode_metric(&mut encoder, metric, data)?,
            }
        }
        Ok(())
    }
}

/// A value as prometheus-client writes it: u64 and f64 as they are, i64 (which its counters do
/// not take) as f64.
#[derive(Clone, Copy)]
enum Sample {
    U64(u64),
    F64(f64),
}

impl From<u64> for Sample {
    fn from(v: u64) -> Self {
        Sample::U64(v)
    }
}
impl From<f64> for Sample {
    fn from(v: f64) -> Self {
        Sample::F64(v)
    }
}
impl From<i64> for Sample {
    fn from(v: i64) -> Self {
        Sample::F64(v as f64)
    }
}

type Fmt = Result<(), std::fmt::Error>;

fn encode_metric<T: Copy + Into<Sample>>(
    encoder: &mut DescriptorEncoder,
    metric: &Metric,
    data: &MetricData<T>,
) -> Fmt {
    let name = prometheus_name(metric.name());
    let unit = match metric.unit() {
        "s" => Some(Unit::Seconds),
        "By" => Some(Unit::Bytes),
        // `{event}`, `{span}`: annotations, which the conversion rules drop.
        _ => None,
    };
    let kind = match data {
        MetricData::Histogram(_) => MetricType::Histogram,
        MetricData::Sum(sum) if sum.is_monotonic() => MetricType::Counter,
        MetricData::Sum(_) | MetricData::Gauge(_) => MetricType::Gauge,
        // The instruments use explicit buckets only.
        MetricData::ExponentialHistogram(_) => return Ok(()),
    };
    let mut family = encoder.encode_descriptor(&name, metric.description(), unit.as_ref(), kind)?;
    match data {
        MetricData::Histogram(h) => h.data_points().try_for_each(|point| {
            // The SDK counts the bucket above the last bound too: that is +Inf.
            let bounds = point.bounds().chain(std::iter::once(f64::INFINITY));
            let buckets: Vec<(f64, u64)> = bounds.zip(point.bucket_counts()).collect();
            let sum = match point.sum().into() {
                Sample::U64(v) => v as f64,
                Sample::F64(v) => v,
            };
            let labels = labels(point.attributes());
            family.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum, point.count(), &buckets, None)
        }),
        MetricData::Sum(sum) => {
            sum.data_points().try_for_each(|p| encode_sample(&mut family, kind, p.attributes(), p.value().into()))
        }
        MetricData::Gauge(gauge) => {
            gauge.data_points().try_for_each(|p| encode_sample(&mut family, kind, p.attributes(), p.value().into()))
        }
        MetricData::ExponentialHistogram(_) => Ok(()),
    }
}

fn encode_sample<'a>(
    family: &mut MetricEncoder,
    kind: MetricType,
    attributes: impl Iterator<Item = &'a KeyValue>,
    value: Sample,
) -> Fmt {
    let labels = labels(attributes);
    let mut sample = family.encode_family(&labels)?;
    match (kind, value) {
        (MetricType::Counter, Sample::U64(v)) => sample.encode_counter::<NoLabelSet, _, u64>(&v, None),
        (MetricType::Counter, Sample::F64(v)) => sample.encode_counter::<NoLabelSet, _, u64>(&v, None),
        (_, Sample::U64(v)) => sample.encode_gauge(&v),
        (_, Sample::F64(v)) => sample.encode_gauge(&v),
    }
}

/// An OpenTelemetry name as a Prometheus one: characters other than letters, digits, `_` and `:`
/// become `_`.
pub(super) fn prometheus_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == ':' { c } else { '_' }).collect()
}

/// A data point's attributes as labels, sorted by name: the SDK keeps a series' first order,
/// which differs between series.
fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> =
        attributes.map(|kv| (prometheus_name(kv.key.as_str()).replace(':', "_"), kv.value.to_string())).collect();
    labels.sort_unstable();
    labels
}
