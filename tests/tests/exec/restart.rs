//! A Go TLS server restarted under load: each new process (same comm, new pid) must be decoded
//! from its first request, no span of an old process may be taken for a new one, and the agent's
//! memory must not grow with the restarts.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::common::{one_at_a_time, pods_route};
use integration_tests::check::{HttpExpect, K8s, ResourceExpect, check_common};
use integration_tests::ending::assert_finished_ok;
use integration_tests::gotls::{
    GoServer, apiserver_bin, check_http_spans_version, check_no_connection_spans, wait_go_tls_probes,
};
use integration_tests::kube::copy_as;
use integration_tests::*;

const RESTARTS: usize = 10;
/// How long each server process serves the load before it is restarted.
const LOAD_PER_PROCESS: Duration = Duration::from_millis(500);
/// Requests per load batch: one curl, one HTTP/2 connection.
const BATCH: usize = 4;
/// Allowed growth of the agent's VmRSS between the end of restart 2 and the end of restart 10.
/// What the agent keeps per process of a known binary is small (a pid in maps and tables); a
/// binary analysed again on each restart, or its tables kept per process, costs megabytes each
/// time (the analysis reads the symbol and line tables of the whole test server),
/// so eight more restarts would add well over this. Below it: the allocator's reuse of freed
/// memory, which moves the figure by a few hundred KiB either way from one reading to the next.
const RSS_TOLERANCE_KIB: u64 = 3 * 1024;

/// The server the load is sent to: its port and restart index. None: no load (between processes).
type LoadTarget = Arc<Mutex<Option<(u16, usize)>>>;

/// One load request as curl made it.
struct LoadRequest {
    restart: usize,
    path: String,
    local_port: u16,
    status: u16,
}

