//! The OTLP push: every interval, what the reader collects goes to the collector through
//! opentelemetry-otlp's metrics exporter, as a task on the agent's runtime, which capture never
//! waits for. The exporter sends over the spans' own transports (`export::transport`: TLS, mTLS,
//! headers), so the metrics reach the same collectors the same way.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Compression, MetricExporter, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use tokio::sync::oneshot;
use tonic::metadata::MetadataMap;

use super::SharedReader;
use crate::export::{OtlpProtocol, OtlpSettings, transport};

/// The last push at shutdown gets at least this long, even when flushing the spans took the
/// whole shutdown deadline (a collector that is down).
pub const FINAL_PUSH_MIN: Duration = Duration::from_secs(1);

pub(super) struct Push {
    exporter: MetricExporter,
    reader: SharedReader,
    url: String,
    interval: Duration,
    timeout: Duration,
    /// The last push failed: the next failure is not logged as a warning again.
    failing: bool,
}

impl Push {
    pub(super) fn new(settings: &OtlpSettings, reader: SharedReader, interval: Duration) -> anyhow::Result<Push> {
        let url = settings.metrics_endpoint.clone().ok_or_else(|| anyhow!("no OTLP metrics endpoint"))?;
        let compression = settings.gzip.then_some(Compression::Gzip);
        let exporter = match settings.protocol {
            OtlpProtocol::Grpc => {
                // The settings' headers go last, over any the exporter read from the environment
                // itself: the flags' values win, as for the spans.
                let metadata = transport::grpc_metadata(settings)?;
                let builder = MetricExporter::builder()
                    .with_tonic()
                    .with_channel(transport::grpc_channel(settings, &url)?)
                    .with_interceptor(move |mut request: tonic::Request<()>| {
                        set_metadata(request.metadata_mut(), &metadata);
                        Ok(request)
                    })
                    .with_timeout(settings.timeout);
                match compression {
                    Some(c) => builder.with_compression(c),
                    None => builder,
                }
                .build()
            }
            OtlpProtocol::Http => {
                let client =
                    SettingsHeaders { client: transport::http_client(settings)?, headers: settings.headers.clone() };
                let builder = MetricExporter::builder()
                    .with_http()
                    .with_http_client(client)
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(&url)
                    .with_timeout(settings.timeout);
                match compression {
                    Some(c) => builder.with_compression(c),
                    None => builder,
                }
                .build()
            }
        }
        .map_err(|e| anyhow!("cannot set up the OTLP metrics export to {url}: {e}"))?;
        Ok(Push { exporter, reader, url, interval, timeout: settings.timeout, failing: false })
    }

    /// Pushes every interval; when `stop` says (with a deadline), pushes once more and ends.
    pub(super) async fn run(mut self, mut stop: oneshot::Receiver<Instant>) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.push(self.timeout).await,
                until = &mut stop => {
                    // A dropped sender (no explicit shutdown) still gets one export's worth of time.
                    let until = until.unwrap_or_else(|_| Instant::now() + self.timeout);
                    self.push(until.saturating_duration_since(Instant::now()).max(FINAL_PUSH_MIN)).await;
                    break;
                }
            }
        }
        let _ = self.exporter.shutdown();
    }

    async fn push(&mut self, limit: Duration) {
        let mut metrics = ResourceMetrics::default();
        if let Err(e) = self.reader.collect(&mut metrics) {
            tracing::debug!("collecting metrics: {e}");
            return;
        }
        let result = match tokio::time::timeout(limit, self.exporter.export(&metrics)).await {
            Ok(sent) => sent.map_err(|e| e.to_string()),
            Err(_) => Err(format!("timed out after {limit:?}")),
        };
        match result {
            Ok(()) if self.failing => {
                tracing::info!("metrics export to {} works again", self.url);
                self.failing = false;
            }
            Ok(()) => {}
            // One warning per outage: the interval already bounds how often this can happen.
            Err(e) if !self.failing => {
                tracing::warn!("metrics export to {} failed: {e}", self.url);
                self.failing = true;
            }
            Err(e) => tracing::debug!("metrics export to {} failed again: {e}", self.url),
        }
    }
}

/// Each of `settings`' entries replaces what the request has under its name.
fn set_metadata(request: &mut MetadataMap, settings: &MetadataMap) {
    for key in settings.keys() {
        if let tonic::metadata::KeyRef::Ascii(key) = key {
            request.remove(key.clone());
        }
    }
    for entry in settings.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(key, value) = entry {
            request.append(key.clone(), value.clone());
        }
    }
}

/// The transport's reqwest client, which sends the settings' headers only where a request has
/// none of that name: opentelemetry-otlp adds those it reads from the environment itself, so they
/// are set again here, and the flags' values win, as for the spans.
#[derive(Debug)]
struct SettingsHeaders {
    client: reqwest::Client,
    headers: Vec<(String, String)>,
}

impl HttpClient for SettingsHeaders {
    fn send_bytes<'a, 'b>(
        &'a self,
        mut request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            for (name, value) in &self.headers {
                let name = hyper::header::HeaderName::try_from(name.as_str())?;
                let mut value = hyper::header::HeaderValue::try_from(value.as_str())?;
                value.set_sensitive(true);
                request.headers_mut().insert(name, value);
            }
            self.client.send_bytes(request).await
        })
    }
}
