//! Scenario 1, servers untraced vs traced: nginx and etcd, the Go HTTPS server over HTTP/1.1
//! and HTTP/2, and etcd over TLS.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};

use super::arms::{ArmRuns, agent_runs_json, arm_rounds, col, fmt_opt, load_rounds, wrk_rounds};
use super::context::{Budget, Ctx, Scenario, median};
use super::load::{self, WrkResult, percentile_us};
use super::report::{
    THROUGHPUT_BUDGET, export_summary, push_empty_probe_scenarios, push_host_scenarios, push_wrk_scenarios,
};
use super::servers::{Etcd, GoHttps, Nginx};
use super::{grpc, procs, servers};

pub fn nginx_scenario(ctx: &mut Ctx) -> Result<()> {
    let p = ctx.p.clone();
    let mut nginx = Nginx::start(&ctx.nginx, &ctx.work)?;
    let runs = wrk_rounds(ctx, "nginx", nginx.pid(), &nginx.url(), &mut || nginx.check_alive())?;
    let conf = format!(
        "wrk -t1 -c{} -d{}s, {} B static file, {} rounds",
        p.wrk_conns,
        p.wrk_secs,
        servers::INDEX_SIZE,
        p.rounds
    );
    push_wrk_scenarios(ctx, "nginx", &runs, conf, "");
    let (tr, agent) = (&runs.traced, &runs.agent);
    let cpu_per_1k: Vec<f64> =
        agent.iter().zip(tr).map(|(a, r)| a.cpu_s * 1000.0 / (r.requests as f64 / 1000.0)).collect();
    let cores: Vec<f64> = agent.iter().zip(tr).map(|(a, r)| a.cpu_s / r.seconds).collect();
    let events_per_req: Vec<f64> =
        agent.iter().zip(tr).map(|(a, r)| a.stat("events") as f64 / r.requests as f64).collect();
    let switches_per_s: Vec<f64> = agent.iter().zip(tr).map(|(a, r)| a.switches as f64 / r.seconds).collect();
    let events_per_switch: Vec<f64> =
        agent.iter().map(|a| a.stat("events") as f64 / a.switches.max(1) as f64).collect();
    ctx.scenarios.push(
        Scenario::new("agent_cpu_per_1k_requests", "ms CPU", Budget::None)
            .samples(Vec::new(), cpu_per_1k)
            .note(format!(
                "agent utime+stime while nginx serves wrk -c{}: {} of a core, {} ring-buffer events per request, {} context switches/s ({} events per wake-up)",
                p.wrk_conns,
                fmt_opt(median(&cores)),
                fmt_opt(median(&events_per_req)),
                fmt_opt(median(&switches_per_s)),
                fmt_opt(median(&events_per_switch))
            )),
    );
    ctx.scenarios.push(
        Scenario::new("agent_rss_peak_under_load", "MiB", Budget::None)
            .samples(Vec::new(), agent.iter().map(|a| a.hwm_kib as f64 / 1024.0).collect())
            .note("VmHWM of the agent after a traced nginx run"),
    );
    ctx.extra.insert("nginx_agent_runs", agent_runs_json(agent));
    Ok(())
}

