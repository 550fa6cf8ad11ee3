//! Go TLS probes ready at exec: the probes are attached to the executable, so a short-lived Go
//! client run again under `--comm` is traced from its first instruction, with no attach work;
//! after the idle period the probes go, and the next run attaches them again from the cached
//! analysis.

use std::process::Command;
use std::time::Duration;

use super::common::{CLIENT_TIMEOUT, pods_route};
use integration_tests::check::{HttpExpect, K8s, ResourceExpect, assert_no_errors, check_common};
use integration_tests::gotls::{
    GoResponse, GoServer, check_http_spans_version, check_no_connection_spans, http_client_bin,
};
use integration_tests::tracer::{bpf_links, has_pid_field};
use integration_tests::*;

/// Requests per run, 100 ms apart: a run lasts long enough for the agent to see its executable
/// (the `Go TLS probes ready` line), and is traced from its first request whatever the agent does.
const REQUESTS: usize = 2;

/// The stripped Go 1.27 client, copied under a name of its own: its comm is the `--comm` target,
/// and no other test's client is one.
struct ClientCopy {
    _dir: TempDir,
    path: std::path::PathBuf,
    name: String,
}

impl ClientCopy {
    fn new() -> ClientCopy {
        let dir = TempDir::new("exec-ready");
        let name = unique_name("gx-");
        let path = dir.path().join(&name);
        std::fs::copy(http_client_bin(), &path).expect("copy the Go client");
        ClientCopy { _dir: dir, path, name }
    }

    /// Starts a run that requests `url` [`REQUESTS`] times; with `wait_stdin`, once it reads a line.
    fn start(&self, url: &str, http2: bool, wait_stdin: bool) -> Proc {
        let mut cmd = Command::new(&self.path);
        let n = REQUESTS.to_string();
        cmd.args(["-insecure", "-url", url, "-n", &n, "-interval", "100ms", &format!("-http2={http2}")]);
        if wait_stdin {
            cmd.arg("-wait-stdin");
        }
        Proc::spawn(&self.name, cmd)
    }

    fn resource(&self, pid: u32) -> ResourceExpect {
        ResourceExpect { pid, comm: self.name.clone(), exe: self.name.clone(), host: hostname() }
    }
}

/// The responses of a finished run.
fn responses(run: &mut Proc) -> Vec<GoResponse> {
    let st = run.wait_exit(CLIENT_TIMEOUT);
    assert!(st.success(), "Go client failed ({st})\n{}", run.describe());
    let out = run.stdout();
    let parse = |l: &str| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
        [proto, status, bytes] => Some(GoResponse {
            proto: proto.to_string(),
            status: status.parse().ok()?,
            bytes: bytes.parse().ok()?,
            local_port: None,
        }),
        _ => None,
    };
    let r: Vec<GoResponse> = out.lines().filter_map(parse).collect();
    assert_eq!(r.len(), REQUESTS, "harness: Go client output {out:?}\n{}", run.describe());
    r
}

/// The `Go TLS probes ready` line of `pid` (waits for it).
fn ready_line(tracer: &mut Tracer, pid: u32) -> String {
    tracer.wait_for_stderr_line(
        &format!("`Go TLS probes ready` with pid={pid}"),
        move |l| l.contains("Go TLS probes ready") && has_pid_field(l, pid),
        Duration::from_secs(30),
    )
}

/// A client run and what its spans must be.
struct Run {
    pid: u32,
    expect: Vec<HttpExpect>,
    version: &'static str,
}

fn expect_run(pid: u32, path: &str, ns: &str, name: &str, responses: &[GoResponse], port: u16) -> Run {
    let h2 = responses[0].proto == "HTTP/2.0";
    let (version, ua) = if h2 { ("2", "Go-http-client/2.0") } else { ("1.1", "Go-http-client/1.1") };
    let expect = responses
        .iter()
        .map(|r| {
            assert_eq!((r.status, r.proto.as_str()), (200, responses[0].proto.as_str()), "harness: {r:?}");
            HttpExpect::client("GET", path, 200)
                .scheme("https")
                .route(pods_route())
                .k8s(K8s::new("get", "v1", "pods").ns(ns).name(name))
                .server_port(port)
                .user_agent(ua)
                .response_body(r.bytes)
        })
        .collect();
    Run { pid, expect, version }
}

/// Each run's client spans, from its own pid, with its method, path, status and Kubernetes
/// attributes; no connection left undecoded.
fn check_runs(spans: &[ReceivedSpan], runs: &[Run], client: &ClientCopy, window: u64) -> Vec<String> {
    let mut errs = check_no_connection_spans(spans);
    for run in runs {
        let mine: Vec<ReceivedSpan> = spans.iter().filter(|s| s.pid() == Some(run.pid)).cloned().collect();
        errs.extend(check_http_spans_version(&mine, &run.expect, run.version, &|_| false));
        errs.extend(check_common(&mine, &client.resource(run.pid), window));
    }
    errs
}