/// Sends batches of pod GETs (HTTP/2, one connection each) to the current target until `stop`.
/// The target's lock is held for a whole batch, so whoever clears it waits for the batch in
/// flight: a server is stopped only when no load request is on its way to it.
fn start_load(target: LoadTarget, stop: Arc<Mutex<bool>>) -> JoinHandle<Vec<LoadRequest>> {
    std::thread::spawn(move || {
        let mut done = Vec::new();
        while !*stop.lock().unwrap() {
            {
                let t = target.lock().unwrap();
                if let Some((port, restart)) = *t {
                    let paths: Vec<String> = (0..BATCH)
                        .map(|k| format!("/api/v1/namespaces/load-{restart}/pods/pod-{}", done.len() + k))
                        .collect();
                    let mut args = vec!["-k".to_owned(), "--http2".to_owned()];
                    args.extend(paths.iter().map(|p| format!("https://127.0.0.1:{port}{p}")));
                    for (p, t) in paths.into_iter().zip(curl(&args).transfers) {
                        done.push(LoadRequest { restart, path: p, local_port: t.local_port, status: t.code });
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        done
    })
}

/// The tracer's VmRSS in KiB.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the tracer's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in the tracer's status:\n{status}"))
}

/// The API-server-like Go server, traced with `--comm` (a copy under a name of its own), started
/// (the tracer analyses the new binary meanwhile: its first request waits for the probes) and
/// restarted ten times under load (a new process, same comm, same file). Its first request after
/// each restart, sent as soon as it listens (not waiting for the tracer), has a full HTTP/2 server
/// span: method, path, route, status, Kubernetes attributes, ports, that process's pid. Every
/// load request has its span, with the pid of the process that served it, and no process has a
/// span of another's. The agent's VmRSS after restart 10 is within [`RSS_TOLERANCE_KIB`] of its
/// VmRSS after restart 2.
#[test]
fn restarted_go_tls_server_traced_from_its_first_request() {
    let _one = one_at_a_time();
    let dir = TempDir::new("restart");
    let certs = Certs::make(dir.path());
    let comm = unique_name("apis-");
    let bin = copy_as(&dir, &comm, &apiserver_bin());
    let mut sess = TraceSession::start(Sink::Grpc, &["--comm".to_owned(), comm.clone()], &[], &[]);
    sess.tracer.wait_for_stderr("waiting for", Duration::from_secs(60));
    let window = sess.window_start;
    let target: LoadTarget = Arc::default();
    let stop = Arc::new(Mutex::new(false));
    let load = start_load(target.clone(), stop.clone());

    let mut first = Vec::new();
    let mut processes = Vec::new();
    let mut rss = Vec::new();
    // Process 0 is the first start: its binary is new to the tracer, which analyses it; its first
    // request waits for the probes. Processes 1 to 10 are the restarts, sent requests at once.
    for i in 0..=RESTARTS {
        let mut srv = GoServer::apiserver(&bin, &certs);
        let res = ResourceExpect::of(srv.pid());
        if i == 0 {
            wait_go_tls_probes(&mut sess.tracer, srv.pid());
        }
        let path = format!("/api/v1/namespaces/restart-{i}/pods/pod-{i}");
        let t = curl_one(&["-k".to_owned(), "--http2".to_owned(), srv.url(&path)]);
        assert_eq!(t.code, 200, "harness: the first request of restart {i}");
        first.push(
            HttpExpect::server("GET", &path, 200)
                .route(pods_route())
                .k8s(K8s::new("get", "v1", "pods").ns(&format!("restart-{i}")).name(&format!("pod-{i}")))
                .client_port(t.local_port)
                .server_port(srv.port()),
        );
        *target.lock().unwrap() = Some((srv.port(), i));
        std::thread::sleep(LOAD_PER_PROCESS);
        *target.lock().unwrap() = None;
        srv.proc().signal(libc::SIGTERM);
        let st = srv.proc().wait_timeout(Duration::from_secs(10));
        assert!(st.is_some_and(|s| s.success()), "apiserver restart {i} did not exit cleanly: {st:?}");
        processes.push((res, srv.port()));
        if i == 2 || i == RESTARTS {
            // the spans of this process exported, so that what they held is released
            let pid = processes[i].0.pid;
            sess.wait_spans(|s| s.pid() == Some(pid), 2, SPAN_TIMEOUT);
            std::thread::sleep(SETTLE);
            rss.push(vm_rss_kib(sess.tracer.pid()));
        }
    }
    *stop.lock().unwrap() = true;
    let load = load.join().expect("the load thread failed (a curl failed: see above)");

    let expected = first.len() + load.len();
    sess.wait_spans(|_| true, expected, SPAN_TIMEOUT);
    let fin = sess.finish(SETTLE);
    let mut errs = Vec::new();
    for (i, (res, port)) in processes.iter().enumerate() {
        let spans: Vec<ReceivedSpan> = fin.spans.iter().filter(|s| s.pid() == Some(res.pid)).cloned().collect();
        let mut exps = vec![first[i].clone()];
        exps.extend(load.iter().filter(|l| l.restart == i).map(|l| {
            HttpExpect::server("GET", &l.path, l.status)
                .route(pods_route())
                .client_port(l.local_port)
                .server_port(*port)
        }));
        let restart_errs = [
            check_http_spans_version(&spans, &exps, "2", &|_| false),
            check_no_connection_spans(&spans),
            check_common(&spans, res, window),
        ]
        .concat();
        errs.extend(restart_errs.into_iter().map(|e| format!("restart {i} (pid {}): {e}", res.pid)));
    }
    let pids: Vec<u32> = processes.iter().map(|(r, _)| r.pid).collect();
    for s in fin.spans.iter().filter(|s| !s.pid().is_some_and(|p| pids.contains(&p))) {
        errs.push(format!("span of no server process: {}", s.summary()));
    }
    let (after_2, after_10) = (rss[0], rss[1]);
    if after_10 > after_2 + RSS_TOLERANCE_KIB {
        errs.push(format!(
            "the agent's VmRSS grew from {after_2} KiB after restart 2 to {after_10} KiB after restart {RESTARTS} \
             (at most {RSS_TOLERANCE_KIB} KiB allowed)"
        ));
    }
    eprintln!(
        "agent VmRSS: {after_2} KiB after restart 2, {after_10} KiB after restart {RESTARTS}; {} load requests",
        load.len()
    );
    assert_finished_ok(&format!("Go TLS server restarted {RESTARTS} times under load"), errs, &fin);
}
