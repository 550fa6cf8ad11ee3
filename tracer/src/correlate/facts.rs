//! What correlation knows of a process's goroutines: when each was born and from which, which
//! server request it served and when, and the links grpc-go and net/http made between a writer
//! goroutine and its caller. Bounded: goroutines per process (least recently touched go first),
//! facts per goroutine (the latest few), and every fact forgotten past an age.
//!
//! Go reuses a finished goroutine's `g` for a new one, so every question is asked of one life of
//! a `g`: from its latest birth at or before the time asked about. A reborn `g` never inherits
//! what its previous life served.

use std::collections::{HashMap, VecDeque};

use smallvec::SmallVec;

use crate::events::{GoLink, GoLinkKind, GoSpawn};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The key correlation gives each span it takes in (never 0).
pub type SpanKey = u64;

/// Levels of goroutine ancestry walked up at most (a handler's child's child... is rarely deeper
/// than a few; a cycle of reused `g`s must not loop).
pub const MAX_DEPTH: usize = 8;
/// Births kept per goroutine: the latest (older lives only matter to spans still waiting).
const BIRTHS_KEPT: usize = 4;
/// Requests kept per goroutine: an HTTP/1 connection goroutine serves one after another, and a
/// child spawned during an earlier one may still be running.
const SERVES_KEPT: usize = 16;
/// HTTP/1 client links kept per write loop.
const HTTP1_LINKS_KEPT: usize = 8;
/// Links not yet claimed by a span, per kind and process: past it, new ones are dropped
/// (counted) until old ones are claimed or forgotten with age.
const LINKS_KEPT: usize = 16_384;
/// Disagreements (uprobe vs wire) after which a link kind is switched off for a process, when
/// they are at least as many as the agreements.
pub const DISAGREEMENTS_TO_SWITCH_OFF: u64 = 16;

/// The link kinds whose readings are verified per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Grpc = 0,
    Http1 = 1,
    H2Server = 2,
}

impl LinkKind {
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::Grpc => "grpc client stream",
            LinkKind::Http1 => "http1 client write",
            LinkKind::H2Server => "http2 server handler",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Birth {
    ts: u64,
    parent: u64,
}

/// A goroutine served `request` from `from` to `to`; `to == PENDING` while the request (an
/// HTTP/2 handler link's) has not ended yet.
#[derive(Clone, Copy, Debug)]
struct Serve {
    from: u64,
    to: u64,
    request: SpanKey,
}

const PENDING: u64 = u64::MAX;

#[derive(Default)]
struct Goroutine {
    births: SmallVec<[Birth; 2]>,
    serves: SmallVec<[Serve; 2]>,
    /// Client requests written by this goroutine in one life: (that life's birth, how many).
    written: (u64, u32),
    /// When it last wrote one.
    last_write_ns: u64,
    /// Bit per [`LinkKind`]: this goroutine was named the writer by a link of that kind.
    writer_of: u8,
    /// The touch that last moved it to the back of the process's order.
    seq: u64,
}

impl Goroutine {
    /// The time of the life of this `g` that `t` falls in (0 when its birth was not seen).
    fn life_at(&self, t: u64) -> u64 {
        self.births.iter().rev().find(|b| b.ts <= t).map_or(0, |b| b.ts)
    }
}

/// Where the walk from a goroutine led.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// The server request the goroutine (or an ancestor) was serving at the time.
    Request(SpanKey),
    /// A goroutine that runs an HTTP/2 handler whose request has not ended yet: it will be known.
    Pending,
    /// No request, so far.
    None,
}

/// A context and the goroutines the walk went through (a serve fact learnt later on one of them
/// may change the answer).
#[derive(Clone, Debug)]
pub struct Walk {
    pub context: Context,
    pub visited: SmallVec<[u64; MAX_DEPTH]>,
}

/// Whose call a client span is, and when that goroutine made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Link {
        kind: LinkKind,
        goroutine: u64,
        at: u64,
    },
    /// The goroutine that wrote the request is the one that made the call.
    Own {
        goroutine: u64,
        at: u64,
    },
    /// The writer is a link kind's writer, but no link names this request.
    NoLink,
    /// The link kind that would name the caller is switched off for this process.
    LinkOff,
}

#[derive(Default, Clone, Copy)]
struct KindCheck {
    agreed: u64,
    disagreed: u64,
    off: bool,
}

#[derive(Clone, Copy)]
struct GrpcLink {
    ts: u64,
    caller: u64,
}

/// The handler goroutine of an HTTP/2 stream, and when it started.
#[derive(Clone, Copy)]
struct H2Link {
    ts: u64,
    handler: u64,
}

