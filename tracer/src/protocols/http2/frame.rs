//! The wire vocabulary: the preface, frame types, flags, settings and the 9-byte frame header.

/// The client connection preface.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const FRAME_HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE default.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

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

pub(super) use frame_type as ft;

/// A parsed 9-byte frame header.
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

    pub fn to_bytes(self) -> [u8; FRAME_HEADER_LEN] {
        let l = self.length.to_be_bytes();
        let s = (self.stream_id | if self.reserved { 0x8000_0000 } else { 0 }).to_be_bytes();
        [l[1], l[2], l[3], self.kind, self.flags, s[0], s[1], s[2], s[3]]
    }

    pub(super) fn has(&self, f: u8) -> bool {
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
pub(super) fn defined_flags(kind: u8) -> u8 {
    match kind {
        ft::DATA => flags::END_STREAM | flags::PADDED,
        ft::HEADERS => flags::END_STREAM | flags::END_HEADERS | flags::PADDED | flags::PRIORITY,
        ft::SETTINGS | ft::PING => flags::ACK,
        ft::PUSH_PROMISE => flags::END_HEADERS | flags::PADDED,
        ft::CONTINUATION => flags::END_HEADERS,
        _ => 0,
    }
}
