//! What the agent has attached, and to which process: the loaded eBPF object (dropping it
//! detaches every probe), the targets' bitmap and socket seeds, and the Go TLS uprobes.
//!
//! The lifecycle half of the agent; the data flow is `pipeline`'s.

use std::sync::Arc;

use anyhow::Result;
use aya::Ebpf;

use crate::{
    gotls::{Attached, GoTls},
    procfs,
    span::ProcessInfo,
    targets::{ExistingConnection, Targets},
};

pub struct Attachments {
    /// Owns the loaded programs: dropping it detaches every probe.
    ebpf: Ebpf,
    gotls: GoTls,
    targets: Targets,
}

impl Attachments {
    pub fn new(ebpf: Ebpf, gotls: GoTls, targets: Targets) -> Self {
        Attachments { ebpf, gotls, targets }
    }

    /// The traced process `tgid`, if it is one.
    pub fn process(&self, tgid: u32) -> Option<Arc<ProcessInfo>> {
        self.targets.process(tgid)
    }

    pub fn is_active(&self, tgid: u32) -> bool {
        self.targets.is_active(tgid)
    }

    /// Whether a process that exec'd `comm` is to be traced (`--comm`).
    pub fn wants_comm(&self, comm: &str) -> bool {
        self.targets.comms().iter().any(|c| c == comm)
    }

    /// The `--comm` names no process has been found for yet, for the log; `None` once one is traced.
    pub fn waiting_for(&self) -> Option<String> {
        (self.targets.active_count() == 0).then(|| self.targets.comms().join(" or "))
    }

    /// Processes named by `--comm` that are not traced yet.
    pub fn unattached_by_comm(&mut self) -> Vec<u32> {
        self.targets.unattached_by_comm()
    }

    /// Starts tracing `pid`, its Go TLS uprobes included; returns the connections it already had.
    /// `exec`: the kernel time and comm of the exec that made it a `--comm` target, when that is
    /// how it was found (the kernel made it a target right then).
    pub fn attach(&mut self, pid: u32, exec: Option<(u64, &str)>) -> Result<Vec<ExistingConnection>> {
        let existing = self.targets.attach(pid, exec.map(|(_, comm)| comm))?;
        self.attach_go_tls(pid, exec.map(|(ns, _)| ns));
        Ok(existing)
    }

    /// A target exec'd: it no longer runs its old executable. Returns the fds that survived the
    /// exec; the new image's uprobes come with [`Self::attach_go_tls`].
    pub fn exec(&mut self, pid: u32, comm: &str) -> Result<Vec<i32>> {
        self.gotls.detach(pid);
        self.targets.exec(pid, comm)
    }

    /// Makes sure `pid`'s executable has its Go TLS probes. `exec_ns`: the kernel time of the exec
    /// that made it a target, for the time from exec to probes ready in the log.
    pub fn attach_go_tls(&mut self, pid: u32, exec_ns: Option<u64>) {
        match self.gotls.attach(&mut self.ebpf, pid, exec_ns) {
            Ok(Attached::Probes { plan, readiness, ready_ns }) => {
                let binary = readiness.as_str();
                tracing::info!(
                    pid,
                    go_version = %plan.go_version,
                    read_probe = plan.read,
                    write_probe = plan.write,
                    ret_probes = plan.rets,
                    binary,
                    "Go TLS plaintext probes attached"
                );
                let g = &plan.goroutines;
                match &plan.goroutines_error {
                    None => tracing::info!(
                        pid,
                        goroutine_probes = g.count(),
                        spawn_ret_probes = g.spawn_rets,
                        grpc_client = g.grpc,
                        http1_client = g.http1_client,
                        h2_servers = g.h2_servers,
                        binary,
                        "Go goroutine probes attached"
                    ),
                    Some(e) => tracing::warn!(pid, "Go goroutine probes not attached, no trace nesting: {e}"),
                }
                if let Some(exec_ns) = exec_ns {
                    // 0 when the probes were live before the exec (already attached).
                    let exec_to_ready_us = ready_ns.saturating_sub(exec_ns) / 1000;
                    tracing::info!(pid, exec_to_ready_us, binary, "Go TLS probes ready");
                }
            }
            Ok(Attached::NotGo) => tracing::debug!(pid, "not a Go binary: TLS connections stay opaque"),
            Ok(Attached::NoTls(f)) => tracing::debug!(pid, "Go binary without {f}"),
            // Gone before its executable could be looked at: if that file has probes, they ran.
            Err(e) if !procfs::exists(pid) => tracing::debug!(pid, "process gone before its Go TLS check: {e:#}"),
            Err(e) => tracing::warn!(pid, "Go TLS probes not attached, TLS connections stay opaque: {e:#}"),
        }
    }

    /// Attaches the Go TLS probes of the executables `--comm` targets would run, ahead of any exec.
    pub fn attach_ahead_by_comm(&mut self) {
        self.gotls.attach_ahead(&mut self.ebpf, self.targets.comms());
    }

    /// `pid` exited (the kernel cleared its bits then).
    pub fn detach(&mut self, tgid: u32) {
        self.gotls.detach(tgid);
        self.targets.detach(tgid);
    }

    /// Releases the Go TLS probes of executables no target has run for the idle period.
    pub fn release_idle(&mut self) {
        self.gotls.release_idle(&mut self.ebpf);
    }

    /// Go binary analyses: (cache hits, cache misses, executables with probes).
    pub fn go_binary_counts(&self) -> (u64, u64, usize) {
        self.gotls.counts()
    }
}
