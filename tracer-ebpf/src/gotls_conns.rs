//! Go crypto/tls state shared by the uprobes (probes/gotls.rs) and the socket hooks
//! (probes/sockio.rs, probes/syscalls.rs, and the socket table's close): the calls in progress,
//! the per-process struct offsets, and which socket fd is under each `*tls.Conn`.
//!
//! A Go TLS call names its `*tls.Conn`, not its socket: the socket is learned through the
//! `*net.TCPConn` the Conn wraps, or from the first socket syscall the calling goroutine makes.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_attach_cookie, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::map,
    maps::{HashMap, LruHashMap},
    programs::ProbeContext,
};
use tracer_common::{GoKey, GoTlsCall, GoTlsOffsets, MAX_GO_TLS_FILES, go_cookie_slot, socket_key};

use crate::maps::{GO_TLS_TARGETS, SOCKETS, clear_bit, current_target, is_go_tls_target, set_bit};

/// Calls in progress, by goroutine.
#[map]
pub static GO_TLS_CALLS: HashMap<GoKey, GoTlsCall> = HashMap::with_max_entries(16384, 0);

/// Struct offsets per target process (tgid): its executable's [`GO_TLS_FILES`] entry, copied by
/// its first probe hit ([`go_tls_target`]); removed at its exec and exit (probes/process.rs).
#[map]
pub static GO_TLS_OFFSETS: HashMap<u32, GoTlsOffsets> = HashMap::with_max_entries(256, 0);

/// Struct offsets per executable file with Go TLS probes, by the cookie userspace attached its
/// probes with. The probes are attached to the file, so they run in every process of that file
/// from its first instruction, including processes the agent has not seen yet.
#[map]
pub static GO_TLS_FILES: HashMap<u64, GoTlsOffsets> = HashMap::with_max_entries(MAX_GO_TLS_FILES, 0);

/// The current task's pid_tgid if its process is a target; at the first Go TLS probe the process
/// hits, it becomes a Go TLS target with its executable's offsets. A process that has just
/// exec'd a `--comm` target is one (its bit is set at exec) before the agent hears of it.
#[inline(always)]
pub fn go_tls_target(ctx: &ProbeContext) -> Option<u64> {
    let pid_tgid = current_target()?;
    let tgid = (pid_tgid >> 32) as u32;
    if !is_go_tls_target(tgid) {
        let file = go_cookie_slot(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) });
        // Threads of one process can hit their first probe at once: only the one whose insert
        // made the entry sets the bit (two adds of one bit would carry into the next pid's).
        if let Some(offsets) = unsafe { GO_TLS_FILES.get(file) }
            && GO_TLS_OFFSETS.insert(tgid, *offsets, u64::from(BPF_NOEXIST)).is_ok()
        {
            set_bit(&GO_TLS_TARGETS, tgid);
        }
    }
    Some(pid_tgid)
}

/// A target exec'd or exited: its Go TLS probes, if its new image has any, find it again.
#[inline(always)]
pub fn forget_go_tls_target(tgid: u32) {
    clear_bit(&GO_TLS_TARGETS, tgid);
    let _ = GO_TLS_OFFSETS.remove(tgid);
}

/// `*tls.Conn` → socket fd, learned once per connection. When the socket closes
/// (SocketState.go_conn), the entry becomes [`CLOSED`]: the calls still made on the connection
/// (an HTTP/2 server answering the streams of a client that reset it) are then neither reported
/// nor counted as lost. A reused Conn address is learned again (handshake, `*net.TCPConn`), and
/// the LRU drops old entries when room is needed.
#[map]
pub static GO_CONN_FDS: LruHashMap<GoKey, i32> = LruHashMap::with_max_entries(65536, 0);

/// The GO_CONN_FDS value of a connection whose socket closed.
const CLOSED: i32 = -1;

/// `GoTlsCall.emitted`: the call's bytes were reported at its entry.
pub const REPORTED_AT_ENTRY: u8 = 1;
/// `GoTlsCall.emitted`: reported at entry, and the call has made a socket syscall since, so it
/// is past its prologue: an entry seen after this is a new call, not a stack-growth rerun.
const REPORTED_AND_SENT: u8 = 2;

/// `*tls.Conn` whose handshake (or a Write whose socket was not known) a goroutine is running:
/// the first socket syscall it makes names the connection's fd, and removes the entry. This is
/// for connections whose fd is not found through a `*net.TCPConn` (wrapped conns): their first
/// Read may be served from bytes the handshake already read, with no syscall to learn it from.
/// A call that fails before any syscall (its deadline passed, its connection broke) leaves its
/// entry behind: LRU, so such entries cannot fill the map, and taken only while fresh (see
/// [`BIND_WINDOW_NS`]).
#[map]
static GO_TLS_IO: LruHashMap<GoKey, PendingBind> = LruHashMap::with_max_entries(16384, 0);

#[derive(Clone, Copy)]
struct PendingBind {
    conn: u64,
    since_ns: u64,
}

