//! The traced servers: one-process nginx serving a small static file, a one-member etcd on
//! tmpfs, and the Go HTTPS server of tests/go (crypto/tls, read through uprobes). And where the
//! traced runs export their spans: the OTLP sink of tests/go.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use harness::{Certs, NginxConf, etcd_member_args, etcd_tls_args};

use super::{
    grpc,
    procs::{Proc, TempDir, ensure_running, free_port, spawn, wait_for_port},
};

/// Size of the static file wrk fetches (like nginx's default index.html).
pub const INDEX_SIZE: usize = 615;

pub struct Nginx {
    proc: Proc,
    pub port: u16,
    _dir: TempDir,
}

impl Nginx {
    pub fn start(nginx: &Path, work: &Path) -> Result<Nginx> {
        let mut last_err = None;
        for _attempt in 0..5 {
            let dir = TempDir::new_in(work, "nginx")?;
            // nginx inherits our limit (raised up to the hard limit); ask for no more than that.
            let nofile = super::load::raise_nofile(65536)?;
            let port = free_port();
            std::fs::create_dir_all(dir.join("www"))?;
            let mut body = String::from("<!DOCTYPE html>\n<html><head><title>bench</title></head><body>\n");
            while body.len() < INDEX_SIZE - 15 {
                body.push('x');
            }
            body.push_str("\n</body></html>\n");
            std::fs::write(dir.join("www/index.html"), &body[..])?;
            let conf = NginxConf {
                port,
                worker_connections: 20000,
                rlimit_nofile: Some(nofile),
                error_log: "warn",
                access_log: false,
                keepalive_timeout: "600s",
                default_type: "text/html",
                backlog: Some(8192),
                locations: &[],
            };
            let mut cmd = conf.write(nginx, dir.path())?;
            let mut proc = spawn("nginx", &mut cmd)?;
            match wait_for_port(&mut proc, port, Duration::from_secs(20)) {
                Ok(()) => return Ok(Nginx { proc, port, _dir: dir }),
                Err(e) => {
                    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                    last_err = Some(e.context(log.lines().last().unwrap_or("").to_owned()));
                }
            }
        }
        Err(last_err.unwrap()).context("nginx did not start")
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/index.html", self.port)
    }

    pub fn check_alive(&mut self) -> Result<()> {
        ensure_running(&mut self.proc)
    }
}

