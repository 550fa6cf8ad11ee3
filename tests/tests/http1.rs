//! HTTP/1.1 (and non-HTTP TCP/TLS) integration tests of the tracer binary, against real
//! target processes on 127.0.0.1. Each test traces its own pids with its own tracer and sink, so
//! tests may run concurrently.
//!
//! Needs root (the tracer loads eBPF programs), the tracer binary (`$TRACER_BIN` or
//! `target/debug/tracer`), and python3, curl, openssl and nginx on the machine; a missing one
//! fails the test with a message naming it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use integration_tests::check::{
    HttpExpect, K8s, ResourceExpect, assert_no_errors, check_absent_everywhere, check_common, check_http_spans,
};
use integration_tests::procs::CURL_USER_AGENT;
use integration_tests::*;
use serde_json::json;

const SECRETS: [&str; 2] = ["SECRET-TOKEN-abc123", "COOKIE-SECRET-xyz"];

/// One curl request and what its span should say.
struct Req {
    method: &'static str,
    /// Path and query.
    target: String,
    body: Option<usize>,
    headers: Vec<String>,
    exp: HttpExpect,
}

fn req(method: &'static str, target: &str, status: u16) -> Req {
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
    fn route(mut self, r: &str) -> Self {
        self.exp = self.exp.route(r);
        self
    }
    fn k8s(mut self, k: K8s) -> Self {
        self.exp = self.exp.k8s(k);
        self
    }
    fn not_k8s(mut self) -> Self {
        self.exp = self.exp.not_k8s();
        self
    }
    fn body(mut self, n: usize) -> Self {
        self.body = Some(n);
        self
    }
    fn header(mut self, h: &str) -> Self {
        self.headers.push(h.into());
        self
    }
    fn min_duration(mut self, d: Duration) -> Self {
        self.exp = self.exp.min_duration(d);
        self
    }
    /// Chunked responses: their body size is not compared.
    fn chunked(mut self) -> Self {
        self.exp.label = "chunked".into();
        self
    }
}

/// Sends `r` with its own curl (so its own connection) to `base` (`http://127.0.0.1:PORT`) and
/// completes the expectation with what curl measured.
fn send(base: &str, server_port: u16, r: Req) -> HttpExpect {
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

fn pid_args(pids: &[u32]) -> Vec<String> {
    pids.iter().flat_map(|p| ["--pid".to_owned(), p.to_string()]).collect()
}

fn pods_route() -> &'static str {
    "/api/v1/namespaces/{namespace}/pods/{name}"
}

