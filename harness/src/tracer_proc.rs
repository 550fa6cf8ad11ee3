//! The tracer under test as a child process, as the integration tests and the bench both run it:
//! started with a command line and an environment policy, ready once it logs the attached line of
//! a pid, stopped with a signal, its output and `final stats` read when it has exited.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::collector::tail;
use crate::proc::Proc;
use crate::tracer::{ATTACHED, TracerEnv, final_stats, has_pid_field};

/// How long the tracer may take to log `target attached`.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the tracer may take to flush and exit after SIGINT.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running tracer (or a stand-in program), stdout and stderr collected in the background.
/// Killed (SIGKILL) on drop; when the runner is panicking, its output is printed first.
pub struct TracerProc {
    proc: Proc,
    /// What it was started with, for messages.
    label: Vec<String>,
    started: Instant,
    /// Waited for (or killed): nothing left to show on drop.
    done: bool,
}

impl TracerProc {
    /// A command for `program` with the environment of `env`. Variables the caller sets afterwards
    /// are kept, `TRACER_*` ones too.
    pub fn command(program: impl AsRef<OsStr>, env: TracerEnv) -> Command {
        let mut cmd = Command::new(program);
        env.apply(&mut cmd);
        cmd
    }

    /// Starts `cmd` (stdin empty), `label` naming it in messages.
    pub fn spawn(mut cmd: Command, label: Vec<String>) -> std::io::Result<TracerProc> {
        // A runner may start with SIGINT ignored (a background job of a shell without job
        // control), and an ignored signal stays ignored across exec. The tracer overrides that
        // with its own handler, but a stand-in (a shell script's trap) cannot: give every child
        // the default, as a terminal would.
        // SAFETY: signal(2) is async-signal-safe, and the closure touches nothing else.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                Ok(())
            });
        }
        cmd.stdin(Stdio::null());
        let proc = Proc::start("tracer", &mut cmd)?;
        Ok(TracerProc { proc, label, started: Instant::now(), done: false })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn label(&self) -> &[String] {
        &self.label
    }

    /// Stdout so far, as printed.
    pub fn stdout(&self) -> String {
        self.proc.stdout_raw()
    }

    /// Stderr so far, ANSI escapes removed.
    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    /// Some(status) once it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.proc.try_wait()
    }

    pub fn signal(&self, sig: i32) {
        self.proc.signal(sig);
    }

    /// Waits for a stderr line satisfying `pred`: `Err(Some(status))` when the tracer exited
    /// before logging one, `Err(None)` after `timeout`.
    pub fn wait_stderr_line(
        &mut self,
        pred: &dyn Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, Option<ExitStatus>> {
        self.proc.find_stderr_line(pred, timeout)
    }

    /// Waits for the readiness line of `pid`: `target attached` and a `pid=<pid>` field on one
    /// line. Errors as [`wait_stderr_line`](Self::wait_stderr_line).
    pub fn wait_attached(&mut self, pid: u32, timeout: Duration) -> Result<String, Option<ExitStatus>> {
        self.wait_stderr_line(&|l| l.contains(ATTACHED) && has_pid_field(l, pid), timeout)
    }

    /// Sends `sig` unless it has exited, then waits like [`wait_exit`](Self::wait_exit).
    pub fn stop(&mut self, sig: i32, timeout: Duration) -> Option<ExitStatus> {
        if self.try_wait().is_none() {
            self.signal(sig);
        }
        self.wait_exit(timeout)
    }

    /// Waits at most `timeout` for it to exit, its output read to the end; None when it has not.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = self.proc.wait_timeout(timeout);
        self.done |= status.is_some();
        status
    }

    pub fn kill(&mut self) {
        self.proc.kill();
        self.done = true;
    }

    /// The numbers of its last `final stats` line; None without one.
    pub fn final_stats(&self) -> Option<BTreeMap<String, u64>> {
        final_stats(&self.stderr())
    }

    /// The last non-empty line of stderr, for one-line errors.
    pub fn last_words(&self) -> String {
        self.proc.last_words()
    }

    /// Everything it said, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "tracer {:?} (pid {}, running for {:?})\n--- tracer stderr ---\n{}\n--- tracer stdout ---\n{}\n---",
            self.label,
            self.pid(),
            self.started.elapsed(),
            tail(&self.stderr(), 12_000),
            tail(&self.stdout(), 6_000)
        )
    }
}

impl Drop for TracerProc {
    fn drop(&mut self) {
        if !self.done && std::thread::panicking() {
            eprintln!("[harness] test failed while the tracer was running:\n{}", self.describe());
        }
    }
}
