//! Real etcd servers (Debian's etcd 3.4, a Go binary) as targets and peers, etcdctl, a python
//! gRPC client (PyPI grpcio, in a venv under `target/`) that keeps one HTTP/2 connection open, an
//! "exec target" (a shell that execs a client once the tracer is attached), and checks for etcd
//! spans.
//!
//! Everything listens and connects on 127.0.0.1. Missing tools make tests fail with a clear
//! message: nothing is skipped.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::span::ReceivedSpan;
use crate::{Certs, Proc, TempDir, free_port, python, require_tool, tail, wait_for_port, workspace_root};
use harness::{etcd_member_args, etcd_tls_args};

const START_TIMEOUT: Duration = Duration::from_secs(25);
/// Timeout of one etcdctl command.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Certificates

// ---------------------------------------------------------------------------------------------
// etcd

/// How an [`Etcd`] serves its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtcdTls {
    /// `http://`.
    Plain,
    /// `https://` with a server certificate.
    Server,
    /// `https://` and `--client-cert-auth` (clients must present a certificate of the CA).
    Mutual,
}

/// One etcd member (`--name t`) on 127.0.0.1, data in a temp dir. Killed on drop.
pub struct Etcd {
    proc: Proc,
    port: u16,
    peer_port: u16,
    tls: EtcdTls,
    certs: Option<Certs>,
    dir: TempDir,
}

impl Etcd {
    /// Plain-text etcd.
    pub fn start() -> Etcd {
        Self::start_with(EtcdTls::Plain)
    }