/// How long after a handshake's entry (or a Write's) its goroutine's first socket syscall still
/// names the connection. That syscall comes within microseconds; a later one is I/O of something
/// else (a plain connection, after the call failed without a syscall), which must not be claimed:
/// its bytes would be taken for ciphertext and never decoded. Generous for a starved CPU or a
/// garbage collector's pause: a binding missed here is learned again at the next Write.
const BIND_WINDOW_NS: u64 = 1_000_000_000;

/// The next socket syscall of goroutine `g` names `conn`'s fd (if it comes soon).
#[inline(always)]
pub fn bind_next_syscall(tgid: u32, g: u64, conn: u64) {
    let pending = PendingBind { conn, since_ns: unsafe { bpf_ktime_get_ns() } };
    let _ = GO_TLS_IO.insert(GoKey { tgid: tgid as u64, ptr: g }, pending, 0);
}

/// A target goroutine is making a socket syscall: if it is inside a TLS call whose socket is not
/// known yet, this is it. Works whatever wraps the net.Conn (keep-alive or limit listeners...).
#[inline(always)]
pub fn bind_syscall(tgid: u32, g: u64, fd: i32) {
    if !is_go_tls_target(tgid) {
        return;
    }
    let key = GoKey { tgid: tgid as u64, ptr: g };
    if let Some(pending) = unsafe { GO_TLS_IO.get(key) }.copied() {
        let _ = GO_TLS_IO.remove(key);
        if unsafe { bpf_ktime_get_ns() }.wrapping_sub(pending.since_ns) <= BIND_WINDOW_NS {
            remember(tgid, pending.conn, fd);
        }
    }
    let Some(call) = GO_TLS_CALLS.get_ptr_mut(key) else { return };
    unsafe {
        if (*call).emitted == REPORTED_AT_ENTRY {
            (*call).emitted = REPORTED_AND_SENT;
        }
        if (*call).fd >= 0 {
            return;
        }
        (*call).fd = fd;
        remember(tgid, (*call).conn, fd);
    }
}

#[inline(always)]
fn remember(tgid: u32, conn: u64, fd: i32) {
    let _ = GO_CONN_FDS.insert(GoKey { tgid: tgid as u64, ptr: conn }, fd, 0);
    if let Some(state) = SOCKETS.get_ptr_mut(socket_key(tgid, fd as u32)) {
        unsafe { (*state).go_conn = conn };
    }
}

/// Marks the `*tls.Conn` of a socket being closed as [`CLOSED`].
#[inline(always)]
pub fn forget_conn(tgid: u32, conn: u64) {
    if conn != 0 {
        let _ = GO_CONN_FDS.insert(GoKey { tgid: tgid as u64, ptr: conn }, CLOSED, 0);
    }
}

/// What the probes know of the socket under a `*tls.Conn`.
pub enum ConnSocket {
    Known(i32),
    /// Its socket closed: a call on it sends nothing, or reads what the agent no longer follows.
    Closed,
    Unknown,
}

/// The socket fd under a `*tls.Conn`, when known (see [`conn_socket`]).
#[inline(always)]
pub fn conn_fd(tgid: u32, conn: u64) -> Option<i32> {
    match conn_socket(tgid, conn) {
        ConnSocket::Known(fd) => Some(fd),
        _ => None,
    }
}

/// The socket under a `*tls.Conn`: learned before, or found through the `*net.TCPConn` it usually
/// wraps, if that is a TCP socket this process is known to have.
#[inline(always)]
pub fn conn_socket(tgid: u32, conn: u64) -> ConnSocket {
    let learned = unsafe { GO_CONN_FDS.get(GoKey { tgid: tgid as u64, ptr: conn }) }.copied();
    if let Some(fd) = learned
        && fd != CLOSED
    {
        return ConnSocket::Known(fd);
    }
    match tcp_conn_fd(tgid, conn) {
        Some(fd) => {
            remember(tgid, conn, fd);
            ConnSocket::Known(fd)
        }
        None if learned == Some(CLOSED) => ConnSocket::Closed,
        None => ConnSocket::Unknown,
    }
}

/// The fd of the `*net.TCPConn` under a `*tls.Conn`, if it is a socket this process is known to
/// have.
#[inline(always)]
fn tcp_conn_fd(tgid: u32, conn: u64) -> Option<i32> {
    let off = unsafe { GO_TLS_OFFSETS.get(tgid) }?;
    let tcp_conn: u64 = unsafe { bpf_probe_read_user((conn + off.conn_iface_data) as *const u64) }.ok()?;
    let netfd: u64 = unsafe { bpf_probe_read_user(tcp_conn as *const u64) }.ok()?;
    let fd: i64 = unsafe { bpf_probe_read_user((netfd + off.netfd_sysfd) as *const i64) }.ok()?;
    let fd = fd as i32;
    SOCKETS.get_ptr(socket_key(tgid, fd as u32))?;
    Some(fd)
}
