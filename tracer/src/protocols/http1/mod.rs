//! Incremental HTTP/1.x decoder for one direction of one connection.
//!
//! It is fed [`Segment`]s in stream order and reports message boundaries, not contents:
//! [`Http1Event::Head`] as soon as a head is complete (a watch response's body never ends, so
//! waiting for the body is not an option), then [`Http1Event::End`] once the body is over.
//!
//! Memory is bounded: bodies are counted, never buffered; only a head that spans segments (at
//! most [`HEAD_LIMIT`] bytes) or a chunk-size/trailer line is buffered, and that buffer is zeroed
//! when done because it may hold credentials. Of the headers, only the few values the tracer
//! needs are copied out.
//!
//! Uncaptured bytes ([`Segment::uncaptured_after`]) are skipped by count where the length is
//! known (a body, a chunk's payload). Where framing must be read (a head, a chunk-size line) they
//! make the decoder desynchronise; it then waits for a segment that *starts* like a message and
//! never guesses a message start in the middle of a segment.

use super::Timing;
use crate::stream::Segment;

mod head;
pub(crate) use head::STANDARD_METHODS;
use head::{BodyFraming, Parsed, RepeatedFields, parse_chunk_size, parse_head, salvage_head};
pub use head::{Head, MessageKind, RequestHead};
#[cfg(test)]
use head::{MAX_HEADERS, ResponseHead};

/// Largest head (start line + headers) we buffer; a bigger one desynchronises the decoder.
pub const HEAD_LIMIT: usize = 16 * 1024;
/// Longest chunk-size line (extensions included) we buffer.
const CHUNK_LINE_LIMIT: usize = 4 * 1024;
/// Longest method token [`looks_like_request`] accepts ("UPDATEREDIRECTREF" has 17 bytes).
const MAX_METHOD_LEN: usize = 20;
/// While a buffered partial head is this small, re-parse it on every segment so garbage is
/// rejected early; past it, only re-parse when a segment brings a line end (keeps cost linear).
const EAGER_PARSE_LEN: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Http1Event {
    /// Head fully parsed. Emitted as soon as the head is complete (a watch response's body never
    /// ends). Interim 1xx responses get their own `Head` + `End`; pairing should skip them.
    Head { head: Head, first_byte: Timing },
    /// Message complete (body fully seen or skipped by length). `body_size` = body bytes (decoded
    /// chunk payload for chunked).
    End { body_size: u64, last_byte: Timing },
    /// Framing was lost (garbage, an uncaptured chunk-size line, a head bigger than the limit).
    /// The message in progress, if any, is abandoned (a `Head` may have no `End`).
    Desync { reason: &'static str },
}

/// Cheap check on the first bytes of a connection direction: an HTTP/1.x request starts with an
/// upper-case method token and a space. The HTTP/2 preface (`PRI * HTTP/2.0`) is excluded.
pub fn looks_like_request(data: &[u8]) -> bool {
    if data.starts_with(b"PRI *") {
        return false;
    }
    let Some(space) = data.iter().take(MAX_METHOD_LEN + 1).position(|&b| b == b' ') else {
        return false;
    };
    let method_ok = space > 0
        && data.get(..space).is_some_and(|m| m.iter().all(|&b| b.is_ascii_uppercase() || b == b'-' || b == b'_'));
    let target_ok = data.get(space.saturating_add(1)).is_none_or(u8::is_ascii_graphic);
    method_ok && target_ok
}

/// Cheap check on the first bytes of a connection direction: an HTTP/1.x response starts with
/// its version.
pub fn looks_like_response(data: &[u8]) -> bool {
    data.starts_with(b"HTTP/1.")
}

/// Where the decoder is in the byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between messages or inside a head (a head spanning segments is gathered in `buf`).
    Head,
    /// Inside a Content-Length body.
    Body { remaining: u64 },
    /// Reading a chunk-size line (gathered in `buf` only if it spans segments).
    ChunkSize,
    /// Inside a chunk's payload.
    ChunkData { remaining: u64 },
    /// The CRLF closing a chunk's payload; fixed length, so skippable when uncaptured.
    ChunkEnd { remaining: u8 },
    /// Trailer lines after the last chunk, until an empty line; `total` bounds the section.
    Trailers { total: usize },
    /// A response body delimited by the connection closing.
    UntilClose,
    /// Framing lost: waiting for a segment that starts like a message.
    Desynced,
    /// The connection switched protocols: nothing more to decode.
    Upgraded,
}

