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

use crate::stream::Segment;

use super::hpack::{FieldValue, HpackDecoder, HpackStats, Lookup, Unresolved, lookup};

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

/// Who sends the bytes of a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The client side: sends the preface and requests; opens odd streams.
    Client,
    /// The server side: sends responses.
    Server,
}

/// Kernel timestamps of the syscalls that carried a frame (or header block).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    /// `enter_ns` of the segment that held the first byte.
    pub start_ns: u64,
    /// `exit_ns` of the segment that held the last byte.
    pub end_ns: u64,
}

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Nothing seen yet.
    Start,
    /// Matching the client preface; `usize` bytes matched.
    Preface(usize),
    /// In frame sync.
    Frames,
    /// Waiting for a plausible segment start.
    Desynced,
}

/// The payload of the frame being read.
#[derive(Debug)]
struct Frame {
    hdr: FrameHeader,
    /// Payload bytes consumed so far (captured or not).
    off: u32,
    start_ns: u64,
    /// Bytes before the content: pad length byte, priority fields, promised stream id.
    prefix: u32,
    /// Pad length, once read.
    pad: Option<u8>,
    /// The pad length byte was not captured.
    pad_lost: bool,
    /// First bytes of small fixed-size payloads (RST_STREAM, GOAWAY, ...).
    small: [u8; 8],
    small_have: u8,
    small_lost: bool,
    /// DATA: captured prefix of the content.
    data: Vec<u8>,
    data_contiguous: bool,
    /// SETTINGS: current entry and what was learned.
    entry: [u8; 6],
    entry_ok: bool,
    header_table_size: Option<u32>,
    max_frame_size: Option<u32>,
}

impl Frame {
    fn new(hdr: FrameHeader, start_ns: u64) -> Self {
        let pad = u32::from(matches!(hdr.kind, ft::DATA | ft::HEADERS | ft::PUSH_PROMISE) && hdr.has(flags::PADDED));
        let extra = match hdr.kind {
            ft::HEADERS if hdr.has(flags::PRIORITY) => 5,
            ft::PUSH_PROMISE => 4,
            _ => 0,
        };
        Frame {
            hdr,
            off: 0,
            start_ns,
            prefix: pad + extra,
            pad: None,
            pad_lost: false,
            small: [0; 8],
            small_have: 0,
            small_lost: false,
            data: Vec::new(),
            data_contiguous: true,
            entry: [0; 6],
            entry_ok: true,
            header_table_size: None,
            max_frame_size: None,
        }
    }

    fn padded(&self) -> bool {
        self.prefix > 0 && self.hdr.has(flags::PADDED) && self.hdr.kind != ft::CONTINUATION
    }

    fn remaining(&self) -> u32 {
        self.hdr.length - self.off
    }

    /// End of the content (start of padding), if known.
    fn content_end(&self) -> Option<u32> {
        if !self.padded() {
            return Some(self.hdr.length);
        }
        self.pad.map(|p| self.hdr.length - u32::from(p))
    }
}

/// A header block being reassembled.
#[derive(Debug)]
struct Block {
    stream_id: u32,
    end_stream: bool,
    push: bool,
    /// The encoded block: it may hold Authorization or Cookie values, so it is zeroed before it
    /// is freed.
    buf: Vec<u8>,
    lost: Option<&'static str>,
    start_ns: u64,
    /// The last frame of the block carried END_HEADERS.
    done: bool,
}

impl Block {
    /// Gives up on the block's bytes.
    fn lose(&mut self, reason: &'static str) {
        self.lost = Some(reason);
        wipe(&mut self.buf);
        self.buf = Vec::new();
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        wipe(&mut self.buf);
    }
}

fn wipe(buf: &mut [u8]) {
    if !buf.is_empty() {
        buf.fill(0);
        std::hint::black_box(buf);
    }
}

/// Decoder for one direction of an HTTP/2 connection.
#[derive(Debug)]
pub struct H2Decoder {
    role: Role,
    mode: Mode,
    hdr: [u8; FRAME_HEADER_LEN],
    hdr_have: usize,
    hdr_start_ns: u64,
    frame: Option<Frame>,
    block: Option<Block>,
    hpack: HpackDecoder,
    /// SETTINGS_MAX_FRAME_SIZE announced by the peer (bounds this direction's frames).
    peer_max_frame_size: Option<u32>,
    largest_frame: u32,
    fed_bytes: u64,
    saw_preface: bool,
    data_capture_limit: usize,
    stats: H2Stats,
}

type Out = Vec<H2Event>;

impl H2Decoder {
    /// A decoder that may be attached mid-connection.
    pub fn new(role: Role) -> Self {
        H2Decoder {
            role,
            mode: Mode::Start,
            hdr: [0; FRAME_HEADER_LEN],
            hdr_have: 0,
            hdr_start_ns: 0,
            frame: None,
            block: None,
            hpack: HpackDecoder::new_unknown(),
            peer_max_frame_size: None,
            largest_frame: 0,
            fed_bytes: 0,
            saw_preface: false,
            data_capture_limit: DATA_CAPTURE_LIMIT,
            stats: H2Stats::default(),
        }
    }

    /// A decoder for a direction observed from its very first byte (the connection was seen being
    /// opened): a client direction must start with the preface, a server direction with a frame,
    /// and the HPACK table starts empty and known.
    pub fn new_fresh(role: Role) -> Self {
        let mut d = Self::new(role);
        d.assume_connection_start();
        d
    }

