//! An incoming `traceparent` on recorded requests, and the latency class of each kind of span.

use super::*;
use crate::span::{LatencyClass, RemoteParent};

/// What curl 7.88.1 sent for `curl -H 'traceparent: …' -H 'Authorization: Bearer s3cr3t' URL`.
const CURL_GET_WITH_TRACEPARENT: &[u8] = b"GET /api/v1/namespaces/default/pods/web-0 HTTP/1.1\r\nHost: 127.0.0.1:18931\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nAuthorization: Bearer s3cr3t\r\n\r\n";

/// What curl 7.88.1 sent for `curl --http2-prior-knowledge -H 'traceparent: …' URL` (the same
/// path and traceparent): the preface, SETTINGS, WINDOW_UPDATE and the request's HEADERS, with
/// HPACK's Huffman coding and incremental indexing.
const CURL_H2C_GET_WITH_TRACEPARENT: &str = "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a00001204000000000000030000006400040200000000020000000000000408000000000001ff000100006c01050000000182049a6075998ee162a1d2545632150c4859476d0962b3c8863c16358186418b089d5c0b8170dc0bcfb22f7a8825b650c3abbcf2e153032a2f2a40884d83216b1d85a93fa700166a395f14acb6ebb1b2d483706c90af89f9005015a7597160025038e8c608c6f8051bab003f";

fn caller() -> RemoteParent {
    RemoteParent {
        trace_id: [0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36],
        span_id: [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
        sampled: true,
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// One HTTP/1 exchange on a connection of `role`: the span.
fn h1_exchange(role: Role, request: &[u8]) -> SpanRecord {
    let mut h = Harness::new(role);
    let (req_dir, resp_dir) = match role {
        Role::Server => (Direction::Ingress, Direction::Egress),
        Role::Client => (Direction::Egress, Direction::Ingress),
    };
    h.send(req_dir, request, 100, 110);
    h.send(resp_dir, OK_JSON, 200, 210);
    let mut spans = h.close(300);
    assert_eq!(spans.len(), 1, "{spans:?}");
    spans.remove(0)
}

/// The ids are the span's, never an attribute; and no other header value leaks.
fn assert_not_an_attribute(s: &SpanRecord) {
    for (k, v) in &s.attributes {
        let text = format!("{k}={v:?}").to_lowercase();
        assert!(!text.contains("traceparent") && !text.contains("4bf92f35") && !text.contains("s3cr3t"), "{text}");
    }
}

#[test]
fn an_http1_server_span_carries_its_callers_traceparent() {
    let s = h1_exchange(Role::Server, CURL_GET_WITH_TRACEPARENT);
    assert_eq!(s.remote_parent, Some(caller()));
    assert_eq!(s.latency_class, LatencyClass::SingleObject);
    assert_not_an_attribute(&s);

    // Go's net/http sends the name capitalised; names are case-insensitive.
    let go_style = String::from_utf8_lossy(CURL_GET_WITH_TRACEPARENT).replace("traceparent:", "Traceparent:");
    assert_eq!(h1_exchange(Role::Server, go_style.as_bytes()).remote_parent, Some(caller()));
    let unsampled = String::from_utf8_lossy(CURL_GET_WITH_TRACEPARENT).replace("b7-01\r\n", "b7-00\r\n");
    let s = h1_exchange(Role::Server, unsampled.as_bytes());
    assert_eq!(s.remote_parent, Some(RemoteParent { sampled: false, ..caller() }));
}

#[test]
fn invalid_repeated_or_outgoing_traceparents_give_no_remote_parent() {
    let text = String::from_utf8_lossy(CURL_GET_WITH_TRACEPARENT).into_owned();
    let line = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n";
    let twice = text.replace(line, &format!("{line}{line}"));
    let uppercase = text.replace("4bf92f3577b34da6a3ce929d0e0e4736", "4BF92F3577B34DA6A3CE929D0E0E4736");
    let zero_parent = text.replace("00f067aa0ba902b7", "0000000000000000");
    for request in [twice, uppercase, zero_parent] {
        let s = h1_exchange(Role::Server, request.as_bytes());
        assert_eq!(s.remote_parent, None, "{request}");
        assert_not_an_attribute(&s);
    }
    // The target's own outgoing request: its traceparent is the target's context, not a caller's.
    assert_eq!(h1_exchange(Role::Client, CURL_GET_WITH_TRACEPARENT).remote_parent, None);
}

#[test]
fn an_http2_server_span_carries_its_callers_traceparent() {
    use crate::protocols::http2::build;
    let mut h = Harness::new(Role::Server);
    h.send(Direction::Ingress, &unhex(CURL_H2C_GET_WITH_TRACEPARENT), 10, 11);
    // :status 200 (static index 8), END_STREAM.
    h.send(Direction::Egress, &build::headers(1, &[0x88], true), 20, 21);
    let spans = h.close(100);
    assert_eq!(spans.len(), 1, "{spans:?}");
    let s = &spans[0];
    assert_eq!(s.name, "GET /api/v1/namespaces/{namespace}/pods/{name}");
    assert_eq!(s.remote_parent, Some(caller()));
    assert_eq!(s.latency_class, LatencyClass::SingleObject);
    assert_not_an_attribute(s);
}

#[test]
fn spans_have_the_latency_class_of_their_request() {
    let class_of = |request: &str| h1_exchange(Role::Server, request.as_bytes()).latency_class;
    assert_eq!(
        class_of("GET /api/v1/namespaces/a/pods HTTP/1.1\r\nHost: a\r\n\r\n"),
        LatencyClass::NamespaceCollection
    );
    assert_eq!(class_of("GET /api/v1/pods HTTP/1.1\r\nHost: a\r\n\r\n"), LatencyClass::ClusterCollection);
    assert_eq!(class_of("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"), LatencyClass::Other);
    assert_eq!(class_of("GET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: a\r\n\r\n"), LatencyClass::Streaming);
    let h = Harness::new(Role::Client);
    assert_eq!(h.close(100)[0].latency_class, LatencyClass::Connection);
}
