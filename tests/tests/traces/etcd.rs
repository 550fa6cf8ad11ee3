//! The etcd build's etcd calls: named and decoded on a connection that carried every method
//! before the tracer attached, and joined by etcd's own server spans when etcd is traced too.

use integration_tests::ending::assert_finished_ok;
use integration_tests::nesting::{check_etcd_attributes, is_etcd_call, trace_counters};
use integration_tests::stack::{ApiRequest, ApiStack, Call, Op, Variant, mixed_load};
use integration_tests::*;

use super::common::{MIN_BOTH_ENDS, MIN_NAMED, MIN_RIGHT, nesting, trace, traced, wait_for_load};

/// The load of the etcd tests: every operation, and a few watches.
fn load_with_watches(prefix: &str) -> Vec<ApiRequest> {
    let mut requests = mixed_load(Variant::Etcd, prefix, 150);
    requests.extend((0..5).map(|i| ApiRequest::new(Op::Watch, &format!("{prefix}-w{i}"), i % 2 == 0)));
    requests
}

fn expected_etcd_calls(requests: &[ApiRequest]) -> usize {
    requests.iter().map(|r| r.calls(Variant::Etcd).iter().filter(|c| matches!(c, Call::Etcd { .. })).count()).sum()
}

/// The server's etcd connection has carried Range, Put, Txn, DeleteRange and Watch (so their
/// paths and content-type are in its HPACK tables) before the tracer attaches: ≥ 99 % of the etcd
/// client spans after attach still carry `rpc.method`, `db.operation.name` and `etcd.key`, each
/// the one of the call the request made, and none a wrong one.
#[test]
fn etcd_calls_on_a_connection_used_before_attach_carry_method_and_key() {
    let (stack, mut sess) = traced(Variant::Etcd, &[]);
    let requests = load_with_watches("attr");
    stack.load(&requests, 8);
    wait_for_load(&mut sess, &stack, &requests);
    let fin = sess.finish(SETTLE);
    let expected = expected_etcd_calls(&requests);
    let port = stack.etcd.as_ref().expect("etcd build").port();
    let (right, wrong, notes) = check_etcd_attributes(&fin.spans, stack.pid(), &requests, port);
    let seen = fin.spans.iter().filter(|s| s.pid() == Some(stack.pid()) && is_etcd_call(s, Some(port))).count();
    let report = format!(
        "etcd calls {expected}; etcd client spans {seen}: method, operation and key right {right}, wrong {wrong}; tracer: {}",
        trace_counters(&fin.output.stderr)
    );
    eprintln!("{report}");
    let mut errs = Vec::new();
    if (right as f64) < MIN_NAMED * expected as f64 {
        errs.push(format!("fewer than 99 % of the etcd calls named and keyed: {report}"));
    }
    if wrong > 0 {
        errs.push(format!("etcd client spans with a wrong method, operation or key: {report}: {}", notes.join(" | ")));
    }
    assert_finished_ok("etcd calls on a connection opened and used before attach", errs, &fin);
}

/// etcd traced too: each of etcd's server spans of the load is the child of the server's etcd
/// client span of the same call (same key and method), itself the child of its API request:
/// request → etcd client call → etcd's handling.
#[test]
fn etcd_server_spans_are_children_of_the_servers_etcd_client_spans() {
    let stack = ApiStack::start(Variant::Etcd, super::common::WEBHOOK_DELAY);
    let etcd_pid = stack.etcd.as_ref().expect("etcd build").pid();
    let mut sess = trace(&stack, &[etcd_pid]);
    let requests = mixed_load(Variant::Etcd, "ends", 150);
    stack.load(&requests, 8);
    let expected = expected_etcd_calls(&requests);
    wait_for_load(&mut sess, &stack, &requests);
    sess.wait_spans(|s| s.pid() == Some(etcd_pid) && s.kind == "server", expected, SPAN_TIMEOUT);
    let fin = sess.finish(SETTLE);
    let (mut right, mut wrong, mut unparented, mut examples) = (0, 0, 0, Vec::new());
    let etcd_port = stack.etcd.as_ref().expect("etcd build").port();
    let clients: Vec<&ReceivedSpan> =
        fin.spans.iter().filter(|s| s.pid() == Some(stack.pid()) && is_etcd_call(s, Some(etcd_port))).collect();
    let client_ports: Vec<Option<i64>> = clients.iter().map(|c| c.attr_i64("client.port")).collect();
    // etcd's server spans of the server's etcd connection. That connection was opened before
    // the tracer attached: etcd's side of it may not name the method (its HPACK table is not
    // known), so a parent is checked by what both ends see: the key and method when the server
    // span has them, the request's size and the client call's interval (1 ms slack) always.
    let same_call = |e: &ReceivedSpan, c: &ReceivedSpan| {
        let key = e.attr_str("etcd.key");
        (key.is_none() || (key, e.attr_str("rpc.method")) == (c.attr_str("etcd.key"), c.attr_str("rpc.method")))
            && e.attr_i64("http.request.body.size") == c.attr_i64("http.request.body.size")
            && e.start + 1_000_000 >= c.start
            && e.end <= c.end + 1_000_000
    };
    let from_server = |s: &&ReceivedSpan| client_ports.contains(&s.attr_i64("client.port"));
    for e in fin.spans.iter().filter(|s| s.pid() == Some(etcd_pid) && s.kind == "server").filter(from_server) {
        let parent = clients.iter().find(|c| c.span_id == e.parent_span_id);
        match parent {
            _ if e.parent_span_id.is_empty() => unparented += 1,
            Some(c) if c.trace_id == e.trace_id && same_call(e, c) => right += 1,
            _ => {
                wrong += 1;
                if examples.len() < 3 {
                    examples.push(format!("{} under {:?}", e.summary(), parent.map(|p| p.summary())));
                }
            }
        }
    }
    let n = nesting(&fin.spans, &stack, &requests);
    let report = format!(
        "etcd calls {expected}; etcd server spans: right {right}, wrong {wrong}, unparented {unparented}; {n}; tracer: {}",
        trace_counters(&fin.output.stderr)
    );
    eprintln!("{report}");
    let mut errs = n.problems("API request → client call", MIN_RIGHT);
    if (right as f64) < MIN_BOTH_ENDS * expected as f64 {
        errs.push(format!(
            "fewer than {:.0} % of etcd's server spans under the client call: {report}",
            MIN_BOTH_ENDS * 100.0
        ));
    }
    if wrong > 0 {
        errs.push(format!("etcd server spans under a wrong parent: {report}: {}", examples.join(" | ")));
    }
    assert_finished_ok("etcd's server spans under the API server's etcd client spans", errs, &fin);
}