pub fn etcd_scenario(ctx: &mut Ctx) -> Result<()> {
    let p = ctx.p.clone();
    let mut etcd = Etcd::start(&ctx.etcd, &ctx.work, None)?;
    let port = etcd.port;
    let run_load = || grpc::run(port, p.etcd_conns, p.etcd_inflight, Duration::from_secs(p.etcd_secs));
    grpc::run(port, p.etcd_conns, p.etcd_inflight, Duration::from_secs(2)).context("warm-up")?;
    struct R {
        ops: f64,
        p50: f64,
        p99: f64,
        errors: u64,
        calls: u64,
    }
    let summarize = |mut r: grpc::LoadResult| {
        r.lat_us.sort_unstable();
        R {
            ops: r.ops_per_sec(),
            p50: percentile_us(&r.lat_us, 50.0) / 1000.0,
            p99: percentile_us(&r.lat_us, 99.0) / 1000.0,
            errors: r.errors,
            calls: r.ok,
        }
    };
    let describe = |r: &R| format!("{:>8.0} calls/s p50 {:.3} ms p99 {:.3} ms", r.ops, r.p50, r.p99);
    let runs =
        arm_rounds(ctx, "etcd", etcd.pid(), &|| run_load().map(summarize), describe, &mut || etcd.check_alive())?;
    let (base, tr, agent) = (&runs.base, &runs.traced, &runs.agent);
    let errors: u64 = base.iter().chain(tr).chain(&runs.empty_probes).map(|r| r.errors).sum();
    let mut conf = format!(
        "gRPC over h2c: {} connections x {} in flight, 50% Put (256 B) / 50% Range, {} s, {} rounds; data on tmpfs",
        p.etcd_conns, p.etcd_inflight, p.etcd_secs, p.rounds
    );
    if errors > 0 {
        conf += &format!("; {errors} failed calls");
    }
    let calls: u64 = tr.iter().map(|r| r.calls).sum();
    let cpu: f64 = agent.iter().map(|a| a.cpu_s).sum();
    let events: u64 = agent.iter().map(|a| a.stat("events")).sum();
    let lost: u64 = agent.iter().map(|a| a.stat("lost_ringbuf_full")).sum();
    let exported = export_summary(ctx, "etcd", agent);
    ctx.scenarios.push(
        Scenario::new("etcd_throughput", "calls/s", Budget::MinRatio(THROUGHPUT_BUDGET))
            .samples(col(base, |r| r.ops), col(tr, |r| r.ops))
            .note(format!(
                "{conf}; traced: agent {:.3} ms CPU per 1k calls, {:.1} events per call, {lost} lost events{exported}",
                cpu * 1e3 / (calls.max(1) as f64 / 1e3),
                events as f64 / calls.max(1) as f64
            )),
    );
    ctx.scenarios.push(
        Scenario::new("etcd_latency_p50", "ms", Budget::None)
            .samples(col(base, |r| r.p50), col(tr, |r| r.p50))
            .note(conf.clone()),
    );
    ctx.scenarios.push(
        Scenario::new("etcd_latency_p99", "ms", Budget::MaxRatio(1.03))
            .samples(col(base, |r| r.p99), col(tr, |r| r.p99))
            .note(conf.clone()),
    );
    push_empty_probe_scenarios(ctx, "etcd", "calls/s", (base, &runs.empty_probes), &conf, |r| r.ops, |r| r.p99);
    push_host_scenarios(ctx, "etcd", &runs, |r| r.calls);
    ctx.extra.insert("etcd_agent_runs", agent_runs_json(agent));
    Ok(())
}

/// The path kube-apiserver traffic takes: Go's crypto/tls, whose plaintext the uprobes read
/// (traps, unlike the socket tracepoints). HTTP/1.1 under wrk here, HTTP/2 under h2load in
/// [`go_tls_h2_scenario`].
pub fn go_tls_scenario(ctx: &mut Ctx) -> Result<()> {
    let p = ctx.p.clone();
    let mut srv = GoHttps::start(&go_https_server()?, &ctx.work)?;
    let runs = wrk_rounds(ctx, "go tls", srv.pid(), &srv.url(), &mut || srv.check_alive())?;
    let conf = format!(
        "Go net/http + crypto/tls server (tests/go/https-server, stripped), wrk -t1 -c{} -d{}s over TLS (HTTP/1.1 keep-alive), a pod GET answered with JSON, {} rounds",
        p.wrk_conns, p.wrk_secs, p.rounds
    );
    push_go_tls_scenarios(ctx, "go tls", &runs, conf);
    ctx.extra.insert("go_tls_agent_runs", agent_runs_json(&runs.agent));
    Ok(())
}

/// The same server over HTTP/2, as kube-apiserver's clients (client-go, kubectl) talk to it:
/// many streams on few connections, one TLS read loop per connection.
pub fn go_tls_h2_scenario(ctx: &mut Ctx) -> Result<()> {
    let mut srv = GoHttps::start(&go_https_server()?, &ctx.work)?;
    let (pid, url) = (srv.pid(), srv.url());
    let h = H2Load {
        label: "go tls h2",
        runs_key: "go_tls_h2_agent_runs",
        url: &url,
        extra: &[],
        what: "the Go HTTPS server over HTTP/2 (TLS ALPN h2), a pod GET answered with JSON",
    };
    h2load_scenario(ctx, &h, pid, &mut || srv.check_alive())
}

