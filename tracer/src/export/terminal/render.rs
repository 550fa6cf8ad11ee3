//! One trace as a waterfall: a header, a line that names the slow part, then one line per span
//! in tree order (children under their parent, indented), each with its start offset, duration,
//! share of its parent and a bar on the trace's time axis.

use std::collections::HashMap;

use super::is_local_root;
use crate::span::{AttrValue, SpanKind, SpanRecord, SpanStatus};

pub(super) const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
pub(super) const RED: &str = "\x1b[31m";
pub(super) const GREEN: &str = "\x1b[32m";
pub(super) const YELLOW: &str = "\x1b[33m";
const MAGENTA: &str = "\x1b[35m";
const CYAN: &str = "\x1b[36m";

const KIND_W: usize = 6;
const STATUS_W: usize = 8;
const START_W: usize = 8;
const DUR_W: usize = 7;
const SHARE_W: usize = 4;
/// Marker + space, the single spaces between columns, and the two bar borders.
const FIXED_W: usize = 2 + 1 + KIND_W + 1 + STATUS_W + 1 + START_W + 1 + DUR_W + 1 + SHARE_W + 1 + 2;
const MAX_DEPTH_INDENT: usize = 12;
/// Narrower output would leave no room for the span names.
pub(super) const MIN_WIDTH: usize = 80;
const SLOWEST_MARK: &str = "»";

/// Renders one trace: a header line, a summary line, then one line per span (and one under each
/// error span with its message, and one before each group of spans whose parent is not shown).
/// Every span line is exactly `width` columns wide (ANSI codes aside).
pub(crate) fn render_trace(spans: &[SpanRecord], color: bool, width: usize) -> String {
    if spans.is_empty() {
        return String::new();
    }
    let width = width.max(MIN_WIDTH);
    let bar_w = (width / 5).clamp(10, 50);
    let label_w = width - FIXED_W - bar_w;
    let t0 = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let t1 = spans.iter().map(|s| s.end_unix_nano.max(s.start_unix_nano)).max().unwrap_or(t0);
    let tree = Tree::new(spans);
    let top = tree.header_span(spans);

    let complete = tree.rows.iter().any(|&(i, _)| is_local_root(&spans[i]));
    let mut out = header(&spans[top], color, width, complete);
    out.push_str(&summary(spans, &tree, top, color, width));
    for (n, &(i, depth)) in tree.rows.iter().enumerate() {
        let s = &spans[i];
        if depth == 0 && n > 0 && tree.parent_missing(s) {
            out.push_str(&detached_note(s, color, width));
        }
        let (status, tone) = status_text(s);
        let is_err = matches!(s.status, SpanStatus::Error(_));
        let indent = "  ".repeat(depth.min(MAX_DEPTH_INDENT));
        // A span of another process (etcd's side of a call, both ends traced) says whose it is.
        let owner = if s.process.pid == spans[top].process.pid {
            String::new()
        } else {
            format!("{}: ", s.process.service_name)
        };
        let label = fit(&format!("{indent}{owner}{}", label(s)), label_w);
        let marker = if is_err {
            paint("✗", RED, color)
        } else if tree.slowest[i] {
            paint(SLOWEST_MARK, YELLOW, color)
        } else {
            " ".to_owned()
        };
        let kind = paint(&fit(s.kind.as_str(), KIND_W), DIM, color);
        let status = paint(&fit(&status, STATUS_W), tone, color);
        let start = format!("{:>START_W$}", fmt_offset(s.start_unix_nano.saturating_sub(t0)));
        let dur = format!("{:>DUR_W$}", fmt_duration(duration(s)));
        let share = format!("{:>SHARE_W$}", tree.parent[i].and_then(|p| share(s, &spans[p])).unwrap_or_default());
        let bar_tone = if is_err {
            RED
        } else if tree.slowest[i] {
            YELLOW
        } else if s.kind == SpanKind::Server {
            CYAN
        } else {
            MAGENTA
        };
        let bar = paint(&bar(s, t0, t1, bar_w), bar_tone, color);
        out.push_str(&format!("{marker} {label} {kind} {status} {start} {dur} {share} │{bar}│\n"));
        if let SpanStatus::Error(msg) = &s.status
            && !msg.is_empty()
        {
            let text = fit(&format!("{indent}  ↳ {msg}"), width.saturating_sub(2));
            out.push_str(&format!("  {}\n", paint(text.trim_end(), RED, color)));
        }
    }
    out
}

