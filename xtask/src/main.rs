//! `cargo xtask <verb>`: set-up, build, run, test and bench for the tracer.
//!
//! Set-up is part of the product: on a fresh Debian/Ubuntu machine with rustup, `cargo xtask run`
//! and `cargo xtask test` install what is missing (the pinned eBPF toolchain's rust-src, LLVM
//! development libraries, bpf-linker built against them) or say in one line what to do.

mod bench;
mod fuzz;
mod layers;
mod lint;
mod setup;
mod testlog;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Build, run, test and benchmark the kube-apiserver tracer")]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Install what the build needs (toolchain, rust-src, LLVM, bpf-linker) and the Go sources of
    /// the etcd test target (Debian's golang-go, golang-etcd-server-dev, golang-google-grpc-dev).
    Setup,
    /// Build the eBPF object and the agent (release).
    Build,
    /// Build and run the agent: `cargo xtask run -- --comm kube-apiserver`.
    Run {
        /// Flags for the tracer.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every fuzz target for a while (default 60 s each).
    Fuzz {
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
    /// Every test: unit tests, the root integration tests that load the real probes, and a short
    /// run of every fuzz target.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The house rules alone: the module graph, formatting and lints (`cargo xtask test` runs them
    /// first).
    Lint,
    /// Measure the tracer's cost (untraced vs traced); report in target/bench/report.json.
    Bench {
        /// A shorter run (under 5 minutes on 2 cores).
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.verb {
        Verb::Setup => setup::ensure_build_tools().and_then(|()| setup::ensure_go_etcd_sources()),
        Verb::Build => setup::ensure_build_tools().and_then(|()| build_release()).map(|_| ()),
        Verb::Run { args } => run(&args),
        Verb::Test { args } => test(&args),
        Verb::Lint => setup::ensure_build_tools().and_then(|()| lint()),
        Verb::Fuzz { seconds } => setup::ensure_build_tools().and_then(|()| fuzz::run(seconds)),
        Verb::Bench { quick } => bench::run(quick),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

pub fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

fn build_release() -> Result<PathBuf> {
    status(cargo().args(["build", "--release", "--package", "tracer"]))?;
    Ok(workspace_root().join("target/release/tracer"))
}

fn run(args: &[String]) -> Result<()> {
    setup::ensure_build_tools()?;
    let bin = build_release()?;
    let st = Command::new(&bin).args(args).status().with_context(|| format!("cannot start {}", bin.display()))?;
    std::process::exit(st.code().unwrap_or(1));
}

fn lint() -> Result<()> {
    setup::ensure_lint_tools()?;
    layers::check(&workspace_root())?;
    lint::check()
}

fn test(args: &[String]) -> Result<()> {
    setup::ensure_build_tools()?;
    setup::ensure_test_tools()?;
    if unsafe_geteuid() != 0 {
        bail!("the integration tests load eBPF programs: run `cargo xtask test` as root");
    }
    // The house rules first: they take a minute or two where the tests take many. A failure is
    // reported at the end, with the tests', so that one run shows everything.
    let lint = lint();
    if let Err(e) = &lint {
        eprintln!("xtask: error: the lint step failed: {e:#}");
    }
    status(cargo().args(["build", "--package", "tracer"]))?;
    let tracer = workspace_root().join("target/debug/tracer");
    let go_programs = setup::build_go_programs()?;
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--exclude", "tracer-ebpf", "--no-fail-fast"])
        .args(args)
        .env("TRACER_BIN", &tracer);
    cmd.envs(go_programs.iter().cloned());
    let first = testlog::run(&mut cmd, "cargo test --workspace");
    // This kernel has the socket hooks, which the tracer picks. The syscall hooks are its fallback
    // for kernels before 6.3: the protocol suites run again with them, and with the Go TLS probes
    // at every entry and RET, the fallback for Go builds whose code does not allow one probe per
    // call.
    let protocols = ["http1", "http2", "etcd", "tls"];
    let fallback_env = [("ITEST_PROBE_MODE", "syscalls"), ("ITEST_GO_TLS_PROBES", "entry-and-rets")];
    eprintln!(
        "xtask: the protocol suites again, with the fallback hooks \
         (ITEST_PROBE_MODE=syscalls, ITEST_GO_TLS_PROBES=entry-and-rets)"
    );
    let fallback = testlog::run(
        &mut suites(&tracer, &go_programs, &protocols, &fallback_env, args),
        "cargo test (fallback hooks)",
    );
    // Between the two sets of Go TLS probe points, the one `auto` falls back to when a Read has
    // no plaintext copy to probe: Read at its RETs alone, its arguments from their spill slots.
    eprintln!("xtask: the Go TLS suite again, with Read probed at its RETs (ITEST_GO_TLS_PROBES=rets)");
    let rets_env = [("ITEST_GO_TLS_PROBES", "rets")];
    let read_rets =
        testlog::run(&mut suites(&tracer, &go_programs, &["tls"], &rets_env, args), "cargo test (Go TLS Read RETs)");
    // Fuzz even when a test failed, so one run shows everything; then end with what failed, as
    // the last lines of the log.
    let fuzz = fuzz::run(FUZZ_SECONDS_IN_TEST);
    let mut failed = Vec::new();
    for (pass, run) in [("socket hooks", first?), ("fallback hooks", fallback?), ("Go TLS Read RETs", read_rets?)] {
        failed.extend(run.into_iter().map(|f| (pass.to_string(), f)));
    }
    testlog::print_summary(&failed);
    lint.context("the lint step (module graph, rustfmt, clippy)")?;
    fuzz?;
    if !failed.is_empty() {
        bail!("{} test(s) failed (listed above)", failed.len());
    }
    Ok(())
}

/// `cargo test` of the integration test files `tests`, with the harness's `ITEST_*` settings `env`.
fn suites(
    tracer: &Path,
    go_programs: &[(String, String)],
    tests: &[&str],
    env: &[(&str, &str)],
    args: &[String],
) -> Command {
    let mut cmd = cargo();
    cmd.args(["test", "--package", "integration-tests", "--no-fail-fast"]);
    cmd.args(tests.iter().flat_map(|t| ["--test", t])).args(args);
    cmd.env("TRACER_BIN", tracer).envs(env.iter().copied()).envs(go_programs.iter().cloned());
    cmd
}

/// Each fuzz target's share of `cargo xtask test`: brief, as a regression guard.
const FUZZ_SECONDS_IN_TEST: u32 = 15;

fn unsafe_geteuid() -> u32 {
    // Avoids a libc dependency: /proc/self/status has the effective uid second on the Uid line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}
