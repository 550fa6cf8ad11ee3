//! The Go 1.27 HTTPS server and HTTP client of `tests/go`: HTTP/1.1 and HTTP/2 spans, wrapped and
//! churned connections, deep stacks, large bodies, clients leaving mid-stream, and `--empty-probes`.

use std::time::Duration;

use super::common::{CLIENT_TIMEOUT, GO_TLS_CLEAN, check_h1_and_h2_server_spans, end_go_tls_h1, plain_get, pods_route};
use integration_tests::check::{HttpExpect, K8s, ResourceExpect, check_common};
use integration_tests::ending::assert_finished_ok;
use integration_tests::gotls::{
    GoHttpClient, GoServer, check_http_spans_version, check_no_connection_spans, wait_go_tls_probes,
};
use integration_tests::procs::CURL_USER_AGENT;
use integration_tests::tracer::bpf_links;
use integration_tests::tracer_log::{check_zero_stats, final_stats, final_stats_line};
use integration_tests::*;

/// The stripped Go 1.27 HTTPS server traced: curl `-k --http1.1` (two requests on one connection)
/// and curl `-k --http2` (three streams on one connection): server spans with the right
/// `network.protocol.version`, method, path, route, status, k8s attributes and ports.
#[test]
fn go_https_server_http1_and_http2() {
    let srv = GoServer::https();
    let res = ResourceExpect::of(srv.pid());
    let mut sess = TraceSession::for_pid(Sink::Grpc, srv.pid());
    wait_go_tls_probes(&mut sess.tracer, srv.pid());
    let window = sess.window_start;
    let port = srv.port();
    let pod = |ns: &str, n: &str| format!("/api/v1/namespaces/{ns}/pods/{n}");
    let exp = |e: HttpExpect, t: &Transfer| {
        e.client_port(t.local_port)
            .server_port(port)
            .user_agent(CURL_USER_AGENT)
            .response_body(t.size_download)
            .request_body(0)
    };

    let (a, b) = (pod("tls1", "a"), "/status/503".to_owned());
    let r1 = curl(&["-k".to_owned(), "--http1.1".into(), srv.url(&a), srv.url(&b)]);
    assert_eq!(r1.transfers.iter().map(|t| t.code).collect::<Vec<_>>(), [200, 503]);
    assert_eq!(r1.transfers[0].local_port, r1.transfers[1].local_port, "harness: curl did not reuse its connection");
    let h1 = vec![
        exp(
            HttpExpect::server("GET", &a, 200)
                .route(pods_route())
                .k8s(K8s::new("get", "v1", "pods").ns("tls1").name("a")),
            &r1.transfers[0],
        ),
        exp(HttpExpect::server("GET", &b, 503).not_k8s(), &r1.transfers[1]),
    ];

    let (c, d, e) = (pod("tls2", "c"), "/status/404".to_owned(), "/".to_owned());
    let r2 = curl(&["-k".to_owned(), "--http2".into(), srv.url(&c), srv.url(&d), srv.url(&e)]);
    assert_eq!(r2.transfers.iter().map(|t| t.code).collect::<Vec<_>>(), [200, 404, 200]);
    let h2 = vec![
        exp(
            HttpExpect::server("GET", &c, 200)
                .route(pods_route())
                .k8s(K8s::new("get", "v1", "pods").ns("tls2").name("c")),
            &r2.transfers[0],
        ),
        exp(HttpExpect::server("GET", &d, 404).not_k8s(), &r2.transfers[1]),
        exp(HttpExpect::server("GET", &e, 200).not_k8s(), &r2.transfers[2]),
    ];

    let fin = sess.end(h1.len() + h2.len());
    let mut errs = check_h1_and_h2_server_spans(&fin.spans, &h1, &h2);
    errs.extend(check_common(&fin.spans, &res, window));
    assert_finished_ok("Go HTTPS server (stripped, Go 1.27): HTTP/1.1 and HTTP/2", errs, &fin);
}

