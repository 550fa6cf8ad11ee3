//! Span records → one OTLP `ExportTraceServiceRequest` in protobuf: each span written once, where
//! it goes in the request; the rest sized with prost's wire primitives.
//! Written with the two below (`put_varint`, `put_key`).
//!
//! Why not the OpenTelemetry SDK's types: going through `SpanData` and the generated OTLP
//! structs allocated every attribute key and value twice, dropped them again, and walked each
//! nested message once per level to size it. Under load that was most of the agent's CPU (the
//! figure is in docs/benchmarks.md). Here a span is written once, from the record itself. The
//! unit tests decode the bytes with opentelemetry-proto's generated types.
//!
//! Message and field numbers: opentelemetry-proto, `collector/trace/v1/trace_service.proto`,
//! `trace/v1/trace.proto`, `common/v1/common.proto`, `resource/v1/resource.proto`.

use std::sync::Arc;

use prost::encoding::{WireType, encoded_len_varint, key_len};

use crate::span::{AttrValue, ProcessInfo, SpanKind, SpanRecord, SpanStatus};

/// The instrumentation scope every span is reported under.
pub const SCOPE_NAME: &str = "kube-apiserver-tracer";
pub const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `Span.flags`: the trace flags (sampled) and "whether the parent is remote is known", as the
/// OpenTelemetry SDK sets them; with [`PARENT_IS_REMOTE`] when the parent is the caller's span.
const SPAN_FLAGS: u32 = 0x01 | 0x100;
const PARENT_IS_REMOTE: u32 = 0x200;

/// Writes the request for `spans` into `out` (cleared first) and returns where in `out` it starts:
/// one `ResourceSpans` per traced process, in order of first appearance, each with the spans of
/// that process in batch order.
///
/// Spans are written where they go, after room for what precedes them (the resource, the scope,
/// and the lengths of the messages around them, known only once the spans are written), so the
/// spans of a batch are not copied again. The first process's headers are written at the end of
/// its room and the request starts there; a later process's group is moved back against the one
/// before it (a batch rarely holds spans of more than one process).
pub fn export_request(spans: &[SpanRecord], out: &mut Vec<u8>) -> usize {
    export_request_with_resource(spans, &[], out)
}

/// [`export_request`] with `extra` attributes in every resource (`OTEL_RESOURCE_ATTRIBUTES`),
/// after the process's own, which win on a clash.
pub fn export_request_with_resource(spans: &[SpanRecord], extra: &[(String, String)], out: &mut Vec<u8>) -> usize {
    out.clear();
    let mut groups: Vec<(&Arc<ProcessInfo>, Vec<&SpanRecord>)> = Vec::new();
    for s in spans {
        match groups.iter_mut().find(|(p, _)| Arc::ptr_eq(p, &s.process) || ***p == *s.process) {
            Some((_, g)) => g.push(s),
            None => groups.push((&s.process, vec![s])),
        }
    }
    let mut head = Vec::new();
    let mut start = 0;
    for (process, group) in &groups {
        let resource = resource_len(process, extra);
        // The two lengths that depend on the spans take at most a key byte and a 10-byte varint.
        let room = field_len(1, resource) + field_len(1, scope_len()) + 2 * 11;
        let group_start = out.len();
        out.resize(group_start + room, 0);
        for s in group {
            write_span_field(s, out);
        }
        let spans_start = group_start + room;
        let scope_spans = field_len(1, scope_len()) + (out.len() - spans_start);
        head.clear();
        // ExportTraceServiceRequest.resource_spans = 1
        message_header(1, field_len(1, resource) + field_len(2, scope_spans), &mut head);
        // ResourceSpans.resource = 1
        message_header(1, resource, &mut head);
        write_resource(process, extra, &mut head);
        // ResourceSpans.scope_spans = 2
        message_header(2, scope_spans, &mut head);
        message_header(1, scope_len(), &mut head);
        write_scope(&mut head);
        let head_start = spans_start - head.len();
        out[head_start..spans_start].copy_from_slice(&head);
        if group_start == 0 {
            start = head_start;
        } else {
            out.drain(group_start..head_start);
        }
    }
    start
}

