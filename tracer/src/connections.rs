//! The connection table: one entry per traced socket, keyed by (tgid, fd).
//!
//! It turns data chunks into per-direction [`Segment`]s, noticing lost events (a jump in the
//! kernel's per-socket sequence number, or a chunk that does not continue its syscall) so the
//! decoders can resynchronise instead of reading misaligned bytes. Bounded: beyond the limit the
//! least recently active connection is evicted and counted.
//!
//! The table does not know what decodes a connection: each entry carries the decoders' state as
//! an opaque `P` (the assembler's protocol state), which the table only resets when the bytes
//! change meaning (Go TLS plaintext replaces the ciphertext).

mod endpoint;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use crate::{
    events::DataChunk,
    span::ProcessInfo,
    stream::{Direction, Role, Segment},
};

pub use endpoint::Endpoint;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub fd: i32,
}

/// Progress through the chunks of the current syscall of one direction.
#[derive(Default, Debug)]
struct DirState {
    /// A syscall whose LAST chunk has not arrived: (total bytes, captured end offset).
    open_syscall: Option<(u64, u64)>,
}

pub struct Connection<P> {
    /// Where the table keeps it (set by [`ConnTable::insert`]): the process and its socket fd.
    pub key: ConnKey,
    pub role: Role,
    /// Fixed at creation, as `endpoints`, which is made from them.
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// `local` and `peer` as their spans carry them, made once.
    endpoints: [Option<Endpoint>; 2],
    /// Kernel time the connection was opened (or first seen, when it predates the agent).
    pub opened_ns: u64,
    pub last_ns: u64,
    /// Opened before the agent attached: its streams may be seen from the middle.
    pub preexisting: bool,
    /// The kernel `struct sock` behind the fd, when the probes said (else 0).
    pub sk: u64,
    /// Another traced process holds this connection's other end (the same addresses, reversed):
    /// kept by the table as connections come and go.
    pub peer_traced: bool,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub process: Arc<ProcessInfo>,
    /// The decoders' state (see the module's doc).
    pub proto: P,
    /// Go TLS plaintext has been seen: the syscall bytes are ciphertext and are no longer decoded.
    pub plaintext: bool,
    /// Stream continuity per source: [syscall, Go TLS] × [ingress, egress].
    dirs: [[DirState; 2]; 2],
    /// Next sequence number expected per source and direction (the kernel counts them apart).
    next_seq: [[Option<u32>; 2]; 2],
}

/// What a data chunk means for the decoders.
pub enum Feed<'a> {
    /// Bytes were lost: reset decoders, then feed the segment.
    LostThen(Segment<'a>),
    /// Feed the segments in order (a gap segment of uncaptured bytes may come first).
    Segments(Option<Segment<'a>>, Segment<'a>),
}

impl<P: Default> Connection<P> {
    pub fn new(
        role: Role,
        local: Option<SocketAddr>,
        peer: Option<SocketAddr>,
        opened_ns: u64,
        preexisting: bool,
        process: Arc<ProcessInfo>,
    ) -> Self {
        Connection {
            key: ConnKey::default(),
            role,
            local,
            peer,
            endpoints: [local.map(Endpoint::new), peer.map(Endpoint::new)],
            opened_ns,
            last_ns: opened_ns,
            preexisting,
            sk: 0,
            peer_traced: false,
            bytes_received: 0,
            bytes_sent: 0,
            process,
            proto: P::default(),
            plaintext: false,
            dirs: Default::default(),
            next_seq: [[None; 2]; 2],
        }
    }

    /// Whether this connection is the kernel socket `sk`, or may be (either is unknown).
    pub fn may_be_socket(&self, sk: u64) -> bool {
        self.sk == 0 || sk == 0 || self.sk == sk
    }

    pub fn local_endpoint(&self) -> Option<&Endpoint> {
        self.endpoints[0].as_ref()
    }

    pub fn peer_endpoint(&self) -> Option<&Endpoint> {
        self.endpoints[1].as_ref()
    }