/// How the body of a just-parsed message is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyPlan {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
    /// 101 Switching Protocols: the message ends with its head and HTTP ends with it.
    Switch,
    /// Framing headers we cannot follow.
    Broken(&'static str),
}

/// Decoder for one direction of one HTTP/1.x connection. See the module docs.
pub struct Http1Decoder {
    kind: MessageKind,
    state: State,
    /// Partial head, chunk-size line or trailer line spanning segments; at most [`HEAD_LIMIT`]
    /// bytes, wiped after use.
    buf: Vec<u8>,
    /// Segment holding the first byte of the message in progress.
    first_byte: Timing,
    /// Body bytes of the message in progress so far.
    body_size: u64,
    /// Responses still owed to HEAD requests: they carry no body whatever their headers say.
    no_body_responses: u32,
    /// The last request asked to switch protocols (Upgrade, CONNECT): if what follows it is not
    /// HTTP, the switch happened, so we stop quietly instead of reporting a desync.
    switch_pending: bool,
    /// The last User-Agent and Host values of the connection's requests.
    repeated: RepeatedFields,
}

/// Deliberately omits `buf`'s contents: a partial head may hold credentials.
impl std::fmt::Debug for Http1Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Decoder")
            .field("kind", &self.kind)
            .field("state", &self.state)
            .field("buffered", &self.buf.len())
            .field("body_size", &self.body_size)
            .field("no_body_responses", &self.no_body_responses)
            .field("switch_pending", &self.switch_pending)
            .finish()
    }
}

impl Http1Decoder {
    pub fn new(kind: MessageKind) -> Self {
        Http1Decoder {
            kind,
            state: State::Head,
            buf: Vec::new(),
            first_byte: Timing::default(),
            body_size: 0,
            no_body_responses: 0,
            switch_pending: false,
            repeated: RepeatedFields::default(),
        }
    }

    /// True while the decoder is desynchronised (lost framing) and waiting for a message start.
    pub fn is_desynced(&self) -> bool {
        self.state == State::Desynced
    }

    /// True once the connection switched protocols (101 response, or a request that asked to
    /// upgrade followed by non-HTTP bytes); everything fed afterwards is ignored.
    pub fn is_upgraded(&self) -> bool {
        self.state == State::Upgraded
    }

    /// The next final (non-1xx) response answers a HEAD request, so it has no body whatever its
    /// headers say. Counted: call once per HEAD request, in request order.
    pub fn expect_no_body_for_next_response(&mut self) {
        self.no_body_responses = self.no_body_responses.saturating_add(1);
    }

    /// Feed the next segment of this direction; push whatever completed onto `out`.
    pub fn feed(&mut self, seg: &Segment<'_>, out: &mut Vec<Http1Event>) {
        let ts = Timing::of(seg);
        match self.state {
            State::Upgraded => return,
            State::Desynced if !self.starts_message(seg.data) => return,
            State::Desynced => self.state = State::Head,
            _ => {}
        }
        let mut rest = seg.data;
        while !rest.is_empty() && self.is_decoding() {
            let used = self.step(rest, ts, out);
            if used == 0 && self.is_decoding() {
                // Every step consumes input; this guards the loop should that ever break.
                self.desync("decoder made no progress", out);
            }
            rest = rest.get(used..).unwrap_or_default();
        }
        if self.is_decoding() {
            self.skip_uncaptured(seg.uncaptured_after, ts, out);
        }
    }

    /// The connection closed. A response whose body runs until close ends here, with the close
    /// time `ts` as its `last_byte` (the close is what delimits it); any other message in
    /// progress is abandoned silently.
    pub fn on_close(&mut self, ts: Timing, out: &mut Vec<Http1Event>) {
        match self.state {
            State::UntilClose => self.finish(ts, out),
            State::Desynced | State::Upgraded => {}
            _ => self.state = State::Head,
        }
        self.body_size = 0;
        self.wipe();
    }

    fn is_decoding(&self) -> bool {
        !matches!(self.state, State::Desynced | State::Upgraded)
    }

    fn starts_message(&self, data: &[u8]) -> bool {
        match self.kind {
            MessageKind::Request => looks_like_request(data),
            MessageKind::Response => looks_like_response(data),
        }
    }

