//! Go crypto/tls plaintext (uprobes on stripped Go binaries): etcd 3.4 (Go 1.19) with TLS and
//! client-certificate auth, the Go 1.27 HTTPS server and HTTP client of `tests/go`, etcdctl over
//! TLS. The tracer must decode the plaintext: spans like without TLS, and no `TLS connection` (nor
//! `TCP connection`) span for those connections. Includes connections established before the
//! tracer started and reused after.

use std::time::{Duration, Instant};

use integration_tests::check::{HttpExpect, K8s, ResourceExpect, check_common};
use integration_tests::ending::{assert_finished_ok, assert_session_ok};
use integration_tests::etcd::{Etcd, EtcdExpect, EtcdTls, GrpcClient, check_etcd_spans, check_mid_stream};
use integration_tests::gotls::{
    GoHttpClient, GoServer, check_http_span_version, check_http_spans_version, check_mid_http,
    check_no_connection_spans, wait_go_tls_probes,
};
use integration_tests::procs::CURL_USER_AGENT;
use integration_tests::tracer::bpf_links;
use integration_tests::tracer_log::{check_zero_stats, final_stats, final_stats_line};
use integration_tests::*;
use serde_json::json;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(25);

const NEVER: [&str; 4] = [
    "itest-tls-never-value-1a2b",
    "itest-tls-never-value-3c4d",
    "itest-tls-never-value-5e6f",
    "itest-tls-never-value-7a8b",
];

/// The HTTP/1.1 spans against `h1`, the HTTP/2 ones against `h2`, and no connection left
/// undecoded.
fn check_h1_and_h2_server_spans(spans: &[ReceivedSpan], h1: &[HttpExpect], h2: &[HttpExpect]) -> Vec<String> {
    let is_h1 = |s: &ReceivedSpan| s.attr_str("network.protocol.version") == Some("1.1");
    let s1: Vec<ReceivedSpan> = spans.iter().filter(|s| is_h1(s)).cloned().collect();
    let s2: Vec<ReceivedSpan> = spans.iter().filter(|s| !is_h1(s)).cloned().collect();
    let mut errs = check_http_spans_version(&s1, h1, "1.1", &|_| false);
    errs.extend(check_http_spans_version(&s2, h2, "2", &|_| false));
    errs.extend(check_no_connection_spans(spans));
    errs
}

fn pods_route() -> &'static str {
    "/api/v1/namespaces/{namespace}/pods/{name}"
}

