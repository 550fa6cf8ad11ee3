//! Targets that start or stop while the agent runs.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{ProcEvent, counter, kind};

use crate::{
    gotls_conns::forget_go_tls_target,
    maps::{EVENTS, TARGET_COMMS, TARGETS, clear_bit, count, current_target, empty_probes, is_target, set_bit},
    sockets::header,
};

/// A process exec'd: report it if its new comm is a `--comm` target (or it already was a target,
/// whose image changed). Other processes never reach userspace.
///
/// A `--comm` target becomes one here, in the kernel, before its first instruction: the agent
/// hears of it later (ring buffer, then its own work), and nothing the process does meanwhile is
/// lost. Its Go TLS state belonged to the old image: the new one's probes register it again.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    if empty_probes() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Ok(comm) = bpf_get_current_comm() else {
        return 0;
    };
    let wanted = unsafe { TARGET_COMMS.get(comm) }.is_some();
    if wanted || is_target(tgid) {
        set_bit(&TARGETS, tgid);
        forget_go_tls_target(tgid);
        send(kind::PROC_EXEC, pid_tgid, comm);
    }
    0
}

/// A target's main thread exited: userspace closes its connections and forgets it. Its bits are
/// cleared here, so that a new process given the same pid is not a target by mistake, whenever
/// the agent reads this.
#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    if empty_probes() {
        return 0;
    }
    let Some(pid_tgid) = current_target() else {
        return 0;
    };
    let tgid = (pid_tgid >> 32) as u32;
    if tgid != pid_tgid as u32 {
        return 0;
    }
    clear_bit(&TARGETS, tgid);
    forget_go_tls_target(tgid);
    send(kind::PROC_EXIT, pid_tgid, bpf_get_current_comm().unwrap_or_default());
    0
}

fn send(kind: u32, pid_tgid: u64, comm: [u8; 16]) {
    let Some(mut entry) = EVENTS.reserve::<ProcEvent>(0) else {
        count(counter::RINGBUF_FULL);
        return;
    };
    entry.write(ProcEvent { hdr: header(kind, pid_tgid, unsafe { bpf_ktime_get_ns() }), comm });
    // The agent is woken at once, not at its next poll: a new target's
    // executable is looked at, or its probes attached, while it runs. Rare records.
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
}
