//! Heads: what the tracer keeps of one, and parsing a complete one (framing headers, the few
//! values kept, chunk-size lines).

use crate::span::{AttrStr, RemoteParent};

/// Most headers one head may carry; more desynchronises the decoder.
pub const MAX_HEADERS: usize = 64;

/// The standard methods and their lowercase verbs: kept verbatim in span names (others become
/// `HTTP`, OTel semconv), and held as constants wherever a request's method is stored.
pub(crate) const STANDARD_METHODS: [(&str, &str); 9] = [
    ("GET", "get"),
    ("HEAD", "head"),
    ("POST", "post"),
    ("PUT", "put"),
    ("PATCH", "patch"),
    ("DELETE", "delete"),
    ("OPTIONS", "options"),
    ("CONNECT", "connect"),
    ("TRACE", "trace"),
];

/// Which side of the exchange this direction carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Request,
    Response,
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
    /// A valid W3C `traceparent`, when the request has exactly one.
    pub traceparent: Option<RemoteParent>,
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

/// What the framing headers say, before the status code or request method is considered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyFraming {
    Chunked,
    /// Transfer-Encoding present but not ending in chunked.
    OtherCoding,
    Length(u64),
    BadLength,
    /// Neither Content-Length nor Transfer-Encoding.
    Unframed,
}

pub(super) enum Parsed {
    Partial,
    Complete { len: usize, head: Head, body: BodyFraming },
    Error(&'static str),
}

/// The complete lines of a partial head, closed as if it ended there.
pub(super) fn salvage_head(kind: MessageKind, partial: &[u8], repeated: &mut RepeatedFields) -> Option<Head> {
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

pub(super) fn parse_head(kind: MessageKind, bytes: &[u8], repeated: &mut RepeatedFields) -> Parsed {
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
                        traceparent: fields.traceparent(),
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
    traceparent: Option<&'h [u8]>,
    traceparent_lines: u8,
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
            } else if name.eq_ignore_ascii_case("traceparent") {
                f.traceparent = Some(h.value);
                f.traceparent_lines = f.traceparent_lines.saturating_add(1);
            }
        }
        f
    }

    fn chunked(&self) -> bool {
        self.transfer_coding == Some(true)
    }

    /// Two `traceparent` lines make one field, their values joined by a comma (RFC 9110 §5.3),
    /// which is no valid value.
    fn traceparent(&self) -> Option<RemoteParent> {
        self.traceparent.filter(|_| self.traceparent_lines == 1).and_then(RemoteParent::from_traceparent)
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
pub(super) fn parse_chunk_size(line: &[u8]) -> Option<u64> {
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
pub(super) fn method_text(method: &str) -> AttrStr {
    match STANDARD_METHODS.iter().find(|(m, _)| *m == method) {
        Some((m, _)) => AttrStr::Static(m),
        None => AttrStr::Owned(method.to_owned()),
    }
}

/// Header values a client repeats on every request of a connection (User-Agent, Host): the
/// last one is kept, and a request that sends it again shares it instead of copying it.
#[derive(Debug, Default)]
pub(super) struct RepeatedFields {
    user_agent: LastValue,
    host: LastValue,
}

/// The last value, as spans carry it: a repeat is a clone (a copy in place when short, the
/// shared text otherwise).
#[derive(Debug, Default)]
pub(super) struct LastValue(Option<AttrStr>);

impl LastValue {
    pub(super) fn text(&mut self, bytes: &[u8]) -> AttrStr {
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
