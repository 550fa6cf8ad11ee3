//! Events in, spans out: the single-threaded heart of the agent.
//!
//! events → connections (table, stream continuity) → assemble (protocol decoders, spans) → export.
//! Nothing here waits: export takes spans with a non-blocking submit.

use anyhow::Result;
use aya::Ebpf;

use crate::{
    assemble::Assembler,
    clock::Clock,
    connections::{ConnKey, ConnTable, Connection, StaleClose},
    events::{self, Event, SockOpen},
    export::ExportHandle,
    gotls::{Attached, GoTls},
    local_addrs::LocalAddrs,
    span::SpanRecord,
    targets::Targets,
};

/// Spans kept for export before the ring's pending records are all handled: a flood still sends
/// them in batches of this size, not all at the end of a drain of up to 65,536 records.
const SUBMIT_BATCH: usize = 256;

#[derive(Default, Debug, Clone)]
pub struct PipelineStats {
    pub events: u64,
    pub bytes: u64,
    pub corrupt_events: u64,
    pub data_for_unknown_connections: u64,
    /// Close records of a socket whose fd another socket had taken by then (see
    /// `close_socket` in the probes), which left that one's connection alone.
    pub stale_closes: u64,
}

pub struct Pipeline {
    /// Owns the loaded programs: dropping the pipeline detaches every probe.
    ebpf: Ebpf,
    gotls: GoTls,
    pub targets: Targets,
    pub conns: ConnTable,
    pub assembler: Assembler,
    pub stats: PipelineStats,
    local_addrs: LocalAddrs,
    export: ExportHandle,
    spans: Vec<SpanRecord>,
}

impl Pipeline {
    pub fn new(
        ebpf: Ebpf,
        gotls: GoTls,
        targets: Targets,
        max_connections: usize,
        assembler: Assembler,
        export: ExportHandle,
    ) -> Self {
        Pipeline {
            ebpf,
            gotls,
            targets,
            conns: ConnTable::new(max_connections),
            assembler,
            stats: PipelineStats::default(),
            local_addrs: LocalAddrs::default(),
            export,
            spans: Vec::new(),
        }
    }

    /// One ring-buffer record.
    pub fn handle_record(&mut self, bytes: &[u8]) {
        self.stats.events += 1;
        self.stats.bytes += bytes.len() as u64;
        match events::parse(bytes) {
            Ok(ev) => self.handle(ev),
            Err(e) => {
                self.stats.corrupt_events += 1;
                tracing::debug!("corrupt ring-buffer record: {e}");
            }
        }
        // Spans go to export once per drain of the ring (`end_of_records`), or sooner in a flood.
        if self.spans.len() >= SUBMIT_BATCH {
            self.flush();
        }
    }

    /// The records pending in the ring were all handled: their spans go to export together.
    pub fn end_of_records(&mut self) {
        self.flush();
    }

    fn handle(&mut self, ev: Event<'_>) {
        if tracing::enabled!(tracing::Level::TRACE) {
            trace_event(&ev);
        }
        match ev {
            Event::Data(c) => {
                let key = ConnKey { tgid: c.tgid, fd: c.fd };
                match self.conns.get_mut(&key) {
                    Some(conn) => {
                        if let Some(feed) = conn.on_chunk(&c) {
                            self.assembler.on_feed(conn, c.direction, feed, &mut self.spans);
                        }
                    }
                    None => self.stats.data_for_unknown_connections += 1,
                }
            }
            Event::SockOpen(o) => self.open(o, false),
            Event::SockClose { tgid, fd, ts_ns, tls_bytes, sk, .. } => {
                match self.conns.remove_closed(&ConnKey { tgid, fd }, sk) {
                    Ok(Some(mut conn)) => {
                        conn.add_tls_bytes(tls_bytes);
                        self.assembler.on_close(conn, ts_ns, &mut self.spans);
                    }
                    Ok(None) => {}
                    Err(StaleClose) => {
                        self.stats.stale_closes += 1;
                        tracing::debug!(tgid, fd, "close of the fd's previous socket, come after the next one's open");
                    }
                }
            }
            Event::ProcExec { tgid, comm } => {
                let result = if self.targets.is_active(tgid) {
                    self.exec(tgid, &comm)
                } else if self.targets.comms().contains(&comm) {
                    self.attach(tgid)
                } else {
                    Ok(())
                };
                if let Err(e) = result {
                    tracing::warn!("could not attach to process {tgid} ({comm}): {e:#}");
                }
            }
            Event::ProcExit { tgid } => self.detach(tgid),
        }
    }

