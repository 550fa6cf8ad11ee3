//! Waits end, memory stays bounded, and link kinds the wire contradicts are switched off.

use super::*;

const CONN: u64 = 0xc000_0100;
const WRITER: u64 = 0xc000_0200;
const BACKGROUND: u64 = 0xc000_0300;

fn etcd(stream: u32, start_ms: u64, end_ms: u64) -> At {
    At { pid: PID, goroutine: WRITER, fd: 9, stream: Some(stream), start_ms, end_ms }
}

/// A call waits for its request the hold time, then goes out as a root; one whose caller's
/// HTTP/2 request is known to be running waits longer, as long as allowed; a server span waits
/// for its traced client end the hold time.
#[test]
fn waits_end_at_their_deadline() {
    const HANDLER: u64 = 0xc000_0501;
    let mut r = Run::new();
    r.grpc(PID, 10, WRITER, 1, BACKGROUND);
    r.client("background", etcd(1, 10, 11));
    r.h2(PID, 10, HANDLER, 7, 1);
    r.grpc(PID, 12, WRITER, 3, HANDLER);
    r.client("under a running request", etcd(3, 12, 13));
    let mut server =
        Run::span(SpanKind::Server, "server", At { pid: PID, fd: 4, start_ms: 12, end_ms: 13, ..At::default() });
    server.origin.local = Some(([127, 0, 0, 1], 2379).into());
    server.origin.peer = Some(([127, 0, 0, 1], 40_000).into());
    server.origin.peer_traced = true;
    r.hand(server);
    r.tick(11 + 1_999);
    assert_eq!(r.c.stats().held, 3);
    r.tick(13 + 2_000);
    assert_eq!(r.parent("background"), None);
    assert_eq!(r.parent("server"), None);
    assert!(!r.gone_out("under a running request"));
    r.tick(13 + 29_999);
    assert_eq!(r.c.stats().held, 1);
    r.tick(13 + 30_000);
    assert_eq!(r.parent("under a running request"), None);
    r.check_ids();
    let s = r.c.stats();
    assert_eq!((s.held, s.expired_waits), (0, 3));
    let reasons = &s.root_reasons;
    assert_eq!((reasons.no_request, reasons.parent_not_seen, reasons.peer_not_seen), (1, 1, 1));
}

/// At shutdown everything held goes out; a process that goes away lets its waiting spans go and
/// its goroutines be forgotten.
#[test]
fn shutdown_and_a_process_gone_let_every_span_go() {
    let mut r = Run::new();
    r.grpc(PID, 10, WRITER, 1, BACKGROUND);
    r.client("waiting", etcd(1, 10, 11));
    r.grpc(PID + 1, 10, WRITER, 1, BACKGROUND);
    r.client("waiting elsewhere", At { pid: PID + 1, ..etcd(1, 10, 11) });
    r.c.forget_process(PID, &mut r.out);
    assert_eq!(r.parent("waiting"), None);
    assert!(!r.c.processes.contains_key(&PID));
    r.c.finish(&mut r.out);
    assert_eq!(r.parent("waiting elsewhere"), None);
    r.check_ids();
    let s = r.c.stats();
    assert_eq!((s.held, s.root_reasons.process_gone, s.root_reasons.no_request), (0, 1, 1));
}

/// 100k short-lived goroutines churned through a process, their `g`s reused: what is known of
/// them stays within its bounds, and none inherits the request an earlier life of its `g` served.
#[test]
fn churned_goroutines_stay_bounded_and_never_inherit() {
    let cap = 4_096;
    let mut r = Run::with(CorrelateConfig { goroutines_per_process: cap, ..CorrelateConfig::default() });
    let g = |i: u64| 0xc100_0000 + 8 * (i % 20_000);
    // 1000 goroutines spawned while a request was served.
    for i in 0..1_000 {
        r.spawn(PID, 10, g(i), CONN);
    }
    r.server("GET /r1", At { pid: PID, goroutine: CONN, fd: 5, start_ms: 9, end_ms: 20, ..At::default() });
    // Then 100k more from a goroutine that serves nothing, reusing the same `g`s.
    for i in 0..100_000 {
        r.spawn(PID, 30 + i / 1_000, g(i), BACKGROUND);
    }
    let facts = &r.c.processes[&PID];
    assert!(facts.goroutines() <= cap, "{} goroutines known", facts.goroutines());
    assert!(facts.entries() <= 4 * cap, "{} entries", facts.entries());
    // Calls from goroutines whose `g` served r1 in an earlier life.
    for i in 0..100 {
        r.grpc(PID, 200, WRITER, 2 * i as u32 + 1, g(i));
        r.client(&format!("etcd {i}"), etcd(2 * i as u32 + 1, 200, 201));
    }
    r.tick(201 + 2_000);
    assert!((0..100).all(|i| r.parent(&format!("etcd {i}")).is_none()));
    r.check_ids();
    let s = r.c.stats();
    assert!(s.goroutines_evicted > 0 && s.goroutines <= cap as u64);
    assert_eq!(s.root_reasons.no_request, 100);
    // Old facts are forgotten with age: the process's with them.
    r.tick(201 + 60_000);
    assert!(r.c.processes.is_empty());
    assert_eq!(r.c.stats().goroutines, 0);
}

