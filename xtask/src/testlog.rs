//! Runs `cargo test` with its output streamed as usual, and keeps what a failure needs: which
//! tests failed and why. `cargo xtask test` prints that again as its last lines, because a CI log
//! is often read from its tail, below the fuzzers' output.

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
};

use anyhow::{Context, Result, bail};

/// Lines of a failed test's report kept from its panic on (the message and a little context).
const PANIC_LINES: usize = 12;
/// Lines of a failed test's own output kept from just before its panic (the tracer's last logs).
const OUTPUT_TAIL_LINES: usize = 8;

/// One failed test, as `cargo test` reported it.
#[derive(Default)]
pub struct Failure {
    pub binary: String,
    pub name: String,
    pub report: Vec<String>,
}

/// Runs `cmd`, passing its stdout and stderr through, and returns the failures it reported.
/// A run that fails without a failed test (a build error, a crash) is an error of its own.
pub fn run(cmd: &mut Command, what: &str) -> Result<Vec<Failure>> {
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("cannot run {cmd:?}"))?;
    let state = Arc::new(Mutex::new(Parser::default()));
    let out = pass_through(child.stdout.take().expect("piped"), std::io::stdout(), state.clone());
    let err = pass_through(child.stderr.take().expect("piped"), std::io::stderr(), state.clone());
    let _ = out.join();
    let _ = err.join();
    let st = child.wait().context("waiting for cargo test")?;
    let failures = std::mem::take(&mut state.lock().expect("no panics while locked").failures);
    if !st.success() && failures.is_empty() {
        bail!("{what} failed ({st}) with no failed test in its output (a build error, or a test binary that crashed)");
    }
    Ok(failures)
}

fn pass_through(
    from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    state: Arc<Mutex<Parser>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let _ = to.write_all(&line);
            let text = String::from_utf8_lossy(&line);
            state.lock().expect("no panics while locked").line(text.trim_end());
            line.clear();
        }
    })
}

/// Follows libtest's output: `Running <binary>` (cargo, on stderr), then after the binary's run a
/// `---- <test> stdout ----` section per failed test, ended by the `failures:` name list.
#[derive(Default)]
struct Parser {
    binary: String,
    current: Option<Failure>,
    panicked_at: Option<usize>,
    in_backtrace: bool,
    output: Vec<String>,
    failures: Vec<Failure>,
}

impl Parser {
    fn line(&mut self, line: &str) {
        if let Some(rest) = line.trim_start().strip_prefix("Running ") {
            self.binary = rest.to_string();
            return;
        }
        if let Some(name) = line.strip_prefix("---- ").and_then(|l| l.strip_suffix(" stdout ----")) {
            self.finish();
            self.current = Some(Failure { binary: self.binary.clone(), name: name.to_string(), report: Vec::new() });
            return;
        }
        let Some(failure) = self.current.as_mut() else { return };
        if line == "failures:" {
            self.finish();
            return;
        }
        if line.starts_with("thread '") && line.contains("panicked at") && self.panicked_at.is_none() {
            let tail = self.output.len().saturating_sub(OUTPUT_TAIL_LINES);
            failure.report.extend(self.output.drain(tail..));
            self.panicked_at = Some(failure.report.len());
        }
        // A backtrace is long, and the panic's first line already gives its place. What the
        // harness prints after it (the tracer's log) is kept.
        if line == "stack backtrace:" || self.in_backtrace {
            self.in_backtrace = !line.starts_with("note: ");
            return;
        }
        match self.panicked_at {
            Some(start) if failure.report.len() < start + PANIC_LINES => failure.report.push(line.to_string()),
            Some(_) => {}
            None => {
                // Bounded: only the tail is ever shown.
                if self.output.len() == 4 * OUTPUT_TAIL_LINES {
                    self.output.drain(..3 * OUTPUT_TAIL_LINES);
                }
                self.output.push(line.to_string());
            }
        }
    }

    fn finish(&mut self) {
        if let Some(mut failure) = self.current.take() {
            if self.panicked_at.is_none() {
                // No panic line (a timeout or an abort): the output's tail is all there is.
                failure.report.append(&mut self.output);
            }
            while failure.report.last().is_some_and(|l| l.is_empty()) {
                failure.report.pop();
            }
            self.failures.push(failure);
        }
        self.panicked_at = None;
        self.in_backtrace = false;
        self.output.clear();
    }
}

/// The summary `cargo xtask test` ends with.
pub fn print_summary(failures: &[(String, Failure)]) {
    if failures.is_empty() {
        return;
    }
    eprintln!("xtask: {} test(s) failed:", failures.len());
    for (pass, f) in failures {
        eprintln!("xtask: FAILED {} ({pass}; {})", f.name, f.binary);
        for l in &f.report {
            eprintln!("    {l}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_each_failed_test_with_its_panic_and_last_output() {
        let mut p = Parser::default();
        let log = "     Running tests/tls.rs (target/debug/deps/tls-abc)\n\
                   running 2 tests\n\
                   test a ... ok\n\
                   test b ... FAILED\n\
                   \n\
                   failures:\n\
                   \n\
                   ---- b stdout ----\n\
                   tracer: log 1\n\
                   tracer: log 2\n\
                   \n\
                   thread 'b' panicked at tests/tls.rs:10:5:\n\
                   no span for GET /x\n\
                   stack backtrace:\n\
                   \x20  0: __rustc::rust_begin_unwind\n\
                   note: Some details are omitted\n\
                   [harness] the tracer's log\n\
                   \n\
                   \n\
                   failures:\n\
                   \x20   b\n\
                   \n\
                   test result: FAILED. 1 passed; 1 failed\n";
        for l in log.lines() {
            p.line(l);
        }
        assert_eq!(p.failures.len(), 1);
        let f = &p.failures[0];
        assert_eq!(f.name, "b");
        assert_eq!(f.binary, "tests/tls.rs (target/debug/deps/tls-abc)");
        assert_eq!(
            f.report,
            [
                "tracer: log 1",
                "tracer: log 2",
                "",
                "thread 'b' panicked at tests/tls.rs:10:5:",
                "no span for GET /x",
                "[harness] the tracer's log"
            ]
        );
    }
}
