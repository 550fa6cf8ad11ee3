//! Correlation: assembled spans become whole traces.
//!
//! The one stage that owns trace and span ids, and the one that finds parents:
//! - a client span's caller is the goroutine a grpc-go or net/http link names (their writer
//!   goroutines write for others), else the goroutine that wrote it;
//! - the caller's context is the server request it, or the goroutine that spawned it (at its
//!   birth), and so on up, was serving then (`facts`);
//! - a server span whose other end is a traced process on this node waits for that client span
//!   (same addresses reversed, same HTTP/2 stream or a containing time for HTTP/1) and becomes its
//!   child; one that carried a valid `traceparent` joins the caller's trace instead.
//!
//! Requests end after the calls they made, so spans wait here (`held`), a bounded time and
//! number, until their parent comes; then the parent goes out with its whole tree, every span in
//! the parent's trace, and the sampler decides once for the trace. A child that comes after its
//! parent went out still joins the parent's trace while the parent is remembered. What cannot be
//! linked for certain goes out as its own trace, counted by reason: a wrong parent is worse than
//! none. Link kinds whose readings disagree with the wire are switched off per process.

mod facts;
mod held;
mod ids;
mod sample;

use std::{net::SocketAddr, time::Duration};

use smallvec::SmallVec;

use crate::{
    events::{GoLink, GoSpawn},
    span::{LatencyClass, SpanKind, SpanOrigin, SpanRecord},
};

use facts::{Caller, Context, LinkKind, ProcessFacts, SpanKey, Verdicts};
use held::{Held, HeldSpans, Wait};
use ids::IdGenerator;
pub use sample::{SampleConfig, SampleStats, Sampler, SlowThresholds};

type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Bounds and waits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CorrelateConfig {
    pub sampling: SampleConfig,
    /// How long a span waits for its parent (or a server span for its client end) after it came.
    pub hold: Duration,
    /// How long a span waits whose caller runs an HTTP/2 handler still serving its request.
    pub pending_hold: Duration,
    /// Spans held at most; past it, a span goes out at once as a root (`dropped_to_root`).
    pub max_held: usize,
    /// Goroutines known per process at most (the least recently touched are forgotten first).
    pub goroutines_per_process: usize,
    /// Processes whose goroutines are known at most (the least recently touched go first).
    pub max_processes: usize,
    /// How long facts (goroutines, links, spans gone out that children may still join) are kept.
    pub remember: Duration,
    /// Spans gone out that children may still join, at most.
    pub max_remembered: usize,
}

impl Default for CorrelateConfig {
    fn default() -> Self {
        CorrelateConfig {
            sampling: SampleConfig::default(),
            hold: Duration::from_secs(2),
            pending_hold: Duration::from_secs(30),
            max_held: 8_192,
            goroutines_per_process: 16_384,
            max_processes: 32,
            remember: Duration::from_secs(30),
            max_remembered: 65_536,
        }
    }
}

/// Why a span went out as the root of a trace of its own.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct RootReasons {
    /// A server request with no caller (the usual root).
    pub request: u64,
    /// Spans that are no request (connection spans) or of unknown kind.
    pub standalone: u64,
    /// A client span with no goroutine (not seen by the Go probes).
    pub no_goroutine: u64,
    /// Written by a link kind's writer goroutine, but no link named its caller (or its writer
    /// wrote requests for several callers).
    pub no_link: u64,
    /// The link kind that would name its caller is switched off for its process.
    pub link_off: u64,
    /// Its goroutine served no request, nor did its ancestors, as far as was known by its
    /// deadline (background work).
    pub no_request: u64,
    /// Its caller's request was still running at its deadline, or never ended.
    pub parent_not_seen: u64,
    /// Its parent went out too long ago to be remembered.
    pub parent_forgotten: u64,
    /// A server span whose traced client end never came.
    pub peer_not_seen: u64,
    /// Its process went away while it waited.
    pub process_gone: u64,
}

#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Parented {
    /// By goroutine ancestry from the goroutine that wrote the request.
    pub server_request: u64,
    /// Through a grpc-go client stream link.
    pub grpc_link: u64,
    /// Through a net/http HTTP/1 write-loop link.
    pub http1_link: u64,
    /// A server span under the traced client span of the same request on this node.
    pub both_ends: u64,
    /// An incoming `traceparent`.
    pub remote_traceparent: u64,
    /// Of those: joined a parent that had gone out already.
    pub late: u64,
}

