//! HTTP/1.1 framing: edge cases on one connection, many connections at once, and headers beyond
//! the capture limit.

use std::time::Duration;

use super::common::{SECRETS, pid_args, pods_route};
use integration_tests::check::{
    HttpExpect, K8s, ResourceExpect, check_absent_everywhere, check_common, check_http_spans,
};
use integration_tests::*;

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
