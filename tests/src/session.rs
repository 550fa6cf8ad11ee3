//! A tracer run with its span sink (OTLP gRPC, OTLP/HTTP, or `--output json`).

use std::time::Duration;

use crate::host::{now_unix_nanos, require_root};
use crate::otlp::{OtlpReceiver, Protocol};
use crate::span::ReceivedSpan;
use crate::tracer::{Tracer, TracerOutput};

/// Where the spans of a [`TraceSession`] go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    Grpc,
    Http,
    Json,
}

/// A tracer attached to some pids, plus its sink.
pub struct TraceSession {
    // field order = drop order: the tracer goes before the receiver
    pub tracer: Tracer,
    pub rx: Option<OtlpReceiver>,
    pub sink: Sink,
    /// Unix ns just after attach: every span must start after (minus slack).
    pub window_start: u64,
}

/// Result of [`TraceSession::finish`].
pub struct Finished {
    pub spans: Vec<ReceivedSpan>,
    pub output: TracerOutput,
    /// The OTLP receiver, for what it saw of the requests (None for the JSON sink).
    pub rx: Option<OtlpReceiver>,
}

impl TraceSession {
    /// Starts the tracer with `target_args` (e.g. `--pid N`) + `extra` + the sink's flags, and waits
    /// for `target attached` of each of `attach_pids`.
    pub fn start(sink: Sink, target_args: &[String], extra: &[&str], attach_pids: &[u32]) -> TraceSession {
        Self::start_env(sink, target_args, extra, attach_pids, &[])
    }

    /// [`Self::start`] with extra environment variables for the tracer (e.g. its `PATH`).
    pub fn start_env(
        sink: Sink,
        target_args: &[String],
        extra: &[&str],
        attach_pids: &[u32],
        envs: &[(&str, &str)],
    ) -> TraceSession {
        require_root();
        let rx = match sink {
            Sink::Grpc => Some(OtlpReceiver::start(Protocol::Grpc)),
            Sink::Http => Some(OtlpReceiver::start(Protocol::Http)),
            Sink::Json => None,
        };
        let mut args: Vec<String> = target_args.to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        match &rx {
            Some(rx) => args.extend(rx.tracer_args()),
            None => args.extend(["--output".to_owned(), "json".to_owned()]),
        }
        let mut tracer = Tracer::start_env(&args, envs);
        for pid in attach_pids {
            tracer.wait_attached(*pid);
        }
        TraceSession { tracer, rx, sink, window_start: now_unix_nanos() }
    }

    /// `--pid PID` for one target.
    pub fn for_pid(sink: Sink, pid: u32) -> TraceSession {
        Self::start(sink, &["--pid".to_owned(), pid.to_string()], &[], &[pid])
    }

    /// Waits until `count` spans match (or timeout) and returns the matching ones.
    pub fn wait_spans<F: Fn(&ReceivedSpan) -> bool>(
        &mut self,
        pred: F,
        count: usize,
        timeout: Duration,
    ) -> Vec<ReceivedSpan> {
        match &self.rx {
            Some(rx) => rx.wait_for(pred, count, timeout),
            None => self.tracer.wait_json_spans(pred, count, timeout),
        }
    }

    /// Spans so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        match &self.rx {
            Some(rx) => rx.spans(),
            None => self.tracer.json_spans(),
        }
    }

    /// Waits `settle` for stragglers, stops the tracer with SIGINT and asserts a clean exit (code 0,
    /// no panic, `final stats` logged, a clean OTLP conversation). Returns every span received.
    pub fn finish(self, settle: Duration) -> Finished {
        std::thread::sleep(settle);
        let TraceSession { tracer, rx, .. } = self;
        let output = tracer.stop();
        output.assert_no_panic();
        output.assert_code(0);
        assert!(
            output.stderr.contains("final stats"),
            "tracer did not log `final stats` at exit\n{}",
            output.describe()
        );
        let spans = match &rx {
            Some(rx) => {
                assert!(rx.errors().is_empty(), "OTLP receiver errors: {:?}\n{}", rx.errors(), output.describe());
                for h in rx.http_requests() {
                    assert_eq!(h.path, "/v1/traces", "OTLP/HTTP request path");
                    assert_eq!(h.method, "POST");
                    assert!(h.content_type.starts_with("application/x-protobuf"), "content-type {:?}", h.content_type);
                }
                if rx.protocol() == Protocol::Http && !rx.spans().is_empty() {
                    assert!(!rx.http_requests().is_empty());
                }
                rx.spans()
            }
            None => output.json_spans(),
        };
        Finished { spans, output, rx }
    }
}