#[derive(Default, Debug, Clone)]
pub struct CorrelateStats {
    /// Spans that went out as the root of a trace of their own.
    pub roots: u64,
    /// Spans that joined the trace of their caller (an incoming `traceparent`).
    pub remote_parents: u64,
    pub parented: Parented,
    pub root_reasons: RootReasons,
    /// Spans held now.
    pub held: u64,
    /// Waits that ended at their deadline.
    pub expired_waits: u64,
    /// Spans sent out at once as roots because as many as allowed were held.
    pub dropped_to_root: u64,
    /// Goroutines forgotten to stay within bounds before their age.
    pub goroutines_evicted: u64,
    /// Links dropped because as many as allowed were waiting for their span.
    pub links_dropped: u64,
    /// Goroutines known now, all processes.
    pub goroutines: u64,
    /// Uprobe readings the wire did not confirm.
    pub link_disagreements: u64,
    /// Link kinds switched off for a process (once each).
    pub link_kinds_switched_off: u64,
    pub sampling: SampleStats,
}

/// A client span's caller, once found: how, and when it made the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    ServerRequest,
    Grpc,
    Http1,
}

/// A client span whose server end may come: (its local, its peer) and when.
#[derive(Clone, Copy, Debug)]
struct PeerClient {
    key: SpanKey,
    stream_id: Option<u32>,
    start_ns: u64,
    end_ns: u64,
    /// When it came (kernel time).
    seen_ns: u64,
}

/// A connection's (local, peer) addresses, as one end sees them.
type AddrPair = (SocketAddr, SocketAddr);

/// Slack on the end of a server span within its client's: the server's last write may return
/// after the client's read of it.
const END_SLACK_NS: u64 = 1_000_000;
/// Client spans remembered per address pair for their server end (an HTTP/2 connection carries
/// many streams at once).
const PEER_CLIENTS_KEPT: usize = 64;

pub struct Correlator {
    ids: IdGenerator,
    sampler: Sampler,
    stats: CorrelateStats,
    config: CorrelateConfig,
    processes: Map<u32, ProcessFacts>,
    held: HeldSpans,
    /// Server spans waiting for their client end, by the client's (local, peer).
    peer_waiting: Map<AddrPair, SmallVec<[SpanKey; 1]>>,
    /// Client spans whose server end is traced, by (local, peer), held or gone out.
    peer_clients: Map<AddrPair, SmallVec<[PeerClient; 2]>>,
    next_key: SpanKey,
    last_prune_ns: u64,
}

impl Default for Correlator {
    fn default() -> Self {
        Self::new()
    }
}

impl Correlator {
    /// A correlator that keeps every trace.
    pub fn new() -> Self {
        Self::with_config(CorrelateConfig::default())
    }

    pub fn with_sampling(sampling: SampleConfig) -> Self {
        Self::with_config(CorrelateConfig { sampling, ..CorrelateConfig::default() })
    }

    pub fn with_config(config: CorrelateConfig) -> Self {
        Correlator {
            ids: IdGenerator::from_os_rng(),
            sampler: Sampler::new(config.sampling),
            stats: CorrelateStats::default(),
            held: HeldSpans::new(config.max_remembered),
            config,
            processes: Map::default(),
            peer_waiting: Map::default(),
            peer_clients: Map::default(),
            next_key: 1,
            last_prune_ns: 0,
        }
    }

    /// A goroutine was created: `child` inherits what `parent` was serving then.
    pub fn on_go_spawn(&mut self, spawn: &GoSpawn) {
        let cap = self.config.goroutines_per_process;
        let mut v = Verdicts::default();
        self.process(spawn.tgid, spawn.ts_ns).on_spawn(spawn, cap, &mut v);
        self.take(spawn.tgid, v);
    }

    /// grpc-go or net/http linked a goroutine to a request.
    pub fn on_go_link(&mut self, link: &GoLink) {
        let cap = self.config.goroutines_per_process;
        let mut v = Verdicts::default();
        self.process(link.tgid, link.ts_ns).on_link(link, cap, &mut v);
        self.take(link.tgid, v);
    }

