//! HTTP/2 framing (RFC 9113) for one direction of one connection, as a passive observer.
//!
//! [`H2Decoder`] consumes [`Segment`]s of one direction and emits [`H2Event`]s: decoded header
//! blocks (allow-listed fields only, see [`super::hpack`]), DATA frame summaries with a bounded
//! prefix of their payload, RST_STREAM, GOAWAY and SETTINGS.
//!
//! Robustness rules:
//! * Frames may be split across segments at any byte, many frames may share a segment, and a
//!   frame's payload may be partly uncaptured: payload bytes are skipped by count.
//! * A frame *header* that is not captured, or that is invalid, desynchronises the direction
//!   ([`H2Event::Desync`]). The decoder then only resynchronises at the start of a later segment
//!   whose first 9 bytes form a plausible frame header and whose next frame header, if captured,
//!   is plausible too ([`H2Event::Resync`]). Every header block lost on the way resets the HPACK
//!   table to unknown, so no field is ever decoded against a wrong table.
//! * The decoder may start mid-connection ([`H2Decoder::new`]): it syncs like after a desync, and
//!   learns the HPACK table as it goes. A client direction starting with the connection preface is
//!   recognised as a connection start.

use super::Timing;
use super::hpack::{FieldValue, Lookup, Unresolved, lookup};
use crate::stream::{Role, Segment};

/// The client connection preface.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const FRAME_HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE default.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// Largest header block reassembled; larger blocks are counted as lost.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// At most this many payload bytes of a DATA frame are kept in [`H2Event::Data`]: a gRPC
/// message prefix plus 4 KiB.
pub const DATA_CAPTURE_LIMIT: usize = 4096 + 5;

/// Frame types.
pub mod frame_type {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flags {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS identifiers used here.
pub mod settings_id {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
}

use frame_type as ft;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub length: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream_id: u32,
    /// The reserved bit before the stream id.
    pub reserved: bool,
}

impl FrameHeader {
    pub fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Self {
        let sid = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        FrameHeader {
            length: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream_id: sid & 0x7fff_ffff,
            reserved: sid & 0x8000_0000 != 0,
        }
    }

    pub fn to_bytes(&self) -> [u8; FRAME_HEADER_LEN] {
        let l = self.length.to_be_bytes();
        let s = (self.stream_id | if self.reserved { 0x8000_0000 } else { 0 }).to_be_bytes();
        [l[1], l[2], l[3], self.kind, self.flags, s[0], s[1], s[2], s[3]]
    }

    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    /// Structural validity (RFC 9113 section 6): stream-id and length rules per type, reserved
    /// bit clear. Unknown frame types are valid (they are skipped).
    pub fn check(&self) -> Result<(), &'static str> {
        if self.reserved {
            return Err("reserved bit set");
        }
        let pad = u32::from(self.has(flags::PADDED));
        let (needs_stream, min_len) = match self.kind {
            ft::DATA => (Some(true), pad),
            ft::HEADERS => (Some(true), pad + if self.has(flags::PRIORITY) { 5 } else { 0 }),
            ft::PRIORITY => (Some(true), 5),
            ft::RST_STREAM => (Some(true), 4),
            ft::SETTINGS => (Some(false), 0),
            ft::PUSH_PROMISE => (Some(true), pad + 4),
            ft::PING => (Some(false), 8),
            ft::GOAWAY => (Some(false), 8),
            ft::WINDOW_UPDATE => (None, 4),
            ft::CONTINUATION => (Some(true), 0),
            _ => (None, 0),
        };
        match needs_stream {
            Some(true) if self.stream_id == 0 => return Err("frame type requires a stream"),
            Some(false) if self.stream_id != 0 => return Err("connection frame on a stream"),
            _ => {}
        }
        if self.length < min_len {
            return Err("frame too short");
        }
        let exact = match self.kind {
            ft::PRIORITY => Some(5),
            ft::RST_STREAM | ft::WINDOW_UPDATE => Some(4),
            ft::PING => Some(8),
            ft::SETTINGS if self.has(flags::ACK) => Some(0),
            _ => None,
        };
        if exact.is_some_and(|e| e != self.length) {
            return Err("bad frame length");
        }
        if self.kind == ft::SETTINGS && !self.length.is_multiple_of(6) {
            return Err("bad SETTINGS length");
        }
        Ok(())
    }
}

/// Flags defined for a frame type (used to judge plausibility when resynchronising).
fn defined_flags(kind: u8) -> u8 {
    match kind {
        ft::DATA => flags::END_STREAM | flags::PADDED,
        ft::HEADERS => flags::END_STREAM | flags::END_HEADERS | flags::PADDED | flags::PRIORITY,
        ft::SETTINGS | ft::PING => flags::ACK,
        ft::PUSH_PROMISE => flags::END_HEADERS | flags::PADDED,
        ft::CONTINUATION => flags::END_HEADERS,
        _ => 0,
    }
}

