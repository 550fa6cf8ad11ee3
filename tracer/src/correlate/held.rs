//! Spans waiting in correlation: trees of spans whose top waits for something (a client span for
//! the request its caller serves, a server span for its client end), their deadlines, which
//! goroutines' serves would wake them, and the ids of spans gone out that late children may
//! still join.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
};

use smallvec::SmallVec;

use super::{AddrPair, Map, Remembered, Via, facts::MAX_DEPTH, facts::SpanKey};
use crate::span::{SpanKind, SpanOrigin, SpanRecord};

/// What a held span waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Nothing: it hangs under a held parent, or goes out now.
    None,
    /// A client span, for the request its caller `goroutine` served at `at`; `pending` once that
    /// is known to be a request still running.
    Context { via: Via, goroutine: u64, at: u64, pending: bool },
    /// A server span, for its traced client end.
    Peer,
}

pub struct Held {
    span: SpanRecord,
    parent: SpanKey,
    children: SmallVec<[SpanKey; 2]>,
    wait: Wait,
    deadline: u64,
    /// The goroutines whose serve would wake it.
    indexed: SmallVec<[u64; MAX_DEPTH]>,
}

impl Held {
    pub fn new(span: SpanRecord, wait: Wait, deadline: u64) -> Self {
        Held { span, parent: 0, children: SmallVec::new(), wait, deadline, indexed: SmallVec::new() }
    }
}

/// A tree taken out: for each span, in the order pushed, the index of its parent among them.
pub struct Tree {
    pub parents: Vec<Option<usize>>,
    keys: Vec<SpanKey>,
}

pub struct HeldSpans {
    spans: Map<SpanKey, Held>,
    deadlines: BinaryHeap<Reverse<(u64, SpanKey)>>,
    /// Spans waiting for a context, by a goroutine (tgid, g) their walk went through.
    waiters: Map<(u32, u64), SmallVec<[SpanKey; 2]>>,
    remembered: Map<SpanKey, (Remembered, u64)>,
    /// (key, kernel time) of the remembered, oldest first.
    remembered_order: VecDeque<(SpanKey, u64)>,
    max_remembered: usize,
}

