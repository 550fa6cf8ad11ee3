//! What etcd spans must be: expectations, checks, and how a connection joined mid-stream came out.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::grpc_client::GrpcCall;
use crate::span::ReceivedSpan;

// ---------------------------------------------------------------------------------------------
// etcd span checks

/// What one etcd RPC should have produced.
#[derive(Clone, Debug)]
pub struct EtcdExpect {
    /// `server` or `client`.
    pub kind: &'static str,
    /// `db.operation.name` and `rpc.method`: Put, Range, DeleteRange, Txn, Watch, LeaseGrant, ...
    pub op: String,
    /// `rpc.service`.
    pub service: String,
    /// `etcd.key`; None: must be absent.
    pub key: Option<String>,
    /// k8s object of the key (None: attribute absent).
    pub resource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `rpc.grpc.status_code`; None: must be absent (streaming RPC still open).
    pub grpc_status: Option<i64>,
    /// `rpc.grpc.status_code` may be absent (trailers not resolvable mid-connection); when present
    /// it must still be `grpc_status`.
    pub status_may_be_unresolved: bool,
    /// For failing calls: text the span's status message must contain.
    pub error_contains: Option<String>,
    /// Exact values of more attributes (also used to tell apart calls on the same key).
    pub attrs: BTreeMap<String, Value>,
    /// Attributes that must be absent.
    pub absent: Vec<String>,
    /// `server.port` / `network.peer.port` (server span: server.port only).
    pub server_port: Option<u16>,
    pub label: String,
}

impl EtcdExpect {
    pub fn new(kind: &'static str, service: &str, op: &str) -> EtcdExpect {
        EtcdExpect {
            kind,
            op: op.into(),
            service: service.into(),
            key: None,
            resource: None,
            namespace: None,
            name: None,
            grpc_status: Some(0),
            status_may_be_unresolved: false,
            error_contains: None,
            attrs: BTreeMap::new(),
            absent: Vec::new(),
            server_port: None,
            label: String::new(),
        }
    }
    /// A KV call (`etcdserverpb.KV`) on `key`, whose k8s attributes are derived from the key
    /// (`/registry/<resource>[/<namespace>]/<name>`; for keys ending in `/` no name).
    pub fn kv(kind: &'static str, op: &str, key: &str) -> EtcdExpect {
        Self::new(kind, "etcdserverpb.KV", op).key(key)
    }
    /// Sets the key and the k8s attributes it implies (see [`registry_key_parts`]).
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.into());
        let (r, ns, n) = registry_key_parts(key);
        self.resource = r;
        self.namespace = ns;
        self.name = n;
        self
    }
    pub fn attr(mut self, k: &str, v: Value) -> Self {
        self.attrs.insert(k.into(), v);
        self
    }
    /// A Txn's counts: compares, success and failure ops, and whether it succeeded.
    pub fn txn(self, compares: i64, success_ops: i64, failure_ops: i64, succeeded: bool) -> Self {
        self.attr("etcd.txn.compares", json!(compares))
            .attr("etcd.txn.success_ops", json!(success_ops))
            .attr("etcd.txn.failure_ops", json!(failure_ops))
            .attr("etcd.txn.succeeded", json!(succeeded))
    }
    pub fn absent(mut self, k: &str) -> Self {
        self.absent.push(k.into());
        self
    }
    pub fn grpc_status(mut self, s: Option<i64>) -> Self {
        self.grpc_status = s;
        self
    }
    pub fn status_may_be_unresolved(mut self) -> Self {
        self.status_may_be_unresolved = true;
        self
    }
    pub fn error(mut self, code: i64, contains: &str) -> Self {
        self.grpc_status = Some(code);
        self.error_contains = Some(contains.into());
        self
    }
    pub fn server_port(mut self, p: u16) -> Self {
        self.server_port = Some(p);
        self
    }
    pub fn label(mut self, l: &str) -> Self {
        self.label = l.into();
        self
    }
    /// The expected span name: `etcd <Op> <resource>` or `etcd <Op>`.
    pub fn span_name(&self) -> String {
        match &self.resource {
            Some(r) => format!("etcd {} {r}", self.op),
            None => format!("etcd {}", self.op),
        }
    }
    fn who(&self) -> String {
        format!(
            "{} etcd {} {}{}",
            self.kind,
            self.op,
            self.key.as_deref().unwrap_or("(no key)"),
            if self.label.is_empty() { String::new() } else { format!(" ({})", self.label) }
        )
    }
    /// Whether `s` is this call's span: kind, rpc.method, etcd.key, and the identifying attributes
    /// (lease and watch ids, limit, revision, prefix) given in `attrs` or required `absent`.
    pub fn identifies(&self, s: &ReceivedSpan) -> bool {
        s.kind == self.kind
            && s.attr_str("rpc.method") == Some(self.op.as_str())
            && s.attr_str("etcd.key") == self.key.as_deref()
            && ["etcd.lease.id", "etcd.limit", "etcd.revision", "etcd.prefix", "etcd.watch.id"].iter().all(|k| {
                match self.attrs.get(*k) {
                    Some(v) => s.attr(k) == Some(v),
                    None => !self.absent.iter().any(|a| a == k) || s.attr(k).is_none(),
                }
            })
    }
}

