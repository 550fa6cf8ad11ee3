//! How the tracer finds and follows its targets (by comm, started later, restarted, the default
//! kube-apiserver), and how it ends and prints (SIGTERM, terminal output).

use std::time::Duration;

use super::common::{pods_route, req, send};
use integration_tests::check::{K8s, ResourceExpect, assert_no_errors, check_common, check_http_spans};
use integration_tests::*;

/// `--comm NAME` picks up a process started after the tracer.
#[test]
fn comm_target_started_after_the_tracer() {
    let name = unique_name("kt-");
    require_root();
    let mut tracer = Tracer::start(&["--comm", &name, "--output", "json"]);
    tracer.wait_for_stderr("waiting for", Duration::from_secs(60));
    let srv = PythonHttpServer::start_named(&name);
    tracer.wait_attached(srv.pid());
    let window = now_unix_nanos();
    let e = send(&srv.url(""), srv.port(), req("GET", "/api/v1/namespaces/late/pods/x", 200).route(pods_route()));
    tracer.wait_json_spans(|_| true, 1, SPAN_TIMEOUT);
    std::thread::sleep(SETTLE);
    let out = tracer.stop();
    out.assert_no_panic();
    out.assert_code(0);
    let spans = out.json_spans();
    let mut errs = check_http_spans(&spans, &[e]);
    let res = ResourceExpect::of(srv.pid());
    assert_eq!(res.comm, name);
    errs.extend(check_common(&spans, &res, window));
    assert_no_errors("--comm target started later", &errs, &spans);
}

/// Without --pid/--comm the tracer targets processes named kube-apiserver.
#[test]
fn default_target_is_kube_apiserver() {
    let srv = PythonHttpServer::start_named("kube-apiserver");
    assert_eq!(srv.comm(), "kube-apiserver");
    let sess = TraceSession::start(Sink::Json, &[], &[], &[srv.pid()]);
    let window = sess.window_start;
    let e = send(
        &srv.url(""),
        srv.port(),
        req("GET", "/api/v1/namespaces/kube-system/pods/etcd-0", 200)
            .route(pods_route())
            .k8s(K8s::new("get", "v1", "pods").ns("kube-system").name("etcd-0")),
    );
    let fin = sess.end(1);
    let mut errs = check_http_spans(&fin.spans, &[e]);
    errs.extend(check_common(&fin.spans, &ResourceExpect::of(srv.pid()), window));
    fin.assert_ok("default comm", &errs);
}

/// SIGTERM flushes pending spans and exits 0.
#[test]
fn sigterm_flushes_and_exits_zero() {
    let srv = PythonHttpServer::start();
    let sess = TraceSession::for_pid(Sink::Json, srv.pid());
    let t = curl_one(&[srv.url("/api/v1/namespaces/default/pods/term")]);
    assert_eq!(t.code, 200);
    std::thread::sleep(Duration::from_millis(300));
    let out = sess.tracer.stop_with(libc::SIGTERM);
    out.assert_no_panic();
    out.assert_code(0);
    assert!(out.stderr.contains("final stats"), "{}", out.describe());
    let spans = out.json_spans();
    let n = spans.iter().filter(|s| s.attr_str("url.path") == Some("/api/v1/namespaces/default/pods/term")).count();
    assert_eq!(n, 1, "expected the request's span on stdout after SIGTERM\n{}\n{}", dump(&spans), out.describe());
}

/// A `--comm` target that exits and starts again (new pid) is followed.
#[test]
fn comm_target_restart_is_followed() {
    require_root();
    let name = unique_name("kr-");
    let a = PythonHttpServer::start_named(&name);
    let res_a = ResourceExpect::of(a.pid());
    let mut tracer = Tracer::start(&["--comm", &name, "--output", "json"]);
    tracer.wait_attached(a.pid());
    let window = now_unix_nanos();
    let ea = send(&a.url(""), a.port(), req("GET", "/api/v1/namespaces/first/pods/a", 200).route(pods_route()));
    tracer.expect_json_spans("for the first process", |_| true, 1, SPAN_TIMEOUT);
    drop(a);
    let b = PythonHttpServer::start_named(&name);
    let res_b = ResourceExpect::of(b.pid());
    tracer.wait_attached(b.pid());
    let eb = send(&b.url(""), b.port(), req("GET", "/api/v1/namespaces/second/pods/b", 200).route(pods_route()));
    tracer.wait_json_spans(|_| true, 2, SPAN_TIMEOUT);
    std::thread::sleep(SETTLE);
    let out = tracer.stop();
    out.assert_no_panic();
    out.assert_code(0);
    let spans = out.json_spans();
    let mut errs = check_http_spans(&spans, &[ea.clone(), eb.clone()]);
    for (e, res) in [(&ea, &res_a), (&eb, &res_b)] {
        let mine: Vec<ReceivedSpan> =
            spans.iter().filter(|s| s.attr_str("url.path") == Some(e.path.as_str())).cloned().collect();
        errs.extend(check_common(&mine, res, window));
    }
    assert_no_errors("--comm target restarted", &errs, &spans);
}

/// `--output terminal` (the default without an OTLP endpoint) shows the requests and exits cleanly.
#[test]
fn terminal_output_shows_requests() {
    require_root();
    let srv = PythonHttpServer::start();
    let mut tracer = Tracer::start(&["--pid", &srv.pid().to_string()]);
    tracer.wait_attached(srv.pid());
    assert_eq!(curl_one(&[srv.url("/api/v1/namespaces/term/pods/shown")]).code, 200);
    std::thread::sleep(Duration::from_millis(1500));
    let out = tracer.stop();
    out.assert_no_panic();
    out.assert_code(0);
    let text = strip_ansi(&out.stdout);
    assert!(
        text.contains("GET")
            && (text.contains("/api/v1/namespaces/term/pods/shown")
                || text.contains("/api/v1/namespaces/{namespace}/pods/{name}")),
        "the terminal output should show the request\n{}",
        out.describe()
    );
}
