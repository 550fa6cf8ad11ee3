//! The exporter through collector outages and refusals, against real gRPC and HTTP collectors on
//! loopback: what is buffered, delivered (in order, once), dropped and counted.

use super::tests::{cfg, drained, grpc_collector, grpc_collector_failing, http_collector_failing, send_all};
use super::*;
use crate::export::{ExportHandle, start, tests::test_span};
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;

/// What a collector that starts on `addr` later receives: span names in arrival order.
enum Later {
    Grpc(
        tokio::sync::mpsc::UnboundedReceiver<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ),
    Http(
        tokio::sync::mpsc::UnboundedReceiver<(
            String,
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        )>,
    ),
}

impl Later {
    async fn start(addr: std::net::SocketAddr, protocol: OtlpProtocol) -> Later {
        let listener = TcpListener::bind(addr).await.unwrap();
        match protocol {
            OtlpProtocol::Grpc => Later::Grpc(grpc_collector(listener).await),
            OtlpProtocol::Http => Later::Http(http_collector_failing(listener, 0, "503 Service Unavailable", 0)),
        }
    }

    /// Names of the spans received so far.
    fn names(&mut self) -> Vec<String> {
        let reqs = match self {
            Later::Grpc(rx) => drained(rx),
            Later::Http(rx) => drained(rx).into_iter().map(|(_, r)| r).collect(),
        };
        reqs.iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| s.name.clone())
            .collect()
    }
}

/// A loopback address nothing listens on (until a test starts a collector there).
fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// While the collector is down: `n` spans submitted a little apart (so, in several batches),
/// then a wait until the exporter has failed at least twice.
async fn submit_while_down(handle: &ExportHandle, n: u8) {
    for i in 0..n {
        handle.submit(test_span(&format!("s{i}"), i, None, 0, 1));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let stats = handle.stats();
    let t = Instant::now();
    while stats.export_retries.load(Ordering::Relaxed) < 2 {
        assert!(t.elapsed() < Duration::from_secs(5), "no failed attempt seen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Receives until `want` names came, or 10 s passed.
async fn receive(later: &mut Later, want: usize) -> Vec<String> {
    let mut got = Vec::new();
    let t = Instant::now();
    while got.len() < want && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        got.extend(later.names());
    }
    got
}

fn names(range: std::ops::Range<u8>) -> Vec<String> {
    range.map(|i| format!("s{i}")).collect()
}

/// Spans made while the collector is down wait in the buffer; once it listens again (same
/// address), each is delivered once, oldest first, and nothing is counted as lost.
#[tokio::test]
async fn an_outage_is_buffered_and_delivered_in_order_once() {
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::Http] {
        let addr = free_addr();
        let cfg =
            ExportConfig { export_timeout: Duration::from_millis(300), ..cfg(format!("http://{addr}"), protocol) };
        let (handle, exporter) = start(cfg).unwrap();
        let stats = handle.stats();
        submit_while_down(&handle, 6).await;
        assert!(stats.buffered_spans.load(Ordering::Relaxed) >= 1, "{protocol:?}: nothing buffered");
        assert!(stats.buffered_bytes.load(Ordering::Relaxed) > 0, "{protocol:?}");
        let mut later = Later::start(addr, protocol).await;
        let got = receive(&mut later, 6).await;
        exporter.shutdown(Duration::from_secs(2)).await.unwrap();
        let mut got = got;
        got.extend(later.names());
        assert_eq!(got, names(0..6), "{protocol:?}: every span once, in order");
        assert_eq!(stats.exported.load(Ordering::Relaxed), 6, "{protocol:?}");
        let after_retry = stats.exported_after_retry.load(Ordering::Relaxed);
        assert!((1..=6).contains(&after_retry), "{protocol:?}: {after_retry} delivered after a retry");
        assert_eq!(stats.lost_to_collector(), 0, "{protocol:?}");
        assert_eq!(stats.dropped_buffer_full_batches.load(Ordering::Relaxed), 0, "{protocol:?}");
        assert_eq!(stats.buffered_spans.load(Ordering::Relaxed), 0, "{protocol:?}");
        assert_eq!(stats.buffered_bytes.load(Ordering::Relaxed), 0, "{protocol:?}");
    }
}

/// A buffer too small for the outage keeps the newest batches: the oldest are dropped and
/// counted, and what was delivered plus what was dropped is everything submitted.
#[tokio::test]
async fn a_full_buffer_drops_the_oldest_and_counts_them() {
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::Http] {
        let addr = free_addr();
        // Room for about one batch of one span.
        let cfg = ExportConfig {
            export_timeout: Duration::from_millis(300),
            buffer_bytes: 1,
            ..cfg(format!("http://{addr}"), protocol)
        };
        let (handle, exporter) = start(cfg).unwrap();
        let stats = handle.stats();
        submit_while_down(&handle, 6).await;
        let mut later = Later::start(addr, protocol).await;
        let dropped = stats.dropped_buffer_full.load(Ordering::Relaxed) as usize;
        assert!(dropped >= 1, "{protocol:?}: nothing dropped");
        let mut got = receive(&mut later, 6 - dropped).await;
        exporter.shutdown(Duration::from_secs(2)).await.unwrap();
        got.extend(later.names());
        let dropped = stats.dropped_buffer_full.load(Ordering::Relaxed) as usize;
        assert_eq!(got.len() + dropped, 6, "{protocol:?}: received {got:?}, {dropped} dropped");
        // The newest survive, in order.
        assert_eq!(got, names(6 - got.len() as u8..6), "{protocol:?}");
        assert!(stats.dropped_buffer_full_batches.load(Ordering::Relaxed) >= 1);
        assert_eq!(stats.exported.load(Ordering::Relaxed) as usize, got.len());
        assert_eq!(stats.lost_to_collector() as usize, dropped);
        assert_eq!(stats.dropped_export_failed.load(Ordering::Relaxed), 0);
    }
}

/// An answer that forbids a retry (HTTP 400, gRPC INVALID_ARGUMENT; RESOURCE_EXHAUSTED without a
/// delay) drops the batch at once, counted as rejected: the collector is not asked again.
#[tokio::test]
async fn refused_batches_are_not_retried() {
    for failure in [tonic::Status::invalid_argument("bad span"), tonic::Status::resource_exhausted("full")] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (mut rx, _) = grpc_collector_failing(listener, 1, failure, 0).await;
        let (handle, exporter) = start(cfg(url, OtlpProtocol::Grpc)).unwrap();
        send_all(&handle, exporter).await;
        check_refused(&handle);
        assert!(drained(&mut rx).is_empty());
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut rx = http_collector_failing(listener, 1, "400 Bad Request", 0);
    let (handle, exporter) = start(cfg(url, OtlpProtocol::Http)).unwrap();
    send_all(&handle, exporter).await;
    check_refused(&handle);
    assert!(drained(&mut rx).is_empty());
}

fn check_refused(handle: &ExportHandle) {
    let stats = handle.stats();
    assert_eq!(stats.rejected_by_collector.load(Ordering::Relaxed), 3);
    assert_eq!(stats.failed_batches.load(Ordering::Relaxed), 1);
    assert_eq!(stats.export_retries.load(Ordering::Relaxed), 0);
    assert_eq!(stats.exported.load(Ordering::Relaxed), 0);
    assert_eq!(stats.lost_to_collector(), 0);
}

/// A throttling collector's RESOURCE_EXHAUSTED with a `RetryInfo` delay is retried after it.
#[tokio::test]
async fn resource_exhausted_with_a_retry_delay_is_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let details = response::retry_info_details(Duration::from_millis(300));
    let failure = tonic::Status::with_details(tonic::Code::ResourceExhausted, "slow down", details.into());
    let (mut rx, _) = grpc_collector_failing(listener, 1, failure, 0).await;
    let (handle, exporter) = start(cfg(url, OtlpProtocol::Grpc)).unwrap();
    let t = Instant::now();
    send_all(&handle, exporter).await;
    assert!(t.elapsed() >= Duration::from_millis(300), "retried before the delay asked for");
    let stats = handle.stats();
    assert_eq!(stats.export_retries.load(Ordering::Relaxed), 1);
    assert_eq!(stats.exported_after_retry.load(Ordering::Relaxed), 3);
    assert_eq!(stats.rejected_by_collector.load(Ordering::Relaxed), 0);
    assert_eq!(drained(&mut rx).len(), 1);
}