    /// Declare that the next byte fed is the first byte of the direction. No effect once bytes
    /// were fed.
    pub fn assume_connection_start(&mut self) {
        if self.fed_bytes == 0 && self.mode == Mode::Start {
            self.hpack = HpackDecoder::new_fresh();
            self.mode = match self.role {
                Role::Client => Mode::Preface(0),
                Role::Server => Mode::Frames,
            };
        }
    }

    /// How many payload bytes of each DATA frame to keep in [`H2Event::Data`] (default
    /// [`DATA_CAPTURE_LIMIT`]; 0 when only lengths matter, e.g. plain HTTP/2 API traffic).
    pub fn set_data_capture_limit(&mut self, limit: usize) {
        self.data_capture_limit = limit.min(DATA_CAPTURE_LIMIT);
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// True once the client preface was seen at the start of this direction.
    pub fn saw_preface(&self) -> bool {
        self.saw_preface
    }

    pub fn is_synced(&self) -> bool {
        matches!(self.mode, Mode::Frames | Mode::Preface(_))
    }

    /// Total bytes fed (captured and uncaptured).
    pub fn fed_bytes(&self) -> u64 {
        self.fed_bytes
    }

    pub fn stats(&self) -> H2Stats {
        self.stats
    }

    pub fn hpack_stats(&self) -> HpackStats {
        self.hpack.stats()
    }

    pub fn hpack(&self) -> &HpackDecoder {
        &self.hpack
    }

    /// Apply SETTINGS sent by the other direction: its SETTINGS_HEADER_TABLE_SIZE bounds this
    /// direction's HPACK encoder and its SETTINGS_MAX_FRAME_SIZE this direction's frames.
    pub fn apply_peer_settings(&mut self, header_table_size: Option<u32>, max_frame_size: Option<u32>) {
        if let Some(t) = header_table_size {
            self.hpack.set_settings_table_size(t);
        }
        if let Some(m) = max_frame_size {
            self.peer_max_frame_size = Some(m.clamp(DEFAULT_MAX_FRAME_SIZE, (1 << 24) - 1));
        }
    }

    /// Largest frame length accepted when resynchronising.
    fn resync_len_limit(&self) -> u32 {
        self.peer_max_frame_size.unwrap_or(DEFAULT_MAX_FRAME_SIZE).max(self.largest_frame)
    }

    /// Plausibility of a frame header at a resynchronisation point. `prev` is the previous frame
    /// of the candidate sequence, if any.
    fn plausible(&self, h: &FrameHeader, prev: Option<&FrameHeader>) -> bool {
        if h.check().is_err()
            || h.kind > ft::CONTINUATION
            || h.flags & !defined_flags(h.kind) != 0
            || h.length > self.resync_len_limit()
        {
            return false;
        }
        if let Some(p) = prev
            && matches!(p.kind, ft::HEADERS | ft::PUSH_PROMISE | ft::CONTINUATION)
            && !p.has(flags::END_HEADERS)
        {
            return h.kind == ft::CONTINUATION && h.stream_id == p.stream_id;
        }
        match h.kind {
            ft::CONTINUATION => false,
            ft::HEADERS | ft::DATA => h.stream_id % 2 == 1,
            ft::PUSH_PROMISE => self.role == Role::Server,
            _ => true,
        }
    }

    /// Is the start of `data` a plausible place to (re)gain frame sync?
    fn plausible_start(&self, data: &[u8]) -> bool {
        let Some(first) = data.first_chunk::<FRAME_HEADER_LEN>() else {
            return false;
        };
        let h = FrameHeader::parse(first);
        if !self.plausible(&h, None) {
            return false;
        }
        let next = FRAME_HEADER_LEN + h.length as usize;
        match data.get(next..).and_then(|d| d.first_chunk::<FRAME_HEADER_LEN>()) {
            Some(nb) => self.plausible(&FrameHeader::parse(nb), Some(&h)),
            None => true,
        }
    }

    fn count_unsynced(&mut self, captured: u64, uncaptured: u64) {
        self.stats.bytes_unsynced = self.stats.bytes_unsynced.saturating_add(captured).saturating_add(uncaptured);
    }

    fn desync(&mut self, reason: &'static str, at_ns: u64, out: &mut Out) {
        self.mode = Mode::Desynced;
        self.frame = None;
        self.block = None;
        self.hdr_have = 0;
        self.hpack.reset_unknown();
        self.stats.desyncs += 1;
        out.push(H2Event::Desync { reason, at_ns });
    }

    /// Feed the next segment of this direction.
    pub fn feed(&mut self, seg: &Segment, out: &mut Out) {
        self.fed_bytes = self.fed_bytes.saturating_add(seg.stream_len());
        let data = seg.data;
        if self.mode == Mode::Start {
            if data.is_empty() {
                if seg.uncaptured_after > 0 {
                    self.mode = Mode::Desynced;
                    self.stats.bytes_unsynced = self.stats.bytes_unsynced.saturating_add(seg.uncaptured_after);
                }
                return;
            }
            let n = data.len().min(PREFACE.len());
            if self.role == Role::Client && data[..n] == PREFACE[..n] {
                // The direction's first bytes: a new connection, whose HPACK table is empty.
                self.hpack = HpackDecoder::new_fresh();
                self.mode = Mode::Preface(0);
            } else if self.plausible_start(data) {
                self.mode = Mode::Frames;
            } else {
                self.mode = Mode::Desynced;
                self.stats.bytes_unsynced = self.stats.bytes_unsynced.saturating_add(seg.stream_len());
                return;
            }
        } else if self.mode == Mode::Desynced {
            if self.plausible_start(data) {
                self.mode = Mode::Frames;
                self.stats.resyncs += 1;
                out.push(H2Event::Resync { at_ns: seg.enter_ns });
            } else {
                self.stats.bytes_unsynced = self.stats.bytes_unsynced.saturating_add(seg.stream_len());
                return;
            }
        }

        let mut pos = 0usize;
        while pos < data.len() {
            match self.mode {
                Mode::Preface(matched) => {
                    let n = (PREFACE.len() - matched).min(data.len() - pos);
                    if data[pos..pos + n] != PREFACE[matched..matched + n] {
                        self.desync("bad connection preface", seg.enter_ns, out);
                        self.count_unsynced((data.len() - pos) as u64, seg.uncaptured_after);
                        return;
                    }
                    pos += n;
                    if matched + n == PREFACE.len() {
                        self.mode = Mode::Frames;
                        self.saw_preface = true;
                    } else {
                        self.mode = Mode::Preface(matched + n);
                    }
                }
                Mode::Frames => {
                    if self.frame.is_some() {
                        let take = {
                            let f = self.frame.as_ref().map_or(0, Frame::remaining);
                            (f as usize).min(data.len() - pos)
                        };
                        let chunk = &data[pos..pos + take];
                        pos += take;
                        if let Err(reason) = self.payload(Some(chunk), take as u32) {
                            self.desync(reason, seg.enter_ns, out);
                            self.count_unsynced((data.len() - pos) as u64, seg.uncaptured_after);
                            return;
                        }
                        if self.frame.as_ref().is_some_and(|f| f.remaining() == 0) {
                            self.finish_frame(seg.exit_ns, out);
                        }
                    } else {
                        if self.hdr_have == 0 {
                            self.hdr_start_ns = seg.enter_ns;
                        }
                        let n = (FRAME_HEADER_LEN - self.hdr_have).min(data.len() - pos);
                        self.hdr[self.hdr_have..self.hdr_have + n].copy_from_slice(&data[pos..pos + n]);
                        self.hdr_have += n;
                        pos += n;
                        if self.hdr_have == FRAME_HEADER_LEN {
                            self.hdr_have = 0;
                            let h = FrameHeader::parse(&self.hdr);
                            if let Err(reason) = self.start_frame(h) {
                                self.desync(reason, seg.enter_ns, out);
                                self.count_unsynced((data.len() - pos) as u64, seg.uncaptured_after);
                                return;
                            }
                            if self.frame.as_ref().is_some_and(|f| f.remaining() == 0) {
                                self.finish_frame(seg.exit_ns, out);
                            }
                        }
                    }
                }
                Mode::Start | Mode::Desynced => return,
            }
        }
        self.skip_uncaptured(seg, out);
    }

    fn skip_uncaptured(&mut self, seg: &Segment, out: &mut Out) {
        let mut n = seg.uncaptured_after;
        while n > 0 {
            match self.mode {
                Mode::Frames if self.frame.is_some() => {
                    let rem = self.frame.as_ref().map_or(0, Frame::remaining);
                    let take = u64::from(rem).min(n) as u32;
                    n -= u64::from(take);
                    self.stats.bytes_uncaptured = self.stats.bytes_uncaptured.saturating_add(u64::from(take));
                    // Uncaptured bytes cannot be invalid.
                    let _ = self.payload(None, take);
                    if self.frame.as_ref().is_some_and(|f| f.remaining() == 0) {
                        self.finish_frame(seg.exit_ns, out);
                    }
                }
                Mode::Frames | Mode::Preface(_) => {
                    self.desync("frame header not captured", seg.enter_ns, out);
                    self.count_unsynced(0, n);
                    return;
                }
                Mode::Start | Mode::Desynced => return,
            }
        }
    }

    /// A complete frame header arrived.
    fn start_frame(&mut self, h: FrameHeader) -> Result<(), &'static str> {
        h.check()?;
        self.stats.frames += 1;
        let awaiting_continuation = self.block.as_ref().is_some_and(|b| !b.done);
        if awaiting_continuation {
            let sid = self.block.as_ref().map_or(0, |b| b.stream_id);
            if h.kind != ft::CONTINUATION || h.stream_id != sid {
                return Err("expected CONTINUATION");
            }
        } else if h.kind == ft::CONTINUATION {
            return Err("unexpected CONTINUATION");
        }
        match h.kind {
            ft::HEADERS if self.role == Role::Client && h.stream_id.is_multiple_of(2) => {
                return Err("client HEADERS on an even stream");
            }
            ft::PUSH_PROMISE if self.role == Role::Client => return Err("PUSH_PROMISE from a client"),
            _ => {}
        }
        if h.kind <= ft::CONTINUATION {
            self.largest_frame = self.largest_frame.max(h.length);
        }
        match h.kind {
            ft::HEADERS | ft::PUSH_PROMISE => {
                self.block = Some(Block {
                    stream_id: h.stream_id,
                    end_stream: h.kind == ft::HEADERS && h.has(flags::END_STREAM),
                    push: h.kind == ft::PUSH_PROMISE,
                    // Most blocks are one frame: one allocation of the right size.
                    buf: Vec::with_capacity((h.length as usize).min(MAX_HEADER_BLOCK)),
                    lost: None,
                    start_ns: self.hdr_start_ns,
                    done: false,
                });
            }
            _ => {}
        }
        self.frame = Some(Frame::new(h, self.hdr_start_ns));
        Ok(())
    }

