//! HTTP/2 streams → one span each: gRPC (etcd first-class) and plain HTTP/2.
//!
//! A stream's span starts with its request HEADERS and ends with END_STREAM of the response (or
//! RST_STREAM, or the connection closing: then it is an error). Streaming etcd RPCs (Watch,
//! LeaseKeepAlive) live as long as the connection; they are reported when their first response
//! message arrives — the watch was created, the lease kept alive — instead of as one endless span.
//! Names that could not be resolved (connection joined mid-way, HPACK table not yet learned) are
//! reported as unknown, never guessed.

use std::collections::HashMap;

use crate::{
    meaning::{
        etcd::{self, EtcdOp, EtcdRequest, EtcdResponse},
        k8s,
    },
    protocols::{
        Timing,
        grpc::{self, StatusLookup, StreamMessages},
        hpack::{FieldValue, Lookup},
        http2::{H2Connection, H2Event},
    },
    span::{AttrValue, LatencyClass, RemoteParent, SpanRecord, SpanStatus},
    stream::Role,
    stream::{Direction, Segment},
};

use super::{AssembleStats, GrpcLinks, attrs, context::SpanContext};

/// Who read a request's HEADERS: the process, and the goroutine of the segment being fed.
#[derive(Clone, Copy)]
struct HeadReader {
    tgid: u32,
    goroutine: u64,
}

/// Streams followed per connection at most (HTTP/2's default concurrency is 100–250).
const MAX_STREAMS: usize = 1024;
/// Bytes of an etcd key used for the k8s object attributes and the attribute itself.
const ETCD_PREFIX: &str = "/registry";

#[derive(Default)]
struct Stream {
    id: u32,
    start_ns: u64,
    /// The goroutine the span's origin names: a server's, the one that read the end of the
    /// request HEADERS; a client's, the one that wrote them.
    goroutine: u64,
    method: Option<FieldValue>,
    path: Option<FieldValue>,
    authority: Option<FieldValue>,
    user_agent: Option<FieldValue>,
    /// A valid `traceparent` of a request to the target's server.
    remote_parent: Option<RemoteParent>,
    /// A gRPC method (`content-type: application/grpc…` and a `/service/method` path): the
    /// length of its service name, so the path is parsed once per stream.
    grpc_service_len: Option<usize>,
    /// `:method` or `:path` could not be resolved.
    name_unknown: bool,
    /// An etcd method's path without a gRPC content-type (unknown, or absent): gRPC once its
    /// first request message decodes as that method's.
    etcd_by_path: bool,
    request_bytes: u64,
    status: Option<u16>,
    grpc_status: Option<(u32, Option<String>)>,
    /// Trailers were seen but `grpc-status` could not be resolved.
    grpc_status_unknown: bool,
    response_bytes: u64,
    etcd_req: Option<EtcdRequest>,
    etcd_resp: Option<EtcdResponse>,
    reported: bool,
}

pub struct Http2Conn {
    role: Role,
    h2: H2Connection,
    /// foldhash: SipHash showed in profiles. Stream ids are chosen by the client, but their number is
    /// bounded per connection and the hasher is randomly seeded.
    streams: HashMap<u32, Stream, foldhash::fast::RandomState>,
    requests: StreamMessages,
    responses: StreamMessages,
    scratch: Vec<H2Event>,
}

impl Http2Conn {
    /// `fresh`: the connection is seen from its first byte (HPACK tables start empty).
    pub fn new(role: Role, fresh: bool) -> Self {
        Http2Conn {
            role,
            h2: if fresh { H2Connection::new_fresh() } else { H2Connection::new() },
            streams: HashMap::default(),
            requests: StreamMessages::new(MAX_STREAMS),
            responses: StreamMessages::new(MAX_STREAMS),
            scratch: Vec::new(),
        }
    }

    /// Events were lost: the streams in flight cannot be finished correctly. Returns how many.
    pub fn reset(&mut self) -> usize {
        let n = self.streams.values().filter(|s| !s.reported).count();
        *self = Http2Conn::new(self.role, false);
        n
    }

    pub fn feed(
        &mut self,
        ctx: &SpanContext<'_>,
        dir: Direction,
        seg: &Segment<'_>,
        links: &mut GrpcLinks,
        stats: &mut AssembleStats,
        out: &mut Vec<SpanRecord>,
    ) {
        let from_client =
            matches!((self.role, dir), (Role::Server, Direction::Ingress) | (Role::Client, Direction::Egress));
        let mut events = std::mem::take(&mut self.scratch);
        self.h2.feed(if from_client { Role::Client } else { Role::Server }, seg, &mut events);
        for mut ev in events.drain(..) {
            if from_client {
                let reader = HeadReader { tgid: ctx.conn.key.tgid, goroutine: seg.goroutine };
                self.on_request_event(&mut ev, reader, links, stats);
            } else {
                self.on_response_event(ctx, &mut ev, stats, out);
            }
        }
        self.scratch = events;
    }

