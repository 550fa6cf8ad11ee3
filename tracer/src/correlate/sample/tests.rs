use std::time::Duration;

use rand::{RngCore, SeedableRng, rngs::SmallRng};

use super::*;
use crate::{correlate::tests::assembled, span::RemoteParent};

const MS: u64 = 1_000_000;

/// A span of `class` that took `ms`, in the trace `trace_id`.
fn span(trace_id: [u8; 16], class: LatencyClass, ms: u64) -> SpanRecord {
    let mut s = assembled("GET /x");
    s.trace_id = trace_id;
    s.latency_class = class;
    s.start_unix_nano = 1_700_000_000_000_000_000;
    s.end_unix_nano = s.start_unix_nano + ms * MS;
    s
}

/// A trace id whose randomness (rightmost 56 bits) is `r`; the other bits are set, which must not
/// matter.
fn id_with_randomness(r: u64) -> [u8; 16] {
    let mut id = [0xff; 16];
    id[9..].copy_from_slice(&r.to_be_bytes()[1..]);
    id
}

fn sampler(ratio: f64) -> Sampler {
    Sampler::new(SampleConfig { ratio, ..SampleConfig::default() })
}

#[test]
fn randomness_is_the_rightmost_56_bits_and_the_threshold_is_otel_s() {
    assert_eq!(randomness(&id_with_randomness(0)), 0);
    assert_eq!(randomness(&[0xff; 16]), (1 << 56) - 1);
    let mut id = [0; 16];
    id[8] = 0xff; // the eighth byte is not part of it
    id[15] = 1;
    assert_eq!(randomness(&id), 1);
    assert_eq!(threshold(1.0), 0);
    assert_eq!(threshold(0.0), 1 << 56);
    assert_eq!(threshold(0.5), 1 << 55);
    assert_eq!(threshold(0.25), 3 << 54);
    // At the threshold a trace is kept, just below it dropped.
    let mut s = sampler(0.25);
    let t = threshold(0.25);
    assert_eq!(s.decide(&mut [span(id_with_randomness(t), LatencyClass::Other, 1)]), Decision::KeptRatio);
    assert_eq!(s.decide(&mut [span(id_with_randomness(t - 1), LatencyClass::Other, 1)]), Decision::DroppedRatio);
    // Ratio 0 drops the largest randomness, ratio 1 keeps the smallest.
    assert_eq!(sampler(0.0).decide(&mut [span([0xff; 16], LatencyClass::Other, 1)]), Decision::DroppedRatio);
    assert_eq!(sampler(1.0).decide(&mut [span([0; 16], LatencyClass::Other, 1)]), Decision::KeptRatio);
}

/// Errors, then slow spans, then a sampled caller are kept whatever the ratio; each trace is
/// counted once, by the first reason that holds.
#[test]
fn errors_slow_traces_and_sampled_callers_are_always_kept() {
    let mut s = sampler(0.0);
    let id = [0xff; 16];
    let mut failed = span(id, LatencyClass::Other, 1);
    failed.status = SpanStatus::Error("HTTP 503".into());
    let sampled_caller = RemoteParent { trace_id: id, span_id: [1; 8], sampled: true };
    let unsampled_caller = RemoteParent { sampled: false, ..sampled_caller };
    let with_caller = |caller| SpanRecord { remote_parent: Some(caller), ..span(id, LatencyClass::Other, 1) };
    let cases = [
        (failed.clone(), Decision::KeptError),
        (SpanRecord { remote_parent: Some(sampled_caller), ..failed }, Decision::KeptError),
        (span(id, LatencyClass::SingleObject, 1001), Decision::KeptSlow),
        (span(id, LatencyClass::SingleObject, 1000), Decision::DroppedRatio),
        (span(id, LatencyClass::NamespaceCollection, 4000), Decision::DroppedRatio),
        (span(id, LatencyClass::NamespaceCollection, 5001), Decision::KeptSlow),
        (span(id, LatencyClass::ClusterCollection, 29_000), Decision::DroppedRatio),
        (span(id, LatencyClass::ClusterCollection, 30_001), Decision::KeptSlow),
        (span(id, LatencyClass::Other, 1001), Decision::KeptSlow),
        (span(id, LatencyClass::Streaming, 3_600_000), Decision::DroppedRatio),
        (span(id, LatencyClass::Connection, 3_600_000), Decision::DroppedRatio),
        (with_caller(sampled_caller), Decision::KeptParentSampled),
        (with_caller(unsampled_caller), Decision::DroppedRatio),
    ];
    for (i, (span, want)) in cases.into_iter().enumerate() {
        let mut trace = [span];
        assert_eq!(s.decide(&mut trace), want, "case {i}: {:?}", trace[0]);
        assert_eq!(trace[0].sampled, want != Decision::DroppedRatio, "case {i}");
    }
    let want = SampleStats { kept_error: 2, kept_slow: 4, kept_parent_sampled: 1, kept_ratio: 0, dropped_ratio: 6 };
    assert_eq!(s.stats(), &want);
}

