//! The data flow, events in and spans out: the single-threaded heart of the agent.
//!
//! data events → connections (table, stream continuity) → assemble (protocol decoders, spans) →
//! correlate (parents, trace and span ids: spans wait there for their parent, a bounded time) →
//! export. Nothing here waits: export takes spans with a non-blocking submit. Which processes are traced is `attachments`' business; this side only
//! hears of them as connections open and processes go.

use std::sync::Arc;

use crate::{
    assemble::{AssembleStats, Assembler, Conn},
    clock::Clock,
    connections::{ConnKey, ConnTable, Connection, StaleClose},
    correlate::{CorrelateStats, Correlator},
    events::{DataChunk, GoLink, GoSpawn, SockOpen},
    export::ExportHandle,
    local_addrs::LocalAddrs,
    span::{ProcessInfo, SpanRecord},
};

/// Spans kept for export before the ring's pending records are all handled: a flood still sends
/// them in batches of this size, not all at the end of a drain of up to 65,536 records.
const SUBMIT_BATCH: usize = 256;

#[derive(Default, Debug, Clone)]
pub struct PipelineStats {
    pub data_for_unknown_connections: u64,
    /// Close records of a socket whose fd another socket had taken by then (see
    /// `close_socket` in the probes), which left that one's connection alone.
    pub stale_closes: u64,
}

/// The data flow's counters at one moment, for the stats line.
#[derive(Debug, Clone)]
pub struct DataFlowCounters {
    pub pipeline: PipelineStats,
    pub assemble: AssembleStats,
    pub correlate: CorrelateStats,
    pub connections: usize,
    pub connections_evicted: u64,
}

pub struct Pipeline {
    conns: ConnTable<crate::assemble::ProtoState>,
    assembler: Assembler,
    correlator: Correlator,
    stats: PipelineStats,
    local_addrs: LocalAddrs,
    export: ExportHandle,
    /// Spans assembled and not yet handed to correlation.
    spans: Vec<SpanRecord>,
    /// Spans correlation let go (whole trees), on their way to export.
    ready: Vec<SpanRecord>,
}

impl Pipeline {
    pub fn new(max_connections: usize, assembler: Assembler, correlator: Correlator, export: ExportHandle) -> Self {
        Pipeline {
            conns: ConnTable::new(max_connections),
            assembler,
            correlator,
            stats: PipelineStats::default(),
            local_addrs: LocalAddrs::default(),
            export,
            spans: Vec::new(),
            ready: Vec::new(),
        }
    }

    /// The Go runtime created a goroutine in a target: correlation follows goroutine ancestry.
    pub fn on_go_spawn(&mut self, s: &GoSpawn) {
        self.correlator.on_go_spawn(s);
    }

    /// grpc-go or net/http linked a goroutine to a request: assembly takes what names the
    /// request (a gRPC method), correlation what links it to its caller.
    pub fn on_go_link(&mut self, l: &GoLink) {
        self.assembler.on_go_link(l);
        self.correlator.on_go_link(l);
    }

    /// Bytes a traced socket moved (or a Go TLS call read or wrote).
    pub fn on_data(&mut self, c: &DataChunk<'_>) {
        let key = ConnKey { tgid: c.tgid, fd: c.fd };
        match self.conns.get_mut(&key) {
            Some(conn) => {
                if let Some(feed) = conn.on_chunk(c) {
                    self.assembler.on_feed(conn, c.direction, feed, &mut self.spans);
                }
            }
            None => self.stats.data_for_unknown_connections += 1,
        }
    }

    /// A socket of the traced `process` opened, or was first met; `preexisting`: the process had
    /// it before it was attached.
    pub fn on_open(&mut self, o: SockOpen, process: Arc<ProcessInfo>, preexisting: bool) {
        let local = o.local.or_else(|| self.local_addrs.accepted(o.tgid, o.listen_fd, o.peer));
        let key = ConnKey { tgid: o.tgid, fd: o.fd };
        // The same socket (same addresses) announced again, already known as a connection:
        // - socket hooks meet sockets at their first bytes: one the target had before it was
        //   attached may be met between its bit being set and its seeding from /proc (known as a
        //   connection joined mid-way, with its true role);
        // - the same `struct sock`, whose kernel entry a late close of the fd's previous socket
        //   removed (a race `close_socket` narrows to a few instructions).
        if let Some(c) = self.conns.get_mut(&key)
            && c.local == local
            && c.peer == o.peer
            && ((!preexisting && c.preexisting) || (c.sk != 0 && c.sk == o.sk))
        {
            return;
        }
        let mut conn: Conn = Connection::new(o.role, local, o.peer, o.ts_ns, preexisting, process);
        conn.sk = o.sk;
        let replaced = self.conns.insert(key, conn);
        for old in replaced {
            self.assembler.on_close(old, o.ts_ns, &mut self.spans);
        }
    }

