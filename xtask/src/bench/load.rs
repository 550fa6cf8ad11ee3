//! Load generators and probes of the machine: wrk, h2load, a syscall loop compiled at bench time,
//! many idle keep-alive connections.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};

use super::procs::spawn;

/// What an HTTP load generator (wrk, h2load) measured in one run.
#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    pub req_per_sec: f64,
    pub requests: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

pub fn wrk(wrk: &Path, url: &str, threads: u32, conns: u32, secs: u64) -> Result<WrkResult> {
    let mut cmd = Command::new(wrk);
    cmd.arg(format!("-t{threads}"))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .args(["--latency", "--timeout", "5s"])
        .arg(url);
    let out = run_for("wrk", &mut cmd, secs)?;
    parse_wrk(&out).with_context(|| format!("unexpected wrk output: {}", out.replace('\n', " | ")))
}

/// Runs a load generator meant to last `secs` (a minute of slack) and returns its stdout.
fn run_for(name: &str, cmd: &mut Command, secs: u64) -> Result<String> {
    let mut p = spawn(name, cmd)?;
    let Some(st) = p.wait_timeout(Duration::from_secs(secs + 60)) else {
        bail!("{name} did not finish within {} s", secs + 60);
    };
    if !st.success() {
        bail!("{name} failed ({st}): {}", p.last_words());
    }
    Ok(p.stdout())
}

/// The `p`th percentile of sorted latencies.
pub fn percentile_us(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64
}

fn duration_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        _ => return None,
    })
}

pub fn parse_wrk(out: &str) -> Result<WrkResult> {
    let mut r = WrkResult::default();
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.req_per_sec = v.trim().parse()?;
        } else if words.first() == Some(&"50%") {
            r.p50_ms = duration_ms(words.get(1).unwrap_or(&"")).ok_or_else(|| anyhow!("bad p50"))?;
        } else if words.first() == Some(&"99%") {
            r.p99_ms = duration_ms(words.get(1).unwrap_or(&"")).ok_or_else(|| anyhow!("bad p99"))?;
        } else if words.len() >= 4 && words[1] == "requests" && words[2] == "in" {
            r.requests = words[0].parse()?;
            r.seconds = words[3].trim_end_matches(',').trim_end_matches('s').parse()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            r.errors += v.split(',').filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok()).sum::<u64>();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    if r.req_per_sec == 0.0 || r.requests == 0 {
        bail!("no Requests/sec");
    }
    Ok(r)
}

/// h2load (nghttp2): `conns` HTTP/2 connections with `streams` requests in flight on each, for
/// `secs`, over TLS for an https URL; `extra` arguments before the URL (headers, a body). Throughput
/// from its summary; p50/p99 from its per-request log (start, status, duration in µs).
pub fn h2load(
    h2load: &Path,
    work: &Path,
    url: &str,
    extra: &[String],
    conns: u32,
    streams: u32,
    secs: u64,
) -> Result<WrkResult> {
    let log = work.join("h2load-requests.log");
    let mut cmd = Command::new(h2load);
    cmd.args(["-t1", &format!("-c{conns}"), &format!("-m{streams}"), "-D", &secs.to_string()])
        .arg(format!("--log-file={}", log.display()))
        .args(extra)
        .arg(url);
    let out = run_for("h2load", &mut cmd, secs)?;
    let mut r =
        parse_h2load(&out).with_context(|| format!("unexpected h2load output: {}", out.replace('\n', " | ")))?;
    let log_text = std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let _ = std::fs::remove_file(&log);
    let mut us: Vec<u32> = log_text.lines().filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok()).collect();
    if us.is_empty() {
        bail!("h2load logged no request");
    }
    us.sort_unstable();
    r.p50_ms = percentile_us(&us, 50.0) / 1000.0;
    r.p99_ms = percentile_us(&us, 99.0) / 1000.0;
    Ok(r)
}

