//! Userspace view of the ring-buffer records defined in `tracer-common`.
//!
//! Parsing checks every length against the record it came in: a corrupt or unexpected record is
//! an error to count, never a panic or an out-of-bounds read.

use std::mem::size_of;

use tracer_common::{
    DATA_EVENT_HEADER_LEN, DataEvent, EventHeader, GO_LINK_PATH, GoLinkEvent, GoSpawnEvent, ProcEvent, SockAddr,
    SockCloseEvent, SockOpenEvent, data_flags, direction, go_link, kind, sock_role, source,
};

use crate::stream::{Direction, Role};

#[derive(Debug)]
pub enum Event<'a> {
    Data(DataChunk<'a>),
    SockOpen(SockOpen),
    /// `tls_bytes`: ciphertext received and sent under a Go `tls.Conn`, which the probes count
    /// instead of reporting each syscall. `sk`: as in [`SockOpen::sk`].
    SockClose {
        tgid: u32,
        fd: i32,
        ts_ns: u64,
        reason: u32,
        tls_bytes: [u64; 2],
        sk: u64,
    },
    ProcExec {
        tgid: u32,
        comm: String,
        /// Kernel time of the exec.
        ts_ns: u64,
    },
    ProcExit {
        tgid: u32,
    },
    GoSpawn(GoSpawn),
    GoLink(GoLink),
}

/// The Go runtime created goroutine `child` (its `g`) from goroutine `parent`, at `ts_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoSpawn {
    pub tgid: u32,
    pub ts_ns: u64,
    pub child: u64,
    pub parent: u64,
}

/// A link between goroutines and requests from grpc-go or net/http (see `tracer_common::go_link`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoLink {
    pub tgid: u32,
    pub ts_ns: u64,
    /// The goroutine the probe ran in (its `g`).
    pub goroutine: u64,
    pub kind: GoLinkKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoLinkKind {
    /// `goroutine` (grpc-go's writer) writes the HEADERS of client stream `stream_id` next, for
    /// the call of goroutine `caller`, whose method path is `path` (`path_len` bytes of it).
    GrpcClientStream { stream_id: u32, caller: u64, path: [u8; GO_LINK_PATH], path_len: usize },
    /// `goroutine` (net/http's HTTP/1 write loop) writes the request of goroutine `caller` next.
    Http1ClientWrite { caller: u64 },
    /// `goroutine` runs the handler of HTTP/2 stream `stream_id` of socket `fd`.
    H2ServerHandler { fd: i32, stream_id: u32 },
}

impl GoLinkKind {
    /// The method path of a gRPC client stream, when it is valid UTF-8.
    pub fn grpc_path(&self) -> Option<&str> {
        match self {
            GoLinkKind::GrpcClientStream { path, path_len, .. } => std::str::from_utf8(&path[..*path_len]).ok(),
            _ => None,
        }
    }
}

/// One chunk of a data syscall's payload.
#[derive(Debug, Clone, Copy)]
pub struct DataChunk<'a> {
    pub tgid: u32,
    pub fd: i32,
    pub enter_ns: u64,
    pub exit_ns: u64,
    pub total_len: u64,
    pub offset: u32,
    pub seq: u32,
    pub direction: Direction,
    /// Plaintext from Go crypto/tls rather than bytes of a syscall.
    pub tls: bool,
    pub first: bool,
    pub last: bool,
    /// The goroutine (its `g`) that made the call, for Go TLS plaintext; 0 when unknown.
    pub goroutine: u64,
    pub data: &'a [u8],
}

/// The target's side of a connection: it accepted the connection (server) or connected (client).

#[derive(Debug, Clone, Copy)]
pub struct SockOpen {
    pub tgid: u32,
    pub fd: i32,
    pub ts_ns: u64,
    pub role: Role,
    /// Listening socket of an accepted connection.
    pub listen_fd: Option<i32>,
    pub local: Option<std::net::SocketAddr>,
    pub peer: Option<std::net::SocketAddr>,
    /// The kernel `struct sock`, when the probes know it (else 0).
    pub sk: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    Short { kind: u32, len: usize },
    UnknownKind(u32),
    BadField(&'static str),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Short { kind, len } => write!(f, "record of kind {kind} too short ({len} bytes)"),
            ParseError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            ParseError::BadField(what) => write!(f, "invalid {what}"),
        }
    }
}

