use prost::Message;

use super::proto::{self as pb, full};
use super::*;
use crate::protocols::grpc::GrpcMessage;
use crate::protocols::test_rng::Lcg;
use crate::span::AttrValue;

const KV: &str = "etcdserverpb.KV";

fn attr<'a>(a: &'a [(&'static str, AttrValue)], k: &str) -> Option<&'a AttrValue> {
    a.iter().find(|(n, _)| *n == k).map(|(_, v)| v)
}

fn s(v: &str) -> AttrValue {
    AttrValue::Str(v.to_owned().into())
}

fn hdr(rev: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader { cluster_id: 1, member_id: 2, revision: rev, raft_term: 3 })
}

#[test]
fn op_names() {
    assert_eq!(EtcdOp::from_rpc("etcdserverpb.KV", "Range"), Some(EtcdOp::Range));
    assert_eq!(EtcdOp::from_rpc("etcdserverpb.Lease", "LeaseKeepAlive"), Some(EtcdOp::LeaseKeepAlive));
    assert_eq!(EtcdOp::from_rpc("etcdserverpb.KV", "Watch"), None);
    assert_eq!(EtcdOp::from_rpc("etcdserverpb.Maintenance", "Status"), None);
    // Spans name a known method with these constants: they must be its gRPC names.
    for op in EtcdOp::ALL {
        assert_eq!(EtcdOp::from_rpc(op.service(), op.as_str()), Some(op));
    }
}

#[test]
fn range_prefix_list() {
    let req = pb::RangeRequest {
        key: b"/registry/pods/default/".to_vec(),
        range_end: b"/registry/pods/default0".to_vec(),
        limit: 500,
        revision: 0,
        serializable: true,
        ..Default::default()
    };
    let r = decode_request("Range", KV, &req.encode_to_vec()).unwrap();
    let resp = full::RangeResponse {
        header: hdr(12345),
        kvs: (0..3)
            .map(|i| full::KeyValue {
                key: format!("/registry/pods/default/p{i}").into(),
                value: b"SECRET".to_vec(),
                ..Default::default()
            })
            .collect(),
        more: true,
        count: 1234,
    };
    let p = decode_response("Range", KV, &resp.encode_to_vec()).unwrap();
    let a = attributes(EtcdOp::Range, Some(&r), Some(&p));
    assert_eq!(attr(&a, "db.system.name"), Some(&s("etcd")));
    assert_eq!(attr(&a, "db.operation.name"), Some(&s("Range")));
    assert_eq!(attr(&a, "etcd.key"), Some(&s("/registry/pods/default/")));
    assert_eq!(attr(&a, "etcd.range_end"), Some(&s("/registry/pods/default0")));
    assert_eq!(attr(&a, "etcd.prefix"), Some(&AttrValue::Bool(true)));
    assert_eq!(attr(&a, "etcd.limit"), Some(&AttrValue::Int(500)));
    assert_eq!(attr(&a, "etcd.revision"), None);
    assert_eq!(attr(&a, "etcd.response.revision"), Some(&AttrValue::Int(12345)));
    assert_eq!(attr(&a, "etcd.response.count"), Some(&AttrValue::Int(1234)));
    assert_eq!(attr(&a, "etcd.response.kvs"), Some(&AttrValue::Int(3)));
    assert_eq!(attr(&a, "etcd.response.more"), Some(&AttrValue::Bool(true)));
    assert!(!format!("{a:?}").contains("SECRET"));
}

#[test]
fn range_single_key_count_only() {
    let req = pb::RangeRequest {
        key: b"/registry/ns/kube-system".to_vec(),
        revision: 77,
        count_only: true,
        keys_only: true,
        ..Default::default()
    };
    let r = decode_request("Range", KV, &req.encode_to_vec()).unwrap();
    let a = attributes(EtcdOp::Range, Some(&r), None);
    assert_eq!(attr(&a, "etcd.prefix"), None);
    assert_eq!(attr(&a, "etcd.range_end"), None);
    assert_eq!(attr(&a, "etcd.revision"), Some(&AttrValue::Int(77)));
    assert_eq!(attr(&a, "etcd.count_only"), Some(&AttrValue::Bool(true)));
    assert_eq!(attr(&a, "etcd.keys_only"), Some(&AttrValue::Bool(true)));
    // Empty response: count 0 and kvs 0 are real zeros.
    let resp = pb::RangeResponse { header: hdr(5), ..Default::default() };
    let p = decode_response("Range", KV, &resp.encode_to_vec()).unwrap();
    assert_eq!((p.count, p.kvs, p.more), (Some(0), Some(0), Some(false)));
}

#[test]
fn put_never_keeps_value() {
    let req = full::PutRequest {
        key: b"/registry/secrets/ns/s".to_vec(),
        value: b"TOP-SECRET-VALUE".to_vec(),
        lease: 0x1234,
        prev_kv: true,
    };
    let bytes = req.encode_to_vec();
    let r = decode_request("Put", KV, &bytes).unwrap();
    assert!(!format!("{r:?}").contains("TOP-SECRET"));
    let resp = pb::PutResponse { header: hdr(99), prev_kv: None };
    let p = decode_response("Put", KV, &resp.encode_to_vec()).unwrap();
    let a = attributes(EtcdOp::Put, Some(&r), Some(&p));
    assert_eq!(attr(&a, "etcd.key"), Some(&s("/registry/secrets/ns/s")));
    assert_eq!(attr(&a, "etcd.lease.id"), Some(&AttrValue::Int(0x1234)));
    assert_eq!(attr(&a, "etcd.response.revision"), Some(&AttrValue::Int(99)));
    assert!(!format!("{a:?}").contains("TOP-SECRET"));
}

#[test]
fn delete_range() {
    let req = pb::DeleteRangeRequest { key: b"/a/".to_vec(), range_end: b"/a0".to_vec(), prev_kv: false };
    let r = decode_request("DeleteRange", KV, &req.encode_to_vec()).unwrap();
    let resp = pb::DeleteRangeResponse { header: hdr(10), deleted: 4, prev_kvs: vec![] };
    let p = decode_response("DeleteRange", KV, &resp.encode_to_vec()).unwrap();
    let a = attributes(EtcdOp::DeleteRange, Some(&r), Some(&p));
    assert_eq!(attr(&a, "etcd.prefix"), Some(&AttrValue::Bool(true)));
    assert_eq!(attr(&a, "etcd.response.deleted"), Some(&AttrValue::Int(4)));
}

#[test]
fn txn_kubernetes_style_update() {
    // Kubernetes GuaranteedUpdate: compare mod_revision, success put, failure range.
    let req = full::TxnRequest {
        compare: vec![full::Compare {
            result: 0,
            target: 2,
            key: b"/registry/pods/ns/p".to_vec(),
            value: b"CMPVALUE".to_vec(),
        }],
        success: vec![full::RequestOp {
            request_put: Some(full::PutRequest {
                key: b"/registry/pods/ns/p".to_vec(),
                value: b"NEWVALUE".to_vec(),
                lease: 0,
                prev_kv: false,
            }),
        }],
        failure: vec![full::RequestOp { request_put: None }, full::RequestOp { request_put: None }],
    };
    let bytes = req.encode_to_vec();
    let r = decode_request("Txn", KV, &bytes).unwrap();
    assert!(!format!("{r:?}").contains("VALUE"));
    assert_eq!(r.txn, Some(TxnSummary { compares: 1, success_ops: 1, failure_ops: 2 }));
    // Also through the real Compare/RequestOp types with a mod_revision target.
    let req2 = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: 0,
            target: 2,
            key: b"/k".to_vec(),
            target_union: Some(pb::compare::TargetUnion::ModRevision(41)),
            range_end: vec![],
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
                key: b"/k".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestTxn(Box::default())) }],
    };
    let r2 = decode_request("Txn", KV, &req2.encode_to_vec()).unwrap();
    assert_eq!(r2.key.as_deref(), Some(&b"/k"[..]));
    let resp = pb::TxnResponse { header: hdr(42), succeeded: false, responses: vec![pb::Skipped {}] };
    let p = decode_response("Txn", KV, &resp.encode_to_vec()).unwrap();
    let a = attributes(EtcdOp::Txn, Some(&r), Some(&p));
    assert_eq!(attr(&a, "etcd.key"), Some(&s("/registry/pods/ns/p")));
    assert_eq!(attr(&a, "etcd.txn.compares"), Some(&AttrValue::Int(1)));
    assert_eq!(attr(&a, "etcd.txn.success_ops"), Some(&AttrValue::Int(1)));
    assert_eq!(attr(&a, "etcd.txn.failure_ops"), Some(&AttrValue::Int(2)));
    assert_eq!(attr(&a, "etcd.txn.succeeded"), Some(&AttrValue::Bool(false)));
    assert_eq!(attr(&a, "etcd.response.revision"), Some(&AttrValue::Int(42)));
}

