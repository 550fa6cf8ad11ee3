//! Runs every cargo-fuzz target briefly (part of `cargo xtask test`, and `cargo xtask fuzz`).
//!
//! Built with the pinned toolchain and RUSTC_BOOTSTRAP=1 (cargo-fuzz's instrumentation flags are
//! unstable) and no sanitizer, so a stable-only machine runs them too.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{setup::EBPF_TOOLCHAIN, status, workspace_root};

const CARGO_FUZZ_VERSION: &str = "0.13";

pub fn run(seconds_each: u32) -> Result<()> {
    ensure_cargo_fuzz()?;
    let root = workspace_root();
    let list = Command::new("cargo")
        .args([&format!("+{EBPF_TOOLCHAIN}"), "fuzz", "list", "--fuzz-dir", "fuzz"])
        .current_dir(&root)
        .output()
        .context("cargo fuzz list")?;
    let targets: Vec<String> = String::from_utf8_lossy(&list.stdout).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if targets.is_empty() {
        bail!("no fuzz targets found in fuzz/");
    }
    for t in &targets {
        eprintln!("xtask: fuzzing {t} for {seconds_each} s");
        status(
            Command::new("cargo")
                .args([&format!("+{EBPF_TOOLCHAIN}"), "fuzz", "run", "--fuzz-dir", "fuzz", "-s", "none", t, "--"])
                .arg(format!("-max_total_time={seconds_each}"))
                .args(["-rss_limit_mb=4096", "-print_final_stats=1"])
                .current_dir(&root)
                .env("RUSTC_BOOTSTRAP", "1"),
        )
        .with_context(|| format!("fuzz target {t} failed (a crash input is under fuzz/artifacts/{t})"))?;
    }
    eprintln!("xtask: {} fuzz targets ran without a crash", targets.len());
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let ok = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
        status(Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--version", &format!("^{CARGO_FUZZ_VERSION}")]))?;
    }
    Ok(())
}
