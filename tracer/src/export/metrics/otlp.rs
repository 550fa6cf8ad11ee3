//! The OTLP push: every interval, what the reader collects goes to the collector through
//! opentelemetry-otlp's metrics exporter, as a task on the agent's runtime, which capture never
//! waits for.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use opentelemetry_otlp::{Compression, MetricExporter, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use tokio::sync::oneshot;

use super::{OtlpMetricsTarget, SharedReader};
use crate::export::OtlpProtocol;

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
    pub(super) fn new(target: &OtlpMetricsTarget, reader: SharedReader, interval: Duration) -> anyhow::Result<Push> {
        let url = target.endpoint.clone();
        let setup = |e: &dyn std::fmt::Display| anyhow!("cannot set up the OTLP metrics export to {url}: {e}");
        let exporter = match target.protocol {
            OtlpProtocol::Grpc => {
                let builder = MetricExporter::builder().with_tonic().with_endpoint(&url).with_timeout(target.timeout);
                if target.gzip { builder.with_compression(Compression::Gzip) } else { builder }.build()
            }
            OtlpProtocol::Http => {
                let client = reqwest::Client::builder().timeout(target.timeout).build().map_err(|e| setup(&e))?;
                let builder = MetricExporter::builder()
                    .with_http()
                    .with_http_client(client)
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(&url)
                    .with_timeout(target.timeout);
                if target.gzip { builder.with_compression(Compression::Gzip) } else { builder }.build()
            }
        }
        .map_err(|e| setup(&e))?;
        Ok(Push { exporter, reader, url, interval, timeout: target.timeout, failing: false })
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

/// The OTLP/HTTP metrics URL of `--otlp-endpoint`, by the rule its spans follow: `/v1/metrics` is
/// added when it has no path.
pub fn http_metrics_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest);
    match rest.find(['/', '?', '#']).map(|i| &rest[i..]) {
        None | Some("/") => format!("{}/v1/metrics", endpoint.trim_end_matches('/')),
        Some(_) => endpoint.to_owned(),
    }
}
