//! Parents found the ways a Go server makes its calls: goroutine ancestry from the request's
//! goroutine, grpc-go's and net/http's writer goroutines, both ends on one node.

use super::*;

/// An HTTP/1 connection goroutine (its `g`).
const CONN: u64 = 0xc000_0100;
/// grpc-go's writer goroutine of the etcd connection.
const WRITER: u64 = 0xc000_0200;
/// A goroutine that serves no request (a timer, a background loop).
const BACKGROUND: u64 = 0xc000_0300;
const A: u64 = 0xc000_1000;
const B: u64 = 0xc000_2000;

/// An HTTP/1 server span of the connection goroutine.
fn http1(start_ms: u64, end_ms: u64) -> At {
    At { pid: PID, goroutine: CONN, fd: 5, start_ms, end_ms, ..At::default() }
}

/// An etcd call written by grpc-go's writer on stream `stream`.
fn etcd(stream: u32, start_ms: u64, end_ms: u64) -> At {
    At { pid: PID, goroutine: WRITER, fd: 9, stream: Some(stream), start_ms, end_ms }
}

/// A run where goroutine A, spawned at 11 ms by the connection goroutine, has called etcd (span
/// `name`, 12 to 13 ms).
fn a_called_etcd(name: &str) -> Run {
    let mut r = Run::new();
    r.spawn(PID, 11, A, CONN);
    r.grpc(PID, 12, WRITER, 1, A);
    r.client(name, etcd(1, 12, 13));
    r
}

/// net/http serves HTTP/1 requests one after another on the connection's goroutine; each
/// handler here spawns a child that calls etcd, and the first child is still calling while the
/// connection goroutine serves the next request. Client spans come before their request (they
/// end first), the late one after its request went out.
#[test]
fn an_http1_connection_goroutine_serving_requests_one_after_another() {
    let mut r = a_called_etcd("etcd a1");
    assert_eq!(r.c.stats().held, 1, "waits for its request");
    r.server("GET /r1", http1(10, 20));
    r.spawn(PID, 22, B, CONN);
    r.grpc(PID, 23, WRITER, 3, B);
    r.client("etcd b", etcd(3, 23, 24));
    r.grpc(PID, 25, WRITER, 5, A);
    r.client("etcd a2", etcd(5, 25, 26));
    r.server("GET /r2", http1(21, 30));

    assert_eq!(r.parent("etcd a1"), Some("GET /r1"));
    assert_eq!(r.parent("etcd a2"), Some("GET /r1"), "a child that outlived its request");
    assert_eq!(r.parent("etcd b"), Some("GET /r2"));
    assert_eq!((r.parent("GET /r1"), r.parent("GET /r2")), (None, None));
    r.check_ids();
    let s = r.c.stats();
    assert_eq!((s.parented.grpc_link, s.parented.late, s.held), (3, 1, 0));
    assert_eq!((s.roots, s.root_reasons.request), (2, 2));
    // One decision per trace: two traces.
    assert_eq!(s.sampling.kept_ratio, 2);
}

