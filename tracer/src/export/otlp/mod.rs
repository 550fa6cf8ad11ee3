//! OTLP export: batches spans, writes each batch as one protobuf request (see `encode`) and
//! sends it over gRPC (tonic) or OTLP/HTTP (reqwest).
//!
//! One connection serves every traced process: each process is a `ResourceSpans` of the request.
//!
//! Two loops share the export task: the batcher fills batches from the span queue and encodes
//! them into a retry buffer ([`retry_buffer`]); the sender delivers the buffer's batches one at a
//! time, oldest first, and puts a batch back when the collector could not take it, to try again
//! after a pause. So a collector that is down or slow holds up neither the span queue nor
//! capture: its batches wait in the buffer, bounded by bytes, until it is back.

mod encode;
mod response;
mod retry_buffer;
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
use retry_buffer::{Next, Outbox, PendingBatch};
use settings::OtlpSettings;

/// The OTLP/gRPC method every batch is sent to.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Pause before the first retry after a failure that may pass (a collector restarting or
/// shedding load); it doubles with each failure in a row, up to [`MAX_BACKOFF`], as the OTLP
/// specification asks.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest pause of our own between attempts: how late, at most, export notices that the
/// collector is back.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The longest pause a collector may ask for (gRPC `RetryInfo`, HTTP `Retry-After`).
const MAX_ASKED_DELAY: Duration = Duration::from_secs(30);

/// Kept back from the shutdown deadline: the time to count what is left and end the export task,
/// which the deadline bounds, on a busy machine.
const SHUTDOWN_RESERVE: Duration = Duration::from_millis(250);

/// At most one failure warning per this interval, so a dead collector cannot flood the log.
const WARN_EVERY: Duration = Duration::from_secs(10);

pub(super) struct OtlpSink {
    transport: Transport,
    url: String,
    max_batch: usize,
    batch_timeout: Duration,
    export_timeout: Duration,
    buffer_bytes: usize,
    stats: Arc<ExportStats>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, added to each process's resource.
    resource: Vec<(String, String)>,
    log: FailureLog,
}

