//! The `tracer` binary as a child process.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use harness::has_pid_field;
use harness::{ATTACHED, Collector, TempDir, drain_pipes, require_tool, tail, tracer_env};

use crate::host::tracer_bin;
use crate::span::{ReceivedSpan, dump};

/// How long `stop()` waits for the tracer to flush and exit after SIGINT.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long tests wait for `target attached`.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

/// A running tracer. Killed (SIGKILL) on drop; when the test is panicking its output is printed.
pub struct Tracer {
    child: Option<Child>,
    pid: u32,
    args: Vec<String>,
    stdout: Arc<Collector>,
    stderr: Arc<Collector>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    _keep: Option<TempDir>,
}

/// What a finished tracer left behind.
#[derive(Debug)]
pub struct TracerOutput {
    pub status: ExitStatus,
    pub stdout: String,
    /// ANSI escapes removed.
    pub stderr: String,
    pub args: Vec<String>,
}

impl TracerOutput {
    /// Exit code; panics (with the output) when the tracer was killed by a signal.
    pub fn code(&self) -> i32 {
        match self.status.code() {
            Some(c) => c,
            None => {
                panic!("tracer {:?} was killed by signal {:?}\n{}", self.args, self.status.signal(), self.describe())
            }
        }
    }

    /// Stdout/stderr, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "exit status: {}\n--- tracer stderr ---\n{}\n--- tracer stdout ---\n{}\n---",
            self.status,
            tail(&self.stderr, 12_000),
            tail(&self.stdout, 12_000)
        )
    }

    /// Spans of `--output json` (every non-empty stdout line must be one).
    pub fn json_spans(&self) -> Vec<ReceivedSpan> {
        parse_json_lines(&self.stdout).unwrap_or_else(|e| panic!("{e}\n{}", self.describe()))
    }

    /// Asserts the exit code, with the whole output in the message.
    pub fn assert_code(&self, expected: i32) {
        let code = self.code();
        assert_eq!(
            code,
            expected,
            "tracer {:?}: expected exit code {expected}, got {code}\n{}",
            self.args,
            self.describe()
        );
    }

    /// Asserts that the tracer did not panic.
    pub fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked") && !self.stdout.contains("panicked"),
            "tracer {:?} panicked\n{}",
            self.args,
            self.describe()
        );
    }

    /// The `error: ...` lines of stderr.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.starts_with("error: ") || l.starts_with("error:")).collect()
    }

    /// Asserts a clean error exit: the code, no panic, and a stderr line starting with `error: `
    /// that contains every one of `needles` (case-insensitive).
    pub fn assert_error(&self, code: i32, needles: &[&str]) {
        self.assert_no_panic();
        self.assert_code(code);
        let lines = self.error_lines();
        assert!(
            lines.len() == 1,
            "tracer {:?}: expected exactly one stderr line starting with `error: `, got {}\n{}",
            self.args,
            lines.len(),
            self.describe()
        );
        let stderr_lc = self.stderr.to_lowercase();
        for n in needles {
            assert!(
                stderr_lc.contains(&n.to_lowercase()),
                "tracer {:?}: expected the error message to mention {n:?}\n{}",
                self.args,
                self.describe()
            );
        }
    }
}

/// Parses `--output json` stdout.
pub fn parse_json_lines(stdout: &str) -> Result<Vec<ReceivedSpan>, String> {
    let mut spans = Vec::new();
    for (i, line) in stdout.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        spans.push(ReceivedSpan::from_json_line(line).map_err(|e| format!("stdout line {}: {e}", i + 1))?);
    }
    Ok(spans)
}

impl Tracer {
    /// A `Command` for the tracer binary with a hermetic environment: every inherited `TRACER_*`
    /// variable except `TRACER_LOG` removed, `TRACER_LOG=info` when unset, `NO_COLOR=1`,
    /// `RUST_BACKTRACE=1`, and `TRACER_PROBE_MODE` and `TRACER_GO_TLS_PROBES` from `ITEST_PROBE_MODE`
    /// and `ITEST_GO_TLS_PROBES` when they are set.
    pub fn command<S: AsRef<OsStr>>(args: &[S]) -> Command {
        let mut cmd = Command::new(tracer_bin());
        cmd.args(args);
        tracer_env(&mut cmd);
        cmd
    }

    /// Spawns the tracer with `args`.
    pub fn start<S: AsRef<OsStr>>(args: &[S]) -> Tracer {
        Self::spawn(Self::command(args), args_vec(args), None)
    }

    /// Spawns the tracer with `args` and extra environment variables (set after the hermetic
    /// clean-up, so `TRACER_*` ones given here are kept).
    pub fn start_env<S: AsRef<OsStr>>(args: &[S], envs: &[(&str, &str)]) -> Tracer {
        let mut cmd = Self::command(args);
        let mut v = args_vec(args);
        for (k, val) in envs {
            cmd.env(k, val);
            v.push(format!("[{k}={val}]"));
        }
        Self::spawn(cmd, v, None)
    }

