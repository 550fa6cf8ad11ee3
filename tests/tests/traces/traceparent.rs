//! An incoming W3C `traceparent`: the API request joins the caller's trace as the child of the
//! caller's span, and its etcd and webhook calls follow it (those that find their request: see
//! `common::MIN_RIGHT`).

use integration_tests::ending::assert_finished_ok;
use integration_tests::nesting::{is_etcd_call, is_webhook_call, ns_of_api_path, ns_of_call};
use integration_tests::stack::{ApiRequest, Op, Variant};
use integration_tests::*;

use super::common::{MIN_RIGHT, traced, wait_for_load};

/// Creates (webhook over HTTP/2, etcd Txn) and updates (webhook over HTTP/1.1, etcd Put), sent
/// over HTTP/1.1 and HTTP/2, each with a traceparent of its own.
#[test]
fn a_request_with_a_traceparent_joins_its_callers_trace_with_its_calls() {
    let (stack, mut sess) = traced(Variant::Etcd, &[]);
    let mut requests = Vec::new();
    for i in 0..8u64 {
        let op = if i % 2 == 0 { Op::Create } else { Op::Update };
        let mut r = ApiRequest::new(op, &format!("tp-{i}"), i % 4 < 2);
        r.traceparent = Some(format!("00-{:032x}-{:016x}-01", 0x7ace_0000 + i, 0xca11_0000 + i));
        requests.push(r);
    }
    stack.load(&requests, 1);
    wait_for_load(&mut sess, &stack, &requests);
    let fin = sess.finish(SETTLE);
    let pid = stack.pid();
    let (etcd_port, webhook_port) = (stack.etcd.as_ref().map(|e| e.port()), stack.webhook.port());
    let mut errs = Vec::new();
    let (mut in_trace, mut unparented) = (0usize, 0usize);
    for r in &requests {
        let tp = r.traceparent.as_deref().unwrap();
        let (trace, parent) = (&tp[3..35], &tp[36..52]);
        let servers: Vec<_> = fin
            .spans
            .iter()
            .filter(|s| s.pid() == Some(pid) && s.kind == "server")
            .filter(|s| s.attr_str("url.path").and_then(ns_of_api_path) == Some(r.ns.as_str()))
            .collect();
        let [server] = servers[..] else {
            errs.push(format!("{} {}: {} server spans, want 1", r.method(), r.path(), servers.len()));
            continue;
        };
        if server.trace_id != trace || server.parent_span_id != parent {
            errs.push(format!("{} {} sent traceparent {tp}: {}", r.method(), r.path(), server.summary()));
        }
        let calls: Vec<_> = fin
            .spans
            .iter()
            .filter(|s| s.pid() == Some(pid) && (is_etcd_call(s, etcd_port) || is_webhook_call(s, webhook_port)))
            .filter(|s| ns_of_call(s) == Some(r.ns.as_str()))
            .collect();
        if calls.len() != r.calls(stack.variant).len() {
            errs.push(format!(
                "{} {}: {} client spans, want {}",
                r.method(),
                r.path(),
                calls.len(),
                r.calls(stack.variant).len()
            ));
        }
        for c in calls {
            // A call left a root is counted below (the floor of the other suites); a call with a
            // parent must be in the caller's trace, under this request.
            if c.parent_span_id.is_empty() {
                unparented += 1;
                continue;
            }
            in_trace += 1;
            if c.trace_id != trace || c.parent_span_id != server.span_id {
                errs.push(format!(
                    "call of {} {} not in trace {trace} under {}: {}",
                    r.method(),
                    r.path(),
                    server.span_id,
                    c.summary()
                ));
            }
        }
    }
    let share = in_trace as f64 / (in_trace + unparented).max(1) as f64;
    if share < MIN_RIGHT.parented {
        errs.push(format!(
            "{in_trace} calls in their caller's trace, {unparented} left roots: want ≥ {:.0} %",
            MIN_RIGHT.parented * 100.0
        ));
    }
    if !errs.is_empty() {
        errs.push(format!("tracer: {}", integration_tests::nesting::trace_counters(&fin.output.stderr)));
    }
    assert_finished_ok("incoming traceparent", errs, &fin);
}
