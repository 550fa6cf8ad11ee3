//! Real Kubernetes clients against the API-server-like Go server of `tests/go/apiserver`
//! ([`GoServer::apiserver`](crate::gotls::GoServer::apiserver)): a kubeconfig for it, `kubectl`
//! runs, what the server logged it was asked (the ground truth of client tests), and client
//! processes started under a name of their own.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use harness::{Certs, Proc, TempDir, require_tool};

/// A bearer token for kubeconfigs: the tests check it is never exported nor logged.
pub const KUBE_TOKEN: &str = "itest-bearer-token-do-not-export";

/// How long one client run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// `kubectl` on PATH (Debian: kubernetes-client; `cargo xtask test` installs it when missing).
pub fn kubectl() -> PathBuf {
    require_tool("kubectl", "kubernetes-client")
}

/// Writes `dir/kubeconfig`: one cluster at `server` (https://127.0.0.1:PORT) verified with the CA
/// of `certs`, a user with [`KUBE_TOKEN`].
pub fn write_kubeconfig(dir: &TempDir, server: &str, certs: &Certs) -> PathBuf {
    dir.write(
        "kubeconfig",
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: itest\n  cluster:\n    server: {server}\n    \
             certificate-authority: {}\nusers:\n- name: itest\n  user:\n    token: {KUBE_TOKEN}\ncontexts:\n\
             - name: itest\n  context: {{cluster: itest, user: itest}}\ncurrent-context: itest\n",
            certs.ca.display()
        ),
    )
}

/// One finished client process.
pub struct ClientRun {
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: String,
    pub describe: String,
}

/// Runs `cmd` to its end (at most 30 s) and returns its pid and output.
pub fn run_client(name: &str, cmd: Command) -> ClientRun {
    let mut proc = Proc::spawn(name, cmd);
    let pid = proc.pid();
    let status = proc.wait_timeout(RUN_TIMEOUT).unwrap_or_else(|| panic!("{name} did not exit\n{}", proc.describe()));
    ClientRun { pid, status, stdout: proc.stdout(), describe: proc.describe() }
}

/// `kubectl get --raw PATH` with `kubeconfig`; `home` is its HOME (its discovery and HTTP cache
/// go there, not into the user's).
pub fn kubectl_get_raw(kubeconfig: &Path, home: &Path, path: &str) -> ClientRun {
    let mut cmd = Command::new(kubectl());
    cmd.arg("--kubeconfig").arg(kubeconfig).args(["--request-timeout=20s", "get", "--raw", path]).env("HOME", home);
    run_client("kubectl", cmd)
}

/// `kubectl get --raw` of a watch of pods that sees no events and ends after a minute (or when
/// the process is killed): a kubectl that stays, started and left running.
pub fn kubectl_watch(kubeconfig: &Path, home: &Path) -> Proc {
    let mut cmd = Command::new(kubectl());
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", "--raw", "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=60"])
        .env("HOME", home);
    Proc::spawn("kubectl-watch", cmd)
}

/// A copy of the executable `bin` named `name` in `dir`: a comm of its own for `--comm`, and a
/// file the tracer has never seen (its executable name is its comm, as a link's would not be).
pub fn copy_as(dir: &TempDir, name: &str, bin: &Path) -> PathBuf {
    let copy = dir.join(name);
    std::fs::copy(bin, &copy).unwrap_or_else(|e| panic!("copy {} to {}: {e}", bin.display(), copy.display()));
    copy
}

/// One request as the API-server-like server logged it (`-v`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub proto: String,
    pub method: String,
    pub path: String,
}

/// The requests in the server's stderr, in order (`2026/12/07 21:53:51 HTTP/2.0 GET /version`).
pub fn logged_requests(stderr: &str) -> Vec<LoggedRequest> {
    stderr
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
            [_date, _time, proto, method, path] if proto.starts_with("HTTP/") => {
                Some(LoggedRequest { proto: proto.to_string(), method: method.to_string(), path: path.to_string() })
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_servers_request_log() {
        let log = "2026/12/07 21:53:51 HTTP/2.0 GET /version\nsomething else\n\
                   2026/12/07 21:53:51 HTTP/1.1 GET /api/v1/namespaces/default/pods/pod-3\n";
        let r = logged_requests(log);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].proto.as_str(), r[0].path.as_str()), ("HTTP/2.0", "/version"));
        assert_eq!((r[1].method.as_str(), r[1].path.as_str()), ("GET", "/api/v1/namespaces/default/pods/pod-3"));
    }
}
