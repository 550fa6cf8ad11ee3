//! The socket table of targets, and the open/close events that keep userspace in step with it.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use tracer_common::{EventHeader, SockAddr, SockCloseEvent, SockOpenEvent, SocketState, counter, kind};

use crate::{
    gotls_conns,
    maps::{EVENTS, SK_KEYS, SOCKETS, TLS_BYTES, count, submit_flags},
};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// TCP states (include/net/tcp_states.h).
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
    pub const SYN_RECV: i32 = 3;
    pub const FIN_WAIT1: i32 = 4;
    pub const FIN_WAIT2: i32 = 5;
    pub const CLOSE: i32 = 7;
    pub const CLOSE_WAIT: i32 = 8;
    pub const LAST_ACK: i32 = 9;
}

/// An event header stamped `ts_ns` (callers that have a time already pass it: reading the clock
/// is a helper call per record).
#[inline(always)]
pub fn header(kind: u32, pid_tgid: u64, ts_ns: u64) -> EventHeader {
    EventHeader { kind, tgid: (pid_tgid >> 32) as u32, tid: pid_tgid as u32, _pad: 0, ts_ns, goid: 0 }
}

/// Tells userspace of a new connection of `pid_tgid` on `fd`, stamped `ts_ns`.
#[allow(clippy::too_many_arguments)] // inlined into each caller: a struct would be built only to be taken apart
#[inline(always)]
pub fn announce_open(
    pid_tgid: u64,
    fd: i32,
    listen_fd: i32,
    role: u8,
    local: SockAddr,
    peer: SockAddr,
    ts_ns: u64,
    sk: u64,
) {
    let Some(mut entry) = EVENTS.reserve::<SockOpenEvent>(0) else {
        count(counter::RINGBUF_FULL);
        return;
    };
    entry.write(SockOpenEvent {
        hdr: header(kind::SOCK_OPEN, pid_tgid, ts_ns),
        fd,
        listen_fd,
        role,
        _pad: [0; 7],
        local,
        peer,
        sk,
    });
    entry.submit(submit_flags());
}

/// Forgets the socket at `key` (whose state is `state`) and tells userspace it closed, if it knew.
///
/// Only if `key` still holds that socket: a thread closing a socket frees its fd before TCP runs
/// the close (and these hooks), so another thread may accept a connection on the same fd number
/// first, whose first bytes replace the entry. A closer holding the old state must then leave the
/// new entry, and its byte counts, alone; the one that replaced the entry reported the close.
#[inline(always)]
pub fn close_socket(key: u64, state: &SocketState, reason: u32) {
    match SOCKETS.get_ptr(key) {
        Some(current) if unsafe { (*current).sk } == state.sk => {}
        _ => return,
    }
    let _ = SOCKETS.remove(key);
    let tgid = (key >> 32) as u32;
    let mut tls_bytes = [0u64; 2];
    if state.go_conn != 0
        && let Some(counts) = unsafe { TLS_BYTES.get(key) }
        && counts.sk == state.sk
    {
        tls_bytes = counts.bytes;
        let _ = TLS_BYTES.remove(key);
    }
    gotls_conns::forget_conn(tgid, state.go_conn);
    if state.sk != 0 {
        let _ = SK_KEYS.remove(state.sk);
    }
    if state.announced == 0 {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<SockCloseEvent>(0) else {
        count(counter::RINGBUF_FULL);
        return;
    };
    // The closing thread is not always known (a reset arrives in softirq): only the process is.
    let pid_tgid = (tgid as u64) << 32;
    entry.write(SockCloseEvent {
        hdr: header(kind::SOCK_CLOSE, pid_tgid, unsafe { bpf_ktime_get_ns() }),
        fd: key as u32 as i32,
        reason,
        tls_bytes,
        sk: state.sk,
    });
    entry.submit(submit_flags());
}
