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

use crate::{span::AttrStr, stream::Segment};

/// Largest head (start line + headers) we buffer; a bigger one desynchronises the decoder.
pub const HEAD_LIMIT: usize = 16 * 1024;
/// Most headers one head may carry; more desynchronises the decoder.
pub const MAX_HEADERS: usize = 64;
/// Longest chunk-size line (extensions included) we buffer.
const CHUNK_LINE_LIMIT: usize = 4 * 1024;
/// Longest method token [`looks_like_request`] accepts ("UPDATEREDIRECTREF" has 17 bytes).
const MAX_METHOD_LEN: usize = 20;
/// While a buffered partial head is this small, re-parse it on every segment so garbage is
/// rejected early; past it, only re-parse when a segment brings a line end (keeps cost linear).
const EAGER_PARSE_LEN: usize = 64;

/// Which side of the exchange this direction carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Request,
    Response,
}

/// Kernel timestamps of the segment holding a given byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub enter_ns: u64,
    pub exit_ns: u64,
}

impl Timing {
    fn of(seg: &Segment<'_>) -> Self {
        Timing { enter_ns: seg.enter_ns, exit_ns: seg.exit_ns }
    }
}

/// What the tracer keeps of a request head. No other header value is ever stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHead {
    /// A standard method is a constant; another one is copied.
    pub method: AttrStr,
    /// Raw request-target, query included.
    pub target: String,
    /// Shared with the connection's earlier requests when they sent the same value.
    pub user_agent: Option<AttrStr>,
    pub host: Option<AttrStr>,
    pub content_length: Option<u64>,
    /// Transfer-Encoding ends with `chunked`.
    pub chunked: bool,
    /// `Connection: upgrade` or an `Upgrade` header is present.
    pub upgrade: bool,
}

/// What the tracer keeps of a response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub content_length: Option<u64>,
    /// Transfer-Encoding ends with `chunked`.
    pub chunked: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    Request(RequestHead),
    Response(ResponseHead),
}

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

/// What the framing headers say, before the status code or request method is considered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyFraming {
    Chunked,
    /// Transfer-Encoding present but not ending in chunked.
    OtherCoding,
    Length(u64),
    BadLength,
    /// Neither Content-Length nor Transfer-Encoding.
    Unframed,
}

enum Parsed {
    Partial,
    Complete { len: usize, head: Head, body: BodyFraming },
    Error(&'static str),
}

/// Desync reason after a head whose end was not captured; a `Head` with the captured lines
/// precedes it when the start line was captured.
pub const TRUNCATED_HEAD: &str = "head not fully captured";

/// The complete lines of a partial head, closed as if it ended there.
fn salvage_head(kind: MessageKind, partial: &[u8], repeated: &mut RepeatedFields) -> Option<Head> {
    let end = partial.iter().rposition(|&b| b == b'\n')? + 1;
    let mut closed = partial[..end].to_vec();
    closed.extend_from_slice(b"\r\n");
    let head = match parse_head(kind, &closed, repeated) {
        Parsed::Complete { head, .. } => Some(head),
        _ => None,
    };
    closed.fill(0); // may hold credentials
    head
}

fn parse_head(kind: MessageKind, bytes: &[u8], repeated: &mut RepeatedFields) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match kind {
        MessageKind::Request => {
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(bytes) {
                Ok(httparse::Status::Complete(len)) => {
                    let fields = Fields::scan(req.headers);
                    let head = RequestHead {
                        method: method_text(req.method.unwrap_or_default()),
                        target: req.path.unwrap_or_default().to_owned(),
                        user_agent: fields.user_agent.map(|v| repeated.user_agent.text(v)),
                        host: fields.host.map(|v| repeated.host.text(v)),
                        content_length: fields.content_length.value(),
                        chunked: fields.chunked(),
                        upgrade: fields.connection_upgrade || fields.upgrade,
                    };
                    Parsed::Complete { len, head: Head::Request(head), body: fields.framing() }
                }
                Ok(httparse::Status::Partial) => Parsed::Partial,
                Err(e) => Parsed::Error(parse_error_reason(e)),
            }
        }
        MessageKind::Response => {
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(bytes) {
                Ok(httparse::Status::Complete(len)) => {
                    let fields = Fields::scan(resp.headers);
                    let head = ResponseHead {
                        status: resp.code.unwrap_or_default(),
                        content_length: fields.content_length.value(),
                        chunked: fields.chunked(),
                    };
                    Parsed::Complete { len, head: Head::Response(head), body: fields.framing() }
                }
                Ok(httparse::Status::Partial) => Parsed::Partial,
                Err(e) => Parsed::Error(parse_error_reason(e)),
            }
        }
    }
}

fn parse_error_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "not HTTP/1.x",
        _ => "malformed head",
    }
}

/// The header values we look at, borrowed from the head; only some are ever copied out.
#[derive(Default)]
struct Fields<'h> {
    content_length: ContentLength,
    /// `Some(final coding is chunked)` when Transfer-Encoding lists any coding.
    transfer_coding: Option<bool>,
    connection_upgrade: bool,
    upgrade: bool,
    user_agent: Option<&'h [u8]>,
    host: Option<&'h [u8]>,
}

impl<'h> Fields<'h> {
    fn scan(headers: &[httparse::Header<'h>]) -> Self {
        let mut f = Fields::default();
        for h in headers {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                f.content_length = f.content_length.merge(h.value);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                if let Some(last) = list_items(h.value).last() {
                    f.transfer_coding = Some(last.eq_ignore_ascii_case(b"chunked"));
                }
            } else if name.eq_ignore_ascii_case("connection") {
                f.connection_upgrade |= list_items(h.value).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
            } else if name.eq_ignore_ascii_case("upgrade") {
                f.upgrade = true;
            } else if name.eq_ignore_ascii_case("user-agent") {
                f.user_agent = f.user_agent.or(Some(h.value));
            } else if name.eq_ignore_ascii_case("host") {
                f.host = f.host.or(Some(h.value));
            }
        }
        f
    }

    fn chunked(&self) -> bool {
        self.transfer_coding == Some(true)
    }

    /// Transfer-Encoding overrides Content-Length (RFC 9112 §6.3).
    fn framing(&self) -> BodyFraming {
        match (self.transfer_coding, self.content_length) {
            (Some(true), _) => BodyFraming::Chunked,
            (Some(false), _) => BodyFraming::OtherCoding,
            (None, ContentLength::Value(n)) => BodyFraming::Length(n),
            (None, ContentLength::Invalid) => BodyFraming::BadLength,
            (None, ContentLength::Absent) => BodyFraming::Unframed,
        }
    }
}