/// The main scenario: distinct requests to a python keep-alive server, each on its own connection.
/// `extra`: more tracer flags.
fn python_server_scenario(sink: Sink, extra: &[&str]) {
    let srv = PythonHttpServer::start();
    let res = ResourceExpect::of(srv.pid());
    let mut sess = TraceSession::start(sink, &pid_args(&[srv.pid()]), extra, &[srv.pid()]);
    let window = sess.window_start;
    let base = srv.url("");

    let reqs = vec![
        req("GET", "/api/v1/namespaces/default/pods/web-0", 200)
            .header(&format!("Authorization: Bearer {}", SECRETS[0]))
            .header(&format!("Cookie: session={}", SECRETS[1]))
            .route(pods_route())
            .k8s(K8s::new("get", "v1", "pods").ns("default").name("web-0")),
        req("GET", "/api/v1/namespaces/kube-system/pods?limit=5&labelSelector=app%3Dweb", 200)
            .route("/api/v1/namespaces/{namespace}/pods")
            .k8s(K8s::new("list", "v1", "pods").ns("kube-system")),
        req("GET", "/apis/apps/v1/namespaces/default/deployments/web/status", 200)
            .route("/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status")
            .k8s(K8s::new("get", "v1", "deployments").group("apps").subresource("status").ns("default").name("web")),
        req("GET", "/api/v1/nodes", 200).route("/api/v1/nodes").k8s(K8s::new("list", "v1", "nodes")),
        req("GET", "/healthz", 200).route("/healthz").not_k8s(),
        req("GET", "/api/v1/namespaces/default/pods/missing", 404)
            .route(pods_route())
            .k8s(K8s::new("get", "v1", "pods").ns("default").name("missing")),
        req("GET", "/status/500", 500),
        req("POST", "/api/v1/namespaces/default/configmaps", 201)
            .body(20_000)
            .route("/api/v1/namespaces/{namespace}/configmaps")
            .k8s(K8s::new("create", "v1", "configmaps").ns("default")),
        req("GET", "/api/v1/namespaces/default/pods/slow?sleepMs=300", 200)
            .min_duration(Duration::from_millis(300))
            .route(pods_route())
            .k8s(K8s::new("get", "v1", "pods").ns("default").name("slow")),
        req("GET", "/api/v1/namespaces/default/pods/big?size=50000", 200)
            .route(pods_route())
            .k8s(K8s::new("get", "v1", "pods").ns("default").name("big")),
    ];
    let exps: Vec<HttpExpect> = reqs.into_iter().map(|r| send(&base, srv.port(), r)).collect();

    sess.wait_spans(|_| true, exps.len(), SPAN_TIMEOUT);
    let gzip = extra.contains(&"gzip");
    let fin = sess.finish(SETTLE);
    let mut errs = check_http_spans(&fin.spans, &exps);
    errs.extend(check_common(&fin.spans, &res, window));
    // With --otlp-compression gzip every request arrived compressed, and without it none did.
    if let Some(rx) = &fin.rx {
        let want = if gzip { "gzip" } else { "" };
        let encodings: Vec<String> = rx.http_requests().into_iter().map(|h| h.content_encoding).collect();
        if encodings.iter().any(|e| e != want) {
            errs.push(format!("OTLP/HTTP content-encodings {encodings:?}, expected {want:?}"));
        }
        let grpc_gzipped = rx.grpc_gzipped_count();
        if sink == Sink::Grpc && (grpc_gzipped == rx.export_count()) != gzip {
            errs.push(format!("{grpc_gzipped} of {} gRPC exports gzip-compressed, gzip={gzip}", rx.export_count()));
        }
    }
    errs.extend(check_absent_everywhere(&fin.spans, &SECRETS));
    for s in SECRETS {
        if fin.output.stdout.contains(s) || fin.output.stderr.contains(s) {
            errs.push(format!("secret {s:?} appears in the tracer's stdout/stderr"));
        }
    }
    fin.assert_ok(&format!("python server, {sink:?} sink"), &errs);
}

#[test]
fn python_server_spans_over_otlp_grpc() {
    python_server_scenario(Sink::Grpc, &[]);
}

#[test]
fn python_server_spans_over_otlp_grpc_gzip() {
    python_server_scenario(Sink::Grpc, &["--otlp-compression", "gzip"]);
}

#[test]
fn python_server_spans_over_otlp_http_gzip() {
    python_server_scenario(Sink::Http, &["--otlp-compression", "gzip"]);
}

#[test]
fn python_server_spans_over_otlp_http() {
    python_server_scenario(Sink::Http, &[]);
}

#[test]
fn python_server_spans_as_json_lines() {
    python_server_scenario(Sink::Json, &[]);
}

