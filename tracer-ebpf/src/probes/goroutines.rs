//! Which goroutine does what for whom, in Go targets: uprobes on the Go runtime (goroutine
//! spawns), grpc-go (the caller of each client stream) and net/http (the caller of each HTTP/1
//! client request, the handler goroutine of each HTTP/2 server stream).
//!
//! Attached by userspace to the same files as the Go TLS probes, with the same cookies (see
//! `go_tls_target`), at sites found by name in the pclntab and, for RETs, by disassembly.
//! Register ABI (Go ≥ 1.17, amd64): arguments in RAX, RBX, RCX, RDI, RSI, ..., an interface
//! taking two (itab, data); results from RAX; R14 = the current goroutine's `g`.
//!
//! Struct layouts, checked in the sources of Go 1.19 (net/http's bundled http2), Go 1.27
//! (net/http/internal/http2), golang.org/x/net 0.7 and grpc-go 1.33 (see the agent's
//! gotls/goroutines.rs, which picks the sites):
//! - grpc-go `headerFrame`: `streamID uint32` at 0, `hf []hpack.HeaderField` at 8 (ptr, len);
//!   `hpack.HeaderField` = {Name string, Value string, Sensitive bool}, 40 bytes;
//!   `loopyWriter.side` (an int, 0 = client) at 0.
//! - net/http `transportRequest`: its `*Request` at 0.
//! - HTTP/2 server: `responseWriter.rws` at 0, `responseWriterState.stream` at 0, `stream.sc` at
//!   0 and `stream.id` at 8; `serverConn.conn` (a net.Conn) at a per-copy offset, passed in the
//!   probe's cookie.

use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::{bpf_get_attach_cookie, bpf_ktime_get_ns, bpf_probe_read_user, generated},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use core::ffi::c_void;
use tracer_common::{GO_LINK_PATH, GoKey, GoLinkEvent, GoSpawnEvent, counter, go_cookie_arg, go_link, kind};

use crate::{
    gotls_conns::{conn_fd, go_tls_target},
    maps::{EVENTS, count, empty_probes, submit_flags},
    sockets::header,
};

/// `runtime.newproc1` calls in progress, by thread (pid_tgid): it runs on the system stack (g0),
/// so R14 does not name the spawning goroutine, and the call does not leave its thread. The value
/// is its `callergp` argument. LRU: an entry whose RET was missed ages out.
#[map]
static GO_SPAWNING: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// The goroutine that handed an item to another goroutine, by (tgid, item pointer): a grpc-go
/// `*headerFrame` given to the loopy writer, a net/http `*Request` given to the write loop. The
/// receiving probe takes the entry out. LRU: items never received (grpc-go hands other items
/// through the same function) age out.
#[map]
static GO_HANDOFFS: LruHashMap<GoKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// `runtime.newproc1(fn, callergp, callerpc, ...) *g` entry: RBX = callergp.
#[uprobe]
pub fn go_newproc1_enter(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, regs)) = go_probe(&ctx) else { return 0 };
    let _ = GO_SPAWNING.insert(pid_tgid, regs.rbx, 0);
    0
}

/// Each RET of `runtime.newproc1`: RAX = the new goroutine's `g`.
#[uprobe]
pub fn go_newproc1_ret(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, regs)) = go_probe(&ctx) else { return 0 };
    let Some(parent) = (unsafe { GO_SPAWNING.get(pid_tgid) }).copied() else {
        count(counter::GO_SPAWN_NO_ENTRY);
        return 0;
    };
    let _ = GO_SPAWNING.remove(pid_tgid);
    let Some(mut entry) = EVENTS.reserve::<GoSpawnEvent>(0) else {
        count(counter::RINGBUF_FULL);
        return 0;
    };
    let mut hdr = header(kind::GO_SPAWN, pid_tgid, unsafe { bpf_ktime_get_ns() });
    hdr.goid = regs.rax;
    entry.write(GoSpawnEvent { hdr, parent });
    entry.submit(submit_flags());
    0
}

/// grpc-go `(*controlBuffer).executeAndPut(f func(interface{}) bool, it cbItem)` entry: RBX = f,
/// RCX/RDI = `it` (itab, data). With `f` set it is `NewStream` queueing the new stream's
/// `*headerFrame`, on the caller's goroutine (other items pass too, and age out unclaimed).
#[uprobe]
pub fn go_grpc_execute_and_put(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, regs)) = go_probe(&ctx) else { return 0 };
    if regs.rbx == 0 || regs.rdi == 0 {
        return 0;
    }
    hand_off(pid_tgid, regs.rdi, regs.r14);
    0
}