#[derive(Clone, Copy)]
struct Http1Link {
    ts: u64,
    caller: u64,
    claimed: bool,
}

/// What the facts of one process changed, for the correlator to act on.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Verdicts {
    pub disagreements: u64,
    /// Kinds switched off by this call (each once per process).
    pub switched_off: SmallVec<[LinkKind; 1]>,
    pub evicted: u64,
    /// Links dropped because as many as allowed were waiting for their span.
    pub links_dropped: u64,
}

#[derive(Default)]
pub struct ProcessFacts {
    goroutines: Map<u64, Goroutine>,
    /// (g, touch seq, time): least recently touched first; entries whose seq is no longer the
    /// goroutine's are stale and skipped.
    order: VecDeque<(u64, u64, u64)>,
    next_seq: u64,
    grpc: Map<(u64, u32), GrpcLink>,
    http1: Map<u64, VecDeque<Http1Link>>,
    /// HTTP/2 handler links by (fd, stream id).
    h2: Map<(i32, u32), SmallVec<[H2Link; 1]>>,
    /// The end of the latest HTTP/2 server span seen on each fd (to verify handler links).
    h2_span_ends: Map<i32, u64>,
    kinds: [KindCheck; 3],
    /// Kernel time of the latest fact: the process least recently touched goes first.
    pub touched_ns: u64,
}

impl ProcessFacts {
    fn touch(&mut self, g: u64, ts: u64, cap: usize, verdicts: &mut Verdicts) -> &mut Goroutine {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.touched_ns = self.touched_ns.max(ts);
        if !self.goroutines.contains_key(&g) {
            while self.goroutines.len() >= cap && self.evict_oldest() {
                verdicts.evicted += 1;
            }
        }
        // Stale order entries are dropped once they outnumber the goroutines (before this
        // touch's entry is added: it is not the goroutine's yet).
        if self.order.len() > 2 * self.goroutines.len() + 1024 {
            let goroutines = &self.goroutines;
            self.order.retain(|&(g, s, _)| goroutines.get(&g).is_some_and(|r| r.seq == s));
        }
        self.order.push_back((g, seq, ts));
        let entry = self.goroutines.entry(g).or_default();
        entry.seq = seq;
        entry
    }