    /// Ciphertext a Go `tls.Conn` moved on this socket, `[received, sent]`, which the probes
    /// count and report at close rather than per syscall.
    pub fn add_tls_bytes(&mut self, [received, sent]: [u64; 2]) {
        self.bytes_received += received;
        self.bytes_sent += sent;
    }

    /// Accounts one chunk and says how to feed it to the decoders (None: not to be decoded).
    pub fn on_chunk<'a>(&mut self, c: &DataChunk<'a>) -> Option<Feed<'a>> {
        self.last_ns = self.last_ns.max(c.exit_ns);
        if c.tls && !self.plaintext {
            // From now on the decoders read plaintext; what they saw so far was ciphertext.
            self.plaintext = true;
            self.proto = P::default();
        }
        if !c.tls {
            if c.first {
                if c.direction == Direction::Ingress {
                    self.bytes_received += c.total_len;
                } else {
                    self.bytes_sent += c.total_len;
                }
            }
            if self.plaintext {
                return None;
            }
        }
        let source = usize::from(c.tls);
        let mut lost = false;
        let dir = &mut self.dirs[source][c.direction.index()];
        let mut gap = None;
        if c.first {
            // A jump forward in the per-socket sequence means events of this socket were lost.
            let next = &mut self.next_seq[source][c.direction.index()];
            if let Some(expected) = *next {
                lost |= c.seq.wrapping_sub(expected) as i32 > 0;
            }
            *next = Some(c.seq.wrapping_add(1));
            // The previous syscall of this direction never sent its LAST chunk (ring was full).
            if let Some((total, end)) = dir.open_syscall.take() {
                gap = Some(Segment {
                    data: &[],
                    uncaptured_after: total.saturating_sub(end),
                    enter_ns: c.enter_ns,
                    exit_ns: c.enter_ns,
                    goroutine: c.goroutine,
                });
                lost = true;
            }
        } else {
            match dir.open_syscall {
                Some((_, end)) if end == u64::from(c.offset) => {}
                _ => lost = true,
            }
        }
        let end = u64::from(c.offset) + c.data.len() as u64;
        let uncaptured_after = if c.last {
            dir.open_syscall = None;
            c.total_len.saturating_sub(end)
        } else {
            dir.open_syscall = Some((c.total_len, end));
            0
        };
        let seg = Segment {
            data: c.data,
            uncaptured_after,
            enter_ns: c.enter_ns,
            exit_ns: c.exit_ns,
            goroutine: c.goroutine,
        };
        Some(if lost { Feed::LostThen(seg) } else { Feed::Segments(gap, seg) })
    }
}

impl Direction {
    pub(crate) fn index(self) -> usize {
        match self {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        }
    }
}

/// A close record for an fd whose connection is another socket by now.
#[derive(Debug, PartialEq, Eq)]
pub struct StaleClose;

/// A connection's addresses as (local, peer).
type AddrPair = (SocketAddr, SocketAddr);

pub struct ConnTable<P> {
    // foldhash: the default SipHash showed in profiles; keys are (tgid, fd), not attacker-chosen.
    conns: HashMap<ConnKey, Connection<P>, foldhash::fast::RandomState>,
    /// The connections by their addresses, to find the other end of one on this node: at most
    /// one entry per connection (a socket shared by processes is found under its latest key).
    by_addrs: HashMap<AddrPair, ConnKey, foldhash::fast::RandomState>,
    max: usize,
    pub evicted: u64,
}

