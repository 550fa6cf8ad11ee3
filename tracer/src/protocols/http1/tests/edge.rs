use super::*;

// ---- Partial capture ----------------------------------------------------------------------

#[test]
fn uncaptured_body_bytes_are_counted() {
    let head = b"PUT /api/v1/namespaces/default/configmaps/big HTTP/1.1\r\n\
          Host: 10.96.0.1:443\r\n\
          Content-Type: application/json\r\n\
          Content-Length: 100000\r\n\
          \r\n";
    let mut first = head.to_vec();
    first.extend_from_slice(&[b'x'; 1000]);
    let mut dec = Http1Decoder::new(MessageKind::Request);
    let out = decode(
        &mut dec,
        &[
            partial(&first, 50_000, 1),
            partial(&[b'y'; 2000], 40_000, 2),
            partial(&[b'z'; 10], 6_990, 3),
            seg(CURL_GET, 4),
        ],
    );
    let Http1Event::Head { head: Head::Request(req), first_byte } = &out[0] else { panic!("{out:?}") };
    assert_eq!((req.content_length, *first_byte), (Some(100_000), ts(1)));
    assert_eq!(out[1], Http1Event::End { body_size: 100_000, last_byte: ts(3) });
    assert_eq!(out[2..], resolve(&[Exp::Head(curl_get_head(), 0), Exp::End(0, 0)], |_| 4));
}

#[test]
fn uncaptured_chunk_payload_is_skipped() {
    let wire = go_chunked_response();
    let payload = offset_of(&wire, b"800\r\n") + 5;
    // The capture stops 100 bytes into the first chunk; the rest of that syscall is counted.
    let first = &wire[..payload + 100];
    let resume = payload + 2048 + 2; // next chunk-size line starts a later read
    let mut dec = Http1Decoder::new(MessageKind::Response);
    let out = decode(&mut dec, &[partial(first, (resume - first.len()) as u64, 1), seg(&wire[resume..], 2)]);
    assert_eq!(out[1], Http1Event::End { body_size: 2500, last_byte: ts(2) });
    assert!(!dec.is_desynced());
}

#[test]
fn uncaptured_bytes_past_the_body_desync() {
    let mut dec = Http1Decoder::new(MessageKind::Request);
    let out = decode(&mut dec, &[partial(CURL_POST, 120, 1)]);
    assert_eq!(out[1], Http1Event::End { body_size: 65, last_byte: ts(1) });
    assert!(matches!(out[2], Http1Event::Desync { .. }));
    assert!(dec.is_desynced());
}

#[test]
fn uncaptured_chunk_size_line_desyncs_then_resyncs_at_a_message_start() {
    let mut dec = Http1Decoder::new(MessageKind::Response);
    let mut first = APISERVER_WATCH_HEAD.to_vec();
    first.extend(watch_chunk("ADDED", "web-0", 1));
    let next = watch_chunk("MODIFIED", "web-0", 2);
    let mut out = decode(&mut dec, &[partial(&first, 40, 1)]);
    assert!(matches!(out.last(), Some(Http1Event::Desync { .. })), "{out:?}");
    assert!(dec.is_desynced());

    // Mid-body bytes, a chunk end, and a message start not at the segment start: all ignored.
    let mut late = b"garbage ".to_vec();
    late.extend_from_slice(NGINX_304);
    out = decode(&mut dec, &[seg(&next[40..], 2), seg(b"0\r\n\r\n", 3), seg(&late, 4)]);
    assert!(out.is_empty() && dec.is_desynced(), "{out:?}");

    let out = decode(&mut dec, &[seg(NGINX_304, 5)]);
    assert_eq!(out, resolve(&[Exp::Head(response(304, None, false), 0), Exp::End(0, 0)], |_| 5));
    assert!(!dec.is_desynced());
}

