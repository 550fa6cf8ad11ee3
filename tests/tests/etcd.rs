//! etcd v3 (gRPC over HTTP/2) integration tests of the tracer binary against a real etcd 3.4
//! (Debian's, a stripped Go 1.19 binary) and real clients (etcdctl, python grpcio), plain text.
//! TLS variants are in tls.rs. Each test has its own etcd and its own tracer.

use std::time::Duration;

use integration_tests::check::{ResourceExpect, check_common};
use integration_tests::ending::assert_session_ok;
use integration_tests::etcd::{
    Etcd, EtcdExpect, ExecTarget, GrpcClient, check_etcd_spans, check_mid_stream, parse_lease_grant,
};
use integration_tests::tracer_log::final_stats_line;
use integration_tests::*;
use serde_json::{Value, json};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(25);

/// Values written to etcd: they must appear nowhere in the tracer's output.
const NEVER: [&str; 5] = [
    "itest-never-value-alpha-7f3a",
    "itest-never-value-bravo-19c2",
    "itest-never-value-charlie-44e1",
    "itest-never-value-delta-b0d9",
    "itest-never-value-echo-62aa",
];

fn no_extra(_: &ReceivedSpan) -> bool {
    false
}

/// Put, Get, Get --prefix, Get --limit, Get --rev, Del and Txn by etcdctl (one connection each):
/// one server span each, named `etcd <Op> <resource>`, with the request's key, options and the
/// response's counts; over OTLP/gRPC. Values (and the Txn's compare value) are never exported.
#[test]
fn kv_operations_give_server_spans() {
    let etcd = Etcd::start();
    let res = ResourceExpect::of(etcd.pid());
    let sess = TraceSession::for_pid(Sink::Grpc, etcd.pid());
    let window = sess.window_start;
    let port = etcd.port();
    let sv = |e: EtcdExpect| e.server_port(port);

    etcd.ctl(&["put", "/registry/pods/default/web-0", NEVER[0]]);
    etcd.ctl(&["put", "/registry/pods/default/web-1", NEVER[1]]);
    etcd.ctl(&["put", "/registry/nodes/node-a", NEVER[2]]);
    let got = etcd.ctl(&["get", "/registry/nodes/node-a", "-w", "json"]);
    let v: Value = serde_json::from_str(got.trim()).expect("etcdctl get -w json");
    let mod_rev = v["kvs"][0]["mod_revision"].as_i64().expect("mod_revision");
    etcd.ctl(&["get", "/registry/pods/default/web-0"]);
    etcd.ctl(&["get", "--prefix", "/registry/pods/default/"]);
    etcd.ctl(&["get", "--prefix", "--limit=1", "/registry/pods/"]);
    etcd.ctl(&["get", &format!("--rev={mod_rev}"), "/registry/nodes/node-a"]);
    etcd.ctl(&["del", "/registry/pods/default/web-1"]);
    let txn = format!(
        "value(\"/registry/pods/default/web-0\") = \"{}\"\n\nput /registry/pods/default/web-0 {}\n\nget /registry/pods/default/web-0\n\n",
        NEVER[0], NEVER[3]
    );
    let out = etcd.ctl_in(&["txn", "--interactive=false"], Some(&txn));
    assert!(out.starts_with("SUCCESS"), "harness: the txn should succeed: {out:?}");

    let exps = vec![
        sv(EtcdExpect::kv("server", "Put", "/registry/pods/default/web-0")).absent("etcd.lease.id").label("first put"),
        sv(EtcdExpect::kv("server", "Put", "/registry/pods/default/web-1")),
        sv(EtcdExpect::kv("server", "Put", "/registry/nodes/node-a")),
        sv(EtcdExpect::kv("server", "Range", "/registry/pods/default/web-0"))
            .attr("etcd.response.count", json!(1))
            .attr("etcd.response.kvs", json!(1))
            .absent("etcd.prefix")
            .absent("etcd.range_end")
            .absent("etcd.revision")
            .absent("etcd.limit"),
        sv(EtcdExpect::kv("server", "Range", "/registry/pods/default/"))
            .attr("etcd.prefix", json!(true))
            .attr("etcd.range_end", json!("/registry/pods/default0"))
            .attr("etcd.response.count", json!(2))
            .attr("etcd.response.kvs", json!(2))
            .absent("etcd.limit"),
        sv(EtcdExpect::kv("server", "Range", "/registry/pods/"))
            .attr("etcd.prefix", json!(true))
            .attr("etcd.range_end", json!("/registry/pods0"))
            .attr("etcd.limit", json!(1))
            .attr("etcd.response.count", json!(2))
            .attr("etcd.response.kvs", json!(1))
            .attr("etcd.response.more", json!(true)),
        sv(EtcdExpect::kv("server", "Range", "/registry/nodes/node-a"))
            .attr("etcd.response.count", json!(1))
            .attr("etcd.response.kvs", json!(1))
            .absent("etcd.revision")
            .label("get -w json"),
        sv(EtcdExpect::kv("server", "Range", "/registry/nodes/node-a"))
            .attr("etcd.revision", json!(mod_rev))
            .attr("etcd.response.count", json!(1))
            .attr("etcd.response.kvs", json!(1))
            .label("get --rev"),
        sv(EtcdExpect::kv("server", "DeleteRange", "/registry/pods/default/web-1"))
            .attr("etcd.response.deleted", json!(1)),
        sv(EtcdExpect::kv("server", "Txn", "/registry/pods/default/web-0")).txn(1, 1, 1, true),
    ];
    let fin = sess.end(exps.len());
    let mut errs = check_etcd_spans(&fin.spans, &exps, &no_extra);
    errs.extend(check_common(&fin.spans, &res, window));
    assert_session_ok("etcd KV operations (server side)", errs, &fin, &NEVER);
}

