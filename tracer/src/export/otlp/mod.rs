//! OTLP export: batches spans, writes each batch as one protobuf request (see `encode`) and
//! sends it over gRPC (tonic) or OTLP/HTTP (reqwest).
//!
//! One connection serves every traced process: each process is a `ResourceSpans` of the request.

mod encode;
mod response;
pub mod settings;
pub mod transport;

pub use encode::export_request;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::{Buf, BufMut, Bytes};
use tokio::sync::oneshot;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

use super::{ExportConfig, ExportStats, OtlpProtocol, SpanInbox};
use crate::span::SpanRecord;
use settings::OtlpSettings;

/// The OTLP/gRPC method every batch is sent to.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Pauses before the retries of a batch that failed in a way that may pass (a collector restarting
/// or shedding load), as the OTLP specification and the OpenTelemetry SDK do. All of them fit in
/// the export timeout, which bounds the whole.
const RETRY_DELAYS: [Duration; 3] =
    [Duration::from_millis(100), Duration::from_millis(200), Duration::from_millis(400)];

/// At most one failure warning per this interval, so a dead collector cannot flood the log.
const WARN_EVERY: Duration = Duration::from_secs(10);

pub(super) struct OtlpSink {
    transport: Transport,
    url: String,
    max_batch: usize,
    batch_timeout: Duration,
    export_timeout: Duration,
    stats: Arc<ExportStats>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, added to each process's resource.
    resource: Vec<(String, String)>,
    log: FailureLog,
    /// Size of the last request, to size the next one's buffer.
    last_request_len: usize,
}

/// tonic compresses gRPC messages itself when asked (set up in `new`); OTLP/HTTP bodies are
/// compressed here. The headers travel as gRPC metadata on each request; the HTTP client adds them
/// itself.
enum Transport {
    Grpc { grpc: tonic::client::Grpc<tonic::transport::Channel>, metadata: tonic::metadata::MetadataMap },
    Http { client: reqwest::Client, gzip: bool },
}

impl OtlpSink {
    pub(super) fn new(
        endpoint: &str,
        protocol: OtlpProtocol,
        cfg: &ExportConfig,
        stats: Arc<ExportStats>,
    ) -> anyhow::Result<Self> {
        let url = endpoint_url(endpoint, protocol)?;
        let settings = OtlpSettings {
            traces_endpoint: Some(url.clone()),
            metrics_endpoint: None,
            protocol,
            headers: cfg.otlp_headers.clone(),
            timeout: cfg.export_timeout,
            gzip: cfg.otlp_gzip,
            tls: cfg.otlp_tls.clone(),
        };
        let transport = match protocol {
            OtlpProtocol::Grpc => {
                let mut grpc = tonic::client::Grpc::new(transport::grpc_channel(&settings, &url)?);
                if cfg.otlp_gzip {
                    grpc = grpc.send_compressed(CompressionEncoding::Gzip);
                }
                Transport::Grpc { grpc, metadata: transport::grpc_metadata(&settings)? }
            }
            OtlpProtocol::Http => Transport::Http { client: transport::http_client(&settings)?, gzip: cfg.otlp_gzip },
        };
        Ok(OtlpSink {
            transport,
            url,
            max_batch: cfg.max_batch,
            batch_timeout: cfg.batch_timeout,
            export_timeout: cfg.export_timeout,
            stats,
            resource: cfg.resource_attributes.clone(),
            log: FailureLog::default(),
            last_request_len: 0,
        })
    }

