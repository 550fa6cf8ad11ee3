//! etcd v3 gRPC calls: request/response summaries and span attributes.
//!
//! Messages are decoded with prost into the reduced types of [`super::etcd_proto`], which never
//! declare value fields, so values are skipped, not copied. Nothing here exports a value: keys,
//! ranges, revisions, counts, lease and watch ids only. Corrupt input yields `None`, never a panic.
//!
//! Messages cut by the capture limit can still be summarised with [`decode_request_prefix`] /
//! [`decode_response_prefix`]: only the top-level fields that are complete in the captured bytes
//! are used, and fields whose absence would mean something (counts, `succeeded`) are only reported
//! when they were actually seen.

use prost::Message;

use super::etcd_proto as pb;
use super::{grpc::GrpcMessage, truncate_str};
use crate::span::AttrValue;

/// Keys and ranges are rendered to at most this many bytes.
pub const KEY_MAX: usize = 256;
/// Server-provided texts (cancel reason, lease error) are truncated to this many bytes.
const TEXT_MAX: usize = 256;

/// The etcd RPCs summarised here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtcdOp {
    Range,
    Put,
    DeleteRange,
    Txn,
    Compact,
    Watch,
    LeaseGrant,
    LeaseRevoke,
    LeaseKeepAlive,
}

impl EtcdOp {
    pub const ALL: [EtcdOp; 9] = [
        EtcdOp::Range,
        EtcdOp::Put,
        EtcdOp::DeleteRange,
        EtcdOp::Txn,
        EtcdOp::Compact,
        EtcdOp::Watch,
        EtcdOp::LeaseGrant,
        EtcdOp::LeaseRevoke,
        EtcdOp::LeaseKeepAlive,
    ];

    /// From the gRPC service and method (`etcdserverpb.KV`, `Range`): the names of
    /// [`EtcdOp::service`] and [`EtcdOp::as_str`], so each is written once.
    pub fn from_rpc(service: &str, method: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == method && op.service() == service)
    }

    /// The gRPC service of the method.
    pub fn service(self) -> &'static str {
        match self {
            EtcdOp::Range | EtcdOp::Put | EtcdOp::DeleteRange | EtcdOp::Txn | EtcdOp::Compact => "etcdserverpb.KV",
            EtcdOp::Watch => "etcdserverpb.Watch",
            EtcdOp::LeaseGrant | EtcdOp::LeaseRevoke | EtcdOp::LeaseKeepAlive => "etcdserverpb.Lease",
        }
    }

    /// `db.operation.name`, and the gRPC method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            EtcdOp::Range => "Range",
            EtcdOp::Put => "Put",
            EtcdOp::DeleteRange => "DeleteRange",
            EtcdOp::Txn => "Txn",
            EtcdOp::Compact => "Compact",
            EtcdOp::Watch => "Watch",
            EtcdOp::LeaseGrant => "LeaseGrant",
            EtcdOp::LeaseRevoke => "LeaseRevoke",
            EtcdOp::LeaseKeepAlive => "LeaseKeepAlive",
        }
    }
}

/// Any etcd v3 gRPC service (KV, Watch, Lease, Cluster, Maintenance, Auth).
pub fn is_etcd_service(service: &str) -> bool {
    service.starts_with("etcdserverpb.")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchKind {
    Create,
    Cancel,
    Progress,
}

impl WatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchKind::Create => "create",
            WatchKind::Cancel => "cancel",
            WatchKind::Progress => "progress",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnSummary {
    pub compares: u32,
    pub success_ops: u32,
    pub failure_ops: u32,
}

/// Summary of a request. Numeric options are `None` when unset (zero) or not captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdRequest {
    pub op: EtcdOp,
    /// The key; for Txn the first compare's key, for Watch the created watcher's key.
    pub key: Option<Vec<u8>>,
    pub range_end: Option<Vec<u8>>,
    pub limit: Option<i64>,
    /// Range revision, Compact revision, Watch start revision.
    pub revision: Option<i64>,
    pub keys_only: bool,
    pub count_only: bool,
    pub serializable: bool,
    pub prev_kv: bool,
    pub lease_id: Option<i64>,
    pub ttl: Option<i64>,
    pub watch_id: Option<i64>,
    pub watch_kind: Option<WatchKind>,
    /// Txn shape; `None` if the message was truncated.
    pub txn: Option<TxnSummary>,
    /// Decoded from a message cut by the capture.
    pub truncated: bool,
}

impl EtcdRequest {
    fn new(op: EtcdOp, truncated: bool) -> Self {
        EtcdRequest {
            op,
            key: None,
            range_end: None,
            limit: None,
            revision: None,
            keys_only: false,
            count_only: false,
            serializable: false,
            prev_kv: false,
            lease_id: None,
            ttl: None,
            watch_id: None,
            watch_kind: None,
            txn: None,
            truncated,
        }
    }
}

