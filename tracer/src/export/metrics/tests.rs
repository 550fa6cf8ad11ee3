use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::Method;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider};

use super::instruments::{Measure, SpanInstruments, attributes};
use super::prometheus::ScrapePage;
use super::*;
use crate::span::{AttrValue, SpanKind, SpanStatus};

fn span(kind: SpanKind, status: SpanStatus, attrs: &[(&'static str, AttrValue)], millis: u64) -> SpanRecord {
    let mut s = crate::export::tests::test_span("s", 1, None, 0, millis);
    s.kind = kind;
    s.status = status;
    s.attributes = attrs.to_vec();
    s
}

fn api_get(status: i64, name: &str) -> Vec<(&'static str, AttrValue)> {
    vec![
        ("http.request.method", "GET".into()),
        ("url.path", format!("/api/v1/namespaces/default/pods/{name}").into()),
        ("url.scheme", "http".into()),
        ("http.route", "/api/v1/namespaces/{namespace}/pods/{name}".into()),
        ("http.response.status_code", status.into()),
        ("client.port", 40000i64.into()),
        ("k8s.verb", "get".into()),
        ("k8s.resource", "pods".into()),
        ("k8s.namespace.name", "default".into()),
        ("k8s.object.name", name.to_owned().into()),
    ]
}

fn etcd_call(op: &'static str, code: i64) -> Vec<(&'static str, AttrValue)> {
    vec![
        ("rpc.system", "grpc".into()),
        ("rpc.service", "etcdserverpb.KV".into()),
        ("rpc.method", op.into()),
        ("rpc.grpc.status_code", code.into()),
        ("db.system.name", "etcd".into()),
        ("db.operation.name", op.into()),
        ("etcd.key", "/registry/pods/default/web-0".to_owned().into()),
        ("k8s.resource", "pods".into()),
        ("k8s.object.name", "web-0".to_owned().into()),
        ("server.port", 2379i64.into()),
    ]
}

fn keys(span: &SpanRecord, measure: Measure) -> Vec<(String, String)> {
    attributes(span, measure).iter().map(|kv| (kv.key.to_string(), kv.value.to_string())).collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Each span kind goes to its instrument with its low-cardinality attributes only: no path, no
/// object name, key or client port; an unknown method is `_OTHER`; `error.type` for errors.
#[test]
fn spans_are_measured_with_low_cardinality_attributes() {
    let server = span(SpanKind::Server, SpanStatus::Unset, &api_get(200, "web-0"), 3);
    assert_eq!(Measure::of(&server), Some(Measure::HttpServer));
    assert_eq!(
        keys(&server, Measure::HttpServer),
        pairs(&[
            ("http.request.method", "GET"),
            ("url.scheme", "http"),
            ("http.route", "/api/v1/namespaces/{namespace}/pods/{name}"),
            ("http.response.status_code", "200"),
            ("k8s.verb", "get"),
            ("k8s.resource", "pods"),
        ])
    );
    let mut odd = api_get(503, "web-1");
    odd[0].1 = "BREW".into();
    let failed = span(SpanKind::Server, SpanStatus::Error("HTTP 503".into()), &odd, 3);
    let failed_keys = keys(&failed, Measure::HttpServer);
    assert_eq!(failed_keys[0], ("http.request.method".into(), "_OTHER".into()));
    assert_eq!(failed_keys.last(), Some(&("error.type".into(), "503".into())));

    let client = span(SpanKind::Client, SpanStatus::Unset, &etcd_call("Range", 0), 1);
    assert_eq!(Measure::of(&client), Some(Measure::DbClient));
    assert_eq!(
        keys(&client, Measure::DbClient),
        pairs(&[
            ("db.system.name", "etcd"),
            ("db.operation.name", "Range"),
            ("k8s.resource", "pods"),
            ("db.response.status_code", "0")
        ])
    );
    let etcd_side = span(SpanKind::Server, SpanStatus::Error("gRPC 5".into()), &etcd_call("Put", 5), 1);
    assert_eq!(Measure::of(&etcd_side), Some(Measure::RpcServer));
    let server_keys = keys(&etcd_side, Measure::RpcServer);
    assert!(server_keys.contains(&("rpc.method".into(), "Put".into())), "{server_keys:?}");
    assert_eq!(server_keys.last(), Some(&("error.type".into(), "5".into())));

    let webhook = vec![
        ("http.request.method", AttrValue::from("POST")),
        ("url.path", "/validate".into()),
        ("server.address", "webhook.default.svc".into()),
        ("server.port", 443i64.into()),
        ("http.response.status_code", 200i64.into()),
    ];
    assert_eq!(Measure::of(&span(SpanKind::Client, SpanStatus::Unset, &webhook, 1)), Some(Measure::HttpClient));
    let connection = vec![("network.transport", AttrValue::from("tcp"))];
    assert_eq!(Measure::of(&span(SpanKind::Client, SpanStatus::Unset, &connection, 1)), None);
}

fn provider() -> (SdkMeterProvider, SharedReader) {
    let reader = SharedReader(Arc::new(ManualReader::builder().build()));
    (SdkMeterProvider::builder().with_reader(reader.clone()).build(), reader)
}

/// The scrape page: Prometheus names and labels, cumulative bucket counts, the agent's counters;
/// `/healthz` is 200 only while capture runs.
#[tokio::test]
async fn scrape_page_shows_the_collection_and_health() {
    let (provider, reader) = provider();
    let meter = provider.meter("t");
    let spans = SpanInstruments::new(&meter);
    let health = Arc::new(Health::default());
    let stats = Arc::new(ExportStats::default());
    let made = Arc::new(std::sync::atomic::AtomicU64::new(3));
    instruments::observe_health(&meter, health.clone(), made, stats.clone(), None);
    for (name, millis) in [("a", 3), ("b", 3), ("c", 700)] {
        spans.record(&span(SpanKind::Server, SpanStatus::Unset, &api_get(200, name), millis));
    }
    stats.dropped_queue_full.store(1, Ordering::Relaxed);
    health.update(AgentCounters { events: 42, lost_events: [0, 0, 0, 2, 0, 0, 1] });
    let page = ScrapePage::new(reader, health.clone());

    let response = page.respond(&Method::GET, "/metrics");
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let series = r#"{http_request_method="GET",http_response_status_code="200",http_route="/api/v1/namespaces/{namespace}/pods/{name}",k8s_resource="pods",k8s_verb="get",url_scheme="http"}"#;
    for line in [
        format!("http_server_request_duration_seconds_count{series} 3"),
        format!("http_server_request_duration_seconds_bucket{{le=\"0.005\",{} 2", &series[1..]),
        format!("http_server_request_duration_seconds_bucket{{le=\"0.8\",{} 3", &series[1..]),
        "tracer_events_total 42".to_owned(),
        "tracer_events_lost_total{reason=\"read_user_failed\"} 2".to_owned(),
        "tracer_events_lost_total{reason=\"corrupt\"} 1".to_owned(),
        "tracer_spans_total 3".to_owned(),
        "tracer_spans_dropped_total{reason=\"queue_full\"} 1".to_owned(),
        "tracer_spans_buffered 0".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
    }
    assert!(!text.contains("web-") && !text.contains("default"), "{text}");

    assert_eq!(page.respond(&Method::GET, "/healthz").status(), 503, "not capturing yet");
    health.set_capturing(true);
    assert_eq!(page.respond(&Method::GET, "/healthz").status(), 200);
    health.set_capturing(false);
    assert_eq!(page.respond(&Method::GET, "/healthz").status(), 503, "capture stopped");
    assert_eq!(page.respond(&Method::GET, "/other").status(), 404);
    assert_eq!(page.respond(&Method::POST, "/metrics").status(), 405);
}

/// A main loop that stopped reporting is not healthy, even with capture on.
#[test]
fn health_goes_stale_without_a_beat() {
    let health = Health::default();
    health.set_capturing(true);
    let now = Instant::now();
    assert!(health.capturing_at(now));
    assert!(!health.capturing_at(now + HEALTH_STALE_AFTER));
    health.update(AgentCounters::default());
    assert!(health.capturing_at(Instant::now()));
}

#[test]
fn export_interval_flag_then_standard_variable() {
    assert_eq!(interval(Some(5), Some("100".into())).unwrap(), Duration::from_secs(5));
    assert_eq!(interval(None, Some("1500".into())).unwrap(), Duration::from_millis(1500));
    assert_eq!(interval(None, None).unwrap(), DEFAULT_INTERVAL);
    for bad in ["0", "-1", "1s", ""] {
        let err = interval(None, Some(bad.into())).unwrap_err().to_string();
        assert!(err.contains("OTEL_METRIC_EXPORT_INTERVAL"), "{err}");
    }
}

/// A taken address is an error naming it.
#[tokio::test]
async fn a_taken_address_is_an_error() {
    let health = Arc::new(Health::default());
    health.set_capturing(true);
    let cfg = MetricsConfig { otlp: None, interval: DEFAULT_INTERVAL, listen: Some("127.0.0.1:0".into()), health };
    let (_meter, metrics) = start(cfg.clone(), &[], Arc::new(ExportStats::default()), None).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = start(MetricsConfig { listen: Some(addr.clone()), ..cfg }, &[], Arc::new(ExportStats::default()), None)
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains(&addr), "{err:#}");
    metrics.shutdown(std::time::Instant::now()).await;
}

/// The resource is built from what the agent resolved (`OTEL_RESOURCE_ATTRIBUTES`, checked once
/// for the spans and the metrics alike), and `OTEL_SERVICE_NAME` wins over both.
#[test]
fn the_resource_takes_the_resolved_attributes_and_the_service_name_wins() {
    let value = |r: &Resource, key: &'static str| r.get(&opentelemetry::Key::new(key)).map(|v| v.to_string());
    let attrs = vec![("deployment.environment".to_string(), "prod".to_string())];
    let r = resource(&attrs, None);
    assert_eq!(value(&r, "service.name").as_deref(), Some(SERVICE_NAME));
    assert_eq!(value(&r, "deployment.environment").as_deref(), Some("prod"));
    assert!(value(&r, "host.name").is_some());
    let named = vec![("service.name".to_string(), "from-attributes".to_string())];
    assert_eq!(value(&resource(&named, None), "service.name").as_deref(), Some("from-attributes"));
    let r = resource(&named, Some("from-variable".into()));
    assert_eq!(value(&r, "service.name").as_deref(), Some("from-variable"));
    assert_eq!(value(&resource(&[], Some(" ".into())), "service.name").as_deref(), Some(SERVICE_NAME));
}