#[test]
fn thresholds_are_configurable() {
    let slow = SlowThresholds {
        single_object: Duration::from_millis(100),
        namespace_collection: Duration::from_millis(200),
        cluster_collection: Duration::from_millis(300),
        other: Duration::from_millis(50),
    };
    let mut s = Sampler::new(SampleConfig { ratio: 0.0, slow });
    for (class, ms, want) in [
        (LatencyClass::SingleObject, 101, Decision::KeptSlow),
        (LatencyClass::SingleObject, 99, Decision::DroppedRatio),
        (LatencyClass::NamespaceCollection, 150, Decision::DroppedRatio),
        (LatencyClass::NamespaceCollection, 201, Decision::KeptSlow),
        (LatencyClass::ClusterCollection, 250, Decision::DroppedRatio),
        (LatencyClass::ClusterCollection, 301, Decision::KeptSlow),
        (LatencyClass::Other, 51, Decision::KeptSlow),
        (LatencyClass::Other, 49, Decision::DroppedRatio),
    ] {
        assert_eq!(s.decide(&mut [span([0xff; 16], class, ms)]), want, "{class:?} {ms} ms");
    }
}

/// A trace of several spans is decided once: one failed or slow span keeps them all, and a
/// dropped trace drops them all.
#[test]
fn a_trace_is_kept_or_dropped_whole() {
    let mut s = sampler(0.0);
    let id = [0xff; 16];
    let mut trace =
        [span(id, LatencyClass::SingleObject, 3), span(id, LatencyClass::Other, 1), span(id, LatencyClass::Other, 2)];
    trace[2].status = SpanStatus::Error("etcdserver: request timed out".into());
    assert_eq!(s.decide(&mut trace), Decision::KeptError);
    assert!(trace.iter().all(|s| s.sampled));
    let mut trace = [span(id, LatencyClass::SingleObject, 3), span(id, LatencyClass::Other, 1001)];
    assert_eq!(s.decide(&mut trace), Decision::KeptSlow);
    assert!(trace.iter().all(|s| s.sampled));
    let mut trace = [span(id, LatencyClass::SingleObject, 3), span(id, LatencyClass::Other, 1)];
    assert_eq!(s.decide(&mut trace), Decision::DroppedRatio);
    assert!(trace.iter().all(|s| !s.sampled));
    assert_eq!(s.stats().kept_error + s.stats().kept_slow + s.stats().dropped_ratio, 3, "counted once per trace");
}

/// Over many random trace ids the kept share is the ratio (within 5 standard deviations), and
/// the decision depends on the trace id alone: another sampler decides the same.
#[test]
fn the_kept_share_is_the_ratio_and_agents_agree() {
    const N: u64 = 100_000;
    let mut rng = SmallRng::seed_from_u64(26);
    for ratio in [0.01, 0.1, 0.5, 0.9] {
        let (mut a, mut b) = (sampler(ratio), sampler(ratio));
        for _ in 0..N {
            let mut id = [0u8; 16];
            rng.fill_bytes(&mut id);
            let d = a.decide(&mut [span(id, LatencyClass::Other, 1)]);
            assert_eq!(b.decide(&mut [span(id, LatencyClass::Other, 1)]), d);
        }
        let kept = a.stats().kept_ratio as f64;
        let (mean, sd) = (N as f64 * ratio, (N as f64 * ratio * (1.0 - ratio)).sqrt());
        assert!((kept - mean).abs() < 5.0 * sd, "ratio {ratio}: kept {kept} of {N}");
        assert_eq!(a.stats().kept_ratio + a.stats().dropped_ratio, N);
    }
}