/// Removes etcd data dirs left on tmpfs by benches that were killed (their pid is gone).
pub fn remove_stale_etcd_dirs() {
    let Ok(entries) = std::fs::read_dir("/dev/shm") else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("xtask-bench-etcd-") else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

pub struct Etcd {
    proc: Proc,
    /// gRPC over h2c.
    pub port: u16,
    /// gRPC over TLS, when started with a certificate.
    pub tls_port: Option<u16>,
    _data: TempDir,
}

impl Etcd {
    /// etcd with its data on tmpfs (/dev/shm when present), so fsync does not make the numbers
    /// depend on the disk: what is left is CPU and syscalls, which is what the tracer changes.
    /// With `tls`, it also serves gRPC over TLS on a port of its own.
    pub fn start(etcd: &Path, work: &Path, tls: Option<&Certs>) -> Result<Etcd> {
        let shm = PathBuf::from("/dev/shm");
        let parent = if shm.is_dir() { shm } else { work.to_path_buf() };
        let mut last_err = None;
        for _attempt in 0..5 {
            let data = TempDir::new_in(&parent, "xtask-bench-etcd")?;
            let (client, peer, secure) = (free_port(), free_port(), free_port());
            if client == peer || secure == client || secure == peer {
                continue;
            }
            let plain = format!("http://127.0.0.1:{client}");
            let curl = match tls {
                Some(_) => format!("{plain},https://127.0.0.1:{secure}"),
                None => plain,
            };
            let purl = format!("http://127.0.0.1:{peer}");
            let mut cmd = Command::new(etcd);
            cmd.args(etcd_member_args("bench", data.path(), &curl, &purl, "error"))
                .arg("--auto-compaction-mode=revision")
                .arg("--auto-compaction-retention=100000")
                .current_dir(work);
            if let Some(certs) = tls {
                cmd.args(etcd_tls_args(certs));
            }
            let mut proc = spawn("etcd", &mut cmd)?;
            if let Err(e) = wait_for_port(&mut proc, client, Duration::from_secs(30)) {
                last_err = Some(e);
                continue;
            }
            // Serving gRPC once a put goes through (leader elected).
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match grpc::probe(client) {
                    Ok(()) => return Ok(Etcd { proc, port: client, tls_port: tls.map(|_| secure), _data: data }),
                    Err(e) if Instant::now() >= deadline => {
                        bail!("etcd on port {client} never answered a gRPC Put: {e:#}; {}", proc.last_words())
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
                if let Some(st) = proc.try_wait() {
                    last_err = Some(anyhow::anyhow!("{} exited ({st})", proc.last_words()));
                    break;
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no free ports"))).context("etcd did not start")
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        ensure_running(&mut self.proc)
    }
}

/// Starts a program of tests/go that takes `-addr`, on a free port of 127.0.0.1 (another try if
/// the port was taken meanwhile), and waits until it listens.
fn start_go_program(name: &str, bin: &Path, work: &Path) -> Result<(Proc, u16)> {
    start_go_program_with(name, bin, work, &[])
}

/// [`start_go_program`] with more arguments after `-addr`.
pub fn start_go_program_with(name: &str, bin: &Path, work: &Path, args: &[&str]) -> Result<(Proc, u16)> {
    let mut last_err = None;
    for _attempt in 0..5 {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg("-addr").arg(format!("127.0.0.1:{port}")).args(args).current_dir(work);
        let mut proc = spawn(name, &mut cmd)?;
        match wait_for_port(&mut proc, port, Duration::from_secs(20)) {
            Ok(()) => return Ok((proc, port)),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap())
}

/// `tests/go/https-server`, stripped like a release binary: net/http over crypto/tls, a
/// kube-apiserver-shaped pod GET answered with a small JSON object.
pub struct GoHttps {
    proc: Proc,
    pub port: u16,
}

impl GoHttps {
    pub fn start(bin: &Path, work: &Path) -> Result<GoHttps> {
        let (proc, port) =
            start_go_program("go-https-server", bin, work).context("the Go HTTPS server did not start")?;
        Ok(GoHttps { proc, port })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/api/v1/namespaces/bench/pods/p", self.port)
    }

    pub fn check_alive(&mut self) -> Result<()> {
        ensure_running(&mut self.proc)
    }
}

/// `tests/go/otlp-sink`: an OTLP receiver (gRPC over h2c and OTLP/HTTP on one port) that counts
/// the spans it receives and keeps nothing, so that the traced runs export as they would to a
/// collector, at little cost to the machine.
pub struct OtlpSink {
    proc: Proc,
    pub port: u16,
}

/// What the sink has received since it started.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkCounts {
    pub exports: u64,
    pub spans: u64,
    pub bytes: u64,
    /// Requests that came gzip-compressed.
    pub gzipped: u64,
    pub malformed: u64,
}

impl OtlpSink {
    pub fn start(bin: &Path, work: &Path) -> Result<OtlpSink> {
        let (proc, port) = start_go_program("otlp-sink", bin, work).context("the OTLP sink did not start")?;
        Ok(OtlpSink { proc, port })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET /stats`: `exports=N spans=N bytes=N gzipped=N malformed=N`.
    pub fn counts(&self) -> Result<SinkCounts> {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).context("connecting to the OTLP sink")?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.write_all(b"GET /stats HTTP/1.1\r\nHost: sink\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        conn.read_to_string(&mut text).context("reading the OTLP sink's counts")?;
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let mut c = SinkCounts::default();
        for (k, v) in body.split_whitespace().filter_map(|t| t.split_once('=')) {
            let v: u64 = v.parse().with_context(|| format!("OTLP sink counts: {body:?}"))?;
            match k {
                "exports" => c.exports = v,
                "spans" => c.spans = v,
                "bytes" => c.bytes = v,
                "gzipped" => c.gzipped = v,
                "malformed" => c.malformed = v,
                _ => {}
            }
        }
        if c.exports == 0 && !body.contains("exports=") {
            bail!("the OTLP sink answered without counts: {text:?}");
        }
        Ok(c)
    }
}