    fn on_request_event(
        &mut self,
        ev: &mut H2Event,
        reader: HeadReader,
        links: &mut GrpcLinks,
        stats: &mut AssembleStats,
    ) {
        match &*ev {
            H2Event::Headers { stream_id, timing, .. } | H2Event::HeadersUnknown { stream_id, timing, .. } => {
                if self.streams.contains_key(stream_id) {
                    return; // request trailers
                }
                if self.streams.len() >= MAX_STREAMS {
                    stats.pending_overflow += 1;
                    return;
                }
                let id = *stream_id;
                let goroutine = match self.role {
                    Role::Server => reader.goroutine,
                    Role::Client => timing.goroutine,
                };
                let (enter_ns, writer) = (timing.enter_ns, timing.goroutine);
                let mut s = Stream { id, start_ns: enter_ns, goroutine, ..Default::default() };
                s.method = take_found(ev, ":method");
                s.path = take_found(ev, ":path");
                s.authority = take_found(ev, ":authority");
                s.user_agent = take_found(ev, "user-agent");
                let grpc_content_type =
                    matches!(ev.header("content-type"), Some(Lookup::Found(ct)) if grpc::is_grpc_content_type(ct));
                if self.role == Role::Server {
                    s.remote_parent = traceparent(ev);
                } else if let Some(link) = links.take(reader.tgid, writer, id, enter_ns, stats) {
                    // grpc-go's writer said which call this is: its HEADERS name it when they can.
                    if s.path.is_none() {
                        s.path = link.kind.grpc_path().map(FieldValue::copy);
                    }
                    s.method.get_or_insert(FieldValue::Static("POST"));
                    s.grpc_service_len = s.path.as_deref().and_then(grpc::parse_path).map(|(service, _)| service.len());
                }
                if grpc_content_type {
                    s.grpc_service_len = s.path.as_deref().and_then(grpc::parse_path).map(|(service, _)| service.len());
                }
                s.name_unknown = s.method.is_none() || s.path.is_none();
                s.etcd_by_path = s.grpc_service_len.is_none()
                    && s.path
                        .as_deref()
                        .and_then(grpc::parse_path)
                        .is_some_and(|(sv, m)| EtcdOp::from_rpc(sv, m).is_some());
                self.streams.insert(id, s);
            }
            H2Event::Data { stream_id, len, .. } => {
                if let Some(s) = self.streams.get_mut(stream_id) {
                    s.request_bytes += u64::from(len.unwrap_or(0));
                }
            }
            H2Event::RstStream { stream_id, .. } => {
                // The client cancelled: keep the stream so the span says so when it is reported.
                if let Some(s) = self.streams.get_mut(stream_id) {
                    s.grpc_status.get_or_insert((1, Some("cancelled by the client (RST_STREAM)".into())));
                }
            }
            H2Event::Desync { .. } => stats.desyncs += 1,
            _ => {}
        }
        if let Some((id, msg)) = self.requests.on_event(ev)
            && let Some(s) = self.streams.get_mut(&id)
        {
            if let Some((service, method)) = grpc_method(s) {
                s.etcd_req = etcd::decode_request_message(method, service, &msg);
            } else if s.etcd_by_path
                && let Some((service, method)) = s.path.as_deref().and_then(grpc::parse_path)
                && let Some(req) = etcd::decode_request_message(method, service, &msg)
            {
                // A length-prefixed message of that etcd method: the path was a gRPC call's.
                s.grpc_service_len = Some(service.len());
                s.etcd_req = Some(req);
            }
        }
    }

