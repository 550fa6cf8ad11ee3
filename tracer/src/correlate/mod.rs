//! Correlation: assembled spans become traces.
//!
//! The one stage that owns trace and span ids. Assembly builds spans without ids; here each span
//! gets its span id and the trace it belongs to before it goes to export. A server span whose
//! request carried a valid `traceparent` joins the caller's trace as a child of the caller's span;
//! every other span starts a trace of its own. More parents (goroutine ancestry, grpc-go and
//! net/http uprobes, both ends of a connection on one node) will be decided here as they are learnt.
//!
//! Once a trace's spans are known, the sampler decides for the trace as a whole (`sample`) and
//! marks its spans: they all go to export together, where what must see every span (metrics) sees
//! them before the unsampled ones are left out.

mod ids;
mod sample;

use crate::{
    events::{GoLink, GoSpawn},
    span::SpanRecord,
};

use ids::IdGenerator;
pub use sample::{SampleConfig, SampleStats, Sampler, SlowThresholds};

#[derive(Default, Debug, Clone)]
pub struct CorrelateStats {
    /// Spans that went out as the root of a trace of their own.
    pub roots: u64,
    /// Spans that joined the trace of their caller (an incoming `traceparent`).
    pub remote_parents: u64,
    pub sampling: SampleStats,
}

pub struct Correlator {
    ids: IdGenerator,
    sampler: Sampler,
    stats: CorrelateStats,
}

impl Default for Correlator {
    fn default() -> Self {
        Self::new()
    }
}

impl Correlator {
    /// A correlator that keeps every trace.
    pub fn new() -> Self {
        Self::with_sampling(SampleConfig::default())
    }

    pub fn with_sampling(config: SampleConfig) -> Self {
        Correlator { ids: IdGenerator::from_os_rng(), sampler: Sampler::new(config), stats: CorrelateStats::default() }
    }

    /// Gives every span of `spans` its ids and its trace's sampling decision, in place, before
    /// they go to export together. `spans` holds whole traces.
    pub fn correlate(&mut self, spans: &mut [SpanRecord]) {
        for span in spans {
            span.span_id = self.ids.span_id();
            match span.remote_parent {
                Some(caller) => {
                    span.trace_id = caller.trace_id;
                    span.parent_span_id = Some(caller.span_id);
                    self.stats.remote_parents += 1;
                }
                None => {
                    span.trace_id = self.ids.trace_id();
                    span.parent_span_id = None;
                    self.stats.roots += 1;
                }
            }
            // Each span is a trace of its own so far: decided alone.
            self.sampler.decide(std::slice::from_mut(span));
        }
    }

    /// A goroutine was created (goroutine ancestry). Not used yet.
    pub fn on_go_spawn(&mut self, _spawn: &GoSpawn) {}

    /// A goroutine was linked to a request (grpc-go, net/http). Not used yet.
    pub fn on_go_link(&mut self, _link: &GoLink) {}

    /// The counters, sampling's included.
    pub fn stats(&self) -> CorrelateStats {
        CorrelateStats { sampling: self.sampler.stats().clone(), ..self.stats.clone() }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, sync::Arc};

    use super::*;
    use crate::span::{LatencyClass, ProcessInfo, RemoteParent, SpanKind, SpanStatus};

    /// A span as assembly hands it over: no ids yet.
    pub(super) fn assembled(name: &str) -> SpanRecord {
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
            remote_parent: None,
            latency_class: LatencyClass::Other,
            sampled: true,
            origin: Default::default(),
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

    /// A request with a `traceparent` joins its caller's trace, as a child of the caller's span;
    /// with the default sampling every trace is kept.
    #[test]
    fn a_remote_parent_gives_the_trace_and_the_parent() {
        let mut c = Correlator::new();
        let caller = RemoteParent { trace_id: [7; 16], span_id: [9; 8], sampled: false };
        let mut spans = vec![assembled("GET /a"), assembled("GET /b")];
        spans[0].remote_parent = Some(caller);
        c.correlate(&mut spans);
        assert_eq!((spans[0].trace_id, spans[0].parent_span_id), ([7; 16], Some([9; 8])));
        assert_ne!(spans[0].span_id, [9; 8]);
        assert_ne!(spans[1].trace_id, [7; 16]);
        assert_eq!(spans[1].parent_span_id, None);
        assert!(spans.iter().all(|s| s.sampled));
        let stats = c.stats();
        assert_eq!((stats.roots, stats.remote_parents), (1, 1));
        assert_eq!((stats.sampling.kept_ratio, stats.sampling.dropped_ratio), (2, 0));
    }
}
