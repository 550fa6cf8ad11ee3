use super::render::{GREEN, RED, RESET, YELLOW, fmt_duration};
use super::*;
use crate::export::tests::test_span;
use crate::span::{AttrValue, SpanStatus};

const W: usize = 100;
const WIDE: usize = 120;
/// Header and summary lines come before the span lines.
const HEAD: usize = 2;

fn lines(out: &str) -> Vec<&str> {
    out.lines().collect()
}

/// The span lines (those with a bar).
fn span_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.contains('│')).collect()
}

/// The line showing span `name` and the label column's leading spaces (its indentation).
fn row<'a>(out: &'a str, name: &str) -> (&'a str, usize) {
    let line =
        span_lines(out).into_iter().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name} missing:\n{out}"));
    let label: String = line.chars().skip(2).collect(); // marker + space
    (line, label.len() - label.trim_start().len())
}

/// The columns right of the label: kind, status, start, duration, share of the parent (fixed
/// widths, trimmed).
fn columns(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let bar = chars.iter().position(|&c| c == '│').unwrap();
    let mut at = bar - (6 + 1 + 8 + 1 + 8 + 1 + 7 + 1 + 4 + 1);
    [6, 8, 8, 7, 4]
        .iter()
        .map(|&w| {
            let col: String = chars[at..at + w].iter().collect();
            at += w + 1;
            col.trim().to_owned()
        })
        .collect()
}

fn bar_of(line: &str) -> &str {
    let start = line.find('│').unwrap() + '│'.len_utf8();
    let end = line.rfind('│').unwrap();
    &line[start..end]
}

fn trace() -> Vec<SpanRecord> {
    let mut root = test_span("GET /api/v1/namespaces/{namespace}/pods/{name}", 1, None, 0, 40);
    root.attributes = vec![("http.response.status_code", AttrValue::Int(200))];
    let mut etcd = test_span("etcd Range", 2, Some(1), 10, 30);
    etcd.attributes = vec![
        ("etcd.key", "/registry/pods/default/x".into()),
        ("http.response.status_code", AttrValue::Int(200)),
        ("rpc.grpc.status_code", AttrValue::Int(0)),
    ];
    let nested = test_span("inner", 3, Some(2), 20, 30);
    // Children before the parent, as they may come.
    vec![nested, etcd, root]
}

/// What the apiserver-like target makes of a create: the request, a webhook call, then an etcd
/// Txn whose server side is traced too (three levels), and a Range before both.
fn create_trace() -> Vec<SpanRecord> {
    let mut root = test_span("POST /api/v1/namespaces/{namespace}/pods", 1, None, 0, 50);
    root.attributes = vec![
        ("http.request.method", "POST".into()),
        ("url.path", "/api/v1/namespaces/default/pods".into()),
        ("http.response.status_code", AttrValue::Int(201)),
    ];
    let mut range = test_span("etcd Range", 2, Some(1), 2, 4);
    range.attributes = vec![("etcd.key", "/registry/pods/default/web-7".into())];
    let mut webhook = test_span("POST /validate/{name}", 3, Some(1), 5, 35);
    webhook.attributes = vec![
        ("http.request.method", "POST".into()),
        ("url.path", "/validate/web-7".into()),
        ("server.address", "webhook.local".into()),
        ("server.port", AttrValue::Int(8443)),
        ("http.response.status_code", AttrValue::Int(200)),
    ];
    let mut txn = test_span("etcd Txn", 4, Some(1), 36, 46);
    txn.attributes = vec![("etcd.key", "/registry/pods/default/web-7".into())];
    let mut txn_server = test_span("etcd Txn", 5, Some(4), 37, 45);
    txn_server.kind = SpanKind::Server;
    txn_server.process = std::sync::Arc::new(crate::span::ProcessInfo {
        service_name: "etcd".into(),
        pid: 4321,
        executable_name: "etcd".into(),
        host_name: "node-1".into(),
    });
    txn_server.attributes = txn.attributes.clone();
    vec![root, txn_server, webhook, txn, range]
}

