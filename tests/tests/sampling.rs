//! Tail-keep sampling and incoming `traceparent`, through real traced servers (the python HTTP/1.1
//! server, the Go h2c server) and a real OTLP receiver: every failing and every slow trace is
//! exported, a share of the rest chosen by trace id, none partially; a request with a
//! `traceparent` joins its caller's trace, and a sampled one is kept whatever the ratio.
//!
//! Ground truth: the test knows which requests fail and which are slow (the server sleeps), and
//! recomputes the ratio rule from the trace ids it receives (OpenTelemetry's: the trace id's
//! rightmost 56 bits against `(1 - ratio) × 2^56`).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use harness::SAMPLING_DECISIONS;
use integration_tests::gotls::GoServer;
use integration_tests::tracer_log::final_stats;
use integration_tests::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The ratio rule, written again from its definition: kept when the rightmost 56 bits of the
/// trace id are at least `(1 - ratio) × 2^56`.
fn kept_by_ratio(trace_id: &str, ratio: f64) -> bool {
    assert_eq!(trace_id.len(), 32, "a trace id is 32 hex digits: {trace_id:?}");
    let randomness = u64::from_str_radix(&trace_id[18..], 16).expect("hex trace id");
    randomness >= ((1.0 - ratio) * 2f64.powi(56)).round() as u64
}

fn pod_path(name: &str) -> String {
    format!("/api/v1/namespaces/sampling/pods/{name}")
}

/// `n` random bytes as lowercase hex.
fn random_hex(n: usize) -> String {
    (0..n.div_ceil(8)).map(|i| format!("{:016x}", RandomState::new().hash_one(i))).collect::<String>()[..2 * n]
        .to_owned()
}

/// The sampler's counters and the span counts of the `final stats` line.
fn decisions(stderr: &str) -> (BTreeMap<String, i64>, [i64; 5]) {
    let stats = final_stats(stderr);
    let d = SAMPLING_DECISIONS.map(|k| stats.get(k).copied().unwrap_or(-1));
    (stats, d)
}

/// The count of every `http.server.request.duration` series on the agent's Prometheus page.
fn server_requests_measured(addr: &str) -> u64 {
    let out = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "10", &format!("http://{addr}/metrics")])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "harness: scraping http://{addr}/metrics failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count{"))
        .map(|l| l.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()).expect("a count"))
        .sum()
}

