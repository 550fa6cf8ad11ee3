//! Short-lived Go clients started after the tracer (`--comm`), their binary never run before: each
//! run is a new process that makes its requests right after its exec, too soon for probes
//! attached once the agent has seen the process, and sooner than a first analysis of the binary.
//! The agent found the binary on its PATH at start-up and attached its probes ahead of any exec:
//! every request of every run, from the first, must be decoded.

use std::process::Command;

use super::common::{RUNS, check_short_lived_clients, pod_path};
use integration_tests::gotls::{GoServer, apiserver_bin, http_client_bin};
use integration_tests::kube::{copy_as, kubectl, kubectl_get_raw, run_client, write_kubeconfig};
use integration_tests::*;

/// The file name of the executable `path` runs (its links followed): `process.executable.name`.
fn exe_name(path: &std::path::Path) -> String {
    let real = std::fs::canonicalize(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The real kubectl (Go, client-go, HTTP/2 over TLS, the server verified with its CA, a bearer
/// token) against the API-server-like server, under `--comm kubectl`, no kubectl run before:
/// `kubectl get --raw` of a pod, ten runs: every request of every run (the pod GET, and `/version`
/// when a kubectl asks it first) has its client span with method, path, status and Kubernetes
/// attributes.
///
/// kubectl runs as `kubectl` (its comm), wherever it lives. Google Cloud SDK's kubectl is a
/// dispatcher that asks the server's `/version` and execs a kubectl of the server's minor version
/// when it is not its own; the test server says v1.32.4, the version the dispatcher serves itself,
/// so the comm stays `kubectl` and each run is one process.
#[test]
fn kubectl_runs_traced_from_exec() {
    let kubectl = kubectl();
    let dir = TempDir::new("kubectl");
    let certs = Certs::make(dir.path());
    let mut srv = GoServer::apiserver(&apiserver_bin(), &certs);
    let kubeconfig = write_kubeconfig(&dir, &srv.url(""), &certs);
    let home = dir.join("home");
    std::fs::create_dir(&home).expect("create kubectl's HOME");
    let run = |n: usize| {
        let r = kubectl_get_raw(&kubeconfig, &home, &pod_path(n));
        let pod = format!("\"name\":\"pod-{n}\"");
        assert!(r.stdout.contains(&pod), "harness: kubectl run {n} did not print pod-{n}\n{}", r.describe);
        r
    };
    let exe = exe_name(&kubectl);
    let bin_dir = kubectl.parent().expect("kubectl's directory");
    check_short_lived_clients(
        &format!("kubectl get --raw ({}), {RUNS} runs under --comm kubectl", kubectl.display()),
        ("kubectl", &exe),
        bin_dir,
        &mut srv,
        &run,
    );
}

/// The stripped Go 1.27 client of `tests/go` (net/http, HTTP/2 over TLS), copied under a name of
/// its own (its comm) in a directory put on the tracer's PATH, never run before: one pod GET per
/// run, ten runs, each over almost at once: a client span for each.
#[test]
fn stripped_go_client_runs_traced_from_exec() {
    let dir = TempDir::new("goclient");
    let certs = Certs::make(dir.path());
    let mut srv = GoServer::apiserver(&apiserver_bin(), &certs);
    let comm = unique_name("gocl-");
    let client = copy_as(&dir, &comm, &http_client_bin());
    let base = srv.url("");
    let run = |n: usize| {
        let mut cmd = Command::new(&client);
        cmd.args(["-insecure", "-n", "1", "-url"]).arg(format!("{base}{}", pod_path(n)));
        let r = run_client("go-http-client", cmd);
        assert!(r.stdout.starts_with("HTTP/2.0 200 "), "harness: run {n} did not get its pod\n{}", r.describe);
        r
    };
    check_short_lived_clients(
        &format!("stripped Go 1.27 client, {RUNS} runs under --comm {comm}"),
        (&comm, &comm),
        dir.path(),
        &mut srv,
        &run,
    );
}
