use super::testenc::GoLikeEncoder;
use super::*;
use crate::protocols::test_rng::Lcg;

fn get<'a>(b: &'a DecodedBlock, n: &str) -> Option<&'a str> {
    b.get(n).found()
}

#[test]
fn rfc7541_c3_requests_without_huffman() {
    // RFC 7541 C.3.1 .. C.3.3
    let mut d = HpackDecoder::new_fresh();
    let b1 = [
        0x82, 0x86, 0x84, 0x41, 0x0f, b'w', b'w', b'w', b'.', b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'c',
        b'o', b'm',
    ];
    let r = d.decode_block(&b1).unwrap();
    assert_eq!(
        r.fields,
        vec![
            (":method", FieldValue::Static("GET")),
            (":scheme", FieldValue::Static("http")),
            (":path", FieldValue::Static("/")),
            (":authority", FieldValue::Static("www.example.com")),
        ]
    );
    let b2 = [0x82, 0x86, 0x84, 0xbe, 0x58, 0x08, b'n', b'o', b'-', b'c', b'a', b'c', b'h', b'e'];
    let r = d.decode_block(&b2).unwrap();
    assert_eq!(get(&r, ":authority"), Some("www.example.com"));
    assert!(!r.unresolved.any());
    // cache-control is not allow-listed: dropped.
    assert_eq!(r.fields.len(), 4);
    let mut b3 = vec![0x82, 0x87, 0x85, 0xbf, 0x40, 0x0a];
    b3.extend_from_slice(b"custom-key");
    b3.push(0x0c);
    b3.extend_from_slice(b"custom-value");
    let r = d.decode_block(&b3).unwrap();
    assert_eq!(get(&r, ":scheme"), Some("https"));
    assert_eq!(get(&r, ":path"), Some("/index.html"));
    assert_eq!(get(&r, ":authority"), Some("www.example.com"));
    assert_eq!(d.learned_entries(), 3);
    assert!(d.is_fully_known());
}

#[test]
fn rfc7541_c4_requests_with_huffman() {
    let mut d = HpackDecoder::new_fresh();
    let b1 = [0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff];
    let r = d.decode_block(&b1).unwrap();
    assert_eq!(get(&r, ":authority"), Some("www.example.com"));
    let b2 = [0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf];
    let r = d.decode_block(&b2).unwrap();
    assert_eq!(get(&r, ":authority"), Some("www.example.com"));
}

#[test]
fn rfc7541_c6_responses_with_eviction() {
    // C.6: 256-byte table, Huffman, evictions.
    let mut d = HpackDecoder::new_fresh();
    // Size update to 256 first (the RFC example sets the table size out of band).
    let mut b1 = Vec::new();
    encode::int(&mut b1, 256, 5, 0x20);
    b1.extend_from_slice(&[
        0x48, 0x82, 0x64, 0x02, 0x58, 0x85, 0xae, 0xc3, 0x77, 0x1a, 0x4b, 0x61, 0x96, 0xd0, 0x7a, 0xbe, 0x94, 0x10,
        0x54, 0xd4, 0x44, 0xa8, 0x20, 0x05, 0x95, 0x04, 0x0b, 0x81, 0x66, 0xe0, 0x82, 0xa6, 0x2d, 0x1b, 0xff, 0x6e,
        0x91, 0x9d, 0x29, 0xad, 0x17, 0x18, 0x63, 0xc7, 0x8f, 0x0b, 0x97, 0xc8, 0xe9, 0xae, 0x82, 0xae, 0x43, 0xd3,
    ]);
    let r = d.decode_block(&b1).unwrap();
    assert_eq!(get(&r, ":status"), Some("302"));
    assert_eq!(d.learned_entries(), 4);
    let b2 = [0x48, 0x83, 0x64, 0x0e, 0xff, 0xc1, 0xc0, 0xbf];
    let r = d.decode_block(&b2).unwrap();
    assert_eq!(get(&r, ":status"), Some("307"));
    assert!(!r.unresolved.any());
    assert_eq!(d.learned_entries(), 4);
    // A reference beyond a fully known table is corruption.
    assert_eq!(d.decode_block(&[0x80 | 70]), Err(HpackError::InvalidIndex));
    assert!(!d.is_fully_known());
}

