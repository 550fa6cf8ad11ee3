use super::build::*;
use super::frame::ft;
use super::*;
use crate::protocols::Timing;
use crate::protocols::hpack::encode as henc;
use crate::protocols::hpack::testenc::GoLikeEncoder;
use crate::protocols::hpack::{FieldValue, Lookup};
use crate::protocols::test_rng::Lcg;
use crate::stream::{Role, Segment};

fn seg(data: &[u8], ts: u64) -> Segment<'_> {
    Segment { data, uncaptured_after: 0, enter_ns: ts, exit_ns: ts + 1, goroutine: 0 }
}

fn feed_all(d: &mut H2Decoder, parts: &[&[u8]]) -> Vec<H2Event> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        d.feed(&seg(p, 100 * i as u64), &mut out);
    }
    out
}

fn without_timing(evs: &[H2Event]) -> Vec<H2Event> {
    evs.iter()
        .map(|e| {
            let mut e = e.clone();
            match &mut e {
                H2Event::Headers { timing, .. }
                | H2Event::HeadersUnknown { timing, .. }
                | H2Event::Data { timing, .. }
                | H2Event::RstStream { timing, .. }
                | H2Event::GoAway { timing, .. }
                | H2Event::Settings { timing, .. } => *timing = Timing::default(),
                H2Event::Desync { at_ns, .. } | H2Event::Resync { at_ns } => *at_ns = 0,
            }
            e
        })
        .collect()
}

/// What `curl --http2-prior-knowledge http://localhost:8080/` sends: preface, SETTINGS
/// (MAX_CONCURRENT_STREAMS 100, INITIAL_WINDOW_SIZE 32 MiB, ENABLE_PUSH 0), WINDOW_UPDATE,
/// HEADERS on stream 1 with END_STREAM.
fn curl_request() -> Vec<u8> {
    let mut v = PREFACE.to_vec();
    v.extend_from_slice(&[
        0x00, 0x00, 0x12, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x00, 0x03, 0x00, 0x00, 0x00, 0x64, //
        0x00, 0x04, 0x02, 0x00, 0x00, 0x00, //
        0x00, 0x02, 0x00, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x00, 0x01,
    ]);
    let mut blk = vec![0x82, 0x84, 0x86, 0x41];
    // :authority localhost:8080 (Huffman), user-agent curl/8.5.0 (Huffman), accept */*
    let mut rest = Vec::new();
    henc::huffman_string(&mut rest, b"localhost:8080");
    rest.push(0x7a);
    henc::huffman_string(&mut rest, b"curl/8.5.0");
    rest.extend_from_slice(&[0x53, 0x03, b'*', b'/', b'*']);
    blk.extend_from_slice(&rest);
    v.extend_from_slice(&headers(1, &blk, true));
    v
}

fn expected_curl_headers() -> Vec<(&'static str, FieldValue)> {
    vec![
        (":method", "GET".into()),
        (":path", "/".into()),
        (":scheme", "http".into()),
        (":authority", "localhost:8080".into()),
        ("user-agent", "curl/8.5.0".into()),
    ]
}

#[test]
fn curl_prior_knowledge_request() {
    let bytes = curl_request();
    let mut d = H2Decoder::new(Role::Client);
    let out = feed_all(&mut d, &[&bytes]);
    assert!(d.saw_preface());
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(matches!(out[0], H2Event::Settings { ack: false, header_table_size: None, max_frame_size: None, .. }));
    match &out[1] {
        H2Event::Headers { stream_id: 1, end_stream: true, fields, unresolved, .. } => {
            assert_eq!(fields, &expected_curl_headers());
            assert!(!unresolved.any());
        }
        e => panic!("{e:?}"),
    }
    assert!(d.hpack().is_fully_known());
}

