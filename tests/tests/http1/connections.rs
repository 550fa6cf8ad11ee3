//! Traffic that is not a target's HTTP: other processes, files and pipes, TLS and plain TCP
//! connections (one connection span each), and a connection accepted while the tracer attaches.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::common::{pods_route, req, send};
use integration_tests::check::{HttpExpect, ResourceExpect, check_common, check_http_spans};
use integration_tests::*;
use serde_json::json;

/// Traffic of a process that is not a target gives no span.
#[test]
fn non_target_traffic_gives_no_span() {
    let target = PythonHttpServer::start();
    let other = PythonHttpServer::start();
    let mut sess = TraceSession::for_pid(Sink::Json, target.pid());
    for p in ["/api/v1/namespaces/default/pods/other-0", "/healthz", "/status/500"] {
        curl_one(&[other.url(p)]);
    }
    PythonClient::run(
        json!({"host": "127.0.0.1", "port": other.port(), "requests": [{"method": "GET", "path": "/api/v1/nodes"}]}),
        Duration::from_secs(20),
    );
    let e = send(
        &target.url(""),
        target.port(),
        req("GET", "/api/v1/namespaces/default/pods/mine", 200).route(pods_route()),
    );
    sess.wait_spans(|_| true, 1, SPAN_TIMEOUT);
    let fin = sess.finish(Duration::from_millis(1500));
    let mut errs = check_http_spans(&fin.spans, &[e]);
    errs.extend(check_common(&fin.spans, &ResourceExpect::of(target.pid()), 0));
    fin.assert_ok("non-target traffic", &errs);
}

/// The target writes and reads regular files and a pipe whose bytes look like HTTP: no span. Its
/// one real request (as a client) gives exactly one span.
#[test]
fn file_and_pipe_io_that_looks_like_http_gives_no_span() {
    let srv = PythonHttpServer::start();
    let decoy = TempDir::new("decoy");
    let mut client = PythonClient::start(json!({
        "host": "127.0.0.1", "port": srv.port(), "wait_stdin": true,
        "decoy_dir": decoy.path(),
        "requests": [{"method": "GET", "path": "/api/v1/namespaces/default/pods/real"}],
    }));
    let res = ResourceExpect::of(client.pid());
    let mut sess = TraceSession::for_pid(Sink::Json, client.pid());
    let window = sess.window_start;
    client.go();
    let results = client.wait_done(Duration::from_secs(30));
    assert!(client.proc().stdout().contains("decoy_done"), "harness: decoy I/O did not run");
    let e = HttpExpect::client("GET", "/api/v1/namespaces/default/pods/real", 200)
        .route(pods_route())
        .server_port(srv.port())
        .max_duration(results[0].elapsed);
    sess.wait_spans(|_| true, 1, SPAN_TIMEOUT);
    std::thread::sleep(Duration::from_millis(500));
    client.finish();
    let fin = sess.finish(Duration::from_millis(1000));
    let mut errs = check_http_spans(&fin.spans, &[e]);
    errs.extend(check_common(&fin.spans, &res, window));
    fin.assert_ok("decoy file I/O", &errs);
}

/// A TLS connection to the target (python HTTPS server): one connection span, no HTTP span.
#[test]
fn tls_connection_gives_one_connection_span() {
    let srv = PythonHttpsServer::start();
    let res = ResourceExpect::of(srv.pid());
    let mut sess = TraceSession::for_pid(Sink::Json, srv.pid());
    let window = sess.window_start;
    let t = curl_one(&["-k", "--http1.1", &srv.url("/api/v1/namespaces/default/pods/big?size=10000")]);
    assert_eq!(t.code, 200);
    sess.wait_spans(|_| true, 1, SPAN_TIMEOUT);
    let fin = sess.finish(Duration::from_millis(1000));
    let mut errs = check_common(&fin.spans, &res, window);
    if fin.spans.len() != 1 {
        errs.push(format!("expected exactly one span for one TLS connection, got {}", fin.spans.len()));
    }
    for s in &fin.spans {
        errs.extend(check_connection_span(s, "TLS connection", true, t.local_port, srv.port()));
        match s.attr_i64("network.io.received_bytes") {
            Some(n) if n > 0 => {}
            other => errs.push(format!("network.io.received_bytes = {other:?}, expected > 0")),
        }
        match s.attr_i64("network.io.sent_bytes") {
            Some(n) if n >= 10_000 => {}
            other => errs
                .push(format!("network.io.sent_bytes = {other:?}, expected >= 10000 (the encrypted 10000-byte body)")),
        }
    }
    fin.assert_ok("TLS connection", &errs);
}

