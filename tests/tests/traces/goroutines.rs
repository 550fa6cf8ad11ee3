//! 100 000 short-lived goroutines churned through the server (their structs reused by the Go
//! runtime over and over) while it serves requests: the agent's goroutine facts stay within
//! their bounds, its memory does not grow with the churn, and no request inherits a stale parent.

use std::time::Duration;

use integration_tests::ending::assert_finished_ok;
use integration_tests::nesting::trace_counters;
use integration_tests::stack::{Variant, mixed_load};
use integration_tests::tracer_log::final_stats;
use integration_tests::*;

use super::common::{MIN_RIGHT, nesting, traced, wait_for_load};

const CHURNED: usize = 100_000;
/// The correlator's default bound of goroutines known per process (tracer/src/correlate).
const GOROUTINES_PER_PROCESS: i64 = 16_384;
/// Growth of the agent's peak resident memory over the churn allowed. The goroutine facts are
/// bounded per process to a few MiB; unbounded facts for 100k goroutines would take more.
const MAX_RSS_GROWTH_KIB: u64 = 32 * 1024;

/// A /proc/PID/status field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn goroutine_churn_keeps_the_agent_bounded_and_parents_fresh() {
    let (stack, mut sess) = traced(Variant::Stdlib, &[]);
    let tracer_pid = sess.tracer.pid();
    let before = mixed_load(Variant::Stdlib, "pre", 60);
    stack.load(&before, 8);
    let rss_before = status_kib(tracer_pid, "VmRSS:");
    // The churn runs on the goroutines of one request while others are served beside it, then
    // more requests come on goroutines the churn's ended ones leave for reuse.
    let during = mixed_load(Variant::Stdlib, "mid", 150);
    let churn_path = format!("/debug/churn?n={CHURNED}");
    std::thread::scope(|scope| {
        let churn = scope.spawn(|| {
            let url = stack.apiserver.url(&churn_path);
            let ca = stack_ca(&stack);
            curl_one(&["--cacert", &ca, "--max-time", "60", &url])
        });
        stack.load(&during, 16);
        let t = churn.join().expect("churn request");
        assert_eq!(t.code, 200, "harness: the churn request answered {}", t.code);
    });
    let after = mixed_load(Variant::Stdlib, "post", 150);
    stack.load(&after, 16);
    let all: Vec<_> = [before, during, after].concat();
    wait_for_load(&mut sess, &stack, &all);
    std::thread::sleep(Duration::from_secs(1));
    let peak = status_kib(tracer_pid, "VmHWM:");
    let fin = sess.finish(SETTLE);
    let n = nesting(&fin.spans, &stack, &all);
    let stats = final_stats(&fin.output.stderr);
    let report = format!(
        "{n}; tracer RSS before the churn {rss_before} KiB, peak {peak} KiB; goroutines known at the end {:?}; tracer: {}",
        stats.get("goroutines"),
        trace_counters(&fin.output.stderr)
    );
    eprintln!("{report}");
    let mut errs = n.problems("requests around a churn of 100k goroutines", MIN_RIGHT);
    match stats.get("goroutines") {
        Some(&g) if g <= GOROUTINES_PER_PROCESS => {}
        other => errs.push(format!("goroutines known {other:?}, want ≤ {GOROUTINES_PER_PROCESS}: {report}")),
    }
    if peak.saturating_sub(rss_before) > MAX_RSS_GROWTH_KIB {
        errs.push(format!("the agent's memory grew by more than {MAX_RSS_GROWTH_KIB} KiB over the churn: {report}"));
    }
    // The churn request's own goroutines serve no other request: no call of the load is its child.
    let churn_ids: Vec<&str> = fin
        .spans
        .iter()
        .filter(|s| s.kind == "server" && s.attr_str("url.path") == Some("/debug/churn"))
        .map(|s| s.span_id.as_str())
        .collect();
    let stale = fin.spans.iter().filter(|s| churn_ids.contains(&s.parent_span_id.as_str())).count();
    if stale > 0 {
        errs.push(format!("{stale} span(s) under the churn request: {report}"));
    }
    assert_finished_ok("goroutine churn", errs, &fin);
}

fn stack_ca(stack: &integration_tests::stack::ApiStack) -> String {
    stack.ca().display().to_string()
}
