//! TLS connections made before the tracer attached and used after: HTTP/1.1 reused on either
//! side, HTTP/2 joined mid-way.

use std::time::{Duration, Instant};

use super::common::{CLIENT_TIMEOUT, client_local_port, pods_route};
use integration_tests::check::{HttpExpect, K8s, ResourceExpect, check_common};
use integration_tests::ending::assert_finished_ok;
use integration_tests::gotls::{
    GoHttpClient, GoServer, check_http_span_version, check_mid_http, check_no_connection_spans, spans_of_connection,
    wait_go_tls_probes,
};
use integration_tests::procs::CURL_USER_AGENT;
use integration_tests::tracer_log::final_stats_line;
use integration_tests::*;

/// A Go TLS client connection reused across attach: HTTP/1.1 requests, one per 100 ms, the tracer
/// attached after 15 answers, to the server or to the client, and 30 more answers after it. Every
/// span of the connection is right (path, status, version), none is `unknown` or wrong, at most 2
/// requests after attach are missed (the TLS read in flight at attach), and no `TLS connection`
/// span.
fn tls_http1_reused_across_attach(trace_client: bool) {
    let srv = GoServer::https();
    let port = srv.port();
    let path = "/api/v1/namespaces/reuse/pods/p";
    let url = srv.url(path);
    let mut c =
        GoHttpClient::start(&["-url", &url, "-n", "10000", "-interval", "100ms", "-http2=false", "-stop-stdin"], false);
    c.wait_responses(15, CLIENT_TIMEOUT);
    let lp = client_local_port(c.pid(), port);
    let target = if trace_client { c.pid() } else { srv.pid() };
    let res = ResourceExpect::of(target);
    let mut sess = TraceSession::for_pid(Sink::Json, target);
    wait_go_tls_probes(&mut sess.tracer, target);
    let window = sess.window_start;
    let (attached_at, rs) = c.stop_after(30, CLIENT_TIMEOUT);
    let n = rs.len();
    assert!(rs.iter().all(|r| r.status == 200 && r.proto == "HTTP/1.1"), "harness: {rs:?}");
    std::thread::sleep(Duration::from_millis(300));
    let fin = sess.finish(SETTLE);
    let kind = if trace_client { "client" } else { "server" };
    let e = HttpExpect::new(kind, "GET", path, 200)
        .route(pods_route())
        .k8s(K8s::new("get", "v1", "pods").ns("reuse").name("p"))
        .server_port(port)
        .response_body(rs[0].bytes);
    let e = if trace_client { e } else { e.client_port(lp) };
    let conn: Vec<ReceivedSpan> = fin
        .spans
        .iter()
        .filter(|s| {
            if trace_client {
                s.attr_i64("server.port") == Some(i64::from(port))
            } else {
                s.attr_i64("client.port") == Some(i64::from(lp))
            }
        })
        .cloned()
        .collect();
    let mut errs = Vec::new();
    for s in &conn {
        errs.extend(check_http_span_version(s, &e, "1.1").into_iter().map(|x| format!("{x} [{}]", s.summary())));
    }
    let after = n - attached_at;
    eprintln!(
        "[TLS HTTP/1.1 reused across attach, tracer on the {kind}] {} spans for {after} requests completed after attach (attached after {attached_at})\n{}",
        conn.len(),
        final_stats_line(&fin.output.stderr).unwrap_or_default()
    );
    if conn.len() + 2 < after || conn.len() > after + 1 {
        errs.push(format!(
            "{} spans on the connection for {after} requests after attach (at most 2 may be missed)",
            conn.len()
        ));
    }
    if fin.spans.len() != conn.len() {
        errs.push(format!("{} spans not of the connection", fin.spans.len() - conn.len()));
    }
    errs.extend(check_no_connection_spans(&fin.spans));
    errs.extend(check_common(&fin.spans, &res, window));
    assert_finished_ok(&format!("TLS connection reused across attach (tracer on the {kind})"), errs, &fin);
}

#[test]
fn tls_http1_connection_reused_across_attach_server_side() {
    tls_http1_reused_across_attach(false);
}

#[test]
fn tls_http1_connection_reused_across_attach_client_side() {
    tls_http1_reused_across_attach(true);
}

