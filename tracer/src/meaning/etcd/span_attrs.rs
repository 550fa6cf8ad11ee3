//! The span attributes of an etcd call.

use super::keys::{is_prefix_range, printable_key};
use super::summary::{EtcdOp, EtcdRequest, EtcdResponse};
use crate::span::AttrValue;

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
