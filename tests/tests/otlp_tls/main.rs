//! OTLP export to a collector behind TLS with a private CA, client-certificate authentication and
//! a required API-key header (see `tls_collector`), the tracer configured only through the
//! standard `OTEL_*` variables; and the start-up refusal of TLS settings that cannot work.
//!
//! Needs root (the tracer loads eBPF programs), nginx (with its gRPC proxy module), openssl, curl
//! and python3.

use std::time::Duration;

use integration_tests::tls_collector::{API_KEY_HEADER, TlsCollector};
use integration_tests::*;

/// The API key the collector requires: it must never show in the tracer's output.
const API_KEY: &str = "itest-api-key-6f1d0c";

/// The requests of the workload, each on its own path: the ground truth the spans are checked on.
const PATHS: [&str; 6] = [
    "/api/v1/namespaces/default/pods/tls-0",
    "/api/v1/namespaces/default/pods/tls-1",
    "/api/v1/namespaces/kube-system/configmaps/tls-2",
    "/apis/apps/v1/namespaces/default/deployments/tls-3",
    "/api/v1/nodes/tls-4",
    "/healthz",
];

/// The standard variables that point the tracer at `collector` over `protocol` (`OTEL_*` names).
fn otel_env(collector: &TlsCollector, protocol: &str) -> Vec<(&'static str, String)> {
    let path = |p: &std::path::Path| p.display().to_string();
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        // Percent-encoded as the specification allows: the tracer must decode it.
        ("OTEL_EXPORTER_OTLP_HEADERS", format!("{API_KEY_HEADER}={}", API_KEY.replace('-', "%2D"))),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&collector.certs.ca)),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", path(&collector.certs.client_cert)),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&collector.certs.client_key)),
        ("OTEL_RESOURCE_ATTRIBUTES", "k8s.cluster.name=itest-tls,deployment.environment=test".to_owned()),
    ]
}

fn start_tracer(pid: u32, env: &[(&str, String)]) -> Tracer {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Every module at debug: no library may log the header either.
    let mut env = env;
    env.push(("TRACER_LOG", "debug"));
    Tracer::start_env(&["--pid".to_owned(), pid.to_string()], &env)
}

fn delivers_every_span(protocol: Protocol, otel_protocol: &str) {
    require_root();
    let collector = TlsCollector::start(protocol, API_KEY);
    // The collector really demands both credentials: without the client certificate nginx
    // answers 400, without the header 401.
    assert_eq!(collector.status_of(false, &[&format!("{API_KEY_HEADER}: {API_KEY}")]), 400, "{}", collector.describe());
    assert_eq!(collector.status_of(true, &[]), 401, "{}", collector.describe());
    assert_eq!(collector.status_of(true, &[&format!("{API_KEY_HEADER}: wrong")]), 401, "{}", collector.describe());

    let srv = PythonHttpServer::start();
    let mut tracer = start_tracer(srv.pid(), &otel_env(&collector, otel_protocol));
    tracer.wait_attached(srv.pid());
    for path in PATHS {
        let t = curl_one(&[srv.url(path)]);
        assert_eq!(t.code, 200, "{path}");
    }
    let is_workload = |s: &ReceivedSpan| s.kind == "server" && s.pid() == Some(srv.pid());
    collector.rx.wait_for(is_workload, PATHS.len(), SPAN_TIMEOUT);
    std::thread::sleep(SETTLE);
    let out = tracer.stop();
    out.assert_no_panic();
    out.assert_code(0);

    let spans: Vec<ReceivedSpan> = collector.rx.spans().into_iter().filter(is_workload).collect();
    let mut errs = Vec::new();
    for path in PATHS {
        let n = spans.iter().filter(|s| s.method_path() == ("GET".to_owned(), path.to_owned())).count();
        if n != 1 {
            errs.push(format!("{n} server spans for GET {path}, expected 1"));
        }
    }
    if spans.len() != PATHS.len() {
        errs.push(format!("{} server spans of the workload, expected {}", spans.len(), PATHS.len()));
    }
    for s in &spans {
        if s.res_str("k8s.cluster.name") != Some("itest-tls") || s.res_str("deployment.environment") != Some("test") {
            errs.push(format!("{}: resource without OTEL_RESOURCE_ATTRIBUTES: {:?}", s.summary(), s.resource));
        }
        if s.res_str("service.name").is_none() {
            errs.push(format!("{}: no service.name", s.summary()));
        }
    }
    if protocol == Protocol::Http {
        let paths: Vec<String> = collector.rx.http_requests().into_iter().map(|h| h.path).collect();
        if paths.is_empty() || paths.iter().any(|p| p != "/v1/traces") {
            errs.push(format!("OTLP/HTTP request paths {paths:?}, expected /v1/traces (appended to the endpoint)"));
        }
    }
    if !collector.rx.errors().is_empty() {
        errs.push(format!("receiver errors: {:?}", collector.rx.errors()));
    }
    // Every request the tracer made got through nginx's checks.
    let access_log = collector.access_log();
    let refused: Vec<&str> =
        access_log.lines().filter(|l| l.starts_with("POST") && !l.contains(" 200 SUCCESS")).map(str::trim).collect();
    if !refused.is_empty() {
        errs.push(format!("export requests nginx refused or failed: {refused:?}"));
    }
    let output = format!("{}\n{}", out.stdout, out.stderr);
    if output.contains(API_KEY) || output.contains(&API_KEY.replace('-', "%2D")) {
        errs.push("the API key appears in the tracer's output".to_owned());
    }
    for key in ["BEGIN PRIVATE KEY", "BEGIN RSA PRIVATE KEY"] {
        if output.contains(key) {
            errs.push("key material appears in the tracer's output".to_owned());
        }
    }
    assert!(
        errs.is_empty(),
        "{otel_protocol} over TLS:\n  {}\nspans:\n{}\n{}\n{}",
        errs.join("\n  "),
        dump(&spans),
        collector.describe(),
        out.describe()
    );
}

