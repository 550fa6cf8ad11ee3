//! Where each span was seen (its origin: connection, stream, goroutine, kernel times), and the
//! HTTP/2 client streams named by grpc-go's links when their HEADERS cannot be read.

use super::h2::{STATUS_200, grpc_trailers, range_request};
use super::*;
use crate::{
    events::{GoLink, GoLinkKind},
    protocols::{hpack::testenc::GoLikeEncoder, http2::build},
    span::SpanOrigin,
};

/// Goroutines (`g` addresses as Go allocates them): grpc-go's writer of the connection, its
/// reader, and a goroutine that writes nothing of these streams.
const WRITER: u64 = 0xc0_0060_2000;
const READER: u64 = 0xc0_0060_31a0;
const OTHER: u64 = 0xc0_0000_71e0;

/// The header list grpc-go 1.33 (etcd 3.4's client) sends for a call, in its order.
fn grpc_go_headers(enc: &mut GoLikeEncoder, path: &str) -> Vec<u8> {
    enc.encode(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":path", path),
        (":authority", "127.0.0.1:2379"),
        ("content-type", "application/grpc"),
        ("user-agent", "grpc-go/1.33.1"),
        ("te", "trailers"),
    ])
}

/// An encoder whose dynamic table holds what the calls made before the agent attached put there
/// (a client that has used these methods), which the agent's decoder never saw.
fn encoder_after(paths: &[&str]) -> GoLikeEncoder {
    let mut enc = GoLikeEncoder::new();
    for path in paths {
        grpc_go_headers(&mut enc, path);
    }
    enc
}

const KV_METHODS: [&str; 4] =
    ["/etcdserverpb.KV/Range", "/etcdserverpb.KV/Put", "/etcdserverpb.KV/Txn", "/etcdserverpb.Watch/Watch"];

/// What the probe on grpc-go's header handler reports: `writer` of process `tgid` opens stream
/// `stream_id` for `path`.
fn grpc_link(tgid: u32, writer: u64, stream_id: u32, path: &str, ts_ns: u64) -> GoLink {
    let mut bytes = [0; tracer_common::GO_LINK_PATH];
    bytes[..path.len()].copy_from_slice(path.as_bytes());
    let kind = GoLinkKind::GrpcClientStream { stream_id, caller: OTHER, path: bytes, path_len: path.len() };
    GoLink { tgid, ts_ns, goroutine: writer, kind }
}

/// A client connection to etcd that predates the agent.
fn etcd_client_joined_mid_way() -> Harness {
    let mut h = Harness::new(Role::Client);
    h.conn.peer = "10.0.0.3:2379".parse().ok();
    h.conn.preexisting = true;
    h
}

/// One unary call on stream `id`: request HEADERS `head` and message `msg` written by `WRITER`
/// at `t`, then a Range response read by `READER` at `t + 10`.
fn unary_call(h: &mut Harness, id: u32, head: &[u8], msg: &[u8], t: u64) {
    h.goroutine = WRITER;
    let req = [build::headers(id, head, false), build::data(id, &build::grpc_message(msg), true)].concat();
    h.send(Direction::Egress, &req, t, t + 1);
    h.goroutine = READER;
    let resp = [
        build::headers(id, &[STATUS_200], false),
        build::data(id, &build::grpc_message(&[0x0a, 0x02, 0x18, 0x07, 0x20, 0x03]), false),
        build::headers(id, &grpc_trailers(0), true),
    ]
    .concat();
    h.send(Direction::Ingress, &resp, t + 10, t + 11);
}

