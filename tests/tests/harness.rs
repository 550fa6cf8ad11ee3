//! Tests of the harness itself (no tracer needed): the OTLP receivers get real exports, the
//! servers and clients answer, the process wrapper collects output and stops children.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use integration_tests::span::ReceivedSpan;
use integration_tests::tracer::has_pid_field;
use integration_tests::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};
use prost::Message as _;
use serde_json::json;

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn sample_export(n_spans: usize) -> ExportTraceServiceRequest {
    let spans = (0..n_spans)
        .map(|i| Span {
            trace_id: vec![0xab; 16],
            span_id: vec![i as u8 + 1; 8],
            parent_span_id: if i == 0 { vec![] } else { vec![1; 8] },
            name: format!("GET /api/v1/namespaces/{{namespace}}/pods/{{name}} #{i}"),
            kind: if i == 0 { span::SpanKind::Server as i32 } else { span::SpanKind::Client as i32 },
            start_time_unix_nano: 1_000 + i as u64,
            end_time_unix_nano: 2_000 + i as u64,
            attributes: vec![
                kv("http.request.method", s("GET")),
                kv("http.response.status_code", any_value::Value::IntValue(503)),
                kv("k8s.long_running", any_value::Value::BoolValue(true)),
                kv("ratio", any_value::Value::DoubleValue(0.5)),
                kv("bytes", any_value::Value::BytesValue(vec![0xde, 0xad])),
                kv(
                    "list",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue { value: Some(s("a")) },
                            AnyValue { value: Some(any_value::Value::IntValue(2)) },
                        ],
                    }),
                ),
            ],
            status: Some(Status { code: status::StatusCode::Error as i32, message: "boom".into() }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("kube-apiserver")),
                    kv("process.pid", any_value::Value::IntValue(4242)),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "tracer".into(), ..Default::default() }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn check_sample(spans: &[ReceivedSpan], n: usize) {
    assert_eq!(spans.len(), n, "{}", dump(spans));
    let s0 = &spans[0];
    assert_eq!(s0.kind, "server");
    assert_eq!(s0.trace_id, "ab".repeat(16));
    assert_eq!(s0.span_id, "01".repeat(8));
    assert_eq!(s0.parent_span_id, "");
    assert_eq!(s0.start, 1000);
    assert_eq!(s0.end, 2000);
    assert_eq!(s0.duration(), Duration::from_nanos(1000));
    assert_eq!(s0.status_code, "error");
    assert_eq!(s0.status_message, "boom");
    assert_eq!(s0.attr_str("http.request.method"), Some("GET"));
    assert_eq!(s0.attr_i64("http.response.status_code"), Some(503));
    assert_eq!(s0.attr_bool("k8s.long_running"), Some(true));
    assert_eq!(s0.attr("ratio"), Some(&json!(0.5)));
    assert_eq!(s0.attr_str("bytes"), Some("dead"));
    assert_eq!(s0.attr("list"), Some(&json!(["a", 2])));
    assert_eq!(s0.res_str("service.name"), Some("kube-apiserver"));
    assert_eq!(s0.pid(), Some(4242));
    assert_eq!(s0.scope, "tracer");
    if n > 1 {
        assert_eq!(spans[1].kind, "client");
        assert_eq!(spans[1].parent_span_id, "01".repeat(8));
    }
}

#[test]
fn grpc_receiver_receives_a_real_export() {
    let rx = OtlpReceiver::grpc();
    assert!(rx.endpoint().starts_with("http://127.0.0.1:"));
    let endpoint = rx.endpoint();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let mut client = TraceServiceClient::connect(endpoint).await.expect("connect");
        let resp = client.export(sample_export(2)).await.expect("export");
        assert!(resp.get_ref().partial_success.is_none());
        client.export(sample_export(1)).await.expect("second export on the same channel");
    });
    let spans = rx.wait_for(|_| true, 3, Duration::from_secs(5));
    assert_eq!(rx.export_count(), 2);
    check_sample(&spans[..2], 2);
    assert!(rx.errors().is_empty(), "{:?}", rx.errors());
    assert!(rx.http_requests().is_empty());
    // a predicate that never matches returns what it has at the timeout
    assert!(rx.wait_for(|s| s.name == "nope", 1, Duration::from_millis(100)).is_empty());
}

fn read_http_response(stream: &mut TcpStream) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).unwrap();
        assert_eq!(n, 1, "EOF in response headers: {:?}", String::from_utf8_lossy(&buf));
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").unwrap().1.parse().unwrap();
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    (status, headers, body)
}