/// Throughput, requests and errors from h2load's summary (latencies come from its log).
pub fn parse_h2load(out: &str) -> Result<WrkResult> {
    let mut r = WrkResult::default();
    // "12 succeeded," -> 12
    let count = |words: &[&str], what: &str| -> u64 {
        words.windows(2).find(|w| w[1].trim_end_matches(',') == what).and_then(|w| w[0].parse().ok()).unwrap_or(0)
    };
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(v) = line.strip_prefix("finished in ") {
            // "finished in 5.00s, 40818.20 req/s, 4.98MB/s"
            let mut parts = v.split(", ");
            r.seconds = parts.next().unwrap_or("").trim_end_matches('s').parse()?;
            r.req_per_sec = parts.next().unwrap_or("").trim_end_matches(" req/s").parse()?;
        } else if line.starts_with("requests:") {
            r.requests = count(&words, "succeeded");
            r.errors += count(&words, "failed") + count(&words, "errored") + count(&words, "timeout");
        } else if line.starts_with("status codes:") {
            r.errors += count(&words, "4xx") + count(&words, "5xx");
        }
    }
    if r.req_per_sec == 0.0 || r.requests == 0 {
        bail!("no req/s or no succeeded request");
    }
    Ok(r)
}

/// The syscall loop (C): `syscall-loop getppid|read|tcp CALLS REPEATS` prints the mean ns per
/// call of the fastest of REPEATS batches of CALLS calls (the minimum filters out bursts of
/// interference), timed inside the process after a warm-up, pinned to the last CPU. `tcp`
/// alternates send and recv of 1 byte over a loopback TCP connection (socket I/O is what the
/// tracer hooks). The clock is the thread's CPU time (user + kernel, syscall entry and exit
/// included), so time spent preempted by other work on a busy machine does not count.
const SYSCALL_LOOP_C: &str = r#"
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Thread CPU time, except for the uprobe modes: a trap's cost may be spent outside the guest (the
   hypervisor), which a VM's steal-time accounting keeps out of CPU time but not out of wall time. */
static clockid_t clock_id = CLOCK_THREAD_CPUTIME_ID;

static double now_ns(void) {
    struct timespec t;
    clock_gettime(clock_id, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int mode, fd, tx, rx;

/* Functions for a uprobe (modes "ret" and "branch"): what a probe hit costs on this machine. The
   kernel single-steps most probed instructions, `ret` included (two traps), and emulates a probed
   branch or call (one trap). */
__attribute__((noinline, naked)) void probe_ret(void) { __asm__ volatile("ret"); }
__attribute__((noinline, naked)) void probe_call(void) { __asm__ volatile("call probe_ret\n\tret"); }

/* One call of the chosen kind; for tcp, calls alternate between send and the matching recv. */
static int call(long i) {
    char c = 'x';
    switch (mode) {
    case 0: syscall(SYS_getppid); return 0;
    case 1: return read(fd, &c, 1) == 1 ? 0 : -1;
    case 3: probe_ret(); return 0;
    case 4: probe_call(); return 0;
    default: return (i & 1) ? (recv(rx, &c, 1, 0) == 1 ? 0 : -1) : (send(tx, &c, 1, 0) == 1 ? 0 : -1);
    }
}

/* The file offset of the function probed in mode `which`, from the mapping that holds it. */
static int print_probe_offset(const char *which) {
    unsigned long addr = (unsigned long)(strcmp(which, "ret") == 0 ? &probe_ret : &probe_call), lo, hi, off;
    char line[512];
    FILE *f = fopen("/proc/self/maps", "r");
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "%lx-%lx %*s %lx", &lo, &hi, &off) == 3 && addr >= lo && addr < hi) {
            printf("%#lx\n", addr - lo + off);
            return 0;
        }
    }
    return 1;
}

