//! Local addresses of accepted connections.
//!
//! accept() tells the peer's address but not the local one, and reading it from the kernel socket
//! would need struct offsets that differ between kernels. The local end of an accepted connection
//! is the listening socket's address, so that is looked up once per listening fd in /proc; only
//! a wildcard listener (0.0.0.0, ::) needs the connection's own line of /proc/PID/net/tcp, which is
//! re-read at most every `MIN_REFRESH` so a burst of accepts costs one read.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::procfs;

const MIN_REFRESH: Duration = Duration::from_millis(50);
/// Entries kept per cache at most (bounded memory; cleared when full).
const MAX_ENTRIES: usize = 4096;

#[derive(Default)]
pub struct LocalAddrs {
    listeners: HashMap<(u32, i32), Option<SocketAddr>>,
    by_peer: HashMap<u32, (Instant, HashMap<SocketAddr, SocketAddr>)>,
    pub table_reads: u64,
}

impl LocalAddrs {
    /// Local address of a connection `tgid` accepted on `listen_fd` from `peer`.
    pub fn accepted(&mut self, tgid: u32, listen_fd: Option<i32>, peer: Option<SocketAddr>) -> Option<SocketAddr> {
        let listener = listen_fd.and_then(|fd| self.listener(tgid, fd));
        match listener {
            Some(l) if !l.ip().is_unspecified() => Some(l),
            _ => peer.and_then(|p| self.by_peer(tgid, p)).or(listener),
        }
    }

    fn listener(&mut self, tgid: u32, fd: i32) -> Option<SocketAddr> {
        if let Some(addr) = self.listeners.get(&(tgid, fd)) {
            return *addr;
        }
        if self.listeners.len() >= MAX_ENTRIES {
            self.listeners.clear();
        }
        let table = procfs::tcp_sockets(tgid);
        self.table_reads += 1;
        let addr = procfs::socket_fds(tgid)
            .into_iter()
            .find(|(f, _)| *f == fd)
            .and_then(|(_, inode)| table.get(&inode))
            .map(|s| s.local);
        self.listeners.insert((tgid, fd), addr);
        addr
    }

    fn by_peer(&mut self, tgid: u32, peer: SocketAddr) -> Option<SocketAddr> {
        if let Some(local) = self.by_peer.get(&tgid).and_then(|(_, t)| t.get(&peer)) {
            return Some(*local);
        }
        let stale = self.by_peer.get(&tgid).is_none_or(|(at, _)| at.elapsed() >= MIN_REFRESH);
        if !stale {
            return None;
        }
        if self.by_peer.len() >= MAX_ENTRIES {
            self.by_peer.clear();
        }
        let table: HashMap<_, _> = procfs::tcp_sockets(tgid).into_values().map(|s| (s.remote, s.local)).collect();
        self.table_reads += 1;
        let found = table.get(&peer).copied();
        self.by_peer.insert(tgid, (Instant::now(), table));
        found
    }

    pub fn forget(&mut self, tgid: u32) {
        self.by_peer.remove(&tgid);
        self.listeners.retain(|(t, _), _| *t != tgid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        net::{TcpListener, TcpStream},
        os::fd::AsRawFd,
    };

    #[test]
    fn finds_the_local_end_of_real_connections() {
        let me = std::process::id();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut r = LocalAddrs::default();
        for _ in 0..3 {
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (_server, peer) = listener.accept().unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            let local = r.accepted(me, Some(listener.as_raw_fd()), Some(peer));
            assert_eq!(local, Some(listener.local_addr().unwrap()));
        }
        // One read of the table for the listener, none per connection.
        assert_eq!(r.table_reads, 1);
    }

    #[test]
    fn wildcard_listeners_use_the_connection_line() {
        let me = std::process::id();
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        let mut r = LocalAddrs::default();
        let local = r.accepted(me, Some(listener.as_raw_fd()), Some(peer)).unwrap();
        assert_eq!(local.to_string(), format!("127.0.0.1:{port}"));
        drop(client);
    }
}