/// The first run of the client is analysed and its probes attached (it waits for them); every
/// later run, started and gone within a few hundred milliseconds, finds the probes in place: its `Go TLS
/// probes ready` line says `already-attached` with `exec_to_ready_us=0`, and its request (HTTP/2
/// and HTTP/1.1 in turn) gives its client span.
#[test]
fn short_lived_go_client_rerun_under_comm_is_traced_every_time() {
    const RUNS: usize = 6;
    let srv = GoServer::https();
    let port = srv.port();
    let client = ClientCopy::new();
    let mut tracer = Tracer::start(&["--comm", &client.name, "--output", "json"]);
    tracer.wait_for_stderr("waiting for", Duration::from_secs(60));
    let window = now_unix_nanos();
    let mut runs = Vec::new();
    for i in 0..RUNS {
        let (ns, name) = ("exec-ready".to_owned(), format!("run-{i}"));
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
        let first = i == 0;
        let mut run = client.start(&srv.url(&path), i % 2 == 0, first);
        let pid = run.pid();
        if first {
            let line = ready_line(&mut tracer, pid);
            assert!(line.contains("binary=\"first-sight\""), "first run: {line}");
            run.send_line("go");
        }
        let r = responses(&mut run);
        runs.push(expect_run(pid, &path, &ns, &name, &r, port));
    }
    let is_run = |s: &ReceivedSpan| s.attr_str("url.path").is_some_and(|p| p.contains("/pods/run-"));
    tracer.wait_json_spans(is_run, RUNS * REQUESTS, SPAN_TIMEOUT);
    std::thread::sleep(SETTLE);
    for run in &runs[1..] {
        let line = ready_line(&mut tracer, run.pid);
        let ready = line.contains("binary=\"already-attached\"") && line.contains("exec_to_ready_us=0");
        assert!(ready, "run of pid {}: the probes should have been in place before it started: {line}", run.pid);
    }
    let out = tracer.stop();
    out.assert_no_panic();
    out.assert_code(0);
    let spans = out.json_spans();
    let mut errs = check_runs(&spans, &runs, &client, window);
    if !out.stderr.contains("analysis_cache_misses=1") {
        errs.push("one analysis expected, of the first run".to_owned());
    }
    if !errs.is_empty() {
        errs.push(out.describe());
    }
    assert_no_errors("short-lived Go TLS client rerun under --comm", &errs, &spans);
}

/// `--go-tls-idle-release 0`: the probes go at the first housekeeping after the only run exits
/// (the tracer holds no uprobe link then), and the next run of the same file attaches them again from the cached analysis (`cached`),
/// with no second analysis; its request is traced.
#[test]
fn idle_probes_are_released_and_reattached_from_the_cache() {
    let srv = GoServer::https();
    let port = srv.port();
    let client = ClientCopy::new();
    let mut tracer = Tracer::start(&["--comm", &client.name, "--go-tls-idle-release", "0", "--output", "json"]);
    tracer.wait_for_stderr("waiting for", Duration::from_secs(60));
    let window = now_unix_nanos();
    let mut runs = Vec::new();
    for (i, readiness) in ["first-sight", "cached"].into_iter().enumerate() {
        let (ns, name) = ("idle-release".to_owned(), format!("run-{i}"));
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
        let mut run = client.start(&srv.url(&path), true, true);
        let pid = run.pid();
        let line = ready_line(&mut tracer, pid);
        assert!(line.contains(&format!("binary=\"{readiness}\"")), "run {i}: {line}");
        let links = bpf_links(tracer.pid());
        assert!(links.iter().any(|l| l.contains("event_type:uprobe")), "run {i}: no uprobe attached: {links:?}");
        run.send_line("go");
        let r = responses(&mut run);
        runs.push(expect_run(pid, &path, &ns, &name, &r, port));
        if i == 0 {
            tracer.wait_for_stderr("Go TLS probes released", Duration::from_secs(30));
            let links = bpf_links(tracer.pid());
            let uprobes = links.iter().filter(|l| l.contains("event_type:uprobe")).count();
            assert_eq!(uprobes, 0, "the released probes should be gone from the kernel: {links:?}");
        }
    }
    let is_run = |s: &ReceivedSpan| s.attr_str("url.path").is_some_and(|p| p.contains("/pods/run-"));
    tracer.wait_json_spans(is_run, 2 * REQUESTS, SPAN_TIMEOUT);
    std::thread::sleep(SETTLE);
    let out = tracer.stop();
    out.assert_no_panic();
    out.assert_code(0);
    let spans = out.json_spans();
    let mut errs = check_runs(&spans, &runs, &client, window);
    if !(out.stderr.contains("analysis_cache_misses=1") && out.stderr.contains("analysis_cache_hits=1")) {
        errs.push("one analysis and one cache hit expected".to_owned());
    }
    if !errs.is_empty() {
        errs.push(out.describe());
    }
    assert_no_errors("Go TLS probes released when idle, attached again from the cache", &errs, &spans);
}