static int tcp_pair(void) {
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (l < 0 || bind(l, (void *)&a, sizeof a) || listen(l, 1) || getsockname(l, (void *)&a, &len)) return -1;
    tx = socket(AF_INET, SOCK_STREAM, 0);
    if (tx < 0 || connect(tx, (void *)&a, sizeof a)) return -1;
    rx = accept(l, NULL, NULL);
    setsockopt(tx, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return rx < 0 ? -1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "offset") == 0) return print_probe_offset(argv[2]);
    if (argc != 4) { fprintf(stderr, "usage: syscall-loop getppid|read|tcp|ret|branch CALLS REPEATS | offset ret|branch\n"); return 2; }
    mode = strcmp(argv[1], "read") == 0 ? 1 : strcmp(argv[1], "tcp") == 0 ? 2 : strcmp(argv[1], "ret") == 0 ? 3 : strcmp(argv[1], "branch") == 0 ? 4 : 0;
    long n = atol(argv[2]), reps = atol(argv[3]);
    if (mode == 2) n = n / 10 * 2; /* socket calls are slower: fewer, and whole send/recv pairs */
    if (mode >= 3) clock_id = CLOCK_MONOTONIC;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(sysconf(_SC_NPROCESSORS_ONLN) - 1, &set);
    sched_setaffinity(0, sizeof set, &set);
    fd = open("/dev/zero", O_RDONLY);
    if (fd < 0) { perror("/dev/zero"); return 1; }
    if (mode == 2 && tcp_pair()) { perror("loopback TCP"); return 1; }
    for (long i = 0; i < n / 10; i++) if (call(i)) return 1;
    double best = 1e18;
    for (long r = 0; r < reps; r++) {
        double t0 = now_ns();
        for (long i = 0; i < n; i++) if (call(i)) return 1;
        double t = (now_ns() - t0) / n;
        if (t < best) best = t;
    }
    printf("%.3f\n", best);
    return 0;
}
"#;

pub fn build_syscall_loop(gcc: &Path, work: &Path) -> Result<PathBuf> {
    let src = work.join("syscall-loop.c");
    let bin = work.join("syscall-loop");
    std::fs::write(&src, SYSCALL_LOOP_C)?;
    let out = Command::new(gcc).args(["-O2", "-o"]).arg(&bin).arg(&src).output().context("running gcc")?;
    if !out.status.success() {
        bail!(
            "gcc could not build the syscall loop: {}",
            String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("")
        );
    }
    Ok(bin)
}

/// Mean ns per syscall of the fastest of `reps` batches of `n` calls.
pub fn syscall_loop(bin: &Path, which: &str, n: u64, reps: u32) -> Result<f64> {
    let mut cmd = Command::new(bin);
    cmd.arg(which).arg(n.to_string()).arg(reps.to_string());
    let mut p = spawn("syscall-loop", &mut cmd)?;
    let Some(st) = p.wait_timeout(Duration::from_secs(120)) else { bail!("the syscall loop did not finish") };
    if !st.success() {
        bail!("the syscall loop failed ({st}): {}", p.last_words());
    }
    p.stdout().trim().parse().with_context(|| format!("syscall loop printed {:?}", p.stdout()))
}

/// A uprobe on one of the syscall loop's probed functions, as a tracefs event (no eBPF), enabled
/// while this lives: every call of the function then takes the trap(s) a Go TLS probe hit takes.
pub struct Uprobe {
    tracefs: PathBuf,
    group: String,
}

/// The file offset of the function the syscall loop calls in mode `which` (`ret`: a lone `ret`;
/// `branch`: a `call`), as the loop finds it in its own mappings.
pub fn probe_offset(bin: &Path, which: &str) -> Result<String> {
    let mut p = spawn("syscall-loop", Command::new(bin).args(["offset", which]))?;
    let st = p.wait_timeout(Duration::from_secs(10)).context("the syscall loop did not print its offset")?;
    let offset = p.stdout().trim().to_owned();
    if !st.success() || !offset.starts_with("0x") {
        bail!("the syscall loop could not find its {which} function in its mappings: {offset:?}");
    }
    Ok(offset)
}

impl Uprobe {
    /// At `offset` ([`probe_offset`]) of `bin`.
    pub fn attach(bin: &Path, offset: &str) -> Result<Uprobe> {
        let tracefs = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .into_iter()
            .map(PathBuf::from)
            .find(|d| d.join("uprobe_events").exists())
            .context("no tracefs with uprobe_events (mount -t tracefs nodev /sys/kernel/tracing)")?;
        let group = format!("xtask_bench_{}", std::process::id());
        let def = format!("p:{group}/probe_me {}:{offset}\n", bin.display());
        append(&tracefs.join("uprobe_events"), &def)?;
        let probe = Uprobe { tracefs, group };
        std::fs::write(probe.event_dir().join("enable"), "1").context("enabling the uprobe event")?;
        Ok(probe)
    }

    fn event_dir(&self) -> PathBuf {
        self.tracefs.join("events").join(&self.group).join("probe_me")
    }
}