    /// Consumes a prefix of `data` (at least one byte) according to the current state.
    fn step(&mut self, data: &[u8], ts: Timing, out: &mut Vec<Http1Event>) -> usize {
        match self.state {
            State::Head => self.step_head(data, ts, out),
            State::Body { .. } | State::ChunkData { .. } | State::UntilClose => {
                let avail = u64::try_from(data.len()).unwrap_or(u64::MAX);
                let used = self.advance_counted(avail, ts, out);
                usize::try_from(used).unwrap_or(data.len())
            }
            State::ChunkEnd { remaining } => self.step_chunk_end(remaining, data, out),
            State::ChunkSize => self.step_chunk_size(data, out),
            State::Trailers { total } => self.step_trailers(total, data, ts, out),
            State::Desynced | State::Upgraded => data.len(),
        }
    }

    /// Head bytes: parse straight from the segment when possible, buffer only what spans segments.
    fn step_head(&mut self, data: &[u8], ts: Timing, out: &mut Vec<Http1Event>) -> usize {
        if !self.buf.is_empty() {
            return self.continue_head(data, ts, out);
        }
        // Stray line ends between messages are tolerated (RFC 9112 §2.2).
        let blank = data.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
        if blank > 0 {
            return blank;
        }
        self.first_byte = ts;
        // A head must fit in the limit even when a single segment holds all of it.
        let window = data.get(..HEAD_LIMIT).unwrap_or(data);
        match parse_head(self.kind, window, &mut self.repeated) {
            Parsed::Complete { len, head, body } => {
                self.start_body(head, body, ts, out);
                len
            }
            Parsed::Partial if window.len() >= HEAD_LIMIT => {
                self.desync("head larger than limit", out);
                data.len()
            }
            Parsed::Partial => {
                self.append(data, HEAD_LIMIT);
                data.len()
            }
            Parsed::Error(reason) => {
                self.desync(reason, out);
                data.len()
            }
        }
    }

    /// More bytes of a head that started in an earlier segment.
    fn continue_head(&mut self, data: &[u8], ts: Timing, out: &mut Vec<Http1Event>) -> usize {
        let old_len = self.buf.len();
        let room = HEAD_LIMIT.saturating_sub(old_len);
        let added = data.get(..room.min(data.len())).unwrap_or_default();
        self.append(added, HEAD_LIMIT);
        let worth_parsing = added.contains(&b'\n') || self.buf.len() <= EAGER_PARSE_LEN;
        let parsed = if worth_parsing { parse_head(self.kind, &self.buf, &mut self.repeated) } else { Parsed::Partial };
        match parsed {
            Parsed::Complete { len, head, body } => {
                self.wipe();
                match len.checked_sub(old_len) {
                    Some(used) if used > 0 => {
                        self.start_body(head, body, ts, out);
                        used
                    }
                    _ => {
                        self.desync("head ended before this segment", out);
                        data.len()
                    }
                }
            }
            Parsed::Partial if self.buf.len() >= HEAD_LIMIT => {
                self.desync("head larger than limit", out);
                data.len()
            }
            Parsed::Partial => added.len(),
            Parsed::Error(reason) => {
                self.desync(reason, out);
                data.len()
            }
        }
    }

    /// Reports the head and sets up the body; messages without a body end right away.
    fn start_body(&mut self, head: Head, body: BodyFraming, ts: Timing, out: &mut Vec<Http1Event>) {
        let plan = match &head {
            Head::Request(_) => request_plan(body),
            Head::Response(resp) => self.response_plan(resp.status, body),
        };
        let tunnel = match &head {
            Head::Request(req) => req.upgrade || &*req.method == "CONNECT",
            Head::Response(_) => false,
        };
        out.push(Http1Event::Head { head, first_byte: self.first_byte });
        self.body_size = 0;
        self.switch_pending = false;
        match plan {
            BodyPlan::Empty | BodyPlan::Length(0) => self.finish(ts, out),
            BodyPlan::Length(remaining) => self.state = State::Body { remaining },
            BodyPlan::Chunked => self.state = State::ChunkSize,
            BodyPlan::UntilClose => self.state = State::UntilClose,
            BodyPlan::Switch => {
                self.finish(ts, out);
                self.state = State::Upgraded;
            }
            BodyPlan::Broken(reason) => self.desync(reason, out),
        }
        self.switch_pending = tunnel && self.is_decoding();
    }

