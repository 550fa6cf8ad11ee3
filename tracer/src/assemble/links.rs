//! The method paths grpc-go's writer goroutine announced for the client streams it opens, kept
//! until the stream's HEADERS show on the wire.
//!
//! A connection opened before the agent attached encodes `:path` (and content-type) as HPACK
//! dynamic-table references the decoder never saw filled: the probe on grpc-go's header handler
//! (`GoLinkKind::GrpcClientStream`) reads the path from the writer's own header list just before
//! the frame is written, so the stream is named by what its writer said, never by a guess.
//! Bounded in count and age: a link whose HEADERS never show (the probe ran, the write failed)
//! leaves on its own.

use std::collections::{HashMap, VecDeque};

use super::AssembleStats;
use crate::events::{GoLink, GoLinkKind};

/// Links kept at most: each waits only for the writer's next write, so a few thousand cover
/// thousands of streams opened at once.
pub const MAX_LINKS: usize = 4096;
/// A link older than this when its stream's HEADERS come is not used (nor kept).
pub const MAX_LINK_AGE_NS: u64 = 10_000_000_000;

/// A client stream as the writer names it: the process, the writer goroutine (the `g` that
/// writes the HEADERS), and the stream id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct StreamKey {
    tgid: u32,
    writer: u64,
    stream_id: u32,
}

#[derive(Default)]
pub struct GrpcLinks {
    /// foldhash: keys are (tgid, g, stream id) from the probes, not chosen by a peer.
    paths: HashMap<StreamKey, GoLink, foldhash::fast::RandomState>,
    /// Keys in arrival (time) order, with their link's time: the oldest leaves first.
    order: VecDeque<(StreamKey, u64)>,
}