#[test]
fn compact_watch_lease() {
    let r = decode_request("Compact", KV, &pb::CompactionRequest { revision: 1000, physical: true }.encode_to_vec())
        .unwrap();
    assert_eq!(attr(&attributes(EtcdOp::Compact, Some(&r), None), "etcd.revision"), Some(&AttrValue::Int(1000)));

    let w = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: b"/registry/pods/".to_vec(),
            range_end: b"/registry/pods0".to_vec(),
            start_revision: 500,
            progress_notify: true,
            filters: vec![1],
            prev_kv: true,
            watch_id: 0,
            fragment: false,
        })),
    };
    let r = decode_request("Watch", "etcdserverpb.Watch", &w.encode_to_vec()).unwrap();
    let resp = pb::WatchResponse { header: hdr(600), watch_id: 0, created: true, ..Default::default() };
    let p = decode_response("Watch", "etcdserverpb.Watch", &resp.encode_to_vec()).unwrap();
    let a = attributes(EtcdOp::Watch, Some(&r), Some(&p));
    assert_eq!(attr(&a, "etcd.watch.kind"), Some(&s("create")));
    assert_eq!(attr(&a, "etcd.prefix"), Some(&AttrValue::Bool(true)));
    assert_eq!(attr(&a, "etcd.revision"), Some(&AttrValue::Int(500)));
    assert_eq!(attr(&a, "etcd.watch.id"), Some(&AttrValue::Int(0)), "watch id 0 is valid");
    assert_eq!(attr(&a, "etcd.watch.created"), Some(&AttrValue::Bool(true)));
    assert_eq!(attr(&a, "etcd.watch.events"), Some(&AttrValue::Int(0)));

    let cancel = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CancelRequest(pb::WatchCancelRequest { watch_id: 7 })),
    };
    let r = decode_request("Watch", "etcdserverpb.Watch", &cancel.encode_to_vec()).unwrap();
    assert_eq!((r.watch_kind, r.watch_id), (Some(WatchKind::Cancel), Some(7)));
    let resp = pb::WatchResponse {
        header: hdr(1),
        watch_id: 7,
        canceled: true,
        compact_revision: 3,
        cancel_reason: b"mvcc: required revision has been compacted".to_vec(),
        ..Default::default()
    };
    let p = decode_response("Watch", "etcdserverpb.Watch", &resp.encode_to_vec()).unwrap();
    assert_eq!(p.cancel_reason.as_deref(), Some("mvcc: required revision has been compacted"));
    assert_eq!(p.compact_revision, Some(3));

    let g =
        decode_request("LeaseGrant", "etcdserverpb.Lease", &pb::LeaseGrantRequest { ttl: 60, id: 0 }.encode_to_vec())
            .unwrap();
    let gr = pb::LeaseGrantResponse { header: hdr(2), id: 0x7777, ttl: 60, error: vec![] };
    let gp = decode_response("LeaseGrant", "etcdserverpb.Lease", &gr.encode_to_vec()).unwrap();
    let a = attributes(EtcdOp::LeaseGrant, Some(&g), Some(&gp));
    assert_eq!(attr(&a, "etcd.lease.ttl"), Some(&AttrValue::Int(60)));
    assert_eq!(attr(&a, "etcd.lease.id"), Some(&AttrValue::Int(0x7777)));

    for m in ["LeaseRevoke", "LeaseKeepAlive"] {
        let r = decode_request(m, "etcdserverpb.Lease", &pb::LeaseIdRequest { id: 0x42 }.encode_to_vec()).unwrap();
        assert_eq!(attr(&attributes(r.op, Some(&r), None), "etcd.lease.id"), Some(&AttrValue::Int(0x42)));
    }
    let ka = pb::LeaseKeepAliveResponse { header: hdr(3), id: 0x42, ttl: 59 };
    let p = decode_response("LeaseKeepAlive", "etcdserverpb.Lease", &ka.encode_to_vec()).unwrap();
    assert_eq!((p.lease_id, p.ttl, p.revision), (Some(0x42), Some(59), Some(3)));
    let p = decode_response(
        "LeaseRevoke",
        "etcdserverpb.Lease",
        &pb::HeaderOnlyResponse { header: hdr(4) }.encode_to_vec(),
    )
    .unwrap();
    assert_eq!(p.revision, Some(4));
}

