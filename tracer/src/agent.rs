//! The agent: each ring record read from the kernel goes down one line,
//! record → event → (lifecycle: `attachments`) → data flow: `pipeline` → export.

use anyhow::Result;

use crate::{
    attachments::Attachments,
    capture::RecordSink,
    clock::Clock,
    events::{self, Event, GoLinkKind, SockOpen},
    pipeline::{DataFlowCounters, Pipeline},
};

#[derive(Default, Debug, Clone)]
pub struct RecordStats {
    pub events: u64,
    pub corrupt_events: u64,
}

pub struct Agent {
    attachments: Attachments,
    pipeline: Pipeline,
    stats: RecordStats,
}

impl RecordSink for Agent {
    fn record(&mut self, bytes: &[u8]) {
        self.stats.events += 1;
        match events::parse(bytes) {
            Ok(ev) => self.handle(ev),
            Err(e) => {
                self.stats.corrupt_events += 1;
                tracing::debug!("corrupt ring-buffer record: {e}");
            }
        }
        self.pipeline.after_record();
    }

    fn end_of_records(&mut self) {
        self.pipeline.flush();
    }
}

impl Agent {
    pub fn new(attachments: Attachments, pipeline: Pipeline) -> Self {
        Agent { attachments, pipeline, stats: RecordStats::default() }
    }

    fn handle(&mut self, ev: Event<'_>) {
        if tracing::enabled!(tracing::Level::TRACE) {
            trace_event(&ev);
        }
        match ev {
            Event::Data(c) => self.pipeline.on_data(&c),
            Event::SockOpen(o) => {
                if let Some(process) = self.attachments.process(o.tgid) {
                    self.pipeline.on_open(o, process, false);
                }
            }
            Event::SockClose { tgid, fd, ts_ns, tls_bytes, sk, .. } => {
                self.pipeline.on_socket_close(tgid, fd, sk, tls_bytes, ts_ns)
            }
            Event::ProcExec { tgid, comm, ts_ns } => {
                let result = if self.attachments.is_active(tgid) {
                    self.exec(tgid, &comm, ts_ns)
                } else if self.attachments.wants_comm(&comm) {
                    self.attach_found(tgid, Some((ts_ns, &comm)))
                } else {
                    Ok(())
                };
                if let Err(e) = result {
                    tracing::warn!("could not attach to process {tgid} ({comm}): {e:#}");
                }
            }
            Event::ProcExit { tgid } => self.detach(tgid),
            Event::GoSpawn(s) => self.pipeline.on_go_spawn(&s),
            Event::GoLink(l) => self.pipeline.on_go_link(&l),
        }
    }

    /// Starts tracing a running process and registers the connections it already had.
    pub fn attach(&mut self, pid: u32) -> Result<()> {
        self.attach_found(pid, None)
    }

    /// `exec`: the kernel time and comm of the exec that made `pid` a `--comm` target, when that
    /// is how it was found.
    fn attach_found(&mut self, pid: u32, exec: Option<(u64, &str)>) -> Result<()> {
        let existing = self.attachments.attach(pid, exec)?;
        let count = existing.len();
        let now = Clock::ktime_now();
        let opens = existing.into_iter().map(|c| SockOpen {
            tgid: pid,
            fd: c.fd,
            ts_ns: now,
            role: c.role,
            listen_fd: None,
            local: Some(c.local),
            peer: Some(c.peer),
            sk: 0,
        });
        if let Some(process) = self.attachments.process(pid) {
            self.pipeline.on_attach(opens.collect(), process.clone());
            // Logged once every probe is in place: from here on, nothing the target does is missed.
            let comm = &process.service_name;
            tracing::info!(pid, comm = %comm, existing_connections = count, "target attached pid={pid}");
        }
        Ok(())
    }

    /// Attaches the processes named by `--comm` that are not traced yet (their exec may have come
    /// before the probes were loaded).
    pub fn attach_by_comm(&mut self) {
        for pid in self.attachments.unattached_by_comm() {
            if let Err(e) = self.attach(pid) {
                tracing::warn!("could not attach to process {pid}: {e:#}");
            }
        }
    }

    /// Attaches the Go TLS probes of the executables `--comm` targets would run, before any runs.
    pub fn attach_ahead_by_comm(&mut self) {
        self.attachments.attach_ahead_by_comm();
    }

    /// The `--comm` names the agent still waits for, when it traces nothing yet.
    pub fn waiting_for(&self) -> Option<String> {
        self.attachments.waiting_for()
    }

    /// A target exec'd: uprobes follow the new image; connections that did not survive are closed.
    fn exec(&mut self, pid: u32, comm: &str, exec_ns: u64) -> Result<()> {
        let alive = self.attachments.exec(pid, comm)?;
        self.pipeline.on_exec(pid, &alive, self.attachments.process(pid));
        self.attachments.attach_go_tls(pid, Some(exec_ns));
        tracing::info!(pid, "target exec'd a new image pid={pid}");
        Ok(())
    }

    fn detach(&mut self, tgid: u32) {
        self.pipeline.on_process_gone(tgid);
        self.attachments.detach(tgid);
    }

    /// Releases the Go TLS probes of executables no target has run for the idle period.
    pub fn release_idle_probes(&mut self) {
        self.attachments.release_idle();
    }

    /// At shutdown: what is assembled goes to export; open connections are not reported.
    pub fn finish(&mut self) {
        self.pipeline.finish();
        let (hits, misses, attached) = self.attachments.go_binary_counts();
        tracing::info!(
            analysis_cache_hits = hits,
            analysis_cache_misses = misses,
            executables_with_probes = attached,
            "Go binary analyses"
        );
    }

    pub fn counters(&self) -> (RecordStats, DataFlowCounters) {
        (self.stats.clone(), self.pipeline.counters())
    }
}

/// One compact line per event (payload bytes are never logged: they may hold credentials).
fn trace_event(ev: &Event<'_>) {
    match ev {
        Event::Data(c) => tracing::trace!(
            tgid = c.tgid,
            fd = c.fd,
            dir = ?c.direction,
            tls = c.tls,
            seq = c.seq,
            total = c.total_len,
            offset = c.offset,
            captured = c.data.len(),
            first = c.first,
            last = c.last,
            exit_ns = c.exit_ns,
            goroutine = c.goroutine,
            "data"
        ),
        Event::GoSpawn(s) => {
            tracing::trace!(tgid = s.tgid, ts_ns = s.ts_ns, child = s.child, parent = s.parent, "go spawn")
        }
        Event::GoLink(l) => match l.kind {
            GoLinkKind::GrpcClientStream { stream_id, caller, .. } => tracing::trace!(
                tgid = l.tgid,
                ts_ns = l.ts_ns,
                goroutine = l.goroutine,
                stream_id,
                caller,
                path = l.kind.grpc_path().unwrap_or("?"),
                "go link grpc client stream"
            ),
            GoLinkKind::Http1ClientWrite { caller } => {
                tracing::trace!(
                    tgid = l.tgid,
                    ts_ns = l.ts_ns,
                    goroutine = l.goroutine,
                    caller,
                    "go link http1 client write"
                )
            }
            GoLinkKind::H2ServerHandler { fd, stream_id } => {
                let (tgid, ts_ns, goroutine) = (l.tgid, l.ts_ns, l.goroutine);
                tracing::trace!(tgid, ts_ns, goroutine, fd, stream_id, "go link h2 server handler")
            }
        },
        other => tracing::trace!(?other, "event"),
    }
}