/// HTTP/2: one goroutine reads every stream; each handler runs in a goroutine of its own, named
/// by a link, whose child (a timeout filter) calls a webhook through net/http's HTTP/2 client (a
/// goroutine per request writes it) and etcd.
#[test]
fn http2_handler_goroutines() {
    const READER: u64 = 0xc000_0400;
    const HANDLERS: [u64; 2] = [0xc000_0501, 0xc000_0503];
    const FILTERS: [u64; 2] = [0xc000_0601, 0xc000_0603];
    const WRITERS: [u64; 2] = [0xc000_0701, 0xc000_0703];
    let mut r = Run::new();
    for (i, stream) in [1u32, 3].into_iter().enumerate() {
        r.spawn(PID, 10, HANDLERS[i], READER);
        r.h2(PID, 10, HANDLERS[i], 7, stream);
        r.spawn(PID, 11, FILTERS[i], HANDLERS[i]);
        r.spawn(PID, 12, WRITERS[i], FILTERS[i]);
    }
    let webhook =
        |i: usize| At { pid: PID, goroutine: WRITERS[i], fd: 20 + i as i32, stream: Some(1), start_ms: 12, end_ms: 15 };
    r.client("webhook 1", webhook(0));
    r.client("webhook 3", webhook(1));
    r.grpc(PID, 16, WRITER, 9, FILTERS[1]);
    r.client("etcd 3", etcd(9, 16, 17));
    assert_eq!(r.c.stats().held, 3);
    // Their requests are known to be running: they wait past the usual hold.
    r.tick(17 + 5_000);
    assert_eq!(r.c.stats().held, 3);
    let stream = |s: u32| At { pid: PID, goroutine: READER, fd: 7, stream: Some(s), start_ms: 9, end_ms: 5_030 };
    r.server("POST /r3", stream(3));
    r.server("POST /r1", stream(1));
    assert_eq!(r.parent("webhook 1"), Some("POST /r1"));
    assert_eq!(r.parent("webhook 3"), Some("POST /r3"));
    assert_eq!(r.parent("etcd 3"), Some("POST /r3"));
    r.check_ids();
    let s = r.c.stats();
    assert_eq!((s.parented.server_request, s.parented.grpc_link, s.held), (2, 1, 0));
}

/// Go reuses a finished goroutine's `g`: the new goroutine never inherits what the old one
/// served, nor what its old parent was serving.
#[test]
fn a_reborn_goroutine_never_inherits_the_old_request() {
    const HANDLER: u64 = 0xc000_0501;
    let mut r = a_called_etcd("etcd old life");
    r.server("GET /r1", http1(10, 20));
    // The same g, born again from a goroutine that serves nothing.
    r.spawn(PID, 40, A, BACKGROUND);
    r.grpc(PID, 41, WRITER, 3, A);
    r.client("etcd new life", etcd(3, 41, 42));
    // An HTTP/2 handler's g, reborn.
    r.h2(PID, 50, HANDLER, 7, 1);
    r.server("GET /h2", At { pid: PID, goroutine: 1, fd: 7, stream: Some(1), start_ms: 49, end_ms: 60 });
    r.spawn(PID, 70, HANDLER, BACKGROUND);
    r.grpc(PID, 71, WRITER, 5, HANDLER);
    r.client("etcd reborn handler", etcd(5, 71, 72));
    // Born again from the connection goroutine, between its requests.
    r.spawn(PID, 80, B, CONN);
    r.grpc(PID, 81, WRITER, 7, B);
    r.client("etcd between requests", etcd(7, 81, 82));
    r.server("GET /r2", http1(90, 95));
    r.tick(82 + 2_001);
    assert_eq!(r.parent("etcd old life"), Some("GET /r1"));
    for name in ["etcd new life", "etcd reborn handler", "etcd between requests"] {
        assert_eq!(r.parent(name), None, "{name}");
    }
    r.check_ids();
    let s = r.c.stats();
    assert_eq!((s.root_reasons.no_request, s.expired_waits, s.held), (3, 3, 0));
}

/// grpc-go writes every stream from its writer goroutine: the caller is the one the link names,
/// never the writer's own ancestry (here the writer was spawned while a request was served, as a
/// connection dialled lazily is). A stream no link names is nobody's child.
#[test]
fn grpc_links_name_the_caller_not_the_writer() {
    let mut r = Run::new();
    r.spawn(PID, 10, WRITER, CONN);
    r.spawn(PID, 11, A, CONN);
    r.grpc(PID, 12, WRITER, 1, A);
    r.grpc(PID, 12, WRITER, 3, BACKGROUND);
    // Both HEADERS in one write of the writer.
    r.client("etcd a", etcd(1, 13, 14));
    r.client("etcd background", etcd(3, 13, 15));
    r.client("etcd without link", etcd(5, 16, 17));
    assert!(r.gone_out("etcd without link"), "nothing to wait for");
    r.server("GET /r1", http1(9, 20));
    r.tick(15 + 2_001);
    assert_eq!(r.parent("etcd a"), Some("GET /r1"));
    assert_eq!(r.parent("etcd background"), None);
    assert_eq!(r.parent("etcd without link"), None);
    r.check_ids();
    let s = r.c.stats();
    assert_eq!((s.parented.grpc_link, s.root_reasons.no_link, s.root_reasons.no_request), (1, 1, 1));
}