    /// The sockets a process had when it was attached, announced as opened now.
    pub fn on_attach(&mut self, existing: Vec<SockOpen>, process: Arc<ProcessInfo>) {
        for o in existing {
            self.on_open(o, process.clone(), true);
        }
        self.flush();
    }

    /// The kernel closed socket `sk` (fd `fd` of `tgid`); `tls_bytes` is the Go TLS ciphertext
    /// the probes counted on it.
    pub fn on_socket_close(&mut self, tgid: u32, fd: i32, sk: u64, tls_bytes: [u64; 2], ts_ns: u64) {
        match self.conns.remove_closed(&ConnKey { tgid, fd }, sk) {
            Ok(Some(conn)) => self.assembler.on_socket_close(conn, tls_bytes, ts_ns, &mut self.spans),
            Ok(None) => {}
            Err(StaleClose) => {
                self.stats.stale_closes += 1;
                tracing::debug!(tgid, fd, "close of the fd's previous socket, come after the next one's open");
            }
        }
    }

    /// A traced process exec'd: connections whose fd did not survive (`alive`) are closed; those
    /// that did belong to the process as it is now (`process`).
    pub fn on_exec(&mut self, pid: u32, alive: &[i32], process: Option<Arc<ProcessInfo>>) {
        let now = Clock::ktime_now();
        for conn in self.conns.remove_process_except(pid, alive) {
            self.assembler.on_close(conn, now, &mut self.spans);
        }
        // The new image's goroutines are not the old one's.
        self.flush();
        self.correlator.forget_process(pid, &mut self.ready);
        self.submit();
        // Connections that survived the exec, or that the new image opened before this event was
        // handled, belong to the process as it is now.
        if let Some(info) = process {
            for conn in self.conns.of_process_mut(pid) {
                conn.process = info.clone();
            }
        }
    }

    /// A traced process is gone (or no longer traced): its connections end now.
    pub fn on_process_gone(&mut self, tgid: u32) {
        let now = Clock::ktime_now();
        for conn in self.conns.remove_process(tgid) {
            self.assembler.on_close(conn, now, &mut self.spans);
        }
        self.local_addrs.forget(tgid);
        self.flush();
        self.correlator.forget_process(tgid, &mut self.ready);
        self.submit();
    }

    /// One ring record was handled: in a flood, spans go to export before the drain ends.
    pub fn after_record(&mut self) {
        if self.spans.len() >= SUBMIT_BATCH {
            self.flush();
        }
    }

    /// At shutdown, connections are still open: their requests in flight have no end to report,
    /// and a connection span would claim a close that did not happen. They are dropped.
    pub fn finish(&mut self) {
        let open = self.conns.drain().len();
        tracing::debug!(open, "connections still open at shutdown, not reported");
        self.flush();
        self.correlator.finish(&mut self.ready);
        self.submit();
    }

    /// The spans assembled so far go to correlation; what it lets go (whole trees, and spans
    /// whose wait for a parent is over) goes to export. Called at the end of every read of the
    /// ring, the housekeeping's included, so that no span waits past its deadline for long.
    pub fn flush(&mut self) {
        self.correlator.intake(&mut self.spans, Clock::ktime_now(), &mut self.ready);
        self.submit();
    }

    fn submit(&mut self) {
        if !self.ready.is_empty() {
            self.export.submit_all(&mut self.ready);
        }
    }

    pub fn counters(&self) -> DataFlowCounters {
        DataFlowCounters {
            pipeline: self.stats.clone(),
            assemble: self.assembler.stats.clone(),
            correlate: self.correlator.stats(),
            connections: self.conns.len(),
            connections_evicted: self.conns.evicted,
        }
    }
}
