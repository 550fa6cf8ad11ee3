//! What /proc tells about a process and its sockets. Paths go through /proc/PID so that the agent
//! works from a host-PID container without sharing the target's mount namespace.

use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

pub fn exists(pid: u32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok()
}

pub fn comm(pid: u32) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(s.trim_end_matches('\n').to_owned())
}

/// Base name of the process's executable (falls back to comm for kernel threads or races).
pub fn exe_name(pid: u32) -> Option<String> {
    let link = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let name = link.file_name()?.to_string_lossy().into_owned();
    Some(name.trim_end_matches(" (deleted)").to_owned())
}

/// Thread-group leaders whose comm is one of `comms`.
pub fn pids_with_comm(comms: &[String]) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| comm(pid).is_some_and(|c| comms.contains(&c)))
        .collect()
}

pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Socket fds of a process: (fd, socket inode).
pub fn socket_fds(pid: u32) -> Vec<(i32, u64)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let fd: i32 = e.file_name().to_str()?.parse().ok()?;
        let link = fs::read_link(e.path()).ok()?;
        let inode = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()?;
        Some((fd, inode))
    })
    .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Kernel TCP state (1 = ESTABLISHED, 10 = LISTEN, ...).
    pub state: u8,
}

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_LISTEN: u8 = 10;

/// TCP sockets of the process's network namespace by inode, from /proc/PID/net/tcp{,6}.
pub fn tcp_sockets(pid: u32) -> HashMap<u64, TcpSocket> {
    let mut out = HashMap::new();
    for file in ["tcp", "tcp6"] {
        if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
            out.extend(text.lines().skip(1).filter_map(parse_tcp_line));
        }
    }
    out
}

/// One line of /proc/net/tcp: `sl local_address rem_address st ... uid timeout inode`.
pub fn parse_tcp_line(line: &str) -> Option<(u64, TcpSocket)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let local = parse_hex_addr(f.get(1)?)?;
    let remote = parse_hex_addr(f.get(2)?)?;
    let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
    let inode = f.get(9)?.parse().ok()?;
    Some((inode, TcpSocket { local, remote, state }))
}

/// `0100007F:1F90` (IPv4) or 32 hex digits + port (IPv6), as the kernel prints them: each 32-bit
/// word in host (little-endian) order.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<u32>> =
        (0..addr.len() / 8).map(|i| addr.get(i * 8..i * 8 + 8).and_then(|w| u32::from_str_radix(w, 16).ok())).collect();
    let words = words?;
    let ip = match words.len() {
        1 => IpAddr::V4(Ipv4Addr::from(words[0].to_le_bytes())),
        4 => {
            let mut b = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            let v6 = Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recorded_proc_net_tcp_lines() {
        // Recorded from /proc/net/tcp and /proc/net/tcp6 on this machine.
        let v4 = "   0: 0100007F:0953 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 20 4 30 10 -1";
        let (inode, s) = parse_tcp_line(v4).unwrap();
        assert_eq!(inode, 123456);
        assert_eq!(s.local.to_string(), "127.0.0.1:2387");
        assert_eq!(s.remote.to_string(), "127.0.0.1:54000");
        assert_eq!(s.state, TCP_ESTABLISHED);
        let v6 = "   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0";
        let (inode, s) = parse_tcp_line(v6).unwrap();
        assert_eq!(inode, 777);
        assert_eq!(s.local.to_string(), "[::1]:8080");
        assert_eq!(s.state, TCP_LISTEN);
        let mapped =
            "   2: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:9C40 01 0 0 0 0 0 99 1";
        assert_eq!(parse_tcp_line(mapped).unwrap().1.remote.to_string(), "127.0.0.1:40000");
        assert_eq!(parse_tcp_line("garbage"), None);
        assert_eq!(parse_tcp_line("  sl  local_address rem_address   st"), None);
    }

    #[test]
    fn finds_own_process() {
        let me = std::process::id();
        assert!(exists(me));
        assert!(comm(me).is_some());
        assert!(exe_name(me).is_some());
    }
}
