//! What the agent has attached, and to which process: the loaded eBPF object (dropping it
//! detaches every probe), the targets' bitmap and socket seeds, and the Go TLS uprobes.
//!
//! The lifecycle half of the agent; the data flow is `pipeline`'s.

use std::sync::Arc;

use anyhow::Result;
use aya::Ebpf;

use crate::{
    gotls::{Attached, GoTls},
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
    pub fn unattached_by_comm(&self) -> Vec<u32> {
        self.targets.unattached_by_comm()
    }

    /// Starts tracing `pid`, its Go TLS uprobes included; returns the connections it already had.
    pub fn attach(&mut self, pid: u32) -> Result<Vec<ExistingConnection>> {
        let existing = self.targets.attach(pid)?;
        self.attach_go_tls(pid);
        Ok(existing)
    }

    /// A target exec'd: its uprobes followed the old image and are released. Returns the fds that
    /// survived the exec; the new image's uprobes come with [`Self::attach_go_tls`].
    pub fn exec(&mut self, pid: u32, comm: &str) -> Result<Vec<i32>> {
        self.gotls.detach(&mut self.ebpf, pid);
        self.targets.exec(pid, comm)
    }

    pub fn attach_go_tls(&mut self, pid: u32) {
        match self.gotls.attach(&mut self.ebpf, pid) {
            Ok(Attached::Probes { go_version, read, write, rets }) => {
                tracing::info!(
                    pid,
                    go_version = %go_version,
                    read_probe = read,
                    write_probe = write,
                    ret_probes = rets,
                    "Go TLS plaintext probes attached"
                );
            }
            Ok(Attached::NotGo) => tracing::debug!(pid, "not a Go binary: TLS connections stay opaque"),
            Ok(Attached::NoTls(f)) => tracing::debug!(pid, "Go binary without {f}"),
            Err(e) => tracing::warn!(pid, "Go TLS probes not attached, TLS connections stay opaque: {e:#}"),
        }
    }

    pub fn detach(&mut self, tgid: u32) {
        self.gotls.detach(&mut self.ebpf, tgid);
        self.targets.detach(tgid);
    }
}
