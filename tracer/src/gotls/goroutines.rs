//! Where the goroutine probes of a Go binary go (tracer-ebpf probes/goroutines.rs): goroutine
//! spawns in the runtime, the caller of each grpc-go client stream and of each net/http HTTP/1
//! client request, the handler goroutine of each HTTP/2 server stream. Found by name in the
//! pclntab (stripped binaries have it), RETs by disassembly. They go to the files that get Go TLS
//! probes, with the same cookie (the probes share the per-process bookkeeping of `go_tls_target`).

use tracer_common::go_cookie;

use super::{
    GO_GRPC_HEADER, GO_GRPC_PUT, GO_H2_HANDLER, GO_HTTP1_ROUND_TRIP, GO_HTTP1_WRITE, GO_SPAWN_ENTER, GO_SPAWN_RET,
};
use crate::gobin::{GoBinError, GoBinary};

const NEWPROC1: &str = "runtime.newproc1";
const GRPC_PUT: &str = "google.golang.org/grpc/internal/transport.(*controlBuffer).executeAndPut";
const GRPC_HEADER: &str = "google.golang.org/grpc/internal/transport.(*loopyWriter).headerHandler";
const HTTP1_ROUND_TRIP: &str = "net/http.(*persistConn).roundTrip";
const HTTP1_WRITE: &str = "net/http.(*Request).write";

/// The HTTP/2 server's `runHandler` under the names of its copies, with the offset of the data
/// pointer of `serverConn.conn` (a net.Conn interface: itab, then data) in each. Checked in the
/// sources: net/http's bundled copy (Go 1.19 h2_bundle.go) and golang.org/x/net 0.7 start
/// `serverConn` with `srv *Server, hs *http.Server, conn net.Conn`; Go 1.27's
/// net/http/internal/http2 with `srv *Server, hs ServerConfig` (an interface, two words).
const H2_RUN_HANDLERS: [(&str, u32); 3] = [
    ("net/http.(*http2serverConn).runHandler", 24),
    ("golang.org/x/net/http2.(*serverConn).runHandler", 24),
    ("net/http/internal/http2.(*serverConn).runHandler", 32),
];

/// The goroutine probe sites of one binary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GoroutineSites {
    /// (program index, file offset, cookie site argument), RET probes first.
    pub points: Vec<(usize, u64, u32)>,
    /// `runtime.newproc1` RETs (its entry is one more probe).
    pub spawn_rets: usize,
    pub grpc: bool,
    pub http1_client: bool,
    /// HTTP/2 server copies (`runHandler`s) probed.
    pub h2_servers: usize,
}

impl GoroutineSites {
    /// Probes among `points`, for the log.
    pub fn count(&self) -> usize {
        self.points.len()
    }

    /// Cookies of the points for the file at `slot`.
    pub fn cookies(&self, slot: u64) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        self.points.iter().map(move |&(prog, offset, arg)| (prog, offset, go_cookie(slot, arg)))
    }
}

/// The sites in `bin` (a register-ABI Go binary). A group whose functions are not all there
/// (a binary without grpc-go, or without an HTTP/1 client) gets no probe.
pub fn sites(bin: &GoBinary) -> Result<GoroutineSites, GoBinError> {
    let mut names = vec![NEWPROC1, GRPC_PUT, GRPC_HEADER, HTTP1_ROUND_TRIP, HTTP1_WRITE];
    names.extend(H2_RUN_HANDLERS.iter().map(|(name, _)| *name));
    let found = bin.functions_by_suffix(&names);
    let entries = |which: usize| found.iter().filter(move |(w, _)| *w == which).map(|(_, f)| f);
    let mut s = GoroutineSites::default();
    // The runtime's own function: its exact name only (no vendored copy exists).
    if let Some(newproc1) = entries(0).find(|f| f.name == NEWPROC1) {
        let rets = bin.ret_offsets(newproc1)?;
        if !rets.is_empty() {
            s.spawn_rets = rets.len();
            s.points.extend(rets.into_iter().map(|o| (GO_SPAWN_RET, o, 0)));
            s.points.push((GO_SPAWN_ENTER, newproc1.file_offset, 0));
        }
    }
    let mut pair = |first: usize, first_prog: usize, second: usize, second_prog: usize| -> bool {
        let (a, b): (Vec<_>, Vec<_>) = (entries(first).collect(), entries(second).collect());
        if a.is_empty() || b.is_empty() {
            return false;
        }
        s.points.extend(a.iter().map(|f| (first_prog, f.file_offset, 0)));
        s.points.extend(b.iter().map(|f| (second_prog, f.file_offset, 0)));
        true
    };
    let grpc = pair(1, GO_GRPC_PUT, 2, GO_GRPC_HEADER);
    let http1_client = pair(3, GO_HTTP1_ROUND_TRIP, 4, GO_HTTP1_WRITE);
    s.grpc = grpc;
    s.http1_client = http1_client;
    for (i, (_, conn_data)) in H2_RUN_HANDLERS.iter().enumerate() {
        for f in entries(5 + i) {
            s.points.push((GO_H2_HANDLER, f.file_offset, *conn_data));
            s.h2_servers += 1;
        }
    }
    Ok(s)
}

#[cfg(test)]
#[path = "goroutines_tests.rs"]
mod tests;
