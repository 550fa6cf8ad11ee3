//! Expectations for HTTP spans and the checks behind them. Checks collect every mismatch (rather
//! than stopping at the first) so one failing run tells the whole story.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::host::{comm_of, exe_name_of, hostname, now_unix_nanos};
use crate::span::{ReceivedSpan, dump};

/// Slack added to client-measured durations (clock granularity, scheduling).
pub const DURATION_SLACK: Duration = Duration::from_millis(30);

/// Expected Kubernetes request attributes.
#[derive(Clone, Debug, Default)]
pub struct K8s {
    pub verb: String,
    /// None: core group (attribute must be absent).
    pub group: Option<String>,
    pub version: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub long_running: bool,
}

impl K8s {
    pub fn new(verb: &str, version: &str, resource: &str) -> K8s {
        K8s { verb: verb.into(), version: version.into(), resource: resource.into(), ..Default::default() }
    }
    pub fn group(mut self, g: &str) -> K8s {
        self.group = Some(g.into());
        self
    }
    pub fn subresource(mut self, s: &str) -> K8s {
        self.subresource = Some(s.into());
        self
    }
    pub fn ns(mut self, n: &str) -> K8s {
        self.namespace = Some(n.into());
        self
    }
    pub fn name(mut self, n: &str) -> K8s {
        self.name = Some(n.into());
        self
    }
    pub fn long_running(mut self) -> K8s {
        self.long_running = true;
        self
    }
}

/// What one HTTP request should have produced.
#[derive(Clone, Debug)]
pub struct HttpExpect {
    /// `server` or `client`.
    pub kind: &'static str,
    pub method: String,
    /// Expected `url.path` (the request target without its query).
    pub path: String,
    pub status: u16,
    /// Expected `http.route`; the span name must then be `<METHOD> <route>`.
    pub route: Option<String>,
    /// Some: these k8s attributes. None with `not_k8s`: no `k8s.verb`.
    pub k8s: Option<K8s>,
    pub not_k8s: bool,
    pub client_port: Option<u16>,
    pub server_port: Option<u16>,
    pub user_agent: Option<String>,
    /// Some(n): `http.request.body.size` == n (Some(0): absent or 0).
    pub request_body_size: Option<u64>,
    pub response_body_size: Option<u64>,
    /// Client-measured time: the span may not be longer (plus [`DURATION_SLACK`]).
    pub max_duration: Option<Duration>,
    pub min_duration: Option<Duration>,
    /// Some: `url.scheme` is this. None: it is `http` or `https`.
    pub scheme: Option<&'static str>,
    /// Extra free-form label for messages.
    pub label: String,
}

impl HttpExpect {
    pub fn new(kind: &'static str, method: &str, path: &str, status: u16) -> HttpExpect {
        HttpExpect {
            kind,
            method: method.into(),
            path: path.into(),
            status,
            route: None,
            k8s: None,
            not_k8s: false,
            client_port: None,
            server_port: None,
            user_agent: None,
            request_body_size: None,
            response_body_size: None,
            max_duration: None,
            min_duration: None,
            scheme: None,
            label: String::new(),
        }
    }
    pub fn server(method: &str, path: &str, status: u16) -> HttpExpect {
        Self::new("server", method, path, status)
    }
    pub fn client(method: &str, path: &str, status: u16) -> HttpExpect {
        Self::new("client", method, path, status)
    }
    pub fn route(mut self, r: &str) -> Self {
        self.route = Some(r.into());
        self
    }
    pub fn k8s(mut self, k: K8s) -> Self {
        self.k8s = Some(k);
        self
    }
    pub fn not_k8s(mut self) -> Self {
        self.not_k8s = true;
        self
    }
    pub fn client_port(mut self, p: u16) -> Self {
        self.client_port = Some(p);
        self
    }
    pub fn server_port(mut self, p: u16) -> Self {
        self.server_port = Some(p);
        self
    }
    pub fn user_agent(mut self, ua: &str) -> Self {
        self.user_agent = Some(ua.into());
        self
    }
    pub fn request_body(mut self, n: u64) -> Self {
        self.request_body_size = Some(n);
        self
    }
    pub fn response_body(mut self, n: u64) -> Self {
        self.response_body_size = Some(n);
        self
    }
    pub fn max_duration(mut self, d: Duration) -> Self {
        self.max_duration = Some(d);
        self
    }
    pub fn min_duration(mut self, d: Duration) -> Self {
        self.min_duration = Some(d);
        self
    }
    pub fn scheme(mut self, s: &'static str) -> Self {
        self.scheme = Some(s);
        self
    }