    /// Takes every span of `spans` in (kernel time `now_ns`); what is ready goes to `out`, with
    /// its ids and its trace's sampling decision: whole trees, or children of a parent gone out.
    pub fn intake(&mut self, spans: &mut Vec<SpanRecord>, now_ns: u64, out: &mut Vec<SpanRecord>) {
        for span in spans.drain(..) {
            let key = self.next_key;
            self.next_key += 1;
            match span.kind {
                // A connection is no request, and no call of one.
                _ if span.latency_class == LatencyClass::Connection => {
                    self.emit_root(key, span, Reason::Standalone, out)
                }
                SpanKind::Server => self.take_server(key, span, now_ns, out),
                SpanKind::Client => self.take_client(key, span, now_ns, out),
                SpanKind::Internal => self.emit_root(key, span, Reason::Standalone, out),
            }
        }
        self.release_due(now_ns, out);
    }

    /// Sends out the spans whose wait is over by `now_ns`, and forgets old facts.
    pub fn release_due(&mut self, now_ns: u64, out: &mut Vec<SpanRecord>) {
        while let Some((key, wait)) = self.held.next_due(now_ns) {
            self.stats.expired_waits += 1;
            self.emit_tree(key, Top::Root(Reason::after(wait)), out);
        }
        let every = self.config.remember.as_nanos() as u64 / 4;
        if now_ns.saturating_sub(self.last_prune_ns) >= every {
            self.last_prune_ns = now_ns;
            self.prune(now_ns.saturating_sub(self.config.remember.as_nanos() as u64));
        }
    }

    /// At shutdown: every span held goes out, as it is linked so far.
    pub fn finish(&mut self, out: &mut Vec<SpanRecord>) {
        for (key, wait) in self.held.tops() {
            self.emit_tree(key, Top::Root(Reason::after(wait)), out);
        }
    }

    /// A process is gone (or exec'd): its goroutines mean nothing any more (their `g`s will be
    /// another process's). Its spans waiting for a caller's request go out as roots.
    pub fn forget_process(&mut self, tgid: u32, out: &mut Vec<SpanRecord>) {
        self.processes.remove(&tgid);
        for key in self.held.waiting_for_context(tgid) {
            self.emit_tree(key, Top::Root(Reason::ProcessGone), out);
        }
    }

    /// The counters, sampling's included.
    pub fn stats(&self) -> CorrelateStats {
        CorrelateStats {
            sampling: self.sampler.stats().clone(),
            held: self.held.len() as u64,
            goroutines: self.processes.values().map(|p| p.goroutines() as u64).sum(),
            ..self.stats.clone()
        }
    }

    fn process(&mut self, tgid: u32, ts_ns: u64) -> &mut ProcessFacts {
        if !self.processes.contains_key(&tgid) && self.processes.len() >= self.config.max_processes {
            let oldest = self.processes.iter().min_by_key(|(_, p)| p.touched_ns).map(|(&t, _)| t);
            if let Some(p) = oldest.and_then(|t| self.processes.remove(&t)) {
                self.stats.goroutines_evicted += p.goroutines() as u64;
            }
        }
        let p = self.processes.entry(tgid).or_default();
        p.touched_ns = p.touched_ns.max(ts_ns);
        p
    }

    /// Counts what the facts of `tgid` reported.
    fn take(&mut self, tgid: u32, v: Verdicts) {
        self.stats.link_disagreements += v.disagreements;
        self.stats.goroutines_evicted += v.evicted;
        self.stats.links_dropped += v.links_dropped;
        for kind in v.switched_off {
            self.stats.link_kinds_switched_off += 1;
            tracing::warn!(
                pid = tgid,
                "{} links disagree with the wire in process {tgid}: switched off for it",
                kind.name()
            );
        }
    }

