//! Correlation's logic on spans and goroutine events made here, as assembly and the probes hand
//! them over (the probes themselves are the integration tests' business).

use std::{collections::HashSet, sync::Arc};

use super::*;
use crate::events::GoLinkKind;
use crate::span::SpanOrigin;
use crate::span::{LatencyClass, ProcessInfo, RemoteParent, SpanKind, SpanStatus};
use tracer_common::GO_LINK_PATH;

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

pub(super) const PID: u32 = 100;
/// A millisecond, in kernel nanoseconds.
pub(super) const MS: u64 = 1_000_000;

/// A correlator, the goroutine events and spans handed to it, and what went out.
pub(super) struct Run {
    pub c: Correlator,
    pub out: Vec<SpanRecord>,
}

/// Where a span was seen.
#[derive(Clone, Copy, Default)]
pub(super) struct At {
    pub pid: u32,
    pub goroutine: u64,
    pub fd: i32,
    pub stream: Option<u32>,
    pub start_ms: u64,
    pub end_ms: u64,
}

impl Run {
    pub fn new() -> Self {
        Run::with(CorrelateConfig::default())
    }

    pub fn with(config: CorrelateConfig) -> Self {
        Run { c: Correlator::with_config(config), out: Vec::new() }
    }

    pub fn spawn(&mut self, pid: u32, ms: u64, child: u64, parent: u64) {
        self.c.on_go_spawn(&GoSpawn { tgid: pid, ts_ns: ms * MS, child, parent });
    }

    fn link(&mut self, pid: u32, ns: u64, goroutine: u64, kind: GoLinkKind) {
        self.c.on_go_link(&GoLink { tgid: pid, ts_ns: ns, goroutine, kind });
    }

    /// grpc-go's writer `writer` takes the HEADERS of `stream` for `caller`.
    pub fn grpc(&mut self, pid: u32, ms: u64, writer: u64, stream: u32, caller: u64) {
        let kind = GoLinkKind::GrpcClientStream { stream_id: stream, caller, path: [0; GO_LINK_PATH], path_len: 0 };
        self.link(pid, ms * MS, writer, kind);
    }

    /// net/http's write loop `writer` writes `caller`'s request next.
    pub fn http1(&mut self, pid: u32, ms: u64, writer: u64, caller: u64) {
        self.link(pid, ms * MS, writer, GoLinkKind::Http1ClientWrite { caller });
    }

    /// `handler` runs the handler of HTTP/2 stream `stream` of `fd`.
    pub fn h2(&mut self, pid: u32, ms: u64, handler: u64, fd: i32, stream: u32) {
        self.link(pid, ms * MS, handler, GoLinkKind::H2ServerHandler { fd, stream_id: stream });
    }

    pub fn span(kind: SpanKind, name: &str, at: At) -> SpanRecord {
        let mut s = assembled(name);
        s.kind = kind;
        s.start_unix_nano = at.start_ms * MS;
        s.end_unix_nano = at.end_ms * MS;
        s.origin = SpanOrigin {
            tgid: at.pid,
            fd: at.fd,
            conn_opened_ns: 1,
            stream_id: at.stream,
            goroutine: at.goroutine,
            start_ns: at.start_ms * MS,
            end_ns: at.end_ms * MS,
            ..SpanOrigin::default()
        };
        s
    }

    /// Hands `span` in when it ended (as assembly does).
    pub fn hand(&mut self, span: SpanRecord) {
        let now = span.origin.end_ns;
        self.hand_at(span, now);
    }

    pub fn hand_at(&mut self, span: SpanRecord, now_ns: u64) {
        let mut spans = vec![span];
        self.c.intake(&mut spans, now_ns, &mut self.out);
    }

    pub fn server(&mut self, name: &str, at: At) {
        self.hand(Run::span(SpanKind::Server, name, at));
    }

    pub fn client(&mut self, name: &str, at: At) {
        self.hand(Run::span(SpanKind::Client, name, at));
    }

    pub fn tick(&mut self, ms: u64) {
        self.c.release_due(ms * MS, &mut self.out);
    }

    /// The one span named `name` gone out.
    pub fn get(&self, name: &str) -> &SpanRecord {
        let mut found = self.out.iter().filter(|s| s.name == name);
        let s = found.next().unwrap_or_else(|| panic!("{name} has not gone out"));
        assert!(found.next().is_none(), "{name} went out twice");
        s
    }

    pub fn gone_out(&self, name: &str) -> bool {
        self.out.iter().any(|s| s.name == name)
    }

    /// The name of the parent of `name`, among the spans gone out (None: a root).
    pub fn parent(&self, name: &str) -> Option<&str> {
        let s = self.get(name);
        let parent = s.parent_span_id?;
        let p = self.out.iter().find(|p| p.span_id == parent).unwrap_or_else(|| panic!("{name}'s parent is not out"));
        assert_eq!(p.trace_id, s.trace_id, "{name} is not in its parent's trace");
        Some(&p.name)
    }

    /// Every span's ids are valid and distinct; every parent named is a span gone out, in the
    /// same trace (spans with a remote parent aside), and gone out before it or with it.
    pub fn check_ids(&self) {
        let ids: HashSet<[u8; 8]> = self.out.iter().map(|s| s.span_id).collect();
        assert_eq!(ids.len(), self.out.len(), "span ids repeat");
        for (i, s) in self.out.iter().enumerate() {
            assert!(s.span_id != [0; 8] && s.trace_id != [0; 16]);
            let Some(parent) = s.parent_span_id else { continue };
            if s.remote_parent.is_some_and(|r| r.span_id == parent) {
                continue;
            }
            let p = self.out[..i].iter().find(|p| p.span_id == parent);
            let p = p.unwrap_or_else(|| panic!("{}'s parent did not go out before it", s.name));
            assert_eq!((p.trace_id, p.sampled), (s.trace_id, s.sampled), "{} and its parent {}", s.name, p.name);
        }
    }
}

/// What can have no parent here goes out at once: a connection span, and a call no Go probe saw
/// (a non-Go client), so that nothing waits for nothing.
#[test]
fn spans_with_nothing_to_wait_for_go_out_at_once() {
    let mut r = Run::new();
    let mut connection = Run::span(SpanKind::Client, "connection", At { pid: PID, goroutine: 0xc0, ..At::default() });
    connection.latency_class = LatencyClass::Connection;
    r.hand(connection);
    r.client("curl call", At { pid: PID, goroutine: 0, fd: 3, start_ms: 1, end_ms: 2, ..At::default() });
    assert_eq!((r.parent("connection"), r.parent("curl call")), (None, None));
    let s = r.c.stats();
    assert_eq!((s.held, s.roots, s.root_reasons.standalone, s.root_reasons.no_goroutine), (0, 2, 1, 1));
}
