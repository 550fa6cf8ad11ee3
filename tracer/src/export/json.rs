//! JSON lines output: one object per finished span, written as soon as it arrives.

use std::io::Write;
use std::time::Instant;

use super::{StdoutSink, hex};
use crate::span::{AttrValue, SpanRecord, SpanStatus};

#[derive(Default)]
pub(super) struct JsonSink {
    pending: Vec<SpanRecord>,
}

impl StdoutSink for JsonSink {
    fn add(&mut self, span: SpanRecord, _now: Instant) {
        self.pending.push(span);
    }

    fn write_due(&mut self, out: &mut dyn Write, _now: Instant, _flush_all: bool) -> std::io::Result<usize> {
        let n = self.pending.len();
        for span in self.pending.drain(..) {
            out.write_all(json_line(&span).as_bytes())?;
        }
        Ok(n)
    }
}

/// The span as one JSON object followed by a newline. Written by hand to keep the field order
/// readable (serde_json's map would sort the keys).
pub(super) fn json_line(s: &SpanRecord) -> String {
    let p = &s.process;
    let message = match &s.status {
        SpanStatus::Error(m) => m.as_str(),
        _ => "",
    };
    let mut o = String::with_capacity(512);
    o.push_str(&format!(
        r#"{{"name":{},"kind":"{}","trace_id":"{}","span_id":"{}","parent_span_id":"{}","start_unix_nano":{},"end_unix_nano":{},"status":"{}","status_message":{},"attributes":{{"#,
        quote(&s.name),
        s.kind.as_str(),
        hex(&s.trace_id),
        hex(&s.span_id),
        s.parent_span_id.map(|id| hex(&id)).unwrap_or_default(),
        s.start_unix_nano,
        s.end_unix_nano,
        s.status.as_str(),
        quote(message),
    ));
    for (i, (k, v)) in s.attributes.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str(&quote(k));
        o.push(':');
        match v {
            AttrValue::Str(v) => o.push_str(&quote(v)),
            AttrValue::Int(v) => o.push_str(&v.to_string()),
            AttrValue::Bool(v) => o.push_str(if *v { "true" } else { "false" }),
        }
    }
    o.push_str(&format!(
        r#"}},"resource":{{"service.name":{},"host.name":{},"process.pid":{},"process.executable.name":{}}}}}"#,
        quote(&p.service_name),
        quote(&p.host_name),
        p.pid,
        quote(&p.executable_name),
    ));
    o.push('\n');
    o
}

/// A JSON string literal (escaped, quoted).
fn quote(s: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tests::test_span;
    use crate::span::SpanKind;
    use serde_json::{Value, json};

    #[test]
    fn line_has_every_field_with_the_right_type() {
        let mut s = test_span("etcd Range", 2, Some(1), 10, 13);
        s.kind = SpanKind::Client;
        s.status = SpanStatus::Error("rpc error: code = Unavailable".into());
        s.attributes = vec![
            ("etcd.key", "/registry/pods/default/x".into()),
            ("rpc.grpc.status_code", AttrValue::Int(14)),
            ("etcd.count_only", AttrValue::Bool(false)),
        ];
        let line = json_line(&s);
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        assert!(line.starts_with(r#"{"name":"etcd Range","kind":"client","trace_id":"#), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["name"], "etcd Range");
        assert_eq!(v["kind"], "client");
        assert_eq!(v["trace_id"], "abababababababababababababababab");
        assert_eq!(v["span_id"], "0000000000000002");
        assert_eq!(v["parent_span_id"], "0000000000000001");
        assert_eq!(v["start_unix_nano"], s.start_unix_nano);
        assert_eq!(v["end_unix_nano"].as_u64(), Some(s.end_unix_nano));
        assert_eq!(v["status"], "error");
        assert_eq!(v["status_message"], "rpc error: code = Unavailable");
        assert_eq!(
            v["attributes"],
            json!({"etcd.key": "/registry/pods/default/x", "rpc.grpc.status_code": 14, "etcd.count_only": false})
        );
        assert_eq!(
            v["resource"],
            json!({
                "service.name": "kube-apiserver",
                "host.name": "node-1",
                "process.pid": 1234,
                "process.executable.name": "kube-apiserver",
            })
        );
    }

    #[test]
    fn root_span_has_empty_parent_and_message() {
        let mut s = test_span("GET /api/v1/pods", 1, None, 0, 5);
        s.status = SpanStatus::Ok;
        let v: Value = serde_json::from_str(&json_line(&s)).unwrap();
        assert_eq!(v["parent_span_id"], "");
        assert_eq!(v["kind"], "server");
        assert_eq!(v["status"], "ok");
        assert_eq!(v["status_message"], "");
        assert_eq!(v["attributes"], json!({}));
    }

    #[test]
    fn strings_are_escaped() {
        let mut s = test_span("we\"ird\nname", 1, None, 0, 5);
        s.attributes = vec![("url.path", "/a\\b\u{1}".into())];
        let v: Value = serde_json::from_str(json_line(&s).trim_end()).unwrap();
        assert_eq!(v["name"], "we\"ird\nname");
        assert_eq!(v["attributes"]["url.path"], "/a\\b\u{1}");
    }
}