/// The spans of one trace as a forest: parents found by span id among these spans only, so a
/// span whose parent is not here is a top of its own, never attached elsewhere.
pub(super) struct Tree {
    /// Depth-first order (siblings by start time) with each span's depth.
    pub(super) rows: Vec<(usize, usize)>,
    /// Each span's parent among the spans, if shown as its child.
    pub(super) parent: Vec<Option<usize>>,
    /// The longest child of each parent.
    pub(super) slowest: Vec<bool>,
    children: Vec<Vec<usize>>,
}

impl Tree {
    pub(super) fn new(spans: &[SpanRecord]) -> Tree {
        let n = spans.len();
        // The first of spans with the same id is the parent (ids are random: a repeat is a bug
        // elsewhere, and must not loop here).
        let by_id: HashMap<[u8; 8], usize> = spans.iter().enumerate().rev().map(|(i, s)| (s.span_id, i)).collect();
        let mut parent = vec![None; n];
        let mut children = vec![Vec::new(); n];
        let mut tops = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            match s.parent_span_id.and_then(|p| by_id.get(&p)) {
                Some(&p) if p != i => {
                    children[p].push(i);
                    parent[i] = Some(p);
                }
                _ => tops.push(i),
            }
        }
        let by_start = |v: &mut Vec<usize>| v.sort_by_key(|&i| (spans[i].start_unix_nano, i));
        children.iter_mut().for_each(by_start);
        by_start(&mut tops);

        let mut visited = vec![false; n];
        let mut rows = Vec::with_capacity(n);
        // Tops first; then any span still unvisited (only possible in a parent cycle) as a top.
        for start in tops.into_iter().chain(0..n) {
            let mut stack = vec![(start, 0)];
            while let Some((i, depth)) = stack.pop() {
                if std::mem::replace(&mut visited[i], true) {
                    continue;
                }
                if depth == 0 {
                    parent[i] = None;
                }
                rows.push((i, depth));
                stack.extend(children[i].iter().rev().map(|&c| (c, depth + 1)));
            }
        }
        let mut slowest = vec![false; n];
        for (p, kids) in children.iter().enumerate() {
            // The first of equally long children, among those shown under `p`.
            let longest =
                kids.iter().filter(|&&c| parent[c] == Some(p)).fold(None, |best: Option<usize>, &c| match best {
                    Some(b) if duration(&spans[b]) >= duration(&spans[c]) => Some(b),
                    _ => Some(c),
                });
            if let Some(c) = longest {
                slowest[c] = true;
            }
        }
        Tree { rows, parent, slowest, children }
    }

    /// The span the header describes: a parentless span, else a server span, else the first shown.
    fn header_span(&self, spans: &[SpanRecord]) -> usize {
        let top = |pred: &dyn Fn(&SpanRecord) -> bool| self.rows.iter().map(|&(i, _)| i).find(|&i| pred(&spans[i]));
        top(&|s| s.parent_span_id.is_none()).or_else(|| top(&|s| s.kind == SpanKind::Server)).unwrap_or(self.rows[0].0)
    }

    /// A span that names a parent not among these spans (a server span's remote caller aside).
    fn parent_missing(&self, s: &SpanRecord) -> bool {
        s.parent_span_id.is_some() && s.remote_parent.is_none()
    }

    /// The longest child of `p` shown under it.
    fn slowest_child(&self, p: usize) -> Option<usize> {
        self.children[p].iter().copied().find(|&c| self.slowest[c] && self.parent[c] == Some(p))
    }
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

/// The trace id, and where the header span's time went: its slowest child, and the time not
/// covered by any child (the process itself, or calls not traced).
fn summary(spans: &[SpanRecord], tree: &Tree, top: usize, color: bool, width: usize) -> String {
    let root = &spans[top];
    let trace = format!("trace {}", super::super::hex(&root.trace_id));
    let mut text = String::from("  ");
    if let Some(c) = tree.slowest_child(top) {
        let child = &spans[c];
        let share = share(child, root).map(|s| format!(" ({s})")).unwrap_or_default();
        text.push_str(&format!(" slowest {SLOWEST_MARK} {} {}{share}", label(child), fmt_duration(duration(child))));
        let own = uncovered(root, tree.children[top].iter().map(|&c| &spans[c]));
        let share = percent(own, duration(root)).map(|s| format!(" ({s})")).unwrap_or_default();
        text.push_str(&format!(" · own {}{share}", fmt_duration(own)));
        // The trace id when it fits whole: a cut id finds nothing in a backend.
        if text.chars().count() + 3 + trace.chars().count() <= width {
            text.push_str(&format!(" · {trace}"));
        }
    } else {
        text.push_str(&format!(" {trace}"));
    }
    format!("{}\n", paint(fit(&text, width).trim_end(), DIM, color))
}