/// A flood of spans that wait: as many as allowed are held, the rest go out at once as roots
/// (counted); when their waits end nothing is left behind.
#[test]
fn a_flood_of_waiting_spans_stays_bounded() {
    let mut r = Run::with(CorrelateConfig { max_held: 1_000, ..CorrelateConfig::default() });
    for i in 0..10_000u64 {
        let at = At { pid: PID, goroutine: 0xc200_0000 + 8 * i, fd: 9, stream: Some(1), start_ms: 10, end_ms: 11 };
        r.client(&format!("call {i}"), at);
    }
    let s = r.c.stats();
    assert_eq!((s.held, s.dropped_to_root, r.out.len()), (1_000, 9_000, 9_000));
    r.tick(11 + 2_000);
    assert_eq!(r.out.len(), 10_000);
    assert_eq!(r.c.held.entries(), 0, "nothing left: no deadline, no index, nothing remembered");
    // Spans gone out that children may still join are bounded too.
    let mut r = Run::with(CorrelateConfig { max_remembered: 500, ..CorrelateConfig::default() });
    for i in 0..5_000 {
        r.server(
            &format!("GET /{i}"),
            At { pid: PID, goroutine: CONN, fd: 5, start_ms: i, end_ms: i + 1, ..At::default() },
        );
    }
    assert!(r.c.held.entries() <= 500);
    r.check_ids();
}

/// HTTP/2 handler links that name streams the wire never shows on their connection (a layout
/// read wrong) are disagreements; past the threshold the kind is switched off for the process,
/// once, and its links are no longer believed.
#[test]
fn http2_handler_links_the_wire_contradicts_are_switched_off() {
    let mut r = Run::with(CorrelateConfig { remember: Duration::from_secs(1), ..CorrelateConfig::default() });
    for s in 1..=20u32 {
        let t = u64::from(s) * 10;
        r.h2(PID, t, 0xc000_0500 + u64::from(s), 7, s + 1_000);
        r.server(
            &format!("r{s}"),
            At { pid: PID, goroutine: 1, fd: 7, stream: Some(s), start_ms: t - 1, end_ms: t + 5 },
        );
    }
    r.tick(2_000);
    let s = r.c.stats();
    assert_eq!((s.link_disagreements, s.link_kinds_switched_off), (20, 1));
    assert!(r.c.processes[&PID].is_off(LinkKind::H2Server));
    // A right link now: not believed.
    r.h2(PID, 2_010, 0xc000_0600, 7, 21);
    r.grpc(PID, 2_011, WRITER, 1, 0xc000_0600);
    r.client("etcd", etcd(1, 2_011, 2_012));
    r.server("r21", At { pid: PID, goroutine: 1, fd: 7, stream: Some(21), start_ms: 2_009, end_ms: 2_020 });
    r.tick(2_012 + 2_000);
    assert_eq!(r.parent("etcd"), None);
    assert_eq!(r.c.stats().link_kinds_switched_off, 1);
}

/// gRPC links whose stream ids never show on their writer's connection, while the writer writes
/// other streams, are disagreements; past the threshold the kind is switched off for the process
/// and the writer's calls go out as roots, counted as such.
#[test]
fn grpc_links_the_wire_contradicts_are_switched_off() {
    let mut r = Run::with(CorrelateConfig { remember: Duration::from_secs(1), ..CorrelateConfig::default() });
    for s in 1..=20u32 {
        let t = u64::from(s) * 10;
        r.grpc(PID, t, WRITER, s + 1_000, BACKGROUND);
        r.client(&format!("etcd {s}"), etcd(s, t + 1, t + 2));
    }
    assert_eq!(r.c.stats().root_reasons.no_link, 20);
    r.tick(2_000);
    let s = r.c.stats();
    assert_eq!((s.link_disagreements, s.link_kinds_switched_off), (20, 1));
    r.grpc(PID, 2_001, WRITER, 1_021, BACKGROUND);
    r.client("etcd after", etcd(21, 2_002, 2_003));
    assert_eq!(r.parent("etcd after"), None);
    assert_eq!(r.c.stats().root_reasons.link_off, 1);
}

/// Links whose span never comes (a connection not traced) are bounded per process and kind,
/// the rest dropped and counted; age forgets them.
#[test]
fn links_without_spans_stay_bounded() {
    let mut r = Run::new();
    for i in 0..40_000u64 {
        r.grpc(PID, 10, WRITER, i as u32, BACKGROUND);
        r.h2(PID, 10, 0xc300_0000 + 8 * (i % 1_000), 7, i as u32);
        r.http1(PID, 10, 0xc400_0000 + 8 * i, BACKGROUND);
    }
    let entries = r.c.processes[&PID].entries();
    assert!(entries < 8 * 16_384, "{entries} entries");
    assert_eq!(r.c.stats().links_dropped, 3 * (40_000 - 16_384));
    r.tick(10 + 31_000);
    assert!(r.c.processes.is_empty());
}
