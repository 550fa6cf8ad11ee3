//! How a scenario runs: arms (untraced, traced, empty probes) in ABBA rounds, what one traced run
//! cost the agent, and what one run cost the host.

use std::{
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::context::{Ctx, say};
use super::load::{self, WrkResult};
use super::procs::{self, FinalStats};

/// One traced run's figures from the agent.
#[derive(Debug, Clone, Default)]
pub struct AgentRun {
    pub cpu_s: f64,
    /// Context switches of all its threads during the load.
    pub switches: u64,
    pub hwm_kib: u64,
    pub stats: FinalStats,
    /// Spans the OTLP sink received from this run, and the sink's CPU time meanwhile.
    pub sink_spans: u64,
    pub sink_cpu_s: f64,
}

impl AgentRun {
    pub fn stat(&self, key: &str) -> u64 {
        self.stats.get(key).copied().unwrap_or(0)
    }
}

/// One figure of each run.
pub fn col<T>(runs: &[T], f: fn(&T) -> f64) -> Vec<f64> {
    runs.iter().map(f).collect()
}

pub fn agent_runs_json(runs: &[AgentRun]) -> Value {
    json!(runs
        .iter()
        .map(|a| json!({"cpu_s": a.cpu_s, "context_switches": a.switches, "vm_hwm_kib": a.hwm_kib, "final_stats": a.stats,
            "sink_spans": a.sink_spans, "sink_cpu_s": a.sink_cpu_s}))
        .collect::<Vec<_>>())
}

/// Starts the tracer on `pid`, runs `load`, stops the tracer: the load's result and the agent's
/// CPU time during the load, peak RSS and final stats, and what the OTLP sink received.
pub fn traced<T>(ctx: &Ctx, pid: u32, extra: &[&str], load: impl FnOnce() -> Result<T>) -> Result<(T, AgentRun)> {
    let (sink0, sink_cpu0) = ctx.sink_snapshot()?;
    let tracer = ctx.start_tracer(pid, extra)?;
    sleep(Duration::from_millis(300));
    let cpu0 = tracer.cpu_seconds()?;
    let sw0 = tracer.context_switches();
    let result = load();
    let cpu1 = tracer.cpu_seconds().unwrap_or(cpu0);
    let sw1 = tracer.context_switches();
    let hwm = tracer.status_kib("VmHWM").unwrap_or(0);
    // The tracer exports what is queued before it exits.
    let stats = tracer.stop();
    let result = result?;
    let (sink1, sink_cpu1) = ctx.sink_snapshot()?;
    Ok((
        result,
        AgentRun {
            cpu_s: cpu1 - cpu0,
            switches: sw1.saturating_sub(sw0),
            hwm_kib: hwm,
            stats: stats?,
            sink_spans: sink1.spans.saturating_sub(sink0.spans),
            sink_cpu_s: sink_cpu1 - sink_cpu0,
        },
    ))
}

/// How a server or a syscall loop runs in one round of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    Untraced,
    Traced,
    /// The tracer with `--empty-probes`: every hook in place, every program returning at once.
    /// What no tracer on these hooks can go below on this machine.
    EmptyProbes,
}

impl Arm {
    /// The tracer's extra arguments.
    pub fn tracer_args(self) -> &'static [&'static str] {
        if self == Arm::EmptyProbes { &["--empty-probes"] } else { &[] }
    }
}

/// The arms of a round, alternating in ABBA order (forwards, then backwards) so that a drift
/// over the run weighs on every arm alike.
pub fn round_arms(round: usize, with_empty_probes: bool) -> Vec<Arm> {
    let mut arms = vec![Arm::Untraced, Arm::Traced];
    if with_empty_probes {
        arms.push(Arm::EmptyProbes);
    }
    if !round.is_multiple_of(2) {
        arms.reverse();
    }
    arms
}

/// The samples of each arm of a scenario.
pub struct ArmRuns<T> {
    pub base: Vec<T>,
    pub traced: Vec<T>,
    pub agent: Vec<AgentRun>,
    /// Empty when the scenario ran without that arm.
    pub empty_probes: Vec<T>,
    /// What the host paid during each run of `base`, `traced` and `empty_probes`.
    pub host: [Vec<HostCost>; 3],
}

impl<T> Default for ArmRuns<T> {
    fn default() -> Self {
        ArmRuns {
            base: Vec::new(),
            traced: Vec::new(),
            agent: Vec::new(),
            empty_probes: Vec::new(),
            host: Default::default(),
        }
    }
}

