//! What the tests read in the tracer's log: its `final stats` counters and the lines worth showing
//! when a test fails.

use std::collections::BTreeMap;

pub use harness::final_stats_line;
use harness::tail;

/// `final stats` counters of the tracer's stderr (`key=value` pairs of the last such line).
pub fn final_stats(stderr: &str) -> BTreeMap<String, i64> {
    harness::final_stats(stderr).unwrap_or_default()
}

/// Problems for each of `keys` that the `final stats` line in `stderr` does not give as 0.
pub fn check_zero_stats(stderr: &str, keys: &[&str]) -> Vec<String> {
    let stats = final_stats(stderr);
    keys.iter()
        .filter_map(|k| match stats.get(*k) {
            Some(0) => None,
            other => Some(format!("{k} should be 0, is {other:?}")),
        })
        .collect()
}

/// The tracer's log lines about targets and probes, warnings and errors, and `final stats`: for
/// failure messages.
pub fn tracer_log_summary(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| {
            l.contains("target ")
                || l.contains("probes")
                || l.contains(" WARN ")
                || l.contains(" ERROR ")
                || l.contains("final stats")
        })
        .map(|l| tail(l, 600))
        .collect::<Vec<_>>()
        .join("\n    ")
}