    /// RFC 9112 §6.3 for responses: status first, then HEAD, then the framing headers.
    fn response_plan(&mut self, status: u16, body: BodyFraming) -> BodyPlan {
        if status == 101 {
            return BodyPlan::Switch;
        }
        if (100..200).contains(&status) {
            return BodyPlan::Empty; // interim; does not answer the HEAD request yet
        }
        let answers_head = self.no_body_responses > 0;
        self.no_body_responses = self.no_body_responses.saturating_sub(1);
        if answers_head || status == 204 || status == 304 {
            return BodyPlan::Empty;
        }
        match body {
            BodyFraming::Chunked => BodyPlan::Chunked,
            BodyFraming::Length(n) => BodyPlan::Length(n),
            BodyFraming::OtherCoding | BodyFraming::Unframed => BodyPlan::UntilClose,
            BodyFraming::BadLength => BodyPlan::Broken("invalid Content-Length"),
        }
    }

    /// Counts `avail` bytes (at most) of a stretch whose length is known without reading it:
    /// body, chunk payload, chunk CRLF, or a body running until close. Returns how many it took.
    fn advance_counted(&mut self, avail: u64, ts: Timing, out: &mut Vec<Http1Event>) -> u64 {
        match self.state {
            State::Body { remaining } => {
                let n = remaining.min(avail);
                self.body_size = self.body_size.saturating_add(n);
                match remaining.saturating_sub(n) {
                    0 => self.finish(ts, out),
                    left => self.state = State::Body { remaining: left },
                }
                n
            }
            State::ChunkData { remaining } => {
                let n = remaining.min(avail);
                self.body_size = self.body_size.saturating_add(n);
                self.state = match remaining.saturating_sub(n) {
                    0 => State::ChunkEnd { remaining: 2 },
                    left => State::ChunkData { remaining: left },
                };
                n
            }
            State::ChunkEnd { remaining } => {
                let n = u8::try_from(avail).unwrap_or(u8::MAX).min(remaining);
                self.state = match remaining.saturating_sub(n) {
                    0 => State::ChunkSize,
                    left => State::ChunkEnd { remaining: left },
                };
                u64::from(n)
            }
            State::UntilClose => {
                self.body_size = self.body_size.saturating_add(avail);
                avail
            }
            _ => 0,
        }
    }

    /// Bytes moved but not captured: skip them where their length is all we need, else desync.
    fn skip_uncaptured(&mut self, mut n: u64, ts: Timing, out: &mut Vec<Http1Event>) {
        if n > 0 && self.state == State::Head && !self.buf.is_empty() {
            // A head longer than the capture (big bearer tokens): report what its captured lines
            // say, then wait for the next message, since where this one ends is unknown.
            if let Some(head) = salvage_head(self.kind, &self.buf, &mut self.repeated) {
                out.push(Http1Event::Head { head, first_byte: self.first_byte });
            }
            self.desync(TRUNCATED_HEAD, out);
            return;
        }
        while n > 0 && self.is_decoding() {
            let skipped = match self.state {
                State::Head | State::ChunkSize | State::Trailers { .. } => 0,
                _ => self.advance_counted(n, ts, out),
            };
            if skipped == 0 {
                self.desync("uncaptured bytes where framing was expected", out);
            }
            n = n.saturating_sub(skipped);
        }
    }

    /// The CRLF after a chunk's payload, one byte at a time (a bare LF is tolerated).
    fn step_chunk_end(&mut self, remaining: u8, data: &[u8], out: &mut Vec<Http1Event>) -> usize {
        match (remaining, data.first()) {
            (2, Some(b'\r')) => self.state = State::ChunkEnd { remaining: 1 },
            (_, Some(b'\n')) => self.state = State::ChunkSize,
            _ => self.desync("chunk payload not followed by CRLF", out),
        }
        1
    }

    fn step_chunk_size(&mut self, data: &[u8], out: &mut Vec<Http1Event>) -> usize {
        let (used, line) = self.take_line(data, CHUNK_LINE_LIMIT, parse_chunk_size);
        match line {
            Line::Partial => {}
            Line::Complete(Some(0)) => self.state = State::Trailers { total: 0 },
            Line::Complete(Some(remaining)) => self.state = State::ChunkData { remaining },
            Line::Complete(None) => self.desync("invalid chunk-size line", out),
            Line::TooLong => self.desync("chunk-size line too long", out),
        }
        used
    }

