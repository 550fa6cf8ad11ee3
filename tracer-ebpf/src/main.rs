//! eBPF probes of the kube-apiserver tracer.
//!
//! Socket I/O is captured one of two ways: probes/sockio.rs hooks `sock:sock_send_length` and
//! `sock_recv_length` (Linux ≥ 6.3, only socket I/O runs a probe), or probes/syscalls.rs hooks the
//! raw sys_enter/sys_exit tracepoints (older kernels). probes/sock.rs follows TCP state changes
//! (connects, closes), probes/gotls.rs Go crypto/tls plaintext, probes/process.rs targets that
//! start and stop.
//! Every program filters on the target TGID (or, for exec, the target comm) first.
#![no_std]
#![no_main]

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
