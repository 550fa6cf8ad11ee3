//! Go crypto/tls plaintext: uprobes on `(*tls.Conn).Read` and `(*tls.Conn).Write`.
//!
//! Each probe hit is a trap. Where the binary's code allows (userspace checks it), a call takes
//! one probe, on an instruction the kernel emulates (a branch or a call): `go_tls_write_checked`
//! and `go_tls_read_copy`. Otherwise calls are probed at their entry and RETs: Go moves goroutine
//! stacks, so uretprobes (which rewrite the return address on the stack) are unsafe, and
//! userspace attaches the `*_ret` programs at every RET instruction instead. A call may
//! also resume on another OS thread, so calls are keyed by goroutine (the `g` pointer, which the
//! register ABI keeps in R14), not by thread.
//!
//! Register ABI (Go ≥ 1.17, amd64): receiver in RAX, `b []byte` in RBX (ptr) and RCX (len);
//! results `n` in RAX, `err` in RBX/RCX.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    macros::uprobe,
    programs::ProbeContext,
};
use tracer_common::{GoKey, GoTlsCall, counter, direction, socket_key, source};

use crate::{
    emit::{DataCtx, emit_data},
    gotls_conns::{
        ConnSocket, GO_TLS_CALLS, GO_TLS_OFFSETS, REPORTED_AT_ENTRY, bind_next_syscall, conn_fd, conn_socket,
        go_tls_target,
    },
    maps::{SOCKETS, count, empty_probes},
};

/// Attached at the entry of `serverHandshake` and `clientHandshake`, which run once per
/// connection. (An earlier version probed `readFromUntil`, entry and RETs: three calls per
/// HTTP request, each a trap, a large share of the probes' cost on a Go HTTPS server.) No RET
/// probe: a handshake reads or writes its socket before anything else, which clears the entry.
#[uprobe]
pub fn go_tls_handshake_enter(ctx: ProbeContext) -> u32 {
    if empty_probes() {
        return 0;
    }
    let Some(pid_tgid) = go_tls_target(&ctx) else { return 0 };
    let tgid = (pid_tgid >> 32) as u32;
    let regs = unsafe { &*ctx.regs };
    // Even when the Conn's address is known already: a new Conn at the address of an old one
    // whose socket's close was missed must not inherit that socket.
    bind_next_syscall(tgid, regs.r14, regs.rax);
    0
}

/// x86 EFLAGS carry and zero flags: `jbe` branches when either is set.
const CF_ZF: u64 = 1 | 1 << 6;

