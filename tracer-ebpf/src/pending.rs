//! Syscalls a target thread is in (syscall hooks): their arguments, stashed at `sys_enter` and read
//! back at `sys_exit`, where the result decides what is reported. `sock:inet_sock_set_state` adds
//! what it learns of a connect.

use aya_ebpf::{macros::map, maps::HashMap};
use tracer_common::SockAddr;

/// What a pending call is, i.e. how its exit is handled.
pub mod call {
    /// read/recvfrom into one buffer.
    pub const READ: u32 = 1;
    /// write/sendto from one buffer.
    pub const WRITE: u32 = 2;
    /// readv/recvmsg: `arg` points at an iovec array.
    pub const READV: u32 = 3;
    pub const WRITEV: u32 = 4;
    /// recvmsg/sendmsg: `arg` points at a msghdr.
    pub const RECVMSG: u32 = 5;
    pub const SENDMSG: u32 = 6;
    /// sendfile: bytes leave the socket without passing through user memory.
    pub const SENDFILE: u32 = 7;
    pub const ACCEPT: u32 = 8;
    pub const CONNECT: u32 = 9;
    /// close: handled at entry, never stashed.
    pub const CLOSE_NOW: u32 = 10;
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingCall {
    pub kind: u32,
    pub fd: i32,
    /// Buffer, iovec array, msghdr or sockaddr pointer, depending on `kind`.
    pub arg: u64,
    /// Buffer length or iovec count.
    pub len: u64,
    pub enter_ns: u64,
    pub local: SockAddr,
    pub peer: SockAddr,
    /// Set by the inet_sock_set_state probe when a connect turned out to be TCP.
    pub is_tcp: u32,
    pub _pad: u32,
    /// The kernel `struct sock` of a connect, from the same probe.
    pub sk: u64,
}

/// Arguments of the syscall a target thread is in, keyed by pid_tgid, read back at sys_exit.
#[map]
pub static PENDING: HashMap<u64, PendingCall> = HashMap::with_max_entries(16384, 0);