/// What one direction produced.
#[derive(Clone, Debug, PartialEq)]
pub enum H2Event {
    /// A complete header block (HEADERS + CONTINUATIONs), request/response headers or trailers.
    Headers {
        stream_id: u32,
        end_stream: bool,
        /// Allow-listed fields only ([`super::hpack::ALLOWED_NAMES`]).
        fields: Vec<(&'static str, FieldValue)>,
        /// Fields whose names could not be resolved (mid-connection attach).
        unresolved: Unresolved,
        timing: Timing,
    },
    /// A header block that could not be decoded (bytes not captured, too large, or corrupt).
    HeadersUnknown {
        stream_id: u32,
        end_stream: bool,
        reason: &'static str,
        timing: Timing,
    },
    /// One DATA frame.
    Data {
        stream_id: u32,
        /// Payload length without padding; `None` if the pad length byte was not captured.
        len: Option<u32>,
        end_stream: bool,
        /// The captured start of the payload (no padding), at most [`DATA_CAPTURE_LIMIT`] bytes;
        /// shorter than `len` if the rest was beyond the limit or not captured.
        data: Vec<u8>,
        timing: Timing,
    },
    RstStream {
        stream_id: u32,
        error_code: Option<u32>,
        timing: Timing,
    },
    GoAway {
        last_stream_id: u32,
        error_code: u32,
        timing: Timing,
    },
    /// SETTINGS sent by this direction; they govern the *other* direction (pass them to its
    /// decoder with [`H2Decoder::apply_peer_settings`]; [`H2Connection`] does it).
    Settings {
        ack: bool,
        header_table_size: Option<u32>,
        max_frame_size: Option<u32>,
        timing: Timing,
    },
    /// The direction lost frame sync; in-flight streams of this direction lost data.
    Desync {
        reason: &'static str,
        at_ns: u64,
    },
    /// Frame sync regained at the start of a segment.
    Resync {
        at_ns: u64,
    },
}

impl H2Event {
    pub fn stream_id(&self) -> Option<u32> {
        match self {
            H2Event::Headers { stream_id, .. }
            | H2Event::HeadersUnknown { stream_id, .. }
            | H2Event::Data { stream_id, .. }
            | H2Event::RstStream { stream_id, .. } => Some(*stream_id),
            _ => None,
        }
    }

    /// For a [`H2Event::Headers`]: look a field up, never guessing (see [`Lookup`]).
    pub fn header(&self, name: &str) -> Option<Lookup<'_>> {
        match self {
            H2Event::Headers { fields, unresolved, .. } => Some(lookup(fields, *unresolved, name)),
            _ => None,
        }
    }
}

/// What a decoder appends its events to.
type Out = Vec<H2Event>;

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Stats {
    pub frames: u64,
    pub desyncs: u64,
    pub resyncs: u64,
    /// Bytes not decoded because the direction was out of sync.
    pub bytes_unsynced: u64,
    /// Payload bytes skipped because they were not captured.
    pub bytes_uncaptured: u64,
    pub headers_unknown: u64,
}

/// Both directions of one connection, with SETTINGS routed to the other direction.
#[derive(Debug)]
pub struct H2Connection {
    pub client: H2Decoder,
    pub server: H2Decoder,
}

impl Default for H2Connection {
    fn default() -> Self {
        Self::new()
    }
}

impl H2Connection {
    /// Attached at an unknown point of the connection.
    pub fn new() -> Self {
        H2Connection { client: H2Decoder::new(Role::Client), server: H2Decoder::new(Role::Server) }
    }

    /// Observed from the connection's first byte.
    pub fn new_fresh() -> Self {
        H2Connection { client: H2Decoder::new_fresh(Role::Client), server: H2Decoder::new_fresh(Role::Server) }
    }

    /// Feed a segment sent by `from`.
    pub fn feed(&mut self, from: Role, seg: &Segment, out: &mut Out) {
        let first = out.len();
        let (me, other) = match from {
            Role::Client => (&mut self.client, &mut self.server),
            Role::Server => (&mut self.server, &mut self.client),
        };
        me.feed(seg, out);
        if from == Role::Client && me.saw_preface() {
            // The client's first bytes were seen: the server's will be too.
            other.assume_connection_start();
        }
        for ev in &out[first..] {
            if let H2Event::Settings { ack: false, header_table_size, max_frame_size, .. } = ev {
                other.apply_peer_settings(*header_table_size, *max_frame_size);
            }
        }
    }
}

mod decoder;
pub use decoder::H2Decoder;

/// Build frames; used by tests and fuzz targets.
pub mod build;

#[cfg(test)]
mod tests;
