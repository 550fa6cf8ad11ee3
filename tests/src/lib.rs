//! Test harness for the tracer's integration tests.
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
    ClientResult, CurlRun, EchoServer, Nginx, Proc, PythonClient, PythonHttpServer, PythonHttpsServer, RawHttp,
    RawResponse, Transfer, curl, curl_one,
};
pub use session::{Finished, Sink, TraceSession};
pub use span::{ReceivedSpan, dump};
pub use tracer::{Tracer, TracerOutput};

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Finds a program on PATH (or at an absolute path); panics with a clear message when missing.
pub fn require_tool(name: &str, package_hint: &str) -> PathBuf {
    if let Some(p) = find_tool(name) {
        return p;
    }
    panic!("required tool `{name}` not found on PATH; install it (Debian package: {package_hint})");
}

pub fn find_tool(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    // Root's sbin directories are not always on a test runner's PATH.
    for extra in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        dirs.push(PathBuf::from(extra));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false))
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

/// A unique name (process-wide counter + pid + time): `prefix` and 9 hex digits, so at most 15
/// bytes (fits a comm) when the prefix has at most 6.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let mix = (u64::from(std::process::id()) << 20) ^ (u64::from(t) >> 4) ^ (n << 40) ^ n;
    format!("{prefix}{:09x}", mix % (1 << 36))
}

/// A temporary directory (mode 0755) removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let path = base.join(format!("itest-{}", unique_name(prefix)));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
                    return TempDir { path };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create temp dir under {}: {e}", base.display()),
            }
        }
        panic!("cannot create a unique temp dir");
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create_dir_all");
        }
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bind :0, read, close).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A port on 127.0.0.1 nobody listens on (for "collector down" tests).
pub fn closed_port() -> u16 {
    for _ in 0..50 {
        let p = free_port();
        if TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], p)), Duration::from_millis(200)).is_err() {
            return p;
        }
    }
    panic!("could not find a closed port");
}

/// Waits until a socket LISTENs on 127.0.0.1:port (or 0.0.0.0 / [::]), read from /proc/net/tcp{,6}
/// so that no probe connection is made (a traced target would see it).
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if is_listening(port) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether some socket of this network namespace listens on TCP `port`.
pub fn is_listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).unwrap_or_default().lines().skip(1).any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
        })
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

/// Removes ANSI escape sequences (CSI ... final byte) from log text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c2 in chars.by_ref() {
                    if ('@'..='~').contains(&c2) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Text collected from a child's pipe by a background thread.
#[derive(Default)]
pub struct Collector {
    inner: Mutex<CollectorInner>,
    cv: Condvar,
}

#[derive(Default)]
struct CollectorInner {
    bytes: Vec<u8>,
    eof: bool,
}

impl Collector {
    /// Starts a thread that reads `r` to EOF into a new collector.
    pub fn spawn<R: Read + Send + 'static>(mut r: R, name: &str) -> (Arc<Collector>, JoinHandle<()>) {
        let c = Arc::new(Collector::default());
        let c2 = c.clone();
        let h = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            c2.inner.lock().unwrap().bytes.extend_from_slice(&buf[..n]);
                            c2.cv.notify_all();
                        }
                    }
                }
                c2.inner.lock().unwrap().eof = true;
                c2.cv.notify_all();
            })
            .expect("spawn reader thread");
        (c, h)
    }

    /// Everything so far, ANSI escapes removed.
    pub fn text(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&self.inner.lock().unwrap().bytes))
    }

    pub fn raw(&self) -> Vec<u8> {
        self.inner.lock().unwrap().bytes.clone()
    }

    pub fn eof(&self) -> bool {
        self.inner.lock().unwrap().eof
    }

    /// Waits (at most `timeout`) until the reader has met EOF.
    pub fn wait_eof(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.inner.lock().unwrap();
        while !g.eof {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self.cv.wait_timeout(g, deadline - now).unwrap().0;
        }
        true
    }

    /// Waits until a complete line satisfies `pred` (returns it), EOF, `stop()` says so, or timeout.
    pub fn wait_line(
        &self,
        pred: &dyn Fn(&str) -> bool,
        timeout: Duration,
        stop: &mut dyn FnMut() -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut g = self.inner.lock().unwrap();
        loop {
            let text = strip_ansi(&String::from_utf8_lossy(&g.bytes));
            let complete = match text.rfind('\n') {
                Some(i) => &text[..i],
                None => "",
            };
            if let Some(l) = complete.lines().find(|l| pred(l)) {
                return Some(l.to_owned());
            }
            if g.eof {
                // a last line without newline
                return text.lines().last().filter(|l| pred(l)).map(str::to_owned);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            drop(g);
            if stop() {
                // the process is gone: give the reader a moment to hit EOF, then look once more
                std::thread::sleep(Duration::from_millis(100));
                let text = self.text();
                return text.lines().find(|l| pred(l)).map(str::to_owned);
            }
            g = self.inner.lock().unwrap();
            g = self.cv.wait_timeout(g, (deadline - now).min(Duration::from_millis(100))).unwrap().0;
        }
    }
}

/// How long an exited process's pipes may take to reach EOF.
const PIPE_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Once a process has exited, its last output may still be in its pipes: waits until the readers
/// of both have met EOF. False when one has not within [`PIPE_DRAIN_TIMEOUT`] (a child it left
/// holds the pipe).
pub fn drain_pipes(stdout: &Collector, stderr: &Collector) -> bool {
    stdout.wait_eof(PIPE_DRAIN_TIMEOUT) && stderr.wait_eof(PIPE_DRAIN_TIMEOUT)
}

/// Last `n` chars of a text, for messages.
pub fn tail(s: &str, n: usize) -> String {
    let count = s.chars().count();
    if count <= n { s.to_owned() } else { format!("…{}", s.chars().skip(count - n).collect::<String>()) }
}