/// A span as `ScopeSpans.spans` (field 2). Its length must precede it, and sizing every attribute
/// once more beforehand showed in the encoding's instruction count (`agent_cost`): the span is written
/// after room for a two-byte length, which fits every span of 128 bytes to 16 KiB (nearly all:
/// one has two 16-byte ids and dozens of attributes), and moved in the rare other case. (It was
/// written into a scratch vector and copied.)
fn write_span_field(s: &SpanRecord, out: &mut Vec<u8>) {
    put_key(2, WireType::LengthDelimited, out);
    out.extend_from_slice(&[0x80, 0]);
    let body = out.len();
    write_span(s, out);
    let len = out.len() - body;
    if (0x80..0x4000).contains(&len) {
        out[body - 2] = len as u8 | 0x80;
        out[body - 1] = (len >> 7) as u8;
    } else {
        let mut prefix = Vec::with_capacity(3);
        put_varint(len as u64, &mut prefix);
        out.splice(body - 2..body, prefix);
    }
}

/// A varint, byte by byte into the vector. prost's `encode_varint` writes through bytes'
/// `BufMut`, where each byte of a `Vec` is a one-byte `extend_from_slice`: with the function
/// call, it showed in the agent's profile (the writes are most of what encoding does).
#[inline]
fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A field's key: its number and wire type.
#[inline]
fn put_key(tag: u32, wire_type: WireType, out: &mut Vec<u8>) {
    put_varint(u64::from(tag << 3 | wire_type as u32), out);
}

/// Bytes of a length-delimited field `tag` whose content is `len` bytes.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn message_header(tag: u32, len: usize, out: &mut Vec<u8>) {
    put_key(tag, WireType::LengthDelimited, out);
    put_varint(len as u64, out);
}

fn bytes_field(tag: u32, v: &[u8], out: &mut Vec<u8>) {
    message_header(tag, v.len(), out);
    out.extend_from_slice(v);
}

/// proto3 leaves empty strings out.
fn str_len(tag: u32, v: &str) -> usize {
    if v.is_empty() { 0 } else { field_len(tag, v.len()) }
}

fn str_field(tag: u32, v: &str, out: &mut Vec<u8>) {
    if !v.is_empty() {
        bytes_field(tag, v.as_bytes(), out);
    }
}

fn varint_len(tag: u32, v: u64) -> usize {
    if v == 0 { 0 } else { key_len(tag) + encoded_len_varint(v) }
}

fn varint_field(tag: u32, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        put_key(tag, WireType::Varint, out);
        put_varint(v, out);
    }
}

fn fixed64_field(tag: u32, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        put_key(tag, WireType::SixtyFourBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// An attribute value, one of `AnyValue`'s fields (always written: it is a oneof).
enum Any<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
}

impl<'a> From<&'a AttrValue> for Any<'a> {
    fn from(v: &'a AttrValue) -> Self {
        match v {
            AttrValue::Str(s) => Any::Str(s),
            AttrValue::Bool(b) => Any::Bool(*b),
            AttrValue::Int(i) => Any::Int(*i),
        }
    }
}

/// `AnyValue`: string_value = 1, bool_value = 2, int_value = 3.
fn any_len(v: &Any<'_>) -> usize {
    match v {
        Any::Str(s) => field_len(1, s.len()),
        Any::Bool(_) => key_len(2) + 1,
        Any::Int(i) => key_len(3) + encoded_len_varint(*i as u64),
    }
}

fn write_any(v: &Any<'_>, out: &mut Vec<u8>) {
    match v {
        Any::Str(s) => bytes_field(1, s.as_bytes(), out),
        Any::Bool(b) => {
            put_key(2, WireType::Varint, out);
            put_varint(u64::from(*b), out);
        }
        Any::Int(i) => {
            put_key(3, WireType::Varint, out);
            put_varint(*i as u64, out);
        }
    }
}

/// `KeyValue`: key = 1, value = 2.
fn key_value_len(key: &str, v: &Any<'_>) -> usize {
    str_len(1, key) + field_len(2, any_len(v))
}

