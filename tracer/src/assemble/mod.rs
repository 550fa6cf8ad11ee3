//! Assembly: decoded messages of a connection become spans.
//!
//! Protocol detection happens on the first payload of a connection; each protocol has its own
//! assembler (`http1`, `http2`) and they share `context` and `attrs`; connections no decoder understands (TLS before the Go TLS probes, unknown
//! protocols) still get one span when they close, so nothing the target does is invisible.

mod attrs;
mod context;
mod http1;
mod http2;
mod links;

use crate::{
    clock::Clock,
    connections::{Connection, Feed},
    events::GoLink,
    protocols::http1 as h1,
    span::{LatencyClass, SpanRecord, SpanStatus},
    stream::Role,
    stream::{Direction, Segment},
};

pub use http1::Http1Conn;
pub use http2::Http2Conn;
use links::GrpcLinks;

use context::SpanContext;

/// A connection as the assembler keeps it: the table's entry with its decoders' state.
pub type Conn = Connection<ProtoState>;

/// Protocol state of a connection.
pub enum ProtoState {
    /// No payload classified yet; `tries` counts segments that matched nothing (mid-stream attach).
    Detecting {
        tries: u8,
    },
    Http1(Box<Http1Conn>),
    Http2(Box<Http2Conn>),
    /// Not decoded: reported as one connection span on close.
    Opaque {
        tls: bool,
    },
}

impl Default for ProtoState {
    fn default() -> Self {
        ProtoState::Detecting { tries: 0 }
    }
}

/// Segments to look at before a pre-existing connection (seen mid-stream) is called opaque.
const MID_STREAM_TRIES: u8 = 32;

#[derive(Default, Debug, Clone)]
pub struct AssembleStats {
    pub spans: u64,
    pub desyncs: u64,
    pub lost_resets: u64,
    pub unmatched_responses: u64,
    pub pending_overflow: u64,
    pub requests_abandoned: u64,
    /// HTTP/2 streams reported without a name: HEADERS not decodable (a connection joined
    /// mid-way) and no link from the writer said which call it was.
    pub unnamed_streams: u64,
    /// grpc-go's stream links (see `links`): used to name a stream, let go unused (too old,
    /// pushed out), or not a method path.
    pub grpc_links_used: u64,
    pub grpc_links_expired: u64,
    pub grpc_links_invalid: u64,
}

pub struct Assembler {
    pub clock: Clock,
    pub stats: AssembleStats,
    /// Server ports of etcd (`--etcd-port`): streams on them whose names are not known yet are
    /// still labelled as etcd calls.
    pub etcd_ports: Vec<u16>,
    /// Decoded HTTP/1 messages of the segment being fed, kept between segments (see `Http1Conn::feed`).
    h1_events: Vec<h1::Http1Event>,
    /// grpc-go's names of the client streams it is about to open.
    grpc_links: GrpcLinks,
}

impl Assembler {
    pub fn new(clock: Clock, etcd_ports: Vec<u16>) -> Self {
        Assembler {
            clock,
            stats: AssembleStats::default(),
            etcd_ports,
            h1_events: Vec::new(),
            grpc_links: GrpcLinks::default(),
        }
    }

    /// Feeds one chunk's outcome (see [`Connection::on_chunk`]) to the connection's decoder.
    pub fn on_feed(&mut self, conn: &mut Conn, dir: Direction, feed: Feed<'_>, out: &mut Vec<SpanRecord>) {
        match feed {
            Feed::LostThen(seg) => {
                self.stats.lost_resets += 1;
                self.stats.requests_abandoned += match &mut conn.proto {
                    ProtoState::Http1(h) => h.reset(),
                    ProtoState::Http2(h) => h.reset(),
                    _ => 0,
                } as u64;
                self.on_segment(conn, dir, &seg, out);
            }
            Feed::Segments(gap, seg) => {
                if let Some(gap) = gap {
                    self.on_segment(conn, dir, &gap, out);
                }
                self.on_segment(conn, dir, &seg, out);
            }
        }
    }

    fn on_segment(&mut self, conn: &mut Conn, dir: Direction, seg: &Segment<'_>, out: &mut Vec<SpanRecord>) {
        if let ProtoState::Detecting { tries } = conn.proto {
            if seg.data.is_empty() {
                return;
            }
            conn.proto = match detect(conn.role, dir, seg.data, conn.preexisting) {
                Detected::Proto(p) => p,
                // Seen mid-stream, or the server spoke first: wait for a segment that says more.
                Detected::Wait if tries + 1 < MID_STREAM_TRIES => ProtoState::Detecting { tries: tries + 1 },
                Detected::Wait | Detected::Opaque => ProtoState::Opaque { tls: false },
            };
        }
        // Taken out for the call so the decoder can read the connection while it is updated.
        match std::mem::take(&mut conn.proto) {
            ProtoState::Http1(mut h) => {
                let ctx = SpanContext { conn, clock: &self.clock, etcd_ports: &self.etcd_ports };
                h.feed(&ctx, dir, seg, &mut self.h1_events, &mut self.stats, out);
                conn.proto = ProtoState::Http1(h);
            }
            ProtoState::Http2(mut h) => {
                h.feed(
                    &SpanContext { conn, clock: &self.clock, etcd_ports: &self.etcd_ports },
                    dir,
                    seg,
                    &mut self.grpc_links,
                    &mut self.stats,
                    out,
                );
                conn.proto = ProtoState::Http2(h);
            }
            other => conn.proto = other,
        }
    }

