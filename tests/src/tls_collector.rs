//! A collector behind TLS with client-certificate authentication and a required header: nginx
//! terminates TLS (`ssl_verify_client on` against a private CA), answers 401 to a request without
//! the right `x-api-key`, and passes the rest to a plain [`OtlpReceiver`] (`grpc_pass` for
//! OTLP/gRPC over HTTP/2, `proxy_pass` for OTLP/HTTP).

use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Certs, Proc, TempDir, free_port, require_tool, wait_for_port};

use crate::otlp::{OtlpReceiver, Protocol};

/// The header the collector requires, and its only accepted value.
pub const API_KEY_HEADER: &str = "x-api-key";

const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct TlsCollector {
    // Field order = drop order: the front goes before the receiver.
    nginx: Proc,
    pub rx: OtlpReceiver,
    port: u16,
    pub certs: Certs,
    dir: TempDir,
}

impl TlsCollector {
    /// A receiver for `protocol` behind nginx on 127.0.0.1, with fresh certificates; only requests
    /// with a client certificate of the CA and `x-api-key: <api_key>` reach it.
    pub fn start(protocol: Protocol, api_key: &str) -> TlsCollector {
        let nginx = require_tool("nginx", "nginx");
        let rx = OtlpReceiver::start(protocol);
        let dir = TempDir::new("tls-collector");
        let certs = Certs::make(dir.path());
        let mut last_err = String::new();
        // A free port may be taken before nginx binds it: try a few.
        for _attempt in 0..5 {
            let port = free_port();
            std::fs::write(dir.join("nginx.conf"), conf(&dir, &certs, port, protocol, rx.port(), api_key)).unwrap();
            for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                std::fs::create_dir_all(dir.join(format!("tmp/{t}"))).unwrap();
            }
            let mut cmd = Command::new(&nginx);
            cmd.arg("-p").arg(dir.path()).arg("-e").arg(dir.join("error.log"));
            cmd.arg("-c").arg(dir.join("nginx.conf")).current_dir(dir.path());
            let mut proc = Proc::spawn("nginx-tls-collector", cmd);
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Some(st) = proc.try_wait() {
                    last_err = format!("nginx exited ({st}): {}\nerror.log: {}", proc.stderr(), error_log(&dir));
                    break;
                }
                if wait_for_port(port, Duration::from_millis(100)) {
                    return TlsCollector { nginx: proc, rx, port, certs, dir };
                }
                assert!(Instant::now() < deadline, "nginx did not listen on 127.0.0.1:{port}\n{}", proc.describe());
            }
        }
        panic!("the TLS collector's nginx failed to start: {last_err}");
    }

    /// `https://127.0.0.1:PORT`: the generic OTLP endpoint (for OTLP/HTTP the tracer appends
    /// `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The HTTP status nginx answers a `curl` request with, over TLS trusting the CA, with the
    /// client certificate when `client_cert`, and `headers`. Never reaches the receiver unless both
    /// the certificate and the key are given.
    pub fn status_of(&self, client_cert: bool, headers: &[&str]) -> u16 {
        let curl = require_tool("curl", "curl");
        let mut cmd = Command::new(curl);
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert"]).arg(&self.certs.ca);
        if client_cert {
            cmd.arg("--cert").arg(&self.certs.client_cert).arg("--key").arg(&self.certs.client_key);
        }
        for h in headers {
            cmd.args(["-H", h]);
        }
        let out = cmd.arg(format!("{}/v1/traces", self.endpoint())).output().expect("run curl");
        let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        code.parse()
            .unwrap_or_else(|_| panic!("curl gave no status ({code:?}): {}", String::from_utf8_lossy(&out.stderr)))
    }

    /// nginx's access log: one line per request, with its status.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    pub fn describe(&self) -> String {
        format!(
            "nginx: {}\nerror.log:\n{}\naccess.log:\n{}",
            self.nginx.describe(),
            error_log(&self.dir),
            self.access_log()
        )
    }
}

fn error_log(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
}

/// One nginx process; the header check is a `map`, so that the key is compared, never logged.
fn conf(dir: &TempDir, certs: &Certs, port: u16, protocol: Protocol, upstream: u16, api_key: &str) -> String {
    let d = dir.path().display();
    let pass = match protocol {
        Protocol::Grpc => format!("grpc_pass grpc://127.0.0.1:{upstream};"),
        Protocol::Http => format!("proxy_pass http://127.0.0.1:{upstream}; proxy_http_version 1.1;"),
    };
    let (ca, cert, key) = (certs.ca.display(), certs.server_cert.display(), certs.server_key.display());
    let header_var = API_KEY_HEADER.replace('-', "_");
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    log_format status '$request $status $ssl_client_verify';
    access_log {d}/access.log status;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    map $http_{header_var} $api_key_ok {{ default 0; "{api_key}" 1; }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        location / {{
            if ($api_key_ok = 0) {{ return 401; }}
            {pass}
        }}
    }}
}}
"#
    )
}