/// Client side: the stripped Go HTTP client (waits on stdin until the tracer is attached), one
/// run with HTTP/1.1 and one with HTTP/2, three requests each on one TLS connection, back to back:
/// three client spans each, version "1.1" / "2", status, sizes, the server's port, a real client
/// port; no `TLS connection` span.
#[test]
fn go_tls_client_spans_http1_and_http2() {
    let srv = GoServer::https();
    let port = srv.port();
    let p1 = "/api/v1/namespaces/cl1/pods/h1";
    let p2 = "/api/v1/namespaces/cl2/pods/h2";
    let (u1, u2) = (srv.url(p1), srv.url(p2));
    let mut c1 = GoHttpClient::start(&["-url", &u1, "-n", "3", "-http2=false"], true);
    let mut c2 = GoHttpClient::start(&["-url", &u2, "-n", "3"], true);
    let (res1, res2) = (ResourceExpect::of(c1.pid()), ResourceExpect::of(c2.pid()));
    let pids = [c1.pid(), c2.pid()];
    let args: Vec<String> = pids.iter().flat_map(|p| ["--pid".to_owned(), p.to_string()]).collect();
    let mut sess = TraceSession::start(Sink::Json, &args, &[], &pids);
    for p in pids {
        wait_go_tls_probes(&mut sess.tracer, p);
    }
    let window = sess.window_start;
    c1.go();
    let r1 = c1.wait_success(CLIENT_TIMEOUT);
    c2.go();
    let r2 = c2.wait_success(CLIENT_TIMEOUT);
    assert!(r1.len() == 3 && r1.iter().all(|r| r.proto == "HTTP/1.1" && r.status == 200), "harness: {r1:?}");
    assert!(r2.len() == 3 && r2.iter().all(|r| r.proto == "HTTP/2.0" && r.status == 200), "harness: {r2:?}");
    let exp = |p: &str, ns: &str, name: &str, bytes: u64, ua: &str| {
        HttpExpect::client("GET", p, 200)
            .scheme("https")
            .route(pods_route())
            .k8s(K8s::new("get", "v1", "pods").ns(ns).name(name))
            .server_port(port)
            .user_agent(ua)
            .response_body(bytes)
    };
    let e1: Vec<HttpExpect> = r1.iter().map(|r| exp(p1, "cl1", "h1", r.bytes, "Go-http-client/1.1")).collect();
    let e2: Vec<HttpExpect> = r2.iter().map(|r| exp(p2, "cl2", "h2", r.bytes, "Go-http-client/2.0")).collect();
    let fin = sess.end(6);
    let of = |pid: u32| fin.spans.iter().filter(|s| s.pid() == Some(pid)).cloned().collect::<Vec<_>>();
    let (s1, s2) = (of(pids[0]), of(pids[1]));
    let mut errs = check_http_spans_version(&s1, &e1, "1.1", &|_| false);
    errs.extend(check_http_spans_version(&s2, &e2, "2", &|_| false));
    errs.extend(check_no_connection_spans(&fin.spans));
    for s in &fin.spans {
        match s.attr_i64("client.port") {
            Some(p) if p > 0 => {}
            other => errs.push(format!(
                "client span {:?} {:?}: client.port = {other:?}, expected the client's real local port",
                s.name,
                s.attr_str("url.path")
            )),
        }
    }
    errs.extend(check_common(&s1, &res1, window));
    errs.extend(check_common(&s2, &res2, window));
    assert_finished_ok("Go TLS client (stripped, Go 1.27): HTTP/1.1 and HTTP/2", errs, &fin);
}

/// Readiness: traffic right after the tracer logged `target attached` (the harness's readiness
/// line) must already be decoded — the Go TLS probes must be in place by then. Three HTTPS
/// requests (own connections) to the Go server at once after `target attached`: three HTTP/1.1
/// spans, no `TLS connection` span.
#[test]
fn go_tls_decoded_right_after_target_attached() {
    let srv = GoServer::https();
    let sess = TraceSession::for_pid(Sink::Json, srv.pid());
    let paths: Vec<String> = (0..3).map(|i| format!("/api/v1/namespaces/ready/pods/r-{i}")).collect();
    let mut exps = Vec::new();
    for p in &paths {
        let t = curl_one(&["-k".to_owned(), "--http1.1".into(), srv.url(p)]);
        assert_eq!(t.code, 200);
        exps.push(
            HttpExpect::server("GET", p, 200).route(pods_route()).client_port(t.local_port).server_port(srv.port()),
        );
    }
    let fin = sess.end(3);
    let mut errs = check_http_spans_version(&fin.spans, &exps, "1.1", &|_| false);
    errs.extend(check_no_connection_spans(&fin.spans));
    assert_finished_ok("Go TLS traffic right after `target attached`", errs, &fin);
}