    /// Export loop. `stop` carries the shutdown deadline; after it, queued spans are flushed
    /// (within the deadline) and the task ends.
    pub(super) async fn run(mut self, mut inbox: SpanInbox, mut stop: oneshot::Receiver<Instant>) {
        let mut deadline: Option<Instant> = None;
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            if batch.is_empty() {
                tokio::select! {
                    n = inbox.recv_into(&mut batch, self.max_batch) => if n == 0 { break },
                    r = &mut stop, if deadline.is_none() => {
                        deadline = Some(self.stop_deadline(r));
                        inbox.close(); // `recv_into` now hands out what is queued, then returns 0.
                        continue;
                    }
                }
            }
            // Fill the batch until it is full or has waited `batch_timeout`; when stopping, take
            // only what is already queued.
            let fill_until = tokio::time::Instant::now() + self.batch_timeout;
            while batch.len() < self.max_batch && deadline.is_none() {
                let room = self.max_batch - batch.len();
                tokio::select! {
                    n = inbox.recv_into(&mut batch, room) => if n == 0 { break },
                    () = tokio::time::sleep_until(fill_until) => break,
                    r = &mut stop => {
                        deadline = Some(self.stop_deadline(r));
                        inbox.close();
                    }
                }
            }
            while let Some(room) = self.max_batch.checked_sub(batch.len()).filter(|&r| r > 0)
                && inbox.try_recv_into(&mut batch, room) > 0
            {}
            self.export(&batch, deadline).await;
            crate::span::recycle(batch.drain(..));
        }
    }

    fn stop_deadline(&self, r: Result<Instant, oneshot::error::RecvError>) -> Instant {
        // A dropped `Exporter` (no explicit shutdown) still gets one export's worth of time.
        r.unwrap_or_else(|_| Instant::now() + self.export_timeout)
    }

    /// Exports one batch as one request.
    async fn export(&mut self, batch: &[SpanRecord], deadline: Option<Instant>) {
        let n = batch.len();
        let limit = match deadline {
            Some(d) => self.export_timeout.min(d.saturating_duration_since(Instant::now())),
            None => self.export_timeout,
        };
        let result = if limit.is_zero() {
            Err("shutdown deadline reached before export".to_owned())
        } else {
            match self.request_body(batch) {
                Ok(body) => match tokio::time::timeout(limit, self.send(body)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("timed out after {limit:?}")),
                },
                Err(e) => Err(format!("compressing the request: {e}")),
            }
        };
        match result {
            Ok(answer) => {
                self.log.success(&self.url);
                let rejected = match response::partial_success(&answer, n) {
                    Ok(None) => 0,
                    Ok(Some(p)) => {
                        self.log.partial_success(&self.url, &p, n);
                        p.rejected as usize
                    }
                    // The collector took the request; only its details are unreadable.
                    Err(e) => {
                        tracing::debug!("unreadable OTLP export answer from {}: {e}", self.url);
                        0
                    }
                };
                ExportStats::add(&self.stats.exported, n - rejected);
                ExportStats::add(&self.stats.rejected_by_collector, rejected);
            }
            Err(e) => {
                ExportStats::add(&self.stats.failed_batches, 1);
                ExportStats::add(&self.stats.dropped_export_failed, n);
                self.log.failure(&self.url, &e, n);
            }
        }
    }

    /// The batch as an encoded `ExportTraceServiceRequest`, gzipped for OTLP/HTTP when asked.
    fn request_body(&mut self, batch: &[SpanRecord]) -> std::io::Result<Bytes> {
        let mut body = Vec::with_capacity(self.last_request_len + self.last_request_len / 8);
        let start = encode::export_request_with_resource(batch, &self.resource, &mut body);
        self.last_request_len = body.len();
        if matches!(self.transport, Transport::Http { gzip: true, .. }) {
            return Ok(Bytes::from(gzip(&body[start..])?));
        }
        // The bytes before `start` were room for the headers: a slice of the same buffer.
        Ok(Bytes::from(body).slice(start..))
    }

    /// Sends one encoded `ExportTraceServiceRequest`, retrying failures that may pass. Returns the
    /// collector's encoded `ExportTraceServiceResponse`.
    async fn send(&mut self, body: Bytes) -> Result<Bytes, String> {
        let mut delays = RETRY_DELAYS.iter();
        loop {
            let (error, retryable) = match self.send_once(body.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            match delays.next() {
                // A little jitter, so that the agents of several nodes do not retry in step.
                Some(d) if retryable => tokio::time::sleep(*d + Duration::from_millis(rand::random_range(0..50))).await,
                _ => return Err(error),
            }
        }
    }

    /// One attempt; on failure, what went wrong and whether a retry may succeed.
    async fn send_once(&mut self, body: Bytes) -> Result<Bytes, (String, bool)> {
        match &mut self.transport {
            Transport::Grpc { grpc, metadata } => {
                grpc.ready().await.map_err(|e| (format!("connecting: {e}"), true))?;
                let path = PathAndQuery::from_static(GRPC_EXPORT);
                let request = tonic::Request::from_parts(metadata.clone(), tonic::Extensions::default(), body);
                match grpc.unary(request, path, RawCodec).await {
                    Ok(answer) => Ok(answer.into_inner()),
                    Err(s) => Err((format!("gRPC status {:?}: {}", s.code(), s.message()), grpc_retryable(s.code()))),
                }
            }
            Transport::Http { client, gzip } => {
                let mut req = client.post(&self.url).header("content-type", "application/x-protobuf");
                if *gzip {
                    req = req.header("content-encoding", "gzip");
                }
                let resp =
                    req.body(body).send().await.map_err(|e| (format!("{e}"), e.is_connect() || e.is_timeout()))?;
                let status = resp.status();
                // Read the (small) answer, also so that the connection can be reused. A body cut
                // short reads as no answer: the status already says the request was taken.
                let answer = resp.bytes().await.unwrap_or_default();
                match status.as_u16() {
                    200..=299 => Ok(answer),
                    code => Err((format!("HTTP {status}"), matches!(code, 429 | 502 | 503 | 504))),
                }
            }
        }
    }
}

