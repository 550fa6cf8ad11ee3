//! Runs every cargo-fuzz target briefly (part of `cargo xtask test`, and `cargo xtask fuzz`).
//!
//! Built with the pinned toolchain and RUSTC_BOOTSTRAP=1 (cargo-fuzz's instrumentation flags are
//! unstable) and no sanitizer, so a stable-only machine runs them too.

use std::{fs::File, process::Command};

use anyhow::{Context, Result, bail};

use crate::{setup::EBPF_TOOLCHAIN, status, workspace_root};

/// Lines of a crashed target's log shown on the console (the crash report and the input's path).
const CRASH_TAIL_LINES: usize = 40;

const CARGO_FUZZ_VERSION: &str = "0.13";

pub fn run(seconds_each: u32) -> Result<()> {
    ensure_cargo_fuzz()?;
    let root = workspace_root();
    let list = Command::new("cargo")
        .args([&format!("+{EBPF_TOOLCHAIN}"), "fuzz", "list", "--fuzz-dir", "fuzz"])
        .current_dir(&root)
        .output()
        .context("cargo fuzz list")?;
    let targets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if targets.is_empty() {
        bail!("no fuzz targets found in fuzz/");
    }
    // libFuzzer's own output (statistics, its recommended dictionary) is long: it goes to a log
    // per target, and only a crash brings its tail to the console.
    let logs = root.join("target/fuzz-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    for t in &targets {
        let log_path = logs.join(format!("{t}.log"));
        let log = File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        eprintln!("xtask: fuzzing {t} for {seconds_each} s (log: {})", log_path.display());
        let st = Command::new("cargo")
            .args([&format!("+{EBPF_TOOLCHAIN}"), "fuzz", "run", "--fuzz-dir", "fuzz", "-s", "none", t, "--"])
            .arg(format!("-max_total_time={seconds_each}"))
            .args(["-rss_limit_mb=4096", "-print_final_stats=1"])
            .current_dir(&root)
            .env("RUSTC_BOOTSTRAP", "1")
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .with_context(|| format!("cannot run cargo fuzz for {t}"))?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if !st.success() {
            let lines: Vec<&str> = text.lines().collect();
            for l in &lines[lines.len().saturating_sub(CRASH_TAIL_LINES)..] {
                eprintln!("    {l}");
            }
            bail!(
                "fuzz target {t} failed ({st}; a crash input is under fuzz/artifacts/{t}, the log is {})",
                log_path.display()
            );
        }
        if let Some(done) = text.lines().find(|l| l.starts_with("Done ")) {
            eprintln!("xtask: {t}: {done}");
        }
    }
    eprintln!("xtask: {} fuzz targets ran without a crash", targets.len());
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let ok = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
        status(Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            &format!("^{CARGO_FUZZ_VERSION}"),
        ]))?;
    }
    Ok(())
}
