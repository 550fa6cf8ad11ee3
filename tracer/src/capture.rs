//! Reads the kernel ring buffer (tokio AsyncFd) and hands each record to a [`RecordSink`] (the
//! agent); reads the kernel's per-CPU drop counters for the stats.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
};
use tokio::io::{Interest, unix::AsyncFd};
use tracer_common::counter;

/// Where the ring's records go.
pub trait RecordSink {
    /// One ring-buffer record, as the probes wrote it.
    fn record(&mut self, bytes: &[u8]);
    /// The records pending in the ring were all handled.
    fn end_of_records(&mut self);
}

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelCounters {
    pub ringbuf_full: u64,
    pub args_full: u64,
    pub sockets_full: u64,
    pub read_user_failed: u64,
    pub iov_truncated: u64,
    pub go_tls_no_socket: u64,
    pub go_tls_calls_full: u64,
    /// Socket I/O on an unknown socket in a syscall without an fd argument (io_uring...).
    pub no_syscall_fd: u64,
    /// Goroutine probes: spawns whose parent is not known, links with no caller, HTTP/2 handlers
    /// on an unknown socket or whose structures did not check out (see `tracer_common::counter`).
    pub go_spawn_no_entry: u64,
    pub go_link_no_caller: u64,
    pub go_link_no_socket: u64,
    pub go_link_bad_layout: u64,
}

pub struct Capture {
    ring: AsyncFd<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
}

impl Capture {
    pub fn new(ebpf: &mut Ebpf) -> Result<Self> {
        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or_else(|| anyhow!("EVENTS map missing"))?)?;
        let counters =
            PerCpuArray::try_from(ebpf.take_map("COUNTERS").ok_or_else(|| anyhow!("COUNTERS map missing"))?)?;
        // SAFETY: the ring buffer owns its fd and stays registered until it is dropped with us.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .context("registering the ring buffer with tokio")?;
        Ok(Capture { ring, counters })
    }

    /// Waits until the probes wake the agent, then hands every pending record to `sink`.
    /// Returns how many there were.
    pub async fn drain(&mut self, sink: &mut impl RecordSink) -> Result<usize> {
        let mut guard = self.ring.readable_mut().await?;
        let n = drain_ring(guard.get_inner_mut(), sink);
        guard.clear_ready();
        Ok(n)
    }

    /// Like [`drain`] but returns at once when nothing is pending (periodic polls, shutdown).
    pub fn drain_now(&mut self, sink: &mut impl RecordSink) -> usize {
        drain_ring(self.ring.get_mut(), sink)
    }

    pub fn kernel_counters(&self) -> KernelCounters {
        let sum = |i: u32| self.counters.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0);
        KernelCounters {
            ringbuf_full: sum(counter::RINGBUF_FULL),
            args_full: sum(counter::ARGS_FULL),
            sockets_full: sum(counter::SOCKETS_FULL),
            read_user_failed: sum(counter::READ_USER_FAILED),
            iov_truncated: sum(counter::IOV_TRUNCATED),
            go_tls_no_socket: sum(counter::GO_TLS_NO_SOCKET),
            go_tls_calls_full: sum(counter::GO_TLS_CALLS_FULL),
            no_syscall_fd: sum(counter::NO_SYSCALL_FD),
            go_spawn_no_entry: sum(counter::GO_SPAWN_NO_ENTRY),
            go_link_no_caller: sum(counter::GO_LINK_NO_CALLER),
            go_link_no_socket: sum(counter::GO_LINK_NO_SOCKET),
            go_link_bad_layout: sum(counter::GO_LINK_BAD_LAYOUT),
        }
    }
}

/// Hands the pending records to `sink`. One pass is bounded so that housekeeping and shutdown
/// are not starved under a flood.
fn drain_ring(ring: &mut RingBuf<MapData>, sink: &mut impl RecordSink) -> usize {
    let mut n = 0;
    while n < 65536 {
        let Some(item) = ring.next() else { break };
        sink.record(&item);
        n += 1;
    }
    sink.end_of_records();
    n
}

pub const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// How long the agent sleeps before it reads the ring again, when the probes do not wake it
/// (they do so only when a quarter of the ring is waiting).
///
/// Short while records flow, so that each batch is short: the batch holds a CPU, and a request
/// waiting for that CPU waits for the batch (longer batches showed in the server's p99).
/// Longer when little arrives, so that an idle agent does not wake hundreds of times a second:
/// a process that only wakes every few milliseconds costs a co-located server throughput,
/// through the scheduler and idle vCPUs being woken, not through CPU time (docs/benchmarks.md
/// has the figures of both).
#[derive(Debug, Clone, Copy)]
pub struct PollPeriod(Duration);

impl PollPeriod {
    pub const MIN: Duration = Duration::from_millis(1);
    /// Also the longest a span waits in the ring at low rates.
    pub const MAX: Duration = Duration::from_millis(50);
    /// A read that found fewer records than this doubles the period.
    const FEW: usize = 16;
    /// A read that found more than this goes back to the shortest period at once.
    const MANY: usize = 64;

    pub fn current(self) -> Duration {
        self.0
    }

    /// The period after a read that found `records`.
    pub fn after_read(&mut self, records: usize) -> Duration {
        self.0 = if records > Self::MANY {
            Self::MIN
        } else if records < Self::FEW {
            (self.0 * 2).min(Self::MAX)
        } else {
            self.0
        };
        self.0
    }
}

impl Default for PollPeriod {
    fn default() -> Self {
        PollPeriod(Self::MIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_period_backs_off_when_idle_and_returns_under_load() {
        let mut p = PollPeriod::default();
        assert_eq!(p.current(), PollPeriod::MIN);
        let idle: Vec<u128> = (0..6).map(|_| p.after_read(0).as_millis()).collect();
        assert_eq!(idle, [2, 4, 8, 16, 32, 50]);
        // A moderate flow keeps the period it found.
        assert_eq!(p.after_read(40), Duration::from_millis(50));
        // A burst goes straight back to the shortest period, and a steady flow keeps it.
        assert_eq!(p.after_read(500), PollPeriod::MIN);
        assert_eq!(p.after_read(100), PollPeriod::MIN);
        assert_eq!(p.after_read(16), PollPeriod::MIN);
        assert_eq!(p.after_read(15), Duration::from_millis(2));
    }
}
