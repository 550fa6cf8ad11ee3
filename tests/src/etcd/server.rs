//! Real etcd servers (Debian's etcd 3.4, a Go binary) as targets and peers, etcdctl, and an "exec
//! target" (a shell that execs a client once the tracer is attached).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use harness::{Certs, Proc, TempDir, etcd_member_args, etcd_tls_args, free_port, require_tool, tail, wait_for_port};

use crate::host::tcp_connections_of;

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
        let mut last = tcp_connections_of(self.pid());
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = tcp_connections_of(self.pid());
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
