//! Event and map types shared by the eBPF probes (`tracer-ebpf`) and the agent (`tracer`).
//!
//! Every ring-buffer record starts with an [`EventHeader`]; its `kind` says which struct follows.
//! All structs are `#[repr(C)]` with explicit padding so both sides agree byte for byte.
#![no_std]

pub const TASK_COMM_LEN: usize = 16;

/// Payload bytes carried by one large data chunk. A syscall that moved more than this is split into
/// several chunk records (up to the configured capture limit), so one record never exceeds a page.
pub const CHUNK_LARGE: usize = 4096;
/// Payload bytes of the medium size class: an API request whose headers carry a service
/// account's bearer token (about 1 KiB) fits.
pub const CHUNK_MEDIUM: usize = 2048;
/// Payload bytes of the small size class: most API requests, etcd calls and frame headers fit, and a
/// small record wastes far less ring-buffer space than a page-sized one.
pub const CHUNK_SMALL: usize = 512;
/// Payload bytes of the tiny size class: HTTP/2 control frames, short gRPC messages, a short
/// request line. Each record's size is a fixed class (the verifier wants a constant reservation).
/// Five classes instead of two (512 B and a page) cut the probes' time per run under nginx load,
/// and the ring bytes per request by more (docs/benchmarks.md).
pub const CHUNK_TINY: usize = 128;
/// Hard ceiling of `--capture-bytes` (the probes loop at most this many large chunks per syscall).
pub const MAX_CHUNKS: usize = 8;
pub const MAX_CAPTURE_BYTES: usize = CHUNK_LARGE * MAX_CHUNKS;
/// iovec entries looked at per readv/writev/sendmsg/recvmsg (later ones are counted, not copied).
pub const MAX_IOVECS: usize = 8;

/// Target TGIDs are a bitmap over this many u64 words: covers pid_max's ceiling (2^22).
pub const TARGET_BITMAP_WORDS: u32 = 1 << 16;

/// Executable files with Go TLS probes at once (each a set of uprobes on the file, shared by every
/// process running it).
pub const MAX_GO_TLS_FILES: u32 = 64;

/// The cookie of a Go uprobe: its file's key in `GO_TLS_FILES` in the low 32 bits, and what the
/// probe site needs to know of its own code (a struct offset that differs between the copies of
/// one function in a binary, e.g. the HTTP/2 server's connection field) in the high 32 bits.
pub const fn go_cookie(file_slot: u64, site_arg: u32) -> u64 {
    (file_slot & 0xffff_ffff) | (site_arg as u64) << 32
}

/// The file slot of a Go uprobe's cookie (see [`go_cookie`]).
pub const fn go_cookie_slot(cookie: u64) -> u64 {
    cookie & 0xffff_ffff
}

/// The site argument of a Go uprobe's cookie (see [`go_cookie`]).
pub const fn go_cookie_arg(cookie: u64) -> u32 {
    (cookie >> 32) as u32
}

pub mod kind {
    pub const DATA: u32 = 1;
    pub const SOCK_OPEN: u32 = 2;
    pub const SOCK_CLOSE: u32 = 3;
    pub const PROC_EXEC: u32 = 4;
    pub const PROC_EXIT: u32 = 5;
    /// [`GoSpawnEvent`]: the Go runtime created a goroutine.
    pub const GO_SPAWN: u32 = 6;
    /// [`GoLinkEvent`]: grpc-go or net/http told which goroutine a request belongs to.
    pub const GO_LINK: u32 = 7;
}

/// Direction of bytes as seen by the traced process.
pub mod direction {
    /// read/recv*: bytes that came in.
    pub const INGRESS: u8 = 0;
    /// write/send*: bytes that went out.
    pub const EGRESS: u8 = 1;
}

/// Where the payload bytes were taken from.
pub mod source {
    pub const SYSCALL: u8 = 0;
    pub const GO_TLS: u8 = 1;
}

/// Flags of a [`DataEvent`] chunk.
pub mod data_flags {
    /// First chunk of a syscall (its timestamps describe the whole syscall).
    pub const FIRST: u8 = 1;
    /// Last chunk of a syscall: `total_len - (offset + cap_len)` bytes were moved but not captured.
    pub const LAST: u8 = 2;
}