    /// The kernel closed the socket; `tls_bytes` is the ciphertext a Go `tls.Conn` moved on it,
    /// `[received, sent]`, which the probes report at close. A connection that carried some, and
    /// whose plaintext never said what it is (a handshake, then nothing), is a TLS connection.
    pub fn on_socket_close(&mut self, mut conn: Conn, tls_bytes: [u64; 2], ts_ns: u64, out: &mut Vec<SpanRecord>) {
        conn.add_tls_bytes(tls_bytes);
        if tls_bytes.iter().sum::<u64>() > 0 && matches!(conn.proto, ProtoState::Detecting { .. }) {
            conn.proto = ProtoState::Opaque { tls: true };
        }
        self.on_close(conn, ts_ns, out);
    }

    /// A goroutine was linked to a request (grpc-go, net/http): grpc-go's writer names the client
    /// stream it opens next (see `links`); the other kinds are correlation's.
    pub fn on_go_link(&mut self, link: &GoLink) {
        self.grpc_links.on_link(link, &mut self.stats);
    }

    /// The connection is gone: finish what it had in flight, or give it its connection span.
    pub fn on_close(&mut self, mut conn: Conn, ts_ns: u64, out: &mut Vec<SpanRecord>) {
        match std::mem::take(&mut conn.proto) {
            ProtoState::Http1(mut h) => h.close(
                &SpanContext { conn: &conn, clock: &self.clock, etcd_ports: &self.etcd_ports },
                ts_ns,
                &mut self.stats,
                out,
            ),
            ProtoState::Http2(mut h) => h.close(
                &SpanContext { conn: &conn, clock: &self.clock, etcd_ports: &self.etcd_ports },
                ts_ns,
                &mut self.stats,
                out,
            ),
            ProtoState::Opaque { tls } => out.push(self.connection_span(&conn, tls, ts_ns)),
            ProtoState::Detecting { .. } => {
                // Nothing was ever sent: still worth a span (a client that connected and left).
                if conn.bytes_received + conn.bytes_sent > 0 || !conn.preexisting {
                    out.push(self.connection_span(&conn, false, ts_ns));
                }
            }
        }
    }

    fn connection_span(&self, conn: &Conn, tls: bool, end_ns: u64) -> SpanRecord {
        let mut a = attrs::connection(conn);
        a.push(("network.io.received_bytes", conn.bytes_received.into()));
        a.push(("network.io.sent_bytes", conn.bytes_sent.into()));
        if tls {
            a.push(("tls.protocol.name", "tls".into()));
        }
        let name = if tls { "TLS connection" } else { "TCP connection" }.to_owned();
        let ctx = SpanContext { conn, clock: &self.clock, etcd_ports: &self.etcd_ports };
        let mut span = ctx.span(name, conn.opened_ns, end_ns.max(conn.opened_ns), SpanStatus::Unset, a);
        span.latency_class = LatencyClass::Connection;
        span
    }
}

enum Detected {
    Proto(ProtoState),
    /// Not telling yet (a server that speaks first, a stream joined mid-way).
    Wait,
    Opaque,
}

/// Classifies a connection from one payload segment of direction `dir`.
fn detect(role: Role, dir: Direction, data: &[u8], mid_stream: bool) -> Detected {
    if is_tls_record(data) {
        return Detected::Proto(ProtoState::Opaque { tls: true });
    }
    let requests_dir = match role {
        Role::Server => Direction::Ingress,
        Role::Client => Direction::Egress,
    };
    let h2 = |fresh| Detected::Proto(ProtoState::Http2(Box::new(Http2Conn::new(role, fresh))));
    let h1 = || Detected::Proto(ProtoState::Http1(Box::new(Http1Conn::new(role))));
    if dir == requests_dir {
        // The preface may come in pieces (Go reads "PRI * HTTP/2.0" first); the decoder joins them.
        let preface_start = data.len() >= 3 && H2_PREFACE.starts_with(&data[..data.len().min(H2_PREFACE.len())]);
        if data.starts_with(H2_PREFACE) || preface_start {
            h2(true)
        } else if h1::looks_like_request(data) {
            h1()
        } else if mid_stream && looks_like_h2_frames(data) {
            h2(false)
        } else if mid_stream {
            Detected::Wait
        } else {
            Detected::Opaque
        }
    } else if h1::looks_like_response(data) {
        h1()
    } else if looks_like_h2_frames(data) {
        // An HTTP/2 server sends its SETTINGS without waiting for the client's preface.
        h2(!mid_stream)
    } else {
        Detected::Wait
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Mid-stream HTTP/2: a segment that starts with a plausible frame header (known type, sane
/// length, flags and stream id) followed, when captured, by another plausible one.
fn looks_like_h2_frames(data: &[u8]) -> bool {
    let plausible = |b: &[u8]| -> Option<usize> {
        let h: &[u8; 9] = b.get(..9)?.try_into().ok()?;
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
        let kind = h[3];
        let stream = u32::from_be_bytes([h[5] & 0x7f, h[6], h[7], h[8]]);
        let ok = kind <= 9
            && len <= 16384
            && (h[5] & 0x80 == 0)
            && match kind {
                4 | 6 | 7 => stream == 0,
                0 | 1 | 2 | 3 | 5 | 9 => stream != 0,
                _ => true,
            };
        ok.then_some(9 + len)
    };
    let Some(first) = plausible(data) else { return false };
    match data.get(first..) {
        Some(rest) if rest.len() >= 9 => plausible(rest).is_some(),
        _ => first <= data.len(),
    }
}

/// A TLS record header: handshake/alert/application data/change cipher spec, version 3.x.
fn is_tls_record(data: &[u8]) -> bool {
    matches!(data, [20..=23, 3, 0..=4, ..])
}

#[cfg(test)]
mod tests;
