//! Socket syscalls of target processes, from the raw `sys_enter`/`sys_exit` tracepoints.
//!
//! One pair of raw tracepoints instead of ~25 classic syscall tracepoints: untraced processes pay
//! only the TGID bitmap test, and the syscall id is a register, not a record to read.
//! At entry the arguments are stashed per thread; at exit the result decides what is reported.

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
    maps::{SOCKETS, count, count_tls_bytes, current_target, empty_probes},
    pending::{PENDING, PendingCall, call},
    sockets::{AF_INET, AF_INET6, announce_open, close_socket},
    userregs::{nr, word},
};

const AF_UNIX: u16 = 1;
const EINPROGRESS: i64 = 115;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    if empty_probes() {
        return 0;
    }
    let Some(pid_tgid) = current_target() else {
        return 0;
    };
    let _ = try_sys_enter(&ctx, pid_tgid);
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    if empty_probes() {
        return 0;
    }
    let Some(pid_tgid) = current_target() else {
        return 0;
    };
    let _ = try_sys_exit(&ctx, pid_tgid);
    0
}

#[inline(always)]
/// Word `index` (`userregs::word`) of the `struct pt_regs` that `sys_enter`/`sys_exit` pass. That
/// pointer is untyped for the verifier, so the word is copied out (`UserRegs` reads in place).
fn reg(regs: *const u64, index: usize) -> u64 {
    unsafe { bpf_probe_read_kernel(regs.add(index)) }.unwrap_or(0)
}

fn try_sys_enter(ctx: &RawTracePointContext, pid_tgid: u64) -> Result<(), i64> {
    let id: i64 = ctx.arg(1);
    let kind = match id {
        nr::READ | nr::RECVFROM => call::READ,
        nr::WRITE | nr::SENDTO => call::WRITE,
        nr::READV => call::READV,
        nr::WRITEV => call::WRITEV,
        nr::RECVMSG => call::RECVMSG,
        nr::SENDMSG => call::SENDMSG,
        nr::SENDFILE => call::SENDFILE,
        nr::ACCEPT | nr::ACCEPT4 => call::ACCEPT,
        nr::CONNECT => call::CONNECT,
        nr::CLOSE => call::CLOSE_NOW,
        _ => return Ok(()),
    };
    let regs: *const u64 = ctx.arg(0);
    let fd = reg(regs, word::DI) as i32;
    let tgid = (pid_tgid >> 32) as u32;
    if kind == call::CLOSE_NOW {
        on_close(pid_tgid, fd);
        return Ok(());
    }

    let mut pending = PendingCall {
        kind,
        fd,
        arg: reg(regs, word::SI),
        len: reg(regs, word::DX),
        enter_ns: unsafe { bpf_ktime_get_ns() },
        local: SockAddr::default(),
        peer: SockAddr::default(),
        is_tcp: 0,
        _pad: 0,
        sk: 0,
    };
    match kind {
        call::ACCEPT => {}
        call::CONNECT => {
            pending.peer = read_sockaddr(pending.arg);
            if pending.peer.family != AF_INET && pending.peer.family != AF_INET6 {
                return Ok(());
            }
        }
        _ => {
            // Data syscall: only sockets we know of. File I/O of the target stops here.
            if SOCKETS.get_ptr(socket_key(tgid, fd as u32)).is_none() {
                return Ok(());
            }
            // A Go goroutine (R14 holds g) inside crypto/tls learns which socket it is on.
            gotls_conns::bind_syscall(tgid, reg(regs, word::R14), fd);
        }
    }
    if PENDING.insert(pid_tgid, pending, 0).is_err() {
        count(counter::ARGS_FULL);
    }
    Ok(())
}

fn try_sys_exit(ctx: &RawTracePointContext, pid_tgid: u64) -> Result<(), i64> {
    let Some(pending) = PENDING.get_ptr(pid_tgid) else {
        accept_entered_before_attach(ctx, pid_tgid);
        return Ok(());
    };
    let pending = unsafe { *pending };
    let _ = PENDING.remove(pid_tgid);
    let ret: i64 = ctx.arg(1);
    let tgid = (pid_tgid >> 32) as u32;
    match pending.kind {
        call::ACCEPT => {
            if ret >= 0 {
                let peer = read_sockaddr(pending.arg);
                if peer.family != AF_UNIX {
                    open_socket(pid_tgid, ret as i32, pending.fd, sock_role::ACCEPTED, SockAddr::default(), peer);
                }
            }
        }
        call::CONNECT => {
            if (ret == 0 || ret == -EINPROGRESS) && pending.is_tcp == 1 {
                let mut local = pending.local;
                local.port = bound_port(pending.sk, pending.peer.port);
                open_socket(pid_tgid, pending.fd, -1, sock_role::CONNECTED, local, pending.peer);
            }
        }
        _ => {
            if ret <= 0 {
                return Ok(());
            }
            let key = socket_key(tgid, pending.fd as u32);
            let Some(state) = SOCKETS.get_ptr_mut(key) else {
                return Ok(());
            };
            let dir = match pending.kind {
                call::READ | call::READV | call::RECVMSG => direction::INGRESS,
                _ => direction::EGRESS,
            };
            let d = usize::from(dir & 1);
            if unsafe { (*state).go_conn } != 0 {
                // Ciphertext under a Go tls.Conn: counted for the close record (as in
                // probes/sockio.rs).
                count_tls_bytes(key, unsafe { (*state).sk }, d, ret as u64);
                return Ok(());
            }
            // Not atomic (core has no BPF atomics): two threads racing on one socket may share a
            // number, which userspace tolerates; it only treats a jump forward as lost events.
            let seq = unsafe { (*state).seq[d] };
            unsafe { (*state).seq[d] = seq.wrapping_add(1) };
            let data = DataCtx {
                fd: pending.fd,
                direction: dir,
                enter_ns: pending.enter_ns,
                exit_ns: unsafe { bpf_ktime_get_ns() },
                total: ret as u64,
                seq,
                source: source::SYSCALL,
                goid: 0,
            };
            match pending.kind {
                call::READ | call::WRITE => emit_data(&data, pending.arg, 0),
                call::READV | call::WRITEV => emit_data(&data, pending.arg, pending.len),
                call::RECVMSG | call::SENDMSG => {
                    // struct msghdr: msg_iov at 16, msg_iovlen at 24.
                    let iov = read_user_u64(pending.arg + 16);
                    let iovlen = read_user_u64(pending.arg + 24);
                    emit_data(&data, iov, iovlen)
                }
                // sendfile: the bytes are counted, not captured.
                _ => emit_data(&data, 0, NO_CAPTURE),
            }
        }
    }
    Ok(())
}