    pub fn key(&self) -> (String, String, String) {
        (self.kind.to_owned(), self.method.clone(), self.path.clone())
    }

    /// Whether the span's status must be `error`.
    pub fn is_error(&self) -> bool {
        match self.kind {
            "client" => self.status >= 400,
            _ => self.status >= 500,
        }
    }
}

/// Expected resource of every span.
#[derive(Clone, Debug)]
pub struct ResourceExpect {
    pub pid: u32,
    /// The target's comm: `service.name`.
    pub comm: String,
    /// `process.executable.name`: base name of `/proc/PID/exe` (OTel semantic conventions), which
    /// differs from the comm when the process was started through a symlink.
    pub exe: String,
    pub host: String,
}

impl ResourceExpect {
    /// Reads comm and exe of a running `pid`.
    pub fn of(pid: u32) -> ResourceExpect {
        ResourceExpect { pid, comm: comm_of(pid), exe: exe_name_of(pid), host: hostname() }
    }
}

fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

/// Checks every span carries well-formed ids, sane times within `[window_start - 2s, now + 2s]`,
/// and the expected resource.
pub fn check_common(spans: &[ReceivedSpan], res: &ResourceExpect, window_start_unix_nano: u64) -> Vec<String> {
    let mut errs = Vec::new();
    let now = now_unix_nanos();
    let lo = window_start_unix_nano.saturating_sub(2_000_000_000);
    let hi = now + 2_000_000_000;
    let mut ids = BTreeSet::new();
    for s in spans {
        let who = format!("span {:?} ({} {:?})", s.name, s.kind, s.attr_str("url.path").unwrap_or(""));
        if !is_hex_id(&s.trace_id, 32) {
            errs.push(format!("{who}: bad trace_id {:?}", s.trace_id));
        }
        if !is_hex_id(&s.span_id, 16) {
            errs.push(format!("{who}: bad span_id {:?}", s.span_id));
        }
        if !ids.insert(s.span_id.clone()) {
            errs.push(format!("{who}: duplicate span_id {}", s.span_id));
        }
        if !(s.parent_span_id.is_empty() || is_hex_id(&s.parent_span_id, 16)) {
            errs.push(format!("{who}: bad parent_span_id {:?}", s.parent_span_id));
        }
        if s.end <= s.start {
            errs.push(format!("{who}: end {} is not after start {}", s.end, s.start));
        }
        if s.start < lo || s.start > hi {
            errs.push(format!(
                "{who}: start {} is not within the test's time window [{lo}, {hi}] (off by {:.3}s)",
                s.start,
                (s.start as f64 - window_start_unix_nano as f64) / 1e9
            ));
        }
        if s.pid() != Some(res.pid) {
            errs.push(format!("{who}: resource process.pid {:?}, expected {}", s.resource.get("process.pid"), res.pid));
        }
        if s.res_str("service.name") != Some(res.comm.as_str()) {
            errs.push(format!(
                "{who}: resource service.name {:?}, expected {:?}",
                s.resource.get("service.name"),
                res.comm
            ));
        }
        if s.res_str("process.executable.name") != Some(res.exe.as_str()) {
            errs.push(format!(
                "{who}: resource process.executable.name {:?}, expected {:?}",
                s.resource.get("process.executable.name"),
                res.exe
            ));
        }
        if s.res_str("host.name") != Some(res.host.as_str()) {
            errs.push(format!("{who}: resource host.name {:?}, expected {:?}", s.resource.get("host.name"), res.host));
        }
    }
    errs
}

fn want_str(errs: &mut Vec<String>, who: &str, s: &ReceivedSpan, key: &str, expected: &str) {
    match s.attr(key) {
        Some(Value::String(v)) if v == expected => {}
        other => errs.push(format!("{who}: {key} = {other:?}, expected {expected:?}")),
    }
}

