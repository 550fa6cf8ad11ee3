//! Encoded export requests the collector has not taken yet. While the collector is down they wait
//! here, in order, bounded by their bytes: when a new batch does not fit, the oldest go first, so
//! that what is delivered when the collector comes back is the most recent history.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

use super::WARN_EVERY;
use crate::export::ExportStats;

/// One encoded `ExportTraceServiceRequest` and what it holds.
#[derive(Debug)]
pub(super) struct PendingBatch {
    /// The request body as sent (gzipped when the transport gzips bodies itself).
    pub body: Bytes,
    pub spans: usize,
    /// Attempts that failed in a way that may pass, so far.
    pub failed_attempts: u32,
}

impl PendingBatch {
    pub fn new(body: Bytes, spans: usize) -> Self {
        PendingBatch { body, spans, failed_attempts: 0 }
    }
}

/// What the buffer let go of to stay within its bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Dropped {
    pub batches: usize,
    pub spans: usize,
}

impl Dropped {
    fn add(&mut self, b: &PendingBatch) {
        self.batches += 1;
        self.spans += b.spans;
    }
}

/// Batches in the order they were made, at most `max_bytes` of request bodies, except that the
/// batch added last is always kept (a bound smaller than one batch still lets batches through).
#[derive(Debug)]
pub(super) struct RetryBuffer {
    batches: VecDeque<PendingBatch>,
    bytes: usize,
    spans: usize,
    max_bytes: usize,
}

impl RetryBuffer {
    pub fn new(max_bytes: usize) -> Self {
        RetryBuffer { batches: VecDeque::new(), bytes: 0, spans: 0, max_bytes }
    }

    /// Adds a new batch behind the others, dropping the oldest as the bound requires.
    pub fn push_back(&mut self, batch: PendingBatch) -> Dropped {
        self.count_in(&batch);
        self.batches.push_back(batch);
        self.shed()
    }

    /// Puts back a batch whose attempt failed, as the oldest: it is the next one sent, and the
    /// first one dropped if newer batches came in the meantime and the bound is exceeded.
    pub fn push_front(&mut self, batch: PendingBatch) -> Dropped {
        self.count_in(&batch);
        self.batches.push_front(batch);
        self.shed()
    }

    /// The oldest batch, taken out (to be sent).
    pub fn pop_front(&mut self) -> Option<PendingBatch> {
        let b = self.batches.pop_front()?;
        self.bytes -= b.body.len();
        self.spans -= b.spans;
        Some(b)
    }