/// Attached on the branch of Write's stack check (`jbe morestack`) when userspace found one: a
/// probed branch is emulated by the kernel in one trap, where the entry's `cmp` is single-stepped
/// in two. The flags of the check tell whether the branch is taken; when it is, morestack grows
/// the stack and restarts Write from its entry, so only the run that goes on into Write reports
/// the call, whole: Write needs no RET probe. A Write whose socket is not known yet (a wrapped
/// conn that was open before the probes) is lost, and counted; the syscall it makes names the
/// socket for the calls after it. A Write on a connection whose socket closed is neither.
#[uprobe]
pub fn go_tls_write_checked(ctx: ProbeContext) -> u32 {
    if empty_probes() {
        return 0;
    }
    let Some(pid_tgid) = go_tls_target(&ctx) else { return 0 };
    let tgid = (pid_tgid >> 32) as u32;
    let regs = unsafe { &*ctx.regs };
    if regs.eflags & CF_ZF != 0 {
        return 0;
    }
    let fd = match conn_socket(tgid, regs.rax) {
        ConnSocket::Known(fd) => fd,
        ConnSocket::Closed => return 0,
        ConnSocket::Unknown => {
            bind_next_syscall(tgid, regs.r14, regs.rax);
            count(counter::GO_TLS_NO_SOCKET);
            return 0;
        }
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let call = GoTlsCall {
        buf: regs.rbx,
        conn: regs.rax,
        enter_ns: now,
        fd,
        direction: direction::EGRESS,
        emitted: REPORTED_AT_ENTRY,
        _pad: [0; 2],
    };
    emit_call(pid_tgid, regs.r14, &call, regs.rcx as i64, now);
    0
}

/// Attached on Read's `call runtime.memmove` when userspace found it (see `ReadCopy` in the
/// agent's gobin): the one copy of the plaintext Read returns, out of the decrypted record. A
/// probed call is emulated in one trap, where each RET would take two; Read then needs no other
/// probe. memmove's registers: RBX = the plaintext, RCX = `n`, the count Read returns. The
/// receiver is in its spill slot, `read_frame` + 8 bytes above RSP. The read's start is not known:
/// the copy stands for it (the bytes arrived before it).
#[uprobe]
pub fn go_tls_read_copy(ctx: ProbeContext) -> u32 {
    if empty_probes() {
        return 0;
    }
    let Some(pid_tgid) = go_tls_target(&ctx) else { return 0 };
    let tgid = (pid_tgid >> 32) as u32;
    let regs = unsafe { &*ctx.regs };
    let n = regs.rcx as i64;
    // The copy is from one record, which holds at most 16 KiB of plaintext.
    if n <= 0 || n > 1 << 14 {
        return 0;
    }
    let Some(off) = (unsafe { GO_TLS_OFFSETS.get(tgid) }) else { return 0 };
    let Ok(conn) = (unsafe { bpf_probe_read_user((regs.rsp + off.read_frame + 8) as *const u64) }) else { return 0 };
    let fd = match conn_socket(tgid, conn) {
        ConnSocket::Known(fd) => fd,
        ConnSocket::Closed => return 0,
        ConnSocket::Unknown => {
            count(counter::GO_TLS_NO_SOCKET);
            return 0;
        }
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let call = GoTlsCall {
        buf: regs.rbx,
        conn,
        enter_ns: now,
        fd,
        direction: direction::INGRESS,
        emitted: REPORTED_AT_ENTRY,
        _pad: [0; 2],
    };
    emit_call(pid_tgid, regs.r14, &call, n, now);
    0
}

#[uprobe]
pub fn go_tls_write_enter(ctx: ProbeContext) -> u32 {
    if empty_probes() {
        return 0;
    }
    enter(&ctx, direction::EGRESS);
    0
}

#[uprobe]
pub fn go_tls_read_enter(ctx: ProbeContext) -> u32 {
    if empty_probes() {
        return 0;
    }
    enter(&ctx, direction::INGRESS);
    0
}

/// Attached at each RET of Write.
#[uprobe]
pub fn go_tls_write_ret(ctx: ProbeContext) -> u32 {
    if empty_probes() {
        return 0;
    }
    ret(&ctx, direction::EGRESS);
    0
}

/// Attached at each RET of Read.
#[uprobe]
pub fn go_tls_read_ret(ctx: ProbeContext) -> u32 {
    if empty_probes() {
        return 0;
    }
    ret(&ctx, direction::INGRESS);
    0
}

#[inline(always)]
fn enter(ctx: &ProbeContext, dir: u8) {
    let Some(pid_tgid) = go_tls_target(ctx) else { return };
    let tgid = (pid_tgid >> 32) as u32;
    let regs = unsafe { &*ctx.regs };
    let fd = match conn_socket(tgid, regs.rax) {
        ConnSocket::Known(fd) => fd,
        ConnSocket::Closed => return,
        // Not known yet: the socket syscall this call makes will tell (see `gotls_conns::bind_syscall`).
        ConnSocket::Unknown => -1,
    };
    let mut call = GoTlsCall {
        buf: regs.rbx,
        conn: regs.rax,
        enter_ns: unsafe { bpf_ktime_get_ns() },
        fd,
        direction: dir,
        emitted: 0,
        _pad: [0; 2],
    };
    let key = GoKey { tgid: tgid as u64, ptr: regs.r14 };
    if dir == direction::EGRESS && fd >= 0 {
        // A goroutine whose stack must grow runs the function's entry twice (the prologue calls
        // morestack, which restarts the function): the same call is not reported twice. A call
        // left behind by a RET that was not seen, and that made its syscall, is not taken for
        // this one (Go reuses goroutines, and a reused one may write the same buffer again).
        if let Some(prev) = unsafe { GO_TLS_CALLS.get(key) }
            && prev.emitted == REPORTED_AT_ENTRY
            && prev.buf == call.buf
            && prev.conn == call.conn
        {
            return;
        }
        // Sent at entry: the peer's answer can be read (and reported) by another goroutine before
        // this Write reaches its RET, and a request must never come after its response.
        emit_call(pid_tgid, regs.r14, &call, regs.rcx as i64, call.enter_ns);
        call.emitted = REPORTED_AT_ENTRY;
    }
    if GO_TLS_CALLS.insert(key, call, 0).is_err() {
        count(counter::GO_TLS_CALLS_FULL);
    }
}

#[inline(always)]
fn ret(ctx: &ProbeContext, dir: u8) {
    let Some(pid_tgid) = go_tls_target(ctx) else { return };
    let tgid = (pid_tgid >> 32) as u32;
    let regs = unsafe { &*ctx.regs };
    let key = GoKey { tgid: tgid as u64, ptr: regs.r14 };
    let n = regs.rax as i64;
    let call = match GO_TLS_CALLS.get_ptr(key) {
        Some(call) => {
            let call = unsafe { *call };
            let _ = GO_TLS_CALLS.remove(key);
            if call.emitted != 0 {
                return;
            }
            call
        }
        // Reads only: a Write whose socket was known was already reported at its entry. Read's
        // entry is not probed at all when its arguments stay in their spill slots (userspace
        // checks the binary's code), or the call began before the probes were attached.
        None if dir == direction::INGRESS => match call_from_spill_slots(tgid, regs.rsp, n, dir) {
            Some(call) => call,
            None => return,
        },
        None => return,
    };
    if n <= 0 {
        return;
    }
    if call.fd < 0 {
        count(counter::GO_TLS_NO_SOCKET);
        return;
    }
    emit_call(pid_tgid, regs.r14, &call, n, unsafe { bpf_ktime_get_ns() });
}

/// Emits `n` plaintext bytes of a call as data of its socket, made by goroutine `g`.
#[inline(always)]
fn emit_call(pid_tgid: u64, g: u64, call: &GoTlsCall, n: i64, exit_ns: u64) {
    let tgid = (pid_tgid >> 32) as u32;
    if n <= 0 {
        return;
    }
    let Some(state) = SOCKETS.get_ptr_mut(socket_key(tgid, call.fd as u32)) else { return };
    let d = usize::from(call.direction & 1);
    let seq = unsafe { (*state).tls_seq[d] };
    unsafe { (*state).tls_seq[d] = seq.wrapping_add(1) };
    let data = DataCtx {
        fd: call.fd,
        direction: call.direction,
        enter_ns: call.enter_ns,
        exit_ns,
        total: n as u64,
        seq,
        source: source::GO_TLS,
        goid: g,
    };
    emit_data(&data, call.buf, 0);
}

/// A Read without an entry record: its entry is not probed, or it was already running when the
/// probes were attached (an HTTP/2 read loop waits in Read all the time). Its arguments are still
/// in the ABI's spill slots above the return address — (*Conn).Read spills the receiver and `b`
/// there because they are live across calls (userspace checks the prologue) — so at RET:
/// receiver at RSP+8, b.ptr at RSP+16, b.len at RSP+24. Used only when the receiver is a
/// connection whose socket is known, and `b` can hold what was returned. The read's start is not
/// known: its end stands for it (the bytes arrived before it).
#[inline(always)]
fn call_from_spill_slots(tgid: u32, rsp: u64, n: i64, dir: u8) -> Option<GoTlsCall> {
    if n <= 0 {
        return None;
    }
    let slots: [u64; 3] = unsafe { bpf_probe_read_user((rsp + 8) as *const [u64; 3]) }.ok()?;
    let [conn, buf, len] = slots;
    if buf == 0 || len < n as u64 {
        return None;
    }
    let fd = conn_fd(tgid, conn)?;
    let now = unsafe { bpf_ktime_get_ns() };
    Some(GoTlsCall { buf, conn, enter_ns: now, fd, direction: dir, emitted: 0, _pad: [0; 2] })
}
