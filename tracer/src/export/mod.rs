//! Export stage: finished spans go to an OTLP collector and/or to stdout (terminal view or JSON lines).
//!
//! Capture must never wait on export, so every sink has its own bounded queue that `submit_all`
//! fills without waiting; spans a full queue has no room for are dropped and counted. OTLP runs as
//! a tokio task; the stdout outputs run on a plain thread because writes to a paused pipe block,
//! and a blocked tokio worker would stall capture.

mod json;
mod metrics;
mod otlp;
mod terminal;

pub use metrics::{AgentCounters, Health, MetricsConfig, interval as metrics_interval};

/// The OTLP request encoder, for `examples/agent_cost.rs`, which measures the agent's work per span.
pub use otlp::export_request;
/// Collector settings and connections, shared with the metrics exporter.
pub use otlp::settings::{OtlpSettings, TlsFiles};
pub use otlp::transport;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::{mpsc, oneshot};

use crate::span::SpanRecord;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    Http,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Live waterfall view, one block per trace.
    Terminal,
    /// One JSON object per span per line.
    Json,
    None,
}

/// Default of [`ExportConfig::buffer_bytes`]: a minute of spans at 5,000 a second, at the encoded
/// size of a typical span (docs/benchmarks.md).
pub const DEFAULT_BUFFER_BYTES: usize = 256 << 20;

/// No Debug: `otlp_headers` holds credentials (`OtlpSettings` has a redacting one).
#[derive(Clone)]
pub struct ExportConfig {
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: OtlpProtocol,
    /// Compress OTLP requests with gzip (gRPC message compression, or `Content-Encoding: gzip`).
    pub otlp_gzip: bool,
    /// Sent with every OTLP request (API keys, tokens): never logged.
    pub otlp_headers: Vec<(String, String)>,
    pub otlp_tls: TlsFiles,
    /// Added to every exported resource (`OTEL_RESOURCE_ATTRIBUTES`), after the traced
    /// process's own attributes, which win on a clash.
    pub resource_attributes: Vec<(String, String)>,
    pub output: Output,
    /// Capacity of each sink's queue, in spans.
    pub queue_capacity: usize,
    /// Most spans per OTLP export call.
    pub max_batch: usize,
    /// Longest a span waits in a partial OTLP batch.
    pub batch_timeout: Duration,
    /// Bound on one OTLP export attempt; at shutdown, how long export keeps trying a collector
    /// that fails.
    pub export_timeout: Duration,
    /// Bound on the encoded OTLP requests kept for a retry while the collector is down.
    pub buffer_bytes: usize,
    /// Request metrics and the agent's health (OTLP push, Prometheus page); off when `None`.
    pub metrics: Option<MetricsConfig>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::Grpc,
            otlp_gzip: false,
            otlp_headers: Vec::new(),
            otlp_tls: TlsFiles::default(),
            resource_attributes: Vec::new(),
            output: Output::Terminal,
            queue_capacity: 8192,
            max_batch: 512,
            batch_timeout: Duration::from_secs(1),
            export_timeout: Duration::from_secs(5),
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            metrics: None,
        }
    }
}

/// Counters, readable while running.
///
/// `exported`, `dropped_export_failed` and `failed_batches` describe the primary sink: OTLP when
/// configured, else the stdout output. `dropped_queue_full` counts a span once if any sink's queue
/// refused it (full, or closed after shutdown). `rejected_by_collector` counts spans of requests
/// the collector accepted while saying it rejected these (OTLP's partial success); `exported`
/// does not include them; nor those of requests it refused with an error that forbids a retry
/// (HTTP 400, gRPC INVALID_ARGUMENT), which count there too.
///
/// OTLP keeps the batches a collector could not take for a retry, within a bound in bytes
/// (`buffered_*`, the batch being sent not included); `dropped_buffer_full*` counts those it let
/// go, oldest first, to make room. `dropped_export_failed` counts the spans still unsent when
/// export stopped, and `failed_batches` their batches (with those the collector refused).
#[derive(Debug, Default)]
pub struct ExportStats {
    pub submitted: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub exported: AtomicU64,
    pub dropped_export_failed: AtomicU64,
    pub failed_batches: AtomicU64,
    pub rejected_by_collector: AtomicU64,
    /// Spans of `exported` that the collector took on a retry of their batch.
    pub exported_after_retry: AtomicU64,
    /// Attempts that failed in a way that may pass, each followed by a retry (or by shutdown).
    pub export_retries: AtomicU64,
    pub dropped_buffer_full: AtomicU64,
    pub dropped_buffer_full_batches: AtomicU64,
    /// Spans waiting in the retry buffer now.
    pub buffered_spans: AtomicU64,
    /// Bytes of encoded requests waiting in the retry buffer now.
    pub buffered_bytes: AtomicU64,
}

