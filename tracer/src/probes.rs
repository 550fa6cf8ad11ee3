//! Loads the eBPF object and attaches its programs, after checking what the kernel must offer.
//! Each failure becomes one clear line for the operator.

use std::{io, path::Path};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader, Endianness,
    programs::{ProgramError, RawTracePoint, TracePoint},
};
use aya_log::EbpfLogger;
use tokio::io::{Interest, unix::AsyncFd};

use tracer_common::{SockOffsets, probe_mode};

use crate::{
    cli::{Cli, ProbeModeArg},
    kernel_btf,
};

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

const TRACEFS: &str = "/sys/kernel/tracing";
const TRACEFS_DEBUGFS: &str = "/sys/kernel/debug/tracing";

/// Checks privileges, BTF and tracefs (mounting it if needed), then loads and attaches.
pub fn load(cli: &Cli) -> Result<Ebpf> {
    check_privileges()?;
    ensure_tracefs()?;
    // Before aya parses the BTF again, and freed first: both parses at once doubled the peak RSS.
    let (mode, offsets) = choose_probe_mode(cli)?;
    unsafe { libc::malloc_trim(0) };
    let btf = Btf::parse_file(&cli.btf_path, Endianness::default()).map_err(|e| {
        anyhow!(
            "kernel BTF not usable at {}: {e} (the kernel needs CONFIG_DEBUG_INFO_BTF=y, or pass --btf)",
            cli.btf_path.display()
        )
    })?;
    // The kernel charges BPF memory to the cgroup; where RLIMIT_MEMLOCK cannot be raised that is fine.
    raise_memlock();

    let log_level = probe_log_level();
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global(aya_log::LEVEL, &log_level, true)
        .override_global("CAPTURE_BYTES", &cli.capture_bytes, true)
        .override_global("PROBE_MODE", &mode, true)
        .override_global("SOCK_OFFSETS", &offsets, true)
        .override_global("WAKEUP_BYTES", &(u64::from(cli.ring_buffer_bytes) / 4), true)
        .override_global("EMPTY_PROBES", &u32::from(cli.empty_probes), true)
        .map_max_entries("EVENTS", cli.ring_buffer_bytes)
        .load(EBPF_OBJECT)
        .map_err(|e| anyhow!("loading the eBPF object failed: {}", last_lines(&e.to_string())))?;
    if log_level > PROBE_LOG_OFF {
        forward_probe_logs(&mut ebpf)?;
    }

    // Each raw tracepoint program is named after its tracepoint.
    let raw: &[&str] =
        if mode == probe_mode::SOCKET { &["sock_send_length", "sock_recv_length"] } else { &["sys_enter", "sys_exit"] };
    for &name in raw {
        let prog: &mut RawTracePoint = program(&mut ebpf, name)?;
        prog.load().map_err(|e| load_error(name, e))?;
        prog.attach(name).map_err(|e| anyhow!("attaching raw tracepoint {name} failed: {e}"))?;
    }
    let mut tracepoints =
        vec![("inet_sock_set_state", "sock"), ("sched_process_exec", "sched"), ("sched_process_exit", "sched")];
    if mode == probe_mode::SOCKET {
        tracepoints.push(("tcp_destroy_sock", "tcp"));
    }
    for (name, category) in tracepoints {
        let prog: &mut TracePoint = program(&mut ebpf, name)?;
        prog.load().map_err(|e| load_error(name, e))?;
        prog.attach(category, name).map_err(|e| anyhow!("attaching tracepoint {category}:{name} failed: {e}"))?;
    }
    if cli.empty_probes {
        tracing::warn!("--empty-probes: every probe returns at once, nothing will be traced");
    }
    // Loading parsed the kernel BTF (tens of MiB of heap, now free): give it back to the system.
    unsafe { libc::malloc_trim(0) };
    Ok(ebpf)
}

/// Target of the probes' own diagnostics (aya-log) in the agent's log: `--log-level debug`, or
/// `--log-level info,tracer::ebpf=debug` for those alone.
/// The probes name it in each message (tracer-ebpf/src/diag.rs).
const PROBE_LOG_TARGET: &str = "tracer::ebpf";

/// aya-log's level 0: the probes log nothing.
const PROBE_LOG_OFF: u8 = 0;

/// The most verbose level the agent's log filter shows under [`PROBE_LOG_TARGET`]: the probes are
/// told at load time (`AYA_LOG_LEVEL`, a read-only global), so a message the filter would drop is
/// not even built in the kernel.
fn probe_log_level() -> u8 {
    use aya_log::Level as Probe;
    use tracing::Level;
    // `enabled!` needs a constant level: one test per level, most verbose first.
    let level = if tracing::enabled!(target: PROBE_LOG_TARGET, Level::TRACE) {
        Probe::Trace
    } else if tracing::enabled!(target: PROBE_LOG_TARGET, Level::DEBUG) {
        Probe::Debug
    } else if tracing::enabled!(target: PROBE_LOG_TARGET, Level::INFO) {
        Probe::Info
    } else if tracing::enabled!(target: PROBE_LOG_TARGET, Level::WARN) {
        Probe::Warn
    } else if tracing::enabled!(target: PROBE_LOG_TARGET, Level::ERROR) {
        Probe::Error
    } else {
        return PROBE_LOG_OFF;
    };
    level as u8
}