#[test]
fn waterfall_indents_by_parent_and_orders_parents_first() {
    let out = render_trace(&trace(), false, W);
    let l = lines(&out);
    assert_eq!(l.len(), HEAD + 3, "{out}");
    assert!(l[0].starts_with("── GET /api/v1/namespaces/"), "{out}");
    assert!(l[0].contains("…  200  40.0ms  kube-apiserver[1234]  "), "{out}");
    let wide = render_trace(&trace(), false, 140);
    assert!(wide.starts_with("── GET /api/v1/namespaces/{namespace}/pods/{name}  200  40.0ms  kube-apiserver[1234]  "));
    assert!(l[2].contains("GET /api") && l[3].contains("etcd Range") && l[4].contains("inner"));
    assert_eq!(row(&out, "GET /api").1, 0);
    assert_eq!(row(&out, "etcd Range").1, 2);
    assert_eq!(row(&out, "inner").1, 4);
    // etcd spans show their key and gRPC status.
    let (etcd, _) = row(&out, "etcd Range");
    assert!(etcd.contains("etcd Range /registry/pods/default/x") && etcd.contains(" client OK "), "{etcd}");
    assert!(row(&out, "GET /api").0.contains(" server 200 "));
    // Start offset, duration, share of the parent.
    assert_eq!(columns(row(&out, "GET /api").0), ["server", "200", "+0", "40.0ms", ""]);
    assert_eq!(columns(row(&out, "etcd Range").0), ["client", "OK", "+10.0ms", "20.0ms", "50%"]);
    assert_eq!(columns(row(&out, "inner").0), ["client", "", "+20.0ms", "10.0ms", "50%"]);
    // Every line but the summary is exactly the requested width.
    for line in l.iter().skip(2) {
        assert_eq!(line.chars().count(), W, "{line:?}");
    }
}

#[test]
fn bars_are_proportional_to_the_root() {
    let out = render_trace(&trace(), false, W);
    let bar_w = W / 5;
    let root = bar_of(row(&out, "GET /api").0);
    assert_eq!(root.chars().count(), bar_w);
    assert!(root.chars().all(|c| c == '█'), "{root:?}");
    // 10..30 of 0..40 ms: cells 5..15.
    let etcd: Vec<char> = bar_of(row(&out, "etcd Range").0).chars().collect();
    let filled: Vec<usize> = (0..bar_w).filter(|&i| etcd[i] == '█').collect();
    assert_eq!(filled, (5..15).collect::<Vec<_>>());
    // A zero-length span still gets one cell.
    let mut spans = trace();
    spans.push(test_span("instant", 4, Some(1), 40, 40));
    let out = render_trace(&spans, false, W);
    assert_eq!(bar_of(row(&out, "instant").0).trim(), "█");
}

#[test]
fn long_names_are_truncated_with_ellipsis() {
    let long = format!("GET /apis/{}", "x".repeat(200));
    let out = render_trace(&[test_span(&long, 1, None, 0, 1)], false, 80);
    for line in out.lines().filter(|l| !l.contains(" trace ")) {
        assert_eq!(line.chars().count(), 80, "{line:?}");
    }
    assert!(row(&out, "GET /apis").0.contains("x… server"), "{out}");
    assert!(out.lines().next().unwrap().contains('…'));
    // Narrower than the minimum: laid out at the minimum.
    assert_eq!(render_trace(&[test_span(&long, 1, None, 0, 1)], false, 20), out);
}

#[test]
fn errors_are_marked_with_and_without_color() {
    let mut spans = trace();
    spans[1].status = SpanStatus::Error("etcdserver: request timed out".into());
    spans[1].attributes.push(("rpc.grpc.status_code", AttrValue::Int(4)));
    spans[1].attributes.retain(|(k, v)| *k != "rpc.grpc.status_code" || *v != AttrValue::Int(0));
    let out = render_trace(&spans, false, W);
    let (line, _) = row(&out, "etcd Range");
    assert!(line.starts_with("✗ "), "{line}");
    assert!(line.contains(" Deadline "), "{line}");
    assert!(out.contains("↳ etcdserver: request timed out"), "{out}");
    assert!(row(&out, "GET /api").0.starts_with("  "));
    assert!(!out.contains('\x1b'));

    let colored = render_trace(&spans, true, W);
    assert!(colored.contains(&format!("{RED}✗{RESET}")));
    assert!(colored.contains(&format!("{GREEN}200     {RESET}")));
    assert!(colored.contains(&format!("{YELLOW}»{RESET}")), "the slowest child of the etcd call");
    // Colors do not change the layout.
    let plain: String = strip_ansi(&colored);
    assert_eq!(plain, out);
}

