//! etcd over TLS with client certificates: etcdctl and curl against the server, etcdctl as a
//! traced client, and a gRPC connection the tracer joins mid-way.

use std::time::Duration;

use super::common::{NEVER, client_local_port};
use integration_tests::check::{HttpExpect, ResourceExpect, check_common};
use integration_tests::ending::{assert_finished_ok, assert_session_ok};
use integration_tests::etcd::{Etcd, EtcdExpect, EtcdTls, GrpcClient, check_etcd_spans, check_mid_stream};
use integration_tests::gotls::{check_http_spans_version, check_no_connection_spans, wait_go_tls_probes};
use integration_tests::procs::CURL_USER_AGENT;
use integration_tests::tracer_log::final_stats_line;
use integration_tests::*;
use serde_json::json;

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
        sv(EtcdExpect::kv("server", "Txn", "/registry/secrets/kube-system/tok")).txn(1, 1, 0, true),
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
        "[etcd gRPC mid-connection, TLS] {}\n{}",
        m.summary(),
        final_stats_line(&fin.output.stderr).unwrap_or_default()
    );
    errs.extend(check_no_connection_spans(&fin.spans));
    assert_session_ok("etcd gRPC over TLS joined mid-way", errs, &fin, &[NEVER[3]]);
}
