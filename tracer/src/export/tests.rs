use super::*;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    /// The `span_id` of each JSON line written so far.
    fn json_span_ids(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["span_id"].as_str().unwrap().to_owned())
            .collect()
    }
}
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
    let ids = buf.json_span_ids();
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
    let ids = buf.json_span_ids();
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

/// JSON lines and OTLP carry each span's trace id, span id and parent span id as the span has
/// them, over a forest as correlation emits it: two traces, three levels across two processes (an
/// etcd server span under the apiserver's client span), a request under a remote caller, and a
/// span left a root.
#[test]
fn json_and_otlp_carry_the_same_ids_as_the_spans() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    let ids = |trace: u8, span: u8| {
        let trace_id: [u8; 16] = std::array::from_fn(|i| trace.wrapping_mul(31).wrapping_add(i as u8 * 17));
        let span_id: [u8; 8] = std::array::from_fn(|i| span.wrapping_mul(13).wrapping_add(i as u8 * 7 + 1));
        (trace_id, span_id)
    };
    let span = |name: &str, trace: u8, id: u8, parent: Option<u8>| {
        let mut s = test_span(name, id, None, 0, 10);
        (s.trace_id, s.span_id) = ids(trace, id);
        s.parent_span_id = parent.map(|p| ids(trace, p).1);
        s
    };
    let mut etcd_server = span("etcd Range", 1, 3, Some(2));
    etcd_server.process = Arc::new(crate::span::ProcessInfo { pid: 99, ..(*etcd_server.process).clone() });
    let mut remote = span("GET /api/v1/pods", 2, 5, Some(200));
    remote.remote_parent = Some(crate::span::RemoteParent {
        trace_id: remote.trace_id,
        span_id: remote.parent_span_id.unwrap(),
        sampled: true,
    });
    let spans = vec![
        span("GET /api/v1/namespaces/{namespace}/pods/{name}", 1, 1, None),
        span("etcd Range", 1, 2, Some(1)),
        etcd_server,
        span("POST /validate", 1, 4, Some(1)),
        remote,
        span("etcd Txn", 2, 6, Some(5)),
        span("etcd Watch", 3, 7, None),
    ];
    let want: HashMap<String, (String, String)> = spans
        .iter()
        .map(|s| (hex(&s.span_id), (hex(&s.trace_id), s.parent_span_id.map(|p| hex(&p)).unwrap_or_default())))
        .collect();
    assert_eq!(want.len(), spans.len());

    let json: HashMap<String, (String, String)> = spans
        .iter()
        .map(|s| {
            let v: serde_json::Value = serde_json::from_str(&json::json_line(s)).unwrap();
            let text = |k: &str| v[k].as_str().unwrap().to_owned();
            (text("span_id"), (text("trace_id"), text("parent_span_id")))
        })
        .collect();
    assert_eq!(json, want);

    let mut out = Vec::new();
    let start = otlp::export_request(&spans, &mut out);
    let req = ExportTraceServiceRequest::decode(&out[start..]).unwrap();
    let otlp: HashMap<String, (String, String)> = req
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| (hex(&s.span_id), (hex(&s.trace_id), hex(&s.parent_span_id))))
        .collect();
    assert_eq!(otlp, want);
    assert_eq!(req.resource_spans.len(), 2, "one resource per process");
}

/// A span of the test trace: ids from small numbers, times in ms after a fixed instant.
pub(super) fn test_span(name: &str, id: u8, parent: Option<u8>, start_ms: u64, end_ms: u64) -> SpanRecord {
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
        origin: Default::default(),
    }
}
