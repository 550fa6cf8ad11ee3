//! Target and peer processes, and a curl helper. Everything on 127.0.0.1.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use harness::{Certs, NginxConf, Proc, TempDir, free_port, require_tool, tail, wait_for_port};

use crate::host::{comm_of, python};
use crate::scripts;

const START_TIMEOUT: Duration = Duration::from_secs(20);

fn wait_port_file(proc: &mut Proc, path: &Path) -> u16 {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && let Ok(p) = s.trim().parse::<u16>()
        {
            return p;
        }
        proc.assert_running();
        if Instant::now() >= deadline {
            panic!("{} did not report its port within {START_TIMEOUT:?}\n{}", proc.name(), proc.describe());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until_serving(proc: &mut Proc, port: u16) {
    if !wait_for_port(port, START_TIMEOUT) {
        proc.assert_running();
        panic!("{} does not accept connections on 127.0.0.1:{port}\n{}", proc.name(), proc.describe());
    }
}

/// A python executable to run: the real one, or a symlink to it named `exe_name` (so the
/// process's comm is `exe_name`) inside `dir`.
fn python_as(dir: &TempDir, exe_name: Option<&str>) -> PathBuf {
    match exe_name {
        None => python().to_path_buf(),
        Some(name) => {
            assert!(name.len() <= 15, "comm names are at most 15 bytes: {name:?}");
            let link = dir.join(name);
            std::os::unix::fs::symlink(python(), &link).expect("symlink python");
            link
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// The python HTTP/1.1 keep-alive server of [`scripts::HTTP_SERVER`] (threaded), on 127.0.0.1.
pub struct PythonHttpServer {
    proc: Proc,
    port: u16,
    scheme: &'static str,
    dir: TempDir,
}

impl PythonHttpServer {
    pub fn start() -> PythonHttpServer {
        Self::start_inner(None, false)
    }

    /// Same server, but the process's executable (and so its comm) is named `exe_name` (≤ 15 bytes).
    pub fn start_named(exe_name: &str) -> PythonHttpServer {
        Self::start_inner(Some(exe_name), false)
    }

    fn start_inner(exe_name: Option<&str>, tls: bool) -> PythonHttpServer {
        let dir = TempDir::new(if tls { "https" } else { "http" });
        let script = dir.write("server.py", scripts::HTTP_SERVER);
        let port_file = dir.join("port");
        let exe = python_as(&dir, exe_name);
        let mut cmd = Command::new(&exe);
        cmd.arg(&script).arg(&port_file).current_dir(dir.path());
        if tls {
            let certs = Certs::make(dir.path());
            cmd.arg(&certs.server_cert).arg(&certs.server_key);
        }
        let name = if tls { "python-https-server" } else { "python-http-server" };
        let mut proc = Proc::spawn(name, cmd);
        let port = wait_port_file(&mut proc, &port_file);
        wait_until_serving(&mut proc, port);
        PythonHttpServer { proc, port, scheme: if tls { "https" } else { "http" }, dir }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` + `path` (https for the TLS server).
    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{}", self.scheme, self.port, path)
    }

    /// `/proc/PID/comm`.
    pub fn comm(&self) -> String {
        comm_of(self.pid())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// The server's request log (stderr), one line per request.
    pub fn log(&self) -> String {
        self.proc.stderr()
    }
}

/// The same python server over TLS (certificate made at test time by `openssl req -x509`).
pub struct PythonHttpsServer(PythonHttpServer);

impl PythonHttpsServer {
    pub fn start() -> PythonHttpsServer {
        PythonHttpsServer(PythonHttpServer::start_inner(None, true))
    }
}

impl std::ops::Deref for PythonHttpsServer {
    type Target = PythonHttpServer;
    fn deref(&self) -> &PythonHttpServer {
        &self.0
    }
}

impl std::ops::DerefMut for PythonHttpsServer {
    fn deref_mut(&mut self) -> &mut PythonHttpServer {
        &mut self.0
    }
}

/// A raw TCP echo server (python), for non-HTTP connections.
pub struct EchoServer {
    proc: Proc,
    port: u16,
    _dir: TempDir,
}

impl EchoServer {
    /// Waits in select(2), then accepts (the usual event-loop shape).
    pub fn start() -> EchoServer {
        Self::start_inner(false)
    }

    /// Sits in a blocking accept(2) between connections.
    pub fn start_blocking_accept() -> EchoServer {
        Self::start_inner(true)
    }

    fn start_inner(blocking: bool) -> EchoServer {
        let dir = TempDir::new("echo");
        let script = dir.write("echo.py", scripts::ECHO_SERVER);
        let port_file = dir.join("port");
        let mut cmd = Command::new(python());
        cmd.arg(&script).arg(&port_file).current_dir(dir.path());
        if blocking {
            cmd.arg("blocking");
        }
        let mut proc = Proc::spawn("python-echo-server", cmd);
        let port = wait_port_file(&mut proc, &port_file);
        wait_until_serving(&mut proc, port);
        EchoServer { proc, port, _dir: dir }
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// nginx as ONE process (`daemon off; master_process off; worker_processes 1;`) on 127.0.0.1,
/// serving static files (sendfile on) plus a few fixed answers.
///
/// - `/healthz`: 200 `ok\n` (return directive)
/// - `/status/500`: 500 (nginx's built-in error page)
/// - `/api/v1/namespaces/default/pods/nginx-pod`: a static JSON file of [`Nginx::POD_SIZE`] bytes
/// - `/index.html`: a small static file
/// - anything else: 404
pub struct Nginx {
    proc: Proc,
    port: u16,
    dir: TempDir,
}

impl Nginx {
    pub const POD_SIZE: usize = 20_000;

    pub fn start() -> Nginx {
        let nginx = require_tool("nginx", "nginx-light or nginx");
        let mut last_err = String::new();
        for _attempt in 0..5 {
            let dir = TempDir::new("nginx");
            let port = free_port();
            let mut pod = String::from(
                "{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"nginx-pod\"},\"pad\":\"",
            );
            while pod.len() < Self::POD_SIZE - 2 {
                pod.push('p');
            }
            pod.push_str("\"}");
            assert_eq!(pod.len(), Self::POD_SIZE);
            dir.write("www/api/v1/namespaces/default/pods/nginx-pod", &pod);
            dir.write("www/index.html", "<html><body>nginx test</body></html>\n");
            let conf = NginxConf {
                port,
                worker_connections: 64,
                rlimit_nofile: None,
                error_log: "info",
                access_log: true,
                keepalive_timeout: "30s",
                default_type: "application/json",
                backlog: None,
                locations: &[
                    r#"location = /healthz { default_type text/plain; return 200 "ok\n"; }"#,
                    "location = /status/500 { return 500; }",
                ],
            };
            let cmd = conf.write(&nginx, dir.path()).expect("write nginx.conf");
            let mut proc = Proc::spawn("nginx", cmd);
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Some(st) = proc.try_wait() {
                    last_err = format!(
                        "nginx exited ({st}): {}\nerror.log: {}",
                        proc.stderr(),
                        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                    );
                    break;
                }
                if wait_for_port(port, Duration::from_millis(100)) {
                    return Nginx { proc, port, dir };
                }
                if Instant::now() >= deadline {
                    panic!("nginx did not listen on 127.0.0.1:{port}\n{}", proc.describe());
                }
            }
            // most likely the port was taken in between: try another one
        }
        panic!("nginx failed to start: {last_err}");
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------

/// A client script that reports `{"event": ...}` lines on stdout and waits on stdin between its
/// phases (`go` starts its work).
pub struct ScriptClient {
    pub(crate) proc: Proc,
    pub(crate) _dir: TempDir,
}

impl ScriptClient {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Lets the client start its work.
    pub fn go(&mut self) {
        self.proc.send_line("go");
    }

    /// Waits for the `{"event": "<event>"}` line; panics on timeout or exit.
    pub fn wait_event(&mut self, event: &str, timeout: Duration) {
        let quoted = format!("\"{event}\"");
        self.proc.wait_stdout_line(&format!("`{event}`"), |l| l.contains(&quoted), timeout);
    }
}

/// One response seen by [`PythonClient`].
#[derive(Clone, Debug)]
pub struct ClientResult {
    pub index: usize,
    pub status: u16,
    /// Client-measured time from before sending the request to after reading the whole body.
    pub elapsed: Duration,
    pub local_port: u16,
    pub body_len: u64,
}

/// The python HTTP/1.1 client of [`scripts::HTTP_CLIENT`]: one keep-alive connection.
pub struct PythonClient {
    client: ScriptClient,
    wait_stdin: bool,
}

impl PythonClient {
    /// Starts the client with `plan` (see [`scripts::HTTP_CLIENT`]) and waits for its `ready` line.
    /// With `"wait_stdin": true` it then waits for [`go`](Self::go).
    pub fn start(plan: Value) -> PythonClient {
        let dir = TempDir::new("client");
        let script = dir.write("client.py", scripts::HTTP_CLIENT);
        let mut cmd = Command::new(python());
        cmd.arg(&script).arg(plan.to_string()).current_dir(dir.path());
        let wait_stdin = plan.get("wait_stdin").and_then(Value::as_bool).unwrap_or(false);
        let mut proc = Proc::spawn("python-http-client", cmd);
        proc.wait_stdout_line("`ready`", |l| l.contains("\"ready\""), START_TIMEOUT);
        PythonClient { client: ScriptClient { proc, _dir: dir }, wait_stdin }
    }

    /// Runs `plan` without waiting for stdin, to completion; returns the responses.
    pub fn run(mut plan: Value, timeout: Duration) -> Vec<ClientResult> {
        plan["wait_stdin"] = Value::Bool(false);
        let mut c = Self::start(plan);
        let res = c.wait_done(timeout);
        c.client.proc.wait_exit(timeout);
        res
    }

    /// Waits for the `done` line; returns the responses.
    pub fn wait_done(&mut self, timeout: Duration) -> Vec<ClientResult> {
        self.client.wait_event("done", timeout);
        let mut out = Vec::new();
        for line in self.client.proc.stdout().lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["event"] != "response" {
                continue;
            }
            out.push(ClientResult {
                index: v["index"].as_u64().unwrap() as usize,
                status: v["status"].as_u64().unwrap() as u16,
                elapsed: Duration::from_secs_f64(v["elapsed"].as_f64().unwrap()),
                local_port: v["local_port"].as_u64().unwrap() as u16,
                body_len: v["body_len"].as_u64().unwrap(),
            });
        }
        out
    }

    /// Lets a `wait_stdin` client exit (after `done`) and waits for it.
    pub fn finish(mut self) {
        if self.wait_stdin {
            self.client.proc.send_line("exit");
        }
        let st = self.client.proc.wait_exit(Duration::from_secs(20));
        assert!(st.success(), "python client failed ({st})\n{}", self.client.proc.describe());
    }
}

// ---------------------------------------------------------------------------------------------

/// The User-Agent the curl helper sends.
pub const CURL_USER_AGENT: &str = "itest-curl/1.0";

/// One transfer of a curl run.
#[derive(Clone, Debug)]
pub struct Transfer {
    pub code: u16,
    /// curl's `%{time_total}`.
    pub time_total: Duration,
    pub local_port: u16,
    /// New connections made for this transfer (0 = reused).
    pub num_connects: u32,
    pub size_download: u64,
    pub size_upload: u64,
    pub body: String,
}

#[derive(Clone, Debug)]
pub struct CurlRun {
    pub transfers: Vec<Transfer>,
    pub stderr: String,
    pub args: Vec<String>,
}

impl CurlRun {
    pub fn one(&self) -> &Transfer {
        assert_eq!(self.transfers.len(), 1, "curl {:?}: expected one transfer", self.args);
        &self.transfers[0]
    }
}

/// Runs curl (`-sS --noproxy '*'`, User-Agent [`CURL_USER_AGENT`], no `Expect: 100-continue`) with
/// `args` (URLs and options) and returns one [`Transfer`] per URL. Panics if curl fails.
pub fn curl<S: AsRef<OsStr>>(args: &[S]) -> CurlRun {
    let curl = require_tool("curl", "curl");
    const MARK: &str = "\n@@CURL@@ ";
    let fmt = format!(
        "{MARK}%{{http_code}} %{{time_total}} %{{local_port}} %{{num_connects}} %{{size_download}} %{{size_upload}}\n"
    );
    let argv: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
    let out = Command::new(curl)
        .args(["-sS", "--noproxy", "*", "-A", CURL_USER_AGENT, "-H", "Expect:", "--max-time", "30", "-w", &fmt])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "curl {argv:?} failed ({}): {stderr}\nstdout: {}", out.status, tail(&stdout, 2000));
    let mut transfers = Vec::new();
    let mut pos = 0;
    while let Some(i) = stdout[pos..].find(MARK) {
        let body = stdout[pos..pos + i].to_owned();
        let line_start = pos + i + MARK.len();
        let line_end = stdout[line_start..].find('\n').map(|j| line_start + j).unwrap_or(stdout.len());
        let f: Vec<&str> = stdout[line_start..line_end].split_whitespace().collect();
        assert_eq!(f.len(), 6, "unexpected curl -w output {:?}", &stdout[line_start..line_end]);
        transfers.push(Transfer {
            code: f[0].parse().unwrap(),
            time_total: Duration::from_secs_f64(f[1].parse().unwrap()),
            local_port: f[2].parse().unwrap(),
            num_connects: f[3].parse().unwrap(),
            size_download: f[4].parse().unwrap(),
            size_upload: f[5].parse().unwrap(),
            body,
        });
        pos = (line_end + 1).min(stdout.len());
    }
    CurlRun { transfers, stderr, args: argv }
}

/// `curl` with one URL; returns its transfer.
pub fn curl_one<S: AsRef<OsStr>>(args: &[S]) -> Transfer {
    curl(args).one().clone()
}

// ---------------------------------------------------------------------------------------------

/// One response read by [`RawHttp`].
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A hand-driven HTTP/1.1 client connection (for pipelining, fragmented writes, HEAD, 1xx...).
pub struct RawHttp {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl RawHttp {
    pub fn connect(port: u16) -> RawHttp {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        stream.set_nodelay(true).unwrap();
        RawHttp { stream, buf: Vec::new() }
    }

    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().unwrap().port()
    }

    /// Writes `bytes` in one write(2).
    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("write");
    }

    fn fill(&mut self) -> bool {
        use std::io::Read;
        let mut tmp = [0u8; 16384];
        let n = self.stream.read(&mut tmp).expect("read");
        self.buf.extend_from_slice(&tmp[..n]);
        n > 0
    }

    /// Reads one response. `head`: the request was HEAD (no body whatever the headers say).
    /// Interim 1xx responses are returned like any other (call again for the final one).
    pub fn read_response(&mut self, head: bool) -> RawResponse {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(self.fill(), "EOF before a complete response head: {:?}", String::from_utf8_lossy(&self.buf));
        };
        let head_text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head_text.split("\r\n");
        let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> =
            lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
        let mut resp = RawResponse { status, headers, body: Vec::new() };
        if head || (100..200).contains(&status) || status == 204 || status == 304 {
            return resp;
        }
        if let Some(cl) = resp.header("content-length") {
            let n: usize = cl.parse().unwrap();
            while self.buf.len() < n {
                assert!(self.fill(), "EOF in response body");
            }
            resp.body = self.buf.drain(..n).collect();
        } else if resp.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            loop {
                let i = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(self.fill(), "EOF in chunk size");
                };
                let size_line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap();
                while self.buf.len() < size + 2 {
                    assert!(self.fill(), "EOF in chunk");
                }
                resp.body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break;
                }
            }
        } else {
            while self.fill() {}
            resp.body = std::mem::take(&mut self.buf);
        }
        resp
    }

    /// Closes the connection (both directions).
    pub fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl std::ops::Deref for PythonClient {
    type Target = ScriptClient;
    fn deref(&self) -> &ScriptClient {
        &self.client
    }
}

impl std::ops::DerefMut for PythonClient {
    fn deref_mut(&mut self) -> &mut ScriptClient {
        &mut self.client
    }
}
