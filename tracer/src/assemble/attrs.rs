//! Attribute sets shared by span kinds, and span construction.

use std::{
    cell::RefCell,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use rand::{RngCore, SeedableRng, rngs::SmallRng};

use crate::{
    connections::Connection,
    events::Role,
    span::{AttrStr, AttrValue, ProcessInfo, SpanKind, SpanRecord, SpanStatus},
};

pub type Attrs = crate::span::Attributes;

fn push_addr(a: &mut Attrs, addr_key: &'static str, port_key: &'static str, ep: Option<&Endpoint>) {
    if let Some(ep) = ep {
        a.push((addr_key, ep.address.clone().into()));
        a.push((port_key, ep.port.into()));
    }
}

/// A connection's address as its spans carry it: the text is made once per connection, and
/// copied into each span in place (IPv4) or shared (a longer IPv6 address).
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub address: AttrStr,
    pub port: u16,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Self {
        Endpoint { address: AttrStr::shareable(&ip_text(addr.ip())), port: addr.port() }
    }
}

/// An address as text. IPv4 is written digit by digit: `Display` goes through the formatting
/// machinery, which was a tenth of the agent's CPU under load (when it ran for every span).
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut s = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if octet >= 100 {
            s.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            s.push(char::from(b'0' + octet / 10 % 10));
        }
        s.push(char::from(b'0' + octet % 10));
    }
    s
}

/// Room for an HTTP/1 span's attributes, in a vector that is new (the exporter returns vectors
/// for reuse, see `span::recycle`): growing the vector showed in profiles. 25 hold the most an
/// HTTP/1 span carries: 7 transport, 10 HTTP and 8 k8s attributes. 25 × 40 bytes stays within
/// glibc's per-thread cache (1032 bytes); at 32, each span's allocation made glibc consolidate
/// its free lists, 4 % of the agent's CPU under nginx load.
const ATTRS_CAPACITY: usize = 25;

/// Transport attributes of a connection, by role: for a server span the peer is the client.
pub fn connection(conn: &Connection) -> Attrs {
    let mut a = crate::span::new_attributes(ATTRS_CAPACITY);
    a.push(("network.transport", "tcp".into()));
    let (local, peer) = (conn.local_endpoint(), conn.peer_endpoint());
    push_addr(&mut a, "network.peer.address", "network.peer.port", peer);
    let (client, server) = match conn.role {
        Role::Server => (peer, local),
        Role::Client => (local, peer),
    };
    push_addr(&mut a, "server.address", "server.port", server);
    push_addr(&mut a, "client.address", "client.port", client);
    a
}

/// `url.scheme` of an HTTP request on `conn`: `https` once Go TLS plaintext was seen on it.
pub fn url_scheme(conn: &Connection) -> &'static str {
    if conn.plaintext { "https" } else { "http" }
}

/// The name the client asked for (Host, `:authority`) as `server.address`, in place of the
/// connection's address; when it is that address, as it is for a client that dials an IP,
/// nothing is copied.
pub fn set_server_address(a: &mut Attrs, host: &str) {
    match a.iter_mut().find(|(k, _)| *k == "server.address") {
        Some((_, AttrValue::Str(v))) if **v == *host => {}
        Some((_, v)) => *v = AttrStr::copy(host).into(),
        None => a.push(("server.address", AttrStr::copy(host).into())),
    }
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
        trace_id: random_id(),
        span_id: random_id(),
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

thread_local! {
    /// Ids must be unique, not secret: a small fast generator seeded from the OS, instead of the
    /// ChaCha generator behind `rand::random` (which showed in profiles).
    static ID_RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

fn random_id<const N: usize>() -> [u8; N] {
    ID_RNG.with(|rng| {
        let mut id = [0u8; N];
        // All zeros is the invalid id; the chance is nil, but it costs one comparison.
        while id == [0u8; N] {
            rng.borrow_mut().fill_bytes(&mut id);
        }
        id
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_vector_fits_glibc_thread_cache() {
        assert!(ATTRS_CAPACITY * size_of::<(&str, AttrValue)>() <= 1032);
    }

    #[test]
    fn ip_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.96.0.10",
            "192.168.100.255",
            "9.99.100.1",
            "::1",
            "fd00::a:2379",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
        for n in (0..=u32::MAX).step_by(9_999_991) {
            let ip = IpAddr::V4(n.into());
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
}