    fn take_server(&mut self, key: SpanKey, span: SpanRecord, now_ns: u64, out: &mut Vec<SpanRecord>) {
        let o = span.origin;
        let cap = self.config.goroutines_per_process;
        let mut v = Verdicts::default();
        // The goroutine that served it: the handler a link named (HTTP/2), else the one that
        // read its request (HTTP/1; an HTTP/2 reader reads for every stream).
        let served_by = if o.tgid == 0 {
            None
        } else if let Some(stream) = o.stream_id {
            self.processes.get_mut(&o.tgid).and_then(|p| p.serve_h2(o.fd, stream, o.start_ns, o.end_ns, key))
        } else if o.goroutine != 0 {
            self.process(o.tgid, o.end_ns).serve(o.goroutine, o.start_ns, o.end_ns, key, cap, &mut v);
            Some(o.goroutine)
        } else {
            None
        };
        self.take(o.tgid, v);
        let peer = (span.remote_parent.is_none() && o.peer_traced).then_some((o.local, o.peer));
        // Held first, so that its children waiting for it can join it.
        self.held.insert(key, Held::new(span, Wait::None, u64::MAX));
        if let Some(g) = served_by {
            self.wake(o.tgid, g, now_ns, out);
        }
        let Some((Some(local), Some(remote))) = peer else {
            return self.emit_tree(key, Top::Root(Reason::Request), out);
        };
        match self.find_peer_client(remote, local, o.stream_id, o.start_ns, o.end_ns) {
            Some(client) => {
                self.stats.parented.both_ends += 1;
                self.join(key, client, out);
            }
            None if self.held.len() > self.config.max_held => self.emit_tree(key, Top::Root(Reason::Bounds), out),
            None => {
                self.held.wait(key, Wait::Peer, now_ns + self.config.hold.as_nanos() as u64);
                self.peer_waiting.entry((remote, local)).or_default().push(key);
            }
        }
    }

    fn take_client(&mut self, key: SpanKey, span: SpanRecord, now_ns: u64, out: &mut Vec<SpanRecord>) {
        let o = span.origin;
        let room = self.peer_clients.len() < self.config.max_remembered;
        if let (true, Some(local), Some(remote), true) = (o.peer_traced, o.local, o.peer, room) {
            let client =
                PeerClient { key, stream_id: o.stream_id, start_ns: o.start_ns, end_ns: o.end_ns, seen_ns: now_ns };
            let kept = self.peer_clients.entry((local, remote)).or_default();
            if kept.len() >= PEER_CLIENTS_KEPT {
                kept.remove(0);
            }
            kept.push(client);
        }
        let wait = self.caller_of(&o);
        let deadline = now_ns + self.config.hold.as_nanos() as u64;
        self.held.insert(key, Held::new(span, wait.unwrap_or(Wait::None), wait.map_or(u64::MAX, |_| deadline)));
        // Its server ends that came first.
        if let (true, Some(local), Some(remote)) = (o.peer_traced, o.local, o.peer) {
            self.adopt_peer_servers(key, local, remote, o.stream_id, o.start_ns, o.end_ns, out);
        }
        match wait {
            Ok(_) => self.resolve(key, now_ns, out),
            Err(reason) => self.emit_tree(key, Top::Root(reason), out),
        }
    }

    /// What client span `o` waits for: the request its caller served; else why it has no parent.
    fn caller_of(&mut self, o: &SpanOrigin) -> Result<Wait, Reason> {
        if o.goroutine == 0 || o.tgid == 0 {
            return Err(Reason::NoGoroutine);
        }
        if self.held.len() >= self.config.max_held {
            return Err(Reason::Bounds);
        }
        let cap = self.config.goroutines_per_process;
        let mut v = Verdicts::default();
        let p = self.process(o.tgid, o.end_ns);
        p.wrote(o.goroutine, o.start_ns, cap, &mut v);
        let caller = p.caller(o.goroutine, o.stream_id, o.start_ns, &mut v);
        self.take(o.tgid, v);
        let (via, goroutine, at) = match caller {
            Caller::Link { kind: LinkKind::Grpc, goroutine, at } => (Via::Grpc, goroutine, at),
            Caller::Link { goroutine, at, .. } => (Via::Http1, goroutine, at),
            Caller::Own { goroutine, at } => (Via::ServerRequest, goroutine, at),
            Caller::NoLink => return Err(Reason::NoLink),
            Caller::LinkOff => return Err(Reason::LinkOff),
        };
        Ok(Wait::Context { via, goroutine, at, pending: false })
    }