/// Write verbs, subresources, cluster-wide group lists, and a watch (chunked, long-running).
#[test]
fn kubernetes_verbs_and_watch() {
    let srv = PythonHttpServer::start();
    let res = ResourceExpect::of(srv.pid());
    let sess = TraceSession::for_pid(Sink::Json, srv.pid());
    let base = srv.url("");
    let reqs = vec![
        req("PUT", "/api/v1/namespaces/default/pods/web-0", 200)
            .body(300)
            .route(pods_route())
            .k8s(K8s::new("update", "v1", "pods").ns("default").name("web-0")),
        req("PATCH", "/api/v1/namespaces/default/pods/web-0", 200)
            .body(50)
            .header("Content-Type: application/merge-patch+json")
            .route(pods_route())
            .k8s(K8s::new("patch", "v1", "pods").ns("default").name("web-0")),
        req("DELETE", "/api/v1/namespaces/default/pods/web-1", 200)
            .route(pods_route())
            .k8s(K8s::new("delete", "v1", "pods").ns("default").name("web-1")),
        req("GET", "/api/v1/namespaces/default/pods/web-0/log", 200)
            .route("/api/v1/namespaces/{namespace}/pods/{name}/log")
            .k8s(K8s::new("get", "v1", "pods").subresource("log").ns("default").name("web-0")),
        req("GET", "/apis/apps/v1/deployments", 200)
            .route("/apis/apps/v1/deployments")
            .k8s(K8s::new("list", "v1", "deployments").group("apps")),
        req("GET", "/api/v1/namespaces/default/pods?watch=true&resourceVersion=10", 200)
            .chunked()
            .route("/api/v1/namespaces/{namespace}/pods")
            .k8s(K8s::new("watch", "v1", "pods").ns("default").long_running()),
    ];
    let exps: Vec<HttpExpect> = reqs.into_iter().map(|r| send(&base, srv.port(), r)).collect();
    sess.end_http("kubernetes verbs and watch", &exps, &res);
}

/// Many requests on one connection: one span each, all with the connection's client.port, and
/// durations that do not include the idle time between requests.
#[test]
fn keep_alive_connection_gives_one_span_per_request() {
    let srv = PythonHttpServer::start();
    let res = ResourceExpect::of(srv.pid());
    let sess = TraceSession::for_pid(Sink::Grpc, srv.pid());

    // python http.client: 4 requests on one connection, 300 ms apart
    let paths: Vec<String> = (0..4).map(|i| format!("/api/v1/namespaces/ka/pods/p{i}")).collect();
    let results = PythonClient::run(
        json!({
            "host": "127.0.0.1", "port": srv.port(), "sleep_ms": 300,
            "requests": paths.iter().map(|p| json!({"method": "GET", "path": p})).collect::<Vec<_>>(),
        }),
        Duration::from_secs(30),
    );
    assert_eq!(results.len(), 4);
    let py_port = results[0].local_port;
    assert!(results.iter().all(|r| r.local_port == py_port && r.status == 200), "harness: {results:?}");
    let mut exps: Vec<HttpExpect> = results
        .iter()
        .zip(&paths)
        .map(|(r, p)| {
            HttpExpect::server("GET", p, 200)
                .route(pods_route())
                .k8s(K8s::new("get", "v1", "pods").ns("ka").name(p.rsplit('/').next().unwrap()))
                .client_port(py_port)
                .server_port(srv.port())
                .user_agent("itest-python-client/1.0")
                .response_body(r.body_len)
                .max_duration(r.elapsed)
        })
        .collect();

    // curl with three URLs: one connection, reused
    let curl_paths: Vec<String> = (0..3).map(|i| format!("/api/v1/namespaces/kc/pods/c{i}")).collect();
    let run = curl(&curl_paths.iter().map(|p| srv.url(p)).collect::<Vec<_>>());
    assert_eq!(
        run.transfers.iter().map(|t| t.num_connects).collect::<Vec<_>>(),
        vec![1, 0, 0],
        "harness: curl did not reuse its connection"
    );
    let curl_port = run.transfers[0].local_port;
    assert_ne!(curl_port, py_port);
    for (t, p) in run.transfers.iter().zip(&curl_paths) {
        exps.push(
            HttpExpect::server("GET", p, 200)
                .route(pods_route())
                .k8s(K8s::new("get", "v1", "pods").ns("kc").name(p.rsplit('/').next().unwrap()))
                .client_port(curl_port)
                .server_port(srv.port())
                .user_agent(CURL_USER_AGENT)
                .response_body(t.size_download)
                .max_duration(t.time_total),
        );
    }

    sess.end_http("keep-alive", &exps, &res);
}