#[test]
fn printable_keys() {
    assert_eq!(printable_key(b"/registry/pods/ns/name"), "/registry/pods/ns/name");
    assert_eq!(printable_key(b"a\xffb\x00c\n"), "a\\xffb\\x00c\\x0a");
    assert_eq!(printable_key("héllo".as_bytes()), "héllo");
    let long = vec![b'k'; 1000];
    assert_eq!(printable_key(&long).len(), KEY_MAX);
    let esc = vec![0xfeu8; 1000];
    let p = printable_key(&esc);
    assert!(p.len() <= KEY_MAX && p.len() > KEY_MAX - 4 && p.ends_with("\\xfe"));
    let multi = "é".repeat(200);
    let p = printable_key(multi.as_bytes());
    assert!(p.len() <= KEY_MAX && p.chars().all(|c| c == 'é'));
    assert_eq!(prefix_range_end(b"/a"), b"/b");
    assert_eq!(prefix_range_end(b"a\xff\xff"), b"b");
    assert_eq!(prefix_range_end(b"\xff"), b"\x00");
    assert!(!is_prefix_range(b"\xff", b"\x00"));
    assert!(!is_prefix_range(b"", b"\x00"));
}

/// The cases of the key renderer the k8s tests had, rendered as the product does: lowercase
/// hex escapes, backslashes kept as they are, a cut without a marker that never splits a
/// character or an escape. A padding before each key leaves it `max` of the [`KEY_MAX`] bytes.
#[test]
fn printable_key_cuts_and_escapes() {
    let cases: &[(&[u8], usize, &str)] = &[
        (b"/registry/pods/default/nginx", 100, "/registry/pods/default/nginx"),
        (b"/registry/pods/default/nginx", 28, "/registry/pods/default/nginx"),
        (b"/registry/pods/default/nginx", 27, "/registry/pods/default/ngin"),
        (b"a\x00b\x7f\n", 100, "a\\x00b\\x7f\\x0a"),
        (b"a\xffb\xc3", 100, "a\\xffb\\xc3"),
        (b"back\\slash", 100, "back\\slash"),
        ("héllo".as_bytes(), 100, "héllo"),
        // "é" is 2 bytes and may not be split.
        ("aébcd".as_bytes(), 5, "aébc"),
        ("aébc".as_bytes(), 5, "aébc"),
        ("ééé".as_bytes(), 6, "ééé"),
        ("éééé".as_bytes(), 7, "ééé"),
        ("日本語キー".as_bytes(), 10, "日本語"),
        // An escape is never split either.
        (b"ab\xff", 5, "ab"),
        (b"abcdef", 2, "ab"),
        (b"abcdef", 0, ""),
        (b"", 5, ""),
    ];
    for (key, max, want) in cases {
        let pad = "k".repeat(KEY_MAX - max);
        let got = printable_key(&[pad.as_bytes(), key].concat());
        assert_eq!(got.strip_prefix(pad.as_str()), Some(*want), "key {key:?} max {max}");
        assert!(got.len() <= KEY_MAX);
    }
}

