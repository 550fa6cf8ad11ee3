//! The servers' configurations, written once for the tests and the bench: nginx's config file,
//! an etcd member's flags, and TLS certificates.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::files::require_tool;

// ---------------------------------------------------------------------------------------------
// nginx

/// nginx as ONE process (`daemon off; master_process off; worker_processes 1;`) on 127.0.0.1,
/// serving the static files under `<dir>/www` (sendfile on), with its pid, logs and temp paths in
/// `dir`.
pub struct NginxConf<'a> {
    pub port: u16,
    pub worker_connections: u32,
    /// `worker_rlimit_nofile`, when the worker must hold more files than the default limit.
    pub rlimit_nofile: Option<u64>,
    /// `error_log` level.
    pub error_log: &'a str,
    /// Whether requests are logged to `<dir>/access.log`.
    pub access_log: bool,
    pub keepalive_timeout: &'a str,
    pub default_type: &'a str,
    /// `listen` backlog, when a load opens many connections at once.
    pub backlog: Option<u32>,
    /// `location` blocks before the catch-all static one.
    pub locations: &'a [&'a str],
}

impl NginxConf<'_> {
    /// Writes `<dir>/nginx.conf` (and creates the temp paths); returns the command that runs it.
    pub fn write(&self, nginx: &Path, dir: &Path) -> std::io::Result<Command> {
        for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join(format!("tmp/{t}")))?;
        }
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, self.text(dir))?;
        let mut cmd = Command::new(nginx);
        cmd.arg("-p").arg(dir).arg("-e").arg(dir.join("error.log")).arg("-c").arg(&conf_path).current_dir(dir);
        Ok(cmd)
    }

    fn text(&self, dir: &Path) -> String {
        let d = dir.display();
        let port = self.port;
        let rlimit = self.rlimit_nofile.map(|n| format!("worker_rlimit_nofile {n};\n")).unwrap_or_default();
        let access = if self.access_log { format!("{d}/access.log") } else { "off".to_owned() };
        let backlog = self.backlog.map(|n| format!(" backlog={n}")).unwrap_or_default();
        let locations: String = self.locations.iter().map(|l| format!("        {l}\n")).collect();
        let (level, conns, keepalive, default_type) =
            (self.error_log, self.worker_connections, self.keepalive_timeout, self.default_type);
        format!(
            r#"daemon off;
master_process off;
worker_processes 1;
{rlimit}pid {d}/nginx.pid;
error_log {d}/error.log {level};
events {{ worker_connections {conns}; }}
http {{
    access_log {access};
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout {keepalive};
    default_type {default_type};
    server {{
        listen 127.0.0.1:{port}{backlog};
        server_name localhost;
        root {d}/www;
{locations}        location / {{ try_files $uri =404; }}
    }}
}}
"#
        )
    }
}

// ---------------------------------------------------------------------------------------------
// etcd

/// The flags of a one-member etcd cluster named `name`: data in `data_dir`, clients on
/// `client_urls` (comma-separated), the peer URL on `peer_url`, zap logs at `log_level`.
pub fn etcd_member_args(
    name: &str,
    data_dir: &Path,
    client_urls: &str,
    peer_url: &str,
    log_level: &str,
) -> Vec<String> {
    vec![
        format!("--name={name}"),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client_urls}"),
        format!("--advertise-client-urls={client_urls}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster={name}={peer_url}"),
        "--initial-cluster-state=new".to_owned(),
        "--logger=zap".to_owned(),
        format!("--log-level={log_level}"),
    ]
}

/// etcd's flags for serving TLS with the server certificate of `certs`.
pub fn etcd_tls_args(certs: &Certs) -> Vec<String> {
    vec![format!("--cert-file={}", certs.server_cert.display()), format!("--key-file={}", certs.server_key.display())]
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A CA, a server certificate for IP 127.0.0.1 and a client certificate, made with openssl at
/// test time (RSA 2048, valid one day).
#[derive(Clone, Debug)]
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let openssl = require_tool("openssl", "openssl");
    let out = Command::new(openssl).args(args).current_dir(dir).stdin(Stdio::null()).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl Certs {
    /// Makes the files in `dir`.
    pub fn make(dir: &Path) -> Certs {
        // clientAuth too: etcd uses its server certificate as client certificate for its own gRPC
        // gateway connection; without it that connection fails its handshake and is retried forever.
        std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
            .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=itest-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        for (who, cn) in [("server", "/CN=127.0.0.1"), ("client", "/CN=itest-client")] {
            openssl(
                dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    cn,
                    "-keyout",
                    &format!("{who}.key"),
                    "-out",
                    &format!("{who}.csr"),
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{who}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "1",
                    "-extfile",
                    &format!("{who}.ext"),
                    "-out",
                    &format!("{who}.pem"),
                ],
            );
        }
        Certs {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }

    /// curl options for a client that trusts the CA and presents the client certificate.
    pub fn curl_args(&self) -> Vec<String> {
        vec![
            "--cacert".into(),
            self.ca.display().to_string(),
            "--cert".into(),
            self.client_cert.display().to_string(),
            "--key".into(),
            self.client_key.display().to_string(),
        ]
    }
}