impl Drop for Uprobe {
    fn drop(&mut self) {
        let _ = std::fs::write(self.event_dir().join("enable"), "0");
        let _ = append(&self.tracefs.join("uprobe_events"), &format!("-:{}/probe_me\n", self.group));
    }
}

fn append(path: &Path, line: &str) -> Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .with_context(|| format!("writing {line:?} to {}", path.display()))
}

/// Raises this process's RLIMIT_NOFILE soft limit towards `n` (up to the hard limit, which only
/// CAP_SYS_RESOURCE may raise); returns the soft limit now in force.
pub fn raise_nofile(n: u64) -> Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls with a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur >= n {
            return Ok(lim.rlim_cur);
        }
        let mut want = lim;
        want.rlim_cur = n;
        want.rlim_max = want.rlim_max.max(n);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            return Ok(n);
        }
        lim.rlim_cur = lim.rlim_max.min(n);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!("cannot raise RLIMIT_NOFILE (ulimit -n): {}", std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// `n` keep-alive connections to `port`, each having sent one GET and read the start of its
/// answer. Dropping the vector closes them.
pub fn open_connections(port: u16, n: usize, path: &str) -> Result<Vec<TcpStream>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connection {i} of {n} to {addr}"))?;
        conns.push(s);
    }
    request_all(&mut conns, path)?;
    Ok(conns)
}

/// One GET on every connection (pipelined over all of them), then read each answer's first bytes.
pub fn request_all(conns: &mut [TcpStream], path: &str) -> Result<()> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: xtask-bench\r\n\r\n");
    for s in conns.iter_mut() {
        s.write_all(req.as_bytes())?;
    }
    let mut buf = [0u8; 4096];
    for (i, s) in conns.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let n = s.read(&mut buf).with_context(|| format!("reading the answer on connection {i}"))?;
        if n == 0 || !buf.starts_with(b"HTTP/1.1 200") {
            bail!("connection {i}: unexpected answer {:?}", String::from_utf8_lossy(&buf[..n.min(40)]));
        }
        // Drain the rest of this answer (body may come in a second segment) without blocking long.
        s.set_nonblocking(true)?;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        s.set_nonblocking(false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_output() {
        let out = "Running 10s test @ http://127.0.0.1:8080/index.html
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   285.08us   55.41us   3.37ms   89.05%
    Req/Sec   112.03k     4.16k  118.44k    83.00%
  Latency Distribution
     50%  276.00us
     75%  300.00us
     90%  330.00us
     99%    1.49ms
  1125434 requests in 10.10s, 912.24MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec: 111427.56
Transfer/sec:     90.32MB
";
        let r = super::parse_wrk(out).unwrap();
        assert_eq!(r.requests, 1125434);
        assert!((r.seconds - 10.10).abs() < 1e-9);
        assert!((r.p50_ms - 0.276).abs() < 1e-9);
        assert!((r.p99_ms - 1.49).abs() < 1e-9);
        assert_eq!(r.errors, 3);
        assert!((r.req_per_sec - 111427.56).abs() < 1e-6);
    }

    #[test]
    fn parses_h2load_summary() {
        // h2load 1.52.0 over TLS, -c8 -m8 -D 3 (recorded).
        let out = "\
finished in 3.00s, 40433.33 req/s, 4.94MB/s
requests: 121300 total, 121364 started, 121300 done, 121298 succeeded, 1 failed, 1 errored, 0 timeout
status codes: 121290 2xx, 0 3xx, 3 4xx, 5 5xx
traffic: 14.81MB (15527792) total, 474.66KB (486056) headers (space savings 95.45%), 12.26MB (12857800) data
                     min         max         mean         sd        +/- sd
time for request:       58us      9.47ms      1.39ms       696us    79.01%
";
        let r = super::parse_h2load(out).unwrap();
        assert_eq!(r.requests, 121298);
        assert_eq!(r.errors, 10);
        assert!((r.seconds - 3.0).abs() < 1e-9);
        assert!((r.req_per_sec - 40433.33).abs() < 1e-6);
        assert!(super::parse_h2load("finished in 3.00s, 0.00 req/s, 0B/s\nrequests: 0 total").is_err());
    }
}