/// tonic compresses gRPC messages itself when asked (set up in `new`); OTLP/HTTP bodies are
/// compressed here. The headers travel as gRPC metadata on each request; the HTTP client adds them
/// itself.
enum Transport {
    Grpc { grpc: tonic::client::Grpc<tonic::transport::Channel>, metadata: Box<tonic::metadata::MetadataMap> },
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
                Transport::Grpc { grpc, metadata: Box::new(transport::grpc_metadata(&settings)?) }
            }
            OtlpProtocol::Http => Transport::Http { client: transport::http_client(&settings)?, gzip: cfg.otlp_gzip },
        };
        Ok(OtlpSink {
            transport,
            url,
            max_batch: cfg.max_batch,
            batch_timeout: cfg.batch_timeout,
            export_timeout: cfg.export_timeout,
            buffer_bytes: cfg.buffer_bytes,
            stats,
            resource: cfg.resource_attributes.clone(),
            log: FailureLog::default(),
        })
    }

    /// Export loop: the batcher and the sender (see the module's comment), until both are done.
    /// `stop` carries the shutdown deadline. Then the queued spans are batched, and the sender
    /// goes on until the buffer is empty, the deadline passes, or the collector has failed for
    /// `export_timeout` since shutdown began or its last success; what is left is counted as
    /// dropped.
    pub(super) async fn run(mut self, inbox: SpanInbox, stop: oneshot::Receiver<Instant>) {
        let outbox = Outbox::new(self.buffer_bytes, self.stats.clone());
        let batcher = Batcher {
            max_batch: self.max_batch,
            batch_timeout: self.batch_timeout,
            export_timeout: self.export_timeout,
            gzip: matches!(self.transport, Transport::Http { gzip: true, .. }),
            last_request_len: 0,
            resource: std::mem::take(&mut self.resource),
            outbox: &outbox,
        };
        tokio::join!(batcher.run(inbox, stop), self.deliver(&outbox));
    }

    /// The sender: delivers the outbox's batches oldest first, pausing after failures that may
    /// pass, until the batcher is done and the outbox empty.
    async fn deliver(&mut self, outbox: &Outbox) {
        let mut backoff = Backoff::default();
        // Once shutdown began: when to stop trying a collector that keeps failing.
        let mut give_up_at: Option<Instant> = None;
        loop {
            let stop_at = outbox.stop_at();
            if let Some(until) = stop_at
                && give_up_at.is_none()
            {
                give_up_at = Some(self.give_up_time(until));
            }
            let mut batch = match outbox.next() {
                Next::Batch(b) => b,
                Next::Done => return,
                Next::Wait => {
                    tokio::select! {
                        () = outbox.added.notified() => {}
                        () = outbox.stopping.notified(), if give_up_at.is_none() => {}
                    }
                    continue;
                }
            };
            let limit = match give_up_at {
                Some(t) => self.export_timeout.min(t.saturating_duration_since(Instant::now())),
                None => self.export_timeout,
            };
            if limit.is_zero() {
                self.give_up(outbox, batch);
                continue;
            }
            let result = match tokio::time::timeout(limit, self.send_once(batch.body.clone())).await {
                Ok(r) => r,
                Err(_) => Err(Failure::may_pass(format!("timed out after {limit:?}"))),
            };
            match result {
                Ok(answer) => {
                    self.delivered(&batch, &answer);
                    backoff.reset();
                    if let Some(until) = stop_at {
                        give_up_at = Some(self.give_up_time(until));
                    }
                }
                Err(f) if !f.may_pass => {
                    ExportStats::add(&self.stats.failed_batches, 1);
                    ExportStats::add(&self.stats.rejected_by_collector, batch.spans);
                    self.log.failure(&self.url, &f.message, batch.spans, "refused (not to be retried)");
                }
                Err(f) => {
                    ExportStats::add(&self.stats.export_retries, 1);
                    self.log.failure(&self.url, &f.message, batch.spans, "kept for a retry");
                    batch.failed_attempts += 1;
                    outbox.requeue(batch);
                    let mut resume = Instant::now() + backoff.next(f.retry_after);
                    if let Some(t) = give_up_at {
                        resume = resume.min(t);
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(resume.into()) => {}
                        // Shutdown: try again now, within the shutdown's bounds.
                        () = outbox.stopping.notified(), if give_up_at.is_none() => {}
                    }
                }
            }
        }
    }

    /// When export stops trying, at shutdown: after `export_timeout` of failures, and shortly
    /// before the shutdown deadline `until` at the latest.
    fn give_up_time(&self, until: Instant) -> Instant {
        let last = until.checked_sub(SHUTDOWN_RESERVE).unwrap_or(until);
        last.min(Instant::now() + self.export_timeout)
    }

    /// The collector took `batch`: counts its spans, rejected ones apart.
    fn delivered(&mut self, batch: &PendingBatch, answer: &[u8]) {
        self.log.success(&self.url);
        let n = batch.spans;
        let rejected = match response::partial_success(answer, n) {
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
        if batch.failed_attempts > 0 {
            ExportStats::add(&self.stats.exported_after_retry, n - rejected);
        }
        ExportStats::add(&self.stats.rejected_by_collector, rejected);
    }

    /// Shutdown's time is up: `batch` and everything still buffered are dropped, and counted.
    fn give_up(&mut self, outbox: &Outbox, batch: PendingBatch) {
        let mut dropped = outbox.clear();
        dropped.batches += 1;
        dropped.spans += batch.spans;
        ExportStats::add(&self.stats.failed_batches, dropped.batches);
        ExportStats::add(&self.stats.dropped_export_failed, dropped.spans);
        tracing::warn!(
            "OTLP export to {} stopped with {} spans ({} batches) the collector had not taken: dropped",
            self.url,
            dropped.spans,
            dropped.batches
        );
    }

    /// One attempt: the collector's encoded `ExportTraceServiceResponse`, or what went wrong and
    /// whether a retry may succeed.
    async fn send_once(&mut self, body: Bytes) -> Result<Bytes, Failure> {
        match &mut self.transport {
            Transport::Grpc { grpc, metadata } => {
                grpc.ready().await.map_err(|e| Failure::may_pass(format!("connecting: {e}")))?;
                let path = PathAndQuery::from_static(GRPC_EXPORT);
                let request = tonic::Request::from_parts((**metadata).clone(), tonic::Extensions::default(), body);
                match grpc.unary(request, path, RawCodec).await {
                    Ok(answer) => Ok(answer.into_inner()),
                    Err(s) => Err(grpc_failure(&s)),
                }
            }
            Transport::Http { client, gzip } => {
                let mut req = client.post(&self.url).header("content-type", "application/x-protobuf");
                if *gzip {
                    req = req.header("content-encoding", "gzip");
                }
                // A connection refused, reset or timed out may pass; a request that cannot be
                // built will not.
                let resp = req
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| Failure { may_pass: !e.is_builder(), ..Failure::may_pass(format!("{e}")) })?;
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(response::http_retry_after);
                // Read the (small) answer, also so that the connection can be reused. A body cut
                // short reads as no answer: the status already says the request was taken.
                let answer = resp.bytes().await.unwrap_or_default();
                match status.as_u16() {
                    200..=299 => Ok(answer),
                    code => Err(Failure {
                        message: format!("HTTP {status}"),
                        may_pass: matches!(code, 429 | 502 | 503 | 504),
                        retry_after,
                    }),
                }
            }
        }
    }
}

