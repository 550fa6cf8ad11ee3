//! One direction's decoder: frame sync, payload reading, header blocks.

use super::event::{H2Event, H2Stats, Out};
use super::frame::{
    DEFAULT_MAX_FRAME_SIZE, FRAME_HEADER_LEN, FrameHeader, PREFACE, defined_flags, flags, ft, settings_id,
};
use crate::protocols::{
    Timing,
    hpack::{HpackDecoder, HpackStats},
};
use crate::stream::{Role, Segment};

/// Largest header block reassembled; larger blocks are counted as lost.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// At most this many payload bytes of a DATA frame are kept in [`H2Event::Data`]: a gRPC
/// message prefix plus 4 KiB.
pub const DATA_CAPTURE_LIMIT: usize = 4096 + 5;

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
    /// The goroutine of the segment that held the frame header's first byte.
    start_goroutine: u64,
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
    fn new(hdr: FrameHeader, start_ns: u64, start_goroutine: u64) -> Self {
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
            start_goroutine,
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
    start_goroutine: u64,
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
    hdr_start_goroutine: u64,
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

impl H2Decoder {
    /// A decoder that may be attached mid-connection.
    pub fn new(role: Role) -> Self {
        H2Decoder {
            role,
            mode: Mode::Start,
            hdr: [0; FRAME_HEADER_LEN],
            hdr_have: 0,
            hdr_start_ns: 0,
            hdr_start_goroutine: 0,
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
    pub(super) fn resync_len_limit(&self) -> u32 {
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
                            self.hdr_start_goroutine = seg.goroutine;
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
                    start_goroutine: self.hdr_start_goroutine,
                    done: false,
                });
            }
            _ => {}
        }
        self.frame = Some(Frame::new(h, self.hdr_start_ns, self.hdr_start_goroutine));
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
        let timing = Timing { enter_ns: f.start_ns, exit_ns: end_ns, goroutine: f.start_goroutine };
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
        let timing = Timing { enter_ns: b.start_ns, exit_ns: end_ns, goroutine: b.start_goroutine };
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