/// An accept() that was already blocking when the process became a target has no pending entry,
/// yet its connection is new: take its arguments from the registers saved at syscall entry.
#[inline(always)]
fn accept_entered_before_attach(ctx: &RawTracePointContext, pid_tgid: u64) {
    let ret: i64 = ctx.arg(1);
    if ret < 0 {
        return;
    }
    let regs: *const u64 = ctx.arg(0);
    let id = reg(regs, word::ORIG_AX) as i64;
    if id != nr::ACCEPT && id != nr::ACCEPT4 {
        return;
    }
    let peer = read_sockaddr(reg(regs, word::SI));
    if peer.family != AF_UNIX {
        open_socket(pid_tgid, ret as i32, reg(regs, word::DI) as i32, sock_role::ACCEPTED, SockAddr::default(), peer);
    }
}

/// The local port a connect was given. It is chosen after the SYN_SENT transition (where the
/// address is learned), so it is read at connect's exit from `struct sock_common`, whose leading
/// `skc_daddr, skc_rcv_saddr, skc_hash, skc_dport, skc_num` layout has not changed in a decade;
/// the peer port at `skc_dport` confirms the layout before `skc_num` is believed. 0 if unsure.
#[inline(always)]
fn bound_port(sk: u64, peer_port: u16) -> u16 {
    if sk == 0 {
        return 0;
    }
    match unsafe { bpf_probe_read_kernel((sk + 12) as *const [u8; 4]) } {
        Ok(p) if u16::from_be_bytes([p[0], p[1]]) == peer_port => u16::from_ne_bytes([p[2], p[3]]),
        Ok(p) => {
            log_layout_refused(u16::from_be_bytes([p[0], p[1]]), peer_port);
            0
        }
        Err(e) => {
            log_sock_unreadable(sk, e);
            0
        }
    }
}

#[inline(always)]
fn read_user_u64(addr: u64) -> u64 {
    unsafe { bpf_probe_read_user(addr as *const u64) }.unwrap_or(0)
}

/// Reads a sockaddr_in/sockaddr_in6 from user memory. The first 16 bytes hold the family, the
/// port and an IPv4 address; an IPv6 address sits at offset 8. Reading 16 bytes first stays inside
/// a sockaddr_in even when it ends a page.
fn read_sockaddr(ptr: u64) -> SockAddr {
    let mut out = SockAddr::default();
    if ptr == 0 {
        return out;
    }
    let Ok(head) = (unsafe { bpf_probe_read_user(ptr as *const [u8; 16]) }) else {
        return out;
    };
    out.family = u16::from_ne_bytes([head[0], head[1]]);
    out.port = u16::from_be_bytes([head[2], head[3]]);
    match out.family {
        AF_INET => out.addr[..4].copy_from_slice(&head[4..8]),
        AF_INET6 => {
            if let Ok(addr) = unsafe { bpf_probe_read_user((ptr + 8) as *const [u8; 16]) } {
                out.addr = addr;
            }
        }
        _ => {}
    }
    out
}

#[inline(always)]
fn open_socket(pid_tgid: u64, fd: i32, listen_fd: i32, role: u8, local: SockAddr, peer: SockAddr) {
    let tgid = (pid_tgid >> 32) as u32;
    if SOCKETS.insert(socket_key(tgid, fd as u32), SocketState::new(role), 0).is_err() {
        count(counter::SOCKETS_FULL);
        return;
    }
    announce_open(pid_tgid, fd, listen_fd, role, local, peer, unsafe { bpf_ktime_get_ns() }, 0);
}

fn on_close(pid_tgid: u64, fd: i32) {
    let key = socket_key((pid_tgid >> 32) as u32, fd as u32);
    let Some(state) = SOCKETS.get_ptr(key) else {
        return; // not a socket we follow
    };
    close_socket(key, &unsafe { *state }, close_reason::CLOSE_SYSCALL);
}

// Diagnostics (crate::diag), each out of line: a log record is built on the stack, and in its own
// frame it does not add to the program's, which the verifier limits (512 bytes with the calls).

#[inline(never)]
fn log_layout_refused(skc_dport: u16, peer_port: u16) {
    diag!("connect: skc_dport {} is not the peer port {}: local port left unknown", skc_dport, peer_port);
}

#[inline(never)]
fn log_sock_unreadable(sk: u64, error: i32) {
    diag!("connect: reading struct sock at {:x} failed ({}): local port left unknown", sk, error);
}