#[test]
fn a_head_longer_than_the_capture_still_reports_its_start_line() {
    let mut d = Http1Decoder::new(MessageKind::Request);
    let mut out = Vec::new();
    let head = b"GET /api/v1/namespaces/a/pods HTTP/1.1\r\nHost: h\r\nUser-Agent: k/1\r\nAuthorization: Bearer aaaa";
    d.feed(&partial(head, 5000, 1), &mut out);
    match &out[..] {
        [Http1Event::Head { head: Head::Request(r), .. }, Http1Event::Desync { reason: TRUNCATED_HEAD }] => {
            assert_eq!((&*r.method, r.target.as_str()), ("GET", "/api/v1/namespaces/a/pods"));
            assert_eq!(r.user_agent.as_deref(), Some("k/1"));
        }
        other => panic!("{other:?}"),
    }
    // The next message starts a segment: decoding resumes.
    out.clear();
    d.feed(&seg(b"GET /b HTTP/1.1\r\n\r\n", 2), &mut out);
    assert!(matches!(&out[..], [Http1Event::Head { .. }, Http1Event::End { .. }]), "{out:?}");
}

#[test]
fn uncaptured_head_bytes_desync() {
    let mut dec = Http1Decoder::new(MessageKind::Request);
    let out = decode(&mut dec, &[partial(&CURL_GET[..20], 40, 1)]);
    assert!(matches!(out[..], [Http1Event::Desync { .. }]), "{out:?}");
    let out = decode(&mut dec, &[seg(CURL_GET, 2)]);
    assert_eq!(out.len(), 2, "resynchronised on the next request");
}

// ---- Bad input ----------------------------------------------------------------------------

#[test]
fn garbage_desyncs_early() {
    let cases: [(MessageKind, &[u8]); 6] = [
        (MessageKind::Request, TLS_HELLO),
        (MessageKind::Request, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        (MessageKind::Request, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
        (MessageKind::Response, SPDY_FRAME),
        (MessageKind::Response, b"HTTP/1.1 abc OK\r\n\r\n"),
        (MessageKind::Response, CURL_GET),
    ];
    for (kind, wire) in cases {
        for pieces in [wire.chunks(wire.len()).collect::<Vec<_>>(), wire.chunks(1).collect()] {
            let mut dec = Http1Decoder::new(kind);
            let segs: Vec<_> = pieces.iter().map(|p| seg(p, 1)).collect();
            let out = decode(&mut dec, &segs);
            assert!(matches!(out[..], [Http1Event::Desync { .. }]), "{wire:?}: {out:?}");
            assert!(dec.buf.is_empty());
        }
    }
    // Detected within the first bytes, long before any line end or size limit.
    let mut dec = Http1Decoder::new(MessageKind::Request);
    assert_eq!(decode(&mut dec, &[seg(&TLS_HELLO[..3], 1)]).len(), 1);
}

#[test]
fn oversized_head_desyncs() {
    let mut wire = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    wire.extend(std::iter::repeat_n(b'a', HEAD_LIMIT + 10));
    wire.extend_from_slice(b"\r\n\r\n");
    for size in [wire.len(), 1000, 1] {
        let segs: Vec<_> = wire.chunks(size).map(|p| seg(p, 1)).collect();
        let mut dec = Http1Decoder::new(MessageKind::Request);
        let out = decode(&mut dec, &segs);
        assert_eq!(out, [Http1Event::Desync { reason: "head larger than limit" }], "segments of {size}");
    }
}

#[test]
fn header_count_limit() {
    let head_with = |n: usize| {
        let mut wire = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..n {
            wire.extend(format!("X-H{i}: v\r\n").bytes());
        }
        wire.extend_from_slice(b"\r\n");
        wire
    };
    let mut dec = Http1Decoder::new(MessageKind::Request);
    assert_eq!(decode(&mut dec, &[seg(&head_with(MAX_HEADERS), 1)]).len(), 2);
    let out = decode(&mut dec, &[seg(&head_with(MAX_HEADERS + 1), 2)]);
    assert_eq!(out, [Http1Event::Desync { reason: "too many headers" }]);
}

#[test]
fn content_length_rules() {
    let cases: [(&[u8], Option<u64>, usize); 4] = [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n{}", Some(2), 2),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nCONTENT-LENGTH: 3\r\n\r\n{}", None, 2),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", None, 2),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", None, 2),
    ];
    for (wire, cl, events) in cases {
        let mut dec = Http1Decoder::new(MessageKind::Response);
        let out = decode(&mut dec, &[seg(wire, 1)]);
        assert_eq!(out.len(), events, "{out:?}");
        let Http1Event::Head { head: Head::Response(resp), .. } = &out[0] else { panic!() };
        assert_eq!(resp.content_length, cl);
        assert_eq!(matches!(out[1], Http1Event::Desync { .. }), cl.is_none());
    }
    // Transfer-Encoding wins over Content-Length.
    let wire = b"POST /x HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let mut dec = Http1Decoder::new(MessageKind::Request);
    let out = decode(&mut dec, &[seg(wire, 1)]);
    assert_eq!(out[1], Http1Event::End { body_size: 3, last_byte: ts(1) });
    // A request body framed by some other coding cannot be followed.
    let wire = b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
    let out = decode(&mut dec, &[seg(wire, 2)]);
    assert!(matches!(out[1], Http1Event::Desync { .. }));
}