/// Reads a `T` from the start of `bytes` if it is long enough.
fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, ParseError> {
    if bytes.len() < size_of::<T>() {
        return Err(ParseError::Short { kind, len: bytes.len() });
    }
    // SAFETY: length checked; the types are plain old data and read unaligned.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub fn parse(bytes: &[u8]) -> Result<Event<'_>, ParseError> {
    let hdr: EventHeader = read(bytes, 0)?;
    match hdr.kind {
        kind::DATA => parse_data(bytes).map(Event::Data),
        kind::SOCK_OPEN => {
            let ev: SockOpenEvent = read(bytes, hdr.kind)?;
            let role = match ev.role {
                sock_role::ACCEPTED => Role::Server,
                sock_role::CONNECTED => Role::Client,
                _ => return Err(ParseError::BadField("socket role")),
            };
            Ok(Event::SockOpen(SockOpen {
                tgid: hdr.tgid,
                fd: ev.fd,
                ts_ns: hdr.ts_ns,
                role,
                listen_fd: (ev.listen_fd >= 0).then_some(ev.listen_fd),
                local: socket_addr(&ev.local),
                peer: socket_addr(&ev.peer),
                sk: ev.sk,
            }))
        }
        kind::SOCK_CLOSE => {
            let ev: SockCloseEvent = read(bytes, hdr.kind)?;
            Ok(Event::SockClose {
                tgid: hdr.tgid,
                fd: ev.fd,
                ts_ns: hdr.ts_ns,
                reason: ev.reason,
                tls_bytes: ev.tls_bytes,
                sk: ev.sk,
            })
        }
        kind::PROC_EXEC => {
            let ev: ProcEvent = read(bytes, hdr.kind)?;
            Ok(Event::ProcExec { tgid: hdr.tgid, comm: comm_string(&ev.comm), ts_ns: hdr.ts_ns })
        }
        kind::PROC_EXIT => Ok(Event::ProcExit { tgid: hdr.tgid }),
        kind::GO_SPAWN => {
            let ev: GoSpawnEvent = read(bytes, hdr.kind)?;
            Ok(Event::GoSpawn(GoSpawn { tgid: hdr.tgid, ts_ns: hdr.ts_ns, child: hdr.goid, parent: ev.parent }))
        }
        kind::GO_LINK => parse_go_link(bytes).map(Event::GoLink),
        other => Err(ParseError::UnknownKind(other)),
    }
}

fn parse_data(bytes: &[u8]) -> Result<DataChunk<'_>, ParseError> {
    let ev: DataEvent<0> = read(bytes, kind::DATA)?;
    let cap = ev.cap_len as usize;
    let data = bytes
        .get(DATA_EVENT_HEADER_LEN..DATA_EVENT_HEADER_LEN.saturating_add(cap))
        .ok_or(ParseError::BadField("data length"))?;
    if u64::from(ev.offset) + cap as u64 > ev.total_len {
        return Err(ParseError::BadField("chunk offset"));
    }
    let direction = match ev.direction {
        direction::INGRESS => Direction::Ingress,
        direction::EGRESS => Direction::Egress,
        _ => return Err(ParseError::BadField("direction")),
    };
    Ok(DataChunk {
        tgid: ev.hdr.tgid,
        fd: ev.fd,
        enter_ns: ev.enter_ns,
        exit_ns: ev.hdr.ts_ns,
        total_len: ev.total_len,
        offset: ev.offset,
        seq: ev.seq,
        direction,
        tls: match ev.source {
            source::SYSCALL => false,
            source::GO_TLS => true,
            _ => return Err(ParseError::BadField("source")),
        },
        first: ev.flags & data_flags::FIRST != 0,
        last: ev.flags & data_flags::LAST != 0,
        goroutine: ev.hdr.goid,
        data,
    })
}

fn parse_go_link(bytes: &[u8]) -> Result<GoLink, ParseError> {
    let ev: GoLinkEvent = read(bytes, kind::GO_LINK)?;
    let kind = match ev.link {
        go_link::GRPC_CLIENT_STREAM => {
            let path_len = ev.path_len as usize;
            if path_len > GO_LINK_PATH {
                return Err(ParseError::BadField("link path length"));
            }
            GoLinkKind::GrpcClientStream { stream_id: ev.stream_id, caller: ev.caller, path: ev.path, path_len }
        }
        go_link::HTTP1_CLIENT_WRITE => GoLinkKind::Http1ClientWrite { caller: ev.caller },
        go_link::H2_SERVER_HANDLER => GoLinkKind::H2ServerHandler { fd: ev.fd, stream_id: ev.stream_id },
        _ => return Err(ParseError::BadField("link kind")),
    };
    Ok(GoLink { tgid: ev.hdr.tgid, ts_ns: ev.hdr.ts_ns, goroutine: ev.hdr.goid, kind })
}

