//! What the tests of this suite share: short-lived clients run one after another under a tracer
//! started with `--comm`, and the checks of their spans against what the server was asked.

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

/// Waits until the tracer logged `Go TLS probes ready` for `pid`, and checks it saw the binary for
/// the first time.
pub fn wait_first_sight(tracer: &mut Tracer, pid: u32) {
    let line = tracer.wait_for_stderr_line(
        &format!("`{PROBES_READY}` for pid {pid}"),
        move |l| ProbesReady::parse(l).is_some_and(|r| r.pid == pid),
        READY_TIMEOUT,
    );
    let ready = ProbesReady::parse(&line).expect("parsed above");
    assert_eq!(ready.binary, "first-sight", "the first process of a new binary: {line}");
}

/// Starts the tracer with `--comm comm`; `warm_up()` starts a process of the clients' binary that
/// stays until the tracer has analysed that binary and attached its probes (the binary is then
/// known: the runs are processes of a binary seen before, whose analysis a process that ends
/// within milliseconds of its exec could not wait for). Then runs `run(n)` for n in 0..[`RUNS`],
/// one process after another, each asking `srv` for [`pod_path`]`(n)` (the server's log says what
/// each asked: that is the ground truth). Every request of every run must have a client span of
/// that process, exactly right, and nothing else may come from those processes; the bearer token
/// of the kubeconfig must appear nowhere.
pub fn check_short_lived_clients(
    what: &str,
    (comm, exe): (&str, &str),
    srv: &mut GoServer,
    warm_up: &dyn Fn() -> Proc,
    run: &dyn Fn(usize) -> ClientRun,
) {
    let _one = one_at_a_time();
    let mut sess = TraceSession::start(Sink::Grpc, &["--comm".to_owned(), comm.to_owned()], &[], &[]);
    sess.tracer.wait_for_stderr("waiting for", READY_TIMEOUT);
    let mut first = warm_up();
    wait_first_sight(&mut sess.tracer, first.pid());
    first.kill();
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
    assert_session_ok(what, errs, &fin, &[KUBE_TOKEN]);
}
