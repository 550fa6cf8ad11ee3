//! `sock:inet_sock_set_state`: TCP state changes of targets' sockets.
//!
//! - SYN_SENT happens inside connect (or a fast-open sendto), in the caller's context. With
//!   syscall hooks it gives the pending connect its local address and tells TCP from UDP
//!   "connects" (DNS). With socket hooks it marks the fd as a connect, announced at its first
//!   bytes, once its local port is chosen.
//! - With socket hooks, these end a connection: FIN_WAIT1 or LAST_ACK from the owner's close (not
//!   from a shutdown: the fd still reads what the peer sent or sends), a reset or abort (CLOSE
//!   straight from an open state, maybe in softirq), and a new connection in the same `struct sock`
//!   memory (SYN_SENT/SYN_RECV). CLOSE after FIN_WAIT/CLOSING does not: the fd may still hold
//!   unread bytes. With syscall hooks, close() itself says so.
//! - `tcp:tcp_destroy_sock` (socket hooks) ends the connection of a socket whose close changed no
//!   state.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use tracer_common::{SockAddr, SocketState, close_reason, probe_mode, sock_role, socket_key};

use crate::{
    maps::{SK_KEYS, SOCKETS, current_target, empty_probes, probe_mode},
    pending::{PENDING, call},
    sockets::{AF_INET, IPPROTO_TCP, close_socket, tcp_state::*},
    userregs::{UserRegs, nr},
};

/// Field offsets from /sys/kernel/tracing/events/sock/inet_sock_set_state/format (stable since 4.16).
mod field {
    pub const SKADDR: usize = 8;
    /// `oldstate`, then `newstate` at 20: read together.
    pub const OLDSTATE: usize = 16;
    pub const SPORT: usize = 24;
    pub const DPORT: usize = 26;
    pub const FAMILY: usize = 28;
    pub const PROTOCOL: usize = 30;
    pub const SADDR: usize = 32;
    pub const SADDR_V6: usize = 40;
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    if empty_probes() {
        return 0;
    }
    let target = current_target();
    let Ok([oldstate, newstate]) = (unsafe { ctx.read_at::<[i32; 2]>(field::OLDSTATE) }) else {
        return 0;
    };
    match target {
        Some(pid_tgid) => {
            let _ = try_inet_sock_set_state(&ctx, pid_tgid, oldstate, newstate);
        }
        // A reset can close a target's socket from any context, and a `struct sock` that starts a
        // new life (reused memory) ends its old one: look it up by its address.
        None if (is_reset(oldstate, newstate) || is_new_life(newstate)) && probe_mode() == probe_mode::SOCKET => {
            if let Ok(sk) = unsafe { ctx.read_at::<u64>(field::SKADDR) } {
                let reason = if is_reset(oldstate, newstate) { close_reason::RESET } else { close_reason::NEW_LIFE };
                let _ = forget_sk(sk, reason);
            }
        }
        None => {}
    }
    0
}

/// A socket starting a connection: if its memory held a target's socket before, that one is gone
/// (its close was not seen, e.g. shutdown then close, which changes no state).
#[inline(always)]
fn is_new_life(newstate: i32) -> bool {
    newstate == SYN_SENT || newstate == SYN_RECV
}

/// CLOSE straight from an open state: a reset, or an abort (close with unread bytes, SO_LINGER 0).
#[inline(always)]
fn is_reset(oldstate: i32, newstate: i32) -> bool {
    newstate == CLOSE && matches!(oldstate, ESTABLISHED | CLOSE_WAIT | SYN_SENT | SYN_RECV)
}

