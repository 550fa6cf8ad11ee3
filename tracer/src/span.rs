//! The span record every assembler produces and every exporter consumes.

use std::{cell::RefCell, ops::Deref, sync::Arc};

mod traceparent;

pub use traceparent::RemoteParent;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
    Internal,
}

impl SpanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Internal => "internal",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpanStatus {
    Unset,
    Ok,
    Error(String),
}

impl SpanStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            SpanStatus::Unset => "unset",
            SpanStatus::Ok => "ok",
            SpanStatus::Error(_) => "error",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(AttrStr),
    Int(i64),
    Bool(bool),
}

/// A string attribute value. A span has dozens of attributes, and allocating each showed in
/// profiles: constants ("tcp", "http", "etcd"...) are borrowed, short text (an IPv4 address, a
/// namespace) is held in place, and longer text that spans repeat (a User-Agent) is shared.
#[derive(Clone, Debug)]
pub enum AttrStr {
    Static(&'static str),
    Inline(InlineStr),
    Owned(String),
    Shared(Arc<str>),
}

impl AttrStr {
    /// A copy of `s`: in place when it is short, allocated otherwise.
    pub fn copy(s: &str) -> Self {
        InlineStr::new(s).map_or_else(|| AttrStr::Owned(text_of(s)), AttrStr::Inline)
    }

    /// Text that many spans will carry (clones of the result): held in place when it is short,
    /// shared otherwise, as [`AttrStr::share`] hands it out.
    pub fn shareable(s: &str) -> Self {
        InlineStr::new(s).map_or_else(|| AttrStr::Shared(Arc::from(s)), AttrStr::Inline)
    }

    /// `s` for one more span: a copy in place when it is short, which costs less than an atomic
    /// increment now and a decrement at export (the increments of a span's three addresses
    /// showed in the agent's profile), the shared text otherwise.
    pub fn share(s: &Arc<str>) -> Self {
        InlineStr::new(s).map_or_else(|| AttrStr::Shared(s.clone()), AttrStr::Inline)
    }
}

impl Deref for AttrStr {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            AttrStr::Static(s) => s,
            AttrStr::Inline(s) => s.as_str(),
            AttrStr::Owned(s) => s,
            AttrStr::Shared(s) => s,
        }
    }
}

/// Text of at most [`InlineStr::CAPACITY`] bytes, held in place: sized so that [`AttrStr`] stays
/// as large as a `String` (a test checks it), and large enough for any IPv4 address.
#[derive(Clone, Copy)]
pub struct InlineStr {
    len: u8,
    bytes: [u8; InlineStr::CAPACITY],
}

impl InlineStr {
    pub const CAPACITY: usize = 15;

    pub fn new(s: &str) -> Option<Self> {
        let mut bytes = [0; Self::CAPACITY];
        bytes.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        Some(InlineStr { len: s.len() as u8, bytes })
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: `new` is the only constructor; it copied the first `len` bytes from a `str`,
        // so they are valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.bytes[..usize::from(self.len)]) }
    }
}

impl std::fmt::Debug for InlineStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// Equal when the text is, however it is held.
impl PartialEq for AttrStr {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}
impl Eq for AttrStr {}

impl PartialEq<&str> for AttrStr {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

impl std::fmt::Display for AttrStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl Default for AttrStr {
    fn default() -> Self {
        AttrStr::Static("")
    }
}

impl From<&'static str> for AttrStr {
    fn from(v: &'static str) -> Self {
        AttrStr::Static(v)
    }
}
impl From<String> for AttrStr {
    fn from(v: String) -> Self {
        AttrStr::Owned(v)
    }
}