#[test]
fn truncated_messages() {
    let resp = full::RangeResponse {
        header: hdr(777),
        kvs: (0..100)
            .map(|i| full::KeyValue {
                key: format!("/registry/k{i}").into(),
                value: vec![b'v'; 200],
                ..Default::default()
            })
            .collect(),
        more: false,
        count: 100,
    };
    let bytes = resp.encode_to_vec();
    assert!(bytes.len() > 4096);
    // Decoding the cut message as if complete fails (cut inside a field).
    assert_eq!(decode_response("Range", KV, &bytes[..4096]), None);
    // As a prefix: the header is there, counts are not claimed.
    let p = decode_response_prefix("Range", KV, &bytes[..4096], bytes.len() as u32).unwrap();
    assert!(p.truncated);
    assert_eq!((p.revision, p.count, p.kvs, p.more), (Some(777), None, None, None));
    let a = attributes(EtcdOp::Range, None, Some(&p));
    assert_eq!(attr(&a, "etcd.response.truncated"), Some(&AttrValue::Bool(true)));
    assert_eq!(attr(&a, "etcd.response.count"), None);
    // Cut inside the header: nothing but the op.
    let p = decode_response_prefix("Range", KV, &bytes[..3], bytes.len() as u32).unwrap();
    assert_eq!(p.revision, None);
    // A Put whose value was cut: the key is still known.
    let put = full::PutRequest {
        key: b"/registry/configmaps/ns/big".to_vec(),
        value: vec![b'x'; 10_000],
        lease: 5,
        prev_kv: false,
    };
    let pb = put.encode_to_vec();
    assert_eq!(decode_request("Put", KV, &pb[..4096]), None);
    let r = decode_request_prefix("Put", KV, &pb[..4096], pb.len() as u32).unwrap();
    assert_eq!((r.key.as_deref(), r.lease_id, r.truncated), (Some(&b"/registry/configmaps/ns/big"[..]), None, true));
    // Through a GrpcMessage.
    let m = GrpcMessage { compressed: false, declared_len: pb.len() as u32, bytes: pb[..4096].to_vec() };
    assert!(decode_request_message("Put", KV, &m).is_some());
    let m = GrpcMessage { compressed: true, ..m };
    assert!(decode_request_message("Put", KV, &m).is_none());
}

