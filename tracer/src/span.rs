//! The span record every assembler produces and every exporter consumes.

use std::{cell::RefCell, ops::Deref, sync::Arc};

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
/// profiles: constants ("tcp", "http", "etcd"...) are borrowed, and what every span of a
/// connection repeats (its addresses) is shared.
#[derive(Clone, Debug)]
pub enum AttrStr {
    Static(&'static str),
    Owned(String),
    Shared(Arc<str>),
}

impl Deref for AttrStr {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            AttrStr::Static(s) => s,
            AttrStr::Owned(s) => s,
            AttrStr::Shared(s) => s,
        }
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

thread_local! {
    /// Attribute vectors of spans already exported, emptied, for the next spans: the agent and
    /// the OTLP exporter share one thread, so a span's vector costs no allocation in the steady
    /// state (nor the reallocation of an etcd span's 27 attributes, past the usual capacity).
    static SPARE_ATTRIBUTES: RefCell<Vec<Attributes>> = const { RefCell::new(Vec::new()) };
}

/// An empty attribute vector: a recycled one, or a new one of `capacity`.
pub fn new_attributes(capacity: usize) -> Attributes {
    SPARE_ATTRIBUTES.with_borrow_mut(Vec::pop).unwrap_or_else(|| Vec::with_capacity(capacity))
}

/// Done with these spans: their attribute vectors go back for reuse (see [`new_attributes`]).
pub fn recycle(spans: impl IntoIterator<Item = SpanRecord>) {
    SPARE_ATTRIBUTES.with_borrow_mut(|spare| {
        for span in spans {
            let mut a = span.attributes;
            if spare.len() < SPARE_ATTRIBUTES_MAX && a.capacity() <= SPARE_CAPACITY_MAX {
                a.clear();
                spare.push(a);
            }
        }
    });
}
