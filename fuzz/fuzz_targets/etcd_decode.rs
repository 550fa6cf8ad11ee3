//! Fuzz the etcd request/response decoders (complete and truncated messages): `None` or a
//! summary, never a panic; attributes stay bounded.
//!
//! Input layout: byte 0 selects the RPC and where to cut; the rest is the message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::internals::AttrValue;
use tracer::internals::{
    EtcdOp, EtcdRequest, EtcdResponse, KEY_MAX, decode_request, decode_request_prefix, decode_response,
    decode_response_prefix, push_attributes,
};

const RPCS: [(&str, &str); 10] = [
    ("Range", "etcdserverpb.KV"),
    ("Put", "etcdserverpb.KV"),
    ("DeleteRange", "etcdserverpb.KV"),
    ("Txn", "etcdserverpb.KV"),
    ("Compact", "etcdserverpb.KV"),
    ("Watch", "etcdserverpb.Watch"),
    ("LeaseGrant", "etcdserverpb.Lease"),
    ("LeaseRevoke", "etcdserverpb.Lease"),
    ("LeaseKeepAlive", "etcdserverpb.Lease"),
    ("Status", "etcdserverpb.Maintenance"),
];

fn check(op: EtcdOp, req: Option<&EtcdRequest>, resp: Option<&EtcdResponse>) {
    let mut attrs = Vec::new();
    push_attributes(op, req, resp, &mut attrs);
    for (k, v) in &attrs {
        if let AttrValue::Str(s) = v {
            assert!(s.len() <= KEY_MAX.max(256), "{k}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, msg)) = data.split_first() else { return };
    let (method, service) = RPCS[usize::from(ctl) % RPCS.len()];
    let cut = if msg.is_empty() { 0 } else { usize::from(ctl) * 7 % (msg.len() + 1) };
    let declared = msg.len() as u32;
    for r in [decode_request(method, service, msg), decode_request_prefix(method, service, &msg[..cut], declared)]
        .into_iter()
        .flatten()
    {
        check(r.op, Some(&r), None);
    }
    for r in [decode_response(method, service, msg), decode_response_prefix(method, service, &msg[..cut], declared)]
        .into_iter()
        .flatten()
    {
        check(r.op, None, Some(&r));
    }
});
