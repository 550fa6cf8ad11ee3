//! grpc-go client streams on TLS connections opened, and used, before the tracer attached: their
//! request HEADERS are indexes into an HPACK table the tracer never saw filled, and the probe on
//! grpc-go's header handler names each stream (method path), so its etcd message is decoded.

use std::time::{Duration, Instant};

use integration_tests::check::{ResourceExpect, check_common};
use integration_tests::ending::assert_session_ok;
use integration_tests::etcd::{Etcd, EtcdTls};
use integration_tests::gotls::wait_go_tls_probes;
use integration_tests::tracer_log::final_stats_line;
use integration_tests::*;

/// The keys `etcdctl check perf` writes (its `--prefix`).
const PREFIX: &str = "/itest-grpc-links/";
/// Puts made before the tracer attaches: etcdctl's 50 clients (one connection each) take Puts
/// from one queue, so each has sent the method's path and content-type into its HPACK table.
const PUTS_BEFORE_ATTACH: i64 = 300;
/// Client spans of etcd calls looked at after attach.
const SPANS_AFTER_ATTACH: usize = 600;

/// etcdctl (etcd 3.4's: grpc-go 1.33, Go 1.19, stripped) runs `check perf`: Puts of keys under
/// its prefix (and nothing else while it runs) over 50 mutual-TLS connections made at its start.
/// The tracer attaches to it after 300 Puts: ≥ 99 % of the etcd client spans after attach are
/// `etcd Put` with `rpc.method`, `db.operation.name` and an `etcd.key` under the prefix, and none
/// carries another method or key.
#[test]
fn grpc_go_streams_of_connections_opened_before_attach_get_method_and_key() {
    let etcd = Etcd::start_with(EtcdTls::Mutual);
    let port = i64::from(etcd.port());
    let start_rev = etcd.revision();
    let mut perf = etcd.ctl_spawn(&["check", "perf", "--load=s", &format!("--prefix={PREFIX}")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while etcd.revision() < start_rev + PUTS_BEFORE_ATTACH {
        assert!(Instant::now() < deadline, "harness: etcdctl check perf made too few Puts");
        perf.assert_running();
        std::thread::sleep(Duration::from_millis(200));
    }
    let res = ResourceExpect::of(perf.pid());
    let mut sess = TraceSession::for_pid(Sink::Json, perf.pid());
    wait_go_tls_probes(&mut sess.tracer, perf.pid());
    let window = sess.window_start;
    let is_etcd_call = |s: &ReceivedSpan| s.kind == "client" && s.attr_i64("server.port") == Some(port);
    sess.wait_spans(is_etcd_call, SPANS_AFTER_ATTACH, Duration::from_secs(30));
    perf.assert_running();
    let fin = sess.finish(SETTLE);
    perf.kill();

    let calls: Vec<&ReceivedSpan> = fin.spans.iter().filter(|s| is_etcd_call(s)).collect();
    let named = |s: &ReceivedSpan| {
        s.name == "etcd Put"
            && s.attr_str("rpc.method") == Some("Put")
            && s.attr_str("db.operation.name") == Some("Put")
            && s.attr_str("etcd.key").is_some_and(|k| k.starts_with(PREFIX))
    };
    let wrong = |s: &ReceivedSpan| {
        s.attr_str("rpc.method").is_some_and(|m| m != "Put")
            || s.attr_str("db.operation.name").is_some_and(|m| m != "Put")
            || s.attr_str("etcd.key").is_some_and(|k| !k.starts_with(PREFIX))
    };
    let n_named = calls.iter().filter(|s| named(s)).count();
    let wrongs: Vec<String> = calls.iter().filter(|s| wrong(s)).map(|s| s.summary()).collect();
    eprintln!(
        "[grpc-go streams of connections opened before attach] {n_named} of {} etcd client spans named with their key\n{}",
        calls.len(),
        final_stats_line(&fin.output.stderr).unwrap_or_default()
    );
    let mut errs = Vec::new();
    if calls.len() < SPANS_AFTER_ATTACH {
        errs.push(format!("{} etcd client spans, expected at least {SPANS_AFTER_ATTACH}", calls.len()));
    }
    if n_named * 100 < calls.len() * 99 {
        let unnamed: Vec<String> = calls.iter().filter(|s| !named(s)).take(5).map(|s| s.summary()).collect();
        errs.push(format!("{n_named} of {} etcd client spans named and decoded (< 99 %): {unnamed:#?}", calls.len()));
    }
    if !wrongs.is_empty() {
        errs.push(format!("{} spans with a wrong method or key: {:#?}", wrongs.len(), &wrongs[..wrongs.len().min(5)]));
    }
    errs.extend(check_common(&fin.spans, &res, window));
    assert_session_ok("grpc-go streams of connections opened before attach", errs, &fin, &[]);
}