/// HTTP/2 over TLS joined mid-way, server side: curl `-k --http2` sends 240 requests with
/// distinct paths over one connection at 20/s; the tracer attaches to the Go server after ~1.2 s.
/// (curl's list is fixed: 12 s leave room for an attach that takes seconds on a loaded machine.)
/// Every span not named `unknown` is right for its request, at most 10 are unknown, the last 40
/// requests all have their span, and no `TLS connection` span.
#[test]
fn tls_http2_connection_joined_mid_way_server_side() {
    let srv = GoServer::https();
    let port = srv.port();
    let n = 240;
    let paths: Vec<String> = (0..n).map(|i| format!("/api/v1/namespaces/mid/pods/p-{i:03}")).collect();
    let mut args = vec!["-k".to_owned(), "--http2".into(), "--rate".into(), "20/s".into()];
    args.extend(paths.iter().map(|p| srv.url(p)));
    let started = Instant::now();
    let h = std::thread::spawn(move || curl(&args));
    std::thread::sleep(Duration::from_millis(1200));
    let not_before = now_unix_nanos();
    let mut sess = TraceSession::for_pid(Sink::Json, srv.pid());
    wait_go_tls_probes(&mut sess.tracer, srv.pid());
    let attached_at = ((started.elapsed().as_secs_f64() * 20.0) as usize).min(n);
    let run = h.join().expect("curl thread");
    assert_eq!(run.transfers.len(), n);
    let lp = run.transfers[0].local_port;
    assert!(
        run.transfers.iter().all(|t| t.local_port == lp && t.code == 200),
        "harness: curl did not reuse one connection or failed"
    );
    std::thread::sleep(Duration::from_millis(300));
    let fin = sess.finish(SETTLE);
    let exps: Vec<HttpExpect> = paths
        .iter()
        .zip(&run.transfers)
        .map(|(p, t)| {
            HttpExpect::server("GET", p, 200)
                .route(pods_route())
                .client_port(lp)
                .server_port(port)
                .response_body(t.size_download)
        })
        .collect();
    let conn = spans_of_connection(&fin.spans, lp);
    let (m, mut errs) = check_mid_http(&conn, &exps, "2", not_before, attached_at, 10);
    // user-agent was indexed by curl's HPACK encoder before attach: it may be unresolvable
    // (absent), never wrong
    for s in &conn {
        if let Some(ua) = s.attr_str("user_agent.original")
            && ua != CURL_USER_AGENT
        {
            errs.push(format!("user_agent.original = {ua:?}, expected {CURL_USER_AGENT:?} or absent: {}", s.summary()));
        }
    }
    eprintln!(
        "[TLS HTTP/2 mid-connection, curl -> Go server] tracer attached after <= ~{attached_at} of {n} requests: {m:?}\n{}",
        final_stats_line(&fin.output.stderr).unwrap_or_default()
    );
    errs.extend(check_no_connection_spans(&fin.spans));
    if fin.spans.len() != conn.len() {
        errs.push("spans of another connection".into());
    }
    assert_finished_ok("TLS HTTP/2 connection joined mid-way (server side)", errs, &fin);
}

/// HTTP/2 over TLS joined mid-way with a client whose request headers never change (the Go
/// client, one URL): its HPACK encoder indexed every request header before the tracer attached
/// and never inserts again, so `:path` cannot be learned — spans are `unknown` and must never be
/// wrong. One span per request after attach (at most 2 missed), no `TLS connection` span.
#[test]
fn tls_http2_constant_headers_mid_way_never_wrong() {
    let srv = GoServer::https();
    let port = srv.port();
    let path = "/api/v1/namespaces/h2mid/pods/same";
    let url = srv.url(path);
    let mut c = GoHttpClient::start(&["-url", &url, "-n", "10000", "-interval", "100ms", "-stop-stdin"], false);
    c.wait_responses(10, CLIENT_TIMEOUT);
    let lp = client_local_port(c.pid(), port);
    let mut sess = TraceSession::for_pid(Sink::Json, srv.pid());
    wait_go_tls_probes(&mut sess.tracer, srv.pid());
    let (attached_at, rs) = c.stop_after(40, CLIENT_TIMEOUT);
    let n = rs.len();
    assert!(rs.iter().all(|r| r.status == 200 && r.proto == "HTTP/2.0"), "harness: {rs:?}");
    std::thread::sleep(Duration::from_millis(300));
    let fin = sess.finish(SETTLE);
    let e = HttpExpect::server("GET", path, 200)
        .route(pods_route())
        .k8s(K8s::new("get", "v1", "pods").ns("h2mid").name("same"))
        .client_port(lp)
        .server_port(port)
        .response_body(rs[0].bytes);
    let mut errs = Vec::new();
    let (mut unknown, mut named) = (0, 0);
    for s in &fin.spans {
        if s.name == "unknown" {
            unknown += 1;
            if s.attr_i64("client.port") != Some(i64::from(lp)) {
                errs.push(format!("unknown span not on the connection: {}", s.summary()));
            }
        } else if s.name == "TLS connection" || s.name == "TCP connection" {
            // reported below
        } else {
            named += 1;
            errs.extend(check_http_span_version(s, &e, "2").into_iter().map(|x| format!("{x} [{}]", s.summary())));
        }
    }
    let after = n - attached_at;
    eprintln!(
        "[TLS HTTP/2 mid-connection, constant headers, Go client -> Go server] attached after {attached_at} of {n}: {named} named, {unknown} unknown for {after} requests\n{}",
        final_stats_line(&fin.output.stderr).unwrap_or_default()
    );
    if named + unknown + 2 < after || named + unknown > after + 1 {
        errs.push(format!(
            "{} spans ({named} named, {unknown} unknown) for {after} requests after attach",
            named + unknown
        ));
    }
    errs.extend(check_no_connection_spans(&fin.spans));
    assert_finished_ok("TLS HTTP/2 with constant headers joined mid-way", errs, &fin);
}