impl ExportStats {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Spans that were meant for the collector and will never reach it because it was down or
    /// failed: dropped from the retry buffer, or unsent when export stopped.
    pub fn lost_to_collector(&self) -> u64 {
        self.dropped_export_failed.load(Ordering::Relaxed) + self.dropped_buffer_full.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct ExportHandle {
    otlp: Option<SpanQueue>,
    output: Option<std::sync::mpsc::SyncSender<SpanRecord>>,
    stats: Arc<ExportStats>,
    metrics: Option<metrics::SpanMeter>,
}

impl ExportHandle {
    /// One span; see [`ExportHandle::submit_all`], which the agent uses.
    #[cfg(test)]
    pub fn submit(&self, span: SpanRecord) {
        self.submit_all(&mut vec![span]);
    }

    /// Takes every span out of `spans`. Never blocks, never awaits: each sink's bounded queue
    /// takes what it has room for; a span that a queue refused is counted as dropped once.
    /// Every span comes here, sampled or not: what must count them all (metrics) looks at them
    /// before the spans of traces the sampler dropped are left out, just before the outputs.
    pub fn submit_all(&self, spans: &mut Vec<SpanRecord>) {
        // First, before any span leaves `spans`: the metrics count every span, including those a
        // full queue drops and those of traces the sampler left out.
        if let Some(meter) = &self.metrics {
            meter.record_all(spans);
        }
        if spans.iter().any(|s| !s.sampled) {
            crate::span::recycle(spans.extract_if(.., |s| !s.sampled));
        }
        let n = spans.len();
        if n == 0 {
            return;
        }
        ExportStats::add(&self.stats.submitted, n);
        // The OTLP queue takes the oldest `taken` spans, in one message.
        let taken = self.otlp.as_ref().map_or(n, |q| q.reserve(n));
        let mut dropped = n - taken;
        if let Some(out) = &self.output {
            for (i, span) in spans.iter().enumerate() {
                let refused = out.try_send(span.clone()).is_err();
                dropped += usize::from(refused && i < taken);
            }
        }
        if let Some(q) = &self.otlp {
            spans.truncate(taken);
            if taken > 0 {
                // The caller's vector goes with the spans: an allocation per submit (one per drain
                // of the ring), not a copy of each span.
                let batch = std::mem::replace(spans, Vec::with_capacity(n));
                dropped += q.send(batch);
            }
        }
        spans.clear();
        if dropped > 0 {
            ExportStats::add(&self.stats.dropped_queue_full, dropped);
        }
    }

    pub fn stats(&self) -> Arc<ExportStats> {
        self.stats.clone()
    }
}

/// The OTLP exporter's queue, bounded in spans: spans travel in batches, one message per
/// [`ExportHandle::submit_all`] rather than one per span (a channel send per span, with its
/// atomics and block allocations, showed in the agent's profile).
#[derive(Clone)]
struct SpanQueue {
    tx: mpsc::Sender<Vec<SpanRecord>>,
    /// Spans sent and not yet taken into an export batch.
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl SpanQueue {
    /// The queue and its receiving end. Every message holds at least one span, so the channel
    /// never holds more messages than `capacity`: only `queued` bounds it.
    fn new(capacity: usize) -> (SpanQueue, SpanInbox) {
        let (tx, rx) = mpsc::channel(capacity);
        let queued = Arc::new(AtomicUsize::new(0));
        (SpanQueue { tx, queued: queued.clone(), capacity }, SpanInbox { rx, queued, carry: Vec::new() })
    }

    /// Room for up to `n` more spans: how many were granted.
    fn reserve(&self, n: usize) -> usize {
        let cap = self.capacity;
        let before = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| Some(q + n.min(cap.saturating_sub(q))))
            .unwrap_or_else(|q| q);
        n.min(cap.saturating_sub(before))
    }

    /// Sends spans that were granted room; returns how many were dropped (the exporter is gone).
    fn send(&self, batch: Vec<SpanRecord>) -> usize {
        match self.tx.try_send(batch) {
            Ok(()) => 0,
            Err(e) => {
                let n = match e {
                    mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b.len(),
                };
                self.queued.fetch_sub(n, Ordering::AcqRel);
                n
            }
        }
    }
}

/// The exporter's end of a [`SpanQueue`]: hands out spans up to a batch's room at a time.
pub(crate) struct SpanInbox {
    rx: mpsc::Receiver<Vec<SpanRecord>>,
    queued: Arc<AtomicUsize>,
    /// The rest of a message that did not fit the batch it was taken for.
    carry: Vec<SpanRecord>,
}

impl SpanInbox {
    /// Waits for spans and moves at most `room` of them into `batch`; 0 once the queue is closed
    /// and empty. Cancel-safe: nothing is taken out of the channel unless it is handed out.
    pub(crate) async fn recv_into(&mut self, batch: &mut Vec<SpanRecord>, room: usize) -> usize {
        if self.carry.is_empty() {
            match self.rx.recv().await {
                Some(spans) => self.carry = spans,
                None => return 0,
            }
        }
        self.move_into(batch, room)
    }

    /// [`SpanInbox::recv_into`] without waiting: 0 when nothing is queued.
    pub(crate) fn try_recv_into(&mut self, batch: &mut Vec<SpanRecord>, room: usize) -> usize {
        if self.carry.is_empty() {
            match self.rx.try_recv() {
                Ok(spans) => self.carry = spans,
                Err(_) => return 0,
            }
        }
        self.move_into(batch, room)
    }

    /// No more spans will be accepted; those queued are still handed out.
    pub(crate) fn close(&mut self) {
        self.rx.close();
    }

    fn move_into(&mut self, batch: &mut Vec<SpanRecord>, room: usize) -> usize {
        let k = room.min(self.carry.len());
        if batch.is_empty() && k == self.carry.len() {
            // The whole message is the batch: no span is moved.
            std::mem::swap(batch, &mut self.carry);
        } else {
            batch.extend(self.carry.drain(..k));
        }
        self.queued.fetch_sub(k, Ordering::AcqRel);
        k
    }
}

impl std::fmt::Debug for ExportHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportHandle").field("stats", &self.stats).finish_non_exhaustive()
    }
}

