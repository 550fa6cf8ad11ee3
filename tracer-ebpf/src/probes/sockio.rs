//! Socket I/O of targets from `sock:sock_send_length` and `sock:sock_recv_length` (Linux ≥ 6.3).
//!
//! These fire only for socket I/O, at the end of the kernel's sendmsg/recvmsg inside the syscall
//! that asked for it, so processes that are not traced pay nothing for their other syscalls (raw
//! `sys_enter`/`sys_exit` run a program for every syscall of every process). The syscall's fd and
//! buffer are the user registers saved at its entry.
//!
//! Sockets are learned at their first bytes, checked to be TCP, and kept in `SOCKETS` by
//! (tgid, fd) as with syscall hooks. Connects were marked at SYN_SENT (probes/sock.rs); any other
//! new socket was accepted. Another `struct sock` behind a known fd means its old one was closed.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use tracer_common::{SockAddr, SocketState, close_reason, counter, direction, sock_role, socket_key, source};

use crate::{
    diag::diag,
    emit::{DataCtx, NO_CAPTURE, emit_data},
    gotls_conns,
    maps::{SK_KEYS, SOCKETS, count, count_tls_bytes, current_target, empty_probes, is_go_tls_target, sock_offsets},
    sockets::{AF_INET, AF_INET6, IPPROTO_TCP, announce_open, close_socket, tcp_state},
    userregs::{UserRegs, nr},
};