    fn on_response_event(
        &mut self,
        ctx: &SpanContext<'_>,
        ev: &mut H2Event,
        stats: &mut AssembleStats,
        out: &mut Vec<SpanRecord>,
    ) {
        if let Some((id, msg)) = self.responses.on_event(ev)
            && let Some(s) = self.streams.get_mut(&id)
        {
            if let Some((service, method)) = grpc_method(s) {
                s.etcd_resp = etcd::decode_response_message(method, service, &msg);
            }
            // A streaming RPC answered for the first time: report it now (see module doc).
            if is_streaming(s) && !s.reported {
                let end = match ev {
                    H2Event::Data { timing, .. } => timing.exit_ns,
                    _ => s.start_ns,
                };
                out.push(build_span(ctx, s, end, None, stats));
                s.reported = true;
            }
        }
        let ev = &*ev;
        match ev {
            H2Event::Headers { stream_id, end_stream, timing, .. } => {
                let Some(s) = self.streams.get_mut(stream_id) else {
                    stats.unmatched_responses += 1;
                    return;
                };
                if s.status.is_none() {
                    s.status = match ev.header(":status") {
                        Some(Lookup::Found(v)) => v.parse().ok(),
                        _ => None,
                    };
                }
                match grpc::status_from_event(ev) {
                    Some(StatusLookup::Found(st)) => s.grpc_status = Some((st.code, st.message)),
                    Some(StatusLookup::Unknown) if *end_stream => s.grpc_status_unknown = true,
                    _ => {}
                }
                if *end_stream {
                    self.finish(ctx, *stream_id, *timing, None, stats, out);
                }
            }
            H2Event::HeadersUnknown { stream_id, end_stream, timing, .. } => {
                if let Some(s) = self.streams.get_mut(stream_id) {
                    s.grpc_status_unknown = true;
                }
                if *end_stream {
                    self.finish(ctx, *stream_id, *timing, None, stats, out);
                }
            }
            H2Event::Data { stream_id, len, end_stream, timing, .. } => {
                if let Some(s) = self.streams.get_mut(stream_id) {
                    s.response_bytes += u64::from(len.unwrap_or(0));
                }
                if *end_stream {
                    self.finish(ctx, *stream_id, *timing, None, stats, out);
                }
            }
            H2Event::RstStream { stream_id, error_code, timing } => {
                let why = format!("stream reset by the server (RST_STREAM {})", error_code.unwrap_or(0));
                self.finish(ctx, *stream_id, *timing, Some(why), stats, out);
            }
            H2Event::Desync { .. } => {
                // Responses in flight may have lost their end: they are finished at close.
                stats.desyncs += 1;
            }
            _ => {}
        }
    }

    fn finish(
        &mut self,
        ctx: &SpanContext<'_>,
        id: u32,
        timing: Timing,
        error: Option<String>,
        stats: &mut AssembleStats,
        out: &mut Vec<SpanRecord>,
    ) {
        let Some(mut s) = self.streams.remove(&id) else { return };
        if s.reported {
            return;
        }
        out.push(build_span(ctx, &mut s, timing.exit_ns, error, stats));
    }

    /// The connection closed: streams still open are reported as errors.
    pub fn close(&mut self, ctx: &SpanContext<'_>, ts_ns: u64, stats: &mut AssembleStats, out: &mut Vec<SpanRecord>) {
        for (_, mut s) in self.streams.drain() {
            if s.reported || (s.status.is_none() && s.request_bytes == 0 && s.name_unknown) {
                continue;
            }
            let why = Some("connection closed before the stream ended".into());
            out.push(build_span(ctx, &mut s, ts_ns, why, stats));
        }
    }
}

/// The value of `name` when the block says it for sure, moved out of the event: a stream
/// reads each field of its request head once.
/// (`Lookup::Found` is exactly a field of that name among the resolved ones: no lookup first.)
fn take_found(ev: &mut H2Event, name: &str) -> Option<FieldValue> {
    let H2Event::Headers { fields, .. } = ev else { return None };
    fields.iter_mut().find(|(n, _)| *n == name).map(|(_, v)| std::mem::replace(v, FieldValue::Static("")))
}

/// The request's `traceparent`, when its block has exactly one (two are no valid value, as in
/// HTTP/1, where they would be joined into one) and it is valid.
fn traceparent(ev: &H2Event) -> Option<RemoteParent> {
    let H2Event::Headers { fields, .. } = ev else { return None };
    let mut values = fields.iter().filter(|(n, _)| *n == "traceparent").map(|(_, v)| v);
    match (values.next(), values.next()) {
        (Some(v), None) => RemoteParent::from_traceparent(v.as_bytes()),
        _ => None,
    }
}

/// Service and method of a gRPC stream (only with a gRPC content-type: `/a/b` alone is no proof).
fn grpc_method(s: &Stream) -> Option<(&str, &str)> {
    let (path, n) = (s.path.as_deref()?, s.grpc_service_len?);
    Some((&path[1..1 + n], &path[2 + n..]))
}

fn is_streaming(s: &Stream) -> bool {
    matches!(s.etcd_req.as_ref().map(|r| r.op), Some(EtcdOp::Watch | EtcdOp::LeaseKeepAlive))
}