/// A `KeyValue` as field `tag` of the enclosing message.
fn key_value_field(tag: u32, key: &str, v: &Any<'_>, out: &mut Vec<u8>) {
    let any = any_len(v);
    let len = 4 + key.len() + any;
    if tag < 16 && !key.is_empty() && len < 128 {
        // Most attributes: every length fits one byte, so the headers are known at once (the
        // general path below writes the same bytes, a varint at a time). (proto3 leaves an empty
        // key out: the general path does.)
        let head = [(tag << 3) as u8 | WireType::LengthDelimited as u8, len as u8, 0x0a, key.len() as u8];
        if let Any::Str(s) = v {
            write_string_attr(out, head, key.as_bytes(), [0x12, any as u8, 0x0a, s.len() as u8], s.as_bytes());
            return;
        }
        out.reserve(2 + len);
        out.extend_from_slice(&head);
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&[0x12, any as u8]);
        write_any(v, out);
        return;
    }
    message_header(tag, key_value_len(key, v), out);
    str_field(1, key, out);
    message_header(2, any_len(v), out);
    write_any(v, out);
}

/// A string attribute whose lengths all fit one byte: its four headers around the key, four more
/// around the value. One capacity check and one length update for the whole attribute, where an
/// `extend_from_slice` per piece showed in the encoding's instruction count.
#[inline]
fn write_string_attr(out: &mut Vec<u8>, head: [u8; 4], key: &[u8], mid: [u8; 4], value: &[u8]) {
    let total = 8 + key.len() + value.len();
    out.reserve(total);
    let start = out.len();
    // SAFETY: `total` bytes were reserved past `start`, and the four writes fill exactly them.
    unsafe {
        let p = out.as_mut_ptr().add(start);
        p.cast::<[u8; 4]>().write_unaligned(head);
        std::ptr::copy_nonoverlapping(key.as_ptr(), p.add(4), key.len());
        p.add(4 + key.len()).cast::<[u8; 4]>().write_unaligned(mid);
        std::ptr::copy_nonoverlapping(value.as_ptr(), p.add(8 + key.len()), value.len());
        out.set_len(start + total);
    }
}

fn resource_attrs(p: &ProcessInfo) -> [(&'static str, Any<'_>); 4] {
    [
        ("service.name", Any::Str(&p.service_name)),
        ("host.name", Any::Str(&p.host_name)),
        ("process.pid", Any::Int(i64::from(p.pid))),
        ("process.executable.name", Any::Str(&p.executable_name)),
    ]
}

/// The process's resource attributes, then those of `extra` whose keys it does not have.
fn all_resource_attrs<'a>(
    p: &'a ProcessInfo,
    extra: &'a [(String, String)],
) -> impl Iterator<Item = (&'a str, Any<'a>)> {
    let own = |key: &str| resource_attrs(p).iter().any(|(o, _)| *o == key);
    let added = extra.iter().filter(move |(k, _)| !own(k)).map(|(k, v)| (k.as_str(), Any::Str(v)));
    resource_attrs(p).into_iter().chain(added)
}

/// `Resource`: attributes = 1.
fn resource_len(p: &ProcessInfo, extra: &[(String, String)]) -> usize {
    all_resource_attrs(p, extra).map(|(k, v)| field_len(1, key_value_len(k, &v))).sum()
}

fn write_resource(p: &ProcessInfo, extra: &[(String, String)], out: &mut Vec<u8>) {
    for (k, v) in all_resource_attrs(p, extra) {
        key_value_field(1, k, &v, out);
    }
}

/// `InstrumentationScope`: name = 1, version = 2.
fn scope_len() -> usize {
    str_len(1, SCOPE_NAME) + str_len(2, SCOPE_VERSION)
}

fn write_scope(out: &mut Vec<u8>) {
    str_field(1, SCOPE_NAME, out);
    str_field(2, SCOPE_VERSION, out);
}

/// `Span.kind`: SPAN_KIND_INTERNAL = 1, SERVER = 2, CLIENT = 3.
fn kind(k: SpanKind) -> u64 {
    match k {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    }
}

/// `Status`: message = 2, code = 3 (STATUS_CODE_UNSET 0, OK 1, ERROR 2).
fn status(s: &SpanStatus) -> (&str, u64) {
    match s {
        SpanStatus::Unset => ("", 0),
        SpanStatus::Ok => ("", 1),
        SpanStatus::Error(msg) => (msg, 2),
    }
}

