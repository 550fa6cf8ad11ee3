//! HTTP/2 without gRPC and without TLS (h2c): a real Go net/http server (`tests/go/h2c-server`,
//! Go 1.24+, HTTP/1.1 and HTTP/2 with prior knowledge on one port) traced on the server side, and
//! curl and the Go h2c client (`h2c-server -client`) traced on the client side. Each test has its
//! own processes and tracer.

use std::time::Duration;

use integration_tests::check::{HttpExpect, K8s, ResourceExpect, assert_no_errors, check_common};
use integration_tests::etcd::ExecTarget;
use integration_tests::gotls::{
    GoHttpClient, GoResponse, GoServer, check_http_spans_version, check_mid_http, check_no_connection_spans,
    spans_of_connection,
};
use integration_tests::procs::CURL_USER_AGENT;
use integration_tests::tracer_log::{final_stats_line, tracer_log_summary};
use integration_tests::*;

fn pods_route() -> &'static str {
    "/api/v1/namespaces/{namespace}/pods/{name}"
}

fn pod(ns: &str, name: &str) -> (String, K8s) {
    (format!("/api/v1/namespaces/{ns}/pods/{name}"), K8s::new("get", "v1", "pods").ns(ns).name(name))
}

/// The h2c server traced; clients not traced: curl `--http2-prior-knowledge` (a GET and a POST
/// with a 3000-byte body, one connection each — curl 7.88 cannot reuse a prior-knowledge
/// connection), the Go h2c client with four requests on one connection (four streams), and one
/// curl HTTP/1.1 request to the same port for contrast. Every request gets one server span with
/// `network.protocol.version` "2" (the HTTP/1.1 one "1.1"), method, path, route, status (503 is an
/// error), k8s attributes, body sizes and the connection's ports; no `TCP connection` span.
#[test]
fn h2c_server_spans_for_curl_and_go_clients() {
    let srv = GoServer::h2c();
    let res = ResourceExpect::of(srv.pid());
    let sess = TraceSession::for_pid(Sink::Grpc, srv.pid());
    let window = sess.window_start;
    let port = srv.port();
    let mut h2 = Vec::new();

    let (p0, k0) = pod("default", "web-0");
    let t = curl_one(&["--http2-prior-knowledge".to_owned(), srv.url(&p0)]);
    assert_eq!(t.code, 200);
    h2.push(
        HttpExpect::server("GET", &p0, 200)
            .scheme("http")
            .route(pods_route())
            .k8s(k0)
            .client_port(t.local_port)
            .server_port(port)
            .user_agent(CURL_USER_AGENT)
            .request_body(0)
            .response_body(t.size_download)
            .max_duration(t.time_total),
    );
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
            .response_body(t.size_download)
            .max_duration(t.time_total),
    );

    let (p2, k2) = pod("kube-system", "etcd-0");
    let paths = [p2.clone(), "/status/503".into(), "/status/404".into(), "/".into()];
    let urls: Vec<String> = paths.iter().map(|p| srv.url(p)).collect();
    let mut args: Vec<&str> = Vec::new();
    for u in &urls {
        args.extend(["-url", u.as_str()]);
    }
    let mut go = GoHttpClient::h2c(&args, false);
    let rs = go.wait_success(Duration::from_secs(20));
    let statuses: Vec<u16> = rs.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 503, 404, 200], "harness: h2c client answers {rs:?}");
    let lp = rs[0].local_port.expect("local port");
    assert!(
        rs.iter().all(|r| r.local_port == Some(lp) && r.proto == "HTTP/2.0"),
        "harness: not one h2c connection: {rs:?}"
    );
    let base = |e: HttpExpect, r: &GoResponse| {
        e.client_port(lp).server_port(port).user_agent("Go-http-client/2.0").request_body(0).response_body(r.bytes)
    };
    h2.push(base(HttpExpect::server("GET", &p2, 200).route(pods_route()).k8s(k2), &rs[0]));
    h2.push(base(HttpExpect::server("GET", "/status/503", 503).not_k8s(), &rs[1]));
    h2.push(base(HttpExpect::server("GET", "/status/404", 404).not_k8s(), &rs[2]));
    h2.push(base(HttpExpect::server("GET", "/", 200).not_k8s(), &rs[3]));

    let (p3, k3) = pod("h1", "plain");
    let t1 = curl_one(&["--http1.1".to_owned(), srv.url(&p3)]);
    assert_eq!(t1.code, 200);
    let h1 = vec![
        HttpExpect::server("GET", &p3, 200)
            .route(pods_route())
            .k8s(k3)
            .client_port(t1.local_port)
            .server_port(port)
            .user_agent(CURL_USER_AGENT)
            .response_body(t1.size_download)
            .max_duration(t1.time_total),
    ];

    let fin = sess.end(h2.len() + h1.len());
    let is_h1 = |s: &ReceivedSpan| s.attr_str("network.protocol.version") == Some("1.1");
    let spans_h2: Vec<ReceivedSpan> = fin.spans.iter().filter(|s| !is_h1(s)).cloned().collect();
    let spans_h1: Vec<ReceivedSpan> = fin.spans.iter().filter(|s| is_h1(s)).cloned().collect();
    let mut errs = check_http_spans_version(&spans_h2, &h2, "2", &|_| false);
    errs.extend(check_http_spans_version(&spans_h1, &h1, "1.1", &|_| false));
    errs.extend(check_no_connection_spans(&fin.spans));
    errs.extend(check_common(&fin.spans, &res, window));
    if !errs.is_empty() {
        errs.push(format!("tracer log:\n    {}", tracer_log_summary(&fin.output.stderr)));
    }
    assert_no_errors("h2c server (HTTP/2 prior knowledge)", &errs, &fin.spans);
}

