//! HTTP/1.1 exchanges → one span per request.
//!
//! Requests and responses are decoded separately per direction and paired in order (HTTP/1.1
//! answers in request order, pipelining included). Server spans start when the first request byte
//! was read and end when the last response byte was written; client spans start when the first
//! request byte was written and end when the last response byte was read.

use std::collections::VecDeque;

use crate::{
    meaning::k8s,
    protocols::{
        Timing,
        http1::{Head, Http1Decoder, Http1Event, MessageKind, RequestHead, TRUNCATED_HEAD},
    },
    span::{LatencyClass, SpanRecord, SpanStatus},
    stream::Role,
    stream::{Direction, Segment},
};

use super::{AssembleStats, attrs, context::SpanContext};

/// Requests in flight per connection at most (pipelining depth); beyond it the oldest is dropped.
const MAX_PENDING: usize = 64;

struct Pending {
    head: RequestHead,
    info: k8s::RequestInfo,
    start_ns: u64,
    /// The goroutine the span's origin names (see `SpanOrigin::goroutine`).
    goroutine: u64,
    request_body: Option<u64>,
    /// The head was longer than the capture: its end (and body) are unknown, the rest is known.
    truncated: bool,
    response: Option<(u16, Timing)>,
    /// The response was an orphan that had already ended: report once the request is complete.
    answered: Option<(u64, Timing)>,
    /// Already reported (long-running requests are reported when their response starts).
    reported: bool,
}

pub struct Http1Conn {
    role: Role,
    requests: Http1Decoder,
    responses: Http1Decoder,
    pending: VecDeque<Pending>,
    /// The response being decoded is an interim 1xx: ignore its End.
    ignore_response_end: bool,
    /// A response that arrived before any request it could answer. The two directions are
    /// reported by different threads (Go's read and write loops), so a response can be processed
    /// just before its request; kept until the next request says whether it was this one's.
    orphan: Option<Orphan>,
}

struct Orphan {
    status: u16,
    first_byte: Timing,
    /// Body size and last byte, once the response ended.
    end: Option<(u64, Timing)>,
}

impl Http1Conn {
    pub fn new(role: Role) -> Self {
        Http1Conn {
            role,
            requests: Http1Decoder::new(MessageKind::Request),
            responses: Http1Decoder::new(MessageKind::Response),
            pending: VecDeque::new(),
            ignore_response_end: false,
            orphan: None,
        }
    }

    /// Events were lost: start over, waiting for the next message start. Returns requests dropped.
    pub fn reset(&mut self) -> usize {
        let dropped = self.pending.iter().filter(|p| !p.reported).count();
        *self = Http1Conn::new(self.role);
        dropped
    }

    fn requests_dir(&self) -> Direction {
        match self.role {
            Role::Server => Direction::Ingress,
            Role::Client => Direction::Egress,
        }
    }

