//! A collector outage under steady load: the tracer follows a real nginx that a client keeps
//! busy, each request with a path of its own (the ground truth: the client knows every path it
//! sent); the OTLP receiver is stopped, then started again on the same port.
//!
//! With the default retry buffer, every span made during the outage arrives once it is back,
//! and none twice. With a buffer too small for the outage, the tracer's final counts say how many
//! it dropped: received + dropped = made, and the exit status says spans were lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use integration_tests::tracer_log::{final_stats, tracer_log_summary};
use integration_tests::*;

/// How long the collector is down in the first case, as a collector restart or rollout might be.
const OUTAGE: Duration = Duration::from_secs(30);
/// The second case only needs the buffer to overflow.
const SHORT_OUTAGE: Duration = Duration::from_secs(10);
/// Pause between two requests of the client: about 50 spans a second.
const PACE: Duration = Duration::from_millis(20);
/// How long spans may take to arrive once the collector is back.
const CATCH_UP: Duration = Duration::from_secs(60);
/// Small enough that 10 s of this load (a batch a second, each of many spans) cannot fit.
const SMALL_BUFFER: &str = "16384";

/// A client that sends GET requests to nginx over keep-alive connections, one at a time and
/// paced, each for a path of its own, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Made>>,
}

/// One request the client made, answered.
struct Made {
    path: String,
    /// Made while the collector was down.
    in_outage: bool,
}

impl Load {
    fn start(port: u16, prefix: String, collector_down: Arc<AtomicBool>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut made = Vec::new();
            let mut conn = RawHttp::connect(port);
            while !thread_stop.load(Ordering::Relaxed) {
                let path = format!("{prefix}{}", made.len());
                conn.send(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes());
                let resp = conn.read_response(false);
                assert_eq!(resp.status, 404, "harness: nginx answers unknown paths with 404");
                made.push(Made { path, in_outage: collector_down.load(Ordering::Relaxed) });
                // Well within nginx's keepalive_requests.
                if made.len() % 200 == 0 || resp.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                    conn = RawHttp::connect(port);
                }
                std::thread::sleep(PACE);
            }
            made
        });
        Load { stop, thread }
    }

    fn finish(self) -> Vec<Made> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("load client failed")
    }
}

/// What one outage run left: the requests made, the spans received per path, the tracer's exit.
struct Outcome {
    made: Vec<Made>,
    received: BTreeMap<String, usize>,
    output: TracerOutput,
    stats: BTreeMap<String, i64>,
}

impl Outcome {
    fn stat(&self, key: &str) -> i64 {
        *self.stats.get(key).unwrap_or_else(|| panic!("no {key} in final stats\n{}", self.output.describe()))
    }

    /// Problems: a path received more than once, or one the client never made.
    fn duplicates_and_strangers(&self) -> Vec<String> {
        let made: std::collections::HashSet<&str> = self.made.iter().map(|m| m.path.as_str()).collect();
        let mut errs: Vec<String> =
            self.received.iter().filter(|(_, n)| **n > 1).map(|(p, n)| format!("{p} received {n} times")).collect();
        errs.extend(self.received.keys().filter(|p| !made.contains(p.as_str())).map(|p| format!("{p} never made")));
        errs
    }

    fn context(&self) -> String {
        format!(
            "{} requests made ({} during the outage), {} distinct paths received\n    {}",
            self.made.len(),
            self.made.iter().filter(|m| m.in_outage).count(),
            self.received.len(),
            tracer_log_summary(&self.output.stderr)
        )
    }
}

