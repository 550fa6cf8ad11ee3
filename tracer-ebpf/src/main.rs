//! eBPF probes of the kube-apiserver tracer.
//!
//! Socket I/O is captured one of two ways: probes/sockio.rs hooks `sock:sock_send_length` and
//! `sock_recv_length` (Linux ≥ 6.3, only socket I/O runs a probe), or probes/syscalls.rs hooks the
//! raw sys_enter/sys_exit tracepoints (older kernels). probes/sock.rs follows TCP state changes
//! (connects, closes), probes/gotls.rs Go crypto/tls plaintext, probes/goroutines.rs which goroutine
//! works for whom (Go runtime, grpc-go, net/http), probes/process.rs targets that
//! start and stop.
//! Every program filters on the target TGID (or, for exec, the target comm) first.
//!
//! Each file in probes/ is a leaf: it holds programs and what only they use, and uses the shared
//! modules beside this file, never another probe file. Shared: maps.rs (maps and load-time
//! globals), sockets.rs (the socket table and its open/close records), emit.rs (data records),
//! pending.rs (syscalls in progress, for the syscall hooks), gotls_conns.rs (Go TLS calls and the
//! socket under each connection), userregs.rs (a task's saved registers), diag.rs (aya-log
//! diagnostics).
#![no_std]
#![no_main]
// `atomic_xadd` (maps.rs): the target bitmaps are changed by probes on several CPUs at once.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod diag;
mod emit;
mod gotls_conns;
mod maps;
mod pending;
mod probes;
mod sockets;
mod userregs;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