/// etcd with TLS and `--client-cert-auth` traced; etcdctl with a client certificate: put,
/// get --prefix, txn and watch give the same etcd spans as in plain text (keys, counts, txn
/// shape, watch reported when created), and no connection is left undecoded.
#[test]
fn etcd_mtls_etcdctl_server_spans() {
    let etcd = Etcd::start_with(EtcdTls::Mutual);
    let res = ResourceExpect::of(etcd.pid());
    let mut sess = TraceSession::for_pid(Sink::Json, etcd.pid());
    wait_go_tls_probes(&mut sess.tracer, etcd.pid());
    let window = sess.window_start;
    let port = etcd.port();

    etcd.ctl(&["put", "/registry/secrets/kube-system/tok", NEVER[0]]);
    etcd.ctl(&["put", "/registry/secrets/kube-system/tok2", NEVER[1]]);
    etcd.ctl(&["get", "--prefix", "/registry/secrets/kube-system/"]);
    let txn = format!(
        "mod(\"/registry/secrets/kube-system/tok\") > \"0\"\n\nput /registry/secrets/kube-system/tok {}\n\n\n",
        NEVER[2]
    );
    let out = etcd.ctl_in(&["txn", "--interactive=false"], Some(&txn));
    assert!(out.starts_with("SUCCESS"), "harness: the txn should succeed: {out:?}");
    let mut watcher = etcd.ctl_spawn(&["watch", "/registry/secrets/kube-system/tok2"]);
    sess.wait_spans(|s| s.attr_str("rpc.method") == Some("Watch"), 1, SPAN_TIMEOUT);
    watcher.assert_running();
    watcher.kill();

    let sv = |e: EtcdExpect| e.server_port(port);
    let exps = vec![
        sv(EtcdExpect::kv("server", "Put", "/registry/secrets/kube-system/tok")),
        sv(EtcdExpect::kv("server", "Put", "/registry/secrets/kube-system/tok2")),
        sv(EtcdExpect::kv("server", "Range", "/registry/secrets/kube-system/"))
            .attr("etcd.prefix", json!(true))
            .attr("etcd.response.count", json!(2))
            .attr("etcd.response.kvs", json!(2)),
        sv(EtcdExpect::kv("server", "Txn", "/registry/secrets/kube-system/tok"))
            .attr("etcd.txn.compares", json!(1))
            .attr("etcd.txn.success_ops", json!(1))
            .attr("etcd.txn.failure_ops", json!(0))
            .attr("etcd.txn.succeeded", json!(true)),
        sv(EtcdExpect::new("server", "etcdserverpb.Watch", "Watch").key("/registry/secrets/kube-system/tok2"))
            .grpc_status(None)
            .attr("etcd.watch.created", json!(true)),
    ];
    std::thread::sleep(Duration::from_millis(300));
    let fin = sess.finish(SETTLE);
    let mut errs = check_etcd_spans(&fin.spans, &exps, &|_| false);
    errs.extend(check_no_connection_spans(&fin.spans));
    errs.extend(check_common(&fin.spans, &res, window));
    assert_session_ok("etcd with TLS + client certs, etcdctl (server side)", errs, &fin, &NEVER);
}

/// etcd's HTTP endpoints over TLS with a client certificate: curl `--http1.1` to /version and
/// /health (two requests on one connection, then one more on its own) give HTTP/1.1 server spans
/// `GET /version` / `GET /health`.
#[test]
fn etcd_mtls_http1_endpoints_with_curl() {
    let etcd = Etcd::start_with(EtcdTls::Mutual);
    let res = ResourceExpect::of(etcd.pid());
    let certs = etcd.certs().unwrap().clone();
    let mut sess = TraceSession::for_pid(Sink::Json, etcd.pid());
    wait_go_tls_probes(&mut sess.tracer, etcd.pid());
    let window = sess.window_start;
    let port = etcd.port();
    let mut args = certs.curl_args();
    args.insert(0, "--http1.1".into());
    let mut a = args.clone();
    a.extend([etcd.url("/version"), etcd.url("/health")]);
    let run = curl(&a);
    let mut b = args.clone();
    b.push(etcd.url("/version"));
    let one = curl_one(&b);
    let mut exps = Vec::new();
    for (path, t) in [("/version", &run.transfers[0]), ("/health", &run.transfers[1]), ("/version", &one)] {
        assert_eq!(t.code, 200, "harness: {path} answered {}", t.code);
        exps.push(
            HttpExpect::server("GET", path, 200)
                .scheme("https")
                .route(path)
                .not_k8s()
                .client_port(t.local_port)
                .server_port(port)
                .user_agent(CURL_USER_AGENT)
                .response_body(t.size_download)
                .max_duration(t.time_total),
        );
    }
    let fin = sess.end(exps.len());
    let mut errs = check_http_spans_version(&fin.spans, &exps, "1.1", &|_| false);
    errs.extend(check_no_connection_spans(&fin.spans));
    errs.extend(check_common(&fin.spans, &res, window));
    assert_finished_ok("etcd /version and /health over TLS (HTTP/1.1)", errs, &fin);
}

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