/// How a socket fd came to be known.
pub mod sock_role {
    /// accept()/accept4(): the target is the server.
    pub const ACCEPTED: u8 = 1;
    /// connect(): the target is the client.
    pub const CONNECTED: u8 = 2;
}

/// Indices of the per-CPU counter array `COUNTERS`.
pub mod counter {
    /// A ring-buffer reservation failed: an event was lost.
    pub const RINGBUF_FULL: u32 = 0;
    /// The per-thread syscall argument map was full: a syscall was not followed.
    pub const ARGS_FULL: u32 = 1;
    /// The socket table was full: a new socket was not tracked.
    pub const SOCKETS_FULL: u32 = 2;
    /// Copying payload from user memory failed.
    pub const READ_USER_FAILED: u32 = 3;
    /// Data syscalls whose iovec count exceeded MAX_IOVECS (bytes beyond them were not copied).
    pub const IOV_TRUNCATED: u32 = 4;
    /// Go TLS calls on a connection whose fd could not be found (not a followed TCP socket).
    pub const GO_TLS_NO_SOCKET: u32 = 5;
    /// The per-goroutine Go TLS call map was full.
    pub const GO_TLS_CALLS_FULL: u32 = 6;
    /// Socket I/O of a target outside any syscall whose arguments say which fd it is on (io_uring,
    /// sendmmsg...) on a socket not known yet: not followed.
    pub const NO_SYSCALL_FD: u32 = 7;
    /// A `runtime.newproc1` RET with no entry record (the call began before the probes were
    /// attached, or the entry map's LRU dropped it): that goroutine's parent is not known.
    pub const GO_SPAWN_NO_ENTRY: u32 = 8;
    /// A grpc-go HEADERS write or a net/http HTTP/1 request write with no record of the caller
    /// goroutine (its call began before attach, or the LRU dropped it): linked with caller 0.
    pub const GO_LINK_NO_CALLER: u32 = 9;
    /// An HTTP/2 handler whose connection's socket is not known: no link sent.
    pub const GO_LINK_NO_SOCKET: u32 = 10;
    /// Structures read at a Go link probe did not check out (an HTTP/2 stream not of its
    /// server connection): the layout is not the one assumed, no link sent.
    pub const GO_LINK_BAD_LAYOUT: u32 = 11;
    pub const COUNT: u32 = 12;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub _pad: u32,
    /// bpf_ktime_get_ns (CLOCK_MONOTONIC) when the event was produced.
    pub ts_ns: u64,
    /// The current goroutine, as the address of its runtime `g` (R14 on amd64), filled by Go
    /// uprobes; 0 when unknown (syscall hooks). Not the goroutine's number: the runtime reuses a
    /// `g` for later goroutines, so it names a goroutine only between two of its spawns.
    pub goid: u64,
}

/// One chunk of payload moved by a data syscall. `hdr.ts_ns` is the syscall's exit time.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataEvent<const N: usize> {
    pub hdr: EventHeader,
    pub enter_ns: u64,
    /// Bytes the syscall really moved (its return value).
    pub total_len: u64,
    pub fd: i32,
    /// Offset of this chunk within the syscall's bytes.
    pub offset: u32,
    /// Bytes of `data` that are valid.
    pub cap_len: u32,
    /// Sequence number per socket, source and direction: a gap tells userspace that events were
    /// lost. (One counter for both directions would not do: records of a read and a write made
    /// at the same time on two CPUs can reach the ring in the other order than their numbers.)
    pub seq: u32,
    pub direction: u8,
    pub source: u8,
    pub flags: u8,
    pub _pad: [u8; 5],
    pub data: [u8; N],
}

/// Byte offset of `data` in a [`DataEvent`], whatever its size class.
pub const DATA_EVENT_HEADER_LEN: usize = core::mem::size_of::<DataEvent<0>>();

