//! What the TLS tests share: timeouts, the secrets no span may carry, and the checks of a server
//! that speaks both HTTP/1.1 and HTTP/2.

use std::time::{Duration, Instant};

use integration_tests::check::HttpExpect;
use integration_tests::ending::assert_finished_ok;
use integration_tests::gotls::{check_http_spans_version, check_no_connection_spans};
use integration_tests::tracer_log::check_zero_stats;
use integration_tests::*;

pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(25);

pub const NEVER: [&str; 4] = [
    "itest-tls-never-value-1a2b",
    "itest-tls-never-value-3c4d",
    "itest-tls-never-value-5e6f",
    "itest-tls-never-value-7a8b",
];

/// The HTTP/1.1 spans against `h1`, the HTTP/2 ones against `h2`, and no connection left
/// undecoded.
pub fn check_h1_and_h2_server_spans(spans: &[ReceivedSpan], h1: &[HttpExpect], h2: &[HttpExpect]) -> Vec<String> {
    let is_h1 = |s: &ReceivedSpan| s.attr_str("network.protocol.version") == Some("1.1");
    let s1: Vec<ReceivedSpan> = spans.iter().filter(|s| is_h1(s)).cloned().collect();
    let s2: Vec<ReceivedSpan> = spans.iter().filter(|s| !is_h1(s)).cloned().collect();
    let mut errs = check_http_spans_version(&s1, h1, "1.1", &|_| false);
    errs.extend(check_http_spans_version(&s2, h2, "2", &|_| false));
    errs.extend(check_no_connection_spans(spans));
    errs
}

pub fn pods_route() -> &'static str {
    "/api/v1/namespaces/{namespace}/pods/{name}"
}

/// The local port of `client_pid`'s established connection to `server_port`.
pub fn client_local_port(client_pid: u32, server_port: u16) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((l, _)) = tcp_connections_of(client_pid).into_iter().find(|(_, r)| *r == server_port) {
            return l;
        }
        assert!(Instant::now() < deadline, "harness: no connection of pid {client_pid} to port {server_port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The counters a Go TLS run must end with at zero: no stream out of step, no TLS call without
/// its socket.
pub const GO_TLS_CLEAN: [&str; 2] = ["desyncs", "go_tls_no_socket"];

/// What a plain (not Kubernetes) GET that curl made to the Go server on `server_port` must give.
pub fn plain_get(path: &str, t: &Transfer, server_port: u16) -> HttpExpect {
    HttpExpect::server("GET", path, 200)
        .not_k8s()
        .client_port(t.local_port)
        .server_port(server_port)
        .response_body(t.size_download)
}

/// The ending of a Go TLS test of HTTP/1.1 spans: every span meets `exps` over HTTP/1.1, none is a
/// connection span, and the counters of [`GO_TLS_CLEAN`] are zero.
pub fn end_go_tls_h1(sess: TraceSession, what: &str, exps: &[HttpExpect]) {
    let fin = sess.end(exps.len());
    let mut errs = check_http_spans_version(&fin.spans, exps, "1.1", &|_| false);
    errs.extend(check_no_connection_spans(&fin.spans));
    errs.extend(check_zero_stats(&fin.output.stderr, &GO_TLS_CLEAN));
    assert_finished_ok(what, errs, &fin);
}