/// Traces nginx under load with `protocol`, stops the receiver for `outage`, starts it again on
/// the same port, and ends the run once the client's last span arrived (`all`: once every span
/// arrived). `extra`: more tracer flags.
fn outage_run(protocol: Protocol, outage: Duration, extra: &[&str], all: bool) -> Outcome {
    require_root();
    let nginx = Nginx::start();
    let mut rx = OtlpReceiver::start(protocol);
    let mut args = vec!["--pid".to_owned(), nginx.pid().to_string(), "--stats-interval".into(), "5".into()];
    args.extend(rx.tracer_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut tracer = Tracer::start(&args);
    tracer.wait_attached(nginx.pid());

    let prefix = format!("/api/v1/namespaces/{}/pods/p", unique_name("out-"));
    let ours = |s: &ReceivedSpan| s.attr_str("url.path").is_some_and(|p| p.starts_with(&prefix));
    let down = Arc::new(AtomicBool::new(false));
    let load = Load::start(nginx.port(), prefix.clone(), down.clone());
    // Export works before the outage.
    rx.expect("before the outage", ours, 1, SPAN_TIMEOUT);
    down.store(true, Ordering::Relaxed);
    rx.stop();
    std::thread::sleep(outage);
    rx.restart();
    down.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(3));
    let made = load.finish();

    let last = made.last().expect("the client made no request").path.clone();
    let want = if all { made.len() } else { 1 };
    let arrived = |s: &ReceivedSpan| ours(s) && (all || s.attr_str("url.path") == Some(&last));
    rx.wait_for(arrived, want, CATCH_UP);
    let output = tracer.stop();
    output.assert_no_panic();
    let mut received = BTreeMap::new();
    for s in rx.spans().iter().filter(|s| ours(s)) {
        *received.entry(s.attr_str("url.path").unwrap_or_default().to_owned()).or_insert(0) += 1;
    }
    assert!(rx.errors().is_empty(), "OTLP receiver errors: {:?}\n{}", rx.errors(), output.describe());
    let stats = final_stats(&output.stderr);
    let outcome = Outcome { made, received, output, stats };
    let in_outage = outcome.made.iter().filter(|m| m.in_outage).count();
    assert!(
        in_outage as u128 >= outage.as_millis() / PACE.as_millis() / 4,
        "harness: the client made only {in_outage} requests during the outage\n{}",
        outcome.context()
    );
    outcome
}

/// Every span made during a 30 s outage arrives once the collector is back: each path the client
/// sent arrives exactly once, and the tracer counts them as delivered after a retry, none lost.
fn every_span_of_the_outage_arrives_once(protocol: Protocol) {
    let o = outage_run(protocol, OUTAGE, &[], true);
    let mut errs = o.duplicates_and_strangers();
    errs.extend(o.made.iter().filter(|m| !o.received.contains_key(&m.path)).map(|m| {
        let when = if m.in_outage { "during" } else { "outside" };
        format!("{} (made {when} the outage) never arrived", m.path)
    }));
    for key in ["dropped_buffer_full", "dropped_export_failed", "dropped_queue_full", "rejected_by_collector"] {
        if o.stat(key) != 0 {
            errs.push(format!("{key} = {}, should be 0", o.stat(key)));
        }
    }
    if o.stat("exported_after_retry") == 0 || o.stat("export_retries") == 0 {
        errs.push("the tracer counted no retry, yet the collector was down".into());
    }
    if o.output.code() != 0 {
        errs.push(format!("exit status {}, should be 0: no span was lost", o.output.code()));
    }
    assert!(errs.is_empty(), "{protocol:?}: {}\n{}\n{}", errs.join("\n"), o.context(), o.output.describe());
}

/// A buffer too small for the outage drops its oldest batches: the final counts say how many
/// spans, received + dropped = made, none arrives twice, and the exit status is 3.
fn a_small_buffer_counts_what_it_dropped(protocol: Protocol) {
    let o = outage_run(protocol, SHORT_OUTAGE, &["--otlp-buffer-bytes", SMALL_BUFFER], false);
    let mut errs = o.duplicates_and_strangers();
    let dropped: i64 = ["dropped_buffer_full", "dropped_export_failed", "dropped_queue_full", "rejected_by_collector"]
        .iter()
        .map(|k| o.stat(k))
        .sum();
    if o.stat("dropped_buffer_full") == 0 || o.stat("dropped_buffer_full_batches") == 0 {
        errs.push("nothing dropped from a buffer too small for the outage".into());
    }
    let received = o.received.len() as i64;
    if received + dropped != o.made.len() as i64 {
        errs.push(format!("{received} received + {dropped} dropped != {} made", o.made.len()));
    }
    if o.output.code() != 3 {
        errs.push(format!("exit status {}, should be 3: spans were lost", o.output.code()));
    }
    assert!(errs.is_empty(), "{protocol:?}: {}\n{}\n{}", errs.join("\n"), o.context(), o.output.describe());
    o.output.assert_error(3, &["could not be exported"]);
}

#[test]
fn grpc_outage_every_span_arrives_once() {
    every_span_of_the_outage_arrives_once(Protocol::Grpc);
}

#[test]
fn http_outage_every_span_arrives_once() {
    every_span_of_the_outage_arrives_once(Protocol::Http);
}

#[test]
fn grpc_outage_small_buffer_counts_drops() {
    a_small_buffer_counts_what_it_dropped(Protocol::Grpc);
}

#[test]
fn http_outage_small_buffer_counts_drops() {
    a_small_buffer_counts_what_it_dropped(Protocol::Http);
}
