//! Terminal output: one block per trace, spans as an indented waterfall (see `render`).
//!
//! Correlation hands over a trace's spans together, but a child can still come after its parent
//! (a goroutine that outlived its request, while correlation remembers the parent), so spans wait
//! in a bounded buffer until the trace's root has arrived and a short grace period passed. A child
//! that comes after its trace was printed is shown on its own, under a note that its parent is not
//! shown. Memory and rendering work per trace are bounded by `MAX_SPANS`, the buffer by
//! `MAX_TRACES`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use super::StdoutSink;
use crate::span::{SpanKind, SpanRecord};

mod render;

pub(crate) use render::render_trace;
use render::terminal_width;

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

#[cfg(test)]
mod tests;