/// A server whose connections are not `*net.TCPConn` (each accepted conn wrapped in a type of its
/// own, as proxy-protocol or limit listeners do): the socket under each `tls.Conn` is learned at
/// its handshake. New connections, one request each over HTTP/1.1 (the request may arrive with the
/// client's Finished and be read by the handshake, so the first Read makes no syscall), then two
/// over one HTTP/2 connection: every request has its span, and no TLS bytes went without a socket.
#[test]
fn go_tls_wrapped_connections_fd_learned_at_handshake() {
    let srv = GoServer::https_wrapped();
    let mut sess = TraceSession::for_pid(Sink::Json, srv.pid());
    wait_go_tls_probes(&mut sess.tracer, srv.pid());
    let window = sess.window_start;
    let res = ResourceExpect::of(srv.pid());
    let exp = |p: &str, t: &Transfer| {
        HttpExpect::server("GET", p, 200).route(pods_route()).client_port(t.local_port).server_port(srv.port())
    };
    let mut h1 = Vec::new();
    for i in 0..4 {
        let p = format!("/api/v1/namespaces/wrapped/pods/w-{i}");
        let t = curl_one(&["-k".to_owned(), "--http1.1".into(), srv.url(&p)]);
        assert_eq!(t.code, 200);
        h1.push(exp(&p, &t));
    }
    let paths = ["/api/v1/namespaces/wrapped/pods/h2-a", "/api/v1/namespaces/wrapped/pods/h2-b"];
    let r = curl(&["-k".to_owned(), "--http2".into(), srv.url(paths[0]), srv.url(paths[1])]);
    assert_eq!(r.transfers.iter().map(|t| t.code).collect::<Vec<_>>(), [200, 200]);
    let h2: Vec<HttpExpect> = paths.iter().zip(&r.transfers).map(|(p, t)| exp(p, t)).collect();

    let fin = sess.end(h1.len() + h2.len());
    let mut errs = check_h1_and_h2_server_spans(&fin.spans, &h1, &h2);
    errs.extend(check_common(&fin.spans, &res, window));
    errs.extend(check_zero_stats(&fin.output.stderr, &["go_tls_no_socket"]));
    assert_finished_ok("Go HTTPS server with wrapped connections", errs, &fin);
}

/// A TLS handshake names its connection's socket by the first socket syscall its goroutine makes.
/// One that fails before any (its deadline had passed) must not name a socket the goroutine uses
/// later for plain HTTP, whose bytes would then be taken for ciphertext and never decoded. The
/// Go client's main goroutine starts such a handshake, pauses 1.5 s, then writes and reads two
/// plain HTTP/1.1 requests itself, a connection each: two client spans.
#[test]
fn go_tls_failed_handshake_does_not_claim_a_later_plain_socket() {
    let srv = PythonHttpServer::start();
    let path = "/api/v1/namespaces/stale/pods/p0";
    let url = srv.url(path);
    let mut c = GoHttpClient::start(&["-url", &url, "-n", "2", "-raw", "-stale-handshake", "1500ms"], true);
    let pid = c.pid();
    let res = ResourceExpect::of(pid);
    let mut sess = TraceSession::for_pid(Sink::Json, pid);
    wait_go_tls_probes(&mut sess.tracer, pid);
    let window = sess.window_start;
    c.go();
    let r = c.wait_success(CLIENT_TIMEOUT);
    assert!(r.len() == 2 && r.iter().all(|r| r.proto == "HTTP/1.1" && r.status == 200), "harness: {r:?}");
    assert!(c.proc().stderr().contains("stale handshake failed"), "harness: {}", c.proc().describe());
    let exps: Vec<HttpExpect> = r
        .iter()
        .map(|r| {
            HttpExpect::client("GET", path, 200)
                .route(pods_route())
                .k8s(K8s::new("get", "v1", "pods").ns("stale").name("p0"))
                .server_port(srv.port())
                .user_agent("http-client-raw")
                .response_body(r.bytes)
        })
        .collect();
    sess.wait_spans(|s| s.name != "TCP connection", exps.len(), SPAN_TIMEOUT);
    let fin = sess.finish(SETTLE);
    // The syscall hooks see the handshake's connection made (the socket hooks only see I/O): a
    // connection that moved no byte. A plain connection taken for TLS has bytes.
    let silent = |s: &ReceivedSpan| {
        s.name == "TCP connection"
            && s.attr_i64("network.io.sent_bytes") == Some(0)
            && s.attr_i64("network.io.received_bytes") == Some(0)
    };
    let mut errs = check_http_spans_version(&fin.spans, &exps, "1.1", &silent);
    errs.extend(check_common(&fin.spans, &res, window));
    assert_finished_ok("plain HTTP after a TLS handshake that failed before any syscall", errs, &fin);
}