/// nginx (one process: master_process off) answers with recv/writev/sendfile.
#[test]
fn nginx_server_spans() {
    let ng = Nginx::start();
    let res = ResourceExpect::of(ng.pid());
    let sess = TraceSession::for_pid(Sink::Http, ng.pid());
    let window = sess.window_start;
    let base = ng.url("");
    let mut exps: Vec<HttpExpect> = vec![
        req("GET", "/api/v1/namespaces/default/pods/nginx-pod", 200)
            .route(pods_route())
            .k8s(K8s::new("get", "v1", "pods").ns("default").name("nginx-pod")),
        req("GET", "/healthz", 200).route("/healthz").not_k8s(),
        req("GET", "/api/v1/namespaces/default/pods/absent", 404)
            .route(pods_route())
            .k8s(K8s::new("get", "v1", "pods").ns("default").name("absent")),
        req("GET", "/status/500", 500),
    ]
    .into_iter()
    .map(|r| send(&base, ng.port(), r))
    .collect();
    assert_eq!(exps[0].response_body_size, Some(Nginx::POD_SIZE as u64));

    // two requests on one keep-alive connection
    let run = curl(&[ng.url("/index.html"), ng.url("/api/v1/namespaces/default/pods/absent2")]);
    assert_eq!(run.transfers[1].num_connects, 0, "harness: curl did not reuse the nginx connection");
    for (t, (p, code)) in
        run.transfers.iter().zip([("/index.html", 200u16), ("/api/v1/namespaces/default/pods/absent2", 404)])
    {
        assert_eq!(t.code, code);
        exps.push(
            HttpExpect::server("GET", p, code)
                .client_port(t.local_port)
                .server_port(ng.port())
                .user_agent(CURL_USER_AGENT)
                .response_body(t.size_download)
                .max_duration(t.time_total),
        );
    }
    let fin = sess.end(exps.len());
    let mut errs = check_http_spans(&fin.spans, &exps);
    errs.extend(check_common(&fin.spans, &res, window));
    if !errs.is_empty() {
        errs.push(format!("(nginx error.log: {})", tail(&ng.error_log(), 2000)));
    }
    fin.assert_ok("nginx", &errs);
}

/// The target is an HTTP client: client spans for the requests it makes to a non-target server.
#[test]
fn target_as_http_client() {
    let srv = PythonHttpServer::start();
    let requests = json!([
        {"method": "GET", "path": "/api/v1/namespaces/default/pods/a",
         "headers": {"Authorization": format!("Bearer {}", SECRETS[0]), "Cookie": format!("session={}", SECRETS[1])}},
        {"method": "GET", "path": "/api/v1/namespaces/default/pods/missing"},
        {"method": "POST", "path": "/api/v1/namespaces/default/pods", "body_size": 100},
        {"method": "GET", "path": "/status/503"},
        {"method": "GET", "path": "/api/v1/namespaces/default/configmaps/cm?close=2500"},
    ]);
    let mut client = PythonClient::start(json!({
        "host": "127.0.0.1", "port": srv.port(), "wait_stdin": true, "requests": requests,
    }));
    let res = ResourceExpect::of(client.pid());
    let mut sess = TraceSession::for_pid(Sink::Grpc, client.pid());
    let window = sess.window_start;
    client.go();
    let results = client.wait_done(Duration::from_secs(30));
    assert_eq!(results.iter().map(|r| r.status).collect::<Vec<_>>(), vec![200, 404, 201, 503, 200], "harness");
    assert_eq!(results[4].body_len, 2500, "harness: close-delimited body");
    let base = |e: HttpExpect, r: &ClientResult| {
        e.server_port(srv.port())
            .user_agent("itest-python-client/1.0")
            .response_body(r.body_len)
            .max_duration(r.elapsed)
    };
    let exps = vec![
        base(
            HttpExpect::client("GET", "/api/v1/namespaces/default/pods/a", 200)
                .route(pods_route())
                .k8s(K8s::new("get", "v1", "pods").ns("default").name("a"))
                .request_body(0),
            &results[0],
        ),
        base(
            HttpExpect::client("GET", "/api/v1/namespaces/default/pods/missing", 404)
                .route(pods_route())
                .k8s(K8s::new("get", "v1", "pods").ns("default").name("missing")),
            &results[1],
        ),
        base(
            HttpExpect::client("POST", "/api/v1/namespaces/default/pods", 201)
                .route("/api/v1/namespaces/{namespace}/pods")
                .k8s(K8s::new("create", "v1", "pods").ns("default"))
                .request_body(100),
            &results[2],
        ),
        base(HttpExpect::client("GET", "/status/503", 503), &results[3]),
        // no Content-Length: the body ends when the server closes the connection
        base(
            HttpExpect::client("GET", "/api/v1/namespaces/default/configmaps/cm", 200)
                .route("/api/v1/namespaces/{namespace}/configmaps/{name}")
                .k8s(K8s::new("get", "v1", "configmaps").ns("default").name("cm")),
            &results[4],
        ),
    ];
    sess.wait_spans(|_| true, exps.len(), SPAN_TIMEOUT);
    client.finish();
    let fin = sess.finish(SETTLE);
    let mut errs = check_http_spans(&fin.spans, &exps);
    errs.extend(check_common(&fin.spans, &res, window));
    errs.extend(check_absent_everywhere(&fin.spans, &SECRETS));
    fin.assert_ok("target as client", &errs);
}