    /// Payload bytes of the current frame: `chunk` is `Some` for captured bytes, `None` for `n`
    /// uncaptured ones.
    fn payload(&mut self, chunk: Option<&[u8]>, n: u32) -> Result<(), &'static str> {
        let capture_limit = self.data_capture_limit;
        let Some(f) = self.frame.as_mut() else { return Ok(()) };
        let start = f.off;
        let end = start + n;
        f.off = end;
        // Pad length byte.
        if f.padded() && start == 0 && n > 0 {
            match chunk {
                Some(c) => {
                    let p = c[0];
                    if u32::from(p) > f.hdr.length - f.prefix {
                        return Err("padding exceeds frame");
                    }
                    f.pad = Some(p);
                }
                None => f.pad_lost = true,
            }
        }
        let kind = f.hdr.kind;
        // Content range of this piece (absolute payload offsets).
        let cstart = f.prefix.max(start);
        let cend_known = f.content_end();
        let cend = cend_known.unwrap_or(f.hdr.length).min(end);
        match kind {
            ft::DATA if cstart < cend => match chunk {
                Some(c) if f.data_contiguous && cend_known.is_some() => {
                    let room = capture_limit.saturating_sub(f.data.len()) as u32;
                    let b = cend.min(cstart + room);
                    if cstart < b {
                        f.data.extend_from_slice(&c[(cstart - start) as usize..(b - start) as usize]);
                    }
                }
                _ => f.data_contiguous = false,
            },
            ft::HEADERS | ft::PUSH_PROMISE | ft::CONTINUATION => {
                let Some(b) = self.block.as_mut() else { return Ok(()) };
                if cend_known.is_none() {
                    b.lost.get_or_insert("padding length not captured");
                } else if cstart < cend && b.lost.is_none() {
                    match chunk {
                        Some(c) => {
                            if b.buf.len() + (cend - cstart) as usize > MAX_HEADER_BLOCK {
                                b.lose("header block too large");
                            } else {
                                b.buf.extend_from_slice(&c[(cstart - start) as usize..(cend - start) as usize]);
                            }
                        }
                        None => b.lose("header block not captured"),
                    }
                }
            }
            ft::SETTINGS => {
                for q in start..end {
                    let i = (q % 6) as usize;
                    if i == 0 {
                        f.entry_ok = true;
                    }
                    match chunk {
                        Some(c) => f.entry[i] = c[(q - start) as usize],
                        None => f.entry_ok = false,
                    }
                    if i == 5 && f.entry_ok {
                        let id = u16::from_be_bytes([f.entry[0], f.entry[1]]);
                        let v = u32::from_be_bytes([f.entry[2], f.entry[3], f.entry[4], f.entry[5]]);
                        match id {
                            settings_id::HEADER_TABLE_SIZE => f.header_table_size = Some(v),
                            settings_id::MAX_FRAME_SIZE => f.max_frame_size = Some(v),
                            _ => {}
                        }
                    }
                }
            }
            ft::RST_STREAM | ft::GOAWAY | ft::PING | ft::WINDOW_UPDATE | ft::PRIORITY => {
                let lim = end.min(8);
                if start < lim {
                    match chunk {
                        Some(c) => {
                            for q in start..lim {
                                f.small[q as usize] = c[(q - start) as usize];
                            }
                            f.small_have = lim as u8;
                        }
                        None => f.small_lost = true,
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The current frame's payload is complete.
    fn finish_frame(&mut self, end_ns: u64, out: &mut Out) {
        let Some(f) = self.frame.take() else { return };
        let h = f.hdr;
        let timing = Timing { start_ns: f.start_ns, end_ns };
        match h.kind {
            ft::DATA => {
                let len = match (f.padded(), f.pad) {
                    (false, _) => Some(h.length),
                    (true, Some(p)) => Some(h.length - f.prefix - u32::from(p)),
                    (true, None) => None,
                };
                out.push(H2Event::Data {
                    stream_id: h.stream_id,
                    len,
                    end_stream: h.has(flags::END_STREAM),
                    data: f.data,
                    timing,
                });
            }
            ft::HEADERS | ft::PUSH_PROMISE | ft::CONTINUATION if h.has(flags::END_HEADERS) => {
                if let Some(mut b) = self.block.take() {
                    b.done = true;
                    self.finish_block(b, end_ns, out);
                }
            }
            ft::SETTINGS => out.push(H2Event::Settings {
                ack: h.has(flags::ACK),
                header_table_size: f.header_table_size,
                max_frame_size: f.max_frame_size,
                timing,
            }),
            ft::RST_STREAM => {
                let error_code = (!f.small_lost && f.small_have >= 4)
                    .then(|| u32::from_be_bytes([f.small[0], f.small[1], f.small[2], f.small[3]]));
                out.push(H2Event::RstStream { stream_id: h.stream_id, error_code, timing });
            }
            ft::GOAWAY if !f.small_lost && f.small_have >= 8 => {
                let s = &f.small;
                out.push(H2Event::GoAway {
                    last_stream_id: u32::from_be_bytes([s[0], s[1], s[2], s[3]]) & 0x7fff_ffff,
                    error_code: u32::from_be_bytes([s[4], s[5], s[6], s[7]]),
                    timing,
                });
            }
            _ => {}
        }
    }

    fn finish_block(&mut self, b: Block, end_ns: u64, out: &mut Out) {
        let timing = Timing { start_ns: b.start_ns, end_ns };
        let result = match b.lost {
            Some(reason) => {
                self.hpack.block_lost();
                Err(reason)
            }
            None => self.hpack.decode_block(&b.buf).map_err(|e| e.as_str()),
        };
        if b.push {
            return;
        }
        match result {
            Ok(d) => out.push(H2Event::Headers {
                stream_id: b.stream_id,
                end_stream: b.end_stream,
                fields: d.fields,
                unresolved: d.unresolved,
                timing,
            }),
            Err(reason) => {
                self.stats.headers_unknown += 1;
                out.push(H2Event::HeadersUnknown { stream_id: b.stream_id, end_stream: b.end_stream, reason, timing })
            }
        }
    }
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

/// Build frames; used by tests and fuzz targets.
pub mod build {
    use super::{FrameHeader, flags, frame_type as ft};

    pub fn frame(kind: u8, fl: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let h = FrameHeader { length: payload.len() as u32, kind, flags: fl, stream_id, reserved: false };
        let mut v = h.to_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    pub fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
        let mut p = Vec::new();
        for (id, v) in entries {
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        frame(ft::SETTINGS, 0, 0, &p)
    }

    pub fn headers(stream_id: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
        let fl = flags::END_HEADERS | if end_stream { flags::END_STREAM } else { 0 };
        frame(ft::HEADERS, fl, stream_id, block)
    }

    pub fn data(stream_id: u32, payload: &[u8], end_stream: bool) -> Vec<u8> {
        frame(ft::DATA, if end_stream { flags::END_STREAM } else { 0 }, stream_id, payload)
    }

    /// A gRPC length-prefixed message.
    pub fn grpc_message(msg: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use crate::protocols::hpack::encode as henc;
    use crate::protocols::hpack::testenc::GoLikeEncoder;

    fn seg(data: &[u8], ts: u64) -> Segment<'_> {
        Segment { data, uncaptured_after: 0, enter_ns: ts, exit_ns: ts + 1 }
    }

    fn feed_all(d: &mut H2Decoder, parts: &[&[u8]]) -> Vec<H2Event> {
        let mut out = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            d.feed(&seg(p, 100 * i as u64), &mut out);
        }
        out
    }

    fn without_timing(evs: &[H2Event]) -> Vec<H2Event> {
        evs.iter()
            .map(|e| {
                let mut e = e.clone();
                match &mut e {
                    H2Event::Headers { timing, .. }
                    | H2Event::HeadersUnknown { timing, .. }
                    | H2Event::Data { timing, .. }
                    | H2Event::RstStream { timing, .. }
                    | H2Event::GoAway { timing, .. }
                    | H2Event::Settings { timing, .. } => *timing = Timing::default(),
                    H2Event::Desync { at_ns, .. } | H2Event::Resync { at_ns } => *at_ns = 0,
                }
                e
            })
            .collect()
    }

    /// What `curl --http2-prior-knowledge http://localhost:8080/` sends: preface, SETTINGS
    /// (MAX_CONCURRENT_STREAMS 100, INITIAL_WINDOW_SIZE 32 MiB, ENABLE_PUSH 0), WINDOW_UPDATE,
    /// HEADERS on stream 1 with END_STREAM.
    fn curl_request() -> Vec<u8> {
        let mut v = PREFACE.to_vec();
        v.extend_from_slice(&[
            0x00, 0x00, 0x12, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0x00, 0x03, 0x00, 0x00, 0x00, 0x64, //
            0x00, 0x04, 0x02, 0x00, 0x00, 0x00, //
            0x00, 0x02, 0x00, 0x00, 0x00, 0x00, //
            0x00, 0x00, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x00, 0x01,
        ]);
        let mut blk = vec![0x82, 0x84, 0x86, 0x41];
        // :authority localhost:8080 (Huffman), user-agent curl/8.5.0 (Huffman), accept */*
        let mut rest = Vec::new();
        henc::huffman_string(&mut rest, b"localhost:8080");
        rest.push(0x7a);
        henc::huffman_string(&mut rest, b"curl/8.5.0");
        rest.extend_from_slice(&[0x53, 0x03, b'*', b'/', b'*']);
        blk.extend_from_slice(&rest);
        v.extend_from_slice(&headers(1, &blk, true));
        v
    }

    fn expected_curl_headers() -> Vec<(&'static str, FieldValue)> {
        vec![
            (":method", "GET".into()),
            (":path", "/".into()),
            (":scheme", "http".into()),
            (":authority", "localhost:8080".into()),
            ("user-agent", "curl/8.5.0".into()),
        ]
    }

    #[test]
    fn curl_prior_knowledge_request() {
        let bytes = curl_request();
        let mut d = H2Decoder::new(Role::Client);
        let out = feed_all(&mut d, &[&bytes]);
        assert!(d.saw_preface());
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(out[0], H2Event::Settings { ack: false, header_table_size: None, max_frame_size: None, .. }));
        match &out[1] {
            H2Event::Headers { stream_id: 1, end_stream: true, fields, unresolved, .. } => {
                assert_eq!(fields, &expected_curl_headers());
                assert!(!unresolved.any());
            }
            e => panic!("{e:?}"),
        }
        assert!(d.hpack().is_fully_known());
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let bytes = curl_request();
        let mut whole = H2Decoder::new(Role::Client);
        let reference = without_timing(&feed_all(&mut whole, &[&bytes]));
        for cut in 0..=bytes.len() {
            let mut d = H2Decoder::new_fresh(Role::Client);
            let out = feed_all(&mut d, &[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(without_timing(&out), reference, "cut at {cut}");
        }
        // Two cuts.
        for a in (0..bytes.len()).step_by(3) {
            for b in (a..bytes.len()).step_by(5) {
                let mut d = H2Decoder::new_fresh(Role::Client);
                let out = feed_all(&mut d, &[&bytes[..a], &bytes[a..b], &bytes[b..]]);
                assert_eq!(without_timing(&out), reference, "cuts at {a},{b}");
            }
        }
        // One byte per segment.
        let mut d = H2Decoder::new_fresh(Role::Client);
        let parts: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(without_timing(&feed_all(&mut d, &parts)), reference);
    }

    #[test]
    fn timing_spans_segments() {
        let bytes = curl_request();
        let mut d = H2Decoder::new(Role::Client);
        let hstart = bytes.len() - 30;
        let out = feed_all(&mut d, &[&bytes[..hstart + 3], &bytes[hstart + 3..hstart + 20], &bytes[hstart + 20..]]);
        match out.last().unwrap() {
            H2Event::Headers { timing, .. } => assert_eq!(*timing, Timing { start_ns: 0, end_ns: 201 }),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn continuation_and_padding() {
        let mut e = GoLikeEncoder::new();
        let blk = e.encode(&[
            (":method", "POST"),
            (":scheme", "https"),
            (":path", "/apis/apps/v1/namespaces/default/deployments"),
            (":authority", "kubernetes.default.svc"),
            ("content-type", "application/json"),
            ("authorization", "Bearer abc"),
        ]);
        let (a, rest) = blk.split_at(5);
        let (b, c) = rest.split_at(7);
        // HEADERS padded (pad 3) + priority, then two CONTINUATIONs.
        let mut p = vec![3u8, 0, 0, 0, 0, 16];
        p.extend_from_slice(a);
        p.extend_from_slice(&[0, 0, 0]);
        let mut bytes = frame(ft::HEADERS, flags::PADDED | flags::PRIORITY, 3, &p);
        bytes.extend(frame(ft::CONTINUATION, 0, 3, b));
        bytes.extend(frame(ft::CONTINUATION, flags::END_HEADERS, 3, c));
        // Padded DATA: pad 4.
        let mut dp = vec![4u8];
        dp.extend_from_slice(b"{\"a\":1}");
        dp.extend_from_slice(&[0; 4]);
        bytes.extend(frame(ft::DATA, flags::PADDED | flags::END_STREAM, 3, &dp));
        for cut in 0..=bytes.len() {
            let mut d = H2Decoder::new_fresh(Role::Server);
            let out = feed_all(&mut d, &[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(out.len(), 2, "cut {cut}: {out:?}");
            match &out[0] {
                H2Event::Headers { stream_id: 3, end_stream: false, fields, .. } => {
                    assert_eq!(fields.len(), 5);
                    assert_eq!(
                        fields[2],
                        (":path", FieldValue::Static("/apis/apps/v1/namespaces/default/deployments"))
                    );
                }
                e => panic!("{e:?}"),
            }
            match &out[1] {
                H2Event::Data { stream_id: 3, len: Some(7), end_stream: true, data, .. } => {
                    assert_eq!(data, b"{\"a\":1}")
                }
                e => panic!("{e:?}"),
            }
        }
    }

    #[test]
    fn interleaved_frame_during_continuation_desyncs() {
        let mut bytes = frame(ft::HEADERS, 0, 1, &[0x82]);
        bytes.extend(settings(&[]));
        let mut d = H2Decoder::new_fresh(Role::Server);
        let out = feed_all(&mut d, &[&bytes]);
        assert!(matches!(out[..], [H2Event::Desync { reason: "expected CONTINUATION", .. }]), "{out:?}");
    }

    #[test]
    fn huge_data_partly_captured_then_headers_next_segment() {
        let mut e = GoLikeEncoder::new();
        let mut d = H2Decoder::new_fresh(Role::Server);
        let mut out = Vec::new();
        let blk = e.encode(&[(":status", "200"), ("content-type", "application/json")]);
        d.feed(&seg(&headers(1, &blk, false), 1), &mut out);
        // A 1 MiB DATA frame (peer allowed it) of which only 4000 bytes were captured.
        let big_len = 1 << 20;
        let mut hdr = FrameHeader { length: big_len, kind: ft::DATA, flags: 0, stream_id: 1, reserved: false }
            .to_bytes()
            .to_vec();
        hdr.extend(std::iter::repeat_n(b'x', 3991));
        let s = Segment { data: &hdr, uncaptured_after: u64::from(big_len) - 3991, enter_ns: 10, exit_ns: 20 };
        d.feed(&s, &mut out);
        // Next segment: trailers-like HEADERS for stream 3 and a DATA for stream 1 end.
        let blk3 = e.encode(&[(":status", "404")]);
        let mut next = headers(3, &blk3, true);
        next.extend(data(1, b"", true));
        d.feed(&seg(&next, 30), &mut out);
        let out = without_timing(&out);
        assert_eq!(out.len(), 4, "{out:?}");
        match &out[1] {
            H2Event::Data { stream_id: 1, len: Some(l), data, end_stream: false, .. } => {
                assert_eq!(*l, big_len);
                assert_eq!(data.len(), 3991);
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(out[2].header(":status"), Some(Lookup::Found("404")));
        assert!(matches!(out[3], H2Event::Data { stream_id: 1, len: Some(0), end_stream: true, .. }));
        assert_eq!(d.stats().bytes_uncaptured, u64::from(big_len) - 3991);
        assert_eq!(d.stats().desyncs, 0);
    }

    #[test]
    fn data_capture_is_bounded() {
        let payload = vec![7u8; 20_000];
        let mut d = H2Decoder::new_fresh(Role::Client);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(data(1, &payload, true));
        let out = feed_all(&mut d, &[&bytes]);
        match &out[..] {
            [H2Event::Data { len: Some(20_000), data, .. }] => assert_eq!(data.len(), DATA_CAPTURE_LIMIT),
            e => panic!("{e:?}"),
        }
        let mut d = H2Decoder::new_fresh(Role::Client);
        d.set_data_capture_limit(0);
        let out = feed_all(&mut d, &[&bytes]);
        assert!(matches!(&out[..], [H2Event::Data { len: Some(20_000), data, .. }] if data.is_empty()));
    }

    #[test]
    fn lost_header_block_resets_hpack_and_reports_unknown() {
        let mut e = GoLikeEncoder::new();
        let mut d = H2Decoder::new_fresh(Role::Client);
        let mut out = Vec::new();
        d.feed(&seg(PREFACE, 0), &mut out);
        let b1 = headers(1, &e.encode(&[(":method", "GET"), (":path", "/a"), (":authority", "x")]), true);
        d.feed(&seg(&b1, 1), &mut out);
        // Second request: the block is only partly captured.
        let b2 = headers(3, &e.encode(&[(":method", "GET"), (":path", "/b"), (":authority", "x")]), true);
        let s = Segment { data: &b2[..12], uncaptured_after: (b2.len() - 12) as u64, enter_ns: 2, exit_ns: 3 };
        d.feed(&s, &mut out);
        // Third: references /b's entry, which we never saw: must not resolve to /a.
        let b3 = headers(5, &e.encode(&[(":method", "GET"), (":path", "/b"), (":authority", "x")]), true);
        d.feed(&seg(&b3, 4), &mut out);
        assert_eq!(out[0].header(":path"), Some(Lookup::Found("/a")));
        assert!(matches!(out[1], H2Event::HeadersUnknown { stream_id: 3, end_stream: true, .. }));
        assert_eq!(out[2].header(":path"), Some(Lookup::Unknown));
        assert_eq!(out[2].header(":method"), Some(Lookup::Found("GET")));
    }

    #[test]
    fn frame_header_in_uncaptured_bytes_desyncs_then_resyncs() {
        let mut e = GoLikeEncoder::new();
        let mut d = H2Decoder::new_fresh(Role::Server);
        let mut out = Vec::new();
        let h1 = headers(1, &e.encode(&[(":status", "200")]), false);
        let mut s1 = h1.clone();
        s1.extend_from_slice(&data(1, b"abc", false)[..5]);
        // The rest of the DATA frame and a following frame header were not captured.
        d.feed(&Segment { data: &s1, uncaptured_after: 4 + 3 + 9 + 10, enter_ns: 1, exit_ns: 2 }, &mut out);
        assert!(matches!(out.last(), Some(H2Event::Desync { reason: "frame header not captured", .. })), "{out:?}");
        assert!(!d.is_synced());
        // A segment starting mid-frame: garbage, stays desynced.
        d.feed(&seg(&[0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02], 3), &mut out);
        assert!(!d.is_synced());
        // A plausible segment: HEADERS + DATA.
        let mut s3 = headers(5, &e.encode(&[(":status", "200"), ("grpc-status", "0")]), false);
        s3.extend(data(5, b"hello", true));
        d.feed(&seg(&s3, 4), &mut out);
        assert!(d.is_synced());
        let tail: Vec<_> = without_timing(&out[out.len() - 3..]);
        assert!(matches!(tail[0], H2Event::Resync { .. }));
        // :status is static, grpc-status 0 was inserted as a literal: both resolvable.
        assert_eq!(tail[1].header(":status"), Some(Lookup::Found("200")));
        assert_eq!(tail[1].header("grpc-status"), Some(Lookup::Found("0")));
        assert!(matches!(&tail[2], H2Event::Data { stream_id: 5, data, .. } if data == b"hello"));
    }

    #[test]
    fn resync_requires_plausible_next_header() {
        let mut d = H2Decoder::new(Role::Server);
        let mut out = Vec::new();
        // Plausible first header (DATA stream 1, len 3) followed by an implausible one.
        let mut s = data(1, b"abc", false);
        s.extend_from_slice(&[0xff, 0xff, 0xff, 0xee, 0xff, 0x80, 0, 0, 1]);
        d.feed(&seg(&s, 1), &mut out);
        assert!(!d.is_synced());
        assert!(out.is_empty());
        // Plausible first header whose frame runs past the captured bytes: accepted.
        let s = data(1, &[0u8; 100], false);
        d.feed(&Segment { data: &s[..50], uncaptured_after: 59, enter_ns: 2, exit_ns: 3 }, &mut out);
        assert!(d.is_synced());
        assert!(matches!(out[..], [H2Event::Resync { .. }, H2Event::Data { len: Some(100), .. }]), "{out:?}");
    }

    #[test]
    fn invalid_headers_desync() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (frame(ft::DATA, 0, 0, b"x"), "frame type requires a stream"),
            (frame(ft::SETTINGS, 0, 1, &[]), "connection frame on a stream"),
            (frame(ft::PING, 0, 0, &[0; 7]), "frame too short"),
            (frame(ft::WINDOW_UPDATE, 0, 0, &[0; 5]), "bad frame length"),
            (frame(ft::SETTINGS, 0, 0, &[0; 7]), "bad SETTINGS length"),
            (frame(ft::SETTINGS, flags::ACK, 0, &[0; 6]), "bad frame length"),
            (
                {
                    let mut f = frame(ft::DATA, 0, 1, b"x");
                    f[5] |= 0x80;
                    f
                },
                "reserved bit set",
            ),
            (frame(ft::DATA, flags::PADDED, 1, &[5, 1, 2]), "padding exceeds frame"),
            (frame(ft::CONTINUATION, flags::END_HEADERS, 1, &[0x82]), "unexpected CONTINUATION"),
            (frame(ft::HEADERS, flags::END_HEADERS, 2, &[0x82]), "client HEADERS on an even stream"),
        ];
        for (bytes, reason) in cases {
            let mut d = H2Decoder::new_fresh(Role::Client);
            let out = feed_all(&mut d, &[PREFACE, &bytes]);
            assert!(matches!(out.last(), Some(H2Event::Desync { reason: r, .. }) if *r == reason), "{reason}: {out:?}");
        }
    }

    #[test]
    fn unknown_frame_types_are_skipped() {
        let mut bytes = frame(0xfa, 0xff, 7, &[1, 2, 3, 4, 5]);
        bytes.extend(frame(ft::RST_STREAM, 0, 1, &8u32.to_be_bytes()));
        let mut goaway = 3u32.to_be_bytes().to_vec();
        goaway.extend(2u32.to_be_bytes());
        goaway.extend(b"debug data");
        bytes.extend(frame(ft::GOAWAY, 0, 0, &goaway));
        bytes.extend(frame(ft::PING, 0, 0, &[0; 8]));
        bytes.extend(frame(ft::PRIORITY, 0, 3, &[0, 0, 0, 1, 16]));
        bytes.extend(frame(ft::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
        let mut d = H2Decoder::new_fresh(Role::Server);
        let out = without_timing(&feed_all(&mut d, &[&bytes]));
        assert_eq!(
            out,
            vec![
                H2Event::RstStream { stream_id: 1, error_code: Some(8), timing: Timing::default() },
                H2Event::GoAway { last_stream_id: 3, error_code: 2, timing: Timing::default() },
            ]
        );
    }

    #[test]
    fn connection_routes_settings_and_fresh_start() {
        let mut conn = H2Connection::new();
        let mut out = Vec::new();
        let mut c = PREFACE.to_vec();
        c.extend(settings(&[(settings_id::HEADER_TABLE_SIZE, 8192), (settings_id::MAX_FRAME_SIZE, 1 << 20)]));
        conn.feed(Role::Client, &seg(&c, 1), &mut out);
        assert!(conn.server.hpack().is_fully_known(), "server direction starts fresh after the preface");
        assert_eq!(conn.server.resync_len_limit(), 1 << 20);
        let mut s = settings(&[(settings_id::MAX_FRAME_SIZE, 32768)]);
        s.extend(frame(ft::SETTINGS, flags::ACK, 0, &[]));
        conn.feed(Role::Server, &seg(&s, 2), &mut out);
        assert_eq!(conn.client.resync_len_limit(), 32768);
        assert!(matches!(out.last(), Some(H2Event::Settings { ack: true, .. })));
    }

    #[test]
    fn mid_connection_attach_without_preface() {
        let mut e = GoLikeEncoder::new();
        let mut stream = Vec::new();
        let mut d = H2Decoder::new(Role::Client);
        let mut out = Vec::new();
        for i in 0..30u32 {
            let blk = e.encode(&[(":method", "GET"), (":path", &format!("/p{}", i % 4)), (":authority", "h")]);
            stream.push(headers(2 * i + 1, &blk, true));
        }
        for (i, s) in stream.iter().enumerate().skip(10) {
            d.feed(&seg(s, i as u64), &mut out);
        }
        assert!(d.is_synced());
        assert!(out.iter().all(|e| matches!(e, H2Event::Headers { .. })));
        // Paths /p0../p3 and :authority were indexed before attach: unknown, never wrong.
        for ev in &out {
            if let Some(Lookup::Found(p)) = ev.header(":path") {
                panic!("resolved {p} from an unknown table");
            }
            assert_eq!(ev.header(":method"), Some(Lookup::Found("GET")));
        }
    }

    #[test]
    fn no_panic_on_pseudo_random_streams() {
        let mut s: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let mut e = GoLikeEncoder::new();
        let mut valid = curl_request();
        for i in 0..20u32 {
            let blk = e.encode(&[(":method", "POST"), (":path", &format!("/x{}", i % 3))]);
            valid.extend(headers(2 * i + 1, &blk, false));
            valid.extend(data(2 * i + 1, &build::grpc_message(&[1, 2, 3]), true));
        }
        for round in 0..3_000 {
            let mut bytes = valid.clone();
            match round % 3 {
                0 => bytes = (0..next() % 2000).map(|_| next() as u8).collect(),
                1 => {
                    for _ in 0..1 + next() % 8 {
                        let i = next() as usize % bytes.len();
                        bytes[i] = next() as u8;
                    }
                }
                _ => {}
            }
            let role = if next() % 2 == 0 { Role::Client } else { Role::Server };
            let mut d = if next() % 2 == 0 { H2Decoder::new(role) } else { H2Decoder::new_fresh(role) };
            let mut out = Vec::new();
            let mut pos = 0;
            while pos < bytes.len() {
                let n = (1 + next() as usize % 300).min(bytes.len() - pos);
                let unc = if next() % 5 == 0 { u64::from(next() % 100) } else { 0 };
                let s = Segment { data: &bytes[pos..pos + n], uncaptured_after: unc, enter_ns: 0, exit_ns: 0 };
                d.feed(&s, &mut out);
                pos += n;
            }
            for ev in &out {
                if let H2Event::Data { data, .. } = ev {
                    assert!(data.len() <= DATA_CAPTURE_LIMIT);
                }
            }
        }
    }
}
