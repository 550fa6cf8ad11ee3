//! How soon after its exec a Go process is probed: the agent's own figure from its `Go TLS
//! probes ready` log line (`exec_to_ready_us`: from the exec, as the kernel timestamped it, to the
//! probes in place), for the first sight of a binary and for a binary already seen.
//!
//! Each round starts a tracer with `--comm` and `--go-tls-idle-release 0`, and a fresh copy of the
//! stripped Go client of tests/go under that name (then the same with kubectl, when there is one:
//! the `_kubectl` rows), then execs:
//! 1. the new file: `first-sight` (read and analysed, probes attached);
//! 2. the same file while 1 still runs: `already-attached` (the probes were there before the exec,
//!    0 by definition: a check that the agent says so);
//! 3. the same file again, [`CACHED_EXECS`] times, each once the probes of the last were released
//!    (no process ran it): `cached` (the analysis reused, the probes attached again).
//!
//! Every process waits on its stdin until the line for its pid is logged, so none exits before
//! its probes are ready.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use harness::ProbesReady;
use serde_json::{Value, json};

use super::context::{Budget, Ctx, Scenario, median, say};
use super::procs::{Proc, TempDir, Tracer, spawn};

/// Execs after the probes were released, per round.
const CACHED_EXECS: usize = 2;
/// How long a process may wait for its readiness line, and the tracer for releasing probes.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// What the tracer logs once it has released the probes of an executable.
const RELEASED: &str = "Go TLS probes released";
/// The kinds of readiness, in the order each round produces them.
const KINDS: [&str; 3] = ["first-sight", "already-attached", "cached"];

/// One exec: what the agent logged for it, and the time from the spawn to the bench reading that
/// line (an upper bound seen from outside: it adds the spawn and the log's way through a pipe).
struct Sample {
    ready: ProbesReady,
    observed_ms: f64,
}

/// A program measured: a label for the scenario names, the file, and arguments that keep it
/// waiting on its stdin.
struct Subject {
    label: &'static str,
    what: String,
    bin: PathBuf,
    args: Vec<String>,
}

pub fn exec_ready_scenario(ctx: &mut Ctx) -> Result<()> {
    let client = crate::setup::build_go_program("http-client", "bench_go_http_client", &["-ldflags=-s -w"])?;
    let mut subjects = vec![Subject {
        label: "",
        what: format!("the stripped Go client of tests/go ({})", size_mb(&client)?),
        bin: client,
        args: ["-wait-stdin", "-url", "https://127.0.0.1:1/"].map(String::from).to_vec(),
    }];
    // kubectl, when there is one: `apply -f -` reads its stdin before it looks for a server (which
    // this kubeconfig names at a closed port).
    if let Some(kubectl) = harness::find_tool("kubectl") {
        let kubeconfig = ctx.work.join("exec-ready-kubeconfig");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: none\n  cluster: {server: 'https://127.0.0.1:1'}\n\
             contexts:\n- name: none\n  context: {cluster: none}\ncurrent-context: none\n",
        )?;
        let real = std::fs::canonicalize(&kubectl)?;
        subjects.push(Subject {
            label: "_kubectl",
            what: format!("kubectl ({}, {})", real.display(), size_mb(&real)?),
            bin: real,
            args: vec![
                "--kubeconfig".into(),
                kubeconfig.display().to_string(),
                "apply".into(),
                "-f".into(),
                "-".into(),
            ],
        });
    }
    let mut figures = serde_json::Map::new();
    for subject in &subjects {
        let samples = measure(ctx, subject)?;
        report(ctx, subject, &samples, &mut figures);
    }
    ctx.extra.insert("exec_ready", json!(figures));
    Ok(())
}

fn size_mb(path: &Path) -> Result<String> {
    Ok(format!("{:.1} MB", std::fs::metadata(path)?.len() as f64 / 1e6))
}

/// The rounds of the module comment for `subject`; an error unless each round's first exec was a
/// first sight.
fn measure(ctx: &Ctx, subject: &Subject) -> Result<Vec<Sample>> {
    let mut samples: Vec<Sample> = Vec::new();
    for round in 0..ctx.p.rounds {
        let dir = TempDir::new_in(&ctx.work, &format!("exec-ready-{round}"))?;
        let comm = format!("xready{round}");
        let bin = dir.join(&comm);
        std::fs::copy(&subject.bin, &bin)
            .with_context(|| format!("copying {} to {}", subject.bin.display(), bin.display()))?;
        let mut tracer = Tracer::start_comm(&ctx.tracer, &comm, &["--go-tls-idle-release", "0"])?;
        let (first, mut first_proc) = exec_once(&mut tracer, &bin, &subject.args, dir.path())?;
        let (again, mut again_proc) = exec_once(&mut tracer, &bin, &subject.args, dir.path())?;
        samples.extend([first, again]);
        first_proc.kill();
        again_proc.kill();
        for released in 1..=CACHED_EXECS {
            tracer.wait_count(RELEASED, released, READY_TIMEOUT)?;
            let (cached, mut proc) = exec_once(&mut tracer, &bin, &subject.args, dir.path())?;
            samples.push(cached);
            proc.kill();
        }
        tracer.stop()?;
    }
    // The agent's label sorts the samples; only a first exec's is known for sure (an exec racing
    // a release may find the probes still there).
    let firsts: Vec<&str> = samples.iter().step_by(2 + CACHED_EXECS).map(|s| s.ready.binary.as_str()).collect();
    if firsts.iter().any(|k| *k != KINDS[0]) {
        bail!("{}: the first exec of a new file was not a first sight: {firsts:?}", subject.what);
    }
    Ok(samples)
}

/// `exec_to_probes_ready_<kind><label>`: the medians of each kind of readiness.
fn report(ctx: &mut Ctx, subject: &Subject, samples: &[Sample], figures: &mut serde_json::Map<String, Value>) {
    for kind in KINDS {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.ready.binary == kind).collect();
        let us: Vec<f64> = mine.iter().map(|s| s.ready.exec_to_ready_us as f64).collect();
        let observed = median(&mine.iter().map(|s| s.observed_ms).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        let name = format!("exec_to_probes_ready_{}{}", kind.replace('-', "_"), subject.label);
        ctx.scenarios.push(Scenario::new(&name, "us", Budget::None).samples(Vec::new(), us.clone()).note(format!(
            "{} under --comm, the agent's exec_to_ready_us, {} execs ({kind}); spawn to the line read by the bench: \
             {observed:.1} ms (median)",
            subject.what,
            us.len()
        )));
        say(format!("{name}: {:.0} us (median of {})", median(&us).unwrap_or(f64::NAN), us.len()));
        figures.insert(name, json!({"exec_to_ready_us": us, "spawn_to_line_read_ms_median": observed}));
    }
}

/// Execs `bin` with `args` (waiting on its stdin; HOME in `home`) and waits for its readiness
/// line; the process goes on.
fn exec_once(tracer: &mut Tracer, bin: &Path, args: &[String], home: &Path) -> Result<(Sample, Proc)> {
    let started = std::time::Instant::now();
    let mut cmd = Command::new(bin);
    cmd.args(args).env("HOME", home);
    let proc = spawn("exec-ready", &mut cmd)?;
    let pid = proc.pid();
    let ready = tracer
        .wait_log(&|l| ProbesReady::parse(l).filter(|r| r.pid == pid), READY_TIMEOUT)
        .with_context(|| format!("no `{}` line for pid {pid}", harness::PROBES_READY))?;
    let observed_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok((Sample { ready, observed_ms }, proc))
}