    /// `events` is the assembler's scratch vector, empty on entry and on return: one per
    /// connection would be RSS with 10k idle connections, one per call an allocation per segment.
    pub fn feed(
        &mut self,
        ctx: &SpanContext<'_>,
        dir: Direction,
        seg: &Segment<'_>,
        events: &mut Vec<Http1Event>,
        stats: &mut AssembleStats,
        out: &mut Vec<SpanRecord>,
    ) {
        if dir == self.requests_dir() {
            self.requests.feed(seg, events);
            for ev in events.drain(..) {
                self.on_request_event(ctx, ev, seg.goroutine, stats, out);
            }
        } else {
            self.responses.feed(seg, events);
            for ev in events.drain(..) {
                self.on_response_event(ctx, ev, seg, stats, out);
            }
        }
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = VecDeque::new();
        }
    }

    fn on_request_event(
        &mut self,
        ctx: &SpanContext<'_>,
        ev: Http1Event,
        seg_goroutine: u64,
        stats: &mut AssembleStats,
        out: &mut Vec<SpanRecord>,
    ) {
        match ev {
            Http1Event::Head { head: Head::Request(head), first_byte } => {
                if &*head.method == "HEAD" {
                    self.responses.expect_no_body_for_next_response();
                }
                if self.pending.len() >= MAX_PENDING {
                    self.pending.pop_front();
                    stats.pending_overflow += 1;
                }
                let info = k8s::request_info(&head.method, &head.target);
                // Bytes read were there by the read's return; bytes written left from its start.
                let start_ns = match self.role {
                    Role::Server => first_byte.exit_ns,
                    Role::Client => first_byte.enter_ns,
                };
                // A server's request is the goroutine's that read the end of its head (Go's
                // background read may have taken the first byte); a client's, the writer's.
                let goroutine = match self.role {
                    Role::Server => seg_goroutine,
                    Role::Client => first_byte.goroutine,
                };
                let mut p = Pending {
                    head,
                    info,
                    start_ns,
                    goroutine,
                    request_body: None,
                    truncated: false,
                    response: None,
                    answered: None,
                    reported: false,
                };
                // A response can only answer a request that started before it.
                if let Some(o) =
                    self.orphan.take().filter(|o| self.pending.is_empty() && start_ns <= o.first_byte.exit_ns)
                {
                    p.response = Some((o.status, o.first_byte));
                    p.answered = o.end;
                    if o.end.is_none() {
                        self.ignore_response_end = false;
                    }
                    if p.info.long_running {
                        out.push(build_span(ctx, &mut p, o.first_byte.exit_ns, None));
                        p.reported = true;
                        stats.spans += 1;
                    }
                }
                if self.pending.capacity() == 0 {
                    // Room for one (no pipelining, the usual case). VecDeque's default first
                    // capacity of 4 made an allocation large enough for glibc to consolidate its
                    // free lists on every request.
                    self.pending.reserve_exact(1);
                }
                self.pending.push_back(p);
            }
            Http1Event::Head { head: Head::Response(_), .. } => {}
            Http1Event::End { body_size, .. } => {
                let Some(idx) = self.pending.iter().position(|p| p.request_body.is_none()) else { return };
                self.pending[idx].request_body = Some(body_size);
                // Its response came first and is complete: the exchange is done.
                if let Some((size, last)) = self.pending[idx].answered
                    && let Some(mut p) = self.pending.remove(idx)
                    && !p.reported
                {
                    out.push(build_span(ctx, &mut p, last.exit_ns, Some(size)));
                    stats.spans += 1;
                }
            }
            Http1Event::Desync { reason } => {
                stats.desyncs += 1;
                if reason == TRUNCATED_HEAD
                    && let Some(p) = self.pending.back_mut().filter(|p| p.request_body.is_none())
                {
                    p.truncated = true;
                }
                // The request being read is abandoned; complete ones still await their responses.
                let before = self.pending.len();
                self.pending.retain(|p| p.request_body.is_some() || p.truncated);
                stats.requests_abandoned += (before - self.pending.len()) as u64;
            }
        }
    }

    fn on_response_event(
        &mut self,
        ctx: &SpanContext<'_>,
        ev: Http1Event,
        seg: &Segment<'_>,
        stats: &mut AssembleStats,
        out: &mut Vec<SpanRecord>,
    ) {
        match ev {
            Http1Event::Head { head: Head::Response(r), first_byte } => {
                // Interim responses (100 Continue) precede the real one; 101 is final.
                if (100..200).contains(&r.status) && r.status != 101 {
                    self.ignore_response_end = true;
                    return;
                }
                let Some(p) = self.pending.iter_mut().find(|p| p.response.is_none()) else {
                    stats.unmatched_responses += 1;
                    self.orphan = Some(Orphan { status: r.status, first_byte, end: None });
                    self.ignore_response_end = true;
                    return;
                };
                self.ignore_response_end = false;
                p.response = Some((r.status, first_byte));
                if p.info.long_running || r.status == 101 {
                    // A watch streams for minutes: report it when it starts, keep no body state.
                    let span = build_span(ctx, p, first_byte.exit_ns, None);
                    p.reported = true;
                    out.push(span);
                    stats.spans += 1;
                }
            }
            Http1Event::Head { head: Head::Request(_), .. } => {}
            Http1Event::End { body_size, last_byte } => {
                if std::mem::take(&mut self.ignore_response_end) {
                    if let Some(o) = self.orphan.as_mut().filter(|o| o.end.is_none()) {
                        o.end = Some((body_size, last_byte));
                    }
                    return;
                }
                let Some(idx) = self.pending.iter().position(|p| p.response.is_some()) else { return };
                let Some(mut p) = self.pending.remove(idx) else { return };
                if !p.reported {
                    out.push(build_span(ctx, &mut p, last_byte.exit_ns, Some(body_size)));
                    stats.spans += 1;
                }
            }
            Http1Event::Desync { reason } => {
                stats.desyncs += 1;
                if reason == TRUNCATED_HEAD
                    && let Some(idx) = self.pending.iter().position(|p| p.response.is_some())
                    && let Some(mut p) = self.pending.remove(idx)
                {
                    // Its status is known, its end is not: it ends, at the latest, here.
                    if !p.reported {
                        out.push(build_span(ctx, &mut p, seg.exit_ns, None));
                        stats.spans += 1;
                    }
                }
                // Responses may have been lost in what could not be read: only requests that came
                // after this point can be paired with what follows.
                let before = self.pending.len();
                self.pending.retain(|p| p.start_ns > seg.exit_ns);
                stats.requests_abandoned += (before - self.pending.len()) as u64;
                self.ignore_response_end = false;
            }
        }
    }

    /// Connection closed: a response delimited by close ends now; requests left unanswered are
    /// reported as errors.
    pub fn close(&mut self, ctx: &SpanContext<'_>, ts_ns: u64, stats: &mut AssembleStats, out: &mut Vec<SpanRecord>) {
        let mut events = Vec::new();
        self.responses.on_close(Timing { enter_ns: ts_ns, exit_ns: ts_ns, goroutine: 0 }, &mut events);
        let seg = Segment { data: &[], uncaptured_after: 0, enter_ns: ts_ns, exit_ns: ts_ns, goroutine: 0 };
        for ev in events {
            self.on_response_event(ctx, ev, &seg, stats, out);
        }
        for mut p in self.pending.drain(..) {
            if p.reported || (p.request_body.is_none() && !p.truncated) {
                continue;
            }
            let mut span = build_span(ctx, &mut p, ts_ns, None);
            span.status = SpanStatus::Error("connection closed before the response completed".into());
            out.push(span);
            stats.spans += 1;
        }
    }
}