    /// Server spans waiting for client span `client` (local, remote) take it as their parent.
    #[allow(clippy::too_many_arguments)]
    fn adopt_peer_servers(
        &mut self,
        client: SpanKey,
        local: SocketAddr,
        remote: SocketAddr,
        stream_id: Option<u32>,
        start: u64,
        end: u64,
        out: &mut Vec<SpanRecord>,
    ) {
        let Some(waiting) = self.peer_waiting.get_mut(&(local, remote)) else { return };
        let held = &self.held;
        let matching: SmallVec<[SpanKey; 2]> = waiting
            .iter()
            .copied()
            .filter(|&k| {
                held.origin(k).is_some_and(|e| within(stream_id, start, end, e.stream_id, e.start_ns, e.end_ns))
            })
            .collect();
        // HTTP/1 has no stream id: two servers spans inside one client span is no answer.
        if matching.is_empty() || (stream_id.is_none() && matching.len() > 1) {
            return;
        }
        waiting.retain(|k| !matching.contains(k));
        if waiting.is_empty() {
            self.peer_waiting.remove(&(local, remote));
        }
        for server in matching {
            self.stats.parented.both_ends += 1;
            self.join(server, client, out);
        }
    }

    /// The client span of (`local`, `remote`) that server span (stream, start, end) answered.
    fn find_peer_client(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        stream_id: Option<u32>,
        start: u64,
        end: u64,
    ) -> Option<SpanKey> {
        let kept = self.peer_clients.get(&(local, remote))?;
        let mut found = kept.iter().filter(|c| within(c.stream_id, c.start_ns, c.end_ns, stream_id, start, end));
        let first = found.next()?.key;
        // Two candidates (HTTP/1 back to back): no answer rather than a guess.
        found.next().is_none().then_some(first)
    }

    /// Tries to find the request held client span `key` was made for.
    fn resolve(&mut self, key: SpanKey, now_ns: u64, out: &mut Vec<SpanRecord>) {
        let Some(Wait::Context { via, goroutine, at, .. }) = self.held.wait_of(key) else { return };
        let Some(tgid) = self.held.origin(key).map(|o| o.tgid) else { return };
        let Some(facts) = self.processes.get(&tgid) else {
            return self.held.index(key, tgid, &[goroutine]);
        };
        // A goroutine that wrote requests for several calls (a multiplexing writer with no
        // link) is nobody's caller.
        if via == Via::ServerRequest && facts.written_in_life(goroutine, at) > 1 {
            return self.emit_tree(key, Top::Root(Reason::NoLink), out);
        }
        let walk = facts.context(goroutine, at);
        match walk.context {
            Context::Request(parent) => {
                match via {
                    Via::ServerRequest => self.stats.parented.server_request += 1,
                    Via::Grpc => self.stats.parented.grpc_link += 1,
                    Via::Http1 => self.stats.parented.http1_link += 1,
                }
                self.join(key, parent, out);
            }
            Context::Pending => {
                self.held.index(key, tgid, &walk.visited);
                self.held.pending(key, now_ns + self.config.pending_hold.as_nanos() as u64);
            }
            Context::None => self.held.index(key, tgid, &walk.visited),
        }
    }

    /// A serve of goroutine `g` of `tgid` became known: the spans whose walk went through it
    /// look again.
    fn wake(&mut self, tgid: u32, g: u64, now_ns: u64, out: &mut Vec<SpanRecord>) {
        for key in self.held.waiters(tgid, g) {
            self.resolve(key, now_ns, out);
        }
    }

    /// Held span `child` (and what hangs under it) gets `parent`: under it while it is held,
    /// into its trace at once if it went out and is remembered, else out as a root.
    fn join(&mut self, child: SpanKey, parent: SpanKey, out: &mut Vec<SpanRecord>) {
        if self.held.attach(child, parent) {
            return;
        }
        match self.held.remembered(parent) {
            Some(ids) => {
                self.stats.parented.late += 1;
                self.emit_tree(child, Top::Under(ids), out);
            }
            None => self.emit_tree(child, Top::Root(Reason::ParentForgotten), out),
        }
    }

    fn emit_root(&mut self, key: SpanKey, span: SpanRecord, reason: Reason, out: &mut Vec<SpanRecord>) {
        self.held.insert(key, Held::new(span, Wait::None, u64::MAX));
        self.emit_tree(key, Top::Root(reason), out);
    }