/// Responses written by one `crypto/tls.(*Conn).Write` each, at stack depths from shallow to
/// ~190 KiB in 48-byte steps, each from a fresh goroutine (a new connection per request): at some
/// depths (several in this range with Go 1.27) Write's own prologue finds the stack too small, and
/// morestack restarts Write from its entry. Every response must be reported exactly once: one
/// span per request, whose body (delimited by the connection's close) is 5 bytes, not the whole
/// response again.
#[test]
fn go_tls_write_reported_once_when_its_stack_grows() {
    let srv = GoServer::https();
    let mut sess = TraceSession::for_pid(Sink::Json, srv.pid());
    wait_go_tls_probes(&mut sess.tracer, srv.pid());
    let paths: Vec<String> = (0..4000).map(|n| format!("/deep/{n}")).collect();
    let mut args = vec!["-k".to_owned(), "--http1.1".into(), "-H".into(), "Connection: close".into()];
    args.extend(paths.iter().map(|p| srv.url(p)));
    let r = curl(&args);
    assert!(
        r.transfers.iter().all(|t| t.code == 200 && t.size_download == 5),
        "harness: every /deep/N should answer 200 with 5 bytes"
    );
    assert!(r.transfers.iter().all(|t| t.num_connects == 1), "harness: curl should open a connection per request");
    let exps: Vec<HttpExpect> = paths.iter().zip(&r.transfers).map(|(p, t)| plain_get(p, t, srv.port())).collect();
    end_go_tls_h1(sess, "Go TLS writes at every stack depth", &exps);
}

/// Connections closed and accepted at once on several threads: four curl processes make a new
/// connection per request (`Connection: close`) to the Go server, which closes each on the
/// request's goroutine while its accept loop, on another thread, takes the next one. The fd a
/// close frees is given to the next accept before the kernel has closed its socket, so the late
/// close of the fd's previous socket, and its ciphertext count, must not end the new one (that
/// showed as a request with no span and two `TLS connection` spans for one client port).
#[test]
fn go_tls_connections_closed_and_accepted_on_many_threads() {
    const CLIENTS: usize = 4;
    const REQUESTS: usize = 400;
    let srv = GoServer::https();
    let mut sess = TraceSession::for_pid(Sink::Json, srv.pid());
    wait_go_tls_probes(&mut sess.tracer, srv.pid());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut args = vec!["-k".to_owned(), "--http1.1".into(), "-H".into(), "Connection: close".into()];
            args.extend((0..REQUESTS).map(|_| srv.url("/status/200")));
            std::thread::spawn(move || curl(&args))
        })
        .collect();
    let runs: Vec<_> = clients.into_iter().map(|h| h.join().expect("curl thread")).collect();
    let transfers: Vec<_> = runs.iter().flat_map(|r| &r.transfers).collect();
    assert_eq!(transfers.len(), CLIENTS * REQUESTS, "harness: a curl run was cut short");
    assert!(
        transfers.iter().all(|t| t.code == 200 && t.num_connects == 1),
        "harness: every request should answer 200 on a connection of its own"
    );
    let exps: Vec<HttpExpect> = transfers.iter().map(|t| plain_get("/status/200", t, srv.port())).collect();
    end_go_tls_h1(sess, "Go TLS connections churned on many threads", &exps);
}

