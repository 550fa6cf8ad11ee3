//! What the tests of this suite share: short-lived clients run one after another under a tracer
//! started with `--comm`, and the checks of their spans against what the server was asked.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use harness::{PROBES_READY, ProbesReady};
use integration_tests::check::{HttpExpect, K8s, ResourceExpect, check_common};
use integration_tests::ending::assert_session_ok;
use integration_tests::gotls::{GoServer, check_http_spans_version, check_no_connection_spans};
use integration_tests::kube::{ClientRun, KUBE_TOKEN, LoggedRequest, logged_requests};
use integration_tests::*;

/// Client runs per test.
pub const RUNS: usize = 10;

/// How long the server's log may take to come through its pipe.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the tracer may take to load its probes and say it waits for its targets.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The pod of run `n`: it exists on the server (`-pods` is 100), so its GET answers 200.
pub fn pod_path(n: usize) -> String {
    format!("/api/v1/namespaces/default/pods/pod-{n}")
}

pub fn pods_route() -> &'static str {
    "/api/v1/namespaces/{namespace}/pods/{name}"
}

/// What a client span of `req` to `srv` must be: the server's status for it (200: every path the
/// clients ask exists), and for a pod its route and Kubernetes attributes.
pub fn client_expect(req: &LoggedRequest, port: u16) -> HttpExpect {
    let e = HttpExpect::client(&req.method, &req.path, 200).scheme("https").server_port(port);
    match req.path.strip_prefix("/api/v1/namespaces/default/pods/") {
        Some(name) => e.route(pods_route()).k8s(K8s::new("get", "v1", "pods").ns("default").name(name)),
        None => e,
    }
}

/// One client process and what the server logged it asked.
struct Run {
    pid: u32,
    requests: Vec<LoggedRequest>,
}

/// The tests of this suite one at a time: each measures how soon its tracer reacts, which other
/// tracers loading their programs on the same CPUs would delay.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the tracer logs for each executable of a `--comm` target it attached before any ran.
pub const ATTACHED_AHEAD: &str = "Go TLS probes attached ahead of exec";

/// Starts the tracer with `--comm comm` and no process of the clients' binary running, its PATH
/// being the test's with `path_dir` first (where the clients' binary is), and waits until it
/// attached that binary's probes ahead of any exec. Then runs `run(n)` for n in 0..[`RUNS`], one
/// process after another, each asking `srv` for [`pod_path`]`(n)` (the server's log says what
/// each asked: that is the ground truth). Every request of every run, from the very first, must
/// have a client span of that process, exactly right, and nothing else may come from those
/// processes; every run the agent saw had its probes in place before its exec
/// (`binary=already-attached`); the bearer token of the kubeconfig must appear nowhere.
pub fn check_short_lived_clients(
    what: &str,
    (comm, exe): (&str, &str),
    path_dir: &Path,
    srv: &mut GoServer,
    run: &dyn Fn(usize) -> ClientRun,
) {
    let _one = one_at_a_time();
    let path = std::env::join_paths(
        std::iter::once(path_dir.to_path_buf())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH for the tracer");
    let path = path.to_string_lossy().into_owned();
    let comm_args = ["--comm".to_owned(), comm.to_owned()];
    let mut sess = TraceSession::start_env(Sink::Grpc, &comm_args, &[], &[], &[("PATH", &path)]);
    let ahead = sess.tracer.wait_for_stderr_line(
        &format!("`{ATTACHED_AHEAD}` for {comm}"),
        |l| l.contains(ATTACHED_AHEAD) && l.contains(comm),
        READY_TIMEOUT,
    );
    sess.tracer.wait_for_stderr("waiting for", READY_TIMEOUT);
    let window = sess.window_start;
    let mut runs = Vec::new();
    for n in 0..RUNS {
        let before = logged_requests(&srv.proc().stderr()).len();
        let r = run(n);
        assert!(r.status.success(), "{what}: run {n} failed\n{}", r.describe);
        // The server logs a request before it answers; its log comes through a pipe.
        let deadline = Instant::now() + LOG_TIMEOUT;
        let requests = loop {
            let requests = logged_requests(&srv.proc().stderr()).split_off(before);
            if requests.iter().any(|q| q.path == pod_path(n)) {
                break requests;
            }
            assert!(
                Instant::now() < deadline,
                "harness: the server did not log run {n}'s request\n{}",
                srv.proc().describe()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        runs.push(Run { pid: r.pid, requests });
    }
    let pids: Vec<u32> = runs.iter().map(|r| r.pid).collect();
    let expected: usize = runs.iter().map(|r| r.requests.len()).sum();
    sess.wait_spans(|s| s.pid().is_some_and(|p| pids.contains(&p)), expected, SPAN_TIMEOUT);
    let fin = sess.finish(SETTLE);
    let mut errs = Vec::new();
    let mut traced = 0;
    for (n, r) in runs.iter().enumerate() {
        let spans: Vec<ReceivedSpan> = fin.spans.iter().filter(|s| s.pid() == Some(r.pid)).cloned().collect();
        let version = if r.requests[0].proto == "HTTP/1.1" { "1.1" } else { "2" };
        assert!(r.requests.iter().all(|q| q.proto == r.requests[0].proto), "harness: run {n} mixed versions");
        let exps: Vec<HttpExpect> = r.requests.iter().map(|q| client_expect(q, srv.port())).collect();
        let mut run_errs = check_http_spans_version(&spans, &exps, version, &|_| false);
        run_errs.extend(check_no_connection_spans(&spans));
        let res = ResourceExpect { pid: r.pid, comm: comm.to_owned(), exe: exe.to_owned(), host: hostname() };
        run_errs.extend(check_common(&spans, &res, window));
        traced += usize::from(run_errs.is_empty());
        errs.extend(run_errs.into_iter().map(|e| format!("run {n} (pid {}): {e}", r.pid)));
    }
    if traced < RUNS {
        errs.push(format!("{traced}/{RUNS} runs fully traced"));
    }
    errs.extend(check_ready_ahead(&fin.output.stderr, &pids, &ahead));
    assert_session_ok(what, errs, &fin, &[KUBE_TOKEN]);
}

/// Every `Go TLS probes ready` line of the runs `pids` (a run over before the agent looked at it
/// has none: its probes were there all the same) says its binary had its probes before its exec.
fn check_ready_ahead(stderr: &str, pids: &[u32], ahead: &str) -> Vec<String> {
    let ready: Vec<ProbesReady> = stderr.lines().filter_map(ProbesReady::parse).collect();
    let mut errs: Vec<String> = ready
        .iter()
        .filter(|r| r.binary != "already-attached" || r.exec_to_ready_us != 0)
        .map(|r| {
            format!(
                "pid {}: probes ready {} µs after exec ({}), not before it ({ahead})",
                r.pid, r.exec_to_ready_us, r.binary
            )
        })
        .collect();
    if !ready.iter().any(|r| pids.contains(&r.pid)) {
        errs.push(format!("no `{PROBES_READY}` line for any of the runs {pids:?}"));
    }
    errs
}