/// Sends 1000 binary (non-HTTP) bytes to an echo server, reads them back, closes. Returns the
/// client's local port.
fn echo_exchange(port: u16) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let local_port = s.local_addr().unwrap().port();
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    s.write_all(&data).unwrap();
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, data);
    local_port
}

fn check_echo_span(context: &str, echo: &EchoServer, sess: TraceSession, res: &ResourceExpect, local_port: u16) {
    let window = sess.window_start;
    let fin = sess.finish(Duration::from_millis(1000));
    let mut errs = check_common(&fin.spans, res, window);
    if fin.spans.len() != 1 {
        errs.push(format!("expected exactly one span for one TCP connection, got {}", fin.spans.len()));
    }
    for sp in &fin.spans {
        errs.extend(check_connection_span(sp, "TCP connection", false, local_port, echo.port()));
        for key in ["network.io.received_bytes", "network.io.sent_bytes"] {
            if sp.attr_i64(key) != Some(1000) {
                errs.push(format!("{key} = {:?}, expected 1000", sp.attr(key)));
            }
        }
    }
    fin.assert_ok(context, &errs);
}

/// A plain TCP connection carrying binary (non-HTTP) bytes: one `TCP connection` span with exact
/// byte counts.
#[test]
fn non_http_tcp_connection_gives_one_connection_span() {
    let echo = EchoServer::start();
    let res = ResourceExpect::of(echo.pid());
    let mut sess = TraceSession::for_pid(Sink::Json, echo.pid());
    let local_port = echo_exchange(echo.port());
    sess.wait_spans(|_| true, 1, SPAN_TIMEOUT);
    check_echo_span("TCP connection", &echo, sess, &res, local_port);
}

/// The target sits in a blocking accept(2) while the tracer attaches (a thread-per-connection
/// server between clients): the connection that accept returns must still be traced.
#[test]
fn connection_from_an_accept_in_flight_at_attach_is_traced() {
    let echo = EchoServer::start_blocking_accept();
    let res = ResourceExpect::of(echo.pid());
    if cfg!(target_arch = "x86_64") {
        // harness sanity: the main thread is inside accept (43) or accept4 (288)
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let sc = std::fs::read_to_string(format!("/proc/{}/syscall", echo.pid())).unwrap_or_default();
            let nr = sc.split_whitespace().next().unwrap_or("");
            if nr == "43" || nr == "288" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "harness: echo server not in accept: {sc:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut sess = TraceSession::for_pid(Sink::Json, echo.pid());
    let local_port = echo_exchange(echo.port());
    sess.wait_spans(|_| true, 1, SPAN_TIMEOUT);
    check_echo_span("connection accepted by an accept(2) in flight at attach", &echo, sess, &res, local_port);
}

fn check_connection_span(s: &ReceivedSpan, name: &str, tls: bool, peer_port: u16, server_port: u16) -> Vec<String> {
    let mut errs = Vec::new();
    if s.name != name {
        errs.push(format!("span name {:?}, expected {name:?}", s.name));
    }
    let want = |errs: &mut Vec<String>, k: &str, v: serde_json::Value| {
        if s.attr(k) != Some(&v) {
            errs.push(format!("{k} = {:?}, expected {v}", s.attr(k)));
        }
    };
    want(&mut errs, "network.transport", json!("tcp"));
    want(&mut errs, "network.peer.address", json!("127.0.0.1"));
    want(&mut errs, "network.peer.port", json!(peer_port));
    want(&mut errs, "server.port", json!(server_port));
    if tls {
        want(&mut errs, "tls.protocol.name", json!("tls"));
    } else if let Some(v) = s.attr("tls.protocol.name") {
        errs.push(format!("tls.protocol.name = {v} on a connection without TLS"));
    }
    for k in ["http.request.method", "http.response.status_code", "url.path"] {
        if let Some(v) = s.attr(k) {
            errs.push(format!("{k} = {v} on a non-HTTP connection span"));
        }
    }
    errs
}
