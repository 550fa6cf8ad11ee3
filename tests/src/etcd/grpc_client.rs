//! A python gRPC client (PyPI grpcio, in a venv under `target/`) that keeps one HTTP/2 connection
//! to etcd open.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use harness::{Proc, TempDir};
use serde_json::{Value, json};

use super::server::{Etcd, EtcdTls};
use crate::host::{FileLock, python, workspace_root};
use crate::procs::ScriptClient;

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
    client: ScriptClient,
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
        GrpcClient { client: ScriptClient { proc, _dir: dir } }
    }

    /// Waits for `done`; returns every call made (both phases), in order.
    pub fn wait_done(&mut self, timeout: Duration) -> Vec<GrpcCall> {
        self.client.wait_event("done", timeout);
        self.calls()
    }

    pub fn calls(&self) -> Vec<GrpcCall> {
        self.client
            .proc
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
        self.client.proc.send_line("exit");
        let st = self.client.proc.wait_exit(Duration::from_secs(20));
        assert!(st.success(), "python grpc client failed ({st})\n{}", self.client.proc.describe());
    }
}

impl std::ops::Deref for GrpcClient {
    type Target = ScriptClient;
    fn deref(&self) -> &ScriptClient {
        &self.client
    }
}

impl std::ops::DerefMut for GrpcClient {
    fn deref_mut(&mut self) -> &mut ScriptClient {
        &mut self.client
    }
}