/// A client that shuts down its sending side after the request still gets its response reported:
/// only a close ends a connection. Twice: shut down at once (FIN_WAIT1, the server has not answered
/// yet), and 300 ms later, when the server has answered and closed (LAST_ACK, the answer still
/// unread in the socket).
#[test]
fn client_half_close_before_the_response() {
    for delay_ms in [0, 300] {
        let srv = PythonHttpServer::start();
        let requests = json!([
            {"method": "GET", "path": "/api/v1/namespaces/default/pods/first"},
            {"method": "GET", "path": "/api/v1/namespaces/default/pods/last", "half_close": true,
             "half_close_delay_ms": delay_ms, "headers": {"Connection": "close"}},
        ]);
        let mut client = PythonClient::start(json!({
            "host": "127.0.0.1", "port": srv.port(), "wait_stdin": true, "requests": requests,
        }));
        let mut sess = TraceSession::for_pid(Sink::Json, client.pid());
        client.go();
        let results = client.wait_done(Duration::from_secs(30));
        assert_eq!(results.iter().map(|r| r.status).collect::<Vec<_>>(), vec![200, 200], "harness");
        let exps: Vec<HttpExpect> = ["first", "last"]
            .iter()
            .zip(&results)
            .map(|(name, r)| {
                HttpExpect::client("GET", &format!("/api/v1/namespaces/default/pods/{name}"), 200)
                    .server_port(srv.port())
                    .route(pods_route())
                    .response_body(r.body_len)
                    .max_duration(r.elapsed)
            })
            .collect();
        sess.wait_spans(|_| true, exps.len(), SPAN_TIMEOUT);
        client.finish();
        let fin = sess.finish(SETTLE);
        let errs = check_http_spans(&fin.spans, &exps);
        fin.assert_ok(&format!("client half-closed after {delay_ms} ms"), &errs);
    }
}

/// Two `--pid` flags: each span carries its own process's resource.
#[test]
fn two_target_pids() {
    let a = PythonHttpServer::start();
    let b = PythonHttpServer::start();
    let sess = TraceSession::start(Sink::Json, &pid_args(&[a.pid(), b.pid()]), &[], &[a.pid(), b.pid()]);
    let window = sess.window_start;
    let ea = send(&a.url(""), a.port(), req("GET", "/api/v1/namespaces/a/pods/x", 200).route(pods_route()));
    let eb = send(&b.url(""), b.port(), req("GET", "/api/v1/namespaces/b/pods/y", 200).route(pods_route()));
    let fin = sess.end(2);
    let mut errs = check_http_spans(&fin.spans, &[ea.clone(), eb.clone()]);
    for (e, srv) in [(&ea, &a), (&eb, &b)] {
        let spans: Vec<ReceivedSpan> =
            fin.spans.iter().filter(|s| s.attr_str("url.path") == Some(e.path.as_str())).cloned().collect();
        errs.extend(check_common(&spans, &ResourceExpect::of(srv.pid()), window));
    }
    fin.assert_ok("two pids", &errs);
}

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

