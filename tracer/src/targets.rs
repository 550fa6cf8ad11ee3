//! Which processes are traced: `--pid`s, and processes named by `--comm` now or later.
//!
//! Attaching a process sets its bit in the kernel's TGID bitmap, then seeds the kernel socket table
//! with the TCP sockets it already has, so connections opened before the agent started are seen.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData},
};
use tracer_common::{Comm, SocketState, TASK_COMM_LEN, sock_role, socket_key};

use crate::{clock::Clock, procfs, span::ProcessInfo, stream::Role};

const BPF_NOEXIST: u64 = 1;

/// A TCP connection the process had before it was attached.
#[derive(Debug, Clone, Copy)]
pub struct ExistingConnection {
    pub fd: i32,
    pub role: Role,
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

pub struct Targets {
    comms: Vec<String>,
    bitmap: Array<MapData, u64>,
    sockets: BpfHashMap<MapData, u64, SocketState>,
    active: HashMap<u32, Arc<ProcessInfo>>,
    /// `--comm` processes found by looking at /proc, not attached from it at once (see
    /// [`Sightings`]).
    sightings: Sightings,
    host_name: String,
}

impl Targets {
    pub fn new(ebpf: &mut Ebpf, comms: Vec<String>) -> Result<Self> {
        let mut comm_map: BpfHashMap<MapData, Comm, u8> = take(ebpf, "TARGET_COMMS")?;
        for c in &comms {
            let mut key = [0u8; TASK_COMM_LEN];
            key[..c.len()].copy_from_slice(c.as_bytes());
            comm_map.insert(key, 1, 0).context("filling the comm filter")?;
        }
        Ok(Targets {
            comms,
            bitmap: take(ebpf, "TARGETS")?,
            sockets: take(ebpf, "SOCKETS")?,
            active: HashMap::new(),
            sightings: Sightings::default(),
            host_name: procfs::host_name(),
        })
    }

    pub fn comms(&self) -> &[String] {
        &self.comms
    }

    pub fn is_active(&self, tgid: u32) -> bool {
        self.active.contains_key(&tgid)
    }

    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    pub fn process(&self, tgid: u32) -> Option<Arc<ProcessInfo>> {
        self.active.get(&tgid).cloned()
    }

    /// Processes named by `--comm` that are running and are to be attached from /proc now (see
    /// [`Sightings`]).
    pub fn unattached_by_comm(&mut self) -> Vec<u32> {
        if self.comms.is_empty() {
            return Vec::new();
        }
        let found: Vec<(u32, bool)> = procfs::pids_with_comm(&self.comms)
            .into_iter()
            .filter(|p| !self.is_active(*p))
            .map(|p| (p, self.has_bit(p)))
            .collect();
        self.sightings.due(found, Clock::ktime_now())
    }

    fn process_info(&self, pid: u32) -> Result<Arc<ProcessInfo>> {
        let comm = procfs::comm(pid).ok_or_else(|| anyhow!("no such process: pid {pid}"))?;
        Ok(Arc::new(ProcessInfo {
            executable_name: procfs::exe_name(pid).unwrap_or_else(|| comm.clone()),
            service_name: comm,
            pid,
            host_name: self.host_name.clone(),
        }))
    }

    /// Starts tracing `pid`; returns the TCP connections it already had. `exec_comm`: the comm of
    /// the exec that made it a `--comm` target, when that is how it was found. The kernel set its
    /// bit then and has seen every socket it opened since: none is seeded, and a process already
    /// gone is still named (its records in the ring are its spans).
    pub fn attach(&mut self, pid: u32, exec_comm: Option<&str>) -> Result<Vec<ExistingConnection>> {
        if let Some(comm) = exec_comm {
            let info = self.process_info(pid).unwrap_or_else(|_| self.exec_info(pid, comm));
            self.set_bit(pid)?;
            self.active.insert(pid, info);
            return Ok(Vec::new());
        }
        let info = self.process_info(pid)?;
        self.set_bit(pid)?;
        self.active.insert(pid, info);
        // After the bit is set, new sockets are tracked by the kernel; seed the older ones without
        // overwriting any the kernel just added (BPF_NOEXIST).
        let existing = existing_connections(pid);
        for c in &existing {
            let role = match c.role {
                Role::Server => sock_role::ACCEPTED,
                Role::Client => sock_role::CONNECTED,
            };
            let mut state = SocketState::new(role);
            // The socket hooks learn its `struct sock` at its next bytes, checked by these ports.
            state.local_port = c.local.port();
            state.peer_port = c.peer.port();
            let _ = self.sockets.insert(socket_key(pid, c.fd as u32), state, BPF_NOEXIST);
        }
        Ok(existing)
    }

    /// A target exec'd a new image: it is traced without a gap (its bit stays set); its details
    /// are read again, and sockets that did not survive the exec (close-on-exec) are forgotten.
    /// Returns the fds that are still sockets.
    pub fn exec(&mut self, pid: u32, comm: &str) -> Result<Vec<i32>> {
        // A short-lived image may be gone by the time its exec is handled: its spans still belong
        // to the new image, named by the comm the kernel reported at exec.
        let info = self.process_info(pid).unwrap_or_else(|_| self.exec_info(pid, comm));
        self.active.insert(pid, info);
        let alive: Vec<i32> = procfs::socket_fds(pid).into_iter().map(|(fd, _)| fd).collect();
        let stale: Vec<u64> = self
            .sockets
            .keys()
            .filter_map(Result::ok)
            .filter(|k| (k >> 32) as u32 == pid && !alive.contains(&(*k as u32 as i32)))
            .collect();
        for k in stale {
            let _ = self.sockets.remove(&k);
        }
        Ok(alive)
    }

