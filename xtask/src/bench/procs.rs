//! Processes the bench starts (killed when dropped, and when the bench dies), the tracer's
//! lifecycle and `/proc` readings.

use std::{
    collections::BTreeMap,
    fs::File,
    io::Read,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A child process with its output in log files; SIGKILLed and reaped when dropped. The kernel
/// also kills it if the bench dies (PR_SET_PDEATHSIG).
pub struct Proc {
    child: Child,
    name: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    exited: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Result<Proc> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let stdout = dir.join(format!("{name}-{n}.out"));
        let stderr = dir.join(format!("{name}-{n}.err"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&stdout).with_context(|| format!("creating {}", stdout.display()))?)
            .stderr(File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        Ok(Proc { child, name: name.to_owned(), stdout, stderr, exited: None })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    pub fn signal(&self, sig: i32) {
        if self.exited.is_none() {
            // SAFETY: plain syscall on our own child's pid (not reaped yet, so not reused).
            unsafe { libc::kill(self.child.id() as i32, sig) };
        }
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// An error if the process has exited: a server that died under load.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(st) = self.try_wait() {
            bail!("{} exited ({st}) during the bench", self.last_words());
        }
        Ok(())
    }

    /// The last non-empty line of stderr (for one-line errors).
    pub fn last_words(&self) -> String {
        let err = self.stderr_text();
        let line = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        let line: String = line.chars().take(300).collect();
        format!("{} (pid {}): {}", self.name, self.pid(), if line.is_empty() { "no output" } else { &line })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(parent: &Path, name: &str) -> Result<TempDir> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port that was free a moment ago (the kernel picks it: bind 127.0.0.1:0).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub fn wait_for_port(proc: &mut Proc, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Some(st) = proc.try_wait() {
            bail!("{} exited ({st}) before listening on port {port}", proc.last_words());
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{} did not listen on 127.0.0.1:{port} within {timeout:?}", proc.last_words());
        }
        sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of the whole process (all threads), in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Field 14 (utime) and 15 (stime); `after` starts at field 3.
    let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("no utime in /proc/{pid}/stat"))?;
    let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("no stime in /proc/{pid}/stat"))?;
    Ok((utime + stime) as f64 / clock_ticks_per_sec())
}

/// A `kB` line of /proc/PID/status (VmHWM, VmRSS), in KiB.
pub fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no {key} in /proc/{pid}/status"))
}