/// The question a trace answers: where did the time go. The webhook call is the slowest child of
/// the request, the etcd server span the slowest (only) child of its client span; the summary
/// names the webhook and the request's own time, not covered by any call.
#[test]
fn the_slow_part_stands_out() {
    let out = render_trace(&create_trace(), false, WIDE);
    let l = lines(&out);
    assert_eq!(l.len(), HEAD + 5, "{out}");
    assert!(l[0].starts_with("── POST /api/v1/namespaces/default/pods  201  50.0ms  kube-apiserver[1234]"), "{out}");
    assert_eq!(l[1], "   slowest » POST webhook.local:8443/validate/web-7 30.0ms (60%) · own 8.0ms (16%)");
    // The trace id when it fits whole.
    let wide = render_trace(&create_trace(), false, 160);
    assert!(wide.lines().nth(1).unwrap().ends_with(&format!(" · own 8.0ms (16%) · trace {}", "ab".repeat(16))));
    let names = ["POST /api/v1/", "etcd Range", "POST webhook", "etcd Txn", "etcd: etcd Txn"];
    for (line, name) in l[HEAD..].iter().zip(names) {
        assert!(line[2..].trim_start().starts_with(name), "{name} expected:\n{out}");
    }
    let (webhook, depth) = row(&out, "POST webhook.local:8443/validate/web-7");
    assert_eq!(depth, 2);
    assert!(webhook.starts_with("» "), "{webhook}");
    assert_eq!(columns(webhook), ["client", "200", "+5.0ms", "30.0ms", "60%"]);
    let range = row(&out, "etcd Range /registry/pods/default/web-7").0;
    assert!(range.starts_with("  "), "not the slowest: {range}");
    assert_eq!(columns(range), ["client", "", "+2.0ms", "2.0ms", "4%"]);
    // Both ends: etcd's server span under the apiserver's client span, one level deeper.
    let (txn_client, txn_server) = (l[HEAD + 3], l[HEAD + 4]);
    assert_eq!(columns(txn_client), ["client", "", "+36.0ms", "10.0ms", "20%"]);
    assert!(txn_client.starts_with("  ") && txn_server.starts_with("» "), "{out}");
    assert_eq!(columns(txn_server), ["server", "", "+37.0ms", "8.0ms", "80%"]);
    assert_eq!(txn_server.chars().skip(2).take_while(|c| *c == ' ').count(), 4);
    assert!(txn_server[2..].trim_start().starts_with("etcd: etcd Txn /registry/pods/default/web-7 "), "{txn_server}");
    assert!(txn_client[2..].trim_start().starts_with("etcd Txn /registry/pods/default/web-7 "), "{txn_client}");
    for line in &l[HEAD..] {
        assert_eq!(line.chars().count(), WIDE, "{line:?}");
    }
    // The order spans come in does not matter.
    let mut reversed = create_trace();
    reversed.reverse();
    assert_eq!(render_trace(&reversed, false, WIDE), out);
}

#[test]
fn own_time_is_what_no_child_covers() {
    let root = test_span("r", 1, None, 0, 100);
    let kids = [
        test_span("a", 2, Some(1), 10, 30),
        test_span("b", 3, Some(1), 20, 40), // overlaps a
        test_span("c", 4, Some(1), 50, 60),
        test_span("d", 5, Some(1), 90, 130), // outlives the request: counted up to its end
    ];
    assert_eq!(render::uncovered(&root, kids.iter()), (100 - 30 - 10 - 10) * 1_000_000);
    assert_eq!(render::uncovered(&root, [].iter()), 100 * 1_000_000);
}

/// A span whose parent is not among the trace's spans starts a group of its own, with a note:
/// never attached to another span, whatever the times say.
#[test]
fn children_without_parent_are_still_shown() {
    let spans = vec![test_span("etcd Txn", 5, Some(99), 0, 10), test_span("etcd Range", 6, Some(5), 2, 4)];
    let out = render_trace(&spans, false, W);
    assert!(out.lines().next().unwrap().contains("(root span not seen)"), "{out}");
    assert_eq!(row(&out, "etcd Txn").1, 0);
    assert_eq!(row(&out, "etcd Range").1, 2);

    let mut spans = create_trace();
    // A late etcd call of another request's goroutine, inside this request's time.
    spans.push(test_span("etcd Put", 9, Some(42), 10, 12));
    let out = render_trace(&spans, false, W);
    let l = lines(&out);
    assert_eq!(l.len(), HEAD + 5 + 2, "{out}");
    assert_eq!(l[HEAD + 5].trim(), "┄ parent 000000000000002a not shown");
    assert_eq!(row(&out, "etcd Put").1, 0);
    assert!(row(&out, "etcd Put").0.starts_with("  "), "no slowest mark outside a tree");
    // A server span whose parent is its remote caller is no orphan.
    let mut remote = test_span("GET /api/v1/pods", 7, Some(41), 0, 10);
    remote.remote_parent = Some(crate::span::RemoteParent {
        trace_id: remote.trace_id,
        span_id: [0, 0, 0, 0, 0, 0, 0, 41],
        sampled: true,
    });
    let out = render_trace(&[test_span("GET /healthz", 8, None, 0, 1), remote], false, W);
    assert!(!out.contains("not shown"), "{out}");

    // A parent cycle must not hang or hide spans.
    let cyclic = vec![test_span("a", 1, Some(2), 0, 1), test_span("b", 2, Some(1), 0, 1)];
    let out = render_trace(&cyclic, false, W);
    assert_eq!(span_lines(&out).len(), 2, "{out}");
    assert!(render_trace(&[], false, W).is_empty());
}

