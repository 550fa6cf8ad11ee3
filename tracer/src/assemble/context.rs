//! What a span needs to know of its connection, shared by the protocol assemblers.

use crate::{
    clock::Clock,
    span::{SpanKind, SpanRecord, SpanStatus},
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
    /// server's connection, a client span on a client's.
    pub fn span(&self, name: String, start_ns: u64, end_ns: u64, status: SpanStatus, attributes: Attrs) -> SpanRecord {
        let kind = match self.conn.role {
            Role::Server => SpanKind::Server,
            Role::Client => SpanKind::Client,
        };
        let (start, end) = (self.clock.to_unix_nanos(start_ns), self.clock.to_unix_nanos(end_ns));
        attrs::new_span(name, kind, start, end, status, attributes, self.conn.process.clone())
    }
}
