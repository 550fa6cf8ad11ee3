//! How soon after its exec a Go process is probed: the agent's own figure from its `Go TLS
//! probes ready` log line (`exec_to_ready_us`: from the exec, as the kernel timestamped it, to the
//! probes in place), for the first sight of a binary and for a binary already seen.
//!
//! Each round starts a tracer with `--comm` and `--go-tls-idle-release 0`, and a fresh copy of the
//! stripped Go client of tests/go under that name, then execs:
//! 1. the new file: `first-sight` (read and analysed, probes attached);
//! 2. the same file while 1 still runs: `already-attached` (the probes were there before the exec,
//!    0 by definition: a check that the agent says so);
//! 3. the same file again, [`CACHED_EXECS`] times, each after the probes of the last were released
//!    (no process ran it): `cached` (the analysis reused, the probes attached again).
//!
//! Every process waits on its stdin until the line for its pid is logged, so none exits before
//! its probes are ready.

use std::{process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use harness::ProbesReady;
use serde_json::json;

use super::context::{Budget, Ctx, Scenario, median, say};
use super::procs::{Proc, TempDir, Tracer, spawn};

/// Execs after the probes were released, per round.
const CACHED_EXECS: usize = 2;
/// How long a process may wait for its readiness line, and the tracer for releasing probes.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// What the tracer logs when it releases the probes of an executable.
const RELEASED: &str = "Go TLS probes released";
/// The kinds of readiness, in the order each round produces them.
const KINDS: [&str; 3] = ["first-sight", "already-attached", "cached"];

/// One exec: what the agent logged for it, and the time from the spawn to the bench reading that
/// line (an upper bound seen from outside: it adds the spawn and the log's way through a pipe).
struct Sample {
    ready: ProbesReady,
    observed_ms: f64,
}

pub fn exec_ready_scenario(ctx: &mut Ctx) -> Result<()> {
    let client = crate::setup::build_go_program("http-client", "bench_go_http_client", &["-ldflags=-s -w"])?;
    let size_mb = std::fs::metadata(&client)?.len() as f64 / 1e6;
    let mut samples: Vec<Sample> = Vec::new();
    for round in 0..ctx.p.rounds {
        let dir = TempDir::new_in(&ctx.work, &format!("exec-ready-{round}"))?;
        let comm = format!("xready{round}");
        let bin = dir.join(&comm);
        std::fs::copy(&client, &bin).with_context(|| format!("copying {} to {}", client.display(), bin.display()))?;
        let mut tracer = Tracer::start_comm(&ctx.tracer, &comm, &["--go-tls-idle-release", "0"])?;
        let (first, mut first_proc) = exec_once(&mut tracer, &bin)?;
        let (again, mut again_proc) = exec_once(&mut tracer, &bin)?;
        samples.extend([first, again]);
        first_proc.kill();
        again_proc.kill();
        for released in 1..=CACHED_EXECS {
            tracer.wait_count(RELEASED, released, READY_TIMEOUT)?;
            let (cached, mut proc) = exec_once(&mut tracer, &bin)?;
            samples.push(cached);
            proc.kill();
        }
        tracer.stop()?;
    }
    let per_round: Vec<&str> = samples.iter().map(|s| s.ready.binary.as_str()).collect();
    let expected: Vec<&str> =
        (0..ctx.p.rounds).flat_map(|_| KINDS.iter().copied().chain([KINDS[2]; CACHED_EXECS - 1])).collect();
    if per_round != expected {
        bail!("the agent's readiness kinds, {per_round:?}, are not the expected {expected:?}");
    }
    let what =
        format!("the stripped Go client of tests/go ({size_mb:.1} MB) under --comm, the agent's exec_to_ready_us");
    let mut figures = serde_json::Map::new();
    for kind in KINDS {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.ready.binary == kind).collect();
        let us: Vec<f64> = mine.iter().map(|s| s.ready.exec_to_ready_us as f64).collect();
        let observed = median(&mine.iter().map(|s| s.observed_ms).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        ctx.scenarios.push(
            Scenario::new(&format!("exec_to_probes_ready_{}", kind.replace('-', "_")), "us", Budget::None)
                .samples(Vec::new(), us.clone())
                .note(format!(
                    "{what}, {} execs ({kind}); spawn to the line read by the bench: {observed:.1} ms (median)",
                    us.len()
                )),
        );
        say(format!(
            "exec to probes ready, {kind}: {:.0} us (median of {})",
            median(&us).unwrap_or(f64::NAN),
            us.len()
        ));
        figures.insert(kind.to_owned(), json!({"exec_to_ready_us": us, "spawn_to_line_read_ms_median": observed}));
    }
    ctx.extra.insert("exec_ready", json!(figures));
    Ok(())
}

/// Execs `bin` (waiting on its stdin) and waits for its readiness line; the process goes on.
fn exec_once(tracer: &mut Tracer, bin: &std::path::Path) -> Result<(Sample, Proc)> {
    let started = std::time::Instant::now();
    let mut cmd = Command::new(bin);
    cmd.args(["-wait-stdin", "-url", "https://127.0.0.1:1/"]);
    let proc = spawn("go-http-client", &mut cmd)?;
    let pid = proc.pid();
    let ready = tracer
        .wait_log(&|l| ProbesReady::parse(l).filter(|r| r.pid == pid), READY_TIMEOUT)
        .with_context(|| format!("no `{}` line for pid {pid}", harness::PROBES_READY))?;
    let observed_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok((Sample { ready, observed_ms }, proc))
}