/// `etcdctl watch --prefix`: the Watch stream is reported once, when the watch is created (while
/// the watcher is still running), with the watched range, the watch id and no gRPC status (the
/// stream has not ended); an event on the watched range and the watcher's exit add no span.
#[test]
fn watch_is_reported_when_created() {
    let etcd = Etcd::start();
    let res = ResourceExpect::of(etcd.pid());
    let mut sess = TraceSession::for_pid(Sink::Json, etcd.pid());
    let window = sess.window_start;
    let port = etcd.port();

    let mut watcher = etcd.ctl_spawn(&["watch", "--prefix", "/registry/configmaps/kube-system/"]);
    let watch_spans = sess.wait_spans(|s| s.attr_str("rpc.method") == Some("Watch"), 1, SPAN_TIMEOUT);
    watcher.assert_running();
    assert!(
        !watch_spans.is_empty(),
        "no Watch span while the watch is open (it must be reported when created)\n{}\n{}",
        dump(&sess.spans()),
        sess.tracer.stderr()
    );
    etcd.ctl(&["put", "/registry/configmaps/kube-system/cm-1", NEVER[4]]);
    watcher.wait_stdout_line(
        "the watch event",
        |l| l.contains("/registry/configmaps/kube-system/cm-1"),
        CLIENT_TIMEOUT,
    );
    watcher.kill();

    let exps = vec![
        EtcdExpect::new("server", "etcdserverpb.Watch", "Watch")
            .key("/registry/configmaps/kube-system/")
            .server_port(port)
            .grpc_status(None)
            .attr("etcd.prefix", json!(true))
            .attr("etcd.range_end", json!("/registry/configmaps/kube-system0"))
            .attr("etcd.watch.kind", json!("create"))
            .attr("etcd.watch.created", json!(true))
            .attr("etcd.watch.id", json!(0)),
        EtcdExpect::kv("server", "Put", "/registry/configmaps/kube-system/cm-1").server_port(port),
    ];
    std::thread::sleep(Duration::from_millis(500));
    let fin = sess.finish(SETTLE);
    let mut errs = check_etcd_spans(&fin.spans, &exps, &no_extra);
    errs.extend(check_common(&fin.spans, &res, window));
    assert_session_ok("etcd watch (server side)", errs, &fin, &NEVER);
}

/// Lease grant, a keep-alive (a stream: reported at its first answer), a put with the lease,
/// revoke, then a put with the revoked lease, which fails (`requested lease not found`, gRPC
/// NotFound): that span has status error, code 5 and the server's message.
#[test]
fn lease_lifecycle_and_a_failing_call() {
    let etcd = Etcd::start();
    let res = ResourceExpect::of(etcd.pid());
    let sess = TraceSession::for_pid(Sink::Json, etcd.pid());
    let window = sess.window_start;
    let port = etcd.port();

    let id = parse_lease_grant(&etcd.ctl(&["lease", "grant", "60"]));
    let hex = format!("{:x}", id as u64);
    etcd.ctl(&["lease", "keep-alive", "--once", &hex]);
    etcd.ctl(&["put", &format!("--lease={hex}"), "/registry/leases/kube-system/lock", NEVER[0]]);
    etcd.ctl(&["lease", "revoke", &hex]);
    let err = etcd.ctl_fail(&["put", &format!("--lease={hex}"), "/registry/leases/kube-system/late", NEVER[1]]);
    assert!(err.contains("requested lease not found"), "harness: unexpected etcdctl error: {err}");

    let lease = |op: &str| {
        EtcdExpect::new("server", "etcdserverpb.Lease", op).server_port(port).attr("etcd.lease.id", json!(id))
    };
    let exps = vec![
        lease("LeaseGrant").attr("etcd.lease.ttl", json!(60)).attr("etcd.response.ttl", json!(60)),
        lease("LeaseKeepAlive").grpc_status(None).attr("etcd.response.ttl", json!(60)),
        lease("LeaseRevoke"),
        EtcdExpect::kv("server", "Put", "/registry/leases/kube-system/lock")
            .server_port(port)
            .attr("etcd.lease.id", json!(id)),
        EtcdExpect::kv("server", "Put", "/registry/leases/kube-system/late")
            .server_port(port)
            .attr("etcd.lease.id", json!(id))
            .error(5, "requested lease not found"),
    ];
    let fin = sess.end(exps.len());
    let mut errs = check_etcd_spans(&fin.spans, &exps, &no_extra);
    errs.extend(check_common(&fin.spans, &res, window));
    assert_session_ok("etcd leases and a failing call (server side)", errs, &fin, &NEVER);
}