/// The span of `s`, counted; its user agent moves into the span (a stream is reported once).
fn build_span(
    ctx: &SpanContext<'_>,
    s: &mut Stream,
    end_ns: u64,
    error: Option<String>,
    stats: &mut AssembleStats,
) -> SpanRecord {
    stats.spans += 1;
    stats.unnamed_streams += u64::from(s.name_unknown);
    let user_agent = s.user_agent.take();
    let s = &*s;
    let mut a = attrs::connection(ctx.conn);
    a.push(("network.protocol.name", "http".into()));
    a.push(("network.protocol.version", "2".into()));
    let grpc_path = grpc_method(s);
    let mut status = SpanStatus::Unset;
    let name;
    let mut latency_class = LatencyClass::Other;
    if s.name_unknown {
        // Attached mid-connection and the HPACK table does not know this name yet. On an etcd
        // port it is still known to be an etcd call, just not which one.
        a.push(("http.request.method", "_OTHER".into()));
        if ctx.server_port().is_some_and(|p| ctx.etcd_ports.contains(&p)) {
            name = "etcd unknown".to_owned();
            a.push(("rpc.system", "grpc".into()));
            a.push(("db.system.name", "etcd".into()));
        } else {
            name = "unknown".to_owned();
        }
    } else if let Some((service, method)) = grpc_path {
        let op = EtcdOp::from_rpc(service, method);
        a.push(("rpc.system", "grpc".into()));
        // An etcd method's names are constants: no copies.
        let (service_attr, method_attr) = match op {
            Some(op) => (op.service().into(), op.as_str().into()),
            None => (service.to_owned().into(), method.to_owned().into()),
        };
        a.push(("rpc.service", service_attr));
        a.push(("rpc.method", method_attr));
        if is_streaming(s) {
            latency_class = LatencyClass::Streaming;
        }
        if let Some((code, msg)) = &s.grpc_status {
            a.push(("rpc.grpc.status_code", i64::from(*code).into()));
            if *code != 0 {
                let text = msg.clone().unwrap_or_else(|| grpc::code_name(*code).to_owned());
                status = SpanStatus::Error(text);
            }
        }
        name = match op {
            Some(op) => {
                etcd::push_attributes(op, s.etcd_req.as_ref(), s.etcd_resp.as_ref(), &mut a);
                // `etcd <op>`, then ` <resource>` when the key names one (no `format!`: one per span).
                let mut name = crate::span::new_text(48);
                name.push_str("etcd ");
                name.push_str(op.as_str());
                etcd_k8s_attrs(s.etcd_req.as_ref(), &mut name, &mut a);
                name
            }
            None => format!("{service}/{method}"),
        };
    } else {
        let method = s.method.as_deref().unwrap_or("GET");
        let mut info = k8s::request_info(method, s.path.as_deref().unwrap_or("/"));
        name = k8s::span_name(method, &info);
        a.push(("http.request.method", method.to_owned().into()));
        a.push(("url.path", std::mem::take(&mut info.path).into()));
        a.push(("url.scheme", attrs::url_scheme(ctx.conn).into()));
        a.push(("http.route", std::mem::take(&mut info.route).into()));
        latency_class = attrs::latency_class(&info);
        attrs::k8s_attrs(info, &mut a);
        if let Some(code) = s.status {
            let bad = match ctx.conn.role {
                Role::Server => code >= 500,
                Role::Client => code >= 400,
            };
            if bad {
                status = SpanStatus::Error(format!("HTTP {code}"));
            }
        }
    }
    if let Some(code) = s.status {
        a.push(("http.response.status_code", i64::from(code).into()));
    }
    if let Some(ua) = user_agent {
        a.push(("user_agent.original", ua.into()));
    }
    if let Some(host) = s.authority.as_deref().and_then(|h| h.rsplit_once(':').map_or(Some(h), |(h, _)| Some(h))) {
        attrs::set_server_address(&mut a, host.trim_matches(['[', ']']));
    }
    a.push(("http.request.body.size", s.request_bytes.into()));
    a.push(("http.response.body.size", s.response_bytes.into()));
    if let Some(why) = error {
        status = SpanStatus::Error(why);
    }
    let mut span = ctx.span(name, s.start_ns, end_ns, status, a);
    span.origin.stream_id = Some(s.id);
    span.origin.goroutine = s.goroutine;
    span.latency_class = latency_class;
    span.remote_parent = s.remote_parent;
    span
}

/// Kubernetes object of an etcd key (`/registry/<resource>/<namespace>/<name>`): its attributes,
/// and its resource appended to the span's `name`.
fn etcd_k8s_attrs(req: Option<&EtcdRequest>, name: &mut String, a: &mut Vec<(&'static str, AttrValue)>) {
    let Some(info) = req.and_then(|r| r.key.as_deref()).and_then(|key| k8s::parse_registry_key(ETCD_PREFIX, key))
    else {
        return;
    };
    if let Some(resource) = &info.resource {
        name.push(' ');
        name.push_str(resource);
    }
    for (k, v) in
        [("k8s.resource", info.resource), ("k8s.namespace.name", info.namespace), ("k8s.object.name", info.name)]
    {
        if let Some(v) = v {
            a.push((k, v.into()));
        }
    }
}
