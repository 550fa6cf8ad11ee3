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

use crate::{procfs, span::ProcessInfo, stream::Role};

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

    /// Processes named by `--comm` that are running and not yet attached.
    pub fn unattached_by_comm(&self) -> Vec<u32> {
        if self.comms.is_empty() {
            return Vec::new();
        }
        procfs::pids_with_comm(&self.comms).into_iter().filter(|p| !self.is_active(*p)).collect()
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

    /// Starts tracing `pid`; returns the TCP connections it already had.
    pub fn attach(&mut self, pid: u32) -> Result<Vec<ExistingConnection>> {
        let info = self.process_info(pid)?;
        self.set_bit(pid, true)?;
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
        let info = self.process_info(pid).unwrap_or_else(|_| {
            Arc::new(ProcessInfo {
                service_name: comm.to_owned(),
                pid,
                executable_name: comm.to_owned(),
                host_name: self.host_name.clone(),
            })
        });
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

    /// Stops tracing `pid` and forgets its sockets in the kernel table.
    pub fn detach(&mut self, pid: u32) {
        if self.active.remove(&pid).is_none() {
            return;
        }
        let _ = self.set_bit(pid, false);
        let stale: Vec<u64> = self.sockets.keys().filter_map(Result::ok).filter(|k| (k >> 32) as u32 == pid).collect();
        for k in stale {
            let _ = self.sockets.remove(&k);
        }
        tracing::info!(pid, "target detached pid={pid}");
    }

    fn set_bit(&mut self, pid: u32, on: bool) -> Result<()> {
        set_tgid_bit(&mut self.bitmap, pid, on)
    }
}

/// Sets or clears `pid`'s bit in a kernel TGID bitmap (bit `pid % 64` of word `pid / 64`).
pub fn set_tgid_bit(bitmap: &mut Array<MapData, u64>, pid: u32, on: bool) -> Result<()> {
    let word = pid >> 6;
    let bit = 1u64 << (pid & 63);
    let old = bitmap.get(&word, 0).with_context(|| format!("pid {pid} is beyond pid_max"))?;
    let new = if on { old | bit } else { old & !bit };
    bitmap.set(word, new, 0).context("updating a TGID bitmap")?;
    Ok(())
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