    /// `pid` exited: forgets it and its sockets in the kernel table. Its bit was cleared by the
    /// kernel at the exit (tracer-ebpf probes/process.rs), so that a new process with the same pid
    /// is not taken for it whenever this runs.
    pub fn detach(&mut self, pid: u32) {
        if self.active.remove(&pid).is_none() {
            return;
        }
        let stale: Vec<u64> = self.sockets.keys().filter_map(Result::ok).filter(|k| (k >> 32) as u32 == pid).collect();
        for k in stale {
            let _ = self.sockets.remove(&k);
        }
        tracing::info!(pid, "target detached pid={pid}");
    }

    /// Named by the comm of its exec: the process is gone, or its /proc entry is not readable.
    fn exec_info(&self, pid: u32, comm: &str) -> Arc<ProcessInfo> {
        Arc::new(ProcessInfo {
            service_name: comm.to_owned(),
            pid,
            executable_name: comm.to_owned(),
            host_name: self.host_name.clone(),
        })
    }

    fn has_bit(&self, pid: u32) -> bool {
        self.bitmap.get(&(pid >> 6), 0).is_ok_and(|word| word & (1u64 << (pid & 63)) != 0)
    }

    /// Sets `pid`'s bit (bit `pid % 64` of word `pid / 64`). The probes change bits of the same
    /// word at exec and exit, atomically; this read-modify-write is not, so it writes only when
    /// the bit is not set yet (never for a `--comm` process, whose bit the kernel set at its exec).
    fn set_bit(&mut self, pid: u32) -> Result<()> {
        let word = pid >> 6;
        let bit = 1u64 << (pid & 63);
        let old = self.bitmap.get(&word, 0).with_context(|| format!("pid {pid} is beyond pid_max"))?;
        if old & bit == 0 {
            self.bitmap.set(word, old | bit, 0).context("updating the target bitmap")?;
        }
        Ok(())
    }
}

/// When a `--comm` process found in /proc is attached from there. A process that execs a `--comm`
/// name is made a target by the kernel, and its exec record attaches it: attaching it from /proc
/// as well would race with that record (its comm shows in /proc a moment before the kernel sets
/// its bit, at the end of the exec). So /proc is trusted at once only at start-up, for processes
/// the kernel has not marked; later, and for marked ones, only for a process still unattached
/// after [`Sightings::GRACE_NS`] (its exec record lost, or a comm changed by prctl).
#[derive(Default)]
struct Sightings {
    started: bool,
    /// Kernel time each waiting process was first found.
    first_seen: HashMap<u32, u64>,
}

impl Sightings {
    const GRACE_NS: u64 = 1_000_000_000;

    /// `found`: the unattached `--comm` processes now, with whether the kernel marked them.
    fn due(&mut self, found: Vec<(u32, bool)>, now_ns: u64) -> Vec<u32> {
        let start_up = !std::mem::replace(&mut self.started, true);
        let mut seen = HashMap::new();
        let mut due = Vec::new();
        for (pid, marked) in found {
            let since = self.first_seen.get(&pid).copied().unwrap_or(now_ns);
            if (start_up && !marked) || now_ns.saturating_sub(since) >= Self::GRACE_NS {
                due.push(pid);
            } else {
                seen.insert(pid, since);
            }
        }
        self.first_seen = seen;
        due
    }
}

fn take<V>(ebpf: &mut Ebpf, name: &str) -> Result<V>
where
    V: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
    V::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

/// Established TCP connections of `pid`: server side when the local port is one it listens on.
fn existing_connections(pid: u32) -> Vec<ExistingConnection> {
    let table = procfs::tcp_sockets(pid);
    let fds = procfs::socket_fds(pid);
    let listening: Vec<u16> = fds
        .iter()
        .filter_map(|(_, inode)| table.get(inode))
        .filter(|s| s.state == procfs::TCP_LISTEN)
        .map(|s| s.local.port())
        .collect();
    fds.iter()
        .filter_map(|&(fd, inode)| {
            let s = table.get(&inode)?;
            (s.state == procfs::TCP_ESTABLISHED).then_some(ExistingConnection {
                fd,
                role: if listening.contains(&s.local.port()) { Role::Server } else { Role::Client },
                local: s.local,
                peer: s.remote,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn proc_is_trusted_at_once_only_at_start_up_for_unmarked_processes() {
        let mut s = Sightings::default();
        // Start-up: 10 runs unmarked (attached now); 11 exec'd since the probes were loaded (its
        // exec record attaches it).
        assert_eq!(s.due(vec![(10, false), (11, true)], 0), [10]);
        // Later, a process found in /proc (unmarked: in the middle of its exec) waits for its exec
        // record, as a marked one does, however often /proc is looked at.
        assert!(s.due(vec![(11, true), (12, false)], 500 * MS).is_empty());
        assert!(s.due(vec![(11, true), (12, false)], 501 * MS).is_empty());
        // Still unattached after the grace period: attached from /proc.
        assert_eq!(s.due(vec![(11, true), (12, false)], 1000 * MS), [11]);
        assert_eq!(s.due(vec![(12, false)], 1500 * MS), [12]);
    }

    #[test]
    fn a_process_gone_from_proc_is_forgotten() {
        let mut s = Sightings::default();
        assert!(s.due(vec![], 0).is_empty());
        assert!(s.due(vec![(20, false)], 100 * MS).is_empty());
        assert!(s.due(vec![], 600 * MS).is_empty());
        // Found again (a new process with that pid): its wait starts over.
        assert!(s.due(vec![(20, false)], 1200 * MS).is_empty());
        assert_eq!(s.due(vec![(20, false)], 2200 * MS), [20]);
    }
}
