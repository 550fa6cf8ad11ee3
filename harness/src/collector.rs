//! A child's pipe read to EOF by a background thread, and the text helpers that go with it.

use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