/// A trace as deep as the buffer keeps: indentation stops growing, lines keep their width.
#[test]
fn deep_traces_keep_their_width() {
    let spans: Vec<SpanRecord> = (1..=MAX_SPANS as u64)
        .map(|i| {
            let mut s = test_span("call", 1, Some(1), i, 400 - i);
            s.span_id = i.to_be_bytes();
            s.parent_span_id = (i > 1).then(|| (i - 1).to_be_bytes());
            s
        })
        .collect();
    let out = render_trace(&spans, false, W);
    let rows = span_lines(&out);
    assert_eq!(rows.len(), MAX_SPANS);
    for line in &rows {
        assert_eq!(line.chars().count(), W, "{line:?}");
    }
    assert_eq!(row(&out, "call").1, 0);
    assert_eq!(rows.last().unwrap().chars().skip(2).take_while(|c| *c == ' ').count(), 24);
}

#[test]
fn durations_are_compact() {
    let ms = 1_000_000;
    assert_eq!(fmt_duration(850), "850ns");
    assert_eq!(fmt_duration(1_500), "1.5µs");
    assert_eq!(fmt_duration(850_000), "850µs");
    assert_eq!(fmt_duration(12_340_000), "12.3ms");
    assert_eq!(fmt_duration(1_234 * ms), "1.23s");
    assert_eq!(fmt_duration(125_000 * ms), "2m05s");
}

#[test]
fn buffer_waits_for_root_and_grace() {
    let mut b = TraceBuffer::default();
    let t = Instant::now();
    let [nested, etcd, root] = <[SpanRecord; 3]>::try_from(trace()).unwrap();
    assert!(b.add(nested, t).is_none());
    assert!(b.add(etcd, t).is_none());
    assert!(b.take_due(t + Duration::from_secs(1), false).is_empty(), "no root yet");
    b.add(root, t + Duration::from_secs(1));
    assert!(b.take_due(t + Duration::from_millis(1400), false).is_empty(), "in grace period");
    let due = b.take_due(t + Duration::from_millis(1500), false);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].spans.len(), 3);
    assert_eq!(b.len(), 0);
}

#[test]
fn buffer_is_bounded() {
    let mut b = TraceBuffer::default();
    let t = Instant::now();
    let trace_span = |n: u32| {
        let mut s = test_span("etcd Range", 2, Some(1), 0, 1);
        s.trace_id[..4].copy_from_slice(&n.to_be_bytes());
        s
    };
    for n in 0..MAX_TRACES as u32 {
        assert!(b.add(trace_span(n), t).is_none());
    }
    // Full: the oldest trace is handed out early.
    let evicted = b.add(trace_span(u32::MAX), t).unwrap();
    assert_eq!(evicted.spans[0].trace_id[..4], 0u32.to_be_bytes());
    assert_eq!(b.len(), MAX_TRACES);
    // Spans per trace are capped too.
    for _ in 0..MAX_SPANS + 5 {
        b.add(trace_span(7), t);
    }
    // Rootless traces come out after ORPHAN_AGE, all of them on flush.
    let aged = b.take_due(t + ORPHAN_AGE, false);
    assert_eq!(aged.len(), MAX_TRACES);
    let seven = aged.iter().find(|f| f.spans[0].trace_id[..4] == 7u32.to_be_bytes()).unwrap();
    assert_eq!((seven.spans.len(), seven.omitted), (MAX_SPANS, 6));
    b.add(trace_span(1), t);
    assert_eq!(b.take_due(t, true).len(), 1);
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