#[test]
fn a_stream_of_a_connection_opened_before_attach_is_named_by_its_writers_link() {
    let mut enc = encoder_after(&KV_METHODS);
    let head = grpc_go_headers(&mut enc, "/etcdserverpb.KV/Range");
    assert!(head.iter().all(|b| b & 0x80 != 0), "every field is an index into the table filled before attach");
    let mut h = etcd_client_joined_mid_way();
    // The probe runs before the frame is written.
    h.asm.on_go_link(&grpc_link(7, WRITER, 9, "/etcdserverpb.KV/Range", 5));
    unary_call(&mut h, 9, &head, &range_request(b"/registry/pods/default/web-0", b""), 10);
    let st = &h.asm.stats;
    let (used, expired, unnamed) = (st.grpc_links_used, st.grpc_links_expired, st.unnamed_streams);
    let left = h.asm.grpc_links.len();
    let spans = h.close(100);
    assert_eq!(spans.len(), 1, "{spans:?}");
    let s = &spans[0];
    assert_eq!(s.name, "etcd Range pods");
    assert_eq!(attr(s, "rpc.system"), &AttrValue::Str("grpc".into()));
    assert_eq!(attr(s, "rpc.service"), &AttrValue::Str("etcdserverpb.KV".into()));
    assert_eq!(attr(s, "rpc.method"), &AttrValue::Str("Range".into()));
    assert_eq!(attr(s, "db.operation.name"), &AttrValue::Str("Range".into()));
    assert_eq!(attr(s, "etcd.key"), &AttrValue::Str("/registry/pods/default/web-0".into()));
    assert_eq!(attr(s, "k8s.object.name"), &AttrValue::Str("web-0".into()));
    assert_eq!(attr(s, "etcd.response.count"), &AttrValue::Int(3));
    assert_eq!(
        s.origin,
        SpanOrigin {
            tgid: 7,
            fd: 3,
            conn_opened_ns: 1_000,
            local: "10.0.0.1:6443".parse().ok(),
            peer: "10.0.0.3:2379".parse().ok(),
            stream_id: Some(9),
            goroutine: WRITER,
            start_ns: 10,
            end_ns: 21,
            peer_traced: false,
        }
    );
    assert_eq!((used, expired, left, unnamed), (1, 0, 0, 0), "the link was used once and let go");
}

/// A link names only the stream its writer wrote, in its process, while it is fresh.
#[test]
fn a_link_of_another_writer_process_or_time_names_nothing() {
    let mut enc = encoder_after(&KV_METHODS);
    let head = grpc_go_headers(&mut enc, "/etcdserverpb.KV/Range");
    let msg = range_request(b"/registry/pods/default/web-0", b"");
    let mut h = etcd_client_joined_mid_way();
    let late = 1 + links_max_age() + 1;
    h.asm.on_go_link(&grpc_link(7, OTHER, 9, "/etcdserverpb.KV/Range", 5));
    h.asm.on_go_link(&grpc_link(8, WRITER, 11, "/etcdserverpb.KV/Range", 5));
    h.asm.on_go_link(&grpc_link(7, WRITER, 13, "/etcdserverpb.KV/Range", 1));
    unary_call(&mut h, 9, &head, &msg, 10);
    unary_call(&mut h, 11, &head, &msg, 30);
    unary_call(&mut h, 13, &head, &msg, late);
    let unnamed = h.asm.stats.unnamed_streams;
    let spans = h.close(late + 100);
    assert_eq!(spans.len(), 3, "{spans:?}");
    for s in &spans {
        assert_eq!(s.name, "etcd unknown", "{:?}", s.origin.stream_id);
        assert!(s.attr("rpc.method").is_none() && s.attr("etcd.key").is_none(), "nothing is guessed: {s:?}");
        assert_eq!(s.origin.goroutine, WRITER);
    }
    assert_eq!(unnamed, 3, "each stream without a name is counted");
}

/// The case: a method first called after attach has its path sent as a literal, while
/// the content-type is an index into the table filled before.
#[test]
fn an_etcd_path_with_a_length_prefixed_body_is_etcd_whatever_the_content_type() {
    let mut enc = encoder_after(&KV_METHODS);
    let head = grpc_go_headers(&mut enc, "/etcdserverpb.KV/DeleteRange");
    let mut h = etcd_client_joined_mid_way();
    // DeleteRangeRequest { key: 1 }.
    let key = b"/registry/configmaps/default/cm-7";
    let msg = [&[0x0a, key.len() as u8][..], key].concat();
    unary_call(&mut h, 9, &head, &msg, 10);
    // The same path with a body that is no gRPC message (its first byte is no compressed flag).
    h.goroutine = WRITER;
    let json = [build::headers(11, &head_again(&mut enc), false), build::data(11, b"{\"key\":\"x\"}", true)].concat();
    h.send(Direction::Egress, &json, 40, 41);
    h.send(Direction::Ingress, &build::headers(11, &[vec![STATUS_200], grpc_trailers(0)].concat(), true), 50, 51);
    let spans = h.close(100);
    assert_eq!(spans.len(), 2, "{spans:?}");
    let s = &spans.iter().find(|s| s.origin.stream_id == Some(9)).expect("stream 9");
    assert_eq!(s.name, "etcd DeleteRange configmaps");
    assert_eq!(attr(s, "rpc.method"), &AttrValue::Str("DeleteRange".into()));
    assert_eq!(attr(s, "etcd.key"), &AttrValue::Str(std::str::from_utf8(key).unwrap().into()));
    let s = &spans.iter().find(|s| s.origin.stream_id == Some(11)).expect("stream 11");
    assert_eq!(s.name, "POST /etcdserverpb.KV/{path}");
    assert!(s.attr("rpc.method").is_none(), "{s:?}");
}

