//! Real OTLP trace receivers (gRPC and HTTP/protobuf) on 127.0.0.1, each on its own thread and
//! tokio runtime so synchronous tests can use them.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

use crate::span::{ReceivedSpan, dump, flatten};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    /// The value of the tracer's `--otlp-protocol`.
    pub fn flag(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

/// What one OTLP/HTTP request looked like (the gRPC receiver records none).
#[derive(Clone, Debug)]
pub struct HttpExport {
    pub method: String,
    pub path: String,
    pub content_type: String,
    pub content_encoding: String,
    pub body_len: usize,
    /// The status the receiver answered with.
    pub status: u16,
}

#[derive(Default)]
struct StoreInner {
    spans: Vec<ReceivedSpan>,
    exports: usize,
    /// gRPC exports whose message came gzip-compressed (`grpc-encoding: gzip`).
    grpc_gzipped: usize,
    http: Vec<HttpExport>,
    errors: Vec<String>,
    /// Metrics exports, in arrival order, and the OTLP/HTTP requests that brought them.
    metrics: Vec<ExportMetricsServiceRequest>,
    metrics_http: Vec<HttpExport>,
}

#[derive(Default)]
struct Store {
    inner: Mutex<StoreInner>,
    cv: Condvar,
}

impl Store {
    fn add_export(&self, req: &ExportTraceServiceRequest) {
        let spans = flatten(req);
        let mut g = self.inner.lock().unwrap();
        g.exports += 1;
        g.spans.extend(spans);
        drop(g);
        self.cv.notify_all();
    }
    fn add_http(&self, h: HttpExport) {
        self.inner.lock().unwrap().http.push(h);
        self.cv.notify_all();
    }
    fn add_metrics(&self, req: ExportMetricsServiceRequest) {
        self.inner.lock().unwrap().metrics.push(req);
        self.cv.notify_all();
    }
    fn add_metrics_http(&self, h: HttpExport) {
        self.inner.lock().unwrap().metrics_http.push(h);
        self.cv.notify_all();
    }
    fn add_error(&self, e: String) {
        self.inner.lock().unwrap().errors.push(e);
        self.cv.notify_all();
    }
}

struct GrpcSink {
    store: Arc<Store>,
}

#[tonic::async_trait]
impl TraceService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if request.metadata().get("grpc-encoding").is_some_and(|e| e == "gzip") {
            self.store.inner.lock().unwrap().grpc_gzipped += 1;
        }
        self.store.add_export(request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

struct GrpcMetricsSink {
    store: Arc<Store>,
}

#[tonic::async_trait]
impl MetricsService for GrpcMetricsSink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.store.add_metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

/// A running OTLP receiver (traces and metrics). Dropping it shuts it down.
pub struct OtlpReceiver {
    protocol: Protocol,
    addr: SocketAddr,
    store: Arc<Store>,
    shutdown: Option<oneshot::Sender<()>>,
    done: Option<mpsc::Receiver<()>>,
    thread: Option<JoinHandle<()>>,
}

impl OtlpReceiver {
    /// OTLP/gRPC (`opentelemetry.proto.collector.trace.v1.TraceService/Export`) on 127.0.0.1:0.
    pub fn grpc() -> OtlpReceiver {
        Self::start(Protocol::Grpc)
    }

    /// OTLP/HTTP protobuf (`POST /v1/traces`) on 127.0.0.1:0.
    pub fn http() -> OtlpReceiver {
        Self::start(Protocol::Http)
    }

    pub fn start(protocol: Protocol) -> OtlpReceiver {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("OTLP receiver: cannot bind 127.0.0.1:0");
        Self::serve(protocol, std_listener, Arc::new(Store::default()))
    }

    /// Serves `protocol` on `std_listener` into `store`, on a thread of its own.
    fn serve(protocol: Protocol, std_listener: std::net::TcpListener, store: Arc<Store>) -> OtlpReceiver {
        std_listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = std_listener.local_addr().expect("local_addr");
        let (tx, rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let thread_store = store.clone();
        let thread = std::thread::Builder::new()
            .name(format!("otlp-{}-{}", protocol.flag(), addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
                    match protocol {
                        Protocol::Grpc => {
                            let incoming = tonic::transport::server::TcpIncoming::from(listener);
                            let svc = TraceServiceServer::new(GrpcSink { store: thread_store.clone() })
                                .max_decoding_message_size(64 << 20)
                                .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
                            let metrics = MetricsServiceServer::new(GrpcMetricsSink { store: thread_store.clone() })
                                .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
                            let res = tonic::transport::Server::builder()
                                .add_service(svc)
                                .add_service(metrics)
                                .serve_with_incoming_shutdown(incoming, async {
                                    let _ = rx.await;
                                })
                                .await;
                            if let Err(e) = res {
                                thread_store.add_error(format!("gRPC server: {e}"));
                            }
                        }
                        Protocol::Http => serve_http(listener, thread_store, rx).await,
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(200));
                let _ = done_tx.send(());
            })
            .expect("spawn receiver thread");
        OtlpReceiver { protocol, addr, store, shutdown: Some(tx), done: Some(done_rx), thread: Some(thread) }
    }

    /// Stops serving, as a collector going down: the port is closed at once (connecting is
    /// refused), and requests already being answered are answered first (gRPC: a graceful
    /// shutdown; HTTP: a request read is always answered). What was received is kept.
    pub fn stop(&mut self) {
        self.shut_down(Duration::from_secs(10));
    }

    /// Serves again on the same address (after [`stop`](Self::stop)), as a collector that came
    /// back: into the same store, so that [`spans`](Self::spans) has what both runs received.
    pub fn restart(&mut self) {
        assert!(self.shutdown.is_none(), "OTLP receiver: restart without stop");
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match std::net::TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("OTLP receiver: binding {} again: {e}; retrying", self.addr);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("OTLP receiver: cannot bind {} again: {e}", self.addr),
            }
        };
        let mut again = Self::serve(self.protocol, listener, self.store.clone());
        self.shutdown = again.shutdown.take();
        self.done = again.done.take();
        self.thread = again.thread.take();
    }

    /// Tells the server to stop and waits for it up to `wait`; a server still busy after that is
    /// left behind (its listener is closed already).
    fn shut_down(&mut self, wait: Duration) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // A client that keeps its connection open would make a graceful shutdown wait; give it a
        // moment, then leave the thread behind rather than hang the test.
        if let Some(done) = self.done.take()
            && done.recv_timeout(wait).is_ok()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
        self.thread = None;
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` (no path: the tracer appends `/v1/traces` for OTLP/HTTP).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The tracer flags that point it at this receiver.
    pub fn tracer_args(&self) -> Vec<String> {
        vec!["--otlp-endpoint".into(), self.endpoint(), "--otlp-protocol".into(), self.protocol.flag().into()]
    }

    /// All spans received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.inner.lock().unwrap().spans.clone()
    }

    /// Number of export requests received (gRPC calls or decoded HTTP POSTs).
    pub fn export_count(&self) -> usize {
        self.store.inner.lock().unwrap().exports
    }

    /// gRPC exports that came gzip-compressed.
    pub fn grpc_gzipped_count(&self) -> usize {
        self.store.inner.lock().unwrap().grpc_gzipped
    }

    /// The OTLP/HTTP requests received (empty for gRPC).
    pub fn http_requests(&self) -> Vec<HttpExport> {
        self.store.inner.lock().unwrap().http.clone()
    }

    /// Problems the receiver met (undecodable bodies, wrong paths, server errors).
    pub fn errors(&self) -> Vec<String> {
        self.store.inner.lock().unwrap().errors.clone()
    }

    /// Waits until at least `count` received spans satisfy `pred`, or `timeout` passes. Returns the
    /// matching spans either way (the caller asserts on them).
    pub fn wait_for<F>(&self, pred: F, count: usize, timeout: Duration) -> Vec<ReceivedSpan>
    where
        F: Fn(&ReceivedSpan) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut g = self.store.inner.lock().unwrap();
        loop {
            let matching: Vec<ReceivedSpan> = g.spans.iter().filter(|s| pred(s)).cloned().collect();
            let now = Instant::now();
            if matching.len() >= count || now >= deadline {
                return matching;
            }
            g = self.store.cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Like [`wait_for`](Self::wait_for) but panics with every received span listed when fewer than
    /// `count` matched in time.
    pub fn expect<F>(&self, what: &str, pred: F, count: usize, timeout: Duration) -> Vec<ReceivedSpan>
    where
        F: Fn(&ReceivedSpan) -> bool,
    {
        let got = self.wait_for(pred, count, timeout);
        if got.len() < count {
            panic!(
                "OTLP {} receiver: expected at least {count} span(s) {what} within {timeout:?}, got {}.\n\
                 All spans received ({} export(s)):\n{}\nreceiver errors: {:?}",
                self.protocol.flag(),
                got.len(),
                self.export_count(),
                dump(&self.spans()),
                self.errors()
            );
        }
        got
    }

    /// Waits until `n` export requests arrived (or timeout); returns the count reached.
    pub fn wait_for_exports(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut g = self.store.inner.lock().unwrap();
        loop {
            let now = Instant::now();
            if g.exports >= n || now >= deadline {
                return g.exports;
            }
            g = self.store.cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }
}

impl OtlpReceiver {
    /// Every metrics export received so far, in arrival order.
    pub fn metrics_requests(&self) -> Vec<ExportMetricsServiceRequest> {
        self.store.inner.lock().unwrap().metrics.clone()
    }

    /// The OTLP/HTTP requests that brought metrics (empty for gRPC).
    pub fn metrics_http_requests(&self) -> Vec<HttpExport> {
        self.store.inner.lock().unwrap().metrics_http.clone()
    }

    /// Waits until `done` holds for the metrics exports received, or `timeout` passes; returns
    /// them either way (the caller asserts).
    pub fn wait_for_metrics<F>(&self, done: F, timeout: Duration) -> Vec<ExportMetricsServiceRequest>
    where
        F: Fn(&[ExportMetricsServiceRequest]) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut g = self.store.inner.lock().unwrap();
        loop {
            let now = Instant::now();
            if done(&g.metrics) || now >= deadline {
                return g.metrics.clone();
            }
            g = self.store.cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.shut_down(Duration::from_secs(2));
    }
}

// ---------------------------------------------------------------------------------------------
// OTLP/HTTP: a deliberately small HTTP/1.1 server (keep-alive, Content-Length or chunked bodies).

async fn serve_http(listener: tokio::net::TcpListener, store: Arc<Store>, mut shutdown: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    let store = store.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle_http_conn(stream, store.clone()).await
                            && e.kind() != std::io::ErrorKind::UnexpectedEof
                                && e.kind() != std::io::ErrorKind::ConnectionReset
                            {
                                store.add_error(format!("OTLP/HTTP connection: {e}"));
                            }
                    });
                }
                Err(e) => {
                    store.add_error(format!("OTLP/HTTP accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > 64 * 1024 {
        return Err(bad("header line too long"));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    String::from_utf8(buf).map(Some).map_err(|_| bad("header line is not UTF-8"))
}

async fn handle_http_conn(stream: tokio::net::TcpStream, store: Arc<Store>) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        // Request line (tolerate empty lines between requests, RFC 9112 §2.2).
        let line = loop {
            match read_line(&mut r).await? {
                None => return Ok(()),
                Some(l) if l.is_empty() => continue,
                Some(l) => break l,
            }
        };
        let mut parts = line.split_whitespace();
        let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(t), Some(v)) => (m.to_owned(), t.to_owned(), v.to_owned()),
            _ => return Err(bad(format!("bad request line {line:?}"))),
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        loop {
            let h = read_line(&mut r).await?.ok_or_else(|| bad("EOF in headers"))?;
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').ok_or_else(|| bad(format!("bad header {h:?}")))?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let mut body = Vec::new();
        if header("transfer-encoding").to_ascii_lowercase().contains("chunked") {
            loop {
                let size_line = read_line(&mut r).await?.ok_or_else(|| bad("EOF in chunk size"))?;
                let size_hex = size_line.split(';').next().unwrap_or("").trim();
                let size =
                    usize::from_str_radix(size_hex, 16).map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
                if size == 0 {
                    // trailers until empty line
                    while let Some(t) = read_line(&mut r).await? {
                        if t.is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let start = body.len();
                body.resize(start + size, 0);
                r.read_exact(&mut body[start..]).await?;
                let crlf = read_line(&mut r).await?;
                if crlf.as_deref() != Some("") {
                    return Err(bad("missing CRLF after chunk"));
                }
            }
        } else {
            let cl = header("content-length");
            let len: usize = if cl.is_empty() { 0 } else { cl.parse().map_err(|_| bad("bad content-length"))? };
            body.resize(len, 0);
            r.read_exact(&mut body).await?;
        }
        let content_type = header("content-type");
        let content_encoding = header("content-encoding");
        let path = target.split('?').next().unwrap_or("").to_owned();
        let is_metrics = path == "/v1/metrics" && method == "POST";
        let (status, reason, resp_body): (u16, &str, Vec<u8>) = if is_metrics {
            match decode_body::<ExportMetricsServiceRequest>(&content_encoding, &body) {
                Ok(req) => {
                    store.add_metrics(req);
                    (200, "OK", ExportMetricsServiceResponse { partial_success: None }.encode_to_vec())
                }
                Err(e) => {
                    store.add_error(format!("OTLP/HTTP metrics: undecodable body ({} bytes): {e}", body.len()));
                    (400, "Bad Request", Vec::new())
                }
            }
        } else if path != "/v1/traces" {
            store.add_error(format!("OTLP/HTTP: {method} {target}: unexpected path"));
            (404, "Not Found", b"not found".to_vec())
        } else if method != "POST" {
            store.add_error(format!("OTLP/HTTP: {method} {target}: unexpected method"));
            (405, "Method Not Allowed", Vec::new())
        } else if !content_encoding.is_empty()
            && !content_encoding.eq_ignore_ascii_case("identity")
            && !content_encoding.eq_ignore_ascii_case("gzip")
        {
            store.add_error(format!("OTLP/HTTP: unsupported content-encoding {content_encoding:?}"));
            (415, "Unsupported Media Type", Vec::new())
        } else if !content_type.starts_with("application/x-protobuf") {
            store.add_error(format!("OTLP/HTTP: unsupported content-type {content_type:?}"));
            (415, "Unsupported Media Type", Vec::new())
        } else {
            let decoded = if content_encoding.eq_ignore_ascii_case("gzip") {
                let mut plain = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
                    .map_err(|e| e.to_string())
                    .and_then(|_| ExportTraceServiceRequest::decode(&plain[..]).map_err(|e| e.to_string()))
            } else {
                ExportTraceServiceRequest::decode(&body[..]).map_err(|e| e.to_string())
            };
            match decoded {
                Ok(req) => {
                    store.add_export(&req);
                    (200, "OK", ExportTraceServiceResponse { partial_success: None }.encode_to_vec())
                }
                Err(e) => {
                    store.add_error(format!("OTLP/HTTP: undecodable body ({} bytes): {e}", body.len()));
                    (400, "Bad Request", Vec::new())
                }
            }
        };
        let export = HttpExport {
            method: method.clone(),
            path: path.clone(),
            content_type,
            content_encoding,
            body_len: body.len(),
            status,
        };
        if is_metrics {
            store.add_metrics_http(export)
        } else {
            store.add_http(export)
        }
        let close = header("connection").eq_ignore_ascii_case("close") || version == "HTTP/1.0";
        let mut resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n",
            resp_body.len()
        );
        if close {
            resp.push_str("Connection: close\r\n");
        }
        resp.push_str("\r\n");
        let mut out = resp.into_bytes();
        out.extend_from_slice(&resp_body);
        w.write_all(&out).await?;
        w.flush().await?;
        if close {
            return Ok(());
        }
    }
}

/// A protobuf request body, gunzipped first when its `Content-Encoding` says so.
fn decode_body<M: prost::Message + Default>(content_encoding: &str, body: &[u8]) -> Result<M, String> {
    if content_encoding.eq_ignore_ascii_case("gzip") {
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut plain).map_err(|e| e.to_string())?;
        return M::decode(&plain[..]).map_err(|e| e.to_string());
    }
    M::decode(body).map_err(|e| e.to_string())
}
