//! Assembly on recorded byte streams, without a kernel: chunks as the probes deliver them.

use std::sync::Arc;

use super::*;
use crate::{
    connections::Connection,
    events::DataChunk,
    span::{AttrValue, ProcessInfo, SpanKind, SpanStatus},
};

fn process() -> Arc<ProcessInfo> {
    Arc::new(ProcessInfo {
        service_name: "kube-apiserver".into(),
        pid: 7,
        executable_name: "kube-apiserver".into(),
        host_name: "node".into(),
    })
}

struct Harness {
    asm: Assembler,
    conn: Conn,
    /// The kernel's sequence numbers of this socket, per direction (ingress, egress).
    seq: [u32; 2],
    spans: Vec<SpanRecord>,
    /// Chunks come from the Go TLS uprobes (plaintext of a TLS connection).
    tls: bool,
    /// The goroutine the next chunks come from (Go TLS probes say it; 0: unknown).
    goroutine: u64,
}

impl Harness {
    fn new(role: Role) -> Self {
        let local = "10.0.0.1:6443".parse().ok();
        let peer = "10.0.0.2:40000".parse().ok();
        let mut conn = Connection::new(role, local, peer, 1_000, false, process());
        conn.key = crate::connections::ConnKey { tgid: 7, fd: 3 };
        Harness {
            asm: Assembler::new(Clock::new(), vec![2379]),
            conn,
            seq: [0; 2],
            spans: Vec::new(),
            tls: false,
            goroutine: 0,
        }
    }

    /// One syscall moving `total` bytes of which `data` were captured.
    fn syscall(&mut self, dir: Direction, data: &[u8], total: u64, enter_ns: u64, exit_ns: u64) {
        let chunk = DataChunk {
            tgid: 7,
            fd: 3,
            enter_ns,
            exit_ns,
            total_len: total,
            offset: 0,
            seq: self.seq[dir.index()],
            direction: dir,
            tls: self.tls,
            first: true,
            last: true,
            goroutine: self.goroutine,
            data,
        };
        self.seq[dir.index()] += 1;
        let feed = self.conn.on_chunk(&chunk).expect("syscall bytes of a plaintext connection are decoded");
        self.asm.on_feed(&mut self.conn, dir, feed, &mut self.spans);
    }

    fn send(&mut self, dir: Direction, data: &[u8], enter_ns: u64, exit_ns: u64) {
        self.syscall(dir, data, data.len() as u64, enter_ns, exit_ns);
    }

    fn close(self, ts: u64) -> Vec<SpanRecord> {
        self.close_socket([0, 0], ts)
    }

    /// The kernel's close record, with the Go TLS ciphertext the probes counted on the socket.
    fn close_socket(mut self, tls_bytes: [u64; 2], ts: u64) -> Vec<SpanRecord> {
        let conn = std::mem::replace(&mut self.conn, Connection::new(Role::Server, None, None, 0, false, process()));
        self.asm.on_socket_close(conn, tls_bytes, ts, &mut self.spans);
        self.spans
    }
}

fn attr<'a>(s: &'a SpanRecord, k: &str) -> &'a AttrValue {
    s.attr(k).unwrap_or_else(|| panic!("{k} missing in {:?}", s.attributes))
}

const GET_POD: &[u8] = b"GET /api/v1/namespaces/default/pods/web-0 HTTP/1.1\r\nHost: 10.0.0.1:6443\r\nUser-Agent: kubectl/v1.30.0\r\nAuthorization: Bearer secret-token\r\nAccept: application/json\r\n\r\n";
const OK_JSON: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