    fn open(&mut self, o: SockOpen, preexisting: bool) {
        let Some(process) = self.targets.process(o.tgid) else { return };
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
        let mut conn = Connection::new(o.role, local, o.peer, o.ts_ns, preexisting, process);
        conn.sk = o.sk;
        let replaced = self.conns.insert(key, conn);
        for old in replaced {
            self.assembler.on_close(old, o.ts_ns, &mut self.spans);
        }
    }

    /// Starts tracing a process and registers the connections it already had.
    pub fn attach(&mut self, pid: u32) -> Result<()> {
        let existing = self.targets.attach(pid)?;
        self.attach_go_tls(pid);
        let now = Clock::ktime_now();
        let count = existing.len();
        for c in existing {
            let o = SockOpen {
                tgid: pid,
                fd: c.fd,
                ts_ns: now,
                role: c.role,
                listen_fd: None,
                local: Some(c.local),
                peer: Some(c.peer),
                sk: 0,
            };
            self.open(o, true);
        }
        self.flush();
        // Logged once every probe is in place: from here on, nothing the target does is missed.
        let comm = self.targets.process(pid).map(|p| p.service_name.clone()).unwrap_or_default();
        tracing::info!(pid, comm = %comm, existing_connections = count, "target attached pid={pid}");
        Ok(())
    }

    /// A target exec'd: uprobes follow the new image; connections that did not survive are closed.
    fn exec(&mut self, pid: u32, comm: &str) -> Result<()> {
        self.gotls.detach(&mut self.ebpf, pid);
        let alive = self.targets.exec(pid, comm)?;
        let now = Clock::ktime_now();
        for conn in self.conns.remove_process_except(pid, &alive) {
            self.assembler.on_close(conn, now, &mut self.spans);
        }
        // Connections that survived the exec, or that the new image opened before this event was
        // handled, belong to the process as it is now.
        if let Some(info) = self.targets.process(pid) {
            for conn in self.conns.of_process_mut(pid) {
                conn.process = info.clone();
            }
        }
        self.attach_go_tls(pid);
        tracing::info!(pid, "target exec'd a new image pid={pid}");
        Ok(())
    }

    fn attach_go_tls(&mut self, pid: u32) {
        match self.gotls.attach(&mut self.ebpf, pid) {
            Ok(Attached::Probes { go_version, read, write, rets }) => {
                tracing::info!(pid, go_version = %go_version, read_probe = read, write_probe = write, ret_probes = rets, "Go TLS plaintext probes attached");
            }
            Ok(Attached::NotGo) => tracing::debug!(pid, "not a Go binary: TLS connections stay opaque"),
            Ok(Attached::NoTls(f)) => tracing::debug!(pid, "Go binary without {f}"),
            Err(e) => tracing::warn!(pid, "Go TLS probes not attached, TLS connections stay opaque: {e:#}"),
        }
    }

    pub fn detach(&mut self, tgid: u32) {
        let now = Clock::ktime_now();
        for conn in self.conns.remove_process(tgid) {
            self.assembler.on_close(conn, now, &mut self.spans);
        }
        self.local_addrs.forget(tgid);
        self.gotls.detach(&mut self.ebpf, tgid);
        self.targets.detach(tgid);
        self.flush();
    }

    /// At shutdown, connections are still open: their requests in flight have no end to report,
    /// and a connection span would claim a close that did not happen. They are dropped.
    pub fn finish(&mut self) {
        let open = self.conns.drain().len();
        tracing::debug!(open, "connections still open at shutdown, not reported");
        self.flush();
    }

    fn flush(&mut self) {
        self.export.submit_all(&mut self.spans);
    }
}

/// One compact line per event (payload bytes are never logged: they may hold credentials).
fn trace_event(ev: &Event<'_>) {
    match ev {
        Event::Data(c) => tracing::trace!(
            tgid = c.tgid, fd = c.fd, dir = ?c.direction, tls = c.tls, seq = c.seq, total = c.total_len,
            offset = c.offset, captured = c.data.len(), first = c.first, last = c.last, exit_ns = c.exit_ns, "data"
        ),
        other => tracing::trace!(?other, "event"),
    }
}
