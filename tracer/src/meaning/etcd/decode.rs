//! Decoding etcd's messages, whole or cut by the capture limit, into summaries.

use prost::Message;

use super::proto as pb;
use super::summary::{EtcdOp, EtcdRequest, EtcdResponse, TxnSummary, WatchKind};
use crate::protocols::{grpc::GrpcMessage, truncate_str};

/// Server-provided texts (cancel reason, lease error) are truncated to this many bytes.
const TEXT_MAX: usize = 256;

/// Which top-level fields a (possibly truncated) message carries.
#[derive(Clone, Copy, Debug)]
struct Seen {
    complete: bool,
    mask: u64,
}

impl Seen {
    /// The field's value is known: the message is complete, or the field was captured.
    fn known(self, field: u32) -> bool {
        self.complete || (field < 64 && self.mask & (1 << field) != 0)
    }
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<Option<u64>, ()> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some(&b) = buf.get(*pos + i) else { return Ok(None) };
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *pos += i + 1;
            return Ok(Some(v));
        }
    }
    Err(())
}

/// Walk the top-level fields of a message cut at an arbitrary byte: the offset just after the
/// last complete field and the set of complete field numbers. `None` if malformed before the cut.
fn complete_prefix(buf: &[u8]) -> Option<(usize, u64)> {
    let mut pos = 0;
    let mut end = 0;
    let mut mask = 0u64;
    loop {
        let Some(key) = read_varint(buf, &mut pos).ok()? else { return Some((end, mask)) };
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return None;
        }
        let len = match key & 7 {
            0 => match read_varint(buf, &mut pos).ok()? {
                Some(_) => 0,
                None => return Some((end, mask)),
            },
            1 => 8,
            2 => match read_varint(buf, &mut pos).ok()? {
                Some(l) => usize::try_from(l).ok()?,
                None => return Some((end, mask)),
            },
            5 => 4,
            _ => return None,
        };
        match pos.checked_add(len) {
            Some(e) if e <= buf.len() => pos = e,
            _ => return Some((end, mask)),
        }
        end = pos;
        if field < 64 {
            mask |= 1 << field;
        }
    }
}

fn decode<M: Message + Default>(msg: &[u8], truncated: bool) -> Option<(M, Seen)> {
    if !truncated {
        return M::decode(msg).ok().map(|m| (m, Seen { complete: true, mask: u64::MAX }));
    }
    let (end, mask) = complete_prefix(msg)?;
    M::decode(&msg[..end]).ok().map(|m| (m, Seen { complete: false, mask }))
}

fn nonempty(v: Vec<u8>) -> Option<Vec<u8>> {
    (!v.is_empty()).then_some(v)
}

fn nonzero(v: i64) -> Option<i64> {
    (v != 0).then_some(v)
}