impl From<&'static str> for AttrValue {
    fn from(v: &'static str) -> Self {
        AttrValue::Str(AttrStr::Static(v))
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(AttrStr::Owned(v))
    }
}
impl From<AttrStr> for AttrValue {
    fn from(v: AttrStr) -> Self {
        AttrValue::Str(v)
    }
}
impl From<Arc<str>> for AttrValue {
    fn from(v: Arc<str>) -> Self {
        AttrValue::Str(AttrStr::Shared(v))
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}
impl From<u64> for AttrValue {
    fn from(v: u64) -> Self {
        AttrValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u16> for AttrValue {
    fn from(v: u16) -> Self {
        AttrValue::Int(v.into())
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}

/// The process a span was observed in; becomes the OTLP resource.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessInfo {
    /// `service.name`: the target's executable name (e.g. kube-apiserver).
    pub service_name: String,
    pub pid: u32,
    pub executable_name: String,
    pub host_name: String,
}

/// What kind of request a span is, for the latency above which it counts as slow (the sampler
/// keeps slow traces). The classes of the apiserver's own latency SLOs, by its request scope: a
/// named object (or a create), a namespace's collection, the cluster's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LatencyClass {
    /// A single-object read or a mutating call on one object.
    SingleObject,
    NamespaceCollection,
    ClusterCollection,
    /// Watches and other long-running requests: their duration says nothing of the server.
    Streaming,
    /// A connection span: not a request.
    Connection,
    /// Anything else (no Kubernetes verb: etcd and other gRPC calls, non-resource paths).
    #[default]
    Other,
}

#[derive(Clone, Debug)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: String,
    pub kind: SpanKind,
    /// Wall-clock times, derived from kernel timestamps once (see `clock`).
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub status: SpanStatus,
    /// Allow-listed attributes only (OTel semantic conventions, `k8s.*`, `etcd.*`).
    pub attributes: Vec<(&'static str, AttrValue)>,
    pub process: Arc<ProcessInfo>,
    /// An incoming `traceparent` (server spans): correlation puts the span in that trace.
    pub remote_parent: Option<RemoteParent>,
    pub latency_class: LatencyClass,
    /// Kept by the sampler (decided per trace in correlation; export leaves out the rest, after
    /// what must see every span).
    pub sampled: bool,
    /// Where assembly saw the span: what correlation links it by. Never exported.
    pub origin: SpanOrigin,
}

/// Where and when a span was seen, for correlation (finding its parent): never exported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanOrigin {
    pub tgid: u32,
    /// The connection: its socket fd and the kernel time it was opened (or first met), which
    /// together name one connection for its whole life.
    pub fd: i32,
    pub conn_opened_ns: u64,
    pub local: Option<std::net::SocketAddr>,
    pub peer: Option<std::net::SocketAddr>,
    /// HTTP/2 stream id, for HTTP/2 and gRPC spans.
    pub stream_id: Option<u32>,
    /// The goroutine (its `g`, as in the events' header) whose bytes carried the request: for a
    /// server span, the one that read the end of the request head; for a client span, the one
    /// that wrote the request's first bytes. 0 when unknown (not from Go TLS probes).
    pub goroutine: u64,
    /// Kernel monotonic times (`bpf_ktime_get_ns`) of the span's start and end, comparable with
    /// the events' timestamps.
    pub start_ns: u64,
    pub end_ns: u64,
    /// The other end of the connection is a connection of a traced process on this node (the
    /// same addresses, reversed): its span of the same request is expected too.
    pub peer_traced: bool,
}

impl SpanRecord {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

pub type Attributes = Vec<(&'static str, AttrValue)>;

/// Attribute vectors kept for reuse at most, and the largest capacity kept (a few KiB each).
const SPARE_ATTRIBUTES_MAX: usize = 1024;
const SPARE_CAPACITY_MAX: usize = 64;
/// Strings kept for reuse at most, and the capacities kept: at most 1 MiB in all. Every string
/// of [`new_text`] has room for a usual path, route or span name (40–60 bytes), so that any spare
/// fits the next one asked for.
const SPARE_TEXTS_MAX: usize = 4096;
const TEXT_MIN_CAPACITY: usize = 64;
const SPARE_TEXT_CAPACITY_MAX: usize = 256;

/// What exported spans leave for the next ones.
struct Spare {
    attributes: Vec<Attributes>,
    texts: Vec<String>,
}

thread_local! {
    /// Attribute vectors and strings of spans already exported, emptied, for the next spans: the
    /// agent and the OTLP exporter share one thread, so a span's vector costs no allocation in
    /// the steady state (nor the reallocation of an etcd span's 27 attributes, past the usual
    /// capacity), and neither do its name, path and route. Freed by the exporter a batch at a
    /// time, they were past glibc's per-thread cache when the next spans asked, and glibc's
    /// slower paths and the consolidation of its free lists showed in the agent's profile.
    static SPARE: RefCell<Spare> = const { RefCell::new(Spare { attributes: Vec::new(), texts: Vec::new() }) };
}

/// An empty attribute vector: a recycled one, or a new one of `capacity`.
pub fn new_attributes(capacity: usize) -> Attributes {
    SPARE.with_borrow_mut(|s| s.attributes.pop()).unwrap_or_else(|| Vec::with_capacity(capacity))
}

/// An empty string with room for `capacity` bytes: a recycled one, or a new one of at least
/// [`TEXT_MIN_CAPACITY`]. A spare that is too small is let go rather than grown: growing copies
/// its whole old buffer (perf: more than the allocation it saves).
pub fn new_text(capacity: usize) -> String {
    match SPARE.with_borrow_mut(|s| s.texts.pop()) {
        Some(text) if text.capacity() >= capacity => text,
        _ => String::with_capacity(capacity.max(TEXT_MIN_CAPACITY)),
    }
}

/// `s` in a string of [`new_text`].
pub fn text_of(s: &str) -> String {
    let mut text = new_text(s.len());
    text.push_str(s);
    text
}

/// Done with these spans: their attribute vectors and their strings go back for reuse (see
/// [`new_attributes`], [`new_text`]).
pub fn recycle(spans: impl IntoIterator<Item = SpanRecord>) {
    SPARE.with_borrow_mut(|spare| {
        for span in spans {
            spare.keep_text(span.name);
            let mut a = span.attributes;
            for (_, v) in a.drain(..) {
                if let AttrValue::Str(AttrStr::Owned(text)) = v {
                    spare.keep_text(text);
                }
            }
            if spare.attributes.len() < SPARE_ATTRIBUTES_MAX && a.capacity() <= SPARE_CAPACITY_MAX {
                spare.attributes.push(a);
            }
        }
    });
}

impl Spare {
    fn keep_text(&mut self, mut text: String) {
        if self.texts.len() < SPARE_TEXTS_MAX
            && (TEXT_MIN_CAPACITY..=SPARE_TEXT_CAPACITY_MAX).contains(&text.capacity())
        {
            text.clear();
            self.texts.push(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(name: String, attributes: Attributes) -> SpanRecord {
        let process = Arc::new(ProcessInfo {
            service_name: "s".into(),
            pid: 1,
            executable_name: "e".into(),
            host_name: "h".into(),
        });
        SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            name,
            kind: SpanKind::Server,
            start_unix_nano: 1,
            end_unix_nano: 2,
            status: SpanStatus::Unset,
            attributes,
            process,
            remote_parent: None,
            latency_class: LatencyClass::Other,
            sampled: true,
            origin: Default::default(),
        }
    }

    /// Exported spans leave their vectors and strings for the next spans: the same buffers come
    /// back, emptied; those of other sizes are let go.
    #[test]
    fn recycled_spans_give_their_buffers_to_the_next() {
        let name = text_of("GET /api/v1/namespaces/{namespace}/pods/{name}");
        let path = text_of("/api/v1/namespaces/default/pods/web-0");
        let (name_buf, path_buf) = (name.as_ptr(), path.as_ptr());
        let mut attributes = new_attributes(4);
        attributes.push(("url.path", path.into()));
        attributes.push(("k8s.verb", "get".into()));
        attributes.push(("big", "x".repeat(SPARE_TEXT_CAPACITY_MAX + 1).into()));
        attributes.push(("small", String::from("not from new_text").into()));
        let attributes_buf = attributes.as_ptr();
        recycle([span(name, attributes)]);
        // Last in, first out: the path, then the name; the oversized and undersized values were
        // not kept.
        let t = new_text(8);
        assert_eq!((t.as_ptr(), t.len()), (path_buf, 0));
        let t = new_text(8);
        assert_eq!(t.as_ptr(), name_buf);
        assert!(SPARE.with_borrow(|s| s.texts.is_empty()));
        let a = new_attributes(4);
        assert_eq!((a.as_ptr(), a.len()), (attributes_buf, 0));
        // Nothing spare: new ones, with the room asked for, and at least the usual room.
        assert!(new_text(300).capacity() >= 300);
        assert!(new_text(1).capacity() >= TEXT_MIN_CAPACITY);
        assert_eq!(new_attributes(7).capacity(), 7);
        // A spare too small for what is asked is let go, not grown.
        recycle([span(text_of("n"), Vec::new())]);
        assert!(new_text(TEXT_MIN_CAPACITY * 2).capacity() >= TEXT_MIN_CAPACITY * 2);
        assert!(SPARE.with_borrow(|s| s.texts.is_empty()));
    }

    #[test]
    fn short_text_is_held_in_place_without_growing_attributes() {
        // The inline variant fits beside a String's fields: an attribute stays 40 bytes.
        assert_eq!(size_of::<AttrStr>(), size_of::<String>());
        assert_eq!(size_of::<AttrValue>(), size_of::<String>());

        for s in ["", "a", "255.255.255.255", "kube-system", "ünïcödé"] {
            let copied = AttrStr::copy(s);
            assert!(matches!(copied, AttrStr::Inline(_)), "{s}");
            assert_eq!(&*copied, s);
            assert_eq!(&*AttrStr::share(&Arc::from(s)), s);
        }
        let long = "2001:db8::ff00:42:8329";
        assert!(matches!(AttrStr::copy(long), AttrStr::Owned(ref v) if v == long));
        let shared: Arc<str> = Arc::from(long);
        let AttrStr::Shared(again) = AttrStr::share(&shared) else { panic!("not shared") };
        assert!(Arc::ptr_eq(&again, &shared));
        assert!(matches!(AttrStr::shareable(long), AttrStr::Shared(ref v) if **v == *long));
        assert!(matches!(AttrStr::shareable("10.0.0.1"), AttrStr::Inline(v) if v.as_str() == "10.0.0.1"));
        // 16 bytes, the first that does not fit; a multi-byte character across the limit.
        assert!(matches!(AttrStr::copy("0123456789abcdef"), AttrStr::Owned(_)));
        assert!(matches!(AttrStr::copy("0123456789abcdé"), AttrStr::Owned(_)));
        assert_eq!(format!("{:?}", AttrStr::copy("10.0.0.1")), r#"Inline("10.0.0.1")"#);
    }
}