/// What one measured run cost the host beyond the load generator's figures: the server's CPU
/// time, all CPUs' busy time (server, load generator, agent, sink and kernel together), and the
/// interrupts its wake-ups of tasks on other CPUs took.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostCost {
    pub server_cpu_s: f64,
    pub machine_busy_s: f64,
    /// Wall time of the run, over which `machine_busy_s` was spent.
    pub wall_s: f64,
    pub ipis: u64,
}

/// Runs `run` and measures its [`HostCost`] on the server `pid`.
pub fn with_host_cost<T>(pid: u32, run: &dyn Fn() -> Result<T>) -> Result<(T, HostCost)> {
    let (cpu0, busy0, ipis0) = (procs::cpu_seconds(pid)?, procs::machine_busy_seconds(), procs::wakeup_ipis());
    let start = Instant::now();
    let r = run()?;
    let cost = HostCost {
        server_cpu_s: procs::cpu_seconds(pid)? - cpu0,
        machine_busy_s: procs::machine_busy_seconds() - busy0,
        wall_s: start.elapsed().as_secs_f64(),
        ipis: procs::wakeup_ipis().saturating_sub(ipis0),
    };
    Ok((r, cost))
}

pub fn fmt(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

pub fn fmt_opt(v: Option<f64>) -> String {
    v.map(fmt).unwrap_or_else(|| "-".into())
}

/// Rounds of wrk against `url` on the server `pid` (see [`load_rounds`]).
pub fn wrk_rounds(
    ctx: &Ctx,
    label: &str,
    pid: u32,
    url: &str,
    check_alive: &mut dyn FnMut() -> Result<()>,
) -> Result<ArmRuns<WrkResult>> {
    let p = &ctx.p;
    load_rounds(ctx, label, pid, p.wrk_secs, &|secs| load::wrk(&ctx.wrk, url, 1, p.wrk_conns, secs), check_alive)
}

/// Rounds of an HTTP load (`run` for `secs` seconds) on the server `pid`, after a 2 s warm-up
/// (see [`arm_rounds`]).
pub fn load_rounds(
    ctx: &Ctx,
    label: &str,
    pid: u32,
    secs: u64,
    run: &dyn Fn(u64) -> Result<WrkResult>,
    check_alive: &mut dyn FnMut() -> Result<()>,
) -> Result<ArmRuns<WrkResult>> {
    run(2).context("warm-up")?;
    let describe =
        |r: &WrkResult| format!("{:>9.0} req/s p50 {:.3} ms p99 {:.3} ms", r.req_per_sec, r.p50_ms, r.p99_ms);
    arm_rounds(ctx, label, pid, &|| run(secs), describe, check_alive)
}

/// Rounds of one measured load (`run`) on the server `pid`, in the arms of [`round_arms`], each
/// run logged with `describe`: the samples of each arm, and the agent of each traced run.
pub fn arm_rounds<T>(
    ctx: &Ctx,
    label: &str,
    pid: u32,
    run: &dyn Fn() -> Result<T>,
    describe: fn(&T) -> String,
    check_alive: &mut dyn FnMut() -> Result<()>,
) -> Result<ArmRuns<T>> {
    let p = &ctx.p;
    let mut runs = ArmRuns::default();
    for round in 0..p.rounds {
        for arm in round_arms(round, p.empty_probe_servers) {
            let head = format!("{label} round {}/{}", round + 1, p.rounds);
            match arm {
                Arm::Untraced => {
                    let (r, h) = with_host_cost(pid, run)?;
                    say(format!("{head} untraced: {}", describe(&r)));
                    runs.base.push(r);
                    runs.host[0].push(h);
                }
                Arm::Traced => {
                    let ((r, h), a) = traced(ctx, pid, arm.tracer_args(), || with_host_cost(pid, run))?;
                    runs.host[1].push(h);
                    say(format!(
                        "{head} traced:   {} | agent {:.2} s CPU, events {}, spans {}, lost {}",
                        describe(&r),
                        a.cpu_s,
                        a.stat("events"),
                        a.stat("spans"),
                        a.stat("lost_ringbuf_full")
                    ));
                    runs.traced.push(r);
                    runs.agent.push(a);
                }
                Arm::EmptyProbes => {
                    let ((r, h), _) = traced(ctx, pid, arm.tracer_args(), || with_host_cost(pid, run))?;
                    runs.host[2].push(h);
                    say(format!("{head} empty probes: {}", describe(&r)));
                    runs.empty_probes.push(r);
                }
            }
            check_alive()?;
        }
    }
    Ok(runs)
}