impl HeldSpans {
    pub fn new(max_remembered: usize) -> Self {
        HeldSpans {
            spans: Map::default(),
            deadlines: BinaryHeap::new(),
            waiters: Map::default(),
            remembered: Map::default(),
            remembered_order: VecDeque::new(),
            max_remembered,
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn insert(&mut self, key: SpanKey, held: Held) {
        let deadline = held.deadline;
        self.spans.insert(key, held);
        self.push_deadline(key, deadline);
    }

    fn push_deadline(&mut self, key: SpanKey, deadline: u64) {
        if deadline == u64::MAX {
            return;
        }
        self.deadlines.push(Reverse((deadline, key)));
        // Entries of spans gone out or whose deadline moved are dropped once they pile up.
        if self.deadlines.len() > 2 * self.spans.len() + 1024 {
            let spans = &self.spans;
            self.deadlines.retain(|Reverse((d, k))| spans.get(k).is_some_and(|h| h.deadline == *d));
        }
    }

    /// Span `key` now waits for `wait`, until `deadline`.
    pub fn wait(&mut self, key: SpanKey, wait: Wait, deadline: u64) {
        if let Some(h) = self.spans.get_mut(&key) {
            h.wait = wait;
            h.deadline = deadline;
            self.push_deadline(key, deadline);
        }
    }

    /// The request span `key` waits for is known to be running: it may wait until `deadline`.
    pub fn pending(&mut self, key: SpanKey, deadline: u64) {
        let Some(h) = self.spans.get_mut(&key) else { return };
        if let Wait::Context { pending: false, via, goroutine, at } = h.wait {
            h.wait = Wait::Context { via, goroutine, at, pending: true };
            h.deadline = h.deadline.max(deadline);
            let d = h.deadline;
            self.push_deadline(key, d);
        }
    }

    pub fn wait_of(&self, key: SpanKey) -> Option<Wait> {
        self.spans.get(&key).map(|h| h.wait)
    }

    pub fn origin(&self, key: SpanKey) -> Option<&SpanOrigin> {
        self.spans.get(&key).map(|h| &h.span.origin)
    }

    /// Span `key` waits on the serves of `goroutines` of `tgid` (instead of those it waited on).
    pub fn index(&mut self, key: SpanKey, tgid: u32, goroutines: &[u64]) {
        self.unindex(key);
        let Some(h) = self.spans.get_mut(&key) else { return };
        h.indexed = goroutines.iter().copied().collect();
        for &g in goroutines {
            self.waiters.entry((tgid, g)).or_default().push(key);
        }
    }

    fn unindex(&mut self, key: SpanKey) {
        let Some(h) = self.spans.get_mut(&key) else { return };
        let tgid = h.span.origin.tgid;
        for g in std::mem::take(&mut h.indexed) {
            if let Some(keys) = self.waiters.get_mut(&(tgid, g)) {
                keys.retain(|k| *k != key);
                if keys.is_empty() {
                    self.waiters.remove(&(tgid, g));
                }
            }
        }
    }

    /// The spans waiting on goroutine `g` of `tgid`, no longer indexed anywhere.
    pub fn waiters(&mut self, tgid: u32, g: u64) -> SmallVec<[SpanKey; 2]> {
        let keys = self.waiters.remove(&(tgid, g)).unwrap_or_default();
        for &k in &keys {
            self.unindex(k);
        }
        keys
    }

    /// Hangs held span `child` under held span `parent`; false when `parent` is not held (or is
    /// under `child`: never a loop).
    pub fn attach(&mut self, child: SpanKey, parent: SpanKey) -> bool {
        let mut up = parent;
        while up != 0 {
            if up == child {
                return false;
            }
            match self.spans.get(&up) {
                Some(h) => up = h.parent,
                None => return false,
            }
        }
        self.unindex(child);
        let Some(c) = self.spans.get_mut(&child) else { return false };
        c.parent = parent;
        c.wait = Wait::None;
        c.deadline = u64::MAX;
        if let Some(p) = self.spans.get_mut(&parent) {
            p.children.push(child);
        }
        true
    }

    pub fn remembered(&self, key: SpanKey) -> Option<Remembered> {
        self.remembered.get(&key).map(|(r, _)| *r)
    }

    /// Takes `top` and every span under it out, into `out` (`top` first, each span after its
    /// parent); forgets their waits.
    pub fn take_tree(
        &mut self,
        top: SpanKey,
        out: &mut Vec<SpanRecord>,
        peer_waiting: &mut Map<AddrPair, SmallVec<[SpanKey; 1]>>,
    ) -> Option<Tree> {
        if let Some(parent) = self.spans.get(&top).map(|h| h.parent).filter(|&p| p != 0)
            && let Some(p) = self.spans.get_mut(&parent)
        {
            p.children.retain(|c| *c != top);
        }
        let mut tree = Tree { parents: Vec::new(), keys: Vec::new() };
        let mut stack: Vec<(SpanKey, Option<usize>)> = vec![(top, None)];
        while let Some((key, parent)) = stack.pop() {
            self.unindex(key);
            let Some(h) = self.spans.remove(&key) else { continue };
            if h.wait == Wait::Peer
                && let (Some(local), Some(peer)) = (h.span.origin.local, h.span.origin.peer)
                && let Some(keys) = peer_waiting.get_mut(&(peer, local))
            {
                keys.retain(|k| *k != key);
                if keys.is_empty() {
                    peer_waiting.remove(&(peer, local));
                }
            }
            let at = tree.keys.len();
            tree.keys.push(key);
            tree.parents.push(parent);
            out.push(h.span);
            stack.extend(h.children.iter().map(|&c| (c, Some(at))));
        }
        (!tree.keys.is_empty()).then_some(tree)
    }

    /// Spans of `tree` just gone out (`spans`, in its order) that later spans may name as their
    /// parent: server spans (requests goroutines served), client spans whose server end is traced.
    pub fn remember_emitted(&mut self, tree: &Tree, spans: &[SpanRecord]) {
        for (&key, s) in tree.keys.iter().zip(spans) {
            if s.kind == SpanKind::Server || s.origin.peer_traced {
                let r = Remembered { trace_id: s.trace_id, span_id: s.span_id, sampled: s.sampled };
                self.remembered.insert(key, (r, s.origin.end_ns));
                self.remembered_order.push_back((key, s.origin.end_ns));
            }
        }
        while self.remembered_order.len() > self.max_remembered {
            if let Some((k, _)) = self.remembered_order.pop_front() {
                self.remembered.remove(&k);
            }
        }
    }

    /// The next top span whose deadline is past `now`, and what it waited for.
    pub fn next_due(&mut self, now: u64) -> Option<(SpanKey, Wait)> {
        while let Some(&Reverse((deadline, key))) = self.deadlines.peek() {
            if deadline > now {
                return None;
            }
            self.deadlines.pop();
            if let Some(h) = self.spans.get(&key)
                && h.deadline == deadline
                && h.parent == 0
            {
                return Some((key, h.wait));
            }
        }
        None
    }

    /// Every top span and what it waits for (at shutdown).
    pub fn tops(&self) -> Vec<(SpanKey, Wait)> {
        self.spans.iter().filter(|(_, h)| h.parent == 0).map(|(&k, h)| (k, h.wait)).collect()
    }

    /// The top spans of `tgid` waiting for a context.
    pub fn waiting_for_context(&self, tgid: u32) -> Vec<SpanKey> {
        let waits = |h: &Held| matches!(h.wait, Wait::Context { .. }) && h.parent == 0 && h.span.origin.tgid == tgid;
        self.spans.iter().filter(|(_, h)| waits(h)).map(|(&k, _)| k).collect()
    }

    /// Forgets spans gone out before `before` (kernel time).
    pub fn prune(&mut self, before: u64) {
        while let Some(&(key, at)) = self.remembered_order.front() {
            if at >= before {
                break;
            }
            self.remembered_order.pop_front();
            self.remembered.remove(&key);
        }
    }

    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.spans.len() + self.deadlines.len() + self.waiters.len() + self.remembered.len()
    }
}
