//! `sock:inet_sock_set_state`: learns the local address of a target's TCP connect.
//!
//! tcp_v4/v6_connect moves the socket to SYN_SENT inside the connect syscall, in the caller's
//! context, so the pending connect of this very thread is the socket that changed state. That also
//! tells TCP apart from UDP "connects" (DNS), which are not followed.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::SockAddr;

use crate::{
    maps::{PENDING, current_target},
    probes::syscalls::call,
};

const TCP_SYN_SENT: i32 = 2;
const IPPROTO_TCP: u16 = 6;
const AF_INET: u16 = 2;

/// Field offsets from /sys/kernel/tracing/events/sock/inet_sock_set_state/format (stable since 4.16).
mod field {
    pub const SKADDR: usize = 8;
    pub const NEWSTATE: usize = 20;
    pub const SPORT: usize = 24;
    pub const FAMILY: usize = 28;
    pub const PROTOCOL: usize = 30;
    pub const SADDR: usize = 32;
    pub const SADDR_V6: usize = 40;
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let Some(pid_tgid) = current_target() else {
        return 0;
    };
    let _ = try_inet_sock_set_state(&ctx, pid_tgid);
    0
}

fn try_inet_sock_set_state(ctx: &TracePointContext, pid_tgid: u64) -> Result<(), i32> {
    let newstate: i32 = unsafe { ctx.read_at(field::NEWSTATE)? };
    let protocol: u16 = unsafe { ctx.read_at(field::PROTOCOL)? };
    if newstate != TCP_SYN_SENT || protocol != IPPROTO_TCP {
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
    let sk: u64 = unsafe { ctx.read_at(field::SKADDR)? };
    unsafe {
        (*pending).local = local;
        (*pending).is_tcp = 1;
        (*pending).sk = sk;
    }
    Ok(())
}