/// One hand-driven connection: HEAD (Content-Length but no body), 204 (no body), two pipelined
/// requests in one write, a request written in three fragments, `Expect: 100-continue` with an
/// interim response, and a final GET. Every request gets exactly its own span.
#[test]
fn http1_framing_edge_cases_on_one_connection() {
    let srv = PythonHttpServer::start();
    let res = ResourceExpect::of(srv.pid());
    let sess = TraceSession::for_pid(Sink::Grpc, srv.pid());
    let mut c = RawHttp::connect(srv.port());
    let lp = c.local_port();
    let ua = "itest-raw/1.0";
    let host = format!("Host: 127.0.0.1:{}\r\nUser-Agent: {ua}\r\n", srv.port());
    let get = |p: &str| format!("GET {p} HTTP/1.1\r\n{host}\r\n");
    let base = |e: HttpExpect| e.client_port(lp).server_port(srv.port()).user_agent(ua);
    let mut exps = Vec::new();

    // HEAD: Content-Length announces a body that never comes
    let t = std::time::Instant::now();
    c.send(format!("HEAD /api/v1/namespaces/edge/pods/h HTTP/1.1\r\n{host}\r\n").as_bytes());
    let r = c.read_response(true);
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").is_some_and(|v| v != "0"), "harness: HEAD answer without Content-Length");
    exps.push(
        base(HttpExpect::server("HEAD", "/api/v1/namespaces/edge/pods/h", 200))
            .route("/api/v1/namespaces/{namespace}/pods/{name}")
            .max_duration(t.elapsed()),
    );

    // 204: no body, no Content-Length
    let t = std::time::Instant::now();
    c.send(get("/status/204").as_bytes());
    assert_eq!(c.read_response(false).status, 204);
    exps.push(base(HttpExpect::server("GET", "/status/204", 204)).max_duration(t.elapsed()));

    // two pipelined requests in one write(2)
    let t = std::time::Instant::now();
    c.send((get("/api/v1/namespaces/edge/pods/p1") + &get("/api/v1/namespaces/edge/pods/p2")).as_bytes());
    let r1 = c.read_response(false);
    let r2 = c.read_response(false);
    let d = t.elapsed();
    for (p, r) in [("/api/v1/namespaces/edge/pods/p1", &r1), ("/api/v1/namespaces/edge/pods/p2", &r2)] {
        assert_eq!(r.status, 200);
        exps.push(
            base(HttpExpect::server("GET", p, 200))
                .route(pods_route())
                .response_body(r.body.len() as u64)
                .max_duration(d),
        );
    }

    // one request in three writes, 60 ms apart
    let req_text = get("/api/v1/namespaces/edge/pods/frag");
    let t = std::time::Instant::now();
    for part in [&req_text[..5], &req_text[5..30], &req_text[30..]] {
        c.send(part.as_bytes());
        std::thread::sleep(Duration::from_millis(60));
    }
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    exps.push(
        base(HttpExpect::server("GET", "/api/v1/namespaces/edge/pods/frag", 200))
            .route(pods_route())
            .response_body(r.body.len() as u64)
            .max_duration(t.elapsed()),
    );

    // Expect: 100-continue
    let t = std::time::Instant::now();
    c.send(format!("POST /api/v1/namespaces/edge/configmaps HTTP/1.1\r\n{host}Content-Type: application/json\r\nContent-Length: 3000\r\nExpect: 100-continue\r\n\r\n").as_bytes());
    assert_eq!(c.read_response(false).status, 100, "harness: no interim 100 Continue");
    c.send("y".repeat(3000).as_bytes());
    let r = c.read_response(false);
    assert_eq!(r.status, 201);
    exps.push(
        base(HttpExpect::server("POST", "/api/v1/namespaces/edge/configmaps", 201))
            .route("/api/v1/namespaces/{namespace}/configmaps")
            .k8s(K8s::new("create", "v1", "configmaps").ns("edge"))
            .request_body(3000)
            .response_body(r.body.len() as u64)
            .max_duration(t.elapsed()),
    );

    // and the connection is still in sync
    let t = std::time::Instant::now();
    c.send(get("/api/v1/namespaces/edge/pods/last").as_bytes());
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    exps.push(
        base(HttpExpect::server("GET", "/api/v1/namespaces/edge/pods/last", 200))
            .route(pods_route())
            .k8s(K8s::new("get", "v1", "pods").ns("edge").name("last"))
            .response_body(r.body.len() as u64)
            .max_duration(t.elapsed()),
    );
    c.close();

    sess.end_http("HTTP/1.1 framing edge cases", &exps, &res);
}