#[test]
fn server_keep_alive_gives_one_span_per_request_with_kernel_times() {
    let mut h = Harness::new(Role::Server);
    h.send(Direction::Ingress, GET_POD, 100, 110);
    h.send(Direction::Egress, OK_JSON, 200, 210);
    h.send(
        Direction::Ingress,
        b"DELETE /apis/apps/v1/namespaces/ns/deployments/d HTTP/1.1\r\nHost: x\r\n\r\n",
        300,
        310,
    );
    h.send(Direction::Egress, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", 400, 410);
    let spans = h.close(500);
    assert_eq!(spans.len(), 2);
    let (a, b) = (&spans[0], &spans[1]);
    assert_eq!(a.name, "GET /api/v1/namespaces/{namespace}/pods/{name}");
    assert_eq!(a.kind, SpanKind::Server);
    assert_eq!(
        a.end_unix_nano - a.start_unix_nano,
        100,
        "first request byte read (exit 110) → last response byte written (exit 210)"
    );
    assert_eq!(attr(a, "http.response.status_code"), &AttrValue::Int(200));
    assert_eq!(attr(a, "http.response.body.size"), &AttrValue::Int(2));
    assert_eq!(attr(a, "k8s.verb"), &AttrValue::Str("get".into()));
    assert_eq!(attr(a, "k8s.object.name"), &AttrValue::Str("web-0".into()));
    assert_eq!(attr(a, "client.address"), &AttrValue::Str("10.0.0.2".into()));
    assert_eq!(attr(a, "server.port"), &AttrValue::Int(6443));
    assert_eq!(attr(a, "url.scheme"), &AttrValue::Str("http".into()));
    assert_eq!(a.status, SpanStatus::Unset);
    assert_eq!(b.name, "DELETE /apis/apps/v1/namespaces/{namespace}/deployments/{name}");
    assert_eq!(attr(b, "k8s.api.group"), &AttrValue::Str("apps".into()));
    assert!(matches!(b.status, SpanStatus::Error(_)), "5xx on a server span is an error");
    // Credentials never reach a span.
    for s in &spans {
        for (k, v) in &s.attributes {
            assert!(!format!("{k}{v:?}").contains("secret-token"));
        }
    }
}

#[test]
fn go_tls_plaintext_gives_https_spans() {
    let mut h = Harness::new(Role::Server);
    h.tls = true;
    h.send(Direction::Ingress, GET_POD, 100, 110);
    h.send(Direction::Egress, OK_JSON, 200, 210);
    let spans = h.close(300);
    assert_eq!(spans.len(), 1);
    assert_eq!(attr(&spans[0], "url.scheme"), &AttrValue::Str("https".into()));
    assert_eq!(attr(&spans[0], "url.path"), &AttrValue::Str("/api/v1/namespaces/default/pods/web-0".into()));
}

#[test]
fn client_spans_mark_4xx_as_errors_and_time_from_the_first_write() {
    let mut h = Harness::new(Role::Client);
    h.send(
        Direction::Egress,
        b"POST /validate HTTP/1.1\r\nHost: webhook.svc:443\r\nContent-Length: 4\r\n\r\nbody",
        1000,
        1010,
    );
    h.send(Direction::Ingress, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", 1500, 1600);
    let spans = h.close(2000);
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s.kind, SpanKind::Client);
    assert_eq!(s.end_unix_nano - s.start_unix_nano, 600, "write entry 1000 → read exit 1600");
    assert!(matches!(s.status, SpanStatus::Error(_)));
    assert_eq!(attr(s, "server.address"), &AttrValue::Str("webhook.svc".into()));
    assert_eq!(attr(s, "http.request.body.size"), &AttrValue::Int(4));
}

#[test]
fn a_body_over_many_syscalls_and_partly_uncaptured_is_one_span() {
    let mut h = Harness::new(Role::Server);
    h.send(Direction::Ingress, b"GET /api/v1/pods HTTP/1.1\r\nHost: a\r\n\r\n", 10, 11);
    h.send(Direction::Egress, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", 20, 21);
    // 100 000 body bytes in three writes, of which only the first 10 bytes were captured each.
    h.syscall(Direction::Egress, b"0123456789", 40_000, 30, 31);
    h.syscall(Direction::Egress, b"0123456789", 40_000, 40, 41);
    h.syscall(Direction::Egress, b"0123456789", 20_000, 50, 51);
    let spans = h.close(60);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].end_unix_nano - spans[0].start_unix_nano, 40);
    assert_eq!(attr(&spans[0], "http.response.body.size"), &AttrValue::Int(100_000));
    assert_eq!(attr(&spans[0], "k8s.verb"), &AttrValue::Str("list".into()));
}

#[test]
fn a_watch_is_reported_when_its_response_starts() {
    let mut h = Harness::new(Role::Server);
    h.send(
        Direction::Ingress,
        b"GET /api/v1/namespaces/default/pods?watch=true&resourceVersion=5 HTTP/1.1\r\nHost: a\r\n\r\n",
        10,
        11,
    );
    h.send(Direction::Egress, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 20, 25);
    h.send(Direction::Egress, b"10\r\n{\"type\":\"ADDED\"}\r\n", 30, 31);
    assert_eq!(h.spans.len(), 1, "reported at the response head, not at the end of the stream");
    let s = &h.spans[0];
    assert_eq!(s.name, "GET /api/v1/namespaces/{namespace}/pods");
    assert_eq!(attr(s, "k8s.verb"), &AttrValue::Str("watch".into()));
    assert_eq!(attr(s, "k8s.long_running"), &AttrValue::Bool(true));
    assert_eq!(s.end_unix_nano - s.start_unix_nano, 14);
    assert_eq!(h.close(1_000).len(), 1, "nothing more at close");
}

