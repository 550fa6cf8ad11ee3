//! Processes the bench starts (the harness's, killed when dropped and when the bench dies), the
//! tracer under test (the harness's, with the bench's readings) and `/proc` readings.

use std::{
    collections::BTreeMap,
    fs::File,
    io::Read,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};

use harness::{ATTACH_TIMEOUT, STOP_TIMEOUT, TracerEnv, TracerProc};
pub use harness::{Proc, TempDir, free_port};

/// Starts `cmd` as `name`, its output collected; the kernel kills it if the bench dies.
pub fn spawn(name: &str, cmd: &mut Command) -> Result<Proc> {
    harness::die_with_parent(cmd);
    Proc::try_spawn(name, cmd).with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))
}

/// An error if the process has exited: a server that died under load.
pub fn ensure_running(proc: &mut Proc) -> Result<()> {
    if let Some(st) = proc.try_wait() {
        bail!("{} exited ({st}) during the bench", proc.last_words());
    }
    Ok(())
}

/// Waits until `proc` listens on 127.0.0.1:`port`; an error if it exits first or takes too long.
pub fn wait_for_port(proc: &mut Proc, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = proc.try_wait() {
            bail!("{} exited ({st}) before listening on port {port}", proc.last_words());
        }
        if harness::wait_for_port(port, Duration::from_millis(200)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{} did not listen on 127.0.0.1:{port} within {timeout:?}", proc.last_words());
        }
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

/// The harness's tracer under test with the bench's readings of it.
pub struct Tracer {
    core: TracerProc,
}

impl Tracer {
    /// Starts `tracer --pid PID --output none` and waits until it says the target is attached.
    pub fn start(bin: &Path, pid: u32, extra: &[&str]) -> Result<Tracer> {
        let mut t = Self::spawn(bin, &["--pid", &pid.to_string()], extra)?;
        match t.core.wait_attached(pid, ATTACH_TIMEOUT) {
            Ok(_) => Ok(t),
            Err(e) => Err(t.not_ready(&format!("attach to pid {pid}"), e)),
        }
    }

    /// Starts `tracer --comm COMM --output none` and waits until it says it waits for a process
    /// of that name (its probes are loaded).
    pub fn start_comm(bin: &Path, comm: &str, extra: &[&str]) -> Result<Tracer> {
        let mut t = Self::spawn(bin, &["--comm", comm], extra)?;
        match t.core.wait_stderr_line(&|l| l.contains("waiting for"), ATTACH_TIMEOUT) {
            Ok(_) => Ok(t),
            Err(e) => Err(t.not_ready(&format!("wait for processes named {comm}"), e)),
        }
    }

    fn spawn(bin: &Path, target: &[&str], extra: &[&str]) -> Result<Tracer> {
        // Flags say what to trace and where to send it; the rest of TRACER_* (probe mode, OTLP
        // compression) is inherited on purpose, so that a bench run can measure those settings.
        let mut cmd = TracerProc::command(bin, TracerEnv::InheritSettings);
        let args = ["--output", "none", "--stats-interval", "0", "--log-level", "info"];
        cmd.args(target).args(args).args(extra);
        harness::die_with_parent(&mut cmd);
        let label = target.iter().chain(&args).chain(extra).map(|a| a.to_string()).collect();
        let core = TracerProc::spawn(cmd, label).with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(Tracer { core })
    }

    /// The error of a tracer that did not get ready to `what`: it exited, or took too long.
    fn not_ready(&self, what: &str, e: Option<std::process::ExitStatus>) -> anyhow::Error {
        match e {
            Some(st) => anyhow!("the tracer exited ({st}) at start: {}", self.core.last_words()),
            None => anyhow!("the tracer did not {what} within {ATTACH_TIMEOUT:?}: {}", self.core.last_words()),
        }
    }

    /// Waits at most `timeout` until `n` lines of its log contain `needle`.
    pub fn wait_count(&mut self, needle: &str, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.core.stderr().lines().filter(|l| l.contains(needle)).count() < n {
            if let Some(st) = self.core.try_wait() {
                bail!("the tracer exited ({st}): {}", self.core.last_words());
            }
            if Instant::now() >= deadline {
                bail!("the tracer did not log {needle:?} {n} times within {timeout:?}: {}", self.core.last_words());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits at most `timeout` for a line of its log that `parse` accepts.
    pub fn wait_log<T>(&mut self, parse: &dyn Fn(&str) -> Option<T>, timeout: Duration) -> Result<T> {
        match self.core.wait_stderr_line(&|l| parse(l).is_some(), timeout) {
            Ok(line) => parse(&line).context("the line the tracer logged no longer parses"),
            Err(Some(st)) => bail!("the tracer exited ({st}): {}", self.core.last_words()),
            Err(None) => bail!("the line was not logged within {timeout:?}: {}", self.core.last_words()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.core.pid()
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
        let Some(st) = self.core.stop(libc::SIGINT, STOP_TIMEOUT) else {
            bail!("the tracer did not exit within {STOP_TIMEOUT:?} of SIGINT: {}", self.core.last_words());
        };
        let Some(stats) = self.core.final_stats() else {
            bail!("the tracer exited ({st}) without a `final stats` line: {}", self.core.last_words());
        };
        if !st.success() {
            bail!("the tracer exited with {st}: {}", self.core.last_words());
        }
        Ok(stats)
    }
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