/// Eight connections at once, five keep-alive requests each: 40 spans, none lost or mixed up.
#[test]
fn concurrent_connections_are_all_traced() {
    let srv = PythonHttpServer::start();
    let res = ResourceExpect::of(srv.pid());
    let sess = TraceSession::for_pid(Sink::Grpc, srv.pid());
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let urls: Vec<(String, String)> = (0..5)
                .map(|i| {
                    let p = format!("/api/v1/namespaces/c{t}/pods/p{i}");
                    (srv.url(&p), p)
                })
                .collect();
            std::thread::spawn(move || {
                let run = curl(&urls.iter().map(|(u, _)| u.clone()).collect::<Vec<_>>());
                urls.into_iter().map(|(_, p)| p).zip(run.transfers).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut exps = Vec::new();
    for h in handles {
        for (p, t) in h.join().unwrap() {
            assert_eq!(t.code, 200);
            exps.push(
                HttpExpect::server("GET", &p, 200)
                    .route(pods_route())
                    .client_port(t.local_port)
                    .server_port(srv.port())
                    .response_body(t.size_download)
                    .max_duration(t.time_total),
            );
        }
    }
    sess.end_http("concurrent connections", &exps, &res);
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

/// `--capture-bytes 1024` and a request whose headers are 4 KB: its span still has method, path
/// and status, the next request on the connection is decoded normally, and the (captured) bearer
/// token appears nowhere.
#[test]
fn headers_beyond_the_capture_limit() {
    let srv = PythonHttpServer::start();
    let res = ResourceExpect::of(srv.pid());
    let sess = TraceSession::start(Sink::Json, &pid_args(&[srv.pid()]), &["--capture-bytes", "1024"], &[srv.pid()]);
    let window = sess.window_start;
    let mut c = RawHttp::connect(srv.port());
    let lp = c.local_port();
    let padding = "p".repeat(4000);
    let t = std::time::Instant::now();
    c.send(
        format!(
            "GET /api/v1/namespaces/big/pods/h1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nX-Padding: {padding}\r\n\r\n",
            SECRETS[0]
        )
        .as_bytes(),
    );
    let r1 = c.read_response(false);
    let d1 = t.elapsed();
    assert_eq!(r1.status, 200);
    let t = std::time::Instant::now();
    c.send(b"GET /api/v1/namespaces/big/pods/after HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: itest-raw/1.0\r\n\r\n");
    let r2 = c.read_response(false);
    let d2 = t.elapsed();
    assert_eq!(r2.status, 200);
    c.close();
    let exps = vec![
        HttpExpect::server("GET", "/api/v1/namespaces/big/pods/h1", 200).client_port(lp).max_duration(d1),
        HttpExpect::server("GET", "/api/v1/namespaces/big/pods/after", 200)
            .route(pods_route())
            .k8s(K8s::new("get", "v1", "pods").ns("big").name("after"))
            .client_port(lp)
            .server_port(srv.port())
            .user_agent("itest-raw/1.0")
            .response_body(r2.body.len() as u64)
            .max_duration(d2),
    ];
    let fin = sess.end(exps.len());
    let mut errs = check_http_spans(&fin.spans, &exps);
    errs.extend(check_common(&fin.spans, &res, window));
    errs.extend(check_absent_everywhere(&fin.spans, &SECRETS));
    if fin.output.stdout.contains(SECRETS[0]) || fin.output.stderr.contains(SECRETS[0]) {
        errs.push("the bearer token appears in the tracer's output".into());
    }
    fin.assert_ok("headers beyond --capture-bytes", &errs);
}