/// The DeleteRange header list again: now every field is an index.
fn head_again(enc: &mut GoLikeEncoder) -> Vec<u8> {
    grpc_go_headers(enc, "/etcdserverpb.KV/DeleteRange")
}

fn links_max_age() -> u64 {
    crate::assemble::links::MAX_LINK_AGE_NS
}

/// A server's request is the goroutine's that read the end of its head: between the requests
/// of a kept-alive connection, Go's background read takes the next one's first byte.
#[test]
fn http1_origins_name_the_reader_of_the_head_or_the_writer_of_the_request() {
    let mut h = Harness::new(Role::Server);
    h.goroutine = READER;
    h.send(Direction::Ingress, GET_POD, 50, 51);
    h.send(Direction::Egress, OK_JSON, 60, 61);
    let (first, rest) = GET_POD.split_at(1);
    h.goroutine = OTHER;
    h.send(Direction::Ingress, first, 100, 101);
    h.goroutine = READER;
    h.send(Direction::Ingress, rest, 102, 103);
    h.send(Direction::Egress, OK_JSON, 200, 210);
    let spans = h.close(300);
    assert_eq!(spans.len(), 2);
    let o = spans[1].origin;
    assert_eq!((o.goroutine, o.stream_id, o.start_ns, o.end_ns), (READER, None, 101, 210));
    assert_eq!((o.tgid, o.fd, o.conn_opened_ns, o.peer_traced), (7, 3, 1_000, false));
    assert_eq!((o.local, o.peer), ("10.0.0.1:6443".parse().ok(), "10.0.0.2:40000".parse().ok()));
    assert_eq!((spans[0].origin.start_ns, spans[0].origin.end_ns), (51, 61));

    let mut h = Harness::new(Role::Client);
    h.goroutine = WRITER;
    h.send(Direction::Egress, GET_POD, 100, 110);
    h.goroutine = READER;
    h.send(Direction::Ingress, OK_JSON, 200, 210);
    let o = h.close(300)[0].origin;
    assert_eq!((o.goroutine, o.stream_id, o.start_ns, o.end_ns), (WRITER, None, 100, 210));
}

/// HTTP/2: a server's stream is the goroutine's that read the end of its HEADERS, a client's
/// the one that wrote them (its DATA may come from another).
#[test]
fn http2_origins_name_the_stream_and_its_goroutine() {
    let mut enc = GoLikeEncoder::new();
    let head = grpc_go_headers(&mut enc, "/etcdserverpb.KV/Range");
    let msg = build::grpc_message(&range_request(b"/registry/pods/default/web-0", b""));
    let req = [h2::PREFACE.to_vec(), build::headers(1, &head, false), build::data(1, &msg, true)].concat();
    let cut = h2::PREFACE.len() + 4;
    let resp = [build::headers(1, &[STATUS_200], false), build::headers(1, &grpc_trailers(0), true)].concat();

    let mut h = Harness::new(Role::Server);
    h.goroutine = OTHER;
    h.send(Direction::Ingress, &req[..cut], 10, 11);
    h.goroutine = READER;
    h.send(Direction::Ingress, &req[cut..], 12, 13);
    h.send(Direction::Egress, &resp, 20, 21);
    let o = h.close(100)[0].origin;
    assert_eq!((o.goroutine, o.stream_id, o.start_ns, o.end_ns), (READER, Some(1), 10, 21));

    let mut h = Harness::new(Role::Client);
    h.goroutine = WRITER;
    h.send(Direction::Egress, &req[..cut + 9 + head.len()], 10, 11);
    h.goroutine = OTHER;
    h.send(Direction::Egress, &req[cut + 9 + head.len()..], 12, 13);
    h.goroutine = READER;
    h.send(Direction::Ingress, &resp, 20, 21);
    let spans = h.close(100);
    assert_eq!(spans[0].name, "etcd Range pods");
    let o = spans[0].origin;
    assert_eq!((o.goroutine, o.stream_id, o.start_ns, o.end_ns), (WRITER, Some(1), 10, 21));
}

/// A connection span names its connection, no stream and no goroutine, from open to close.
#[test]
fn a_connection_span_has_the_connection_as_origin() {
    let mut h = Harness::new(Role::Server);
    h.conn.peer_traced = true;
    let spans = h.close(5_000);
    assert_eq!(spans[0].name, "TCP connection");
    let o = spans[0].origin;
    assert_eq!((o.goroutine, o.stream_id, o.start_ns, o.end_ns), (0, None, 1_000, 5_000));
    assert_eq!((o.tgid, o.fd, o.peer_traced), (7, 3, true));
}