#[test]
fn split_at_every_byte_boundary() {
    let bytes = curl_request();
    let mut whole = H2Decoder::new(Role::Client);
    let reference = without_timing(&feed_all(&mut whole, &[&bytes]));
    for cut in 0..=bytes.len() {
        let mut d = H2Decoder::new_fresh(Role::Client);
        let out = feed_all(&mut d, &[&bytes[..cut], &bytes[cut..]]);
        assert_eq!(without_timing(&out), reference, "cut at {cut}");
    }
    // Two cuts.
    for a in (0..bytes.len()).step_by(3) {
        for b in (a..bytes.len()).step_by(5) {
            let mut d = H2Decoder::new_fresh(Role::Client);
            let out = feed_all(&mut d, &[&bytes[..a], &bytes[a..b], &bytes[b..]]);
            assert_eq!(without_timing(&out), reference, "cuts at {a},{b}");
        }
    }
    // One byte per segment.
    let mut d = H2Decoder::new_fresh(Role::Client);
    let parts: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(without_timing(&feed_all(&mut d, &parts)), reference);
}

#[test]
fn timing_spans_segments() {
    let bytes = curl_request();
    let mut d = H2Decoder::new(Role::Client);
    let hstart = bytes.len() - 30;
    let out = feed_all(&mut d, &[&bytes[..hstart + 3], &bytes[hstart + 3..hstart + 20], &bytes[hstart + 20..]]);
    match out.last().unwrap() {
        H2Event::Headers { timing, .. } => assert_eq!(*timing, Timing { enter_ns: 0, exit_ns: 201, goroutine: 0 }),
        e => panic!("{e:?}"),
    }
}

#[test]
fn continuation_and_padding() {
    let mut e = GoLikeEncoder::new();
    let blk = e.encode(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":path", "/apis/apps/v1/namespaces/default/deployments"),
        (":authority", "kubernetes.default.svc"),
        ("content-type", "application/json"),
        ("authorization", "Bearer abc"),
    ]);
    let (a, rest) = blk.split_at(5);
    let (b, c) = rest.split_at(7);
    // HEADERS padded (pad 3) + priority, then two CONTINUATIONs.
    let mut p = vec![3u8, 0, 0, 0, 0, 16];
    p.extend_from_slice(a);
    p.extend_from_slice(&[0, 0, 0]);
    let mut bytes = frame(ft::HEADERS, flags::PADDED | flags::PRIORITY, 3, &p);
    bytes.extend(frame(ft::CONTINUATION, 0, 3, b));
    bytes.extend(frame(ft::CONTINUATION, flags::END_HEADERS, 3, c));
    // Padded DATA: pad 4.
    let mut dp = vec![4u8];
    dp.extend_from_slice(b"{\"a\":1}");
    dp.extend_from_slice(&[0; 4]);
    bytes.extend(frame(ft::DATA, flags::PADDED | flags::END_STREAM, 3, &dp));
    for cut in 0..=bytes.len() {
        let mut d = H2Decoder::new_fresh(Role::Server);
        let out = feed_all(&mut d, &[&bytes[..cut], &bytes[cut..]]);
        assert_eq!(out.len(), 2, "cut {cut}: {out:?}");
        match &out[0] {
            H2Event::Headers { stream_id: 3, end_stream: false, fields, .. } => {
                assert_eq!(fields.len(), 5);
                assert_eq!(fields[2], (":path", FieldValue::Static("/apis/apps/v1/namespaces/default/deployments")));
            }
            e => panic!("{e:?}"),
        }
        match &out[1] {
            H2Event::Data { stream_id: 3, len: Some(7), end_stream: true, data, .. } => {
                assert_eq!(data, b"{\"a\":1}")
            }
            e => panic!("{e:?}"),
        }
    }
}

#[test]
fn interleaved_frame_during_continuation_desyncs() {
    let mut bytes = frame(ft::HEADERS, 0, 1, &[0x82]);
    bytes.extend(settings(&[]));
    let mut d = H2Decoder::new_fresh(Role::Server);
    let out = feed_all(&mut d, &[&bytes]);
    assert!(matches!(out[..], [H2Event::Desync { reason: "expected CONTINUATION", .. }]), "{out:?}");
}

