//! Correlation's logic on spans and goroutine events made here, as assembly and the probes hand
//! them over (the probes themselves are the integration tests' business).

use std::{collections::HashSet, sync::Arc};

use super::*;
use crate::span::{LatencyClass, ProcessInfo, RemoteParent, SpanKind, SpanStatus};

mod bounds;
mod scenarios;

/// A span as assembly hands it over: no ids yet.
pub(super) fn assembled(name: &str) -> SpanRecord {
    let process =
        Arc::new(ProcessInfo { service_name: "s".into(), pid: 1, executable_name: "s".into(), host_name: "h".into() });
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

/// Hands `spans` in at `now` and returns what went out.
fn intake(c: &mut Correlator, spans: Vec<SpanRecord>, now: u64) -> Vec<SpanRecord> {
    let (mut spans, mut out) = (spans, Vec::new());
    c.intake(&mut spans, now, &mut out);
    assert!(spans.is_empty());
    out
}

#[test]
fn every_span_gets_valid_distinct_ids_and_is_counted_as_a_root() {
    let mut c = Correlator::new();
    let spans: Vec<SpanRecord> = (0..1000).map(|i| assembled(&format!("GET /{i}"))).collect();
    let (first, second) = spans.split_at(600);
    let mut spans = intake(&mut c, first.to_vec(), 1);
    spans.extend(intake(&mut c, second.to_vec(), 2));
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
    let spans = intake(&mut c, spans, 1);
    assert_eq!((spans[0].trace_id, spans[0].parent_span_id), ([7; 16], Some([9; 8])));
    assert_ne!(spans[0].span_id, [9; 8]);
    assert_ne!(spans[1].trace_id, [7; 16]);
    assert_eq!(spans[1].parent_span_id, None);
    assert!(spans.iter().all(|s| s.sampled));
    let stats = c.stats();
    assert_eq!((stats.roots, stats.remote_parents), (1, 1));
    assert_eq!((stats.sampling.kept_ratio, stats.sampling.dropped_ratio), (2, 0));
}
