//! A child process with its output collected in the background.

use std::borrow::BorrowMut;
use std::io::Write as _;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::collector::{Collector, drain_pipes, tail};

/// Has the kernel SIGKILL the child when the thread that starts it dies (PR_SET_PDEATHSIG): for a
/// long run (the bench) whose servers must not outlive it. Not for tests, whose threads end.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe, and the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

/// A child process with stdout/stderr collected in the background and stdin kept open.
/// Killed (SIGKILL) on drop.
pub struct Proc {
    name: String,
    child: Option<Child>,
    pid: u32,
    stdin: Option<ChildStdin>,
    stdout: Arc<Collector>,
    stderr: Arc<Collector>,
    _readers: Vec<JoinHandle<()>>,
}

impl Proc {
    /// Starts `cmd`; panics when it cannot.
    pub fn spawn(name: &str, mut cmd: impl BorrowMut<Command>) -> Proc {
        let cmd = cmd.borrow_mut();
        Self::try_spawn(name, &mut *cmd)
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()))
    }

    /// Starts `cmd` with piped stdin, stdout and stderr (python unbuffered).
    pub fn try_spawn(name: &str, cmd: &mut Command) -> std::io::Result<Proc> {
        cmd.stdin(Stdio::piped());
        cmd.env("PYTHONUNBUFFERED", "1").env("PYTHONDONTWRITEBYTECODE", "1");
        Self::start(name, cmd)
    }

    /// Starts `cmd` with stdout and stderr piped, and stdin as the caller set it.
    pub(crate) fn start(name: &str, cmd: &mut Command) -> std::io::Result<Proc> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let (stdout, h1) = Collector::spawn(child.stdout.take().unwrap(), &format!("{name}-stdout"));
        let (stderr, h2) = Collector::spawn(child.stderr.take().unwrap(), &format!("{name}-stderr"));
        Ok(Proc { name: name.to_owned(), child: Some(child), pid, stdin, stdout, stderr, _readers: vec![h1, h2] })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Stdout as it came (invalid UTF-8 replaced), ANSI escapes kept.
    pub fn stdout_raw(&self) -> String {
        String::from_utf8_lossy(&self.stdout.raw()).into_owned()
    }

    pub fn describe(&self) -> String {
        format!(
            "{} (pid {})\n--- stdout ---\n{}\n--- stderr ---\n{}\n---",
            self.name,
            self.pid,
            tail(&self.stdout(), 4000),
            tail(&self.stderr(), 4000)
        )
    }

    /// Some(status) once the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits at most `timeout` for the process to exit (without panicking).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                drain_pipes(&self.stdout, &self.stderr);
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` unless the process has been reaped.
    pub fn signal(&self, sig: i32) {
        if self.child.is_some() {
            // SAFETY: plain kill(2) on our own child's pid (not reaped yet, so not reused).
            unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        }
    }

    /// The last non-empty line of stderr, with the name and pid: for one-line errors.
    pub fn last_words(&self) -> String {
        let err = self.stderr();
        let line = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        let line: String = line.chars().take(300).collect();
        format!("{} (pid {}): {}", self.name, self.pid, if line.is_empty() { "no output" } else { &line })
    }

    /// Panics (with output) when the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(st) = self.try_wait() {
            panic!("{} exited unexpectedly ({st})\n{}", self.name, self.describe());
        }
    }

    /// Waits for a stdout line satisfying `pred`; panics on timeout or exit.
    pub fn wait_stdout_line<F: Fn(&str) -> bool>(&mut self, what: &str, pred: F, timeout: Duration) -> String {
        let out = self.stdout.clone();
        let mut child = self.child.as_mut();
        let mut stop = || child.as_mut().map(|c| matches!(c.try_wait(), Ok(Some(_)))).unwrap_or(true);
        let got = out.wait_line(&pred, timeout, &mut stop);
        match got {
            Some(l) => l,
            None => panic!("{}: no stdout line {what} within {timeout:?}\n{}", self.name, self.describe()),
        }
    }

    /// Waits for a stderr line satisfying `pred`: `Err(Some(status))` when the process exited
    /// before logging one, `Err(None)` after `timeout`.
    pub fn find_stderr_line(
        &mut self,
        pred: &dyn Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, Option<ExitStatus>> {
        let err = self.stderr.clone();
        let mut exited = None;
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
        let got = err.wait_line(pred, timeout, &mut stop);
        got.ok_or(exited)
    }

    pub fn send_line(&mut self, line: &str) {
        let name = self.name.clone();
        let stdin = self.stdin.as_mut().unwrap_or_else(|| panic!("{name}: stdin already closed"));
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("{name}: write to stdin: {e}"));
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for exit (its last lines read before anyone looks); panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait_timeout(timeout) {
            Some(st) => st,
            None => panic!("{} did not exit within {timeout:?}\n{}", self.name, self.describe()),
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
