//! Attaches the Go crypto/tls uprobes to a target's executable, when it is a Go binary that uses
//! crypto/tls.
//!
//! The binary is read through /proc/PID/exe (works across mount namespaces); function addresses
//! come from .gopclntab (release binaries are stripped); the return probes go on every RET
//! instruction (see probes/gotls.rs in tracer-ebpf for why not uretprobes).
//!
//! The probes are attached to the file, not to one process: the kernel keys uprobes by inode, so
//! every process running that file hits them from its first instruction, and the programs filter
//! on the target bitmap. A file is analysed once ([`plan::AnalysisCache`]); its probes stay while a
//! target runs it and for an idle period after ([`files::AttachedFiles`]). The executables a
//! `--comm` target would run get theirs at start-up, ahead of any exec ([`ahead`]), kept while
//! the agent runs.

mod ahead;
mod files;
mod goroutines;
mod plan;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};
use tracer_common::{GoKey, GoTlsCall, GoTlsOffsets, MAX_GO_TLS_FILES};

pub use self::plan::ProbePlan;
use self::{
    files::AttachedFiles,
    plan::{Analysis, AnalysisCache, FileId},
};
use crate::{cli::GoTlsProbesArg, clock::Clock};

/// The programs, indexed by the constants below.
const PROGRAMS: [&str; 14] = [
    "go_tls_write_enter",
    "go_tls_read_enter",
    "go_tls_write_ret",
    "go_tls_read_ret",
    "go_tls_handshake_enter",
    "go_tls_write_checked",
    "go_tls_read_copy",
    "go_newproc1_enter",
    "go_newproc1_ret",
    "go_grpc_execute_and_put",
    "go_grpc_header_handler",
    "go_http1_round_trip",
    "go_http1_request_write",
    "go_h2_run_handler",
];
const WRITE_ENTER: usize = 0;
const READ_ENTER: usize = 1;
const WRITE_RET: usize = 2;
const READ_RET: usize = 3;
const HANDSHAKE: usize = 4;
const WRITE_CHECKED: usize = 5;
const READ_COPY: usize = 6;
const GO_SPAWN_ENTER: usize = 7;
const GO_SPAWN_RET: usize = 8;
const GO_GRPC_PUT: usize = 9;
const GO_GRPC_HEADER: usize = 10;
const GO_HTTP1_ROUND_TRIP: usize = 11;
const GO_HTTP1_WRITE: usize = 12;
const GO_H2_HANDLER: usize = 13;

/// Where crypto/tls connections start: their first socket I/O names the fd of connections that
/// do not wrap a `*net.TCPConn` directly (see probes/gotls.rs). Once per connection.
const TLS_HANDSHAKES: [&str; 2] = ["crypto/tls.(*Conn).serverHandshake", "crypto/tls.(*Conn).clientHandshake"];

/// Layout the probes rely on, the same in every Go release with the register ABI (1.17 through
/// 1.27 checked): `tls.Conn.conn` is the first field (an interface: itab, then data), the data of a
/// `*net.TCPConn` starts with its `*netFD`, and `netFD.pfd.Sysfd` follows the 16-byte fdMutex.
/// `read_frame` comes from each binary's code.
const OFFSETS: GoTlsOffsets = GoTlsOffsets { conn_iface_data: 8, netfd_sysfd: 16, read_frame: 0 };

/// Analyses kept (each a list of probe offsets, or a verdict): more executables than a node runs
/// targets of.
const ANALYSES_KEPT: usize = 256;

/// Executables attached ahead of exec (kept while the agent runs) at most: half the files that may
/// have probes, so that as many stay for the binaries found at their first run.
const MAX_PINNED_FILES: usize = MAX_GO_TLS_FILES as usize / 2;

/// The probes of one executable file.
struct FileProbes {
    links: Vec<(usize, UProbeLinkId)>,
    /// The executable itself, open: its content is checked against the identity the probes were
    /// placed for (a file rewritten in place keeps its inode, and the kernel its probes).
    file: std::fs::File,
    plan: Arc<ProbePlan>,
    /// Kernel time (ns) when they were all in place, and what attaching them took: a process
    /// exec'd before that time was not covered from its exec, whoever it finds them attached by.
    ready_ns: u64,
    readiness: Readiness,
}

