//! gRPC over HTTP/2: method from `:path`, length-prefixed messages in DATA frames, status from
//! trailers.
//!
//! [`StreamMessages`] follows the streams of one direction and hands out the first message of
//! each stream (bounded to [`FIRST_MESSAGE_LIMIT`] bytes), which is all the etcd decoder needs.
//! Pairing requests with responses is the assembler's job.

use std::collections::HashMap;

use super::hpack::{FieldValue, Lookup, Unresolved, lookup};
use super::http2::H2Event;
use super::truncate_str;

/// At most this many bytes of a stream's first message are kept.
pub const FIRST_MESSAGE_LIMIT: usize = 4096;
/// `grpc-message` is truncated to this many bytes (at a character boundary).
pub const GRPC_MESSAGE_MAX: usize = 256;
/// Length-prefix size: compressed flag + u32 length.
pub const PREFIX_LEN: usize = 5;

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`).
pub fn parse_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b'?');
    (ok(service) && ok(method)).then_some((service, method))
}

/// `application/grpc`, `application/grpc+proto`, `application/grpc; charset=...`.
pub fn is_grpc_content_type(ct: &str) -> bool {
    let ct = ct.trim();
    match ct.strip_prefix("application/grpc") {
        Some(rest) => rest.is_empty() || rest.starts_with('+') || rest.starts_with(';'),
        None => false,
    }
}

/// Canonical name of a gRPC status code.
pub fn code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN_CODE",
    }
}

/// Status carried by trailers (or a trailers-only response).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcStatus {
    pub code: u32,
    /// Percent-decoded `grpc-message`, truncated to [`GRPC_MESSAGE_MAX`] bytes; `None` if absent
    /// or not resolvable.
    pub message: Option<String>,
}

/// What the trailers say about the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusLookup {
    Found(GrpcStatus),
    /// No `grpc-status` in the block (and no unresolved field could be it).
    Absent,
    /// `grpc-status` may be among the unresolved fields (mid-connection HPACK), or is malformed.
    Unknown,
}

/// Read `grpc-status` / `grpc-message` from a decoded header block.
pub fn status_from_fields(fields: &[(&'static str, FieldValue)], unresolved: Unresolved) -> StatusLookup {
    match lookup(fields, unresolved, "grpc-status") {
        Lookup::Found(v) => match v.trim().parse::<u32>() {
            Ok(code) => {
                let message = lookup(fields, unresolved, "grpc-message").found().map(decode_grpc_message);
                StatusLookup::Found(GrpcStatus { code, message })
            }
            Err(_) => StatusLookup::Unknown,
        },
        Lookup::Absent => StatusLookup::Absent,
        Lookup::Unknown => StatusLookup::Unknown,
    }
}

/// [`status_from_fields`] for an event; `None` if it is not a decoded header block.
pub fn status_from_event(ev: &H2Event) -> Option<StatusLookup> {
    match ev {
        H2Event::Headers { fields, unresolved, .. } => Some(status_from_fields(fields, *unresolved)),
        H2Event::HeadersUnknown { .. } => Some(StatusLookup::Unknown),
        _ => None,
    }
}

/// Percent-decode a `grpc-message` value (gRPC HTTP/2 spec: `%XX` escapes of UTF-8 bytes) and
/// truncate it to [`GRPC_MESSAGE_MAX`] bytes at a character boundary.
pub fn decode_grpc_message(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len().min(GRPC_MESSAGE_MAX + 4));
    let mut i = 0;
    while i < b.len() && out.len() < GRPC_MESSAGE_MAX + 4 {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    let s = String::from_utf8_lossy(&out);
    truncate_str(&s, GRPC_MESSAGE_MAX).to_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The first message of a stream direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcMessage {
    /// Compressed-flag set: the bytes are compressed (not decodable here).
    pub compressed: bool,
    /// Length announced by the prefix.
    pub declared_len: u32,
    /// The first bytes of the message, at most [`FIRST_MESSAGE_LIMIT`].
    pub bytes: Vec<u8>,
}

#[cfg(test)]
impl GrpcMessage {
    /// All the message's bytes are here.
    pub fn is_complete(&self) -> bool {
        self.bytes.len() as u64 == u64::from(self.declared_len)
    }
}

/// Reassembles the length-prefixed messages of one stream direction from its DATA frames.
#[derive(Clone, Debug, Default)]
pub struct MessageReader {
    prefix: [u8; PREFIX_LEN],
    prefix_have: usize,
    /// Body bytes left in the current message, when inside one.
    body_remaining: Option<u32>,
    first: Option<GrpcMessage>,
    /// The first message is finished (complete, cut by the limit, or cut by lost bytes).
    first_done: bool,
    first_taken: bool,
    messages: u32,
    lost: bool,
    data_bytes: u64,
}

impl MessageReader {
    pub fn new() -> Self {
        Self::default()
    }

    #[cfg(test)]
    /// Messages whose prefix was seen.
    pub fn messages(&self) -> u32 {
        self.messages
    }

    #[cfg(test)]
    /// Message framing was lost (uncaptured prefix, unknown DATA length, bad flag byte).
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    #[cfg(test)]
    /// DATA payload bytes of the stream (without padding), counted while lengths were known.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    #[cfg(test)]
    /// The first message, once finished (complete or cut). Possibly truncated: compare
    /// `bytes.len()` with `declared_len`.
    pub fn first_message(&self) -> Option<&GrpcMessage> {
        if self.first_done { self.first.as_ref() } else { None }
    }

    /// The first message if finished and not taken before; the partial first message if
    /// `force` (the stream ended).
    pub fn take_first(&mut self, force: bool) -> Option<GrpcMessage> {
        if self.first_taken || !(self.first_done || force) {
            return None;
        }
        // Its bytes move out (a copy of up to 4 KiB otherwise); capture ends with the take.
        let f = self.first.as_mut()?;
        self.first_taken = true;
        self.first_done = true;
        Some(GrpcMessage {
            compressed: f.compressed,
            declared_len: f.declared_len,
            bytes: std::mem::take(&mut f.bytes),
        })
    }

    fn capturing(&self) -> bool {
        self.first.is_some() && !self.first_done
    }

    fn cut_first(&mut self) {
        if self.capturing() {
            self.first_done = true;
        }
    }

    /// One DATA frame: `data` is its captured start, `len` its payload length (`None` if unknown).
    pub fn push(&mut self, data: &[u8], len: Option<u32>) {
        let Some(len) = len else {
            self.lost = true;
            self.cut_first();
            return;
        };
        self.data_bytes += u64::from(len);
        if self.lost {
            return;
        }
        let captured = &data[..data.len().min(len as usize)];
        let mut i = 0;
        while i < captured.len() {
            match self.body_remaining {
                None => {
                    let n = (PREFIX_LEN - self.prefix_have).min(captured.len() - i);
                    self.prefix[self.prefix_have..self.prefix_have + n].copy_from_slice(&captured[i..i + n]);
                    self.prefix_have += n;
                    i += n;
                    if self.prefix_have == PREFIX_LEN {
                        self.prefix_have = 0;
                        let Some((compressed, mlen)) = message_prefix(&self.prefix) else {
                            self.lost = true;
                            self.cut_first();
                            return;
                        };
                        self.messages = self.messages.saturating_add(1);
                        if self.first.is_none() {
                            // Sized once (to what will be kept of it): it grows frame by frame otherwise.
                            let bytes = Vec::with_capacity((mlen as usize).min(FIRST_MESSAGE_LIMIT));
                            self.first = Some(GrpcMessage { compressed, declared_len: mlen, bytes });
                        }
                        self.body_remaining = Some(mlen);
                        self.end_body_if_done();
                    }
                }
                Some(rem) => {
                    let n = (rem as usize).min(captured.len() - i);
                    if self.capturing()
                        && let Some(f) = self.first.as_mut()
                    {
                        let room = FIRST_MESSAGE_LIMIT - f.bytes.len();
                        f.bytes.extend_from_slice(&captured[i..i + n.min(room)]);
                        if f.bytes.len() == FIRST_MESSAGE_LIMIT {
                            self.first_done = true;
                        }
                    }
                    i += n;
                    self.body_remaining = Some(rem - n as u32);
                    self.end_body_if_done();
                }
            }
        }
        let uncaptured = len - captured.len() as u32;
        if uncaptured > 0 {
            match self.body_remaining {
                Some(rem) if rem >= uncaptured && self.prefix_have == 0 => {
                    self.cut_first();
                    self.body_remaining = Some(rem - uncaptured);
                    self.end_body_if_done();
                }
                _ => {
                    self.lost = true;
                    self.cut_first();
                }
            }
        }
    }

    /// [`MessageReader::push`] for a DATA frame the caller owns. When it is the stream's first
    /// message, whole and alone (the common case: one unary request or response), its buffer
    /// becomes the message instead of being copied; anything else goes through `push`.
    pub fn push_owned(&mut self, data: &mut Vec<u8>, len: Option<u32>) {
        let at_start = self.first.is_none() && !self.lost && self.prefix_have == 0 && self.body_remaining.is_none();
        let whole = data.get(..PREFIX_LEN).and_then(message_prefix).filter(|&(_, mlen)| {
            len.is_some_and(|l| l as usize == data.len())
                && mlen as usize == data.len() - PREFIX_LEN
                && mlen as usize <= FIRST_MESSAGE_LIMIT
        });
        let (true, Some((compressed, _))) = (at_start, whole) else {
            self.push(data, len);
            return;
        };
        self.data_bytes += data.len() as u64;
        self.messages = self.messages.saturating_add(1);
        let mut bytes = std::mem::take(data);
        bytes.drain(..PREFIX_LEN);
        self.first = Some(GrpcMessage { compressed, declared_len: bytes.len() as u32, bytes });
        self.first_done = true;
    }

    fn end_body_if_done(&mut self) {
        if self.body_remaining == Some(0) {
            self.body_remaining = None;
            self.cut_first();
        }
    }
}

/// A message's length prefix: (compressed, length), or `None` for a flag byte that is neither 0
/// nor 1 (framing is lost).
fn message_prefix(p: &[u8]) -> Option<(bool, u32)> {
    match *p {
        [flag @ (0 | 1), a, b, c, d] => Some((flag == 1, u32::from_be_bytes([a, b, c, d]))),
        _ => None,
    }
}

/// The streams of one direction, each with a [`MessageReader`]. Only streams whose first HEADERS
/// were seen are followed: DATA of a stream joined midway cannot be framed.
#[derive(Debug)]
pub struct StreamMessages {
    /// foldhash, as for the streams of `assemble::http2` (bounded, randomly seeded).
    readers: HashMap<u32, MessageReader, foldhash::fast::RandomState>,
    max_streams: usize,
    dropped: u64,
}

impl StreamMessages {
    pub fn new(max_streams: usize) -> Self {
        StreamMessages { readers: HashMap::default(), max_streams, dropped: 0 }
    }

    #[cfg(test)]
    /// Streams not followed because `max_streams` was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.readers.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.readers.is_empty()
    }

    /// Feed an event of this direction. Returns `(stream_id, first message)` once per stream,
    /// when the first message is finished, or (possibly partial) when the stream ends.
    /// A DATA frame's bytes may move into the message (see [`MessageReader::push_owned`]).
    pub fn on_event(&mut self, ev: &mut H2Event) -> Option<(u32, GrpcMessage)> {
        match ev {
            H2Event::Headers { stream_id, end_stream, .. } | H2Event::HeadersUnknown { stream_id, end_stream, .. } => {
                if *end_stream {
                    let mut r = self.readers.remove(stream_id)?;
                    return r.take_first(true).map(|m| (*stream_id, m));
                }
                if !self.readers.contains_key(stream_id) {
                    if self.readers.len() >= self.max_streams {
                        self.dropped += 1;
                    } else {
                        self.readers.insert(*stream_id, MessageReader::new());
                    }
                }
                None
            }
            H2Event::Data { stream_id, len, end_stream, data, .. } => {
                let r = self.readers.get_mut(stream_id)?;
                r.push_owned(data, *len);
                let got = r.take_first(*end_stream);
                if *end_stream {
                    self.readers.remove(stream_id);
                }
                got.map(|m| (*stream_id, m))
            }
            H2Event::RstStream { stream_id, .. } => {
                self.readers.remove(stream_id);
                None
            }
            H2Event::Desync { .. } => {
                self.readers.clear();
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::Timing;
    use crate::protocols::http2::build;
    use crate::protocols::test_rng::Lcg;

    #[test]
    fn paths() {
        assert_eq!(parse_path("/etcdserverpb.KV/Range"), Some(("etcdserverpb.KV", "Range")));
        assert_eq!(parse_path("/grpc.health.v1.Health/Check"), Some(("grpc.health.v1.Health", "Check")));
        for bad in
            ["", "/", "etcdserverpb.KV/Range", "/etcdserverpb.KV", "/a/b/c", "//Range", "/a/", "/a b/c", "/a/b?x=1"]
        {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
        assert!(is_grpc_content_type("application/grpc"));
        assert!(is_grpc_content_type("application/grpc+proto"));
        assert!(!is_grpc_content_type("application/grpc-web"));
        assert!(!is_grpc_content_type("application/json"));
    }

    #[test]
    fn grpc_message_decoding() {
        assert_eq!(decode_grpc_message("etcdserver%3A request timed out"), "etcdserver: request timed out");
        assert_eq!(decode_grpc_message("caf%C3%A9 %zz %4"), "café %zz %4");
        let long = "é".repeat(300);
        let d = decode_grpc_message(&long);
        assert!(d.len() <= GRPC_MESSAGE_MAX && d.len() >= GRPC_MESSAGE_MAX - 1);
        assert!(d.chars().all(|c| c == 'é'));
        let enc = "%E2%82%AC".repeat(200);
        let d = decode_grpc_message(&enc);
        assert!(d.len() <= GRPC_MESSAGE_MAX && d.chars().all(|c| c == '€'));
    }

    #[test]
    fn status_lookup() {
        let f = vec![("grpc-status", FieldValue::Static("0"))];
        assert_eq!(
            status_from_fields(&f, Unresolved::default()),
            StatusLookup::Found(GrpcStatus { code: 0, message: None })
        );
        let f = vec![
            ("grpc-status", FieldValue::Static("14")),
            ("grpc-message", FieldValue::Static("etcdserver%3A leader changed")),
        ];
        assert_eq!(
            status_from_fields(&f, Unresolved::default()),
            StatusLookup::Found(GrpcStatus { code: 14, message: Some("etcdserver: leader changed".into()) })
        );
        assert_eq!(status_from_fields(&[], Unresolved::default()), StatusLookup::Absent);
        assert_eq!(status_from_fields(&[], Unresolved { total: 1, maybe_pseudo: 0 }), StatusLookup::Unknown);
        assert_eq!(code_name(14), "UNAVAILABLE");
    }

    fn msg(len: usize) -> Vec<u8> {
        (0..len).map(|i| i as u8).collect()
    }

    #[test]
    fn reader_across_frames_and_splits() {
        let body = msg(300);
        let framed = build::grpc_message(&body);
        for cut in 0..=framed.len() {
            let mut r = MessageReader::new();
            r.push(&framed[..cut], Some(cut as u32));
            r.push(&framed[cut..], Some((framed.len() - cut) as u32));
            let m = r.first_message().expect("finished");
            assert!(m.is_complete() && !m.compressed);
            assert_eq!(m.bytes, body);
            assert_eq!(r.messages(), 1);
        }
        // Two messages in one frame, then a third.
        let mut two = build::grpc_message(&msg(3));
        two.extend(build::grpc_message(&msg(0)));
        let mut r = MessageReader::new();
        r.push(&two, Some(two.len() as u32));
        r.push(&build::grpc_message(&msg(9)), Some(14));
        assert_eq!(r.messages(), 3);
        assert_eq!(r.first_message().unwrap().bytes, msg(3));
    }

    #[test]
    fn reader_limits_and_uncaptured() {
        // A 10 KiB message: first 4 KiB kept.
        let framed = build::grpc_message(&msg(10_240));
        let mut r = MessageReader::new();
        r.push(&framed, Some(framed.len() as u32));
        let m = r.take_first(false).unwrap();
        assert_eq!((m.bytes.len(), m.declared_len, m.is_complete()), (FIRST_MESSAGE_LIMIT, 10_240, false));
        assert!(r.take_first(true).is_none(), "taken once");
        // Partly captured frame: the body is skipped by count, the next prefix is still found.
        let mut r = MessageReader::new();
        let mut f = build::grpc_message(&msg(100));
        f.extend(build::grpc_message(&msg(2)));
        r.push(&f[..50], Some(105));
        r.push(&f[105..], Some(7));
        assert_eq!(r.messages(), 2);
        assert_eq!(r.first_message().unwrap().bytes.len(), 45);
        assert!(!r.is_lost());
        // Uncaptured bytes cover a prefix: lost.
        let mut r = MessageReader::new();
        r.push(&f[..50], Some(f.len() as u32));
        assert!(r.is_lost());
        // Bad flag byte.
        let mut r = MessageReader::new();
        r.push(&[7, 0, 0, 0, 1, 0], Some(6));
        assert!(r.is_lost() && r.first_message().is_none());
        // Unknown length.
        let mut r = MessageReader::new();
        r.push(&[0, 0, 0], None);
        assert!(r.is_lost());
    }

    #[test]
    fn stream_messages_follow_only_streams_seen_from_the_start() {
        let t = Timing::default();
        let mut s = StreamMessages::new(2);
        let hdr = |sid, end| H2Event::Headers {
            stream_id: sid,
            end_stream: end,
            fields: vec![],
            unresolved: Unresolved::default(),
            timing: t,
        };
        let data = |sid, d: &[u8], end| H2Event::Data {
            stream_id: sid,
            len: Some(d.len() as u32),
            end_stream: end,
            data: d.to_vec(),
            timing: t,
        };
        // Stream 1: DATA without HEADERS (joined midway) is ignored.
        assert_eq!(s.on_event(&mut data(1, &build::grpc_message(b"x"), false)), None);
        assert!(s.on_event(&mut hdr(3, false)).is_none());
        let got = s.on_event(&mut data(3, &build::grpc_message(b"abc"), false)).unwrap();
        assert_eq!((got.0, got.1.bytes.as_slice()), (3, &b"abc"[..]));
        // Trailers end the stream; nothing more to hand out.
        assert!(s.on_event(&mut hdr(3, true)).is_none());
        assert!(s.is_empty());
        // Partial message handed out when the stream ends.
        s.on_event(&mut hdr(5, false));
        let framed = build::grpc_message(b"hello world");
        assert!(s.on_event(&mut data(5, &framed[..8], false)).is_none());
        let got = s.on_event(&mut hdr(5, true)).unwrap();
        assert_eq!((got.1.bytes.as_slice(), got.1.declared_len), (&b"hel"[..], 11));
        // Bounded.
        s.on_event(&mut hdr(7, false));
        s.on_event(&mut hdr(9, false));
        s.on_event(&mut hdr(11, false));
        assert_eq!((s.len(), s.dropped()), (2, 1));
        s.on_event(&mut H2Event::Desync { reason: "x", at_ns: 0 });
        assert!(s.is_empty());
    }

    /// `push_owned` takes a whole first message's buffer and otherwise copies as `push` does:
    /// the same messages, counts and first message either way.
    #[test]
    fn owned_push_matches_copying_push() {
        let one = build::grpc_message(b"abc");
        let two = [build::grpc_message(b"ab"), build::grpc_message(b"cd")].concat();
        let big = build::grpc_message(&vec![7u8; FIRST_MESSAGE_LIMIT + 1]);
        let mut compressed = build::grpc_message(b"zz");
        compressed[0] = 1;
        let mut bad_flag = build::grpc_message(b"q");
        bad_flag[0] = 2;
        let cases: Vec<Vec<(Vec<u8>, Option<u32>)>> = vec![
            vec![(one.clone(), Some(one.len() as u32))],
            vec![(two.clone(), Some(two.len() as u32))],
            vec![(big.clone(), Some(big.len() as u32))],
            vec![(compressed.clone(), Some(compressed.len() as u32))],
            vec![(bad_flag.clone(), Some(bad_flag.len() as u32))],
            vec![(one[..4].to_vec(), Some(4)), (one[4..].to_vec(), Some(one.len() as u32 - 4))],
            vec![(one[..6].to_vec(), Some(one.len() as u32))],
            vec![(one.clone(), None), (one.clone(), Some(one.len() as u32))],
            vec![(one.clone(), Some(one.len() as u32)), (two.clone(), Some(two.len() as u32))],
            vec![(Vec::new(), Some(0)), (one.clone(), Some(one.len() as u32))],
        ];
        for (i, frames) in cases.into_iter().enumerate() {
            let (mut copying, mut owning) = (MessageReader::new(), MessageReader::new());
            for (data, len) in frames {
                copying.push(&data, len);
                owning.push_owned(&mut data.clone(), len);
                let a = (copying.messages(), copying.is_lost(), copying.data_bytes(), copying.first_message().cloned());
                let b = (owning.messages(), owning.is_lost(), owning.data_bytes(), owning.first_message().cloned());
                assert_eq!(a, b, "case {i}");
            }
            assert_eq!(copying.take_first(true), owning.take_first(true), "case {i}");
        }
    }

    #[test]
    fn no_panic_on_pseudo_random_data() {
        let mut rng = Lcg(42);
        let mut next = move || rng.next_u32();
        for _ in 0..20_000 {
            let mut r = MessageReader::new();
            for _ in 0..next() % 6 {
                let n = next() as usize % 40;
                let d: Vec<u8> = (0..n).map(|_| if next() % 3 == 0 { 0 } else { next() as u8 }).collect();
                let len = match next() % 4 {
                    0 => None,
                    1 => Some(n as u32 + next() % 50),
                    _ => Some(n as u32),
                };
                r.push(&d, len);
            }
            let _ = r.take_first(next() % 2 == 0);
            let s: String =
                (0..next() % 20).map(|_| ['%', '0', 'a', 'F', '9', 'z', 'é', '/'][next() as usize % 8]).collect();
            let _ = decode_grpc_message(&s);
            let _ = parse_path(&s);
        }
    }
}