const MSG_PEEK: i32 = 2;

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> i32 {
    if empty_probes() {
        return 0;
    }
    let Some(pid_tgid) = current_target() else {
        return 0;
    };
    let _ = try_sock_io::<{ direction::EGRESS }>(&ctx, pid_tgid);
    0
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_length(ctx: RawTracePointContext) -> i32 {
    if empty_probes() {
        return 0;
    }
    let Some(pid_tgid) = current_target() else {
        return 0;
    };
    let _ = try_sock_io::<{ direction::INGRESS }>(&ctx, pid_tgid);
    0
}

/// Where the bytes of the syscall are in user memory (`payload` kinds; every field is always set:
/// an undefined one may be an uninitialised register, which the verifier rejects).
mod payload {
    /// One buffer at `a`.
    pub const BUFFER: u8 = 0;
    /// An iovec array at `a` of `b` entries.
    pub const IOVEC: u8 = 1;
    /// A msghdr at `a`.
    pub const MSGHDR: u8 = 2;
    /// Not in user memory (sendfile, splice), or the syscall is not one we can read.
    pub const NONE: u8 = 3;
    /// Ciphertext under a Go tls.Conn: counted in `TLS_BYTES`, no record.
    pub const COUNTED: u8 = 4;
}

/// `DIR` is a constant of each program, so that the per-direction counter is at a fixed offset:
/// a variable one made the verifier's pruning fail at `--capture-bytes 32768`.
fn try_sock_io<const DIR: u8>(ctx: &RawTracePointContext, pid_tgid: u64) -> Result<(), i64> {
    let dir = DIR;
    // TP_PROTO(struct sock *sk, int ret, int flags)
    let sk: u64 = ctx.arg(0);
    let ret = ctx.arg::<u64>(1) as i32 as i64;
    let flags = ctx.arg::<u64>(2) as i32;
    if dir == direction::INGRESS && flags & MSG_PEEK != 0 {
        return Ok(()); // the same bytes are read again for real
    }
    let tgid = (pid_tgid >> 32) as u32;
    if ret <= 0 && !is_go_tls_target(tgid) {
        return Ok(()); // nothing moved (EAGAIN...), and no Go TLS call to tie to this socket
    }
    let regs = UserRegs::current().ok_or(0i64)?;
    let (fd, kind, a, b) = match regs.syscall() {
        nr::READ | nr::RECVFROM | nr::WRITE | nr::SENDTO => (regs.di() as i32, payload::BUFFER, regs.si(), 0),
        nr::READV | nr::WRITEV => (regs.di() as i32, payload::IOVEC, regs.si(), regs.dx()),
        nr::RECVMSG | nr::SENDMSG => (regs.di() as i32, payload::MSGHDR, regs.si(), 0),
        nr::SENDFILE => (regs.di() as i32, payload::NONE, 0, 0),
        // splice(fd_in, off_in, fd_out, ...): the socket is fd_out.
        nr::SPLICE => (regs.r10() as i32, payload::NONE, 0, 0),
        // io_uring, sendmmsg...: no fd in the registers; counted only on a socket already known.
        _ => {
            if ret <= 0 {
                return Ok(());
            }
            let Some(key) = (unsafe { SK_KEYS.get(sk) }).copied().filter(|k| (k >> 32) as u32 == tgid) else {
                count(counter::NO_SYSCALL_FD);
                log_no_fd(regs.syscall());
                return Ok(());
            };
            (key as u32 as i32, payload::NONE, 0, 0)
        }
    };
    if ret <= 0 {
        // A Go goroutine (R14 holds g) inside crypto/tls learns which socket it is on, even from
        // a read that found nothing yet (EAGAIN), if the socket is known.
        // (A seeded socket's `sk` is still 0.)
        let known = SOCKETS.get_ptr(socket_key(tgid, fd as u32)).map(|s| unsafe { (*s).sk });
        if known == Some(sk) || known == Some(0) {
            gotls_conns::bind_syscall(tgid, regs.r14(), fd);
        }
        return Ok(());
    }
    let state = known_socket(pid_tgid, fd, sk).ok_or(0i64)?;
    gotls_conns::bind_syscall(tgid, regs.r14(), fd);
    // Not atomic: two threads racing on one socket may share a number, which userspace tolerates.
    let seq = unsafe { (*state).seq[DIR as usize & 1] };
    unsafe { (*state).seq[DIR as usize & 1] = seq.wrapping_add(1) };
    let now = unsafe { bpf_ktime_get_ns() };
    let data = DataCtx {
        fd,
        direction: dir,
        // The hook runs as the bytes are moved: for a write, its start is not known, and only
        // microseconds old on a socket that took the bytes.
        enter_ns: now,
        exit_ns: now,
        total: ret as u64,
        seq,
        source: source::SYSCALL,
        goid: 0,
    };
    // A socket under a Go tls.Conn carries ciphertext: its plaintext comes from the uprobes, and
    // its bytes are only counted, here, for the close record. A record per syscall was a large
    // share of the records of a Go TLS server, and of the agent's work on them. (Chosen as a payload kind, not
    // returned early: that shape made the verifier's pruning fail at `--capture-bytes 32768`.)
    let kind = if unsafe { (*state).go_conn } != 0 {
        count_tls_bytes(socket_key(tgid, fd as u32), unsafe { (*state).sk }, DIR as usize, ret as u64);
        payload::COUNTED
    } else {
        kind
    };
    match kind {
        payload::BUFFER => emit_data(&data, a, 0),
        payload::IOVEC => emit_data(&data, a, b),
        payload::MSGHDR => {
            // struct msghdr: msg_iov at 16, msg_iovlen at 24.
            let iov = unsafe { bpf_probe_read_user((a + 16) as *const u64) }.unwrap_or(0);
            let iovlen = unsafe { bpf_probe_read_user((a + 24) as *const u64) }.unwrap_or(0);
            emit_data(&data, iov, iovlen)
        }
        payload::COUNTED => {}
        _ => emit_data(&data, 0, NO_CAPTURE),
    }
    Ok(())
}

/// The table entry of the TCP socket `sk` on `fd`, announcing it to userspace on first sight.
#[inline(always)]
fn known_socket(pid_tgid: u64, fd: i32, sk: u64) -> Option<*mut SocketState> {
    let key = socket_key((pid_tgid >> 32) as u32, fd as u32);
    if let Some(state) = SOCKETS.get_ptr_mut(key) {
        let s = unsafe { &mut *state };
        if s.sk == sk {
            if s.announced == 0 {
                // A connect marked at SYN_SENT: its local port is chosen by now.
                s.announced = 1;
                let (local, peer) = addresses(sk);
                announce_open(pid_tgid, fd, -1, s.role, local, peer, s.open_ns, sk);
            }
            return Some(state);
        }
        if s.sk == 0 && seeded_socket_is(s, sk) {
            // Seeded from /proc by userspace, which announced it already.
            s.sk = sk;
            let _ = SK_KEYS.insert(sk, key, 0);
            return Some(state);
        }
        // The fd now names another socket: the old one was closed without a TCP state change
        // we could tie to it.
        close_socket(key, &unsafe { *state }, close_reason::FD_REUSED);
    }
    let (local, peer) = addresses(sk);
    if peer.family == 0 {
        log_not_tcp(fd, sk);
        return None;
    }
    // Bytes moved as the socket died (a last write answered by a reset, processed inside it):
    // its connection is over, not new.
    let state = i32::from(read_kernel::<u8>(sk + sock_offsets().skc_state as u64).unwrap_or(0));
    if !matches!(state, tcp_state::ESTABLISHED | tcp_state::FIN_WAIT1 | tcp_state::FIN_WAIT2 | tcp_state::CLOSE_WAIT) {
        log_not_open(fd, state);
        return None;
    }
    let mut state = SocketState::new(sock_role::ACCEPTED);
    state.sk = sk;
    if SOCKETS.insert(key, state, 0).is_err() {
        count(counter::SOCKETS_FULL);
        return None;
    }
    let _ = SK_KEYS.insert(sk, key, 0);
    announce_open(pid_tgid, fd, -1, sock_role::ACCEPTED, local, peer, unsafe { bpf_ktime_get_ns() }, sk);
    SOCKETS.get_ptr_mut(key)
}

/// A socket seeded from /proc has no `sk` yet: it is this one if the ports agree.
#[inline(always)]
fn seeded_socket_is(s: &SocketState, sk: u64) -> bool {
    let off = sock_offsets();
    let dport = read_kernel::<[u8; 2]>(sk + off.skc_dport as u64).map(u16::from_be_bytes);
    let num = read_kernel::<u16>(sk + off.skc_num as u64);
    dport == Some(s.peer_port) && num == Some(s.local_port)
}

/// Local and peer address of a TCP socket; `peer.family` is 0 for anything else.
#[inline(always)]
fn addresses(sk: u64) -> (SockAddr, SockAddr) {
    let mut local = SockAddr::default();
    let mut peer = SockAddr::default();
    let off = sock_offsets();
    let family = read_kernel::<u16>(sk + off.skc_family as u64).unwrap_or(0);
    let protocol = read_kernel::<u16>(sk + off.sk_protocol as u64).unwrap_or(0);
    if (family != AF_INET && family != AF_INET6) || protocol != IPPROTO_TCP {
        return (local, peer);
    }
    local.port = read_kernel::<u16>(sk + off.skc_num as u64).unwrap_or(0);
    peer.port = read_kernel::<[u8; 2]>(sk + off.skc_dport as u64).map(u16::from_be_bytes).unwrap_or(0);
    if family == AF_INET {
        let l = read_kernel::<[u8; 4]>(sk + off.skc_rcv_saddr as u64).unwrap_or_default();
        let p = read_kernel::<[u8; 4]>(sk + off.skc_daddr as u64).unwrap_or_default();
        local.addr[..4].copy_from_slice(&l);
        peer.addr[..4].copy_from_slice(&p);
    } else {
        local.addr = read_kernel::<[u8; 16]>(sk + off.skc_v6_rcv_saddr as u64).unwrap_or_default();
        peer.addr = read_kernel::<[u8; 16]>(sk + off.skc_v6_daddr as u64).unwrap_or_default();
    }
    local.family = family;
    peer.family = family;
    (local, peer)
}

#[inline(always)]
fn read_kernel<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

// Diagnostics (crate::diag), each out of line: a log record is built on the stack, and in its own
// frame it does not add to the program's, which the verifier limits (512 bytes with the calls).

#[inline(never)]
fn log_no_fd(syscall: i64) {
    diag!("socket I/O by syscall {} has no fd in its registers: not captured", syscall);
}

#[inline(never)]
fn log_not_tcp(fd: i32, sk: u64) {
    let off = sock_offsets();
    diag!(
        "fd {}: not followed, not TCP over IPv4/IPv6 (skc_family {}, sk_protocol {})",
        fd,
        read_kernel::<u16>(sk + off.skc_family as u64).unwrap_or(0),
        read_kernel::<u16>(sk + off.sk_protocol as u64).unwrap_or(0)
    );
}

#[inline(never)]
fn log_not_open(fd: i32, state: i32) {
    diag!("fd {}: not followed, its TCP state {} is not an open one", fd, state);
}