impl GrpcLinks {
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Keeps a `GrpcClientStream` link (other kinds are not assembly's).
    pub fn on_link(&mut self, link: &GoLink, stats: &mut AssembleStats) {
        let GoLinkKind::GrpcClientStream { stream_id, .. } = link.kind else { return };
        if link.kind.grpc_path().and_then(crate::protocols::grpc::parse_path).is_none() {
            stats.grpc_links_invalid += 1;
            return;
        }
        self.expire(link.ts_ns, stats);
        while self.order.len() >= MAX_LINKS {
            self.pop_oldest(stats);
        }
        let key = StreamKey { tgid: link.tgid, writer: link.goroutine, stream_id };
        // The same key again (a `g` reused by another writer): the newer link is the one.
        if self.paths.insert(key, *link).is_some() {
            stats.grpc_links_expired += 1;
        }
        self.order.push_back((key, link.ts_ns));
    }

    /// The link of client stream `stream_id` whose HEADERS goroutine `writer` of `tgid` wrote
    /// at `now_ns`, taken out: each names one stream.
    pub fn take(
        &mut self,
        tgid: u32,
        writer: u64,
        stream_id: u32,
        now_ns: u64,
        stats: &mut AssembleStats,
    ) -> Option<GoLink> {
        if writer == 0 {
            return None;
        }
        let link = self.paths.remove(&StreamKey { tgid, writer, stream_id })?;
        if now_ns.saturating_sub(link.ts_ns) > MAX_LINK_AGE_NS {
            stats.grpc_links_expired += 1;
            return None;
        }
        stats.grpc_links_used += 1;
        Some(link)
    }

    /// Links older than the age limit at `now_ns` leave.
    fn expire(&mut self, now_ns: u64, stats: &mut AssembleStats) {
        while self.order.front().is_some_and(|&(_, ts)| now_ns.saturating_sub(ts) > MAX_LINK_AGE_NS) {
            self.pop_oldest(stats);
        }
    }

    fn pop_oldest(&mut self, stats: &mut AssembleStats) {
        let Some((key, ts)) = self.order.pop_front() else { return };
        // Only the entry this arrival made (a later one under the same key stays).
        if self.paths.get(&key).is_some_and(|l| l.ts_ns == ts) {
            self.paths.remove(&key);
            stats.grpc_links_expired += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(goroutine: u64, stream_id: u32, path: &str, ts_ns: u64) -> GoLink {
        let mut bytes = [0; tracer_common::GO_LINK_PATH];
        bytes[..path.len()].copy_from_slice(path.as_bytes());
        let kind = GoLinkKind::GrpcClientStream { stream_id, caller: 1, path: bytes, path_len: path.len() };
        GoLink { tgid: 7, ts_ns, goroutine, kind }
    }

    const RANGE: &str = "/etcdserverpb.KV/Range";

    /// Beyond the bound the oldest links leave, counted; the newest are all there.
    #[test]
    fn the_store_keeps_the_newest_links_up_to_its_bound() {
        let (mut links, mut stats) = (GrpcLinks::default(), AssembleStats::default());
        let extra = 100;
        for i in 0..(MAX_LINKS + extra) as u32 {
            links.on_link(&link(0xc000, 2 * i + 1, RANGE, u64::from(i)), &mut stats);
        }
        assert_eq!(links.len(), MAX_LINKS);
        assert_eq!(stats.grpc_links_expired, extra as u64);
        let now = (MAX_LINKS + extra) as u64;
        assert!(links.take(7, 0xc000, 1, now, &mut stats).is_none(), "the oldest left");
        assert!(links.take(7, 0xc000, 2 * extra as u32 - 1, now, &mut stats).is_none());
        let newest =
            links.take(7, 0xc000, 2 * (MAX_LINKS + extra) as u32 - 1, now, &mut stats).expect("the newest is kept");
        assert_eq!(newest.kind.grpc_path(), Some(RANGE));
        assert!(links.take(7, 0xc000, 2 * extra as u32 + 1, now, &mut stats).is_some(), "the oldest kept");
        assert_eq!(stats.grpc_links_used, 2);
        assert_eq!(links.len(), MAX_LINKS - 2, "a link names one stream and is let go");
    }

    /// Links leave when they are too old: when a newer one comes, or when they are asked for.
    #[test]
    fn old_links_leave_and_name_nothing() {
        let (mut links, mut stats) = (GrpcLinks::default(), AssembleStats::default());
        links.on_link(&link(0xc000, 1, RANGE, 1_000), &mut stats);
        links.on_link(&link(0xc000, 3, RANGE, 2_000), &mut stats);
        links.on_link(&link(0xc000, 5, RANGE, 2_000 + MAX_LINK_AGE_NS), &mut stats);
        assert_eq!((links.len(), stats.grpc_links_expired), (2, 1), "the one older than the age limit left");
        assert!(links.take(7, 0xc000, 3, 3_000 + MAX_LINK_AGE_NS, &mut stats).is_none(), "too old when asked for");
        assert!(links.take(7, 0xc000, 5, 3_000 + MAX_LINK_AGE_NS, &mut stats).is_some());
        assert_eq!((links.len(), stats.grpc_links_expired, stats.grpc_links_used), (0, 2, 1));
    }

    /// Only gRPC paths are kept; a goroutine reused for another writer replaces its link; an
    /// unknown goroutine (0) finds nothing.
    #[test]
    fn invalid_paths_are_not_kept_and_a_key_holds_the_newest_link() {
        let (mut links, mut stats) = (GrpcLinks::default(), AssembleStats::default());
        links.on_link(&link(0xc000, 1, "not-a-path", 1), &mut stats);
        links.on_link(&link(0xc000, 1, "/etcdserverpb.KV", 1), &mut stats);
        assert_eq!((links.len(), stats.grpc_links_invalid), (0, 2));
        links.on_link(&link(0xc000, 1, RANGE, 1), &mut stats);
        links.on_link(&link(0xc000, 1, "/etcdserverpb.KV/Put", 2), &mut stats);
        assert!(links.take(7, 0, 1, 3, &mut stats).is_none());
        assert_eq!(
            links.take(7, 0xc000, 1, 3, &mut stats).and_then(|l| l.kind.grpc_path().map(str::to_owned)).as_deref(),
            Some("/etcdserverpb.KV/Put")
        );
        assert_eq!(links.len(), 0);
    }
}