/// The address, if the kernel gave a usable one (a known family and a port).
pub fn socket_addr(a: &SockAddr) -> Option<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    if a.port == 0 {
        return None;
    }
    let ip = match a.family {
        2 => IpAddr::V4(Ipv4Addr::new(a.addr[0], a.addr[1], a.addr[2], a.addr[3])),
        10 => {
            let v6 = Ipv6Addr::from(a.addr);
            // Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d; show them as IPv4.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, a.port))
}

pub fn comm_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::CHUNK_SMALL;

    fn as_bytes<T>(v: &T) -> &[u8] {
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
    }

    fn data_event(payload: &[u8]) -> DataEvent<CHUNK_SMALL> {
        let mut ev: DataEvent<CHUNK_SMALL> = unsafe { std::mem::zeroed() };
        ev.hdr.kind = kind::DATA;
        ev.hdr.tgid = 42;
        ev.hdr.ts_ns = 2000;
        ev.enter_ns = 1000;
        ev.total_len = 100;
        ev.fd = 7;
        ev.cap_len = payload.len() as u32;
        ev.direction = direction::EGRESS;
        ev.flags = data_flags::FIRST | data_flags::LAST;
        ev.data[..payload.len()].copy_from_slice(payload);
        ev
    }

    #[test]
    fn parses_a_data_chunk() {
        let ev = data_event(b"GET / HTTP/1.1\r\n");
        let Ok(Event::Data(d)) = parse(as_bytes(&ev)) else { panic!("not data") };
        assert_eq!((d.tgid, d.fd, d.enter_ns, d.exit_ns, d.total_len), (42, 7, 1000, 2000, 100));
        assert_eq!(d.data, b"GET / HTTP/1.1\r\n");
        assert_eq!(d.direction, Direction::Egress);
        assert!(d.first && d.last);
    }

    /// A close record as the probes write it: the Go TLS ciphertext counted on the socket
    /// comes with it, received then sent, and the socket's `struct sock`; a record cut short is
    /// an error.
    #[test]
    fn parses_a_close_with_its_tls_byte_counts() {
        let ev = SockCloseEvent {
            hdr: EventHeader { kind: kind::SOCK_CLOSE, tgid: 42, tid: 43, _pad: 0, ts_ns: 5000, goid: 0 },
            fd: 7,
            reason: 2,
            tls_bytes: [1234, 56789],
            sk: 0xffff_8881_0a2b_3c00,
        };
        let Ok(Event::SockClose { tgid, fd, ts_ns, reason, tls_bytes, sk }) = parse(as_bytes(&ev)) else {
            panic!("not a close")
        };
        assert_eq!((tgid, fd, ts_ns, reason, tls_bytes, sk), (42, 7, 5000, 2, [1234, 56789], 0xffff_8881_0a2b_3c00));
        assert!(parse(&as_bytes(&ev)[..size_of::<SockCloseEvent>() - 8]).is_err());
    }

    /// An open record carries the socket's `struct sock` after its addresses.
    #[test]
    fn parses_an_open_with_its_socket() {
        let ev = SockOpenEvent {
            hdr: EventHeader { kind: kind::SOCK_OPEN, tgid: 42, tid: 43, _pad: 0, ts_ns: 5000, goid: 0 },
            fd: 7,
            listen_fd: -1,
            role: sock_role::ACCEPTED,
            _pad: [0; 7],
            local: SockAddr { family: 2, port: 443, _pad: 0, addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] },
            peer: SockAddr {
                family: 2,
                port: 50000,
                _pad: 0,
                addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            sk: 0xffff_8881_0a2b_3c00,
        };
        let Ok(Event::SockOpen(o)) = parse(as_bytes(&ev)) else { panic!("not an open") };
        assert_eq!((o.fd, o.role, o.listen_fd, o.sk), (7, Role::Server, None, 0xffff_8881_0a2b_3c00));
        assert_eq!(o.peer, Some("127.0.0.1:50000".parse().unwrap()));
        assert!(parse(&as_bytes(&ev)[..size_of::<SockOpenEvent>() - 8]).is_err());
    }

    #[test]
    fn rejects_corrupt_records_without_panicking() {
        let mut ev = data_event(b"x");
        ev.cap_len = 10_000;
        assert_eq!(parse(as_bytes(&ev)).unwrap_err(), ParseError::BadField("data length"));
        let mut ev = data_event(b"x");
        ev.direction = 9;
        assert!(parse(as_bytes(&ev)).is_err());
        let mut ev = data_event(b"xyz");
        ev.total_len = 1;
        assert!(parse(as_bytes(&ev)).is_err());
        assert!(parse(&[1, 0, 0]).is_err());
        assert!(
            parse(&[99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                .is_err()
        );
        // Every truncation of a valid record is an error, never a panic.
        let ev = data_event(b"hello");
        let bytes = as_bytes(&ev);
        for len in 0..DATA_EVENT_HEADER_LEN + 5 {
            assert!(parse(&bytes[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn mapped_ipv4_peers_show_as_ipv4() {
        let mut a = SockAddr { family: 10, port: 443, ..Default::default() };
        a.addr[10] = 0xff;
        a.addr[11] = 0xff;
        a.addr[12..].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(socket_addr(&a).unwrap().to_string(), "127.0.0.1:443");
        assert_eq!(socket_addr(&SockAddr::default()), None);
    }
}