    /// Trailer lines are read and dropped; the empty line ends the message.
    fn step_trailers(&mut self, total: usize, data: &[u8], ts: Timing, out: &mut Vec<Http1Event>) -> usize {
        let limit = HEAD_LIMIT.saturating_sub(total);
        let (used, line) = self.take_line(data, limit, |l| (l.len(), matches!(l, b"\n" | b"\r\n")));
        match line {
            Line::Partial => {}
            Line::Complete((_, true)) => self.finish(ts, out),
            Line::Complete((len, false)) => self.state = State::Trailers { total: total.saturating_add(len) },
            Line::TooLong => self.desync("trailer section larger than limit", out),
        }
        used
    }

    /// Takes `data` up to and including its first LF. A line found whole in `data` is handed to
    /// `on_line` in place; only a line spanning segments is gathered in `buf` (then wiped).
    /// Returns the bytes taken and what became of the line.
    fn take_line<R>(&mut self, data: &[u8], limit: usize, on_line: impl FnOnce(&[u8]) -> R) -> (usize, Line<R>) {
        let (piece, complete) = match data.iter().position(|&b| b == b'\n') {
            Some(lf) => (data.get(..=lf).unwrap_or(data), true),
            None => (data, false),
        };
        if self.buf.len().saturating_add(piece.len()) > limit {
            return (data.len(), Line::TooLong);
        }
        if !complete {
            self.append(piece, limit);
            return (piece.len(), Line::Partial);
        }
        let result = if self.buf.is_empty() {
            on_line(piece)
        } else {
            self.append(piece, limit);
            let result = on_line(&self.buf);
            self.wipe();
            result
        };
        (piece.len(), Line::Complete(result))
    }

    /// Appends to `buf`, reserving `limit` up front so it never reallocates (a reallocation would
    /// leave an unwiped copy of a partial head in freed memory).
    fn append(&mut self, bytes: &[u8], limit: usize) {
        if self.buf.is_empty() {
            self.buf.reserve_exact(limit);
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Zeroes and frees `buf`: it may hold Authorization or Cookie values, which must not linger.
    fn wipe(&mut self) {
        if self.buf.capacity() > 0 {
            self.buf.fill(0);
            std::hint::black_box(&mut self.buf);
            self.buf = Vec::new();
        }
    }

    fn finish(&mut self, ts: Timing, out: &mut Vec<Http1Event>) {
        out.push(Http1Event::End { body_size: self.body_size, last_byte: ts });
        self.body_size = 0;
        self.state = State::Head;
    }

    /// Abandons the message in progress and waits for a segment that starts like a message.
    fn desync(&mut self, reason: &'static str, out: &mut Vec<Http1Event>) {
        self.wipe();
        self.body_size = 0;
        if self.switch_pending && self.state == State::Head {
            // Not HTTP after a request that asked to switch protocols: the switch happened.
            self.state = State::Upgraded;
            return;
        }
        self.state = State::Desynced;
        out.push(Http1Event::Desync { reason });
    }
}

/// RFC 9112 §6.3 for requests: no framing header means no body.
fn request_plan(body: BodyFraming) -> BodyPlan {
    match body {
        BodyFraming::Chunked => BodyPlan::Chunked,
        BodyFraming::Length(n) => BodyPlan::Length(n),
        BodyFraming::Unframed => BodyPlan::Empty,
        BodyFraming::OtherCoding => BodyPlan::Broken("request Transfer-Encoding does not end in chunked"),
        BodyFraming::BadLength => BodyPlan::Broken("invalid Content-Length"),
    }
}

/// Outcome of [`Http1Decoder::take_line`].
enum Line<R> {
    /// The line continues in a later segment.
    Partial,
    /// The line is complete; what the caller computed from it.
    Complete(R),
    /// The line would exceed its limit.
    TooLong,
}

/// Desync reason after a head whose end was not captured; a `Head` with the captured lines
/// precedes it when the start line was captured.
pub const TRUNCATED_HEAD: &str = "head not fully captured";

#[cfg(test)]
mod tests;