/// Client side: a shell is traced, then execs etcdctl (same pid, new image): `put` and
/// `get --prefix` give client spans `etcd Put configmaps` / `etcd Range configmaps` with the
/// server port of etcd and the resource of the new image (service.name etcdctl).
#[test]
fn client_spans_of_etcdctl_exec_after_attach() {
    let etcd = Etcd::start();
    let port = etcd.port();
    let key = "/registry/configmaps/kube-system/c1";
    let mut put = ExecTarget::start(&etcd.ctl_argv(&["put", key, NEVER[2]]), &[("ETCDCTL_API", "3")]);
    let mut get = ExecTarget::start(
        &etcd.ctl_argv(&["get", "--prefix", "/registry/configmaps/kube-system/"]),
        &[("ETCDCTL_API", "3")],
    );
    let pids = [put.pid(), get.pid()];
    let args: Vec<String> = pids.iter().flat_map(|p| ["--pid".to_owned(), p.to_string()]).collect();
    let sess = TraceSession::start(Sink::Json, &args, &[], &pids);
    let window = sess.window_start;
    put.go();
    put.wait_success(CLIENT_TIMEOUT);
    get.go();
    let out = get.wait_success(CLIENT_TIMEOUT);
    assert!(out.contains(NEVER[2]), "harness: etcdctl get did not return the value: {out:?}");

    let exps = vec![
        EtcdExpect::kv("client", "Put", key).server_port(port),
        EtcdExpect::kv("client", "Range", "/registry/configmaps/kube-system/")
            .server_port(port)
            .attr("etcd.prefix", json!(true))
            .attr("etcd.response.count", json!(1))
            .attr("etcd.response.kvs", json!(1)),
    ];
    let fin = sess.end(exps.len());
    let mut errs = check_etcd_spans(&fin.spans, &exps, &no_extra);
    for (pid, e) in pids.iter().zip(&exps) {
        let mine: Vec<ReceivedSpan> = fin.spans.iter().filter(|s| e.identifies(s)).cloned().collect();
        let res = ResourceExpect { pid: *pid, comm: "etcdctl".into(), exe: "etcdctl".into(), host: hostname() };
        errs.extend(check_common(&mine, &res, window));
    }
    assert_session_ok("etcdctl exec'd after attach (client side)", errs, &fin, &NEVER);
}

/// Mid-connection: one grpcio channel (one HTTP/2 connection) makes 30 calls, then the tracer
/// attaches to etcd, then 200 more calls with distinct keys (Put/Range alternating, per-call
/// deadlines like the apiserver's). The HPACK table of the connection was filled before attach:
/// spans whose `:path` is not resolvable yet are `unknown`, never guessed. Every named span is
/// exactly right for its call, none belongs to a warm-up call, there is one span per call, at most
/// 100 are unknown and the last 100 calls are all named.
#[test]
fn mid_connection_grpc_warms_up_without_wrong_names() {
    let etcd = Etcd::start();
    let ns = unique_name("mid");
    let mut client = GrpcClient::start(&etcd, &ns, NEVER[3], 30, 200, true);
    let mut sess = TraceSession::for_pid(Sink::Json, etcd.pid());
    client.go();
    let calls = client.wait_done(Duration::from_secs(60));
    sess.wait_spans(|s| s.attr_i64("server.port") == Some(i64::from(etcd.port())), 200, SPAN_TIMEOUT);
    let fin = sess.finish(SETTLE);
    client.finish();
    let (m, errs) = check_mid_stream(&fin.spans, &calls, etcd.port(), 100, 100, 0);
    eprintln!(
        "[etcd gRPC mid-connection, plain] {}\n{}",
        m.summary(),
        final_stats_line(&fin.output.stderr).unwrap_or_default()
    );
    assert_session_ok("etcd gRPC connection joined mid-way", errs, &fin, &[NEVER[3]]);
}
