//! OTLP export: batches spans, writes each batch as one protobuf request (see `encode`) and
//! sends it over gRPC (tonic) or OTLP/HTTP (reqwest).
//!
//! One connection serves every traced process: each process is a `ResourceSpans` of the request.

mod encode;
mod response;

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
    log: FailureLog,
    /// Size of the last request, to size the next one's buffer.
    last_request_len: usize,
}

/// tonic compresses gRPC messages itself when asked (set up in `new`); OTLP/HTTP bodies are
/// compressed here.
enum Transport {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
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
        let setup = |e: &dyn std::fmt::Display| anyhow!("cannot set up OTLP export to {url}: {e}");
        let transport = match protocol {
            OtlpProtocol::Grpc => {
                let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                    .map_err(|e| setup(&e))?
                    .connect_timeout(cfg.export_timeout)
                    .timeout(cfg.export_timeout);
                // Connects at the first export, and again after a failure.
                let mut grpc = tonic::client::Grpc::new(endpoint.connect_lazy());
                if cfg.otlp_gzip {
                    grpc = grpc.send_compressed(CompressionEncoding::Gzip);
                }
                Transport::Grpc(grpc)
            }
            OtlpProtocol::Http => Transport::Http {
                client: reqwest::Client::builder().timeout(cfg.export_timeout).build().map_err(|e| setup(&e))?,
                gzip: cfg.otlp_gzip,
            },
        };
        Ok(OtlpSink {
            transport,
            url,
            max_batch: cfg.max_batch,
            batch_timeout: cfg.batch_timeout,
            export_timeout: cfg.export_timeout,
            stats,
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
        let start = encode::export_request(batch, &mut body);
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
            Transport::Grpc(grpc) => {
                grpc.ready().await.map_err(|e| (format!("connecting: {e}"), true))?;
                let path = PathAndQuery::from_static(GRPC_EXPORT);
                match grpc.unary(tonic::Request::new(body), path, RawCodec).await {
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
        return Err(bad("missing http:// scheme"));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" => {}
        // No TLS feature is enabled on opentelemetry-otlp/reqwest: fail now, not on every export.
        "https" => {
            return Err(bad("https is not supported by this build, use a plain http:// collector"));
        }
        _ => return Err(bad("scheme must be http")),
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
mod tests {
    use super::*;
    use crate::export::{ExportHandle, Exporter, Output, start, test_span};
    use crate::span::{AttrValue, ProcessInfo, SpanStatus};
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
    use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
    use opentelemetry_proto::tonic::common::v1::KeyValue as PbKeyValue;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use std::collections::HashMap;
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

    fn process(pid: u32) -> Arc<ProcessInfo> {
        Arc::new(ProcessInfo {
            service_name: "kube-apiserver".into(),
            pid,
            executable_name: "kube-apiserver".into(),
            host_name: "node-1".into(),
        })
    }

    /// Root + etcd child from process 1234, one span from process 99.
    fn spans() -> Vec<SpanRecord> {
        let mut root = test_span("GET /api/v1/pods", 1, None, 0, 40);
        root.status = SpanStatus::Ok;
        root.attributes =
            vec![("http.response.status_code", AttrValue::Int(200)), ("http.request.method", "GET".into())];
        let mut etcd = test_span("etcd Range", 2, Some(1), 10, 30);
        etcd.status = SpanStatus::Error("boom".into());
        etcd.attributes = vec![("etcd.key", "/registry/pods".into()), ("etcd.count_only", AttrValue::Bool(true))];
        let mut other = test_span("GET /healthz", 3, None, 0, 1);
        other.trace_id = [7; 16];
        other.process = process(99);
        vec![root, etcd, other]
    }

    fn cfg(endpoint: String, protocol: OtlpProtocol) -> ExportConfig {
        ExportConfig {
            otlp_endpoint: Some(endpoint),
            otlp_protocol: protocol,
            output: Output::None,
            batch_timeout: Duration::from_millis(20),
            export_timeout: Duration::from_millis(1500),
            ..ExportConfig::default()
        }
    }

    fn pb_attrs(kvs: &[PbKeyValue]) -> HashMap<String, String> {
        kvs.iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    Some(any_value::Value::IntValue(i)) => format!("int:{i}"),
                    Some(any_value::Value::BoolValue(b)) => format!("bool:{b}"),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    /// Checks that what the collector got is exactly `spans()`, grouped by process.
    fn check_received(reqs: &[ExportTraceServiceRequest]) {
        let mut by_pid: HashMap<String, Vec<(String, &opentelemetry_proto::tonic::trace::v1::Span)>> = HashMap::new();
        for rs in reqs.iter().flat_map(|r| &r.resource_spans) {
            let res = pb_attrs(&rs.resource.as_ref().unwrap().attributes);
            assert_eq!(res["service.name"], "kube-apiserver");
            assert_eq!(res["host.name"], "node-1");
            assert_eq!(res["process.executable.name"], "kube-apiserver");
            assert_eq!(res.len(), 4, "{res:?}");
            for ss in &rs.scope_spans {
                let scope = ss.scope.as_ref().unwrap();
                assert_eq!(
                    (scope.name.as_str(), scope.version.as_str()),
                    ("kube-apiserver-tracer", env!("CARGO_PKG_VERSION"))
                );
                for s in &ss.spans {
                    by_pid.entry(res["process.pid"].clone()).or_default().push((s.name.clone(), s));
                }
            }
        }
        let mine = &by_pid["int:1234"];
        assert_eq!(mine.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["GET /api/v1/pods", "etcd Range"]);
        assert_eq!(by_pid["int:99"].len(), 1);
        let (root, etcd) = (mine[0].1, mine[1].1);
        let want = spans();
        assert_eq!(root.trace_id, [0xab; 16]);
        assert_eq!(root.span_id, [0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(root.parent_span_id.is_empty());
        assert_eq!(etcd.parent_span_id, [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(root.start_time_unix_nano, want[0].start_unix_nano);
        assert_eq!(root.end_time_unix_nano, want[0].end_unix_nano);
        assert_eq!(root.kind, 2); // SPAN_KIND_SERVER
        assert_eq!(etcd.kind, 3); // SPAN_KIND_CLIENT
        let attrs = pb_attrs(&root.attributes);
        assert_eq!(
            (attrs["http.response.status_code"].as_str(), attrs["http.request.method"].as_str()),
            ("int:200", "GET")
        );
        assert_eq!(pb_attrs(&etcd.attributes)["etcd.count_only"], "bool:true");
        let status = etcd.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "boom")); // STATUS_CODE_ERROR
        assert_eq!(root.status.as_ref().unwrap().code, 1); // STATUS_CODE_OK
    }

    /// Answers UNAVAILABLE to the first `fail_first` calls, as a collector that is restarting.
    /// Accepts gzip-compressed messages, and counts them. Says it rejected `reject` spans of each
    /// call it takes, when not 0.
    struct Collector {
        tx: UnboundedSender<ExportTraceServiceRequest>,
        fail_first: std::sync::atomic::AtomicUsize,
        gzipped: Arc<std::sync::atomic::AtomicUsize>,
        reject: i64,
    }

    /// An answer that rejects `n` spans (none and silent for 0).
    fn rejecting(n: i64) -> ExportTraceServiceResponse {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
        ExportTraceServiceResponse {
            partial_success: (n != 0).then(|| ExportTracePartialSuccess {
                rejected_spans: n,
                error_message: "span attribute limit exceeded".into(),
            }),
        }
    }

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            req: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let failing =
                self.fail_first.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
            if failing {
                return Err(tonic::Status::unavailable("starting up"));
            }
            if req.metadata().get("grpc-encoding").is_some_and(|e| e == "gzip") {
                self.gzipped.fetch_add(1, Ordering::Relaxed);
            }
            let _ = self.tx.send(req.into_inner());
            Ok(tonic::Response::new(rejecting(self.reject)))
        }
    }

    async fn grpc_collector(listener: TcpListener) -> UnboundedReceiver<ExportTraceServiceRequest> {
        grpc_collector_with(listener, 0, 0).await.0
    }

    /// The receiver of what the collector accepted, and how many of those calls were gzipped.
    async fn grpc_collector_with(
        listener: TcpListener,
        fail_first: usize,
        reject: i64,
    ) -> (UnboundedReceiver<ExportTraceServiceRequest>, Arc<std::sync::atomic::AtomicUsize>) {
        let (tx, rx) = unbounded_channel();
        let gzipped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let collector = Collector { tx, fail_first: fail_first.into(), gzipped: gzipped.clone(), reject };
        let service = TraceServiceServer::new(collector).accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let server = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        tokio::spawn(server);
        (rx, gzipped)
    }

    /// A minimal OTLP/HTTP collector: HTTP/1.1 keep-alive, Content-Length bodies only. Answers
    /// 503 to the first `fail_first` requests, and says it rejected `reject` spans of each request
    /// it takes, when not 0.
    async fn http_collector(
        fail_first: usize,
        reject: i64,
    ) -> (String, UnboundedReceiver<(String, ExportTraceServiceRequest)>) {
        use prost::Message;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = unbounded_channel();
        let failures = Arc::new(std::sync::atomic::AtomicUsize::new(fail_first));
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let tx = tx.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match sock.read(&mut chunk).await {
                                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                                _ => return,
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                        let len: usize = head
                            .lines()
                            .filter_map(|l| l.split_once(':'))
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            match sock.read(&mut chunk).await {
                                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                                _ => return,
                            }
                        }
                        let body = &buf[head_end..head_end + len];
                        let req = if head.to_ascii_lowercase().contains("content-encoding: gzip") {
                            use std::io::Read;
                            let mut plain = Vec::new();
                            flate2::read::GzDecoder::new(body).read_to_end(&mut plain).unwrap();
                            ExportTraceServiceRequest::decode(plain.as_slice()).unwrap()
                        } else {
                            ExportTraceServiceRequest::decode(body).unwrap()
                        };
                        buf.drain(..head_end + len);
                        let failing =
                            failures.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
                        let answer = if failing {
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_vec()
                        } else {
                            let _ = tx.send((head, req));
                            let body = rejecting(reject).encode_to_vec();
                            let mut a = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            a.extend_from_slice(&body);
                            a
                        };
                        if sock.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, rx)
    }

    /// What a test collector has received so far.
    fn drained<T>(rx: &mut UnboundedReceiver<T>) -> Vec<T> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// A gRPC and an OTLP/HTTP collector that behave alike (see their functions).
    struct Collectors {
        endpoints: [(String, OtlpProtocol); 2],
        grpc_rx: UnboundedReceiver<ExportTraceServiceRequest>,
        grpc_gzipped: Arc<std::sync::atomic::AtomicUsize>,
        http_rx: UnboundedReceiver<(String, ExportTraceServiceRequest)>,
    }

    async fn collectors(fail_first: usize, reject: i64) -> Collectors {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_url = format!("http://{}", listener.local_addr().unwrap());
        let (grpc_rx, grpc_gzipped) = grpc_collector_with(listener, fail_first, reject).await;
        let (http_url, http_rx) = http_collector(fail_first, reject).await;
        Collectors {
            endpoints: [(grpc_url, OtlpProtocol::Grpc), (http_url, OtlpProtocol::Http)],
            grpc_rx,
            grpc_gzipped,
            http_rx,
        }
    }

    impl Collectors {
        /// Checks that each collector received the test spans.
        fn check_both_received(&mut self) {
            check_received(&drained(&mut self.grpc_rx));
            let reqs: Vec<_> = drained(&mut self.http_rx).into_iter().map(|(_, r)| r).collect();
            check_received(&reqs);
        }
    }

    async fn send_all(handle: &ExportHandle, exporter: Exporter) {
        for s in spans() {
            handle.submit(s);
        }
        exporter.shutdown(Duration::from_secs(3)).await.unwrap();
    }

    #[tokio::test]
    async fn grpc_collector_receives_spans_with_resource_and_ids() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut rx = grpc_collector(listener).await;
        let (handle, exporter) = start(cfg(url, OtlpProtocol::Grpc)).unwrap();
        send_all(&handle, exporter).await;
        check_received(&drained(&mut rx));
        let stats = handle.stats();
        assert_eq!(stats.exported.load(Ordering::Relaxed), 3);
        assert_eq!(stats.failed_batches.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn http_collector_receives_protobuf_on_v1_traces() {
        let (url, mut rx) = http_collector(0, 0).await;
        let (handle, exporter) = start(cfg(url, OtlpProtocol::Http)).unwrap();
        send_all(&handle, exporter).await;
        let mut reqs = Vec::new();
        for (head, r) in drained(&mut rx) {
            assert!(head.starts_with("POST /v1/traces HTTP/1.1\r\n"), "{head}");
            assert!(head.to_ascii_lowercase().contains("content-type: application/x-protobuf"), "{head}");
            reqs.push(r);
        }
        check_received(&reqs);
        assert_eq!(handle.stats().exported.load(Ordering::Relaxed), 3);
    }

    /// `--otlp-compression gzip`: both collectors get compressed requests that decode to the spans.
    #[tokio::test]
    async fn gzip_compressed_requests() {
        let mut c = collectors(0, 0).await;
        for (url, protocol) in c.endpoints.clone() {
            let cfg = ExportConfig { otlp_gzip: true, ..cfg(url, protocol) };
            let (handle, exporter) = start(cfg).unwrap();
            send_all(&handle, exporter).await;
            assert_eq!(handle.stats().exported.load(Ordering::Relaxed), 3, "{protocol:?}");
        }
        let reqs = drained(&mut c.grpc_rx);
        assert_eq!(c.grpc_gzipped.load(Ordering::Relaxed), reqs.len());
        check_received(&reqs);
        let mut reqs = Vec::new();
        for (head, r) in drained(&mut c.http_rx) {
            assert!(head.to_ascii_lowercase().contains("content-encoding: gzip"), "{head}");
            reqs.push(r);
        }
        check_received(&reqs);
    }

    /// A collector that is briefly unavailable (gRPC UNAVAILABLE, HTTP 503) gets the batch on a
    /// retry, within the export timeout: nothing is dropped.
    #[tokio::test]
    async fn transient_failures_are_retried() {
        let mut c = collectors(2, 0).await;
        for (url, protocol) in c.endpoints.clone() {
            let (handle, exporter) = start(cfg(url, protocol)).unwrap();
            send_all(&handle, exporter).await;
            let stats = handle.stats();
            assert_eq!(stats.exported.load(Ordering::Relaxed), 3, "{protocol:?}");
            assert_eq!(stats.failed_batches.load(Ordering::Relaxed), 0, "{protocol:?}");
        }
        c.check_both_received();
    }

    /// A collector that takes each request but rejects some of its spans (OTLP's partial
    /// success): those are counted apart from the exported ones, over both protocols.
    #[tokio::test]
    async fn spans_the_collector_rejects_are_counted() {
        let mut c = collectors(0, 2).await;
        for (url, protocol) in c.endpoints.clone() {
            let (handle, exporter) = start(cfg(url, protocol)).unwrap();
            send_all(&handle, exporter).await;
            let stats = handle.stats();
            assert_eq!(stats.exported.load(Ordering::Relaxed), 1, "{protocol:?}");
            assert_eq!(stats.rejected_by_collector.load(Ordering::Relaxed), 2, "{protocol:?}");
            assert_eq!(stats.failed_batches.load(Ordering::Relaxed), 0, "{protocol:?}");
            assert_eq!(stats.dropped_export_failed.load(Ordering::Relaxed), 0, "{protocol:?}");
        }
        c.check_both_received();
    }

    /// Down (refusing) and stuck (accepting, never answering) collectors: failures are counted,
    /// nothing panics, every export is bounded by export_timeout.
    #[tokio::test]
    async fn unreachable_collector_counts_dropped_spans() {
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let stuck = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stuck_url = format!("http://{}", stuck.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = stuck.accept().await {
                held.push(sock);
            }
        });
        for protocol in [OtlpProtocol::Grpc, OtlpProtocol::Http] {
            for url in [&refused, &stuck_url] {
                let cfg = ExportConfig { export_timeout: Duration::from_millis(300), ..cfg(url.clone(), protocol) };
                let (handle, exporter) = start(cfg).unwrap();
                let t = Instant::now();
                send_all(&handle, exporter).await;
                let took = t.elapsed();
                assert!(took < Duration::from_millis(1500), "{protocol:?} {url}: {took:?}");
                let stats = handle.stats();
                assert_eq!(stats.exported.load(Ordering::Relaxed), 0);
                assert_eq!(stats.dropped_export_failed.load(Ordering::Relaxed), 3, "{protocol:?} {url}");
                // One batch, one request (a resource per process).
                assert_eq!(stats.failed_batches.load(Ordering::Relaxed), 1);
            }
        }
    }

    /// Export resumes by itself once the collector comes back.
    #[tokio::test]
    async fn export_resumes_when_collector_returns() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let cfg = ExportConfig {
            export_timeout: Duration::from_millis(300),
            ..cfg(format!("http://{addr}"), OtlpProtocol::Grpc)
        };
        let (handle, exporter) = start(cfg).unwrap();
        let stats = handle.stats();
        handle.submit(test_span("lost", 1, None, 0, 1));
        let t = Instant::now();
        while stats.failed_batches.load(Ordering::Relaxed) == 0 {
            assert!(t.elapsed() < Duration::from_secs(3), "no failure seen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut rx = grpc_collector(TcpListener::bind(addr).await.unwrap()).await;
        let t = Instant::now();
        let got = loop {
            assert!(t.elapsed() < Duration::from_secs(5), "export did not resume");
            handle.submit(test_span("kept", 2, None, 0, 1));
            if let Ok(Some(req)) = tokio::time::timeout(Duration::from_millis(400), rx.recv()).await {
                break req;
            }
        };
        assert_eq!(got.resource_spans[0].scope_spans[0].spans[0].name, "kept");
        exporter.shutdown(Duration::from_secs(2)).await.unwrap();
        assert!(stats.exported.load(Ordering::Relaxed) >= 1);
        assert_eq!(stats.dropped_export_failed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn endpoint_urls() {
        let http = |e| endpoint_url(e, OtlpProtocol::Http).map_err(|e| e.to_string());
        let grpc = |e| endpoint_url(e, OtlpProtocol::Grpc).map_err(|e| e.to_string());
        assert_eq!(http("http://collector:4318").unwrap(), "http://collector:4318/v1/traces");
        assert_eq!(http("http://collector:4318/").unwrap(), "http://collector:4318/v1/traces");
        assert_eq!(http("http://collector:4318/custom/traces").unwrap(), "http://collector:4318/custom/traces");
        assert_eq!(http(" http://[::1]:4318 ").unwrap(), "http://[::1]:4318/v1/traces");
        assert_eq!(grpc("http://collector:4317").unwrap(), "http://collector:4317");
        assert_eq!(grpc("HTTP://10.0.0.1").unwrap(), "HTTP://10.0.0.1");
        for bad in
            ["collector:4317", "", "ftp://x", "http://", "http://a b:1", "http://x:0", "http://x:port", "http://[::1"]
        {
            assert!(grpc(bad).is_err(), "{bad:?} accepted");
        }
        assert!(grpc("https://c:4317").unwrap_err().contains("https is not supported"));
    }
}
