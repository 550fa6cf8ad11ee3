//! The `tracer` binary as a child process: the harness's [`TracerProc`] with what the tests add
//! (panics with all output, `--output json` parsing, the syscall-hook check).

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

pub use harness::{ATTACH_TIMEOUT, STOP_TIMEOUT, has_pid_field};
use harness::{TempDir, TracerEnv, TracerProc, require_tool, tail};

use crate::host::tracer_bin;
use crate::span::{ReceivedSpan, dump};

/// A running tracer. Killed (SIGKILL) on drop; when the test is panicking its output is printed.
pub struct Tracer {
    core: TracerProc,
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
    /// A `Command` for the tracer binary with the hermetic environment of [`TracerEnv::Hermetic`]:
    /// every inherited `TRACER_*` variable except `TRACER_LOG` removed, `TRACER_LOG=info` when
    /// unset, `NO_COLOR=1`, `RUST_BACKTRACE=1`, and `TRACER_PROBE_MODE` and `TRACER_GO_TLS_PROBES`
    /// from `ITEST_PROBE_MODE` and `ITEST_GO_TLS_PROBES` when they are set.
    pub fn command<S: AsRef<OsStr>>(args: &[S]) -> Command {
        let mut cmd = TracerProc::command(tracer_bin(), TracerEnv::Hermetic);
        cmd.args(args);
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
        let mut cmd = TracerProc::command(program, TracerEnv::Hermetic);
        cmd.args(args);
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
        let mut cmd = TracerProc::command(setpriv, TracerEnv::Hermetic);
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"]);
        cmd.arg(&bin).args(args);
        cmd.current_dir(dir.path());
        let mut v = vec!["<setpriv nobody>".to_owned()];
        v.extend(args_vec(args));
        Self::spawn(cmd, v, Some(dir))
    }

    fn spawn(cmd: Command, args: Vec<String>, keep: Option<TempDir>) -> Tracer {
        let program = cmd.get_program().to_owned();
        let core = TracerProc::spawn(cmd, args.clone())
            .unwrap_or_else(|e| panic!("cannot spawn tracer {program:?} {args:?}: {e}"));
        Tracer { core, _keep: keep }
    }

    /// Runs the tracer to completion (it must exit by itself within `timeout`).
    pub fn run<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> TracerOutput {
        Self::start(args).wait_exit(timeout)
    }

    pub fn pid(&self) -> u32 {
        self.core.pid()
    }

    pub fn args(&self) -> &[String] {
        self.core.label()
    }

    /// Stderr so far (ANSI escapes removed).
    pub fn stderr(&self) -> String {
        self.core.stderr()
    }

    pub fn stdout(&self) -> String {
        self.core.stdout()
    }

    /// Whether the process has exited (reaps it if so).
    pub fn has_exited(&mut self) -> Option<ExitStatus> {
        self.core.try_wait()
    }

    /// Waits for a stderr line containing `needle`; panics (with all output) on timeout or exit.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        let n = needle.to_owned();
        self.wait_for_stderr_line(&format!("a line containing {needle:?}"), move |l| l.contains(&n), timeout)
    }

    /// Waits for a stderr line satisfying `pred`; panics (with all output) on timeout or exit.
    pub fn wait_for_stderr_line<F: Fn(&str) -> bool>(&mut self, what: &str, pred: F, timeout: Duration) -> String {
        let got = self.core.wait_stderr_line(&pred, timeout);
        self.logged(what, got, timeout)
    }

    /// The line waited for, or a panic with all output.
    fn logged(&self, what: &str, got: Result<String, Option<ExitStatus>>, timeout: Duration) -> String {
        match got {
            Ok(l) => l,
            Err(Some(st)) => panic!("tracer exited ({st}) before logging {what}\n{}", self.core.describe()),
            Err(None) => panic!("tracer did not log {what} within {timeout:?}\n{}", self.core.describe()),
        }
    }

    /// Waits for the readiness line of `pid`: `target attached` and `pid=<PID>` on one line.
    /// Under `ITEST_PROBE_MODE=syscalls`, also checks that the tracer runs with syscall hooks.
    pub fn wait_attached(&mut self, pid: u32) -> String {
        let got = self.core.wait_attached(pid, ATTACH_TIMEOUT);
        let line = self.logged(&format!("`target attached` with pid={pid}"), got, ATTACH_TIMEOUT);
        if std::env::var("ITEST_PROBE_MODE").as_deref() == Ok("syscalls")
            && !self.args().iter().any(|a| a == "--probe-mode")
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
        parse_json_lines(complete).unwrap_or_else(|e| panic!("{e}\n{}", self.core.describe()))
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
                self.core.describe()
            );
        }
        got
    }

    /// Sends a signal to the tracer.
    pub fn signal(&self, sig: i32) {
        self.core.signal(sig);
    }

    /// SIGINT, then waits for exit (flush); panics if it does not exit within [`STOP_TIMEOUT`].
    pub fn stop(self) -> TracerOutput {
        self.stop_with(libc::SIGINT)
    }

    /// Sends `sig`, then waits for exit like [`stop`](Self::stop).
    pub fn stop_with(mut self, sig: i32) -> TracerOutput {
        let status = self.core.stop(sig, STOP_TIMEOUT);
        self.output(status, STOP_TIMEOUT)
    }

    /// Waits for the tracer to exit by itself; SIGKILLs it and panics after `timeout`.
    pub fn wait_exit(mut self, timeout: Duration) -> TracerOutput {
        let status = self.core.wait_exit(timeout);
        self.output(status, timeout)
    }

    /// What it left behind once exited; when it has not (`status` None), SIGKILL and a panic.
    fn output(&mut self, status: Option<ExitStatus>, timeout: Duration) -> TracerOutput {
        let Some(status) = status else {
            let msg = format!("tracer did not exit within {timeout:?}\n{}", self.core.describe());
            self.core.kill();
            panic!("{msg}");
        };
        TracerOutput { status, stdout: self.stdout(), stderr: self.stderr(), args: self.args().to_vec() }
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
