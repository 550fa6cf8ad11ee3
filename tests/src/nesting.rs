//! Ground-truth checks of traces on the API-server-like stack ([`crate::stack`]): each client
//! span of the server (etcd call, webhook call) is matched to the request that caused it by the
//! namespace in its etcd key or webhook path, and is right only when its parent is that request's
//! server span (same trace id, parent span id = the request's span id).

use std::collections::BTreeMap;
use std::fmt;

use crate::span::ReceivedSpan;
use crate::stack::{ApiRequest, Call, Variant};

/// The namespace of a Kubernetes API path (`/api/v1/namespaces/NS/…`).
pub fn ns_of_api_path(path: &str) -> Option<&str> {
    path.strip_prefix("/api/v1/namespaces/")?.split('/').next().filter(|s| !s.is_empty())
}

/// The namespace of an etcd key (`/registry/pods/NS/…`) or a webhook path (`/validate/NS/…`).
pub fn ns_of_call(span: &ReceivedSpan) -> Option<&str> {
    let rest = span
        .attr_str("etcd.key")
        .and_then(|k| k.strip_prefix("/registry/pods/"))
        .or_else(|| span.attr_str("url.path").and_then(|p| p.strip_prefix("/validate/")))?;
    rest.split('/').next().filter(|s| !s.is_empty())
}

/// Whether `span` is an etcd client span (by attributes or by its peer port).
pub fn is_etcd_call(span: &ReceivedSpan, etcd_port: Option<u16>) -> bool {
    span.kind == "client"
        && (span.attr_str("db.system.name") == Some("etcd")
            || etcd_port.is_some_and(|p| span.attr_i64("server.port") == Some(i64::from(p))))
}

/// Whether `span` is a webhook client span (by its peer port).
pub fn is_webhook_call(span: &ReceivedSpan, webhook_port: u16) -> bool {
    span.kind == "client" && span.attr_i64("server.port") == Some(i64::from(webhook_port))
}

/// How the client spans of one load found their parents.
#[derive(Default, Debug)]
pub struct Nesting {
    /// Client calls the requests caused (the ground truth).
    pub expected: usize,
    /// Client spans whose parent is their request's server span.
    pub right: usize,
    /// Client spans with a parent that is not their request's server span.
    pub wrong: usize,
    /// Client spans with no parent.
    pub unparented: usize,
    /// Client spans of the server whose request cannot be told (no etcd key, no webhook path), in
    /// the whole run: they are none of the calls of any load.
    pub no_id: usize,
    /// Client spans of a request whose server span did not come.
    pub no_server_span: usize,
    /// Of the wrong ones, a few, for the report.
    pub examples: Vec<String>,
    /// (right, wrong, unparented) by the kind of call and the protocol of its request.
    pub by_kind: BTreeMap<String, (usize, usize, usize)>,
}

impl Nesting {
    /// `right` of `expected` as a fraction (1 when nothing was expected).
    /// Client spans that came, of the calls made.
    pub fn share_seen(&self) -> f64 {
        if self.expected == 0 { 1.0 } else { self.seen() as f64 / self.expected as f64 }
    }

    /// Client spans under their request, of those that came.
    pub fn share_right_of_seen(&self) -> f64 {
        if self.seen() == 0 { 0.0 } else { self.right as f64 / self.seen() as f64 }
    }

    fn seen(&self) -> usize {
        self.right + self.wrong + self.unparented
    }

    /// Problems: any wrong parent; fewer than `floor.parented` of the client spans that came
    /// under their request; fewer than `floor.seen` of the calls with a client span at all.
    pub fn problems(&self, what: &str, floor: Floor) -> Vec<String> {
        let mut errs = Vec::new();
        if self.share_right_of_seen() < floor.parented {
            errs.push(format!(
                "{what}: {:.1} % of the client spans under their request, want ≥ {:.0} %: {self}",
                self.share_right_of_seen() * 100.0,
                floor.parented * 100.0
            ));
        }
        if self.share_seen() < floor.seen {
            errs.push(format!(
                "{what}: client spans for {:.1} % of the calls, want ≥ {:.0} %: {self}",
                self.share_seen() * 100.0,
                floor.seen * 100.0
            ));
        }
        if self.wrong > 0 {
            errs.push(format!("{what}: {} wrong parent(s): {self}; e.g. {}", self.wrong, self.examples.join(" | ")));
        }
        errs
    }
}

/// The shares a nesting check requires.
#[derive(Clone, Copy, Debug)]
pub struct Floor {
    /// Of the client spans that came, under their request.
    pub parented: f64,
    /// Of the calls made, with a client span.
    pub seen: f64,
}

impl fmt::Display for Nesting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected {} calls; client spans: right {}, wrong {}, unparented {}, no server span {}; in the whole run, no id {}",
            self.expected, self.right, self.wrong, self.unparented, self.no_server_span, self.no_id
        )?;
        for (kind, (right, wrong, unparented)) in &self.by_kind {
            write!(f, "\n      {kind}: right {right}, wrong {wrong}, unparented {unparented}")?;
        }
        Ok(())
    }
}