#[test]
fn huge_data_partly_captured_then_headers_next_segment() {
    let mut e = GoLikeEncoder::new();
    let mut d = H2Decoder::new_fresh(Role::Server);
    let mut out = Vec::new();
    let blk = e.encode(&[(":status", "200"), ("content-type", "application/json")]);
    d.feed(&seg(&headers(1, &blk, false), 1), &mut out);
    // A 1 MiB DATA frame (peer allowed it) of which only 4000 bytes were captured.
    let big_len = 1 << 20;
    let mut hdr =
        FrameHeader { length: big_len, kind: ft::DATA, flags: 0, stream_id: 1, reserved: false }.to_bytes().to_vec();
    hdr.extend(std::iter::repeat_n(b'x', 3991));
    let s =
        Segment { data: &hdr, uncaptured_after: u64::from(big_len) - 3991, enter_ns: 10, exit_ns: 20, goroutine: 0 };
    d.feed(&s, &mut out);
    // Next segment: trailers-like HEADERS for stream 3 and a DATA for stream 1 end.
    let blk3 = e.encode(&[(":status", "404")]);
    let mut next = headers(3, &blk3, true);
    next.extend(data(1, b"", true));
    d.feed(&seg(&next, 30), &mut out);
    let out = without_timing(&out);
    assert_eq!(out.len(), 4, "{out:?}");
    match &out[1] {
        H2Event::Data { stream_id: 1, len: Some(l), data, end_stream: false, .. } => {
            assert_eq!(*l, big_len);
            assert_eq!(data.len(), 3991);
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(out[2].header(":status"), Some(Lookup::Found("404")));
    assert!(matches!(out[3], H2Event::Data { stream_id: 1, len: Some(0), end_stream: true, .. }));
    assert_eq!(d.stats().bytes_uncaptured, u64::from(big_len) - 3991);
    assert_eq!(d.stats().desyncs, 0);
}

#[test]
fn data_capture_is_bounded() {
    let payload = vec![7u8; 20_000];
    let mut d = H2Decoder::new_fresh(Role::Client);
    let mut bytes = PREFACE.to_vec();
    bytes.extend(data(1, &payload, true));
    let out = feed_all(&mut d, &[&bytes]);
    match &out[..] {
        [H2Event::Data { len: Some(20_000), data, .. }] => assert_eq!(data.len(), DATA_CAPTURE_LIMIT),
        e => panic!("{e:?}"),
    }
    let mut d = H2Decoder::new_fresh(Role::Client);
    d.set_data_capture_limit(0);
    let out = feed_all(&mut d, &[&bytes]);
    assert!(matches!(&out[..], [H2Event::Data { len: Some(20_000), data, .. }] if data.is_empty()));
}

#[test]
fn lost_header_block_resets_hpack_and_reports_unknown() {
    let mut e = GoLikeEncoder::new();
    let mut d = H2Decoder::new_fresh(Role::Client);
    let mut out = Vec::new();
    d.feed(&seg(PREFACE, 0), &mut out);
    let b1 = headers(1, &e.encode(&[(":method", "GET"), (":path", "/a"), (":authority", "x")]), true);
    d.feed(&seg(&b1, 1), &mut out);
    // Second request: the block is only partly captured.
    let b2 = headers(3, &e.encode(&[(":method", "GET"), (":path", "/b"), (":authority", "x")]), true);
    let s =
        Segment { data: &b2[..12], uncaptured_after: (b2.len() - 12) as u64, enter_ns: 2, exit_ns: 3, goroutine: 0 };
    d.feed(&s, &mut out);
    // Third: references /b's entry, which we never saw: must not resolve to /a.
    let b3 = headers(5, &e.encode(&[(":method", "GET"), (":path", "/b"), (":authority", "x")]), true);
    d.feed(&seg(&b3, 4), &mut out);
    assert_eq!(out[0].header(":path"), Some(Lookup::Found("/a")));
    assert!(matches!(out[1], H2Event::HeadersUnknown { stream_id: 3, end_stream: true, .. }));
    assert_eq!(out[2].header(":path"), Some(Lookup::Unknown));
    assert_eq!(out[2].header(":method"), Some(Lookup::Found("GET")));
}

#[test]
fn frame_header_in_uncaptured_bytes_desyncs_then_resyncs() {
    let mut e = GoLikeEncoder::new();
    let mut d = H2Decoder::new_fresh(Role::Server);
    let mut out = Vec::new();
    let h1 = headers(1, &e.encode(&[(":status", "200")]), false);
    let mut s1 = h1.clone();
    s1.extend_from_slice(&data(1, b"abc", false)[..5]);
    // The rest of the DATA frame and a following frame header were not captured.
    d.feed(&Segment { data: &s1, uncaptured_after: 4 + 3 + 9 + 10, enter_ns: 1, exit_ns: 2, goroutine: 0 }, &mut out);
    assert!(matches!(out.last(), Some(H2Event::Desync { reason: "frame header not captured", .. })), "{out:?}");
    assert!(!d.is_synced());
    // A segment starting mid-frame: garbage, stays desynced.
    d.feed(&seg(&[0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02], 3), &mut out);
    assert!(!d.is_synced());
    // A plausible segment: HEADERS + DATA.
    let mut s3 = headers(5, &e.encode(&[(":status", "200"), ("grpc-status", "0")]), false);
    s3.extend(data(5, b"hello", true));
    d.feed(&seg(&s3, 4), &mut out);
    assert!(d.is_synced());
    let tail: Vec<_> = without_timing(&out[out.len() - 3..]);
    assert!(matches!(tail[0], H2Event::Resync { .. }));
    // :status is static, grpc-status 0 was inserted as a literal: both resolvable.
    assert_eq!(tail[1].header(":status"), Some(Lookup::Found("200")));
    assert_eq!(tail[1].header("grpc-status"), Some(Lookup::Found("0")));
    assert!(matches!(&tail[2], H2Event::Data { stream_id: 5, data, .. } if data == b"hello"));
}

#[test]
fn resync_requires_plausible_next_header() {
    let mut d = H2Decoder::new(Role::Server);
    let mut out = Vec::new();
    // Plausible first header (DATA stream 1, len 3) followed by an implausible one.
    let mut s = data(1, b"abc", false);
    s.extend_from_slice(&[0xff, 0xff, 0xff, 0xee, 0xff, 0x80, 0, 0, 1]);
    d.feed(&seg(&s, 1), &mut out);
    assert!(!d.is_synced());
    assert!(out.is_empty());
    // Plausible first header whose frame runs past the captured bytes: accepted.
    let s = data(1, &[0u8; 100], false);
    d.feed(&Segment { data: &s[..50], uncaptured_after: 59, enter_ns: 2, exit_ns: 3, goroutine: 0 }, &mut out);
    assert!(d.is_synced());
    assert!(matches!(out[..], [H2Event::Resync { .. }, H2Event::Data { len: Some(100), .. }]), "{out:?}");
}

#[test]
fn invalid_headers_desync() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (frame(ft::DATA, 0, 0, b"x"), "frame type requires a stream"),
        (frame(ft::SETTINGS, 0, 1, &[]), "connection frame on a stream"),
        (frame(ft::PING, 0, 0, &[0; 7]), "frame too short"),
        (frame(ft::WINDOW_UPDATE, 0, 0, &[0; 5]), "bad frame length"),
        (frame(ft::SETTINGS, 0, 0, &[0; 7]), "bad SETTINGS length"),
        (frame(ft::SETTINGS, flags::ACK, 0, &[0; 6]), "bad frame length"),
        (
            {
                let mut f = frame(ft::DATA, 0, 1, b"x");
                f[5] |= 0x80;
                f
            },
            "reserved bit set",
        ),
        (frame(ft::DATA, flags::PADDED, 1, &[5, 1, 2]), "padding exceeds frame"),
        (frame(ft::CONTINUATION, flags::END_HEADERS, 1, &[0x82]), "unexpected CONTINUATION"),
        (frame(ft::HEADERS, flags::END_HEADERS, 2, &[0x82]), "client HEADERS on an even stream"),
    ];
    for (bytes, reason) in cases {
        let mut d = H2Decoder::new_fresh(Role::Client);
        let out = feed_all(&mut d, &[PREFACE, &bytes]);
        assert!(matches!(out.last(), Some(H2Event::Desync { reason: r, .. }) if *r == reason), "{reason}: {out:?}");
    }
}

