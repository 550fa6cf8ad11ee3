//! Terminal output: one block per trace, spans as an indented waterfall.
//!
//! Spans of a trace arrive one by one, children usually before their parent, so they wait in a
//! bounded buffer until the trace's root has arrived and a short grace period passed.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use super::StdoutSink;
use crate::span::{AttrValue, SpanKind, SpanRecord, SpanStatus};

/// Time to wait after a root span for stragglers (children exported after their parent).
const GRACE: Duration = Duration::from_millis(500);
/// A trace whose root never comes is printed this long after its last span arrived.
const ORPHAN_AGE: Duration = Duration::from_secs(5);
/// Traces buffered at once; when full the oldest is printed early.
const MAX_TRACES: usize = 1024;
/// Spans kept per trace; more are counted and summarised in one line.
const MAX_SPANS: usize = 200;

pub(super) struct TerminalSink {
    buffer: TraceBuffer,
    /// Traces evicted early, printed on the next write.
    ready: Vec<Finished>,
    color: bool,
}

impl TerminalSink {
    pub(super) fn new(color: bool) -> Self {
        TerminalSink { buffer: TraceBuffer::default(), ready: Vec::new(), color }
    }
}

impl StdoutSink for TerminalSink {
    fn add(&mut self, span: SpanRecord, now: Instant) {
        if let Some(evicted) = self.buffer.add(span, now) {
            self.ready.push(evicted);
        }
    }

    fn write_due(&mut self, out: &mut dyn Write, now: Instant, flush_all: bool) -> std::io::Result<usize> {
        let mut due = std::mem::take(&mut self.ready);
        due.extend(self.buffer.take_due(now, flush_all));
        if due.is_empty() {
            return Ok(0);
        }
        let width = terminal_width();
        let mut n = 0;
        for trace in due {
            out.write_all(render_trace(&trace.spans, self.color, width).as_bytes())?;
            if trace.omitted > 0 {
                writeln!(out, "  … {} more spans not shown", trace.omitted)?;
            }
            n += trace.spans.len() + trace.omitted;
        }
        Ok(n)
    }
}

pub(super) struct Finished {
    pub(super) spans: Vec<SpanRecord>,
    pub(super) omitted: usize,
}

struct Pending {
    seq: u64,
    trace: Finished,
    root_at: Option<Instant>,
    last_at: Instant,
}

/// Spans grouped by trace id, oldest trace first.
#[derive(Default)]
pub(super) struct TraceBuffer {
    traces: HashMap<[u8; 16], Pending>,
    order: BTreeMap<u64, [u8; 16]>,
    next_seq: u64,
}

impl TraceBuffer {
    /// Adds a span; returns the oldest trace if it had to make room.
    pub(super) fn add(&mut self, span: SpanRecord, now: Instant) -> Option<Finished> {
        let is_root = is_local_root(&span);
        if let Some(p) = self.traces.get_mut(&span.trace_id) {
            if p.trace.spans.len() < MAX_SPANS {
                p.trace.spans.push(span);
            } else {
                p.trace.omitted += 1;
            }
            p.last_at = now;
            if is_root && p.root_at.is_none() {
                p.root_at = Some(now);
            }
            return None;
        }
        let evicted = if self.traces.len() >= MAX_TRACES { self.pop_oldest() } else { None };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, span.trace_id);
        let pending = Pending {
            seq,
            trace: Finished { spans: Vec::new(), omitted: 0 },
            root_at: is_root.then_some(now),
            last_at: now,
        };
        self.traces.entry(span.trace_id).or_insert(pending).trace.spans.push(span);
        evicted
    }

    /// Traces ready to print (all of them if `flush_all`), oldest first.
    pub(super) fn take_due(&mut self, now: Instant, flush_all: bool) -> Vec<Finished> {
        let due: Vec<u64> = self
            .order
            .iter()
            .filter(|(_, id)| {
                let p = &self.traces[*id];
                flush_all || p.root_at.is_some_and(|t| now >= t + GRACE) || now >= p.last_at + ORPHAN_AGE
            })
            .map(|(seq, _)| *seq)
            .collect();
        due.into_iter().filter_map(|seq| self.remove(seq)).collect()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.traces.len()
    }

    fn pop_oldest(&mut self) -> Option<Finished> {
        let seq = *self.order.keys().next()?;
        self.remove(seq)
    }

    fn remove(&mut self, seq: u64) -> Option<Finished> {
        let id = self.order.remove(&seq)?;
        let p = self.traces.remove(&id)?;
        debug_assert_eq!(p.seq, seq);
        Some(p.trace)
    }
}