impl<P: Default> ConnTable<P> {
    pub fn new(max: usize) -> Self {
        ConnTable { conns: HashMap::default(), by_addrs: HashMap::default(), max, evicted: 0 }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn get_mut(&mut self, key: &ConnKey) -> Option<&mut Connection<P>> {
        self.conns.get_mut(key)
    }

    /// Inserts, returning what was there (fd reuse without a seen close) and what had to be
    /// evicted to make room: both still need their spans finished.
    pub fn insert(&mut self, key: ConnKey, mut conn: Connection<P>) -> Vec<Connection<P>> {
        let mut finished = Vec::new();
        finished.extend(self.take(&key));
        if self.conns.len() >= self.max
            && let Some(oldest) = self.conns.iter().min_by_key(|(_, c)| c.last_ns).map(|(k, _)| *k)
        {
            finished.extend(self.take(&oldest));
            self.evicted += 1;
        }
        conn.key = key;
        if let (Some(local), Some(peer)) = (conn.local, conn.peer) {
            self.by_addrs.insert((local, peer), key);
            if let Some(other) = self.by_addrs.get(&(peer, local)).filter(|k| k.tgid != key.tgid)
                && let Some(other) = self.conns.get_mut(other)
            {
                other.peer_traced = true;
                conn.peer_traced = true;
            }
        }
        self.conns.insert(key, conn);
        finished
    }

    /// Removes a connection and its address entry; the other end, if traced, is no longer
    /// marked as such.
    fn take(&mut self, key: &ConnKey) -> Option<Connection<P>> {
        let conn = self.conns.remove(key)?;
        if let (Some(local), Some(peer)) = (conn.local, conn.peer) {
            if self.by_addrs.get(&(local, peer)) == Some(key) {
                self.by_addrs.remove(&(local, peer));
            }
            if conn.peer_traced
                && let Some(other) = self.by_addrs.get(&(peer, local))
                && let Some(other) = self.conns.get_mut(other)
            {
                other.peer_traced = false;
            }
        }
        Some(conn)
    }

    /// Removes the connection a close record of kernel socket `sk` on `key` ends. One known to
    /// be another socket stays (`Err`): the record is a late close of the fd's previous socket.
    pub fn remove_closed(&mut self, key: &ConnKey, sk: u64) -> Result<Option<Connection<P>>, StaleClose> {
        match self.conns.get(key) {
            Some(c) if !c.may_be_socket(sk) => Err(StaleClose),
            _ => Ok(self.take(key)),
        }
    }

    /// Removes every connection of a process (it exited or was detached).
    pub fn remove_process(&mut self, tgid: u32) -> Vec<Connection<P>> {
        let keys: Vec<ConnKey> = self.conns.keys().filter(|k| k.tgid == tgid).copied().collect();
        keys.iter().filter_map(|k| self.take(k)).collect()
    }

    /// The connections of a process.
    pub fn of_process_mut(&mut self, tgid: u32) -> impl Iterator<Item = &mut Connection<P>> {
        self.conns.iter_mut().filter(move |(k, _)| k.tgid == tgid).map(|(_, c)| c)
    }

    /// Removes the connections of a process whose fd is not in `keep`.
    pub fn remove_process_except(&mut self, tgid: u32, keep: &[i32]) -> Vec<Connection<P>> {
        let keys: Vec<ConnKey> =
            self.conns.keys().filter(|k| k.tgid == tgid && !keep.contains(&k.fd)).copied().collect();
        keys.iter().filter_map(|k| self.take(k)).collect()
    }

    pub fn drain(&mut self) -> Vec<Connection<P>> {
        self.by_addrs.clear();
        self.conns.drain().map(|(_, c)| c).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(sk: u64) -> Connection<()> {
        let process = Arc::new(ProcessInfo {
            service_name: "s".into(),
            pid: 7,
            executable_name: "s".into(),
            host_name: "h".into(),
        });
        let mut c = Connection::new(
            Role::Server,
            "127.0.0.1:443".parse().ok(),
            "127.0.0.1:50000".parse().ok(),
            1_000,
            false,
            process,
        );
        c.sk = sk;
        c
    }

    /// A close record names its socket: the close of the fd's previous socket, come after the
    /// next one took the fd, leaves the new connection alone; its own close, or one from probes
    /// that do not know sockets (0), ends it.
    #[test]
    fn a_late_close_of_the_previous_socket_leaves_the_connection() {
        let key = ConnKey { tgid: 7, fd: 9 };
        let mut table = ConnTable::new(16);
        table.insert(key, conn(0xa000));
        assert_eq!(table.remove_closed(&key, 0xb000).err(), Some(StaleClose));
        assert_eq!(table.len(), 1);
        assert_eq!(table.remove_closed(&key, 0xa000).map(|c| c.map(|c| c.sk)), Ok(Some(0xa000)));
        assert_eq!(table.len(), 0);
        table.insert(key, conn(0xa000));
        assert!(matches!(table.remove_closed(&key, 0), Ok(Some(_))));
        table.insert(key, conn(0));
        assert!(matches!(table.remove_closed(&key, 0xb000), Ok(Some(_))));
        assert!(matches!(table.remove_closed(&key, 0xb000), Ok(None)));
    }

    fn at(tgid: u32, local: &str, peer: &str) -> Connection<()> {
        let mut c = conn(0);
        c.process = Arc::new(ProcessInfo { pid: tgid, ..(*c.process).clone() });
        (c.local, c.peer) = (local.parse().ok(), peer.parse().ok());
        c
    }

    fn peer_traced(table: &mut ConnTable<()>, tgid: u32, fd: i32) -> bool {
        table.get_mut(&ConnKey { tgid, fd }).expect("connection").peer_traced
    }

    /// A connection whose reversed addresses are another traced process's connection knows it
    /// (both do), whichever came first, and forgets it when that one goes; a process's own
    /// other end (one process, both ends) and other addresses do not count.
    #[test]
    fn the_other_end_in_another_traced_process_is_known_while_it_lives() {
        let (client, server) = ("10.0.0.1:40000", "10.0.0.1:2379");
        let mut table = ConnTable::new(16);
        table.insert(ConnKey { tgid: 1, fd: 5 }, at(1, client, server));
        table.insert(ConnKey { tgid: 1, fd: 6 }, at(1, "10.0.0.1:40001", server));
        assert!(!peer_traced(&mut table, 1, 5));
        table.insert(ConnKey { tgid: 1, fd: 7 }, at(1, server, "10.0.0.1:40001"));
        assert!(!peer_traced(&mut table, 1, 6) && !peer_traced(&mut table, 1, 7), "one process, both ends");
        table.insert(ConnKey { tgid: 2, fd: 9 }, at(2, server, client));
        assert!(peer_traced(&mut table, 1, 5) && peer_traced(&mut table, 2, 9));
        assert!(!peer_traced(&mut table, 1, 6));
        assert!(table.remove_closed(&ConnKey { tgid: 2, fd: 9 }, 0).is_ok());
        assert!(!peer_traced(&mut table, 1, 5), "the other end closed");
        table.insert(ConnKey { tgid: 2, fd: 9 }, at(2, server, client));
        assert!(peer_traced(&mut table, 1, 5));
        table.remove_process(1);
        assert!(!peer_traced(&mut table, 2, 9), "its process is gone");
        assert_eq!(table.by_addrs.len(), table.len());
    }

    /// The address index is bounded with the table: evicted, replaced and drained connections
    /// leave it.
    #[test]
    fn the_address_index_follows_the_table() {
        let mut table = ConnTable::new(2);
        for fd in 0..10 {
            let c = at(3, &format!("10.0.0.1:{}", 40_000 + fd), "10.0.0.2:443");
            table.insert(ConnKey { tgid: 3, fd }, c);
            assert_eq!(table.by_addrs.len(), table.len());
        }
        assert_eq!((table.len(), table.evicted), (2, 8));
        table.insert(ConnKey { tgid: 3, fd: 9 }, at(3, "10.0.0.1:50000", "10.0.0.2:443"));
        assert_eq!((table.len(), table.by_addrs.len()), (2, 2), "fd 9 replaced");
        table.remove_process_except(3, &[9]);
        assert_eq!((table.len(), table.by_addrs.len()), (1, 1));
        table.drain();
        assert_eq!(table.by_addrs.len(), 0);
    }
}