#[test]
fn http_receiver_receives_real_posts_with_keep_alive() {
    let rx = OtlpReceiver::http();
    let body = sample_export(2).encode_to_vec();
    let mut stream = TcpStream::connect(rx.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

    // 1: Content-Length body
    let req = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        rx.addr(),
        body.len()
    );
    stream.write_all(req.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let (status, headers, resp) = read_http_response(&mut stream);
    assert_eq!(status, 200);
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v == "application/x-protobuf"));
    assert!(opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(&resp[..]).is_ok());

    // 2: chunked body on the same connection
    let body1 = sample_export(1).encode_to_vec();
    let (a, b) = body1.split_at(body1.len() / 2);
    let mut req = "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
    .into_bytes();
    for part in [a, b] {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&req).unwrap();
    let (status, _, _) = read_http_response(&mut stream);
    assert_eq!(status, 200);

    // 3: wrong path (the receiver takes traces and metrics, not logs)
    stream.write_all(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
    let (status, _, _) = read_http_response(&mut stream);
    assert_eq!(status, 404);

    // 4: garbage body -> 400, recorded as an error
    stream
        .write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 3\r\nConnection: close\r\n\r\n\xff\xff\xff")
        .unwrap();
    let (status, headers, _) = read_http_response(&mut stream);
    assert_eq!(status, 400);
    assert!(headers.iter().any(|(k, v)| k == "connection" && v == "close"));

    let spans = rx.wait_for(|_| true, 3, Duration::from_secs(5));
    check_sample(&spans[..2], 2);
    assert_eq!(spans.len(), 3);
    assert_eq!(rx.export_count(), 2);
    let reqs = rx.http_requests();
    assert_eq!(reqs.len(), 4, "{reqs:?}");
    assert_eq!(reqs[0].path, "/v1/traces");
    assert_eq!(reqs[0].content_type, "application/x-protobuf");
    assert_eq!(reqs[0].body_len, body.len());
    assert_eq!(reqs.iter().map(|r| r.status).collect::<Vec<_>>(), vec![200, 200, 404, 400]);
    assert_eq!(rx.errors().len(), 2, "{:?}", rx.errors());
}