fn want_int(errs: &mut Vec<String>, who: &str, s: &ReceivedSpan, key: &str, expected: i64) {
    match s.attr(key) {
        Some(v) if v.as_i64() == Some(expected) => {}
        other => errs.push(format!("{who}: {key} = {other:?}, expected integer {expected}")),
    }
}

/// `key` absent, or an empty string.
fn want_none(errs: &mut Vec<String>, who: &str, s: &ReceivedSpan, key: &str) {
    match s.attr(key) {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if v.is_empty() => {}
        Some(other) => errs.push(format!("{who}: {key} = {other}, expected it absent")),
    }
}

/// Checks one span against one expectation.
pub fn check_http_span(s: &ReceivedSpan, e: &HttpExpect) -> Vec<String> {
    let mut errs = Vec::new();
    let who = format!(
        "{} span for {} {}{}",
        e.kind,
        e.method,
        e.path,
        if e.label.is_empty() { String::new() } else { format!(" ({})", e.label) }
    );
    let who = who.as_str();
    if s.kind != e.kind {
        errs.push(format!("{who}: kind {:?}", s.kind));
    }
    want_str(&mut errs, who, s, "http.request.method", &e.method);
    want_str(&mut errs, who, s, "url.path", &e.path);
    match e.scheme {
        Some(scheme) => want_str(&mut errs, who, s, "url.scheme", scheme),
        None if !matches!(s.attr_str("url.scheme"), Some("http" | "https")) => {
            errs.push(format!("{who}: url.scheme = {:?}, expected http or https", s.attr("url.scheme")));
        }
        None => {}
    }
    want_int(&mut errs, who, s, "http.response.status_code", e.status.into());
    want_str(&mut errs, who, s, "network.protocol.version", "1.1");
    if let Some(r) = &e.route {
        want_str(&mut errs, who, s, "http.route", r);
        let name = format!("{} {}", e.method, r);
        if s.name != name {
            errs.push(format!("{who}: name {:?}, expected {name:?}", s.name));
        }
    } else if !s.name.starts_with(&format!("{} ", e.method)) {
        errs.push(format!("{who}: name {:?} does not start with the method", s.name));
    }
    let want_status = if e.is_error() { "error" } else { "unset" };
    if s.status_code != want_status {
        errs.push(format!(
            "{who}: status {:?} ({:?}), expected {want_status} for HTTP {}",
            s.status_code, s.status_message, e.status
        ));
    }
    if s.kind == "server" && !s.parent_span_id.is_empty() {
        errs.push(format!("{who}: a server span for a request without traceparent has parent {:?}", s.parent_span_id));
    }
    if let Some(p) = e.client_port {
        want_str(&mut errs, who, s, "client.address", "127.0.0.1");
        want_int(&mut errs, who, s, "client.port", p.into());
    }
    if let Some(p) = e.server_port {
        want_str(&mut errs, who, s, "server.address", "127.0.0.1");
        want_int(&mut errs, who, s, "server.port", p.into());
    }
    if let Some(ua) = &e.user_agent {
        want_str(&mut errs, who, s, "user_agent.original", ua);
    }
    match e.request_body_size {
        Some(0) => match s.attr("http.request.body.size") {
            None => {}
            Some(v) if v.as_i64() == Some(0) => {}
            Some(v) => errs.push(format!("{who}: http.request.body.size = {v}, expected absent or 0")),
        },
        Some(n) => want_int(&mut errs, who, s, "http.request.body.size", n as i64),
        None => {}
    }
    if let Some(n) = e.response_body_size {
        want_int(&mut errs, who, s, "http.response.body.size", n as i64);
    }
    let d = s.duration();
    if d == Duration::ZERO {
        errs.push(format!("{who}: duration is zero"));
    }
    if let Some(max) = e.max_duration
        && d > max + DURATION_SLACK
    {
        errs.push(format!("{who}: duration {d:?} is longer than the client-measured {max:?} (+{DURATION_SLACK:?})"));
    }
    if let Some(min) = e.min_duration
        && d < min
    {
        errs.push(format!("{who}: duration {d:?} is shorter than the server's {min:?} delay"));
    }
    if let Some(k) = &e.k8s {
        want_str(&mut errs, who, s, "k8s.verb", &k.verb);
        match &k.group {
            Some(g) => want_str(&mut errs, who, s, "k8s.api.group", g),
            None => {
                if let Some(v) = s.attr("k8s.api.group") {
                    errs.push(format!("{who}: k8s.api.group = {v} for the core group, expected it absent"));
                }
            }
        }
        want_str(&mut errs, who, s, "k8s.api.version", &k.version);
        want_str(&mut errs, who, s, "k8s.resource", &k.resource);
        for (key, val) in
            [("k8s.subresource", &k.subresource), ("k8s.namespace.name", &k.namespace), ("k8s.object.name", &k.name)]
        {
            match val {
                Some(v) => want_str(&mut errs, who, s, key, v),
                None => want_none(&mut errs, who, s, key),
            }
        }
        if k.long_running {
            match s.attr("k8s.long_running") {
                Some(Value::Bool(true)) => {}
                other => errs.push(format!("{who}: k8s.long_running = {other:?}, expected true")),
            }
        } else {
            match s.attr("k8s.long_running") {
                None | Some(Value::Bool(false)) => {}
                Some(other) => errs.push(format!("{who}: k8s.long_running = {other}, expected absent or false")),
            }
        }
    } else if e.not_k8s {
        for key in ["k8s.verb", "k8s.resource", "k8s.api.version"] {
            if let Some(v) = s.attr(key) {
                errs.push(format!("{who}: {key} = {v} on a non-Kubernetes path"));
            }
        }
    }
    errs
}

