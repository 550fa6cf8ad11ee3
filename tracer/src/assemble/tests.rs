//! Assembly on recorded byte streams, without a kernel: chunks as the probes deliver them.

use std::sync::Arc;

use super::*;
use crate::{
    connections::Connection,
    events::DataChunk,
    span::{AttrValue, ProcessInfo, SpanKind, SpanStatus},
};

fn process() -> Arc<ProcessInfo> {
    Arc::new(ProcessInfo { service_name: "kube-apiserver".into(), pid: 7, executable_name: "kube-apiserver".into(), host_name: "node".into() })
}

struct Harness {
    asm: Assembler,
    conn: Connection,
    seq: u32,
    spans: Vec<SpanRecord>,
}

impl Harness {
    fn new(role: Role) -> Self {
        let local = "10.0.0.1:6443".parse().ok();
        let peer = "10.0.0.2:40000".parse().ok();
        Harness { asm: Assembler::new(Clock::new()), conn: Connection::new(role, local, peer, 1_000, false, process()), seq: 0, spans: Vec::new() }
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
            seq: self.seq,
            direction: dir,
            tls: false,
            first: true,
            last: true,
            data,
        };
        self.seq += 1;
        let feed = self.conn.on_chunk(&chunk).expect("syscall bytes of a plaintext connection are decoded");
        self.asm.on_feed(&mut self.conn, dir, feed, &mut self.spans);
    }

    fn send(&mut self, dir: Direction, data: &[u8], enter_ns: u64, exit_ns: u64) {
        self.syscall(dir, data, data.len() as u64, enter_ns, exit_ns);
    }

    fn close(mut self, ts: u64) -> Vec<SpanRecord> {
        let conn = std::mem::replace(&mut self.conn, Connection::new(Role::Server, None, None, 0, false, process()));
        self.asm.on_close(conn, ts, &mut self.spans);
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
    h.send(Direction::Ingress, b"DELETE /apis/apps/v1/namespaces/ns/deployments/d HTTP/1.1\r\nHost: x\r\n\r\n", 300, 310);
    h.send(Direction::Egress, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", 400, 410);
    let spans = h.close(500);
    assert_eq!(spans.len(), 2);
    let (a, b) = (&spans[0], &spans[1]);
    assert_eq!(a.name, "GET /api/v1/namespaces/{namespace}/pods/{name}");
    assert_eq!(a.kind, SpanKind::Server);
    assert_eq!(a.end_unix_nano - a.start_unix_nano, 100, "first request byte read (exit 110) → last response byte written (exit 210)");
    assert_eq!(attr(a, "http.response.status_code"), &AttrValue::Int(200));
    assert_eq!(attr(a, "http.response.body.size"), &AttrValue::Int(2));
    assert_eq!(attr(a, "k8s.verb"), &AttrValue::Str("get".into()));
    assert_eq!(attr(a, "k8s.object.name"), &AttrValue::Str("web-0".into()));
    assert_eq!(attr(a, "client.address"), &AttrValue::Str("10.0.0.2".into()));
    assert_eq!(attr(a, "server.port"), &AttrValue::Int(6443));
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
fn client_spans_mark_4xx_as_errors_and_time_from_the_first_write() {
    let mut h = Harness::new(Role::Client);
    h.send(Direction::Egress, b"POST /validate HTTP/1.1\r\nHost: webhook.svc:443\r\nContent-Length: 4\r\n\r\nbody", 1000, 1010);
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
    h.send(Direction::Ingress, b"GET /api/v1/namespaces/default/pods?watch=true&resourceVersion=5 HTTP/1.1\r\nHost: a\r\n\r\n", 10, 11);
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
    h.seq += 3; // the ring buffer was full: three syscalls of this socket never arrived
    h.send(Direction::Ingress, b"GET /api/v1/nodes HTTP/1.1\r\nHost: a\r\n\r\n", 30, 31);
    h.send(Direction::Egress, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 40, 41);
    let spans = h.close(50);
    assert_eq!(spans.len(), 1);
    assert_eq!(attr(&spans[0], "url.path"), &AttrValue::Str("/api/v1/nodes".into()));
}

#[test]
fn a_request_without_response_at_close_is_an_error_span() {
    let mut h = Harness::new(Role::Server);
    h.send(Direction::Ingress, b"POST /api/v1/namespaces/a/configmaps HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 10, 11);
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