/// Client side, two targets in one tracer: a shell that execs curl `--http2-prior-knowledge`
/// after attach (same pid, new image), and the Go h2c client (waits on stdin until attached)
/// with three requests on one connection. Client spans, version "2", the server's port, 404 an
/// error (client span), the client's real local port.
#[test]
fn h2c_client_spans_of_curl_and_go_client() {
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
        srv.url(&p0),
    ];
    let mut curl_target = ExecTarget::start(&argv, &[]);
    let (p1, k1) = pod("default", "go-0");
    let (u1, u2, u3) = (srv.url(&p1), srv.url("/status/404"), srv.url("/"));
    let mut go = GoHttpClient::h2c(&["-url", &u1, "-url", &u2, "-url", &u3], true);
    let go_res = ResourceExpect::of(go.pid());
    let pids = [curl_target.pid(), go.pid()];
    let args: Vec<String> = pids.iter().flat_map(|p| ["--pid".to_owned(), p.to_string()]).collect();
    let sess = TraceSession::start(Sink::Json, &args, &[], &pids);
    let window = sess.window_start;
    curl_target.go();
    curl_target.wait_success(Duration::from_secs(20));
    go.go();
    let rs = go.wait_success(Duration::from_secs(20));
    assert_eq!(rs.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 404, 200], "harness: {rs:?}");
    let lp = rs[0].local_port.expect("local port");

    let curl_exps = vec![
        HttpExpect::client("GET", &p0, 200)
            .scheme("http")
            .route(pods_route())
            .k8s(k0)
            .server_port(port)
            .user_agent(CURL_USER_AGENT),
    ];
    let go_exps = vec![
        HttpExpect::client("GET", &p1, 200).route(pods_route()).k8s(k1).response_body(rs[0].bytes),
        HttpExpect::client("GET", "/status/404", 404).not_k8s().response_body(rs[1].bytes),
        HttpExpect::client("GET", "/", 200).not_k8s().response_body(rs[2].bytes),
    ]
    .into_iter()
    .map(|e| e.client_port(lp).server_port(port).user_agent("Go-http-client/2.0"))
    .collect::<Vec<_>>();
    let fin = sess.end(curl_exps.len() + go_exps.len());
    let of = |pid: u32| fin.spans.iter().filter(|s| s.pid() == Some(pid)).cloned().collect::<Vec<_>>();
    let (curl_spans, go_spans) = (of(pids[0]), of(pids[1]));
    let mut errs = check_http_spans_version(&curl_spans, &curl_exps, "2", &|_| false);
    errs.extend(check_http_spans_version(&go_spans, &go_exps, "2", &|_| false));
    errs.extend(check_no_connection_spans(&fin.spans));
    for s in &curl_spans {
        match s.attr_i64("client.port") {
            Some(p) if p > 0 => {}
            other => errs.push(format!(
                "curl client span {:?}: client.port = {other:?}, expected curl's real local port",
                s.name
            )),
        }
    }
    let res = ResourceExpect { pid: pids[0], comm: "curl".into(), exe: "curl".into(), host: hostname() };
    errs.extend(check_common(&curl_spans, &res, window));
    errs.extend(check_common(&go_spans, &go_res, window));
    if fin.spans.len() != curl_spans.len() + go_spans.len() {
        errs.push("spans of another process".into());
    }
    if !errs.is_empty() {
        errs.push(format!("tracer log:\n    {}", tracer_log_summary(&fin.output.stderr)));
    }
    assert_no_errors("h2c clients (client side)", &errs, &fin.spans);
}