/// Why an attempt failed.
struct Failure {
    message: String,
    /// The OTLP specification allows a retry: the same request may succeed later.
    may_pass: bool,
    /// The pause the collector asked for before the retry.
    retry_after: Option<Duration>,
}

impl Failure {
    fn may_pass(message: String) -> Self {
        Failure { message, may_pass: true, retry_after: None }
    }
}

/// A failed gRPC call as a [`Failure`]: retryable by its code, or RESOURCE_EXHAUSTED with a
/// retry delay from the server, as OTLP/gRPC says.
fn grpc_failure(s: &tonic::Status) -> Failure {
    let retry_after = response::grpc_retry_delay(s.details());
    let may_pass = grpc_retryable(s.code()) || (s.code() == tonic::Code::ResourceExhausted && retry_after.is_some());
    Failure { message: format!("gRPC status {:?}: {}", s.code(), s.message()), may_pass, retry_after }
}

/// Pauses between the attempts to a failing collector: doubling from [`FIRST_BACKOFF`] to
/// [`MAX_BACKOFF`], with jitter so that the agents of many nodes do not retry in step, or the
/// pause the collector asked for (at most [`MAX_ASKED_DELAY`]) when it is longer.
#[derive(Default)]
struct Backoff {
    failures_in_a_row: u32,
}

impl Backoff {
    fn next(&mut self, asked: Option<Duration>) -> Duration {
        let ours = FIRST_BACKOFF.saturating_mul(1 << self.failures_in_a_row.min(16)).min(MAX_BACKOFF);
        self.failures_in_a_row += 1;
        let jittered = ours.mul_f64(rand::random_range(1.0..1.25));
        jittered.max(asked.unwrap_or_default().min(MAX_ASKED_DELAY))
    }

    fn reset(&mut self) {
        self.failures_in_a_row = 0;
    }
}

/// The batcher: fills batches from the span queue and encodes each into the outbox.
struct Batcher<'a> {
    max_batch: usize,
    batch_timeout: Duration,
    export_timeout: Duration,
    /// OTLP/HTTP bodies are gzipped here (tonic compresses gRPC messages itself).
    gzip: bool,
    /// Size of the last request, to size the next one's buffer.
    last_request_len: usize,
    /// `OTEL_RESOURCE_ATTRIBUTES`, added to each process's resource.
    resource: Vec<(String, String)>,
    outbox: &'a Outbox,
}

