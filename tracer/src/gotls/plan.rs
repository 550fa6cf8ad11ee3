//! What a Go binary's analysis finds, once per file: where its Go TLS probes go, or why it has
//! none. Reading and analysing a binary such as kubectl (tens of megabytes) takes longer than a
//! short-lived client runs, so the result is kept by the file's identity for the next process
//! that runs the same file.

use std::{collections::HashMap, os::unix::fs::MetadataExt, path::Path, sync::Arc};

use anyhow::{Result, anyhow};
use tracer_common::GoTlsOffsets;

use super::{
    HANDSHAKE, OFFSETS, READ_COPY, READ_ENTER, READ_RET, TLS_HANDSHAKES, WRITE_CHECKED, WRITE_ENTER, WRITE_RET,
    goroutines::{self, GoroutineSites},
};
use crate::{
    cli::GoTlsProbesArg,
    gobin::{GoBinError, GoBinary},
};

/// A file's identity as `stat` gives it: the same path rewritten in place (a new mtime or size)
/// or replaced (a new inode) is another file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileId {
    /// The identity of the file at `path` (e.g. `/proc/PID/exe`, followed to the executable).
    pub fn of(path: &Path) -> Result<Self> {
        let m = std::fs::metadata(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(Self::from_metadata(&m))
    }

    pub fn from_metadata(m: &std::fs::Metadata) -> Self {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
}

/// Where the probes of one executable go.
#[derive(Debug)]
pub struct ProbePlan {
    pub go_version: String,
    /// How Read and Write are probed, for the log.
    pub read: &'static str,
    pub write: &'static str,
    /// RET probes among `points`.
    pub rets: usize,
    /// (program index, file offset), every RET probe before any entry probe (see [`rets_first`]).
    pub points: Vec<(usize, u64)>,
    pub offsets: GoTlsOffsets,
    /// The goroutine probes (spawns, grpc-go and net/http links), attached with the TLS ones.
    pub goroutines: GoroutineSites,
    /// Why the binary has no goroutine probes at all, when its code could not be read.
    pub goroutines_error: Option<String>,
}

/// What the analysis of a file found. Errors that depend on the moment (the process is gone,
/// the file cannot be read now) are not analyses and are not kept.
#[derive(Clone, Debug)]
pub enum Analysis {
    Probes(Arc<ProbePlan>),
    NotGo,
    /// A Go binary without this crypto/tls function.
    NoTls(String),
    /// A Go binary the probes cannot serve (stack ABI, code it cannot decode...).
    Unsupported(String),
}

/// Reads and analyses the executable at `exe`.
pub fn analyse(exe: &Path, points: GoTlsProbesArg) -> Result<Analysis> {
    let bin = match GoBinary::open(exe) {
        Ok(b) => b,
        Err(GoBinError::NotGo | GoBinError::NotElf) => return Ok(Analysis::NotGo),
        Err(e @ GoBinError::Io { .. }) => return Err(anyhow!("reading {}: {e}", exe.display())),
        Err(e) => return Ok(Analysis::Unsupported(format!("reading {}: {e}", exe.display()))),
    };
    Ok(match plan(&bin, points) {
        Ok(plan) => Analysis::Probes(Arc::new(plan)),
        Err(GoBinError::FunctionNotFound(f)) => Analysis::NoTls(f),
        Err(e) => Analysis::Unsupported(e.to_string()),
    })
}

fn plan(bin: &GoBinary, policy: GoTlsProbesArg) -> Result<ProbePlan, GoBinError> {
    let points = bin.tls_probe_points()?;
    let go_version = points.go_version.clone().unwrap_or_else(|| "unknown Go version".into());
    if !points.register_abi {
        return Err(GoBinError::Unsupported(format!(
            "{go_version} passes arguments on the stack (before Go 1.17): not supported"
        )));
    }
    let one_probe = policy == GoTlsProbesArg::Auto;
    let read_copy = points.read_copy.filter(|_| one_probe);
    let offsets = GoTlsOffsets { read_frame: read_copy.map_or(0, |c| c.frame), ..OFFSETS };
    // Each probe hit is a trap, so as few as possible run per call, on instructions the kernel
    // emulates in one trap (a branch, a call) rather than single-steps in two (a RET, most
    // others), which costs many times more (docs/benchmarks.md). Write: on its stack check's branch,
    // where the probe can tell the run that goes on from the one that restarts for a larger
    // stack, and reports the call whole; otherwise at its entry (run again when the stack
    // grows) and RETs. Read (twice per HTTP/1 request in net/http: the second waits for the
    // next request): on its copy of the plaintext; otherwise at its RETs, plus its entry when
    // its arguments are not kept in their spill slots.
    let (write, mut by_prog) = match points.write_check.filter(|_| one_probe) {
        Some(check) => ("stack check branch", vec![(WRITE_CHECKED, check)]),
        None => {
            let mut v = vec![(WRITE_ENTER, points.write.func.file_offset)];
            v.extend(points.write.ret_offsets.iter().map(|&o| (WRITE_RET, o)));
            ("entry and RETs", v)
        }
    };
    let read = match read_copy {
        Some(copy) => {
            by_prog.push((READ_COPY, copy.file_offset));
            "plaintext copy"
        }
        None if points.read_spills_args && policy != GoTlsProbesArg::EntryAndRets => {
            by_prog.extend(points.read.ret_offsets.iter().map(|&o| (READ_RET, o)));
            "RETs"
        }
        None => {
            by_prog.push((READ_ENTER, points.read.func.file_offset));
            by_prog.extend(points.read.ret_offsets.iter().map(|&o| (READ_RET, o)));
            "entry and RETs"
        }
    };
    // Optional: without them the fd is still learned from Read/Write themselves. Once per
    // connection; repeated runs when the stack grows are harmless.
    let handshakes = TLS_HANDSHAKES.iter().filter_map(|name| bin.function(name));
    by_prog.extend(handshakes.map(|f| {
        let check = bin.stack_check_branch(&f).filter(|_| one_probe);
        (HANDSHAKE, check.unwrap_or(f.file_offset))
    }));
    let rets = by_prog.iter().filter(|(prog, _)| matches!(*prog, WRITE_RET | READ_RET)).count();
    rets_first(&mut by_prog);
    let (goroutines, goroutines_error) = match goroutines::sites(bin) {
        Ok(sites) => (sites, None),
        Err(e) => (GoroutineSites::default(), Some(e.to_string())),
    };
    Ok(ProbePlan { go_version, read, write, rets, points: by_prog, offsets, goroutines, goroutines_error })
}

/// Orders the probe points so that every RET probe is in place before any entry probe. The points
/// are attached one by one (a perf event each) while processes of the file run. An entry seen
/// whose RET is not probed yet leaves its call in `GO_TLS_CALLS`, and
/// such a stale Write entry made the next Write of its goroutine (same buffer, same connection)
/// look like the same call run again after a stack growth: it was not reported. An HTTP/2
/// response lost its HEADERS that way right after attach. With the RETs first, a call that began
/// before its entry probe ends at a RET that finds no entry, as a call that began before attach.
pub fn rets_first(points: &mut [(usize, u64)]) {
    points.sort_by_key(|&(prog, _)| !matches!(prog, WRITE_RET | READ_RET));
}

/// Analyses by file identity, the least recently used dropped beyond `capacity`.
pub struct AnalysisCache {
    entries: HashMap<FileId, (Analysis, u64)>,
    capacity: usize,
    /// Use counter: an entry's last use, for eviction.
    clock: u64,
    pub hits: u64,
    pub misses: u64,
}

impl AnalysisCache {
    pub fn new(capacity: usize) -> Self {
        AnalysisCache { entries: HashMap::new(), capacity: capacity.max(1), clock: 0, hits: 0, misses: 0 }
    }

    pub fn get(&mut self, id: &FileId) -> Option<Analysis> {
        self.clock += 1;
        match self.entries.get_mut(id) {
            Some((analysis, used)) => {
                *used = self.clock;
                self.hits += 1;
                Some(analysis.clone())
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    pub fn insert(&mut self, id: FileId, analysis: Analysis) {
        self.clock += 1;
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&id) {
            let oldest = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(id, (analysis, self.clock));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ino: u64) -> FileId {
        FileId { dev: 2049, ino, size: 50 << 20, mtime_ns: 1_700_000_000_000_000_000 }
    }

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

    #[test]
    fn cache_counts_hits_and_misses_and_drops_the_least_recently_used() {
        let mut cache = AnalysisCache::new(2);
        assert!(cache.get(&id(1)).is_none());
        cache.insert(id(1), Analysis::NotGo);
        cache.insert(id(2), Analysis::NoTls("crypto/tls.(*Conn).Read".into()));
        assert!(matches!(cache.get(&id(1)), Some(Analysis::NotGo)));
        // Full: the third file takes the place of the one used longest ago (2, since 1 was read).
        cache.insert(id(3), Analysis::NotGo);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&id(2)).is_none());
        assert!(cache.get(&id(1)).is_some());
        assert!(cache.get(&id(3)).is_some());
        assert_eq!((cache.hits, cache.misses), (3, 2));
    }

    #[test]
    fn a_file_rewritten_in_place_is_another_file() {
        let mut cache = AnalysisCache::new(8);
        cache.insert(id(1), Analysis::NotGo);
        let rewritten = FileId { mtime_ns: id(1).mtime_ns + 1, ..id(1) };
        assert!(cache.get(&rewritten).is_none());
        let resized = FileId { size: id(1).size + 4096, ..id(1) };
        assert!(cache.get(&resized).is_none());
        let other_device = FileId { dev: 2050, ..id(1) };
        assert!(cache.get(&other_device).is_none());
    }

    #[test]
    fn file_identity_of_this_test_binary_is_stable_and_follows_proc_exe() {
        let me = std::process::id();
        let via_proc = FileId::of(Path::new(&format!("/proc/{me}/exe"))).unwrap();
        let direct = FileId::of(&std::env::current_exe().unwrap()).unwrap();
        assert_eq!(via_proc, direct);
        assert!(FileId::of(Path::new("/proc/0/exe")).is_err());
    }

    #[test]
    fn a_non_go_file_is_analysed_as_not_go() {
        // The shell is a C program: no pclntab, no Go build info.
        let sh = Path::new("/bin/sh");
        assert!(matches!(analyse(sh, GoTlsProbesArg::Auto).unwrap(), Analysis::NotGo));
        assert!(analyse(Path::new("/nonexistent/binary"), GoTlsProbesArg::Auto).is_err());
    }
}