/// net/http writes HTTP/1 requests from the connection's write loop, spawned by the request that
/// dialled: each request is its caller's, as the link says, and one without a link is nobody's.
#[test]
fn http1_client_write_loop_links() {
    const WRITE_LOOP: u64 = 0xc000_0800;
    let mut r = Run::new();
    let call = |start_ms, end_ms| At { pid: PID, goroutine: WRITE_LOOP, fd: 30, stream: None, start_ms, end_ms };
    r.spawn(PID, 11, A, CONN);
    r.spawn(PID, 12, WRITE_LOOP, A);
    r.http1(PID, 12, WRITE_LOOP, A);
    r.client("webhook a", call(12, 14));
    r.server("POST /r1", http1(10, 20));
    r.spawn(PID, 22, B, CONN);
    r.http1(PID, 23, WRITE_LOOP, B);
    r.client("webhook b", call(23, 25));
    // A request whose link was lost: the latest link is b's.
    r.client("webhook unlinked", call(26, 27));
    r.server("POST /r2", http1(21, 30));
    assert_eq!(r.parent("webhook a"), Some("POST /r1"));
    assert_eq!(r.parent("webhook b"), Some("POST /r2"));
    assert_eq!(r.parent("webhook unlinked"), None);
    r.check_ids();
    let s = r.c.stats();
    assert_eq!((s.parented.http1_link, s.root_reasons.no_link, s.link_disagreements), (2, 1, 1));
}

const ETCD: u32 = 200;

