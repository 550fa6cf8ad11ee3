//! The host the tests run on: the workspace and its binaries, python, this machine's names,
//! root, processes' names and connections in /proc, and file locks between test binaries.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use harness::require_tool;

/// The Cargo workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The tracer binary: `$TRACER_BIN`, else `<workspace>/target/debug/tracer`; panics if neither.
pub fn tracer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TRACER_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "TRACER_BIN={} does not exist or is not a file (build the tracer first: cargo build -p tracer)",
            p.display()
        );
        return p;
    }
    let p = workspace_root().join("target/debug/tracer");
    assert!(
        p.is_file(),
        "tracer binary not found: TRACER_BIN is unset and {} does not exist. \
         Build it (`cargo build -p tracer`) or set TRACER_BIN to its path.",
        p.display()
    );
    p
}

/// The real python3 executable (resolved once, through pyenv-style shims): `$INTEGRATION_PYTHON`
/// or `python3` on PATH.
pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let launcher = std::env::var_os("INTEGRATION_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| require_tool("python3", "python3"));
        let out = std::process::Command::new(&launcher)
            .args(["-c", "import os, sys; print(os.path.realpath(sys.executable))"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", launcher.display()));
        assert!(out.status.success(), "{} failed: {}", launcher.display(), String::from_utf8_lossy(&out.stderr));
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(p.is_file(), "python executable {} not found", p.display());
        p
    })
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(rc, 0, "gethostname failed");
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Base name of `/proc/PID/exe`'s target (OTel `process.executable.name` on Linux).
pub fn exe_name_of(pid: u32) -> String {
    let p = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_else(|e| panic!("readlink /proc/{pid}/exe: {e}"));
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// `/proc/PID/comm` without the newline.
pub fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/comm: {e}"))
        .trim_end_matches('\n')
        .to_owned()
}

pub fn now_unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Panics unless the tests run as root (they load eBPF programs through the tracer).
pub fn require_root() {
    assert!(
        is_root(),
        "these integration tests must run as root (the tracer loads eBPF programs); euid={}",
        // SAFETY: as above.
        unsafe { libc::geteuid() }
    );
}

/// TCP connections of `pid` on 127.0.0.1 as (local port, remote port), from /proc (no probe
/// connection is made).
pub fn tcp_connections_of(pid: u32) -> Vec<(u16, u16)> {
    let mut inodes = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in rd.flatten() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                let t = t.to_string_lossy().into_owned();
                if let Some(i) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    inodes.push(i.to_owned());
                }
            }
        }
    }
    let mut out = Vec::new();
    for f in [format!("/proc/{pid}/net/tcp"), format!("/proc/{pid}/net/tcp6")] {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for l in text.lines().skip(1) {
            let c: Vec<&str> = l.split_whitespace().collect();
            if c.len() < 10 || c[3] != "01" || !inodes.iter().any(|i| i == c[9]) {
                continue;
            }
            let port = |s: &str| s.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if let (Some(l), Some(r)) = (port(c[1]), port(c[2])) {
                out.push((l, r));
            }
        }
    }
    out
}

/// An exclusive `flock` on a file, released on drop (several test binaries may build the same
/// things at once).
pub struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    pub fn take(path: &Path) -> FileLock {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open lock file {}: {e}", path.display()));
        // SAFETY: flock on a valid fd we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        FileLock { _file: file }
    }
}