pub struct Exporter {
    otlp: Option<(oneshot::Sender<Instant>, tokio::task::JoinHandle<()>)>,
    output: Option<(Arc<AtomicBool>, oneshot::Receiver<()>)>,
    metrics: Option<metrics::Metrics>,
}

/// Checks OTLP settings without connecting or starting anything (endpoint URL, headers, TLS
/// files), so that the agent can refuse them before it loads a probe.
pub fn check_otlp(settings: &OtlpSettings) -> anyhow::Result<()> {
    let Some(endpoint) = &settings.traces_endpoint else { return Ok(()) };
    otlp::endpoint_url(endpoint, settings.protocol)?;
    transport::check(settings, endpoint)
}

/// Validates the config (bad endpoint URL → clear error) and spawns the export task(s) on the
/// current tokio runtime.
pub fn start(cfg: ExportConfig) -> anyhow::Result<(ExportHandle, Exporter)> {
    start_with_writer(cfg, || std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock()))
}

/// `start` with the stdout writer injectable, for tests. `make_writer` is called once per batch,
/// so stdout stays locked only while a batch is written.
fn start_with_writer<W, F>(cfg: ExportConfig, make_writer: F) -> anyhow::Result<(ExportHandle, Exporter)>
where
    W: std::io::Write,
    F: FnMut() -> W + Send + 'static,
{
    if cfg.queue_capacity == 0 || cfg.max_batch == 0 {
        bail!("export queue_capacity and max_batch must be at least 1");
    }
    if cfg.export_timeout.is_zero() {
        bail!("export_timeout must be greater than zero");
    }
    let runtime =
        tokio::runtime::Handle::try_current().context("export::start must be called from within a tokio runtime")?;
    let stats = Arc::new(ExportStats::default());

    let mut handle = ExportHandle { otlp: None, output: None, stats: stats.clone(), metrics: None };
    let mut exporter = Exporter { otlp: None, output: None, metrics: None };

    if let Some(endpoint) = &cfg.otlp_endpoint {
        let sink = otlp::OtlpSink::new(endpoint, cfg.otlp_protocol, &cfg, stats.clone())?;
        let (queue, inbox) = SpanQueue::new(cfg.queue_capacity);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = runtime.spawn(sink.run(inbox, stop_rx));
        handle.otlp = Some(queue);
        exporter.otlp = Some((stop_tx, task));
    }

    if let Some(metrics_cfg) = cfg.metrics.clone() {
        let queued = handle.otlp.as_ref().map(|q| q.queued.clone());
        let (meter, metrics) = metrics::start(metrics_cfg, stats.clone(), queued)?;
        handle.metrics = Some(meter);
        exporter.metrics = Some(metrics);
    }

    if cfg.output != Output::None {
        // The output reports into the stats only when it is the sole sink (see ExportStats).
        let counted = cfg.otlp_endpoint.is_none();
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.queue_capacity);
        let closing = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = oneshot::channel();
        let thread_closing = closing.clone();
        let thread_stats = counted.then(|| stats.clone());
        let kind = cfg.output;
        std::thread::Builder::new()
            .name("export-stdout".into())
            .spawn(move || {
                let sink: Box<dyn StdoutSink> = match kind {
                    Output::Json => Box::new(json::JsonSink::default()),
                    _ => Box::new(terminal::TerminalSink::new(stdout_is_tty())),
                };
                run_stdout(rx, sink, make_writer, &thread_closing, thread_stats.as_deref());
                let _ = done_tx.send(());
            })
            .context("spawning the stdout export thread")?;
        handle.output = Some(tx);
        exporter.output = Some((closing, done_rx));
    }

    Ok((handle, exporter))
}

