//! Scenario "apiserver": the apiserver-like target (`tests/go/apiserver`, the build with grpc-go's
//! etcd client) serving API requests that call etcd (TLS, client certificates, one connection
//! opened before the tracer attaches) and a validating webhook (HTTP/2 and HTTP/1.1), untraced vs
//! traced with every probe of the nesting work on; then one more traced run with BPF stats on,
//! which counts every program's runs: the uprobe hits (traps) per API request, each probe named.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::arms::{agent_runs_json, arm_rounds, col, fmt, fmt_opt};
use super::bpfstats;
use super::context::{Budget, Ctx, Scenario, median, say};
use super::procs;
use super::report::{THROUGHPUT_BUDGET, export_summary};
use super::servers::{self, Etcd};

/// `prog_type` of kprobe programs, which uprobes are.
const BPF_PROG_TYPE_KPROBE: u32 = 2;

/// One load run: requests answered (any status), failed ones, and its wall time.
#[derive(Debug, Clone, Copy)]
pub struct ApiRun {
    pub requests: u64,
    pub failed: u64,
    pub seconds: f64,
}

impl ApiRun {
    fn per_sec(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// The requests of a run, `apiload`'s input (`METHOD PATH PROTO`): reads by name and lists (etcd
/// Range), creates (webhook over HTTP/2, then etcd Txn) and updates (webhook over HTTP/1.1, then
/// etcd Put), over HTTP/2 and HTTP/1.1 as clients do.
pub fn request_lines(n: usize) -> String {
    const NS: &str = "/api/v1/namespaces/bench/pods";
    let mut out = String::with_capacity(n * 48);
    for i in 0..n {
        let line = match i % 20 {
            0..=7 => format!("GET {NS}/pod-{} h2", i % 100),
            8 | 9 => format!("GET {NS} h2"),
            10..=13 => format!("POST {NS} h2"),
            14..=16 => format!("PUT {NS}/pod-{} h1", i % 100),
            _ => format!("GET {NS}/pod-{} h1", i % 100),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Sends `lines` through `apiload` at `concurrency` to `base`: what came back, and how long it took.
pub fn run_apiload(apiload: &Path, base: &str, ca: &Path, concurrency: usize, lines: &str) -> Result<ApiRun> {
    let start = Instant::now();
    let mut child = Command::new(apiload)
        .args(["-base", base, "-c", &concurrency.to_string()])
        .arg("-ca")
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", apiload.display()))?;
    let mut stdin = child.stdin.take().context("apiload's stdin")?;
    let input = lines.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let (mut requests, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().context("apiload's stdout")?).lines() {
        let line = line?;
        requests += 1;
        if line.starts_with("ERR") || line.starts_with('5') {
            failed += 1;
        }
    }
    writer.join().map_err(|_| anyhow::anyhow!("apiload's input thread panicked"))??;
    let status = child.wait()?;
    let seconds = start.elapsed().as_secs_f64();
    if requests == 0 {
        bail!("apiload answered nothing ({status})");
    }
    Ok(ApiRun { requests, failed, seconds })
}

/// Per uprobe program: its runs and kernel time per API request; and the sums over uprobes and
/// over all programs.
fn probe_rows(progs: &[bpfstats::ProgInfo], requests: u64) -> (Vec<serde_json::Value>, f64, f64, f64) {
    let per = |v: u64| v as f64 / requests.max(1) as f64;
    let mut rows = Vec::new();
    let (mut uprobe_runs, mut uprobe_ns, mut all_ns) = (0, 0, 0);
    for p in progs {
        all_ns += p.run_time_ns;
        if p.prog_type == BPF_PROG_TYPE_KPROBE {
            uprobe_runs += p.run_cnt;
            uprobe_ns += p.run_time_ns;
        }
        if p.run_cnt > 0 {
            rows.push(json!({
                "program": p.name,
                "prog_type": p.prog_type,
                "uprobe": p.prog_type == BPF_PROG_TYPE_KPROBE,
                "run_cnt": p.run_cnt,
                "runs_per_request": per(p.run_cnt),
                "ns_per_request": per(p.run_time_ns),
            }));
        }
    }
    (rows, per(uprobe_runs), per(uprobe_ns), per(all_ns))
}

pub fn print_probe_rows(rows: &[serde_json::Value]) {
    println!();
    println!("apiserver: eBPF programs per API request (kernel.bpf_stats)");
    println!("{:<18} {:>6} {:>12} {:>10} {:>10}", "program", "uprobe", "runs", "runs/req", "ns/req");
    for r in rows {
        println!(
            "{:<18} {:>6} {:>12} {:>10} {:>10}",
            r["program"].as_str().unwrap_or(""),
            if r["uprobe"].as_bool().unwrap_or(false) { "yes" } else { "" },
            r["run_cnt"].as_u64().unwrap_or(0),
            fmt(r["runs_per_request"].as_f64().unwrap_or(0.0)),
            fmt(r["ns_per_request"].as_f64().unwrap_or(0.0)),
        );
    }
}

/// What the scenario needs of the running stack.
pub struct Target<'a> {
    pub apiserver_pid: u32,
    pub base: &'a str,
    pub ca: &'a Path,
    pub apiload: &'a Path,
    /// What the stack is, for the notes.
    pub what: &'a str,
}

/// Rounds of untraced and traced load, then one traced run with BPF stats; the scenarios' rows.
pub fn measure(ctx: &mut Ctx, t: &Target, check_alive: &mut dyn FnMut() -> Result<()>) -> Result<()> {
    let p = ctx.p.clone();
    let (requests, concurrency) = if p.mode == "quick" { (2_000, 16) } else { (6_000, 16) };
    let lines = request_lines(requests);
    let run = || run_apiload(t.apiload, t.base, t.ca, concurrency, &lines);
    run_apiload(t.apiload, t.base, t.ca, concurrency, &request_lines(300)).context("warm-up")?;
    let describe = |r: &ApiRun| format!("{:>7.0} req/s ({} requests, {} failed)", r.per_sec(), r.requests, r.failed);
    let runs = arm_rounds(ctx, "apiserver", t.apiserver_pid, &run, describe, check_alive)?;
    let (base, tr, agent) = (&runs.base, &runs.traced, &runs.agent);
    let failed: u64 = base.iter().chain(tr).map(|r| r.failed).sum();
    let conf = format!(
        "{}; apiload -c{concurrency}, {requests} requests per run (40% GET pod h2, 10% LIST h2, 20% POST h2, 15% PUT h1, 15% GET pod h1), {} rounds{}",
        t.what,
        p.rounds,
        if failed > 0 { format!("; {failed} failed requests") } else { String::new() }
    );
    let cpu_us: Vec<f64> = agent.iter().zip(tr).map(|(a, r)| a.cpu_s * 1e6 / r.requests.max(1) as f64).collect();
    let spans_per_req: Vec<f64> =
        agent.iter().zip(tr).map(|(a, r)| a.stat("spans") as f64 / r.requests as f64).collect();
    let parented: Vec<f64> = agent
        .iter()
        .zip(tr)
        .map(|(a, r)| {
            let n: u64 = ["parented_server_request", "parented_grpc_link", "parented_http1_link", "parented_both_ends"]
                .iter()
                .map(|k| a.stat(k))
                .sum();
            n as f64 / r.requests as f64
        })
        .collect();
    let exported = export_summary(ctx, "apiserver", agent);
    ctx.scenarios.push(
        Scenario::new("apiserver_throughput", "req/s", Budget::MinRatio(THROUGHPUT_BUDGET))
            .samples(col(base, |r| r.per_sec()), col(tr, |r| r.per_sec()))
            .note(format!("{conf}{exported}")),
    );
    ctx.scenarios.push(
        Scenario::new("apiserver_agent_cpu_per_request", "µs CPU", Budget::None).samples(Vec::new(), cpu_us).note(
            format!(
                "agent utime+stime per API request (each with its etcd and webhook calls): {} spans and {} parented spans per request",
                fmt_opt(median(&spans_per_req)),
                fmt_opt(median(&parented))
            ),
        ),
    );
    ctx.extra.insert("apiserver_agent_runs", agent_runs_json(agent));

    // Every program's runs in one more traced run: the traps per request.
    let on = bpfstats::enable()?;
    let tracer = ctx.start_tracer(t.apiserver_pid, &[])?;
    let snap = || bpfstats::process_programs(tracer.pid());
    let before = snap()?;
    let r = run()?;
    let after = snap()?;
    let stats = tracer.stop()?;
    drop(on);
    check_alive()?;
    let (rows, uprobe_runs, uprobe_ns, all_ns) = probe_rows(&bpfstats::delta(&before, &after), r.requests);
    print_probe_rows(&rows);
    say(format!(
        "apiserver with bpf stats: {:.0} req/s, {} uprobe hits and {} ns of eBPF per request",
        r.per_sec(),
        fmt(uprobe_runs),
        fmt(all_ns)
    ));
    ctx.scenarios.push(
        Scenario::new("apiserver_uprobe_hits_per_request", "traps", Budget::None)
            .values(None, Some(uprobe_runs))
            .note(format!("runs of every uprobe program (Go TLS, goroutine spawns, grpc-go and net/http links) per API request, from bpf stats; {} ns of uprobe run time per request", fmt(uprobe_ns))),
    );
    ctx.scenarios.push(
        Scenario::new("apiserver_bpf_ns_per_request", "ns", Budget::None)
            .values(None, Some(all_ns))
            .note("run time of all the tracer's programs per API request (uprobes, socket hooks), from bpf stats"),
    );
    ctx.extra.insert("apiserver_bpf_programs", json!(rows));
    ctx.extra.insert("apiserver_bpf_run_final_stats", json!(stats));
    Ok(())
}

/// The scenario: etcd over TLS, the webhook, the apiserver-like server of the etcd build (its
/// etcd connection opened and used for every method before the tracer attaches), then
/// [`measure`].
pub fn apiserver_scenario(ctx: &mut Ctx) -> Result<()> {
    let apiserver_bin = crate::setup::build_apiserver_etcd()?;
    let webhook_bin = crate::setup::build_go_program("webhook", "bench_go_webhook", &["-ldflags=-s -w"])?;
    let apiload = crate::setup::build_go_program("apiload", "bench_apiload", &["-ldflags=-s -w"])?;
    let cert_dir = procs::TempDir::new_in(&ctx.work, "certs")?;
    let certs = harness::Certs::make(cert_dir.path());
    let mut etcd = Etcd::start(&ctx.etcd, &ctx.work, Some(&certs))?;
    let etcd_url = format!("https://127.0.0.1:{}", etcd.tls_port.context("etcd has no TLS port")?);
    let path = |p: &Path| p.display().to_string();
    let (cert, key, ca) = (path(&certs.server_cert), path(&certs.server_key), path(&certs.ca));
    let (mut webhook, webhook_port) =
        servers::start_go_program_with("go-webhook", &webhook_bin, &ctx.work, &["-cert", &cert, "-key", &key])
            .context("the webhook did not start")?;
    let webhook_url = format!("https://127.0.0.1:{webhook_port}");
    let (client_cert, client_key) = (path(&certs.client_cert), path(&certs.client_key));
    let args = [
        "-cert",
        &cert,
        "-key",
        &key,
        "-ca",
        &ca,
        "-webhook",
        &webhook_url,
        "-etcd",
        &etcd_url,
        "-etcd-cert",
        &client_cert,
        "-etcd-key",
        &client_key,
    ];
    let (mut apiserver, port) = servers::start_go_program_with("go-apiserver", &apiserver_bin, &ctx.work, &args)
        .context("the apiserver-like server did not start")?;
    let base = format!("https://127.0.0.1:{port}");
    let target = Target {
        apiserver_pid: apiserver.pid(),
        base: &base,
        ca: &certs.ca,
        apiload: &apiload,
        what: "tests/go/apiserver (Go 1.19, etcd clientv3 over grpc-go 1.33, stripped) over TLS, calling etcd 3.4 over TLS and a validating webhook (HTTP/2 for creates, HTTP/1.1 for updates)",
    };
    measure(ctx, &target, &mut || {
        procs::ensure_running(&mut apiserver)?;
        procs::ensure_running(&mut webhook)?;
        etcd.check_alive()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_mix() {
        let lines = request_lines(40);
        let count = |p: &str| lines.lines().filter(|l| l.starts_with(p)).count();
        assert_eq!(lines.lines().count(), 40);
        assert_eq!(count("POST /api/v1/namespaces/bench/pods h2"), 8);
        assert_eq!(count("PUT /api/v1/namespaces/bench/pods/pod-"), 6);
        assert_eq!(count("GET /api/v1/namespaces/bench/pods h2"), 4);
        assert!(lines.lines().all(|l| l.ends_with(" h1") || l.ends_with(" h2")));
    }

    #[test]
    fn uprobes_are_summed_per_request() {
        let prog = |name: &str, prog_type, run_cnt, run_time_ns| bpfstats::ProgInfo {
            id: 0,
            prog_type,
            name: name.into(),
            run_time_ns,
            run_cnt,
        };
        let progs = [prog("go_tls_read", 2, 400, 40_000), prog("sock_send", 17, 1000, 20_000), prog("idle", 2, 0, 0)];
        let (rows, hits, uprobe_ns, all_ns) = probe_rows(&progs, 100);
        assert_eq!((hits, uprobe_ns, all_ns), (4.0, 400.0, 600.0));
        assert_eq!(rows.len(), 2, "programs that never ran are left out");
    }
}
