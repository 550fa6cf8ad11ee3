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

mod decode;
mod keys;
mod proto;
mod span_attrs;
mod summary;

pub use decode::{
    decode_request, decode_request_message, decode_request_prefix, decode_response, decode_response_message,
    decode_response_prefix,
};
pub use keys::KEY_MAX;
#[cfg(test)]
pub use keys::printable_key;
#[cfg(test)]
use keys::{is_prefix_range, prefix_range_end};
#[cfg(test)]
pub use span_attrs::attributes;
pub use span_attrs::push_attributes;
pub use summary::{EtcdOp, EtcdRequest, EtcdResponse};
#[cfg(test)]
use summary::{TxnSummary, WatchKind};

#[cfg(test)]
mod tests;
