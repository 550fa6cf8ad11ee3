//! Attaches the Go crypto/tls uprobes to a target, when it is a Go binary that uses crypto/tls.
//!
//! The binary is read through /proc/PID/exe (works across mount namespaces); function addresses
//! come from .gopclntab (release binaries are stripped); the return probes go on every RET
//! instruction (see probes/gotls.rs in tracer-ebpf for why not uretprobes).

use std::{collections::HashMap, num::NonZeroU32, path::PathBuf};

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData},
    programs::{
        UProbe,
        uprobe::{UProbeLinkId, UProbeScope},
    },
};
use tracer_common::{GoKey, GoTlsCall, GoTlsOffsets};

use crate::{
    cli::GoTlsProbesArg,
    gobin::{GoBinError, GoBinary},
    targets::set_tgid_bit,
};

/// The programs, indexed by the constants below.
const PROGRAMS: [&str; 7] = [
    "go_tls_write_enter",
    "go_tls_read_enter",
    "go_tls_write_ret",
    "go_tls_read_ret",
    "go_tls_handshake_enter",
    "go_tls_write_checked",
    "go_tls_read_copy",
];
const WRITE_ENTER: usize = 0;
const READ_ENTER: usize = 1;
const WRITE_RET: usize = 2;
const READ_RET: usize = 3;
const HANDSHAKE: usize = 4;
const WRITE_CHECKED: usize = 5;
const READ_COPY: usize = 6;

/// Where crypto/tls connections start: their first socket I/O names the fd of connections that
/// do not wrap a `*net.TCPConn` directly (see probes/gotls.rs). Once per connection.
const TLS_HANDSHAKES: [&str; 2] = ["crypto/tls.(*Conn).serverHandshake", "crypto/tls.(*Conn).clientHandshake"];

/// Layout the probes rely on, the same in every Go release with the register ABI (1.17 through
/// 1.27 checked): `tls.Conn.conn` is the first field (an interface: itab, then data), the data of a
/// `*net.TCPConn` starts with its `*netFD`, and `netFD.pfd.Sysfd` follows the 16-byte fdMutex.
/// `read_frame` comes from each binary's code.
const OFFSETS: GoTlsOffsets = GoTlsOffsets { conn_iface_data: 8, netfd_sysfd: 16, read_frame: 0 };

pub struct GoTls {
    offsets: BpfHashMap<MapData, u32, GoTlsOffsets>,
    /// Processes with Go TLS probes: only their socket I/O is matched with TLS calls in progress.
    go_targets: Array<MapData, u64>,
    /// Per-process entries to forget when a process goes (values are opaque here).
    conn_fds: BpfHashMap<MapData, GoKey, i32>,
    calls: BpfHashMap<MapData, GoKey, GoTlsCall>,
    links: HashMap<u32, Vec<(usize, UProbeLinkId)>>,
    /// `--go-tls-probes`: whether the one-probe points, and Read's RETs alone, may be used.
    points: GoTlsProbesArg,
}

/// What attaching found out, for the log.
pub enum Attached {
    Probes { go_version: String, read: &'static str, write: &'static str, rets: usize },
    NotGo,
    NoTls(String),
}

impl GoTls {
    pub fn load(ebpf: &mut Ebpf, points: GoTlsProbesArg) -> Result<Self> {
        for name in PROGRAMS {
            let prog: &mut UProbe =
                ebpf.program_mut(name).ok_or_else(|| anyhow!("eBPF program {name} missing"))?.try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
        }
        let mut take = |name: &str| ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing"));
        let offsets = BpfHashMap::try_from(take("GO_TLS_OFFSETS")?)?;
        let go_targets = Array::try_from(take("GO_TLS_TARGETS")?)?;
        let conn_fds = BpfHashMap::try_from(take("GO_CONN_FDS")?)?;
        let calls = BpfHashMap::try_from(take("GO_TLS_CALLS")?)?;
        Ok(GoTls { offsets, go_targets, conn_fds, calls, links: HashMap::new(), points })
    }

