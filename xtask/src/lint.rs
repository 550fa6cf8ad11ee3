//! Formatting and lints, enforced (part of `cargo xtask test`): rustfmt over the workspace and the
//! fuzz workspace, clippy with warnings as errors over the default members, and clippy over the
//! eBPF crate for its own target with the toolchain and flags tracer/build.rs builds it with.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{setup::EBPF_TOOLCHAIN, status, workspace_root};

/// The eBPF crate's target (bpfel: what aya-build picks on a little-endian host).
const EBPF_TARGET: &str = "bpfel-unknown-none";

pub fn check() -> Result<()> {
    let root = workspace_root();
    let mut fmt = cargo(&["fmt", "--all", "--check"]);
    let mut fmt_fuzz = cargo(&["fmt", "--check"]);
    fmt_fuzz.current_dir(root.join("fuzz"));
    // Default members: every crate but tracer-ebpf, which only builds for its own target.
    let mut clippy = cargo(&["clippy", "--all-targets", "--", "-D", "warnings"]);
    let mut clippy_ebpf = ebpf_clippy();
    for (what, cmd) in [
        ("rustfmt", &mut fmt),
        ("rustfmt (fuzz)", &mut fmt_fuzz),
        ("clippy", &mut clippy),
        ("clippy (tracer-ebpf)", &mut clippy_ebpf),
    ] {
        let started = Instant::now();
        status(cmd)?;
        eprintln!("xtask: {what} passed in {}", seconds(started.elapsed()));
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Command {
    let mut cmd = crate::cargo();
    cmd.args(args);
    cmd
}

/// Clippy on tracer-ebpf as tracer/build.rs (aya-build) compiles it: the pinned toolchain, core
/// built from source (`-Z build-std`, allowed on that stable toolchain by RUSTC_BOOTSTRAP=1).
fn ebpf_clippy() -> Command {
    let toolchain = std::env::var("TRACER_EBPF_TOOLCHAIN").unwrap_or_else(|_| EBPF_TOOLCHAIN.into());
    // Through rustup's cargo, not $CARGO: `+toolchain` picks the pinned one.
    let mut cmd = Command::new("cargo");
    cmd.args([&format!("+{toolchain}"), "clippy", "--package", "tracer-ebpf", "--target", EBPF_TARGET])
        .args(["-Z", "build-std=core", "--", "-D", "warnings"])
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(workspace_root());
    // Set by the cargo running xtask, they would pick its compiler instead of the pinned one.
    for key in ["RUSTC", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "RUSTUP_TOOLCHAIN"] {
        cmd.env_remove(key);
    }
    cmd
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