/// Bodies larger than a TLS record (16 KiB), server side: the Go server drains 300,000-byte
/// request bodies (curl, HTTP/1.1 and HTTP/2, two per connection) in Reads that each copy part
/// of a record, so one record's plaintext comes out in several probe hits. A wrong count or
/// position shows as a wrong body size, or breaks the framing of the request after it.
#[test]
fn go_tls_server_reads_bodies_larger_than_a_record() {
    const BODY: usize = 300_000;
    let srv = GoServer::https();
    let mut sess = TraceSession::for_pid(Sink::Json, srv.pid());
    wait_go_tls_probes(&mut sess.tracer, srv.pid());
    let dir = TempDir::new("tls-body");
    // Not one byte repeated: a misplaced copy would also misplace the next request's bytes.
    let body: Vec<u8> = (0..BODY).map(|i| b'a' + (i % 26) as u8).collect();
    let file = dir.write("body", &body);
    let mut expects = Vec::new();
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let paths: Vec<String> =
            ["a", "b"].iter().map(|n| format!("/api/v1/namespaces/big/pods/{n}-{version}")).collect();
        let mut args = vec!["-k".to_owned(), flag.into(), "--data-binary".into(), format!("@{}", file.display())];
        args.extend(paths.iter().map(|p| srv.url(p)));
        let r = curl(&args);
        assert!(r.transfers.iter().all(|t| t.code == 200), "harness: {:?}", r.transfers);
        assert_eq!(r.transfers[0].local_port, r.transfers[1].local_port, "harness: curl did not reuse its connection");
        let exps: Vec<HttpExpect> = paths
            .iter()
            .zip(&r.transfers)
            .map(|(p, t)| {
                HttpExpect::server("POST", p, 200)
                    .route(pods_route())
                    .client_port(t.local_port)
                    .server_port(srv.port())
                    .request_body(BODY as u64)
                    .response_body(t.size_download)
            })
            .collect();
        expects.push(exps);
    }
    let fin = sess.end(4);
    let mut errs = check_h1_and_h2_server_spans(&fin.spans, &expects[0], &expects[1]);
    errs.extend(check_zero_stats(&fin.output.stderr, &GO_TLS_CLEAN));
    assert_finished_ok("Go HTTPS server reading 300,000-byte bodies", errs, &fin);
}

/// Bodies larger than a TLS record, client side: the Go client reads 1,000,000-byte responses
/// (HTTP/1.1 and HTTP/2, three per connection) through bufio in Reads of a few KiB, each a part
/// of a record.
#[test]
fn go_tls_client_reads_bodies_larger_than_a_record() {
    const BODY: u64 = 1_000_000;
    let srv = GoServer::https();
    let path = format!("/bytes/{BODY}");
    let url = srv.url(&path);
    let mut c1 = GoHttpClient::start(&["-url", &url, "-n", "3", "-http2=false"], true);
    let mut c2 = GoHttpClient::start(&["-url", &url, "-n", "3"], true);
    let pids = [c1.pid(), c2.pid()];
    let args: Vec<String> = pids.iter().flat_map(|p| ["--pid".to_owned(), p.to_string()]).collect();
    let mut sess = TraceSession::start(Sink::Json, &args, &[], &pids);
    for p in pids {
        wait_go_tls_probes(&mut sess.tracer, p);
    }
    c1.go();
    let r1 = c1.wait_success(CLIENT_TIMEOUT);
    c2.go();
    let r2 = c2.wait_success(CLIENT_TIMEOUT);
    for (r, proto) in [(&r1, "HTTP/1.1"), (&r2, "HTTP/2.0")] {
        assert!(
            r.len() == 3 && r.iter().all(|r| r.proto == proto && r.status == 200 && r.bytes == BODY),
            "harness: {r:?}"
        );
    }
    let exps = || vec![HttpExpect::client("GET", &path, 200).not_k8s().server_port(srv.port()).response_body(BODY); 3];
    let fin = sess.end(6);
    let of = |pid: u32| fin.spans.iter().filter(|s| s.pid() == Some(pid)).cloned().collect::<Vec<_>>();
    let mut errs = check_http_spans_version(&of(pids[0]), &exps(), "1.1", &|_| false);
    errs.extend(check_http_spans_version(&of(pids[1]), &exps(), "2", &|_| false));
    errs.extend(check_no_connection_spans(&fin.spans));
    errs.extend(check_zero_stats(&fin.output.stderr, &GO_TLS_CLEAN));
    assert_finished_ok("Go TLS client reading 1,000,000-byte bodies", errs, &fin);
}