#[test]
fn unknown_frame_types_are_skipped() {
    let mut bytes = frame(0xfa, 0xff, 7, &[1, 2, 3, 4, 5]);
    bytes.extend(frame(ft::RST_STREAM, 0, 1, &8u32.to_be_bytes()));
    let mut goaway = 3u32.to_be_bytes().to_vec();
    goaway.extend(2u32.to_be_bytes());
    goaway.extend(b"debug data");
    bytes.extend(frame(ft::GOAWAY, 0, 0, &goaway));
    bytes.extend(frame(ft::PING, 0, 0, &[0; 8]));
    bytes.extend(frame(ft::PRIORITY, 0, 3, &[0, 0, 0, 1, 16]));
    bytes.extend(frame(ft::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
    let mut d = H2Decoder::new_fresh(Role::Server);
    let out = without_timing(&feed_all(&mut d, &[&bytes]));
    assert_eq!(
        out,
        vec![
            H2Event::RstStream { stream_id: 1, error_code: Some(8), timing: Timing::default() },
            H2Event::GoAway { last_stream_id: 3, error_code: 2, timing: Timing::default() },
        ]
    );
}

#[test]
fn connection_routes_settings_and_fresh_start() {
    let mut conn = H2Connection::new();
    let mut out = Vec::new();
    let mut c = PREFACE.to_vec();
    c.extend(settings(&[(settings_id::HEADER_TABLE_SIZE, 8192), (settings_id::MAX_FRAME_SIZE, 1 << 20)]));
    conn.feed(Role::Client, &seg(&c, 1), &mut out);
    assert!(conn.server.hpack().is_fully_known(), "server direction starts fresh after the preface");
    assert_eq!(conn.server.resync_len_limit(), 1 << 20);
    let mut s = settings(&[(settings_id::MAX_FRAME_SIZE, 32768)]);
    s.extend(frame(ft::SETTINGS, flags::ACK, 0, &[]));
    conn.feed(Role::Server, &seg(&s, 2), &mut out);
    assert_eq!(conn.client.resync_len_limit(), 32768);
    assert!(matches!(out.last(), Some(H2Event::Settings { ack: true, .. })));
}

#[test]
fn mid_connection_attach_without_preface() {
    let mut e = GoLikeEncoder::new();
    let mut stream = Vec::new();
    let mut d = H2Decoder::new(Role::Client);
    let mut out = Vec::new();
    for i in 0..30u32 {
        let blk = e.encode(&[(":method", "GET"), (":path", &format!("/p{}", i % 4)), (":authority", "h")]);
        stream.push(headers(2 * i + 1, &blk, true));
    }
    for (i, s) in stream.iter().enumerate().skip(10) {
        d.feed(&seg(s, i as u64), &mut out);
    }
    assert!(d.is_synced());
    assert!(out.iter().all(|e| matches!(e, H2Event::Headers { .. })));
    // Paths /p0../p3 and :authority were indexed before attach: unknown, never wrong.
    for ev in &out {
        if let Some(Lookup::Found(p)) = ev.header(":path") {
            panic!("resolved {p} from an unknown table");
        }
        assert_eq!(ev.header(":method"), Some(Lookup::Found("GET")));
    }
}

#[test]
fn no_panic_on_pseudo_random_streams() {
    let mut rng = Lcg(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng.next_u32();
    let mut e = GoLikeEncoder::new();
    let mut valid = curl_request();
    for i in 0..20u32 {
        let blk = e.encode(&[(":method", "POST"), (":path", &format!("/x{}", i % 3))]);
        valid.extend(headers(2 * i + 1, &blk, false));
        valid.extend(data(2 * i + 1, &build::grpc_message(&[1, 2, 3]), true));
    }
    for round in 0..3_000 {
        let mut bytes = valid.clone();
        match round % 3 {
            0 => bytes = (0..next() % 2000).map(|_| next() as u8).collect(),
            1 => {
                for _ in 0..1 + next() % 8 {
                    let i = next() as usize % bytes.len();
                    bytes[i] = next() as u8;
                }
            }
            _ => {}
        }
        let role = if next() % 2 == 0 { Role::Client } else { Role::Server };
        let mut d = if next() % 2 == 0 { H2Decoder::new(role) } else { H2Decoder::new_fresh(role) };
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let n = (1 + next() as usize % 300).min(bytes.len() - pos);
            let unc = if next() % 5 == 0 { u64::from(next() % 100) } else { 0 };
            let s =
                Segment { data: &bytes[pos..pos + n], uncaptured_after: unc, enter_ns: 0, exit_ns: 0, goroutine: 0 };
            d.feed(&s, &mut out);
            pos += n;
        }
        for ev in &out {
            if let H2Event::Data { data, .. } = ev {
                assert!(data.len() <= DATA_CAPTURE_LIMIT);
            }
        }
    }
}