impl Exporter {
    /// Flush everything queued (bounded by `deadline`), shut exporters down.
    pub async fn shutdown(mut self, deadline: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + deadline;
        let otlp = self.otlp.take();
        let output = self.output.take();

        let otlp_done = async move {
            let Some((stop, mut task)) = otlp else {
                return Ok(());
            };
            let _ = stop.send(until);
            // Small margin: the task bounds its own work by `until`, this only catches a wedge.
            let limit = tokio::time::Instant::from_std(until) + Duration::from_millis(200);
            match tokio::time::timeout_at(limit, &mut task).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::anyhow!("OTLP export task failed: {e}")),
                Err(_) => {
                    task.abort();
                    bail!("OTLP export did not finish within {deadline:?}")
                }
            }
        };
        let output_done = async move {
            let Some((closing, done)) = output else {
                return Ok(());
            };
            closing.store(true, Ordering::Release);
            match tokio::time::timeout_at(until.into(), done).await {
                Ok(_) => Ok(()),
                // The thread is blocked on stdout; it is detached and dies with the process.
                Err(_) => bail!("stdout output did not finish within {deadline:?}"),
            }
        };
        let (a, b) = tokio::join!(otlp_done, output_done);
        // After the spans: the last push then holds the final export counts.
        if let Some(metrics) = self.metrics.take() {
            metrics.shutdown(until.max(Instant::now() + metrics::FINAL_PUSH_MIN)).await;
        }
        a.and(b)
    }
}

impl Drop for Exporter {
    // Without `shutdown`, still stop the workers (best effort) rather than leak them.
    fn drop(&mut self) {
        if let Some((closing, _)) = &self.output {
            closing.store(true, Ordering::Release);
        }
        // Dropping the oneshot sender tells the OTLP task to flush and stop.
    }
}

/// A stdout output: accepts spans, renders whatever is due.
trait StdoutSink: Send {
    fn add(&mut self, span: SpanRecord, now: Instant);
    /// Writes what is ready (everything if `flush_all`), returns the number of spans written.
    fn write_due(&mut self, out: &mut dyn std::io::Write, now: Instant, flush_all: bool) -> std::io::Result<usize>;
}

/// How often the stdout thread wakes up when idle: bounds shutdown latency and trace grace periods.
const STDOUT_TICK: Duration = Duration::from_millis(100);