#[test]
fn chunk_size_lines() {
    assert_eq!(parse_chunk_size(b"1a3\r\n"), Some(0x1a3));
    assert_eq!(parse_chunk_size(b"FFFFFFFFFFFFFFFF\r\n"), Some(u64::MAX));
    assert_eq!(parse_chunk_size(b"000000000000000000010\n"), Some(16));
    assert_eq!(parse_chunk_size(b" 5 ;a=b;c\r\n"), Some(5));
    for bad in [&b"10000000000000000\r\n"[..], b"+5\r\n", b"\r\n", b";x\r\n", b"5x\r\n", b"\xff\r\n"] {
        assert_eq!(parse_chunk_size(bad), None, "{bad:?}");
    }
    let mut dec = Http1Decoder::new(MessageKind::Response);
    let out = decode(&mut dec, &[seg(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 1)]);
    assert_eq!(out[1], Http1Event::Desync { reason: "chunk payload not followed by CRLF" });
}

// ---- Protocol switches, interim responses, close ------------------------------------------

#[test]
fn switching_protocols_stops_decoding() {
    let wire = [APISERVER_101, SPDY_FRAME].concat();
    let mut dec = Http1Decoder::new(MessageKind::Response);
    let out = decode(&mut dec, &[seg(&wire, 1), seg(NGINX_304, 2)]);
    assert_eq!(out, resolve(&[Exp::Head(response(101, None, false), 0), Exp::End(0, 0)], |_| 1));
    assert!(dec.is_upgraded() && !dec.is_desynced());
}

#[test]
fn upgrade_request_followed_by_frames_stops_quietly() {
    let mut dec = Http1Decoder::new(MessageKind::Request);
    let out = decode(&mut dec, &[seg(KUBECTL_EXEC, 1), seg(SPDY_FRAME, 2), seg(CURL_GET, 3)]);
    let Http1Event::Head { head: Head::Request(req), .. } = &out[0] else { panic!("{out:?}") };
    assert!(req.upgrade && req.content_length == Some(0) && &*req.method == "POST");
    assert_eq!(out[1], Http1Event::End { body_size: 0, last_byte: ts(1) });
    assert_eq!(out.len(), 2, "no desync: the switch is expected");
    assert!(dec.is_upgraded());
}

#[test]
fn refused_upgrade_keeps_decoding_http() {
    let h2c = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
    let mut dec = Http1Decoder::new(MessageKind::Request);
    let out = decode(&mut dec, &[seg(h2c, 1), seg(CURL_GET, 2)]);
    assert_eq!(out.len(), 4, "{out:?}");
    assert!(!dec.is_upgraded());
}