pub struct GoTls {
    /// Struct offsets per executable, by the cookie of its probes: a process copies its file's at
    /// its first probe hit (tracer-ebpf gotls_conns.rs).
    file_offsets: BpfHashMap<MapData, u64, GoTlsOffsets>,
    /// Per-process entries to forget when a process goes (values are opaque here).
    conn_fds: BpfHashMap<MapData, GoKey, i32>,
    calls: BpfHashMap<MapData, GoKey, GoTlsCall>,
    analyses: AnalysisCache,
    files: AttachedFiles<FileProbes>,
    /// `--go-tls-probes`: whether the one-probe points, and Read's RETs alone, may be used.
    points: GoTlsProbesArg,
    /// Files attached ahead of exec, among `files`.
    pinned: usize,
}

/// How a process's executable came to have its probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Analysed and attached now.
    FirstSight,
    /// Analysed before (its probes had been released): attached now, with no ELF work.
    Cached,
    /// Another target runs the same file: its probes were in place before this process started.
    AlreadyAttached,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::FirstSight => "first-sight",
            Readiness::Cached => "cached",
            Readiness::AlreadyAttached => "already-attached",
        }
    }
}

/// The readiness of a process that found its file's probes attached (at `ready_ns`, as
/// `attached_as`) and exec'd at `exec_ns`: already attached unless they came after its exec.
fn joined_readiness(ready_ns: u64, attached_as: Readiness, exec_ns: Option<u64>) -> Readiness {
    match exec_ns {
        Some(exec_ns) if ready_ns > exec_ns => attached_as,
        _ => Readiness::AlreadyAttached,
    }
}

/// What attaching found out, for the log.
pub enum Attached {
    /// `ready_ns`: the kernel time (ns) from which the probes were all in place.
    Probes {
        plan: Arc<ProbePlan>,
        readiness: Readiness,
        ready_ns: u64,
    },
    NotGo,
    NoTls(String),
}

impl GoTls {
    /// `idle_release`: how long a file's probes stay after the last target running it went.
    pub fn load(ebpf: &mut Ebpf, points: GoTlsProbesArg, idle_release: Duration) -> Result<Self> {
        for name in PROGRAMS {
            let prog: &mut UProbe =
                ebpf.program_mut(name).ok_or_else(|| anyhow!("eBPF program {name} missing"))?.try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
        }
        let mut take = |name: &str| ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing"));
        let file_offsets = BpfHashMap::try_from(take("GO_TLS_FILES")?)?;
        let conn_fds = BpfHashMap::try_from(take("GO_CONN_FDS")?)?;
        let calls = BpfHashMap::try_from(take("GO_TLS_CALLS")?)?;
        let idle_ns = u64::try_from(idle_release.as_nanos()).unwrap_or(u64::MAX);
        Ok(GoTls {
            file_offsets,
            conn_fds,
            calls,
            analyses: AnalysisCache::new(ANALYSES_KEPT),
            files: AttachedFiles::new(MAX_GO_TLS_FILES as usize, idle_ns),
            points,
            pinned: 0,
        })
    }

    /// Makes sure the executable `pid` runs has its probes; `pid` counts as running it. `exec_ns`:
    /// the kernel time of `pid`'s exec, when known: probes found attached after it (e.g. by the
    /// housekeeping's scan of the same process, before its exec record came) were not ready at its
    /// exec, and are reported as what attaching them took.
    pub fn attach(&mut self, ebpf: &mut Ebpf, pid: u32, exec_ns: Option<u64>) -> Result<Attached> {
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let id = FileId::of(&exe)?;
        // Whatever `pid` ran before (its exit record lost, the pid reused) it runs no longer.
        self.files.leave(pid, Clock::ktime_now());
        if let Some(file) = self.files.join(pid, id) {
            let probes = &file.links;
            let readiness = joined_readiness(probes.ready_ns, probes.readiness, exec_ns);
            return Ok(Attached::Probes { plan: probes.plan.clone(), readiness, ready_ns: probes.ready_ns });
        }
        self.attach_file(ebpf, &exe, id, Some(pid))
    }