/// The span that starts this process's part of a trace: no parent, or a server span (whose parent,
/// if any, is in the caller's process).
fn is_local_root(s: &SpanRecord) -> bool {
    s.parent_span_id.is_none() || s.kind == SpanKind::Server
}

// ---------------------------------------------------------------------------------------------
// Rendering

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const MAGENTA: &str = "\x1b[35m";
const CYAN: &str = "\x1b[36m";

const KIND_W: usize = 6;
const STATUS_W: usize = 8;
const DUR_W: usize = 7;
/// Marker + space, the single spaces between columns, and the two bar borders.
const FIXED_W: usize = 2 + 1 + KIND_W + 1 + STATUS_W + 1 + DUR_W + 1 + 2;
const MAX_DEPTH_INDENT: usize = 12;

/// Renders one trace as a header line plus one line per span (and one under each error span
/// with its message). Every span line is exactly `width` columns wide (ANSI codes aside).
pub(crate) fn render_trace(spans: &[SpanRecord], color: bool, width: usize) -> String {
    if spans.is_empty() {
        return String::new();
    }
    let bar_w = (width / 4).clamp(10, 50);
    let label_w = width.saturating_sub(FIXED_W + bar_w).max(16);
    let t0 = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let t1 = spans.iter().map(|s| s.end_unix_nano.max(s.start_unix_nano)).max().unwrap_or(t0);
    let rows = tree_order(spans);
    let root = header_span(spans, &rows);

    let mut out = header(root, color, width, rows.iter().any(|&(i, _)| is_local_root(&spans[i])));
    for (i, depth) in rows {
        let s = &spans[i];
        let (status, tone) = status_text(s);
        let is_err = matches!(s.status, SpanStatus::Error(_));
        let indent = "  ".repeat(depth.min(MAX_DEPTH_INDENT));
        let label = fit(&format!("{indent}{}", label(s)), label_w);
        let marker = if is_err { paint("✗", RED, color) } else { " ".to_owned() };
        let kind = paint(&fit(s.kind.as_str(), KIND_W), DIM, color);
        let status = paint(&fit(&status, STATUS_W), tone, color);
        let dur = format!("{:>DUR_W$}", fmt_duration(duration(s)));
        let bar_tone = if is_err {
            RED
        } else if s.kind == SpanKind::Server {
            CYAN
        } else {
            MAGENTA
        };
        let bar = paint(&bar(s, t0, t1, bar_w), bar_tone, color);
        out.push_str(&format!("{marker} {label} {kind} {status} {dur} │{bar}│\n"));
        if let SpanStatus::Error(msg) = &s.status
            && !msg.is_empty()
        {
            let text = fit(&format!("{indent}  ↳ {msg}"), width.saturating_sub(2));
            out.push_str(&format!("  {}\n", paint(text.trim_end(), RED, color)));
        }
    }
    out
}