fn try_inet_sock_set_state(ctx: &TracePointContext, pid_tgid: u64, oldstate: i32, newstate: i32) -> Result<(), i64> {
    let protocol: u16 = unsafe { ctx.read_at(field::PROTOCOL)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let sk: u64 = unsafe { ctx.read_at(field::SKADDR)? };
    if probe_mode() == probe_mode::SOCKET {
        return match newstate {
            SYN_SENT => {
                let _ = forget_sk(sk, close_reason::NEW_LIFE);
                mark_connect(pid_tgid, sk)
            }
            SYN_RECV => forget_sk(sk, close_reason::NEW_LIFE),
            FIN_WAIT1 | LAST_ACK => closed(ctx, pid_tgid, sk, newstate),
            _ if is_reset(oldstate, newstate) => closed(ctx, pid_tgid, sk, newstate),
            _ => Ok(()),
        };
    }
    if newstate != SYN_SENT {
        return Ok(());
    }
    let Some(pending) = PENDING.get_ptr_mut(pid_tgid) else {
        return Ok(());
    };
    if unsafe { (*pending).kind } != call::CONNECT {
        return Ok(());
    }
    let family: u16 = unsafe { ctx.read_at(field::FAMILY)? };
    let mut local = SockAddr { family, port: unsafe { ctx.read_at(field::SPORT)? }, ..Default::default() };
    if family == AF_INET {
        let v4: [u8; 4] = unsafe { ctx.read_at(field::SADDR)? };
        local.addr[..4].copy_from_slice(&v4);
    } else {
        local.addr = unsafe { ctx.read_at(field::SADDR_V6)? };
    }
    unsafe {
        (*pending).local = local;
        (*pending).is_tcp = 1;
        (*pending).sk = sk;
    }
    Ok(())
}

/// Socket hooks: the fd a target is connecting becomes a client connection, announced at its
/// first bytes (by then its local port is chosen).
#[inline(always)]
fn mark_connect(pid_tgid: u64, sk: u64) -> Result<(), i64> {
    let regs = UserRegs::current().ok_or(0i64)?;
    if !matches!(regs.syscall(), nr::CONNECT | nr::SENDTO | nr::SENDMSG) {
        return Ok(());
    }
    let fd = regs.di() as u32;
    let key = socket_key((pid_tgid >> 32) as u32, fd);
    if let Some(old) = SOCKETS.get_ptr(key) {
        close_socket(key, &unsafe { *old }, close_reason::RECONNECTED);
    }
    let mut state = SocketState::new(sock_role::CONNECTED);
    state.sk = sk;
    state.open_ns = unsafe { bpf_ktime_get_ns() };
    state.announced = 0;
    SOCKETS.insert(key, state, 0)?;
    SK_KEYS.insert(sk, key, 0)?;
    Ok(())
}

/// Socket hooks: a target's socket left the open states in the target's own context.
#[inline(always)]
fn closed(ctx: &TracePointContext, pid_tgid: u64, sk: u64, newstate: i32) -> Result<(), i64> {
    let regs = UserRegs::current();
    let syscall = regs.as_ref().map(UserRegs::syscall).unwrap_or(-1);
    if syscall == nr::SHUTDOWN && newstate != CLOSE {
        // Half-closed (FIN_WAIT1), or both sides done (LAST_ACK): the fd still reads what the
        // peer sent. Its close() may change no state; tcp_destroy_sock says when it is gone.
        return Ok(());
    }
    if SK_KEYS.get_ptr(sk).is_some() {
        let reason = if newstate == CLOSE { close_reason::RESET } else { close_reason::CLOSED_STATE };
        return forget_sk(sk, reason);
    }
    // A socket seeded from /proc whose `sk` was never learned (no bytes since attach), closed by
    // close(fd): the ports tell it is the same socket.
    let Some(regs) = regs.filter(|_| syscall == nr::CLOSE) else { return Ok(()) };
    let key = socket_key((pid_tgid >> 32) as u32, regs.di() as u32);
    let Some(state) = SOCKETS.get_ptr(key) else { return Ok(()) };
    let state = unsafe { *state };
    let sport: u16 = unsafe { ctx.read_at(field::SPORT)? };
    let dport: u16 = unsafe { ctx.read_at(field::DPORT)? };
    if state.sk == 0 && state.local_port == sport && state.peer_port == dport {
        close_socket(key, &state, close_reason::SEEDED_CLOSE);
    }
    Ok(())
}

/// `tcp:tcp_destroy_sock` (socket hooks): the kernel frees a TCP socket, which happens only once
/// its fd is closed. It catches the closes that changed no state (after shutdown, or in TIME_WAIT),
/// in whatever context the last packet was handled: the socket is looked up by its address.
#[tracepoint]
pub fn tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    if empty_probes() {
        return 0;
    }
    if let Ok(sk) = unsafe { ctx.read_at::<u64>(field::SKADDR) } {
        let _ = forget_sk(sk, close_reason::DESTROYED);
    }
    0
}

/// Socket hooks: the socket `sk` is closed; its connection ends.
#[inline(always)]
fn forget_sk(sk: u64, reason: u32) -> Result<(), i64> {
    let key = *unsafe { SK_KEYS.get(sk) }.ok_or(0i64)?;
    let _ = SK_KEYS.remove(sk);
    let state = unsafe { *SOCKETS.get_ptr(key).ok_or(0i64)? };
    if state.sk == sk {
        close_socket(key, &state, reason);
    }
    Ok(())
}