/// Content-Length across all its headers: repeated identical values are fine, anything else is
/// invalid (RFC 9110 §8.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ContentLength {
    #[default]
    Absent,
    Value(u64),
    Invalid,
}

impl ContentLength {
    fn merge(self, raw: &[u8]) -> Self {
        raw.split(|&b| b == b',').fold(self, |acc, item| match (acc, parse_decimal(trim_ows(item))) {
            (ContentLength::Absent, Some(n)) => ContentLength::Value(n),
            (ContentLength::Value(a), Some(b)) if a == b => acc,
            _ => ContentLength::Invalid,
        })
    }

    fn value(self) -> Option<u64> {
        match self {
            ContentLength::Value(n) => Some(n),
            _ => None,
        }
    }
}

/// Non-empty comma-separated list items, whitespace trimmed.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|item| !item.is_empty())
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i.saturating_add(1));
    bytes.get(start..end).unwrap_or_default()
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let d = char::from(b).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// `1a3;ext=val\r\n` → 0x1a3. Extensions are ignored; overflow or a non-hex size is `None`.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let size = trim_ows(line.split(|&b| b == b';').next().unwrap_or_default());
    if size.is_empty() {
        return None;
    }
    size.iter().try_fold(0u64, |acc, &b| {
        let d = char::from(b).to_digit(16)?;
        acc.checked_mul(16)?.checked_add(u64::from(d))
    })
}

/// A standard method as a constant (httparse has checked that it is a token).
fn method_text(method: &str) -> AttrStr {
    match super::k8s::STANDARD_METHODS.iter().find(|(m, _)| *m == method) {
        Some((m, _)) => AttrStr::Static(m),
        None => AttrStr::Owned(method.to_owned()),
    }
}

/// Header values a client repeats on every request of a connection (User-Agent, Host): the
/// last one is kept, and a request that sends it again shares it instead of copying it.
#[derive(Debug, Default)]
struct RepeatedFields {
    user_agent: LastValue,
    host: LastValue,
}

/// The last value, as spans carry it: a repeat is a clone (a copy in place when short, the
/// shared text otherwise).
#[derive(Debug, Default)]
struct LastValue(Option<AttrStr>);

impl LastValue {
    fn text(&mut self, bytes: &[u8]) -> AttrStr {
        if let Some(last) = &self.0
            && last.as_bytes() == bytes
        {
            return last.clone();
        }
        // Valid UTF-8, the usual case, through the standard library's faster check.
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => AttrStr::shareable(text),
            Err(_) => AttrStr::shareable(&String::from_utf8_lossy(bytes)),
        };
        self.0 = Some(text.clone());
        text
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    // ---- Wire bytes -------------------------------------------------------------------------
    // Recorded with a raw socket on the other end (see each comment); byte for byte.

    /// `curl -v 'http://127.0.0.1:18080/api/v1/namespaces/default/pods?limit=500'` (curl 7.88.1).
    const CURL_GET: &[u8] = b"GET /api/v1/namespaces/default/pods?limit=500 HTTP/1.1\r\n\
      Host: 127.0.0.1:18080\r\n\
      User-Agent: curl/7.88.1\r\n\
      Accept: */*\r\n\
      \r\n";

    /// `curl -X POST -H 'Authorization: Bearer s3cr3t-t0ken' -H 'Content-Type: application/json'
    /// -d '{...}' http://127.0.0.1:18080/api/v1/namespaces/default/configmaps`.
    const CURL_POST: &[u8] = b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\n\
      Host: 127.0.0.1:18080\r\n\
      User-Agent: curl/7.88.1\r\n\
      Accept: */*\r\n\
      Authorization: Bearer s3cr3t-t0ken\r\n\
      Content-Type: application/json\r\n\
      Content-Length: 65\r\n\
      \r\n\
      {\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"demo\"}}";

    /// `curl -X PUT -H 'Transfer-Encoding: chunked' --data-binary @up.txt
    /// http://127.0.0.1:18080/upload`.
    const CURL_CHUNKED_PUT: &[u8] = b"PUT /upload HTTP/1.1\r\n\
      Host: 127.0.0.1:18080\r\n\
      User-Agent: curl/7.88.1\r\n\
      Accept: */*\r\n\
      Transfer-Encoding: chunked\r\n\
      Content-Type: application/x-www-form-urlencoded\r\n\
      \r\n\
      14\r\n\
      hello chunked world\n\
      \r\n\
      0\r\n\
      \r\n";

    /// nginx/1.22.1, one keep-alive connection: `GET /status.json` then `GET /missing`.
    const NGINX_KEEPALIVE: &[u8] = b"HTTP/1.1 200 OK\r\n\
      Server: nginx/1.22.1\r\n\
      Date: Wed, 25 Nov 2026 17:02:39 GMT\r\n\
      Content-Type: application/json\r\n\
      Content-Length: 55\r\n\
      Last-Modified: Wed, 25 Nov 2026 17:02:35 GMT\r\n\
      Connection: keep-alive\r\n\
      ETag: \"6b0714ab-37\"\r\n\
      Accept-Ranges: bytes\r\n\
      \r\n\
      {\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Success\"}\n\
      HTTP/1.1 404 Not Found\r\n\
      Server: nginx/1.22.1\r\n\
      Date: Wed, 25 Nov 2026 17:02:39 GMT\r\n\
      Content-Type: text/html\r\n\
      Content-Length: 153\r\n\
      Connection: close\r\n\
      \r\n\
      <html>\r\n\
      <head><title>404 Not Found</title></head>\r\n\
      <body>\r\n\
      <center><h1>404 Not Found</h1></center>\r\n\
      <hr><center>nginx/1.22.1</center>\r\n\
      </body>\r\n\
      </html>\r\n";

    /// nginx/1.22.1 with `gzip on`: `GET /big.txt` with `Accept-Encoding: gzip` → chunked.
    const NGINX_GZIP_CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\n\
      Server: nginx/1.22.1\r\n\
      Date: Wed, 25 Nov 2026 17:02:39 GMT\r\n\
      Content-Type: text/plain\r\n\
      Last-Modified: Wed, 25 Nov 2026 17:02:35 GMT\r\n\
      Transfer-Encoding: chunked\r\n\
      Connection: close\r\n\
      ETag: W/\"6b0714ab-bb9\"\r\n\
      Content-Encoding: gzip\r\n\
      \r\n\
      32\r\n\
      \x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03\xed\xd0!\x01\x00\x00\x00\x02\xa0\xeeb\xe7{\xc3\x00\x13h1`\xc0\x80\x01\x03\x06\x0c\x180`\xe0} \x03_\x9f!\x0c\xb9\x0b\x00\x00\r\n\
      0\r\n\
      \r\n";