fn run_stdout<W: std::io::Write>(
    rx: std::sync::mpsc::Receiver<SpanRecord>,
    mut sink: Box<dyn StdoutSink>,
    mut make_writer: impl FnMut() -> W,
    closing: &AtomicBool,
    stats: Option<&ExportStats>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    // Bounds one round so a fast producer cannot keep us from writing.
    const MAX_ROUND: usize = 4096;
    loop {
        let mut last = false;
        let now = Instant::now();
        if closing.load(Ordering::Acquire) {
            // Drain what is queued; once we return, `rx` is dropped and later submits count as
            // dropped. A full round means more may follow: keep going (shutdown has its deadline).
            let mut n = 0;
            for span in rx.try_iter().take(MAX_ROUND) {
                sink.add(span, now);
                n += 1;
            }
            last = n < MAX_ROUND;
        } else {
            match rx.recv_timeout(STDOUT_TICK) {
                Ok(span) => {
                    sink.add(span, now);
                    for span in rx.try_iter().take(MAX_ROUND) {
                        sink.add(span, now);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => last = true,
            }
        }
        let mut out = make_writer();
        let written = sink.write_due(&mut out, Instant::now(), last).and_then(|n| out.flush().map(|()| n));
        match written {
            Ok(n) => {
                if let Some(stats) = stats {
                    ExportStats::add(&stats.exported, n);
                }
            }
            Err(e) => {
                // EPIPE and friends: nobody is reading any more; stop instead of panicking.
                tracing::warn!("stdout output stopped: {e}");
                if let Some(stats) = stats {
                    stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                }
                return; // Dropping `rx` makes later submits count as dropped.
            }
        }
        if last {
            return;
        }
    }
}

fn stdout_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(1) == 1 }
}

