use std::collections::HashMap;

use clap::Parser;

use super::*;

/// The settings for `args` and the variables `vars` (no process environment).
fn resolve_with(args: &[&str], vars: &[(&str, &str)]) -> Result<OtlpConfig> {
    let cli = Cli::try_parse_from(std::iter::once("tracer").chain(args.iter().copied())).unwrap();
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    resolve(&cli, &|name| vars.get(name).cloned())
}

fn ok(args: &[&str], vars: &[(&str, &str)]) -> OtlpConfig {
    resolve_with(args, vars).unwrap()
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn nothing_configured_means_no_endpoint_and_defaults() {
    let c = ok(&[], &[]);
    assert_eq!(c.traces, OtlpSettings::default());
    assert_eq!(c.metrics, OtlpSettings::default());
    assert!(c.resource.is_empty());
}

#[test]
fn endpoints_follow_the_path_rules() {
    // (args, vars, traces endpoint, metrics endpoint)
    let cases: &[(&[&str], &[(&str, &str)], Option<&str>, Option<&str>)] = &[
        // Generic variable, gRPC: as is, for both signals.
        (&[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")], Some("http://c:4317"), Some("http://c:4317")),
        // Generic variable, OTLP/HTTP: a base URL, with or without its own path and slash.
        (
            &[],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")],
            Some("https://c:4318/v1/traces"),
            Some("https://c:4318/v1/metrics"),
        ),
        (
            &["--otlp-protocol", "http"],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c/otlp/")],
            Some("https://c/otlp/v1/traces"),
            Some("https://c/otlp/v1/metrics"),
        ),
        // Per-signal variables: as is, and before the generic one.
        (
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/custom"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
            Some("http://t:4318/custom"),
            Some("http://generic:4318/v1/metrics"),
        ),
        (&[], &[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:4317")], None, Some("http://m:4317")),
        // The flag beats every variable for traces; metrics go to its base when it has no path.
        (
            &["--otlp-endpoint", "http://flag:4317"],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1")],
            Some("http://flag:4317"),
            Some("http://flag:4317"),
        ),
        (
            &["--otlp-endpoint", "http://flag:4318/", "--otlp-protocol", "http"],
            &[],
            Some("http://flag:4318/"),
            Some("http://flag:4318/v1/metrics"),
        ),
        (
            &["--otlp-endpoint", "http://flag:4318/x/traces", "--otlp-protocol", "http"],
            &[],
            Some("http://flag:4318/x/traces"),
            None,
        ),
        // An empty variable is unset.
        (&[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")], None, None),
    ];
    for (args, vars, traces, metrics) in cases {
        let c = ok(args, vars);
        assert_eq!(c.traces.traces_endpoint.as_deref(), *traces, "{args:?} {vars:?}");
        assert_eq!(c.metrics.metrics_endpoint.as_deref(), *metrics, "{args:?} {vars:?}");
        assert_eq!((c.traces.metrics_endpoint, c.metrics.traces_endpoint), (None, None));
    }
}

#[test]
fn per_signal_variables_and_flags_take_precedence() {
    let vars = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "7000"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "3000"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
        ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/etc/traces-ca.pem"),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/etc/client.pem"),
        ("OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", "/etc/metrics-key.pem"),
    ];
    let c = ok(&[], &vars);
    assert_eq!(c.traces.protocol, OtlpProtocol::Http);
    assert_eq!(c.metrics.protocol, OtlpProtocol::Grpc);
    assert_eq!(c.traces.timeout, Duration::from_millis(3000));
    assert_eq!(c.metrics.timeout, Duration::from_millis(7000));
    assert!(c.traces.gzip && c.metrics.gzip);
    assert_eq!(c.traces.tls.ca, Some("/etc/traces-ca.pem".into()));
    assert_eq!(c.metrics.tls.ca, Some("/etc/ca.pem".into()));
    assert_eq!(c.metrics.tls.client_cert, Some("/etc/client.pem".into()));
    assert_eq!((c.traces.tls.client_key, c.metrics.tls.client_key), (None, Some("/etc/metrics-key.pem".into())));

    let flags = [
        "--otlp-protocol",
        "grpc",
        "--otlp-timeout",
        "250ms",
        "--otlp-compression",
        "none",
        "--otlp-ca",
        "/flag/ca.pem",
        "--otlp-client-cert",
        "/flag/c.pem",
        "--otlp-client-key",
        "/flag/k.pem",
    ];
    for s in [ok(&flags, &vars).traces, ok(&flags, &vars).metrics] {
        assert_eq!((s.protocol, s.timeout, s.gzip), (OtlpProtocol::Grpc, Duration::from_millis(250), false));
        let want = TlsFiles {
            ca: Some("/flag/ca.pem".into()),
            client_cert: Some("/flag/c.pem".into()),
            client_key: Some("/flag/k.pem".into()),
        };
        assert_eq!(s.tls, want);
    }
}

#[test]
fn headers_are_decoded_and_flags_replace_by_name() {
    let c = ok(&[], &[("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=a%20b%3D%2C , Authorization=Bearer%20t,,")]);
    assert_eq!(c.traces.headers, kv(&[("x-api-key", "a b=,"), ("Authorization", "Bearer t")]));
    assert_eq!(c.metrics.headers, c.traces.headers);
    // The per-signal list replaces the generic one.
    let c = ok(&[], &[("OTEL_EXPORTER_OTLP_HEADERS", "a=1"), ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=2")]);
    assert_eq!((c.traces.headers, c.metrics.headers), (kv(&[("b", "2")]), kv(&[("a", "1")])));
    // Flags are taken as written, and replace a variable's header of the same name.
    let c = ok(
        &["--otlp-header", "X-API-KEY=from%20flag", "--otlp-header", "c=3"],
        &[("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=env,keep=1")],
    );
    assert_eq!(c.traces.headers, kv(&[("keep", "1"), ("X-API-KEY", "from%20flag"), ("c", "3")]));
}

#[test]
fn resource_attributes_are_read() {
    let c = ok(&[], &[("OTEL_RESOURCE_ATTRIBUTES", "k8s.cluster.name=prod%2Deu,deployment.environment=prod")]);
    assert_eq!(c.resource, kv(&[("k8s.cluster.name", "prod-eu"), ("deployment.environment", "prod")]));
}

#[test]
fn bad_values_are_errors_that_never_quote_a_header() {
    let cases: &[(&[&str], &[(&str, &str)], &str)] = &[
        (
            &[],
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
            "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\" is not supported",
        ),
        (&[], &[("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10s")], "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT=\"10s\""),
        (&[], &[("OTEL_EXPORTER_OTLP_TIMEOUT", "0")], "above zero"),
        (&[], &[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")], "use gzip or none"),
        (
            &[],
            &[("OTEL_EXPORTER_OTLP_HEADERS", "ok=1,secret-token-value")],
            "OTEL_EXPORTER_OTLP_HEADERS: entry 2 is not key=value",
        ),
        (&[], &[("OTEL_EXPORTER_OTLP_HEADERS", "=secret-token-value")], "entry 1 has an empty key"),
        (&[], &[("OTEL_EXPORTER_OTLP_HEADERS", "k=secret-token-value%FF")], "entry 1 has a value that is not UTF-8"),
        (&["--otlp-header", "secret-token-value"], &[], "--otlp-header: entry 1 is not key=value"),
        (&[], &[("OTEL_RESOURCE_ATTRIBUTES", "a")], "OTEL_RESOURCE_ATTRIBUTES: entry 1"),
    ];
    for (args, vars, want) in cases {
        let e = format!("{:#}", resolve_with(args, vars).unwrap_err());
        assert!(e.contains(want), "{args:?} {vars:?}: {e}");
        assert!(!e.contains("secret-token"), "a header value in an error: {e}");
    }
}