    /// nginx/1.22.1: `GET /status.json` with a matching `If-None-Match`.
    const NGINX_304: &[u8] = b"HTTP/1.1 304 Not Modified\r\n\
      Server: nginx/1.22.1\r\n\
      Date: Wed, 25 Nov 2026 17:02:41 GMT\r\n\
      Last-Modified: Wed, 25 Nov 2026 17:02:35 GMT\r\n\
      Connection: close\r\n\
      ETag: \"6b0714ab-37\"\r\n\
      \r\n";

    /// nginx/1.22.1: `HEAD /status.json` (Content-Length of the GET body, no body).
    const NGINX_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
      Server: nginx/1.22.1\r\n\
      Date: Wed, 25 Nov 2026 17:02:39 GMT\r\n\
      Content-Type: application/json\r\n\
      Content-Length: 55\r\n\
      Last-Modified: Wed, 25 Nov 2026 17:02:35 GMT\r\n\
      Connection: close\r\n\
      ETag: \"6b0714ab-37\"\r\n\
      Accept-Ranges: bytes\r\n\
      \r\n";

    /// `python3 -m http.server` (3.11.7): HTTP/1.0 with Content-Length.
    const PY_SIMPLE: &[u8] = b"HTTP/1.0 200 OK\r\n\
      Server: SimpleHTTP/0.6 Python/3.11.7\r\n\
      Date: Wed, 25 Nov 2026 17:02:45 GMT\r\n\
      Content-type: application/json\r\n\
      Content-Length: 55\r\n\
      Last-Modified: Wed, 25 Nov 2026 17:02:35 GMT\r\n\
      \r\n\
      {\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Success\"}\n";

    /// Python `BaseHTTPRequestHandler` writing a body without Content-Length: ends at close.
    const PY_NO_LENGTH: &[u8] = b"HTTP/1.0 200 OK\r\n\
      Server: BaseHTTP/0.6 Python/3.11.7\r\n\
      Date: Wed, 25 Nov 2026 17:02:45 GMT\r\n\
      Content-Type: text/plain\r\n\
      \r\n\
      streamed without length\n";

    // Go net/http formats (no Go toolchain here to record them; written to its exact layout:
    // handler headers sorted, then Date/Content-Type/Transfer-Encoding, lower-case hex sizes).

    /// kubectl (client-go) starting a watch.
    const KUBECTL_WATCH: &[u8] = b"GET /api/v1/namespaces/default/pods?resourceVersion=4711&watch=true HTTP/1.1\r\n\
      Host: 10.96.0.1:443\r\n\
      User-Agent: kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc\r\n\
      Accept: application/json\r\n\
      Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXdhdGNo\r\n\
      Accept-Encoding: gzip\r\n\
      \r\n";

    /// kube-apiserver's watch response head; the chunked body never ends.
    const APISERVER_WATCH_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
      Audit-Id: 0b8f5c2e-6d1c-4c55-9a43-2f1f7f0e3b7a\r\n\
      Cache-Control: no-cache, private\r\n\
      Content-Type: application/json\r\n\
      X-Kubernetes-Pf-Flowschema-Uid: 8d9e5a2c-1f2b-4e3a-9c0d-5b6a7e8f9a0b\r\n\
      X-Kubernetes-Pf-Prioritylevel-Uid: 1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d\r\n\
      Date: Wed, 25 Nov 2026 17:10:00 GMT\r\n\
      Transfer-Encoding: chunked\r\n\
      \r\n";

    /// kubectl exec asking for SPDY.
    const KUBECTL_EXEC: &[u8] = b"POST /api/v1/namespaces/default/pods/web-0/exec?command=sh&container=web&stdin=true&stdout=true&tty=true HTTP/1.1\r\n\
      Host: 10.96.0.1:443\r\n\
      User-Agent: kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc\r\n\
      Content-Length: 0\r\n\
      Connection: Upgrade\r\n\
      Upgrade: SPDY/3.1\r\n\
      X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
      \r\n";

    /// kube-apiserver accepting it.
    const APISERVER_101: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\
      Connection: Upgrade\r\n\
      Upgrade: SPDY/3.1\r\n\
      X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
      Date: Wed, 25 Nov 2026 17:12:00 GMT\r\n\
      \r\n";

    /// Start of a SPDY/3.1 SYN_STREAM control frame, as sent right after the switch.
    const SPDY_FRAME: &[u8] = b"\x80\x03\x00\x01\x00\x00\x00\x32\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x78\xbb";

    /// Start of a TLS 1.2+ ClientHello.
    const TLS_HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x8a\x1f\x00\x2b";