/// Client side over TLS: a shell is traced, then execs etcdctl with client certificates (same
/// pid, new image: the Go TLS probes must be attached to the new image before it talks): a
/// client span `etcd Put configmaps`, no `TLS connection` span.
#[test]
fn etcdctl_tls_client_interactive_txn_after_attach() {
    // etcdctl `txn -i` connects (mTLS handshake, HTTP/2 set-up) and then waits for the
    // transaction on stdin: the call is made on a TLS connection opened before the tracer
    // attached, by a stripped Go 1.19 client whose uprobes are in place by then.
    let etcd = Etcd::start_with(EtcdTls::Mutual);
    let port = etcd.port();
    let key = "/registry/configmaps/kube-system/tls-c1";
    let argv = etcd.ctl_argv(&["txn", "-i"]);
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env("ETCDCTL_API", "3")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start etcdctl txn -i");
    let pid = child.id();
    // Let it connect before the tracer exists.
    client_local_port(pid, port);
    let mut sess = TraceSession::for_pid(Sink::Json, pid);
    integration_tests::gotls::wait_go_tls_probes(&mut sess.tracer, pid);
    let window = sess.window_start;
    {
        use std::io::Write;
        let input = format!("create(\"{key}\") = \"0\"\n\nput {key} {}\n\n\n", NEVER[3]);
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write the transaction");
    }
    let out = child.wait_with_output().expect("etcdctl txn");
    assert!(out.status.success(), "etcdctl txn -i failed: {}", String::from_utf8_lossy(&out.stderr));
    sess.wait_spans(|s| s.name.starts_with("etcd Txn"), 1, SPAN_TIMEOUT);
    let fin = sess.finish(SETTLE);
    let txns: Vec<_> = fin.spans.iter().filter(|s| s.name.starts_with("etcd Txn")).collect();
    let mut errs = Vec::new();
    if txns.len() != 1 {
        errs.push(format!("expected exactly one `etcd Txn` span, got {}", txns.len()));
    }
    for s in &txns {
        for (k, want) in [
            ("rpc.method", "Txn"),
            ("db.system.name", "etcd"),
            ("etcd.key", key),
            ("k8s.resource", "configmaps"),
            ("k8s.namespace.name", "kube-system"),
        ] {
            if s.attr_str(k) != Some(want) {
                errs.push(format!("{k} = {:?}, want {want:?}", s.attr_str(k)));
            }
        }
        if s.kind != "client" || s.attr_i64("server.port") != Some(i64::from(port)) {
            errs.push(format!(
                "kind {} server.port {:?}: want a client span to port {port}",
                s.kind,
                s.attr_i64("server.port")
            ));
        }
        if s.attr_i64("rpc.grpc.status_code") != Some(0) || s.attr_bool("etcd.txn.succeeded") != Some(true) {
            errs.push(format!(
                "status {:?} succeeded {:?}",
                s.attr_i64("rpc.grpc.status_code"),
                s.attr_bool("etcd.txn.succeeded")
            ));
        }
    }
    errs.extend(check_no_connection_spans(&fin.spans));
    let res = ResourceExpect { pid, comm: "etcdctl".into(), exe: "etcdctl".into(), host: hostname() };
    errs.extend(check_common(&fin.spans, &res, window));
    assert_session_ok("etcdctl txn -i over mTLS, connection opened before attach (client side)", errs, &fin, &NEVER);
}

