//! What a span needs to know of its connection, shared by the protocol assemblers.

use crate::{
    clock::Clock,
    span::{SpanKind, SpanOrigin, SpanRecord, SpanStatus},
    stream::Role,
};

use super::{
    Conn,
    attrs::{self, Attrs},
};

/// What a span needs to know of its connection (read only when a span is built).
pub struct SpanContext<'a> {
    pub conn: &'a Conn,
    pub clock: &'a Clock,
    pub etcd_ports: &'a [u16],
}

impl SpanContext<'_> {
    /// The connection's server port (the peer's for a client, ours for a server).
    pub fn server_port(&self) -> Option<u16> {
        match self.conn.role {
            Role::Server => self.conn.local.map(|a| a.port()),
            Role::Client => self.conn.peer.map(|a| a.port()),
        }
    }

    /// A span of this connection from kernel time `start_ns` to `end_ns`: a server span on a
    /// server's connection, a client span on a client's. Its origin names the connection and the
    /// times; the goroutine and the stream are the caller's to add.
    pub fn span(&self, name: String, start_ns: u64, end_ns: u64, status: SpanStatus, attributes: Attrs) -> SpanRecord {
        let kind = match self.conn.role {
            Role::Server => SpanKind::Server,
            Role::Client => SpanKind::Client,
        };
        let end_ns = end_ns.max(start_ns);
        let (start, end) = (self.clock.to_unix_nanos(start_ns), self.clock.to_unix_nanos(end_ns));
        let mut span = attrs::new_span(name, kind, start, end, status, attributes, self.conn.process.clone());
        let c = self.conn;
        span.origin = SpanOrigin {
            tgid: c.key.tgid,
            fd: c.key.fd,
            conn_opened_ns: c.opened_ns,
            local: c.local,
            peer: c.peer,
            stream_id: None,
            goroutine: 0,
            start_ns,
            end_ns,
            peer_traced: c.peer_traced,
        };
        span
    }
}