fn addr(port: u16) -> Option<std::net::SocketAddr> {
    Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The apiserver's etcd client span and etcd's server span of one stream, both traced here.
fn both_ends(stream: u32, client_ms: (u64, u64), server_ms: (u64, u64)) -> (SpanRecord, SpanRecord) {
    let mut c = Run::span(SpanKind::Client, &format!("etcd client {stream}"), etcd(stream, client_ms.0, client_ms.1));
    (c.origin.local, c.origin.peer, c.origin.peer_traced) = (addr(50_000), addr(2379), true);
    let at = At { pid: ETCD, goroutine: 0xe, fd: 11, stream: Some(stream), start_ms: server_ms.0, end_ms: server_ms.1 };
    let mut e = Run::span(SpanKind::Server, &format!("etcd server {stream}"), at);
    (e.origin.local, e.origin.peer, e.origin.peer_traced) = (addr(2379), addr(50_000), true);
    (c, e)
}

/// Both ends on one node: API request → etcd client call → etcd's handling of it, one trace,
/// whatever the order the spans come in.
#[test]
fn both_ends_make_a_three_level_tree() {
    let mut r = Run::new();
    r.spawn(PID, 11, A, CONN);
    r.grpc(PID, 12, WRITER, 1, A);
    r.grpc(PID, 16, WRITER, 3, A);
    let (c1, e1) = both_ends(1, (12, 15), (12, 14));
    let (c3, e3) = both_ends(3, (16, 18), (16, 17));
    // The usual order: the server's span ends first.
    r.hand(e1);
    r.hand(c1);
    // The client's first; the server's after the request went out.
    r.hand(c3);
    r.server("GET /r1", http1(10, 20));
    r.hand_at(e3, 21 * MS);
    // A server span whose client is not the one traced (another stream).
    let (_, e5) = both_ends(5, (22, 25), (23, 24));
    r.hand(e5);
    r.tick(24 + 2_001);
    assert_eq!(r.parent("etcd server 1"), Some("etcd client 1"));
    assert_eq!(r.parent("etcd client 1"), Some("GET /r1"));
    assert_eq!(r.parent("etcd server 3"), Some("etcd client 3"));
    assert_eq!(r.parent("etcd client 3"), Some("GET /r1"));
    assert_eq!(r.parent("etcd server 5"), None);
    let trace = r.get("GET /r1").trace_id;
    assert!(["etcd server 1", "etcd server 3"].iter().all(|n| r.get(n).trace_id == trace));
    r.check_ids();
    let s = r.c.stats();
    assert_eq!((s.parented.both_ends, s.parented.late, s.root_reasons.peer_not_seen), (2, 1, 1));
}

/// HTTP/1 has no stream id: a server span is the child of the client span of the same
/// connection whose time contains it.
#[test]
fn both_ends_over_http1_by_containing_time() {
    let mut r = Run::new();
    for (i, (client, server)) in [((10, 20), (11, 19)), ((21, 30), (22, 29))].into_iter().enumerate() {
        let at = At { pid: PID, goroutine: 0, fd: 9, stream: None, start_ms: client.0, end_ms: client.1 };
        let mut c = Run::span(SpanKind::Client, &format!("client {i}"), at);
        (c.origin.local, c.origin.peer, c.origin.peer_traced) = (addr(50_001), addr(8443), true);
        let at = At { pid: ETCD, goroutine: 0, fd: 4, stream: None, start_ms: server.0, end_ms: server.1 };
        let mut e = Run::span(SpanKind::Server, &format!("server {i}"), at);
        (e.origin.local, e.origin.peer, e.origin.peer_traced) = (addr(8443), addr(50_001), true);
        r.hand(e);
        r.hand(c);
    }
    assert_eq!(r.parent("server 0"), Some("client 0"));
    assert_eq!(r.parent("server 1"), Some("client 1"));
    r.check_ids();
}

/// A request's span can come before a call's that ended earlier (events of other CPUs): the
/// call still joins it, while it is remembered.
#[test]
fn a_call_that_comes_after_its_request() {
    let mut r = Run::new();
    r.spawn(PID, 11, A, CONN);
    r.grpc(PID, 12, WRITER, 1, A);
    r.server("GET /r1", http1(10, 20));
    r.hand_at(Run::span(SpanKind::Client, "etcd", etcd(1, 12, 15)), 21 * MS);
    assert_eq!(r.parent("etcd"), Some("GET /r1"));
    r.check_ids();
    assert_eq!(r.c.stats().parented.late, 1);
}

/// A request with an incoming `traceparent` joins its caller's trace; its calls follow it.
#[test]
fn an_incoming_traceparent_carries_the_children() {
    let mut r = a_called_etcd("etcd");
    let mut request = Run::span(SpanKind::Server, "GET /r1", http1(10, 20));
    request.remote_parent = Some(RemoteParent { trace_id: [7; 16], span_id: [9; 8], sampled: true });
    r.hand(request);
    assert_eq!(r.get("GET /r1").parent_span_id, Some([9; 8]));
    assert_eq!(r.parent("etcd"), Some("GET /r1"));
    assert_eq!(r.get("etcd").trace_id, [7; 16]);
    r.check_ids();
    let s = r.c.stats();
    assert_eq!((s.parented.remote_traceparent, s.roots, s.sampling.kept_parent_sampled), (1, 0, 1));
}

/// The sampler decides once per trace: a request and its calls are kept or left out together.
#[test]
fn one_sampling_decision_per_trace() {
    let sampling = SampleConfig { ratio: 0.5, ..SampleConfig::default() };
    let mut r = Run::with(CorrelateConfig { sampling, ..CorrelateConfig::default() });
    for i in 0..200u64 {
        let (t, child) = (100 * i + 10, A + 16 * i);
        r.spawn(PID, t + 1, child, CONN);
        r.grpc(PID, t + 2, WRITER, 2 * i as u32 + 1, child);
        r.client(&format!("etcd {i}"), etcd(2 * i as u32 + 1, t + 2, t + 3));
        r.server(&format!("GET /{i}"), http1(t, t + 10));
    }
    r.check_ids();
    let kept = (0..200).filter(|i| r.get(&format!("GET /{i}")).sampled).count();
    assert!((40..160).contains(&kept), "{kept} of 200 kept");
    for i in 0..200 {
        assert_eq!(r.parent(&format!("etcd {i}")), Some(&*format!("GET /{i}")));
    }
    let s = r.c.stats().sampling;
    assert_eq!((s.kept_ratio + s.dropped_ratio, s.kept_ratio), (200, kept as u64));
}
