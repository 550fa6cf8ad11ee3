//! What the trace suites share: a traced stack and its figures.

use std::collections::BTreeSet;
use std::time::Duration;

use integration_tests::gotls::wait_go_tls_probes;
use integration_tests::nesting::{Floor, check_nesting, ns_of_api_path, ns_of_call};
use integration_tests::stack::{ApiRequest, ApiStack, Variant};
use integration_tests::*;

/// The webhook's answer time: long enough that its span is a visible part of the request.
pub const WEBHOOK_DELAY: Duration = Duration::from_millis(2);
/// What every nesting check requires, besides no wrong parent at all (always required). Issue
/// #25 asks for 99 % of the calls under their request; these are the floors this machine meets
/// every time today (measured: 90–100 % of the client spans that came under their request, and at
/// concurrency 256 on the etcd build client spans for about 72 % of the calls, the rest lost
/// before assembly), so that a regression fails while the issue stays open for the rest.
/// Share of the etcd calls on a connection used before attach that must carry their method,
/// operation and key (the bar, met).
pub const MIN_NAMED: f64 = 0.99;
/// Share of etcd's server spans that must be children of the API server's etcd client span of
/// the same call. Measured: 98 % with the default hooks, 62 % with the fallback hooks
/// (`ITEST_GO_TLS_PROBES=entry-and-rets`), where etcd's server spans of a connection opened
/// before attach often go out before their client span is known; a floor, not the bar.
pub const MIN_BOTH_ENDS: f64 = 0.5;
pub const MIN_RIGHT: Floor = Floor { parented: 0.85, seen: 0.6 };

/// A stack of `variant` and a tracer (OTLP gRPC sink) on `pids` (the API server's first), once
/// the tracer's Go probes are in place.
pub fn traced(variant: Variant, also: &[u32]) -> (ApiStack, TraceSession) {
    let stack = ApiStack::start(variant, WEBHOOK_DELAY);
    let sess = trace(&stack, also);
    (stack, sess)
}

/// A tracer on the stack's server and `also`.
pub fn trace(stack: &ApiStack, also: &[u32]) -> TraceSession {
    let mut pids = vec![stack.pid()];
    pids.extend_from_slice(also);
    let list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let mut sess = TraceSession::start(Sink::Grpc, &["--pid".to_owned(), list], &[], &pids);
    for pid in &pids {
        wait_go_tls_probes(&mut sess.tracer, *pid);
    }
    sess
}

/// Waits until the server span of every request and a span of every call of `requests` came
/// (or [`SPAN_TIMEOUT`]), then for the spans the tracer may still hold (a span waits at most 2 s
/// for its parent).
pub fn wait_for_load(sess: &mut TraceSession, stack: &ApiStack, requests: &[ApiRequest]) {
    let pid = stack.pid();
    let want = requests.len() + requests.iter().map(|r| r.calls(stack.variant).len()).sum::<usize>();
    let namespaces: BTreeSet<String> = requests.iter().map(|r| r.ns.clone()).collect();
    let of_load = move |s: &ReceivedSpan| {
        let ns = match s.kind.as_str() {
            "server" => s.attr_str("url.path").and_then(ns_of_api_path),
            "client" => ns_of_call(s),
            _ => None,
        };
        s.pid() == Some(pid) && ns.is_some_and(|ns| namespaces.contains(ns))
    };
    sess.wait_spans(of_load, want, SPAN_TIMEOUT);
    std::thread::sleep(HOLD);
}

/// Longer than the tracer holds a span for its parent.
const HOLD: Duration = Duration::from_millis(2500);

/// The nesting of the client spans of `requests` in `spans`.
pub fn nesting(
    spans: &[ReceivedSpan],
    stack: &ApiStack,
    requests: &[ApiRequest],
) -> integration_tests::nesting::Nesting {
    check_nesting(
        spans,
        stack.pid(),
        stack.variant,
        requests,
        stack.etcd.as_ref().map(|e| e.port()),
        stack.webhook.port(),
    )
}
