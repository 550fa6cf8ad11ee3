//! The byte-stream abstraction every protocol decoder consumes.
//!
//! A connection has two directions; each is a sequence of [`Segment`]s in kernel order. A segment is
//! the captured prefix of what one syscall (or one chunk of it, or one Go TLS call) moved, plus how
//! many bytes followed that were moved but not captured. Decoders never care where the bytes came
//! from; they must skip uncaptured bytes by length and resynchronise rather than guess.

/// Direction of bytes as seen by the traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Bytes the target read (received).
    Ingress,
    /// Bytes the target wrote (sent).
    Egress,
}

/// A side of a connection: which end the target is (it accepted or it connected), or which end sent
/// the bytes of a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The connecting side: for HTTP/2 it sends the preface and requests and opens odd streams.
    Client,
    /// The accepting side: it sends the responses.
    Server,
}

/// One piece of a direction's byte stream.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// Captured bytes, in stream order.
    pub data: &'a [u8],
    /// Bytes that came right after `data` in the stream but were not captured.
    pub uncaptured_after: u64,
    /// Kernel time (CLOCK_MONOTONIC ns) at syscall entry.
    pub enter_ns: u64,
    /// Kernel time at syscall exit.
    pub exit_ns: u64,
    /// The goroutine (its `g`) that moved the bytes, for Go TLS plaintext; 0 when unknown.
    pub goroutine: u64,
}

impl<'a> Segment<'a> {
    /// A fully captured segment; handy in tests.
    pub fn captured(data: &'a [u8], ts: u64) -> Self {
        Segment { data, uncaptured_after: 0, enter_ns: ts, exit_ns: ts, goroutine: 0 }
    }

    /// Total stream bytes this segment stands for.
    pub fn stream_len(&self) -> u64 {
        self.data.len() as u64 + self.uncaptured_after
    }
}