/// grpc-go `(*loopyWriter).headerHandler(h *headerFrame)` entry, on the writer goroutine: RAX =
/// the loopyWriter, RBX = `h`. On a client transport it writes the HEADERS of stream
/// `h.streamID` next; the link carries its `:path`, read from `h.hf` before HPACK encodes it.
#[uprobe]
pub fn go_grpc_header_handler(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, regs)) = go_probe(&ctx) else { return 0 };
    let caller = take_handoff(pid_tgid, regs.rbx);
    let Ok(side) = (unsafe { bpf_probe_read_user(regs.rax as *const u64) }) else { return 0 };
    if side != CLIENT_SIDE {
        return 0;
    }
    let Ok(stream_id) = (unsafe { bpf_probe_read_user(regs.rbx as *const u32) }) else { return 0 };
    let Ok([fields, n_fields]) = (unsafe { bpf_probe_read_user((regs.rbx + 8) as *const [u64; 2]) }) else {
        return 0;
    };
    if caller == 0 {
        count(counter::GO_LINK_NO_CALLER);
    }
    let link = Link { link: go_link::GRPC_CLIENT_STREAM, stream_id, caller, fd: -1 };
    emit_link(pid_tgid, regs.r14, &link, Some((fields, n_fields)));
    0
}

/// `loopyWriter.side` of a client transport (grpc-go's `clientSide`).
const CLIENT_SIDE: u64 = 0;

/// HeaderFields looked at for `:path` (grpc-go puts it third, after `:method` and `:scheme`).
const PATH_SEARCH: u64 = 6;
/// `hpack.HeaderField`: Name (ptr, len), Value (ptr, len), Sensitive.
const HEADER_FIELD_SIZE: u64 = 40;

/// Copies the value of the `:path` field among the first [`PATH_SEARCH`] of `fields` into `dst`;
/// returns the bytes copied (0 when there is none).
#[inline(always)]
unsafe fn read_path(dst: *mut [u8; GO_LINK_PATH], fields: u64, n_fields: u64) -> u32 {
    for i in 0..PATH_SEARCH {
        if i >= n_fields {
            break;
        }
        let at = fields + i * HEADER_FIELD_SIZE;
        let Ok([name, name_len, value, value_len]) = (unsafe { bpf_probe_read_user(at as *const [u64; 4]) }) else {
            return 0;
        };
        if name_len != 5 {
            continue;
        }
        let Ok(name) = (unsafe { bpf_probe_read_user(name as *const [u8; 5]) }) else { return 0 };
        if &name != b":path" {
            continue;
        }
        let mut len = value_len as u32;
        if len > GO_LINK_PATH as u32 {
            len = GO_LINK_PATH as u32;
        }
        let rc = unsafe { generated::bpf_probe_read_user(dst.cast::<c_void>(), len, value as *const c_void) };
        return if rc == 0 { len } else { 0 };
    }
    0
}

/// net/http `(*persistConn).roundTrip(req *transportRequest)` entry, on the caller's goroutine:
/// RBX = `req`, whose first word is the `*Request` the write loop will write.
#[uprobe]
pub fn go_http1_round_trip(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, regs)) = go_probe(&ctx) else { return 0 };
    let Ok(request) = (unsafe { bpf_probe_read_user(regs.rbx as *const u64) }) else { return 0 };
    if request != 0 {
        hand_off(pid_tgid, request, regs.r14);
    }
    0
}

/// net/http `(*Request).write(w, usingProxy, extraHeaders, waitForContinue)` entry: RAX = the
/// request. On the transport's write loop it writes the request a `roundTrip` handed over; other
/// callers (`Request.Write`) have none, nor has a request whose `roundTrip` began before attach
/// (counted, as is a rerun of the entry after a stack growth, which finds the hand-off taken).
#[uprobe]
pub fn go_http1_request_write(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, regs)) = go_probe(&ctx) else { return 0 };
    let caller = take_handoff(pid_tgid, regs.rax);
    if caller == 0 {
        count(counter::GO_LINK_NO_CALLER);
        return 0;
    }
    let link = Link { link: go_link::HTTP1_CLIENT_WRITE, stream_id: 0, caller, fd: -1 };
    emit_link(pid_tgid, regs.r14, &link, None);
    0
}

