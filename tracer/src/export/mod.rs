//! Export stage: finished spans go to an OTLP collector and/or to stdout (terminal view or JSON lines).
//!
//! Capture must never wait on export, so every sink has its own bounded queue that `submit` fills
//! with `try_send`; a full queue drops the span and counts it. OTLP runs as a tokio task; the stdout
//! outputs run on a plain thread because writes to a paused pipe block, and a blocked tokio worker
//! would stall capture.

mod json;
mod otlp;
mod terminal;

/// The OTLP request encoder, for `examples/agent_cost.rs`, which measures the agent's work per span.
pub use otlp::export_request;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

#[derive(Clone, Debug)]
pub struct ExportConfig {
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: OtlpProtocol,
    /// Compress OTLP requests with gzip (gRPC message compression, or `Content-Encoding: gzip`).
    pub otlp_gzip: bool,
    pub output: Output,
    /// Capacity of each sink's queue, in spans.
    pub queue_capacity: usize,
    /// Most spans per OTLP export call.
    pub max_batch: usize,
    /// Longest a span waits in a partial OTLP batch.
    pub batch_timeout: Duration,
    /// Bound on one OTLP export call, retries included.
    pub export_timeout: Duration,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::Grpc,
            otlp_gzip: false,
            output: Output::Terminal,
            queue_capacity: 8192,
            max_batch: 512,
            batch_timeout: Duration::from_secs(1),
            export_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters, readable while running.
///
/// `exported`, `dropped_export_failed` and `failed_batches` describe the primary sink: OTLP when
/// configured, else the stdout output. `dropped_queue_full` counts a span once if any sink's queue
/// refused it (full, or closed after shutdown). `rejected_by_collector` counts spans of requests
/// the collector accepted while saying it rejected these (OTLP's partial success); `exported`
/// does not include them.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub submitted: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub exported: AtomicU64,
    pub dropped_export_failed: AtomicU64,
    pub failed_batches: AtomicU64,
    pub rejected_by_collector: AtomicU64,
}

impl ExportStats {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct ExportHandle {
    otlp: Option<mpsc::Sender<SpanRecord>>,
    output: Option<std::sync::mpsc::SyncSender<SpanRecord>>,
    stats: Arc<ExportStats>,
}

impl ExportHandle {
    /// Never blocks, never awaits: try_send into the bounded queue; a full queue counts a drop.
    pub fn submit(&self, span: SpanRecord) {
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        let mut dropped = false;
        match (&self.otlp, &self.output) {
            (Some(otlp), Some(out)) => {
                dropped |= out.try_send(span.clone()).is_err();
                dropped |= otlp.try_send(span).is_err();
            }
            (Some(otlp), None) => dropped = otlp.try_send(span).is_err(),
            (None, Some(out)) => dropped = out.try_send(span).is_err(),
            (None, None) => {}
        }
        if dropped {
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> Arc<ExportStats> {
        self.stats.clone()
    }
}

impl std::fmt::Debug for ExportHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportHandle")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

pub struct Exporter {
    otlp: Option<(oneshot::Sender<Instant>, tokio::task::JoinHandle<()>)>,
    output: Option<(Arc<AtomicBool>, oneshot::Receiver<()>)>,
}

/// Validates the config (bad endpoint URL → clear error) and spawns the export task(s) on the
/// current tokio runtime.
pub fn start(cfg: ExportConfig) -> anyhow::Result<(ExportHandle, Exporter)> {
    start_with_writer(cfg, || {
        std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock())
    })
}

/// `start` with the stdout writer injectable, for tests. `make_writer` is called once per batch,
/// so stdout stays locked only while a batch is written.
fn start_with_writer<W, F>(
    cfg: ExportConfig,
    make_writer: F,
) -> anyhow::Result<(ExportHandle, Exporter)>
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
    let runtime = tokio::runtime::Handle::try_current()
        .context("export::start must be called from within a tokio runtime")?;
    let stats = Arc::new(ExportStats::default());

