//! HTTP/2 without gRPC and without TLS (h2c): a real Go net/http server (`tests/go/h2c-server`,
//! Go 1.24+, HTTP/1.1 and HTTP/2 with prior knowledge on one port) traced on the server side, and
//! curl traced on the client side. Each test has its own processes and tracer.

use std::time::Duration;

use integration_tests::check::{HttpExpect, K8s, ResourceExpect, assert_no_errors, check_common};
use integration_tests::etcd::ExecTarget;
use integration_tests::gotls::{
    GoServer, check_http_spans_version, check_mid_http, check_no_connection_spans, final_stats_line,
};
use integration_tests::procs::CURL_USER_AGENT;
use integration_tests::*;

const SPAN_TIMEOUT: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_millis(700);

fn pods_route() -> &'static str {
    "/api/v1/namespaces/{namespace}/pods/{name}"
}

fn pod(ns: &str, name: &str) -> (String, K8s) {
    (format!("/api/v1/namespaces/{ns}/pods/{name}"), K8s::new("get", "v1", "pods").ns(ns).name(name))
}

/// curl `--http2-prior-knowledge` against the h2c server: four requests on one connection (one
/// stream each), then a POST with a 3000-byte body on another; and one HTTP/1.1 request to the same
/// port for contrast. Every request gets one server span with `network.protocol.version` "2"
/// (the HTTP/1.1 one "1.1"), method, path, route, status (503 is an error), k8s attributes, body
/// sizes and the connection's ports; no `TCP connection` span.
#[test]
fn h2c_server_spans_for_curl_prior_knowledge() {
    let srv = GoServer::h2c();
    let res = ResourceExpect::of(srv.pid());
    let mut sess = TraceSession::for_pid(Sink::Grpc, srv.pid());
    let window = sess.window_start;
    let port = srv.port();

    let (p0, k0) = pod("default", "web-0");
    let paths = [p0.clone(), "/status/503".into(), "/status/404".into(), "/".into()];
    let urls: Vec<String> = paths.iter().map(|p| srv.url(p)).collect();
    let mut args = vec!["--http2-prior-knowledge".to_owned()];
    args.extend(urls);
    let run = curl(&args);
    assert_eq!(run.transfers.len(), 4);
    let lp = run.transfers[0].local_port;
    assert!(run.transfers.iter().all(|t| t.local_port == lp), "harness: curl did not reuse its connection: {run:?}");
    let codes: Vec<u16> = run.transfers.iter().map(|t| t.code).collect();
    assert_eq!(codes, [200, 503, 404, 200], "harness: unexpected answers");
    let base = |e: HttpExpect, t: &Transfer| {
        e.client_port(t.local_port)
            .server_port(port)
            .user_agent(CURL_USER_AGENT)
            .request_body(0)
            .response_body(t.size_download)
    };
    let mut h2 = vec![
        base(HttpExpect::server("GET", &p0, 200).route(pods_route()).k8s(k0), &run.transfers[0]),
        base(HttpExpect::server("GET", "/status/503", 503).not_k8s(), &run.transfers[1]),
        base(HttpExpect::server("GET", "/status/404", 404).not_k8s(), &run.transfers[2]),
        base(HttpExpect::server("GET", "/", 200).not_k8s(), &run.transfers[3]),
    ];

    let (p1, _) = pod("ns1", "posted");
    let t = curl_one(&[
        "--http2-prior-knowledge".to_owned(),
        "-X".into(),
        "POST".into(),
        "-H".into(),
        "Content-Type: application/json".into(),
        "--data-binary".into(),
        "x".repeat(3000),
        srv.url(&p1),
    ]);
    assert_eq!(t.code, 200);
    h2.push(
        HttpExpect::server("POST", &p1, 200)
            .route(pods_route())
            .client_port(t.local_port)
            .server_port(port)
            .user_agent(CURL_USER_AGENT)
            .request_body(3000)
            .response_body(t.size_download),
    );

    let (p2, k2) = pod("h1", "plain");
    let t1 = curl_one(&["--http1.1".to_owned(), srv.url(&p2)]);
    assert_eq!(t1.code, 200);
    let h1 = vec![
        HttpExpect::server("GET", &p2, 200)
            .route(pods_route())
            .k8s(k2)
            .client_port(t1.local_port)
            .server_port(port)
            .user_agent(CURL_USER_AGENT)
            .response_body(t1.size_download)
            .max_duration(t1.time_total),
    ];

    sess.wait_spans(|_| true, h2.len() + h1.len(), SPAN_TIMEOUT);
    let fin = sess.finish(SETTLE);
    let is_v = |v: &'static str| move |s: &ReceivedSpan| s.attr_str("network.protocol.version") == Some(v);
    let spans_h2: Vec<ReceivedSpan> = fin.spans.iter().filter(|s| !is_v("1.1")(s)).cloned().collect();
    let spans_h1: Vec<ReceivedSpan> = fin.spans.iter().filter(|s| is_v("1.1")(s)).cloned().collect();
    let mut errs = check_http_spans_version(&spans_h2, &h2, "2", &|_| false);
    errs.extend(check_http_spans_version(&spans_h1, &h1, "1.1", &|_| false));
    errs.extend(check_no_connection_spans(&fin.spans));
    errs.extend(check_common(&fin.spans, &res, window));
    if !errs.is_empty() {
        errs.push(final_stats_line(&fin.output.stderr));
    }
    assert_no_errors("h2c server (HTTP/2 prior knowledge)", &errs, &fin.spans);
}