/// The k8s parts of an etcd key under `/registry`: `(resource, namespace, name)`.
/// `/registry/pods/default/web-0` → (pods, default, web-0); `/registry/nodes/n1` → (nodes, -, n1);
/// `/registry/pods/default/` → (pods, default, -); `/registry/pods/` → (pods, -, -).
pub fn registry_key_parts(key: &str) -> (Option<String>, Option<String>, Option<String>) {
    let Some(rest) = key.strip_prefix("/registry/") else {
        return (None, None, None);
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let s = |p: Option<&&str>| p.filter(|p| !p.is_empty()).map(|p| p.to_string());
    match parts.len() {
        0 => (None, None, None),
        1 => (s(parts.first()), None, None),
        2 => (s(parts.first()), None, s(parts.get(1))),
        _ => (s(parts.first()), s(parts.get(1)), s(parts.get(2))),
    }
}

fn want(errs: &mut Vec<String>, who: &str, s: &ReceivedSpan, key: &str, v: &Value) {
    if s.attr(key) != Some(v) {
        errs.push(format!("{who}: {key} = {:?}, expected {v}", s.attr(key)));
    }
}

fn want_opt_str(errs: &mut Vec<String>, who: &str, s: &ReceivedSpan, key: &str, v: &Option<String>) {
    match v {
        Some(v) => want(errs, who, s, key, &json!(v)),
        None => {
            if let Some(got) = s.attr(key) {
                errs.push(format!("{who}: {key} = {got}, expected it absent"));
            }
        }
    }
}

/// Checks one etcd span against one expectation.
pub fn check_etcd_span(s: &ReceivedSpan, e: &EtcdExpect) -> Vec<String> {
    let mut errs = Vec::new();
    let who = e.who();
    let who = who.as_str();
    if s.kind != e.kind {
        errs.push(format!("{who}: kind {:?}", s.kind));
    }
    let name = e.span_name();
    if s.name != name {
        errs.push(format!("{who}: name {:?}, expected {name:?}", s.name));
    }
    want(&mut errs, who, s, "rpc.system", &json!("grpc"));
    want(&mut errs, who, s, "rpc.service", &json!(e.service));
    want(&mut errs, who, s, "rpc.method", &json!(e.op));
    want(&mut errs, who, s, "db.system.name", &json!("etcd"));
    want(&mut errs, who, s, "db.operation.name", &json!(e.op));
    want(&mut errs, who, s, "network.protocol.version", &json!("2"));
    want(&mut errs, who, s, "network.transport", &json!("tcp"));
    want(&mut errs, who, s, "network.peer.address", &json!("127.0.0.1"));
    want_opt_str(&mut errs, who, s, "etcd.key", &e.key);
    want_opt_str(&mut errs, who, s, "k8s.resource", &e.resource);
    want_opt_str(&mut errs, who, s, "k8s.namespace.name", &e.namespace);
    want_opt_str(&mut errs, who, s, "k8s.object.name", &e.name);
    match e.grpc_status {
        Some(_) if e.status_may_be_unresolved && s.attr("rpc.grpc.status_code").is_none() => {}
        Some(code) => want(&mut errs, who, s, "rpc.grpc.status_code", &json!(code)),
        None => {
            if let Some(v) = s.attr("rpc.grpc.status_code") {
                errs.push(format!("{who}: rpc.grpc.status_code = {v} on a stream that is still open"));
            }
        }
    }
    let failing = e.grpc_status.is_some_and(|c| c != 0);
    if failing {
        if s.status_code != "error" {
            errs.push(format!("{who}: status {:?}, expected error for grpc-status {:?}", s.status_code, e.grpc_status));
        }
        if let Some(text) = &e.error_contains
            && !s.status_message.contains(text.as_str())
        {
            errs.push(format!("{who}: status message {:?} does not contain {text:?}", s.status_message));
        }
    } else {
        if s.status_code != "unset" {
            errs.push(format!("{who}: status {:?} ({:?}), expected unset", s.status_code, s.status_message));
        }
        match s.attr_i64("etcd.response.revision") {
            Some(r) if r > 0 => {}
            other => errs.push(format!("{who}: etcd.response.revision = {other:?}, expected a positive integer")),
        }
    }
    for (k, v) in &e.attrs {
        want(&mut errs, who, s, k, v);
    }
    for k in &e.absent {
        if let Some(v) = s.attr(k) {
            errs.push(format!("{who}: {k} = {v}, expected it absent"));
        }
    }
    if let Some(p) = e.server_port {
        want(&mut errs, who, s, "server.port", &json!(p));
        if e.kind == "client" {
            want(&mut errs, who, s, "network.peer.port", &json!(p));
        }
    }
    // Whichever side: both ends of the connection are known and are real ports.
    for k in ["client.port", "server.port", "network.peer.port"] {
        match s.attr_i64(k) {
            Some(p) if (1..=65535).contains(&p) => {}
            other => errs.push(format!("{who}: {k} = {other:?}, expected a real port (1-65535)")),
        }
    }
    if s.end <= s.start {
        errs.push(format!("{who}: end {} is not after start {}", s.end, s.start));
    }
    errs
}

/// Matches spans to expectations ([`EtcdExpect::identifies`]): every expectation must have exactly
/// one span. Spans matched by no expectation are errors unless `ignore(span)` says otherwise.
pub fn check_etcd_spans(
    spans: &[ReceivedSpan],
    exps: &[EtcdExpect],
    ignore: &dyn Fn(&ReceivedSpan) -> bool,
) -> Vec<String> {
    let mut errs = Vec::new();
    let mut used = vec![false; spans.len()];
    for e in exps {
        let idx: Vec<usize> = spans.iter().enumerate().filter(|(_, s)| e.identifies(s)).map(|(i, _)| i).collect();
        match idx.as_slice() {
            [] => errs.push(format!("no span for {}", e.who())),
            [i] => {
                used[*i] = true;
                errs.extend(check_etcd_span(&spans[*i], e));
            }
            many => {
                for i in many {
                    used[*i] = true;
                }
                errs.push(format!("{} spans for {} (expected exactly one)", many.len(), e.who()));
            }
        }
    }
    for (i, s) in spans.iter().enumerate() {
        if !used[i] && !ignore(s) {
            errs.push(format!("unexpected span: {}", s.summary()));
        }
    }
    errs
}

/// Outcome of a mid-connection run: how the spans of the calls made after attach were named.
#[derive(Debug, Default)]
pub struct MidStream {
    /// Calls made after the tracer attached.
    pub calls: usize,
    /// Spans named `unknown` (name not resolvable yet).
    pub unknown: usize,
    /// Spans named right (matched to their call by key, op and name).
    pub named_right: usize,
    /// Index (in call order) of the first call whose span was named right.
    pub first_named: Option<usize>,
    /// Index of the last call without a named span.
    pub last_unnamed: Option<usize>,
}

impl MidStream {
    /// One line for the test's log.
    pub fn summary(&self) -> String {
        format!(
            "{} calls after attach: {} unknown, {} named right, first named call #{:?}, last unnamed call #{:?}",
            self.calls, self.unknown, self.named_right, self.first_named, self.last_unnamed
        )
    }
}

/// Checks the spans of a [`GrpcClient`] run (tracer on the etcd server, attached between the
/// warm-up and the main phase): every span not named `unknown` is exactly right for the call it
/// belongs to, no span belongs to a warm-up call, there is one span per call (named or unknown;
/// at most `max_missing` calls without any span), the calls from `must_name_from` on are all
/// named, and at most `max_unknown` are unknown.
pub fn check_mid_stream(
    spans: &[ReceivedSpan],
    calls: &[GrpcCall],
    etcd_port: u16,
    must_name_from: usize,
    max_unknown: usize,
    max_missing: usize,
) -> (MidStream, Vec<String>) {
    let mut errs = Vec::new();
    let mid: Vec<&GrpcCall> = calls.iter().filter(|c| c.phase == "mid").collect();
    let conn: Vec<&ReceivedSpan> =
        spans.iter().filter(|s| s.attr_i64("server.port") == Some(i64::from(etcd_port))).collect();
    let mut m = MidStream { calls: mid.len(), ..Default::default() };
    let mut named_for = vec![0usize; mid.len()];
    for s in &conn {
        if s.name == "unknown" {
            m.unknown += 1;
            if s.kind != "server" {
                errs.push(format!("unknown span of kind {:?}: {}", s.kind, s.summary()));
            }
            continue;
        }
        let key = s.attr_str("etcd.key").unwrap_or("");
        if calls.iter().any(|c| c.phase == "warm" && c.key == key) {
            errs.push(format!("span for a call made BEFORE the tracer attached: {}", s.summary()));
            continue;
        }
        let Some(idx) = mid.iter().position(|c| c.key == key) else {
            errs.push(format!("span that matches no call: {}", s.summary()));
            continue;
        };
        named_for[idx] += 1;
        let c = mid[idx];
        // The response trailers may have been encoded with table entries from before attach:
        // grpc-status may be unresolved (absent), never wrong.
        let e = EtcdExpect::kv("server", &c.op, &c.key)
            .server_port(etcd_port)
            .status_may_be_unresolved()
            .label(&format!("call {}", c.i));
        let span_errs = check_etcd_span(s, &e);
        if span_errs.is_empty() {
            m.named_right += 1;
            m.first_named.get_or_insert(idx);
        }
        errs.extend(span_errs);
    }
    for (i, n) in named_for.iter().enumerate() {
        if *n > 1 {
            errs.push(format!("{n} spans for call {} ({} {})", mid[i].i, mid[i].op, mid[i].key));
        }
        if *n == 0 {
            m.last_unnamed = Some(i);
            if i >= must_name_from {
                errs.push(format!(
                    "call {} ({} {}) made well after attach has no span named for it",
                    mid[i].i, mid[i].op, mid[i].key
                ));
            }
        }
    }
    let named: usize = named_for.iter().sum();
    if named + m.unknown > mid.len() || named + m.unknown + max_missing < mid.len() {
        errs.push(format!(
            "{} calls after attach but {} spans on the connection ({} named, {} unknown): expected one each (at most {max_missing} missing)",
            mid.len(),
            named + m.unknown,
            named,
            m.unknown
        ));
    }
    if m.unknown > max_unknown {
        errs.push(format!("{} of {} spans are `unknown` (at most {max_unknown} allowed)", m.unknown, mid.len()));
    }
    if !errs.is_empty() {
        errs.push(format!("mid-connection summary: {m:?}"));
    }
    (m, errs)
}