/// HTTP/2 clients that leave with streams in flight: h2load (nghttp2) runs for 2 s on 4
/// connections × 16 streams, then closes its connections with answers unread, which the kernel
/// turns into resets while the Go server is still answering. The server's Writes after a reset
/// go to a connection whose socket the probes saw close: none may count as a TLS call without a
/// socket (a counter of plaintext the tracer lost), and every answer h2load got has its span.
/// Plain and wrapped connections (the wrapped ones are learned at their handshake).
#[test]
fn go_tls_h2_clients_leaving_mid_stream() {
    let h2load = require_tool("h2load", "nghttp2-client");
    for srv in [GoServer::https(), GoServer::https_wrapped()] {
        // h2load's ~18k requests/s outrun this test's reading of the JSON lines at times: a
        // queue for all of them, so that what is checked is the decoding, not the reader's pace
        // (the tracer drops and counts what does not fit, by design).
        let pid = srv.pid();
        let mut sess = TraceSession::start(
            Sink::Json,
            &["--pid".to_owned(), pid.to_string()],
            &["--export-queue", "200000"],
            &[pid],
        );
        wait_go_tls_probes(&mut sess.tracer, srv.pid());
        let path = "/api/v1/namespaces/h2load/pods/p";
        let out = std::process::Command::new(&h2load)
            .args(["-t1", "-c4", "-m16", "-D", "2"])
            .arg(srv.url(path))
            .output()
            .expect("run h2load");
        let text = String::from_utf8_lossy(&out.stdout);
        // "requests: 9000 total, 9064 started, 9000 done, 9000 succeeded, 0 failed, ..."
        let succeeded: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("requests: "))
            .and_then(|l| l.split(", ").find_map(|p| p.strip_suffix(" succeeded")?.parse().ok()))
            .unwrap_or_else(|| panic!("harness: no succeeded count in h2load's output: {text}"));
        assert!(out.status.success() && succeeded > 100, "harness: h2load: {text}");
        let is_answer = |s: &ReceivedSpan| {
            s.attr_str("url.path") == Some(path) && s.attr_i64("http.response.status_code") == Some(200)
        };
        sess.wait_spans(is_answer, succeeded, SPAN_TIMEOUT);
        let fin = sess.finish(SETTLE);
        let answered = fin.spans.iter().filter(|s| is_answer(s)).count();
        let mut errs = check_zero_stats(&fin.output.stderr, &["go_tls_no_socket", "desyncs"]);
        if answered < succeeded {
            errs.push(format!("{answered} spans with status 200 for {succeeded} answers h2load got"));
        }
        errs.extend(check_no_connection_spans(&fin.spans));
        assert_finished_ok("Go HTTPS server, HTTP/2 clients leaving mid-stream", errs, &fin);
    }
}

/// `--empty-probes`, the floor the bench measures: the tracer attaches the very hooks of a normal
/// run, the Go TLS uprobes included, but every program returns at once, so the same traffic gives
/// no event and no span. A normal run on the same target, with the same requests, gives its span.
#[test]
fn empty_probes_attach_the_same_hooks_and_trace_nothing() {
    let srv = GoServer::https();
    let path = "/api/v1/namespaces/floor/pods/a";
    let run = |extra: &[&str]| {
        let mut sess =
            TraceSession::start(Sink::Json, &["--pid".to_owned(), srv.pid().to_string()], extra, &[srv.pid()]);
        wait_go_tls_probes(&mut sess.tracer, srv.pid());
        let links = bpf_links(sess.tracer.pid());
        let t = curl_one(&["-k".to_owned(), "--http1.1".into(), srv.url(path)]);
        assert_eq!(t.code, 200, "harness: {path} answered {}", t.code);
        if extra.is_empty() {
            sess.wait_spans(|s| s.attr_str("url.path") == Some(path), 1, SPAN_TIMEOUT);
        }
        // Longer than the agent's slowest poll of the ring (50 ms).
        (links, sess.finish(Duration::from_millis(1500)))
    };
    let (empty_links, empty) = run(&["--empty-probes"]);
    let (links, normal) = run(&[]);

    let mut errs = Vec::new();
    // The socket hooks (sock_send_length and sock_recv_length, or sys_enter and sys_exit in the
    // syscall-hook pass) and the Go TLS uprobes.
    let raw = links.iter().filter(|l| l.contains("link_type:raw_tracepoint")).count();
    if raw != 2 || !links.iter().any(|l| l.contains("event_type:uprobe")) {
        errs.push(format!("a normal run should hold 2 raw tracepoint links and uprobe links: {links:?}"));
    }
    if empty_links != links {
        errs.push(format!("--empty-probes attached other hooks than a normal run:\n  {empty_links:?}\n  {links:?}"));
    }
    if !empty.output.stderr.contains("--empty-probes: every probe returns at once") {
        errs.push("--empty-probes did not say that nothing will be traced".into());
    }
    let stats = final_stats(&empty.output.stderr);
    if stats.get("events") != Some(&0) {
        errs.push(format!(
            "--empty-probes: the probes sent events: {}",
            final_stats_line(&empty.output.stderr).unwrap_or_default()
        ));
    }
    if !empty.spans.is_empty() {
        errs.push(format!("--empty-probes gave {} spans", empty.spans.len()));
    }
    if !normal.spans.iter().any(|s| s.attr_str("url.path") == Some(path)) {
        errs.push(format!("the normal run gave no span for {path}"));
    }
    assert_finished_ok("--empty-probes against a normal run", errs, &normal);
}