    /// Forgets the least recently touched goroutine; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((g, seq, _)) = self.order.pop_front() {
            if self.goroutines.get(&g).is_some_and(|r| r.seq == seq) {
                self.goroutines.remove(&g);
                return true;
            }
        }
        false
    }

    pub fn on_spawn(&mut self, s: &GoSpawn, cap: usize, verdicts: &mut Verdicts) {
        let g = self.touch(s.child, s.ts_ns, cap, verdicts);
        let at = g.births.partition_point(|b| b.ts <= s.ts_ns);
        g.births.insert(at, Birth { ts: s.ts_ns, parent: s.parent });
        if g.births.len() > BIRTHS_KEPT {
            g.births.remove(0);
        }
    }

    pub fn on_link(&mut self, l: &GoLink, cap: usize, verdicts: &mut Verdicts) {
        let kind = match l.kind {
            GoLinkKind::GrpcClientStream { .. } => LinkKind::Grpc,
            GoLinkKind::Http1ClientWrite { .. } => LinkKind::Http1,
            GoLinkKind::H2ServerHandler { .. } => LinkKind::H2Server,
        };
        if l.goroutine == 0 {
            return;
        }
        let off = self.kinds[kind as usize].off;
        let full = match kind {
            LinkKind::Grpc => self.grpc.len(),
            LinkKind::Http1 => self.http1.len(),
            LinkKind::H2Server => self.h2.len(),
        } >= LINKS_KEPT;
        let g = self.touch(l.goroutine, l.ts_ns, cap, verdicts);
        g.writer_of |= 1 << kind as u8;
        // A kind switched off still says which goroutines write for others; nothing more.
        if off {
            return;
        }
        if full {
            verdicts.links_dropped += 1;
            return;
        }
        match l.kind {
            GoLinkKind::GrpcClientStream { stream_id, caller, .. } => {
                self.grpc.insert((l.goroutine, stream_id), GrpcLink { ts: l.ts_ns, caller });
            }
            GoLinkKind::Http1ClientWrite { caller } => {
                let links = self.http1.entry(l.goroutine).or_default();
                let at = links.partition_point(|k| k.ts <= l.ts_ns);
                links.insert(at, Http1Link { ts: l.ts_ns, caller, claimed: false });
                while links.len() > HTTP1_LINKS_KEPT {
                    links.pop_front();
                }
            }
            GoLinkKind::H2ServerHandler { fd, stream_id } => {
                let at = g.serves.partition_point(|s| s.from <= l.ts_ns);
                g.serves.insert(at, Serve { from: l.ts_ns, to: PENDING, request: 0 });
                if g.serves.len() > SERVES_KEPT {
                    g.serves.remove(0);
                }
                self.h2.entry((fd, stream_id)).or_default().push(H2Link { ts: l.ts_ns, handler: l.goroutine });
            }
        }
    }

    /// Server span `request` was served by goroutine `g` from `from` to `to` (an HTTP/1 server
    /// span, whose goroutine read its request).
    pub fn serve(&mut self, g: u64, from: u64, to: u64, request: SpanKey, cap: usize, verdicts: &mut Verdicts) {
        let entry = self.touch(g, to, cap, verdicts);
        let at = entry.serves.partition_point(|s| s.from <= from);
        entry.serves.insert(at, Serve { from, to, request });
        if entry.serves.len() > SERVES_KEPT {
            entry.serves.remove(0);
        }
    }

    /// The HTTP/2 server span `request` on (`fd`, `stream_id`) from `start` to `end`: the handler
    /// goroutine a link named for it, whose serve is now known; None without a link.
    pub fn serve_h2(&mut self, fd: i32, stream_id: u32, start: u64, end: u64, request: SpanKey) -> Option<u64> {
        let check = &mut self.kinds[LinkKind::H2Server as usize];
        if check.off {
            return None;
        }
        if self.h2_span_ends.len() < LINKS_KEPT || self.h2_span_ends.contains_key(&fd) {
            let span_end = self.h2_span_ends.entry(fd).or_default();
            *span_end = (*span_end).max(end);
        }
        let links = self.h2.get_mut(&(fd, stream_id))?;
        let i = links.iter().rposition(|k| (start..=end).contains(&k.ts))?;
        let H2Link { ts, handler: g } = links.remove(i);
        if links.is_empty() {
            self.h2.remove(&(fd, stream_id));
        }
        check.agreed += 1;
        let serve = self.goroutines.get_mut(&g)?.serves.iter_mut().find(|s| s.from == ts && s.to == PENDING)?;
        serve.to = end;
        serve.request = request;
        Some(g)
    }

    /// Whose call the client span written by goroutine `writer` at `start` is; `stream_id` for
    /// HTTP/2 (gRPC or net/http), None for HTTP/1. Claims the link it uses.
    pub fn caller(&mut self, writer: u64, stream_id: Option<u32>, start: u64, verdicts: &mut Verdicts) -> Caller {
        let Some(g) = self.goroutines.get(&writer) else { return Caller::Own { goroutine: writer, at: start } };
        let (life, writer_of) = (g.life_at(start), g.writer_of);
        let (kind, found) = match stream_id {
            Some(stream) => {
                let link = self.grpc.get(&(writer, stream)).filter(|k| k.ts >= life && k.ts <= start).copied();
                if link.is_some() {
                    self.grpc.remove(&(writer, stream));
                }
                (LinkKind::Grpc, link.map(|k| (k.caller, k.ts)))
            }
            None => {
                let links = self.http1.get_mut(&writer);
                let latest = links.and_then(|l| l.iter_mut().rev().find(|k| k.ts >= life && k.ts <= start));
                let found = match latest {
                    Some(k) if !k.claimed => {
                        k.claimed = true;
                        Some((k.caller, k.ts))
                    }
                    // The link this request should have had was used by an earlier one.
                    Some(_) => {
                        self.disagree(LinkKind::Http1, verdicts);
                        None
                    }
                    None => None,
                };
                (LinkKind::Http1, found)
            }
        };
        let check = &mut self.kinds[kind as usize];
        match found {
            _ if writer_of & (1 << kind as u8) == 0 => Caller::Own { goroutine: writer, at: start },
            _ if check.off => Caller::LinkOff,
            Some((caller, at)) => {
                check.agreed += 1;
                Caller::Link { kind, goroutine: caller, at }
            }
            None => Caller::NoLink,
        }
    }

    /// Goroutine `writer` wrote the first bytes of a client request at `start`.
    pub fn wrote(&mut self, writer: u64, start: u64, cap: usize, verdicts: &mut Verdicts) {
        let g = self.touch(writer, start, cap, verdicts);
        let life = g.life_at(start);
        g.written = if g.written.0 == life { (life, g.written.1.saturating_add(1)) } else { (life, 1) };
        g.last_write_ns = g.last_write_ns.max(start);
    }

    /// How many client requests goroutine `g` wrote in the life `t` falls in.
    pub fn written_in_life(&self, g: u64, t: u64) -> u32 {
        self.goroutines.get(&g).map_or(0, |r| if r.written.0 == r.life_at(t) { r.written.1 } else { 0 })
    }

    /// The server request goroutine `g` was serving at `t`, itself or through the goroutine that
    /// spawned it (at its birth), up to [`MAX_DEPTH`] levels.
    pub fn context(&self, mut g: u64, mut t: u64) -> Walk {
        let h2_off = self.is_off(LinkKind::H2Server);
        let mut visited = SmallVec::new();
        for _ in 0..MAX_DEPTH {
            visited.push(g);
            let Some(r) = self.goroutines.get(&g) else { break };
            let life = r.life_at(t);
            // The latest serve of this life that began by `t`: a request served then, or none
            // (an HTTP/1 connection goroutine between requests).
            // Handler links of a kind switched off say nothing.
            let serves = r.serves.iter().rev().filter(|s| !(h2_off && s.to == PENDING));
            if let Some(s) = serves.into_iter().find(|s| s.from >= life && s.from <= t) {
                if s.to == PENDING {
                    return Walk { context: Context::Pending, visited };
                }
                if t <= s.to {
                    return Walk { context: Context::Request(s.request), visited };
                }
            }
            let Some(birth) = r.births.iter().rev().find(|b| b.ts <= t) else { break };
            (g, t) = (birth.parent, birth.ts);
        }
        Walk { context: Context::None, visited }
    }

    fn disagree(&mut self, kind: LinkKind, verdicts: &mut Verdicts) {
        let check = &mut self.kinds[kind as usize];
        check.disagreed += 1;
        verdicts.disagreements += 1;
        if !check.off && check.disagreed >= DISAGREEMENTS_TO_SWITCH_OFF && check.disagreed >= check.agreed {
            check.off = true;
            verdicts.switched_off.push(kind);
        }
    }

    pub fn is_off(&self, kind: LinkKind) -> bool {
        self.kinds[kind as usize].off
    }

    /// Forgets facts older than `before` (kernel time). A link never claimed by then disagrees
    /// with the wire when the connection it names carried later requests: an HTTP/2 handler
    /// link whose fd had a later server span, a gRPC link whose writer wrote later requests.
    pub fn prune(&mut self, before: u64, verdicts: &mut Verdicts) {
        let mut unclaimed = 0;
        let ends = &self.h2_span_ends;
        self.h2.retain(|&(fd, _), links| {
            links.retain(|k| {
                let keep = k.ts >= before;
                unclaimed += u64::from(!keep && ends.get(&fd).is_some_and(|&end| end > k.ts));
                keep
            });
            !links.is_empty()
        });
        for _ in 0..unclaimed {
            self.disagree(LinkKind::H2Server, verdicts);
        }
        let mut unclaimed = 0;
        let goroutines = &self.goroutines;
        self.grpc.retain(|&(writer, _), link| {
            let keep = link.ts >= before;
            // The writer's later requests went out, this one's never did.
            let later = goroutines
                .get(&writer)
                .is_some_and(|r| r.last_write_ns > link.ts && r.life_at(link.ts) == r.life_at(r.last_write_ns));
            unclaimed += u64::from(!keep && later);
            keep
        });
        for _ in 0..unclaimed {
            self.disagree(LinkKind::Grpc, verdicts);
        }
        self.http1.retain(|_, links| {
            links.retain(|k| k.ts >= before);
            !links.is_empty()
        });
        self.h2_span_ends.retain(|_, end| *end >= before);
        // Last: the links' verification asks the goroutines.
        while let Some(&(g, seq, ts)) = self.order.front() {
            if ts >= before {
                break;
            }
            self.order.pop_front();
            if self.goroutines.get(&g).is_some_and(|r| r.seq == seq) {
                self.goroutines.remove(&g);
            }
        }
    }

    /// Nothing left to know, and nothing learnt that must be kept (a kind switched off).
    pub fn is_empty(&self) -> bool {
        self.goroutines.is_empty() && self.kinds.iter().all(|k| !k.off)
    }

    pub fn goroutines(&self) -> usize {
        self.goroutines.len()
    }

    /// Entries held, all maps together (for the bounds tests).
    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.goroutines.len()
            + self.order.len()
            + self.grpc.len()
            + self.http1.values().map(VecDeque::len).sum::<usize>()
            + self.h2.len()
            + self.h2_span_ends.len()
    }
}