#[test]
fn sensitive_values_never_kept() {
    let mut d = HpackDecoder::new_fresh();
    let mut e = GoLikeEncoder::new();
    let blk = e.encode(&[
        (":method", "GET"),
        (":path", "/api"),
        ("authorization", "Bearer secret-token"),
        ("cookie", "session=abc"),
        ("x-custom", "hello"),
    ]);
    let r = d.decode_block(&blk).unwrap();
    assert_eq!(r.fields.len(), 2);
    assert!(d.scratch.is_empty());
    assert!(!format!("{:?}", d.learned).contains("hello"));
    let dump = format!("{r:?} {:?}", d.learned);
    assert!(!dump.contains("secret") && !dump.contains("session"));
    // x-custom got indexed; a later reference resolves to a non-allow-listed name: dropped, not unresolved.
    let blk = e.encode(&[(":method", "GET"), (":path", "/api"), ("x-custom", "hello")]);
    let r = d.decode_block(&blk).unwrap();
    assert!(!r.unresolved.any());
    assert_eq!(r.fields.len(), 2);
}

#[test]
fn agrees_with_reference_decoder_from_start() {
    // Encode with the httlib-hpack encoder (Go-like flags) and compare against its decoder.
    use httlib_hpack::{Decoder, Encoder};
    let mut enc = Encoder::default();
    let mut refdec = Decoder::default();
    let mut d = HpackDecoder::new_fresh();
    let flags = Encoder::BEST_FORMAT | Encoder::WITH_INDEXING | Encoder::HUFFMAN_NAME | Encoder::HUFFMAN_VALUE;
    for i in 0..300 {
        let path = format!("/api/v1/namespaces/ns{}/pods", i % 17);
        let ua = format!("kubelet/v1.{}", i % 3);
        let status = ["200", "201", "404", "500"][i % 4];
        let fields: Vec<(&str, String)> = vec![
            (":method", if i % 5 == 0 { "POST".into() } else { "GET".into() }),
            (":path", path.clone()),
            (":authority", "10.0.0.1:6443".into()),
            (":scheme", "https".into()),
            ("user-agent", ua),
            ("authorization", format!("Bearer tok{}", i % 7)),
            ("x-request-id", format!("id-{i}")),
            (":status", status.into()),
        ];
        let mut blk = Vec::new();
        for (n, v) in &fields {
            enc.encode((n.as_bytes().to_vec(), v.as_bytes().to_vec(), flags), &mut blk).unwrap();
        }
        let mut dst = Vec::new();
        let mut copy = blk.clone();
        refdec.decode(&mut copy, &mut dst).unwrap();
        let r = d.decode_block(&blk).unwrap();
        assert!(!r.unresolved.any());
        let expect: Vec<(&'static str, FieldValue)> = dst
            .iter()
            .filter_map(|(n, v, _)| {
                ALLOWED_NAMES
                    .iter()
                    .find(|a| a.as_bytes() == n.as_slice())
                    .map(|a| (*a, FieldValue::Owned(String::from_utf8_lossy(v).into_owned())))
            })
            .collect();
        assert_eq!(r.fields, expect, "block {i}");
    }
    assert_eq!(d.stats().blocks_failed, 0);
}

/// A realistic gRPC client stream (as grpc-go sends to etcd): 20 distinct paths, user-agent,
/// content-type, te, grpc-timeout that changes on every call, a per-request id.
fn grpc_request(i: usize) -> Vec<(String, String)> {
    let methods = ["Range", "Put", "DeleteRange", "Txn", "Compact"];
    let services = ["etcdserverpb.KV", "etcdserverpb.Lease", "etcdserverpb.Watch", "etcdserverpb.Cluster"];
    let k = (i * 7 + i / 3) % 20;
    let path = format!("/{}/{}", services[k % 4], methods[k / 4]);
    vec![
        (":method".into(), "POST".into()),
        (":scheme".into(), "http".into()),
        (":path".into(), path),
        (":authority".into(), "127.0.0.1:2379".into()),
        ("content-type".into(), "application/grpc".into()),
        ("user-agent".into(), "grpc-go/1.72.0".into()),
        ("te".into(), "trailers".into()),
        ("grpc-timeout".into(), format!("{}u", 4_999_000 + (i * 7919) % 1000)),
        ("x-request-id".into(), format!("req-{}", i % 3)),
    ]
}

/// Warm-up after a mid-connection attach.
#[derive(Debug, Default)]
struct Warmup {
    /// Blocks after attach where `:method` or `:path` was unknown.
    path_unknown: usize,
    /// Index (after attach) of the last block where `:path` was unknown, +1.
    path_warmup: usize,
    /// Blocks after attach with any unresolved field (incl. non-allow-listed names).
    any_unresolved: usize,
    /// Blocks where an allow-listed field other than pseudo-headers was unknown.
    regular_unknown: usize,
    /// Index (after attach) of the last block where some allow-listed field that the block
    /// really carried was not found, +1.
    all_present_warmup: usize,
    /// Fields whose value differed from the truth (must stay 0).
    wrong: usize,
    /// Fields claimed absent that were present (must stay 0).
    wrong_absent: usize,
    fully_known_at: Option<usize>,
}

fn run_attach(attach_after: usize, total: usize, max: Option<usize>) -> Warmup {
    let mut e = GoLikeEncoder::new();
    let mut d = HpackDecoder::new_unknown();
    let mut w = Warmup::default();
    for i in 0..total {
        if i == attach_after
            && let Some(m) = max
        {
            // The peer lowered SETTINGS_HEADER_TABLE_SIZE: the next block starts with an update.
            e.set_max(m);
        }
        let req = grpc_request(i);
        let refs: Vec<(&str, &str)> = req.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let blk = e.encode(&refs);
        if i < attach_after {
            continue;
        }
        let n = i - attach_after;
        let r = d.decode_block(&blk).expect("valid block");
        for (name, v) in &r.fields {
            let truth = req.iter().find(|(tn, _)| tn == name).map(|(_, tv)| tv.as_str());
            if truth != Some(&**v) {
                w.wrong += 1;
            }
        }
        for name in ALLOWED_NAMES {
            let present = req.iter().any(|(tn, _)| tn == name);
            match r.get(name) {
                Lookup::Absent if present => w.wrong_absent += 1,
                Lookup::Unknown if !name.starts_with(':') => w.regular_unknown += 1,
                _ => {}
            }
            if present && r.get(name).found().is_none() {
                w.all_present_warmup = n + 1;
            }
        }
        if r.get(":path").found().is_none() || r.get(":method").found().is_none() {
            w.path_unknown += 1;
            w.path_warmup = n + 1;
        }
        if r.unresolved.any() {
            w.any_unresolved += 1;
        }
        if d.is_fully_known() && w.fully_known_at.is_none() {
            w.fully_known_at = Some(n);
        }
    }
    w
}

#[test]
fn mid_connection_attach_warmup() {
    for attach in [0usize, 1, 5, 20, 50, 100, 150] {
        let w = run_attach(attach, 200 + attach, None);
        eprintln!("attach after {attach:>3} requests, 200 decoded: {w:?}");
        assert_eq!((w.wrong, w.wrong_absent), (0, 0), "attach {attach}");
        // After one table cycle :method and :path are always known, and so is every
        // allow-listed field the client sends.
        assert!(w.path_warmup < 120, "attach {attach}: {w:?}");
        assert!(w.all_present_warmup < 120, "attach {attach}: {w:?}");
    }
    // Attached at the very start of the connection: nothing unknown.
    let w = run_attach(0, 200, None);
    assert_eq!((w.path_unknown, w.any_unresolved), (0, 0));
    // A size update seen after attach proves the table fully known once it cycled.
    let w = run_attach(10, 400, Some(2048));
    eprintln!("size update 2048 after attach: {w:?}");
    assert_eq!((w.wrong, w.wrong_absent), (0, 0));
    assert!(w.fully_known_at.is_some());
}

/// A Go gRPC server's responses never churn its table: after a mid-connection attach the
/// entries it indexed before stay unknown. They must stay *unknown*, never guessed.
#[test]
fn frozen_server_table_stays_unknown_never_wrong() {
    let mut e = GoLikeEncoder::new();
    let headers = [(":status", "200"), ("content-type", "application/grpc")];
    let trailers = [("grpc-status", "0")];
    for _ in 0..3 {
        let _ = e.encode(&headers);
        let _ = e.encode(&trailers);
    }
    let mut d = HpackDecoder::new_unknown();
    for i in 0..100 {
        let h = d.decode_block(&e.encode(&headers)).unwrap();
        assert_eq!(h.get(":status"), Lookup::Found("200"));
        assert_eq!(h.get("content-type"), Lookup::Unknown);
        let err = i % 10 == 9;
        let t = if err {
            e.encode(&[("grpc-status", "14"), ("grpc-message", "etcdserver: leader changed")])
        } else {
            e.encode(&trailers)
        };
        let t = d.decode_block(&t).unwrap();
        // The name grpc-status always comes from the pre-attach entry (chain of name references).
        assert_eq!(t.get("grpc-status"), Lookup::Unknown);
        assert_ne!(t.get("grpc-message"), Lookup::Absent);
    }
}

#[test]
fn fully_known_after_size_update_and_enough_insertions() {
    let mut e = GoLikeEncoder::new();
    let mut d = HpackDecoder::new_unknown();
    for i in 0..50 {
        let req = grpc_request(i);
        let refs: Vec<(&str, &str)> = req.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let _ = e.encode(&refs);
    }
    e.set_max(1024);
    let mut became_known = None;
    for i in 50..300 {
        let req = grpc_request(i);
        let refs: Vec<(&str, &str)> = req.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let blk = e.encode(&refs);
        let r = d.decode_block(&blk).unwrap();
        if d.is_fully_known() && became_known.is_none() {
            became_known = Some(i);
        }
        if let Some(k) = became_known
            && i > k + 40
        {
            // Structure fully known; pseudo-headers all resolved.
            assert_eq!(r.unresolved.maybe_pseudo, 0);
        }
    }
    assert!(became_known.is_some());
}

#[test]
fn unknown_reference_is_unresolved_not_guessed() {
    let mut d = HpackDecoder::new_unknown();
    // Indexed 62 (unknown), then :method GET static, then literal-indexed with name ref 63 (unknown).
    let mut blk = vec![0x80 | 62, 0x82];
    encode::int(&mut blk, 63, 6, 0x40);
    encode::string(&mut blk, b"/secret/path");
    let r = d.decode_block(&blk).unwrap();
    assert_eq!(r.unresolved, Unresolved { total: 2, maybe_pseudo: 2 });
    assert_eq!(r.get(":method"), Lookup::Found("GET"));
    assert_eq!(r.get(":path"), Lookup::Unknown);
    // The inserted entry has an unknown name: referencing it stays unresolved, and its value
    // (possibly a secret) was not stored.
    let r = d.decode_block(&[0x80 | 62]).unwrap();
    assert_eq!(r.unresolved.total, 1);
    assert!(!format!("{:?}", d.learned).contains("secret"));
    let s = d.stats();
    assert_eq!((s.blocks_partial, s.blocks_resolved), (2, 0));
}

#[test]
fn oversize_entry_clears_known_table() {
    let mut d = HpackDecoder::new_fresh();
    let mut blk = Vec::new();
    encode::int(&mut blk, 100, 5, 0x20);
    blk.push(0x40);
    encode::string(&mut blk, b"x-big");
    encode::string(&mut blk, &[b'a'; 80]);
    d.decode_block(&blk).unwrap();
    assert_eq!(d.learned_entries(), 0);
    assert!(d.is_fully_known());
}

#[test]
fn size_update_zero_makes_table_known() {
    let mut d = HpackDecoder::new_unknown();
    let mut blk = Vec::new();
    encode::int(&mut blk, 0, 5, 0x20);
    encode::int(&mut blk, 4096, 5, 0x20);
    blk.push(0x82);
    d.decode_block(&blk).unwrap();
    assert!(d.is_fully_known());
    // Size update after a field is an error, and resets.
    let mut bad = vec![0x82];
    encode::int(&mut bad, 10, 5, 0x20);
    assert_eq!(d.decode_block(&bad), Err(HpackError::InvalidSizeUpdate));
    assert!(!d.is_fully_known());
}

#[test]
fn integer_edge_cases() {
    for v in [0u64, 1, 30, 31, 127, 128, 1337, 65535, u32::MAX as u64] {
        for p in 4..=7u8 {
            let mut b = Vec::new();
            encode::int(&mut b, v, p, 0);
            let mut pos = 0;
            assert_eq!(decode_int(&b, &mut pos, p), Ok(v));
            assert_eq!(pos, b.len());
        }
    }
    let mut pos = 0;
    assert_eq!(decode_int(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], &mut pos, 5), Err(HpackError::IntegerOverflow));
    let mut pos = 0;
    assert_eq!(decode_int(&[0x1f, 0xff], &mut pos, 5), Err(HpackError::Truncated));
}