/// Socket address as the kernel gave it: `family` is AF_INET (2) or AF_INET6 (10), 0 when unknown;
/// IPv4 addresses use the first 4 bytes of `addr`; `port` is in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockAddr {
    pub family: u16,
    pub port: u16,
    pub _pad: u32,
    pub addr: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockOpenEvent {
    pub hdr: EventHeader,
    pub fd: i32,
    /// The listening socket an accepted connection came from (-1 for connects).
    pub listen_fd: i32,
    pub role: u8,
    pub _pad: [u8; 7],
    pub local: SockAddr,
    pub peer: SockAddr,
    /// The kernel `struct sock` (socket hooks; 0 where the probes do not know it): tells a late
    /// close of the fd's previous socket from the close of this one.
    pub sk: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockCloseEvent {
    pub hdr: EventHeader,
    pub fd: i32,
    /// Why the probes consider the socket closed (`close_reason`), for logs.
    pub reason: u32,
    /// Ciphertext bytes received and sent under a Go `tls.Conn`, which the probes count (their
    /// `TLS_BYTES` map) instead of sending a record per syscall.
    pub tls_bytes: [u64; 2],
    /// The closed socket's `struct sock`, as in [`SockOpenEvent::sk`].
    pub sk: u64,
}

/// What told the probes a socket was closed.
pub mod close_reason {
    /// close() (syscall hooks).
    pub const CLOSE_SYSCALL: u32 = 1;
    /// FIN_WAIT1 or LAST_ACK from the owner (socket hooks).
    pub const CLOSED_STATE: u32 = 2;
    /// A reset or abort.
    pub const RESET: u32 = 3;
    /// Its `struct sock` started a new connection.
    pub const NEW_LIFE: u32 = 4;
    /// Its fd turned up on another socket.
    pub const FD_REUSED: u32 = 5;
    /// Its fd was connected again.
    pub const RECONNECTED: u32 = 6;
    /// close() of a socket seeded from /proc whose `struct sock` was never learned.
    pub const SEEDED_CLOSE: u32 = 7;
    /// The kernel destroyed the socket (its fd was closed, and TCP is done with it).
    pub const DESTROYED: u32 = 8;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcEvent {
    pub hdr: EventHeader,
    pub comm: [u8; TASK_COMM_LEN],
}

/// `runtime.newproc1`: goroutine `hdr.goid` (the new goroutine's `g`) was created by the
/// goroutine whose `g` is `parent`, at `hdr.ts_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GoSpawnEvent {
    pub hdr: EventHeader,
    pub parent: u64,
}

/// What a [`GoLinkEvent`] says.
pub mod go_link {
    /// grpc-go's writer goroutine (`hdr.goid`, its loopy writer) is about to write the HEADERS of
    /// client stream `stream_id` for the call made by goroutine `caller`; `path` is the call's
    /// `:path` (the method), read before HPACK encoding.
    pub const GRPC_CLIENT_STREAM: u32 = 1;
    /// net/http's HTTP/1 write loop (`hdr.goid`) is about to write the request that goroutine
    /// `caller` is making (the next request it writes on its connection).
    pub const HTTP1_CLIENT_WRITE: u32 = 2;
    /// An HTTP/2 server (net/http's bundled copy or golang.org/x/net/http2) runs the handler of
    /// stream `stream_id` of the connection on socket `fd` in goroutine `hdr.goid`.
    pub const H2_SERVER_HANDLER: u32 = 3;
}

/// Bytes of a gRPC method path a [`GoLinkEvent`] carries (etcd's longest is 40).
pub const GO_LINK_PATH: usize = 96;

/// A link between goroutines and requests, from grpc-go and net/http uprobes (see [`go_link`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GoLinkEvent {
    pub hdr: EventHeader,
    /// One of [`go_link`].
    pub link: u32,
    /// HTTP/2 stream id (0 when the link has none).
    pub stream_id: u32,
    /// The goroutine (`g`) that made the call, for client links; 0 otherwise.
    pub caller: u64,
    /// Socket fd, for server links; -1 otherwise.
    pub fd: i32,
    /// Bytes of `path` that are valid.
    pub path_len: u32,
    pub path: [u8; GO_LINK_PATH],
}

/// Key of a comm name in the `TARGET_COMMS` map (NUL-padded, as the kernel stores it).
pub type Comm = [u8; TASK_COMM_LEN];