/// The local port of `client_pid`'s established connection to `server_port`.
fn client_local_port(client_pid: u32, server_port: u16) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((l, _)) = tcp_connections_of(client_pid).into_iter().find(|(_, r)| *r == server_port) {
            return l;
        }
        assert!(Instant::now() < deadline, "harness: no connection of pid {client_pid} to port {server_port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
        final_stats_line(&fin.output.stderr)
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
    let conn: Vec<ReceivedSpan> = fin
        .spans
        .iter()
        .filter(|s| s.attr_i64("client.port") == Some(i64::from(lp)) || s.name == "unknown")
        .cloned()
        .collect();
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
        final_stats_line(&fin.output.stderr)
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
        final_stats_line(&fin.output.stderr)
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

/// etcd over TLS (client certs) joined mid-way: the grpcio client (BoringSSL; the server side is
/// Go crypto/tls) makes 30 calls, the tracer attaches to etcd, then 200 calls with distinct keys
/// and per-call deadlines: like in plain text, every named span is right, at most 100 unknown, the
/// last 100 named, no `TLS connection` span; at most one call without a span (the TLS read in
/// flight when the probes were attached cannot be seen: its entry probe never ran).
#[test]
fn etcd_tls_mid_connection_grpc_warms_up_without_wrong_names() {
    let etcd = Etcd::start_with(EtcdTls::Mutual);
    let ns = unique_name("tls");
    let mut client = GrpcClient::start(&etcd, &ns, NEVER[3], 30, 200, true);
    let mut sess = TraceSession::for_pid(Sink::Json, etcd.pid());
    wait_go_tls_probes(&mut sess.tracer, etcd.pid());
    client.go();
    let calls = client.wait_done(Duration::from_secs(60));
    sess.wait_spans(|s| s.attr_i64("server.port") == Some(i64::from(etcd.port())), 200, SPAN_TIMEOUT);
    let fin = sess.finish(SETTLE);
    client.finish();
    let (m, mut errs) = check_mid_stream(&fin.spans, &calls, etcd.port(), 100, 100, 1);
    eprintln!(
        "[etcd gRPC mid-connection, TLS] {} calls after attach: {} unknown, {} named right, first named call #{:?}, last unnamed call #{:?}\n{}",
        m.calls,
        m.unknown,
        m.named_right,
        m.first_named,
        m.last_unnamed,
        final_stats_line(&fin.output.stderr)
    );
    errs.extend(check_no_connection_spans(&fin.spans));
    assert_session_ok("etcd gRPC over TLS joined mid-way", errs, &fin, &[NEVER[3]]);
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
    let exps: Vec<HttpExpect> = paths
        .iter()
        .zip(&r.transfers)
        .map(|(p, t)| {
            HttpExpect::server("GET", p, 200)
                .not_k8s()
                .client_port(t.local_port)
                .server_port(srv.port())
                .response_body(t.size_download)
        })
        .collect();
    let fin = sess.end(exps.len());
    let mut errs = check_http_spans_version(&fin.spans, &exps, "1.1", &|_| false);
    errs.extend(check_no_connection_spans(&fin.spans));
    errs.extend(check_zero_stats(&fin.output.stderr, &["desyncs", "go_tls_no_socket"]));
    assert_finished_ok("Go TLS writes at every stack depth", errs, &fin);
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
    let exps: Vec<HttpExpect> = transfers
        .iter()
        .map(|t| {
            HttpExpect::server("GET", "/status/200", 200)
                .not_k8s()
                .client_port(t.local_port)
                .server_port(srv.port())
                .response_body(t.size_download)
        })
        .collect();
    let fin = sess.end(exps.len());
    let mut errs = check_http_spans_version(&fin.spans, &exps, "1.1", &|_| false);
    errs.extend(check_no_connection_spans(&fin.spans));
    errs.extend(check_zero_stats(&fin.output.stderr, &["desyncs", "go_tls_no_socket"]));
    assert_finished_ok("Go TLS connections churned on many threads", errs, &fin);
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
    errs.extend(check_zero_stats(&fin.output.stderr, &["desyncs", "go_tls_no_socket"]));
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
    errs.extend(check_zero_stats(&fin.output.stderr, &["desyncs", "go_tls_no_socket"]));
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
        errs.push(format!("--empty-probes: the probes sent events: {}", final_stats_line(&empty.output.stderr)));
    }
    if !empty.spans.is_empty() {
        errs.push(format!("--empty-probes gave {} spans", empty.spans.len()));
    }
    if !normal.spans.iter().any(|s| s.attr_str("url.path") == Some(path)) {
        errs.push(format!("the normal run gave no span for {path}"));
    }
    assert_finished_ok("--empty-probes against a normal run", errs, &normal);
}
