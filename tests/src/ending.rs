//! How a test ends: the tracer stopped, its spans checked, and one panic with every problem, the
//! spans and the tracer's log when there is any.

use std::time::Duration;

use harness::tail;

use crate::check::{
    HttpExpect, ResourceExpect, assert_no_errors, check_absent_everywhere, check_absent_in_output, check_common,
    check_http_spans,
};
use crate::session::{Finished, TraceSession};
use crate::tracer_log::tracer_log_summary;

/// How long a test waits for the spans it expects.
pub const SPAN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a finishing test lets stragglers in before it stops the tracer.
pub const SETTLE: Duration = Duration::from_millis(700);

impl TraceSession {
    /// The usual ending: waits until `count` spans came (at most [`SPAN_TIMEOUT`]), then
    /// [`finish`](Self::finish)es after [`SETTLE`].
    pub fn end(mut self, count: usize) -> Finished {
        self.wait_spans(|_| true, count, SPAN_TIMEOUT);
        self.finish(SETTLE)
    }

    /// The ending of a test of HTTP spans: [`end`](Self::end) with one span per expectation, then
    /// asserts that the spans meet `exps` and [`Finished::common`] to `res`.
    pub fn end_http(self, what: &str, exps: &[HttpExpect], res: &ResourceExpect) -> Finished {
        let window = self.window_start;
        let fin = self.end(exps.len());
        let errs = [check_http_spans(&fin.spans, exps), fin.common(res, window)].concat();
        fin.assert_ok(what, &errs);
        fin
    }
}

impl Finished {
    /// What every span of a run must be: the target's resource `res`, started after `window_start`.
    pub fn common(&self, res: &ResourceExpect, window_start: u64) -> Vec<String> {
        check_common(&self.spans, res, window_start)
    }

    /// Panics with every problem, every span and the tracer's stderr when `errs` is not empty.
    pub fn assert_ok(&self, context: &str, errs: &[String]) {
        if !errs.is_empty() {
            let stats: Vec<&str> = self.output.stderr.lines().filter(|l| l.contains("final stats")).collect();
            assert_no_errors(
                &format!(
                    "{context}\n(tracer {:?}; {})\n--- tracer stderr (tail) ---\n{}\n---",
                    self.output.args,
                    stats.join(" | "),
                    tail(&self.output.stderr, 3000)
                ),
                errs,
                &self.spans,
            );
        }
    }
}

/// Panics with every problem, a summary of the tracer's log and every span when `errs` is not
/// empty.
pub fn assert_finished_ok(context: &str, mut errs: Vec<String>, fin: &Finished) {
    if !errs.is_empty() {
        errs.push(format!("tracer log:\n    {}", tracer_log_summary(&fin.output.stderr)));
    }
    assert_no_errors(context, &errs, &fin.spans);
}

/// [`assert_finished_ok`], once it is checked that none of `never` (values the tracer must not
/// export) appears in any span or in the tracer's stdout or stderr.
pub fn assert_session_ok(context: &str, mut errs: Vec<String>, fin: &Finished, never: &[&str]) {
    errs.extend(check_absent_everywhere(&fin.spans, never));
    errs.extend(check_absent_in_output(&fin.output.stdout, &fin.output.stderr, never));
    assert_finished_ok(context, errs, fin);
}
