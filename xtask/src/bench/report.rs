//! The scenarios' figures from the arms' samples (throughput, latency, host and tracer CPU per
//! request, export), and the table printed at the end.

use super::arms::{AgentRun, ArmRuns, HostCost, col, fmt, fmt_opt};
use super::context::{Budget, Ctx, Scenario, median, say};
use super::load::WrkResult;
use super::procs;

/// `<label>_throughput`, `_latency_p50` and `_latency_p99` from load rounds: each note is `conf`
/// (with the load generator's errors, if any), the throughput's also what the agent reported,
/// then `extra`. Warns when the traced runs gave no span at all.
pub fn push_wrk_scenarios(ctx: &mut Ctx, label: &str, runs: &ArmRuns<WrkResult>, conf: String, extra: &str) {
    let (base, tr, agent) = (&runs.base, &runs.traced, &runs.agent);
    let errors: u64 = base.iter().chain(tr).chain(&runs.empty_probes).map(|r| r.errors).sum();
    let conf = if errors > 0 { format!("{conf}; load generator errors (socket, non-2xx): {errors}") } else { conf };
    let spans: u64 = agent.iter().map(|a| a.stat("spans")).sum();
    let requests: u64 = tr.iter().map(|r| r.requests).sum();
    let lost: u64 = agent.iter().map(|a| a.stat("lost_ringbuf_full")).sum();
    if spans == 0 {
        let w = format!("{label}: the tracer reported no spans for the traced runs: it did not decode the traffic");
        say(format!("warning: {w}"));
        ctx.warnings.push(w);
    }
    let exported = export_summary(ctx, label, agent);
    let note = format!("{conf}; traced: {spans} spans for {requests} requests, {lost} lost events{extra}{exported}");
    let prefix = label.replace(' ', "_");
    ctx.scenarios.push(
        Scenario::new(&format!("{prefix}_throughput"), "req/s", Budget::MinRatio(THROUGHPUT_BUDGET))
            .samples(col(base, |r| r.req_per_sec), col(tr, |r| r.req_per_sec))
            .note(note),
    );
    ctx.scenarios.push(
        Scenario::new(&format!("{prefix}_latency_p50"), "ms", Budget::None)
            .samples(col(base, |r| r.p50_ms), col(tr, |r| r.p50_ms))
            .note(conf.clone()),
    );
    ctx.scenarios.push(
        Scenario::new(&format!("{prefix}_latency_p99"), "ms", Budget::MaxRatio(1.03))
            .samples(col(base, |r| r.p99_ms), col(tr, |r| r.p99_ms))
            .note(conf.clone()),
    );
    push_empty_probe_scenarios(
        ctx,
        &prefix,
        "req/s",
        (base, &runs.empty_probes),
        &conf,
        |r| r.req_per_sec,
        |r| r.p99_ms,
    );
    push_host_scenarios(ctx, &prefix, runs, |r| r.requests);
}

/// What became of the traced runs' spans: exported, received by the sink, dropped, and the sink's
/// CPU per 1k spans. Warns when spans were dropped or the sink did not receive what was exported.
pub fn export_summary(ctx: &mut Ctx, label: &str, agent: &[AgentRun]) -> String {
    if ctx.sink.is_none() {
        return "; spans not exported (--output none)".into();
    }
    let sum = |key: &str| agent.iter().map(|a| a.stat(key)).sum::<u64>();
    let exported = sum("exported");
    let dropped = sum("dropped_queue_full") + sum("dropped_export_failed");
    let received: u64 = agent.iter().map(|a| a.sink_spans).sum();
    let sink_cpu: f64 = agent.iter().map(|a| a.sink_cpu_s).sum();
    if dropped > 0 || received != exported {
        let w = format!(
            "{label}: {dropped} spans dropped before export; {exported} exported, {received} received by the OTLP sink"
        );
        say(format!("warning: {w}"));
        ctx.warnings.push(w);
    }
    format!(
        "; spans exported: {}, {exported} exported, {received} received, {dropped} dropped; the sink used {:.3} ms CPU per 1k spans",
        ctx.export.describe(),
        sink_cpu * 1e6 / received.max(1) as f64
    )
}