#[test]
fn corrupt_messages() {
    // Invalid wire type 7, field 0, overlong varint, length past the end.
    for bad in [
        &[0x0f, 0x01][..],
        &[0x00, 0x01],
        &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        &[0x0a, 0x05, b'a'],
    ] {
        assert_eq!(decode_request("Range", KV, bad), None, "{bad:?}");
    }
    assert_eq!(decode_request_prefix("Range", KV, &[0x0f, 0x01], 100), None);
    // Wrong wire type for a known field.
    assert_eq!(decode_request("Range", KV, &[0x18, 0x01, 0x0d, 0, 0, 0, 0]), None);
    assert_eq!(decode_request("Nope", KV, &[]), None);
}

#[test]
fn no_panic_on_pseudo_random_messages() {
    let mut rng = Lcg(7);
    let mut next = move || rng.next_u32();
    let ops = [
        ("Range", KV),
        ("Put", KV),
        ("DeleteRange", KV),
        ("Txn", KV),
        ("Compact", KV),
        ("Watch", "etcdserverpb.Watch"),
        ("LeaseGrant", "etcdserverpb.Lease"),
        ("LeaseRevoke", "etcdserverpb.Lease"),
        ("LeaseKeepAlive", "etcdserverpb.Lease"),
    ];
    let seed = full::TxnRequest {
        compare: vec![full::Compare { result: 1, target: 2, key: b"/x".to_vec(), value: b"v".to_vec() }],
        success: vec![full::RequestOp {
            request_put: Some(full::PutRequest { key: b"/x".to_vec(), value: b"y".to_vec(), lease: 3, prev_kv: true }),
        }],
        failure: vec![],
    }
    .encode_to_vec();
    for _ in 0..30_000 {
        let mut msg: Vec<u8> =
            if next() % 2 == 0 { seed.clone() } else { (0..next() % 64).map(|_| next() as u8).collect() };
        for _ in 0..next() % 4 {
            if !msg.is_empty() {
                let i = next() as usize % msg.len();
                msg[i] = next() as u8;
            }
        }
        let (m, svc) = ops[next() as usize % ops.len()];
        let cut = next() as usize % (msg.len() + 1);
        for r in [decode_request(m, svc, &msg), decode_request_prefix(m, svc, &msg[..cut], msg.len() as u32)]
            .into_iter()
            .flatten()
        {
            let _ = attributes(r.op, Some(&r), None);
        }
        for r in [decode_response(m, svc, &msg), decode_response_prefix(m, svc, &msg[..cut], msg.len() as u32)]
            .into_iter()
            .flatten()
        {
            let _ = attributes(r.op, None, Some(&r));
        }
    }
}

