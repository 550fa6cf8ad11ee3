//! HTTP server metrics from nginx: `http.server.request.duration` per method, route and status.

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::*;

use crate::common::*;

const DURATION: &str = "http.server.request.duration";
const KEYS: [&str; 3] = ["http.request.method", "http.route", "http.response.status_code"];
const PROMETHEUS_KEYS: [&str; 3] = ["http_request_method", "http_route", "http_response_status_code"];
const POD: &str = "/api/v1/namespaces/{namespace}/pods/{name}";
const PODS: &str = "/api/v1/namespaces/{namespace}/pods";
/// A few exports at one per second, and the spans' own way to export.
const METRICS_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests to nginx with known routes, each a known number of times (statuses are what curl got):
/// the OTLP receiver's histogram counts equal them per method, route and status, and so do the
/// Prometheus page's; names and namespaces of the objects appear nowhere; `/healthz` answers 200
/// while capture runs; the agent's own counters are there. The last push at exit holds the same.
#[test]
fn http_requests_are_counted_per_route_and_status() {
    let ng = Nginx::start();
    let addr = format!("127.0.0.1:{}", free_port());
    let flags = metrics_flags(&addr);
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let sess = TraceSession::start(Sink::Grpc, &["--pid".to_owned(), ng.pid().to_string()], &extra, &[ng.pid()]);
    assert_eq!(get(&addr, "/healthz"), (200, "ok\n".to_owned()), "/healthz while capture runs");

    let plan: [(&str, &str, &str, usize); 6] = [
        ("GET", "/api/v1/namespaces/default/pods/nginx-pod", POD, 3),
        ("GET", "/api/v1/namespaces/default/pods/absent-a", POD, 2),
        ("GET", "/api/v1/namespaces/kube-system/pods/absent-b", POD, 1),
        ("POST", "/api/v1/namespaces/default/pods", PODS, 2),
        ("GET", "/healthz", "/healthz", 4),
        ("GET", "/status/500", "/status/{path}", 2),
    ];
    let mut expected: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for (method, path, route, times) in plan {
        let mut args = vec!["-X".to_owned(), method.to_owned()];
        args.extend((0..times).map(|_| ng.url(path)));
        for t in curl(&args).transfers {
            *expected.entry(vec![method.to_owned(), route.to_owned(), t.code.to_string()]).or_insert(0) += 1;
        }
    }
    let total: u64 = expected.values().sum();
    assert_eq!(total, 14, "harness: curl made fewer transfers than planned: {expected:?}");

    let rx = sess.rx.as_ref().expect("OTLP receiver");
    let exports = rx.wait_for_metrics(|e| counts_by(&points(e), DURATION, &KEYS) == expected, METRICS_TIMEOUT);
    let pts = points(&exports);
    let mut errs = Vec::new();
    let got = counts_by(&pts, DURATION, &KEYS);
    if got != expected {
        errs.push(format!("OTLP counts by method, route, status: {got:?}, expected {expected:?}"));
    }
    let (code, page) = get(&addr, "/metrics");
    let scraped = scrape_counts_by(&page, "http_server_request_duration_seconds", &PROMETHEUS_KEYS);
    if code != 200 || scraped != expected {
        errs.push(format!("Prometheus counts ({code}): {scraped:?}, expected {expected:?}\n{page}"));
    }
    errs.extend(attribute_errors(&pts, total));
    errs.extend(cardinality_errors(&pts, &["nginx-pod", "absent-", "kube-system", "default"]));
    assert!(errs.is_empty(), "{}\nreceived points:\n{pts:#?}", errs.join("\n"));

    let fin = sess.finish(SETTLE);
    let rx = fin.rx.as_ref().expect("OTLP receiver");
    let exports = rx.metrics_requests();
    let last = counts_by(&points(&exports), DURATION, &KEYS);
    assert_eq!(last, expected, "the last push, at exit\n{}", fin.output.describe());
    assert!(exports.len() >= 2, "one push per second and one at exit, got {} exports", exports.len());
}

/// What each series must carry beside its key: the Kubernetes attributes of API routes only,
/// `error.type` for 5xx only, the histogram's buckets; the agent's own counters; the resource.
fn attribute_errors(pts: &[Point], total: u64) -> Vec<String> {
    let mut errs = Vec::new();
    for p in pts.iter().filter(|p| p.name == DURATION) {
        let l = |k: &str| p.labels.get(k).map(String::as_str);
        let k8s = (l("k8s.verb"), l("k8s.resource"), l("k8s.api.group"));
        let want = match l("http.route") {
            Some(POD) => (Some("get"), Some("pods"), None),
            Some(PODS) => (Some("create"), Some("pods"), None),
            _ => (None, None, None),
        };
        if k8s != want {
            errs.push(format!("{:?}: k8s verb, resource, group {k8s:?}, expected {want:?}", p.labels));
        }
        let error = l("http.response.status_code").filter(|s| s.starts_with('5'));
        if l("error.type") != error {
            errs.push(format!("{:?}: error.type should be the 5xx status, or absent", p.labels));
        }
        if p.bounds.first() != Some(&0.001) || p.bounds.last() != Some(&60.0) || p.buckets.len() != p.bounds.len() + 1 {
            errs.push(format!("{:?}: buckets {:?} / bounds {:?}", p.labels, p.buckets, p.bounds));
        }
        if p.resource.get("service.name").map(String::as_str) != Some("kube-apiserver-tracer")
            || !p.resource.contains_key("host.name")
        {
            errs.push(format!("resource {:?}", p.resource));
        }
    }
    let value = |name: &str| pts.iter().find(|p| p.name == name && p.labels.is_empty()).map(|p| p.value);
    if value("tracer.spans") != Some(total as f64) {
        errs.push(format!("tracer.spans {:?}, expected {total}", value("tracer.spans")));
    }
    if !value("tracer.events").is_some_and(|n| n > 0.0) {
        errs.push(format!("tracer.events {:?}", value("tracer.events")));
    }
    let lost: Vec<&Point> = pts.iter().filter(|p| p.name == "tracer.events.lost").collect();
    if lost.len() != 7 || lost.iter().any(|p| p.value != 0.0) {
        errs.push(format!("tracer.events.lost: one zero per reason expected: {lost:?}"));
    }
    errs
}