/// `<prefix>_throughput_empty_probes` and `_latency_p99_empty_probes`: untraced against the tracer
/// with `--empty-probes`, when the scenario ran that arm. No budget: they are the floor under the
/// traced figures, what the kernel charges for the hooks alone (dispatch, traps).
pub fn push_empty_probe_scenarios<T>(
    ctx: &mut Ctx,
    prefix: &str,
    unit: &'static str,
    (base, empty): (&[T], &[T]),
    conf: &str,
    throughput: fn(&T) -> f64,
    p99: fn(&T) -> f64,
) {
    if empty.is_empty() {
        return;
    }
    let note = format!(
        "{conf}; baseline untraced, traced = the tracer with --empty-probes: every hook attached, every program returning at its first instruction"
    );
    ctx.scenarios.push(
        Scenario::new(&format!("{prefix}_throughput_empty_probes"), unit, Budget::None)
            .samples(col(base, throughput), col(empty, throughput))
            .note(note.clone()),
    );
    ctx.scenarios.push(
        Scenario::new(&format!("{prefix}_latency_p99_empty_probes"), "ms", Budget::None)
            .samples(col(base, p99), col(empty, p99))
            .note(note),
    );
}

/// `<prefix>_server_cpu_per_request`, `_machine_cpu_per_request`, `_wakeup_ipis_per_request` and
/// `_tracer_cpu_per_request`: where a throughput miss goes. No budget. With a closed-loop load
/// generator on few CPUs, the server's cost per request rises by more than the probes' run time:
/// when the server slows, the load generator waits more often, its CPU halts, and each wake-up of
/// it is an interrupt that the server pays for.
pub fn push_host_scenarios<T>(ctx: &mut Ctx, prefix: &str, runs: &ArmRuns<T>, requests: fn(&T) -> u64) {
    let per_request = |rs: &[T], hs: &[HostCost], f: fn(&HostCost) -> f64| per_request(rs, hs, requests, f);
    let [base, traced, empty] = &runs.host;
    let busy = |hs: &[HostCost]| {
        fmt_opt(median(&hs.iter().map(|h| h.machine_busy_s / h.wall_s.max(1e-9)).collect::<Vec<_>>()))
    };
    let machine_note = format!(
        "all CPUs' busy time (/proc/stat: user, nice, system, irq, softirq) per request: server, load generator, agent, OTLP sink and kernel together; CPUs busy: {} of {} untraced, {} traced (medians)",
        busy(base),
        procs::cpu_count_in(&procs::read_small("/proc/cpuinfo")),
        busy(traced)
    );
    let mut push = |name: &str, unit: &'static str, f: fn(&HostCost) -> f64, what: &str| {
        let empty_note = median(&per_request(&runs.empty_probes, empty, f))
            .map(|m| format!("; with --empty-probes: {}", fmt(m)))
            .unwrap_or_default();
        ctx.scenarios.push(
            Scenario::new(&format!("{prefix}_{name}"), unit, Budget::None)
                .samples(per_request(&runs.base, base, f), per_request(&runs.traced, traced, f))
                .note(format!("{what}{empty_note}")),
        );
    };
    push(
        "server_cpu_per_request",
        "us CPU",
        |h| h.server_cpu_s * 1e6,
        "the server's utime+stime (all threads) per request",
    );
    push("machine_cpu_per_request", "us CPU", |h| h.machine_busy_s * 1e6, &machine_note);
    push(
        "wakeup_ipis_per_request",
        "IPIs",
        |h| h.ipis as f64,
        "function-call and rescheduling interrupts (/proc/interrupts, all CPUs) per request: wake-ups of tasks on other CPUs, which take one when that CPU had halted",
    );
    push_tracer_cpu_scenario(ctx, prefix, runs, requests);
}

/// `f` of each run's [`HostCost`], per request of that run.
pub fn per_request<T>(runs: &[T], hosts: &[HostCost], requests: fn(&T) -> u64, f: fn(&HostCost) -> f64) -> Vec<f64> {
    runs.iter().zip(hosts).map(|(r, h)| f(h) / requests(r).max(1) as f64).collect()
}

