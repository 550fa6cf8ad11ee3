//! Protocol decoders. Each consumes `stream::Segment`s and knows nothing of the kernel.

pub mod etcd;
pub mod etcd_proto;
pub mod grpc;
pub mod hpack;
pub mod http1;
pub mod http2;
pub mod k8s;

/// The longest prefix of `s` of at most `max` bytes that ends at a character boundary.
pub fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
