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
    for endpoint in [&settings.traces_endpoint, &settings.metrics_endpoint].into_iter().flatten() {
        otlp::endpoint_url(endpoint, settings.protocol)?;
        transport::check(settings, endpoint)?;
    }
    Ok(())
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
        let (meter, metrics) = metrics::start(metrics_cfg, &cfg.resource_attributes, stats.clone(), queued)?;
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

#[cfg(test)]
mod tests;
