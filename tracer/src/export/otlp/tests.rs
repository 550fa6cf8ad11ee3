//! The OTLP exporter against real gRPC and HTTP collectors on loopback.

use super::*;
use crate::export::{ExportHandle, Exporter, Output, start, tests::test_span};
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
pub(super) fn spans() -> Vec<SpanRecord> {
    let mut root = test_span("GET /api/v1/pods", 1, None, 0, 40);
    root.status = SpanStatus::Ok;
    root.attributes = vec![("http.response.status_code", AttrValue::Int(200)), ("http.request.method", "GET".into())];
    let mut etcd = test_span("etcd Range", 2, Some(1), 10, 30);
    etcd.status = SpanStatus::Error("boom".into());
    etcd.attributes = vec![("etcd.key", "/registry/pods".into()), ("etcd.count_only", AttrValue::Bool(true))];
    let mut other = test_span("GET /healthz", 3, None, 0, 1);
    other.trace_id = [7; 16];
    other.process = process(99);
    vec![root, etcd, other]
}

pub(super) fn cfg(endpoint: String, protocol: OtlpProtocol) -> ExportConfig {
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

/// Answers `failure` (UNAVAILABLE unless told otherwise, as a collector that is restarting) to
/// the first `fail_first` calls. Accepts gzip-compressed messages, and counts them. Says it
/// rejected `reject` spans of each call it takes, when not 0.
struct Collector {
    tx: UnboundedSender<ExportTraceServiceRequest>,
    fail_first: std::sync::atomic::AtomicUsize,
    failure: tonic::Status,
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
        let failing = self.fail_first.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
        if failing {
            return Err(self.failure.clone());
        }
        if req.metadata().get("grpc-encoding").is_some_and(|e| e == "gzip") {
            self.gzipped.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.tx.send(req.into_inner());
        Ok(tonic::Response::new(rejecting(self.reject)))
    }
}

pub(super) async fn grpc_collector(listener: TcpListener) -> UnboundedReceiver<ExportTraceServiceRequest> {
    grpc_collector_with(listener, 0, 0).await.0
}

/// The receiver of what the collector accepted, and how many of those calls were gzipped.
async fn grpc_collector_with(
    listener: TcpListener,
    fail_first: usize,
    reject: i64,
) -> (UnboundedReceiver<ExportTraceServiceRequest>, Arc<std::sync::atomic::AtomicUsize>) {
    grpc_collector_failing(listener, fail_first, tonic::Status::unavailable("starting up"), reject).await
}

/// [`grpc_collector_with`], failing with `failure`.
pub(super) async fn grpc_collector_failing(
    listener: TcpListener,
    fail_first: usize,
    failure: tonic::Status,
    reject: i64,
) -> (UnboundedReceiver<ExportTraceServiceRequest>, Arc<std::sync::atomic::AtomicUsize>) {
    let (tx, rx) = unbounded_channel();
    let gzipped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let collector = Collector { tx, fail_first: fail_first.into(), failure, gzipped: gzipped.clone(), reject };
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (url, http_collector_failing(listener, fail_first, "503 Service Unavailable", reject))
}

/// [`http_collector`] on `listener`, failing with `failure` (an HTTP status line's code and reason).
pub(super) fn http_collector_failing(
    listener: TcpListener,
    fail_first: usize,
    failure: &'static str,
    reject: i64,
) -> UnboundedReceiver<(String, ExportTraceServiceRequest)> {
    use prost::Message;
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
                        format!("HTTP/1.1 {failure}\r\ncontent-length: 0\r\n\r\n").into_bytes()
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
    rx
}

/// What a test collector has received so far.
pub(super) fn drained<T>(rx: &mut UnboundedReceiver<T>) -> Vec<T> {
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

pub(super) async fn send_all(handle: &ExportHandle, exporter: Exporter) {
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

/// Export resumes by itself once the collector comes back, and the span made while it was down
/// is delivered then, before the later one.
#[tokio::test]
async fn export_resumes_when_collector_returns() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cfg = ExportConfig {
        export_timeout: Duration::from_millis(300),
        ..cfg(format!("http://{addr}"), OtlpProtocol::Grpc)
    };
    let (handle, exporter) = start(cfg).unwrap();
    let stats = handle.stats();
    handle.submit(test_span("early", 1, None, 0, 1));
    let t = Instant::now();
    while stats.export_retries.load(Ordering::Relaxed) == 0 {
        assert!(t.elapsed() < Duration::from_secs(3), "no failure seen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut rx = grpc_collector(TcpListener::bind(addr).await.unwrap()).await;
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("export did not resume").unwrap();
    assert_eq!(got.resource_spans[0].scope_spans[0].spans[0].name, "early");
    handle.submit(test_span("later", 2, None, 0, 1));
    exporter.shutdown(Duration::from_secs(2)).await.unwrap();
    let later = drained(&mut rx);
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].resource_spans[0].scope_spans[0].spans[0].name, "later");
    assert_eq!(stats.exported.load(Ordering::Relaxed), 2);
    assert_eq!(stats.exported_after_retry.load(Ordering::Relaxed), 1);
    assert_eq!(stats.dropped_export_failed.load(Ordering::Relaxed), 0);
    assert_eq!(stats.lost_to_collector(), 0);
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
    assert_eq!(grpc("https://c:4317").unwrap(), "https://c:4317");
    assert_eq!(http("https://c:4318").unwrap(), "https://c:4318/v1/traces");
    // Credentials in the URL are refused, and the refusal does not quote them.
    for secret in ["https://user:s3cret@c:4318", "https://c:4318/v1/traces?api_key=s3cret", "http://c/#s3cret"] {
        let e = http(secret).unwrap_err();
        assert!(!e.contains("s3cret") && e.contains("--otlp-header"), "{secret}: {e}");
    }
}