    /// Attaches the probes of the executables that `--comm` targets would run (see [`ahead`]),
    /// before any runs, and keeps them while the agent runs: the first run of a short-lived client
    /// is then traced from its first instruction.
    pub fn attach_ahead(&mut self, ebpf: &mut Ebpf, comms: &[String]) {
        if comms.is_empty() {
            return;
        }
        let root = ahead::host_root();
        let dirs = ahead::search_dirs(std::env::var_os("PATH").as_deref());
        for comm in comms {
            let (found, over) = ahead::executables_for(&root, &dirs, comm, ahead::MAX_FILES_PER_COMM);
            if over > 0 {
                tracing::warn!(
                    comm = %comm,
                    "{over} more executables named {comm} not attached ahead of exec (at most {}): \
                     they get their probes at their first run",
                    ahead::MAX_FILES_PER_COMM
                );
            }
            for f in found {
                self.attach_one_ahead(ebpf, comm, &f);
            }
        }
    }

    fn attach_one_ahead(&mut self, ebpf: &mut Ebpf, comm: &str, f: &ahead::Found) {
        let path = f.host_path.display();
        if self.files.contains(&f.id) {
            return;
        }
        if self.pinned >= MAX_PINNED_FILES {
            tracing::warn!(
                comm,
                "{path}: not attached ahead of exec, {MAX_PINNED_FILES} executables are already (the most): \
                 it gets its probes at its first run"
            );
            return;
        }
        match self.attach_file(ebpf, &f.path, f.id, None) {
            Ok(Attached::Probes { plan, .. }) => {
                self.pinned += 1;
                tracing::info!(
                    path = %path,
                    comm,
                    go_version = %plan.go_version,
                    ret_probes = plan.rets,
                    "Go TLS probes attached ahead of exec"
                );
            }
            Ok(Attached::NotGo) => tracing::debug!(comm, "{path}: not a Go binary, nothing attached ahead of exec"),
            Ok(Attached::NoTls(what)) => tracing::debug!(comm, "{path}: Go binary without {what}"),
            Err(e) => tracing::warn!(comm, "{path}: Go TLS probes not attached ahead of exec: {e:#}"),
        }
    }

    /// Attaches the probes of the file `exe` (identity `id`), analysed once: for `pid` running it,
    /// or pinned when `None`.
    fn attach_file(&mut self, ebpf: &mut Ebpf, exe: &Path, id: FileId, pid: Option<u32>) -> Result<Attached> {
        let (analysis, readiness) = match self.analyses.get(&id) {
            Some(a) => (a, Readiness::Cached),
            None => {
                let a = plan::analyse(exe, self.points)?;
                tracing::debug!(pid, dev = id.dev, ino = id.ino, "analysed {}", exe.display());
                self.analyses.insert(id, a.clone());
                (a, Readiness::FirstSight)
            }
        };
        let plan = match analysis {
            Analysis::Probes(plan) => plan,
            Analysis::NotGo => return Ok(Attached::NotGo),
            Analysis::NoTls(f) => return Ok(Attached::NoTls(f)),
            Analysis::Unsupported(e) => bail!("{e}"),
        };
        match self.files.make_room() {
            Ok(Some((_, released))) => self.release_file(ebpf, released),
            Ok(None) => {}
            Err(e) => bail!("{} executables have Go TLS probes already (the most at once)", e.max_files),
        }
        let file = std::fs::File::open(exe).with_context(|| format!("opening {}", exe.display()))?;
        let slot = self.files.next_slot();
        self.file_offsets.insert(slot, plan.offsets, 0).context("storing Go struct offsets")?;
        let points =
            plan.points.iter().map(|&(prog, offset)| (prog, offset, slot)).chain(plan.goroutines.cookies(slot));
        match attach_points(ebpf, points, exe) {
            Ok(links) => {
                let ready_ns = Clock::ktime_now();
                let probes = FileProbes { links, file, plan: plan.clone(), ready_ns, readiness };
                match pid {
                    Some(pid) => self.files.insert(id, slot, probes, pid),
                    None => self.files.insert_pinned(id, slot, probes),
                }
                Ok(Attached::Probes { plan, readiness, ready_ns })
            }
            Err(e) => {
                let _ = self.file_offsets.remove(&slot);
                Err(e)
            }
        }
    }