    pub fn attach(&mut self, ebpf: &mut Ebpf, pid: u32) -> Result<Attached> {
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let bin = match GoBinary::open(&exe) {
            Ok(b) => b,
            Err(GoBinError::NotGo | GoBinError::NotElf) => return Ok(Attached::NotGo),
            Err(e) => return Err(anyhow!("reading {}: {e}", exe.display())),
        };
        let points = match bin.tls_probe_points() {
            Ok(p) => p,
            Err(GoBinError::FunctionNotFound(f)) => return Ok(Attached::NoTls(f)),
            Err(e) => return Err(anyhow!("{e}")),
        };
        let go_version = points.go_version.clone().unwrap_or_else(|| "unknown Go version".into());
        if !points.register_abi {
            return Err(anyhow!("{go_version} passes arguments on the stack (before Go 1.17): not supported"));
        }
        let one_probe = self.points == GoTlsProbesArg::Auto;
        let read_copy = points.read_copy.filter(|_| one_probe);
        let offsets = GoTlsOffsets { read_frame: read_copy.map_or(0, |c| c.frame), ..OFFSETS };
        self.offsets.insert(pid, offsets, 0).context("storing Go struct offsets")?;
        set_tgid_bit(&mut self.go_targets, pid, true)?;
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or_else(|| anyhow!("pid 0"))?);
        // Each probe hit is a trap, so as few as possible run per call, on instructions the kernel
        // emulates in one trap (a branch, a call) rather than single-steps in two (a RET, most
        // others), which costs many times more (docs/benchmarks.md). Write: on its stack check's branch,
        // where the probe can tell the run that goes on from the one that restarts for a larger
        // stack, and reports the call whole; otherwise at its entry (run again when the stack
        // grows) and RETs. Read (twice per HTTP/1 request in net/http: the second waits for the
        // next request): on its copy of the plaintext; otherwise at its RETs, plus its entry when
        // its arguments are not kept in their spill slots.
        let (write, mut points_by_prog) = match points.write_check.filter(|_| one_probe) {
            Some(check) => ("stack check branch", vec![(WRITE_CHECKED, check)]),
            None => {
                let mut v = vec![(WRITE_ENTER, points.write.func.file_offset)];
                v.extend(points.write.ret_offsets.iter().map(|&o| (WRITE_RET, o)));
                ("entry and RETs", v)
            }
        };
        let read = match read_copy {
            Some(copy) => {
                points_by_prog.push((READ_COPY, copy.file_offset));
                "plaintext copy"
            }
            None if points.read_spills_args && self.points != GoTlsProbesArg::EntryAndRets => {
                points_by_prog.extend(points.read.ret_offsets.iter().map(|&o| (READ_RET, o)));
                "RETs"
            }
            None => {
                points_by_prog.push((READ_ENTER, points.read.func.file_offset));
                points_by_prog.extend(points.read.ret_offsets.iter().map(|&o| (READ_RET, o)));
                "entry and RETs"
            }
        };
        // Optional: without them the fd is still learned from Read/Write themselves. Once per
        // connection; repeated runs when the stack grows are harmless.
        let handshakes = TLS_HANDSHAKES.iter().filter_map(|name| bin.function(name));
        points_by_prog.extend(handshakes.map(|f| {
            let check = bin.stack_check_branch(&f).filter(|_| one_probe);
            (HANDSHAKE, check.unwrap_or(f.file_offset))
        }));
        let rets = points_by_prog.iter().filter(|(prog, _)| matches!(*prog, WRITE_RET | READ_RET)).count();
        rets_first(&mut points_by_prog);
        let mut links = Vec::with_capacity(points_by_prog.len());
        for (prog_idx, offset) in points_by_prog {
            let prog: &mut UProbe = ebpf.program_mut(PROGRAMS[prog_idx]).expect("loaded above").try_into()?;
            match prog.attach(offset, &exe, scope) {
                Ok(link) => links.push((prog_idx, link)),
                Err(e) => {
                    self.detach_links(ebpf, links);
                    let _ = self.offsets.remove(&pid);
                    let _ = set_tgid_bit(&mut self.go_targets, pid, false);
                    let e = anyhow::Error::new(e)
                        .context(format!("attaching a uprobe at {offset:#x} of {}", exe.display()));
                    return Err(e);
                }
            }
        }
        self.links.insert(pid, links);
        Ok(Attached::Probes { go_version, read, write, rets })
    }

    pub fn detach(&mut self, ebpf: &mut Ebpf, pid: u32) {
        if let Some(links) = self.links.remove(&pid) {
            self.detach_links(ebpf, links);
        }
        let _ = self.offsets.remove(&pid);
        let _ = set_tgid_bit(&mut self.go_targets, pid, false);
        // The process is gone or re-exec'd: its connections and calls in progress with it.
        let stale: Vec<GoKey> =
            self.conn_fds.keys().filter_map(Result::ok).filter(|k| k.tgid == u64::from(pid)).collect();
        for k in stale {
            let _ = self.conn_fds.remove(&k);
        }
        let stale: Vec<GoKey> = self.calls.keys().filter_map(Result::ok).filter(|k| k.tgid == u64::from(pid)).collect();
        for k in stale {
            let _ = self.calls.remove(&k);
        }
    }

    fn detach_links(&self, ebpf: &mut Ebpf, links: Vec<(usize, UProbeLinkId)>) {
        for (prog_idx, link) in links {
            if let Some(Ok(prog)) = ebpf.program_mut(PROGRAMS[prog_idx]).map(<&mut UProbe>::try_from) {
                let _ = prog.detach(link);
            }
        }
    }
}

/// Orders the probe points so that every RET probe is in place before any entry probe. The points
/// are attached one by one (a perf event each) while the target runs. An entry seen whose RET is
/// not probed yet leaves its call in `GO_TLS_CALLS`, and
/// such a stale Write entry made the next Write of its goroutine (same buffer, same connection)
/// look like the same call run again after a stack growth: it was not reported. An HTTP/2
/// response lost its HEADERS that way right after attach. With the RETs first, a call that began
/// before its entry probe ends at a RET that finds no entry, as a call that began before attach.
fn rets_first(points: &mut [(usize, u64)]) {
    points.sort_by_key(|&(prog, _)| !matches!(prog, WRITE_RET | READ_RET));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ret_probes_are_attached_before_entries() {
        let mut points =
            vec![(WRITE_ENTER, 1), (WRITE_RET, 2), (WRITE_RET, 3), (READ_ENTER, 4), (READ_RET, 5), (HANDSHAKE, 6)];
        rets_first(&mut points);
        assert_eq!(
            points,
            [(WRITE_RET, 2), (WRITE_RET, 3), (READ_RET, 5), (WRITE_ENTER, 1), (READ_ENTER, 4), (HANDSHAKE, 6)]
        );
    }
}