fn status_len(s: &SpanStatus) -> usize {
    let (msg, code) = status(s);
    str_len(2, msg) + varint_len(3, code)
}

/// Collectors reject negative durations: the end never precedes the start.
fn end_time(s: &SpanRecord) -> u64 {
    s.end_unix_nano.max(s.start_unix_nano)
}

/// `Span`: trace_id = 1, span_id = 2, parent_span_id = 4, name = 5, kind = 6,
/// start_time_unix_nano = 7, end_time_unix_nano = 8, attributes = 9, status = 15, flags = 16.
fn write_span(s: &SpanRecord, out: &mut Vec<u8>) {
    bytes_field(1, &s.trace_id, out);
    bytes_field(2, &s.span_id, out);
    if let Some(p) = &s.parent_span_id {
        bytes_field(4, p, out);
    }
    str_field(5, &s.name, out);
    varint_field(6, kind(s.kind), out);
    fixed64_field(7, s.start_unix_nano, out);
    fixed64_field(8, end_time(s), out);
    for (k, v) in &s.attributes {
        key_value_field(9, k, &v.into(), out);
    }
    message_header(15, status_len(&s.status), out);
    let (msg, code) = status(&s.status);
    str_field(2, msg, out);
    varint_field(3, code, out);
    put_key(16, WireType::ThirtyTwoBit, out);
    let flags = if s.remote_parent.is_some() { SPAN_FLAGS | PARENT_IS_REMOTE } else { SPAN_FLAGS };
    out.extend_from_slice(&flags.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::trace::v1::{Span, Status};
    use prost::Message;

    use super::*;
    use crate::export::tests::test_span;

    /// Encodes `spans`, decodes them with opentelemetry-proto, and checks that prost's own
    /// encoding of the decoded request is byte for byte ours: lengths, field order and the
    /// fields left out are all canonical.
    fn round_trip(spans: &[SpanRecord]) -> ExportTraceServiceRequest {
        let mut out = vec![0xff]; // a byte left over would not decode
        let start = export_request(spans, &mut out);
        let req = ExportTraceServiceRequest::decode(&out[start..]).expect("valid protobuf");
        assert_eq!(req.encode_to_vec(), out[start..]);
        req
    }

    fn kv(key: &str, v: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    #[test]
    fn a_span_decodes_to_what_it_was() {
        let mut span = test_span("etcd Range", 2, Some(1), 10, 30);
        span.status = SpanStatus::Error("boom".into());
        span.attributes = vec![
            ("etcd.key", "/registry/pods".into()),
            ("etcd.count_only", AttrValue::Bool(true)),
            ("etcd.revision", AttrValue::Int(-3)),
            ("zero", AttrValue::Int(0)),
            ("no", AttrValue::Bool(false)),
            ("empty", "".into()),
        ];
        let req = round_trip(std::slice::from_ref(&span));
        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes,
            [
                kv("service.name", s("kube-apiserver")),
                kv("host.name", s("node-1")),
                kv("process.pid", Value::IntValue(1234)),
                kv("process.executable.name", s("kube-apiserver")),
            ]
        );
        assert_eq!(rs.scope_spans.len(), 1);
        let scope = rs.scope_spans[0].scope.as_ref().unwrap();
        assert_eq!((scope.name.as_str(), scope.version.as_str()), (SCOPE_NAME, SCOPE_VERSION));
        let want = Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0, 0, 0, 0, 0, 0, 0, 2],
            parent_span_id: vec![0, 0, 0, 0, 0, 0, 0, 1],
            flags: 0x101,
            name: "etcd Range".into(),
            kind: 3, // SPAN_KIND_CLIENT
            start_time_unix_nano: span.start_unix_nano,
            end_time_unix_nano: span.end_unix_nano,
            attributes: vec![
                kv("etcd.key", s("/registry/pods")),
                kv("etcd.count_only", Value::BoolValue(true)),
                kv("etcd.revision", Value::IntValue(-3)),
                // Values of a oneof are sent even when they are the type's default.
                kv("zero", Value::IntValue(0)),
                kv("no", Value::BoolValue(false)),
                kv("empty", s("")),
            ],
            status: Some(Status { message: "boom".into(), code: 2 }), // STATUS_CODE_ERROR
            ..Default::default()
        };
        assert_eq!(rs.scope_spans[0].spans, [want]);
    }

    #[test]
    fn roots_statuses_kinds_and_clock_skew() {
        let mut root = test_span("GET /api/v1/pods", 1, None, 0, 40);
        root.status = SpanStatus::Ok;
        let mut skewed = test_span("skewed", 3, None, 50, 50);
        skewed.end_unix_nano = skewed.start_unix_nano - 5;
        skewed.kind = SpanKind::Internal;
        let req = round_trip(&[root, skewed]);
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert!(spans[0].parent_span_id.is_empty());
        assert_eq!(spans[0].kind, 2); // SPAN_KIND_SERVER
        assert_eq!(spans[0].status, Some(Status { message: String::new(), code: 1 }));
        assert_eq!(spans[1].kind, 1); // SPAN_KIND_INTERNAL
        assert_eq!(spans[1].status, Some(Status::default())); // unset
        assert_eq!(spans[1].end_time_unix_nano, spans[1].start_time_unix_nano);
    }

    /// A server span whose parent is its caller's span says so in its flags.
    #[test]
    fn a_remote_parent_is_flagged() {
        let mut span = test_span("GET /api/v1/pods", 2, Some(1), 0, 40);
        span.remote_parent = Some(crate::span::RemoteParent {
            trace_id: span.trace_id,
            span_id: [0, 0, 0, 0, 0, 0, 0, 1],
            sampled: true,
        });
        let req = round_trip(&[span]);
        assert_eq!(req.resource_spans[0].scope_spans[0].spans[0].flags, 0x301);
    }

    /// Lengths past one varint byte, at every level.
    #[test]
    fn long_values_and_many_spans() {
        let mut spans = Vec::new();
        for i in 0..300u16 {
            let mut sp = test_span(&"n".repeat(usize::from(i)), (i % 256) as u8, Some(1), 0, u64::from(i));
            sp.attributes = vec![
                ("url.path", "/".repeat(usize::from(i) * 7).into()),
                ("k", AttrValue::Int(i64::MIN + i64::from(i))),
                ("big", AttrValue::Int(i64::MAX)),
            ];
            spans.push(sp);
        }
        let req = round_trip(&spans);
        let got = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(got.len(), 300);
        assert_eq!(got[299].name.len(), 299);
        assert_eq!(got[299].attributes[0].value, Some(AnyValue { value: Some(s(&"/".repeat(299 * 7))) }));
        assert_eq!(got[299].attributes[1].value, Some(AnyValue { value: Some(Value::IntValue(i64::MIN + 299)) }));
        assert!(got[0].name.is_empty());
    }

    /// A span's length takes one varint byte below 128 bytes and three from 16 KiB: the two
    /// bytes set aside for it are then resized (the round trip checks the bytes are canonical).
    #[test]
    fn spans_shorter_and_longer_than_the_usual_length_field() {
        let mut tiny = test_span("", 1, None, 0, 1);
        tiny.attributes.clear();
        let mut huge = test_span("huge", 2, None, 0, 1);
        huge.attributes = vec![("url.path", "/".repeat(20_000).into())];
        let mut usual = test_span("usual", 3, Some(1), 0, 1);
        usual.attributes = vec![("url.path", "/api/v1/namespaces/default/pods".into()); 8];
        let req = round_trip(&[tiny.clone(), huge, usual.clone(), tiny]);
        let got = &req.resource_spans[0].scope_spans[0].spans;
        let lens: Vec<usize> = got.iter().map(Message::encoded_len).collect();
        assert!(lens[0] < 128 && lens[1] >= 16384 && (128..16384).contains(&lens[2]), "{lens:?}");
        assert_eq!(got.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["", "huge", "usual", ""]);
        assert_eq!(got[1].attributes[0].value, Some(AnyValue { value: Some(s(&"/".repeat(20_000))) }));
    }

    /// One `ResourceSpans` per process (an equal process in another `Arc` is the same), in order
    /// of first appearance, spans in batch order.
    #[test]
    fn processes_are_kept_apart() {
        let a = test_span("a", 1, None, 0, 1);
        let mut b = test_span("b", 2, None, 0, 1);
        b.process = Arc::new(ProcessInfo { pid: 99, ..(*a.process).clone() });
        let mut c = test_span("c", 3, None, 0, 1);
        c.process = Arc::new((*a.process).clone());
        let req = round_trip(&[a, b, c]);
        let groups: Vec<(Option<Value>, Vec<String>)> = req
            .resource_spans
            .iter()
            .map(|rs| {
                let pid = rs.resource.as_ref().unwrap().attributes[2].value.clone().unwrap().value;
                (pid, rs.scope_spans[0].spans.iter().map(|s| s.name.clone()).collect())
            })
            .collect();
        assert_eq!(
            groups,
            [
                (Some(Value::IntValue(1234)), vec!["a".to_owned(), "c".to_owned()]),
                (Some(Value::IntValue(99)), vec!["b".to_owned()])
            ]
        );
        let mut out = Vec::new();
        assert_eq!(export_request(&[], &mut out), 0);
        assert!(out.is_empty());
    }

    /// Attributes on both sides of the one-byte-lengths path of `key_value_field`, in span and
    /// resource attributes: byte for byte what prost writes, and the same text back.
    #[test]
    fn attributes_around_one_byte_lengths() {
        const KEYS: [&str; 4] = ["k", "url.path", "k8s.namespace.name", "a.key.of.exactly.forty.bytes.for.edges.x"];
        let mut spans = Vec::new();
        for (i, key) in KEYS.into_iter().enumerate() {
            for len in 0..=130 {
                let mut sp = test_span("s", 1, None, 0, 1);
                sp.attributes = vec![(key, "v".repeat(len).into()), ("", "empty key".into())];
                // A process of its own per span: the resources' strings cross the edge too, and
                // the request keeps the spans in batch order.
                let pid = (i * 1000 + len) as u32;
                sp.process = Arc::new(ProcessInfo { host_name: "h".repeat(len), pid, ..(*sp.process).clone() });
                spans.push(sp);
            }
        }
        // Integers and booleans with keys around the edge (a negative integer takes 10 bytes).
        let mut edge = test_span("ints", 1, None, 0, 1);
        for len in 100..=125 {
            let key: &'static str = Box::leak("k".repeat(len).into_boxed_str());
            edge.attributes.extend([(key, AttrValue::Int(-1)), (key, AttrValue::Int(5)), (key, AttrValue::Bool(true))]);
        }
        round_trip(std::slice::from_ref(&edge));
        let req = round_trip(&spans);
        let got: Vec<&Span> = req.resource_spans.iter().flat_map(|rs| &rs.scope_spans[0].spans).collect();
        assert_eq!(got.len(), spans.len());
        for (want, got) in spans.iter().zip(got) {
            let (key, value) = (want.attributes[0].0, want.attributes[0].1.clone());
            let AttrValue::Str(text) = value else { unreachable!("string attributes only") };
            assert_eq!(got.attributes[0], kv(key, s(&text)));
            assert_eq!(got.attributes[1], kv("", s("empty key")));
        }
    }

    #[test]
    fn varints_and_keys_are_written_as_prost_writes_them() {
        for v in [0, 1, 127, 128, 300, 16_383, 16_384, u64::from(u32::MAX), -1i64 as u64, u64::MAX] {
            let (mut ours, mut prosts) = (Vec::new(), Vec::new());
            put_varint(v, &mut ours);
            prost::encoding::encode_varint(v, &mut prosts);
            assert_eq!(ours, prosts, "{v}");
            assert_eq!(ours.len(), encoded_len_varint(v), "{v}");
        }
        for (tag, wt) in [
            (1, WireType::LengthDelimited),
            (16, WireType::ThirtyTwoBit),
            (15, WireType::Varint),
            (2047, WireType::SixtyFourBit),
        ] {
            let (mut ours, mut prosts) = (Vec::new(), Vec::new());
            put_key(tag, wt, &mut ours);
            prost::encoding::encode_key(tag, wt, &mut prosts);
            assert_eq!(ours, prosts, "{tag}");
        }
    }
}
