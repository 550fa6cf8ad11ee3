//! Wire framing: HTTP/1.x, HTTP/2 with HPACK, and gRPC message framing. Each decoder consumes
//! `stream::Segment`s and knows nothing of the kernel, nor of what the messages mean (that is
//! `meaning`: Kubernetes request info, etcd keys and messages).

pub mod grpc;
pub mod hpack;
pub mod http1;
pub mod http2;
#[cfg(test)]
pub(crate) mod test_rng;

use crate::stream::Segment;

/// Kernel timestamps of the syscalls that carried some bytes (a frame, a header block, or a
/// single byte).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    /// `enter_ns` of the segment that held the first byte.
    pub enter_ns: u64,
    /// `exit_ns` of the segment that held the last byte.
    pub exit_ns: u64,
    /// The goroutine of the segment that held the first byte (0 when unknown): the one that
    /// wrote a request, for a client.
    pub goroutine: u64,
}

impl Timing {
    /// The timestamps of bytes that one segment carried.
    pub fn of(seg: &Segment<'_>) -> Self {
        Timing { enter_ns: seg.enter_ns, exit_ns: seg.exit_ns, goroutine: seg.goroutine }
    }
}

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
