//! Correlation: assembled spans become traces.
//!
//! The one stage that owns trace and span ids. Assembly builds spans without ids; here each span
//! gets its span id and the trace it belongs to before it goes to export. Today every span starts
//! a trace of its own: parents (goroutine ancestry, grpc-go and net/http uprobes, an incoming
//! `traceparent`, both ends of a connection on one node) are decided here as they are learnt.

mod ids;

use crate::span::SpanRecord;

use ids::IdGenerator;

#[derive(Default, Debug, Clone)]
pub struct CorrelateStats {
    /// Spans that went out as the root of a trace of their own.
    pub roots: u64,
}

pub struct Correlator {
    ids: IdGenerator,
    stats: CorrelateStats,
}

impl Default for Correlator {
    fn default() -> Self {
        Self::new()
    }
}

impl Correlator {
    pub fn new() -> Self {
        Correlator { ids: IdGenerator::from_os_rng(), stats: CorrelateStats::default() }
    }

    /// Gives every span of `spans` its ids, in place, before they go to export together.
    pub fn correlate(&mut self, spans: &mut [SpanRecord]) {
        for span in spans {
            span.span_id = self.ids.span_id();
            span.trace_id = self.ids.trace_id();
            span.parent_span_id = None;
            self.stats.roots += 1;
        }
    }

    pub fn stats(&self) -> &CorrelateStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, sync::Arc};

    use super::*;
    use crate::span::{ProcessInfo, SpanKind, SpanStatus};

    fn assembled(name: &str) -> SpanRecord {
        let process = Arc::new(ProcessInfo {
            service_name: "s".into(),
            pid: 1,
            executable_name: "s".into(),
            host_name: "h".into(),
        });
        SpanRecord {
            trace_id: [0; 16],
            span_id: [0; 8],
            parent_span_id: None,
            name: name.into(),
            kind: SpanKind::Server,
            start_unix_nano: 1,
            end_unix_nano: 2,
            status: SpanStatus::Unset,
            attributes: Vec::new(),
            process,
        }
    }

    #[test]
    fn every_span_gets_valid_distinct_ids_and_is_counted_as_a_root() {
        let mut c = Correlator::new();
        let mut spans: Vec<SpanRecord> = (0..1000).map(|i| assembled(&format!("GET /{i}"))).collect();
        c.correlate(&mut spans[..600]);
        c.correlate(&mut spans[600..]);
        let traces: HashSet<[u8; 16]> = spans.iter().map(|s| s.trace_id).collect();
        let span_ids: HashSet<[u8; 8]> = spans.iter().map(|s| s.span_id).collect();
        assert_eq!((traces.len(), span_ids.len()), (1000, 1000));
        assert!(!traces.contains(&[0; 16]) && !span_ids.contains(&[0; 8]));
        assert!(spans.iter().all(|s| s.parent_span_id.is_none()));
        assert_eq!(c.stats().roots, 1000);
        // The spans are otherwise as assembly made them.
        assert_eq!(spans[599].name, "GET /599");
    }
}