/// A socket under a Go tls.Conn sends no record per syscall: its ciphertext is counted by the
/// probes and reported at close. One that never carried plaintext is a TLS connection with them.
#[test]
fn go_tls_bytes_counted_at_close_give_a_tls_connection_span() {
    let h = Harness::new(Role::Server);
    let spans = h.close_socket([517, 1890], 5_000);
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s.name, "TLS connection");
    assert_eq!(attr(s, "network.io.received_bytes"), &AttrValue::Int(517));
    assert_eq!(attr(s, "network.io.sent_bytes"), &AttrValue::Int(1890));

    // With HTTP plaintext, the counts change nothing: its spans are the HTTP spans.
    let mut h = Harness::new(Role::Server);
    h.tls = true;
    h.send(Direction::Ingress, GET_POD, 100, 110);
    h.send(Direction::Egress, OK_JSON, 200, 210);
    let spans = h.close_socket([600, 900], 300);
    assert_eq!(spans.len(), 1);
    assert_eq!(attr(&spans[0], "url.scheme"), &AttrValue::Str("https".into()));
}

#[test]
fn tls_bytes_give_a_connection_span_and_no_http_span() {
    let mut h = Harness::new(Role::Server);
    let client_hello = [0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x03];
    h.send(Direction::Ingress, &client_hello, 10, 11);
    h.send(Direction::Egress, &[0x16, 0x03, 0x03, 0x00, 0x01, 0x02], 20, 21);
    h.send(Direction::Ingress, b"GET / HTTP/1.1\r\n\r\n", 30, 31); // ciphertext that happens to look like HTTP
    let spans = h.close(5_000);
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s.name, "TLS connection");
    assert_eq!(attr(s, "tls.protocol.name"), &AttrValue::Str("tls".into()));
    assert_eq!(attr(s, "network.io.received_bytes"), &AttrValue::Int(10 + 18));
    assert_eq!(attr(s, "network.io.sent_bytes"), &AttrValue::Int(6));
    assert_eq!(s.end_unix_nano - s.start_unix_nano, 4_000);
}

#[test]
fn lost_events_never_pair_a_response_with_the_wrong_request() {
    let mut h = Harness::new(Role::Server);
    h.send(Direction::Ingress, b"GET /api/v1/pods HTTP/1.1\r\nHost: a\r\n\r\n", 10, 11);
    h.seq[0] += 3; // the ring buffer was full: three reads of this socket never arrived
    h.send(Direction::Ingress, b"GET /api/v1/nodes HTTP/1.1\r\nHost: a\r\n\r\n", 30, 31);
    h.send(Direction::Egress, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 40, 41);
    let spans = h.close(50);
    assert_eq!(spans.len(), 1);
    assert_eq!(attr(&spans[0], "url.path"), &AttrValue::Str("/api/v1/nodes".into()));
}

#[test]
fn a_request_without_response_at_close_is_an_error_span() {
    let mut h = Harness::new(Role::Server);
    h.send(
        Direction::Ingress,
        b"POST /api/v1/namespaces/a/configmaps HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        10,
        11,
    );
    let spans = h.close(100);
    assert_eq!(spans.len(), 1);
    assert!(matches!(spans[0].status, SpanStatus::Error(_)));
    assert_eq!(attr(&spans[0], "k8s.verb"), &AttrValue::Str("create".into()));
}

#[test]
fn a_connection_that_never_spoke_still_gets_a_span() {
    let h = Harness::new(Role::Client);
    let spans = h.close(100);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "TCP connection");
}

mod h2 {
    use super::*;
    use crate::protocols::http2::build;

    pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// HPACK literal without indexing, name from the static table (index < 15).
    pub(super) fn lit(index: u8, value: &str) -> Vec<u8> {
        let mut v = if index < 15 { vec![index] } else { vec![0x0f, index - 15] };
        v.push(value.len() as u8);
        v.extend_from_slice(value.as_bytes());
        v
    }

