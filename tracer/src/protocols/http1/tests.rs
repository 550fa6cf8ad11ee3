use std::sync::Arc;

use super::head::{LastValue, method_text};
use super::*;
use crate::protocols::test_rng::Lcg;
use crate::span::AttrStr;

mod edge;
mod wire;
use wire::*;

// ---- Helpers ------------------------------------------------------------------------------

/// Segment `n` has enter = n µs and exit = n µs + 7 ns, so both fields are checked.
fn ts(n: u64) -> Timing {
    Timing { enter_ns: n * 1000, exit_ns: n * 1000 + 7, goroutine: 0 }
}

fn seg(data: &[u8], n: u64) -> Segment<'_> {
    Segment { data, uncaptured_after: 0, enter_ns: n * 1000, exit_ns: n * 1000 + 7, goroutine: 0 }
}

fn partial(data: &[u8], uncaptured_after: u64, n: u64) -> Segment<'_> {
    Segment { uncaptured_after, ..seg(data, n) }
}

fn request(method: &str, target: &str, ua: Option<&str>, host: Option<&str>) -> RequestHead {
    let text = |s: &str| AttrStr::Owned(s.to_owned());
    RequestHead {
        method: text(method),
        target: target.into(),
        user_agent: ua.map(text),
        host: host.map(text),
        traceparent: None,
        content_length: None,
        chunked: false,
        upgrade: false,
    }
}

#[test]
fn repeated_header_values_are_shared_and_exact() {
    let mut last = LastValue::default();
    let ua = b"kubectl/v1.31.0 (linux/amd64) kubernetes/7c5ddbd";
    let (AttrStr::Shared(a), AttrStr::Shared(b)) = (last.text(ua), last.text(ua)) else {
        panic!("header values are shared text");
    };
    assert!(Arc::ptr_eq(&a, &b), "a repeated value is not copied again");
    // Short ones are held in place, repeated or not.
    assert!(matches!(last.text(b"kubectl/v1.31"), AttrStr::Inline(v) if v.as_str() == "kubectl/v1.31"));
    assert!(matches!(last.text(b"kubectl/v1.31"), AttrStr::Inline(v) if v.as_str() == "kubectl/v1.31"));
    assert_eq!(&*last.text(b"client-go/1.0"), "client-go/1.0");
    assert_eq!(&*last.text(b"bad \xff"), "bad \u{fffd}");
    assert_eq!(&*last.text(b"bad \xff"), "bad \u{fffd}");
    assert_eq!(&*last.text(b"kubectl/v1.31"), "kubectl/v1.31");
    assert!(matches!(method_text("GET"), AttrStr::Static("GET")));
    assert!(matches!(method_text("PROPFIND"), AttrStr::Owned(m) if m == "PROPFIND"));
}

fn response(status: u16, content_length: Option<u64>, chunked: bool) -> Head {
    Head::Response(ResponseHead { status, content_length, chunked })
}

fn curl_get_head() -> Head {
    Head::Request(request(
        "GET",
        "/api/v1/namespaces/default/pods?limit=500",
        Some("curl/7.88.1"),
        Some("127.0.0.1:18080"),
    ))
}

fn curl_post_head() -> Head {
    Head::Request(RequestHead {
        content_length: Some(65),
        ..request("POST", "/api/v1/namespaces/default/configmaps", Some("curl/7.88.1"), Some("127.0.0.1:18080"))
    })
}

fn kubectl_watch_head() -> Head {
    Head::Request(request(
        "GET",
        "/api/v1/namespaces/default/pods?resourceVersion=4711&watch=true",
        Some("kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc"),
        Some("10.96.0.1:443"),
    ))
}

/// Expected event, with byte offsets into the wire standing in for timings.
enum Exp {
    /// Head, offset of the message's first byte.
    Head(Head, usize),
    /// End: body size, offset of the message's last byte.
    End(u64, usize),
}

/// Turns offsets into the timings of the segments holding them.
fn resolve(exp: &[Exp], seg_of: impl Fn(usize) -> u64) -> Vec<Http1Event> {
    exp.iter()
        .map(|e| match e {
            Exp::Head(head, first) => Http1Event::Head { head: head.clone(), first_byte: ts(seg_of(*first)) },
            Exp::End(body_size, last) => Http1Event::End { body_size: *body_size, last_byte: ts(seg_of(*last)) },
        })
        .collect()
}

