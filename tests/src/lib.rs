//! Test harness for the tracer's integration tests, on top of the `harness` crate it shares with
//! the bench (processes, temp dirs, ports, the tracer's environment, servers' configurations).
//!
//! - [`OtlpReceiver`]: real OTLP receivers (gRPC via tonic, HTTP/protobuf via a small tokio server)
//!   on 127.0.0.1 that flatten what they get into [`ReceivedSpan`]s.
//! - [`Tracer`]: the `tracer` binary as a child process (stdout/stderr collected in the
//!   background), with readiness waits, SIGINT stop and `--output json` parsing.
//! - [`procs`]: target and peer processes (python HTTP/HTTPS/echo servers, nginx, a python
//!   HTTP client), and a `curl` helper that reports per-transfer timing and local port.
//!
//! Everything listens and connects on 127.0.0.1 only. Missing tools make tests fail with a clear
//! message: nothing is skipped.

pub mod check;
pub mod etcd;
pub mod gotls;
pub mod otlp;
pub mod procs;
pub mod scripts;
pub mod session;
pub mod span;
pub mod tracer;

pub use check::{HttpExpect, K8s, ResourceExpect};
pub use otlp::{HttpExport, OtlpReceiver, Protocol};
pub use procs::{
    ClientResult, CurlRun, EchoServer, Nginx, PythonClient, PythonHttpServer, PythonHttpsServer, RawHttp, RawResponse,
    Transfer, curl, curl_one,
};
pub use session::{Finished, Sink, TraceSession};
pub use span::{ReceivedSpan, dump};
pub use tracer::{Tracer, TracerOutput};

pub use harness::{
    Certs, Collector, Proc, TempDir, closed_port, drain_pipes, find_tool, free_port, is_listening, require_tool,
    strip_ansi, tail, unique_name, wait_for_port,
};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

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