/// Depth-first order (siblings by start time) with each span's depth. Spans whose parent is not
/// in the trace are shown at the top level; a parent cycle is broken the same way.
fn tree_order(spans: &[SpanRecord]) -> Vec<(usize, usize)> {
    let by_id: HashMap<[u8; 8], usize> = spans.iter().enumerate().rev().map(|(i, s)| (s.span_id, i)).collect();
    let mut children = vec![Vec::new(); spans.len()];
    let mut tops = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent_span_id.and_then(|p| by_id.get(&p)) {
            Some(&p) if p != i => children[p].push(i),
            _ => tops.push(i),
        }
    }
    let by_start = |v: &mut Vec<usize>| v.sort_by_key(|&i| (spans[i].start_unix_nano, i));
    children.iter_mut().for_each(by_start);
    by_start(&mut tops);

    let mut visited = vec![false; spans.len()];
    let mut rows = Vec::with_capacity(spans.len());
    // Tops first; then any span still unvisited (only possible in a parent cycle) as a top.
    for start in tops.into_iter().chain(0..spans.len()) {
        let mut stack = vec![(start, 0)];
        while let Some((i, depth)) = stack.pop() {
            if std::mem::replace(&mut visited[i], true) {
                continue;
            }
            rows.push((i, depth));
            stack.extend(children[i].iter().rev().map(|&c| (c, depth + 1)));
        }
    }
    rows
}

/// The span the header describes: a parentless span, else a server span, else the first shown.
fn header_span<'a>(spans: &'a [SpanRecord], rows: &[(usize, usize)]) -> &'a SpanRecord {
    let top = |pred: &dyn Fn(&SpanRecord) -> bool| rows.iter().map(|&(i, _)| &spans[i]).find(|s| pred(s));
    top(&|s| s.parent_span_id.is_none()).or_else(|| top(&|s| s.kind == SpanKind::Server)).unwrap_or(&spans[rows[0].0])
}

fn header(root: &SpanRecord, color: bool, width: usize, complete: bool) -> String {
    let (status, tone) = status_text(root);
    let p = &root.process;
    let mut tail = format!(
        "  {}  {}[{}]  {}",
        fmt_duration(duration(root)),
        p.service_name,
        p.pid,
        clock_time(root.start_unix_nano)
    );
    if !complete {
        tail.push_str("  (root span not seen)");
    }
    let status = if status.is_empty() { String::new() } else { format!("  {status}") };
    // "── " + name + status + tail + " " + at least 3 rule characters.
    let room = width.saturating_sub(3 + status.chars().count() + tail.chars().count() + 4).max(10);
    let name = fit(&label(root), room).trim_end().to_owned();
    let used = 3 + name.chars().count() + status.chars().count() + tail.chars().count() + 1;
    let rule = "─".repeat(width.saturating_sub(used).max(3));
    let status = paint(&status, tone, color);
    let name = paint(&name, BOLD, color);
    format!("── {name}{status}{tail} {}\n", paint(&rule, DIM, color))
}

/// The span name plus the one detail that identifies it: the etcd key (or `k8s.*` values) for etcd.
fn label(s: &SpanRecord) -> String {
    let is_etcd = s.attributes.iter().any(|(k, v)| {
        k.starts_with("etcd.")
            || (*k == "db.system" && *v == AttrValue::from("etcd"))
            || (*k == "rpc.service" && matches!(v, AttrValue::Str(x) if x.starts_with("etcdserverpb")))
    });
    if !is_etcd {
        return s.name.clone();
    }
    let detail = match s.attr("etcd.key") {
        Some(AttrValue::Str(key)) => key.to_string(),
        _ => s
            .attributes
            .iter()
            .filter(|(k, _)| k.starts_with("k8s."))
            .map(|(_, v)| attr_text(v))
            .collect::<Vec<_>>()
            .join("/"),
    };
    if detail.is_empty() || s.name.contains(&detail) { s.name.clone() } else { format!("{} {detail}", s.name) }
}