#[test]
fn backoff_doubles_up_to_its_cap_and_honours_a_longer_ask() {
    let mut b = Backoff::default();
    let pauses: Vec<Duration> = (0..10).map(|_| b.next(None)).collect();
    assert!(pauses[0] >= FIRST_BACKOFF && pauses[0] < FIRST_BACKOFF * 2, "{pauses:?}");
    assert!(pauses[1] >= FIRST_BACKOFF * 2, "{pauses:?}");
    assert!(pauses.iter().all(|&p| p <= MAX_BACKOFF + MAX_BACKOFF / 4), "{pauses:?}");
    assert!(pauses[9] >= MAX_BACKOFF, "{pauses:?}");
    assert_eq!(b.next(Some(Duration::from_secs(20))), Duration::from_secs(20));
    assert_eq!(b.next(Some(Duration::from_secs(3_600))), MAX_ASKED_DELAY);
    b.reset();
    assert!(b.next(Some(Duration::from_millis(1))) < FIRST_BACKOFF * 2);
}

/// Shutdown while export pauses between attempts (the pause has grown past the shutdown's
/// deadline): it ends the pause, tries once more, and counts what the collector never took, all
/// within the deadline; also when, as in the agent, every handle is dropped before the shutdown.
#[tokio::test]
async fn shutdown_cuts_a_long_pause_short() {
    for (protocol, drop_handle) in [(OtlpProtocol::Grpc, false), (OtlpProtocol::Http, true), (OtlpProtocol::Grpc, true)]
    {
        let addr = free_addr();
        let (handle, exporter) = start(cfg(format!("http://{addr}"), protocol)).unwrap();
        let stats = handle.stats();
        handle.submit(test_span("s", 1, None, 0, 1));
        // Pauses of 0.1, 0.2, 0.4, 0.8 s: the next one is 1.6 s or more.
        let t = Instant::now();
        while stats.export_retries.load(Ordering::Relaxed) < 5 {
            assert!(t.elapsed() < Duration::from_secs(10), "{protocol:?}: too few failed attempts");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let retries = stats.export_retries.load(Ordering::Relaxed);
        if drop_handle {
            drop(handle);
        }
        exporter.shutdown(Duration::from_millis(1_000)).await.unwrap();
        assert!(stats.export_retries.load(Ordering::Relaxed) > retries, "{protocol:?}: no attempt at shutdown");
        assert_eq!(stats.dropped_export_failed.load(Ordering::Relaxed), 1, "{protocol:?}");
        assert_eq!(stats.failed_batches.load(Ordering::Relaxed), 1, "{protocol:?}");
    }
}