#[test]
fn json_line_parsing() {
    let line = r#"{"name":"GET /healthz","kind":"server","trace_id":"0123456789abcdef0123456789abcdef","span_id":"0123456789abcdef","parent_span_id":"","start_unix_nano":1700000000000000000,"end_unix_nano":1700000000000500000,"status":"unset","status_message":"","attributes":{"http.request.method":"GET","http.response.status_code":200,"k8s.long_running":false},"resource":{"service.name":"kube-apiserver","process.pid":12,"host.name":"h","process.executable.name":"kube-apiserver"}}"#;
    let s = ReceivedSpan::from_json_line(line).unwrap();
    assert_eq!(s.name, "GET /healthz");
    assert_eq!(s.kind, "server");
    assert_eq!(s.duration(), Duration::from_micros(500));
    assert_eq!(s.attr_i64("http.response.status_code"), Some(200));
    assert_eq!(s.attr_bool("k8s.long_running"), Some(false));
    assert_eq!(s.pid(), Some(12));
    assert_eq!(s.method_path(), ("GET".to_owned(), String::new()));
    // numbers as strings are accepted too
    let line2 = line.replace("1700000000000000000", "\"1700000000000000000\"");
    assert_eq!(ReceivedSpan::from_json_line(&line2).unwrap().start, 1_700_000_000_000_000_000);
    assert!(ReceivedSpan::from_json_line("not json").is_err());
    assert!(ReceivedSpan::from_json_line(r#"{"name":"x"}"#).is_err());
    let parsed = tracer::parse_json_lines(&format!("{line}\n\n{line}\n")).unwrap();
    assert_eq!(parsed.len(), 2);
    assert!(tracer::parse_json_lines("INFO something\n").is_err());
}

#[test]
fn small_helpers() {
    assert!(has_pid_field("INFO target attached pid=123 comm=x", 123));
    assert!(has_pid_field("target attached process.pid=123", 123));
    assert!(!has_pid_field("target attached pid=1234", 123));
    assert!(!has_pid_field("target attached ppid=123", 123));
    assert!(has_pid_field("pid=5 pid=123", 123));
    assert_eq!(
        strip_ansi("\u{1b}[2m2024\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[3mpid\u{1b}[0m\u{1b}[2m=\u{1b}[0m7"),
        "2024  INFO pid=7"
    );
    let a = unique_name("kt-");
    assert_ne!(a, unique_name("kt-"));
    assert!(a.len() <= 15, "{a}");
    assert!(!hostname().is_empty());
    assert!(!comm_of(std::process::id()).is_empty());
    let p = closed_port();
    assert!(TcpStream::connect(("127.0.0.1", p)).is_err());
}

#[test]
fn python_server_answers_every_route() {
    let srv = PythonHttpServer::start();
    let comm = srv.comm();
    assert!(comm.starts_with("python"), "comm {comm}");
    let t = curl_one(&[srv.url("/api/v1/namespaces/default/pods/web-0")]);
    assert_eq!(t.code, 200);
    assert!(t.body.contains("\"web-0\""), "{}", t.body);
    assert_eq!(t.size_download as usize, t.body.len());
    assert_eq!(curl_one(&[srv.url("/healthz")]).body, "ok");
    assert_eq!(curl_one(&[srv.url("/api/v1/namespaces/default/pods/missing")]).code, 404);
    assert_eq!(curl_one(&[srv.url("/status/503")]).code, 503);
    assert_eq!(curl_one(&[srv.url("/nope")]).code, 404);
    let big = curl_one(&[srv.url("/api/v1/namespaces/default/pods/big?size=12345")]);
    assert_eq!(big.size_download, 12345);
    let post = curl_one(&[
        "-X",
        "POST",
        "--data-binary",
        &"x".repeat(5000),
        &srv.url("/api/v1/namespaces/default/configmaps"),
    ]);
    assert_eq!(post.code, 201);
    assert_eq!(post.size_upload, 5000);
    assert!(post.body.contains("\"received\": 5000"), "{}", post.body);
    let slow = curl_one(&[srv.url("/api/v1/namespaces/default/pods/slow?sleepMs=200")]);
    assert!(slow.time_total >= Duration::from_millis(200));
    let watch = curl_one(&[srv.url("/api/v1/namespaces/default/pods?watch=true")]);
    assert_eq!(watch.code, 200);
    assert_eq!(watch.body.matches("ADDED").count(), 2, "{}", watch.body);
    // several URLs on one curl: one connection, reused
    let run = curl(&[srv.url("/healthz"), srv.url("/api/v1/nodes"), srv.url("/status/500")]);
    assert_eq!(run.transfers.len(), 3);
    assert_eq!(run.transfers.iter().map(|t| t.num_connects).collect::<Vec<_>>(), vec![1, 0, 0]);
    let ports: Vec<u16> = run.transfers.iter().map(|t| t.local_port).collect();
    assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
    assert_eq!(run.transfers[2].code, 500);
    assert!(srv.log().contains("GET /api/v1/nodes"), "{}", srv.log());
    let close = curl_one(&[srv.url("/api/v1/namespaces/default/configmaps/cm?close=2500")]);
    assert_eq!(close.size_download, 2500);
    assert_eq!(curl_one(&[srv.url("/status/204")]).size_download, 0);

    // hand-driven connection: HEAD, 204, pipelining, 100-continue
    let mut c = RawHttp::connect(srv.port());
    c.send(b"HEAD /api/v1/namespaces/default/pods/h HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response(true);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    c.send(b"GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response(false).status, 204);
    let r = c.read_response(false);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.read_response(false).status, 100);
    c.send(b"hello");
    let r = c.read_response(false);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"5"[..]));
    c.close();
}

#[test]
fn python_server_can_have_a_chosen_comm() {
    let name = unique_name("kt-");
    let srv = PythonHttpServer::start_named(&name);
    assert_eq!(srv.comm(), name);
    assert_eq!(curl_one(&[srv.url("/healthz")]).code, 200);
}

#[test]
fn https_server_answers_over_tls() {
    let srv = PythonHttpsServer::start();
    assert!(srv.url("/").starts_with("https://127.0.0.1:"));
    let t = curl_one(&["-k", "--http1.1", &srv.url("/api/v1/namespaces/default/pods/big?size=10000")]);
    assert_eq!(t.code, 200);
    assert_eq!(t.size_download, 10000);
}