/// Matches spans to expectations by (kind, method, url.path): every expectation must have
/// exactly one span, and no span may be left over. Returns all problems found.
pub fn check_http_spans(spans: &[ReceivedSpan], exps: &[HttpExpect]) -> Vec<String> {
    let mut errs = Vec::new();
    let mut used = vec![false; spans.len()];
    for e in exps {
        let idx: Vec<usize> = spans
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.kind == e.kind
                    && s.attr_str("http.request.method") == Some(e.method.as_str())
                    && s.attr_str("url.path") == Some(e.path.as_str())
            })
            .map(|(i, _)| i)
            .collect();
        match idx.as_slice() {
            [] => errs.push(format!("no {} span for {} {} (HTTP {})", e.kind, e.method, e.path, e.status)),
            [i] => {
                used[*i] = true;
                errs.extend(check_http_span(&spans[*i], e));
            }
            many => {
                for i in many {
                    used[*i] = true;
                }
                errs.push(format!(
                    "{} {} spans for {} {} (expected exactly one)",
                    many.len(),
                    e.kind,
                    e.method,
                    e.path
                ));
            }
        }
    }
    for (i, s) in spans.iter().enumerate() {
        if !used[i] {
            errs.push(format!("unexpected span: {}", s.summary()));
        }
    }
    errs
}

/// Panics with every problem and every span when `errs` is not empty.
pub fn assert_no_errors(context: &str, errs: &[String], spans: &[ReceivedSpan]) {
    if !errs.is_empty() {
        panic!(
            "{context}: {} problem(s):\n  - {}\nspans ({}):\n{}",
            errs.len(),
            errs.join("\n  - "),
            spans.len(),
            dump(spans)
        );
    }
}

/// Problems if `needle` appears anywhere in the spans (names, attributes, resources, status).
pub fn check_absent_everywhere(spans: &[ReceivedSpan], needles: &[&str]) -> Vec<String> {
    let mut errs = Vec::new();
    for s in spans {
        let text = format!("{} {} {}", s.name, s.status_message, s.summary());
        for n in needles {
            if text.contains(n) {
                errs.push(format!("secret {n:?} leaked into span {:?}", s.name));
            }
        }
    }
    errs
}

/// Problems if any of `needles` appears in the tracer's raw stdout or stderr.
pub fn check_absent_in_output(stdout: &str, stderr: &str, needles: &[&str]) -> Vec<String> {
    let mut errs = Vec::new();
    for n in needles {
        if stdout.contains(n) {
            errs.push(format!("{n:?} appears in the tracer's stdout"));
        }
        if stderr.contains(n) {
            errs.push(format!("{n:?} appears in the tracer's stderr"));
        }
    }
    errs
}