/// Client side: a shell is traced, then execs curl `--http2-prior-knowledge` with two URLs (one
/// connection): two client spans, version "2", the h2c server's port, 404 an error (client span).
#[test]
fn h2c_client_spans_of_curl_exec_after_attach() {
    let srv = GoServer::h2c();
    let port = srv.port();
    let curl_bin = require_tool("curl", "curl");
    let (p0, k0) = pod("kube-system", "etcd-0");
    let argv: Vec<String> = vec![
        curl_bin.display().to_string(),
        "-sS".into(),
        "--noproxy".into(),
        "*".into(),
        "-A".into(),
        CURL_USER_AGENT.into(),
        "--http2-prior-knowledge".into(),
        "-o".into(),
        "/dev/null".into(),
        "-o".into(),
        "/dev/null".into(),
        srv.url(&p0),
        srv.url("/status/404"),
    ];
    let mut target = ExecTarget::start(&argv, &[]);
    let pid = target.pid();
    let mut sess = TraceSession::for_pid(Sink::Json, pid);
    let window = sess.window_start;
    target.go();
    target.wait_success(Duration::from_secs(20));

    let exps = vec![
        HttpExpect::client("GET", &p0, 200).route(pods_route()).k8s(k0).server_port(port).user_agent(CURL_USER_AGENT),
        HttpExpect::client("GET", "/status/404", 404).not_k8s().server_port(port).user_agent(CURL_USER_AGENT),
    ];
    sess.wait_spans(|_| true, exps.len(), SPAN_TIMEOUT);
    let fin = sess.finish(SETTLE);
    let mut errs = check_http_spans_version(&fin.spans, &exps, "2", &|_| false);
    errs.extend(check_no_connection_spans(&fin.spans));
    for s in &fin.spans {
        match s.attr_i64("client.port") {
            Some(p) if p > 0 => {}
            other => errs.push(format!("client span {:?}: client.port = {other:?}, expected curl's real local port", s.name)),
        }
    }
    let res = ResourceExpect { pid, comm: "curl".into(), exe: "curl".into(), host: hostname() };
    errs.extend(check_common(&fin.spans, &res, window));
    if !errs.is_empty() {
        errs.push(final_stats_line(&fin.output.stderr));
    }
    assert_no_errors("curl h2c exec'd after attach (client side)", &errs, &fin.spans);
}

/// Mid-connection h2c: curl sends 80 requests with distinct paths over one HTTP/2 connection at
/// 20/s; the tracer attaches to the server after ~1 s. Every span not named `unknown` is right
/// for its request (none starts before the tracer did), at most 10 are unknown, and the last 40
/// requests all have their span.
#[test]
fn h2c_connection_joined_mid_way() {
    let srv = GoServer::h2c();
    let port = srv.port();
    let n = 80;
    let paths: Vec<String> = (0..n).map(|i| format!("/api/v1/namespaces/mid/pods/p-{i:03}")).collect();
    let mut args = vec!["--http2-prior-knowledge".to_owned(), "--rate".into(), "20/s".into()];
    args.extend(paths.iter().map(|p| srv.url(p)));
    let started = std::time::Instant::now();
    let h = std::thread::spawn(move || curl(&args));
    std::thread::sleep(Duration::from_millis(1000));
    let not_before = now_unix_nanos();
    let sess = TraceSession::for_pid(Sink::Json, srv.pid());
    // at most 20/s since `started`: an estimate of the requests made before attach, for the report
    let attached_at = ((started.elapsed().as_secs_f64() * 20.0) as usize).min(n);
    let run = h.join().expect("curl thread");
    assert_eq!(run.transfers.len(), n);
    let lp = run.transfers[0].local_port;
    assert!(run.transfers.iter().all(|t| t.local_port == lp && t.code == 200), "harness: curl did not reuse one connection or failed");
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
    let conn: Vec<ReceivedSpan> =
        fin.spans.iter().filter(|s| s.attr_i64("client.port") == Some(i64::from(lp)) || s.name == "unknown").cloned().collect();
    let (m, mut errs) = check_mid_http(&conn, &exps, "2", not_before, n - 40, 10);
    eprintln!(
        "[h2c mid-connection] tracer attached after <= ~{attached_at} of {n} requests: {m:?}\n{}",
        final_stats_line(&fin.output.stderr)
    );
    errs.extend(check_no_connection_spans(&fin.spans));
    if !errs.is_empty() {
        errs.push(final_stats_line(&fin.output.stderr));
    }
    assert_no_errors("h2c connection joined mid-way", &errs, &fin.spans);
}
