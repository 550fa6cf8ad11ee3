//! Attribute sets shared by span kinds, and span construction.

use std::{net::SocketAddr, sync::Arc};

use crate::{
    connections::Connection,
    events::Role,
    span::{AttrValue, ProcessInfo, SpanKind, SpanRecord, SpanStatus},
};

pub type Attrs = Vec<(&'static str, AttrValue)>;

fn push_addr(a: &mut Attrs, addr_key: &'static str, port_key: &'static str, addr: Option<SocketAddr>) {
    if let Some(addr) = addr {
        a.push((addr_key, addr.ip().to_string().into()));
        a.push((port_key, addr.port().into()));
    }
}

/// Transport attributes of a connection, by role: for a server span the peer is the client.
pub fn connection(conn: &Connection) -> Attrs {
    let mut a: Attrs = vec![("network.transport", "tcp".into())];
    push_addr(&mut a, "network.peer.address", "network.peer.port", conn.peer);
    let (client, server) = match conn.role {
        Role::Server => (conn.peer, conn.local),
        Role::Client => (conn.local, conn.peer),
    };
    push_addr(&mut a, "server.address", "server.port", server);
    push_addr(&mut a, "client.address", "client.port", client);
    a
}

pub fn new_span(
    name: String,
    kind: SpanKind,
    start_unix_nano: u64,
    end_unix_nano: u64,
    status: SpanStatus,
    attributes: Attrs,
    process: Arc<ProcessInfo>,
) -> SpanRecord {
    SpanRecord {
        trace_id: rand::random::<[u8; 16]>(),
        span_id: rand::random::<[u8; 8]>(),
        parent_span_id: None,
        name,
        kind,
        start_unix_nano,
        end_unix_nano: end_unix_nano.max(start_unix_nano),
        status,
        attributes,
        process,
    }
}
