//! What the tests of this suite share: short-lived clients run one after another under a tracer
//! started with `--comm`, and the checks of their spans against what the server was asked.

use std::time::Duration;

use integration_tests::check::{HttpExpect, K8s, ResourceExpect, check_common};
use integration_tests::ending::assert_session_ok;
use integration_tests::gotls::{GoServer, check_http_spans_version, check_no_connection_spans};
use integration_tests::kube::{ClientRun, KUBE_TOKEN, LoggedRequest, logged_requests};
use integration_tests::*;

/// Client runs per test.
pub const RUNS: usize = 10;

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

/// Starts the tracer with `--comm comm`, then runs `run(n)` for n in 0..[`RUNS`], one process
/// after another, each asking `srv` for [`pod_path`]`(n)` (the server's log says what each asked:
/// that is the ground truth). Every request of every run must have a client span of that process,
/// exactly right, and nothing else may come from those processes; the bearer token of the
/// kubeconfig must appear nowhere.
pub fn check_short_lived_clients(
    what: &str,
    comm: &str,
    exe: &str,
    srv: &mut GoServer,
    run: &dyn Fn(usize) -> ClientRun,
) {
    let mut sess = TraceSession::start(Sink::Grpc, &["--comm".to_owned(), comm.to_owned()], &[], &[]);
    sess.tracer.wait_for_stderr("waiting for", READY_TIMEOUT);
    let window = sess.window_start;
    let mut runs = Vec::new();
    for n in 0..RUNS {
        let before = logged_requests(&srv.proc().stderr()).len();
        let r = run(n);
        assert!(r.status.success(), "{what}: run {n} failed\n{}", r.describe);
        let requests = logged_requests(&srv.proc().stderr()).split_off(before);
        assert!(
            requests.iter().any(|q| q.path == pod_path(n)),
            "harness: the server did not log run {n}'s request: {requests:?}\n{}",
            srv.proc().describe()
        );
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
    assert_session_ok(what, errs, &fin, &[KUBE_TOKEN]);
}