/// Mid-connection h2c: the Go h2c client sends requests with distinct paths over one HTTP/2
/// connection, one every 50 ms; the tracer attaches to the server after 20 answers, and 60 more
/// follow. Every span not named `unknown` is right for its request (none starts before the tracer
/// did), at most 10 are unknown, and the last 40 requests (and any from 3 after the attach) all
/// have their span.
#[test]
fn h2c_connection_joined_mid_way() {
    let srv = GoServer::h2c();
    let port = srv.port();
    let url = srv.url("/api/v1/namespaces/mid/pods/p-%d");
    let mut go = GoHttpClient::h2c(&["-url", &url, "-n", "10000", "-interval", "50ms", "-stop-stdin"], false);
    go.wait_responses(20, Duration::from_secs(20));
    let not_before = now_unix_nanos();
    let sess = TraceSession::for_pid(Sink::Json, srv.pid());
    let (attached_at, rs) = go.stop_after(60, Duration::from_secs(30));
    let n = rs.len();
    let lp = rs[0].local_port.expect("local port");
    assert!(rs.iter().all(|r| r.local_port == Some(lp) && r.status == 200), "harness: not one connection, or failures");
    std::thread::sleep(Duration::from_millis(300));
    let fin = sess.finish(SETTLE);
    let exps: Vec<HttpExpect> = rs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            HttpExpect::server("GET", &format!("/api/v1/namespaces/mid/pods/p-{i}"), 200)
                .route(pods_route())
                .client_port(lp)
                .server_port(port)
                .response_body(r.bytes)
        })
        .collect();
    let conn = spans_of_connection(&fin.spans, lp);
    let (m, mut errs) = check_mid_http(&conn, &exps, "2", not_before, attached_at, 10);
    eprintln!(
        "[h2c mid-connection] tracer attached after {attached_at} of {n} requests: {m:?}\n{}",
        final_stats_line(&fin.output.stderr).unwrap_or_default()
    );
    errs.extend(check_no_connection_spans(&fin.spans));
    if fin.spans.len() != conn.len() {
        errs.push("spans of another connection".into());
    }
    if !errs.is_empty() {
        errs.push(format!("tracer log:\n    {}", tracer_log_summary(&fin.output.stderr)));
    }
    assert_no_errors("h2c connection joined mid-way", &errs, &fin.spans);
}