/// `--sample-ratio 0.1`, a slow threshold of 300 ms for single-object calls, and a known workload
/// on the python server: 400 fast GETs of distinct pods, 6 GETs the server answers after 500 ms,
/// 10 answered 500 and 5 answered 503. Every slow and failing request is exported; the fast ones
/// that are exported all pass the ratio rule, and there are as many as a 10 % draw gives (within 5
/// standard deviations); each trace is exported whole (one span, once); the agent's decision
/// counters add up to the requests made and agree with what arrived; the request metrics count
/// all of them.
#[test]
fn tail_keep_sampling_exports_every_failing_and_slow_trace_and_a_share_of_the_rest() {
    const RATIO: f64 = 0.1;
    const SLOW_MS: u64 = 300;
    const ORDINARY: usize = 400;
    const SLOW: usize = 6;
    const FAILED: [(u16, usize); 2] = [(500, 10), (503, 5)];
    let srv = PythonHttpServer::start();
    let pid = srv.pid().to_string();
    let metrics_addr = format!("127.0.0.1:{}", harness::free_port());
    let extra = ["--sample-ratio", "0.1", "--slow-single-object", "300ms", "--metrics-addr", &metrics_addr];
    let mut sess = TraceSession::start(Sink::Grpc, &["--pid".to_owned(), pid], &extra, &[srv.pid()]);

    // One curl per kind of request, each keeping its connection: the ordinary ones first.
    let ordinary: Vec<String> = (0..ORDINARY).map(|i| pod_path(&format!("o-{i}"))).collect();
    let run = curl(&ordinary.iter().map(|p| srv.url(p)).collect::<Vec<_>>());
    assert!(run.transfers.iter().all(|t| t.code == 200), "harness: an ordinary request failed");
    let client_time: HashMap<&str, Duration> =
        ordinary.iter().map(String::as_str).zip(run.transfers.iter().map(|t| t.time_total)).collect();
    let slow: Vec<String> = (0..SLOW).map(|i| pod_path(&format!("slow-{i}"))).collect();
    let run = curl(&slow.iter().map(|p| srv.url(&format!("{p}?sleepMs=500"))).collect::<Vec<_>>());
    assert!(run.transfers.iter().all(|t| t.code == 200 && t.time_total >= Duration::from_millis(500)));
    let failing: Vec<String> = FAILED
        .iter()
        .flat_map(|&(code, n)| std::iter::repeat_n(format!("/status/{code}"), n))
        .map(|p| srv.url(&p))
        .collect();
    let run = curl(&failing);
    let codes: Vec<u16> = run.transfers.iter().map(|t| t.code).collect();
    assert_eq!(codes, FAILED.iter().flat_map(|&(c, n)| vec![c; n]).collect::<Vec<_>>(), "harness");

    let known =
        |s: &ReceivedSpan| s.attr_str("url.path").is_some_and(|p| p.contains("slow-") || p.starts_with("/status/"));
    let failed_total: usize = FAILED.iter().map(|(_, n)| n).sum();
    sess.wait_spans(known, SLOW + failed_total, SPAN_TIMEOUT);
    // Metrics count every request, sampled or not (read while the agent still serves them).
    let measured = server_requests_measured(&metrics_addr);
    let fin = sess.finish(SETTLE);
    let mut errs = Vec::new();
    let requests_made = ORDINARY + SLOW + failed_total;
    if measured != requests_made as u64 {
        errs.push(format!("the request duration histograms counted {measured} requests, {requests_made} were made"));
    }

    // No partial trace: every trace id arrived with exactly its one span, and as a root.
    let mut by_trace: HashMap<&str, usize> = HashMap::new();
    for s in &fin.spans {
        *by_trace.entry(s.trace_id.as_str()).or_default() += 1;
        if !s.parent_span_id.is_empty() || s.kind != "server" {
            errs.push(format!("not a root server span: {}", s.summary()));
        }
    }
    errs.extend(by_trace.iter().filter(|(_, n)| **n != 1).map(|(t, n)| format!("trace {t} arrived with {n} spans")));

    let mut by_path: HashMap<&str, Vec<&ReceivedSpan>> = HashMap::new();
    for s in &fin.spans {
        by_path.entry(s.attr_str("url.path").unwrap_or("")).or_default().push(s);
    }
    for &(code, n) in &FAILED {
        let got = by_path.remove(format!("/status/{code}").as_str()).unwrap_or_default();
        if got.len() != n || got.iter().any(|s| s.status_code != "error") {
            errs.push(format!("{n} failing requests answered {code}: {} error spans arrived", got.len()));
        }
    }
    for p in &slow {
        match by_path.remove(p.as_str()).unwrap_or_default()[..] {
            [s] if s.duration() >= Duration::from_millis(500) => {}
            ref got => {
                errs.push(format!("slow request {p}: {} spans arrived, expected one of 500 ms or more", got.len()))
            }
        }
    }
    // The ordinary ones: each arrived at most once; one that arrived was slow or passes the rule,
    // and one that curl saw answered within the threshold cannot have been slow.
    let slow_threshold = Duration::from_millis(SLOW_MS);
    let (mut by_ratio, mut ordinary_slow) = (0i64, 0i64);
    for p in &ordinary {
        let got = by_path.remove(p.as_str()).unwrap_or_default();
        let [s] = got[..] else {
            if !got.is_empty() {
                errs.push(format!("{p}: {} spans arrived", got.len()));
            }
            continue;
        };
        if s.duration() > slow_threshold {
            ordinary_slow += 1;
        } else if kept_by_ratio(&s.trace_id, RATIO) {
            by_ratio += 1;
        } else {
            errs.push(format!("{p} was exported although neither slow nor chosen by its trace id: {}", s.summary()));
        }
        if client_time[p.as_str()] < slow_threshold && s.duration() > slow_threshold {
            errs.push(format!("{p}: the span is longer than what its client measured: {}", s.summary()));
        }
    }
    errs.extend(by_path.iter().map(|(p, spans)| format!("{} spans of an unknown request {p:?}", spans.len())));

    // About a tenth of the ordinary requests that were not slow: a binomial draw, within 5σ.
    let drawn = ORDINARY as i64 - ordinary_slow;
    let (mean, sd) = (drawn as f64 * RATIO, (drawn as f64 * RATIO * (1.0 - RATIO)).sqrt());
    if (by_ratio as f64 - mean).abs() > 5.0 * sd {
        errs.push(format!(
            "{by_ratio} of {drawn} ordinary traces kept by the ratio, expected {mean:.0} ± {:.0}",
            5.0 * sd
        ));
    }
    // Kept whatever their trace id: some of them, surely, fail the ratio rule (all 21 passing it
    // has a probability of 10^-21).
    let forced: Vec<&ReceivedSpan> = fin.spans.iter().filter(|s| known(s)).collect();
    if forced.iter().all(|s| kept_by_ratio(&s.trace_id, RATIO)) {
        errs.push("every failing and slow trace also passes the ratio rule: the ratio decided them".into());
    }

    // The agent's counters: one decision per request, and as many of each as arrived.
    let requests = (ORDINARY + SLOW + failed_total) as i64;
    let (stats, d) = decisions(&fin.output.stderr);
    let want = [failed_total as i64, SLOW as i64 + ordinary_slow, 0, by_ratio, drawn - by_ratio];
    if d != want || d.iter().sum::<i64>() != requests || stats.get("spans") != Some(&requests) {
        errs.push(format!(
            "sampling counters {d:?} (spans {:?}), expected {want:?} over {requests} requests",
            stats.get("spans")
        ));
    }
    if stats.get("exported") != Some(&(fin.spans.len() as i64)) {
        errs.push(format!("exported={:?} but {} spans arrived", stats.get("exported"), fin.spans.len()));
    }
    fin.assert_ok("tail-keep sampling at ratio 0.1", &errs);
}