fn positive(v: i64) -> Option<i64> {
    (v > 0).then_some(v)
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn text(v: &[u8]) -> Option<String> {
    (!v.is_empty()).then(|| truncate_str(&String::from_utf8_lossy(v), TEXT_MAX).to_owned())
}

/// Decode a complete request message of `service`/`method` (e.g. `"Range"`, `"etcdserverpb.KV"`).
pub fn decode_request(method: &str, service: &str, msg: &[u8]) -> Option<EtcdRequest> {
    decode_request_inner(EtcdOp::from_rpc(service, method)?, msg, false)
}

/// Decode the captured start `prefix` of a request message announced as `declared_len` bytes.
pub fn decode_request_prefix(method: &str, service: &str, prefix: &[u8], declared_len: u32) -> Option<EtcdRequest> {
    let op = EtcdOp::from_rpc(service, method)?;
    let (msg, truncated) = message_in(prefix, declared_len);
    decode_request_inner(op, msg, truncated)
}

/// The message of `declared_len` bytes in the capture of its start `prefix`: all of it when the
/// capture reached its end, else what was captured, and whether it was cut.
fn message_in(prefix: &[u8], declared_len: u32) -> (&[u8], bool) {
    let full = prefix.len() as u64 >= u64::from(declared_len);
    (if full { &prefix[..declared_len as usize] } else { prefix }, !full)
}

/// Decode the first request message of a gRPC stream (uncompressed only).
pub fn decode_request_message(method: &str, service: &str, m: &GrpcMessage) -> Option<EtcdRequest> {
    if m.compressed {
        return None;
    }
    decode_request_prefix(method, service, &m.bytes, m.declared_len)
}

fn decode_request_inner(op: EtcdOp, msg: &[u8], truncated: bool) -> Option<EtcdRequest> {
    let mut r = EtcdRequest::new(op, truncated);
    match op {
        EtcdOp::Range => {
            let (m, _) = decode::<pb::RangeRequest>(msg, truncated)?;
            r.key = Some(m.key);
            r.range_end = nonempty(m.range_end);
            r.limit = positive(m.limit);
            r.revision = positive(m.revision);
            r.keys_only = m.keys_only;
            r.count_only = m.count_only;
            r.serializable = m.serializable;
        }
        EtcdOp::Put => {
            let (m, _) = decode::<pb::PutRequest>(msg, truncated)?;
            r.key = Some(m.key);
            r.lease_id = nonzero(m.lease);
            r.prev_kv = m.prev_kv;
        }
        EtcdOp::DeleteRange => {
            let (m, _) = decode::<pb::DeleteRangeRequest>(msg, truncated)?;
            r.key = Some(m.key);
            r.range_end = nonempty(m.range_end);
            r.prev_kv = m.prev_kv;
        }
        EtcdOp::Txn => {
            let (m, _) = decode::<pb::TxnRequest>(msg, truncated)?;
            if let Some(c) = m.compare.first() {
                r.key = Some(c.key.clone());
                r.range_end = nonempty(c.range_end.clone());
            }
            if !truncated {
                r.txn = Some(TxnSummary {
                    compares: count(m.compare.len()),
                    success_ops: count(m.success.len()),
                    failure_ops: count(m.failure.len()),
                });
            }
        }
        EtcdOp::Compact => {
            let (m, _) = decode::<pb::CompactionRequest>(msg, truncated)?;
            r.revision = positive(m.revision);
        }
        EtcdOp::Watch => {
            let (m, _) = decode::<pb::WatchRequest>(msg, truncated)?;
            use pb::watch_request::RequestUnion;
            match m.request_union {
                Some(RequestUnion::CreateRequest(c)) => {
                    r.watch_kind = Some(WatchKind::Create);
                    r.key = Some(c.key);
                    r.range_end = nonempty(c.range_end);
                    r.revision = positive(c.start_revision);
                    r.watch_id = nonzero(c.watch_id);
                    r.prev_kv = c.prev_kv;
                }
                Some(RequestUnion::CancelRequest(c)) => {
                    r.watch_kind = Some(WatchKind::Cancel);
                    r.watch_id = Some(c.watch_id);
                }
                Some(RequestUnion::ProgressRequest(_)) => r.watch_kind = Some(WatchKind::Progress),
                None => {}
            }
        }
        EtcdOp::LeaseGrant => {
            let (m, _) = decode::<pb::LeaseGrantRequest>(msg, truncated)?;
            r.ttl = Some(m.ttl);
            r.lease_id = nonzero(m.id);
        }
        EtcdOp::LeaseRevoke | EtcdOp::LeaseKeepAlive => {
            let (m, _) = decode::<pb::LeaseIdRequest>(msg, truncated)?;
            r.lease_id = Some(m.id);
        }
    }
    Some(r)
}

/// Decode a complete response message.
pub fn decode_response(method: &str, service: &str, msg: &[u8]) -> Option<EtcdResponse> {
    decode_response_inner(EtcdOp::from_rpc(service, method)?, msg, false)
}

/// Decode the captured start of a response message announced as `declared_len` bytes.
pub fn decode_response_prefix(method: &str, service: &str, prefix: &[u8], declared_len: u32) -> Option<EtcdResponse> {
    let op = EtcdOp::from_rpc(service, method)?;
    let (msg, truncated) = message_in(prefix, declared_len);
    decode_response_inner(op, msg, truncated)
}

/// Decode the first response message of a gRPC stream (uncompressed only).
pub fn decode_response_message(method: &str, service: &str, m: &GrpcMessage) -> Option<EtcdResponse> {
    if m.compressed {
        return None;
    }
    decode_response_prefix(method, service, &m.bytes, m.declared_len)
}

fn decode_response_inner(op: EtcdOp, msg: &[u8], truncated: bool) -> Option<EtcdResponse> {
    let mut r = EtcdResponse::new(op, truncated);
    let complete = !truncated;
    let header = |h: Option<pb::ResponseHeader>| h.map(|h| h.revision);
    match op {
        EtcdOp::Range => {
            let (m, seen) = decode::<pb::RangeResponse>(msg, truncated)?;
            r.revision = header(m.header);
            r.kvs = complete.then(|| count(m.kvs.len()));
            r.more = seen.known(3).then_some(m.more);
            r.count = seen.known(4).then_some(m.count);
        }
        EtcdOp::Put => {
            let (m, _) = decode::<pb::PutResponse>(msg, truncated)?;
            r.revision = header(m.header);
        }
        EtcdOp::DeleteRange => {
            let (m, seen) = decode::<pb::DeleteRangeResponse>(msg, truncated)?;
            r.revision = header(m.header);
            r.deleted = seen.known(2).then_some(m.deleted);
        }
        EtcdOp::Txn => {
            let (m, seen) = decode::<pb::TxnResponse>(msg, truncated)?;
            r.revision = header(m.header);
            r.succeeded = seen.known(2).then_some(m.succeeded);
            r.responses = complete.then(|| count(m.responses.len()));
        }
        EtcdOp::Compact | EtcdOp::LeaseRevoke => {
            let (m, _) = decode::<pb::HeaderOnlyResponse>(msg, truncated)?;
            r.revision = header(m.header);
        }
        EtcdOp::Watch => {
            let (m, seen) = decode::<pb::WatchResponse>(msg, truncated)?;
            r.revision = header(m.header);
            r.watch_id = seen.known(2).then_some(m.watch_id);
            r.created = seen.known(3).then_some(m.created);
            r.canceled = seen.known(4).then_some(m.canceled);
            r.compact_revision = nonzero(m.compact_revision);
            r.cancel_reason = text(&m.cancel_reason);
            r.events = complete.then(|| count(m.events.len()));
        }
        EtcdOp::LeaseGrant => {
            let (m, seen) = decode::<pb::LeaseGrantResponse>(msg, truncated)?;
            r.revision = header(m.header);
            r.lease_id = seen.known(2).then_some(m.id);
            r.ttl = seen.known(3).then_some(m.ttl);
            r.error = text(&m.error);
        }
        EtcdOp::LeaseKeepAlive => {
            let (m, seen) = decode::<pb::LeaseKeepAliveResponse>(msg, truncated)?;
            r.revision = header(m.header);
            r.lease_id = seen.known(2).then_some(m.id);
            r.ttl = seen.known(3).then_some(m.ttl);
        }
    }
    Some(r)
}