/// Reads the probes' log records (their own ring buffer, `AYA_LOGS`) as they arrive and hands
/// them to the `log` crate, which tracing-subscriber forwards to the agent's log.
fn forward_probe_logs(ebpf: &mut Ebpf) -> Result<()> {
    let logger = EbpfLogger::init(ebpf).context("reading the probes' log records")?;
    // SAFETY: the logger owns its ring buffer's fd, registered until the task drops both.
    let mut logger = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .context("registering the probes' log ring buffer with tokio")?;
    tokio::spawn(async move {
        while let Ok(mut guard) = logger.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Ok(())
}

/// Socket hooks when the kernel has the tracepoints and its BTF gives the `struct sock` offsets
/// they need; syscall hooks otherwise (or when asked).
fn choose_probe_mode(cli: &Cli) -> Result<(u32, SockOffsets)> {
    if cli.probe_mode == ProbeModeArg::Syscalls {
        tracing::info!("capturing socket I/O with sys_enter/sys_exit (--probe-mode syscalls)");
        return Ok((probe_mode::SYSCALLS, SockOffsets::default()));
    }
    let available =
        if ![TRACEFS, TRACEFS_DEBUGFS].iter().any(|t| Path::new(t).join("events/sock/sock_recv_length").is_dir()) {
            Err(anyhow!("the kernel has no sock:sock_send_length/sock_recv_length tracepoints (Linux 6.3+)"))
        } else {
            kernel_btf::sock_offsets(&cli.btf_path)
        };
    match available {
        Ok(offsets) => {
            tracing::info!("capturing socket I/O with the sock_send_length/sock_recv_length tracepoints");
            Ok((probe_mode::SOCKET, offsets))
        }
        Err(e) if cli.probe_mode == ProbeModeArg::Socket => bail!("--probe-mode socket: {e:#}"),
        Err(e) => {
            tracing::info!("capturing socket I/O with sys_enter/sys_exit: {e:#}");
            Ok((probe_mode::SYSCALLS, SockOffsets::default()))
        }
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or_else(|| anyhow!("eBPF program {name} missing from the object"))?;
    prog.try_into().with_context(|| format!("eBPF program {name} has an unexpected type"))
}

/// A load failure with the verifier's last lines, which say why.
fn load_error(name: &str, e: ProgramError) -> anyhow::Error {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            // The whole log, for whoever debugs the probes (--log-level debug).
            tracing::debug!("verifier log of {name}:\n{log}");
            anyhow!("the kernel refused eBPF program {name} ({io_error}); verifier: {}", last_lines(&log))
        }
        other => anyhow!("loading eBPF program {name} failed: {other}"),
    }
}

/// The last few non-empty lines of a long message, joined into one line.
fn last_lines(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(4)..];
    tail.join(" | ")
}

fn check_privileges() -> Result<()> {
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    // Without root, CAP_BPF + CAP_PERFMON (tracing programs) + CAP_SYS_ADMIN (reading /proc of others
    // and tracefs) are what the agent needs.
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let caps = effective_caps().unwrap_or(0);
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")]
        .into_iter()
        .filter(|(bit, _)| caps & (1u64 << bit) == 0)
        .map(|(_, name)| name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "must run as root or with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (running as uid {}, missing {})",
        unsafe { libc::geteuid() },
        missing.join(", ")
    )
}

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

fn tracefs_ready(path: &str) -> bool {
    Path::new(path).join("events").is_dir()
}

/// aya finds tracepoint ids under /sys/kernel/tracing (or the debugfs copy); mount it if absent.
fn ensure_tracefs() -> Result<()> {
    if tracefs_ready(TRACEFS) || tracefs_ready(TRACEFS_DEBUGFS) {
        return Ok(());
    }
    let mount = || -> io::Result<()> {
        let target = std::ffi::CString::new(TRACEFS).expect("no NUL");
        let rc = unsafe { libc::mount(c"nodev".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    match mount() {
        Ok(()) if tracefs_ready(TRACEFS) => {
            tracing::info!("mounted tracefs at {TRACEFS}");
            Ok(())
        }
        Ok(()) => bail!("tracefs mounted at {TRACEFS} but has no events/ directory"),
        Err(e) => bail!(
            "tracefs is not mounted and mounting it at {TRACEFS} failed: {e} \
             (mount it: mount -t tracefs nodev {TRACEFS})"
        ),
    }
}

fn raise_memlock() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK; relying on cgroup accounting of BPF memory");
    }
}