/// How kube-apiserver talks to etcd: gRPC over TLS, which Debian's etcd (Go 1.19) serves through
/// crypto/tls, read by the uprobes. h2load sends linearizable Ranges of one key (written by a
/// warm-up of Puts over h2c).
pub fn etcd_tls_scenario(ctx: &mut Ctx) -> Result<()> {
    let p = ctx.p.clone();
    let cert_dir = procs::TempDir::new_in(&ctx.work, "certs")?;
    let certs = harness::Certs::make(cert_dir.path());
    let mut etcd = Etcd::start(&ctx.etcd, &ctx.work, Some(&certs))?;
    grpc::run(etcd.port, p.etcd_conns, p.etcd_inflight, Duration::from_secs(2)).context("writing the keys")?;
    let body = ctx.work.join("etcd-range.bin");
    std::fs::write(&body, grpc::range_message(1))?;
    let url = format!("https://127.0.0.1:{}/etcdserverpb.KV/Range", etcd.tls_port.context("etcd has no TLS port")?);
    let extra: Vec<String> = ["-H", "content-type: application/grpc", "-H", "te: trailers", "-d"]
        .into_iter()
        .map(String::from)
        .chain([body.display().to_string()])
        .collect();
    let h = H2Load {
        label: "etcd tls",
        runs_key: "etcd_tls_agent_runs",
        url: &url,
        extra: &extra,
        what: "gRPC KV/Range calls over TLS to etcd 3.4 (Go 1.19, Debian), data on tmpfs",
    };
    let pid = etcd.pid();
    h2load_scenario(ctx, &h, pid, &mut || etcd.check_alive())
}

/// An h2load scenario: what it loads, and how it is named.
pub struct H2Load<'a> {
    pub label: &'a str,
    /// Where the agent's runs go in the report.
    pub runs_key: &'static str,
    pub url: &'a str,
    /// Arguments before the URL: headers, a body.
    pub extra: &'a [String],
    /// The scenario's description in its notes.
    pub what: &'a str,
}

/// Rounds of h2load on the server `pid`, and their scenarios.
pub fn h2load_scenario(ctx: &mut Ctx, h: &H2Load, pid: u32, check_alive: &mut dyn FnMut() -> Result<()>) -> Result<()> {
    let p = ctx.p.clone();
    let run = |secs| load::h2load(&ctx.h2load, &ctx.work, h.url, h.extra, p.h2_conns, p.h2_streams, secs);
    let runs = load_rounds(ctx, h.label, pid, p.h2_secs, &run, check_alive)?;
    let conf = format!(
        "{}; h2load -t1 -c{} -m{} -D {} (connections x requests in flight), {} rounds",
        h.what, p.h2_conns, p.h2_streams, p.h2_secs, p.rounds
    );
    push_go_tls_scenarios(ctx, h.label, &runs, conf);
    ctx.extra.insert(h.runs_key, agent_runs_json(&runs.agent));
    Ok(())
}

/// The Go HTTPS server of the tests, built stripped as a release would be.
pub fn go_https_server() -> Result<PathBuf> {
    crate::setup::build_go_program("https-server", "bench_go_https_server", &["-ldflags=-s -w"])
}

/// The wrk-style scenarios of a Go TLS run, with the TLS calls that found no socket and the
/// agent's CPU per 1k requests in the throughput's note.
pub fn push_go_tls_scenarios(ctx: &mut Ctx, label: &str, runs: &ArmRuns<WrkResult>, conf: String) {
    let requests: u64 = runs.traced.iter().map(|r| r.requests).sum();
    let no_socket: u64 = runs.agent.iter().map(|a| a.stat("go_tls_no_socket")).sum();
    let cpu: f64 = runs.agent.iter().map(|a| a.cpu_s).sum();
    let extra = format!(
        ", {no_socket} TLS calls without a socket, agent {:.3} ms CPU per 1k requests",
        cpu * 1e3 / (requests.max(1) as f64 / 1e3)
    );
    push_wrk_scenarios(ctx, label, runs, conf, &extra);
}