impl Batcher<'_> {
    /// Until the queue is closed (by `stop`, or when every handle is dropped) and empty; then the
    /// outbox is told that no batch follows, and when shutdown began.
    async fn run(mut self, mut inbox: SpanInbox, mut stop: oneshot::Receiver<Instant>) {
        let mut stopping = false;
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            if batch.is_empty() {
                tokio::select! {
                    n = inbox.recv_into(&mut batch, self.max_batch) => if n == 0 { break },
                    r = &mut stop, if !stopping => {
                        self.stop(r, &mut inbox);
                        stopping = true;
                        continue;
                    }
                }
            }
            // Fill the batch until it is full or has waited `batch_timeout`; when stopping, take
            // only what is already queued.
            let fill_until = tokio::time::Instant::now() + self.batch_timeout;
            while batch.len() < self.max_batch && !stopping {
                let room = self.max_batch - batch.len();
                tokio::select! {
                    n = inbox.recv_into(&mut batch, room) => if n == 0 { break },
                    () = tokio::time::sleep_until(fill_until) => break,
                    r = &mut stop => {
                        self.stop(r, &mut inbox);
                        stopping = true;
                    }
                }
            }
            while let Some(room) = self.max_batch.checked_sub(batch.len()).filter(|&r| r > 0)
                && inbox.try_recv_into(&mut batch, room) > 0
            {}
            self.seal(&batch);
            crate::span::recycle(batch.drain(..));
        }
        self.outbox.close();
        if !stopping {
            // Every handle is gone (the agent dropped its pipeline), yet the sender may still be
            // trying: the exporter's shutdown, or its drop, says until when.
            let r = stop.await;
            self.stop(r, &mut inbox);
        }
    }

    fn stop(&self, r: Result<Instant, oneshot::error::RecvError>, inbox: &mut SpanInbox) {
        // A dropped `Exporter` (no explicit shutdown) still gets one export's worth of time.
        self.outbox.stop(r.unwrap_or_else(|_| Instant::now() + self.export_timeout));
        inbox.close(); // `recv_into` now hands out what is queued, then returns 0.
    }

    /// Encodes `batch` as one request into the outbox.
    fn seal(&mut self, batch: &[SpanRecord]) {
        match self.request_body(batch) {
            Ok(body) => self.outbox.push(PendingBatch::new(body, batch.len())),
            Err(e) => {
                let stats = &self.outbox.stats;
                ExportStats::add(&stats.failed_batches, 1);
                ExportStats::add(&stats.dropped_export_failed, batch.len());
                tracing::warn!("OTLP export: compressing a request of {} spans failed, dropped: {e}", batch.len());
            }
        }
    }

    /// The batch as an encoded `ExportTraceServiceRequest`, gzipped for OTLP/HTTP when asked.
    fn request_body(&mut self, batch: &[SpanRecord]) -> std::io::Result<Bytes> {
        let mut body = Vec::with_capacity(self.last_request_len + self.last_request_len / 8);
        let start = encode::export_request_with_resource(batch, &self.resource, &mut body);
        self.last_request_len = body.len();
        if self.gzip {
            return Ok(Bytes::from(gzip(&body[start..])?));
        }
        // The bytes before `start` were room for the headers: a slice of the same buffer.
        Ok(Bytes::from(body).slice(start..))
    }
}

/// `body` compressed with gzip, at the default level.
fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::default());
    enc.write_all(body)?;
    enc.finish()
}

/// The gRPC codes after which OTLP/gRPC allows a retry (RESOURCE_EXHAUSTED too, but only with a
/// retry delay from the server: see [`grpc_failure`]).
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
    /// Failed attempts not mentioned in a warning yet.
    unreported: u64,
    /// A warning was logged and no recovery line since.
    warned: bool,
    last_partial_warn: Option<Instant>,
    /// Spans rejected since the last warning about rejections, not mentioned in one yet.
    unreported_rejected: u64,
}

impl FailureLog {
    /// An attempt with a batch of `spans` failed; `fate` says what becomes of them.
    fn failure(&mut self, url: &str, err: &str, spans: usize, fate: &str) {
        self.unreported += 1;
        if self.last_warn.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        let earlier = match self.unreported - 1 {
            0 => String::new(),
            n => format!(" ({n} more attempts failed since the last warning)"),
        };
        tracing::warn!("OTLP export to {url} failed, a batch of {spans} spans {fate}{earlier}: {err}");
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
        return Err(bad("missing http:// scheme (or https://)"));
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(bad("scheme must be http or https"));
    }
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    // The URL is logged with every export failure: credentials in it would be too, so they are
    // refused, and this message does not quote it.
    if authority.contains('@') || path.contains(['?', '#']) {
        return Err(anyhow!(
            "invalid OTLP endpoint: a user, password, query or fragment in the URL is not supported; \
             give credentials as headers (--otlp-header, OTEL_EXPORTER_OTLP_HEADERS)"
        ));
    }
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
mod retry_tests;
#[cfg(test)]
mod tests;
