//! The goroutine probes (tracer-ebpf probes/goroutines.rs) on real stripped Go binaries, read
//! from the agent's trace log (`go spawn`, `go link ...`, and the `goroutine` of each data
//! record), against what the programs themselves show:
//! - the Go 1.27 HTTPS server answering five HTTP/2 requests on one connection: a handler link per
//!   stream (1, 3, 5, 7, 9) on the connection's socket (its fd from /proc while it is open), each
//!   handler goroutine spawned by the connection's serve goroutine, which also spawned the
//!   goroutine that reads the connection;
//! - the Go 1.27 HTTP client over HTTP/1.1: each request written by the transport's write loop for
//!   the goroutine that made it, an ancestor of the write loop;
//! - etcdctl (grpc-go 1.33, Go 1.19) against etcd over TLS with client certificates: one client
//!   stream link per call, whose method is the one etcdctl called and whose stream id is the one
//!   its own HTTP/2 framer logged writing (GODEBUG=http2debug=2).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use integration_tests::etcd::{Etcd, EtcdTls};
use integration_tests::gotls::{GoHttpClient, GoServer, wait_go_tls_probes};
use integration_tests::*;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
const TRACE_LOG: (&str, &str) = ("TRACER_LOG", "info,tracer::agent=trace");

/// One trace line of the agent: its message and `key=value` fields.
#[derive(Debug, Clone)]
struct Line {
    msg: String,
    fields: BTreeMap<String, String>,
}

impl Line {
    fn u64(&self, k: &str) -> u64 {
        let v = self.fields.get(k).unwrap_or_else(|| panic!("no {k} in {self:?}"));
        v.parse().unwrap_or_else(|e| panic!("{k}={v}: {e}"))
    }
    fn str(&self, k: &str) -> &str {
        self.fields.get(k).map(|s| s.trim_matches('"')).unwrap_or("")
    }
}

/// The agent's trace lines (`tracer::agent:`) whose message starts with `go ` or is `data`, in log
/// order (the order the ring gave them).
fn trace_lines(stderr: &str) -> Vec<Line> {
    let marker = "TRACE tracer::agent: ";
    stderr
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find(marker)? + marker.len()..];
            let first_field = rest.find('=').map(|eq| rest[..eq].rfind(' ').unwrap_or(0))?;
            let msg = rest[..first_field].trim().to_owned();
            if !(msg == "data" || msg.starts_with("go ")) {
                return None;
            }
            let fields = rest[first_field..]
                .split_whitespace()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                .collect();
            Some(Line { msg, fields })
        })
        .collect()
}

fn of_pid<'a>(lines: &'a [Line], msg: &'a str, pid: u32) -> impl Iterator<Item = (usize, &'a Line)> + 'a {
    lines.iter().enumerate().filter(move |(_, l)| l.msg == msg && l.u64("tgid") == u64::from(pid))
}

/// The parent of goroutine `g` by its latest spawn before log position `before`.
fn parent_of(lines: &[Line], pid: u32, g: u64, before: usize) -> Option<u64> {
    of_pid(lines, "go spawn", pid)
        .filter(|(i, l)| *i < before && l.u64("child") == g)
        .last()
        .map(|(_, l)| l.u64("parent"))
}

/// Whether `ancestor` is `g`'s parent, grandparent... (up to `depth` levels) as of `before`.
fn has_ancestor(lines: &[Line], pid: u32, g: u64, ancestor: u64, before: usize, depth: usize) -> bool {
    let mut g = g;
    for _ in 0..depth {
        match parent_of(lines, pid, g, before) {
            Some(p) if p == ancestor => return true,
            Some(p) => g = p,
            None => return false,
        }
    }
    false
}

/// The fds of `pid`'s established TCP sockets whose local port is `port`.
fn established_fds(pid: u32, port: u16) -> Vec<i32> {
    let mut inodes = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            let local_port =
                cols.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
            if cols.get(3) == Some(&"01") && local_port == Some(port) {
                inodes.insert(cols[9].to_owned());
            }
        }
    }
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/PID/fd");
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            let inode = target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned();
            inodes.contains(&inode).then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