    pub fn start_with(tls: EtcdTls) -> Etcd {
        let etcd = require_tool("etcd", "etcd-server");
        require_tool("etcdctl", "etcd-client");
        let mut last_err = String::new();
        for _attempt in 0..5 {
            let dir = TempDir::new("etcd");
            let certs = (tls != EtcdTls::Plain).then(|| Certs::make(dir.path()));
            let port = free_port();
            let peer_port = free_port();
            if port == peer_port {
                continue;
            }
            let scheme = if tls == EtcdTls::Plain { "http" } else { "https" };
            let client_url = format!("{scheme}://127.0.0.1:{port}");
            let peer_url = format!("http://127.0.0.1:{peer_port}");
            let mut cmd = Command::new(&etcd);
            cmd.args(etcd_member_args("t", &dir.join("data"), &client_url, &peer_url, "warn")).current_dir(dir.path());
            if let Some(c) = &certs {
                cmd.args(etcd_tls_args(c));
                if tls == EtcdTls::Mutual {
                    cmd.arg("--client-cert-auth");
                    cmd.arg(format!("--trusted-ca-file={}", c.ca.display()));
                }
            }
            let mut proc = Proc::spawn("etcd", cmd);
            let deadline = Instant::now() + START_TIMEOUT;
            let mut listening = false;
            while Instant::now() < deadline {
                if proc.try_wait().is_some() {
                    break;
                }
                if wait_for_port(port, Duration::from_millis(100)) {
                    listening = true;
                    break;
                }
            }
            if !listening {
                last_err = format!("etcd did not listen on 127.0.0.1:{port}\n{}", proc.describe());
                continue; // most likely a port was taken in between: try other ones
            }
            let e = Etcd { proc, port, peer_port, tls, certs, dir };
            // Serving (leader elected) before any tracer looks at it.
            let mut ready = false;
            while Instant::now() < deadline {
                let out = e.ctl_output(&["get", "/itest-ready"], None);
                if out.status.success() {
                    ready = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if ready {
                e.settle();
                return e;
            }
            last_err = format!("etcd on port {port} did not answer etcdctl get\n{}", e.proc.describe());
        }
        panic!("etcd failed to start: {last_err}");
    }

    /// Waits (at most 8 s) until etcd's own TCP connections have not changed for 1 s: after
    /// start-up etcd connects to itself (its gRPC gateway; with TLS a few short-lived connections
    /// too), which a test should not mistake for its clients' traffic.
    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut last = crate::gotls::tcp_connections_of(self.pid());
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = crate::gotls::tcp_connections_of(self.pid());
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= Duration::from_secs(1) {
                return;
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    pub fn tls(&self) -> EtcdTls {
        self.tls
    }

    pub fn certs(&self) -> Option<&Certs> {
        self.certs.as_ref()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// `http(s)://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls == EtcdTls::Plain { "http" } else { "https" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// The etcdctl options that reach this member (endpoint, timeouts, TLS files).
    pub fn ctl_flags(&self) -> Vec<String> {
        let mut v = vec![
            format!("--endpoints={}", self.url("")),
            "--dial-timeout=5s".to_owned(),
            "--command-timeout=10s".to_owned(),
        ];
        if let Some(c) = &self.certs {
            v.push(format!("--cacert={}", c.ca.display()));
            v.push(format!("--cert={}", c.client_cert.display()));
            v.push(format!("--key={}", c.client_key.display()));
        }
        v
    }

    /// The whole etcdctl command line for `args` (program first).
    pub fn ctl_argv(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec![require_tool("etcdctl", "etcd-client").display().to_string()];
        v.extend(self.ctl_flags());
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let argv = self.ctl_argv(args);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).env("ETCDCTL_API", "3").current_dir(self.dir.path());
        cmd
    }

    /// Runs etcdctl (stdin from `input`), bounded by [`CTL_TIMEOUT`].
    pub fn ctl_output(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut cmd = self.ctl_command(args);
        cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn etcdctl");
        if let Some(text) = input {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(text.as_bytes()).expect("write etcdctl stdin");
        }
        let deadline = Instant::now() + CTL_TIMEOUT;
        loop {
            if child.try_wait().expect("wait etcdctl").is_some() {
                return child.wait_with_output().expect("etcdctl output");
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("etcdctl output");
                panic!(
                    "etcdctl {args:?} did not finish within {CTL_TIMEOUT:?}\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs etcdctl, which must succeed; returns its stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        self.ctl_in(args, None)
    }

    /// Like [`ctl`](Self::ctl) with `input` on stdin (e.g. `txn`).
    pub fn ctl_in(&self, args: &[&str], input: Option<&str>) -> String {
        let out = self.ctl_output(args, input);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed ({})\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            tail(&String::from_utf8_lossy(&out.stderr), 3000)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs etcdctl, which must fail; returns its stderr.
    pub fn ctl_fail(&self, args: &[&str]) -> String {
        let out = self.ctl_output(args, None);
        assert!(
            !out.status.success(),
            "etcdctl {args:?} was expected to fail but succeeded\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// etcdctl as a background process (e.g. `watch`), killed on drop.
    pub fn ctl_spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn("etcdctl", self.ctl_command(args))
    }

    /// The current revision (`etcdctl endpoint status -w json`).
    pub fn revision(&self) -> i64 {
        let out = self.ctl(&["get", "/itest-revision-probe", "-w", "json"]);
        let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("etcdctl get -w json: {e}: {out:?}"));
        v["header"]["revision"].as_i64().unwrap_or_else(|| panic!("no header.revision in {out}"))
    }
}

/// Parses `lease 694d7d8ad1d0b608 granted with TTL(60s)` into the lease id (as etcd's int64).
pub fn parse_lease_grant(stdout: &str) -> i64 {
    let hex = stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected `etcdctl lease grant` output {stdout:?}"));
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("lease id {hex:?}: {e}")) as i64
}

// ---------------------------------------------------------------------------------------------
// exec targets

/// A shell that waits for one line on stdin, then `exec`s a program: the tracer attaches to the
/// shell's pid, the test releases it with [`go`](Self::go), and the program runs under the same pid
/// (a target that execs a new image).
pub struct ExecTarget {
    proc: Proc,
}

impl ExecTarget {
    /// `argv[0]` is the program (a path or a name on PATH).
    pub fn start(argv: &[String], envs: &[(&str, &str)]) -> ExecTarget {
        let bash = require_tool("bash", "bash");
        let mut cmd = Command::new(bash);
        cmd.arg("-c").arg(r#"read -r _ || exit 97; exec "$@""#).arg("exec-target").args(argv);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        ExecTarget { proc: Proc::spawn(&format!("exec {}", argv[0]), cmd) }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Lets the shell exec the program.
    pub fn go(&mut self) {
        self.proc.send_line("go");
    }

    /// Waits for the program to exit; panics unless it succeeded. Returns stdout.
    pub fn wait_success(&mut self, timeout: Duration) -> String {
        let st = self.proc.wait_exit(timeout);
        assert!(st.success(), "{} failed ({st})\n{}", self.proc.name(), self.proc.describe());
        self.proc.stdout()
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

// ---------------------------------------------------------------------------------------------
// python gRPC client (grpcio)

/// The venv with grpcio: `target/py-grpc` (made once, reused across runs). Creating it needs PyPI.
pub fn grpc_python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = workspace_root().join("target/py-grpc");
        let py = venv.join("bin/python");
        let works = |py: &Path| {
            py.is_file()
                && Command::new(py)
                    .args(["-c", "import grpc"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
        };
        if works(&py) {
            return py;
        }
        std::fs::create_dir_all(workspace_root().join("target")).unwrap();
        let _lock = FileLock::take(&workspace_root().join("target/py-grpc.lock"));
        if works(&py) {
            return py;
        }
        let out = Command::new(python()).args(["-m", "venv"]).arg(&venv).output().expect("run python -m venv");
        assert!(
            out.status.success(),
            "cannot create the grpcio venv at {} (python3 -m venv; Debian package python3-venv): {}",
            venv.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", "grpcio"])
            .output()
            .expect("run pip");
        assert!(
            out.status.success() && works(&py),
            "cannot install grpcio into {} (pip install grpcio, needs PyPI): {}\n{}",
            venv.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        py
    })
}

/// An exclusive `flock` on a file, released on drop (several test binaries may build the same
/// things at once).
pub struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    pub fn take(path: &Path) -> FileLock {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open lock file {}: {e}", path.display()));
        // SAFETY: flock on a valid fd we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        FileLock { _file: file }
    }
}

/// `client.py PLAN_JSON`: one grpcio channel (so one HTTP/2 connection) to etcd, raw protobuf
/// bytes (no generated code). Makes `warm` calls, prints `{"event":"warm-done"}`, waits for a
/// line on stdin, makes `n` calls, prints `{"event":"done"}` and waits for another line before it
/// exits (so the connection stays open until the test is done).
///
/// Call `i` of phase `p` is a Put of `/registry/configmaps/<ns>-<p>/p-<i>` (value
/// `<secret>-<i>`) for even `i` and a Range of `/registry/configmaps/<ns>-<p>/r-<i>` for odd
/// `i`; each is reported as `{"event":"call","phase":p,"i":i,"op":...,"key":...}` after it
/// returned. With `deadlines`, call `i` has the deadline `10 s + i * 0.731 s`, so every call sends
/// another `grpc-timeout` value — what clients with per-request deadlines do (the apiserver's etcd
/// client has them): new header-table entries push the ones from before the tracer attached out
/// of the HPACK table.
pub const GRPC_CLIENT: &str = r#"
import json, sys
import grpc

plan = json.loads(sys.argv[1])

def field(num, data):
    out = bytes([(num << 3) | 2])
    n = len(data)
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            out += bytes([b])
            break
    return out + data

target = "127.0.0.1:%d" % plan["port"]
if plan.get("ca"):
    creds = grpc.ssl_channel_credentials(
        root_certificates=open(plan["ca"], "rb").read(),
        private_key=open(plan["key"], "rb").read() if plan.get("key") else None,
        certificate_chain=open(plan["cert"], "rb").read() if plan.get("cert") else None,
    )
    channel = grpc.secure_channel(target, creds)
else:
    channel = grpc.insecure_channel(target)
put = channel.unary_unary("/etcdserverpb.KV/Put", request_serializer=None, response_deserializer=None)
rng = channel.unary_unary("/etcdserverpb.KV/Range", request_serializer=None, response_deserializer=None)

def call(phase, i):
    ns = "%s-%s" % (plan["ns"], phase)
    timeout = 10.0 + i * 0.731 if plan.get("deadlines") else None
    if i % 2 == 0:
        key = "/registry/configmaps/%s/p-%d" % (ns, i)
        value = ("%s-%d" % (plan["secret"], i)).encode()
        put(field(1, key.encode()) + field(2, value), timeout=timeout)
        op = "Put"
    else:
        key = "/registry/configmaps/%s/r-%d" % (ns, i)
        rng(field(1, key.encode()), timeout=timeout)
        op = "Range"
    print(json.dumps({"event": "call", "phase": phase, "i": i, "op": op, "key": key}), flush=True)

for i in range(plan["warm"]):
    call("warm", i)
print(json.dumps({"event": "warm-done"}), flush=True)
sys.stdin.readline()
for i in range(plan["n"]):
    call("mid", i)
print(json.dumps({"event": "done"}), flush=True)
sys.stdin.readline()
channel.close()
"#;

/// One call made by [`GrpcClient`].
#[derive(Clone, Debug)]
pub struct GrpcCall {
    pub phase: String,
    pub i: usize,
    /// `Put` or `Range`.
    pub op: String,
    pub key: String,
}

/// The python grpcio client of [`GRPC_CLIENT`].
pub struct GrpcClient {
    proc: Proc,
    _dir: TempDir,
}

impl GrpcClient {
    /// Starts the client against `etcd` and waits until its warm-up calls are done.
    /// `ns`: namespace prefix of the keys; `secret`: prefix of the values (must never be exported).
    pub fn start(etcd: &Etcd, ns: &str, secret: &str, warm: usize, n: usize, deadlines: bool) -> GrpcClient {
        let py = grpc_python();
        let dir = TempDir::new("grpc");
        let script = dir.write("client.py", GRPC_CLIENT);
        let mut plan = json!({
            "port": etcd.port(), "ns": ns, "secret": secret, "warm": warm, "n": n, "deadlines": deadlines,
        });
        if let Some(c) = etcd.certs() {
            plan["ca"] = json!(c.ca.display().to_string());
            if etcd.tls() == EtcdTls::Mutual {
                plan["cert"] = json!(c.client_cert.display().to_string());
                plan["key"] = json!(c.client_key.display().to_string());
            }
        }
        let mut cmd = Command::new(py);
        cmd.arg(&script).arg(plan.to_string()).current_dir(dir.path());
        let mut proc = Proc::spawn("python-grpc-client", cmd);
        proc.wait_stdout_line("`warm-done`", |l| l.contains("\"warm-done\""), Duration::from_secs(60));
        GrpcClient { proc, _dir: dir }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Starts the calls after the warm-up.
    pub fn go(&mut self) {
        self.proc.send_line("go");
    }

    /// Waits for `done`; returns every call made (both phases), in order.
    pub fn wait_done(&mut self, timeout: Duration) -> Vec<GrpcCall> {
        self.proc.wait_stdout_line("`done`", |l| l.contains("\"done\""), timeout);
        self.calls()
    }

    pub fn calls(&self) -> Vec<GrpcCall> {
        self.proc
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == "call")
            .map(|v| GrpcCall {
                phase: v["phase"].as_str().unwrap().to_owned(),
                i: v["i"].as_u64().unwrap() as usize,
                op: v["op"].as_str().unwrap().to_owned(),
                key: v["key"].as_str().unwrap().to_owned(),
            })
            .collect()
    }

    /// Lets the client close its channel and exit.
    pub fn finish(mut self) {
        self.proc.send_line("exit");
        let st = self.proc.wait_exit(Duration::from_secs(20));
        assert!(st.success(), "python grpc client failed ({st})\n{}", self.proc.describe());
    }
}

// ---------------------------------------------------------------------------------------------
// etcd span checks

/// What one etcd RPC should have produced.
#[derive(Clone, Debug)]
pub struct EtcdExpect {
    /// `server` or `client`.
    pub kind: &'static str,
    /// `db.operation.name` and `rpc.method`: Put, Range, DeleteRange, Txn, Watch, LeaseGrant, ...
    pub op: String,
    /// `rpc.service`.
    pub service: String,
    /// `etcd.key`; None: must be absent.
    pub key: Option<String>,
    /// k8s object of the key (None: attribute absent).
    pub resource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `rpc.grpc.status_code`; None: must be absent (streaming RPC still open).
    pub grpc_status: Option<i64>,
    /// `rpc.grpc.status_code` may be absent (trailers not resolvable mid-connection); when present
    /// it must still be `grpc_status`.
    pub status_may_be_unresolved: bool,
    /// For failing calls: text the span's status message must contain.
    pub error_contains: Option<String>,
    /// Exact values of more attributes (also used to tell apart calls on the same key).
    pub attrs: BTreeMap<String, Value>,
    /// Attributes that must be absent.
    pub absent: Vec<String>,
    /// `server.port` / `network.peer.port` (server span: server.port only).
    pub server_port: Option<u16>,
    pub label: String,
}

impl EtcdExpect {
    pub fn new(kind: &'static str, service: &str, op: &str) -> EtcdExpect {
        EtcdExpect {
            kind,
            op: op.into(),
            service: service.into(),
            key: None,
            resource: None,
            namespace: None,
            name: None,
            grpc_status: Some(0),
            status_may_be_unresolved: false,
            error_contains: None,
            attrs: BTreeMap::new(),
            absent: Vec::new(),
            server_port: None,
            label: String::new(),
        }
    }
    /// A KV call (`etcdserverpb.KV`) on `key`, whose k8s attributes are derived from the key
    /// (`/registry/<resource>[/<namespace>]/<name>`; for keys ending in `/` no name).
    pub fn kv(kind: &'static str, op: &str, key: &str) -> EtcdExpect {
        Self::new(kind, "etcdserverpb.KV", op).key(key)
    }
    /// Sets the key and the k8s attributes it implies (see [`registry_key_parts`]).
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.into());
        let (r, ns, n) = registry_key_parts(key);
        self.resource = r;
        self.namespace = ns;
        self.name = n;
        self
    }
    pub fn attr(mut self, k: &str, v: Value) -> Self {
        self.attrs.insert(k.into(), v);
        self
    }
    pub fn absent(mut self, k: &str) -> Self {
        self.absent.push(k.into());
        self
    }
    pub fn grpc_status(mut self, s: Option<i64>) -> Self {
        self.grpc_status = s;
        self
    }
    pub fn status_may_be_unresolved(mut self) -> Self {
        self.status_may_be_unresolved = true;
        self
    }
    pub fn error(mut self, code: i64, contains: &str) -> Self {
        self.grpc_status = Some(code);
        self.error_contains = Some(contains.into());
        self
    }
    pub fn server_port(mut self, p: u16) -> Self {
        self.server_port = Some(p);
        self
    }
    pub fn label(mut self, l: &str) -> Self {
        self.label = l.into();
        self
    }
    /// The expected span name: `etcd <Op> <resource>` or `etcd <Op>`.
    pub fn span_name(&self) -> String {
        match &self.resource {
            Some(r) => format!("etcd {} {r}", self.op),
            None => format!("etcd {}", self.op),
        }
    }
    fn who(&self) -> String {
        format!(
            "{} etcd {} {}{}",
            self.kind,
            self.op,
            self.key.as_deref().unwrap_or("(no key)"),
            if self.label.is_empty() { String::new() } else { format!(" ({})", self.label) }
        )
    }
    /// Whether `s` is this call's span: kind, rpc.method, etcd.key, and the identifying attributes
    /// (lease and watch ids, limit, revision, prefix) given in `attrs` or required `absent`.
    pub fn identifies(&self, s: &ReceivedSpan) -> bool {
        s.kind == self.kind
            && s.attr_str("rpc.method") == Some(self.op.as_str())
            && s.attr_str("etcd.key") == self.key.as_deref()
            && ["etcd.lease.id", "etcd.limit", "etcd.revision", "etcd.prefix", "etcd.watch.id"].iter().all(|k| {
                match self.attrs.get(*k) {
                    Some(v) => s.attr(k) == Some(v),
                    None => !self.absent.iter().any(|a| a == k) || s.attr(k).is_none(),
                }
            })
    }
}

/// The k8s parts of an etcd key under `/registry`: `(resource, namespace, name)`.
/// `/registry/pods/default/web-0` → (pods, default, web-0); `/registry/nodes/n1` → (nodes, -, n1);
/// `/registry/pods/default/` → (pods, default, -); `/registry/pods/` → (pods, -, -).
pub fn registry_key_parts(key: &str) -> (Option<String>, Option<String>, Option<String>) {
    let Some(rest) = key.strip_prefix("/registry/") else {
        return (None, None, None);
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let s = |p: Option<&&str>| p.filter(|p| !p.is_empty()).map(|p| p.to_string());
    match parts.len() {
        0 => (None, None, None),
        1 => (s(parts.first()), None, None),
        2 => (s(parts.first()), None, s(parts.get(1))),
        _ => (s(parts.first()), s(parts.get(1)), s(parts.get(2))),
    }
}

fn want(errs: &mut Vec<String>, who: &str, s: &ReceivedSpan, key: &str, v: &Value) {
    if s.attr(key) != Some(v) {
        errs.push(format!("{who}: {key} = {:?}, expected {v}", s.attr(key)));
    }
}

fn want_opt_str(errs: &mut Vec<String>, who: &str, s: &ReceivedSpan, key: &str, v: &Option<String>) {
    match v {
        Some(v) => want(errs, who, s, key, &json!(v)),
        None => {
            if let Some(got) = s.attr(key) {
                errs.push(format!("{who}: {key} = {got}, expected it absent"));
            }
        }
    }
}

/// Checks one etcd span against one expectation.
pub fn check_etcd_span(s: &ReceivedSpan, e: &EtcdExpect) -> Vec<String> {
    let mut errs = Vec::new();
    let who = e.who();
    let who = who.as_str();
    if s.kind != e.kind {
        errs.push(format!("{who}: kind {:?}", s.kind));
    }
    let name = e.span_name();
    if s.name != name {
        errs.push(format!("{who}: name {:?}, expected {name:?}", s.name));
    }
    want(&mut errs, who, s, "rpc.system", &json!("grpc"));
    want(&mut errs, who, s, "rpc.service", &json!(e.service));
    want(&mut errs, who, s, "rpc.method", &json!(e.op));
    want(&mut errs, who, s, "db.system.name", &json!("etcd"));
    want(&mut errs, who, s, "db.operation.name", &json!(e.op));
    want(&mut errs, who, s, "network.protocol.version", &json!("2"));
    want(&mut errs, who, s, "network.transport", &json!("tcp"));
    want(&mut errs, who, s, "network.peer.address", &json!("127.0.0.1"));
    want_opt_str(&mut errs, who, s, "etcd.key", &e.key);
    want_opt_str(&mut errs, who, s, "k8s.resource", &e.resource);
    want_opt_str(&mut errs, who, s, "k8s.namespace.name", &e.namespace);
    want_opt_str(&mut errs, who, s, "k8s.object.name", &e.name);
    match e.grpc_status {
        Some(_) if e.status_may_be_unresolved && s.attr("rpc.grpc.status_code").is_none() => {}
        Some(code) => want(&mut errs, who, s, "rpc.grpc.status_code", &json!(code)),
        None => {
            if let Some(v) = s.attr("rpc.grpc.status_code") {
                errs.push(format!("{who}: rpc.grpc.status_code = {v} on a stream that is still open"));
            }
        }
    }
    let failing = e.grpc_status.is_some_and(|c| c != 0);
    if failing {
        if s.status_code != "error" {
            errs.push(format!("{who}: status {:?}, expected error for grpc-status {:?}", s.status_code, e.grpc_status));
        }
        if let Some(text) = &e.error_contains
            && !s.status_message.contains(text.as_str())
        {
            errs.push(format!("{who}: status message {:?} does not contain {text:?}", s.status_message));
        }
    } else {
        if s.status_code != "unset" {
            errs.push(format!("{who}: status {:?} ({:?}), expected unset", s.status_code, s.status_message));
        }
        match s.attr_i64("etcd.response.revision") {
            Some(r) if r > 0 => {}
            other => errs.push(format!("{who}: etcd.response.revision = {other:?}, expected a positive integer")),
        }
    }
    for (k, v) in &e.attrs {
        want(&mut errs, who, s, k, v);
    }
    for k in &e.absent {
        if let Some(v) = s.attr(k) {
            errs.push(format!("{who}: {k} = {v}, expected it absent"));
        }
    }
    if let Some(p) = e.server_port {
        want(&mut errs, who, s, "server.port", &json!(p));
        if e.kind == "client" {
            want(&mut errs, who, s, "network.peer.port", &json!(p));
        }
    }
    // Whichever side: both ends of the connection are known and are real ports.
    for k in ["client.port", "server.port", "network.peer.port"] {
        match s.attr_i64(k) {
            Some(p) if (1..=65535).contains(&p) => {}
            other => errs.push(format!("{who}: {k} = {other:?}, expected a real port (1-65535)")),
        }
    }
    if s.end <= s.start {
        errs.push(format!("{who}: end {} is not after start {}", s.end, s.start));
    }
    errs
}

/// Matches spans to expectations ([`EtcdExpect::identifies`]): every expectation must have exactly
/// one span. Spans matched by no expectation are errors unless `ignore(span)` says otherwise.
pub fn check_etcd_spans(
    spans: &[ReceivedSpan],
    exps: &[EtcdExpect],
    ignore: &dyn Fn(&ReceivedSpan) -> bool,
) -> Vec<String> {
    let mut errs = Vec::new();
    let mut used = vec![false; spans.len()];
    for e in exps {
        let idx: Vec<usize> = spans.iter().enumerate().filter(|(_, s)| e.identifies(s)).map(|(i, _)| i).collect();
        match idx.as_slice() {
            [] => errs.push(format!("no span for {}", e.who())),
            [i] => {
                used[*i] = true;
                errs.extend(check_etcd_span(&spans[*i], e));
            }
            many => {
                for i in many {
                    used[*i] = true;
                }
                errs.push(format!("{} spans for {} (expected exactly one)", many.len(), e.who()));
            }
        }
    }
    for (i, s) in spans.iter().enumerate() {
        if !used[i] && !ignore(s) {
            errs.push(format!("unexpected span: {}", s.summary()));
        }
    }
    errs
}

/// Problems if any of `needles` appears in the tracer's raw stdout or stderr.
pub fn check_absent_in_output(stdout: &str, stderr: &str, needles: &[&str]) -> Vec<String> {
    let mut errs = Vec::new();
    for n in needles {
        if stdout.contains(n) {
            errs.push(format!("{n:?} appears in the tracer's stdout"));
        }
        if stderr.contains(n) {
            errs.push(format!("{n:?} appears in the tracer's stderr"));
        }
    }
    errs
}

/// Outcome of a mid-connection run: how the spans of the calls made after attach were named.
#[derive(Debug, Default)]
pub struct MidStream {
    /// Calls made after the tracer attached.
    pub calls: usize,
    /// Spans named `unknown` (name not resolvable yet).
    pub unknown: usize,
    /// Spans named right (matched to their call by key, op and name).
    pub named_right: usize,
    /// Index (in call order) of the first call whose span was named right.
    pub first_named: Option<usize>,
    /// Index of the last call without a named span.
    pub last_unnamed: Option<usize>,
}

/// Checks the spans of a [`GrpcClient`] run (tracer on the etcd server, attached between the
/// warm-up and the main phase): every span not named `unknown` is exactly right for the call it
/// belongs to, no span belongs to a warm-up call, there is one span per call (named or unknown;
/// at most `max_missing` calls without any span), the calls from `must_name_from` on are all
/// named, and at most `max_unknown` are unknown.
pub fn check_mid_stream(
    spans: &[ReceivedSpan],
    calls: &[GrpcCall],
    etcd_port: u16,
    must_name_from: usize,
    max_unknown: usize,
    max_missing: usize,
) -> (MidStream, Vec<String>) {
    let mut errs = Vec::new();
    let mid: Vec<&GrpcCall> = calls.iter().filter(|c| c.phase == "mid").collect();
    let conn: Vec<&ReceivedSpan> =
        spans.iter().filter(|s| s.attr_i64("server.port") == Some(i64::from(etcd_port))).collect();
    let mut m = MidStream { calls: mid.len(), ..Default::default() };
    let mut named_for = vec![0usize; mid.len()];
    for s in &conn {
        if s.name == "unknown" {
            m.unknown += 1;
            if s.kind != "server" {
                errs.push(format!("unknown span of kind {:?}: {}", s.kind, s.summary()));
            }
            continue;
        }
        let key = s.attr_str("etcd.key").unwrap_or("");
        if calls.iter().any(|c| c.phase == "warm" && c.key == key) {
            errs.push(format!("span for a call made BEFORE the tracer attached: {}", s.summary()));
            continue;
        }
        let Some(idx) = mid.iter().position(|c| c.key == key) else {
            errs.push(format!("span that matches no call: {}", s.summary()));
            continue;
        };
        named_for[idx] += 1;
        let c = mid[idx];
        // The response trailers may have been encoded with table entries from before attach:
        // grpc-status may be unresolved (absent), never wrong.
        let e = EtcdExpect::kv("server", &c.op, &c.key)
            .server_port(etcd_port)
            .status_may_be_unresolved()
            .label(&format!("call {}", c.i));
        let span_errs = check_etcd_span(s, &e);
        if span_errs.is_empty() {
            m.named_right += 1;
            m.first_named.get_or_insert(idx);
        }
        errs.extend(span_errs);
    }
    for (i, n) in named_for.iter().enumerate() {
        if *n > 1 {
            errs.push(format!("{n} spans for call {} ({} {})", mid[i].i, mid[i].op, mid[i].key));
        }
        if *n == 0 {
            m.last_unnamed = Some(i);
            if i >= must_name_from {
                errs.push(format!(
                    "call {} ({} {}) made well after attach has no span named for it",
                    mid[i].i, mid[i].op, mid[i].key
                ));
            }
        }
    }
    let named: usize = named_for.iter().sum();
    if named + m.unknown > mid.len() || named + m.unknown + max_missing < mid.len() {
        errs.push(format!(
            "{} calls after attach but {} spans on the connection ({} named, {} unknown): expected one each (at most {max_missing} missing)",
            mid.len(),
            named + m.unknown,
            named,
            m.unknown
        ));
    }
    if m.unknown > max_unknown {
        errs.push(format!("{} of {} spans are `unknown` (at most {max_unknown} allowed)", m.unknown, mid.len()));
    }
    if !errs.is_empty() {
        errs.push(format!("mid-connection summary: {m:?}"));
    }
    (m, errs)
}