#[test]
fn interim_responses_are_separate_and_keep_the_head_count() {
    let wire = [&b"HTTP/1.1 100 Continue\r\n\r\n"[..], NGINX_HEAD, PY_SIMPLE].concat();
    let second = offset_of(&wire, b"HTTP/1.1 200");
    let third = second + NGINX_HEAD.len();
    let exp = [
        Exp::Head(response(100, None, false), 0),
        Exp::End(0, second - 1),
        Exp::Head(response(200, Some(55), false), second),
        Exp::End(0, third - 1),
        Exp::Head(response(200, Some(55), false), third),
        Exp::End(55, wire.len() - 1),
    ];
    check_splits(MessageKind::Response, &wire, &exp, |d| d.expect_no_body_for_next_response());
}

#[test]
fn close_abandons_unfinished_messages() {
    for wire in [&CURL_POST[..100], &CURL_POST[..CURL_POST.len() - 1], &CURL_CHUNKED_PUT[..CURL_CHUNKED_PUT.len() - 3]]
    {
        let mut dec = Http1Decoder::new(MessageKind::Request);
        let mut out = decode(&mut dec, &[seg(wire, 1)]);
        let before = out.len();
        dec.on_close(ts(2), &mut out);
        assert_eq!(out.len(), before);
        assert!(dec.buf.is_empty());
    }
}

// ---- Robustness ---------------------------------------------------------------------------

/// Feeds `wire` in random pieces with random uncaptured gaps, then closes; must not panic.
fn feed_randomly(rng: &mut Lcg, kind: MessageKind, wire: &[u8]) {
    let mut dec = Http1Decoder::new(kind);
    if rng.below(4) == 0 {
        dec.expect_no_body_for_next_response();
    }
    let mut out = Vec::new();
    let mut rest = wire;
    let mut n = 0;
    while !rest.is_empty() {
        let (a, b) = rest.split_at((1 + rng.below(64)).min(rest.len()));
        let gap = if rng.below(8) == 0 { rng.next() % 100 } else { 0 };
        dec.feed(&partial(a, gap, n), &mut out);
        assert!(dec.buf.len() <= HEAD_LIMIT);
        rest = b;
        n += 1;
    }
    if rng.below(2) == 0 {
        dec.feed(&partial(b"", u64::MAX, n), &mut out);
    }
    dec.on_close(ts(n + 1), &mut out);
    assert_well_formed(&out);
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Lcg(0x5eed);
    for _ in 0..2000 {
        let len = rng.below(400);
        let wire: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        feed_randomly(&mut rng, MessageKind::Request, &wire);
        feed_randomly(&mut rng, MessageKind::Response, &wire);
    }
}

#[test]
fn mutated_messages_never_panic() {
    let alphabet = b"\r\n :;,0123456789abcdefABCDEF-GETPOSTHTTP/1.1chunkedContent-LengthTransfer-Encoding";
    let requests = [CURL_GET, CURL_POST, CURL_CHUNKED_PUT, KUBECTL_WATCH, KUBECTL_EXEC].concat();
    let responses =
        [NGINX_KEEPALIVE, NGINX_GZIP_CHUNKED, NGINX_304, PY_SIMPLE, APISERVER_101, &go_chunked_response()].concat();
    let mut rng = Lcg(42);
    for round in 0..3000 {
        let (kind, base) =
            if round % 2 == 0 { (MessageKind::Request, &requests) } else { (MessageKind::Response, &responses) };
        let mut wire = base.clone();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(wire.len());
            match rng.below(3) {
                0 => wire[at] = alphabet[rng.below(alphabet.len())],
                1 => wire.insert(at, alphabet[rng.below(alphabet.len())]),
                _ => {
                    wire.remove(at);
                }
            }
        }
        feed_randomly(&mut rng, kind, &wire);
    }
}