    /// Spawns another program as if it were the tracer (same environment and collection); for the
    /// harness's own tests.
    pub fn start_program<S: AsRef<OsStr>>(program: &std::path::Path, args: &[S]) -> Tracer {
        let mut cmd = Command::new(program);
        cmd.args(args);
        tracer_env(&mut cmd);
        Self::spawn(cmd, args_vec(args), None)
    }

    /// Spawns the tracer as user nobody (uid/gid 65534, no groups, no capabilities) through
    /// util-linux `setpriv`. The binary is copied to a world-readable temp dir first so the
    /// unprivileged user can execute it wherever it was built.
    pub fn start_unprivileged<S: AsRef<OsStr>>(args: &[S]) -> Tracer {
        let setpriv = require_tool("setpriv", "util-linux");
        let dir = TempDir::new("nobody");
        let bin = dir.join("tracer");
        std::fs::copy(tracer_bin(), &bin).expect("copy tracer binary");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut cmd = Command::new(setpriv);
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"]);
        cmd.arg(&bin).args(args);
        cmd.current_dir(dir.path());
        tracer_env(&mut cmd);
        let mut v = vec!["<setpriv nobody>".to_owned()];
        v.extend(args_vec(args));
        Self::spawn(cmd, v, Some(dir))
    }