fn detached_note(s: &SpanRecord, color: bool, width: usize) -> String {
    let parent = s.parent_span_id.map(|p| super::super::hex(&p)).unwrap_or_default();
    let text = fit(&format!("  ┄ parent {parent} not shown"), width);
    format!("{}\n", paint(text.trim_end(), DIM, color))
}

/// Nanoseconds of `root` that none of `children` covers (children clamped to `root`).
pub(super) fn uncovered<'a>(root: &SpanRecord, children: impl Iterator<Item = &'a SpanRecord>) -> u64 {
    let (start, end) = (root.start_unix_nano, root.end_unix_nano.max(root.start_unix_nano));
    let mut parts: Vec<(u64, u64)> = children
        .map(|c| (c.start_unix_nano.clamp(start, end), c.end_unix_nano.clamp(start, end)))
        .filter(|(a, b)| a < b)
        .collect();
    parts.sort_unstable();
    let (mut covered, mut reach) = (0, start);
    for (a, b) in parts {
        if b > reach {
            covered += b - a.max(reach);
            reach = b;
        }
    }
    (end - start) - covered
}

/// `child`'s duration as a share of `parent`'s, "62%" (capped: a child can outlive its parent).
fn share(child: &SpanRecord, parent: &SpanRecord) -> Option<String> {
    percent(duration(child), duration(parent))
}

fn percent(part: u64, whole: u64) -> Option<String> {
    (whole > 0).then(|| format!("{}%", (u128::from(part) * 100 / u128::from(whole)).min(999)))
}

/// The span name plus what identifies the call: the etcd key (or `k8s.*` values) for etcd, the
/// path (and, for a client, the host) for HTTP.
pub(super) fn label(s: &SpanRecord) -> String {
    if is_etcd(s) {
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
        return if detail.is_empty() || s.name.contains(&detail) {
            s.name.clone()
        } else {
            format!("{} {detail}", s.name)
        };
    }
    let (Some(AttrValue::Str(method)), Some(AttrValue::Str(path))) =
        (s.attr("http.request.method"), s.attr("url.path"))
    else {
        return s.name.clone();
    };
    let host = match (s.kind, s.attr("server.address"), s.attr("server.port")) {
        (SpanKind::Client, Some(AttrValue::Str(host)), Some(AttrValue::Int(port))) => format!("{host}:{port}"),
        (SpanKind::Client, Some(AttrValue::Str(host)), _) => host.to_string(),
        _ => String::new(),
    };
    format!("{method} {host}{path}")
}

fn is_etcd(s: &SpanRecord) -> bool {
    s.attributes.iter().any(|(k, v)| {
        k.starts_with("etcd.")
            || (*k == "db.system" && *v == AttrValue::from("etcd"))
            || (*k == "rpc.service" && matches!(v, AttrValue::Str(x) if x.starts_with("etcdserverpb")))
    })
}

fn attr_text(v: &AttrValue) -> String {
    match v {
        AttrValue::Str(s) => s.to_string(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Bool(b) => b.to_string(),
    }
}

/// Short status: gRPC code name, HTTP status code, or the span status; plus its color.
fn status_text(s: &SpanRecord) -> (String, &'static str) {
    let is_err = matches!(s.status, SpanStatus::Error(_));
    // A gRPC call's outcome is its grpc-status; its HTTP/2 status is 200 whatever happened.
    let (text, tone) = if let Some(AttrValue::Int(code)) = s.attr("rpc.grpc.status_code") {
        (grpc_code_name(*code), if *code == 0 { GREEN } else { RED })
    } else if let Some(AttrValue::Int(code)) = s.attr("http.response.status_code") {
        let tone = match code {
            500.. => RED,
            400..=499 => YELLOW,
            _ => GREEN,
        };
        (code.to_string(), tone)
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

pub(super) fn fmt_duration(ns: u64) -> String {
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

/// Start relative to the trace's first span: "+0" for the first, "+1.5ms" later.
fn fmt_offset(ns: u64) -> String {
    if ns == 0 { "+0".to_owned() } else { format!("+{}", fmt_duration(ns)) }
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
pub(super) fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills the winsize struct we pass and nothing else.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let cols = if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(120)
    };
    cols.clamp(MIN_WIDTH, 250)
}
