//! Set-up: the tools the bench drives, the tracer binary it measures, and the machine it runs on.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use harness::find_tool;

use super::context::{Ctx, say};
use super::{bpfstats, procs};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// wrk, h2load, nginx, etcd, gcc and openssl, installed with apt-get when missing.
pub fn ensure_tools() -> Result<BTreeMap<&'static str, PathBuf>> {
    const TOOLS: &[(&str, &str)] = &[
        ("wrk", "wrk"),
        ("h2load", "nghttp2-client"),
        ("nginx", "nginx-light"),
        ("etcd", "etcd-server"),
        ("gcc", "gcc"),
        ("openssl", "openssl"),
    ];
    let missing: Vec<&str> = TOOLS.iter().filter(|(b, _)| find_tool(b).is_none()).map(|(_, p)| *p).collect();
    if !missing.is_empty() {
        crate::setup::apt_install(&missing, "the bench drives real servers and load generators")?;
    }
    let mut out = BTreeMap::new();
    for (bin, pkg) in TOOLS {
        let path = find_tool(bin).with_context(|| format!("{bin} is still missing after installing {pkg}"))?;
        out.insert(*bin, path);
    }
    Ok(out)
}

/// `$TRACER_BIN`, or a fresh release build; copied into the work dir so that a rebuild during the
/// bench cannot swap it.
pub fn tracer_binary(root: &Path, work: &Path) -> Result<PathBuf> {
    let src = match std::env::var_os("TRACER_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            crate::setup::ensure_build_tools()?;
            say("building the tracer (release)");
            crate::status(
                Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                    .args(["build", "--release", "--package", "tracer"])
                    .current_dir(root),
            )?;
            root.join("target/release/tracer")
        }
    };
    if !src.is_file() {
        bail!("no tracer binary at {}", src.display());
    }
    let dst = work.join("tracer");
    std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
    Ok(dst)
}

pub fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_default()
}

pub fn machine_info(root: &Path, ctx: &Ctx) -> Value {
    let cpuinfo = procs::read_small("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_default();
    let cores = procs::cpu_count_in(&cpuinfo);
    let mem_kib: u64 = procs::read_small("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let foreign: Vec<String> = bpfstats::all_programs()
        .into_iter()
        .filter(|p| p.prog_type == 17 || p.prog_type == 5 || p.prog_type == 2)
        .map(|p| format!("{}:{} (type {})", p.id, p.name, p.prog_type))
        .collect();
    let others_tracing: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = procs::read_small(&format!("/proc/{pid}/comm"));
            (comm.trim() == "tracer").then(|| pid.to_string())
        })
        .collect();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let dirty =
        git(&["status", "--porcelain", "--", "tracer", "tracer-ebpf", "tracer-common"]).is_some_and(|s| !s.is_empty());
    json!({
        "cpu_model": model,
        "cores": cores,
        "kernel": procs::read_small("/proc/sys/kernel/osrelease").trim(),
        "memory_mib": mem_kib / 1024,
        "loadavg_start": procs::read_small("/proc/loadavg").trim(),
        "bpf_stats_enabled_sysctl": bpfstats::sysctl_enabled(),
        "other_bpf_tracing_programs_at_start": foreign,
        "other_tracer_processes_at_start": others_tracing,
        "tracer_bin": std::env::var("TRACER_BIN").unwrap_or_else(|_| "target/release/tracer (built by the bench)".into()),
        "tracer_git": format!("{}{}", git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default(), if dirty { "+dirty" } else { "" }),
        "tools": {
            "wrk": first_line(&ctx.wrk.display().to_string(), &["-v"]),
            "h2load": first_line(&ctx.h2load.display().to_string(), &["--version"]),
            "nginx": first_line(&ctx.nginx.display().to_string(), &["-v"]),
            "etcd": first_line(&ctx.etcd.display().to_string(), &["--version"]),
            "gcc": first_line(&ctx.gcc.display().to_string(), &["--version"]),
            "openssl": first_line(&ctx.openssl.display().to_string(), &["version"]),
        },
    })
}

pub fn machine_warnings(m: &Value) -> Vec<String> {
    let mut w = Vec::new();
    if m["bpf_stats_enabled_sysctl"] == json!(true) {
        w.push("kernel.bpf_stats_enabled=1: every eBPF program run pays two extra clock reads; traced figures are pessimistic".into());
    }
    if let Some(list) = m["other_bpf_tracing_programs_at_start"].as_array().filter(|l| !l.is_empty()) {
        w.push(format!(
            "{} other tracing eBPF programs are loaded (they tax every syscall in both columns): {}",
            list.len(),
            list.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(list) = m["other_tracer_processes_at_start"].as_array().filter(|l| !l.is_empty()) {
        w.push(format!("other tracer processes are running (pids {:?}): figures are noisier", list));
    }
    let load: f64 = m["loadavg_start"].as_str().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
    if load > 0.5 {
        w.push(format!("load average {load} at start: something else is using the CPUs; figures are noisier"));
    }
    w
}