#[test]
fn corrupt_blocks_error_and_reset() {
    let cases: [(&[u8], HpackError); 6] = [
        (&[0x80], HpackError::InvalidIndex),
        (&[0x80 | 0x7f, 0x10], HpackError::InvalidIndex),
        (&[0x40, 0x05, b'a'], HpackError::Truncated),
        (&[0x40, 0x81, 0xff, 0x00], HpackError::Huffman),
        (&[0x40, 0x01, b'A', 0x00], HpackError::InvalidName),
        (&[0x3f, 0xe1, 0xff, 0xff, 0x0f], HpackError::InvalidSizeUpdate),
    ];
    for (blk, err) in cases {
        let mut d = HpackDecoder::new_fresh();
        assert_eq!(d.decode_block(blk), Err(err), "{blk:?}");
        assert_eq!(d.stats().blocks_failed, 1);
        assert!(!d.is_fully_known());
    }
    // A static index beyond 61 in an unknown table is merely unresolved.
    let mut d = HpackDecoder::new_unknown();
    assert_eq!(d.decode_block(&[0x80 | 0x7f, 0x10]).unwrap().unresolved.total, 1);
}

#[test]
fn no_panic_on_pseudo_random_blocks() {
    let mut rng = Lcg(0x9e37_79b9_7f4a_7c15);
    let mut next = move || rng.next_u32();
    let mut e = GoLikeEncoder::new();
    let mut valid = Vec::new();
    for i in 0..40 {
        let req = grpc_request(i);
        let refs: Vec<(&str, &str)> = req.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        valid.push(e.encode(&refs));
    }
    let mut d = HpackDecoder::new_unknown();
    for round in 0..20_000 {
        let mut blk = valid[round % valid.len()].clone();
        match next() % 4 {
            0 => blk = (0..next() % 64).map(|_| next() as u8).collect(),
            1 => {
                for _ in 0..1 + next() % 4 {
                    if !blk.is_empty() {
                        let i = next() as usize % blk.len();
                        blk[i] ^= 1 << (next() % 8);
                    }
                }
            }
            2 => {
                let cut = next() as usize % (blk.len() + 1);
                blk.truncate(cut);
            }
            _ => {}
        }
        let _ = d.decode_block(&blk);
        if next() % 50 == 0 {
            d = if next() % 2 == 0 { HpackDecoder::new_fresh() } else { HpackDecoder::new_unknown() };
        }
    }
}