    fn spawn(mut cmd: Command, args: Vec<String>, keep: Option<TempDir>) -> Tracer {
        // A runner may start the tests with SIGINT ignored (a background job of a shell without
        // job control), and an ignored signal stays ignored across exec. The tracer overrides
        // that with its own handler, but a stand-in (a shell script's trap) cannot: give every
        // child the default, as a terminal would.
        // SAFETY: sigaction(2) is async-signal-safe, and the closure touches nothing else.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                Ok(())
            });
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child =
            cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn tracer {:?} {args:?}: {e}", cmd.get_program()));
        let pid = child.id();
        let (stdout, h1) = Collector::spawn(child.stdout.take().unwrap(), "tracer-stdout");
        let (stderr, h2) = Collector::spawn(child.stderr.take().unwrap(), "tracer-stderr");
        Tracer {
            child: Some(child),
            pid,
            args,
            stdout,
            stderr,
            readers: vec![h1, h2],
            started: Instant::now(),
            _keep: keep,
        }
    }

    /// Runs the tracer to completion (it must exit by itself within `timeout`).
    pub fn run<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> TracerOutput {
        Self::start(args).wait_exit(timeout)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Stderr so far (ANSI escapes removed).
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.raw()).into_owned()
    }

    /// Whether the process has exited (reaps it if so).
    pub fn has_exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    fn describe_now(&self) -> String {
        format!(
            "tracer {:?} (pid {}, running for {:?})\n--- tracer stderr ---\n{}\n--- tracer stdout ---\n{}\n---",
            self.args,
            self.pid,
            self.started.elapsed(),
            tail(&self.stderr(), 12_000),
            tail(&self.stdout(), 6_000)
        )
    }

    /// Waits for a stderr line containing `needle`; panics (with all output) on timeout or exit.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        let n = needle.to_owned();
        self.wait_for_stderr_line(&format!("a line containing {needle:?}"), move |l| l.contains(&n), timeout)
    }

    /// Waits for a stderr line satisfying `pred`; panics (with all output) on timeout or exit.
    pub fn wait_for_stderr_line<F: Fn(&str) -> bool>(&mut self, what: &str, pred: F, timeout: Duration) -> String {
        let stderr = self.stderr.clone();
        let mut exited = None;
        let got = {
            let mut child = self.child.as_mut();
            let mut stop = || {
                if let Some(c) = child.as_mut()
                    && let Ok(Some(st)) = c.try_wait()
                {
                    exited = Some(st);
                    return true;
                }
                false
            };
            stderr.wait_line(&pred, timeout, &mut stop)
        };
        match got {
            Some(l) => l,
            None => match exited {
                Some(st) => panic!("tracer exited ({st}) before logging {what}\n{}", self.describe_now()),
                None => panic!("tracer did not log {what} within {timeout:?}\n{}", self.describe_now()),
            },
        }
    }

    /// Waits for the readiness line of `pid`: `target attached` and `pid=<PID>` on one line.
    /// Under `ITEST_PROBE_MODE=syscalls`, also checks that the tracer runs with syscall hooks.
    pub fn wait_attached(&mut self, pid: u32) -> String {
        let what = format!("`target attached` with pid={pid}");
        let line =
            self.wait_for_stderr_line(&what, move |l| l.contains(ATTACHED) && has_pid_field(l, pid), ATTACH_TIMEOUT);
        if std::env::var("ITEST_PROBE_MODE").as_deref() == Ok("syscalls")
            && !self.args.iter().any(|a| a == "--probe-mode")
        {
            let stderr = self.stderr();
            assert!(
                stderr.contains("with sys_enter/sys_exit"),
                "ITEST_PROBE_MODE=syscalls, yet the tracer does not say it uses syscall hooks:\n{stderr}"
            );
        }
        line
    }

    /// Spans printed so far with `--output json`; panics on a line that is not a span.
    pub fn json_spans(&self) -> Vec<ReceivedSpan> {
        let out = self.stdout();
        let complete = match out.rfind('\n') {
            Some(i) => &out[..i],
            None => "",
        };
        parse_json_lines(complete).unwrap_or_else(|e| panic!("{e}\n{}", self.describe_now()))
    }

    /// Waits until at least `count` JSON spans satisfy `pred` (or timeout); returns the matching ones.
    pub fn wait_json_spans<F: Fn(&ReceivedSpan) -> bool>(
        &mut self,
        pred: F,
        count: usize,
        timeout: Duration,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let got: Vec<ReceivedSpan> = self.json_spans().into_iter().filter(|s| pred(s)).collect();
            if got.len() >= count || Instant::now() >= deadline || self.has_exited().is_some() {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Like [`wait_json_spans`](Self::wait_json_spans) but panics when fewer than `count` matched.
    pub fn expect_json_spans<F: Fn(&ReceivedSpan) -> bool>(
        &mut self,
        what: &str,
        pred: F,
        count: usize,
        timeout: Duration,
    ) -> Vec<ReceivedSpan> {
        let got = self.wait_json_spans(pred, count, timeout);
        if got.len() < count {
            panic!(
                "expected at least {count} JSON span(s) {what} within {timeout:?}, got {}.\nAll spans so far:\n{}\n{}",
                got.len(),
                dump(&self.json_spans()),
                self.describe_now()
            );
        }
        got
    }

    /// Sends a signal to the tracer.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid as libc::pid_t, sig);
        }
    }

    /// SIGINT, then waits for exit (flush); panics if it does not exit within [`STOP_TIMEOUT`].
    pub fn stop(self) -> TracerOutput {
        self.stop_with(libc::SIGINT)
    }

    /// Sends `sig`, then waits for exit like [`stop`](Self::stop).
    pub fn stop_with(mut self, sig: i32) -> TracerOutput {
        if self.has_exited().is_none() {
            self.signal(sig);
        }
        self.wait_exit(STOP_TIMEOUT)
    }

    /// Waits for the tracer to exit by itself; SIGKILLs it and panics after `timeout`.
    pub fn wait_exit(mut self, timeout: Duration) -> TracerOutput {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = self.has_exited() {
                break st;
            }
            if Instant::now() >= deadline {
                let msg = format!("tracer did not exit within {timeout:?}\n{}", self.describe_now());
                self.kill();
                panic!("{msg}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        self.join_readers();
        TracerOutput {
            status,
            stdout: String::from_utf8_lossy(&self.stdout.raw()).into_owned(),
            stderr: self.stderr.text(),
            args: self.args.clone(),
        }
    }

    fn join_readers(&mut self) {
        // The pipes close when the tracer exits; don't hang forever if a grandchild kept them.
        if drain_pipes(&self.stdout, &self.stderr) {
            for h in self.readers.drain(..) {
                let _ = h.join();
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if self.child.is_some() {
            if std::thread::panicking() {
                eprintln!("[harness] test failed while the tracer was running:\n{}", self.describe_now());
            }
            self.kill();
        }
    }
}

fn args_vec<S: AsRef<OsStr>>(args: &[S]) -> Vec<String> {
    args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect()
}

/// The tracer binary path (re-export for tests that build their own commands).
pub fn bin() -> PathBuf {
    tracer_bin()
}

/// The eBPF links a process holds, one line each (`link_type`, and the tracepoint, or the file and
/// offset of a uprobe), sorted: which hooks a tracer has attached, as the kernel reports them in
/// `/proc/PID/fdinfo`.
pub fn bpf_links(pid: u32) -> Vec<String> {
    const FIELDS: [&str; 5] = ["link_type:", "tp_name:", "name:", "offset:", "event_type:"];
    let mut links: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter(|info| info.contains("link_type:"))
                .map(|info| {
                    let fields: Vec<&str> = info.lines().filter(|l| FIELDS.iter().any(|f| l.starts_with(f))).collect();
                    fields.join(" ").replace('\t', "")
                })
                .collect()
        })
        .unwrap_or_default();
    links.sort();
    links
}
