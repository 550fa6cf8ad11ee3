//! eBPF probes of the kube-apiserver tracer.
//!
//! probes/syscalls.rs follows socket syscalls (raw sys_enter/sys_exit tracepoints), probes/sock.rs
//! learns local addresses of connects, probes/process.rs notices targets that start and stop.
//! Every program filters on the target TGID (or, for exec, the target comm) first.
#![no_std]
#![no_main]

mod emit;
mod maps;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