/// The HTTP/2 server's `(*serverConn).runHandler(rw, req, handler)` entry (net/http's bundled
/// copy, golang.org/x/net/http2, Go 1.27's net/http/internal/http2), on the handler's own
/// goroutine: RAX = sc, RBX = rw. The cookie's site argument is the offset of `sc.conn`'s data
/// pointer (the `*tls.Conn`), whose socket the Go TLS probes know.
#[uprobe]
pub fn go_h2_run_handler(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, regs)) = go_probe(&ctx) else { return 0 };
    let tgid = (pid_tgid >> 32) as u32;
    let sc = regs.rax;
    let Ok(rws) = (unsafe { bpf_probe_read_user(regs.rbx as *const u64) }) else { return 0 };
    let Ok(stream) = (unsafe { bpf_probe_read_user(rws as *const u64) }) else { return 0 };
    let Ok([stream_sc, id_word]) = (unsafe { bpf_probe_read_user(stream as *const [u64; 2]) }) else { return 0 };
    let stream_id = id_word as u32;
    // The stream names its connection: a check that rw → rws → stream is the chain assumed.
    if stream_sc != sc || stream_id == 0 {
        count(counter::GO_LINK_BAD_LAYOUT);
        return 0;
    }
    let conn_at = u64::from(go_cookie_arg(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) }));
    let Ok(conn) = (unsafe { bpf_probe_read_user((sc + conn_at) as *const u64) }) else { return 0 };
    let Some(fd) = conn_fd(tgid, conn) else {
        count(counter::GO_LINK_NO_SOCKET);
        return 0;
    };
    let link = Link { link: go_link::H2_SERVER_HANDLER, stream_id, caller: 0, fd };
    emit_link(pid_tgid, regs.r14, &link, None);
    0
}

/// Goroutine `g` hands `item` to another goroutine.
#[inline(always)]
fn hand_off(pid_tgid: u64, item: u64, g: u64) {
    let key = GoKey { tgid: pid_tgid >> 32, ptr: item };
    let _ = GO_HANDOFFS.insert(key, g, 0);
}

/// The goroutine that handed `item` over (taken out), or 0.
#[inline(always)]
fn take_handoff(pid_tgid: u64, item: u64) -> u64 {
    let key = GoKey { tgid: pid_tgid >> 32, ptr: item };
    match unsafe { GO_HANDOFFS.get(key) }.copied() {
        Some(g) => {
            let _ = GO_HANDOFFS.remove(key);
            g
        }
        None => 0,
    }
}

/// What a link record says (see `tracer_common::go_link`).
struct Link {
    link: u32,
    stream_id: u32,
    caller: u64,
    fd: i32,
}

/// Sends a link record of goroutine `g`; its path is the `:path` among `fields` (ptr, count of a
/// `[]hpack.HeaderField`) when given. (The record is not zeroed: path bytes past `path_len` are
/// left as they were.)
#[inline(always)]
fn emit_link(pid_tgid: u64, g: u64, link: &Link, fields: Option<(u64, u64)>) {
    let Some(mut entry) = EVENTS.reserve::<GoLinkEvent>(0) else {
        count(counter::RINGBUF_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    let mut hdr = header(kind::GO_LINK, pid_tgid, unsafe { bpf_ktime_get_ns() });
    hdr.goid = g;
    unsafe {
        (*ev).hdr = hdr;
        (*ev).link = link.link;
        (*ev).stream_id = link.stream_id;
        (*ev).caller = link.caller;
        (*ev).fd = link.fd;
        (*ev).path_len = match fields {
            Some((fields, n_fields)) => read_path(&raw mut (*ev).path, fields, n_fields),
            None => 0,
        };
    }
    entry.submit(submit_flags());
}

/// The current task's pid_tgid and registers, when the probes are live and its process is a
/// target (see `go_tls_target`).
#[inline(always)]
fn go_probe(ctx: &ProbeContext) -> Option<(u64, &pt_regs)> {
    if empty_probes() {
        return None;
    }
    let pid_tgid = go_tls_target(ctx)?;
    Some((pid_tgid, unsafe { &*ctx.regs }))
}