    /// Empties the buffer; what it held.
    pub fn clear(&mut self) -> Dropped {
        let mut dropped = Dropped::default();
        while let Some(b) = self.pop_front() {
            dropped.add(&b);
        }
        dropped
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn spans(&self) -> usize {
        self.spans
    }

    fn count_in(&mut self, b: &PendingBatch) {
        self.bytes += b.body.len();
        self.spans += b.spans;
    }

    fn shed(&mut self) -> Dropped {
        let mut dropped = Dropped::default();
        while self.bytes > self.max_bytes && self.batches.len() > 1 {
            let Some(b) = self.pop_front() else { break };
            dropped.add(&b);
        }
        dropped
    }
}

/// The retry buffer between the batcher and the sender, with what the sender must know of the
/// batcher: whether shutdown began, and whether the last batch is in.
pub(super) struct Outbox {
    state: Mutex<OutboxState>,
    /// Wakes the sender: a batch came in, or the batcher finished.
    pub added: Notify,
    /// Wakes the sender from a pause: shutdown began.
    pub stopping: Notify,
    pub stats: Arc<ExportStats>,
}

struct OutboxState {
    buffer: RetryBuffer,
    /// The shutdown deadline, once shutdown began.
    stop_at: Option<Instant>,
    /// The batcher has put in its last batch.
    closed: bool,
    full_log: FullBufferLog,
}

/// What the sender does next.
pub(super) enum Next {
    Batch(PendingBatch),
    /// Nothing to send yet.
    Wait,
    /// Nothing to send, and nothing will come.
    Done,
}

impl Outbox {
    pub fn new(max_bytes: usize, stats: Arc<ExportStats>) -> Self {
        let state = OutboxState {
            buffer: RetryBuffer::new(max_bytes),
            stop_at: None,
            closed: false,
            full_log: FullBufferLog::default(),
        };
        Outbox { state: Mutex::new(state), added: Notify::new(), stopping: Notify::new(), stats }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        // Nothing panics while holding it; a poisoned lock still holds consistent counts.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new batch, behind the others.
    pub fn push(&self, batch: PendingBatch) {
        self.put(|b| b.push_back(batch));
        self.added.notify_one();
    }

    /// A batch whose attempt failed, in front of the others.
    pub fn requeue(&self, batch: PendingBatch) {
        self.put(|b| b.push_front(batch));
    }

    pub fn next(&self) -> Next {
        let mut state = self.lock();
        match state.buffer.pop_front() {
            Some(b) => {
                self.publish(&state.buffer);
                Next::Batch(b)
            }
            None if state.closed => Next::Done,
            None => Next::Wait,
        }
    }

    /// Empties the buffer: what it held.
    pub fn clear(&self) -> Dropped {
        let mut state = self.lock();
        let dropped = state.buffer.clear();
        self.publish(&state.buffer);
        dropped
    }

    pub fn stop(&self, until: Instant) {
        self.lock().stop_at = Some(until);
        self.stopping.notify_one();
    }

    pub fn stop_at(&self) -> Option<Instant> {
        self.lock().stop_at
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.added.notify_one();
    }

    /// Puts a batch in with `put`; counts, and warns of, the batches the bound pushed out.
    fn put(&self, put: impl FnOnce(&mut RetryBuffer) -> Dropped) {
        let mut state = self.lock();
        let dropped = put(&mut state.buffer);
        self.publish(&state.buffer);
        if dropped.batches > 0
            && let Some(since) = state.full_log.note(dropped)
        {
            drop(state);
            tracing::warn!(
                "OTLP retry buffer full: dropped the oldest {} batches ({} spans) since the last warning",
                since.batches,
                since.spans
            );
        }
        ExportStats::add(&self.stats.dropped_buffer_full, dropped.spans);
        ExportStats::add(&self.stats.dropped_buffer_full_batches, dropped.batches);
    }

    fn publish(&self, buffer: &RetryBuffer) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.buffered_spans.store(buffer.spans() as u64, Relaxed);
        self.stats.buffered_bytes.store(buffer.bytes() as u64, Relaxed);
    }
}

/// Rate-limited warnings of batches dropped from the full retry buffer.
#[derive(Default)]
struct FullBufferLog {
    last_warn: Option<Instant>,
    /// Dropped since the last warning.
    unreported: Dropped,
}

impl FullBufferLog {
    /// What to warn about now, if anything.
    fn note(&mut self, dropped: Dropped) -> Option<Dropped> {
        self.unreported.batches += dropped.batches;
        self.unreported.spans += dropped.spans;
        if self.last_warn.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return None;
        }
        self.last_warn = Some(Instant::now());
        Some(std::mem::take(&mut self.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of `spans` spans whose body is `bytes` long, its first byte `tag`.
    fn batch(tag: u8, spans: usize, bytes: usize) -> PendingBatch {
        let mut body = vec![0; bytes];
        body[0] = tag;
        PendingBatch::new(Bytes::from(body), spans)
    }

    fn tags(buf: &mut RetryBuffer) -> Vec<u8> {
        std::iter::from_fn(|| buf.pop_front()).map(|b| b.body[0]).collect()
    }

    #[test]
    fn delivers_oldest_first() {
        let mut buf = RetryBuffer::new(1_000);
        for tag in 1..=4 {
            assert_eq!(buf.push_back(batch(tag, 10, 100)), Dropped::default());
        }
        assert_eq!((buf.bytes(), buf.spans()), (400, 40));
        let first = buf.pop_front().unwrap();
        assert_eq!(first.body[0], 1);
        assert_eq!((buf.bytes(), buf.spans()), (300, 30));
        // A failed attempt puts it back in front of the others.
        let mut first = first;
        first.failed_attempts += 1;
        assert_eq!(buf.push_front(first), Dropped::default());
        assert_eq!(buf.pop_front().unwrap().failed_attempts, 1);
        buf.push_front(batch(1, 10, 100));
        assert_eq!(tags(&mut buf), [1, 2, 3, 4]);
        assert_eq!((buf.bytes(), buf.spans()), (0, 0));
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_them() {
        let mut buf = RetryBuffer::new(350);
        for tag in 1..=3 {
            assert_eq!(buf.push_back(batch(tag, tag as usize, 100)), Dropped::default());
        }
        // 400 > 350: the oldest batch (1 span) goes.
        assert_eq!(buf.push_back(batch(4, 4, 100)), Dropped { batches: 1, spans: 1 });
        assert_eq!((buf.bytes(), buf.spans()), (300, 2 + 3 + 4));
        // A large batch pushes out as many as it needs.
        assert_eq!(buf.push_back(batch(5, 50, 250)), Dropped { batches: 2, spans: 2 + 3 });
        assert_eq!((buf.bytes(), buf.spans()), (350, 54));
        assert_eq!(tags(&mut buf), [4, 5]);
    }

    #[test]
    fn a_batch_put_back_is_the_first_dropped() {
        let mut buf = RetryBuffer::new(200);
        buf.push_back(batch(2, 2, 100));
        buf.push_back(batch(3, 3, 100));
        // The batch that was being sent while 2 and 3 came in is older than both.
        assert_eq!(buf.push_front(batch(1, 1, 100)), Dropped { batches: 1, spans: 1 });
        assert_eq!(tags(&mut buf), [2, 3]);
    }

    #[test]
    fn the_newest_batch_is_kept_even_when_larger_than_the_bound() {
        let mut buf = RetryBuffer::new(50);
        assert_eq!(buf.push_back(batch(1, 5, 80)), Dropped::default());
        assert_eq!(buf.push_back(batch(2, 7, 90)), Dropped { batches: 1, spans: 5 });
        assert_eq!((buf.bytes(), buf.spans()), (90, 7));
        let mut zero = RetryBuffer::new(0);
        zero.push_back(batch(1, 1, 10));
        assert_eq!(zero.push_back(batch(2, 1, 10)), Dropped { batches: 1, spans: 1 });
        assert_eq!(tags(&mut zero), [2]);
    }

    #[test]
    fn clear_reports_what_was_held() {
        let mut buf = RetryBuffer::new(1_000);
        buf.push_back(batch(1, 3, 10));
        buf.push_back(batch(2, 4, 10));
        assert_eq!(buf.clear(), Dropped { batches: 2, spans: 7 });
        assert_eq!((buf.bytes(), buf.spans()), (0, 0));
        assert!(buf.pop_front().is_none());
        assert_eq!(buf.clear(), Dropped::default());
    }
}