#[test]
fn every_span_over_grpc_with_mtls_and_header() {
    delivers_every_span(Protocol::Grpc, "grpc");
}

#[test]
fn every_span_over_http_protobuf_with_mtls_and_header() {
    delivers_every_span(Protocol::Http, "http/protobuf");
}

/// Settings that cannot work stop the tracer at start-up with one `error:` line and exit 1, before
/// a probe is loaded (the probe loader logs which hooks it uses: no such line).
#[test]
fn a_wrong_ca_or_key_is_refused_before_probes_load() {
    require_root();
    let collector = TlsCollector::start(Protocol::Grpc, API_KEY);
    let other = TempDir::new("other-ca");
    let other_ca = Certs::make(other.path()).ca;
    let missing = collector.certs.ca.with_file_name("no-such-ca.pem");
    let path = |p: &std::path::Path| p.display().to_string();
    let cases: Vec<(&str, String, &[&str])> = vec![
        // A CA that did not sign the collector's certificate: found at the start-up handshake.
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&other_ca), &["certificate that is not trusted", "--otlp-ca"]),
        (
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            path(&missing),
            &["cannot read the OTLP CA certificate file", "no-such-ca.pem"],
        ),
        // Not a certificate at all.
        ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", path(&collector.certs.client_key), &["holds no PEM certificate"]),
        // A key that is not one, and a key that does not belong to the certificate.
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&collector.certs.ca), &["holds no PEM private key"]),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&collector.certs.server_key), &["client certificate and key"]),
    ];
    let srv = PythonHttpServer::start();
    for (var, value, needles) in cases {
        let mut env = otel_env(&collector, "grpc");
        // A per-signal variable goes before the generic one, which stays.
        env.retain(|(k, _)| *k != var);
        env.push((var, value));
        let out = start_tracer(srv.pid(), &env).wait_exit(Duration::from_secs(30));
        out.assert_error(1, needles);
        let what = format!("{var}: {}", out.describe());
        assert!(!out.stderr.contains("capturing socket I/O"), "probes were loaded: {what}");
        assert!(!out.stderr.contains("target attached"), "a target was attached: {what}");
        assert!(!out.stderr.contains(API_KEY), "the API key appears in the output: {what}");
    }
}

/// Malformed standard variables and `--otlp-header` values: one `error:` line naming the variable
/// or flag and the entry, exit 1, and the value itself never quoted (it may be a credential).
#[test]
fn malformed_settings_are_refused_without_quoting_a_header() {
    const SECRET: &str = "itest-secret-no-equals";
    let refused = |args: &[&str], var: Option<(&str, &str)>, needles: &[&str]| {
        let mut env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")];
        env.extend(var);
        let out = Tracer::start_env(args, &env).wait_exit(Duration::from_secs(30));
        out.assert_error(1, needles);
        assert!(
            !out.stderr.contains(SECRET) && !out.stdout.contains(SECRET),
            "the value is quoted:\n{}",
            out.describe()
        );
        assert!(!out.stderr.contains("capturing socket I/O"), "probes were loaded:\n{}", out.describe());
    };
    let headers = format!("a=1,{SECRET}");
    refused(&[], Some(("OTEL_EXPORTER_OTLP_HEADERS", &headers)), &["OTEL_EXPORTER_OTLP_HEADERS", "entry 2"]);
    refused(&["--otlp-header", SECRET], None, &["--otlp-header", "entry 1"]);
    refused(&[], Some(("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")), &["OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"]);
    refused(&[], Some(("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "soon")), &["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"]);
}
