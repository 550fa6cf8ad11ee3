//! Tail-keep sampling: each trace is kept or dropped whole, once its spans are known.
//!
//! A trace is kept, for the first reason that holds:
//! 1. a span failed (`kept_error`): a 5xx server span, a 4xx/5xx client span, a gRPC status other
//!    than OK (a failed etcd call), a stream reset or a connection closed mid-request (a webhook
//!    call that timed out);
//! 2. a span was slower than its class's threshold (`kept_slow`; see [`LatencyClass`]);
//! 3. the caller's `traceparent` said sampled (`kept_parent_sampled`);
//! 4. its trace id falls in the kept share (`kept_ratio`, else `dropped_ratio`).
//!
//! The share is decided from the trace id alone, so agents on other nodes (and OpenTelemetry
//! SDKs) that see the same trace decide the same: as OpenTelemetry's `TraceIdRatioBased`
//! sampler does with W3C random trace ids, the randomness is the id's rightmost 56 bits, and the
//! trace is kept when it is at least the rejection threshold `(1 - ratio) × 2^56`.

use std::time::Duration;

use crate::span::{LatencyClass, SpanRecord, SpanStatus};

/// Latencies above which a span is slow, by class. The defaults are kube-apiserver's own latency
/// SLOs: 1 s for single-object calls, 5 s for a namespace's collections, 30 s for the cluster's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlowThresholds {
    pub single_object: Duration,
    pub namespace_collection: Duration,
    pub cluster_collection: Duration,
    /// Spans without a Kubernetes verb: etcd and other gRPC calls, non-resource paths.
    pub other: Duration,
}

impl Default for SlowThresholds {
    fn default() -> Self {
        SlowThresholds {
            single_object: Duration::from_secs(1),
            namespace_collection: Duration::from_secs(5),
            cluster_collection: Duration::from_secs(30),
            other: Duration::from_secs(1),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleConfig {
    /// Share of the other traces kept, in [0, 1].
    pub ratio: f64,
    pub slow: SlowThresholds,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig { ratio: 1.0, slow: SlowThresholds::default() }
    }
}

/// Traces by decision.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct SampleStats {
    pub kept_error: u64,
    pub kept_slow: u64,
    pub kept_parent_sampled: u64,
    pub kept_ratio: u64,
    pub dropped_ratio: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    KeptError,
    KeptSlow,
    KeptParentSampled,
    KeptRatio,
    DroppedRatio,
}

/// 2^56: the randomness of a trace id is below it.
const RANDOMNESS_RANGE: u64 = 1 << 56;

/// The randomness of a trace id: its rightmost 56 bits (7 bytes), big-endian.
pub fn randomness(trace_id: &[u8; 16]) -> u64 {
    let mut last = [0u8; 8];
    last[1..].copy_from_slice(&trace_id[9..]);
    u64::from_be_bytes(last)
}

/// The rejection threshold of `ratio`: a trace is kept when its randomness is at least this.
pub fn threshold(ratio: f64) -> u64 {
    // `as` saturates: 1.0 keeps all (0), 0.0 none (2^56, above every randomness).
    ((1.0 - ratio.clamp(0.0, 1.0)) * RANDOMNESS_RANGE as f64).round() as u64
}

pub struct Sampler {
    threshold: u64,
    /// Nanoseconds above which a span of each class is slow, indexed by [`class_index`].
    slow_ns: [u64; 6],
    /// The least of them: a span faster than this is not slow whatever its class (one comparison
    /// per span in the usual case).
    fastest_slow_ns: u64,
    stats: SampleStats,
}

fn class_index(c: LatencyClass) -> usize {
    match c {
        LatencyClass::SingleObject => 0,
        LatencyClass::NamespaceCollection => 1,
        LatencyClass::ClusterCollection => 2,
        LatencyClass::Other => 3,
        LatencyClass::Streaming => 4,
        LatencyClass::Connection => 5,
    }
}

impl Sampler {
    pub fn new(config: SampleConfig) -> Self {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let s = config.slow;
        // Streams and connections last as long as their clients want: never slow.
        let slow_ns = [
            ns(s.single_object),
            ns(s.namespace_collection),
            ns(s.cluster_collection),
            ns(s.other),
            u64::MAX,
            u64::MAX,
        ];
        let fastest_slow_ns = slow_ns.iter().copied().min().unwrap_or(u64::MAX);
        Sampler { threshold: threshold(config.ratio), slow_ns, fastest_slow_ns, stats: SampleStats::default() }
    }

    /// Decides for `trace`, every span of one trace, and marks them all with the decision.
    pub fn decide(&mut self, trace: &mut [SpanRecord]) -> Decision {
        let Some(first) = trace.first() else { return Decision::DroppedRatio };
        let decision = if trace.iter().any(|s| matches!(s.status, SpanStatus::Error(_))) {
            Decision::KeptError
        } else if trace.iter().any(|s| self.is_slow(s)) {
            Decision::KeptSlow
        } else if trace.iter().any(|s| s.remote_parent.is_some_and(|p| p.sampled)) {
            Decision::KeptParentSampled
        } else if randomness(&first.trace_id) >= self.threshold {
            Decision::KeptRatio
        } else {
            Decision::DroppedRatio
        };
        let counter = match decision {
            Decision::KeptError => &mut self.stats.kept_error,
            Decision::KeptSlow => &mut self.stats.kept_slow,
            Decision::KeptParentSampled => &mut self.stats.kept_parent_sampled,
            Decision::KeptRatio => &mut self.stats.kept_ratio,
            Decision::DroppedRatio => &mut self.stats.dropped_ratio,
        };
        *counter += 1;
        let keep = decision != Decision::DroppedRatio;
        for s in trace {
            s.sampled = keep;
        }
        decision
    }

    fn is_slow(&self, s: &SpanRecord) -> bool {
        let took = s.end_unix_nano.saturating_sub(s.start_unix_nano);
        took > self.fastest_slow_ns && took > self.slow_ns[class_index(s.latency_class)]
    }

    pub fn stats(&self) -> &SampleStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests;
