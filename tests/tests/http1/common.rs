//! What the HTTP/1.1 tests share: curl requests with the spans they should give, and the
//! secrets no span may carry.

use std::time::Duration;

use integration_tests::check::{HttpExpect, K8s};
use integration_tests::procs::CURL_USER_AGENT;
use integration_tests::*;

pub const SECRETS: [&str; 2] = ["SECRET-TOKEN-abc123", "COOKIE-SECRET-xyz"];

/// One curl request and what its span should say.
pub struct Req {
    pub method: &'static str,
    /// Path and query.
    pub target: String,
    pub body: Option<usize>,
    pub headers: Vec<String>,
    pub exp: HttpExpect,
}

pub fn req(method: &'static str, target: &str, status: u16) -> Req {
    let path = target.split('?').next().unwrap();
    Req {
        method,
        target: target.into(),
        body: None,
        headers: vec![],
        exp: HttpExpect::server(method, path, status).scheme("http"),
    }
}

impl Req {
    pub fn route(mut self, r: &str) -> Self {
        self.exp = self.exp.route(r);
        self
    }
    pub fn k8s(mut self, k: K8s) -> Self {
        self.exp = self.exp.k8s(k);
        self
    }
    pub fn not_k8s(mut self) -> Self {
        self.exp = self.exp.not_k8s();
        self
    }
    pub fn body(mut self, n: usize) -> Self {
        self.body = Some(n);
        self
    }
    pub fn header(mut self, h: &str) -> Self {
        self.headers.push(h.into());
        self
    }
    pub fn min_duration(mut self, d: Duration) -> Self {
        self.exp = self.exp.min_duration(d);
        self
    }
    /// Chunked responses: their body size is not compared.
    pub fn chunked(mut self) -> Self {
        self.exp.label = "chunked".into();
        self
    }
}

/// Sends `r` with its own curl (so its own connection) to `base` (`http://127.0.0.1:PORT`) and
/// completes the expectation with what curl measured.
pub fn send(base: &str, server_port: u16, r: Req) -> HttpExpect {
    let mut args: Vec<String> = vec!["-X".into(), r.method.into()];
    for h in &r.headers {
        args.push("-H".into());
        args.push(h.clone());
    }
    if let Some(n) = r.body {
        args.extend(["-H".into(), "Content-Type: application/json".into(), "--data-binary".into(), "x".repeat(n)]);
    }
    args.push(format!("{base}{}", r.target));
    let t = curl_one(&args);
    assert_eq!(t.code, r.exp.status, "harness: {} {} answered {} (body {:?})", r.method, r.target, t.code, t.body);
    let mut e = r
        .exp
        .client_port(t.local_port)
        .server_port(server_port)
        .user_agent(CURL_USER_AGENT)
        .request_body(r.body.unwrap_or(0) as u64)
        .max_duration(t.time_total);
    if e.label != "chunked" {
        e = e.response_body(t.size_download);
    }
    e
}

pub fn pid_args(pids: &[u32]) -> Vec<String> {
    pids.iter().flat_map(|p| ["--pid".to_owned(), p.to_string()]).collect()
}

pub fn pods_route() -> &'static str {
    "/api/v1/namespaces/{namespace}/pods/{name}"
}
