//! HTTP/1.1 servers and clients under the tracer: python, nginx and the target as a client, over
//! every sink, with Kubernetes verbs, keep-alive connections and several target pids.

use std::time::Duration;

use super::common::{SECRETS, pid_args, pods_route, req, send};
use integration_tests::check::{
    HttpExpect, K8s, ResourceExpect, check_absent_everywhere, check_common, check_http_spans,
};
use integration_tests::procs::CURL_USER_AGENT;
use integration_tests::*;
use serde_json::json;

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