/// Summary of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdResponse {
    pub op: EtcdOp,
    /// `header.revision`.
    pub revision: Option<i64>,
    pub count: Option<i64>,
    /// Number of kvs returned (only when the message is complete).
    pub kvs: Option<u32>,
    pub more: Option<bool>,
    pub deleted: Option<i64>,
    pub succeeded: Option<bool>,
    pub responses: Option<u32>,
    pub lease_id: Option<i64>,
    pub ttl: Option<i64>,
    pub error: Option<String>,
    pub watch_id: Option<i64>,
    pub created: Option<bool>,
    pub canceled: Option<bool>,
    pub compact_revision: Option<i64>,
    pub cancel_reason: Option<String>,
    pub events: Option<u32>,
    pub truncated: bool,
}

impl EtcdResponse {
    fn new(op: EtcdOp, truncated: bool) -> Self {
        EtcdResponse {
            op,
            revision: None,
            count: None,
            kvs: None,
            more: None,
            deleted: None,
            succeeded: None,
            responses: None,
            lease_id: None,
            ttl: None,
            error: None,
            watch_id: None,
            created: None,
            canceled: None,
            compact_revision: None,
            cancel_reason: None,
            events: None,
            truncated,
        }
    }
}

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
    let full = prefix.len() as u64 >= u64::from(declared_len);
    let msg = if full { &prefix[..declared_len as usize] } else { prefix };
    decode_request_inner(op, msg, !full)
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
    let full = prefix.len() as u64 >= u64::from(declared_len);
    let msg = if full { &prefix[..declared_len as usize] } else { prefix };
    decode_response_inner(op, msg, !full)
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

/// Render a key: valid UTF-8 kept, other bytes and control characters as `\xNN`, at most
/// [`KEY_MAX`] bytes (cut at a character/escape boundary).
pub fn printable_key(key: &[u8]) -> String {
    // Printable ASCII, as Kubernetes' keys are, is copied as is (the general path showed in
    // profiles).
    if key.iter().all(|b| (0x20..0x7f).contains(b)) {
        let kept = &key[..key.len().min(KEY_MAX)];
        return std::str::from_utf8(kept).map(crate::span::text_of).unwrap_or_default();
    }
    let mut out = crate::span::new_text(key.len().min(KEY_MAX));
    let push = |out: &mut String, piece: &str| -> bool {
        if out.len() + piece.len() > KEY_MAX {
            return false;
        }
        out.push_str(piece);
        true
    };
    for chunk in key.utf8_chunks() {
        for c in chunk.valid().chars() {
            let ok = if c.is_control() && (c as u32) < 0x100 {
                push(&mut out, &format!("\\x{:02x}", c as u32))
            } else {
                let mut buf = [0u8; 4];
                push(&mut out, c.encode_utf8(&mut buf))
            };
            if !ok {
                return out;
            }
        }
        for b in chunk.invalid() {
            if !push(&mut out, &format!("\\x{b:02x}")) {
                return out;
            }
        }
    }
    out
}

/// The range end that selects every key with prefix `key` (etcd clientv3 `GetPrefixRangeEnd`):
/// the key with its last byte below 0xff incremented and the rest dropped; `\0` if none.
pub fn prefix_range_end(key: &[u8]) -> Vec<u8> {
    for i in (0..key.len()).rev() {
        if key[i] < 0xff {
            let mut end = key[..=i].to_vec();
            end[i] += 1;
            return end;
        }
    }
    vec![0]
}

/// `range_end` selects exactly the keys prefixed by `key`.
pub fn is_prefix_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && range_end != [0] && prefix_range_end(key) == range_end
}

/// Span attributes of an etcd call, as a vector of their own.
#[cfg(test)]
pub fn attributes(
    op: EtcdOp,
    req: Option<&EtcdRequest>,
    resp: Option<&EtcdResponse>,
) -> Vec<(&'static str, AttrValue)> {
    let mut a = Vec::new();
    push_attributes(op, req, resp, &mut a);
    a
}

