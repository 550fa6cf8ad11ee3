//! etcd metrics: traced etcdctl processes' calls as `db.client.operation.duration`, and the traced
//! etcd's side of the same calls as `rpc.server.call.duration`, per operation and resource.

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::etcd::{Etcd, ExecTarget};
use integration_tests::*;

use crate::common::*;

const SECRET: &str = "itest-metrics-never-value-5e1d";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(25);
const METRICS_TIMEOUT: Duration = Duration::from_secs(30);

/// etcdctl runs (one call each: three Puts, two Ranges, a DeleteRange, keys under
/// `/registry/configmaps/`) against etcd, all traced, metrics over OTLP/HTTP: the clients' calls
/// are counted per operation and resource, and so are etcd's answers to them; the Prometheus page
/// shows the same; no key, namespace or value appears.
#[test]
fn etcd_calls_are_counted_per_operation_and_resource() {
    let etcd = Etcd::start();
    let ns = "/registry/configmaps/metrics-ns";
    let plan: [(&[&str], &str); 6] = [
        (&["put", &format!("{ns}/a"), SECRET], "Put"),
        (&["put", &format!("{ns}/b"), SECRET], "Put"),
        (&["put", &format!("{ns}/c"), SECRET], "Put"),
        (&["get", &format!("{ns}/a")], "Range"),
        (&["get", "--prefix", &format!("{ns}/")], "Range"),
        (&["del", &format!("{ns}/c")], "DeleteRange"),
    ];
    let mut clients: Vec<ExecTarget> =
        plan.iter().map(|(args, _)| ExecTarget::start(&etcd.ctl_argv(args), &[("ETCDCTL_API", "3")])).collect();
    let mut pids = vec![etcd.pid()];
    pids.extend(clients.iter().map(ExecTarget::pid));
    let args: Vec<String> = pids.iter().flat_map(|p| ["--pid".to_owned(), p.to_string()]).collect();
    let addr = format!("127.0.0.1:{}", free_port());
    let flags = metrics_flags(&addr);
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let sess = TraceSession::start(Sink::Http, &args, &extra, &pids);
    let mut expected: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for (client, (_, op)) in clients.iter_mut().zip(plan) {
        client.go();
        client.wait_success(CLIENT_TIMEOUT);
        *expected.entry(vec![op.to_owned(), "configmaps".to_owned()]).or_insert(0) += 1;
    }

    let client_keys = ["db.operation.name", "k8s.resource"];
    let server_keys = ["rpc.method", "k8s.resource"];
    let both = |e: &[_]| {
        let pts = points(e);
        counts_by(&pts, "db.client.operation.duration", &client_keys) == expected
            && counts_by(&pts, "rpc.server.call.duration", &server_keys) == expected
    };
    let rx = sess.rx.as_ref().expect("OTLP receiver");
    let pts = points(&rx.wait_for_metrics(both, METRICS_TIMEOUT));
    let mut errs = Vec::new();
    for (name, keys) in [("db.client.operation.duration", client_keys), ("rpc.server.call.duration", server_keys)] {
        let got = counts_by(&pts, name, &keys);
        if got != expected {
            errs.push(format!("{name} by {keys:?}: {got:?}, expected {expected:?}"));
        }
    }
    for p in pts.iter().filter(|p| p.name == "db.client.operation.duration") {
        let l = |k: &str| p.labels.get(k).map(String::as_str);
        if (l("db.system.name"), l("db.response.status_code"), l("error.type")) != (Some("etcd"), Some("0"), None) {
            errs.push(format!("db.client.operation.duration {:?}: system, status, error", p.labels));
        }
    }
    let (code, page) = get(&addr, "/metrics");
    for (name, keys) in [
        ("db_client_operation_duration_seconds", ["db_operation_name", "k8s_resource"]),
        ("rpc_server_call_duration_seconds", ["rpc_method", "k8s_resource"]),
    ] {
        let scraped = scrape_counts_by(&page, name, &keys);
        if code != 200 || scraped != expected {
            errs.push(format!("Prometheus {name} ({code}): {scraped:?}, expected {expected:?}"));
        }
    }
    errs.extend(cardinality_errors(&pts, &["metrics-ns", SECRET, "/registry"]));
    assert!(errs.is_empty(), "{}\nreceived points:\n{pts:#?}\npage:\n{page}", errs.join("\n"));

    let fin = sess.finish(SETTLE);
    let rx = fin.rx.as_ref().expect("OTLP receiver");
    for h in rx.metrics_http_requests() {
        assert_eq!((h.method.as_str(), h.path.as_str(), h.status), ("POST", "/v1/metrics", 200), "{h:?}");
        assert!(h.content_type.starts_with("application/x-protobuf"), "{h:?}");
    }
    assert!(!rx.metrics_http_requests().is_empty(), "no OTLP/HTTP metrics request");
}