    /// Sends held span `top` out with everything under it, as one trace (or part of the trace
    /// of a parent gone out).
    fn emit_tree(&mut self, top: SpanKey, how: Top, out: &mut Vec<SpanRecord>) {
        let first = out.len();
        let Some(tree) = self.held.take_tree(top, out, &mut self.peer_waiting) else { return };
        let root = &mut out[first];
        let (trace_id, parent_span_id, decided) = match (how, root.remote_parent) {
            (Top::Under(ids), _) => (ids.trace_id, Some(ids.span_id), Some(ids.sampled)),
            (Top::Root(_), Some(caller)) => {
                self.stats.remote_parents += 1;
                self.stats.parented.remote_traceparent += 1;
                (caller.trace_id, Some(caller.span_id), None)
            }
            (Top::Root(reason), None) => {
                self.stats.roots += 1;
                self.count_root(reason);
                (self.ids.trace_id(), None, None)
            }
        };
        for i in first..out.len() {
            out[i].span_id = self.ids.span_id();
            out[i].trace_id = trace_id;
            out[i].parent_span_id = match tree.parents[i - first] {
                Some(p) => Some(out[first + p].span_id),
                None => parent_span_id,
            };
        }
        match decided {
            Some(sampled) => out[first..].iter_mut().for_each(|s| s.sampled = sampled),
            None => {
                self.sampler.decide(&mut out[first..]);
            }
        }
        self.held.remember_emitted(&tree, &out[first..]);
    }

    fn count_root(&mut self, reason: Reason) {
        let r = &mut self.stats.root_reasons;
        *match reason {
            Reason::Bounds => &mut self.stats.dropped_to_root,
            Reason::Request => &mut r.request,
            Reason::Standalone => &mut r.standalone,
            Reason::NoGoroutine => &mut r.no_goroutine,
            Reason::NoLink => &mut r.no_link,
            Reason::LinkOff => &mut r.link_off,
            Reason::NoRequest => &mut r.no_request,
            Reason::ParentNotSeen => &mut r.parent_not_seen,
            Reason::ParentForgotten => &mut r.parent_forgotten,
            Reason::PeerNotSeen => &mut r.peer_not_seen,
            Reason::ProcessGone => &mut r.process_gone,
        } += 1;
    }

    /// Forgets facts and remembered spans older than `before` (kernel time).
    fn prune(&mut self, before: u64) {
        let mut verdicts = Vec::new();
        for (&tgid, p) in &mut self.processes {
            let mut v = Verdicts::default();
            p.prune(before, &mut v);
            verdicts.push((tgid, v));
        }
        for (tgid, v) in verdicts {
            self.take(tgid, v);
        }
        self.processes.retain(|_, p| !p.is_empty() || p.touched_ns >= before);
        self.peer_clients.retain(|_, kept| {
            kept.retain(|c| c.seen_ns >= before);
            !kept.is_empty()
        });
        self.held.prune(before);
    }
}

/// Server span (e_stream, e_start, e_end) answered client span (stream, start, end): the same
/// HTTP/2 stream, or (HTTP/1) within its time.
fn within(stream: Option<u32>, start: u64, end: u64, e_stream: Option<u32>, e_start: u64, e_end: u64) -> bool {
    stream == e_stream && start <= e_start && e_end <= end.saturating_add(END_SLACK_NS)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Request,
    Standalone,
    NoGoroutine,
    NoLink,
    LinkOff,
    NoRequest,
    ParentNotSeen,
    ParentForgotten,
    PeerNotSeen,
    ProcessGone,
    /// As many spans as allowed were held.
    Bounds,
}

impl Reason {
    /// Why a span that waited for `wait` goes out as a root when its wait ends.
    fn after(wait: Wait) -> Reason {
        match wait {
            Wait::Context { pending: true, .. } => Reason::ParentNotSeen,
            Wait::Context { .. } => Reason::NoRequest,
            Wait::Peer => Reason::PeerNotSeen,
            Wait::None => Reason::Request,
        }
    }
}

/// The ids a span gone out left for its late children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Remembered {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

enum Top {
    Root(Reason),
    Under(Remembered),
}

#[cfg(test)]
mod tests;