/// Appends the span attributes of an etcd call to the span's `out`. Either side may be missing.
/// Never contains values.
pub fn push_attributes(
    op: EtcdOp,
    req: Option<&EtcdRequest>,
    resp: Option<&EtcdResponse>,
    a: &mut Vec<(&'static str, AttrValue)>,
) {
    // The first of each name is kept; only this call's names are compared.
    fn put(a: &mut Vec<(&'static str, AttrValue)>, start: usize, k: &'static str, v: impl Into<AttrValue>) {
        if !a[start..].iter().any(|(n, _)| *n == k) {
            a.push((k, v.into()));
        }
    }
    let start = a.len();
    put(a, start, "db.system.name", "etcd");
    put(a, start, "db.operation.name", op.as_str());
    if let Some(r) = req {
        if let Some(k) = &r.key {
            put(a, start, "etcd.key", printable_key(k));
        }
        if let Some(e) = &r.range_end {
            put(a, start, "etcd.range_end", printable_key(e));
            if let Some(k) = &r.key
                && is_prefix_range(k, e)
            {
                put(a, start, "etcd.prefix", true);
            }
        }
        if let Some(v) = r.limit {
            put(a, start, "etcd.limit", v);
        }
        if let Some(v) = r.revision {
            put(a, start, "etcd.revision", v);
        }
        if r.keys_only {
            put(a, start, "etcd.keys_only", true);
        }
        if r.count_only {
            put(a, start, "etcd.count_only", true);
        }
        if r.serializable {
            put(a, start, "etcd.serializable", true);
        }
        if r.prev_kv {
            put(a, start, "etcd.prev_kv", true);
        }
        if let Some(v) = r.lease_id {
            put(a, start, "etcd.lease.id", v);
        }
        if let Some(v) = r.ttl {
            put(a, start, "etcd.lease.ttl", v);
        }
        if let Some(v) = r.watch_id {
            put(a, start, "etcd.watch.id", v);
        }
        if let Some(k) = r.watch_kind {
            put(a, start, "etcd.watch.kind", k.as_str());
        }
        if let Some(t) = r.txn {
            put(a, start, "etcd.txn.compares", i64::from(t.compares));
            put(a, start, "etcd.txn.success_ops", i64::from(t.success_ops));
            put(a, start, "etcd.txn.failure_ops", i64::from(t.failure_ops));
        }
        if r.truncated {
            put(a, start, "etcd.request.truncated", true);
        }
    }
    if let Some(r) = resp {
        if let Some(v) = r.revision {
            put(a, start, "etcd.response.revision", v);
        }
        if let Some(v) = r.count {
            put(a, start, "etcd.response.count", v);
        }
        if let Some(v) = r.kvs {
            put(a, start, "etcd.response.kvs", i64::from(v));
        }
        if let Some(v) = r.more {
            put(a, start, "etcd.response.more", v);
        }
        if let Some(v) = r.deleted {
            put(a, start, "etcd.response.deleted", v);
        }
        if let Some(v) = r.succeeded {
            put(a, start, "etcd.txn.succeeded", v);
        }
        if let Some(v) = r.responses {
            put(a, start, "etcd.txn.responses", i64::from(v));
        }
        if let Some(v) = r.lease_id {
            put(a, start, "etcd.lease.id", v);
        }
        if let Some(v) = r.ttl {
            put(a, start, "etcd.response.ttl", v);
        }
        if let Some(v) = &r.error {
            put(a, start, "etcd.response.error", v.clone());
        }
        if let Some(v) = r.watch_id {
            put(a, start, "etcd.watch.id", v);
        }
        if let Some(v) = r.created {
            put(a, start, "etcd.watch.created", v);
        }
        if let Some(v) = r.canceled {
            put(a, start, "etcd.watch.canceled", v);
        }
        if let Some(v) = r.compact_revision {
            put(a, start, "etcd.watch.compact_revision", v);
        }
        if let Some(v) = &r.cancel_reason {
            put(a, start, "etcd.watch.cancel_reason", v.clone());
        }
        if let Some(v) = r.events {
            put(a, start, "etcd.watch.events", i64::from(v));
        }
        if r.truncated {
            put(a, start, "etcd.response.truncated", true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pb::full;
    use super::*;

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
        assert!(is_etcd_service("etcdserverpb.Maintenance"));
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
        let r =
            decode_request("Compact", KV, &pb::CompactionRequest { revision: 1000, physical: true }.encode_to_vec())
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

        let g = decode_request(
            "LeaseGrant",
            "etcdserverpb.Lease",
            &pb::LeaseGrantRequest { ttl: 60, id: 0 }.encode_to_vec(),
        )
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
        assert_eq!(
            (r.key.as_deref(), r.lease_id, r.truncated),
            (Some(&b"/registry/configmaps/ns/big"[..]), None, true)
        );
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
        let mut st: u64 = 7;
        let mut next = move || {
            st = st.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (st >> 33) as u32
        };
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
                request_put: Some(full::PutRequest {
                    key: b"/x".to_vec(),
                    value: b"y".to_vec(),
                    lease: 3,
                    prev_kv: true,
                }),
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
        use crate::protocols::http2::{H2Connection, H2Event, PREFACE, Role, build, flags, frame_type, settings_id};
        use crate::stream::Segment;

        let req =
            pb::RangeRequest { key: b"/registry/leases/kube-system/kube-scheduler".to_vec(), ..Default::default() };
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
        server.extend(build::headers(
            1,
            &senc.encode(&[(":status", "200"), ("content-type", "application/grpc")]),
            false,
        ));
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
}
