//! A connection's addresses, as its spans carry them.

use std::net::{IpAddr, SocketAddr};

use crate::span::AttrStr;

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
/// machinery, which showed in the agent's profile under load (when it ran for every span).
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

#[cfg(test)]
mod tests {
    use super::*;

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