/// A Go gRPC client (etcd clientv3) Range call and etcd's answer, as bytes on the wire, through
/// the HTTP/2 decoder, the gRPC stream helper and the etcd decoder; split at every byte.
#[test]
fn go_grpc_range_call_end_to_end() {
    use crate::protocols::grpc::{StatusLookup, StreamMessages, parse_path, status_from_event};
    use crate::protocols::hpack::testenc::GoLikeEncoder;
    use crate::protocols::http2::{H2Connection, H2Event, PREFACE, build, flags, frame_type, settings_id};
    use crate::stream::{Role, Segment};

    let req = pb::RangeRequest { key: b"/registry/leases/kube-system/kube-scheduler".to_vec(), ..Default::default() };
    let mut client = PREFACE.to_vec();
    client.extend(build::settings(&[(2, 0), (4, 4_194_304), (6, 16_384 * 1024)]));
    client.extend(build::frame(frame_type::WINDOW_UPDATE, 0, 0, &4_128_769u32.to_be_bytes()));
    let mut cenc = GoLikeEncoder::new();
    let blk = cenc.encode(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/etcdserverpb.KV/Range"),
        (":authority", "127.0.0.1:2379"),
        ("content-type", "application/grpc"),
        ("user-agent", "etcd/3.6 grpc-go/1.72.0"),
        ("te", "trailers"),
        ("grpc-timeout", "9999853u"),
    ]);
    client.extend(build::headers(1, &blk, false));
    client.extend(build::data(1, &build::grpc_message(&req.encode_to_vec()), true));

    let resp = full::RangeResponse {
        header: hdr(4242),
        kvs: vec![full::KeyValue {
            key: req.key.clone(),
            value: b"lease-holder-identity".to_vec(),
            create_revision: 1,
            mod_revision: 4240,
            version: 9,
            lease: 0,
        }],
        more: false,
        count: 1,
    };
    let mut server = build::settings(&[(settings_id::MAX_FRAME_SIZE, 16_384), (4, 1_048_576)]);
    server.extend(build::frame(frame_type::SETTINGS, flags::ACK, 0, &[]));
    let mut senc = GoLikeEncoder::new();
    server.extend(build::headers(1, &senc.encode(&[(":status", "200"), ("content-type", "application/grpc")]), false));
    server.extend(build::data(1, &build::grpc_message(&resp.encode_to_vec()), false));
    server.extend(build::headers(1, &senc.encode(&[("grpc-status", "0"), ("grpc-message", "")]), true));

    for cut in 0..=server.len() {
        let mut conn = H2Connection::new();
        let mut out = Vec::new();
        conn.feed(Role::Client, &Segment::captured(&client, 1), &mut out);
        let mut client_events = std::mem::take(&mut out);
        conn.feed(Role::Server, &Segment::captured(&server[..cut], 2), &mut out);
        conn.feed(Role::Server, &Segment::captured(&server[cut..], 3), &mut out);
        let mut server_events = out;

        let path = client_events.iter().find_map(|e| e.header(":path")).and_then(|l| l.found()).unwrap().to_owned();
        let (service, method) = parse_path(&path).unwrap();
        assert_eq!((service, method), ("etcdserverpb.KV", "Range"));

        let mut creq = StreamMessages::new(16);
        let first_req = client_events.iter_mut().find_map(|e| creq.on_event(e)).unwrap();
        let mut cresp = StreamMessages::new(16);
        let first_resp = server_events.iter_mut().find_map(|e| cresp.on_event(e)).unwrap();
        assert_eq!((first_req.0, first_resp.0), (1, 1));

        let r = decode_request_message(method, service, &first_req.1).unwrap();
        let p = decode_response_message(method, service, &first_resp.1).unwrap();
        let status = server_events
            .iter()
            .filter(|e| matches!(e, H2Event::Headers { end_stream: true, .. }))
            .find_map(status_from_event);
        assert_eq!(
            status,
            Some(StatusLookup::Found(crate::protocols::grpc::GrpcStatus { code: 0, message: Some(String::new()) }))
        );
        let a = attributes(EtcdOp::from_rpc(service, method).unwrap(), Some(&r), Some(&p));
        assert_eq!(attr(&a, "etcd.key"), Some(&s("/registry/leases/kube-system/kube-scheduler")));
        assert_eq!(attr(&a, "etcd.response.revision"), Some(&AttrValue::Int(4242)));
        assert_eq!(attr(&a, "etcd.response.kvs"), Some(&AttrValue::Int(1)));
        assert_eq!(attr(&a, "etcd.response.count"), Some(&AttrValue::Int(1)));
        assert!(!format!("{a:?}").contains("lease-holder-identity"));
        // The server direction learned the client's SETTINGS and started fresh.
        assert!(conn.server.hpack().is_fully_known());
    }
}