/// The span of `p`. Its strings move into the span: a request is reported once, and a pending
/// request kept after its report (a watch, until its response ends) only pairs by position.
fn build_span(ctx: &SpanContext<'_>, p: &mut Pending, end_ns: u64, response_body: Option<u64>) -> SpanRecord {
    let status_code = p.response.map(|(s, _)| s);
    let name = k8s::span_name(&p.head.method, &p.info);
    let RequestHead { method, user_agent, host, traceparent, .. } = std::mem::take(&mut p.head);
    let mut info = std::mem::take(&mut p.info);
    // A 101 switches the connection to another protocol for as long as it lasts.
    let latency_class = if status_code == Some(101) { LatencyClass::Streaming } else { attrs::latency_class(&info) };
    let mut a = attrs::connection(ctx.conn);
    // server.address is the logical host the client asked for (Host header), when it said one.
    if let Some(host) = host.as_deref().and_then(host_of) {
        attrs::set_server_address(&mut a, host);
    }
    a.push(("http.request.method", method.into()));
    a.push(("url.path", std::mem::take(&mut info.path).into()));
    a.push(("url.scheme", attrs::url_scheme(ctx.conn).into()));
    a.push(("http.route", std::mem::take(&mut info.route).into()));
    a.push(("network.protocol.name", "http".into()));
    a.push(("network.protocol.version", "1.1".into()));
    if let Some(s) = status_code {
        a.push(("http.response.status_code", i64::from(s).into()));
    }
    if let Some(ua) = user_agent {
        a.push(("user_agent.original", ua.into()));
    }
    if let Some(n) = p.request_body {
        a.push(("http.request.body.size", n.into()));
    }
    if let Some(n) = response_body {
        a.push(("http.response.body.size", n.into()));
    }
    attrs::k8s_attrs(info, &mut a);

    let error = match (ctx.conn.role, status_code) {
        (Role::Server, Some(s)) => s >= 500,
        (Role::Client, Some(s)) => s >= 400,
        _ => false,
    };
    let status =
        if error { SpanStatus::Error(format!("HTTP {}", status_code.unwrap_or(0))) } else { SpanStatus::Unset };
    let mut span = ctx.span(name, p.start_ns, end_ns, status, a);
    span.origin.goroutine = p.goroutine;
    span.latency_class = latency_class;
    span.remote_parent = traceparent.filter(|_| ctx.conn.role == Role::Server);
    span
}

/// Host part of a Host header (`name`, `name:port`, `[v6]:port`).
fn host_of(host: &str) -> Option<&str> {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next()?
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    (!h.is_empty()).then_some(h)
}