fn attr_text(v: &AttrValue) -> String {
    match v {
        AttrValue::Str(s) => s.to_string(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Bool(b) => b.to_string(),
    }
}

/// Short status: HTTP status code, gRPC code name, or the span status; plus its color.
fn status_text(s: &SpanRecord) -> (String, &'static str) {
    let is_err = matches!(s.status, SpanStatus::Error(_));
    let (text, tone) = if let Some(AttrValue::Int(code)) = s.attr("http.response.status_code") {
        let tone = match code {
            500.. => RED,
            400..=499 => YELLOW,
            _ => GREEN,
        };
        (code.to_string(), tone)
    } else if let Some(AttrValue::Int(code)) = s.attr("rpc.grpc.status_code") {
        (grpc_code_name(*code), if *code == 0 { GREEN } else { RED })
    } else {
        match s.status {
            SpanStatus::Unset => (String::new(), ""),
            SpanStatus::Ok => ("OK".to_owned(), GREEN),
            SpanStatus::Error(_) => ("ERROR".to_owned(), RED),
        }
    };
    (text, if is_err { RED } else { tone })
}

fn grpc_code_name(code: i64) -> String {
    const NAMES: [&str; 17] = [
        "OK", "Canceled", "Unknown", "BadArg", "Deadline", "NotFound", "Exists", "Denied", "Exhaust", "FailPre",
        "Aborted", "OutRange", "Unimpl", "Internal", "Unavail", "DataLoss", "Unauthn",
    ];
    usize::try_from(code).ok().and_then(|i| NAMES.get(i)).map_or_else(|| format!("grpc {code}"), |s| (*s).to_owned())
}

fn duration(s: &SpanRecord) -> u64 {
    s.end_unix_nano.saturating_sub(s.start_unix_nano)
}

fn fmt_duration(ns: u64) -> String {
    let f = ns as f64;
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..10_000 => format!("{:.1}µs", f / 1e3),
        10_000..1_000_000 => format!("{:.0}µs", f / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}ms", f / 1e6),
        1_000_000_000..60_000_000_000 => format!("{:.2}s", f / 1e9),
        _ => format!("{}m{:02}s", ns / 60_000_000_000, (ns / 1_000_000_000) % 60),
    }
}

/// `width` cells, filled where the span lies within [t0, t1]; at least one cell.
fn bar(s: &SpanRecord, t0: u64, t1: u64, width: usize) -> String {
    let total = u128::from(t1.saturating_sub(t0).max(1));
    let w = width as u128;
    let cell = |t: u64| u128::from(t.clamp(t0, t1) - t0) * w;
    let start = (cell(s.start_unix_nano) / total).min(w - 1) as usize;
    let end = (cell(s.end_unix_nano.max(s.start_unix_nano)).div_ceil(total) as usize).clamp(start + 1, width);
    let mut bar = String::with_capacity(width * 3);
    for i in 0..width {
        bar.push(if (start..end).contains(&i) { '█' } else { ' ' });
    }
    bar
}

