//! etcd v3 gRPC calls: request/response summaries and span attributes.
//!
//! Messages are decoded with prost into the reduced types of the `proto` module, which never
//! declare value fields, so values are skipped, not copied. Nothing here exports a value: keys,
//! ranges, revisions, counts, lease and watch ids only. Corrupt input yields `None`, never a panic.
//!
//! Messages cut by the capture limit can still be summarised with [`decode_request_prefix`] /
//! [`decode_response_prefix`]: only the top-level fields that are complete in the captured bytes
//! are used, and fields whose absence would mean something (counts, `succeeded`) are only reported
//! when they were actually seen.

use prost::Message;

use crate::protocols::{grpc::GrpcMessage, truncate_str};

mod proto;
mod span_attrs;

use proto as pb;
#[cfg(test)]
pub use span_attrs::attributes;
pub use span_attrs::push_attributes;

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

#[cfg(test)]
mod tests;
