//! What a span needs to know of its connection, shared by the protocol assemblers.

use crate::{clock::Clock, events::Role};

use super::Conn;

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
}