/// `body` compressed with gzip, at the default level.
fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::default());
    enc.write_all(body)?;
    enc.finish()
}

/// The gRPC codes after which OTLP/gRPC allows a retry (RESOURCE_EXHAUSTED only with a retry
/// delay from the server, which this exporter does not read).
fn grpc_retryable(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// gRPC codec for a request already encoded by [`encode`]; the response (an encoded
/// `ExportTraceServiceResponse`) is returned as is, for [`response`] to read.
#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Rate-limited export failure logging, with a single "recovered" line after a warning; and
/// rate-limited warnings of spans the collector rejected.
#[derive(Default)]
struct FailureLog {
    last_warn: Option<Instant>,
    /// Failed batches not mentioned in a warning yet.
    unreported: u64,
    /// A warning was logged and no recovery line since.
    warned: bool,
    last_partial_warn: Option<Instant>,
    /// Spans rejected since the last warning about rejections, not mentioned in one yet.
    unreported_rejected: u64,
}

impl FailureLog {
    fn failure(&mut self, url: &str, err: &str, spans: usize) {
        self.unreported += 1;
        if self.last_warn.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        let earlier = match self.unreported - 1 {
            0 => String::new(),
            n => format!(" ({n} more batches failed since the last warning)"),
        };
        tracing::warn!(
            "OTLP export to {url} failed, {spans} spans dropped{earlier}; next batches will be tried: {err}"
        );
        self.last_warn = Some(Instant::now());
        self.unreported = 0;
        self.warned = true;
    }

    /// The collector took a batch of `spans` but rejected `p.rejected` of them, or warned.
    fn partial_success(&mut self, url: &str, p: &response::PartialSuccess, spans: usize) {
        self.unreported_rejected += p.rejected;
        if self.last_partial_warn.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        let earlier = match self.unreported_rejected - p.rejected {
            0 => String::new(),
            n => format!(" ({n} more spans rejected since the last warning)"),
        };
        tracing::warn!("OTLP collector at {url} rejected {} of {spans} spans{earlier}: {:?}", p.rejected, p.message);
        self.last_partial_warn = Some(Instant::now());
        self.unreported_rejected = 0;
    }

    fn success(&mut self, url: &str) {
        if self.warned {
            tracing::info!("OTLP export to {url} works again");
            self.warned = false;
        }
    }
}

/// Checks the endpoint and returns the URL to give the exporter. For OTLP/HTTP a URL without a path
/// gets the standard `/v1/traces`; gRPC URLs are used as given.
pub(super) fn endpoint_url(endpoint: &str, protocol: OtlpProtocol) -> anyhow::Result<String> {
    let endpoint = endpoint.trim();
    let example = match protocol {
        OtlpProtocol::Grpc => "http://localhost:4317",
        OtlpProtocol::Http => "http://localhost:4318",
    };
    let bad = |why: &str| anyhow!("invalid OTLP endpoint {endpoint:?}: {why} (expected e.g. {example})");
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return Err(bad("missing http:// or https:// scheme"));
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(bad("scheme must be http or https"));
    }
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '[' in IPv6 address"))?;
            (addr, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let host_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if host.is_empty() || !host.chars().all(host_ok) {
        return Err(bad("missing or invalid host"));
    }
    if let Some(p) = port
        && !matches!(p.parse::<u16>(), Ok(1..))
    {
        return Err(bad("invalid port"));
    }
    if path.chars().any(char::is_whitespace) {
        return Err(bad("whitespace in path"));
    }
    Ok(match protocol {
        OtlpProtocol::Http if path.is_empty() || path == "/" => {
            format!("{scheme}://{authority}/v1/traces")
        }
        _ => endpoint.to_owned(),
    })
}

#[cfg(test)]
mod tests;