    /// `pid` exited or exec'd: its executable's probes no longer count it, and its connections
    /// and calls in progress are forgotten. (Its Go TLS bit and offsets are cleared by the kernel
    /// at that exit or exec: tracer-ebpf probes/process.rs.)
    pub fn detach(&mut self, pid: u32) {
        self.files.leave(pid, Clock::ktime_now());
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

    /// Releases the probes of executables no target has run for the idle period, and at once those
    /// of an executable rewritten in place: its probes sit at the old content's offsets, which in
    /// the new content may fall inside an instruction. Also forgets targets that are gone without
    /// an exit record (a lost record would keep their file from ever being idle).
    pub fn release_idle(&mut self, ebpf: &mut Ebpf) {
        let now = Clock::ktime_now();
        self.files
            .forget_pids(|pid, id| !FileId::of(Path::new(&format!("/proc/{pid}/exe"))).is_ok_and(|f| f == *id), now);
        for (id, file) in
            self.files.take_if(|id, f| f.links.file.metadata().is_ok_and(|m| FileId::from_metadata(&m) != *id))
        {
            if file.pinned() {
                self.pinned = self.pinned.saturating_sub(1);
            }
            self.release_file(ebpf, file);
            tracing::warn!(
                dev = id.dev,
                ino = id.ino,
                "Go TLS probes released: the executable changed on disk since they were placed; its next run gets new ones"
            );
        }
        for (id, file) in self.files.expired(now) {
            self.release_file(ebpf, file);
            tracing::info!(
                dev = id.dev,
                ino = id.ino,
                "Go TLS probes released: no target ran the executable for a while"
            );
        }
    }

    /// (cache hits, cache misses, executables with probes), for the log.
    pub fn counts(&self) -> (u64, u64, usize) {
        (self.analyses.hits, self.analyses.misses, self.files.len())
    }

    fn release_file(&mut self, ebpf: &mut Ebpf, file: files::AttachedFile<FileProbes>) {
        detach_links(ebpf, file.links.links);
        let _ = self.file_offsets.remove(&file.slot);
    }
}

/// Attaches the probes of `points` (program, file offset, cookie: the file's slot, with a site
/// argument for some) to the file at `exe`, for every process; on an error, none stays.
fn attach_points(
    ebpf: &mut Ebpf,
    points: impl Iterator<Item = (usize, u64, u64)>,
    exe: &Path,
) -> Result<Vec<(usize, UProbeLinkId)>> {
    let mut links = Vec::new();
    for (prog_idx, offset, cookie) in points {
        let prog: &mut UProbe = ebpf.program_mut(PROGRAMS[prog_idx]).expect("loaded at start").try_into()?;
        let point = UProbeAttachPoint { location: UProbeAttachLocation::AbsoluteOffset(offset), cookie: Some(cookie) };
        match prog.attach(point, exe, UProbeScope::AllProcesses) {
            Ok(link) => links.push((prog_idx, link)),
            Err(e) => {
                detach_links(ebpf, links);
                let e =
                    anyhow::Error::new(e).context(format!("attaching a uprobe at {offset:#x} of {}", exe.display()));
                return Err(e);
            }
        }
    }
    Ok(links)
}

fn detach_links(ebpf: &mut Ebpf, links: Vec<(usize, UProbeLinkId)>) {
    for (prog_idx, link) in links {
        if let Some(Ok(prog)) = ebpf.program_mut(PROGRAMS[prog_idx]).map(<&mut UProbe>::try_from) {
            let _ = prog.detach(link);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `binary` field of `Go TLS probes ready`, which the bench and the tests read.
    #[test]
    fn readiness_names_are_the_logged_ones() {
        let names = [Readiness::FirstSight, Readiness::Cached, Readiness::AlreadyAttached].map(Readiness::as_str);
        assert_eq!(names, ["first-sight", "cached", "already-attached"]);
    }

    /// A process the housekeeping's scan attached before its exec record came: its probes came
    /// after its exec, which the exec record must not call already attached.
    #[test]
    fn probes_found_attached_after_the_exec_keep_how_they_were_attached() {
        use Readiness::*;
        assert_eq!(joined_readiness(100, Cached, Some(50)), Cached);
        assert_eq!(joined_readiness(100, FirstSight, Some(99)), FirstSight);
        assert_eq!(joined_readiness(100, Cached, Some(100)), AlreadyAttached);
        assert_eq!(joined_readiness(100, FirstSight, Some(150)), AlreadyAttached);
        assert_eq!(joined_readiness(100, Cached, None), AlreadyAttached, "no exec: found running");
    }
}