/// Resident KiB of a process's mappings of eBPF maps (the ring buffer: its data pages are mapped
/// twice, so an 8 MiB ring shows as 16 MiB).
pub fn bpf_map_rss_kib(pid: u32) -> u64 {
    let smaps = read_small(&format!("/proc/{pid}/smaps"));
    let mut in_map = false;
    let mut total = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            in_map = line.contains("bpf-map");
        } else if in_map && let Some(v) = line.strip_prefix("Rss:") {
            total += v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

/// The CPUs /proc/cpuinfo lists.
pub fn cpu_count_in(cpuinfo: &str) -> usize {
    cpuinfo.lines().filter(|l| l.starts_with("processor")).count()
}

/// Busy time of all CPUs together, in seconds: user, nice, system, irq and softirq of /proc/stat's
/// `cpu` line (guest time is counted inside user). Idle, iowait and steal are not busy: steal is
/// time the hypervisor gave to someone else.
pub fn machine_busy_seconds() -> f64 {
    machine_busy_ticks_in(&read_small("/proc/stat")) as f64 / clock_ticks_per_sec()
}

fn machine_busy_ticks_in(stat: &str) -> u64 {
    let Some(line) = stat.lines().find(|l| l.split_whitespace().next() == Some("cpu")) else { return 0 };
    let ticks: Vec<u64> = line.split_whitespace().skip(1).map_while(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum()
}

/// Interrupts that one CPU sends another to wake a task there, summed over all CPUs: function-call
/// interrupts (a wake-up queued to a remote CPU) and rescheduling interrupts (`CAL` and `RES` in
/// /proc/interrupts on x86, `IPI1` and `IPI0` on arm64; found by their description). A wake-up of
/// a task whose CPU had halted takes one; on a VM each is an exit to the hypervisor.
pub fn wakeup_ipis() -> u64 {
    wakeup_ipis_in(&read_small("/proc/interrupts"))
}

fn wakeup_ipis_in(interrupts: &str) -> u64 {
    interrupts
        .lines()
        .filter_map(|l| {
            let counts = l.split_whitespace().skip(1);
            let per_cpu: Vec<u64> = counts.clone().map_while(|f| f.parse().ok()).collect();
            let what = counts.skip(per_cpu.len()).collect::<Vec<_>>().join(" ");
            matches!(what.as_str(), "Rescheduling interrupts" | "Function call interrupts")
                .then(|| per_cpu.iter().sum::<u64>())
        })
        .sum()
}

/// Context switches (voluntary + involuntary) of all threads of a process: its wake-ups.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .map(|t| {
            read_small(&t.path().join("status").display().to_string())
                .lines()
                .filter(|l| l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// The tracer

/// Numbers of the tracer's `final stats` log line.
pub type FinalStats = BTreeMap<String, u64>;

pub struct Tracer {
    proc: Proc,
}

impl Tracer {
    /// Starts `tracer --pid PID --output none` and waits until it says the target is attached.
    pub fn start(bin: &Path, dir: &Path, pid: u32, extra: &[&str]) -> Result<Tracer> {
        let mut cmd = Command::new(bin);
        cmd.args(["--pid", &pid.to_string(), "--output", "none", "--stats-interval", "0", "--log-level", "info"])
            .args(extra);
        cmd.env_remove("TRACER_OTLP_ENDPOINT")
            .env_remove("TRACER_COMM")
            .env_remove("TRACER_PID")
            .env_remove("TRACER_LOG");
        let mut proc = Proc::spawn("tracer", dir, &mut cmd)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = proc.try_wait() {
                bail!("the tracer exited ({st}) at start: {}", proc.last_words());
            }
            if proc.stderr_text().contains("target attached") {
                break;
            }
            if Instant::now() >= deadline {
                bail!("the tracer did not attach to pid {pid} within 60 s: {}", proc.last_words());
            }
            sleep(Duration::from_millis(25));
        }
        Ok(Tracer { proc })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(self.pid())
    }

    pub fn status_kib(&self, key: &str) -> Result<u64> {
        status_kib(self.pid(), key)
    }

    pub fn bpf_map_rss_kib(&self) -> u64 {
        bpf_map_rss_kib(self.pid())
    }

    pub fn context_switches(&self) -> u64 {
        context_switches(self.pid())
    }

    /// SIGINT, then the numbers of the `final stats` line.
    pub fn stop(mut self) -> Result<FinalStats> {
        self.proc.signal(libc::SIGINT);
        let Some(st) = self.proc.wait_timeout(Duration::from_secs(30)) else {
            bail!("the tracer did not exit within 30 s of SIGINT: {}", self.proc.last_words());
        };
        let err = self.proc.stderr_text();
        let Some(line) = err.lines().rev().find(|l| l.contains("final stats")) else {
            bail!("the tracer exited ({st}) without a `final stats` line: {}", self.proc.last_words());
        };
        if !st.success() {
            bail!("the tracer exited with {st}: {}", self.proc.last_words());
        }
        Ok(parse_stats(line))
    }
}

/// `key=value` pairs with numeric values (ANSI colour codes, if any, removed).
pub fn parse_stats(line: &str) -> FinalStats {
    let mut clean = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            clean.push(c);
        }
    }
    clean
        .split_whitespace()
        .filter_map(|t| {
            let (k, v) = t.split_once('=')?;
            Some((k.to_owned(), v.trim_matches('"').parse().ok()?))
        })
        .collect()
}

/// Reads a whole file into a string, for small /proc files.
pub fn read_small(path: &str) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn stats_line() {
        let s = super::parse_stats(
            "2026-01-01T00:00:00Z  INFO tracer::run: final stats events=12 lost_ringbuf_full=0 \x1b[3mspans\x1b[0m\x1b[2m=\x1b[0m5",
        );
        assert_eq!(s["events"], 12);
        assert_eq!(s["lost_ringbuf_full"], 0);
        assert_eq!(s["spans"], 5);
    }

    #[test]
    fn machine_busy_counts_user_nice_system_irq_and_softirq_of_all_cpus() {
        // Recorded on the bench's 2-vCPU VM.
        let stat = "cpu  503837 0 96422 8104120 3452 0 2926 731 0 0
cpu0 230685 0 46272 4075973 866 0 1316 328 0 0
cpu1 273152 0 50150 4028147 2585 0 1610 402 0 0
intr 1 2 3
";
        assert_eq!(super::machine_busy_ticks_in(stat), 503837 + 96422 + 2926);
        assert_eq!(super::machine_busy_ticks_in("intr 1 2\n"), 0);
    }

    #[test]
    fn wakeup_ipis_sums_function_call_and_rescheduling_interrupts_of_every_cpu() {
        // Recorded on the bench's 2-vCPU VM (lines shortened).
        let interrupts = "           CPU0       CPU1
  0:         47          0   IO-APIC   2-edge      timer
NMI:          0          0   Non-maskable interrupts
LOC:   90176523   88437310   Local timer interrupts
RES:   18376720   19242830   Rescheduling interrupts
CAL:   61169832   64407487   Function call interrupts
TLB:    5507551    5469169   TLB shootdowns
ERR:          0
";
        assert_eq!(super::wakeup_ipis_in(interrupts), 18376720 + 19242830 + 61169832 + 64407487);
        assert_eq!(super::wakeup_ipis_in(""), 0);
        // arm64 names them IPI0..; the descriptions are the same.
        let arm64 = "           CPU0       CPU1
IPI0:      1201       1305       Rescheduling interrupts
IPI1:       310        420       Function call interrupts
IPI2:         0          0       CPU stop interrupts
";
        assert_eq!(super::wakeup_ipis_in(arm64), 1201 + 1305 + 310 + 420);
    }
}