/// The throughput budget: traced at least this share of untraced.
pub const THROUGHPUT_BUDGET: f64 = 0.98;

/// `<prefix>_tracer_cpu_per_request`: the CPU the tracer takes per request against what the
/// throughput budget leaves it. When the load keeps every CPU busy (a closed loop on a small
/// machine, as here: the machine row's note says how busy), throughput is the CPUs over the
/// machine's CPU per request, so traced ≥ 0.98
/// of untraced leaves the tracer 1/0.98 − 1 ≈ 2.04 % of the untraced machine CPU per request, for
/// everything: its programs, the agent and whatever receives its spans on the same machine.
/// Baseline: that allowance, per untraced run. Traced: per traced run, the agent's CPU, the OTLP
/// sink's, and the server's CPU above its untraced median (the programs' run time inside its
/// syscalls and what they cause), per request. The ratio says how many times over it is.
pub fn push_tracer_cpu_scenario<T>(ctx: &mut Ctx, prefix: &str, runs: &ArmRuns<T>, requests: fn(&T) -> u64) {
    let [base_host, traced_host, _] = &runs.host;
    let allowance =
        per_request(&runs.base, base_host, requests, |h| h.machine_busy_s * 1e6 * (1.0 / THROUGHPUT_BUDGET - 1.0));
    let Some(base_server) = median(&per_request(&runs.base, base_host, requests, |h| h.server_cpu_s * 1e6)) else {
        return;
    };
    let server = per_request(&runs.traced, traced_host, requests, |h| h.server_cpu_s * 1e6);
    let parts: Vec<[f64; 3]> = runs
        .traced
        .iter()
        .zip(&runs.agent)
        .zip(server)
        .map(|((r, a), server)| {
            let n = requests(r).max(1) as f64;
            [a.cpu_s * 1e6 / n, a.sink_cpu_s * 1e6 / n, server - base_server]
        })
        .collect();
    let part = |i: usize| fmt_opt(median(&parts.iter().map(|p| p[i]).collect::<Vec<_>>()));
    let note = format!(
        "baseline: what traced throughput >= {THROUGHPUT_BUDGET} of untraced leaves the tracer per request while the load keeps every CPU busy \
         ({:.2} % of the untraced machine CPU per request); traced: agent {} + OTLP sink {} + the server's added CPU {} (its programs' run time and what they cause), medians in us",
        (1.0 / THROUGHPUT_BUDGET - 1.0) * 100.0,
        part(0),
        part(1),
        part(2)
    );
    ctx.scenarios.push(
        Scenario::new(&format!("{prefix}_tracer_cpu_per_request"), "us CPU", Budget::None)
            .samples(allowance, parts.iter().map(|p| p.iter().sum()).collect())
            .note(note),
    );
}

pub fn print_table(ctx: &Ctx) {
    println!();
    println!("tracer cost, {} run: medians of untraced (baseline) vs traced", ctx.p.mode);
    let w = ctx.scenarios.iter().map(|s| s.name.len()).max().unwrap_or(0).max(32);
    println!(
        "{:<w$} {:>11} {:>11} {:>7} {:>9} {:<9} {:<48} ok",
        "scenario", "baseline", "traced", "ratio", "delta", "unit", "budget"
    );
    for s in &ctx.scenarios {
        println!(
            "{:<w$} {:>11} {:>11} {:>7} {:>9} {:<9} {:<48} {}",
            s.name,
            fmt_opt(s.baseline),
            fmt_opt(s.traced),
            s.ratio().map(|r| format!("{r:.3}")).unwrap_or_else(|| "-".into()),
            fmt_opt(s.delta()),
            s.unit,
            s.budget_text().unwrap_or_else(|| "-".into()),
            match s.meets() {
                Some(true) => "yes",
                Some(false) => "MISSED",
                None => "-",
            }
        );
    }
    for s in ctx.scenarios.iter().filter(|s| !s.note.is_empty()) {
        println!("  {}: {}", s.name, s.note);
    }
    for w in &ctx.warnings {
        println!("warning: {w}");
    }
}
