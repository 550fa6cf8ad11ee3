//! `cargo xtask bench [--quick]`: what the tracer costs, measured side by side in one run.
//!
//! Every scenario alternates untraced and traced runs against the same server process (ABBA
//! order, so drift cancels), several rounds, and compares medians:
//!
//! 1. nginx (one process) under wrk, etcd under a gRPC Put/Range load, and a Go HTTPS server
//!    (crypto/tls, read through uprobes) under wrk (HTTP/1.1) and h2load (HTTP/2): throughput,
//!    p50, p99;
//! 2. the tax on untraced processes: ns per syscall added to a syscall loop by a loaded tracer;
//! 3. the ceiling: wrk connections raised until the tracer loses events or saturates a core;
//! 4. the agent: CPU per 1k requests, peak RSS, RSS with 10k live connections;
//! 5. per eBPF program: kernel run time per run (BPF_ENABLE_STATS);
//! 6. how soon a new Go process is probed: exec to probes ready, for a binary seen for the first
//!    time and for one already seen;
//! 7. the apiserver-like target (`apiserver`): API requests that call etcd and a webhook, nested
//!    into traces: throughput, the agent's CPU per request, and every program's runs per request
//!    (the traps of the uprobes).
//!
//! Traced runs export their spans over OTLP (gRPC, the tracer's default) to a local sink, as a
//! deployment would to its collector (`XTASK_BENCH_EXPORT` says otherwise).
//!
//! A table goes to stdout and `target/bench/report.json` gets every figure with the machine it
//! was measured on. A missed budget is a finding, not a failure: the bench exits non-zero only
//! when it could not measure (a tool or server broke), with one line saying what.

mod agentcost;
mod apiserver;
mod arms;
mod bpfstats;
mod context;
mod exec_ready;
mod grpc;
mod load;
mod procs;
mod report;
mod server_scenarios;
mod servers;
mod setup;
mod system_scenarios;