/// An incoming `traceparent`, over HTTP/1.1 (python server) and HTTP/2 (Go h2c server), at
/// `--sample-ratio 0`: a sampled caller's request is kept, in the caller's trace as a child of the
/// caller's span; an unsampled caller's is dropped unless it failed; an invalid traceparent is
/// ignored; the header is never an attribute.
#[test]
fn an_incoming_traceparent_joins_the_callers_trace_and_a_sampled_one_is_always_kept() {
    let py = PythonHttpServer::start();
    let h2 = GoServer::h2c();
    let args: Vec<String> = [py.pid(), h2.pid()].iter().flat_map(|p| ["--pid".to_owned(), p.to_string()]).collect();
    let mut sess = TraceSession::start(Sink::Grpc, &args, &["--sample-ratio", "0"], &[py.pid(), h2.pid()]);
    let callers: Vec<(String, String)> = (0..4).map(|_| (random_hex(16), random_hex(8))).collect();
    let traceparent = |i: usize, flags: &str| format!("traceparent: 00-{}-{}-{flags}", callers[i].0, callers[i].1);
    let get = |url: String, headers: &[String], h2c: bool| {
        let mut a: Vec<String> = headers.iter().flat_map(|h| ["-H".to_owned(), h.clone()]).collect();
        if h2c {
            a.push("--http2-prior-knowledge".into());
        }
        a.push(url);
        curl_one(&a).code
    };
    assert_eq!(get(py.url(&pod_path("tp-sampled")), &[traceparent(0, "01")], false), 200);
    assert_eq!(get(py.url(&pod_path("tp-unsampled")), &[traceparent(1, "00")], false), 200);
    assert_eq!(get(py.url("/status/500"), &[traceparent(2, "00")], false), 500);
    let uppercase = traceparent(3, "01").replace(&callers[3].0, &callers[3].0.to_uppercase());
    assert_eq!(get(py.url(&pod_path("tp-invalid")), &[uppercase], false), 200);
    assert_eq!(get(py.url(&pod_path("tp-none")), &[], false), 200);
    assert_eq!(get(h2.url(&pod_path("tp-h2")), &[traceparent(3, "01")], true), 200);

    sess.wait_spans(|_| true, 3, SPAN_TIMEOUT);
    let fin = sess.finish(SETTLE);
    let mut errs = Vec::new();
    let expected =
        [(pod_path("tp-sampled"), 0, "1.1"), ("/status/500".to_owned(), 2, "1.1"), (pod_path("tp-h2"), 3, "2")];
    for (path, caller, version) in &expected {
        let got: Vec<&ReceivedSpan> =
            fin.spans.iter().filter(|s| s.attr_str("url.path") == Some(path.as_str())).collect();
        let (trace_id, parent) = &callers[*caller];
        match got[..] {
            [s] if &s.trace_id == trace_id
                && &s.parent_span_id == parent
                && s.span_id != *parent
                && s.kind == "server"
                && s.attr_str("network.protocol.version") == Some(version) => {}
            _ => errs.push(format!("{path}: expected one server span in trace {trace_id} under {parent}, got {got:?}")),
        }
    }
    if fin.spans.len() != expected.len() {
        errs.push(format!(
            "{} spans arrived, expected {} (the rest dropped at ratio 0)",
            fin.spans.len(),
            expected.len()
        ));
    }
    // The header's text is no attribute; its ids are the span's own fields only.
    for s in &fin.spans {
        let attrs = format!("{:?}", s.attributes).to_lowercase();
        if attrs.contains("traceparent") || callers.iter().any(|(t, p)| attrs.contains(t) || attrs.contains(p)) {
            errs.push(format!("the traceparent leaked into the attributes of {}", s.summary()));
        }
    }
    let (stats, d) = decisions(&fin.output.stderr);
    // Kept: the failed one (error first), the two sampled; dropped: unsampled, invalid, none.
    if d != [1, 0, 2, 0, 3] {
        errs.push(format!("sampling counters {d:?}, expected [1, 0, 2, 0, 3]"));
    }
    let remote = (stats.get("trace_remote_parents"), stats.get("trace_roots"));
    if remote != (Some(&4), Some(&2)) {
        errs.push(format!("(trace_remote_parents, trace_roots) = {remote:?}, expected (4, 2)"));
    }
    fin.assert_ok("incoming traceparent", &errs);
}

/// A sampling flag out of range, or not a number or a duration, is refused before anything is
/// loaded: one `error:` line, exit 2 like every bad flag.
#[test]
fn bad_sampling_flags_are_refused() {
    // `--flag=value`: a value that starts with a dash is not taken for a flag.
    for (arg, needle) in [
        ("--sample-ratio=1.5", "sample-ratio"),
        ("--sample-ratio=-0.1", "sample-ratio"),
        ("--sample-ratio=a tenth", "sample-ratio"),
        ("--sample-ratio=NaN", "sample-ratio"),
        ("--slow-single-object=1", "slow-single-object"),
        ("--slow-cluster-list=-5s", "slow-cluster-list"),
    ] {
        let out = Tracer::run(&[arg, "--duration", "2"], RUN_TIMEOUT);
        out.assert_error(2, &[needle]);
    }
}