fn start_tracer(args: &[&str]) -> Tracer {
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--output", "none"]);
    Tracer::start_env(&a, &[TRACE_LOG])
}

/// Five HTTP/2 requests of the Go client to the Go 1.27 HTTPS server, one connection.
#[test]
fn h2_server_handler_links_name_each_stream_and_its_connection() {
    let srv = GoServer::https();
    let pid = srv.pid();
    let mut tracer = start_tracer(&["--pid", &pid.to_string()]);
    wait_go_tls_probes(&mut tracer, pid);
    let url = srv.url("/api/v1/namespaces/links/pods/h2");
    let mut client = GoHttpClient::start(&["-url", &url, "-n", "5", "-interval", "150ms"], false);
    // The connection's socket in the server, while the client holds it open.
    let mut fds = Vec::new();
    for _ in 0..200 {
        fds = established_fds(pid, srv.port());
        if !fds.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let responses = client.wait_success(CLIENT_TIMEOUT);
    assert!(responses.len() == 5 && responses.iter().all(|r| r.proto == "HTTP/2.0"), "harness: {responses:?}");
    assert_eq!(fds.len(), 1, "harness: the server should have had one client connection: {fds:?}");
    let fd = fds[0];
    std::thread::sleep(Duration::from_millis(300));
    let out = tracer.stop();
    let lines = trace_lines(&out.stderr);
    let ctx = || format!("tracer log:\n{}", integration_tests::tracer_log::tracer_log_summary(&out.stderr));

    let links: Vec<(usize, &Line)> = of_pid(&lines, "go link h2 server handler", pid).collect();
    let streams: Vec<u64> = links.iter().map(|(_, l)| l.u64("stream_id")).collect();
    assert_eq!(streams, [1, 3, 5, 7, 9], "one handler link per stream, in order; {}", ctx());
    for (_, l) in &links {
        assert_eq!(l.str("fd"), fd.to_string(), "link {l:?} on the connection's socket");
    }
    // Each handler goroutine was spawned just before, by one goroutine: the connection's serve
    // loop, which also spawned the goroutine that reads the connection (its ingress data).
    let parents: BTreeSet<u64> = links
        .iter()
        .map(|(i, l)| parent_of(&lines, pid, l.u64("goroutine"), *i).unwrap_or_else(|| panic!("no spawn of {l:?}")))
        .collect();
    assert_eq!(parents.len(), 1, "every handler has the serve loop as parent: {parents:?}");
    let serve = *parents.first().unwrap();
    let (first_read, reader) = of_pid(&lines, "data", pid)
        .find(|(_, l)| l.str("fd") == fd.to_string() && l.str("dir") == "Ingress")
        .map(|(i, l)| (i, l.u64("goroutine")))
        .expect("ingress data on the connection");
    assert_ne!(reader, 0, "Go TLS data carries its goroutine");
    assert_eq!(parent_of(&lines, pid, reader, first_read), Some(serve), "the reader's parent is the serve loop");
    assert!(links.iter().all(|(_, l)| l.u64("goroutine") != reader && l.u64("goroutine") != serve));
    // The serve loop was itself spawned (by the accept loop) before it spawned the reader.
    assert!(parent_of(&lines, pid, serve, first_read).is_some_and(|p| p != serve && p != 0), "{}", ctx());
    let stats = integration_tests::tracer_log::final_stats(&out.stderr);
    assert_eq!(stats.get("go_link_bad_layout"), Some(&0));
    assert_eq!(stats.get("go_link_no_socket"), Some(&0));
}

/// Three HTTP/1.1 requests of the Go 1.27 client on one connection.
#[test]
fn http1_client_write_links_name_the_calling_goroutine() {
    let srv = GoServer::https();
    let url = srv.url("/api/v1/namespaces/links/pods/h1");
    let mut client = GoHttpClient::start(&["-url", &url, "-n", "3", "-http2=false"], true);
    let pid = client.pid();
    let mut tracer = start_tracer(&["--pid", &pid.to_string()]);
    wait_go_tls_probes(&mut tracer, pid);
    client.go();
    let responses = client.wait_success(CLIENT_TIMEOUT);
    assert!(responses.len() == 3 && responses.iter().all(|r| r.proto == "HTTP/1.1"), "harness: {responses:?}");
    std::thread::sleep(Duration::from_millis(300));
    let out = tracer.stop();
    let lines = trace_lines(&out.stderr);

    let links: Vec<(usize, &Line)> = of_pid(&lines, "go link http1 client write", pid).collect();
    assert_eq!(links.len(), 3, "a link per request: {links:?}");
    let callers: BTreeSet<u64> = links.iter().map(|(_, l)| l.u64("caller")).collect();
    let writers: BTreeSet<u64> = links.iter().map(|(_, l)| l.u64("goroutine")).collect();
    assert_eq!((callers.len(), writers.len()), (1, 1), "one caller (main), one write loop: {links:?}");
    let (caller, writer) = (*callers.first().unwrap(), *writers.first().unwrap());
    assert!(caller != 0 && caller != writer, "the caller is not the write loop: {links:?}");
    // The requests' bytes are written by the write loop (the link's goroutine).
    let egress: Vec<u64> = of_pid(&lines, "data", pid)
        .filter(|(_, l)| l.str("dir") == "Egress")
        .map(|(_, l)| l.u64("goroutine"))
        .collect();
    assert!(egress.len() >= 3 && egress.iter().all(|g| *g == writer), "egress goroutines {egress:?}, writer {writer}");
    // The write loop descends from the caller (through the goroutine that dialled).
    assert!(has_ancestor(&lines, pid, writer, caller, links[0].0, 4), "write loop {writer} not under caller {caller}");
}

/// etcdctl `put` then `get` over TLS with client certificates, each traced from its exec.
#[test]
fn grpc_client_stream_links_carry_the_method_and_the_wire_stream_id() {
    let etcd = Etcd::start_with(EtcdTls::Mutual);
    let mut tracer = start_tracer(&["--comm", "etcdctl"]);
    tracer.wait_for_stderr_line(
        "Go TLS probes attached ahead of exec for etcdctl",
        |l| l.contains("attached ahead of exec") && l.contains("etcdctl"),
        Duration::from_secs(30),
    );
    let mut runs = Vec::new();
    for (args, method) in
        [(["put", "/links/k", "v"], "/etcdserverpb.KV/Put"), (["get", "/links/k", ""], "/etcdserverpb.KV/Range")]
    {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let mut cmd = etcd.ctl_command(&args);
        cmd.env("GODEBUG", "http2debug=2").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let child = cmd.spawn().expect("spawn etcdctl");
        let pid = child.id();
        let out = child.wait_with_output().expect("etcdctl");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "etcdctl {args:?}: {stderr}");
        // Its own framer's log: `http2: Framer 0x...: wrote HEADERS flags=... stream=N len=...`.
        let wire: Vec<u64> = stderr
            .lines()
            .filter(|l| l.contains("wrote HEADERS"))
            .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("stream=")?.parse().ok()))
            .collect();
        assert!(!wire.is_empty(), "harness: no HEADERS in etcdctl's framer log: {stderr}");
        runs.push((pid, method, wire));
    }
    std::thread::sleep(Duration::from_millis(300));
    let out = tracer.stop();
    let lines = trace_lines(&out.stderr);
    for (pid, method, wire) in runs {
        let links: Vec<&Line> = of_pid(&lines, "go link grpc client stream", pid).map(|(_, l)| l).collect();
        let ids: Vec<u64> = links.iter().map(|l| l.u64("stream_id")).collect();
        assert_eq!(ids, wire, "etcdctl {pid}: link stream ids = the HEADERS it wrote; links {links:?}");
        assert!(links.iter().any(|l| l.str("path") == method), "etcdctl {pid}: a link for {method}: {links:?}");
        for l in &links {
            let (writer, caller) = (l.u64("goroutine"), l.u64("caller"));
            assert!(caller != 0 && caller != writer, "the call's goroutine is not grpc-go's writer: {l:?}");
            // The writer wrote the HEADERS: egress data of that goroutine.
            assert!(
                of_pid(&lines, "data", pid).any(|(_, d)| d.str("dir") == "Egress" && d.u64("goroutine") == writer),
                "no egress data from the writer goroutine {writer}"
            );
        }
    }
}