/// Lowercase hex of an id.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// A span of the test trace: ids from small numbers, times in ms after a fixed instant.
#[cfg(test)]
fn test_span(name: &str, id: u8, parent: Option<u8>, start_ms: u64, end_ms: u64) -> SpanRecord {
    use crate::span::{ProcessInfo, SpanKind, SpanStatus};
    const T0: u64 = 1_700_000_000_000_000_000;
    SpanRecord {
        trace_id: [0xab; 16],
        span_id: [0, 0, 0, 0, 0, 0, 0, id],
        parent_span_id: parent.map(|p| [0, 0, 0, 0, 0, 0, 0, p]),
        name: name.to_owned(),
        kind: if parent.is_none() { SpanKind::Server } else { SpanKind::Client },
        start_unix_nano: T0 + start_ms * 1_000_000,
        end_unix_nano: T0 + end_ms * 1_000_000,
        status: SpanStatus::Unset,
        attributes: Vec::new(),
        process: Arc::new(ProcessInfo {
            service_name: "kube-apiserver".into(),
            pid: 1234,
            executable_name: "kube-apiserver".into(),
            host_name: "node-1".into(),
        }),
        remote_parent: None,
        latency_class: crate::span::LatencyClass::Other,
        sampled: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn closed_port() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }

    fn cfg(output: Output) -> ExportConfig {
        ExportConfig {
            output,
            batch_timeout: Duration::from_millis(20),
            export_timeout: Duration::from_millis(300),
            ..ExportConfig::default()
        }
    }

    #[tokio::test]
    async fn json_output_end_to_end() {
        let buf = SharedBuf::default();
        let w = buf.clone();
        let (handle, exporter) = start_with_writer(cfg(Output::Json), move || w.clone()).unwrap();
        for id in 1..=3 {
            handle.submit(test_span("s", id, None, 0, 1));
        }
        exporter.shutdown(Duration::from_secs(2)).await.unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["span_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["0000000000000001", "0000000000000002", "0000000000000003"]);
        assert_eq!(handle.stats().exported.load(Ordering::Relaxed), 3);
        // After shutdown the queue is closed: counted, not lost silently, no panic.
        handle.submit(test_span("late", 9, None, 0, 1));
        assert_eq!(handle.stats().dropped_queue_full.load(Ordering::Relaxed), 1);
    }

    /// Spans of traces the sampler dropped reach no output and count nowhere in export.
    #[tokio::test]
    async fn unsampled_spans_are_left_out() {
        let buf = SharedBuf::default();
        let w = buf.clone();
        let (handle, exporter) = start_with_writer(cfg(Output::Json), move || w.clone()).unwrap();
        let mut spans: Vec<SpanRecord> = (1..=6).map(|id| test_span("s", id, None, 0, 1)).collect();
        for s in spans.iter_mut().filter(|s| s.span_id[7] % 2 == 0) {
            s.sampled = false;
        }
        handle.submit_all(&mut spans);
        assert!(spans.is_empty());
        exporter.shutdown(Duration::from_secs(2)).await.unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["span_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["0000000000000001", "0000000000000003", "0000000000000005"]);
        let stats = handle.stats();
        assert_eq!((stats.submitted.load(Ordering::Relaxed), stats.exported.load(Ordering::Relaxed)), (3, 3));
    }

    #[tokio::test]
    async fn terminal_output_flushes_pending_traces_on_shutdown() {
        let buf = SharedBuf::default();
        let w = buf.clone();
        let (handle, exporter) = start_with_writer(cfg(Output::Terminal), move || w.clone()).unwrap();
        // Child only: no root, so only shutdown prints it.
        handle.submit(test_span("etcd Range", 2, Some(1), 1, 2));
        exporter.shutdown(Duration::from_secs(2)).await.unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("etcd Range"), "{text}");
        assert!(text.contains("root span not seen"), "{text}");
    }

    #[tokio::test]
    async fn closed_stdout_stops_output_without_panic() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (handle, exporter) = start_with_writer(cfg(Output::Json), || Broken).unwrap();
        handle.submit(test_span("s", 1, None, 0, 1));
        let stats = handle.stats();
        let t = Instant::now();
        while stats.failed_batches.load(Ordering::Relaxed) == 0 && t.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.failed_batches.load(Ordering::Relaxed), 1);
        handle.submit(test_span("s", 2, None, 0, 1)); // output thread is gone
        assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 1);
        exporter.shutdown(Duration::from_secs(1)).await.unwrap();
    }

    fn ids(spans: &[SpanRecord]) -> Vec<u8> {
        spans.iter().map(|s| s.span_id[7]).collect()
    }

    /// The OTLP queue holds at most its capacity in spans, however they are grouped into
    /// messages; a message larger than a batch's room is handed out over several batches, in order.
    #[tokio::test]
    async fn span_queue_is_bounded_in_spans_and_keeps_their_order() {
        let (queue, mut inbox) = SpanQueue::new(10);
        let batch_of = |from: u8, n: u8| (from..from + n).map(|i| test_span("s", i, None, 0, 1)).collect::<Vec<_>>();
        assert_eq!(queue.reserve(6), 6);
        assert_eq!(queue.send(batch_of(0, 6)), 0);
        assert_eq!(queue.reserve(6), 4, "room for 4 more");
        assert_eq!(queue.send(batch_of(6, 4)), 0);
        assert_eq!(queue.reserve(1), 0, "full");

        let mut batch = Vec::new();
        assert_eq!(inbox.try_recv_into(&mut batch, 5), 5);
        assert_eq!(ids(&batch), [0, 1, 2, 3, 4]);
        assert_eq!(queue.reserve(3), 3, "what was handed out is room again");
        assert_eq!(queue.send(batch_of(10, 3)), 0);
        let mut next = Vec::new();
        assert_eq!(inbox.recv_into(&mut next, 100).await, 1, "the rest of the first message");
        assert_eq!(inbox.try_recv_into(&mut next, 100), 4);
        assert_eq!(inbox.try_recv_into(&mut next, 2), 2, "a batch's room bounds a message");
        assert_eq!(inbox.try_recv_into(&mut next, 100), 1);
        assert_eq!(ids(&next), [5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(inbox.try_recv_into(&mut next, 100), 0, "nothing left");
        assert_eq!(queue.queued.load(Ordering::Relaxed), 0);

        // Closed: queued spans are still handed out, new ones are refused and not counted.
        assert_eq!(queue.reserve(2), 2);
        assert_eq!(queue.send(batch_of(20, 2)), 0);
        inbox.close();
        assert_eq!(queue.reserve(1), 1);
        assert_eq!(queue.send(batch_of(30, 1)), 1, "refused after close");
        let mut last = Vec::new();
        assert_eq!(inbox.recv_into(&mut last, 100).await, 2);
        assert_eq!(inbox.recv_into(&mut last, 100).await, 0);
        assert_eq!(ids(&last), [20, 21]);
        assert_eq!(queue.queued.load(Ordering::Relaxed), 0);
    }

    /// `submit_all` takes every span out of the caller's vector; what the queue has no room for
    /// is counted as dropped, the oldest spans kept.
    #[tokio::test]
    async fn submit_all_keeps_what_the_queue_has_room_for() {
        let cfg = ExportConfig { otlp_endpoint: Some(closed_port()), queue_capacity: 4, ..cfg(Output::None) };
        let (handle, exporter) = start(cfg).unwrap();
        let mut spans: Vec<SpanRecord> = (0..10).map(|i| test_span("s", i, None, 0, 1)).collect();
        handle.submit_all(&mut spans);
        assert!(spans.is_empty());
        let stats = handle.stats();
        assert_eq!(stats.submitted.load(Ordering::Relaxed), 10);
        assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 6);
        let otlp = handle.otlp.as_ref().unwrap();
        assert_eq!(otlp.queued.load(Ordering::Relaxed), 4);
        exporter.shutdown(Duration::from_millis(500)).await.ok();
        // The collector is down: the four queued spans failed to export, the others never left.
        assert_eq!(stats.dropped_export_failed.load(Ordering::Relaxed), 4);
    }

    /// A full queue drops and counts, and `submit` returns at once, whether the OTLP collector is
    /// down or stdout is stuck (a paused pager).
    #[tokio::test]
    async fn submit_never_blocks_when_queues_are_full() {
        struct Stuck;
        impl Write for Stuck {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_secs(3));
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let cfg = ExportConfig { otlp_endpoint: Some(closed_port()), queue_capacity: 4, ..cfg(Output::Json) };
        let (handle, exporter) = start_with_writer(cfg, || Stuck).unwrap();
        let t = Instant::now();
        for i in 0..10_000u32 {
            handle.submit(test_span("s", (i % 200) as u8, None, 0, 1));
        }
        let took = t.elapsed();
        assert!(took < Duration::from_millis(500), "submit blocked: {took:?}");
        let stats = handle.stats();
        assert_eq!(stats.submitted.load(Ordering::Relaxed), 10_000);
        // The single-threaded test runtime cannot run the OTLP task during the loop, so its queue
        // took exactly 4; the stdout thread may have taken one more before getting stuck.
        let dropped = stats.dropped_queue_full.load(Ordering::Relaxed);
        assert!(dropped >= 10_000 - 4 - 1, "dropped {dropped}");

        // Shutdown is bounded although stdout never finishes.
        let t = Instant::now();
        let res = exporter.shutdown(Duration::from_millis(800)).await;
        assert!(t.elapsed() < Duration::from_millis(1500), "shutdown took {:?}", t.elapsed());
        assert!(res.unwrap_err().to_string().contains("stdout"));
        // OTLP is the primary sink: everything it accepted is accounted for.
        let accounted = stats.exported.load(Ordering::Relaxed)
            + stats.dropped_export_failed.load(Ordering::Relaxed)
            + stats.dropped_queue_full.load(Ordering::Relaxed);
        assert!(accounted >= 10_000 - 1, "accounted {accounted}");
        assert_eq!(stats.exported.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn rejects_bad_config() {
        let bad = |endpoint: &str| {
            let cfg = ExportConfig { otlp_endpoint: Some(endpoint.into()), ..cfg(Output::None) };
            start(cfg).err().map(|e| e.to_string()).unwrap_or_default()
        };
        assert!(bad("localhost:4317").contains("missing http:// scheme"));
        assert!(bad("ftp://collector:4317").contains("scheme must be http or https"));
        assert!(bad("http://:4317").contains("host"));
        assert!(bad("http://collector:99999").contains("port"));
        let zero = ExportConfig { queue_capacity: 0, ..cfg(Output::None) };
        assert!(start(zero).is_err());
    }

    #[test]
    fn start_needs_a_runtime() {
        let err = start(cfg(Output::None)).err().unwrap();
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }

    #[test]
    fn handles_can_move_across_threads() {
        fn send_sync<T: Send + Sync + Clone>() {}
        fn send<T: Send>() {}
        send_sync::<ExportHandle>();
        send::<Exporter>();
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