fn decode(dec: &mut Http1Decoder, segs: &[Segment<'_>]) -> Vec<Http1Event> {
    let mut out = Vec::new();
    for s in segs {
        dec.feed(s, &mut out);
        assert!(dec.buf.len() <= HEAD_LIMIT);
    }
    out
}

/// Feeds `wire` whole, split in two at every byte boundary, and one byte per segment; each
/// time the events must match `exp`, timed by the segments holding the given bytes.
fn check_splits(kind: MessageKind, wire: &[u8], exp: &[Exp], prep: impl Fn(&mut Http1Decoder)) {
    let run = |segs: &[Segment<'_>]| {
        let mut dec = Http1Decoder::new(kind);
        prep(&mut dec);
        let out = decode(&mut dec, segs);
        assert!(!dec.is_desynced(), "{dec:?}");
        assert!(dec.buf.is_empty(), "nothing may stay buffered after complete messages");
        out
    };
    assert_eq!(run(&[seg(wire, 1)]), resolve(exp, |_| 1), "whole");
    for cut in 0..=wire.len() {
        let (a, b) = wire.split_at(cut);
        let got = run(&[seg(a, 1), seg(b, 2)]);
        assert_eq!(got, resolve(exp, |o| if o < cut { 1 } else { 2 }), "split at {cut}");
    }
    let bytes: Vec<Segment<'_>> = wire.chunks(1).zip(1..).map(|(b, n)| seg(b, n)).collect();
    assert_eq!(run(&bytes), resolve(exp, |o| o as u64 + 1), "1-byte segments");
}

fn offset_of(wire: &[u8], needle: &[u8]) -> usize {
    wire.windows(needle.len()).position(|w| w == needle).expect("needle in wire")
}

/// Events must nest: End only closes an open Head, Head never opens twice.
fn assert_well_formed(events: &[Http1Event]) {
    let mut open = false;
    for e in events {
        match e {
            Http1Event::Head { .. } => {
                assert!(!open, "{events:?}");
                open = true;
            }
            Http1Event::End { .. } => {
                assert!(open, "{events:?}");
                open = false;
            }
            Http1Event::Desync { .. } => open = false,
        }
    }
}

// ---- Detection ----------------------------------------------------------------------------

#[test]
fn detects_message_starts() {
    for req in [CURL_GET, CURL_POST, CURL_CHUNKED_PUT, KUBECTL_WATCH, KUBECTL_EXEC, b"M-SEARCH * HTTP/1.1"] {
        assert!(looks_like_request(req));
        assert!(!looks_like_response(req));
    }
    for resp in [NGINX_KEEPALIVE, NGINX_304, PY_SIMPLE, PY_NO_LENGTH, APISERVER_WATCH_HEAD] {
        assert!(looks_like_response(resp));
        assert!(!looks_like_request(resp));
    }
    let not_http: [&[u8]; 9] = [
        b"",
        b"GET",
        b" GET / HTTP/1.1",
        b"get / HTTP/1.1",
        b"GET  / HTTP/1.1",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"{\"kind\":\"Status\"}",
        TLS_HELLO,
        SPDY_FRAME,
    ];
    for data in not_http {
        assert!(!looks_like_request(data), "{data:?}");
        assert!(!looks_like_response(data), "{data:?}");
    }
    assert!(!looks_like_response(b"HTTP/2 200"));
}

// ---- Whole messages at every split --------------------------------------------------------

#[test]
fn curl_get_at_every_split() {
    let exp = [Exp::Head(curl_get_head(), 0), Exp::End(0, CURL_GET.len() - 1)];
    check_splits(MessageKind::Request, CURL_GET, &exp, |_| {});
}

#[test]
fn curl_post_body_at_every_split() {
    let exp = [Exp::Head(curl_post_head(), 0), Exp::End(65, CURL_POST.len() - 1)];
    check_splits(MessageKind::Request, CURL_POST, &exp, |_| {});
}

#[test]
fn credentials_are_never_kept() {
    for wire in [CURL_POST, KUBECTL_WATCH] {
        for cut in 0..=wire.len() {
            let (a, b) = wire.split_at(cut);
            let mut dec = Http1Decoder::new(MessageKind::Request);
            let mut out = decode(&mut dec, &[seg(a, 1)]);
            assert!(!format!("{dec:?}").contains("Bearer"));
            out.extend(decode(&mut dec, &[seg(b, 2)]));
            let shown = format!("{out:?}{dec:?}");
            assert!(!shown.contains("s3cr3t") && !shown.contains("Bearer"), "{shown}");
            assert_eq!(dec.buf.capacity(), 0, "head buffer must be wiped and freed");
        }
    }
}

#[test]
fn curl_chunked_put_at_every_split() {
    let head = Head::Request(RequestHead {
        chunked: true,
        ..request("PUT", "/upload", Some("curl/7.88.1"), Some("127.0.0.1:18080"))
    });
    let exp = [Exp::Head(head, 0), Exp::End(20, CURL_CHUNKED_PUT.len() - 1)];
    check_splits(MessageKind::Request, CURL_CHUNKED_PUT, &exp, |_| {});
}

#[test]
fn nginx_keep_alive_at_every_split() {
    let second = offset_of(NGINX_KEEPALIVE, b"HTTP/1.1 404");
    let exp = [
        Exp::Head(response(200, Some(55), false), 0),
        Exp::End(55, second - 1),
        Exp::Head(response(404, Some(153), false), second),
        Exp::End(153, NGINX_KEEPALIVE.len() - 1),
    ];
    check_splits(MessageKind::Response, NGINX_KEEPALIVE, &exp, |_| {});
}

#[test]
fn nginx_gzip_chunked_at_every_split() {
    let exp = [Exp::Head(response(200, None, true), 0), Exp::End(50, NGINX_GZIP_CHUNKED.len() - 1)];
    check_splits(MessageKind::Response, NGINX_GZIP_CHUNKED, &exp, |_| {});
}

#[test]
fn not_modified_has_no_body() {
    let mut wire = NGINX_304.to_vec();
    wire.extend_from_slice(PY_SIMPLE);
    let exp = [
        Exp::Head(response(304, None, false), 0),
        Exp::End(0, NGINX_304.len() - 1),
        Exp::Head(response(200, Some(55), false), NGINX_304.len()),
        Exp::End(55, wire.len() - 1),
    ];
    check_splits(MessageKind::Response, &wire, &exp, |_| {});
}

#[test]
fn head_request_response_has_no_body() {
    let mut wire = NGINX_HEAD.to_vec();
    wire.extend_from_slice(NGINX_KEEPALIVE);
    let second = NGINX_HEAD.len();
    let third = second + offset_of(NGINX_KEEPALIVE, b"HTTP/1.1 404");
    let exp = [
        Exp::Head(response(200, Some(55), false), 0),
        Exp::End(0, second - 1),
        Exp::Head(response(200, Some(55), false), second),
        Exp::End(55, third - 1),
        Exp::Head(response(404, Some(153), false), third),
        Exp::End(153, wire.len() - 1),
    ];
    check_splits(MessageKind::Response, &wire, &exp, |d| d.expect_no_body_for_next_response());

    // Without being told, the decoder takes 55 bytes of the next response for a body and
    // then finds itself mid-message.
    let mut dec = Http1Decoder::new(MessageKind::Response);
    let out = decode(&mut dec, &[seg(&wire, 1)]);
    assert!(matches!(
        out[..],
        [Http1Event::Head { .. }, Http1Event::End { body_size: 55, .. }, Http1Event::Desync { .. }]
    ));
}

#[test]
fn python_http10_with_length_at_every_split() {
    let exp = [Exp::Head(response(200, Some(55), false), 0), Exp::End(55, PY_SIMPLE.len() - 1)];
    check_splits(MessageKind::Response, PY_SIMPLE, &exp, |_| {});
}

#[test]
fn python_body_without_length_ends_at_close() {
    for cut in 0..=PY_NO_LENGTH.len() {
        let (a, b) = PY_NO_LENGTH.split_at(cut);
        let mut dec = Http1Decoder::new(MessageKind::Response);
        let mut out = decode(&mut dec, &[seg(a, 1), seg(b, 2)]);
        assert_eq!(out.len(), 1, "only the head before close: {out:?}");
        dec.on_close(ts(9), &mut out);
        let expected = Http1Event::End { body_size: 24, last_byte: ts(9) };
        assert_eq!(out.last(), Some(&expected), "split at {cut}");
    }
}

#[test]
fn go_chunked_response_at_every_split() {
    let wire = go_chunked_response();
    let exp = [Exp::Head(response(200, None, true), 0), Exp::End(2500, wire.len() - 1)];
    check_splits(MessageKind::Response, &wire, &exp, |_| {});
}

#[test]
fn chunk_extensions_and_trailers_at_every_split() {
    let wire = b"HTTP/1.1 200 OK\r\n\
          Transfer-Encoding: gzip, chunked\r\n\
          Trailer: X-Checksum\r\n\
          \r\n\
          5;name=\"a;b\"\r\n\
          hello\r\n\
          00006 ; ext\r\n\
          \x20world\r\n\
          0\r\n\
          X-Checksum: 5d41402a\r\n\
          X-Other: 1\r\n\
          \r\n";
    let exp = [Exp::Head(response(200, None, true), 0), Exp::End(11, wire.len() - 1)];
    check_splits(MessageKind::Response, wire, &exp, |_| {});
}

#[test]
fn kubectl_watch_request_at_every_split() {
    let exp = [Exp::Head(kubectl_watch_head(), 0), Exp::End(0, KUBECTL_WATCH.len() - 1)];
    check_splits(MessageKind::Request, KUBECTL_WATCH, &exp, |_| {});
}

#[test]
fn pipelined_requests_in_one_segment() {
    let wire = [CURL_GET, CURL_POST, CURL_GET, KUBECTL_WATCH].concat();
    let (b, c, d) = (CURL_GET.len(), CURL_GET.len() + CURL_POST.len(), 2 * CURL_GET.len() + CURL_POST.len());
    let exp = [
        Exp::Head(curl_get_head(), 0),
        Exp::End(0, b - 1),
        Exp::Head(curl_post_head(), b),
        Exp::End(65, c - 1),
        Exp::Head(curl_get_head(), c),
        Exp::End(0, d - 1),
        Exp::Head(kubectl_watch_head(), d),
        Exp::End(0, wire.len() - 1),
    ];
    check_splits(MessageKind::Request, &wire, &exp, |_| {});
}

#[test]
fn keep_alive_sequence_one_message_per_segment() {
    let mut dec = Http1Decoder::new(MessageKind::Request);
    let out = decode(&mut dec, &[seg(CURL_POST, 1), seg(b"\r\n", 2), seg(CURL_GET, 3), seg(CURL_CHUNKED_PUT, 4)]);
    let kinds: Vec<_> = out
        .iter()
        .map(|e| match e {
            Http1Event::Head { first_byte, .. } => ("head", *first_byte),
            Http1Event::End { last_byte, .. } => ("end", *last_byte),
            Http1Event::Desync { .. } => ("desync", Timing::default()),
        })
        .collect();
    assert_eq!(
        kinds,
        [("head", ts(1)), ("end", ts(1)), ("head", ts(3)), ("end", ts(3)), ("head", ts(4)), ("end", ts(4))]
    );
}

// ---- Watch: head now, body forever --------------------------------------------------------

#[test]
fn watch_response_head_is_reported_before_the_endless_body() {
    let mut dec = Http1Decoder::new(MessageKind::Response);
    let mut out = decode(&mut dec, &[seg(APISERVER_WATCH_HEAD, 1)]);
    assert_eq!(out, [Http1Event::Head { head: response(200, None, true), first_byte: ts(1) }]);

    // Reads that hold whole chunks (the usual case) are counted in place, never copied.
    for rv in 0..3 {
        dec.feed(&seg(&watch_chunk("ADDED", "web", rv), 2), &mut out);
        assert_eq!(dec.buf.capacity(), 0);
    }

    let mut stream = Vec::new();
    for rv in 0..200 {
        stream.extend(watch_chunk(["ADDED", "MODIFIED", "DELETED"][rv % 3], &format!("web-{rv}"), 4711 + rv as u32));
    }
    // Uneven reads that cut chunk-size lines, payloads and CRLFs alike.
    let mut rng = Lcg(7);
    let mut rest = stream.as_slice();
    let mut n = 2;
    while !rest.is_empty() {
        let (a, b) = rest.split_at((1 + rng.below(300)).min(rest.len()));
        dec.feed(&seg(a, n), &mut out);
        assert!(dec.buf.len() <= CHUNK_LINE_LIMIT);
        rest = b;
        n += 1;
    }
    assert_eq!(out.len(), 1, "no End while the watch is open");
    assert!(!dec.is_desynced());
    dec.on_close(ts(n), &mut out);
    assert_eq!(out.len(), 1, "a watch cut by close is abandoned silently");
}