/// The server spans of `pid` by the namespace of their path (only namespaces of `requests`).
pub fn server_spans_by_ns<'a>(
    spans: &'a [ReceivedSpan],
    pid: u32,
    requests: &[ApiRequest],
) -> BTreeMap<String, Vec<&'a ReceivedSpan>> {
    let wanted: std::collections::BTreeSet<&str> = requests.iter().map(|r| r.ns.as_str()).collect();
    let mut out: BTreeMap<String, Vec<&ReceivedSpan>> = BTreeMap::new();
    for s in spans.iter().filter(|s| s.kind == "server" && s.pid() == Some(pid)) {
        if let Some(ns) = s.attr_str("url.path").and_then(ns_of_api_path).filter(|ns| wanted.contains(ns)) {
            out.entry(ns.to_owned()).or_default().push(s);
        }
    }
    out
}

/// Checks the parents of the client spans of `pid` (etcd calls to `etcd_port`, webhook calls to
/// `webhook_port`) against `requests`.
pub fn check_nesting(
    spans: &[ReceivedSpan],
    pid: u32,
    variant: Variant,
    requests: &[ApiRequest],
    etcd_port: Option<u16>,
    webhook_port: u16,
) -> Nesting {
    let servers = server_spans_by_ns(spans, pid, requests);
    let wanted: std::collections::BTreeSet<&str> = requests.iter().map(|r| r.ns.as_str()).collect();
    let mut n = Nesting { expected: requests.iter().map(|r| r.calls(variant).len()).sum(), ..Nesting::default() };
    let calls = spans
        .iter()
        .filter(|s| s.pid() == Some(pid) && (is_etcd_call(s, etcd_port) || is_webhook_call(s, webhook_port)));
    for c in calls {
        let Some(ns) = ns_of_call(c) else {
            n.no_id += 1;
            continue;
        };
        if !wanted.contains(ns) {
            continue; // a call of another load of the run
        }
        let server = servers.get(ns).and_then(|v| (v.len() == 1).then(|| v[0]));
        let kind = call_kind(c, server);
        let tally = n.by_kind.entry(kind).or_default();
        match server {
            _ if c.parent_span_id.is_empty() => {
                n.unparented += 1;
                tally.2 += 1;
            }
            Some(r) if c.parent_span_id == r.span_id && c.trace_id == r.trace_id => {
                n.right += 1;
                tally.0 += 1;
            }
            Some(r) => {
                n.wrong += 1;
                tally.1 += 1;
                if n.examples.len() < 3 {
                    let parent = spans.iter().find(|s| s.span_id == c.parent_span_id).map(|p| p.summary());
                    n.examples.push(format!("{} under {parent:?}, want {}", c.summary(), r.span_id));
                }
            }
            None => n.no_server_span += 1,
        }
    }
    n
}

/// `etcd Range`, `webhook HTTP/2`… `in an HTTP/1.1 request`: what the report counts by.
fn call_kind(call: &ReceivedSpan, server: Option<&ReceivedSpan>) -> String {
    let what = match call.attr_str("rpc.method") {
        Some(m) => format!("etcd {m}"),
        None if call.attr_str("url.path").is_some_and(|p| p.starts_with("/validate/")) => {
            format!("webhook HTTP/{}", call.attr_str("network.protocol.version").unwrap_or("?"))
        }
        None => "etcd (no method)".to_owned(),
    };
    let proto = server.and_then(|s| s.attr_str("network.protocol.version")).unwrap_or("?");
    format!("{what} in HTTP/{proto} requests")
}

/// The etcd client spans of `pid` checked against the calls of `requests`: each must carry the
/// `rpc.method`, `db.operation.name` and `etcd.key` of a call the ground truth has for its
/// namespace. Returns (spans with all three right, spans with a wrong one, descriptions).
pub fn check_etcd_attributes(
    spans: &[ReceivedSpan],
    pid: u32,
    requests: &[ApiRequest],
    etcd_port: u16,
) -> (usize, usize, Vec<String>) {
    let mut truth: BTreeMap<&str, Vec<Call>> = BTreeMap::new();
    for r in requests {
        truth.insert(r.ns.as_str(), r.calls(Variant::Etcd));
    }
    let (mut right, mut wrong, mut notes) = (0, 0, Vec::new());
    for s in spans.iter().filter(|s| s.pid() == Some(pid) && is_etcd_call(s, Some(etcd_port))) {
        let (method, op, key) = (s.attr_str("rpc.method"), s.attr_str("db.operation.name"), s.attr_str("etcd.key"));
        if method.is_none() || op.is_none() || key.is_none() {
            continue; // counted as not right; a span without the attributes names nothing wrong
        }
        let ok = ns_of_call(s).and_then(|ns| truth.get(ns)).is_some_and(|calls| {
            calls.iter().any(|c| matches!(c, Call::Etcd { method: m, key: k } if Some(*m) == method && Some(k.as_str()) == key && op == method))
        });
        if ok {
            right += 1;
        } else {
            wrong += 1;
            if notes.len() < 5 {
                notes.push(s.summary());
            }
        }
    }
    (right, wrong, notes)
}

/// The tracer's `final stats` counters that are not 0, as `key=value` words: what a nesting
/// report shows next to its counts (parents, roots, links, losses, overflows).
pub fn trace_counters(stderr: &str) -> String {
    crate::tracer_log::final_stats(stderr)
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