    let mut handle = ExportHandle {
        otlp: None,
        output: None,
        stats: stats.clone(),
    };
    let mut exporter = Exporter {
        otlp: None,
        output: None,
    };

    if let Some(endpoint) = &cfg.otlp_endpoint {
        let sink = otlp::OtlpSink::new(endpoint, cfg.otlp_protocol, &cfg, stats.clone())?;
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = runtime.spawn(sink.run(rx, stop_rx));
        handle.otlp = Some(tx);
        exporter.otlp = Some((stop_tx, task));
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
                run_stdout(
                    rx,
                    sink,
                    make_writer,
                    &thread_closing,
                    thread_stats.as_deref(),
                );
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
    fn write_due(
        &mut self,
        out: &mut dyn std::io::Write,
        now: Instant,
        flush_all: bool,
    ) -> std::io::Result<usize>;
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
        let written = sink
            .write_due(&mut out, Instant::now(), last)
            .and_then(|n| out.flush().map(|()| n));
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
        kind: if parent.is_none() {
            SpanKind::Server
        } else {
            SpanKind::Client
        },
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
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["span_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            ids,
            ["0000000000000001", "0000000000000002", "0000000000000003"]
        );
        assert_eq!(handle.stats().exported.load(Ordering::Relaxed), 3);
        // After shutdown the queue is closed: counted, not lost silently, no panic.
        handle.submit(test_span("late", 9, None, 0, 1));
        assert_eq!(handle.stats().dropped_queue_full.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn terminal_output_flushes_pending_traces_on_shutdown() {
        let buf = SharedBuf::default();
        let w = buf.clone();
        let (handle, exporter) =
            start_with_writer(cfg(Output::Terminal), move || w.clone()).unwrap();
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
        while stats.failed_batches.load(Ordering::Relaxed) == 0
            && t.elapsed() < Duration::from_secs(2)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.failed_batches.load(Ordering::Relaxed), 1);
        handle.submit(test_span("s", 2, None, 0, 1)); // output thread is gone
        assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 1);
        exporter.shutdown(Duration::from_secs(1)).await.unwrap();
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
        let cfg = ExportConfig {
            otlp_endpoint: Some(closed_port()),
            queue_capacity: 4,
            ..cfg(Output::Json)
        };
        let (handle, exporter) = start_with_writer(cfg, || Stuck).unwrap();
        let t = Instant::now();
        for i in 0..10_000u32 {
            handle.submit(test_span("s", (i % 200) as u8, None, 0, 1));
        }
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "submit blocked: {took:?}"
        );
        let stats = handle.stats();
        assert_eq!(stats.submitted.load(Ordering::Relaxed), 10_000);
        // The single-threaded test runtime cannot run the OTLP task during the loop, so its queue
        // took exactly 4; the stdout thread may have taken one more before getting stuck.
        let dropped = stats.dropped_queue_full.load(Ordering::Relaxed);
        assert!(dropped >= 10_000 - 4 - 1, "dropped {dropped}");

        // Shutdown is bounded although stdout never finishes.
        let t = Instant::now();
        let res = exporter.shutdown(Duration::from_millis(800)).await;
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "shutdown took {:?}",
            t.elapsed()
        );
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
            let cfg = ExportConfig {
                otlp_endpoint: Some(endpoint.into()),
                ..cfg(Output::None)
            };
            start(cfg).err().map(|e| e.to_string()).unwrap_or_default()
        };
        assert!(bad("localhost:4317").contains("missing http:// scheme"));
        assert!(bad("https://collector:4317").contains("https is not supported"));
        assert!(bad("http://:4317").contains("host"));
        assert!(bad("http://collector:99999").contains("port"));
        let zero = ExportConfig {
            queue_capacity: 0,
            ..cfg(Output::None)
        };
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