use std::{collections::BTreeMap, time::Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::workspace_root;
use context::{Ctx, Export, Params, Scenario, say};
use exec_ready::exec_ready_scenario;
use report::print_table;
use server_scenarios::{etcd_scenario, etcd_tls_scenario, go_tls_h2_scenario, go_tls_scenario, nginx_scenario};
use servers::OtlpSink;
use setup::{ensure_tools, is_root, machine_info, machine_warnings, tracer_binary};
use system_scenarios::{
    agent_instructions_scenario, bpf_stats_scenario, ceiling_scenario, live_connections_scenario, syscall_tax_scenario,
};

pub fn run(quick: bool) -> Result<()> {
    let started = Instant::now();
    if !is_root() {
        bail!("the bench loads eBPF programs and starts servers: run `cargo xtask bench` as root");
    }
    let root = workspace_root();
    let out_dir = root.join("target/bench");
    let work = out_dir.join("run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    servers::remove_stale_etcd_dirs();
    let export = Export::from_env()?;
    let tools = ensure_tools()?;
    let tracer = tracer_binary(&root, &work)?;
    let sink = match export {
        Export::None => None,
        _ => Some(OtlpSink::start(
            &crate::setup::build_go_program("otlp-sink", "bench_otlp_sink", &["-ldflags=-s -w"])?,
            &work,
        )?),
    };
    let gcc = tools["gcc"].clone();
    let mut ctx = Ctx {
        p: Params::new(quick),
        work: work.clone(),
        tracer,
        wrk: tools["wrk"].clone(),
        h2load: tools["h2load"].clone(),
        nginx: tools["nginx"].clone(),
        etcd: tools["etcd"].clone(),
        gcc,
        openssl: tools["openssl"].clone(),
        export,
        sink,
        scenarios: Vec::new(),
        extra: BTreeMap::new(),
        warnings: Vec::new(),
    };
    let nofile = load::raise_nofile(65536)?;
    // Room for the live connections (both ends are on this machine: the bench and nginx each need
    // one fd per connection, in different processes).
    if nofile < ctx.p.live_conns as u64 + 1000 {
        let n = (nofile.saturating_sub(1000)) as usize;
        let w = format!(
            "RLIMIT_NOFILE is {nofile} (hard limit): live connections lowered from {} to {n}",
            ctx.p.live_conns
        );
        say(format!("warning: {w}"));
        ctx.warnings.push(w);
        ctx.p.live_conns = n;
    }
    let mut machine = machine_info(&root, &ctx);
    for w in machine_warnings(&machine) {
        say(format!("warning: {w}"));
        ctx.warnings.push(w);
    }
    let probe_mode = std::env::var("TRACER_PROBE_MODE").unwrap_or_else(|_| "auto".into());
    say(format!(
        "{} run, tracer {} (probe mode {probe_mode}), spans exported: {}, work dir {}",
        ctx.p.mode,
        ctx.tracer.display(),
        ctx.export.describe(),
        work.display()
    ));

    let mut errors = Vec::new();
    type Step = fn(&mut Ctx) -> Result<()>;
    let steps: [(&str, Step); 12] = [
        ("nginx", nginx_scenario),
        ("etcd", etcd_scenario),
        ("go tls", go_tls_scenario),
        ("go tls h2", go_tls_h2_scenario),
        ("etcd tls", etcd_tls_scenario),
        ("apiserver", apiserver::apiserver_scenario),
        ("syscall tax", syscall_tax_scenario),
        ("ceiling", ceiling_scenario),
        ("live connections", live_connections_scenario),
        ("bpf stats", bpf_stats_scenario),
        ("agent instructions", agent_instructions_scenario),
        ("exec ready", exec_ready_scenario),
    ];
    // XTASK_BENCH_ONLY=nginx,etcd,... runs a subset (names as printed, spaces optional).
    let only: Option<Vec<String>> =
        std::env::var("XTASK_BENCH_ONLY").ok().map(|v| v.split(',').map(|s| s.trim().replace(' ', "")).collect());
    for (name, step) in steps {
        if only.as_ref().is_some_and(|o| !o.contains(&name.replace(' ', ""))) {
            continue;
        }
        let t = Instant::now();
        say(format!("--- {name}"));
        if let Err(e) = step(&mut ctx) {
            let msg = format!("{name}: {}", format!("{e:#}").replace('\n', " "));
            say(format!("error: {msg}"));
            errors.push(msg);
        }
        say(format!("{name} took {:.0} s", t.elapsed().as_secs_f64()));
    }

    if let Some(sink) = &ctx.sink {
        match sink.counts() {
            Ok(c) => {
                if c.malformed > 0 {
                    let w =
                        format!("the OTLP sink received {} requests that were not valid OTLP protobuf", c.malformed);
                    say(format!("warning: {w}"));
                    ctx.warnings.push(w);
                }
                ctx.extra.insert(
                    "otlp_sink",
                    json!({"exports": c.exports, "spans": c.spans, "bytes": c.bytes, "gzipped": c.gzipped, "malformed": c.malformed,
                        "bytes_per_span": c.bytes as f64 / c.spans.max(1) as f64}),
                );
            }
            Err(e) => ctx.warnings.push(format!("the OTLP sink's counts could not be read at the end: {e:#}")),
        }
    }
    machine["loadavg_end"] = json!(procs::read_small("/proc/loadavg").trim());
    let elapsed = started.elapsed().as_secs_f64();
    print_table(&ctx);
    let mut parameters = ctx.p.to_json();
    parameters["export"] = json!(ctx.export.describe());
    // The tracers inherit TRACER_OTLP_COMPRESSION: `gzip` benches compressed export.
    parameters["otlp_compression"] = json!(std::env::var("TRACER_OTLP_COMPRESSION").unwrap_or_else(|_| "none".into()));
    let report = json!({
        "generated_unix_s": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "mode": ctx.p.mode,
        "elapsed_s": (elapsed * 10.0).round() / 10.0,
        "machine": machine,
        "parameters": parameters,
        "only": only,
        "scenarios": ctx.scenarios.iter().map(Scenario::to_json).collect::<Vec<_>>(),
        "details": ctx.extra,
        "warnings": ctx.warnings,
        "errors": errors,
    });
    // report.json is the latest run; report-quick.json / report-full.json keep the latest complete
    // run of each kind.
    let path = out_dir.join("report.json");
    let text = serde_json::to_string_pretty(&report)? + "\n";
    let mut paths = vec![path.clone()];
    if only.is_none() {
        paths.push(out_dir.join(format!("report-{}.json", ctx.p.mode)));
    }
    for p in paths {
        std::fs::write(&p, &text).with_context(|| format!("writing {}", p.display()))?;
    }
    println!();
    println!("report: {} ({} run, {:.0} s)", path.display(), ctx.p.mode, elapsed);
    let missed: Vec<&str> =
        ctx.scenarios.iter().filter(|s| s.meets() == Some(false)).map(|s| s.name.as_str()).collect();
    if !missed.is_empty() {
        println!("budgets missed: {}", missed.join(", "));
    }
    if !errors.is_empty() {
        bail!("{} scenario(s) could not be measured: {}", errors.len(), errors.join("; "));
    }
    Ok(())
}