    /// Go net/http handler writing 2500 bytes without Content-Length: its 2048-byte buffer
    /// becomes the first chunk (0x800), the rest (0x1c4) a second one, then the last chunk.
    fn go_chunked_response() -> Vec<u8> {
        let mut wire = b"HTTP/1.1 200 OK\r\n\
          Date: Wed, 25 Nov 2026 17:10:00 GMT\r\n\
          Content-Type: text/plain; charset=utf-8\r\n\
          Transfer-Encoding: chunked\r\n\
          \r\n"
            .to_vec();
        for (size_line, len) in [(&b"800\r\n"[..], 2048), (&b"1c4\r\n"[..], 452)] {
            wire.extend_from_slice(size_line);
            wire.extend((0..len).map(|i| b'a' + (i % 26) as u8));
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        wire
    }

    /// One watch event as kube-apiserver flushes it: one chunk holding a JSON line.
    fn watch_chunk(event_type: &str, name: &str, rv: u32) -> Vec<u8> {
        let json = format!(
            "{{\"type\":\"{event_type}\",\"object\":{{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":\
             {{\"name\":\"{name}\",\"namespace\":\"default\",\"resourceVersion\":\"{rv}\"}}}}}}\n"
        );
        let mut chunk = format!("{:x}\r\n", json.len()).into_bytes();
        chunk.extend_from_slice(json.as_bytes());
        chunk.extend_from_slice(b"\r\n");
        chunk
    }

    // ---- Helpers ------------------------------------------------------------------------------

    /// Segment `n` has enter = n µs and exit = n µs + 7 ns, so both fields are checked.
    fn ts(n: u64) -> Timing {
        Timing { enter_ns: n * 1000, exit_ns: n * 1000 + 7 }
    }

    fn seg(data: &[u8], n: u64) -> Segment<'_> {
        Segment { data, uncaptured_after: 0, enter_ns: n * 1000, exit_ns: n * 1000 + 7 }
    }

    fn partial(data: &[u8], uncaptured_after: u64, n: u64) -> Segment<'_> {
        Segment { uncaptured_after, ..seg(data, n) }
    }

    fn request(method: &str, target: &str, ua: Option<&str>, host: Option<&str>) -> RequestHead {
        let text = |s: &str| AttrStr::Owned(s.to_owned());
        RequestHead {
            method: text(method),
            target: target.into(),
            user_agent: ua.map(text),
            host: host.map(text),
            content_length: None,
            chunked: false,
            upgrade: false,
        }
    }

    #[test]
    fn repeated_header_values_are_shared_and_exact() {
        let mut last = LastValue::default();
        let ua = b"kubectl/v1.31.0 (linux/amd64) kubernetes/7c5ddbd";
        let (AttrStr::Shared(a), AttrStr::Shared(b)) = (last.text(ua), last.text(ua)) else {
            panic!("header values are shared text");
        };
        assert!(Arc::ptr_eq(&a, &b), "a repeated value is not copied again");
        // Short ones are held in place, repeated or not.
        assert!(matches!(last.text(b"kubectl/v1.31"), AttrStr::Inline(v) if v.as_str() == "kubectl/v1.31"));
        assert!(matches!(last.text(b"kubectl/v1.31"), AttrStr::Inline(v) if v.as_str() == "kubectl/v1.31"));
        assert_eq!(&*last.text(b"client-go/1.0"), "client-go/1.0");
        assert_eq!(&*last.text(b"bad \xff"), "bad \u{fffd}");
        assert_eq!(&*last.text(b"bad \xff"), "bad \u{fffd}");
        assert_eq!(&*last.text(b"kubectl/v1.31"), "kubectl/v1.31");
        assert!(matches!(method_text("GET"), AttrStr::Static("GET")));
        assert!(matches!(method_text("PROPFIND"), AttrStr::Owned(m) if m == "PROPFIND"));
    }

    fn response(status: u16, content_length: Option<u64>, chunked: bool) -> Head {
        Head::Response(ResponseHead { status, content_length, chunked })
    }

    fn curl_get_head() -> Head {
        Head::Request(request(
            "GET",
            "/api/v1/namespaces/default/pods?limit=500",
            Some("curl/7.88.1"),
            Some("127.0.0.1:18080"),
        ))
    }

    fn curl_post_head() -> Head {
        Head::Request(RequestHead {
            content_length: Some(65),
            ..request("POST", "/api/v1/namespaces/default/configmaps", Some("curl/7.88.1"), Some("127.0.0.1:18080"))
        })
    }

    fn kubectl_watch_head() -> Head {
        Head::Request(request(
            "GET",
            "/api/v1/namespaces/default/pods?resourceVersion=4711&watch=true",
            Some("kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc"),
            Some("10.96.0.1:443"),
        ))
    }

    /// Expected event, with byte offsets into the wire standing in for timings.
    enum Exp {
        /// Head, offset of the message's first byte.
        Head(Head, usize),
        /// End: body size, offset of the message's last byte.
        End(u64, usize),
    }

    /// Turns offsets into the timings of the segments holding them.
    fn resolve(exp: &[Exp], seg_of: impl Fn(usize) -> u64) -> Vec<Http1Event> {
        exp.iter()
            .map(|e| match e {
                Exp::Head(head, first) => Http1Event::Head { head: head.clone(), first_byte: ts(seg_of(*first)) },
                Exp::End(body_size, last) => Http1Event::End { body_size: *body_size, last_byte: ts(seg_of(*last)) },
            })
            .collect()
    }

    fn decode(dec: &mut Http1Decoder, segs: &[Segment<'_>]) -> Vec<Http1Event> {
        let mut out = Vec::new();
        for s in segs {
            dec.feed(s, &mut out);
            assert!(dec.buf.len() <= HEAD_LIMIT);
        }
        out
    }

    /// Feeds `wire` whole, split in two at every byte boundary, and one byte per segment; each
    /// time the events must match `exp`, timed by the segments holding the given bytes.
    fn check_splits(kind: MessageKind, wire: &[u8], exp: &[Exp], prep: impl Fn(&mut Http1Decoder)) {
        let run = |segs: &[Segment<'_>]| {
            let mut dec = Http1Decoder::new(kind);
            prep(&mut dec);
            let out = decode(&mut dec, segs);
            assert!(!dec.is_desynced(), "{dec:?}");
            assert!(dec.buf.is_empty(), "nothing may stay buffered after complete messages");
            out
        };
        assert_eq!(run(&[seg(wire, 1)]), resolve(exp, |_| 1), "whole");
        for cut in 0..=wire.len() {
            let (a, b) = wire.split_at(cut);
            let got = run(&[seg(a, 1), seg(b, 2)]);
            assert_eq!(got, resolve(exp, |o| if o < cut { 1 } else { 2 }), "split at {cut}");
        }
        let bytes: Vec<Segment<'_>> = wire.chunks(1).zip(1..).map(|(b, n)| seg(b, n)).collect();
        assert_eq!(run(&bytes), resolve(exp, |o| o as u64 + 1), "1-byte segments");
    }

    fn offset_of(wire: &[u8], needle: &[u8]) -> usize {
        wire.windows(needle.len()).position(|w| w == needle).expect("needle in wire")
    }

    /// Small deterministic generator (Knuth's MMIX LCG) for the robustness tests.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Events must nest: End only closes an open Head, Head never opens twice.
    fn assert_well_formed(events: &[Http1Event]) {
        let mut open = false;
        for e in events {
            match e {
                Http1Event::Head { .. } => {
                    assert!(!open, "{events:?}");
                    open = true;
                }
                Http1Event::End { .. } => {
                    assert!(open, "{events:?}");
                    open = false;
                }
                Http1Event::Desync { .. } => open = false,
            }
        }
    }

    // ---- Detection ----------------------------------------------------------------------------

    #[test]
    fn detects_message_starts() {
        for req in [CURL_GET, CURL_POST, CURL_CHUNKED_PUT, KUBECTL_WATCH, KUBECTL_EXEC, b"M-SEARCH * HTTP/1.1"] {
            assert!(looks_like_request(req));
            assert!(!looks_like_response(req));
        }
        for resp in [NGINX_KEEPALIVE, NGINX_304, PY_SIMPLE, PY_NO_LENGTH, APISERVER_WATCH_HEAD] {
            assert!(looks_like_response(resp));
            assert!(!looks_like_request(resp));
        }
        let not_http: [&[u8]; 9] = [
            b"",
            b"GET",
            b" GET / HTTP/1.1",
            b"get / HTTP/1.1",
            b"GET  / HTTP/1.1",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"{\"kind\":\"Status\"}",
            TLS_HELLO,
            SPDY_FRAME,
        ];
        for data in not_http {
            assert!(!looks_like_request(data), "{data:?}");
            assert!(!looks_like_response(data), "{data:?}");
        }
        assert!(!looks_like_response(b"HTTP/2 200"));
    }

    // ---- Whole messages at every split --------------------------------------------------------

    #[test]
    fn curl_get_at_every_split() {
        let exp = [Exp::Head(curl_get_head(), 0), Exp::End(0, CURL_GET.len() - 1)];
        check_splits(MessageKind::Request, CURL_GET, &exp, |_| {});
    }

    #[test]
    fn curl_post_body_at_every_split() {
        let exp = [Exp::Head(curl_post_head(), 0), Exp::End(65, CURL_POST.len() - 1)];
        check_splits(MessageKind::Request, CURL_POST, &exp, |_| {});
    }

    #[test]
    fn credentials_are_never_kept() {
        for wire in [CURL_POST, KUBECTL_WATCH] {
            for cut in 0..=wire.len() {
                let (a, b) = wire.split_at(cut);
                let mut dec = Http1Decoder::new(MessageKind::Request);
                let mut out = decode(&mut dec, &[seg(a, 1)]);
                assert!(!format!("{dec:?}").contains("Bearer"));
                out.extend(decode(&mut dec, &[seg(b, 2)]));
                let shown = format!("{out:?}{dec:?}");
                assert!(!shown.contains("s3cr3t") && !shown.contains("Bearer"), "{shown}");
                assert_eq!(dec.buf.capacity(), 0, "head buffer must be wiped and freed");
            }
        }
    }

    #[test]
    fn curl_chunked_put_at_every_split() {
        let head = Head::Request(RequestHead {
            chunked: true,
            ..request("PUT", "/upload", Some("curl/7.88.1"), Some("127.0.0.1:18080"))
        });
        let exp = [Exp::Head(head, 0), Exp::End(20, CURL_CHUNKED_PUT.len() - 1)];
        check_splits(MessageKind::Request, CURL_CHUNKED_PUT, &exp, |_| {});
    }

    #[test]
    fn nginx_keep_alive_at_every_split() {
        let second = offset_of(NGINX_KEEPALIVE, b"HTTP/1.1 404");
        let exp = [
            Exp::Head(response(200, Some(55), false), 0),
            Exp::End(55, second - 1),
            Exp::Head(response(404, Some(153), false), second),
            Exp::End(153, NGINX_KEEPALIVE.len() - 1),
        ];
        check_splits(MessageKind::Response, NGINX_KEEPALIVE, &exp, |_| {});
    }

    #[test]
    fn nginx_gzip_chunked_at_every_split() {
        let exp = [Exp::Head(response(200, None, true), 0), Exp::End(50, NGINX_GZIP_CHUNKED.len() - 1)];
        check_splits(MessageKind::Response, NGINX_GZIP_CHUNKED, &exp, |_| {});
    }

    #[test]
    fn not_modified_has_no_body() {
        let mut wire = NGINX_304.to_vec();
        wire.extend_from_slice(PY_SIMPLE);
        let exp = [
            Exp::Head(response(304, None, false), 0),
            Exp::End(0, NGINX_304.len() - 1),
            Exp::Head(response(200, Some(55), false), NGINX_304.len()),
            Exp::End(55, wire.len() - 1),
        ];
        check_splits(MessageKind::Response, &wire, &exp, |_| {});
    }

    #[test]
    fn head_request_response_has_no_body() {
        let mut wire = NGINX_HEAD.to_vec();
        wire.extend_from_slice(NGINX_KEEPALIVE);
        let second = NGINX_HEAD.len();
        let third = second + offset_of(NGINX_KEEPALIVE, b"HTTP/1.1 404");
        let exp = [
            Exp::Head(response(200, Some(55), false), 0),
            Exp::End(0, second - 1),
            Exp::Head(response(200, Some(55), false), second),
            Exp::End(55, third - 1),
            Exp::Head(response(404, Some(153), false), third),
            Exp::End(153, wire.len() - 1),
        ];
        check_splits(MessageKind::Response, &wire, &exp, |d| d.expect_no_body_for_next_response());

        // Without being told, the decoder takes 55 bytes of the next response for a body and
        // then finds itself mid-message.
        let mut dec = Http1Decoder::new(MessageKind::Response);
        let out = decode(&mut dec, &[seg(&wire, 1)]);
        assert!(matches!(
            out[..],
            [Http1Event::Head { .. }, Http1Event::End { body_size: 55, .. }, Http1Event::Desync { .. }]
        ));
    }

    #[test]
    fn python_http10_with_length_at_every_split() {
        let exp = [Exp::Head(response(200, Some(55), false), 0), Exp::End(55, PY_SIMPLE.len() - 1)];
        check_splits(MessageKind::Response, PY_SIMPLE, &exp, |_| {});
    }

    #[test]
    fn python_body_without_length_ends_at_close() {
        for cut in 0..=PY_NO_LENGTH.len() {
            let (a, b) = PY_NO_LENGTH.split_at(cut);
            let mut dec = Http1Decoder::new(MessageKind::Response);
            let mut out = decode(&mut dec, &[seg(a, 1), seg(b, 2)]);
            assert_eq!(out.len(), 1, "only the head before close: {out:?}");
            dec.on_close(ts(9), &mut out);
            let expected = Http1Event::End { body_size: 24, last_byte: ts(9) };
            assert_eq!(out.last(), Some(&expected), "split at {cut}");
        }
    }

    #[test]
    fn go_chunked_response_at_every_split() {
        let wire = go_chunked_response();
        let exp = [Exp::Head(response(200, None, true), 0), Exp::End(2500, wire.len() - 1)];
        check_splits(MessageKind::Response, &wire, &exp, |_| {});
    }

    #[test]
    fn chunk_extensions_and_trailers_at_every_split() {
        let wire = b"HTTP/1.1 200 OK\r\n\
          Transfer-Encoding: gzip, chunked\r\n\
          Trailer: X-Checksum\r\n\
          \r\n\
          5;name=\"a;b\"\r\n\
          hello\r\n\
          00006 ; ext\r\n\
          \x20world\r\n\
          0\r\n\
          X-Checksum: 5d41402a\r\n\
          X-Other: 1\r\n\
          \r\n";
        let exp = [Exp::Head(response(200, None, true), 0), Exp::End(11, wire.len() - 1)];
        check_splits(MessageKind::Response, wire, &exp, |_| {});
    }

    #[test]
    fn kubectl_watch_request_at_every_split() {
        let exp = [Exp::Head(kubectl_watch_head(), 0), Exp::End(0, KUBECTL_WATCH.len() - 1)];
        check_splits(MessageKind::Request, KUBECTL_WATCH, &exp, |_| {});
    }

    #[test]
    fn pipelined_requests_in_one_segment() {
        let wire = [CURL_GET, CURL_POST, CURL_GET, KUBECTL_WATCH].concat();
        let (b, c, d) = (CURL_GET.len(), CURL_GET.len() + CURL_POST.len(), 2 * CURL_GET.len() + CURL_POST.len());
        let exp = [
            Exp::Head(curl_get_head(), 0),
            Exp::End(0, b - 1),
            Exp::Head(curl_post_head(), b),
            Exp::End(65, c - 1),
            Exp::Head(curl_get_head(), c),
            Exp::End(0, d - 1),
            Exp::Head(kubectl_watch_head(), d),
            Exp::End(0, wire.len() - 1),
        ];
        check_splits(MessageKind::Request, &wire, &exp, |_| {});
    }

    #[test]
    fn keep_alive_sequence_one_message_per_segment() {
        let mut dec = Http1Decoder::new(MessageKind::Request);
        let out = decode(&mut dec, &[seg(CURL_POST, 1), seg(b"\r\n", 2), seg(CURL_GET, 3), seg(CURL_CHUNKED_PUT, 4)]);
        let kinds: Vec<_> = out
            .iter()
            .map(|e| match e {
                Http1Event::Head { first_byte, .. } => ("head", *first_byte),
                Http1Event::End { last_byte, .. } => ("end", *last_byte),
                Http1Event::Desync { .. } => ("desync", Timing::default()),
            })
            .collect();
        assert_eq!(
            kinds,
            [("head", ts(1)), ("end", ts(1)), ("head", ts(3)), ("end", ts(3)), ("head", ts(4)), ("end", ts(4))]
        );
    }

    // ---- Watch: head now, body forever --------------------------------------------------------

    #[test]
    fn watch_response_head_is_reported_before_the_endless_body() {
        let mut dec = Http1Decoder::new(MessageKind::Response);
        let mut out = decode(&mut dec, &[seg(APISERVER_WATCH_HEAD, 1)]);
        assert_eq!(out, [Http1Event::Head { head: response(200, None, true), first_byte: ts(1) }]);

        // Reads that hold whole chunks (the usual case) are counted in place, never copied.
        for rv in 0..3 {
            dec.feed(&seg(&watch_chunk("ADDED", "web", rv), 2), &mut out);
            assert_eq!(dec.buf.capacity(), 0);
        }

        let mut stream = Vec::new();
        for rv in 0..200 {
            stream.extend(watch_chunk(
                ["ADDED", "MODIFIED", "DELETED"][rv % 3],
                &format!("web-{rv}"),
                4711 + rv as u32,
            ));
        }
        // Uneven reads that cut chunk-size lines, payloads and CRLFs alike.
        let mut rng = Lcg(7);
        let mut rest = stream.as_slice();
        let mut n = 2;
        while !rest.is_empty() {
            let (a, b) = rest.split_at((1 + rng.below(300)).min(rest.len()));
            dec.feed(&seg(a, n), &mut out);
            assert!(dec.buf.len() <= CHUNK_LINE_LIMIT);
            rest = b;
            n += 1;
        }
        assert_eq!(out.len(), 1, "no End while the watch is open");
        assert!(!dec.is_desynced());
        dec.on_close(ts(n), &mut out);
        assert_eq!(out.len(), 1, "a watch cut by close is abandoned silently");
    }

    // ---- Partial capture ----------------------------------------------------------------------

    #[test]
    fn uncaptured_body_bytes_are_counted() {
        let head = b"PUT /api/v1/namespaces/default/configmaps/big HTTP/1.1\r\n\
          Host: 10.96.0.1:443\r\n\
          Content-Type: application/json\r\n\
          Content-Length: 100000\r\n\
          \r\n";
        let mut first = head.to_vec();
        first.extend_from_slice(&[b'x'; 1000]);
        let mut dec = Http1Decoder::new(MessageKind::Request);
        let out = decode(
            &mut dec,
            &[
                partial(&first, 50_000, 1),
                partial(&[b'y'; 2000], 40_000, 2),
                partial(&[b'z'; 10], 6_990, 3),
                seg(CURL_GET, 4),
            ],
        );
        let Http1Event::Head { head: Head::Request(req), first_byte } = &out[0] else { panic!("{out:?}") };
        assert_eq!((req.content_length, *first_byte), (Some(100_000), ts(1)));
        assert_eq!(out[1], Http1Event::End { body_size: 100_000, last_byte: ts(3) });
        assert_eq!(out[2..], resolve(&[Exp::Head(curl_get_head(), 0), Exp::End(0, 0)], |_| 4));
    }

    #[test]
    fn uncaptured_chunk_payload_is_skipped() {
        let wire = go_chunked_response();
        let payload = offset_of(&wire, b"800\r\n") + 5;
        // The capture stops 100 bytes into the first chunk; the rest of that syscall is counted.
        let first = &wire[..payload + 100];
        let resume = payload + 2048 + 2; // next chunk-size line starts a later read
        let mut dec = Http1Decoder::new(MessageKind::Response);
        let out = decode(&mut dec, &[partial(first, (resume - first.len()) as u64, 1), seg(&wire[resume..], 2)]);
        assert_eq!(out[1], Http1Event::End { body_size: 2500, last_byte: ts(2) });
        assert!(!dec.is_desynced());
    }

    #[test]
    fn uncaptured_bytes_past_the_body_desync() {
        let mut dec = Http1Decoder::new(MessageKind::Request);
        let out = decode(&mut dec, &[partial(CURL_POST, 120, 1)]);
        assert_eq!(out[1], Http1Event::End { body_size: 65, last_byte: ts(1) });
        assert!(matches!(out[2], Http1Event::Desync { .. }));
        assert!(dec.is_desynced());
    }

    #[test]
    fn uncaptured_chunk_size_line_desyncs_then_resyncs_at_a_message_start() {
        let mut dec = Http1Decoder::new(MessageKind::Response);
        let mut first = APISERVER_WATCH_HEAD.to_vec();
        first.extend(watch_chunk("ADDED", "web-0", 1));
        let next = watch_chunk("MODIFIED", "web-0", 2);
        let mut out = decode(&mut dec, &[partial(&first, 40, 1)]);
        assert!(matches!(out.last(), Some(Http1Event::Desync { .. })), "{out:?}");
        assert!(dec.is_desynced());

        // Mid-body bytes, a chunk end, and a message start not at the segment start: all ignored.
        let mut late = b"garbage ".to_vec();
        late.extend_from_slice(NGINX_304);
        out = decode(&mut dec, &[seg(&next[40..], 2), seg(b"0\r\n\r\n", 3), seg(&late, 4)]);
        assert!(out.is_empty() && dec.is_desynced(), "{out:?}");

        let out = decode(&mut dec, &[seg(NGINX_304, 5)]);
        assert_eq!(out, resolve(&[Exp::Head(response(304, None, false), 0), Exp::End(0, 0)], |_| 5));
        assert!(!dec.is_desynced());
    }

    #[test]
    fn a_head_longer_than_the_capture_still_reports_its_start_line() {
        let mut d = Http1Decoder::new(MessageKind::Request);
        let mut out = Vec::new();
        let head =
            b"GET /api/v1/namespaces/a/pods HTTP/1.1\r\nHost: h\r\nUser-Agent: k/1\r\nAuthorization: Bearer aaaa";
        d.feed(&partial(head, 5000, 1), &mut out);
        match &out[..] {
            [Http1Event::Head { head: Head::Request(r), .. }, Http1Event::Desync { reason: TRUNCATED_HEAD }] => {
                assert_eq!((&*r.method, r.target.as_str()), ("GET", "/api/v1/namespaces/a/pods"));
                assert_eq!(r.user_agent.as_deref(), Some("k/1"));
            }
            other => panic!("{other:?}"),
        }
        // The next message starts a segment: decoding resumes.
        out.clear();
        d.feed(&seg(b"GET /b HTTP/1.1\r\n\r\n", 2), &mut out);
        assert!(matches!(&out[..], [Http1Event::Head { .. }, Http1Event::End { .. }]), "{out:?}");
    }

    #[test]
    fn uncaptured_head_bytes_desync() {
        let mut dec = Http1Decoder::new(MessageKind::Request);
        let out = decode(&mut dec, &[partial(&CURL_GET[..20], 40, 1)]);
        assert!(matches!(out[..], [Http1Event::Desync { .. }]), "{out:?}");
        let out = decode(&mut dec, &[seg(CURL_GET, 2)]);
        assert_eq!(out.len(), 2, "resynchronised on the next request");
    }

    // ---- Bad input ----------------------------------------------------------------------------

    #[test]
    fn garbage_desyncs_early() {
        let cases: [(MessageKind, &[u8]); 6] = [
            (MessageKind::Request, TLS_HELLO),
            (MessageKind::Request, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            (MessageKind::Request, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
            (MessageKind::Response, SPDY_FRAME),
            (MessageKind::Response, b"HTTP/1.1 abc OK\r\n\r\n"),
            (MessageKind::Response, CURL_GET),
        ];
        for (kind, wire) in cases {
            for pieces in [wire.chunks(wire.len()).collect::<Vec<_>>(), wire.chunks(1).collect()] {
                let mut dec = Http1Decoder::new(kind);
                let segs: Vec<_> = pieces.iter().map(|p| seg(p, 1)).collect();
                let out = decode(&mut dec, &segs);
                assert!(matches!(out[..], [Http1Event::Desync { .. }]), "{wire:?}: {out:?}");
                assert!(dec.buf.is_empty());
            }
        }
        // Detected within the first bytes, long before any line end or size limit.
        let mut dec = Http1Decoder::new(MessageKind::Request);
        assert_eq!(decode(&mut dec, &[seg(&TLS_HELLO[..3], 1)]).len(), 1);
    }

    #[test]
    fn oversized_head_desyncs() {
        let mut wire = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        wire.extend(std::iter::repeat_n(b'a', HEAD_LIMIT + 10));
        wire.extend_from_slice(b"\r\n\r\n");
        for size in [wire.len(), 1000, 1] {
            let segs: Vec<_> = wire.chunks(size).map(|p| seg(p, 1)).collect();
            let mut dec = Http1Decoder::new(MessageKind::Request);
            let out = decode(&mut dec, &segs);
            assert_eq!(out, [Http1Event::Desync { reason: "head larger than limit" }], "segments of {size}");
        }
    }

    #[test]
    fn header_count_limit() {
        let head_with = |n: usize| {
            let mut wire = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..n {
                wire.extend(format!("X-H{i}: v\r\n").bytes());
            }
            wire.extend_from_slice(b"\r\n");
            wire
        };
        let mut dec = Http1Decoder::new(MessageKind::Request);
        assert_eq!(decode(&mut dec, &[seg(&head_with(MAX_HEADERS), 1)]).len(), 2);
        let out = decode(&mut dec, &[seg(&head_with(MAX_HEADERS + 1), 2)]);
        assert_eq!(out, [Http1Event::Desync { reason: "too many headers" }]);
    }

    #[test]
    fn content_length_rules() {
        let cases: [(&[u8], Option<u64>, usize); 4] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n{}", Some(2), 2),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nCONTENT-LENGTH: 3\r\n\r\n{}", None, 2),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", None, 2),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", None, 2),
        ];
        for (wire, cl, events) in cases {
            let mut dec = Http1Decoder::new(MessageKind::Response);
            let out = decode(&mut dec, &[seg(wire, 1)]);
            assert_eq!(out.len(), events, "{out:?}");
            let Http1Event::Head { head: Head::Response(resp), .. } = &out[0] else { panic!() };
            assert_eq!(resp.content_length, cl);
            assert_eq!(matches!(out[1], Http1Event::Desync { .. }), cl.is_none());
        }
        // Transfer-Encoding wins over Content-Length.
        let wire =
            b"POST /x HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let mut dec = Http1Decoder::new(MessageKind::Request);
        let out = decode(&mut dec, &[seg(wire, 1)]);
        assert_eq!(out[1], Http1Event::End { body_size: 3, last_byte: ts(1) });
        // A request body framed by some other coding cannot be followed.
        let wire = b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        let out = decode(&mut dec, &[seg(wire, 2)]);
        assert!(matches!(out[1], Http1Event::Desync { .. }));
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(parse_chunk_size(b"1a3\r\n"), Some(0x1a3));
        assert_eq!(parse_chunk_size(b"FFFFFFFFFFFFFFFF\r\n"), Some(u64::MAX));
        assert_eq!(parse_chunk_size(b"000000000000000000010\n"), Some(16));
        assert_eq!(parse_chunk_size(b" 5 ;a=b;c\r\n"), Some(5));
        for bad in [&b"10000000000000000\r\n"[..], b"+5\r\n", b"\r\n", b";x\r\n", b"5x\r\n", b"\xff\r\n"] {
            assert_eq!(parse_chunk_size(bad), None, "{bad:?}");
        }
        let mut dec = Http1Decoder::new(MessageKind::Response);
        let out = decode(&mut dec, &[seg(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 1)]);
        assert_eq!(out[1], Http1Event::Desync { reason: "chunk payload not followed by CRLF" });
    }

    // ---- Protocol switches, interim responses, close ------------------------------------------

    #[test]
    fn switching_protocols_stops_decoding() {
        let wire = [APISERVER_101, SPDY_FRAME].concat();
        let mut dec = Http1Decoder::new(MessageKind::Response);
        let out = decode(&mut dec, &[seg(&wire, 1), seg(NGINX_304, 2)]);
        assert_eq!(out, resolve(&[Exp::Head(response(101, None, false), 0), Exp::End(0, 0)], |_| 1));
        assert!(dec.is_upgraded() && !dec.is_desynced());
    }

    #[test]
    fn upgrade_request_followed_by_frames_stops_quietly() {
        let mut dec = Http1Decoder::new(MessageKind::Request);
        let out = decode(&mut dec, &[seg(KUBECTL_EXEC, 1), seg(SPDY_FRAME, 2), seg(CURL_GET, 3)]);
        let Http1Event::Head { head: Head::Request(req), .. } = &out[0] else { panic!("{out:?}") };
        assert!(req.upgrade && req.content_length == Some(0) && &*req.method == "POST");
        assert_eq!(out[1], Http1Event::End { body_size: 0, last_byte: ts(1) });
        assert_eq!(out.len(), 2, "no desync: the switch is expected");
        assert!(dec.is_upgraded());
    }

    #[test]
    fn refused_upgrade_keeps_decoding_http() {
        let h2c = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
        let mut dec = Http1Decoder::new(MessageKind::Request);
        let out = decode(&mut dec, &[seg(h2c, 1), seg(CURL_GET, 2)]);
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(!dec.is_upgraded());
    }

    #[test]
    fn interim_responses_are_separate_and_keep_the_head_count() {
        let wire = [&b"HTTP/1.1 100 Continue\r\n\r\n"[..], NGINX_HEAD, PY_SIMPLE].concat();
        let second = offset_of(&wire, b"HTTP/1.1 200");
        let third = second + NGINX_HEAD.len();
        let exp = [
            Exp::Head(response(100, None, false), 0),
            Exp::End(0, second - 1),
            Exp::Head(response(200, Some(55), false), second),
            Exp::End(0, third - 1),
            Exp::Head(response(200, Some(55), false), third),
            Exp::End(55, wire.len() - 1),
        ];
        check_splits(MessageKind::Response, &wire, &exp, |d| d.expect_no_body_for_next_response());
    }

    #[test]
    fn close_abandons_unfinished_messages() {
        for wire in
            [&CURL_POST[..100], &CURL_POST[..CURL_POST.len() - 1], &CURL_CHUNKED_PUT[..CURL_CHUNKED_PUT.len() - 3]]
        {
            let mut dec = Http1Decoder::new(MessageKind::Request);
            let mut out = decode(&mut dec, &[seg(wire, 1)]);
            let before = out.len();
            dec.on_close(ts(2), &mut out);
            assert_eq!(out.len(), before);
            assert!(dec.buf.is_empty());
        }
    }

    // ---- Robustness ---------------------------------------------------------------------------

    /// Feeds `wire` in random pieces with random uncaptured gaps, then closes; must not panic.
    fn feed_randomly(rng: &mut Lcg, kind: MessageKind, wire: &[u8]) {
        let mut dec = Http1Decoder::new(kind);
        if rng.below(4) == 0 {
            dec.expect_no_body_for_next_response();
        }
        let mut out = Vec::new();
        let mut rest = wire;
        let mut n = 0;
        while !rest.is_empty() {
            let (a, b) = rest.split_at((1 + rng.below(64)).min(rest.len()));
            let gap = if rng.below(8) == 0 { rng.next() % 100 } else { 0 };
            dec.feed(&partial(a, gap, n), &mut out);
            assert!(dec.buf.len() <= HEAD_LIMIT);
            rest = b;
            n += 1;
        }
        if rng.below(2) == 0 {
            dec.feed(&partial(b"", u64::MAX, n), &mut out);
        }
        dec.on_close(ts(n + 1), &mut out);
        assert_well_formed(&out);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Lcg(0x5eed);
        for _ in 0..2000 {
            let len = rng.below(400);
            let wire: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            feed_randomly(&mut rng, MessageKind::Request, &wire);
            feed_randomly(&mut rng, MessageKind::Response, &wire);
        }
    }

    #[test]
    fn mutated_messages_never_panic() {
        let alphabet = b"\r\n :;,0123456789abcdefABCDEF-GETPOSTHTTP/1.1chunkedContent-LengthTransfer-Encoding";
        let requests = [CURL_GET, CURL_POST, CURL_CHUNKED_PUT, KUBECTL_WATCH, KUBECTL_EXEC].concat();
        let responses =
            [NGINX_KEEPALIVE, NGINX_GZIP_CHUNKED, NGINX_304, PY_SIMPLE, APISERVER_101, &go_chunked_response()].concat();
        let mut rng = Lcg(42);
        for round in 0..3000 {
            let (kind, base) =
                if round % 2 == 0 { (MessageKind::Request, &requests) } else { (MessageKind::Response, &responses) };
            let mut wire = base.clone();
            for _ in 0..1 + rng.below(6) {
                let at = rng.below(wire.len());
                match rng.below(3) {
                    0 => wire[at] = alphabet[rng.below(alphabet.len())],
                    1 => wire.insert(at, alphabet[rng.below(alphabet.len())]),
                    _ => {
                        wire.remove(at);
                    }
                }
            }
            feed_randomly(&mut rng, kind, &wire);
        }
    }
}