/// Value of the kernel socket table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketState {
    /// Data syscalls seen on this socket, per direction (indexed by [`direction`]); stamped into
    /// each [`DataEvent`].
    pub seq: [u32; 2],
    /// Go crypto/tls Read/Write calls seen on this socket, per direction, for plaintext events.
    pub tls_seq: [u32; 2],
    /// The Go `*tls.Conn` over this socket, once known (0 otherwise).
    pub go_conn: u64,
    /// The kernel `struct sock` behind the fd (socket hooks); 0 until known.
    pub sk: u64,
    /// When a connect started (socket hooks report the connection at its first bytes).
    pub open_ns: u64,
    /// Ports (host order) of a socket seeded from /proc, checked against `sk` when it is learned.
    pub local_port: u16,
    pub peer_port: u16,
    pub role: u8,
    /// 1 once userspace was told of this socket (a SOCK_OPEN, or seeded by userspace itself).
    pub announced: u8,
    pub _pad: [u8; 2],
}

impl SocketState {
    pub const fn new(role: u8) -> Self {
        SocketState {
            seq: [0; 2],
            tls_seq: [0; 2],
            go_conn: 0,
            sk: 0,
            open_ns: 0,
            local_port: 0,
            peer_port: 0,
            role,
            announced: 1,
            _pad: [0; 2],
        }
    }
}

/// Which hooks capture socket I/O (the `PROBE_MODE` global).
pub mod probe_mode {
    /// Raw `sys_enter`/`sys_exit` tracepoints: every syscall of every process runs a probe.
    pub const SYSCALLS: u32 = 0;
    /// `sock:sock_send_length`/`sock_recv_length` (Linux ≥ 6.3): only socket I/O runs a probe.
    pub const SOCKET: u32 = 1;
}

/// Field offsets in the kernel's `struct sock`, from its BTF (patched by userspace before load).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockOffsets {
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_family: u32,
    pub skc_state: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub sk_protocol: u32,
}

/// Offsets inside Go runtime structures that Go TLS probes follow, patched by userspace per binary.
/// `tls.Conn.conn` (a net.Conn interface) → its data pointer → `*net.TCPConn` whose first word is
/// `*netFD` → `netFD.pfd.Sysfd`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GoTlsOffsets {
    /// Offset of the interface data pointer of `tls.Conn.conn` in `tls.Conn`.
    pub conn_iface_data: u64,
    /// Offset of `pfd.Sysfd` in `net.netFD`.
    pub netfd_sysfd: u64,
    /// Bytes between RSP at Read's copy of its plaintext and Read's return address (its receiver
    /// is in its spill slot just above): see `go_tls_read_copy`. 0 when that probe is not used.
    pub read_frame: u64,
}

/// Key of the Go TLS maps: a process and a pointer in it (a goroutine's `g`, or a `*tls.Conn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GoKey {
    pub tgid: u64,
    pub ptr: u64,
}

/// A Go crypto/tls Read or Write in progress, from its entry to one of its RETs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GoTlsCall {
    pub buf: u64,
    pub conn: u64,
    pub enter_ns: u64,
    /// Socket fd, or -1 until the call's own socket syscall tells it.
    pub fd: i32,
    pub direction: u8,
    /// 0: not reported yet; 1: reported at entry (a Write whose socket was known); 2: reported
    /// at entry, and the call has since made a socket syscall (so it is past its prologue).
    pub emitted: u8,
    pub _pad: [u8; 2],
}

/// Key of the kernel socket table: `(tgid << 32) | fd`.
#[inline(always)]
pub const fn socket_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for SockAddr {}
    unsafe impl aya::Pod for SockOpenEvent {}
    unsafe impl aya::Pod for SockCloseEvent {}
    unsafe impl aya::Pod for ProcEvent {}
    unsafe impl aya::Pod for GoSpawnEvent {}
    unsafe impl aya::Pod for GoLinkEvent {}
    unsafe impl aya::Pod for SocketState {}
    unsafe impl aya::Pod for GoTlsOffsets {}
    unsafe impl aya::Pod for GoKey {}
    unsafe impl aya::Pod for GoTlsCall {}
    unsafe impl aya::Pod for SockOffsets {}
}