    pub(super) fn block(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    /// `:method GET` (static 2), `:method POST` (3), `:status 200` (8).
    pub(super) const GET: u8 = 0x82;
    pub(super) const POST: u8 = 0x83;
    pub(super) const STATUS_200: u8 = 0x88;
    pub(super) const PATH: u8 = 4;
    pub(super) const CONTENT_TYPE: u8 = 31;

    pub(super) fn grpc_trailers(code: u32) -> Vec<u8> {
        // grpc-status is not in the static table: literal with a literal name.
        let mut v = vec![0x00, 11];
        v.extend_from_slice(b"grpc-status");
        let code = code.to_string();
        v.push(code.len() as u8);
        v.extend_from_slice(code.as_bytes());
        v
    }

    #[test]
    fn plain_http2_where_the_server_speaks_first() {
        let mut h = Harness::new(Role::Server);
        h.send(Direction::Egress, &build::settings(&[]), 5, 6);
        let req = [
            PREFACE.to_vec(),
            build::settings(&[]),
            build::headers(1, &block(&[vec![GET], lit(PATH, "/api/v1/namespaces/default/pods/x")]), true),
        ]
        .concat();
        h.send(Direction::Ingress, &req, 10, 11);
        let resp = [build::headers(1, &[STATUS_200], false), build::data(1, b"{}", true)].concat();
        h.send(Direction::Egress, &resp, 20, 30);
        let spans = h.close(100);
        assert_eq!(spans.len(), 1, "{spans:?}");
        let s = &spans[0];
        assert_eq!(s.name, "GET /api/v1/namespaces/{namespace}/pods/{name}");
        assert_eq!(attr(s, "network.protocol.version"), &AttrValue::Str("2".into()));
        assert_eq!(attr(s, "url.scheme"), &AttrValue::Str("http".into()));
        assert_eq!(attr(s, "http.response.status_code"), &AttrValue::Int(200));
        assert_eq!(attr(s, "http.response.body.size"), &AttrValue::Int(2));
        assert_eq!(
            s.end_unix_nano - s.start_unix_nano,
            20,
            "request HEADERS read (enter 10) → END_STREAM written (exit 30)"
        );
    }

    #[test]
    fn a_two_segment_path_without_grpc_content_type_is_not_grpc() {
        let mut h = Harness::new(Role::Server);
        let req = [PREFACE.to_vec(), build::headers(1, &block(&[vec![GET], lit(PATH, "/status/503")]), true)].concat();
        h.send(Direction::Ingress, &req, 10, 11);
        h.send(Direction::Egress, &build::headers(1, &lit(8, "503"), true), 20, 21);
        let spans = h.close(100);
        assert_eq!(spans[0].name, "GET /status/{path}");
        assert!(spans[0].attr("rpc.system").is_none());
        assert!(matches!(spans[0].status, SpanStatus::Error(_)));
    }

    /// RangeRequest { key: 1, range_end: 2 } and RangeResponse { header: 1 { revision: 3 }, count: 4 }.
    pub(super) fn range_request(key: &[u8], range_end: &[u8]) -> Vec<u8> {
        let mut v = vec![0x0a, key.len() as u8];
        v.extend_from_slice(key);
        v.push(0x12);
        v.push(range_end.len() as u8);
        v.extend_from_slice(range_end);
        v
    }

    #[test]
    fn an_etcd_range_over_grpc_is_a_client_span_with_its_key() {
        let mut h = Harness::new(Role::Client);
        let headers = block(&[vec![POST], lit(PATH, "/etcdserverpb.KV/Range"), lit(CONTENT_TYPE, "application/grpc")]);
        let msg = build::grpc_message(&range_request(b"/registry/pods/default/", b"/registry/pods/default0"));
        let req =
            [PREFACE.to_vec(), build::settings(&[]), build::headers(1, &headers, false), build::data(1, &msg, true)]
                .concat();
        h.send(Direction::Egress, &req, 100, 101);
        let resp_msg = build::grpc_message(&[0x0a, 0x02, 0x18, 0x07, 0x20, 0x03]);
        let resp = [
            build::settings(&[]),
            build::headers(1, &[STATUS_200], false),
            build::data(1, &resp_msg, false),
            build::headers(1, &grpc_trailers(0), true),
        ]
        .concat();
        h.send(Direction::Ingress, &resp, 150, 160);
        let spans = h.close(200);
        assert_eq!(spans.len(), 1, "{spans:?}");
        let s = &spans[0];
        assert_eq!(s.name, "etcd Range pods");
        assert_eq!(s.kind, SpanKind::Client);
        assert_eq!(attr(s, "rpc.system"), &AttrValue::Str("grpc".into()));
        assert_eq!(attr(s, "rpc.method"), &AttrValue::Str("Range".into()));
        assert_eq!(attr(s, "rpc.grpc.status_code"), &AttrValue::Int(0));
        assert_eq!(attr(s, "etcd.key"), &AttrValue::Str("/registry/pods/default/".into()));
        assert_eq!(attr(s, "etcd.prefix"), &AttrValue::Bool(true));
        assert_eq!(attr(s, "etcd.response.count"), &AttrValue::Int(3));
        assert_eq!(attr(s, "etcd.response.revision"), &AttrValue::Int(7));
        assert_eq!(attr(s, "k8s.namespace.name"), &AttrValue::Str("default".into()));
        assert_eq!(s.status, SpanStatus::Unset);
        assert_eq!(s.end_unix_nano - s.start_unix_nano, 60);
    }

    #[test]
    fn a_stream_joined_mid_way_on_an_etcd_port_is_an_etcd_call_of_unknown_name() {
        let mut h = Harness::new(Role::Client);
        h.conn.peer = "10.0.0.3:2379".parse().ok();
        h.conn.preexisting = true;
        // Indexed fields 62 and 63: dynamic-table entries learned before the agent attached.
        let req =
            [build::headers(7, &[0xbe, 0xbf], false), build::data(7, &build::grpc_message(&[0x0a, 0x01, b'k']), true)]
                .concat();
        h.send(Direction::Egress, &req, 10, 11);
        h.send(Direction::Ingress, &build::headers(7, &[vec![STATUS_200], grpc_trailers(0)].concat(), true), 20, 21);
        let spans = h.close(100);
        assert_eq!(spans.len(), 1, "{spans:?}");
        assert_eq!(spans[0].name, "etcd unknown");
        assert_eq!(attr(&spans[0], "db.system.name"), &AttrValue::Str("etcd".into()));
        assert!(spans[0].attr("rpc.method").is_none(), "the method is not guessed");
    }

    #[test]
    fn a_failed_grpc_call_is_an_error() {
        let mut h = Harness::new(Role::Client);
        let headers = block(&[vec![POST], lit(PATH, "/etcdserverpb.KV/Put"), lit(CONTENT_TYPE, "application/grpc")]);
        let req = [
            PREFACE.to_vec(),
            build::headers(1, &headers, false),
            build::data(1, &build::grpc_message(&[0x0a, 0x01, b'k']), true),
        ]
        .concat();
        h.send(Direction::Egress, &req, 1, 2);
        // Trailers-only response: grpc-status 5 (NotFound).
        h.send(Direction::Ingress, &build::headers(1, &[vec![STATUS_200], grpc_trailers(5)].concat(), true), 3, 4);
        let spans = h.close(10);
        assert_eq!(attr(&spans[0], "rpc.grpc.status_code"), &AttrValue::Int(5));
        assert!(matches!(spans[0].status, SpanStatus::Error(_)));
    }
}

#[test]
fn joined_mid_way_a_response_without_its_request_shifts_nothing() {
    let mut h = Harness::new(Role::Client);
    h.conn.preexisting = true;
    let req = b"GET /api/v1/namespaces/a/pods/p HTTP/1.1\r\nHost: x\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    // The response to a request written before the agent attached comes first.
    h.send(Direction::Ingress, resp, 5, 6);
    for i in 0..3u64 {
        h.send(Direction::Egress, req, 100 * i + 10, 100 * i + 11);
        h.send(Direction::Ingress, resp, 100 * i + 12, 100 * i + 13);
    }
    let spans = h.close(1_000);
    assert_eq!(spans.len(), 3, "{spans:?}");
    for s in &spans {
        assert_eq!(s.end_unix_nano - s.start_unix_nano, 3, "paired with its own response");
        assert_eq!(s.status, SpanStatus::Unset);
    }
}

#[test]
fn a_response_processed_just_before_its_request_is_still_its_answer() {
    // Go's read loop can report a response before the write loop's request reaches the agent.
    let mut h = Harness::new(Role::Client);
    let req = b"GET /api/v1/namespaces/a/pods/p HTTP/1.1\r\nHost: x\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    for i in 0..3u64 {
        // Request written at 10 (entry), response read at 12..13, but delivered in reverse.
        h.send(Direction::Ingress, resp, 100 * i + 12, 100 * i + 13);
        h.send(Direction::Egress, req, 100 * i + 10, 100 * i + 11);
    }
    let spans = h.close(1_000);
    assert_eq!(spans.len(), 3, "{spans:?}");
    for s in &spans {
        assert_eq!(s.end_unix_nano - s.start_unix_nano, 3, "paired with its own response");
        assert_eq!(s.status, SpanStatus::Unset);
        assert_eq!(attr(s, "http.response.status_code"), &AttrValue::Int(200));
    }
}

mod origin;
mod traceparent;