/// Pads or cuts `s` to exactly `w` characters, marking a cut with "…".
fn fit(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        format!("{s}{}", " ".repeat(w - n))
    } else {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn paint(s: &str, code: &str, color: bool) -> String {
    if color && !code.is_empty() && !s.is_empty() { format!("{code}{s}{RESET}") } else { s.to_owned() }
}

/// Local wall-clock time of day, HH:MM:SS.mmm.
fn clock_time(unix_nano: u64) -> String {
    let secs = (unix_nano / 1_000_000_000) as libc::time_t;
    let millis = (unix_nano / 1_000_000) % 1000;
    // SAFETY: localtime_r writes only into `tm`, which we own; a zeroed tm is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return format!("{secs}.{millis:03}");
    }
    format!("{:02}:{:02}:{:02}.{millis:03}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// Columns of the terminal on stdout; COLUMNS or 120 when not a terminal.
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills the winsize struct we pass and nothing else.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let cols = if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(120)
    };
    cols.clamp(60, 250)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tests::test_span;

    const W: usize = 100;

    fn lines(out: &str) -> Vec<&str> {
        out.lines().collect()
    }

    /// The line showing span `name` and the label column's leading spaces (its indentation).
    fn row<'a>(out: &'a str, name: &str) -> (&'a str, usize) {
        let line = out.lines().skip(1).find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name} missing:\n{out}"));
        let label: String = line.chars().skip(2).collect(); // marker + space
        (line, label.len() - label.trim_start().len())
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
        etcd.attributes =
            vec![("etcd.key", "/registry/pods/default/x".into()), ("rpc.grpc.status_code", AttrValue::Int(0))];
        let nested = test_span("inner", 3, Some(2), 20, 30);
        // Children before the parent, as they arrive.
        vec![nested, etcd, root]
    }

    #[test]
    fn waterfall_indents_by_parent_and_orders_parents_first() {
        let out = render_trace(&trace(), false, W);
        let l = lines(&out);
        assert_eq!(l.len(), 4, "{out}");
        assert!(l[0].starts_with("── GET /api/v1/namespaces/"), "{out}");
        assert!(l[0].contains("…  200  40.0ms  kube-apiserver[1234]  "), "{out}");
        let wide = render_trace(&trace(), false, 140);
        assert!(
            wide.starts_with("── GET /api/v1/namespaces/{namespace}/pods/{name}  200  40.0ms  kube-apiserver[1234]  ")
        );
        assert!(l[1].contains("GET /api") && l[2].contains("etcd Range") && l[3].contains("inner"));
        assert_eq!(row(&out, "GET /api").1, 0);
        assert_eq!(row(&out, "etcd Range").1, 2);
        assert_eq!(row(&out, "inner").1, 4);
        // etcd spans show their key and gRPC status.
        let (etcd, _) = row(&out, "etcd Range");
        assert!(etcd.contains("etcd Range /registry/pods/default/x") && etcd.contains(" client OK "), "{etcd}");
        assert!(row(&out, "GET /api").0.contains(" server 200 "));
        // Every line is exactly the requested width.
        for line in &l {
            assert_eq!(line.chars().count(), W, "{line:?}");
        }
    }

    #[test]
    fn bars_are_proportional_to_the_root() {
        let out = render_trace(&trace(), false, W);
        let bar_w = W / 4;
        let root = bar_of(row(&out, "GET /api").0);
        assert_eq!(root.chars().count(), bar_w);
        assert!(root.chars().all(|c| c == '█'), "{root:?}");
        // 10..30 of 0..40 ms: cells 6.25..18.75 → 6..19.
        let etcd: Vec<char> = bar_of(row(&out, "etcd Range").0).chars().collect();
        let filled: Vec<usize> = (0..bar_w).filter(|&i| etcd[i] == '█').collect();
        assert_eq!(filled, (6..19).collect::<Vec<_>>());
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
        for line in out.lines() {
            assert_eq!(line.chars().count(), 80, "{line:?}");
        }
        assert!(row(&out, "GET /apis").0.contains("x… server"), "{out}");
        assert!(out.lines().next().unwrap().contains('…'));
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
        // Colors do not change the layout.
        let plain: String = strip_ansi(&colored);
        assert_eq!(plain, out);
    }

    #[test]
    fn children_without_parent_are_still_shown() {
        let spans = vec![test_span("etcd Txn", 5, Some(99), 0, 10), test_span("etcd Range", 6, Some(5), 2, 4)];
        let out = render_trace(&spans, false, W);
        assert!(out.lines().next().unwrap().contains("(root span not seen)"), "{out}");
        assert_eq!(row(&out, "etcd Txn").1, 0);
        assert_eq!(row(&out, "etcd Range").1, 2);
        // A parent cycle must not hang or hide spans.
        let cyclic = vec![test_span("a", 1, Some(2), 0, 1), test_span("b", 2, Some(1), 0, 1)];
        let out = render_trace(&cyclic, false, W);
        assert_eq!(out.lines().count(), 3, "{out}");
        assert!(render_trace(&[], false, W).is_empty());
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
}