#[test]
fn nginx_runs_as_one_process() {
    let ng = Nginx::start();
    let children =
        std::fs::read_to_string(format!("/proc/{}/task/{}/children", ng.pid(), ng.pid())).unwrap_or_default();
    assert!(children.trim().is_empty(), "nginx forked: {children}");
    let t = curl_one(&[ng.url("/api/v1/namespaces/default/pods/nginx-pod")]);
    assert_eq!(t.code, 200, "{}", ng.error_log());
    assert_eq!(t.size_download as usize, Nginx::POD_SIZE);
    assert_eq!(curl_one(&[ng.url("/healthz")]).body, "ok\n");
    assert_eq!(curl_one(&[ng.url("/status/500")]).code, 500);
    assert_eq!(curl_one(&[ng.url("/api/v1/namespaces/default/pods/absent")]).code, 404);
}

#[test]
fn python_client_runs_a_plan_on_one_connection() {
    let srv = PythonHttpServer::start();
    let res = PythonClient::run(
        json!({
            "host": "127.0.0.1", "port": srv.port(),
            "requests": [
                {"method": "GET", "path": "/api/v1/namespaces/default/pods/a"},
                {"method": "GET", "path": "/api/v1/namespaces/default/pods/missing"},
                {"method": "POST", "path": "/api/v1/namespaces/default/pods", "body_size": 100},
            ],
            "sleep_ms": 50,
        }),
        Duration::from_secs(20),
    );
    assert_eq!(res.iter().map(|r| r.status).collect::<Vec<_>>(), vec![200, 404, 201]);
    assert!(res.iter().all(|r| r.local_port == res[0].local_port));
    assert!(res.iter().all(|r| r.elapsed > Duration::ZERO && r.elapsed < Duration::from_secs(5)));

    // stdin-gated client with decoy file I/O
    let dir = TempDir::new("decoy");
    let mut c = PythonClient::start(json!({
        "host": "127.0.0.1", "port": srv.port(), "wait_stdin": true,
        "decoy_dir": dir.path(),
        "requests": [{"method": "GET", "path": "/healthz"}],
    }));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!c.proc().stdout().contains("done"), "client did not wait for stdin");
    c.go();
    let res = c.wait_done(Duration::from_secs(20));
    assert_eq!(res.len(), 1);
    assert!(c.proc().stdout().contains("decoy_done"));
    c.finish();
}

#[test]
fn echo_server_echoes() {
    let e = EchoServer::start();
    let mut s = TcpStream::connect(("127.0.0.1", e.port())).unwrap();
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
    s.write_all(&data).unwrap();
    let mut back = vec![0u8; 1000];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, data);
}

#[test]
fn process_wrapper_collects_output_and_stops_with_sigint() {
    // A stand-in "tracer": logs readiness on stderr, prints a JSON span on stdout, exits 0 on SIGINT.
    let dir = TempDir::new("fake");
    let line = r#"{"name":"GET /healthz","kind":"server","trace_id":"0123456789abcdef0123456789abcdef","span_id":"0123456789abcdef","parent_span_id":"","start_unix_nano":1,"end_unix_nano":2,"status":"unset","status_message":"","attributes":{},"resource":{}}"#;
    let script = dir.write(
        "fake.sh",
        format!(
            "#!/bin/sh\ntrap 'echo \"INFO final stats events=0\" >&2; exit 0' INT\n\
             printf '\\033[32mINFO\\033[0m target attached \\033[3mpid\\033[0m=4242\\n' >&2\n\
             echo '{line}'\nwhile :; do sleep 0.05; done\n"
        ),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut t = Tracer::start_program(&script, &["--x"]);
    let l = t.wait_attached(4242);
    assert!(l.contains("target attached"), "{l}");
    let spans = t.expect_json_spans("any", |_| true, 1, Duration::from_secs(5));
    assert_eq!(spans[0].name, "GET /healthz");
    let out = t.stop();
    out.assert_code(0);
    out.assert_no_panic();
    assert!(out.stderr.contains("final stats"), "{}", out.describe());
    assert_eq!(out.json_spans().len(), 1);

    // exiting early is reported, not waited out
    let dir2 = TempDir::new("fake");
    let script2 = dir2.write("fail.sh", "#!/bin/sh\necho 'error: no such process (pid 1)' >&2\nexit 1\n");
    std::fs::set_permissions(&script2, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Tracer::start_program(&script2, &[] as &[&str]).wait_exit(Duration::from_secs(5));
    out.assert_error(1, &["no such process"]);
    let r = std::panic::catch_unwind(|| {
        let mut t = Tracer::start_program(&script2, &[] as &[&str]);
        t.wait_for_stderr("never", Duration::from_secs(10));
    });
    assert!(r.is_err());
}
