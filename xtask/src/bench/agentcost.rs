//! The agent's instructions per span, counted by callgrind (`tracer/examples/agent_cost.rs`).
//!
//! The agent's CPU time under a real load moves by ±20 % from round to round on a shared VM;
//! an instruction count of the same binary on the same input does not move at all. So a change
//! to the agent's decoding, assembly or encoding shows here, to the instruction, before a full
//! bench run can resolve it.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

/// Request counts of the two runs: their difference cancels what does not grow per span
/// (start-up, the first batch's allocations, the HPACK tables filling).
const RUNS: [u64; 2] = [2_000, 12_000];

/// The workloads of `agent_cost`, and what each stands for.
pub const WORKLOADS: [(&str, &str); 2] = [
    ("http1", "kube-apiserver serving kubectl GET pod over HTTP/1.1, server span with its k8s attributes"),
    ("grpc", "kube-apiserver calling etcd KV/Range over HTTP/2 (Go-like HPACK), client span with its etcd attributes"),
];

/// Builds the example from this work tree (not from `TRACER_BIN`).
pub fn build(root: &Path) -> Result<std::path::PathBuf> {
    crate::status(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--package", "tracer", "--example", "agent_cost"])
            .current_dir(root),
    )?;
    Ok(root.join("target/release/examples/agent_cost"))
}

/// Instructions per span of `workload`, and the spans and OTLP bytes of the larger run.
pub fn instructions_per_span(valgrind: &Path, bin: &Path, workload: &str) -> Result<(f64, String)> {
    let mut counts = [0u64; 2];
    let mut summary = String::new();
    for (count, requests) in counts.iter_mut().zip(RUNS) {
        let out = Command::new(valgrind)
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null", "--toggle-collect=agent_cost::agent"])
            .arg(bin)
            .args([workload, &requests.to_string()])
            .output()
            .with_context(|| format!("running {} under callgrind", bin.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("agent_cost {workload} {requests} under callgrind failed ({}): {}", out.status, stderr.trim());
        }
        *count = collected(&stderr)
            .with_context(|| format!("no `Collected :` line in callgrind's output: {}", stderr.trim()))?;
        summary = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    }
    let spans = RUNS[1] - RUNS[0];
    if counts[1] <= counts[0] {
        bail!(
            "callgrind counted {} instructions for {} requests and {} for {}",
            counts[0],
            RUNS[0],
            counts[1],
            RUNS[1]
        );
    }
    Ok(((counts[1] - counts[0]) as f64 / spans as f64, summary))
}

/// The instruction count callgrind prints at exit (`==PID== Collected : N`).
fn collected(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| l.split_once("Collected :")?.1.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_callgrinds_count() {
        let stderr = "==1== Events    : Ir\n==1== Collected : 47482631\n==1== \n==1== I   refs:      47,482,631\n";
        assert_eq!(collected(stderr), Some(47_482_631));
        assert_eq!(collected("==1== I   refs: 5\n"), None);
    }
}
