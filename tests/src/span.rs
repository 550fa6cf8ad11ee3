//! One flattened span, whichever way it reached the test (OTLP gRPC, OTLP/HTTP, `--output json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::Value;

/// A span as the tests look at it. Attribute values are JSON values: strings, integers, booleans,
/// doubles, arrays (OTLP arrays), objects (OTLP kv-lists); OTLP bytes become lower-case hex strings.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedSpan {
    pub name: String,
    /// `server`, `client`, `internal`, `producer`, `consumer` or `unspecified`.
    pub kind: String,
    /// Lower-case hex, 32 chars.
    pub trace_id: String,
    /// Lower-case hex, 16 chars.
    pub span_id: String,
    /// Lower-case hex, or "" when the span has no parent.
    pub parent_span_id: String,
    /// Unix nanoseconds.
    pub start: u64,
    pub end: u64,
    /// `unset`, `ok` or `error`.
    pub status_code: String,
    pub status_message: String,
    pub attributes: BTreeMap<String, Value>,
    pub resource: BTreeMap<String, Value>,
    /// Instrumentation scope name (OTLP only; "" from JSON output).
    pub scope: String,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        self.attributes.get(key).and_then(Value::as_i64)
    }
    pub fn attr_bool(&self, key: &str) -> Option<bool> {
        self.attributes.get(key).and_then(Value::as_bool)
    }
    pub fn res_str(&self, key: &str) -> Option<&str> {
        self.resource.get(key).and_then(Value::as_str)
    }
    pub fn res_i64(&self, key: &str) -> Option<i64> {
        self.resource.get(key).and_then(Value::as_i64)
    }
    /// The pid in the resource (`process.pid`), if any.
    pub fn pid(&self) -> Option<u32> {
        self.res_i64("process.pid").and_then(|p| u32::try_from(p).ok())
    }
    /// `end - start`; zero when end < start (tests check that separately).
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end.saturating_sub(self.start))
    }
    /// `http.request.method` + `url.path`, the key the tests use to match spans to requests.
    pub fn method_path(&self) -> (String, String) {
        (
            self.attr_str("http.request.method").unwrap_or("").to_owned(),
            self.attr_str("url.path").unwrap_or("").to_owned(),
        )
    }
    /// One line per span, for assertion messages.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "[{} {:?} status={} {:?} dur={:?} trace={} span={} parent={:?}]",
            self.kind,
            self.name,
            self.status_code,
            self.status_message,
            self.duration(),
            self.trace_id,
            self.span_id,
            self.parent_span_id
        );
        let _ = write!(s, " attrs={}", compact(&self.attributes));
        let _ = write!(s, " resource={}", compact(&self.resource));
        s
    }

    /// Parses one line of `tracer --output json`.
    pub fn from_json_line(line: &str) -> Result<ReceivedSpan, String> {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line:?}"))?;
        let obj = v.as_object().ok_or_else(|| format!("not a JSON object: {line:?}"))?;
        let s = |k: &str| -> Result<String, String> {
            match obj.get(k) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Null) | None => Err(format!("field {k:?} missing in {line:?}")),
                Some(other) => Err(format!("field {k:?} is not a string ({other}) in {line:?}")),
            }
        };
        let n = |k: &str| -> Result<u64, String> {
            match obj.get(k) {
                Some(Value::Number(n)) => n.as_u64().ok_or_else(|| format!("field {k:?} is not a u64 in {line:?}")),
                Some(Value::String(s)) => {
                    s.parse::<u64>().map_err(|_| format!("field {k:?} is not a number in {line:?}"))
                }
                _ => Err(format!("field {k:?} missing or not a number in {line:?}")),
            }
        };
        let map = |k: &str| -> Result<BTreeMap<String, Value>, String> {
            match obj.get(k) {
                Some(Value::Object(m)) => Ok(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                _ => Err(format!("field {k:?} missing or not an object in {line:?}")),
            }
        };
        Ok(ReceivedSpan {
            name: s("name")?,
            kind: s("kind")?,
            trace_id: s("trace_id")?,
            span_id: s("span_id")?,
            parent_span_id: s("parent_span_id")?,
            start: n("start_unix_nano")?,
            end: n("end_unix_nano")?,
            status_code: s("status")?,
            status_message: match obj.get("status_message") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => String::new(),
                Some(other) => return Err(format!("status_message is not a string: {other}")),
            },
            attributes: map("attributes")?,
            resource: map("resource")?,
            scope: String::new(),
        })
    }
}

fn compact(m: &BTreeMap<String, Value>) -> String {
    let obj: serde_json::Map<String, Value> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Value::Object(obj).to_string()
}

/// All spans, one summary per line (for assertion messages).
pub fn dump(spans: &[ReceivedSpan]) -> String {
    if spans.is_empty() {
        return "  (no spans)".to_owned();
    }
    spans.iter().map(|s| format!("  {}", s.summary())).collect::<Vec<_>>().join("\n")
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub fn any_value_to_json(v: Option<&AnyValue>) -> Value {
    let Some(v) = v.and_then(|v| v.value.as_ref()) else {
        return Value::Null;
    };
    match v {
        any_value::Value::StringValue(s) => Value::String(s.clone()),
        any_value::Value::BoolValue(b) => Value::Bool(*b),
        any_value::Value::IntValue(i) => Value::from(*i),
        any_value::Value::DoubleValue(d) => serde_json::Number::from_f64(*d).map(Value::Number).unwrap_or(Value::Null),
        any_value::Value::ArrayValue(a) => Value::Array(a.values.iter().map(|v| any_value_to_json(Some(v))).collect()),
        any_value::Value::KvlistValue(kv) => {
            Value::Object(kv.values.iter().map(|k| (k.key.clone(), any_value_to_json(k.value.as_ref()))).collect())
        }
        any_value::Value::BytesValue(b) => Value::String(hex(b)),
        #[allow(unreachable_patterns)]
        _ => Value::Null,
    }
}

fn kv_map(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter().map(|kv| (kv.key.clone(), any_value_to_json(kv.value.as_ref()))).collect()
}

pub fn kind_name(kind: i32) -> &'static str {
    match kind {
        0 => "unspecified",
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "invalid",
    }
}

pub fn status_name(code: i32) -> &'static str {
    match code {
        0 => "unset",
        1 => "ok",
        2 => "error",
        _ => "invalid",
    }
}

/// Flattens an OTLP export request into spans, resource attributes copied onto each span.
pub fn flatten(req: &ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let resource = rs.resource.as_ref().map(|r| kv_map(&r.attributes)).unwrap_or_default();
        for ss in &rs.scope_spans {
            let scope = ss.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
            for sp in &ss.spans {
                let (status_code, status_message) = match &sp.status {
                    Some(st) => (status_name(st.code).to_owned(), st.message.clone()),
                    None => ("unset".to_owned(), String::new()),
                };
                out.push(ReceivedSpan {
                    name: sp.name.clone(),
                    kind: kind_name(sp.kind).to_owned(),
                    trace_id: hex(&sp.trace_id),
                    span_id: hex(&sp.span_id),
                    parent_span_id: hex(&sp.parent_span_id),
                    start: sp.start_time_unix_nano,
                    end: sp.end_time_unix_nano,
                    status_code,
                    status_message,
                    attributes: kv_map(&sp.attributes),
                    resource: resource.clone(),
                    scope: scope.clone(),
                });
            }
        }
    }
    out
}
